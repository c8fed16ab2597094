//! Translation (Hugging Face's `translation` task) with a sequence-to-sequence model:
//! parallel text to teacher-forced batches, label-smoothed cross-entropy, and evaluation by
//! loss, perplexity and corpus BLEU of decoded validation sentences.
//!
//! A recipe fine-tunes a Marian checkpoint (`model_name_or_path`) or trains a fresh one from
//! `[model.config]` (Marian's config keys over a 6+6-layer base), with a tokenizer it is
//! given or a joint SentencePiece-style BPE trained on both sides of the training data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use hone_metrics::bleu::{Bleu, BleuConfig};
use hone_metrics::chrf::Chrf;
use serde::{Deserialize, Serialize};

use super::{FinetuneTask, PeftArgs};
use crate::distributed::{self, Communicator};
use crate::inference::translate::{generate_seq2seq, TranslationConfig};
use crate::model::{
    Head, MarianConfig, MarianSizes, Model, ModelConfig, ModelDir, Seq2SeqLm, Seq2SeqTokens,
};
use crate::tokenization::train::{train_tokenizer, TokenizerKind};
use crate::tokenization::{pad_ids, TextTokenizer};
use crate::training::{Metrics, TrainingArguments, TrainingData};

/// The `[model]` section of a translation recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranslationModelArgs {
    /// A Marian model directory to fine-tune; absent: a fresh model from `config`.
    pub model_name_or_path: Option<PathBuf>,
    /// A tokenizer.json for a fresh model; absent: a joint SentencePiece-style BPE of
    /// `tokenizer_vocab_size` is trained on the training files (source and target).
    pub tokenizer: Option<PathBuf>,
    pub tokenizer_vocab_size: usize,
    /// A fresh model's Marian config keys (`d_model`, `encoder_layers`, `dropout`,
    /// `normalize_before`, ...) over Marian's usual settings; the vocabulary and special
    /// ids come from the tokenizer.
    pub config: Option<toml::Table>,
}

impl Default for TranslationModelArgs {
    fn default() -> Self {
        Self {
            model_name_or_path: None,
            tokenizer: None,
            tokenizer_vocab_size: 8000,
            config: None,
        }
    }
}

/// The `[data]` section: parallel files (`train_source` + `train_target`, one sentence a
/// line), or one file of two columns (TSV, or JSONL with `source_column`/`target_column`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranslationDataArgs {
    pub train_source: Option<PathBuf>,
    pub train_target: Option<PathBuf>,
    pub validation_source: Option<PathBuf>,
    pub validation_target: Option<PathBuf>,
    pub train_file: Option<PathBuf>,
    pub validation_file: Option<PathBuf>,
    /// JSONL keys (TSV: column 1 is the source, column 2 the target).
    pub source_column: String,
    pub target_column: String,
    /// Longer sentences are cut to this many tokens (`</s>` kept at the end).
    pub max_source_length: usize,
    pub max_target_length: usize,
    pub max_train_samples: Option<usize>,
    /// Validation sentences scored by loss and decoded for BLEU.
    pub max_eval_samples: Option<usize>,
    /// Label smoothing of the training loss (the Transformer's 0.1).
    pub label_smoothing: f64,
}

impl Default for TranslationDataArgs {
    fn default() -> Self {
        Self {
            train_source: None,
            train_target: None,
            validation_source: None,
            validation_target: None,
            train_file: None,
            validation_file: None,
            source_column: "source".into(),
            target_column: "target".into(),
            max_source_length: 128,
            max_target_length: 128,
            max_train_samples: None,
            max_eval_samples: None,
            label_smoothing: 0.1,
        }
    }
}

/// The `[generation]` section: how evaluation decodes (and what `hone translate` defaults
/// to for the saved model, through its generation_config.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationArgs {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    pub length_penalty: f64,
}

impl Default for GenerationArgs {
    fn default() -> Self {
        Self {
            num_beams: 1,
            max_new_tokens: 128,
            length_penalty: 1.0,
        }
    }
}

/// A whole translation recipe.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranslationRecipe {
    /// Always [`FinetuneTask::Translation`].
    pub task: FinetuneTask,
    pub model: TranslationModelArgs,
    pub data: TranslationDataArgs,
    pub generation: GenerationArgs,
    pub training: TrainingArguments,
    pub peft: Option<PeftArgs>,
}

/// One tokenized sentence pair, each side ending in `</s>`.
#[derive(Debug, Clone)]
struct Pair {
    source: Vec<u32>,
    target: Vec<u32>,
}

/// Parallel data with its loss and evaluation, ready for the trainer.
pub struct TranslationData {
    pub tokenizer: TextTokenizer,
    train: Vec<Pair>,
    valid: Vec<Pair>,
    /// The validation references, detokenized text (BLEU's references).
    valid_references: Vec<String>,
    label_smoothing: f64,
    generation: TranslationConfig,
    /// The model's special ids (written into generation_config.json).
    tokens: Seq2SeqTokens,
    eval_batch_size: usize,
    device: Device,
}

impl TranslationDataArgs {
    /// The validation pairs these arguments name (parallel files or one two-column file).
    pub fn read_validation(&self) -> Result<Vec<(String, String)>> {
        read_split(
            self,
            (&self.validation_source, &self.validation_target),
            &self.validation_file,
            "validation",
        )?
        .context(
            "give the validation sentences: a source file with its target, or a two-column file",
        )
    }
}

/// Sentence pairs of one split, and how many lines were skipped (an empty side).
fn read_split(
    data: &TranslationDataArgs,
    parallel: (&Option<PathBuf>, &Option<PathBuf>),
    file: &Option<PathBuf>,
    split: &str,
) -> Result<Option<Vec<(String, String)>>> {
    let text = match (parallel, file) {
        ((Some(s), Some(t)), None) => hone_data::read_parallel(s, t)?,
        ((None, None), Some(f)) => read_two_columns(f, data)?,
        ((None, None), None) => return Ok(None),
        ((Some(_), None), _) | ((None, Some(_)), _) => {
            bail!("[data] {split}_source and {split}_target go together")
        }
        (_, Some(_)) => {
            bail!("[data] give {split}_file or {split}_source/{split}_target, not both")
        }
    };
    if text.skipped > 0 {
        tracing::info!("{split}: skipped {} lines with an empty side", text.skipped);
    }
    if text.pairs.is_empty() {
        bail!("[data] the {split} data has no sentence pairs")
    }
    Ok(Some(text.pairs))
}

/// A TSV (source, target) or JSONL (`source_column`, `target_column`) file.
fn read_two_columns(path: &Path, data: &TranslationDataArgs) -> Result<hone_data::ParallelText> {
    let jsonl = path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json");
    let mut pairs = Vec::new();
    let mut skipped = 0;
    for (i, line) in hone_data::read_lines(path)?.into_iter().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let (s, t) = match jsonl {
            true => {
                let row: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("{}: not a JSON object", at()))?;
                let field = |k: &str| {
                    row.get(k)
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .with_context(|| format!("{}: no string field `{k}`", at()))
                };
                (field(&data.source_column)?, field(&data.target_column)?)
            }
            false => match line.split('\t').collect::<Vec<_>>()[..] {
                [s, t] => (s.to_string(), t.to_string()),
                ref cols => bail!("{}: {} tab-separated columns, expected 2", at(), cols.len()),
            },
        };
        if s.trim().is_empty() || t.trim().is_empty() {
            skipped += 1;
            continue;
        }
        pairs.push((s, t));
    }
    Ok(hone_data::ParallelText { pairs, skipped })
}

/// Tokenize with `</s>` at the end, cut to `max` tokens keeping the `</s>`.
fn encode(tokenizer: &TextTokenizer, text: &str, max: usize, eos: u32) -> Result<Vec<u32>> {
    let mut ids = tokenizer.encode(text, None)?.get_ids().to_vec();
    if ids.len() > max {
        ids.truncate(max.max(1) - 1);
        ids.push(eos);
    }
    Ok(ids)
}

impl TranslationData {
    /// Read and tokenize the data, get or train the tokenizer, build the model. Nothing is
    /// written.
    pub fn prepare(
        recipe: &TranslationRecipe,
        device: &Device,
    ) -> Result<(Model<dyn Seq2SeqLm>, Self)> {
        let data = &recipe.data;
        let mut train = read_split(
            data,
            (&data.train_source, &data.train_target),
            &data.train_file,
            "train",
        )?
        .context("[data] needs train_source + train_target, or train_file")?;
        let mut valid = read_split(
            data,
            (&data.validation_source, &data.validation_target),
            &data.validation_file,
            "validation",
        )?
        .context("[data] needs validation_source + validation_target, or validation_file")?;
        if let Some(n) = data.max_train_samples {
            train.truncate(n);
        }
        if let Some(n) = data.max_eval_samples {
            valid.truncate(n);
        }
        let tokenizer = recipe_tokenizer(recipe)?;
        let model = recipe_model(recipe, &tokenizer, device)?;
        let mut prepared = Self::new(
            &*model.net,
            tokenizer,
            &train,
            valid,
            (data.max_source_length, data.max_target_length),
            &recipe.generation,
            recipe.training.per_device_eval_batch_size,
        )?;
        prepared.label_smoothing = data.label_smoothing;
        tracing::info!(
            "translation: {} training pairs, {} validation pairs",
            prepared.train.len(),
            prepared.valid.len()
        );
        Ok((model, prepared))
    }

    /// Data for `net`: `train` and `valid` pairs tokenized with `tokenizer`, each side cut
    /// to `max_lengths` (source, target) tokens.
    pub fn new(
        net: &dyn Seq2SeqLm,
        tokenizer: TextTokenizer,
        train: &[(String, String)],
        valid: Vec<(String, String)>,
        max_lengths: (usize, usize),
        generation: &GenerationArgs,
        eval_batch_size: usize,
    ) -> Result<Self> {
        let tokens = net.tokens();
        let positions = net.max_positions();
        let (max_src, max_tgt) = (max_lengths.0.min(positions), max_lengths.1.min(positions));
        let tokenize = |pairs: &[(String, String)]| -> Result<Vec<Pair>> {
            pairs
                .iter()
                .map(|(s, t)| {
                    Ok(Pair {
                        source: encode(&tokenizer, s, max_src, tokens.eos)?,
                        target: encode(&tokenizer, t, max_tgt, tokens.eos)?,
                    })
                })
                .collect()
        };
        Ok(Self {
            train: tokenize(train)?,
            valid: tokenize(&valid)?,
            valid_references: valid.into_iter().map(|(_, t)| t).collect(),
            label_smoothing: 0.0,
            generation: TranslationConfig {
                num_beams: generation.num_beams,
                max_new_tokens: generation.max_new_tokens.min(positions - 1),
                length_penalty: generation.length_penalty,
                early_stopping: true,
                use_cache: true,
            },
            tokens,
            eval_batch_size: eval_batch_size.max(1),
            device: net.device().clone(),
            tokenizer,
        })
    }

    /// `(input_ids, attention_mask, decoder_input_ids, labels)` of `pairs`: sources padded
    /// with pad; labels padded with -100; decoder inputs the labels shifted right behind the
    /// decoder start token (Transformers' `shift_tokens_right`).
    fn batch(&self, net: &dyn Seq2SeqLm, pairs: &[&Pair]) -> Result<[Tensor; 4]> {
        let tokens = net.tokens();
        let sources: Vec<&[u32]> = pairs.iter().map(|p| p.source.as_slice()).collect();
        let src = pad_ids(&sources, &[], tokens.pad, &self.device)?;
        let t = pairs.iter().map(|p| p.target.len()).max().unwrap_or(1);
        let mut labels = vec![-100i64; pairs.len() * t];
        let mut decoder_inputs = vec![tokens.pad; pairs.len() * t];
        for (row, p) in pairs.iter().enumerate() {
            decoder_inputs[row * t] = tokens.decoder_start;
            for (j, &id) in p.target.iter().enumerate() {
                labels[row * t + j] = id as i64;
                if j + 1 < t {
                    decoder_inputs[row * t + j + 1] = id;
                }
            }
        }
        let shape = (pairs.len(), t);
        Ok([
            src.input_ids,
            src.attention_mask,
            Tensor::from_vec(decoder_inputs, shape, &self.device)?,
            Tensor::from_vec(labels, shape, &self.device)?,
        ])
    }

    /// The validation pairs in evaluation batches, the first `max_batches` of them if given.
    fn validation_batches(&self, max_batches: Option<usize>) -> impl Iterator<Item = &[Pair]> {
        self.valid
            .chunks(self.eval_batch_size.max(1))
            .take(max_batches.unwrap_or(usize::MAX))
    }

    /// Teacher-forced cross-entropy of `chunk` summed over its target tokens, and their
    /// count.
    fn chunk_loss(&self, net: &dyn Seq2SeqLm, chunk: &[Pair]) -> Result<(f64, f64)> {
        let pairs: Vec<&Pair> = chunk.iter().collect();
        let [ids, mask, decoder_ids, labels] = self.batch(net, &pairs)?;
        let logits = net.forward(&ids, &mask, &decoder_ids)?;
        let n: usize = chunk.iter().map(|p| p.target.len()).sum();
        let loss = net.loss(&logits, &labels, 0.0)?.to_scalar::<f32>()? as f64;
        Ok((loss * n as f64, n as f64))
    }

    /// The recipe's decoding of `chunk`'s sources: token ids per sentence.
    fn chunk_translations(&self, net: &dyn Seq2SeqLm, chunk: &[Pair]) -> Result<Vec<Vec<u32>>> {
        let sources: Vec<&[u32]> = chunk.iter().map(|p| p.source.as_slice()).collect();
        let batch = pad_ids(&sources, &[], net.tokens().pad, &self.device)?;
        let hyps = generate_seq2seq(
            net,
            &batch.input_ids,
            &batch.attention_mask,
            &self.generation,
        )?;
        Ok(hyps.into_iter().map(|h| h.ids).collect())
    }

    /// Loss, perplexity, BLEU and chrF of the first `hyps.len()` validation sentences.
    fn metrics_of(&self, loss: f64, hyps: Vec<String>) -> Result<Metrics> {
        let refs = vec![self.valid_references[..hyps.len()].to_vec()];
        let bleu = Bleu::new(BleuConfig::default()).corpus_score(&hyps, &refs)?;
        let chrf = Chrf::default().corpus_score(&hyps, &refs)?;
        for (hyp, reference) in hyps.iter().zip(&refs[0]).take(3) {
            tracing::info!("sample: {hyp:?} (reference {reference:?})");
        }
        Ok(Metrics::from([
            ("loss".to_string(), loss),
            (
                "perplexity".to_string(),
                hone_metrics::perplexity::perplexity(loss),
            ),
            ("bleu".to_string(), bleu.score),
            ("chrf".to_string(), chrf.score),
        ]))
    }

    /// Decode every validation source (or the first batches) with the recipe's settings.
    pub fn translate_validation(
        &self,
        net: &dyn Seq2SeqLm,
        max_batches: Option<usize>,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for chunk in self.validation_batches(max_batches) {
            for ids in self.chunk_translations(net, chunk)? {
                out.push(self.tokenizer.decode(&ids, true)?);
            }
        }
        Ok(out)
    }
}

/// The recipe's tokenizer: given, the checkpoint's, or trained jointly on both sides.
fn recipe_tokenizer(recipe: &TranslationRecipe) -> Result<TextTokenizer> {
    let (m, d) = (&recipe.model, &recipe.data);
    match (&m.tokenizer, &m.model_name_or_path) {
        (Some(t), _) => TextTokenizer::from_file(t),
        (None, Some(dir)) => TextTokenizer::from_dir(dir),
        (None, None) => {
            let files: Vec<PathBuf> = [&d.train_source, &d.train_target, &d.train_file]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            // A JSONL file would teach the tokenizer its keys: train on parallel text only.
            if d.train_file.is_some() {
                bail!("[model] a tokenizer is trained on train_source/train_target files; with train_file give [model] tokenizer")
            }
            train_tokenizer(
                TokenizerKind::SentencePieceBpe,
                &files,
                m.tokenizer_vocab_size,
                vec![],
                0,
                false,
            )
        }
    }
}

/// The recipe's model: a Marian checkpoint (with a new LoRA adapter under `[peft]`), or a
/// fresh one from `[model.config]` with the tokenizer's vocabulary and special ids.
fn recipe_model(
    recipe: &TranslationRecipe,
    tokenizer: &TextTokenizer,
    device: &Device,
) -> Result<Model<dyn Seq2SeqLm>> {
    let seed = recipe.training.seed;
    if let Some(dir) = &recipe.model.model_name_or_path {
        let model_dir = ModelDir::open(dir)?;
        return match &recipe.peft {
            Some(peft) => {
                let lora = peft.lora_config(&*model_dir.config.arch, dir);
                Model::load_with_new_adapter(&model_dir, Head::Seq2SeqLm, lora, device, seed)
            }
            None => Model::load_for(&model_dir, Head::Seq2SeqLm, device, seed),
        };
    }
    if recipe.peft.is_some() {
        bail!("[peft] needs a pretrained model_name_or_path: adapters on a fresh model would train on random weights")
    }
    let id = |t: &str| {
        tokenizer.token_to_id(t).with_context(|| {
            format!("the tokenizer has no {t} token (a translation model needs <pad> and </s>)")
        })
    };
    // Vaswani et al.'s base model; `[model.config]` overrides any key.
    let sizes = MarianSizes {
        d_model: 512,
        layers: 6,
        heads: 8,
        ffn_dim: 2048,
        max_positions: 256,
        dropout: 0.1,
    };
    let base = MarianConfig::new(sizes, tokenizer.vocab_size(), id("<pad>")?, id("</s>")?);
    let mut json = serde_json::to_value(&base)?;
    if let Some(table) = &recipe.model.config {
        for (k, v) in table {
            json[k] = serde_json::to_value(v)?;
        }
    }
    json["model_type"] = "marian".into();
    let config = ModelConfig::parse(&json.to_string()).context("invalid [model.config]")?;
    Model::from_scratch(config, Head::Seq2SeqLm, device, seed)
}

impl TrainingData for TranslationData {
    type Net = dyn Seq2SeqLm;

    fn num_train_examples(&self) -> usize {
        self.train.len()
    }

    /// The longer side: a batch's padded size is rows x this.
    fn train_example_length(&self, i: usize) -> usize {
        self.train[i].source.len().max(self.train[i].target.len())
    }

    /// The loss is a mean over target tokens.
    fn loss_weight(&self, indices: &[usize]) -> f64 {
        indices
            .iter()
            .map(|&i| self.train[i].target.len())
            .sum::<usize>() as f64
    }

    fn training_loss(&self, net: &Self::Net, indices: &[usize]) -> Result<Tensor> {
        let pairs: Vec<&Pair> = indices.iter().map(|&i| &self.train[i]).collect();
        let [ids, mask, decoder_ids, labels] = self.batch(net, &pairs)?;
        let logits = net.forward(&ids, &mask, &decoder_ids)?;
        Ok(net.loss(&logits, &labels, self.label_smoothing)?)
    }

    /// Loss and perplexity (plain cross-entropy per target token), and BLEU (sacrebleu's 13a)
    /// and chrF2 of the decoded validation sentences against their references.
    fn evaluate(&self, net: &Self::Net, max_batches: Option<usize>) -> Result<Metrics> {
        let (mut loss_sum, mut tokens) = (0.0, 0.0);
        let mut hyps = Vec::new();
        for chunk in self.validation_batches(max_batches) {
            let (l, n) = self.chunk_loss(net, chunk)?;
            (loss_sum, tokens) = (loss_sum + l, tokens + n);
            for ids in self.chunk_translations(net, chunk)? {
                hyps.push(self.tokenizer.decode(&ids, true)?);
            }
        }
        self.metrics_of(loss_sum / tokens.max(1.0), hyps)
    }

    /// Rank r scores and decodes every `world_size`-th validation batch; the loss sums and
    /// the hypotheses' token ids (zeros where a rank did not decode) are summed across
    /// ranks, so every rank scores the whole set. Decoding dominates an evaluation.
    fn evaluate_sharded(
        &self,
        net: &Self::Net,
        max_batches: Option<usize>,
        comm: &dyn Communicator,
    ) -> Result<Metrics> {
        if distributed::alone(comm) {
            return self.evaluate(net, max_batches);
        }
        let batches: Vec<&[Pair]> = self.validation_batches(max_batches).collect();
        let n: usize = batches.iter().map(|b| b.len()).sum();
        // Per sentence: its length, then up to `width - 1` ids (a hypothesis has at most
        // max_new_tokens ids and the forced end). Then the loss sum and the token count.
        let width = self.generation.max_new_tokens + 3;
        let mut flat = vec![0f64; n * width + 2];
        let mut first = 0;
        for (b, chunk) in batches.iter().enumerate() {
            if b % comm.world_size() == comm.rank() {
                let (l, t) = self.chunk_loss(net, chunk)?;
                flat[n * width] += l;
                flat[n * width + 1] += t;
                for (k, ids) in self.chunk_translations(net, chunk)?.into_iter().enumerate() {
                    let row = &mut flat[(first + k) * width..(first + k + 1) * width];
                    if ids.len() >= width {
                        bail!(
                            "a hypothesis of {} tokens is longer than max_new_tokens allows",
                            ids.len()
                        )
                    }
                    row[0] = ids.len() as f64;
                    for (slot, &id) in row[1..].iter_mut().zip(&ids) {
                        *slot = id as f64;
                    }
                }
            }
            first += chunk.len();
        }
        distributed::all_reduce_f64(comm, &mut flat)?;
        let hyps = (0..n)
            .map(|i| {
                let row = &flat[i * width..(i + 1) * width];
                let ids: Vec<u32> = row[1..1 + row[0] as usize]
                    .iter()
                    .map(|&x| x as u32)
                    .collect();
                self.tokenizer.decode(&ids, true)
            })
            .collect::<Result<Vec<_>>>()?;
        self.metrics_of(flat[n * width] / flat[n * width + 1].max(1.0), hyps)
    }

    /// The tokenizer, and a generation_config.json with the recipe's decoding settings and
    /// the special ids (Transformers' `generate` reads them there, not from config.json,
    /// once the file exists).
    fn save_extras(&self, dir: &Path) -> Result<()> {
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        let (g, t) = (&self.generation, &self.tokens);
        crate::io::write_json(
            &dir.join("generation_config.json"),
            &serde_json::json!({
                "num_beams": g.num_beams,
                "max_length": g.max_new_tokens + 1,
                "length_penalty": g.length_penalty,
                "early_stopping": g.early_stopping,
                "decoder_start_token_id": t.decoder_start,
                "eos_token_id": t.eos,
                "pad_token_id": t.pad,
                "forced_eos_token_id": t.forced_eos,
            }),
        )
    }
}
