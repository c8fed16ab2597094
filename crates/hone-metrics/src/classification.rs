//! Single-label classification metrics with scikit-learn semantics
//! (`sklearn.metrics.classification_report`, `accuracy_score`, `confusion_matrix`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Display};

use serde::Serialize;

use crate::{format, mean, weighted_mean};
pub use crate::{ClassMetrics, MetricsError, Result, ZeroDivision};

/// Fraction of positions where `y_pred == y_true` (`sklearn.metrics.accuracy_score`).
pub fn accuracy<L: PartialEq>(y_true: &[L], y_pred: &[L]) -> Result<f64> {
    check_lengths(y_true.len(), y_pred.len())?;
    if y_true.is_empty() {
        return Err(MetricsError::Empty("accuracy of zero samples".into()));
    }
    let correct = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    Ok(correct as f64 / y_true.len() as f64)
}

/// `sklearn.utils.multiclass.unique_labels`: the sorted union of both label sequences.
pub fn unique_labels<L: Ord + Clone>(y_true: &[L], y_pred: &[L]) -> Vec<L> {
    let set: BTreeSet<&L> = y_true.iter().chain(y_pred).collect();
    set.into_iter().cloned().collect()
}

/// `sklearn.metrics.confusion_matrix`: `m[i][j]` counts samples with true label `labels[i]`
/// predicted as `labels[j]`; samples whose true or predicted label is not in `labels` are dropped.
pub fn confusion_matrix<L: Ord + Clone>(
    y_true: &[L],
    y_pred: &[L],
    labels: Option<&[L]>,
) -> Result<Vec<Vec<u64>>> {
    check_lengths(y_true.len(), y_pred.len())?;
    let labels: Vec<L> = match labels {
        Some(l) => {
            if l.is_empty() {
                return Err(MetricsError::InvalidArgument(
                    "'labels' should contain at least one label".into(),
                ));
            }
            // sklearn refuses label lists that share nothing with y_true.
            if !l.iter().any(|x| y_true.contains(x)) {
                return Err(MetricsError::InvalidArgument(
                    "at least one label specified must be in y_true".into(),
                ));
            }
            l.to_vec()
        }
        None => unique_labels(y_true, y_pred),
    };
    let index: BTreeMap<&L, usize> = labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
    let mut m = vec![vec![0u64; labels.len()]; labels.len()];
    for (t, p) in y_true.iter().zip(y_pred) {
        if let (Some(&i), Some(&j)) = (index.get(t), index.get(p)) {
            m[i][j] += 1;
        }
    }
    Ok(m)
}

fn check_lengths(a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(MetricsError::LengthMismatch(format!(
            "y_true has {a} samples but y_pred has {b}"
        )));
    }
    Ok(())
}

/// Per-class and averaged precision/recall/F1 exactly as `sklearn.metrics.classification_report`.
#[derive(Debug, Clone, Serialize)]
pub struct ClassificationReport<L> {
    /// The evaluated labels, in report order (sorted union by default, else as given).
    pub labels: Vec<L>,
    /// Metrics per label, aligned with `labels`.
    pub per_class: Vec<ClassMetrics>,
    /// Micro average over `labels`; equals accuracy when `micro_is_accuracy`.
    pub micro_avg: ClassMetrics,
    /// Unweighted mean of the per-class scores.
    pub macro_avg: ClassMetrics,
    /// Support-weighted mean of the per-class scores.
    pub weighted_avg: ClassMetrics,
    /// True when sklearn prints the micro row as "accuracy": labels were not given, or cover
    /// every label present in the data.
    pub micro_is_accuracy: bool,
}

/// Per-label sufficient statistics, as sklearn's multilabel confusion matrix gives them.
struct Counts {
    tp: Vec<f64>,
    pred: Vec<f64>,
    truth: Vec<f64>,
}

fn prf_divide(num: f64, den: f64, zd: ZeroDivision) -> f64 {
    if den == 0.0 {
        zd.sklearn_value()
    } else {
        num / den
    }
}

/// (precision, recall, f1) per entry, sklearn >= 1.3 formulas: F = 2 tp / (true + pred),
/// which differs from 2PR/(P+R) only in how zero denominators are treated.
fn prf(tp: f64, pred: f64, truth: f64, zd: ZeroDivision) -> (f64, f64, f64) {
    (
        prf_divide(tp, pred, zd),
        prf_divide(tp, truth, zd),
        prf_divide(2.0 * tp, truth + pred, zd),
    )
}

/// sklearn's `_nanaverage`: NaN entries (from `zero_division=NaN`) are ignored, and if all
/// weights are zero the plain mean is used.
fn nan_average(xs: &[f64], ws: Option<&[f64]>) -> f64 {
    let keep: Vec<usize> = (0..xs.len()).filter(|&i| !xs[i].is_nan()).collect();
    if keep.is_empty() {
        return f64::NAN;
    }
    let vals: Vec<f64> = keep.iter().map(|&i| xs[i]).collect();
    match ws {
        None => mean(&vals),
        Some(ws) => {
            let w: Vec<f64> = keep.iter().map(|&i| ws[i]).collect();
            weighted_mean(&vals, &w).unwrap_or_else(|| mean(&vals))
        }
    }
}

impl<L: Ord + Clone + Display> ClassificationReport<L> {
    /// Computes the report. `labels` selects/orders the classes (default: sorted union of
    /// `y_true` and `y_pred`); `zero_division` is sklearn's parameter.
    pub fn compute(
        y_true: &[L],
        y_pred: &[L],
        labels: Option<&[L]>,
        zero_division: ZeroDivision,
    ) -> Result<Self> {
        check_lengths(y_true.len(), y_pred.len())?;
        let present = unique_labels(y_true, y_pred);
        let (labels, micro_is_accuracy) = match labels {
            None => (present, true),
            Some(given) => {
                let given_set: BTreeSet<&L> = given.iter().collect();
                let covers = present.iter().all(|l| given_set.contains(l));
                (given.to_vec(), covers)
            }
        };
        if labels.is_empty() {
            return Err(MetricsError::Empty("no labels to report".into()));
        }

        let index: BTreeMap<&L, usize> = labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
        let n = labels.len();
        let mut c = Counts {
            tp: vec![0.0; n],
            pred: vec![0.0; n],
            truth: vec![0.0; n],
        };
        for (t, p) in y_true.iter().zip(y_pred) {
            if let Some(&i) = index.get(t) {
                c.truth[i] += 1.0;
                if t == p {
                    c.tp[i] += 1.0;
                }
            }
            if let Some(&j) = index.get(p) {
                c.pred[j] += 1.0;
            }
        }

        let zd = zero_division;
        let mut per_class = Vec::with_capacity(n);
        let (mut ps, mut rs, mut fs) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let m = ClassMetrics::from_prf(
                prf(c.tp[i], c.pred[i], c.truth[i], zd),
                c.truth[i] as usize,
            );
            ps.push(m.precision);
            rs.push(m.recall);
            fs.push(m.f1);
            per_class.push(m);
        }
        // Average rows report np.sum(s): the support summed over the selected labels.
        let support: usize = per_class.iter().map(|m| m.support).sum();

        let (tp, pred, truth) = (
            c.tp.iter().sum::<f64>(),
            c.pred.iter().sum::<f64>(),
            c.truth.iter().sum::<f64>(),
        );
        let micro_avg = ClassMetrics::from_prf(prf(tp, pred, truth, zd), support);
        let macro_avg = ClassMetrics {
            precision: nan_average(&ps, None),
            recall: nan_average(&rs, None),
            f1: nan_average(&fs, None),
            support,
        };
        let w = Some(c.truth.as_slice());
        let weighted_avg = ClassMetrics {
            precision: nan_average(&ps, w),
            recall: nan_average(&rs, w),
            f1: nan_average(&fs, w),
            support,
        };
        Ok(ClassificationReport {
            labels,
            per_class,
            micro_avg,
            macro_avg,
            weighted_avg,
            micro_is_accuracy,
        })
    }

    /// The "accuracy" entry of sklearn's report (micro precision), when sklearn shows one.
    pub fn accuracy(&self) -> Option<f64> {
        self.micro_is_accuracy.then_some(self.micro_avg.precision)
    }

    /// Metrics of one label, if it is part of the report.
    pub fn get(&self, label: &L) -> Option<&ClassMetrics> {
        self.labels
            .iter()
            .position(|l| l == label)
            .map(|i| &self.per_class[i])
    }

    /// sklearn's `output_dict=True` structure: label strings, then "accuracy" (a number) or
    /// "micro avg", then "macro avg" and "weighted avg"; supports are floats, NaN becomes null.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (l, m) in self.labels.iter().zip(&self.per_class) {
            map.insert(l.to_string(), m.to_json());
        }
        match self.accuracy() {
            Some(acc) => {
                map.insert("accuracy".into(), serde_json::json!(acc));
            }
            None => {
                map.insert("micro avg".into(), self.micro_avg.to_json());
            }
        }
        map.insert("macro avg".into(), self.macro_avg.to_json());
        map.insert("weighted avg".into(), self.weighted_avg.to_json());
        serde_json::Value::Object(map)
    }

    /// sklearn's text report with `digits` decimals.
    pub fn to_text(&self, digits: usize) -> String {
        let names: Vec<String> = self.labels.iter().map(|l| l.to_string()).collect();
        let width = format::name_width(names.iter().map(String::as_str), digits);

        let mut s = format::header(width);
        for (name, m) in names.iter().zip(&self.per_class) {
            s += &format::row(name, m, width, digits);
            s.push('\n');
        }
        s.push('\n');
        if self.micro_is_accuracy {
            // sklearn formats "" with '{:>9.{digits}}' for the precision/recall cells.
            let m = &self.micro_avg;
            s += &format!(
                "{:>width$}  {:>9} {:>9} {:>9} {:>9}\n",
                "accuracy",
                "",
                "",
                format::fixed(m.f1, digits),
                m.support
            );
        } else {
            s += &format::row("micro avg", &self.micro_avg, width, digits);
            s.push('\n');
        }
        for (name, m) in [
            ("macro avg", &self.macro_avg),
            ("weighted avg", &self.weighted_avg),
        ] {
            s += &format::row(name, m, width, digits);
            s.push('\n');
        }
        s
    }
}

impl<L: Ord + Clone + Display> Display for ClassificationReport<L> {
    /// Renders with sklearn's default of 2 digits (`{:.4}` selects 4 digits).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text(f.precision().unwrap_or(2)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn hand_computed_binary() {
        // y_true = [a,a,b,b], y_pred = [a,b,b,b]: a: P=1 R=.5; b: P=2/3 R=1.
        let t = s(&["a", "a", "b", "b"]);
        let p = s(&["a", "b", "b", "b"]);
        let r = ClassificationReport::compute(&t, &p, None, ZeroDivision::Warn).unwrap();
        let a = r.get(&"a".to_string()).unwrap();
        assert_eq!((a.precision, a.recall, a.support), (1.0, 0.5, 2));
        assert!((a.f1 - 2.0 / 3.0).abs() < 1e-15);
        let b = r.get(&"b".to_string()).unwrap();
        assert!((b.precision - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(b.recall, 1.0);
        assert!((b.f1 - 0.8).abs() < 1e-15);
        assert_eq!(r.accuracy(), Some(0.75));
        assert!((r.macro_avg.f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-15);
        assert_eq!(r.macro_avg.support, 4);
    }

    #[test]
    fn text_layout_matches_sklearn() {
        // Output of sklearn.metrics.classification_report([0,1,2,2], [0,2,2,1]) (known layout).
        let r = ClassificationReport::compute(
            &[0usize, 1, 2, 2],
            &[0, 2, 2, 1],
            None,
            ZeroDivision::Zero,
        )
        .unwrap();
        let expected = [
            "              precision    recall  f1-score   support",
            "",
            "           0       1.00      1.00      1.00         1",
            "           1       0.00      0.00      0.00         1",
            "           2       0.50      0.50      0.50         2",
            "",
            "    accuracy                           0.50         4",
            "   macro avg       0.50      0.50      0.50         4",
            "weighted avg       0.50      0.50      0.50         4",
            "",
        ]
        .join("\n");
        assert_eq!(r.to_text(2), expected);
        assert_eq!(format!("{r}"), expected);
    }

    #[test]
    fn subset_labels_give_micro_avg() {
        let t = [0usize, 1, 2, 2];
        let p = [0usize, 2, 2, 1];
        let r = ClassificationReport::compute(&t, &p, Some(&[2, 0]), ZeroDivision::Warn).unwrap();
        assert!(!r.micro_is_accuracy);
        assert_eq!(r.labels, vec![2, 0]);
        // Over labels {2,0}: tp = 1 + 1, pred = 2 + 1, true = 2 + 1.
        assert!((r.micro_avg.precision - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(r.micro_avg.support, 3);
        let j = r.to_json();
        assert!(j.get("micro avg").is_some());
        assert!(j.get("accuracy").is_none());
        assert!(r
            .to_text(2)
            .contains("   micro avg       0.67      0.67      0.67         3\n"));
        // A superset of the present labels keeps the "accuracy" row.
        let r =
            ClassificationReport::compute(&t, &p, Some(&[0, 1, 2, 7]), ZeroDivision::Warn).unwrap();
        assert!(r.micro_is_accuracy);
        assert_eq!(r.get(&7).unwrap().support, 0);
    }

    #[test]
    fn zero_division_variants() {
        // Label 1 is never predicted: precision for 1 is ill-defined.
        let t = [0usize, 1];
        let p = [0usize, 0];
        let one = ClassificationReport::compute(&t, &p, None, ZeroDivision::One).unwrap();
        assert_eq!(one.per_class[1].precision, 1.0);
        // F = 2tp/(true+pred) = 0 since true+pred = 1 > 0.
        assert_eq!(one.per_class[1].f1, 0.0);
        let zero = ClassificationReport::compute(&t, &p, None, ZeroDivision::Warn).unwrap();
        assert_eq!(zero.per_class[1].precision, 0.0);
        let nan = ClassificationReport::compute(&t, &p, None, ZeroDivision::NaN).unwrap();
        assert!(nan.per_class[1].precision.is_nan());
        // NaN rows are skipped by sklearn's _nanaverage: macro precision = P(class 0) = 0.5.
        assert_eq!(nan.macro_avg.precision, 0.5);
        assert!(nan.to_text(2).contains("nan"));
    }

    #[test]
    fn confusion_and_accuracy() {
        let t = s(&["cat", "dog", "cat", "bird"]);
        let p = s(&["cat", "cat", "cat", "dog"]);
        let m = confusion_matrix(&t, &p, None).unwrap();
        // labels: bird, cat, dog
        assert_eq!(m, vec![vec![0, 0, 1], vec![0, 2, 0], vec![0, 1, 0]]);
        assert_eq!(accuracy(&t, &p).unwrap(), 0.5);
        let sub = confusion_matrix(&t, &p, Some(&s(&["dog", "cat"]))).unwrap();
        assert_eq!(sub, vec![vec![0, 1], vec![0, 2]]);
        assert!(confusion_matrix(&t, &p, Some(&s(&["fish"]))).is_err());
        assert!(accuracy(&t, &p[..2]).is_err());
    }
}
