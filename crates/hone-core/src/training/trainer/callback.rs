//! What the trainer tells the outside: where a run stands, what each update did, the
//! records it logs, and the callbacks that see them.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::Metrics;
use crate::training::precision::GradScaler;

/// Where a run stands; saved with every checkpoint so a resumed run continues exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainerState {
    pub global_step: usize,
    pub epoch: usize,
    /// The next micro-batch of `epoch` to run.
    pub batch_in_epoch: usize,
    pub best_metric: Option<f64>,
    pub best_checkpoint: Option<PathBuf>,
    /// Evaluations since the best one.
    pub evals_without_improvement: usize,
    /// The dropout random stream: seed, stream, word position.
    pub rng_seed: [u8; 32],
    pub rng_stream: u64,
    pub rng_word_pos: String,
    /// Losses since the last log line (so logged averages survive a resume).
    pub loss_since_log: f64,
    pub steps_since_log: usize,
    pub done: bool,
    /// fp16's loss scaler (absent in fp32 and bf16 runs).
    #[serde(default)]
    pub grad_scaler: Option<GradScaler>,
    /// In a data-parallel run, every rank's dropout stream by rank (the fields above hold
    /// rank 0's too, for a resume on another number of ranks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rank_rngs: Vec<RankRng>,
}

/// One rank's dropout random stream: seed, stream, word position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankRng {
    pub seed: [u8; 32],
    pub stream: u64,
    pub word_pos: String,
}

/// One optimizer update, as [`Trainer::update`] made it.
#[derive(Debug, Clone, Copy)]
pub struct UpdateStats {
    /// The update's number (1 for the first).
    pub step: usize,
    pub learning_rate: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// False when fp16 gradients overflowed and the update was skipped.
    pub applied: bool,
}

/// A line of `metrics.jsonl`: the mean training loss since the last one, and where the
/// run stands.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    /// Training throughput of this process so far (not logged to the file).
    #[serde(skip)]
    pub examples_per_second: f64,
}

/// Hooks into a run, as Hugging Face's `TrainerCallback`: a progress bar, a plot, a
/// server's status page. Every hook defaults to doing nothing; an error stops the run
/// (checkpoints already written are kept).
pub trait TrainerCallback {
    /// Before the first update of this process (`state` is the resumed one, if any).
    fn on_train_begin(&mut self, _state: &TrainerState, _total_updates: usize) -> Result<()> {
        Ok(())
    }
    /// After every optimizer update.
    fn on_step_end(&mut self, _state: &TrainerState, _update: &UpdateStats) -> Result<()> {
        Ok(())
    }
    /// After a line was appended to `metrics.jsonl`.
    fn on_log(&mut self, _state: &TrainerState, _record: &LogRecord) -> Result<()> {
        Ok(())
    }
    /// After an evaluation (metrics without the `eval_` prefix) and its checkpoint.
    fn on_evaluate(&mut self, _state: &TrainerState, _metrics: &Metrics) -> Result<()> {
        Ok(())
    }
    /// After a checkpoint directory was written.
    fn on_save(&mut self, _state: &TrainerState, _checkpoint: &Path) -> Result<()> {
        Ok(())
    }
    /// When the run ends, finished or interrupted.
    fn on_train_end(&mut self, _state: &TrainerState, _output: &TrainOutput) -> Result<()> {
        Ok(())
    }
}

/// The outcome of [`Trainer::train`].
#[derive(Debug, Clone)]
pub struct TrainOutput {
    pub global_step: usize,
    /// The last evaluation's metrics (eval_ prefixed).
    pub last_eval: Metrics,
    pub best_metric: Option<f64>,
    /// Whether the run stopped early (patience) or was interrupted on purpose.
    pub stopped_early: bool,
    pub interrupted: bool,
    pub train_seconds: f64,
    /// Of which in the gradients' and loss's all-reduce across ranks (0 in one process).
    pub allreduce_seconds: f64,
}
