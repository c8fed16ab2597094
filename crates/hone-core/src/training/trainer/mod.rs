//! The training loop shared by every task: batching, accumulation, clipping, the optimizer
//! and schedule, evaluation, early stopping, checkpoints with exact resume and
//! `metrics.jsonl`. The loop is a handful of named steps (micro-step, update, log,
//! evaluate, checkpoint); progress bars, plots and anything else a program wants to see
//! are [`TrainerCallback`]s it installs.
//!
//! Here: the loop and its steps. Beside it: `batches.rs` (which examples form each
//! micro-batch), `checkpoints.rs` (the output directory, checkpoints, resume, the best
//! model at the end) and `callback.rs` (the state, records and callbacks it reports to).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

use super::args::{EvalStrategy, TrainingArguments};
use super::faults::{FaultSite, InjectedFault};
use super::log::MetricsLog;
use super::memory::{StepMemory, StepShape};
use super::optim::{
    clip_grad_norm, first_non_finite_grad, global_grad_norm, select_params, AdamW, AdamWConfig,
    DecayRule, GradAccumulator, Optimizer, OptimizerKind, Sgd, SgdConfig,
};
use super::precision::{GradScaler, Precision};
use super::schedule::LrSchedule;
use crate::distributed::{self, Communicator, SingleProcess};
use crate::model::layers::AutocastScope;
use crate::model::Model;

mod batches;
mod callback;
mod checkpoints;

pub use callback::{LogRecord, RankRng, TrainOutput, TrainerCallback, TrainerState, UpdateStats};
pub use checkpoints::{latest_checkpoint, list_checkpoints};

/// Evaluation metrics by name (`loss`, `accuracy`, ...).
pub type Metrics = BTreeMap<String, f64>;

/// What the trainer needs from a task's data: examples, the loss over a batch of them, an
/// evaluation, and the files a saved model needs besides its weights.
pub trait TrainingData {
    /// The kind of network the loss needs (`dyn SequenceClassifier`, ...).
    type Net: ?Sized;

    /// Number of training examples.
    fn num_train_examples(&self) -> usize;

    /// Length in tokens of training example `i` (for length-grouped batching).
    fn train_example_length(&self, i: usize) -> usize;

    /// The mean loss over training examples `indices` (the model is in training mode).
    fn training_loss(&self, net: &Self::Net, indices: &[usize]) -> Result<Tensor>;

    /// Evaluate on the validation data (evaluation mode): metrics by name, `loss` included.
    /// `max_batches` limits the work for quick checks.
    fn evaluate(&self, net: &Self::Net, max_batches: Option<usize>) -> Result<Metrics>;

    /// [`TrainingData::evaluate`] with the work split across the ranks of a data-parallel
    /// run, every rank getting the same metrics. By default every rank evaluates the whole
    /// set (correct, not faster); a task that can split it overrides this.
    fn evaluate_sharded(
        &self,
        net: &Self::Net,
        max_batches: Option<usize>,
        _comm: &dyn Communicator,
    ) -> Result<Metrics> {
        self.evaluate(net, max_batches)
    }

    /// What [`TrainingData::training_loss`] averages over for these examples: the examples
    /// themselves, or their labelled tokens for a loss per token. A data-parallel rank
    /// weighs its shard's loss by its share of the batch's, so the summed gradients are
    /// the whole batch's.
    fn loss_weight(&self, indices: &[usize]) -> f64 {
        indices.len() as f64
    }

    /// Write what a model directory needs besides config and weights (the tokenizer).
    fn save_extras(&self, dir: &Path) -> Result<()>;
}

/// A run in progress: the optimizer, the schedule, gradients accumulated since the last
/// update, and the [`TrainerState`] a checkpoint saves. Made by [`Trainer::start`].
pub struct Run {
    pub state: TrainerState,
    pub total_updates: usize,
    optimizer: Box<dyn Optimizer>,
    schedule: LrSchedule,
    accumulated: GradAccumulator,
    micro_in_update: usize,
    /// This update's loss so far, this rank's share (summed across ranks at the update).
    loss_this_update: f64,
    examples_seen: usize,
    steps_this_run: usize,
    started: Instant,
    /// Time spent in the all-reduce of gradients and loss.
    allreduce_seconds: f64,
    /// The model's matrix products in the run's precision until the run is dropped.
    _autocast: AutocastScope,
}

const STATE_FILE: &str = "trainer_state.json";

/// The training loop.
pub struct Trainer<'a, D: TrainingData> {
    pub args: TrainingArguments,
    pub model: &'a Model<D::Net>,
    pub data: &'a D,
    callbacks: Vec<Box<dyn TrainerCallback + 'a>>,
    fault: Option<InjectedFault>,
    /// The ranks of a data-parallel run (one process alone by default).
    comm: Arc<dyn Communicator>,
}

impl<'a, D: TrainingData> Trainer<'a, D> {
    pub fn new(args: TrainingArguments, model: &'a Model<D::Net>, data: &'a D) -> Self {
        Self {
            args,
            model,
            data,
            callbacks: Vec::new(),
            fault: None,
            comm: Arc::new(SingleProcess),
        }
    }

    /// Train data-parallel over `comm`'s ranks: each takes its shard of every batch
    /// (`per_device_train_batch_size` is per rank, as in Hugging Face), gradients are summed
    /// across ranks before clipping, and rank 0 alone writes checkpoints, metrics and the
    /// model, and runs the callbacks.
    pub fn set_communicator(&mut self, comm: Arc<dyn Communicator>) {
        self.comm = comm;
    }

    /// The run's communicator.
    pub fn communicator(&self) -> &dyn Communicator {
        &*self.comm
    }

    /// Whether this process writes the output directory (rank 0, or the only process).
    pub(super) fn writes(&self) -> bool {
        self.comm.is_main()
    }

    /// Put a NaN or an infinity into the loss or a gradient at one update (a test hook;
    /// see [`InjectedFault`]).
    pub fn inject_fault(&mut self, fault: InjectedFault) {
        self.fault = Some(fault);
    }

    /// Install a callback; they run in the order added.
    pub fn add_callback(&mut self, callback: impl TrainerCallback + 'a) {
        self.callbacks.push(Box::new(callback));
    }

    /// The optimizer over the parameters that train: the model's trainable ones (an
    /// adapter's, or all), less the ones the freezing options name. AdamW keeps moments
    /// for these only.
    fn build_optimizer(&self) -> Result<Box<dyn Optimizer>> {
        let all = self.model.params.params();
        let params = self.model.params.trainable_params();
        let prefixes = self.args.frozen_prefixes(&*self.model.config.arch);
        let frozen: Vec<String> = params
            .iter()
            .filter(|(n, _)| prefixes.iter().any(|p| n.starts_with(p.as_str())))
            .map(|(n, _)| n.clone())
            .collect();
        for p in &self.args.freeze_parameters {
            if !all.iter().any(|(n, _)| n.starts_with(p.as_str())) {
                bail!("freeze_parameters: no parameter name starts with `{p}`")
            }
        }
        if frozen.len() == params.len() {
            bail!("every parameter is frozen: nothing to train")
        }
        let trainable: usize = params
            .iter()
            .filter(|(n, _)| !frozen.contains(n))
            .map(|(_, v)| v.elem_count())
            .sum();
        let total: usize = all.iter().map(|(_, v)| v.elem_count()).sum();
        // PEFT's print_trainable_parameters.
        tracing::info!(
            "trainable params: {trainable} || all params: {total} || trainable%: {:.4}",
            100.0 * trainable as f64 / total.max(1) as f64
        );
        let trainable = select_params(params, DecayRule::Matrices, &frozen)?;
        let a = &self.args;
        Ok(match a.optim {
            OptimizerKind::Adamw => Box::new(AdamW::new(
                trainable,
                AdamWConfig {
                    beta1: a.adam_beta1,
                    beta2: a.adam_beta2,
                    eps: a.adam_epsilon,
                    weight_decay: a.weight_decay,
                },
            )?),
            OptimizerKind::Sgd => Box::new(Sgd::new(
                trainable,
                SgdConfig {
                    momentum: a.momentum,
                    weight_decay: a.weight_decay,
                    ..Default::default()
                },
            )?),
        })
    }

    fn schedule(&self) -> Result<LrSchedule> {
        let a = &self.args;
        let total = self.total_updates();
        let warmup = if a.warmup_steps > 0 {
            a.warmup_steps
        } else {
            (a.warmup_ratio * total as f64).ceil() as usize
        };
        LrSchedule::new_with_floor(
            a.lr_scheduler_type,
            a.learning_rate,
            warmup as u64,
            total as u64,
            a.min_learning_rate,
            a.lr_decay_steps.unwrap_or(total) as u64,
        )
    }

    /// Refuse a run whose training step cannot fit in the memory available, with the
    /// estimate (a lower bound, see [`StepMemory`]); host memory, so on the CPU only.
    pub fn check_memory(&self) -> Result<()> {
        let n = self.data.num_train_examples();
        let available = crate::runtime::available_memory_bytes();
        let (Some(available), true, true) = (available, self.model.device.is_cpu(), n > 0) else {
            return Ok(());
        };
        let longest = (0..n)
            .map(|i| self.data.train_example_length(i))
            .max()
            .unwrap_or(1)
            .max(1);
        let a = &self.args;
        let batch = match a.max_tokens_per_batch {
            Some(budget) => (budget / longest).max(1),
            None => a.per_device_train_batch_size.clamp(1, n),
        };
        let arch = &*self.model.config.arch;
        let shape = StepShape {
            layers: arch.num_layers(),
            hidden: arch.hidden_size(),
            heads: arch.num_attention_heads(),
            parameters: self.model.num_parameters(),
            trainable: self.model.num_trainable_parameters(),
            moments: match a.optim {
                OptimizerKind::Adamw => 2,
                OptimizerKind::Sgd => usize::from(a.momentum != 0.0),
            },
            batch,
            seq_len: longest,
            activation_bytes: match a.effective_precision()? {
                Precision::Fp32 => 4,
                Precision::Bf16 | Precision::Fp16 => 2,
            },
        };
        StepMemory::lower_bound(&shape).check(&shape, available)
    }

    /// A fresh run: optimizer, schedule and state, the model in training mode and its
    /// matrix products in the recipe's precision (until the run is dropped). Nothing is written; [`Trainer::train`]
    /// builds on this, and so can a benchmark that only wants the steps.
    pub fn start(&self) -> Result<Run> {
        let precision = self.args.effective_precision()?;
        if self.micro_batches_per_epoch() == 0 {
            bail!("no training examples")
        }
        self.check_memory()?;
        if self.model.mode.is_frozen() {
            // Its layers keep packed copies of the weights that an update would leave stale.
            bail!("the model was frozen for inference (Model::frozen); load it with Model::load_for to train it")
        }
        let run = Run {
            state: TrainerState {
                grad_scaler: (precision == Precision::Fp16).then(GradScaler::default),
                ..Default::default()
            },
            total_updates: self.total_updates(),
            optimizer: self.build_optimizer()?,
            schedule: self.schedule()?,
            accumulated: GradAccumulator::new(),
            micro_in_update: 0,
            loss_this_update: 0.0,
            examples_seen: 0,
            steps_this_run: 0,
            started: Instant::now(),
            allreduce_seconds: 0.0,
            _autocast: self.model.mode.autocast_scope(precision.autocast_dtype()),
        };
        self.model.mode.set_training(true);
        Ok(run)
    }

    /// Forward and backward over one micro-batch (this rank's shard of it), adding its
    /// gradients to the run's; returns the shard's loss.
    pub fn micro_step(&self, run: &mut Run, batch: &[usize]) -> Result<f32> {
        let accum = self.args.gradient_accumulation_steps.max(1);
        let (rank, world) = (self.comm.rank(), self.comm.world_size());
        let shard = distributed::shard(batch, rank, world);
        // This shard's part of the batch's mean loss (1 in one process).
        let share = match world {
            1 => 1.0,
            _ => self.data.loss_weight(shard) / self.data.loss_weight(batch).max(f64::MIN_POSITIVE),
        };
        run.micro_in_update += 1;
        if shard.is_empty() || share == 0.0 {
            // Nothing to add: the all-reduce puts zeros in for this rank.
            return Ok(0.0);
        }
        let state = &mut run.state;
        let mut loss = self.data.training_loss(&self.model.net, shard)?;
        let update = state.global_step + 1;
        if let Some(fault) = self.fault.filter(|f| f.hits(FaultSite::Loss, update)) {
            loss = loss.affine(1.0, fault.value)?;
        }
        let loss_value: f32 = loss.to_dtype(candle_core::DType::F32)?.to_scalar()?;
        if !loss_value.is_finite() {
            bail!(
                "loss is {loss_value} at update {} (epoch {}, batch {}): stopping; checkpoints already written are untouched",
                state.global_step + 1,
                state.epoch,
                state.batch_in_epoch
            )
        }
        // fp16: backward through the scaled loss, unscale as the gradients add up.
        let loss_scale = state.grad_scaler.as_ref().map_or(1.0, |s| s.scale);
        let grads = (loss * (loss_scale * share / accum as f64))?.backward()?;
        run.accumulated
            .add(run.optimizer.params(), &grads, 1.0 / loss_scale)?;
        run.loss_this_update += loss_value as f64 * share / accum as f64;
        run.examples_seen += shard.len();
        Ok(loss_value)
    }

    /// One optimizer update from the accumulated gradients: clip, look up the learning
    /// rate, step (or, in fp16, skip an overflowing update).
    pub fn update(&self, run: &mut Run) -> Result<UpdateStats> {
        run.micro_in_update = 0;
        let params = run.optimizer.params();
        let mut grads = run.accumulated.take();
        // Data parallel: every rank gets the sum of the ranks' shares, so each steps
        // (and clips) with the whole batch's gradients and loss.
        let named: Vec<(&str, &candle_core::Var)> =
            params.iter().map(|p| (p.name.as_str(), &p.var)).collect();
        let reduce_started = Instant::now();
        distributed::all_reduce_grads(&*self.comm, &named, &mut grads, distributed::BUCKET_BYTES)?;
        let mut loss = [std::mem::take(&mut run.loss_this_update)];
        distributed::all_reduce_f64(&*self.comm, &mut loss)?;
        run.state.loss_since_log += loss[0];
        run.allreduce_seconds += reduce_started.elapsed().as_secs_f64();
        let update = run.state.global_step + 1;
        if let Some(fault) = self.fault.filter(|f| f.hits(FaultSite::Gradient, update)) {
            let first = params.first().context("no trained parameter")?;
            if let Some(g) = grads.get(first.var.as_tensor()) {
                let bad = g.affine(1.0, fault.value)?;
                grads.insert(first.var.as_tensor(), bad);
            }
        }
        let grad_norm = if self.args.max_grad_norm > 0.0 {
            clip_grad_norm(params, &mut grads, self.args.max_grad_norm)?
        } else {
            global_grad_norm(params, &grads)?
        };
        let state = &mut run.state;
        let lr = run.schedule.lr_at(state.global_step as u64);
        let finite = grad_norm.is_finite();
        let applied = match state.grad_scaler.as_mut() {
            // An fp16 overflow skips the update and lowers the scale.
            Some(scaler) => scaler.update(finite),
            None if finite => true,
            None => {
                let name = first_non_finite_grad(run.optimizer.params(), &grads)?;
                bail!(
                    "the gradient of `{}` is not finite at update {} (epoch {}, batch {}): stopping; checkpoints already written are untouched",
                    name.unwrap_or_default(),
                    state.global_step + 1,
                    state.epoch,
                    state.batch_in_epoch
                )
            }
        };
        if applied {
            run.optimizer.step(&grads, lr)?;
        } else {
            tracing::warn!(
                "fp16 gradients overflowed at update {}: update skipped, loss scale now {}",
                state.global_step + 1,
                state.grad_scaler.as_ref().map_or(0.0, |s| s.scale)
            );
        }
        state.global_step += 1;
        state.steps_since_log += 1;
        run.steps_this_run += 1;
        Ok(UpdateStats {
            step: state.global_step,
            learning_rate: lr,
            grad_norm,
            applied,
        })
    }

    /// Run training (resuming from the latest checkpoint in `output_dir` when `resume`).
    pub fn train(&mut self, resume: bool) -> Result<TrainOutput> {
        let mut run = self.start()?;
        let log = match self.writes() {
            true => MetricsLog::new(&self.args.output_dir.join("metrics.jsonl"))?,
            false => MetricsLog::disabled(),
        };
        if !self.writes() {
            // Progress, plots and saved recipes are rank 0's.
            self.callbacks.clear();
        }
        if resume {
            self.resume(&mut run, &log)?;
        }
        // Every rank starts from rank 0's parameters (a new head's random initialisation).
        distributed::broadcast_params(&*self.comm, &self.model.params.trainable_params())?;
        let total = run.total_updates;
        let accum = self.args.gradient_accumulation_steps.max(1);
        for cb in &mut self.callbacks {
            cb.on_train_begin(&run.state, total)?;
        }
        let mut last_eval = Metrics::new();
        let mut stopped_early = false;
        let mut interrupted = false;

        'epochs: while !run.state.done && run.state.global_step < total {
            let batches = self.epoch_batches(run.state.epoch);
            while run.state.batch_in_epoch < batches.len() {
                let batch = &batches[run.state.batch_in_epoch];
                self.micro_step(&mut run, batch)?;
                run.state.batch_in_epoch += 1;
                let epoch_end = run.state.batch_in_epoch == batches.len();
                if run.micro_in_update < accum && !epoch_end {
                    continue;
                }
                let update = self.update(&mut run)?;
                for cb in &mut self.callbacks {
                    cb.on_step_end(&run.state, &update)?;
                }
                let epoch =
                    run.state.epoch as f64 + run.state.batch_in_epoch as f64 / batches.len() as f64;
                let finished = run.state.global_step >= total;
                if run
                    .state
                    .global_step
                    .is_multiple_of(self.args.logging_steps.max(1))
                    || finished
                {
                    self.log(&mut run, &log, &update, epoch)?;
                }
                if epoch_end {
                    run.state.epoch += 1;
                    run.state.batch_in_epoch = 0;
                }
                let eval_now = match self.args.eval_strategy {
                    EvalStrategy::No => false,
                    EvalStrategy::Steps => {
                        let every = self.args.eval_steps.max(1);
                        run.state.global_step.is_multiple_of(every) || finished
                    }
                    EvalStrategy::Epoch => epoch_end || finished,
                };
                if eval_now {
                    last_eval = self.evaluate(&mut run, &log, epoch)?;
                    if let Some(patience) = self.args.early_stopping_patience {
                        if run.state.evals_without_improvement >= patience {
                            tracing::info!(
                                "early stopping: {patience} evaluations without improvement"
                            );
                            stopped_early = true;
                            break 'epochs;
                        }
                    }
                } else if finished {
                    self.checkpoint(&mut run)?;
                }
                if finished {
                    break 'epochs;
                }
                if self
                    .args
                    .interrupt_after_steps
                    .is_some_and(|k| run.steps_this_run >= k)
                {
                    if !eval_now {
                        self.checkpoint(&mut run)?;
                    }
                    interrupted = true;
                    break 'epochs;
                }
                if epoch_end {
                    continue 'epochs;
                }
            }
            // Only reached with a partially consumed epoch list (resume at its end).
            run.state.epoch += 1;
            run.state.batch_in_epoch = 0;
        }
        self.model.mode.set_training(false);
        let train_seconds = run.started.elapsed().as_secs_f64();
        if !interrupted {
            run.state.done = true;
            self.finish(&run.state)?;
        }
        let output = TrainOutput {
            global_step: run.state.global_step,
            last_eval,
            best_metric: run.state.best_metric,
            stopped_early,
            interrupted,
            train_seconds,
            allreduce_seconds: run.allreduce_seconds,
        };
        for cb in &mut self.callbacks {
            cb.on_train_end(&run.state, &output)?;
        }
        Ok(output)
    }

    /// Append the mean loss since the last log line to `metrics.jsonl`.
    fn log(
        &mut self,
        run: &mut Run,
        log: &MetricsLog,
        update: &UpdateStats,
        epoch: f64,
    ) -> Result<()> {
        let state = &mut run.state;
        let record = LogRecord {
            step: state.global_step,
            epoch,
            loss: state.loss_since_log / state.steps_since_log.max(1) as f64,
            learning_rate: update.learning_rate,
            grad_norm: update.grad_norm,
            examples_per_second: run.examples_seen as f64
                / run.started.elapsed().as_secs_f64().max(1e-9),
        };
        log.append(&serde_json::to_value(&record)?)?;
        state.loss_since_log = 0.0;
        state.steps_since_log = 0;
        for cb in &mut self.callbacks {
            cb.on_log(&run.state, &record)?;
        }
        Ok(())
    }

    /// Evaluate (dropout off), log the metrics, checkpoint, and track the best model.
    fn evaluate(&mut self, run: &mut Run, log: &MetricsLog, epoch: f64) -> Result<Metrics> {
        self.model.mode.set_training(false);
        let metrics =
            self.data
                .evaluate_sharded(&self.model.net, self.args.max_eval_batches, &*self.comm);
        self.model.mode.set_training(true);
        let metrics = metrics?;
        let state = &mut run.state;
        let mut record = serde_json::json!({"step": state.global_step, "epoch": epoch});
        let mut prefixed = Metrics::new();
        for (k, v) in &metrics {
            record[format!("eval_{k}")] = serde_json::json!(v);
            prefixed.insert(format!("eval_{k}"), *v);
        }
        log.append(&record)?;
        let key = &self.args.metric_for_best_model;
        let value = *metrics.get(key).with_context(|| {
            format!(
                "metric_for_best_model `{key}` is not among the evaluation metrics {:?}",
                metrics.keys().collect::<Vec<_>>()
            )
        })?;
        let improved = match state.best_metric {
            None => true,
            Some(best) if self.args.higher_is_better() => value > best,
            Some(best) => value < best,
        };
        let ckpt = self.save_checkpoint(run)?;
        let state = &mut run.state;
        if improved {
            state.best_metric = Some(value);
            state.best_checkpoint = Some(ckpt.clone());
            state.evals_without_improvement = 0;
        } else {
            state.evals_without_improvement += 1;
        }
        // The state file must record the new best too.
        self.write_state(&ckpt, state)?;
        self.prune_checkpoints(state)?;
        tracing::info!("step {}: {}", state.global_step, format_metrics(&metrics));
        for cb in &mut self.callbacks {
            cb.on_save(&run.state, &ckpt)?;
            cb.on_evaluate(&run.state, &metrics)?;
        }
        Ok(prefixed)
    }
}

fn format_metrics(m: &Metrics) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}
