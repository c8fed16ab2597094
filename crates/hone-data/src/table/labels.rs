//! Class labels <-> ids, in the shape HF `config.json` stores them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Example, Table};
use crate::error::{DataError, Result};

/// The ordered set of class labels. Id `i` is `labels()[i]`.
///
/// Serialises as the plain list of labels in id order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct LabelMap {
    labels: Vec<String>,
}

impl LabelMap {
    /// A map with exactly this id order; fails on duplicates.
    pub fn new(labels: Vec<String>) -> Result<Self> {
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].contains(l) {
                return Err(DataError::Invalid(format!("duplicate label {l:?}")));
            }
        }
        Ok(LabelMap { labels })
    }

    /// The distinct labels, sorted: numerically when every label is an integer (so `"10"`
    /// comes after `"2"` and GLUE's `0`/`1` keep their meaning as ids), otherwise by string.
    pub fn from_labels<I, S>(labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set: Vec<String> = labels
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let numeric: Option<Vec<i128>> = set.iter().map(|s| s.parse::<i128>().ok()).collect();
        if let Some(values) = numeric {
            let mut pairs: Vec<(i128, String)> = values.into_iter().zip(set).collect();
            pairs.sort();
            set = pairs.into_iter().map(|(_, s)| s).collect();
        }
        LabelMap { labels: set }
    }

    /// Built from the labels of training examples; unlabelled examples are skipped.
    pub fn from_examples(examples: &[Example]) -> Self {
        Self::from_labels(examples.iter().filter_map(|e| e.label.as_deref()))
    }

    /// Built from a training table; every row must have a label.
    pub fn from_table(table: &Table) -> Result<Self> {
        let labels = table
            .examples
            .iter()
            .map(|e| table.require_label(e))
            .collect::<Result<Vec<_>>>()?;
        if labels.is_empty() {
            return Err(DataError::NoRows {
                path: table.path.clone(),
            });
        }
        Ok(Self::from_labels(labels))
    }

    /// Rebuilds the map from a `config.json` `id2label` (keys are ids as strings).
    pub fn from_id2label(id2label: &BTreeMap<String, String>) -> Result<Self> {
        let mut pairs = Vec::with_capacity(id2label.len());
        for (k, v) in id2label {
            let id: usize = k
                .parse()
                .map_err(|_| DataError::Invalid(format!("id2label key {k:?} is not an id")))?;
            pairs.push((id, v.clone()));
        }
        pairs.sort();
        for (expected, (id, _)) in pairs.iter().enumerate() {
            if *id != expected {
                return Err(DataError::Invalid(format!(
                    "id2label ids must be 0..{}; id {expected} is missing",
                    pairs.len()
                )));
            }
        }
        Self::new(pairs.into_iter().map(|(_, v)| v).collect())
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Labels in id order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The id of a label; an unknown label is an error that lists the known ones.
    pub fn id(&self, label: &str) -> Result<usize> {
        self.labels
            .iter()
            .position(|l| l == label)
            .ok_or_else(|| DataError::UnknownLabel {
                label: label.to_owned(),
                known: self.labels.clone(),
            })
    }

    /// The label of an id.
    pub fn label(&self, id: usize) -> Option<&str> {
        self.labels.get(id).map(String::as_str)
    }

    /// `{"0": "negative", "1": "positive"}` as in HF `config.json`.
    pub fn id2label(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l.clone()))
            .collect()
    }

    /// `{"negative": 0, "positive": 1}` as in HF `config.json`.
    pub fn label2id(&self) -> BTreeMap<String, usize> {
        self.labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect()
    }

    /// The ids of every example of a table; errors name the file and line of an unknown or
    /// missing label (e.g. a validation label never seen in training).
    pub fn encode(&self, table: &Table) -> Result<Vec<usize>> {
        table
            .examples
            .iter()
            .map(|ex| {
                let label = table.require_label(ex)?;
                self.id(label).map_err(|_| DataError::UnknownLabelAt {
                    path: table.path.clone(),
                    line: ex.line,
                    label: label.to_owned(),
                    known: self.labels.clone(),
                })
            })
            .collect()
    }
}

impl TryFrom<Vec<String>> for LabelMap {
    type Error = DataError;

    fn try_from(labels: Vec<String>) -> Result<Self> {
        LabelMap::new(labels)
    }
}

impl From<LabelMap> for Vec<String> {
    fn from(map: LabelMap) -> Self {
        map.labels
    }
}
