//! The output directory and checkpoints: written atomically, pruned to the limit, restored
//! exactly on resume, the best one loaded at the end.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{RankRng, Run, Trainer, TrainerState, TrainingData, STATE_FILE};
use crate::distributed;
use crate::training::args::TrainingArguments;
use crate::training::log::MetricsLog;
use crate::training::optim::{Optimizer, OptimizerState};
use crate::training::precision::GradScaler;

impl<D: TrainingData> Trainer<'_, D> {
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

    /// Continue from the latest checkpoint: weights, optimizer, trainer state, and the
    /// metrics log cut back to that step.
    pub(super) fn resume(&self, run: &mut Run, log: &MetricsLog) -> Result<()> {
        let out_dir = &self.args.output_dir;
        // Every rank resumes from the checkpoint rank 0 finds (a shared file system).
        let latest = latest_checkpoint(out_dir)?.map(|p| p.display().to_string());
        let latest = distributed::broadcast_bytes(
            self.communicator(),
            latest.unwrap_or_default().as_bytes(),
            0,
        )?;
        let latest = String::from_utf8(latest).context("checkpoint path")?;
        if latest.is_empty() {
            bail!("no checkpoint to resume from in {}", out_dir.display())
        }
        let ckpt = PathBuf::from(latest);
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

    pub(super) fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.args.output_dir.join(format!("checkpoint-{step}"))
    }

    /// Save a checkpoint and keep only it and the best one (rank 0; the others only learn
    /// its name).
    pub(super) fn checkpoint(&mut self, run: &mut Run) -> Result<PathBuf> {
        let dir = self.save_checkpoint(run)?;
        self.prune_checkpoints(&run.state)?;
        for cb in &mut self.callbacks {
            cb.on_save(&run.state, &dir)?;
        }
        Ok(dir)
    }

    /// Write model, tokenizer, optimizer and trainer state to `checkpoint-{step}`; the
    /// directory is filled under a temporary name and renamed into place when complete.
    pub(super) fn save_checkpoint(&self, run: &mut Run) -> Result<PathBuf> {
        let state = &mut run.state;
        let dir = self.checkpoint_dir(state.global_step);
        // Each rank's dropout stream, for an exact resume of every rank.
        state.rank_rngs = self.gather_rngs()?;
        if !self.writes() {
            return Ok(dir);
        }
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

    pub(super) fn write_state(&self, dir: &Path, state: &TrainerState) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
        let file = StateFile {
            format_version: CHECKPOINT_FORMAT_VERSION,
            state: state.clone(),
        };
        crate::io::write_json(&dir.join(STATE_FILE), &file)
    }

    /// Load weights, optimizer and trainer state from a checkpoint.
    pub(super) fn restore(
        &self,
        ckpt: &Path,
        optimizer: &mut dyn Optimizer,
    ) -> Result<TrainerState> {
        let state = read_state(&ckpt.join(STATE_FILE))?;
        self.model.load_weights(ckpt)?;
        optimizer
            .load_state(OptimizerState::load(ckpt, &self.model.device)?)
            .with_context(|| format!("cannot restore the optimizer from {}", ckpt.display()))?;
        let (rank, world) = (self.communicator().rank(), self.communicator().world_size());
        let rng = match state.rank_rngs.get(rank) {
            Some(own) if state.rank_rngs.len() == world => own.clone(),
            _ => {
                if world > 1 {
                    tracing::warn!(
                        "{} was written by a run of {} ranks, this one has {world}: every rank resumes rank 0's dropout stream",
                        ckpt.display(),
                        state.rank_rngs.len().max(1)
                    );
                }
                RankRng {
                    seed: state.rng_seed,
                    stream: state.rng_stream,
                    word_pos: state.rng_word_pos.clone(),
                }
            }
        };
        let pos: u128 = rng.word_pos.parse().unwrap_or(0);
        self.model.mode.set_rng_state(rng.seed, rng.stream, pos);
        Ok(state)
    }

    /// Every rank's dropout stream, in rank order (empty in one process: the state's own
    /// fields hold it).
    fn gather_rngs(&self) -> Result<Vec<RankRng>> {
        let comm = self.communicator();
        if comm.world_size() == 1 {
            return Ok(Vec::new());
        }
        let (seed, stream, pos) = self.model.mode.rng_state();
        let own = serde_json::to_vec(&RankRng {
            seed,
            stream,
            word_pos: pos.to_string(),
        })?;
        (0..comm.world_size())
            .map(|r| {
                let bytes = distributed::broadcast_bytes(comm, &own, r)?;
                Ok(serde_json::from_slice(&bytes)?)
            })
            .collect()
    }

    /// Keep the latest checkpoint and the best one; remove the others.
    pub(super) fn prune_checkpoints(&self, state: &TrainerState) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
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
    pub(super) fn finish(&self, state: &TrainerState) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
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

/// The layout of a checkpoint directory. Raised when a change means an older hone would
/// misread it; a checkpoint without the field predates versioning and is version 1.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// `trainer_state.json`: the state with the format version of the checkpoint around it.
#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    format_version: u32,
    #[serde(flatten)]
    state: TrainerState,
}

/// Read `trainer_state.json`, refusing one written in a newer checkpoint format before
/// reading anything else of it.
fn read_state(path: &Path) -> Result<TrainerState> {
    let value: serde_json::Value = crate::io::read_json(path)?;
    let version = match value.get("format_version") {
        None => 1,
        Some(v) => v
            .as_u64()
            .with_context(|| format!("{}: `format_version` is not a number", path.display()))?,
    };
    if version > CHECKPOINT_FORMAT_VERSION as u64 {
        bail!(
            "{} is checkpoint format version {version}, written by a newer hone; this one reads up to version {CHECKPOINT_FORMAT_VERSION}",
            path.display()
        )
    }
    serde_json::from_value(value)
        .with_context(|| format!("{} is not a valid trainer state", path.display()))
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
