//! Named-entity recognition inference: words or raw text in, one tag per word or entity
//! spans with character offsets out, like Hugging Face's token-classification pipeline with
//! `aggregation_strategy="first"`.

use std::path::Path;

use anyhow::{anyhow, Result};
use candle_core::Device;
use serde::Serialize;
use tokenizers::{
    NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
};

use crate::model::{Model, ModelDir, TokenClassifier};
use crate::tasks::ner::{
    run_windows, tags_of, word_predictions, WindowedSentences, WordPrediction,
};
use crate::tokenization::TextTokenizer;

/// A fine-tuned token classifier (any architecture) with its tokenizer, labels and
/// window policy.
pub struct TokenClassificationPipeline {
    pub model: Model<dyn TokenClassifier>,
    pub tokenizer: TextTokenizer,
    pub labels: Vec<String>,
    /// Window length in ids, special tokens included.
    pub max_length: usize,
    /// Pieces shared by consecutive windows of a long sentence.
    pub stride: usize,
}

/// A word of a raw text with its character offsets `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextWord {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// A predicted entity (Hugging Face's pipeline output names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntitySpan {
    /// The entity type (`PER`, ...).
    pub entity_group: String,
    /// Mean over the entity's words of their first piece's probability for their label.
    pub score: f32,
    /// The entity as it appears in the input text.
    pub word: String,
    /// Character offsets `[start, end)` into the input text.
    pub start: usize,
    pub end: usize,
}

/// Entities found in one input text.
#[derive(Debug, Clone, Serialize)]
pub struct TextEntities {
    pub text: String,
    pub entities: Vec<EntitySpan>,
}

impl TokenClassificationPipeline {
    /// Load a model directory saved by `hone finetune` (or any Hugging Face
    /// `BertForTokenClassification` directory).
    pub fn load(dir: &Path, device: &Device, max_length: usize, stride: usize) -> Result<Self> {
        Self::open(&ModelDir::open(dir)?, device, max_length, stride)
    }

    /// [`Self::load`] on a directory already opened (an adapter with a given base, say).
    pub fn open(dir: &ModelDir, device: &Device, max_length: usize, stride: usize) -> Result<Self> {
        let model = Model::open(dir, device)?
            .into_kind::<dyn TokenClassifier>()
            .map_err(|e| e.context(dir.path.display().to_string()))?;
        let tokenizer = dir.tokenizer()?;
        Ok(Self::new(model, tokenizer, max_length, stride))
    }

    /// Wrap a token classifier and its tokenizer (labels from the model's config; padding
    /// with the model's pad id; windows no longer than the model's positions).
    pub fn new(
        model: Model<dyn TokenClassifier>,
        mut tokenizer: TextTokenizer,
        max_length: usize,
        stride: usize,
    ) -> Self {
        let arch = &model.config.arch;
        if let Some(pad) = arch.pad_token_id() {
            tokenizer.set_pad_id(pad);
        }
        // Windows are cut to fit the model's positions; the tokenizer itself never truncates.
        let max_length = max_length.min(arch.max_positions());
        let labels = model.head.labels().to_vec();
        Self {
            model: model.frozen(),
            tokenizer,
            labels,
            max_length,
            stride,
        }
    }

    /// Per word of every sentence: the prediction of the word's first piece, from the
    /// window where it has the most context (`None` for a word without pieces).
    pub fn predict_words<S: AsRef<str> + Sync>(
        &self,
        sentences: &[Vec<S>],
        batch_size: usize,
    ) -> Result<Vec<Vec<Option<WordPrediction>>>> {
        let ws = WindowedSentences::new(&self.tokenizer, sentences, self.max_length, self.stride)?;
        let all: Vec<usize> = (0..ws.windows.len()).collect();
        let run = crate::runtime::on_thread_pool(|| {
            run_windows(
                &*self.model.net,
                &ws,
                &all,
                None,
                batch_size,
                self.tokenizer.pad_id(),
                &self.model.device,
            )
        })?;
        Ok(word_predictions(&ws.merge(0..sentences.len(), &run.logits)))
    }

    /// One tag per word (`O` for a word without pieces).
    pub fn predict_tags<S: AsRef<str> + Sync>(
        &self,
        sentences: &[Vec<S>],
        batch_size: usize,
    ) -> Result<Vec<Vec<String>>> {
        Ok(tags_of(
            &self.predict_words(sentences, batch_size)?,
            &self.labels,
        ))
    }

    /// Entities in raw texts: split into words (the tokenizer's normalizer and
    /// pre-tokenizer, keeping character offsets), predict per word, group words.
    pub fn predict_entities(
        &self,
        texts: &[String],
        batch_size: usize,
    ) -> Result<Vec<TextEntities>> {
        let words: Vec<Vec<TextWord>> = texts
            .iter()
            .map(|t| split_words(&self.tokenizer, t))
            .collect::<Result<_>>()?;
        let strings: Vec<Vec<&str>> = words
            .iter()
            .map(|ws| ws.iter().map(|w| w.text.as_str()).collect())
            .collect();
        let preds = self.predict_words(&strings, batch_size)?;
        Ok(texts
            .iter()
            .zip(words.iter().zip(&preds))
            .map(|(text, (ws, ps))| TextEntities {
                text: text.clone(),
                entities: group_entities(text, ws, ps, &self.labels),
            })
            .collect())
    }
}

/// Split `text` into words as the tokenizer would (its normalizer, then its pre-tokenizer;
/// whitespace when it has none), with character offsets into `text`. A word's text is the
/// original slice, so it is tokenized again exactly as in the full text.
pub fn split_words(tok: &TextTokenizer, text: &str) -> Result<Vec<TextWord>> {
    let inner = tok.inner();
    let mut normalized = NormalizedString::from(text);
    if let Some(n) = inner.get_normalizer() {
        n.normalize(&mut normalized)
            .map_err(|e| anyhow!("cannot normalize {text:?}: {e}"))?;
    }
    let mut pre = PreTokenizedString::from(normalized);
    match inner.get_pre_tokenizer() {
        Some(p) => p.pre_tokenize(&mut pre),
        None => pre.split(|_, s| {
            s.split(
                char::is_whitespace,
                tokenizers::SplitDelimiterBehavior::Removed,
            )
        }),
    }
    .map_err(|e| anyhow!("cannot pre-tokenize {text:?}: {e}"))?;
    let chars: Vec<char> = text.chars().collect();
    Ok(pre
        .get_splits(OffsetReferential::Original, OffsetType::Char)
        .into_iter()
        .filter(|(_, (s, e), _)| e > s)
        .map(|(_, (start, end), _)| TextWord {
            text: chars[start..end].iter().collect(),
            start,
            end,
        })
        .collect())
}

/// (B/I, type) of a label as Hugging Face's pipeline reads it: anything without a `B-` or
/// `I-` prefix continues like `I-`.
fn bi_and_type(label: &str) -> (bool, &str) {
    if let Some(t) = label.strip_prefix("B-") {
        (true, t)
    } else if let Some(t) = label.strip_prefix("I-") {
        (false, t)
    } else {
        (false, label)
    }
}

/// Hugging Face's `group_entities`: consecutive words of the same type join unless a word
/// starts with `B-`; groups of `O` are dropped. Words without a prediction end a group.
pub fn group_entities(
    text: &str,
    words: &[TextWord],
    preds: &[Option<WordPrediction>],
    labels: &[String],
) -> Vec<EntitySpan> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    // (type, first word, last word, score sum)
    let mut open: Option<(&str, usize, usize, f32)> = None;
    let close = |g: Option<(&str, usize, usize, f32)>, out: &mut Vec<EntitySpan>| {
        if let Some((ty, a, b, sum)) = g {
            if ty != "O" {
                let (start, end) = (words[a].start, words[b].end);
                out.push(EntitySpan {
                    entity_group: ty.to_string(),
                    score: sum / (b - a + 1) as f32,
                    word: chars[start..end].iter().collect(),
                    start,
                    end,
                });
            }
        }
    };
    for (i, p) in preds.iter().enumerate() {
        let Some(p) = p else {
            close(open.take(), &mut out);
            continue;
        };
        let (is_b, ty) = bi_and_type(&labels[p.label]);
        match &mut open {
            Some((t, _, last, sum)) if *t == ty && !is_b && *last + 1 == i => {
                *last = i;
                *sum += p.score;
            }
            _ => {
                close(open.take(), &mut out);
                open = Some((ty, i, i, p.score));
            }
        }
    }
    close(open.take(), &mut out);
    out
}
