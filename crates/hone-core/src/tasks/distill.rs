//! Knowledge distillation: a student trained on a task's data against both the gold labels
//! and a fine-tuned teacher's soft predictions,
//! `alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * task loss`,
//! plus, as options, `hidden_weight` times the mean squared error between chosen hidden
//! states and `attention_weight` times that between chosen attention maps (TinyBERT's
//! intermediate terms, without its projection: student and teacher share a width).
//! [`Distillation`] wraps a task's [`TrainingData`] and changes only its training loss, so
//! the shared trainer (schedules, clipping, precision, checkpoints, resume, data parallel)
//! runs it unchanged. The teacher's logits come from the teacher on the fly, or from a file
//! computed once for the training set. A task scores "rows": one per sequence for text
//! classification, one per labelled piece for token classification.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::distributed::Communicator;
use crate::model::taps::{self, Taps};
use crate::model::{Model, NetKind};
use crate::ops::{distillation_loss, masked_mse};
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
    /// The weight of the hidden-state term (0: none).
    pub hidden_weight: f64,
    /// `[student, teacher]` hidden-state pairs it compares; 0 is the embeddings' output and
    /// i the output of layer i (Transformers' `hidden_states`). A student of teacher layers
    /// [0, 2, 4] matches with `[[1, 1], [2, 3], [3, 5]]`.
    pub hidden_layers: Vec<[usize; 2]>,
    /// The weight of the attention-transfer term (0: none).
    pub attention_weight: f64,
    /// `[student, teacher]` layer pairs whose attention probabilities it compares (layers
    /// counted from 0; the two must have the same number of heads).
    pub attention_layers: Vec<[usize; 2]>,
}

impl Default for DistillArgs {
    fn default() -> Self {
        Self {
            teacher: PathBuf::new(),
            alpha: 0.5,
            temperature: 2.0,
            student_layers: None,
            teacher_logits_cache: None,
            hidden_weight: 0.0,
            hidden_layers: Vec::new(),
            attention_weight: 0.0,
            attention_layers: Vec::new(),
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
        for (key, weight, pairs) in [
            ("hidden", self.hidden_weight, &self.hidden_layers),
            ("attention", self.attention_weight, &self.attention_layers),
        ] {
            if weight < 0.0 || !weight.is_finite() {
                bail!("[distill] {key}_weight must be 0 or more, got {weight}")
            }
            if weight > 0.0 && pairs.is_empty() {
                bail!("[distill] {key}_weight is {weight} but {key}_layers names no [student, teacher] pair")
            }
        }
        if self.uses_intermediates() && self.teacher_logits_cache.is_some() {
            bail!(
                "[distill] teacher_logits_cache holds logits only: the hidden-state and attention \
                 terms need the teacher at every step (remove one or the other)"
            )
        }
        Ok(())
    }

    /// Whether a hidden-state or attention term is on (the teacher then runs at every step).
    pub fn uses_intermediates(&self) -> bool {
        self.hidden_weight > 0.0 || self.attention_weight > 0.0
    }
}

/// A task whose training examples a network can score: what distillation needs of it.
pub trait LogitsData: TrainingData {
    /// Logits `[R, C]` of the rows of training examples `indices` (their rows in order,
    /// example after example) and the task's loss over them.
    fn train_logits_and_loss(&self, net: &Self::Net, indices: &[usize])
        -> Result<(Tensor, Tensor)>;
    /// How many rows training example `i` scores.
    fn rows_of(&self, i: usize) -> usize;
    /// A checksum of the training examples (what a logits cache is valid for).
    fn train_fingerprint(&self) -> u32;
    /// The labels, in logit order (the teacher's must be the same).
    fn label_names(&self) -> &[String];
    /// Examples per batch when scoring.
    fn scoring_batch_size(&self) -> usize;
}

/// Where the teacher's logits come from.
enum Teacher<N: ?Sized> {
    /// Every training example's rows `[R, C]`, computed once, on the CPU; example i's
    /// start at `offsets[i]`.
    Cached {
        logits: Tensor,
        offsets: Vec<usize>,
    },
    Live(Box<Model<N>>),
}

/// A task's data with distillation's loss.
pub struct Distillation<D: LogitsData> {
    pub data: D,
    teacher: Teacher<D::Net>,
    args: DistillArgs,
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
            Some(path) => {
                let (logits, offsets) = cached_logits(&data, &teacher, &args.teacher, path)?;
                Teacher::Cached { logits, offsets }
            }
            None => Teacher::Live(Box::new(teacher)),
        };
        Ok(Self {
            data,
            teacher,
            args: args.clone(),
        })
    }

    /// The teacher's logits for the rows of training examples `indices`, from the cache.
    fn cached_rows(
        logits: &Tensor,
        offsets: &[usize],
        indices: &[usize],
        device: &Device,
    ) -> Result<Tensor> {
        let ids: Vec<u32> = indices
            .iter()
            .flat_map(|&i| (offsets[i]..offsets[i + 1]).map(|r| r as u32))
            .collect();
        let ids = Tensor::new(ids, logits.device())?;
        Ok(logits.index_select(&ids, 0)?.to_device(device)?)
    }

    /// The hidden-state and attention terms, weighted, from both passes' recordings.
    fn intermediate_loss(&self, student: &Taps, teacher: &Taps) -> Result<Tensor> {
        let mask = student
            .attention_mask
            .as_ref()
            .context("[distill] the student recorded no attention mask: hidden-state and attention terms are built for BERT-family encoders")?
            .to_dtype(DType::F32)?;
        let mut total = Tensor::zeros((), DType::F32, mask.device())?;
        if self.args.hidden_weight > 0.0 {
            // [B, T, 1]: real tokens only.
            let w = mask.unsqueeze(2)?;
            let (s, t) = (&student.hidden_states, &teacher.hidden_states);
            let term = mean_paired_mse(&self.args.hidden_layers, s, t, &w, "hidden_layers")?;
            total = (total + (term * self.args.hidden_weight)?)?;
        }
        if self.args.attention_weight > 0.0 {
            // [B, 1, Tq, Tk]: pairs of real tokens.
            let w = mask
                .unsqueeze(2)?
                .broadcast_mul(&mask.unsqueeze(1)?)?
                .unsqueeze(1)?;
            let (s, t) = (&student.attentions, &teacher.attentions);
            let term = mean_paired_mse(&self.args.attention_layers, s, t, &w, "attention_layers")?;
            total = (total + (term * self.args.attention_weight)?)?;
        }
        Ok(total)
    }
}

/// The mean over `[student, teacher]` pairs of [`masked_mse`] between the student's and the
/// teacher's recordings (hidden states or attention maps; `key` names the recipe's list).
fn mean_paired_mse(
    pairs: &[[usize; 2]],
    student: &[Tensor],
    teacher: &[Tensor],
    weight: &Tensor,
    key: &str,
) -> Result<Tensor> {
    let pick = |taps: &'_ [Tensor], i: usize, who: &str| -> Result<Tensor> {
        taps.get(i).cloned().with_context(|| {
            format!(
                "[distill] {key}: the {who} has {} recordings (0 to {}), not {i}",
                taps.len(),
                taps.len().saturating_sub(1)
            )
        })
    };
    let mut sum = Tensor::zeros((), DType::F32, weight.device())?;
    for &[i, j] in pairs {
        let (s, t) = (pick(student, i, "student")?, pick(teacher, j, "teacher")?);
        if s.dims() != t.dims() {
            bail!(
                "[distill] {key} [{i}, {j}]: student {:?} and teacher {:?} differ in shape",
                s.dims(),
                t.dims()
            )
        }
        sum = (sum + masked_mse(&s, &t, weight)?)?;
    }
    Ok((sum / pairs.len().max(1) as f64)?)
}

/// The teacher's logits over every training example's rows, with each example's first
/// row: read from `path` when it was written for this teacher and these examples, else
/// computed and written there.
fn cached_logits<D: LogitsData>(
    data: &D,
    teacher: &Model<D::Net>,
    teacher_dir: &Path,
    path: &Path,
) -> Result<(Tensor, Vec<usize>)>
where
    D::Net: NetKind,
{
    let weights = teacher_dir.join("model.safetensors");
    let teacher_crc = std::fs::read(&weights)
        .map(|b| crc32fast::hash(&b))
        .with_context(|| format!("cannot read {}", weights.display()))?;
    let key = format!("{:08x}-{:08x}", teacher_crc, data.train_fingerprint());
    let n = data.num_train_examples();
    let mut offsets = vec![0usize; n + 1];
    for i in 0..n {
        offsets[i + 1] = offsets[i] + data.rows_of(i);
    }
    let rows = offsets[n];
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
            if t.dim(0)? == rows {
                tracing::info!("teacher logits read from {}", path.display());
                return Ok((t, offsets));
            }
        }
        tracing::info!(
            "{} is for another teacher or data set: computing again",
            path.display()
        );
    }
    tracing::info!("computing the teacher's logits on {n} training examples");
    // Shortest first, so each batch pads little; each batch's rows go to their examples'
    // places.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| data.train_example_length(i));
    let batch = data.scoring_batch_size().max(1);
    let mut width = 0;
    let mut flat: Vec<f32> = Vec::new();
    for chunk in order.chunks(batch) {
        // Detached: the teacher's weights are variables, and each batch's logits would
        // otherwise keep that batch's whole forward graph alive (60k SST-2 rows: 24 GB).
        let (logits, _) = data.train_logits_and_loss(&teacher.net, chunk)?;
        let logits = logits
            .detach()
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        let (r, c) = logits.dims2()?;
        if flat.is_empty() {
            width = c;
            flat = vec![0f32; rows * c];
        }
        let values = logits.flatten_all()?.to_vec1::<f32>()?;
        let mut at = 0;
        for &i in chunk {
            let k = offsets[i + 1] - offsets[i];
            flat[offsets[i] * c..offsets[i + 1] * c].copy_from_slice(&values[at * c..(at + k) * c]);
            at += k;
        }
        if at != r {
            bail!(
                "the task scored {r} rows for {} examples, expected {at}",
                chunk.len()
            )
        }
    }
    let all = Tensor::from_vec(flat, (rows, width), &Device::Cpu)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tensors = HashMap::from([("teacher_logits".to_string(), all.clone())]);
    crate::io::safetensors_file::write(
        path,
        &tensors,
        HashMap::from([("hone_distill_key".to_string(), key)]),
    )?;
    Ok((all, offsets))
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
        let attentions = self.args.attention_weight > 0.0;
        let intermediates = self.args.uses_intermediates();
        let ((student, task_loss), student_taps) = match intermediates {
            true => taps::capture(attentions, || self.data.train_logits_and_loss(net, indices))?,
            false => (
                self.data.train_logits_and_loss(net, indices)?,
                Taps::default(),
            ),
        };
        let (teacher, teacher_taps) = match &self.teacher {
            Teacher::Cached { logits, offsets } => (
                Self::cached_rows(logits, offsets, indices, student.device())?,
                Taps::default(),
            ),
            Teacher::Live(model) => {
                let ((logits, _), taps) = taps::capture(attentions, || {
                    self.data.train_logits_and_loss(&model.net, indices)
                })?;
                (logits.detach(), taps)
            }
        };
        let soft = distillation_loss(&student, &teacher, self.args.temperature)?;
        let loss = ((soft * self.args.alpha)?
            + (task_loss.to_dtype(DType::F32)? * (1.0 - self.args.alpha))?)?;
        if !intermediates {
            return Ok(loss);
        }
        Ok((loss + self.intermediate_loss(&student_taps, &teacher_taps)?)?)
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
