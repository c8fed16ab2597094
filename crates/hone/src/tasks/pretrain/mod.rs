//! Self-supervised pretraining: masked LM (+ next-sentence prediction) for encoders and
//! causal LM for decoders, on plain-text corpora.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::loading::{ModelDir, Task};
use crate::model::{LoadedModel, ModelConfig, TaskModel};
use crate::tokenization::{pad_ids, TextTokenizer};
use crate::training::{TrainingArguments, TrainingTask};

/// The self-supervised objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Objective {
    /// Causal language modelling (GPT-2).
    #[default]
    #[serde(rename = "clm")]
    Clm,
    /// Masked language modelling (BERT without NSP).
    #[serde(rename = "mlm")]
    Mlm,
    /// Masked LM plus next-sentence prediction (BERT).
    #[serde(rename = "mlm+nsp")]
    MlmNsp,
}

/// How causal-LM training windows are drawn from the token stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Consecutive non-overlapping blocks of `block_size` tokens.
    #[default]
    Packed,
    /// Every start offset is an example (nanoGPT's random windows, drawn without
    /// replacement within an epoch).
    RandomWindows,
}

/// The `[model]` section of a pretraining recipe: continue from a checkpoint, or build a
/// fresh model from `config` (Hugging Face config.json keys) with `tokenizer`'s vocabulary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainModelArgs {
    pub model_name_or_path: Option<PathBuf>,
    /// A tokenizer.json; when absent, a character-level tokenizer is trained on the
    /// training files (nanoGPT's Shakespeare setting).
    pub tokenizer: Option<PathBuf>,
    /// Fresh-model configuration, e.g. { model_type = "gpt2", n_layer = 4, ... }.
    pub config: Option<toml::Table>,
    /// Without a tokenizer, masked LM trains a WordPiece vocabulary of this size on the
    /// training files.
    pub tokenizer_vocab_size: usize,
}

impl Default for PretrainModelArgs {
    fn default() -> Self {
        Self {
            model_name_or_path: None,
            tokenizer: None,
            config: None,
            tokenizer_vocab_size: 8000,
        }
    }
}

/// The `[data]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainDataArgs {
    pub train_files: Vec<PathBuf>,
    pub validation_files: Vec<PathBuf>,
    /// Without validation files: the last fraction of the training text (nanoGPT: 0.1).
    pub validation_split: f64,
    /// Causal LM block length / encoder max length.
    pub block_size: usize,
    pub sampling: Sampling,
    /// Documents: "blank_line" separated, or "one_per_file".
    pub document_mode: String,
    pub mlm_probability: f64,
    pub whole_word_mask: bool,
    /// Share of NSP pairs whose second segment comes from another document.
    pub nsp_probability: f64,
    /// Use at most this many characters of the corpus (quick runs).
    pub max_train_chars: Option<usize>,
}

impl Default for PretrainDataArgs {
    fn default() -> Self {
        Self {
            train_files: vec![],
            validation_files: vec![],
            validation_split: 0.1,
            block_size: 128,
            sampling: Sampling::Packed,
            document_mode: "blank_line".into(),
            mlm_probability: 0.15,
            whole_word_mask: false,
            nsp_probability: 0.5,
            max_train_chars: None,
        }
    }
}

/// A whole pretraining recipe.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainRecipe {
    pub objective: Objective,
    pub model: PretrainModelArgs,
    pub data: PretrainDataArgs,
    pub training: TrainingArguments,
}

/// An MLM(+NSP) training instance: `[CLS] A [SEP] (B [SEP])`.
#[derive(Debug, Clone)]
pub struct Instance {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// 1 when B was drawn from another document (HF: label 1 = "random").
    pub nsp_label: i64,
}

/// Token ids for the special tokens the MLM collator needs.
#[derive(Debug, Clone)]
pub struct MaskingSpec {
    pub mask_id: u32,
    pub vocab_size: u32,
    /// Ids never selected for masking (CLS, SEP, PAD, ...).
    pub special_ids: Vec<u32>,
    pub probability: f64,
    /// For whole-word masking: ids of pieces that continue a word (`##...`).
    pub continuation_ids: Option<std::collections::HashSet<u32>>,
}

/// BERT's masking: select `probability` of the non-special tokens (whole words when
/// `continuation_ids` is set); of those, 80% become `[MASK]`, 10% a random token, 10% stay.
/// Returns the corrupted ids and the labels (-100 where not selected).
pub fn mask_tokens(ids: &[u32], spec: &MaskingSpec, rng: &mut impl Rng) -> (Vec<u32>, Vec<i64>) {
    let mut selected = vec![false; ids.len()];
    let is_special = |id: &u32| spec.special_ids.contains(id);
    match &spec.continuation_ids {
        None => {
            for (s, id) in selected.iter_mut().zip(ids) {
                *s = !is_special(id) && rng.gen::<f64>() < spec.probability;
            }
        }
        Some(cont) => {
            let mut i = 0;
            while i < ids.len() {
                let mut j = i + 1;
                while j < ids.len() && cont.contains(&ids[j]) {
                    j += 1;
                }
                if !is_special(&ids[i]) && rng.gen::<f64>() < spec.probability {
                    selected[i..j].fill(true);
                }
                i = j;
            }
        }
    }
    let mut out = ids.to_vec();
    let mut labels = vec![-100i64; ids.len()];
    for (i, sel) in selected.into_iter().enumerate() {
        if !sel {
            continue;
        }
        labels[i] = ids[i] as i64;
        let r: f64 = rng.gen();
        if r < 0.8 {
            out[i] = spec.mask_id;
        } else if r < 0.9 {
            out[i] = rng.gen_range(0..spec.vocab_size);
        }
    }
    (out, labels)
}

/// Build NSP instances from documents (each a list of tokenized segments), packing
/// segments up to `max_tokens` (without the 3 special tokens) as Hugging Face's
/// `TextDatasetForNextSentencePrediction` does.
pub fn nsp_instances(
    docs: &[Vec<Vec<u32>>],
    max_len: usize,
    cls: u32,
    sep: u32,
    nsp_probability: f64,
    with_b: bool,
    rng: &mut impl Rng,
) -> Vec<Instance> {
    let budget = max_len.saturating_sub(if with_b { 3 } else { 2 }).max(2);
    let mut out = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let mut chunk: Vec<&Vec<u32>> = Vec::new();
        let mut len = 0;
        let mut i = 0;
        while i < doc.len() {
            chunk.push(&doc[i]);
            len += doc[i].len();
            let last = i + 1 == doc.len();
            if (last || len >= budget) && !chunk.is_empty() {
                let mut a: Vec<u32>;
                let mut b: Vec<u32> = vec![];
                let mut nsp_label = 0;
                if !with_b {
                    a = chunk.iter().flat_map(|s| s.iter().copied()).collect();
                } else {
                    let a_end = if chunk.len() >= 2 {
                        rng.gen_range(1..chunk.len())
                    } else {
                        1
                    };
                    a = chunk[..a_end]
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect();
                    let random_b =
                        chunk.len() == 1 || (docs.len() > 1 && rng.gen::<f64>() < nsp_probability);
                    if random_b && docs.len() > 1 {
                        nsp_label = 1;
                        let mut other = rng.gen_range(0..docs.len());
                        while other == d {
                            other = rng.gen_range(0..docs.len());
                        }
                        let od = &docs[other];
                        let start = rng.gen_range(0..od.len());
                        for seg in &od[start..] {
                            if b.len() >= budget.saturating_sub(a.len()) {
                                break;
                            }
                            b.extend(seg);
                        }
                        // The unused segments of this chunk go back into the stream.
                        i -= chunk.len() - a_end;
                    } else {
                        b = chunk[a_end..]
                            .iter()
                            .flat_map(|s| s.iter().copied())
                            .collect();
                    }
                }
                // Truncate the longer side until the pair fits (BERT's truncate_seq_pair).
                while a.len() + b.len() > budget {
                    if a.len() > b.len() {
                        a.pop();
                    } else {
                        b.pop();
                    }
                }
                if !a.is_empty() && (!with_b || !b.is_empty()) {
                    let mut ids = vec![cls];
                    ids.extend(&a);
                    ids.push(sep);
                    let mut type_ids = vec![0u32; ids.len()];
                    if with_b {
                        ids.extend(&b);
                        ids.push(sep);
                        type_ids.resize(ids.len(), 1);
                    }
                    out.push(Instance {
                        ids,
                        type_ids,
                        nsp_label,
                    });
                }
                chunk.clear();
                len = 0;
            }
            i += 1;
        }
    }
    out
}

/// Training data and objective for [`crate::training::Trainer`].
pub struct PretrainTask {
    pub objective: Objective,
    pub tokenizer: TextTokenizer,
    /// Causal LM: the token streams.
    train_stream: Vec<u32>,
    valid_stream: Vec<u32>,
    block_size: usize,
    sampling: Sampling,
    /// MLM: prebuilt instances.
    train_instances: Vec<Instance>,
    valid_instances: Vec<Instance>,
    masking: Option<MaskingSpec>,
    seed: u64,
    eval_batch_size: usize,
    device: Device,
}

fn read_text(files: &[PathBuf]) -> Result<String> {
    let mut text = String::new();
    for f in files {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {} as UTF-8 text", f.display()))?;
        text.push_str(&t);
    }
    Ok(text)
}

/// Documents (lists of non-empty lines) from the corpus files.
fn read_documents(files: &[PathBuf], mode: &str) -> Result<Vec<Vec<String>>> {
    let mode = match mode {
        "blank_line" => hone_data::DocumentMode::BlankLineSeparated,
        "one_per_file" => hone_data::DocumentMode::OnePerFile,
        other => bail!("unknown document_mode `{other}` (blank_line, one_per_file)"),
    };
    hone_data::DocumentReader::new(files.iter().cloned(), mode)
        .map(|d| d.map(|d| d.lines).map_err(Into::into))
        .collect()
}

impl PretrainTask {
    /// Read the corpus, get or train the tokenizer, and build the model (fresh or from a
    /// checkpoint). Nothing is written.
    pub fn prepare(recipe: &PretrainRecipe, device: &Device) -> Result<(LoadedModel, Self)> {
        let data = &recipe.data;
        if data.train_files.is_empty() {
            bail!("[data] train_files is empty")
        }
        let seed = recipe.training.seed;
        let tokenizer = match (&recipe.model.tokenizer, &recipe.model.model_name_or_path) {
            (Some(t), _) => TextTokenizer::from_file(t)?,
            (None, Some(dir)) => TextTokenizer::from_dir(dir)?,
            (None, None) => {
                use crate::tokenization::train::{train_tokenizer, TokenizerKind};
                let (kind, size, specials, lowercase) = match recipe.objective {
                    // nanoGPT's Shakespeare setting: one token per character, every one kept.
                    Objective::Clm => (TokenizerKind::Char, 1 << 20, vec![], false),
                    _ => (
                        TokenizerKind::WordPiece,
                        recipe.model.tokenizer_vocab_size,
                        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                            .map(String::from)
                            .to_vec(),
                        true,
                    ),
                };
                train_tokenizer(kind, &data.train_files, size, specials, 0, lowercase)?
            }
        };
        let vocab_size = tokenizer.vocab_size();
        let task = match recipe.objective {
            Objective::Clm => Task::CausalLm,
            Objective::Mlm => Task::PreTraining { nsp: false },
            Objective::MlmNsp => Task::PreTraining { nsp: true },
        };
        let model = match &recipe.model.model_name_or_path {
            Some(dir) => {
                LoadedModel::load_for_task(&ModelDir::open(dir)?, task.clone(), device, seed)?
            }
            None => {
                let mut cfg = recipe
                    .model
                    .config
                    .clone()
                    .context("[model] needs model_name_or_path or config")?;
                cfg.entry("vocab_size")
                    .or_insert(toml::Value::Integer(vocab_size as i64));
                let json = serde_json::to_string(&cfg)?;
                let config = ModelConfig::parse(&json).context("invalid [model.config]")?;
                LoadedModel::from_scratch(config, task.clone(), device, seed)?
            }
        };
        let mut me = Self {
            objective: recipe.objective,
            tokenizer,
            train_stream: vec![],
            valid_stream: vec![],
            block_size: data.block_size,
            sampling: data.sampling,
            train_instances: vec![],
            valid_instances: vec![],
            masking: None,
            seed,
            eval_batch_size: recipe.training.per_device_eval_batch_size,
            device: device.clone(),
        };
        match recipe.objective {
            Objective::Clm => me.prepare_clm(data)?,
            Objective::Mlm | Objective::MlmNsp => {
                me.prepare_mlm(data, recipe.objective == Objective::MlmNsp)?
            }
        }
        Ok((model, me))
    }

    fn encode_ids(&self, text: &str) -> Result<Vec<u32>> {
        let mut tok = self.tokenizer.clone();
        tok.set_max_length(None)?;
        // Encode line by line in parallel: one huge encode call is slow and memory-hungry.
        let pieces: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
        let encodings = {
            let inputs: Vec<(String, Option<String>)> =
                pieces.into_iter().map(|p| (p, None)).collect();
            let enc = tok.inner().clone();
            use rayon::prelude::*;
            inputs
                .par_iter()
                .map(|(t, _)| enc.encode(t.as_str(), false).map(|e| e.get_ids().to_vec()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("cannot tokenize the corpus: {e}"))?
        };
        Ok(encodings.into_iter().flatten().collect())
    }

    fn prepare_clm(&mut self, data: &PretrainDataArgs) -> Result<()> {
        let mut text = read_text(&data.train_files)?;
        if let Some(n) = data.max_train_chars {
            text = text.chars().take(n).collect();
        }
        let ids = self.encode_ids(&text)?;
        if data.validation_files.is_empty() {
            let n_train = ((1.0 - data.validation_split) * ids.len() as f64) as usize;
            self.valid_stream = ids[n_train..].to_vec();
            self.train_stream = ids[..n_train].to_vec();
        } else {
            self.train_stream = ids;
            self.valid_stream = self.encode_ids(&read_text(&data.validation_files)?)?;
        }
        if self.train_stream.len() <= self.block_size + 1 {
            bail!(
                "the training text has {} tokens, fewer than block_size {} + 1",
                self.train_stream.len(),
                self.block_size
            )
        }
        tracing::info!(
            "causal LM: {} train tokens, {} validation tokens",
            self.train_stream.len(),
            self.valid_stream.len()
        );
        Ok(())
    }

    fn prepare_mlm(&mut self, data: &PretrainDataArgs, nsp: bool) -> Result<()> {
        let tok = &self.tokenizer;
        let id = |t: &str| {
            tok.token_to_id(t)
                .with_context(|| format!("the tokenizer has no {t} token"))
        };
        let (cls, sep, mask) = (id("[CLS]")?, id("[SEP]")?, id("[MASK]")?);
        let mut specials = vec![cls, sep, mask];
        specials.extend(tok.token_to_id("[PAD]"));
        specials.extend(tok.token_to_id("[UNK]"));
        let continuation_ids = data.whole_word_mask.then(|| {
            tok.inner()
                .get_vocab(true)
                .into_iter()
                .filter(|(t, _)| t.starts_with("##"))
                .map(|(_, i)| i)
                .collect()
        });
        self.masking = Some(MaskingSpec {
            mask_id: mask,
            vocab_size: tok.vocab_size() as u32,
            special_ids: specials,
            probability: data.mlm_probability,
            continuation_ids,
        });
        let encode_docs = |docs: Vec<Vec<String>>| -> Result<Vec<Vec<Vec<u32>>>> {
            let mut t = self.tokenizer.clone();
            t.set_max_length(None)?;
            docs.into_iter()
                .map(|lines| {
                    lines
                        .iter()
                        .map(|l| {
                            t.inner()
                                .encode(l.as_str(), false)
                                .map(|e| e.get_ids().to_vec())
                                .map_err(|e| anyhow::anyhow!("cannot tokenize: {e}"))
                        })
                        .collect()
                })
                .collect()
        };
        let mut docs = read_documents(&data.train_files, &data.document_mode)?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let valid_docs = if data.validation_files.is_empty() {
            let n_valid = ((docs.len() as f64) * data.validation_split).ceil() as usize;
            docs.split_off(docs.len() - n_valid.min(docs.len().saturating_sub(1)))
        } else {
            read_documents(&data.validation_files, &data.document_mode)?
        };
        let (train, valid) = (encode_docs(docs)?, encode_docs(valid_docs)?);
        self.train_instances = nsp_instances(
            &train,
            self.block_size,
            cls,
            sep,
            data.nsp_probability,
            nsp,
            &mut rng,
        );
        self.valid_instances = nsp_instances(
            &valid,
            self.block_size,
            cls,
            sep,
            data.nsp_probability,
            nsp,
            &mut rng,
        );
        if self.train_instances.is_empty() {
            bail!("no training instances could be built from the corpus")
        }
        tracing::info!(
            "masked LM: {} train and {} validation instances",
            self.train_instances.len(),
            self.valid_instances.len()
        );
        Ok(())
    }

    /// Window starts of the `i`-th training example.
    fn clm_start(&self, i: usize) -> usize {
        match self.sampling {
            Sampling::Packed => i * self.block_size,
            Sampling::RandomWindows => i,
        }
    }

    fn clm_loss(&self, model: &LoadedModel, stream: &[u32], starts: &[usize]) -> Result<Tensor> {
        let TaskModel::CausalLm(gpt) = &model.model else {
            bail!("causal LM needs a GPT-2 model")
        };
        // Windows of block_size + 1 tokens: inputs and their next tokens.
        let ids = {
            let rows: Vec<u32> = starts
                .iter()
                .flat_map(|&s| stream[s..s + self.block_size + 1].iter().copied())
                .collect();
            Tensor::from_vec(rows, (starts.len(), self.block_size + 1), &self.device)?
        };
        let inputs = ids.narrow(1, 0, self.block_size)?;
        let targets = ids.narrow(1, 1, self.block_size)?;
        let logits = gpt.forward(&inputs, None, None)?;
        let (b, t, v) = logits.dims3()?;
        let opts = crate::ops::CrossEntropyOptions::default();
        Ok(crate::ops::cross_entropy(
            &logits.reshape((b * t, v))?,
            &targets.flatten_all()?.to_dtype(candle_core::DType::I64)?,
            &opts,
        )?)
    }

    fn mlm_loss(
        &self,
        model: &LoadedModel,
        instances: &[&Instance],
        rng: &mut ChaCha8Rng,
    ) -> Result<Tensor> {
        let TaskModel::PreTraining(bert) = &model.model else {
            bail!("masked LM needs a BERT pretraining model")
        };
        let spec = self.masking.as_ref().expect("masked LM prepared");
        let mut ids = Vec::new();
        let mut labels = Vec::new();
        for inst in instances {
            let (m, l) = mask_tokens(&inst.ids, spec, rng);
            ids.push(m);
            labels.push(l);
        }
        let id_refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let type_refs: Vec<&[u32]> = instances.iter().map(|i| i.type_ids.as_slice()).collect();
        let batch = pad_ids(&id_refs, &type_refs, self.tokenizer.pad_id(), &self.device)?;
        let t = batch.input_ids.dim(1)?;
        let label_rows: Vec<i64> = labels
            .iter()
            .flat_map(|l| {
                l.iter()
                    .copied()
                    .chain(std::iter::repeat_n(-100, t - l.len()))
            })
            .collect();
        let labels = Tensor::from_vec(label_rows, (instances.len(), t), &self.device)?;
        let out = bert.forward(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
        )?;
        let nsp = match self.objective {
            Objective::MlmNsp => Some(Tensor::new(
                instances.iter().map(|i| i.nsp_label).collect::<Vec<_>>(),
                &self.device,
            )?),
            _ => None,
        };
        Ok(bert.loss(&out, &labels, nsp.as_ref())?)
    }

    /// A masking RNG that depends only on the seed and the batch, so a resumed run masks
    /// exactly as the uninterrupted one did.
    fn batch_rng(&self, indices: &[usize]) -> ChaCha8Rng {
        let mut h: u64 = self.seed ^ 0xA076_1D64_78BD_642F;
        for &i in indices {
            h = (h ^ i as u64).wrapping_mul(0x100_0000_01B3).rotate_left(17);
        }
        ChaCha8Rng::seed_from_u64(h)
    }
}

impl TrainingTask for PretrainTask {
    fn num_train_examples(&self) -> usize {
        match self.objective {
            Objective::Clm => match self.sampling {
                Sampling::Packed => (self.train_stream.len() - 1) / self.block_size,
                Sampling::RandomWindows => self.train_stream.len() - self.block_size - 1,
            },
            _ => self.train_instances.len(),
        }
    }

    fn train_example_length(&self, i: usize) -> usize {
        match self.objective {
            Objective::Clm => self.block_size,
            _ => self.train_instances[i].ids.len(),
        }
    }

    fn training_loss(&self, model: &LoadedModel, indices: &[usize]) -> Result<Tensor> {
        match self.objective {
            Objective::Clm => {
                let starts: Vec<usize> = indices.iter().map(|&i| self.clm_start(i)).collect();
                self.clm_loss(model, &self.train_stream, &starts)
            }
            _ => {
                let inst: Vec<&Instance> =
                    indices.iter().map(|&i| &self.train_instances[i]).collect();
                self.mlm_loss(model, &inst, &mut self.batch_rng(indices))
            }
        }
    }

    fn evaluate(
        &self,
        model: &LoadedModel,
        max_batches: Option<usize>,
    ) -> Result<BTreeMap<String, f64>> {
        let bs = self.eval_batch_size.max(1);
        let (mut sum, mut n) = (0f64, 0usize);
        match self.objective {
            Objective::Clm => {
                let blocks = self.valid_stream.len().saturating_sub(1) / self.block_size;
                if blocks == 0 {
                    bail!(
                        "the validation text is shorter than one block of {} tokens",
                        self.block_size
                    )
                }
                let starts: Vec<usize> = (0..blocks).map(|b| b * self.block_size).collect();
                for (bi, chunk) in starts.chunks(bs).enumerate() {
                    if max_batches.is_some_and(|m| bi >= m) {
                        break;
                    }
                    let loss: f32 = self
                        .clm_loss(model, &self.valid_stream, chunk)?
                        .to_scalar()?;
                    sum += loss as f64 * chunk.len() as f64;
                    n += chunk.len();
                }
            }
            _ => {
                // Fixed masks for evaluation, so evaluations are comparable.
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(1));
                let inst: Vec<&Instance> = self.valid_instances.iter().collect();
                for (bi, chunk) in inst.chunks(bs).enumerate() {
                    if max_batches.is_some_and(|m| bi >= m) {
                        break;
                    }
                    let loss: f32 = self.mlm_loss(model, chunk, &mut rng)?.to_scalar()?;
                    sum += loss as f64 * chunk.len() as f64;
                    n += chunk.len();
                }
            }
        }
        let loss = sum / n.max(1) as f64;
        let mut m = BTreeMap::new();
        m.insert("loss".into(), loss);
        m.insert(
            "perplexity".into(),
            hone_metrics::perplexity::perplexity(loss),
        );
        Ok(m)
    }

    fn save_extras(&self, dir: &Path) -> Result<()> {
        self.tokenizer.save(&dir.join("tokenizer.json"))
    }
}

#[cfg(test)]
mod tests;
