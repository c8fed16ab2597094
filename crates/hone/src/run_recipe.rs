//! What `hone finetune` and `hone pretrain` share: the recipe-run flags, and the steps
//! around the trainer (output directory, saved recipe, callbacks, summary).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::callbacks::{MetricsPlot, ProgressBar, SaveRecipe};
use hone_core::distributed::{Communicator, Launch};
use hone_core::model::Model;
use hone_core::runtime::{set_tf32, DeviceSpec};
use hone_core::training::{
    faults, InjectedFault, Precision, Trainer, TrainingArguments, TrainingData,
};

/// Flags of every command that runs a training recipe.
#[derive(Args, Debug)]
pub struct RecipeRunArgs {
    /// The recipe (TOML; see examples/).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a recipe key: `--set learning_rate=3e-5` or `--set data.max_train_samples=2000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Replace a non-empty output directory.
    #[arg(long)]
    pub overwrite_output_dir: bool,
    /// Continue the run in the output directory from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// cpu, cuda or cuda:N (overrides the recipe).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Overrides the recipe's `precision`.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
}

impl RecipeRunArgs {
    /// Apply the command-line flags to the recipe's training arguments; the device to use.
    pub fn apply(&self, training: &mut TrainingArguments) -> Result<candle_core::Device> {
        training.overwrite_output_dir |= self.overwrite_output_dir;
        if let Some(d) = self.device {
            training.device = d;
        }
        if let Some(p) = self.precision {
            (training.precision, training.bf16, training.fp16) = (p, false, false);
        }
        set_tf32(training.tf32);
        // One GPU per rank: `cuda` means this rank's own (its local rank), as in torchrun.
        let launch = Launch::from_env()?;
        if let (DeviceSpec::Cuda(0), false) = (training.device, launch == Launch::Single) {
            training.device = DeviceSpec::Cuda(launch.local_device_ordinal());
        }
        training.device.open()
    }
}

/// Prepare the output directory, save the recipe, train with a progress bar and a plot,
/// and print a summary. Call it only after the data has been read and checked, so bad
/// input never touches the output.
pub fn train_and_report<R: Serialize, D: TrainingData>(
    recipe: &R,
    training: &TrainingArguments,
    model: &Model<D::Net>,
    data: &D,
    resume: bool,
) -> Result<()> {
    // A test hook (RELIABILITY.md): a NaN or infinity injected at one update.
    let fault = InjectedFault::from_env()?;
    // One of several data-parallel ranks (mpirun, torchrun, `hone launch`), or alone.
    let comm = Launch::from_env()?.communicator(&model.device)?;
    let result = train_on_rank(recipe, training, model, data, resume, fault, &comm);
    if let Err(e) = &result {
        if comm.world_size() > 1 {
            // The other ranks would wait for this one in their next collective forever.
            eprintln!("error: rank {}: {}", comm.rank(), crate::one_line(e));
            comm.abort(1)
        }
    }
    result
}

fn train_on_rank<R: Serialize, D: TrainingData>(
    recipe: &R,
    training: &TrainingArguments,
    model: &Model<D::Net>,
    data: &D,
    resume: bool,
    fault: Option<InjectedFault>,
    comm: &Arc<dyn Communicator>,
) -> Result<()> {
    let mut trainer = Trainer::new(training.clone(), model, data);
    trainer.set_communicator(comm.clone());
    // A batch that cannot fit is refused before the output directory is touched.
    trainer.check_memory()?;
    if comm.is_main() {
        Trainer::<D>::prepare_output_dir(training, resume)?;
    }
    // The others wait until rank 0 has the directory ready (or cleared it).
    comm.barrier()?;
    if comm.world_size() > 1 {
        tracing::info!(
            "data parallel over {}: {} ranks, {} examples per rank per micro-batch",
            comm.engine(),
            comm.world_size(),
            training.per_device_train_batch_size
        );
    }
    if let Some(n) = faults::interrupt_after_steps_from_env()? {
        trainer.args.interrupt_after_steps = Some(n);
    }
    // Written once training begins: a resume refused (a damaged checkpoint) changes nothing.
    trainer.add_callback(SaveRecipe {
        path: training.output_dir.join("recipe.toml"),
        text: toml::to_string_pretty(recipe)?,
    });
    if let Some(fault) = fault {
        trainer.inject_fault(fault);
    }
    if training.progress {
        trainer.add_callback(ProgressBar::new());
    }
    trainer.add_callback(MetricsPlot {
        output_dir: training.output_dir.clone(),
    });
    let out = trainer.train(resume)?;
    drop(trainer);
    if !comm.is_main() {
        return Ok(());
    }
    let summary = serde_json::json!({
        "output_dir": training.output_dir.display().to_string(),
        "global_step": out.global_step,
        "train_seconds": out.train_seconds,
        "ranks": comm.world_size(),
        "allreduce_seconds": out.allreduce_seconds,
        "best_metric": out.best_metric,
        "stopped_early": out.stopped_early,
        "last_eval": out.last_eval,
        "trainable_params": model.num_trainable_parameters(),
        "total_params": model.num_parameters(),
        // Host memory: what the CPU path uses (device memory is not measured).
        "peak_rss_mb": hone_core::runtime::peak_memory_bytes().map(|b| b as f64 / 1048576.0),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
