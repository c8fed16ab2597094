//! `hone bench`: time a training step (the trainer's own micro-step and update) or a
//! forward pass on random token ids, for the peer scripts' cases.

use std::marker::PhantomData;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};

use hone_core::model::adapter::TargetModules;
use hone_core::model::{
    CausalLm, Head, HeadKind, Model, ModelConfig, ModelDir, Net, NetKind, ProblemType,
    SequenceClassifier,
};
use hone_core::ops::CrossEntropyOptions;
use hone_core::runtime::{set_tf32, DeviceSpec};
use hone_core::tasks::PeftArgs;
use hone_core::training::{Metrics, Precision, Trainer, TrainingArguments, TrainingData};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Forward pass only (inference).
    Infer,
    /// Forward + backward + clipping + AdamW update.
    Train,
}

/// Architectures the peer scripts time, with the heads they time them with, built with
/// random weights (no download needed).
const PRESETS: &[(&str, &str)] = &[
    (
        "minilm-l6",
        r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
            "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
            "max_position_embeddings": 512,
            "architectures": ["BertForSequenceClassification"], "id2label": {"0": "0", "1": "1"}}"#,
    ),
    (
        "bert-base",
        r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 768,
            "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
            "max_position_embeddings": 512,
            "architectures": ["BertForSequenceClassification"], "id2label": {"0": "0", "1": "1"}}"#,
    ),
    (
        "gpt2",
        r#"{"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12,
            "n_head": 12, "n_positions": 1024, "architectures": ["GPT2LMHeadModel"]}"#,
    ),
];

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(value_enum)]
    mode: Mode,
    /// A model directory, or a preset with random weights: minilm-l6, bert-base, gpt2 (124M).
    /// A model is timed with its own head (a bare encoder as a 2-label sequence
    /// classifier); the presets are BERT classifiers and GPT-2 as a causal LM.
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Timed iterations (after warm-up).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Matrix products in this precision (bf16 and fp16 are meant for GPUs).
    #[arg(long, value_enum, default_value = "fp32")]
    precision: Precision,
    /// fp32 products in TF32 on Ampere+ GPUs.
    #[arg(long)]
    tf32: bool,
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Train a LoRA adapter of this rank instead of the whole model (alpha = 2 r, dropout
    /// 0.1, the architecture's usual targets unless --lora-targets).
    #[arg(long)]
    lora_r: Option<usize>,
    /// The modules the adapter targets (comma-separated, PEFT's names).
    #[arg(long, value_delimiter = ',')]
    lora_targets: Vec<String>,
}

/// The model to time, with its head: a directory or a preset; with `lora`, a new adapter
/// on a directory's model.
fn load_model(name: &str, lora: Option<&PeftArgs>, device: &Device) -> Result<Model<Net>> {
    let (config, dir) = match PRESETS.iter().find(|(n, _)| *n == name) {
        Some((_, json)) => (ModelConfig::parse(json)?, None),
        None if Path::new(name).is_dir() => {
            let dir = ModelDir::open(Path::new(name))?;
            (dir.config.clone(), Some(dir))
        }
        None => bail!(
            "`{name}` is neither a model directory nor a preset ({})",
            PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
        ),
    };
    let head = match Head::from_config(&config) {
        Head::Base => Head::SequenceClassification {
            id2label: vec!["0".into(), "1".into()],
            problem: ProblemType::SingleLabel,
        },
        head => head,
    };
    match (dir, lora) {
        (Some(dir), Some(peft)) => {
            let lora = peft.lora_config(&*dir.config.arch, &dir.path);
            Model::load_with_new_adapter(&dir, head, lora, device, 0)
        }
        (Some(dir), None) => Model::load_for(&dir, head, device, 0),
        (None, Some(peft)) => {
            let lora = peft.lora_config(&*config.arch, Path::new(name));
            Model::from_scratch_with_adapter(config, head, lora, device, 0)
        }
        (None, None) => Model::from_scratch(config, head, device, 0),
    }
}

/// One batch of random token ids (from id 1000 up, past BERT's special and unused ids),
/// the same at every step, as the peer scripts time it. `N` is the network it feeds.
struct RandomTokens<N: ?Sized> {
    /// `[B, T + 1]`: inputs and, shifted by one, a causal LM's targets.
    ids: Tensor,
    _net: PhantomData<fn(&N)>,
}

impl<N: ?Sized> RandomTokens<N> {
    fn new(batch: usize, seq: usize, vocab: usize, device: &Device) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let ids: Vec<u32> = (0..batch * (seq + 1))
            .map(|_| rng.gen_range(1000.min(vocab as u32 - 1)..vocab as u32))
            .collect();
        Ok(Self {
            ids: Tensor::from_vec(ids, (batch, seq + 1), device)?,
            _net: PhantomData,
        })
    }

    fn inputs(&self) -> Result<Tensor> {
        let t = self.ids.dim(1)? - 1;
        Ok(self.ids.narrow(1, 0, t)?)
    }
}

/// What the bench times in inference: the network's forward pass.
trait Timed: TrainingData {
    fn forward(&self, net: &Self::Net) -> Result<Tensor>;
}

/// The trainer's view of the one batch: `B` examples of `T` tokens, nothing to evaluate.
macro_rules! one_batch_data {
    ($net:ty) => {
        impl TrainingData for RandomTokens<$net> {
            type Net = $net;
            fn num_train_examples(&self) -> usize {
                self.ids.dims()[0]
            }
            fn train_example_length(&self, _i: usize) -> usize {
                self.ids.dims()[1] - 1
            }
            fn training_loss(&self, net: &Self::Net, _indices: &[usize]) -> Result<Tensor> {
                self.loss(net)
            }
            fn evaluate(&self, _net: &Self::Net, _max_batches: Option<usize>) -> Result<Metrics> {
                Ok(Metrics::new())
            }
            fn save_extras(&self, _dir: &Path) -> Result<()> {
                Ok(())
            }
        }
    };
}

one_batch_data!(dyn SequenceClassifier);
one_batch_data!(dyn CausalLm);

impl RandomTokens<dyn SequenceClassifier> {
    /// Cross-entropy against alternating labels 0, 1, 0, ...
    fn loss(&self, net: &(dyn SequenceClassifier + 'static)) -> Result<Tensor> {
        let logits = self.forward(net)?;
        let b = logits.dim(0)?;
        let labels: Vec<i64> = (0..b).map(|i| (i % 2) as i64).collect();
        let labels = Tensor::from_vec(labels, b, logits.device())?;
        Ok(net.loss(&logits, &labels, &CrossEntropyOptions::default())?)
    }
}

impl Timed for RandomTokens<dyn SequenceClassifier> {
    fn forward(&self, net: &Self::Net) -> Result<Tensor> {
        let inputs = self.inputs()?;
        Ok(net.forward(&inputs, &inputs.zeros_like()?, &inputs.ones_like()?)?)
    }
}

impl RandomTokens<dyn CausalLm> {
    /// Next-token cross-entropy over every position.
    fn loss(&self, net: &(dyn CausalLm + 'static)) -> Result<Tensor> {
        let logits = self.forward(net)?;
        let (b, t, v) = logits.dims3()?;
        let targets = self
            .ids
            .narrow(1, 1, t)?
            .flatten_all()?
            .to_dtype(DType::I64)?;
        Ok(hone_core::ops::cross_entropy(
            &logits.reshape((b * t, v))?,
            &targets,
            &CrossEntropyOptions::default(),
        )?)
    }
}

impl Timed for RandomTokens<dyn CausalLm> {
    fn forward(&self, net: &Self::Net) -> Result<Tensor> {
        Ok(net.forward(&self.inputs()?, None, None)?)
    }
}

/// Step times in seconds after warm-up: the trainer's micro-step and update (forward,
/// backward, clipping at 1, AdamW), or a forward pass in evaluation mode.
fn time_steps<D: Timed>(args: &BenchArgs, model: &Model<D::Net>, data: &D) -> Result<Vec<f64>>
where
    D::Net: NetKind,
{
    let training = TrainingArguments {
        per_device_train_batch_size: args.batch_size,
        max_steps: Some(args.warmup + args.steps),
        learning_rate: 1e-5,
        max_grad_norm: 1.0,
        precision: args.precision,
        progress: false,
        ..Default::default()
    };
    let trainer = Trainer::new(training, model, data);
    // The run holds the optimizer and keeps the matrix products in `precision`.
    let mut run = trainer.start()?;
    if matches!(args.mode, Mode::Infer) {
        model.mode.set_training(false);
    }
    let batch: Vec<usize> = (0..args.batch_size).collect();
    let mut times = Vec::new();
    for i in 0..args.warmup + args.steps {
        let start = Instant::now();
        match args.mode {
            Mode::Infer => {
                // Reading one value back waits for the device to finish.
                data.forward(&model.net)?
                    .to_dtype(DType::F32)?
                    .sum_all()?
                    .to_scalar::<f32>()?;
            }
            Mode::Train => {
                trainer.micro_step(&mut run, &batch)?;
                trainer.update(&mut run)?;
            }
        }
        model.device.synchronize()?;
        if i >= args.warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(times)
}

/// Times one model step on random token ids and prints a JSON line: median and mean step
/// time, tokens/s and achieved TFLOP/s (6 N T for training, 2 N T for inference).
pub fn run(args: BenchArgs) -> Result<()> {
    set_tf32(args.tf32);
    let device = args.device.open()?;
    let lora = args.lora_r.map(|r| PeftArgs {
        r,
        lora_alpha: 2.0 * r as f64,
        lora_dropout: 0.1,
        target_modules: (!args.lora_targets.is_empty())
            .then(|| TargetModules::Names(args.lora_targets.clone())),
        ..Default::default()
    });
    let model = load_model(&args.model, lora.as_ref(), &device)?;
    let (b, t) = (args.batch_size, args.seq_len);
    let vocab = model.config.arch.vocab_size();
    let n_params = model.num_parameters() as f64;
    let n_trainable = model.num_trainable_parameters();
    let mut times = match model.head.kind() {
        HeadKind::SequenceClassification => {
            let model = model.into_kind::<dyn SequenceClassifier>()?;
            let data = RandomTokens::<dyn SequenceClassifier>::new(b, t, vocab, &device)?;
            time_steps(&args, &model, &data)?
        }
        HeadKind::CausalLm => {
            let model = model.into_kind::<dyn CausalLm>()?;
            let data = RandomTokens::<dyn CausalLm>::new(b, t, vocab, &device)?;
            time_steps(&args, &model, &data)?
        }
        _ => bail!(
            "{} is a {}: bench times sequence classifiers and causal LMs",
            args.model,
            model.class_name()
        ),
    };
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let flops_per_token = if matches!(args.mode, Mode::Train) {
        6.0
    } else {
        2.0
    } * n_params;
    let tokens = (b * t) as f64;
    println!(
        "{}",
        serde_json::json!({
            "model": args.model, "mode": format!("{:?}", args.mode).to_lowercase(),
            "precision": args.precision, "tf32": args.tf32, "device": args.device.to_string(),
            "batch_size": b, "seq_len": t,
            "median_ms": median * 1e3, "mean_ms": mean * 1e3, "tokens_per_s": tokens / median,
            "tflops": flops_per_token * tokens / median / 1e12, "threads": rayon::current_num_threads(),
            "trainable_params": n_trainable, "total_params": n_params as usize,
            "lora_r": args.lora_r,
            "peak_rss_mb": hone_core::runtime::peak_memory_bytes().map(|b| b as f64 / 1048576.0),
        })
    );
    Ok(())
}
