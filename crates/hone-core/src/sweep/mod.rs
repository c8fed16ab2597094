//! Hyper-parameter search over recipes: a sweep file names a recipe, the keys to vary and
//! how (lists of values, uniform or log-uniform ranges), and the search: a grid, random
//! trials, or random trials stopped early by ASHA ([`asha`]). Each trial is the recipe with
//! its values as `--set` overrides, its own output directory and seed; the metric is the
//! one the trainer logs at its evaluations (on the validation set: a sweep never sees
//! anything else). Running the trials is the caller's (`hone sweep` runs `hone finetune`
//! processes); this module decides what runs next and keeps the results.

pub mod asha;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use asha::{Asha, Direction, Job};

/// How trials are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMethod {
    /// Every combination of the listed values, each trained to the end.
    Grid,
    /// `num_trials` random draws, each trained to the end.
    Random,
    /// `num_trials` random draws, stopped early by asynchronous successive halving.
    Asha,
}

/// A sweep file (`hone sweep --config sweep.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// The recipe every trial starts from (relative to the working directory).
    pub recipe: PathBuf,
    /// Where the trials' directories (`trial-000`, ...), `sweep.jsonl`, `sweep.png` and
    /// `best.toml` go.
    pub output_dir: PathBuf,
    pub method: SearchMethod,
    /// Trials to draw (random, asha); a grid runs every combination.
    #[serde(default)]
    pub num_trials: Option<usize>,
    /// The evaluation metric to rank by, as logged (`eval_accuracy`, `eval_loss`, ...).
    pub metric: String,
    pub direction: Direction,
    /// Seeds the draws; trial t trains with the recipe's seed + t.
    #[serde(default)]
    pub seed: u64,
    /// Trials running at once; each gets the cores divided among them.
    #[serde(default = "one")]
    pub parallel_trials: usize,
    /// `--set` overrides every trial gets (a data subset, fewer evaluation rows, ...).
    #[serde(default)]
    pub overrides: Vec<String>,
    /// The keys to vary (any recipe key, as `--set` names it).
    pub parameters: BTreeMap<String, ParamSpec>,
    /// ASHA's budgets, in optimizer updates.
    #[serde(default)]
    pub asha: Option<AshaConfig>,
}

fn one() -> usize {
    1
}

/// ASHA's rungs: `min_resource`, then x `reduction_factor` until `max_resource` (the
/// whole trial, which also ends its learning-rate schedule), counted in `resource` units.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AshaConfig {
    pub min_resource: usize,
    pub max_resource: usize,
    #[serde(default = "three")]
    pub reduction_factor: usize,
    #[serde(default)]
    pub resource: Resource,
}

/// What ASHA's budgets count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Optimizer updates.
    #[default]
    Updates,
    /// Training examples: fair between trials of different batch sizes (a budget of one
    /// epoch is the training set's size).
    Examples,
}

/// A trial's rungs in updates, from the rungs in `resource` units and its examples per
/// update. Every rung but the last is a multiple of the first, so that evaluating every
/// `first` updates evaluates at each rung's end (the last is the end of the trial, where
/// the trainer evaluates anyway).
pub fn rungs_in_updates(
    rungs: &[usize],
    resource: Resource,
    examples_per_update: usize,
) -> Vec<usize> {
    let per = match resource {
        Resource::Updates => 1,
        Resource::Examples => examples_per_update.max(1),
    };
    let first = rungs[0].div_ceil(per).max(1);
    let last = rungs[rungs.len() - 1].div_ceil(per).max(first);
    let mut out: Vec<usize> = rungs[..rungs.len() - 1]
        .iter()
        .map(|&r| (r.div_ceil(per).div_ceil(first) * first).min(last))
        .collect();
    out.push(last);
    out
}

fn three() -> usize {
    3
}

/// How one key varies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum ParamSpec {
    /// One of these values (any TOML value).
    Values { values: Vec<toml::Value> },
    /// A number between `min` and `max`.
    Range {
        distribution: Distribution,
        min: f64,
        max: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    Uniform,
    /// Uniform in the logarithm (learning rates).
    LogUniform,
    /// An integer, uniform between the bounds (inclusive).
    IntUniform,
}

/// One trial's values, by key.
pub type TrialParams = BTreeMap<String, toml::Value>;

impl SweepConfig {
    /// Read and check a sweep file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sweep file {}", path.display()))?;
        let config: SweepConfig =
            toml::from_str(&text).map_err(|e| crate::recipe::located(path, &text, &e))?;
        config.check().with_context(|| path.display().to_string())?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.parameters.is_empty() {
            bail!("[parameters] is empty: name at least one recipe key to vary")
        }
        for (key, spec) in &self.parameters {
            match spec {
                ParamSpec::Values { values } if values.is_empty() => {
                    bail!("parameters.{key}: `values` is empty")
                }
                ParamSpec::Range { min, max, .. }
                    if min.partial_cmp(max).is_none_or(|o| o.is_gt()) =>
                {
                    bail!("parameters.{key}: min {min} is above max {max} (or one is not a number)")
                }
                ParamSpec::Range {
                    distribution: Distribution::LogUniform,
                    min,
                    ..
                } if *min <= 0.0 => bail!("parameters.{key}: log_uniform needs min > 0"),
                ParamSpec::Range { .. } if self.method == SearchMethod::Grid => {
                    bail!("parameters.{key}: a grid takes `values`, not a range")
                }
                _ => {}
            }
        }
        match (self.method, self.num_trials, &self.asha) {
            (SearchMethod::Grid, _, Some(_)) => bail!("[asha] is for method = \"asha\""),
            (SearchMethod::Random | SearchMethod::Asha, None | Some(0), _) => {
                bail!("num_trials: random and asha searches need a number of trials")
            }
            (SearchMethod::Asha, _, None) => {
                bail!("method = \"asha\" needs an [asha] section (min_resource, max_resource)")
            }
            _ => {}
        }
        if self.parallel_trials == 0 {
            bail!("parallel_trials must be at least 1")
        }
        Ok(())
    }

    /// Every trial's values, in trial order.
    pub fn trials(&self) -> Vec<TrialParams> {
        match self.method {
            SearchMethod::Grid => {
                let mut trials = vec![TrialParams::new()];
                for (key, spec) in &self.parameters {
                    let ParamSpec::Values { values } = spec else {
                        unreachable!("checked: a grid has values only")
                    };
                    trials = trials
                        .into_iter()
                        .flat_map(|t| {
                            values.iter().map(move |v| {
                                let mut t = t.clone();
                                t.insert(key.clone(), v.clone());
                                t
                            })
                        })
                        .collect();
                }
                trials
            }
            SearchMethod::Random | SearchMethod::Asha => {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                (0..self.num_trials.unwrap_or(0))
                    .map(|_| {
                        self.parameters
                            .iter()
                            .map(|(k, spec)| (k.clone(), draw(spec, &mut rng)))
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The rungs' budgets in updates (one rung, no budget, unless ASHA).
    pub fn scheduler(&self, trials: usize) -> Result<Asha> {
        match (&self.asha, self.method) {
            (Some(a), SearchMethod::Asha) => Ok(Asha::new(
                trials,
                Asha::rungs(a.min_resource, a.max_resource, a.reduction_factor)?,
                a.reduction_factor,
                self.direction,
            )),
            // One rung: each trial trains to the end (0 = the recipe's own length).
            _ => Ok(Asha::new(trials, vec![0], 2, self.direction)),
        }
    }
}

fn draw(spec: &ParamSpec, rng: &mut ChaCha8Rng) -> toml::Value {
    match spec {
        ParamSpec::Values { values } => values[rng.gen_range(0..values.len())].clone(),
        ParamSpec::Range {
            distribution,
            min,
            max,
        } => match distribution {
            Distribution::Uniform => toml::Value::Float(min + (max - min) * rng.gen::<f64>()),
            Distribution::LogUniform => {
                let (a, b) = (min.ln(), max.ln());
                // Three significant digits: a recipe a person can read back.
                toml::Value::Float(round_sig((a + (b - a) * rng.gen::<f64>()).exp(), 3))
            }
            Distribution::IntUniform => {
                toml::Value::Integer(rng.gen_range(min.ceil() as i64..=max.floor() as i64))
            }
        },
    }
}

fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// A trial's values as `--set` arguments.
pub fn overrides_of(params: &TrialParams) -> Vec<String> {
    params.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// One line of `sweep.jsonl`: a trial at the end of a rung.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialRecord {
    pub trial: usize,
    pub rung: usize,
    /// Updates trained so far.
    pub updates: usize,
    /// The metric at those updates (NaN, written as null, when the trial failed).
    pub metric: Option<f64>,
    pub params: TrialParams,
    /// Wall time of this rung's training process.
    pub seconds: f64,
    pub output_dir: PathBuf,
}

/// The metric `key` logged by the evaluation at update `step` in a trial's `metrics.jsonl`
/// (the last evaluation when `step` is None).
pub fn metric_at(metrics_jsonl: &Path, key: &str, step: Option<usize>) -> Result<f64> {
    let text = std::fs::read_to_string(metrics_jsonl)
        .with_context(|| format!("cannot read {}", metrics_jsonl.display()))?;
    let mut found = None;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: a line is not JSON", metrics_jsonl.display()))?;
        let (Some(s), Some(m)) = (v["step"].as_u64(), v[key].as_f64()) else {
            continue;
        };
        if step.is_none_or(|want| want == s as usize) {
            found = Some(m);
        }
    }
    found.with_context(|| match step {
        Some(s) => format!(
            "{}: no `{key}` logged at update {s} (is it an evaluation step?)",
            metrics_jsonl.display()
        ),
        None => format!("{}: no `{key}` logged", metrics_jsonl.display()),
    })
}

/// Trials ranked best first by their highest rung, then their metric there.
pub fn ranked(records: &[TrialRecord], direction: Direction) -> Vec<TrialRecord> {
    let mut last: BTreeMap<usize, TrialRecord> = BTreeMap::new();
    for r in records {
        if last.get(&r.trial).is_none_or(|old| r.rung >= old.rung) {
            last.insert(r.trial, r.clone());
        }
    }
    let mut out: Vec<TrialRecord> = last.into_values().collect();
    let score = |r: &TrialRecord| r.metric.filter(|m| m.is_finite());
    out.sort_by(|a, b| {
        b.rung
            .cmp(&a.rung)
            .then_with(|| match (score(a), score(b)) {
                (Some(x), Some(y)) if direction.better(x, y) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) if direction.better(y, x) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                _ => a.trial.cmp(&b.trial),
            })
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<SweepConfig> {
        let c: SweepConfig = toml::from_str(text)?;
        c.check()?;
        Ok(c)
    }

    const BASE: &str = r#"
        recipe = "examples/sst2.toml"
        output_dir = "runs/sweep"
        metric = "eval_accuracy"
        direction = "max"
    "#;

    #[test]
    fn a_grid_is_every_combination_in_key_order() {
        let c = config(&format!(
            "{BASE}\nmethod = \"grid\"\n[parameters]\nlearning_rate = {{ values = [1e-5, 3e-5] }}\nper_device_train_batch_size = {{ values = [16, 32, 64] }}\n"
        ))
        .unwrap();
        let trials = c.trials();
        assert_eq!(trials.len(), 6);
        assert_eq!(
            overrides_of(&trials[1]),
            ["learning_rate=0.00001", "per_device_train_batch_size=32"]
        );
        assert_eq!(c.scheduler(6).unwrap().rungs, vec![0]);
    }

    #[test]
    fn random_draws_stay_in_their_ranges_and_repeat_with_the_seed() {
        let text = format!(
            "{BASE}\nmethod = \"asha\"\nnum_trials = 50\nseed = 3\n[asha]\nmin_resource = 10\nmax_resource = 90\n[parameters]\nlearning_rate = {{ distribution = \"log_uniform\", min = 1e-5, max = 1e-3 }}\nwarmup_ratio = {{ distribution = \"uniform\", min = 0.0, max = 0.2 }}\nepochs = {{ distribution = \"int_uniform\", min = 1, max = 3 }}\n"
        );
        let c = config(&text).unwrap();
        let trials = c.trials();
        assert_eq!(trials.len(), 50);
        assert_eq!(trials, config(&text).unwrap().trials());
        let lrs: Vec<f64> = trials
            .iter()
            .map(|t| t["learning_rate"].as_float().unwrap())
            .collect();
        assert!(lrs.iter().all(|&x| (1e-5..=1e-3).contains(&x)));
        // Log-uniform: about half below the geometric middle, 1e-4.
        let below = lrs.iter().filter(|&&x| x < 1e-4).count();
        assert!((15..=35).contains(&below), "{below} of 50 below 1e-4");
        let epochs: Vec<i64> = trials
            .iter()
            .map(|t| t["epochs"].as_integer().unwrap())
            .collect();
        assert!(
            epochs.iter().all(|e| (1..=3).contains(e))
                && epochs.contains(&1)
                && epochs.contains(&3)
        );
        assert_eq!(c.scheduler(50).unwrap().rungs, vec![10, 30, 90]);
    }

    #[test]
    fn budgets_in_examples_become_each_trials_updates() {
        // 4,000 examples (one epoch of the subset), rungs at 444, 1,333 and 4,000 examples.
        let rungs = [444, 1333, 4000];
        assert_eq!(
            rungs_in_updates(&rungs, Resource::Examples, 32),
            vec![14, 42, 125]
        );
        assert_eq!(
            rungs_in_updates(&rungs, Resource::Examples, 16),
            vec![28, 84, 250]
        );
        // 7 updates of 64; 1,333 / 64 = 21 updates, a multiple of 7 already; 63 at the end.
        assert_eq!(
            rungs_in_updates(&rungs, Resource::Examples, 64),
            vec![7, 21, 63]
        );
        // A rung that is not a multiple of the first is moved up to one.
        assert_eq!(
            rungs_in_updates(&[10, 25, 60], Resource::Updates, 32),
            vec![10, 30, 60]
        );
    }

    #[test]
    fn bad_sweep_files_say_which_key() {
        let e = config(&format!("{BASE}\nmethod = \"grid\"\n[parameters]\nlr = {{ distribution = \"uniform\", min = 0.1, max = 0.2 }}\n")).unwrap_err();
        assert!(e.to_string().contains("parameters.lr"), "{e}");
        let e = config(&format!(
            "{BASE}\nmethod = \"asha\"\nnum_trials = 4\n[parameters]\nlr = {{ values = [1] }}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("[asha]"), "{e}");
        let e = config(&format!("{BASE}\nmethod = \"random\"\nnum_trials = 4\n[parameters]\nlr = {{ distribution = \"log_uniform\", min = 0.0, max = 1.0 }}\n")).unwrap_err();
        assert!(e.to_string().contains("log_uniform"), "{e}");
    }

    #[test]
    fn ranking_puts_the_furthest_trained_first_then_the_best() {
        let rec = |trial, rung, metric: Option<f64>| TrialRecord {
            trial,
            rung,
            updates: 0,
            metric,
            params: TrialParams::new(),
            seconds: 0.0,
            output_dir: PathBuf::new(),
        };
        let records = [
            rec(0, 0, Some(0.7)),
            rec(1, 0, Some(0.9)),
            rec(2, 0, None),
            rec(1, 1, Some(0.8)),
            rec(3, 0, Some(0.95)),
        ];
        let order: Vec<usize> = ranked(&records, Direction::Max)
            .iter()
            .map(|r| r.trial)
            .collect();
        assert_eq!(order, [1, 3, 0, 2]);
    }
}
