//! Text generation with a causal language model (GPT-2): greedy or sampled decoding with
//! temperature, top-k and top-p, stop strings, EOS, and token-by-token streaming.
//!
//! The prompt is run through the model once, filling a per-layer KV cache; after that each
//! new token costs one position. GPT-2's positions are learned and absolute, so once the
//! sequence reaches `n_positions` the cache cannot slide (every cached key was computed at
//! a position that would shift): from then on each step re-encodes, without the old cache,
//! the last `n_positions - 1` tokens plus the new one, which is exactly what nanoGPT's
//! `generate` does when it crops the context to `block_size`. Prompts longer than the
//! window are cropped the same way.

use std::ops::ControlFlow;

use anyhow::{bail, Result};
use candle_core::{DType, IndexOp, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::layers::KvCache;
use crate::model::CausalLm;
use crate::tokenization::TextTokenizer;

/// How to pick tokens and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Upper bound on the number of generated tokens.
    pub max_new_tokens: usize,
    /// Softmax temperature; `0` means greedy decoding.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens before sampling (`None` or `0`: all).
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability
    /// reaches `top_p` (always at least one). `None` or `>= 1`: all.
    pub top_p: Option<f64>,
    /// Seed of the ChaCha sampler: the same seed reproduces the same output.
    pub seed: u64,
    /// Stop as soon as the generated text contains one of these; it is cut off the text.
    pub stop: Vec<String>,
    /// Always take the most likely token (Hugging Face's `do_sample=False`).
    pub greedy: bool,
    /// Stop after generating this id. [`generate`] fills it from the model config when the
    /// tokenizer has that id as a special token.
    pub eos_token_id: Option<u32>,
    /// Decode with the KV cache (the default); `false` re-encodes the whole context at
    /// every step, which is slower and only useful to check the cache.
    pub use_cache: bool,
    /// Keep the raw next-token logits of every step in [`IdsOutput::logits`].
    pub output_logits: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 100,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
            stop: Vec::new(),
            greedy: false,
            eos_token_id: None,
            use_cache: true,
            output_logits: false,
        }
    }
}

impl GenerationConfig {
    /// Greedy decoding of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            greedy: true,
            ..Default::default()
        }
    }

    /// Whether tokens are sampled (not greedy and a positive temperature).
    pub fn do_sample(&self) -> bool {
        !self.greedy && self.temperature > 0.0
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!("temperature must be >= 0, got {}", self.temperature)
        }
        if let Some(p) = self.top_p {
            if !(0.0..=1.0).contains(&p) {
                bail!("top_p must be in [0, 1], got {p}")
            }
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` were generated.
    Length,
    /// The EOS token was generated (it is the last of the new ids).
    Eos,
    /// A stop string appeared (or the token callback asked to stop).
    Stop,
}

/// What [`generate_ids`] produced.
#[derive(Debug, Clone)]
pub struct IdsOutput {
    /// The generated ids, without the prompt.
    pub new_ids: Vec<u32>,
    /// Raw next-token logits `[vocab]` before each generated token (only with
    /// [`GenerationConfig::output_logits`]).
    pub logits: Vec<Vec<f32>>,
    pub finish_reason: FinishReason,
}

/// What [`generate`] produced.
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// The generated continuation (not the prompt), with any stop string and what follows
    /// it cut off, and special tokens (EOS) left out.
    pub text: String,
    /// Prompt ids followed by every generated id (the ids of a stop string included).
    pub token_ids: Vec<u32>,
    /// How many ids were generated.
    pub new_tokens: usize,
    pub finish_reason: FinishReason,
}

/// Generate from `prompt_ids`, calling `on_token` with each new id (EOS included) as soon
/// as it is picked; it returns [`ControlFlow::Break`] to stop there.
pub fn generate_ids(
    model: &dyn CausalLm,
    prompt_ids: &[u32],
    cfg: &GenerationConfig,
    mut on_token: impl FnMut(u32) -> Result<ControlFlow<()>>,
) -> Result<IdsOutput> {
    cfg.validate()?;
    if prompt_ids.is_empty() {
        bail!("cannot generate from an empty prompt")
    }
    let mut out = IdsOutput {
        new_ids: Vec::new(),
        logits: Vec::new(),
        finish_reason: FinishReason::Length,
    };
    let mut ids = prompt_ids.to_vec();
    let mut stepper = Stepper::new(model, cfg.use_cache);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    for _ in 0..cfg.max_new_tokens {
        let logits = stepper.next_logits(&ids)?;
        let token = if cfg.do_sample() {
            sample(&logits, cfg, &mut rng)
        } else {
            argmax(&logits)
        };
        if cfg.output_logits {
            out.logits.push(logits);
        }
        ids.push(token);
        out.new_ids.push(token);
        if on_token(token)?.is_break() {
            out.finish_reason = FinishReason::Stop;
            break;
        }
        if cfg.eos_token_id == Some(token) {
            out.finish_reason = FinishReason::Eos;
            break;
        }
    }
    Ok(out)
}

/// Generate a continuation of `prompt`, calling `on_token(id, piece)` once for each new
/// token with the text it settles. The pieces concatenate to [`GenerationOutput::text`]:
/// text that could still turn into a stop string, or a trailing incomplete UTF-8
/// character, is held back (the piece is empty) until later tokens settle it; the last
/// token settles everything.
pub fn generate(
    model: &dyn CausalLm,
    tokenizer: &TextTokenizer,
    prompt: &str,
    cfg: &GenerationConfig,
    mut on_token: impl FnMut(u32, &str),
) -> Result<GenerationOutput> {
    let mut prompt_ids = tokenizer.encode(prompt, None)?.get_ids().to_vec();
    if prompt_ids.is_empty() {
        // An empty prompt starts from BOS, as Hugging Face does.
        match model.config().bos_token_id() {
            Some(bos) if (bos as usize) < model.config().vocab_size() => prompt_ids.push(bos),
            _ => bail!("the prompt is empty and the model has no bos_token_id to start from"),
        }
    }
    let mut cfg = cfg.clone();
    cfg.stop.retain(|s| !s.is_empty());
    if cfg.eos_token_id.is_none() {
        cfg.eos_token_id = eos_for(model, tokenizer);
    }

    let mut new_ids = Vec::new();
    let mut emitted = String::new();
    let mut text = String::new();
    let mut emit = |id: u32, upto: &str, emitted: &mut String| {
        // Decoding is prefix-stable for all our decoders once held-back text is settled;
        // if it ever is not, what was streamed cannot be taken back, so stream nothing more.
        let piece = upto.strip_prefix(emitted.as_str()).unwrap_or("");
        on_token(id, piece);
        emitted.push_str(piece);
    };
    let ids_out = generate_ids(model, &prompt_ids, &cfg, |id| {
        new_ids.push(id);
        let full = tokenizer.decode(&new_ids, true)?;
        if let Some(pos) = find_stop(&full, &cfg.stop) {
            text = full[..pos].to_string();
            emit(id, &text, &mut emitted);
            return Ok(ControlFlow::Break(()));
        }
        let last = new_ids.len() == cfg.max_new_tokens || cfg.eos_token_id == Some(id);
        let settled = if last {
            full.len()
        } else {
            settled_len(&full, &cfg.stop)
        };
        emit(id, &full[..settled], &mut emitted);
        text = full;
        Ok(ControlFlow::Continue(()))
    })?;
    if ids_out.finish_reason != FinishReason::Stop && text.len() > emitted.len() {
        // Not reached: the last token settles the text.
        let last = *ids_out.new_ids.last().expect("text comes from tokens");
        emit(last, &text, &mut emitted);
    }
    let new_tokens = ids_out.new_ids.len();
    prompt_ids.extend_from_slice(&ids_out.new_ids);
    Ok(GenerationOutput {
        text,
        token_ids: prompt_ids,
        new_tokens,
        finish_reason: ids_out.finish_reason,
    })
}

/// The model's EOS id, but only when the tokenizer treats that id as a special token: a
/// model trained with another tokenizer (a character-level one, where id 0 is `\n`) must
/// not stop at a config default.
fn eos_for(model: &dyn CausalLm, tokenizer: &TextTokenizer) -> Option<u32> {
    let eos = model.config().eos_token_id()?;
    tokenizer
        .inner()
        .get_added_tokens_decoder()
        .get(&eos)
        .filter(|t| t.special)
        .map(|_| eos)
}

/// Byte offset of the earliest stop string in `text`.
fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// How much of `text` can be streamed now: all but a trailing incomplete character (the
/// byte-level decoder shows it as U+FFFD until its last byte arrives) and a suffix that is
/// the beginning of a stop string.
fn settled_len(text: &str, stops: &[String]) -> usize {
    let mut end = text.len();
    while text[..end].ends_with('\u{FFFD}') {
        end -= '\u{FFFD}'.len_utf8();
    }
    let head = &text[..end];
    let held = stops
        .iter()
        .flat_map(|s| {
            (1..s.len())
                .filter(|&k| s.is_char_boundary(k) && head.ends_with(&s[..k]))
                .max()
        })
        .max()
        .unwrap_or(0);
    end - held
}

/// Runs the model forward one step at a time, with or without the KV cache.
struct Stepper<'a> {
    model: &'a dyn CausalLm,
    cache: Option<Vec<KvCache>>,
    /// `ids[..cached_end]` have been through the model into the cache.
    cached_end: usize,
}

impl<'a> Stepper<'a> {
    fn new(model: &'a dyn CausalLm, use_cache: bool) -> Self {
        Self {
            model,
            cache: use_cache.then(|| model.new_cache()),
            cached_end: 0,
        }
    }

    /// Next-token logits after `ids` (the whole sequence so far).
    fn next_logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let window = self.model.config().max_positions();
        let cropped = &ids[ids.len().saturating_sub(window)..];
        let logits = match &mut self.cache {
            Some(cache) => {
                let cached = cache.first().map_or(0, KvCache::len);
                let fresh = &ids[self.cached_end..];
                let input = if cached + fresh.len() <= window {
                    fresh
                } else {
                    // The window is full: positions would shift, so start a new cache.
                    *cache = self.model.new_cache();
                    cropped
                };
                self.cached_end = ids.len();
                forward(self.model, input, Some(cache))?
            }
            None => forward(self.model, cropped, None)?,
        };
        Ok(logits)
    }
}

/// Logits after the last of `input` (which must fit the window with the cache's contents).
fn forward(
    model: &dyn CausalLm,
    input: &[u32],
    cache: Option<&mut Vec<KvCache>>,
) -> Result<Vec<f32>> {
    let t = input.len();
    let x = Tensor::from_slice(input, (1, t), model.device())?;
    let logits = crate::runtime::on_thread_pool(|| model.forward(&x, None, cache))?;
    Ok(logits.i((0, t - 1))?.to_dtype(DType::F32)?.to_vec1()?)
}

/// The first index of the largest logit (as `torch.argmax`).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Sample with temperature, then top-k, then top-p, as Hugging Face's logits warpers do.
fn sample(logits: &[f32], cfg: &GenerationConfig, rng: &mut ChaCha8Rng) -> u32 {
    let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / cfg.temperature).collect();
    // Most likely first; the sort is stable so ties keep the lower id first, as argmax.
    let mut order: Vec<usize> = (0..scaled.len())
        .filter(|&i| scaled[i] > f64::NEG_INFINITY)
        .collect();
    if order.is_empty() {
        return argmax(logits);
    }
    order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]));
    if let Some(k) = cfg.top_k.filter(|&k| k > 0 && k < order.len()) {
        // Tokens tied with the k-th are kept, as in Hugging Face's TopKLogitsWarper.
        let kth = scaled[order[k - 1]];
        order.retain(|&i| scaled[i] >= kth);
    }
    let max = scaled[order[0]];
    let mut probs: Vec<f64> = order.iter().map(|&i| (scaled[i] - max).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = cfg.top_p.filter(|&p| p < 1.0) {
        // Keep a token while the probability of the more likely ones is below top_p: the
        // smallest set reaching top_p, never empty.
        let mut before = 0.0;
        let keep = probs
            .iter()
            .take_while(|&&p| {
                let keep = before < top_p;
                before += p;
                keep
            })
            .count()
            .max(1);
        order.truncate(keep);
        probs.truncate(keep);
    }
    let mut u = rng.gen::<f64>() * probs.iter().sum::<f64>();
    for (&i, &p) in order.iter().zip(&probs) {
        if u < p {
            return i as u32;
        }
        u -= p;
    }
    *order.last().expect("at least one candidate") as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(top_k: Option<usize>, top_p: Option<f64>) -> GenerationConfig {
        GenerationConfig {
            top_k,
            top_p,
            ..Default::default()
        }
    }

    fn support(logits: &[f32], cfg: &GenerationConfig) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen: Vec<u32> = (0..2000).map(|_| sample(logits, cfg, &mut rng)).collect();
        seen.sort();
        seen.dedup();
        seen
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities 0.5, 0.3, 0.15, 0.05 for ids 2, 0, 3, 1
        let logits: Vec<f32> = [0.3f32, 0.05, 0.5, 0.15].iter().map(|p| p.ln()).collect();
        assert_eq!(support(&logits, &cfg(None, Some(0.5))), vec![2]);
        assert_eq!(support(&logits, &cfg(None, Some(0.6))), vec![0, 2]);
        assert_eq!(support(&logits, &cfg(None, Some(0.8))), vec![0, 2]);
        assert_eq!(support(&logits, &cfg(None, Some(0.81))), vec![0, 2, 3]);
        assert_eq!(support(&logits, &cfg(None, Some(1e-9))), vec![2]);
        assert_eq!(support(&logits, &cfg(None, None)), vec![0, 1, 2, 3]);
        assert_eq!(support(&logits, &cfg(Some(3), Some(0.99))), vec![0, 2, 3]);
    }

    #[test]
    fn top_k_keeps_the_k_largest() {
        let logits = [1.0f32, 4.0, 3.0, 2.0];
        assert_eq!(support(&logits, &cfg(Some(2), None)), vec![1, 2]);
        assert_eq!(support(&logits, &cfg(Some(1), None)), vec![1]);
    }

    #[test]
    fn streaming_holds_back_possible_stop_prefixes() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(settled_len("abc\n", &stops), 3);
        assert_eq!(settled_len("abcEN", &stops), 3);
        assert_eq!(settled_len("abcE!", &stops), 5);
        assert_eq!(settled_len("ab\u{FFFD}", &stops), 2);
        assert_eq!(find_stop("a END b \n\n", &stops), Some(2));
    }
}
