//! Structured pruning of a fine-tuned classifier: how much each attention head and each
//! feed-forward neuron matters on a calibration set, and which to remove.
//!
//! Importance is Michel et al.'s (2019): a gate `xi` multiplying a head's output, and
//! `I = |dL / dxi|` at `xi = 1`. That derivative is `sum(o_h * dL/do_h)` over the head's
//! output `o_h` (gradient x activation), which equals the sum of `W * dL/dW` over the head's
//! columns of the attention output projection `W` — so it comes from the parameter
//! gradients of an ordinary backward pass, with no hook in the model. A feed-forward
//! neuron's is the same over its column of the second projection. Gradients are of each
//! calibration batch's mean loss, their absolute values summed over batches.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Var};

use crate::model::surgery::PrunePlan;
use crate::model::{Model, SequenceClassifier};
use crate::training::TrainingData;

/// Importance per layer: of each current head, and of each feed-forward neuron.
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    pub heads: Vec<Vec<f64>>,
    pub neurons: Vec<Vec<f64>>,
}

/// Head and neuron importance of `model` on the training examples of `data` (the
/// calibration set), in batches of `batch_size`, dropout off.
pub fn importance<D>(
    model: &Model<dyn SequenceClassifier>,
    data: &D,
    batch_size: usize,
) -> Result<Importance>
where
    D: TrainingData<Net = dyn SequenceClassifier>,
{
    let arch = &model.config.arch;
    let layers = arch.num_layers();
    let params: HashMap<String, Var> = model.params.params().into_iter().collect();
    let var = |name: &str| -> Result<&Var> {
        params
            .get(name)
            .with_context(|| format!("pruning: the model has no trainable parameter `{name}`"))
    };
    let mut imp = Importance {
        heads: Vec::new(),
        neurons: Vec::new(),
    };
    let mut names = Vec::new();
    for i in 0..layers {
        let n = arch
            .prunable_layer(i)
            .context("structured pruning is not supported for this architecture yet")?;
        imp.heads.push(vec![
            0.0;
            var(&format!("{}.weight", n.attention_output))?
                .dim(1)?
                / n.head_dim
        ]);
        imp.neurons
            .push(vec![0.0; var(&format!("{}.weight", n.ffn_output))?.dim(1)?]);
        names.push(n);
    }
    let training = model.mode.is_training();
    model.mode.set_training(false);
    let n = data.num_train_examples();
    if n == 0 {
        bail!("pruning: the calibration set is empty")
    }
    let result = (|| -> Result<()> {
        for start in (0..n).step_by(batch_size.max(1)) {
            let indices: Vec<usize> = (start..(start + batch_size.max(1)).min(n)).collect();
            let grads = data.training_loss(&*model.net, &indices)?.backward()?;
            for (i, layer) in names.iter().enumerate() {
                // sum over output rows of W * dL/dW: [in], then per head or neuron.
                let column_sums = |module: &str| -> Result<Vec<f64>> {
                    let w = var(&format!("{module}.weight"))?;
                    let g = grads
                        .get(w.as_tensor())
                        .with_context(|| format!("pruning: no gradient for `{module}.weight`"))?;
                    let s = (w.as_tensor() * g)?.to_dtype(DType::F64)?.sum(0)?;
                    Ok(s.to_vec1::<f64>()?)
                };
                let heads = column_sums(&layer.attention_output)?;
                for (h, total) in imp.heads[i].iter_mut().enumerate() {
                    *total += heads[h * layer.head_dim..(h + 1) * layer.head_dim]
                        .iter()
                        .sum::<f64>()
                        .abs();
                }
                for (j, x) in column_sums(&layer.ffn_output)?.into_iter().enumerate() {
                    imp.neurons[i][j] += x.abs();
                }
            }
        }
        Ok(())
    })();
    model.mode.set_training(training);
    result?;
    Ok(imp)
}

/// Which heads and neurons to remove: the `head_fraction` of all heads least important
/// after normalising each layer's scores to unit L2 norm (Michel et al.), never a layer's
/// last head; and in every layer the `ffn_fraction` of its neurons least important (the
/// same number per layer).
pub fn plan(imp: &Importance, head_fraction: f64, ffn_fraction: f64) -> Result<PrunePlan> {
    for (name, f) in [("heads", head_fraction), ("ffn", ffn_fraction)] {
        if !(0.0..1.0).contains(&f) {
            bail!("--{name} must be a fraction in [0, 1), got {f}")
        }
    }
    let mut scored: Vec<(f64, usize, usize)> = Vec::new();
    for (i, heads) in imp.heads.iter().enumerate() {
        let norm = heads.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-30);
        scored.extend(heads.iter().enumerate().map(|(h, x)| (x / norm, i, h)));
    }
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let total = scored.len();
    let want = (head_fraction * total as f64).round() as usize;
    let mut left: Vec<usize> = imp.heads.iter().map(Vec::len).collect();
    let mut heads: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (_, i, h) in scored {
        if heads.values().map(Vec::len).sum::<usize>() == want {
            break;
        }
        if left[i] > 1 {
            left[i] -= 1;
            heads.entry(i).or_default().push(h);
        }
    }
    heads.values_mut().for_each(|v| v.sort_unstable());
    let mut neurons = BTreeMap::new();
    if ffn_fraction > 0.0 {
        for (i, scores) in imp.neurons.iter().enumerate() {
            let keep_n = scores.len() - (ffn_fraction * scores.len() as f64).round() as usize;
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            let mut keep: Vec<usize> = order[..keep_n.max(1)].to_vec();
            keep.sort_unstable();
            neurons.insert(i, keep);
        }
    }
    Ok(PrunePlan { heads, neurons })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two layers of 3 heads. Normalised: layer 0 [1, 2, 2] / 3 = [0.33, 0.67, 0.67];
    /// layer 1 [0.1, 4, 3] / 5.001 = [0.02, 0.80, 0.60]. A third of 6 heads is 2: the two
    /// smallest, layer 1 head 0 (0.02) and layer 0 head 0 (0.33). Neurons: keep the top
    /// half in each layer.
    #[test]
    fn the_least_important_go_after_normalising_each_layer() {
        let imp = Importance {
            heads: vec![vec![1.0, 2.0, 2.0], vec![0.1, 4.0, 3.0]],
            neurons: vec![vec![0.5, 0.1, 0.9, 0.3], vec![1.0, 2.0, 3.0, 4.0]],
        };
        let p = plan(&imp, 1.0 / 3.0, 0.5).unwrap();
        assert_eq!(p.heads, BTreeMap::from([(0, vec![0]), (1, vec![0])]));
        assert_eq!(
            p.neurons,
            BTreeMap::from([(0, vec![0, 2]), (1, vec![2, 3])])
        );
        // Without normalisation layer 1's head 0 and layer 0's head 0 would go too; with a
        // fraction that would empty a layer, its last head stays.
        let p = plan(&imp, 0.99, 0.0).unwrap();
        assert_eq!(
            p.heads.values().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2]
        );
        assert!(p.neurons.is_empty());
        assert!(plan(&imp, 1.0, 0.0).is_err());
    }
}
