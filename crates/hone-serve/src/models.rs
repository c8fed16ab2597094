//! The models a server holds: each directory loaded once, frozen for inference, with a
//! worker thread that batches its requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use hone_core::inference::classify::{Prediction, TextClassificationPipeline};
use hone_core::inference::embed::{embed_texts, Pooling};
use hone_core::inference::generate::{generate, FinishReason, GenerationConfig};
use hone_core::inference::ner::{TextEntities, TokenClassificationPipeline};
use hone_core::inference::translate::{translate, GenerationFile, Translation, TranslationConfig};
use hone_core::model::{CausalLm, Encoder, Head, HeadKind, Model, ModelDir, NetKind, Seq2SeqLm};
use hone_core::runtime::DeviceSpec;
use hone_core::tokenization::TextTokenizer;

use crate::api::{Sequence, StreamToken};
use crate::batcher::{BatchLimits, Batcher};
use crate::metrics::Metrics;

/// Limits and settings of a server (the `hone serve` flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub device: DeviceSpec,
    /// The base model of adapter directories, instead of the one their config names.
    pub base: Option<PathBuf>,
    /// Adapters served together over their one base model (`--adapter NAME=DIR`): one
    /// classifier whose requests pick an adapter by name and share batches.
    pub adapters: Vec<(String, PathBuf)>,
    /// How an embedding model pools its token vectors.
    pub pooling: Pooling,
    /// Inputs per forward pass at most.
    pub max_batch_requests: usize,
    /// Tokens per forward pass at most.
    pub max_batch_tokens: usize,
    /// How long a worker waits to fill a batch once it has a request.
    pub max_wait: Duration,
    /// Requests in flight at most; more get 429.
    pub max_concurrent_requests: usize,
    /// Inputs in one request at most (TEI's `--max-client-batch-size`).
    pub max_client_batch_size: usize,
    /// Tokens per input at most (default: what the model's positions allow); longer
    /// inputs get 413 unless the request asks to `truncate`.
    pub max_input_length: Option<usize>,
    /// Request bodies larger than this get 413.
    pub payload_limit: usize,
    /// A request not answered in this time gets 504.
    pub request_timeout: Duration,
    /// Bearer token every route but `/health` requires.
    pub api_key: Option<String>,
    /// Token classification: pieces shared by consecutive windows of a long input.
    pub ner_stride: usize,
    /// The largest `max_new_tokens` a generation request may ask for.
    pub max_new_tokens: usize,
}

impl ServeOptions {
    /// What a worker puts in one batch.
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_inputs: self.max_batch_requests.max(1),
            max_tokens: self.max_batch_tokens.max(1),
            max_wait: self.max_wait,
        }
    }

    /// Tokens per input at most for the model in `dir`: `--max-input-length` within the
    /// model's positions.
    fn input_limit(&self, dir: &ModelDir) -> usize {
        let positions = dir.config.arch.max_positions();
        self.max_input_length
            .map_or(positions, |m| m.min(positions))
    }
}

/// A directory's name: what requests pick its model by.
fn dir_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            device: DeviceSpec::Cpu,
            base: None,
            adapters: Vec::new(),
            pooling: Pooling::Mean,
            max_batch_requests: 32,
            max_batch_tokens: 16384,
            max_wait: Duration::ZERO,
            max_concurrent_requests: 512,
            max_client_batch_size: 32,
            max_input_length: None,
            payload_limit: 2_000_000,
            request_timeout: Duration::from_secs(60),
            api_key: None,
            ner_stride: 32,
            max_new_tokens: 1024,
        }
    }
}

/// What a served model does, and so which routes it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// `/embed`: an encoder without a task head.
    Embedding,
    /// `/predict`: a sequence classifier.
    Classification,
    /// `/ner`: a token classifier.
    TokenClassification,
    /// `/generate`, `/generate_stream`: a causal language model.
    TextGeneration,
    /// `/generate`: a sequence-to-sequence model (greedy or beam search).
    Translation,
}

/// One generation request for a worker.
pub struct GenerationJob {
    pub prompt: String,
    pub config: GenerationConfig,
    /// Where the tokens go as they are generated (`/generate_stream`); the last token is
    /// held back and returned in the outcome, to be sent with the final text.
    pub stream: Option<UnboundedSender<StreamToken>>,
}

/// What a generation request produced.
pub struct GenerationOutcome {
    pub text: String,
    pub new_tokens: usize,
    pub finish_reason: FinishReason,
    pub last_token: Option<StreamToken>,
}

/// A translated sentence, and whether it ended with EOS (else it ran out of tokens).
pub struct TranslationOutcome {
    pub translation: Translation,
    pub reached_eos: bool,
}

/// One sentence for a translation worker, with how to decode it.
pub struct TranslationJob {
    pub source: String,
    pub config: TranslationConfig,
}

pub(crate) enum Worker {
    Embed(Batcher<String, Vec<f32>>),
    /// Each input with its adapter slot (0 for a model without adapters).
    Classify(Batcher<(Sequence, u32), Prediction>),
    Ner(Batcher<String, TextEntities>),
    Generate(Batcher<GenerationJob, GenerationOutcome>),
    Translate(Batcher<TranslationJob, TranslationOutcome>),
}

/// One loaded model directory.
pub struct ServedModel {
    /// The directory's name: what a request's `model` field picks it by.
    pub name: String,
    pub path: PathBuf,
    pub task: Task,
    /// Hugging Face's class (`BertForSequenceClassification`, ...).
    pub class_name: String,
    pub labels: Vec<String>,
    /// The adapters a request may pick by name (`--adapter`), by slot; empty otherwise.
    pub adapters: Vec<String>,
    /// Each adapter's labels, by slot.
    pub adapter_labels: Vec<Vec<String>>,
    /// Tokens per input at most.
    pub max_input_length: usize,
    /// The tokenizer without truncation: token counts, `/tokenize`.
    pub tokenizer: TextTokenizer,
    /// A translation model's `generation_config.json` (beams, length penalty).
    pub generation: GenerationFile,
    pub(crate) worker: Worker,
}

impl ServedModel {
    /// Load `path` (a model or an adapter directory) and start its worker.
    pub fn load(path: &Path, options: &ServeOptions, metrics: Arc<Metrics>) -> Result<Self> {
        let device = options.device.open()?;
        // `--base` is for the adapter directories among several.
        let base = options.base.as_deref().filter(|_| {
            path.join(hone_core::model::adapter::ADAPTER_CONFIG)
                .is_file()
        });
        let dir = ModelDir::open_with_base(path, base)?;
        let name = dir_name(path);
        let class_name = dir.config.architecture.clone().unwrap_or_default();
        let max_input_length = options.input_limit(&dir);
        let head = Head::from_config(&dir.config).kind();
        // What cannot be served is said before anything is read.
        if matches!(head, HeadKind::MaskedLm | HeadKind::PreTraining) {
            bail!(
                "{}: a {class_name} ({head:?} head) cannot be served; hone serve takes \
                 encoders (embeddings), sequence and token classifiers, causal LMs and \
                 translation models",
                path.display()
            )
        }
        let mut tokenizer = dir.tokenizer()?;
        tokenizer.set_max_length(None)?;
        let limits = options.batch_limits();
        let capacity = options.max_concurrent_requests;
        let batch = limits.max_inputs;
        let spawn_err = || format!("cannot start the worker thread of {}", path.display());
        let (task, labels, worker) = match head {
            HeadKind::Base => {
                let model = open_frozen::<dyn Encoder>(&dir, &device)?;
                let mut tok = tokenizer.clone();
                tok.set_max_length(Some(max_input_length))?;
                let pooling = options.pooling;
                let worker = Batcher::spawn(&name, limits, capacity, metrics, move |texts| {
                    Ok(embed_texts(&model, &tok, &texts, pooling, batch)?
                        .into_iter()
                        .map(|e| e.embedding)
                        .collect())
                })
                .with_context(spawn_err)?;
                (Task::Embedding, Vec::new(), Worker::Embed(worker))
            }
            HeadKind::SequenceClassification => {
                let pipeline = TextClassificationPipeline::open(&dir, &device, max_input_length)?;
                let labels = pipeline.labels.clone();
                let worker = Batcher::spawn(&name, limits, capacity, metrics, move |inputs| {
                    let inputs: Vec<Sequence> = inputs.into_iter().map(|(s, _)| s).collect();
                    pipeline.predict(&inputs, batch)
                })
                .with_context(spawn_err)?;
                (Task::Classification, labels, Worker::Classify(worker))
            }
            HeadKind::TokenClassification => {
                let pipeline = TokenClassificationPipeline::open(
                    &dir,
                    &device,
                    max_input_length,
                    options.ner_stride,
                )?;
                let labels = pipeline.labels.clone();
                let worker = Batcher::spawn(&name, limits, capacity, metrics, move |texts| {
                    pipeline.predict_entities(&texts, batch)
                })
                .with_context(spawn_err)?;
                (Task::TokenClassification, labels, Worker::Ner(worker))
            }
            HeadKind::CausalLm => {
                let model = open_frozen::<dyn CausalLm>(&dir, &device)?;
                let tok = tokenizer.clone();
                // One sequence at a time: the KV cache holds one.
                let one = BatchLimits {
                    max_inputs: 1,
                    ..limits
                };
                let worker = Batcher::spawn(&name, one, capacity, metrics, move |jobs| {
                    jobs.into_iter()
                        .map(|job| run_generation(&*model.net, &tok, job))
                        .collect()
                })
                .with_context(spawn_err)?;
                (Task::TextGeneration, Vec::new(), Worker::Generate(worker))
            }
            HeadKind::Seq2SeqLm => {
                let model = open_frozen::<dyn Seq2SeqLm>(&dir, &device)?;
                let tok = tokenizer.clone();
                let worker = Batcher::spawn(&name, limits, capacity, metrics, move |jobs| {
                    translate_batch(&*model.net, &tok, jobs, batch)
                })
                .with_context(spawn_err)?;
                (Task::Translation, Vec::new(), Worker::Translate(worker))
            }
            HeadKind::MaskedLm | HeadKind::PreTraining => unreachable!("refused above"),
        };
        Ok(Self {
            name,
            path: path.to_path_buf(),
            task,
            class_name,
            labels,
            adapters: Vec::new(),
            adapter_labels: Vec::new(),
            max_input_length,
            tokenizer,
            generation: GenerationFile::load(path)?,
            worker,
        })
    }

    /// Several LoRA adapters over their one base model as one classifier, named after the
    /// base's directory: a request picks an adapter by name (the first by default), and
    /// requests for different adapters share batches (the base's work is done once per
    /// batch; see `hone_core::model::adapter_set`).
    pub fn load_adapters(
        adapters: &[(String, PathBuf)],
        options: &ServeOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let device = options.device.open()?;
        let mut dirs = Vec::with_capacity(adapters.len());
        for (name, path) in adapters {
            if dirs.iter().any(|(n, _)| n == name) {
                bail!("--adapter: the name `{name}` is given twice")
            }
            let dir = ModelDir::open_with_base(path, options.base.as_deref())?;
            if dir.adapter.is_none() {
                bail!(
                    "--adapter {name}={}: not an adapter directory (no adapter_config.json)",
                    path.display()
                )
            }
            dirs.push((name.clone(), dir));
        }
        let (first_name, first) = dirs.first().context("no adapter given")?;
        let head = Head::from_config(&first.config).kind();
        if head != HeadKind::SequenceClassification {
            bail!(
                "--adapter {first_name}: a {head:?} adapter; adapters are served together for sequence classification (/predict); serve others as model directories"
            )
        }
        let path = first.weights_dir.clone();
        let name = dir_name(&path);
        let class_name = first.config.architecture.clone().unwrap_or_default();
        let max_input_length = options.input_limit(first);
        let mut tokenizer = first.tokenizer()?;
        tokenizer.set_max_length(None)?;
        let pipeline =
            TextClassificationPipeline::open_with_adapters(&dirs, &device, max_input_length)?;
        let (labels, adapter_labels) = (pipeline.labels.clone(), pipeline.adapter_labels.clone());
        let limits = options.batch_limits();
        let batch = limits.max_inputs;
        let capacity = options.max_concurrent_requests;
        let worker = Batcher::spawn(&name, limits, capacity, metrics, move |inputs| {
            let (inputs, slots): (Vec<Sequence>, Vec<u32>) = inputs.into_iter().unzip();
            pipeline.predict_routed(&inputs, &slots, batch)
        })
        .with_context(|| format!("cannot start the worker thread of {}", path.display()))?;
        Ok(Self {
            name,
            generation: GenerationFile::load(&path)?,
            path,
            task: Task::Classification,
            class_name,
            labels,
            adapters: dirs.into_iter().map(|(n, _)| n).collect(),
            adapter_labels,
            max_input_length,
            tokenizer,
            worker: Worker::Classify(worker),
        })
    }

    /// The labels of adapter `slot` (the model's own without adapters).
    pub fn labels_of(&self, slot: u32) -> &[String] {
        self.adapter_labels
            .get(slot as usize)
            .unwrap_or(&self.labels)
    }

    /// Tokens of each input, checked against [`Self::max_input_length`]: with `truncate`
    /// a longer input counts as cut; without, it is refused with TEI's words (413).
    pub fn count_tokens(
        &self,
        inputs: &[(&str, Option<&str>)],
        truncate: bool,
    ) -> std::result::Result<usize, crate::error::ApiError> {
        use crate::error::{ApiError, ErrorType};
        let mut total = 0;
        for (text, pair) in inputs {
            let n = self
                .tokenizer
                .encode(text, *pair)
                .map_err(|e| {
                    ApiError::new(
                        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                        ErrorType::Tokenizer,
                        format!("{e:#}"),
                    )
                })?
                .len();
            if n > self.max_input_length && !truncate {
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorType::Validation,
                    format!(
                        "Input validation error: `inputs` must have less than {} tokens. Given: {n}",
                        self.max_input_length
                    ),
                ));
            }
            total += n.min(self.max_input_length);
        }
        Ok(total)
    }
}

/// The directory's model as a head of kind `N`, frozen for inference.
fn open_frozen<N: NetKind + ?Sized>(dir: &ModelDir, device: &Device) -> Result<Model<N>> {
    Model::open(dir, device)?
        .frozen()
        .into_kind::<N>()
        .map_err(|e| e.context(dir.path.display().to_string()))
}

/// Translate a batch whose sentences may ask for different decoding: one pass per
/// distinct setting, the outputs in the jobs' order.
fn translate_batch(
    model: &dyn Seq2SeqLm,
    tokenizer: &TextTokenizer,
    jobs: Vec<TranslationJob>,
    batch: usize,
) -> Result<Vec<TranslationOutcome>> {
    let eos = model.tokens().eos;
    let mut out: Vec<Option<TranslationOutcome>> = (0..jobs.len()).map(|_| None).collect();
    let mut done = vec![false; jobs.len()];
    for i in 0..jobs.len() {
        if done[i] {
            continue;
        }
        let same: Vec<usize> = (i..jobs.len())
            .filter(|&j| !done[j] && jobs[j].config == jobs[i].config)
            .collect();
        let sources: Vec<String> = same.iter().map(|&j| jobs[j].source.clone()).collect();
        let translations = translate(model, tokenizer, &sources, &jobs[i].config, batch)?;
        for (&j, translation) in same.iter().zip(translations) {
            let reached_eos = translation.ids.last() == Some(&eos);
            out[j] = Some(TranslationOutcome {
                translation,
                reached_eos,
            });
            done[j] = true;
        }
    }
    Ok(out
        .into_iter()
        .map(|t| t.expect("every job translated"))
        .collect())
}

/// One generation, streaming each token (but the last) as it comes.
fn run_generation(
    model: &dyn CausalLm,
    tokenizer: &TextTokenizer,
    job: GenerationJob,
) -> Result<GenerationOutcome> {
    let mut held: Option<StreamToken> = None;
    let special = |id: u32| {
        tokenizer.id_to_token(id).is_some_and(|t| {
            tokenizer
                .inner()
                .get_added_vocabulary()
                .is_special_token(&t)
        })
    };
    let out = generate(model, tokenizer, &job.prompt, &job.config, |id, piece| {
        let token = StreamToken {
            id,
            text: piece.to_string(),
            logprob: None,
            special: special(id),
        };
        if let (Some(stream), Some(previous)) = (&job.stream, held.replace(token)) {
            // A client that went away stops nothing here; its tokens are dropped.
            let _ = stream.send(previous);
        }
    })?;
    Ok(GenerationOutcome {
        text: out.text,
        new_tokens: out.new_tokens,
        finish_reason: out.finish_reason,
        last_token: held,
    })
}
