//! Charts from a trainer's `metrics.jsonl`.

use std::collections::BTreeMap;

use crate::{Chart, Series};

/// Keys that are throughput/timing bookkeeping rather than metrics; plotting them next to
/// accuracy-like values would flatten everything else.
fn is_bookkeeping(key: &str) -> bool {
    key.ends_with("_runtime") || key.ends_with("_per_second") || key == "eval_epoch"
}

/// Builds charts from a trainer's `metrics.jsonl` (one JSON object per line, each with a numeric
/// `"step"`):
///
/// 1. "training loss": `loss` and, when present, `eval_loss` against step;
/// 2. "evaluation": every other `eval_*` metric (timing keys such as `eval_runtime` and
///    `eval_samples_per_second` are left out); omitted when there are none;
/// 3. "learning rate": `learning_rate` (or `lr`); omitted when absent.
///
/// Charts with nothing to show are left out, so empty input gives an empty `Vec`. Malformed lines,
/// lines without a finite numeric step, and non-numeric or non-finite values are skipped.
pub fn plot_metrics_jsonl(jsonl_text: &str) -> Vec<Chart> {
    let mut columns: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in jsonl_text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            continue;
        };
        let Some(step) = obj
            .get("step")
            .and_then(serde_json::Value::as_f64)
            .filter(|s| s.is_finite())
        else {
            continue;
        };
        for (key, value) in &obj {
            if key == "step" {
                continue;
            }
            if let Some(v) = value.as_f64().filter(|v| v.is_finite()) {
                columns.entry(key.clone()).or_default().push((step, v));
            }
        }
    }
    for points in columns.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let mut take = |key: &str| -> Option<Series> {
        columns.remove(key).map(|points| Series {
            name: key.to_string(),
            points,
        })
    };

    let mut charts = Vec::new();
    let loss: Vec<Series> = [take("loss"), take("eval_loss")]
        .into_iter()
        .flatten()
        .collect();
    if !loss.is_empty() {
        charts.push(Chart {
            title: "training loss".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            series: loss,
        });
    }
    let lr = take("learning_rate").or_else(|| take("lr"));

    let eval: Vec<Series> = columns
        .iter()
        .filter(|(k, _)| k.starts_with("eval_") && !is_bookkeeping(k))
        .map(|(k, points)| Series {
            name: k.clone(),
            points: points.clone(),
        })
        .collect();
    if !eval.is_empty() {
        charts.push(Chart {
            title: "evaluation".into(),
            x_label: "step".into(),
            y_label: "metric".into(),
            series: eval,
        });
    }
    if let Some(mut lr) = lr {
        lr.name = "learning_rate".into();
        charts.push(Chart {
            title: "learning rate".into(),
            x_label: "step".into(),
            y_label: "learning rate".into(),
            series: vec![lr],
        });
    }
    charts
}
