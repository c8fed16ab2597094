use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use hone_core::tasks::ner::{entity_report, report_json};
use hone_data::conll::{ConllOptions, Sentence, TagScheme};
use hone_metrics::bleu::{Bleu, BleuConfig, Tokenize};
use hone_metrics::chrf::{Chrf, ChrfConfig};
use hone_metrics::seqeval::{Mode, Scheme};
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
    /// Score CoNLL tag files at entity level like seqeval's classification_report (gold
    /// tags from the gold file's tag column, predictions from the pred file's last column).
    Ner {
        #[arg(long)]
        gold: PathBuf,
        #[arg(long)]
        pred: PathBuf,
        /// 0-based column of the gold tags (default: the last column).
        #[arg(long)]
        gold_column: Option<usize>,
        /// Tag scheme: tags of another form are errors; strict mode decodes with it.
        #[arg(long, value_enum, default_value = "iob2", ignore_case = true)]
        scheme: Scheme,
        /// Lenient (conlleval-like) or strict (only well-formed entities).
        #[arg(long, value_enum, default_value = "default")]
        mode: SeqevalMode,
        /// Print seqeval's report dictionary plus the token accuracy as one JSON object.
        #[arg(long)]
        json: bool,
        /// Digits in the text table.
        #[arg(long, default_value_t = 2)]
        digits: usize,
    },
    /// Corpus BLEU of a hypothesis file against one or more reference files (one segment
    /// per line), as sacrebleu computes it.
    Bleu {
        /// Hypotheses, one per line.
        #[arg(long, visible_alias = "hyp")]
        pred: PathBuf,
        /// References, one per line, aligned with the hypotheses (repeat for several).
        #[arg(long = "ref", required = true)]
        refs: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "13a")]
        tokenize: Tokenize,
        /// Lower-case before tokenizing (sacrebleu's `-lc`).
        #[arg(long)]
        lowercase: bool,
        /// Print sacrebleu's JSON fields (score, counts, totals, precisions, bp, ...).
        #[arg(long)]
        json: bool,
    },
    /// Corpus chrF (or chrF++ with `--word-order 2`) of a hypothesis file against one or
    /// more reference files, as sacrebleu computes it.
    Chrf {
        /// Hypotheses, one per line.
        #[arg(long, visible_alias = "hyp")]
        pred: PathBuf,
        /// References, one per line, aligned with the hypotheses (repeat for several).
        #[arg(long = "ref", required = true)]
        refs: Vec<PathBuf>,
        /// Character n-gram orders (sacrebleu's `--chrf-char-order`).
        #[arg(long, default_value_t = 6)]
        char_order: usize,
        /// Word n-gram orders: 2 gives chrF++ (sacrebleu's `--chrf-word-order`).
        #[arg(long, default_value_t = 0)]
        word_order: usize,
        /// Weight of recall against precision (sacrebleu's `--chrf-beta`).
        #[arg(long, default_value_t = 2)]
        beta: u32,
        /// Compare lowercased text (sacrebleu's `-lc`).
        #[arg(long)]
        lowercase: bool,
        /// Keep spaces in character n-grams (sacrebleu's `--chrf-whitespace`).
        #[arg(long)]
        whitespace: bool,
        /// Print the score as JSON: `{"name": "chrF2", "score": ...}`.
        #[arg(long)]
        json: bool,
    },
}

/// How seqeval decides what an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeqevalMode {
    /// conlleval-like: any run of tags of one type, however it starts.
    Default,
    /// Only entities that are well formed in the tag scheme.
    Strict,
}

impl SeqevalMode {
    pub fn with_scheme(self, scheme: Scheme) -> Mode {
        match self {
            SeqevalMode::Default => Mode::Default,
            SeqevalMode::Strict => Mode::Strict(scheme),
        }
    }
}

/// Read a CoNLL file's tags from `column` (None: last), checking every tag's form against
/// `scheme` with errors at file:line.
pub(crate) fn read_tagged(
    path: &Path,
    column: Option<usize>,
    scheme: Scheme,
) -> Result<Vec<Sentence>> {
    let data_scheme = match scheme {
        Scheme::IOB1 => Some(TagScheme::IOB1),
        Scheme::IOB2 => Some(TagScheme::IOB2),
        Scheme::IOBES => Some(TagScheme::IOBES),
        Scheme::IOE1 | Scheme::IOE2 | Scheme::BILOU => None,
    };
    let opts = ConllOptions {
        tag_column: column,
        scheme: data_scheme,
        keep_other_columns: false,
    };
    let sentences = hone_data::conll::read_token_file(path, &opts)?;
    if data_scheme.is_none() {
        // Schemes hone-data does not know (IOE1, IOE2, BILOU): check the prefix here.
        let s = scheme;
        let allowed: &[&str] = match s {
            Scheme::IOE1 | Scheme::IOE2 => &["I", "E"],
            Scheme::BILOU => &["B", "I", "L", "U"],
            _ => &["B", "I", "E", "S"],
        };
        for sent in &sentences {
            for (i, tag) in sent.tags.iter().enumerate() {
                let ok = tag == "O"
                    || tag
                        .split_once('-')
                        .is_some_and(|(p, t)| allowed.contains(&p) && !t.is_empty());
                if !ok {
                    bail!(
                        "{}:{}: tag {tag:?} is not of the {s} scheme",
                        path.display(),
                        sent.line + i
                    )
                }
            }
        }
    }
    Ok(sentences)
}

/// Print an entity report as text (seqeval's table and the token accuracy) or JSON.
pub(crate) fn print_ner_report(
    gold: &[Vec<String>],
    pred: &[Vec<String>],
    mode: Mode,
    json: bool,
    digits: usize,
) -> Result<()> {
    let (report, accuracy) = entity_report(gold, pred, mode)?;
    if json {
        println!("{}", report_json(&report, accuracy));
    } else {
        print!("{}", report.to_text(digits));
        println!("token accuracy {accuracy:.digits$}");
    }
    Ok(())
}

/// Gold tags, predicted tags and the mode, per sentence.
type TagPairs = (Vec<Vec<String>>, Vec<Vec<String>>, Mode);

fn score_ner(
    gold: &Path,
    pred: &Path,
    gold_column: Option<usize>,
    scheme: Scheme,
    mode: SeqevalMode,
) -> Result<TagPairs> {
    let mode = mode.with_scheme(scheme);
    let g = read_tagged(gold, gold_column, scheme)?;
    let p = read_tagged(pred, None, scheme)?;
    for (i, (a, b)) in g.iter().zip(&p).enumerate() {
        if a.tokens != b.tokens {
            let k = a
                .tokens
                .iter()
                .zip(&b.tokens)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            bail!(
                "sentence {} differs: {}:{} has {} tokens, {}:{} has {}{}",
                i + 1,
                gold.display(),
                a.line + k,
                a.len(),
                pred.display(),
                b.line + k,
                b.len(),
                if k < a.len().min(b.len()) {
                    format!(" (token {:?} vs {:?})", a.tokens[k], b.tokens[k])
                } else {
                    String::new()
                }
            )
        }
    }
    if g.len() != p.len() {
        bail!(
            "{} has {} sentences but {} has {}",
            gold.display(),
            g.len(),
            pred.display(),
            p.len()
        )
    }
    Ok((
        g.into_iter().map(|s| s.tags).collect(),
        p.into_iter().map(|s| s.tags).collect(),
        mode,
    ))
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
        ScoreKind::Ner {
            gold,
            pred,
            gold_column,
            scheme,
            mode,
            json,
            digits,
        } => {
            let (g, p, mode) = score_ner(&gold, &pred, gold_column, scheme, mode)?;
            print_ner_report(&g, &p, mode, json, digits)
        }
        ScoreKind::Bleu {
            pred,
            refs,
            tokenize,
            lowercase,
            json,
        } => {
            let (hyps, streams) = read_hypotheses_and_references(&pred, &refs)?;
            let bleu = Bleu::new(BleuConfig {
                tokenize,
                lowercase,
                ..BleuConfig::default()
            });
            let score = bleu.corpus_score(&hyps, &streams)?;
            if json {
                println!("{}", serde_json::to_string(&score)?);
            } else {
                // sacrebleu's text line: `BLEU|<signature> = 30.36 77.8/48.4/...`.
                let text = score.to_string();
                let numbers = text.strip_prefix("BLEU = ").unwrap_or(&text);
                println!("BLEU|{} = {numbers}", bleu.signature(refs.len()));
            }
            Ok(())
        }
        ScoreKind::Chrf {
            pred,
            refs,
            char_order,
            word_order,
            beta,
            lowercase,
            whitespace,
            json,
        } => {
            let (hyps, streams) = read_hypotheses_and_references(&pred, &refs)?;
            let chrf = Chrf::new(ChrfConfig {
                char_order,
                word_order,
                beta,
                lowercase,
                whitespace,
                ..ChrfConfig::default()
            });
            let score = chrf.corpus_score(&hyps, &streams)?;
            match json {
                true => println!("{}", serde_json::to_string(&score)?),
                // sacrebleu's text line: `chrF2|<signature> = 55.07`.
                false => println!(
                    "{}|{} = {:.2}",
                    score.name,
                    chrf.signature(refs.len()),
                    score.score
                ),
            }
            Ok(())
        }
    }
}

/// A hypothesis file and its reference streams, each a line per segment; a stream of
/// another length names both files.
fn read_hypotheses_and_references(
    pred: &Path,
    refs: &[PathBuf],
) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let hyps = hone_data::read_lines(pred)?;
    let streams = refs
        .iter()
        .map(hone_data::read_lines)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for (r, stream) in refs.iter().zip(&streams) {
        if stream.len() != hyps.len() {
            bail!(
                "{} has {} lines but {} has {}",
                pred.display(),
                hyps.len(),
                r.display(),
                stream.len()
            )
        }
    }
    Ok((hyps, streams))
}
