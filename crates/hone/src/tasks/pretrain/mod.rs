//! Self-supervised pretraining: masked LM (+ next-sentence prediction) for encoders and
//! causal LM for decoders, on plain-text corpora.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
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
    /// How a fresh model's learned position table starts: "random" (Hugging Face's normal
    /// init) or "sinusoidal" (Vaswani et al.'s table at the same scale, still trained).
    pub position_init: PositionInit,
}

/// Starting point of a fresh model's position embeddings (`[model] position_init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionInit {
    #[default]
    Random,
    Sinusoidal,
}

impl Default for PretrainModelArgs {
    fn default() -> Self {
        Self {
            model_name_or_path: None,
            tokenizer: None,
            config: None,
            tokenizer_vocab_size: 8000,
            position_init: PositionInit::Random,
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
    /// Causal LM: write the tokenized corpus here (`train.bin`, `validation.bin`: flat
    /// little-endian u32 ids) and read training windows back from disk, so a corpus larger
    /// than memory trains. Without it the ids are kept in memory.
    pub token_cache_dir: Option<PathBuf>,
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
            token_cache_dir: None,
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

mod masking;
mod token_stream;

pub use masking::{mask_tokens, nsp_instances, Instance, MaskingSpec};
pub use token_stream::TokenStream;

/// Training data and objective for [`crate::training::Trainer`].
pub struct PretrainTask {
    pub objective: Objective,
    pub tokenizer: TextTokenizer,
    /// Causal LM: the token streams.
    train_stream: TokenStream,
    valid_stream: TokenStream,
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
                let model = LoadedModel::from_scratch(config, task.clone(), device, seed)?;
                if recipe.model.position_init == PositionInit::Sinusoidal {
                    model.init_sinusoidal_positions()?;
                }
                model
            }
        };
        let mut me = Self {
            objective: recipe.objective,
            tokenizer,
            train_stream: TokenStream::from_vec(vec![]),
            valid_stream: TokenStream::from_vec(vec![]),
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

    fn prepare_clm(&mut self, data: &PretrainDataArgs) -> Result<()> {
        let cache = |name: &str| data.token_cache_dir.as_ref().map(|d| d.join(name));
        let train_cache = cache("train.bin");
        let ids = TokenStream::tokenize(
            &self.tokenizer,
            &data.train_files,
            data.max_train_chars,
            train_cache.as_deref(),
        )?;
        if data.validation_files.is_empty() {
            // nanoGPT's split: the last fraction of the tokens validates.
            let n_train = ((1.0 - data.validation_split) * ids.len() as f64) as usize;
            (self.train_stream, self.valid_stream) = ids.split_at(n_train);
        } else {
            self.train_stream = ids;
            self.valid_stream = TokenStream::tokenize(
                &self.tokenizer,
                &data.validation_files,
                None,
                cache("validation.bin").as_deref(),
            )?;
        }
        if self.train_stream.len() <= self.block_size + 1 {
            bail!(
                "the training text has {} tokens, fewer than block_size {} + 1",
                self.train_stream.len(),
                self.block_size
            )
        }
        tracing::info!(
            "causal LM: {} train tokens, {} validation tokens{}",
            self.train_stream.len(),
            self.valid_stream.len(),
            match &train_cache {
                Some(p) => format!(" (read from {})", p.display()),
                None => String::new(),
            }
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
        let (block, p) = (self.block_size, data.nsp_probability);
        let mut instances =
            |docs: &[Vec<Vec<u32>>]| nsp_instances(docs, block, cls, sep, p, nsp, &mut rng);
        (self.train_instances, self.valid_instances) = (instances(&train), instances(&valid));
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

    fn clm_loss(
        &self,
        model: &LoadedModel,
        stream: &TokenStream,
        starts: &[usize],
    ) -> Result<Tensor> {
        let TaskModel::CausalLm(gpt) = &model.model else {
            bail!("causal LM needs a GPT-2 model")
        };
        // Windows of block_size + 1 tokens: inputs and their next tokens.
        let ids = {
            let mut rows = Vec::with_capacity(starts.len() * (self.block_size + 1));
            for &s in starts {
                rows.extend(stream.window(s, self.block_size + 1)?);
            }
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
        let nsp = match self.objective {
            Objective::MlmNsp => Some(Tensor::new(
                instances.iter().map(|i| i.nsp_label).collect::<Vec<_>>(),
                &self.device,
            )?),
            _ => None,
        };
        let (positions, targets) = crate::model::heads::masked_rows(&label_rows);
        if positions.is_empty() {
            // Nothing selected (tiny batches): the full loss says what that means.
            let labels = Tensor::from_vec(label_rows, (instances.len(), t), &self.device)?;
            let out = bert.forward(
                &batch.input_ids,
                &batch.token_type_ids,
                &batch.attention_mask,
            )?;
            return Ok(bert.loss(&out, &labels, nsp.as_ref())?);
        }
        let n = positions.len();
        Ok(bert.masked_loss(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            &Tensor::from_vec(positions, n, &self.device)?,
            &Tensor::from_vec(targets, n, &self.device)?,
            nsp.as_ref(),
        )?)
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
