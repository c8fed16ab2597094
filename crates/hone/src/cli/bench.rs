use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};

use hone::model::loading::{ModelDir, Task};
use hone::model::{ArchConfig, LoadedModel, ModelConfig, ProblemType, TaskModel};
use hone::ops::CrossEntropyOptions;
use hone::training::optim::{
    clip_grad_norm, select_params, AdamW, AdamWConfig, NoDecayRule, Optimizer,
};
use hone::training::Precision;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Forward pass only (inference).
    Infer,
    /// Forward + backward + clipping + AdamW update.
    Train,
}

/// Architectures the peer scripts time, built with random weights (no download needed).
const PRESETS: &[(&str, &str)] = &[
    (
        "minilm-l6",
        r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
            "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
            "max_position_embeddings": 512}"#,
    ),
    (
        "bert-base",
        r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 768,
            "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
            "max_position_embeddings": 512}"#,
    ),
    (
        "gpt2",
        r#"{"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12,
            "n_head": 12, "n_positions": 1024}"#,
    ),
];

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(value_enum)]
    mode: Mode,
    /// A model directory, or a preset with random weights: minilm-l6, bert-base, gpt2 (124M).
    /// BERT-family models are timed as sequence classifiers, GPT-2 as a causal LM.
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
    /// fp32, bf16 or fp16 (matrix products in that precision; meant for GPUs).
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// fp32 products in TF32 on Ampere+ GPUs.
    #[arg(long)]
    tf32: bool,
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// The model to time: a directory or a preset.
fn load_model(name: &str, device: &Device) -> Result<LoadedModel> {
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
    let task = match config.arch {
        ArchConfig::Gpt2(_) => Task::CausalLm,
        ArchConfig::Bert(_) => Task::SequenceClassification {
            id2label: vec!["0".into(), "1".into()],
            problem: ProblemType::SingleLabel,
        },
    };
    match dir {
        Some(dir) => LoadedModel::load_for_task(&dir, task, device, 0),
        None => LoadedModel::from_scratch(config, task, device, 0),
    }
}

/// Times one model step on random token ids and prints a JSON line: median and mean step
/// time, tokens/s and achieved TFLOP/s (6 N T for training, 2 N T for inference).
pub fn run(args: BenchArgs) -> Result<()> {
    hone::set_tf32(args.tf32);
    let device = hone::device_from_str(&args.device)?;
    let model = load_model(&args.model, &device)?;
    let vocab = match &model.config.arch {
        ArchConfig::Bert(c) => c.vocab_size,
        ArchConfig::Gpt2(c) => c.vocab_size,
    };
    let (b, t) = (args.batch_size, args.seq_len);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    // One extra position: a causal LM's targets are its inputs shifted by one.
    let ids: Vec<u32> = (0..b * (t + 1))
        .map(|_| rng.gen_range(1000.min(vocab as u32 - 1)..vocab as u32))
        .collect();
    let ids = Tensor::from_vec(ids, (b, t + 1), &device)?;
    let (inputs, next) = (ids.narrow(1, 0, t)?, ids.narrow(1, 1, t)?);
    let types = inputs.zeros_like()?;
    let mask = inputs.ones_like()?;
    let labels = Tensor::from_vec(
        (0..b).map(|i| (i % 2) as i64).collect::<Vec<_>>(),
        b,
        &device,
    )?;
    let targets = next.flatten_all()?.to_dtype(DType::I64)?;
    let ce = CrossEntropyOptions::default();
    let forward = || -> Result<Tensor> {
        Ok(match &model.model {
            TaskModel::SequenceClassification(head) => head.forward(&inputs, &types, &mask)?,
            TaskModel::CausalLm(gpt) => gpt.forward(&inputs, None, None)?,
            _ => unreachable!("bench builds a classifier or a causal LM"),
        })
    };
    let loss_of = |out: &Tensor| -> Result<Tensor> {
        Ok(match &model.model {
            TaskModel::SequenceClassification(head) => head.loss(out, &labels, &ce)?,
            _ => {
                let v = out.dim(2)?;
                hone::ops::cross_entropy(&out.reshape((b * t, v))?, &targets, &ce)?
            }
        })
    };
    let params = select_params(model.params.params(), &NoDecayRule::default(), &[])?;
    let mut opt = AdamW::new(params, AdamWConfig::default())?;
    let _autocast = hone::ops::autocast(args.precision.autocast_dtype());
    let mut times = Vec::new();
    for i in 0..args.warmup + args.steps {
        let start = Instant::now();
        match args.mode {
            Mode::Infer => {
                // Reading one value back waits for the device to finish.
                forward()?
                    .to_dtype(DType::F32)?
                    .sum_all()?
                    .to_scalar::<f32>()?;
            }
            Mode::Train => {
                model.mode.set_training(true);
                let loss = loss_of(&forward()?)?;
                let mut grads = loss.backward()?;
                clip_grad_norm(opt.params(), &mut grads, 1.0)?;
                opt.step(&grads, 1e-5)?;
            }
        }
        device.synchronize()?;
        if i >= args.warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let n_params = model.num_parameters() as f64;
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
            "precision": args.precision, "tf32": args.tf32, "device": args.device, "batch_size": b, "seq_len": t,
            "median_ms": median * 1e3, "mean_ms": mean * 1e3, "tokens_per_s": tokens / median,
            "tflops": flops_per_token * tokens / median / 1e12, "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}
