//! Corpus and sentence BLEU with sacrebleu (2.x) semantics, including its `13a` tokenizer.

use std::collections::HashMap;

use serde::Serialize;

pub use crate::{MetricsError, Result};

/// sacrebleu's default maximum n-gram order.
pub const MAX_NGRAM_ORDER: usize = 4;

/// Python's `str.isspace()`: Unicode White_Space plus the ASCII separators U+001C..U+001F,
/// which Python treats as whitespace and Rust does not.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `' '.join(s.split())`.
fn py_normalize_spaces(s: &str) -> String {
    s.split(is_py_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `s.rstrip()`.
fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// The character class `[\{-\~\[-\` -\&\(-\+\:-\@\/]` of sacrebleu's `TokenizerRegexp`:
/// ASCII symbols and punctuation except `'`, `-`, `.`, `,` (and the space itself).
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// `TokenizerRegexp.__call__`. Each regex substitution is emulated by a left-to-right scan with
/// non-overlapping matches, which is exactly what `re.sub` does for these fixed-width patterns.
pub fn tokenize_regexp(line: &str) -> String {
    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 '
    let mut s1 = String::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_13a_symbol(c) {
            s1.push(' ');
            s1.push(c);
            s1.push(' ');
        } else {
            s1.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let punct = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> '\1 \2 '
    let s2 = sub_pairs(
        &s1,
        |a, b| !digit(a) && punct(b),
        |a, b, out| {
            out.push(a);
            out.push(' ');
            out.push(b);
            out.push(' ');
        },
    );
    // ([\.,])([^0-9]) -> ' \1 \2'
    let s3 = sub_pairs(
        &s2,
        |a, b| punct(a) && !digit(b),
        |a, b, out| {
            out.push(' ');
            out.push(a);
            out.push(' ');
            out.push(b);
        },
    );
    // ([0-9])(-) -> '\1 \2 '
    let s4 = sub_pairs(
        &s3,
        |a, b| digit(a) && b == '-',
        |a, b, out| {
            out.push(a);
            out.push(' ');
            out.push(b);
            out.push(' ');
        },
    );
    py_normalize_spaces(&s4)
}

/// `re.sub` for a two-character pattern: scan left to right, replace each match and resume
/// after it (matches never overlap).
fn sub_pairs(
    s: &str,
    is_match: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char, &mut String),
) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && is_match(chars[i], chars[i + 1]) {
            replace(chars[i], chars[i + 1], &mut out);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// sacrebleu's `TokenizerV14International`: three substitutions, left to right and
/// non-overlapping as Python's `regex.sub`, then whitespace collapsed.
pub fn tokenize_intl(line: &str) -> String {
    use std::sync::OnceLock;
    static RULES: OnceLock<[(regex::Regex, &str); 3]> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        let re = |p: &str| regex::Regex::new(p).expect("valid pattern");
        [
            // Punctuation preceded by a non-digit.
            (re(r"(\P{N})(\p{P})"), "$1 $2 "),
            // Punctuation followed by a non-digit.
            (re(r"(\p{P})(\P{N})"), " $1 $2"),
            // Symbols.
            (re(r"(\p{S})"), " $1 "),
        ]
    });
    let mut out = line.to_string();
    for (re, rep) in rules {
        out = re.replace_all(&out, *rep).into_owned();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// sacrebleu's `Tokenizer13a` (mteval-v13a tokenization).
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    tokenize_regexp(&format!(" {line} "))
}

/// Tokenizer choice (the sacrebleu `tokenize` argument); only the language-independent ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Tokenize {
    /// `13a`, sacrebleu's default.
    #[default]
    #[cfg_attr(feature = "clap", value(name = "13a"))]
    Tok13a,
    /// `intl`: mteval-v14's international tokenization (Unicode punctuation and symbols
    /// split off, except punctuation between digits).
    Intl,
    /// `none`: input is already tokenized.
    None,
}

impl Tokenize {
    /// Applies the tokenizer to one line.
    pub fn apply(self, line: &str) -> String {
        match self {
            Tokenize::Tok13a => tokenize_13a(line),
            Tokenize::Intl => tokenize_intl(line),
            Tokenize::None => line.to_string(),
        }
    }

    /// sacrebleu's name of the tokenizer.
    pub fn name(self) -> &'static str {
        match self {
            Tokenize::Tok13a => "13a",
            Tokenize::Intl => "intl",
            Tokenize::None => "none",
        }
    }
}

impl std::str::FromStr for Tokenize {
    type Err = MetricsError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "13a" => Ok(Tokenize::Tok13a),
            "intl" => Ok(Tokenize::Intl),
            "none" => Ok(Tokenize::None),
            other => Err(MetricsError::InvalidArgument(format!(
                "unsupported tokenizer {other:?} (supported: 13a, intl, none)"
            ))),
        }
    }
}

/// BLEU smoothing (Chen & Cherry 2014), as in sacrebleu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum SmoothMethod {
    /// No smoothing.
    None,
    /// Zero-match precisions become `smooth_value / total` (default 0.1).
    Floor,
    /// Add `smooth_value` (default 1) to counts and totals for n > 1.
    AddK,
    /// NIST geometric smoothing (mteval-v13a); sacrebleu's default.
    #[default]
    Exp,
}

impl std::str::FromStr for SmoothMethod {
    type Err = MetricsError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(SmoothMethod::None),
            "floor" => Ok(SmoothMethod::Floor),
            "add-k" => Ok(SmoothMethod::AddK),
            "exp" => Ok(SmoothMethod::Exp),
            other => Err(MetricsError::InvalidArgument(format!(
                "unknown smooth_method {other:?}"
            ))),
        }
    }
}

/// BLEU settings (sacrebleu's `BLEU(...)` constructor arguments).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BleuConfig {
    /// Lowercase hypotheses and references before tokenizing.
    pub lowercase: bool,
    /// Tokenizer.
    pub tokenize: Tokenize,
    /// Smoothing method.
    pub smooth_method: SmoothMethod,
    /// Value for `floor`/`add-k`; `None` uses sacrebleu's defaults (0.1 / 1).
    pub smooth_value: Option<f64>,
    /// Largest n-gram order.
    pub max_ngram_order: usize,
    /// Only average over n-gram orders that have candidates (for sentence BLEU).
    pub effective_order: bool,
}

impl Default for BleuConfig {
    /// `sacrebleu.corpus_bleu` defaults.
    fn default() -> Self {
        BleuConfig {
            lowercase: false,
            tokenize: Tokenize::Tok13a,
            smooth_method: SmoothMethod::Exp,
            smooth_value: None,
            max_ngram_order: MAX_NGRAM_ORDER,
            effective_order: false,
        }
    }
}

impl BleuConfig {
    /// `sacrebleu.sentence_bleu` defaults (effective order on).
    pub fn sentence() -> Self {
        BleuConfig {
            effective_order: true,
            ..Default::default()
        }
    }
}

/// A BLEU result (sacrebleu's `BLEUScore`); `score` and `precisions` are percentages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BleuScore {
    /// BLEU in [0, 100].
    pub score: f64,
    /// Matched n-gram counts per order (before any add-k smoothing).
    pub counts: Vec<u64>,
    /// Hypothesis n-gram counts per order (before any add-k smoothing).
    pub totals: Vec<u64>,
    /// Per-order (smoothed) precisions in percent.
    pub precisions: Vec<f64>,
    /// Brevity penalty.
    pub bp: f64,
    /// Total hypothesis length in tokens.
    pub sys_len: u64,
    /// Total (closest) reference length in tokens.
    pub ref_len: u64,
}

impl BleuScore {
    /// `sys_len / ref_len` (0 when there is no reference token), as sacrebleu reports it.
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }
}

impl std::fmt::Display for BleuScore {
    /// sacrebleu's verbose format, e.g. `BLEU = 30.36 77.8/48.4/23.1/19.0 (BP = 0.846 ...)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prec: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        write!(
            f,
            "BLEU = {:.2} {} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            prec.join("/"),
            self.bp,
            self.ratio(),
            self.sys_len,
            self.ref_len
        )
    }
}

/// A configured BLEU metric (sacrebleu's `BLEU` class).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bleu {
    /// The settings.
    pub config: BleuConfig,
}

/// Sufficient statistics of one segment: `[hyp_len, ref_len, correct.., total..]`.
type Stats = Vec<u64>;

/// Python's `line.split()` n-grams of orders 1..=max_order with counts.
fn ngram_counts(tokens: &[String], max_order: usize) -> HashMap<&[String], u64> {
    let mut counts = HashMap::new();
    for n in 1..=max_order {
        if n > tokens.len() {
            break;
        }
        for w in tokens.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

fn split_tokens(line: &str) -> Vec<String> {
    line.split(is_py_space)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// sacrebleu's `_get_closest_ref_len`: the reference length nearest to the hypothesis length,
/// ties broken towards the shorter reference.
fn closest_ref_len(hyp_len: u64, ref_lens: &[u64]) -> u64 {
    let mut best: Option<(u64, u64)> = None; // (diff, len)
    for &r in ref_lens {
        let diff = hyp_len.abs_diff(r);
        best = match best {
            None => Some((diff, r)),
            Some((d, l)) if diff < d || (diff == d && r < l) => Some((diff, r)),
            keep => keep,
        };
    }
    best.map(|(_, l)| l).unwrap_or(0)
}

/// sacrebleu's `my_log`: log with log(0) replaced by a huge negative number.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

impl Bleu {
    /// sacrebleu's signature of these settings with `nrefs` references, e.g.
    /// `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:hone-0.1.0` (the version is
    /// hone's: the numbers equal sacrebleu's, the code is not sacrebleu).
    pub fn signature(&self, nrefs: usize) -> String {
        let c = &self.config;
        let tok = c.tokenize.name();
        let smooth = match c.smooth_method {
            SmoothMethod::None => "none".to_string(),
            SmoothMethod::Exp => "exp".to_string(),
            SmoothMethod::Floor => format!("floor[{:.2}]", c.smooth_value.unwrap_or(0.1)),
            SmoothMethod::AddK => format!("add-k[{}]", c.smooth_value.unwrap_or(1.0)),
        };
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|tok:{tok}|smooth:{smooth}|version:hone-{}",
            if c.lowercase { "lc" } else { "mixed" },
            if c.effective_order { "yes" } else { "no" },
            env!("CARGO_PKG_VERSION")
        )
    }
    /// A metric with the given settings.
    pub fn new(config: BleuConfig) -> Self {
        Bleu { config }
    }

    /// sacrebleu's `_preprocess_segment`: optional lowercasing, `rstrip`, tokenization.
    pub fn preprocess(&self, sent: &str) -> String {
        let lowered;
        let sent = if self.config.lowercase {
            lowered = sent.to_lowercase();
            lowered.as_str()
        } else {
            sent
        };
        self.config.tokenize.apply(py_rstrip(sent))
    }

    fn segment_stats(&self, hyp: &str, refs: &[&str]) -> Stats {
        let order = self.config.max_ngram_order;
        let ref_tokens: Vec<Vec<String>> = refs
            .iter()
            .map(|r| split_tokens(&self.preprocess(r)))
            .collect();
        // Reference n-gram counts are merged by max over the references.
        let mut ref_ngrams: HashMap<&[String], u64> = HashMap::new();
        for toks in &ref_tokens {
            for (g, c) in ngram_counts(toks, order) {
                let e = ref_ngrams.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        let ref_lens: Vec<u64> = ref_tokens.iter().map(|t| t.len() as u64).collect();

        let hyp_tokens = split_tokens(&self.preprocess(hyp));
        let hyp_len = hyp_tokens.len() as u64;
        let mut correct = vec![0u64; order];
        let mut total = vec![0u64; order];
        for (g, c) in ngram_counts(&hyp_tokens, order) {
            let n = g.len() - 1;
            total[n] += c;
            if let Some(&rc) = ref_ngrams.get(g) {
                correct[n] += c.min(rc);
            }
        }
        let mut stats = vec![hyp_len, closest_ref_len(hyp_len, &ref_lens)];
        stats.extend(correct);
        stats.extend(total);
        stats
    }

    /// `BLEU.compute_bleu`: the score from (corpus-summed) sufficient statistics.
    pub fn compute_from_stats(
        &self,
        correct: &[u64],
        total: &[u64],
        sys_len: u64,
        ref_len: u64,
    ) -> BleuScore {
        let cfg = &self.config;
        let order = cfg.max_ngram_order;
        let smooth_value = cfg.smooth_value.unwrap_or(match cfg.smooth_method {
            SmoothMethod::Floor => 0.1,
            SmoothMethod::AddK => 1.0,
            SmoothMethod::None | SmoothMethod::Exp => 0.0,
        });
        let bp = if sys_len < ref_len {
            if sys_len > 0 {
                (1.0 - ref_len as f64 / sys_len as f64).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        let mut precisions = vec![0.0f64; order];
        let mut score = BleuScore {
            score: 0.0,
            counts: correct.to_vec(),
            totals: total.to_vec(),
            precisions: precisions.clone(),
            bp,
            sys_len,
            ref_len,
        };
        // Early stop if there are no matches at all (sacrebleu #141).
        if correct.iter().all(|&c| c == 0) {
            return score;
        }
        let mut smooth_mteval = 1.0f64;
        let mut eff_order = order;
        for n in 1..=order {
            let (mut c, mut t) = (correct[n - 1] as f64, total[n - 1] as f64);
            if cfg.smooth_method == SmoothMethod::AddK && n > 1 {
                c += smooth_value;
                t += smooth_value;
            }
            if t == 0.0 {
                break;
            }
            if cfg.effective_order {
                eff_order = n;
            }
            if c == 0.0 {
                match cfg.smooth_method {
                    SmoothMethod::Exp => {
                        smooth_mteval *= 2.0;
                        precisions[n - 1] = 100.0 / (smooth_mteval * t);
                    }
                    SmoothMethod::Floor => precisions[n - 1] = 100.0 * smooth_value / t,
                    SmoothMethod::None | SmoothMethod::AddK => {}
                }
            } else {
                precisions[n - 1] = 100.0 * c / t;
            }
        }
        let log_sum: f64 = precisions[..eff_order].iter().map(|&p| my_log(p)).sum();
        score.score = bp * (log_sum / eff_order as f64).exp();
        score.precisions = precisions;
        score
    }

    /// `BLEU.corpus_score(hyps, refs)`. `refs` is a list of reference *streams*, as in
    /// sacrebleu: `refs[k][i]` is the k-th reference of hypothesis `i`.
    pub fn corpus_score<H: AsRef<str>, R: AsRef<str>>(
        &self,
        hyps: &[H],
        refs: &[Vec<R>],
    ) -> Result<BleuScore> {
        crate::check_reference_streams(hyps.len(), refs)?;
        let order = self.config.max_ngram_order;
        let mut sums = vec![0u64; 2 + 2 * order];
        for (i, hyp) in hyps.iter().enumerate() {
            let seg_refs: Vec<&str> = refs.iter().map(|s| s[i].as_ref()).collect();
            for (acc, v) in sums
                .iter_mut()
                .zip(self.segment_stats(hyp.as_ref(), &seg_refs))
            {
                *acc += v;
            }
        }
        Ok(self.compute_from_stats(&sums[2..2 + order], &sums[2 + order..], sums[0], sums[1]))
    }

    /// `BLEU.sentence_score(hyp, refs)`: one hypothesis against its references.
    pub fn sentence_score<R: AsRef<str>>(&self, hyp: &str, refs: &[R]) -> Result<BleuScore> {
        let streams: Vec<Vec<&str>> = refs.iter().map(|r| vec![r.as_ref()]).collect();
        self.corpus_score(&[hyp], &streams)
    }
}

/// `sacrebleu.corpus_bleu(hyps, refs)` with its defaults (13a, exp smoothing, order 4).
/// `refs` are reference streams: `refs[k][i]` is the k-th reference of hypothesis `i`; pass
/// `&[refs]` for a single reference per hypothesis.
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[Vec<R>]) -> Result<BleuScore> {
    Bleu::default().corpus_score(hyps, refs)
}

/// `sacrebleu.sentence_bleu(hyp, refs)` with its defaults (exp smoothing, effective order).
pub fn sentence_bleu<R: AsRef<str>>(hyp: &str, refs: &[R]) -> Result<BleuScore> {
    Bleu::new(BleuConfig::sentence()).sentence_score(hyp, refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_13a_rules() {
        assert_eq!(tokenize_13a("Hello, world!"), "Hello , world !");
        // Periods/commas next to digits stay attached; a dash after a digit is split.
        assert_eq!(
            tokenize_13a("It costs $3,000.50 in 2019-2020."),
            "It costs $ 3,000.50 in 2019 - 2020 ."
        );
        // Apostrophes and intra-word dashes are kept.
        assert_eq!(tokenize_13a("don't re-use"), "don't re-use");
        // HTML entities are unescaped, <skipped> removed, "-\n" joins lines.
        assert_eq!(
            tokenize_13a("a &quot;b&quot; &amp; c<skipped>"),
            "a \" b \" & c"
        );
        assert_eq!(tokenize_13a("hyph-\nen\nnext"), "hyphen next");
        // Non-overlapping matches: in "a..b" the first pair ("a.") is consumed by the first rule.
        assert_eq!(tokenize_13a("a..b"), "a . . b");
        assert_eq!(tokenize_13a("x.5"), "x . 5");
        assert_eq!(tokenize_13a("5.x"), "5 . x");
    }

    #[test]
    fn closest_reference_length_prefers_shorter_on_tie() {
        assert_eq!(closest_ref_len(5, &[3, 7]), 3);
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[9, 6, 4]), 4);
    }

    #[test]
    fn perfect_and_disjoint() {
        let s = sentence_bleu("the cat sat on the mat", &["the cat sat on the mat"]).unwrap();
        assert!((s.score - 100.0).abs() < 1e-12);
        assert_eq!(s.counts, vec![6, 5, 4, 3]);
        let z = corpus_bleu(&["a b c"], &[vec!["d e f"]]).unwrap();
        assert_eq!(z.score, 0.0);
        assert_eq!(z.precisions, vec![0.0; 4]);
    }

    #[test]
    fn hand_computed_exp_smoothing_and_effective_order() {
        // hyp "a b c" vs ref "a b d": 1-grams 2/3, 2-grams 1/2, 3-grams 0/1, no 4-grams.
        let s = sentence_bleu("a b c", &["a b d"]).unwrap();
        assert_eq!(s.counts, vec![2, 1, 0, 0]);
        assert_eq!(s.totals, vec![3, 2, 1, 0]);
        // exp smoothing: p3 = 100 / (2 * 1); loop stops at n=4 (no 4-grams), effective order 3.
        let p = [200.0 / 3.0, 50.0, 50.0];
        let expected = (p.iter().map(|x: &f64| x.ln()).sum::<f64>() / 3.0).exp();
        assert!((s.score - expected).abs() < 1e-9);
        // Without effective order the missing 4-gram precision zeroes the score.
        let c = corpus_bleu(&["a b c"], &[vec!["a b d"]]).unwrap();
        assert!(c.score < 1e-100);
    }

    #[test]
    fn multi_reference_and_lowercase() {
        let refs = vec![vec!["The cat is here"], vec!["a cat is here too"]];
        let s = corpus_bleu(&["the cat is here"], &refs).unwrap();
        // Lengths 4 and 5, hyp 4 -> ref_len 4; "the" only matches case-insensitively.
        assert_eq!(s.ref_len, 4);
        assert_eq!(s.counts[0], 3);
        let lc = Bleu::new(BleuConfig {
            lowercase: true,
            ..Default::default()
        });
        let s = lc.corpus_score(&["the cat is here"], &refs).unwrap();
        assert!((s.score - 100.0).abs() < 1e-12);
        assert!(corpus_bleu(&["x", "y"], &[vec!["x"]]).is_err());
    }
}

#[cfg(test)]
mod intl_tests {
    use super::*;

    /// sacrebleu 2.6.0's `TokenizerV14International` on these lines.
    #[test]
    fn intl_tokenization_is_sacrebleus() {
        for (line, want) in [
            (
                "Hello, world! 3.14 and 1,000.",
                "Hello , world ! 3.14 and 1,000.",
            ),
            ("Year 2024.", "Year 2024."),
            (
                "A $5 fee \u{2014} \u{ab} quoted \u{bb} (ok)?",
                "A $ 5 fee \u{2014} \u{ab} quoted \u{bb} ( ok ) ?",
            ),
            (
                "na\u{ef}ve caf\u{e9}: 10% off!",
                "na\u{ef}ve caf\u{e9} : 10 % off !",
            ),
            ("a+b=c ^_^ \u{a9}2020", "a + b = c ^ _ ^ \u{a9} 2020"),
        ] {
            assert_eq!(tokenize_intl(line), want, "{line}");
        }
    }
}
