//! What a terminal shows of a training run: a progress bar, and `metrics.png` redrawn from
//! `metrics.jsonl` after every evaluation and at the end. Installed as trainer callbacks.

use std::path::PathBuf;

use anyhow::Result;
use hone_core::training::UpdateStats;
use hone_core::training::{LogRecord, Metrics, TrainOutput, TrainerCallback, TrainerState};

/// A bar of updates done, with the last logged loss, learning rate and throughput.
pub struct ProgressBar {
    bar: indicatif::ProgressBar,
}

impl ProgressBar {
    pub fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} updates (eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Self { bar }
    }
}

impl TrainerCallback for ProgressBar {
    fn on_train_begin(&mut self, state: &TrainerState, total_updates: usize) -> Result<()> {
        self.bar.set_length(total_updates as u64);
        self.bar.set_position(state.global_step as u64);
        Ok(())
    }

    fn on_step_end(&mut self, state: &TrainerState, _update: &UpdateStats) -> Result<()> {
        self.bar.set_position(state.global_step as u64);
        Ok(())
    }

    fn on_log(&mut self, _state: &TrainerState, r: &LogRecord) -> Result<()> {
        self.bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.1} ex/s",
            r.loss, r.learning_rate, r.examples_per_second
        ));
        Ok(())
    }

    fn on_train_end(&mut self, _state: &TrainerState, _output: &TrainOutput) -> Result<()> {
        self.bar.finish_and_clear();
        Ok(())
    }
}

/// Redraws `metrics.png` in the output directory from its `metrics.jsonl`.
pub struct MetricsPlot {
    pub output_dir: PathBuf,
}

impl MetricsPlot {
    fn draw(&self) -> Result<()> {
        let metrics = self.output_dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&metrics).unwrap_or_default();
        let charts = hone_plot::plot_metrics_jsonl(&text);
        if charts.is_empty() {
            return Ok(());
        }
        let png = hone_plot::render_charts(&charts, 900, 320);
        hone_core::io::write_bytes_atomically(&self.output_dir.join("metrics.png"), &png)
    }
}

impl TrainerCallback for MetricsPlot {
    fn on_evaluate(&mut self, _state: &TrainerState, _metrics: &Metrics) -> Result<()> {
        self.draw()
    }

    fn on_train_end(&mut self, _state: &TrainerState, _output: &TrainOutput) -> Result<()> {
        self.draw()
    }
}

/// Saves the recipe the run was started with beside its outputs, when training begins.
pub struct SaveRecipe {
    pub path: PathBuf,
    pub text: String,
}

impl TrainerCallback for SaveRecipe {
    fn on_train_begin(&mut self, _state: &TrainerState, _total_updates: usize) -> Result<()> {
        hone_core::io::write_bytes_atomically(&self.path, self.text.as_bytes())
    }
}
