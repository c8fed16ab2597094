//! Translation with a sequence-to-sequence model: greedy and beam search as Hugging Face's
//! `generate` does them for Marian, so the same checkpoint gives the same tokens.
//!
//! The encoder runs once per batch; each step feeds the decoder only the newest token of
//! every hypothesis, with a per-layer KV cache of its self-attention. Generation stops at
//! `1 + max_new_tokens` decoder positions (the start token counts), and when the model has
//! a `forced_eos_token_id` the last of those positions is forced to it, as Transformers'
//! `ForcedEOSTokenLogitsProcessor` does.
//!
//! Beam search follows Transformers 5's vectorized implementation: log-softmax per step,
//! running score = sum of log-probs; of the `2 * num_beams` best continuations, those
//! ending in EOS and ranked within the first `num_beams` become finished hypotheses scored
//! `sum / generated_len ^ length_penalty` (the EOS counts), the `num_beams` best others
//! keep running. With `early_stopping`, a sentence is done once it has `num_beams`
//! finished hypotheses; without it, once no running beam can still beat the worst of them.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

use crate::model::layers::KvCache;
use crate::model::Seq2SeqLm;
use crate::tokenization::{pad_ids, TextTokenizer};

/// How to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslationConfig {
    /// 1: greedy decoding; more: beam search of that width.
    pub num_beams: usize,
    /// Upper bound on the generated tokens (EOS included).
    pub max_new_tokens: usize,
    /// Exponent of the length normalisation of finished beams (> 0 favours longer ones).
    pub length_penalty: f64,
    /// Stop a sentence as soon as it has `num_beams` finished hypotheses.
    pub early_stopping: bool,
    /// Decode with the KV cache; `false` re-runs the decoder over the whole prefix each
    /// step, which is slower and only useful to check the cache.
    pub use_cache: bool,
}

impl Default for TranslationConfig {
    fn default() -> Self {
        Self {
            num_beams: 5,
            max_new_tokens: 256,
            length_penalty: 1.0,
            early_stopping: true,
            use_cache: true,
        }
    }
}

/// The settings of a model's `generation_config.json` that translation honours.
#[derive(Debug, Default, serde::Deserialize)]
pub struct GenerationFile {
    pub num_beams: Option<usize>,
    pub max_length: Option<usize>,
    pub length_penalty: Option<f64>,
    pub early_stopping: Option<serde_json::Value>,
}

impl GenerationFile {
    /// The model directory's `generation_config.json` (all unset when there is none).
    pub fn load(dir: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = dir.join("generation_config.json");
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }

    /// The decoding settings: what the caller asks, else this file's, else Transformers'
    /// defaults (greedy, `max_length` 256), within the model's `max_positions`.
    pub fn translation_config(
        &self,
        max_positions: usize,
        num_beams: Option<usize>,
        max_new_tokens: Option<usize>,
        length_penalty: Option<f64>,
    ) -> TranslationConfig {
        TranslationConfig {
            num_beams: num_beams.or(self.num_beams).unwrap_or(1),
            max_new_tokens: max_new_tokens
                .or(self.max_length.map(|m| m.saturating_sub(1)))
                .unwrap_or(256)
                .min(max_positions.saturating_sub(1)),
            length_penalty: length_penalty.or(self.length_penalty).unwrap_or(1.0),
            // Transformers' default is false; "never" is not modelled and reads as false.
            early_stopping: self
                .early_stopping
                .as_ref()
                .is_some_and(|v| *v == serde_json::Value::Bool(true)),
            use_cache: true,
        }
    }
}

/// One decoded sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// The generated ids (the decoder start token left out, the EOS kept if reached).
    pub ids: Vec<u32>,
    /// Beam search's length-normalised log-probability (greedy: the plain sum).
    pub score: f64,
}

/// Decode a batch of sources `input_ids` `[B, S]` (mask `[B, S]`, 1 token, 0 padding):
/// one best hypothesis per row.
pub fn generate_seq2seq(
    model: &dyn Seq2SeqLm,
    input_ids: &Tensor,
    attention_mask: &Tensor,
    cfg: &TranslationConfig,
) -> Result<Vec<Hypothesis>> {
    if cfg.num_beams == 0 {
        bail!("num_beams must be at least 1")
    }
    if cfg.max_new_tokens == 0 {
        bail!("max_new_tokens must be at least 1")
    }
    if cfg.max_new_tokens + 1 > model.max_positions() {
        bail!(
            "max_new_tokens {} exceeds the model's {} positions (the start token takes one)",
            cfg.max_new_tokens,
            model.max_positions()
        )
    }
    match cfg.num_beams {
        1 => greedy(model, input_ids, attention_mask, cfg),
        _ => beam_search(model, input_ids, attention_mask, cfg),
    }
}

/// One translated sentence.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Translation {
    /// The decoded text, special tokens left out.
    pub text: String,
    /// The generated ids (EOS included when reached).
    pub ids: Vec<u32>,
    /// See [`Hypothesis::score`].
    pub score: f64,
}

/// Translate `sources` in batches of `batch_size`, one [`Translation`] each.
pub fn translate(
    model: &dyn Seq2SeqLm,
    tokenizer: &TextTokenizer,
    sources: &[String],
    cfg: &TranslationConfig,
    batch_size: usize,
) -> Result<Vec<Translation>> {
    let pad = model.tokens().pad;
    let mut out = Vec::with_capacity(sources.len());
    for chunk in sources.chunks(batch_size.max(1)) {
        let encodings = chunk
            .iter()
            .map(|s| tokenizer.encode(s, None))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        if let Some(long) = ids.iter().position(|r| r.len() > model.max_positions()) {
            bail!(
                "source {:?} has {} tokens, more than the model's {} positions",
                chunk[long],
                ids[long].len(),
                model.max_positions()
            )
        }
        let batch = pad_ids(&ids, &[], pad, model.device())?;
        for hyp in generate_seq2seq(model, &batch.input_ids, &batch.attention_mask, cfg)? {
            out.push(Translation {
                text: tokenizer.decode(&hyp.ids, true)?,
                ids: hyp.ids,
                score: hyp.score,
            });
        }
    }
    Ok(out)
}

/// The decoder side of generation: the encoder states (each source repeated once per
/// hypothesis) and the self-attention cache.
struct Decoder<'a> {
    model: &'a dyn Seq2SeqLm,
    states: Tensor,
    mask: Tensor,
    cache: Option<Vec<KvCache>>,
}

impl<'a> Decoder<'a> {
    /// Encode once; `copies` hypotheses per source row.
    fn new(
        model: &'a dyn Seq2SeqLm,
        input_ids: &Tensor,
        mask: &Tensor,
        copies: usize,
        use_cache: bool,
    ) -> Result<Self> {
        let b = input_ids.dim(0)?;
        let states = crate::runtime::on_thread_pool(|| model.encode(input_ids, mask))?;
        let rows: Vec<u32> = (0..b as u32)
            .flat_map(|i| std::iter::repeat_n(i, copies))
            .collect();
        let rows = Tensor::new(rows, input_ids.device())?;
        Ok(Self {
            model,
            states: states.index_select(&rows, 0)?,
            mask: mask.index_select(&rows, 0)?,
            cache: use_cache.then(|| model.new_cache()),
        })
    }

    /// Next-token log-probabilities `[N][vocab]` (f64) after each of the N sequences.
    fn next_log_probs(&mut self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f64>>> {
        let device = self.states.device().clone();
        let len = seqs[0].len();
        let logits = crate::runtime::on_thread_pool(|| -> Result<Tensor> {
            Ok(match &mut self.cache {
                Some(cache) => {
                    let last: Vec<u32> = seqs.iter().map(|s| s[len - 1]).collect();
                    let ids = Tensor::from_vec(last, (seqs.len(), 1), &device)?;
                    self.model
                        .decode(&ids, &self.states, &self.mask, Some(cache))?
                }
                None => {
                    let ids = rows_tensor(seqs, &device)?;
                    let logits = self.model.decode(&ids, &self.states, &self.mask, None)?;
                    logits.narrow(1, len - 1, 1)?
                }
            })
        })?;
        let logits = logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(logits.iter().map(|row| log_softmax(row)).collect())
    }

    /// Hypothesis `i` continues hypothesis `rows[i]`.
    fn reorder(&mut self, rows: &[u32]) -> Result<()> {
        if let Some(cache) = &mut self.cache {
            let rows = Tensor::new(rows, self.states.device())?;
            for layer in cache.iter_mut() {
                layer.select_rows(&rows)?;
            }
        }
        Ok(())
    }
}

fn rows_tensor(seqs: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (seqs.len(), seqs[0].len()), device)?)
}

/// `log(softmax(row))` in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// Transformers' `ForcedEOSTokenLogitsProcessor`: at the last allowed position only EOS
/// may follow (its log-prob becomes 0, every other one -inf).
fn force_eos(log_probs: &mut [f64], eos: u32) {
    log_probs.fill(f64::NEG_INFINITY);
    log_probs[eos as usize] = 0.0;
}

/// The first index of the largest value (torch.argmax's tie rule).
fn argmax(row: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding (what [`generate_seq2seq`] runs for `num_beams = 1`).
pub fn greedy(
    model: &dyn Seq2SeqLm,
    input_ids: &Tensor,
    mask: &Tensor,
    cfg: &TranslationConfig,
) -> Result<Vec<Hypothesis>> {
    let tokens = model.tokens();
    let b = input_ids.dim(0)?;
    let mut decoder = Decoder::new(model, input_ids, mask, 1, cfg.use_cache)?;
    let mut seqs = vec![vec![tokens.decoder_start]; b];
    let mut hyps = vec![
        Hypothesis {
            ids: vec![],
            score: 0.0,
        };
        b
    ];
    let mut finished = vec![false; b];
    for step in 0..cfg.max_new_tokens {
        let last_step = step + 1 == cfg.max_new_tokens;
        let log_probs = decoder.next_log_probs(&seqs)?;
        for (i, mut lp) in log_probs.into_iter().enumerate() {
            if let (true, Some(eos)) = (last_step, tokens.forced_eos) {
                force_eos(&mut lp, eos);
            }
            // Finished rows keep stepping with padding, as Transformers' batches do.
            let token = match finished[i] {
                true => tokens.pad,
                false => argmax(&lp),
            };
            seqs[i].push(token);
            if !finished[i] {
                hyps[i].ids.push(token);
                hyps[i].score += lp[token as usize];
                finished[i] = token == tokens.eos;
            }
        }
        if finished.iter().all(|&f| f) {
            break;
        }
    }
    Ok(hyps)
}

/// The finished hypotheses of one source sentence, best first, at most `num_beams`.
struct Finished {
    hyps: Vec<Hypothesis>,
    done: bool,
}

impl Finished {
    fn add(&mut self, hyp: Hypothesis, num_beams: usize) {
        let at = self.hyps.partition_point(|h| h.score >= hyp.score);
        if at < num_beams {
            self.hyps.insert(at, hyp);
            self.hyps.truncate(num_beams);
        }
    }

    fn worst(&self) -> f64 {
        self.hyps.last().map_or(f64::NEG_INFINITY, |h| h.score)
    }
}

/// Beam search of width `cfg.num_beams` (1 is allowed: it must pick greedy's tokens).
pub fn beam_search(
    model: &dyn Seq2SeqLm,
    input_ids: &Tensor,
    mask: &Tensor,
    cfg: &TranslationConfig,
) -> Result<Vec<Hypothesis>> {
    let tokens = model.tokens();
    let k = cfg.num_beams;
    let b = input_ids.dim(0)?;
    let mut decoder = Decoder::new(model, input_ids, mask, k, cfg.use_cache)?;
    // Hypothesis `row * k + j`; at first all beams are the start token, and only beam 0
    // may expand (the others start at -1e9, as in Transformers).
    let mut seqs = vec![vec![tokens.decoder_start]; b * k];
    let mut scores: Vec<f64> = (0..b * k)
        .map(|i| if i % k == 0 { 0.0 } else { -1e9 })
        .collect();
    let mut finished: Vec<Finished> = (0..b)
        .map(|_| Finished {
            hyps: vec![],
            done: false,
        })
        .collect();
    for step in 0..cfg.max_new_tokens {
        let generated = step + 1;
        let last_step = generated == cfg.max_new_tokens;
        let mut log_probs = decoder.next_log_probs(&seqs)?;
        if let (true, Some(eos)) = (last_step, tokens.forced_eos) {
            log_probs.iter_mut().for_each(|lp| force_eos(lp, eos));
        }
        let mut next_seqs = Vec::with_capacity(b * k);
        let mut next_scores = Vec::with_capacity(b * k);
        let mut parents = Vec::with_capacity(b * k);
        for row in 0..b {
            // The 2k best (score, beam, token) over the row's k beams.
            let mut cands: Vec<(f64, usize, u32)> = Vec::with_capacity(k * log_probs[0].len());
            for j in 0..k {
                let h = row * k + j;
                cands.extend(
                    log_probs[h]
                        .iter()
                        .enumerate()
                        .map(|(t, &lp)| (scores[h] + lp, j, t as u32)),
                );
            }
            let top = top_candidates(cands, 2 * k);
            if !finished[row].done {
                for (rank, &(score, j, t)) in top.iter().enumerate() {
                    if t == tokens.eos && rank < k {
                        let mut ids = seqs[row * k + j][1..].to_vec();
                        ids.push(t);
                        let norm = (generated as f64).powf(cfg.length_penalty);
                        finished[row].add(
                            Hypothesis {
                                ids,
                                score: score / norm,
                            },
                            k,
                        );
                    }
                }
            }
            let running: Vec<&(f64, usize, u32)> =
                top.iter().filter(|c| c.2 != tokens.eos).take(k).collect();
            for j in 0..k {
                // Fewer than k running continuations only at a forced step: pad the beam.
                let (score, parent, t) = running
                    .get(j)
                    .map_or((f64::NEG_INFINITY, 0, tokens.pad), |c| **c);
                let h = row * k + parent;
                let mut seq = seqs[h].clone();
                seq.push(t);
                next_seqs.push(seq);
                next_scores.push(score);
                parents.push(h as u32);
            }
            let best_running = running.first().map_or(f64::NEG_INFINITY, |c| c.0);
            let f = &mut finished[row];
            f.done = f.done
                || (f.hyps.len() == k
                    && (cfg.early_stopping
                        || best_running / (generated as f64).powf(cfg.length_penalty)
                            <= f.worst()));
        }
        seqs = next_seqs;
        scores = next_scores;
        if finished.iter().all(|f| f.done) || last_step {
            break;
        }
        decoder.reorder(&parents)?;
    }
    // Sentences that never finished k hypotheses: their running beams count as finished.
    for (row, f) in finished.iter_mut().enumerate() {
        if f.done {
            continue;
        }
        for j in 0..k {
            let h = row * k + j;
            if scores[h].is_finite() && scores[h] > -1e8 {
                let ids = seqs[h][1..].to_vec();
                let norm = (ids.len() as f64).powf(cfg.length_penalty);
                f.add(
                    Hypothesis {
                        ids,
                        score: scores[h] / norm,
                    },
                    k,
                );
            }
        }
    }
    finished
        .into_iter()
        .map(|f| {
            f.hyps
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("beam search finished no hypothesis"))
        })
        .collect()
}

/// The `n` best candidates, best first (ties: the earlier beam and token, as torch.topk
/// returns them on CPU in practice).
fn top_candidates(mut cands: Vec<(f64, usize, u32)>, n: usize) -> Vec<(f64, usize, u32)> {
    let n = n.min(cands.len());
    let order = |a: &(f64, usize, u32), b: &(f64, usize, u32)| {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    };
    cands.select_nth_unstable_by(n - 1, order);
    cands.truncate(n);
    cands.sort_by(order);
    cands
}
