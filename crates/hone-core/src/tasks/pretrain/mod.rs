//! Self-supervised pretraining: masked LM (+ next-sentence prediction) for encoders and
//! causal LM for decoders, on plain-text corpora.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use hone_data::DocumentMode;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::PeftArgs;
use crate::distributed::{self, Communicator};
use crate::model::{CausalLm, Head, MaskedLm, Model, ModelConfig, ModelDir, NetKind};
use crate::tokenization::{pad_ids, TextTokenizer};
use crate::training::{Metrics, TrainingArguments, TrainingData};

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
    /// How the corpus splits into documents (for NSP pairs and the validation split).
    pub document_mode: DocumentMode,
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
            document_mode: DocumentMode::BlankLineSeparated,
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
    /// Continue pretraining a checkpoint through a LoRA adapter.
    pub peft: Option<PeftArgs>,
}

mod masking;
mod token_stream;

pub use masking::{mask_tokens, nsp_instances, Instance, MaskingSpec};
pub use token_stream::TokenStream;

/// Causal-LM training data: token streams cut into windows.
pub struct CausalLmData {
    pub tokenizer: TextTokenizer,
    train_stream: TokenStream,
    valid_stream: TokenStream,
    block_size: usize,
    sampling: Sampling,
    eval_batch_size: usize,
    device: Device,
}

/// Masked-LM (+ NSP) training data: instances of sentence pairs, masked per batch.
pub struct MaskedLmData {
    pub tokenizer: TextTokenizer,
    nsp: bool,
    train_instances: Vec<Instance>,
    valid_instances: Vec<Instance>,
    masking: MaskingSpec,
    seed: u64,
    eval_batch_size: usize,
    device: Device,
}

/// Documents (lists of non-empty lines) from the corpus files.
fn read_documents(files: &[PathBuf], mode: DocumentMode) -> Result<Vec<Vec<String>>> {
    hone_data::DocumentReader::new(files.iter().cloned(), mode)
        .map(|d| d.map(|d| d.lines).map_err(Into::into))
        .collect()
}

/// The recipe's tokenizer: its file, the checkpoint's, or one trained on the corpus.
fn recipe_tokenizer(recipe: &PretrainRecipe) -> Result<TextTokenizer> {
    let data = &recipe.data;
    if data.train_files.is_empty() {
        bail!("[data] train_files is empty")
    }
    match (&recipe.model.tokenizer, &recipe.model.model_name_or_path) {
        (Some(t), _) => TextTokenizer::from_file(t),
        (None, Some(dir)) => TextTokenizer::from_dir(dir),
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
            train_tokenizer(kind, &data.train_files, size, specials, 0, lowercase)
        }
    }
}

/// The recipe's model with `head`: continued from a checkpoint, or built fresh from
/// `[model.config]` with the tokenizer's vocabulary.
fn recipe_model<N: NetKind + ?Sized>(
    recipe: &PretrainRecipe,
    head: Head,
    tokenizer: &TextTokenizer,
    device: &Device,
) -> Result<Model<N>> {
    let seed = recipe.training.seed;
    if let Some(dir) = &recipe.model.model_name_or_path {
        let model_dir = ModelDir::open(dir)?;
        return match &recipe.peft {
            Some(peft) => {
                let lora = peft.lora_config(&*model_dir.config.arch, dir);
                Model::load_with_new_adapter(&model_dir, head, lora, device, seed)
            }
            None => Model::load_for(&model_dir, head, device, seed),
        };
    }
    if recipe.peft.is_some() {
        bail!("[peft] needs a pretrained model_name_or_path: adapters on a fresh model would train on random weights")
    }
    let mut cfg = recipe
        .model
        .config
        .clone()
        .context("[model] needs model_name_or_path or config")?;
    cfg.entry("vocab_size")
        .or_insert(toml::Value::Integer(tokenizer.vocab_size() as i64));
    let json = serde_json::to_string(&cfg)?;
    let config = ModelConfig::parse(&json).context("invalid [model.config]")?;
    let model = Model::from_scratch(config, head, device, seed)?;
    if recipe.model.position_init == PositionInit::Sinusoidal {
        model.init_sinusoidal_positions()?;
    }
    Ok(model)
}

/// Mean loss and perplexity from a sum of per-example losses.
fn lm_metrics(sum: f64, n: usize) -> Metrics {
    let loss = sum / n.max(1) as f64;
    Metrics::from([
        ("loss".to_string(), loss),
        (
            "perplexity".to_string(),
            hone_metrics::perplexity::perplexity(loss),
        ),
    ])
}

impl CausalLmData {
    /// Read and tokenize the corpus, get or train the tokenizer, and build the model
    /// (fresh or from a checkpoint). Nothing is written but the token cache, if asked for.
    pub fn prepare(
        recipe: &PretrainRecipe,
        device: &Device,
    ) -> Result<(Model<dyn CausalLm>, Self)> {
        if recipe.objective != Objective::Clm {
            bail!("objective {:?} is not causal LM", recipe.objective)
        }
        let data = &recipe.data;
        let tokenizer = recipe_tokenizer(recipe)?;
        let model = recipe_model(recipe, Head::CausalLm, &tokenizer, device)?;
        let cache = |name: &str| data.token_cache_dir.as_ref().map(|d| d.join(name));
        let train_cache = cache("train.bin");
        let ids = TokenStream::tokenize(
            &tokenizer,
            &data.train_files,
            data.max_train_chars,
            train_cache.as_deref(),
        )?;
        let (train_stream, valid_stream) = if data.validation_files.is_empty() {
            // nanoGPT's split: the last fraction of the tokens validates.
            let n_train = ((1.0 - data.validation_split) * ids.len() as f64) as usize;
            ids.split_at(n_train)
        } else {
            let valid = TokenStream::tokenize(
                &tokenizer,
                &data.validation_files,
                None,
                cache("validation.bin").as_deref(),
            )?;
            (ids, valid)
        };
        if train_stream.len() <= data.block_size + 1 {
            bail!(
                "the training text has {} tokens, fewer than block_size {} + 1",
                train_stream.len(),
                data.block_size
            )
        }
        tracing::info!(
            "causal LM: {} train tokens, {} validation tokens{}",
            train_stream.len(),
            valid_stream.len(),
            match &train_cache {
                Some(p) => format!(" (read from {})", p.display()),
                None => String::new(),
            }
        );
        let prepared = Self {
            tokenizer,
            train_stream,
            valid_stream,
            block_size: data.block_size,
            sampling: data.sampling,
            eval_batch_size: recipe.training.per_device_eval_batch_size,
            device: device.clone(),
        };
        Ok((model, prepared))
    }

    /// Validation data alone, for scoring a trained model (`hone eval` on a causal LM):
    /// `files` tokenized with `tokenizer`, cut into packed blocks of `block_size`.
    pub fn for_evaluation(
        tokenizer: TextTokenizer,
        files: &[PathBuf],
        block_size: usize,
        eval_batch_size: usize,
        device: &Device,
    ) -> Result<Self> {
        let valid_stream = TokenStream::tokenize(&tokenizer, files, None, None)?;
        Ok(Self {
            tokenizer,
            train_stream: TokenStream::from_vec(vec![]),
            valid_stream,
            block_size,
            sampling: Sampling::Packed,
            eval_batch_size,
            device: device.clone(),
        })
    }

    /// Window start of the `i`-th training example.
    fn start(&self, i: usize) -> usize {
        match self.sampling {
            Sampling::Packed => i * self.block_size,
            Sampling::RandomWindows => i,
        }
    }

    fn loss(&self, net: &dyn CausalLm, stream: &TokenStream, starts: &[usize]) -> Result<Tensor> {
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
        let logits = net.forward(&inputs, None, None)?;
        let (b, t, v) = logits.dims3()?;
        let opts = crate::ops::CrossEntropyOptions::default();
        Ok(crate::ops::cross_entropy(
            &logits.reshape((b * t, v))?,
            &targets.flatten_all()?.to_dtype(candle_core::DType::I64)?,
            &opts,
        )?)
    }
}

impl TrainingData for CausalLmData {
    type Net = dyn CausalLm;

    fn num_train_examples(&self) -> usize {
        match self.sampling {
            Sampling::Packed => (self.train_stream.len() - 1) / self.block_size,
            Sampling::RandomWindows => self.train_stream.len() - self.block_size - 1,
        }
    }

    fn train_example_length(&self, _i: usize) -> usize {
        self.block_size
    }

    fn training_loss(&self, net: &Self::Net, indices: &[usize]) -> Result<Tensor> {
        let starts: Vec<usize> = indices.iter().map(|&i| self.start(i)).collect();
        self.loss(net, &self.train_stream, &starts)
    }

    fn evaluate(&self, net: &Self::Net, max_batches: Option<usize>) -> Result<Metrics> {
        let (sum, n) = self.validation_loss_sum(net, max_batches, (0, 1))?;
        Ok(lm_metrics(sum, n))
    }

    /// Each rank scores every `world_size`-th batch of blocks; the loss sums are reduced.
    fn evaluate_sharded(
        &self,
        net: &Self::Net,
        max_batches: Option<usize>,
        comm: &dyn Communicator,
    ) -> Result<Metrics> {
        let (sum, n) =
            self.validation_loss_sum(net, max_batches, (comm.rank(), comm.world_size()))?;
        let mut sums = [sum, n as f64];
        distributed::all_reduce_f64(comm, &mut sums)?;
        Ok(lm_metrics(sums[0], sums[1] as usize))
    }

    fn save_extras(&self, dir: &Path) -> Result<()> {
        self.tokenizer.save(&dir.join("tokenizer.json"))
    }
}

impl CausalLmData {
    /// The summed loss of the validation blocks in `shard` = (rank, ranks)'s batches, and
    /// how many blocks that is.
    fn validation_loss_sum(
        &self,
        net: &dyn CausalLm,
        max_batches: Option<usize>,
        shard: (usize, usize),
    ) -> Result<(f64, usize)> {
        let blocks = self.valid_stream.len().saturating_sub(1) / self.block_size;
        if blocks == 0 {
            bail!(
                "the validation text is shorter than one block of {} tokens",
                self.block_size
            )
        }
        let starts: Vec<usize> = (0..blocks).map(|b| b * self.block_size).collect();
        let (mut sum, mut n) = (0f64, 0usize);
        for (bi, chunk) in starts.chunks(self.eval_batch_size.max(1)).enumerate() {
            if max_batches.is_some_and(|m| bi >= m) {
                break;
            }
            // Data parallel: this rank's batches only (the sums are reduced after).
            if bi % shard.1 != shard.0 {
                continue;
            }
            let loss: f32 = self.loss(net, &self.valid_stream, chunk)?.to_scalar()?;
            sum += loss as f64 * chunk.len() as f64;
            n += chunk.len();
        }
        Ok((sum, n))
    }
}

impl MaskedLmData {
    /// Read the corpus into documents and NSP instances, get or train the tokenizer, and
    /// build the model (fresh or from a checkpoint). Nothing is written.
    pub fn prepare(
        recipe: &PretrainRecipe,
        device: &Device,
    ) -> Result<(Model<dyn MaskedLm>, Self)> {
        let nsp = match recipe.objective {
            Objective::Mlm => false,
            Objective::MlmNsp => true,
            Objective::Clm => bail!("objective clm is not masked LM"),
        };
        let data = &recipe.data;
        let tokenizer = recipe_tokenizer(recipe)?;
        let model = recipe_model(recipe, Head::MaskedLm { nsp }, &tokenizer, device)?;
        let tok = &tokenizer;
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
        let masking = MaskingSpec {
            mask_id: mask,
            vocab_size: tok.vocab_size() as u32,
            special_ids: specials,
            probability: data.mlm_probability,
            continuation_ids,
        };
        let encode_docs = |docs: Vec<Vec<String>>| -> Result<Vec<Vec<Vec<u32>>>> {
            let mut t = tokenizer.clone();
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
        let seed = recipe.training.seed;
        let mut docs = read_documents(&data.train_files, data.document_mode)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let valid_docs = if data.validation_files.is_empty() {
            let n_valid = ((docs.len() as f64) * data.validation_split).ceil() as usize;
            docs.split_off(docs.len() - n_valid.min(docs.len().saturating_sub(1)))
        } else {
            read_documents(&data.validation_files, data.document_mode)?
        };
        let (train, valid) = (encode_docs(docs)?, encode_docs(valid_docs)?);
        let (block, p) = (data.block_size, data.nsp_probability);
        let mut instances =
            |docs: &[Vec<Vec<u32>>]| nsp_instances(docs, block, cls, sep, p, nsp, &mut rng);
        let (train_instances, valid_instances) = (instances(&train), instances(&valid));
        if train_instances.is_empty() {
            bail!("no training instances could be built from the corpus")
        }
        tracing::info!(
            "masked LM: {} train and {} validation instances",
            train_instances.len(),
            valid_instances.len()
        );
        let prepared = Self {
            tokenizer,
            nsp,
            train_instances,
            valid_instances,
            masking,
            seed,
            eval_batch_size: recipe.training.per_device_eval_batch_size,
            device: device.clone(),
        };
        Ok((model, prepared))
    }

    fn loss(
        &self,
        net: &dyn MaskedLm,
        instances: &[&Instance],
        rng: &mut ChaCha8Rng,
    ) -> Result<Tensor> {
        let mut ids = Vec::new();
        let mut labels = Vec::new();
        for inst in instances {
            let (m, l) = mask_tokens(&inst.ids, &self.masking, rng);
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
        let nsp = match self.nsp {
            true => Some(Tensor::new(
                instances.iter().map(|i| i.nsp_label).collect::<Vec<_>>(),
                &self.device,
            )?),
            false => None,
        };
        let (positions, targets) = crate::model::masked_rows(&label_rows);
        if positions.is_empty() {
            // Nothing selected (tiny batches): the full loss says what that means.
            let labels = Tensor::from_vec(label_rows, (instances.len(), t), &self.device)?;
            let out = net.forward(
                &batch.input_ids,
                &batch.token_type_ids,
                &batch.attention_mask,
            )?;
            return Ok(net.loss(&out, &labels, nsp.as_ref())?);
        }
        let n = positions.len();
        Ok(net.masked_loss(
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

impl TrainingData for MaskedLmData {
    type Net = dyn MaskedLm;

    fn num_train_examples(&self) -> usize {
        self.train_instances.len()
    }

    fn train_example_length(&self, i: usize) -> usize {
        self.train_instances[i].ids.len()
    }

    fn training_loss(&self, net: &Self::Net, indices: &[usize]) -> Result<Tensor> {
        let inst: Vec<&Instance> = indices.iter().map(|&i| &self.train_instances[i]).collect();
        self.loss(net, &inst, &mut self.batch_rng(indices))
    }

    fn evaluate(&self, net: &Self::Net, max_batches: Option<usize>) -> Result<Metrics> {
        // Fixed masks for evaluation, so evaluations are comparable.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(1));
        let inst: Vec<&Instance> = self.valid_instances.iter().collect();
        let (mut sum, mut n) = (0f64, 0usize);
        for (bi, chunk) in inst.chunks(self.eval_batch_size.max(1)).enumerate() {
            if max_batches.is_some_and(|m| bi >= m) {
                break;
            }
            let loss: f32 = self.loss(net, chunk, &mut rng)?.to_scalar()?;
            sum += loss as f64 * chunk.len() as f64;
            n += chunk.len();
        }
        Ok(lm_metrics(sum, n))
    }

    fn save_extras(&self, dir: &Path) -> Result<()> {
        self.tokenizer.save(&dir.join("tokenizer.json"))
    }
}

#[cfg(test)]
mod tests;
