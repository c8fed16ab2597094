//! `hone sweep --config sweep.toml`: hyper-parameter search over a recipe. Each trial is a
//! `hone finetune` process (its own output directory, seed and share of the cores); ASHA's
//! rungs are the same process stopped after the rung's updates and resumed from its
//! checkpoint when promoted, so a promoted trial continues exactly where it stopped, on the
//! full run's learning-rate schedule. Writes `sweep.jsonl` (a line per trial and rung),
//! `sweep.png` (the metric against each numeric parameter) and `best.toml` (the best
//! trial's recipe, which reproduces it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use hone_core::sweep::{
    metric_at, overrides_of, ranked, rungs_in_updates, Job, Resource, SearchMethod, SweepConfig,
    TrialParams, TrialRecord,
};
use hone_core::tasks::FinetuneRecipe;

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The sweep file (TOML; see examples/sst2-sweep.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Replace a non-empty output directory.
    #[arg(long)]
    pub overwrite_output_dir: bool,
}

/// A trial's process at work on one rung.
struct Running {
    job: Job,
    child: Child,
    started: Instant,
}

pub fn run(args: SweepArgs) -> Result<()> {
    let config = SweepConfig::load(&args.config)?;
    let trials = config.trials();
    let mut asha = config.scheduler(trials.len())?;
    // Every trial's recipe is checked before anything runs or is written; its rungs in
    // updates follow from its batch size.
    let trial_rungs: Vec<Vec<usize>> = trials
        .iter()
        .enumerate()
        .map(|(t, params)| {
            let resource = config
                .asha
                .as_ref()
                .map_or(Resource::Updates, |a| a.resource);
            let sets = trial_overrides(&config, t, params, &[], 0);
            let recipe = FinetuneRecipe::load(&config.recipe, &sets)
                .with_context(|| format!("trial {t} ({})", overrides_of(params).join(" ")))?;
            let a = recipe.training();
            let per_update = a.per_device_train_batch_size * a.gradient_accumulation_steps.max(1);
            Ok(rungs_in_updates(&asha.rungs, resource, per_update))
        })
        .collect::<Result<_>>()?;
    prepare_output_dir(&config.output_dir, args.overwrite_output_dir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / config.parallel_trials).max(1);
    tracing::info!(
        "{} trials ({:?}), rungs {:?} ({}), {} at once with {threads} threads each",
        trials.len(),
        config.method,
        asha.rungs,
        match config.asha.as_ref().map(|a| a.resource) {
            Some(Resource::Examples) => "training examples",
            _ => "updates",
        },
        config.parallel_trials
    );
    let log_path = config.output_dir.join("sweep.jsonl");
    let mut records: Vec<TrialRecord> = Vec::new();
    let mut running: Vec<Running> = Vec::new();
    let started = Instant::now();
    loop {
        while running.len() < config.parallel_trials {
            let Some(job) = asha.next_job() else { break };
            let child = spawn(
                &config,
                &trial_rungs[job.trial],
                job,
                &trials[job.trial],
                threads,
            )?;
            running.push(Running {
                job,
                child,
                started: Instant::now(),
            });
        }
        if running.is_empty() {
            break;
        }
        let Some(done) = wait_any(&mut running)? else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let (Running { job, started, .. }, status) = done;
        let dir = trial_dir(&config.output_dir, job.trial);
        let updates = trial_rungs[job.trial][job.rung];
        let metric = match status.success() {
            true => {
                let step = (config.method == SearchMethod::Asha).then_some(updates);
                match metric_at(&dir.join("metrics.jsonl"), &config.metric, step) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!("trial {}: {e:#}", job.trial);
                        None
                    }
                }
            }
            false => {
                tracing::warn!(
                    "trial {} failed ({status}); its log is {}",
                    job.trial,
                    dir.join("train.log").display()
                );
                None
            }
        };
        asha.report(job, metric.unwrap_or(f64::NAN));
        let record = TrialRecord {
            trial: job.trial,
            rung: job.rung,
            updates,
            metric,
            params: trials[job.trial].clone(),
            seconds: started.elapsed().as_secs_f64(),
            output_dir: dir,
        };
        tracing::info!(
            "trial {} rung {} ({} updates): {} {} [{}]",
            job.trial,
            job.rung,
            updates,
            config.metric,
            metric.map_or("failed".into(), |m| format!("{m:.4}")),
            overrides_of(&record.params).join(" ")
        );
        append_jsonl(&log_path, &record)?;
        records.push(record);
    }
    report(&config, &records, started.elapsed().as_secs_f64())
}

/// The `--set` overrides of trial `t`: the sweep's own, the trial's values, its seed, and
/// (ASHA, given its `rungs` in updates) its length and an evaluation at the end of `rung`.
fn trial_overrides(
    config: &SweepConfig,
    t: usize,
    params: &TrialParams,
    rungs: &[usize],
    rung: usize,
) -> Vec<String> {
    let mut sets = config.overrides.clone();
    sets.extend(overrides_of(params));
    sets.push(format!("seed={}", config.seed + t as u64));
    sets.push(format!(
        "output_dir={:?}",
        trial_dir(&config.output_dir, t).display().to_string()
    ));
    sets.push("progress=false".into());
    if let (SearchMethod::Asha, Some(last)) = (config.method, rungs.last()) {
        // The full trial is the last rung. A process trains from the previous rung's end
        // to this one's, the first multiple of eval_steps after it: one evaluation, there.
        sets.push(format!("max_steps={last}"));
        sets.push("eval_strategy=\"steps\"".into());
        sets.push(format!("eval_steps={}", rungs[rung.min(rungs.len() - 1)]));
    }
    sets
}

fn trial_dir(out: &Path, t: usize) -> PathBuf {
    out.join(format!("trial-{t:03}"))
}

/// Start `hone finetune` for `job`: rung 0 from scratch, later rungs resumed; stopped
/// after the rung's updates unless it is the last.
fn spawn(
    config: &SweepConfig,
    rungs: &[usize],
    job: Job,
    params: &TrialParams,
    threads: usize,
) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the hone executable")?;
    let dir = trial_dir(&config.output_dir, job.trial);
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("train.log"))
        .with_context(|| format!("cannot write {}", dir.join("train.log").display()))?;
    let mut c = Command::new(exe);
    c.args([
        "--threads",
        &threads.to_string(),
        "--log",
        "warn",
        "finetune",
    ])
    .arg("--config")
    .arg(&config.recipe);
    for s in trial_overrides(config, job.trial, params, rungs, job.rung) {
        c.args(["--set", &s]);
    }
    if job.rung == 0 {
        c.arg("--overwrite-output-dir");
    } else {
        c.arg("--resume");
    }
    if job.rung + 1 < rungs.len() {
        let before = if job.rung == 0 {
            0
        } else {
            rungs[job.rung - 1]
        };
        c.env(
            "HONE_INTERRUPT_AFTER_STEPS",
            (rungs[job.rung] - before).to_string(),
        );
    }
    c.stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    c.spawn().context("cannot start a trial")
}

/// A finished trial process, if any.
fn wait_any(running: &mut Vec<Running>) -> Result<Option<(Running, std::process::ExitStatus)>> {
    for i in 0..running.len() {
        if let Some(status) = running[i].child.try_wait()? {
            return Ok(Some((running.swap_remove(i), status)));
        }
    }
    Ok(None)
}

fn prepare_output_dir(dir: &Path, overwrite: bool) -> Result<()> {
    let non_empty = dir
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if non_empty {
        if !overwrite {
            bail!(
                "sweep output directory {} is not empty: pass --overwrite-output-dir to replace it",
                dir.display()
            )
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn append_jsonl(path: &Path, record: &TrialRecord) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(record)?)?;
    Ok(())
}

/// The ranked table, `best.toml` and `sweep.png`.
fn report(config: &SweepConfig, records: &[TrialRecord], seconds: f64) -> Result<()> {
    let ranked = ranked(records, config.direction);
    // Each process trains from the previous rung's end.
    let trained: usize = records
        .iter()
        .map(|r| {
            let before = records
                .iter()
                .find(|p| p.trial == r.trial && p.rung + 1 == r.rung)
                .map_or(0, |p| p.updates);
            r.updates - before
        })
        .sum();
    println!(
        "{:>5} {:>4} {:>8} {:>10}  parameters",
        "trial", "rung", "updates", config.metric
    );
    for r in &ranked {
        println!(
            "{:>5} {:>4} {:>8} {:>10}  {}",
            r.trial,
            r.rung,
            r.updates,
            r.metric.map_or("failed".into(), |m| format!("{m:.4}")),
            overrides_of(&r.params).join(" ")
        );
    }
    println!(
        "{} trials, {} training processes, {trained} updates in all, {seconds:.0} s",
        ranked.len(),
        records.len()
    );
    let Some(best) = ranked.iter().find(|r| r.metric.is_some()) else {
        bail!(
            "every trial failed: see the train.log files in {}",
            config.output_dir.display()
        )
    };
    // The trial's own recipe (every override resolved), which reproduces it.
    let best_recipe = config.output_dir.join("best.toml");
    let text = std::fs::read_to_string(best.output_dir.join("recipe.toml")).with_context(|| {
        format!(
            "cannot read the best trial's recipe in {}",
            best.output_dir.display()
        )
    })?;
    std::fs::write(
        &best_recipe,
        format!(
            "# The best trial of {} (trial {}, {} {:.4} after {} updates)\n{text}",
            config.output_dir.display(),
            best.trial,
            config.metric,
            best.metric.unwrap_or(f64::NAN),
            best.updates
        ),
    )?;
    println!("best: trial {} -> {}", best.trial, best_recipe.display());
    write_plot(config, records)
}

/// One chart per numeric parameter: the metric at each rung against its value.
fn write_plot(config: &SweepConfig, records: &[TrialRecord]) -> Result<()> {
    use hone_plot::{render_charts, Chart, Series};
    let rungs = records.iter().map(|r| r.rung).max().unwrap_or(0);
    let mut charts = Vec::new();
    for key in config.parameters.keys() {
        let value = |r: &TrialRecord| match r.params.get(key) {
            Some(toml::Value::Float(x)) => Some(*x),
            Some(toml::Value::Integer(i)) => Some(*i as f64),
            _ => None,
        };
        let log_x = matches!(
            config.parameters[key],
            hone_core::sweep::ParamSpec::Range {
                distribution: hone_core::sweep::Distribution::LogUniform,
                ..
            }
        );
        let series: Vec<Series> = (0..=rungs)
            .map(|k| {
                let mut points: Vec<(f64, f64)> = records
                    .iter()
                    .filter(|r| r.rung == k)
                    .filter_map(|r| Some((value(r)?, r.metric?)))
                    .map(|(x, y)| (if log_x { x.log10() } else { x }, y))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    name: format!("rung {k}"),
                    points,
                }
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        charts.push(Chart {
            title: format!("{} against {key}", config.metric),
            x_label: if log_x {
                format!("log10 {key}")
            } else {
                key.clone()
            },
            y_label: config.metric.clone(),
            series,
        });
    }
    let png = render_charts(&charts, 800, 300);
    let path = config.output_dir.join("sweep.png");
    std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))
}
