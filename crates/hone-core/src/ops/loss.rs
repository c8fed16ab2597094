//! Losses with PyTorch semantics (`ignore_index`, class weights, label smoothing), which
//! `candle_nn::loss` does not offer.

use candle_core::{bail, DType, Result, Tensor, D};

/// The options of [`cross_entropy`], named as in `torch.nn.functional.cross_entropy`.
#[derive(Debug, Clone, Default)]
pub struct CrossEntropyOptions {
    /// Targets equal to this value contribute nothing (Hugging Face uses -100).
    pub ignore_index: Option<i64>,
    /// One weight per class; the mean is then weighted by the targets' weights.
    pub class_weights: Option<Tensor>,
    /// Mix the one-hot target with the uniform distribution by this amount.
    pub label_smoothing: f64,
}

/// Mean cross-entropy of `logits` (`[N, C]`) against integer `targets` (`[N]`).
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    if targets.dims() != [n] {
        bail!(
            "cross_entropy: targets have shape {:?}, expected [{n}] to match logits {:?}",
            targets.dims(),
            logits.dims()
        )
    }
    let targets = targets.to_dtype(DType::I64)?;
    let logp = super::log_softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    let keep = match opts.ignore_index {
        Some(ignore) => targets.ne(ignore)?,
        None => targets.ones_like()?.to_dtype(DType::U8)?,
    };
    let safe_targets = keep.where_cond(&targets, &targets.zeros_like()?)?;
    let keep = keep.to_dtype(DType::F32)?;
    let sample_weight = match &opts.class_weights {
        Some(w) => {
            if w.dims() != [c] {
                bail!(
                    "cross_entropy: {} class weights for {c} classes",
                    w.elem_count()
                )
            }
            w.to_dtype(DType::F32)?
                .gather(&safe_targets, 0)?
                .mul(&keep)?
        }
        None => keep,
    };
    let picked = logp.gather(&safe_targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    // Clamp the denominator so an all-ignored batch yields 0, not NaN.
    let denom = sample_weight.sum_all()?.maximum(1e-12)?;
    let nll = (picked.mul(&sample_weight)?.sum_all()?.neg()? / &denom)?;
    if opts.label_smoothing == 0.0 {
        return Ok(nll);
    }
    let per_class = match &opts.class_weights {
        Some(w) => logp.broadcast_mul(&w.to_dtype(DType::F32)?.unsqueeze(0)?)?,
        None => logp,
    };
    let keep_rows = sample_weight.ne(0f32)?.to_dtype(DType::F32)?;
    let smooth = (per_class
        .sum(D::Minus1)?
        .mul(&keep_rows)?
        .sum_all()?
        .neg()?
        / c as f64)?;
    let smooth = (smooth / &denom)?;
    let eps = opts.label_smoothing;
    (nll * (1.0 - eps))? + (smooth * eps)?
}

/// Mean squared error (regression heads, `num_labels = 1`).
pub fn mse_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    pred.to_dtype(DType::F32)?
        .sub(&target.to_dtype(DType::F32)?)?
        .sqr()?
        .mean_all()
}

/// Mean binary cross-entropy on logits (multi-label heads), computed stably as
/// `max(x, 0) - x * y + log(1 + exp(-|x|))`.
pub fn binary_cross_entropy_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let x = logits.to_dtype(DType::F32)?;
    let y = targets.to_dtype(DType::F32)?;
    let softplus = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    (x.relu()? - x.mul(&y)?)?.add(&softplus)?.mean_all()
}

/// Knowledge distillation's soft-target loss (Hinton et al.): KL(softmax(teacher / T) ||
/// softmax(student / T)) summed over classes, averaged over the `N` rows, times T^2 (so its
/// gradients keep their size as T changes). `student`, `teacher`: `[N, C]` logits; the
/// teacher's are constants.
pub fn distillation_loss(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let (n, _) = student.dims2()?;
    if teacher.dims() != student.dims() {
        bail!(
            "distillation: teacher logits {:?} and student logits {:?} differ in shape",
            teacher.dims(),
            student.dims()
        )
    }
    if temperature <= 0.0 {
        bail!("distillation: temperature must be positive, got {temperature}")
    }
    let log_ps = super::log_softmax_last_dim(&(student.to_dtype(DType::F32)? / temperature)?)?;
    let log_pt =
        super::log_softmax_last_dim(&(teacher.to_dtype(DType::F32)?.detach() / temperature)?)?;
    let kl = (log_pt.exp()? * (log_pt - log_ps)?)?.sum_all()?;
    kl * (temperature * temperature / n.max(1) as f64)
}

/// `sum(w * (a - b)^2) / sum(w)` with `w` broadcast to `a`'s shape: a mean squared error
/// over the entries `weight` keeps (1) or drops (0), e.g. the tokens of a padded batch.
/// Gradients flow to `a`; `b` (a teacher's) is a constant.
pub fn masked_mse(a: &Tensor, b: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        bail!(
            "masked_mse: shapes {:?} and {:?} differ",
            a.dims(),
            b.dims()
        )
    }
    let w = weight.to_dtype(DType::F32)?.broadcast_as(a.shape())?;
    let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?.detach())?;
    let total = w.sum_all()?.to_scalar::<f32>()?;
    if total <= 0.0 {
        bail!("masked_mse: the weights keep nothing")
    }
    (d.sqr()? * w)?.sum_all()? / total as f64
}
