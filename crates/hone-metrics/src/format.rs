//! Text-table helpers reproducing the Python `str.format` specs used by scikit-learn and
//! seqeval (`'{:>{width}s} ' + ' {:>9.{digits}f}' * 3 + ' {:>9}'`).

use crate::ClassMetrics;

/// Python's `'{:.{digits}f}'.format(x)`: Rust already rounds the exact binary value half-to-even
/// like CPython, only the spelling of non-finite values differs.
pub(crate) fn fixed(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{x:.digits$}")
    }
}

/// Header line plus the blank line that follows it.
pub(crate) fn header(width: usize) -> String {
    let mut s = format!("{:>width$} ", "");
    for h in ["precision", "recall", "f1-score", "support"] {
        s.push_str(&format!(" {h:>9}"));
    }
    s.push_str("\n\n");
    s
}

/// Width of the name column: the longest name, but never narrower than the "weighted avg" row
/// label or `digits` (the Python references use the same rule).
pub(crate) fn name_width<'a>(names: impl IntoIterator<Item = &'a str>, digits: usize) -> usize {
    let longest = names
        .into_iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0);
    longest.max("weighted avg".len()).max(digits)
}

/// One metrics row without the trailing newline.
pub(crate) fn row(name: &str, m: &ClassMetrics, width: usize, digits: usize) -> String {
    format!(
        "{name:>width$}  {:>9} {:>9} {:>9} {:>9}",
        fixed(m.precision, digits),
        fixed(m.recall, digits),
        fixed(m.f1, digits),
        m.support
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_matches_python_rounding_and_nan() {
        // Python: '%.2f' % 0.125 == '0.12' (exact binary value, ties to even), '%.2f' % 0.375 == '0.38'.
        assert_eq!(fixed(0.125, 2), "0.12");
        assert_eq!(fixed(0.375, 2), "0.38");
        assert_eq!(fixed(f64::NAN, 2), "nan");
        assert_eq!(fixed(f64::NEG_INFINITY, 3), "-inf");
    }

    #[test]
    fn row_layout() {
        assert_eq!(
            row(
                "a",
                &ClassMetrics::from_prf((0.5, 1.0, 2.0 / 3.0), 3),
                12,
                2
            ),
            "           a       0.50      1.00      0.67         3"
        );
    }
}
