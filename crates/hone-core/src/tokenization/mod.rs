//! Text to token ids with the Hugging Face `tokenizers` crate, and batches of ids to tensors.
//!
//! Padding is always ours: a `tokenizer.json` may switch on fixed padding (all-MiniLM-L6-v2's
//! pads everything to 128), which we turn off so that each batch is padded to its own
//! longest row.

pub mod train;

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    EncodeInput, Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// A tokenizer with our padding and truncation policy.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
}

impl TextTokenizer {
    /// Load `tokenizer.json` from a model directory, or build a BERT WordPiece tokenizer
    /// from its `vocab.txt` (lower-casing per `tokenizer_config.json`, default true).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_file(&json);
        }
        let vocab = dir.join("vocab.txt");
        if vocab.is_file() {
            return Self::from_vocab_txt(&vocab, lowercase_setting(dir));
        }
        bail!("{} has neither tokenizer.json nor vocab.txt", dir.display())
    }

    /// Load a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let cannot = || format!("cannot load tokenizer {}", path.display());
        let bytes = std::fs::read(path).with_context(cannot)?;
        // `tokenizers` panics (an `expect` in its decoder's deserializer, 0.23.2) on some
        // JSON cut short inside `decoder`, which fuzzing found: a file that is not valid
        // JSON is refused first, and a panic left in the library becomes an error.
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).with_context(cannot)?;
        let inner = std::panic::catch_unwind(|| Tokenizer::from_bytes(&bytes))
            .map_err(|_| anyhow!("{}: the tokenizers library panicked reading it", cannot()))?
            .map_err(|e| anyhow!("{}: {e}", cannot()))?;
        Ok(Self::from_tokenizer(inner))
    }

    /// Wrap a `tokenizers::Tokenizer`, switching its padding and truncation off.
    pub fn from_tokenizer(mut inner: Tokenizer) -> Self {
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .expect("disabling truncation cannot fail");
        let pad_id = ["[PAD]", "<pad>", "<|endoftext|>"]
            .iter()
            .find_map(|t| inner.token_to_id(t))
            .unwrap_or(0);
        Self { inner, pad_id }
    }

    /// A BERT WordPiece tokenizer from a `vocab.txt`.
    pub fn from_vocab_txt(path: &Path, lowercase: bool) -> Result<Self> {
        let path_str = path.to_str().context("vocab path is not UTF-8")?;
        let wp = WordPiece::from_file(path_str)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| anyhow!("cannot read vocabulary {}: {e}", path.display()))?;
        let mut tok = Tokenizer::new(wp);
        let id = |t: &str| {
            tok.token_to_id(t)
                .with_context(|| format!("{} has no {t} token", path.display()))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .map_err(|e| anyhow!("{e}"))?;
        tok.with_pre_tokenizer(Some(BertPreTokenizer));
        tok.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        tok.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
        Ok(Self::from_tokenizer(tok))
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The id batches are padded with.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Pad with `id` (a model's `pad_token_id`, which its head may rely on).
    pub fn set_pad_id(&mut self, id: u32) {
        self.pad_id = id;
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The length encodings are truncated to, if any.
    pub fn max_length(&self) -> Option<usize> {
        self.inner.get_truncation().map(|t| t.max_length)
    }

    /// Truncate every encoding to `max_length` tokens, special tokens included
    /// (longest-first for pairs, as Hugging Face does); `None` turns truncation off.
    pub fn set_max_length(&mut self, max_length: Option<usize>) -> Result<()> {
        let params = max_length.map(|max_length| TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        });
        self.inner
            .with_truncation(params)
            .map_err(|e| anyhow!("invalid max_length: {e}"))?;
        Ok(())
    }

    /// Encode one text or text pair with special tokens; offsets are in characters.
    pub fn encode(&self, text: &str, pair: Option<&str>) -> Result<Encoding> {
        let input: EncodeInput = match pair {
            Some(b) => (text, b).into(),
            None => text.into(),
        };
        self.inner
            .encode_char_offsets(input, true)
            .map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))
    }

    /// Encode many texts (or pairs) in parallel.
    pub fn encode_batch(&self, texts: &[(String, Option<String>)]) -> Result<Vec<Encoding>> {
        use rayon::prelude::*;
        texts
            .par_iter()
            .map(|(a, b)| self.encode(a, b.as_deref()))
            .collect()
    }

    /// Ids back to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow!("cannot decode ids: {e}"))
    }

    /// Write as `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| anyhow!("cannot serialise tokenizer: {e}"))?;
        crate::io::write_bytes_atomically(path, json.as_bytes())
    }
}

fn lowercase_setting(dir: &Path) -> bool {
    let cfg = dir.join("tokenizer_config.json");
    std::fs::read_to_string(cfg)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
        .unwrap_or(true)
}

/// A padded batch of encodings as `[B, T]` u32 tensors.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    pub attention_mask: Tensor,
}

/// Cut `order` (indices sorted by ascending `len`) into batches of at most `max_batch`
/// that pad little: a batch takes the next (longest yet) item while its padded size stays
/// within 25% of its real tokens, or under 256 tokens (where per-batch overhead, not
/// padding, is the cost). A run of requests of mixed lengths then costs its tokens, not
/// `count x longest`.
pub fn length_batches(
    order: &[usize],
    len: impl Fn(usize) -> usize,
    max_batch: usize,
) -> Vec<&[usize]> {
    const SLACK: f64 = 1.25;
    const SMALL: usize = 256;
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &item) in order.iter().enumerate() {
        let (n, l) = (i - start + 1, len(item));
        let padded = n * l;
        let fits = padded as f64 <= SLACK * (tokens + l) as f64 || padded <= SMALL;
        if i > start && (n > max_batch.max(1) || !fits) {
            out.push(&order[start..i]);
            (start, tokens) = (i, 0);
        }
        tokens += l;
    }
    if start < order.len() {
        out.push(&order[start..]);
    }
    out
}

/// Pad `encodings` to the longest of them (right padding with `pad_id`).
pub fn pad_batch(encodings: &[&Encoding], pad_id: u32, device: &Device) -> Result<TokenBatch> {
    let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
    let types: Vec<&[u32]> = encodings.iter().map(|e| e.get_type_ids()).collect();
    pad_ids(&ids, &types, pad_id, device)
}

/// Pad raw id rows (and type-id rows) to the longest row.
pub fn pad_ids(
    ids: &[&[u32]],
    type_ids: &[&[u32]],
    pad_id: u32,
    device: &Device,
) -> Result<TokenBatch> {
    let b = ids.len();
    let t = ids.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let mut input = vec![pad_id; b * t];
    let mut types = vec![0u32; b * t];
    let mut mask = vec![0u32; b * t];
    for (i, row) in ids.iter().enumerate() {
        input[i * t..i * t + row.len()].copy_from_slice(row);
        mask[i * t..i * t + row.len()].fill(1);
        if let Some(ty) = type_ids.get(i) {
            types[i * t..i * t + ty.len()].copy_from_slice(ty);
        }
    }
    Ok(TokenBatch {
        input_ids: Tensor::from_vec(input, (b, t), device)?,
        token_type_ids: Tensor::from_vec(types, (b, t), device)?,
        attention_mask: Tensor::from_vec(mask, (b, t), device)?,
    })
}

/// The tokenizer files a model directory may carry (Transformers' names).
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

/// Copy the tokenizer files `from` has into `to` (a new model directory made from it).
pub fn copy_tokenizer_files(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    for file in TOKENIZER_FILES {
        let src = from.join(file);
        if src.is_file() {
            std::fs::copy(&src, to.join(file))
                .with_context(|| format!("cannot copy {}", src.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod length_batch_tests {
    use super::length_batches;

    #[test]
    fn batches_cover_the_order_and_bound_padding() {
        // Lengths 4..=200 in ascending order, 3 of each.
        let lens: Vec<usize> = (4..=200).flat_map(|l| [l; 3]).collect();
        let order: Vec<usize> = (0..lens.len()).collect();
        let batches = length_batches(&order, |i| lens[i], 32);
        let flat: Vec<usize> = batches.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(flat, order, "every item once, in order");
        for b in &batches {
            assert!(b.len() <= 32);
            let real: usize = b.iter().map(|&i| lens[i]).sum();
            let padded = b.len() * lens[*b.last().unwrap()];
            assert!(
                padded <= 256 || padded as f64 <= 1.25 * real as f64,
                "{b:?}: {padded} padded for {real}"
            );
        }
        // Equal lengths fill whole batches.
        let same = length_batches(&order[..100], |_| 50, 32);
        assert_eq!(
            same.iter().map(|b| b.len()).collect::<Vec<_>>(),
            [32, 32, 32, 4]
        );
        assert!(length_batches(&[], |_| 1, 8).is_empty());
    }
}
