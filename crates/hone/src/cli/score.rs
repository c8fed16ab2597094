use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hone_metrics::{ClassificationReport, ZeroDivision};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(subcommand)]
    what: ScoreKind,
}

#[derive(Subcommand, Debug)]
enum ScoreKind {
    /// Score two label files (one label per line) like scikit-learn's classification_report.
    Classification {
        #[arg(long)]
        gold: PathBuf,
        #[arg(long)]
        pred: PathBuf,
        #[arg(long)]
        json: bool,
        /// Digits in the text table.
        #[arg(long, default_value_t = 2)]
        digits: usize,
    },
}

fn read_labels(path: &Path) -> Result<Vec<String>> {
    let lines = hone_data::read_lines(path)?;
    let labels: Vec<String> = lines.into_iter().map(|l| l.trim().to_string()).collect();
    if let Some(i) = labels.iter().position(|l| l.is_empty()) {
        bail!("{}:{}: empty label", path.display(), i + 1)
    }
    Ok(labels)
}

fn print_report<L: Ord + Clone + std::fmt::Display>(
    gold: &[L],
    pred: &[L],
    json: bool,
    digits: usize,
) -> Result<()> {
    let report = ClassificationReport::compute(gold, pred, None, ZeroDivision::Zero)?;
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_text(digits));
    }
    Ok(())
}

pub fn run(args: ScoreArgs) -> Result<()> {
    match args.what {
        ScoreKind::Classification {
            gold,
            pred,
            json,
            digits,
        } => {
            let g = read_labels(&gold)?;
            let p = read_labels(&pred)?;
            if g.len() != p.len() {
                bail!(
                    "{} has {} labels but {} has {}",
                    gold.display(),
                    g.len(),
                    pred.display(),
                    p.len()
                )
            }
            // Integer labels sort numerically, as scikit-learn sorts ints.
            let as_ints = |v: &[String]| {
                v.iter()
                    .map(|s| s.parse::<i64>().ok())
                    .collect::<Option<Vec<_>>>()
            };
            match (as_ints(&g), as_ints(&p)) {
                (Some(gi), Some(pi)) => print_report(&gi, &pi, json, digits),
                _ => print_report(&g, &p, json, digits),
            }
        }
    }
}
