//! Knowledge distillation: a student trained on a task's data against both the gold labels
//! and a fine-tuned teacher's soft predictions,
//! `alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * task loss`.
//! [`Distillation`] wraps a task's [`TrainingData`] and changes only its training loss, so
//! the shared trainer (schedules, clipping, precision, checkpoints, resume, data parallel)
//! runs it unchanged. The teacher's logits come from the teacher on the fly, or from a file
//! computed once for the training set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::distributed::Communicator;
use crate::model::{Model, NetKind};
use crate::ops::distillation_loss;
use crate::training::{Metrics, TrainingData};

/// The `[distill]` section of a fine-tuning recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillArgs {
    /// The teacher: a fine-tuned model directory (hone's or Transformers') for the same
    /// task and labels, with the student's tokenizer.
    pub teacher: PathBuf,
    /// The weight of the soft-target term (1 - alpha goes to the gold labels).
    pub alpha: f64,
    /// The softmax temperature of both distributions.
    pub temperature: f64,
    /// Start the student from these teacher layers, in order (DistilBERT takes every other
    /// one); without it the student is `model.model_name_or_path`.
    pub student_layers: Option<Vec<usize>>,
    /// Keep the teacher's logits over the training set in this file: computed once, reused
    /// while the teacher and the training examples are the same. Without it the teacher
    /// runs beside the student at every step.
    pub teacher_logits_cache: Option<PathBuf>,
}

impl Default for DistillArgs {
    fn default() -> Self {
        Self {
            teacher: PathBuf::new(),
            alpha: 0.5,
            temperature: 2.0,
            student_layers: None,
            teacher_logits_cache: None,
        }
    }
}

impl DistillArgs {
    /// Check the numbers before anything is read.
    pub fn check(&self) -> Result<()> {
        if self.teacher.as_os_str().is_empty() {
            bail!("[distill] teacher: the teacher's model directory is required")
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            bail!(
                "[distill] alpha must be between 0 and 1, got {}",
                self.alpha
            )
        }
        if self.temperature <= 0.0 || !self.temperature.is_finite() {
            bail!(
                "[distill] temperature must be positive, got {}",
                self.temperature
            )
        }
        Ok(())
    }
}

/// A task whose training examples a network can score: what distillation needs of it.
pub trait LogitsData: TrainingData {
    /// Logits of training examples `indices` (`[N, C]`) and the task's loss over them.
    fn train_logits_and_loss(&self, net: &Self::Net, indices: &[usize])
        -> Result<(Tensor, Tensor)>;
    /// A checksum of the training examples (what a logits cache is valid for).
    fn train_fingerprint(&self) -> u32;
    /// The labels, in logit order (the teacher's must be the same).
    fn label_names(&self) -> &[String];
    /// Examples per batch when scoring.
    fn scoring_batch_size(&self) -> usize;
}

/// Where the teacher's logits come from.
enum Teacher<N: ?Sized> {
    /// `[examples, C]`, computed once, on the CPU.
    Cached(Tensor),
    Live(Box<Model<N>>),
}

/// A task's data with distillation's loss.
pub struct Distillation<D: LogitsData> {
    pub data: D,
    teacher: Teacher<D::Net>,
    alpha: f64,
    temperature: f64,
}

impl<D: LogitsData> Distillation<D>
where
    D::Net: NetKind,
{
    /// Wrap `data` with the teacher in `args.teacher` (loaded on `device`).
    pub fn new(data: D, args: &DistillArgs, device: &Device) -> Result<Self> {
        args.check()?;
        let teacher = Model::load(&args.teacher, device)
            .with_context(|| format!("[distill] teacher {}", args.teacher.display()))?
            .into_kind::<D::Net>()
            .with_context(|| format!("[distill] teacher {}", args.teacher.display()))?;
        let teacher_labels: Vec<String> = teacher.config.id2label.values().cloned().collect();
        if teacher_labels != data.label_names() {
            bail!(
                "[distill] the teacher {} predicts {:?}, the data's labels are {:?}",
                args.teacher.display(),
                teacher_labels,
                data.label_names()
            )
        }
        teacher.mode.set_training(false);
        let teacher = match &args.teacher_logits_cache {
            Some(path) => Teacher::Cached(cached_logits(&data, &teacher, &args.teacher, path)?),
            None => Teacher::Live(Box::new(teacher)),
        };
        Ok(Self {
            data,
            teacher,
            alpha: args.alpha,
            temperature: args.temperature,
        })
    }

    /// The teacher's logits for training examples `indices`.
    fn teacher_logits(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        match &self.teacher {
            Teacher::Cached(all) => {
                let ids: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
                let ids = Tensor::new(ids, all.device())?;
                Ok(all.index_select(&ids, 0)?.to_device(device)?)
            }
            Teacher::Live(model) => Ok(self
                .data
                .train_logits_and_loss(&model.net, indices)?
                .0
                .detach()),
        }
    }
}

/// The teacher's logits over every training example: read from `path` when it was written
/// for this teacher and these examples, else computed and written there.
fn cached_logits<D: LogitsData>(
    data: &D,
    teacher: &Model<D::Net>,
    teacher_dir: &Path,
    path: &Path,
) -> Result<Tensor>
where
    D::Net: NetKind,
{
    let weights = teacher_dir.join("model.safetensors");
    let teacher_crc = std::fs::read(&weights)
        .map(|b| crc32fast::hash(&b))
        .with_context(|| format!("cannot read {}", weights.display()))?;
    let key = format!("{:08x}-{:08x}", teacher_crc, data.train_fingerprint());
    let n = data.num_train_examples();
    if path.is_file() {
        let header = std::fs::File::open(path)
            .map_err(anyhow::Error::from)
            .and_then(|mut f| crate::io::safetensors_file::read_header(&mut f));
        let same = header
            .ok()
            .and_then(|(h, _)| {
                h["__metadata__"]["hone_distill_key"]
                    .as_str()
                    .map(str::to_string)
            })
            .is_some_and(|k| k == key);
        if same {
            let t = candle_core::safetensors::load(path, &Device::Cpu)?
                .remove("teacher_logits")
                .with_context(|| format!("{}: no `teacher_logits` tensor", path.display()))?;
            if t.dim(0)? == n {
                tracing::info!("teacher logits read from {}", path.display());
                return Ok(t);
            }
        }
        tracing::info!(
            "{} is for another teacher or data set: computing again",
            path.display()
        );
    }
    tracing::info!("computing the teacher's logits on {n} training examples");
    let batch = data.scoring_batch_size().max(1);
    let mut rows = Vec::new();
    for start in (0..n).step_by(batch) {
        let indices: Vec<usize> = (start..(start + batch).min(n)).collect();
        // Detached: the teacher's weights are variables, and each batch's logits would
        // otherwise keep that batch's whole forward graph alive (60k SST-2 rows: 24 GB).
        let (logits, _) = data.train_logits_and_loss(&teacher.net, &indices)?;
        rows.push(
            logits
                .detach()
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?,
        );
    }
    let all = Tensor::cat(&rows, 0)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tensors = HashMap::from([("teacher_logits".to_string(), all.clone())]);
    crate::io::safetensors_file::write(
        path,
        &tensors,
        HashMap::from([("hone_distill_key".to_string(), key)]),
    )?;
    Ok(all)
}

impl<D: LogitsData> TrainingData for Distillation<D>
where
    D::Net: NetKind,
{
    type Net = D::Net;

    fn num_train_examples(&self) -> usize {
        self.data.num_train_examples()
    }

    fn train_example_length(&self, i: usize) -> usize {
        self.data.train_example_length(i)
    }

    fn training_loss(&self, net: &Self::Net, indices: &[usize]) -> Result<Tensor> {
        let (student, task_loss) = self.data.train_logits_and_loss(net, indices)?;
        let teacher = self.teacher_logits(indices, student.device())?;
        let soft = distillation_loss(&student, &teacher, self.temperature)?;
        Ok(((soft * self.alpha)? + (task_loss.to_dtype(DType::F32)? * (1.0 - self.alpha))?)?)
    }

    fn evaluate(&self, net: &Self::Net, max_batches: Option<usize>) -> Result<Metrics> {
        self.data.evaluate(net, max_batches)
    }

    fn evaluate_sharded(
        &self,
        net: &Self::Net,
        max_batches: Option<usize>,
        comm: &dyn Communicator,
    ) -> Result<Metrics> {
        self.data.evaluate_sharded(net, max_batches, comm)
    }

    fn loss_weight(&self, indices: &[usize]) -> f64 {
        self.data.loss_weight(indices)
    }

    fn save_extras(&self, dir: &Path) -> Result<()> {
        self.data.save_extras(dir)
    }
}

/// A student made of some of the teacher's layers, in a temporary directory that lives as
/// long as this (the model reads its weights while it is built).
pub struct StudentInit {
    pub dir: PathBuf,
}

impl StudentInit {
    /// With `student_layers`, the student's starting directory; None otherwise (the recipe's
    /// model is the student).
    pub fn make(args: &DistillArgs) -> Result<Option<Self>> {
        let Some(layers) = &args.student_layers else {
            return Ok(None);
        };
        let dir = std::env::temp_dir().join(format!("hone-student-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::model::surgery::keep_layers(&args.teacher, layers, &dir)
            .with_context(|| format!("[distill] student_layers from {}", args.teacher.display()))?;
        tracing::info!("student: layers {layers:?} of {}", args.teacher.display());
        Ok(Some(Self { dir }))
    }
}

impl Drop for StudentInit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
