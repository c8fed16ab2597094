//! The training loop shared by every task: batching, accumulation, clipping, the optimizer
//! and schedule, evaluation, early stopping, checkpoints with exact resume and
//! `metrics.jsonl`. The loop is a handful of named steps (micro-step, update, log,
//! evaluate, checkpoint); progress bars, plots and anything else a program wants to see
//! are [`TrainerCallback`]s it installs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::args::{EvalStrategy, TrainingArguments};
use super::log::MetricsLog;
use super::optim::{
    clip_grad_norm, first_non_finite_grad, global_grad_norm, select_params, AdamW, AdamWConfig,
    DecayRule, GradAccumulator, Optimizer, OptimizerKind, OptimizerState, Sgd, SgdConfig,
};
use super::precision::{GradScaler, Precision};
use super::schedule::LrSchedule;
use crate::model::layers::AutocastScope;
use crate::model::Model;

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

    /// Write what a model directory needs besides config and weights (the tokenizer).
    fn save_extras(&self, dir: &Path) -> Result<()>;
}

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
    examples_seen: usize,
    steps_this_run: usize,
    started: Instant,
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
}

impl<'a, D: TrainingData> Trainer<'a, D> {
    pub fn new(args: TrainingArguments, model: &'a Model<D::Net>, data: &'a D) -> Self {
        Self {
            args,
            model,
            data,
            callbacks: Vec::new(),
        }
    }

    /// Install a callback; they run in the order added.
    pub fn add_callback(&mut self, callback: impl TrainerCallback + 'a) {
        self.callbacks.push(Box::new(callback));
    }

    fn micro_batches_per_epoch(&self) -> usize {
        match self.args.max_tokens_per_batch {
            Some(budget) => self.token_batches(budget).len(),
            None => self
                .data
                .num_train_examples()
                .div_ceil(self.args.per_device_train_batch_size.max(1)),
        }
    }

    /// Batches of at most `budget` padded tokens over examples sorted by length (ties by
    /// index, so the batches are the same every epoch and on resume).
    fn token_batches(&self, budget: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.data.num_train_examples()).collect();
        order.sort_by_key(|&i| (self.data.train_example_length(i), i));
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut batch: Vec<usize> = Vec::new();
        for i in order {
            // Sorted ascending: the newest example is the batch's longest.
            let len = self.data.train_example_length(i).max(1);
            if !batch.is_empty() && (batch.len() + 1) * len > budget {
                batches.push(std::mem::take(&mut batch));
            }
            batch.push(i);
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        batches
    }

    /// Optimizer updates per epoch (a partial accumulation at the end of an epoch still
    /// makes an update, as in Hugging Face).
    fn updates_per_epoch(&self) -> usize {
        self.micro_batches_per_epoch()
            .div_ceil(self.args.gradient_accumulation_steps.max(1))
    }

    /// Total optimizer updates of the run.
    pub fn total_updates(&self) -> usize {
        match self.args.max_steps {
            Some(s) if s > 0 => s,
            _ => (self.args.num_train_epochs * self.updates_per_epoch() as f64).ceil() as usize,
        }
    }

    /// Example order of `epoch`: a permutation drawn from (seed, epoch), so any epoch can be
    /// rebuilt on resume. With grouping, examples of similar length share a batch and the
    /// batches are shuffled.
    pub fn epoch_batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let n = self.data.num_train_examples();
        let bs = self.args.per_device_train_batch_size.max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.args.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1)),
        );
        if let Some(budget) = self.args.max_tokens_per_batch {
            let mut batches = self.token_batches(budget);
            batches.shuffle(&mut rng);
            return batches;
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        if !self.args.group_by_length {
            return order.chunks(bs).map(<[usize]>::to_vec).collect();
        }
        // Sort within mega-batches of 50 batches by length (Hugging Face's grouping).
        let mut batches: Vec<Vec<usize>> = Vec::new();
        for mega in order.chunks(bs * 50) {
            let mut mega = mega.to_vec();
            mega.sort_by_key(|&i| std::cmp::Reverse(self.data.train_example_length(i)));
            batches.extend(mega.chunks(bs).map(<[usize]>::to_vec));
        }
        batches.shuffle(&mut rng);
        batches
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

    /// Refuse to clobber an existing run unless asked; a resume needs one.
    pub fn prepare_output_dir(args: &TrainingArguments, resume: bool) -> Result<()> {
        let dir = &args.output_dir;
        let non_empty = dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if resume {
            if latest_checkpoint(dir)?.is_none() {
                bail!("--resume: no checkpoint-* directory in {}", dir.display())
            }
            return Ok(());
        }
        if non_empty {
            if !args.overwrite_output_dir {
                bail!(
                    "output directory {} is not empty: pass --overwrite-output-dir to replace it or --resume to continue it",
                    dir.display()
                )
            }
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
    }

    /// A fresh run: optimizer, schedule and state, the model in training mode and its
    /// matrix products in the recipe's precision (until the run is dropped). Nothing is written; [`Trainer::train`]
    /// builds on this, and so can a benchmark that only wants the steps.
    pub fn start(&self) -> Result<Run> {
        let precision = self.args.effective_precision()?;
        if self.micro_batches_per_epoch() == 0 {
            bail!("no training examples")
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
            examples_seen: 0,
            steps_this_run: 0,
            started: Instant::now(),
            _autocast: self.model.mode.autocast_scope(precision.autocast_dtype()),
        };
        self.model.mode.set_training(true);
        Ok(run)
    }

    /// Forward and backward over one micro-batch, adding its gradients to the run's;
    /// returns the batch's loss.
    pub fn micro_step(&self, run: &mut Run, batch: &[usize]) -> Result<f32> {
        let accum = self.args.gradient_accumulation_steps.max(1);
        let state = &mut run.state;
        let loss = self.data.training_loss(&self.model.net, batch)?;
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
        let grads = (loss * (loss_scale / accum as f64))?.backward()?;
        run.accumulated
            .add(run.optimizer.params(), &grads, 1.0 / loss_scale)?;
        state.loss_since_log += loss_value as f64 / accum as f64;
        run.micro_in_update += 1;
        run.examples_seen += batch.len();
        Ok(loss_value)
    }

    /// One optimizer update from the accumulated gradients: clip, look up the learning
    /// rate, step (or, in fp16, skip an overflowing update).
    pub fn update(&self, run: &mut Run) -> Result<UpdateStats> {
        run.micro_in_update = 0;
        let params = run.optimizer.params();
        let mut grads = run.accumulated.take();
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
        let log = MetricsLog::new(&self.args.output_dir.join("metrics.jsonl"))?;
        if resume {
            self.resume(&mut run, &log)?;
        }
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
        };
        for cb in &mut self.callbacks {
            cb.on_train_end(&run.state, &output)?;
        }
        Ok(output)
    }

    /// Continue from the latest checkpoint: weights, optimizer, trainer state, and the
    /// metrics log cut back to that step.
    fn resume(&self, run: &mut Run, log: &MetricsLog) -> Result<()> {
        let out_dir = &self.args.output_dir;
        let ckpt = latest_checkpoint(out_dir)?.context("no checkpoint to resume from")?;
        let fp16 = run.state.grad_scaler.is_some();
        run.state = self.restore(&ckpt, run.optimizer.as_mut())?;
        // A scaler only in fp16 runs (the precision may differ from the first run's).
        run.state.grad_scaler = match fp16 {
            true => run
                .state
                .grad_scaler
                .take()
                .or_else(|| Some(GradScaler::default())),
            false => None,
        };
        tracing::info!(
            "resuming from {} at step {}",
            ckpt.display(),
            run.state.global_step
        );
        log.truncate_after(run.state.global_step)?;
        if run.state.done {
            tracing::info!("that run had finished");
        }
        Ok(())
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
        let metrics = self
            .data
            .evaluate(&self.model.net, self.args.max_eval_batches);
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

    fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.args.output_dir.join(format!("checkpoint-{step}"))
    }

    /// Save a checkpoint and keep only it and the best one.
    fn checkpoint(&mut self, run: &mut Run) -> Result<PathBuf> {
        let dir = self.save_checkpoint(run)?;
        self.prune_checkpoints(&run.state)?;
        for cb in &mut self.callbacks {
            cb.on_save(&run.state, &dir)?;
        }
        Ok(dir)
    }

    /// Write model, tokenizer, optimizer and trainer state to `checkpoint-{step}`; the
    /// directory is filled under a temporary name and renamed into place when complete.
    fn save_checkpoint(&self, run: &mut Run) -> Result<PathBuf> {
        let state = &mut run.state;
        let dir = self.checkpoint_dir(state.global_step);
        let tmp = self
            .args
            .output_dir
            .join(format!(".checkpoint-{}.partial", state.global_step));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        self.model.save(&tmp)?;
        self.data.save_extras(&tmp)?;
        run.optimizer.state()?.save(&tmp)?;
        let (seed, stream, pos) = self.model.mode.rng_state();
        state.rng_seed = seed;
        state.rng_stream = stream;
        state.rng_word_pos = pos.to_string();
        self.write_state(&tmp, state)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("cannot move checkpoint into {}", dir.display()))?;
        Ok(dir)
    }

    fn write_state(&self, dir: &Path, state: &TrainerState) -> Result<()> {
        crate::io::write_json(&dir.join(STATE_FILE), state)
    }

    /// Load weights, optimizer and trainer state from a checkpoint.
    fn restore(&self, ckpt: &Path, optimizer: &mut dyn Optimizer) -> Result<TrainerState> {
        let state: TrainerState = crate::io::read_json(&ckpt.join(STATE_FILE))?;
        self.model.load_weights(ckpt)?;
        optimizer.load_state(OptimizerState::load(ckpt, &self.model.device)?)?;
        let pos: u128 = state.rng_word_pos.parse().unwrap_or(0);
        self.model
            .mode
            .set_rng_state(state.rng_seed, state.rng_stream, pos);
        Ok(state)
    }

    /// Keep the latest checkpoint and the best one; remove the others.
    fn prune_checkpoints(&self, state: &TrainerState) -> Result<()> {
        let latest = self.checkpoint_dir(state.global_step);
        for dir in list_checkpoints(&self.args.output_dir)? {
            if dir != latest && Some(&dir) != state.best_checkpoint.as_ref() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
        Ok(())
    }

    /// Put the final (or best) model at the top of the output directory.
    fn finish(&self, state: &TrainerState) -> Result<()> {
        let out = &self.args.output_dir;
        let source = match (&state.best_checkpoint, self.args.load_best_model_at_end) {
            (Some(best), true) if best.exists() => {
                // Load the best weights back so the in-memory model matches what is saved.
                self.model.load_weights(best)?;
                best.clone()
            }
            _ => {
                let latest = self.checkpoint_dir(state.global_step);
                if !latest.exists() {
                    self.model.save(&latest)?;
                    self.data.save_extras(&latest)?;
                }
                latest
            }
        };
        for entry in std::fs::read_dir(&source)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == STATE_FILE || name.starts_with("optimizer") {
                continue;
            }
            let bytes = std::fs::read(entry.path())?;
            crate::io::write_bytes_atomically(&out.join(&*name), &bytes)?;
        }
        Ok(())
    }
}

/// `checkpoint-N` directories in `dir`, oldest first.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(step) = name
            .to_string_lossy()
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse().ok())
        {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The newest checkpoint in `dir`.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(dir)?.pop())
}

fn format_metrics(m: &Metrics) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}
