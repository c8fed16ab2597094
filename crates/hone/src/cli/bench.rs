use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};

use hone::model::loading::{ModelDir, Task};
use hone::model::{LoadedModel, ProblemType, TaskModel};
use hone::ops::CrossEntropyOptions;
use hone::training::optim::{
    clip_grad_norm, select_params, AdamW, AdamWConfig, NoDecayRule, Optimizer,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Forward pass only (inference).
    Infer,
    /// Forward + backward + clipping + AdamW update.
    Train,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(value_enum)]
    mode: Mode,
    /// A BERT-family model directory.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Timed iterations (after warm-up).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// fp32 only on CPU.
    #[arg(long, default_value = "fp32")]
    precision: String,
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Times one model step on random token ids and prints a JSON line: median and mean step
/// time, tokens/s and achieved TFLOP/s (6 N T for training, 2 N T for inference).
pub fn run(args: BenchArgs) -> Result<()> {
    if args.precision != "fp32" {
        bail!(
            "precision {} is not available in this build; use fp32",
            args.precision
        )
    }
    let device = hone::device_from_str(&args.device)?;
    let dir = ModelDir::open(&args.model)?;
    let task = Task::SequenceClassification {
        id2label: vec!["0".into(), "1".into()],
        problem: ProblemType::SingleLabel,
    };
    let model = LoadedModel::load_for_task(&dir, task, &device, 0)?;
    let TaskModel::SequenceClassification(head) = &model.model else {
        unreachable!()
    };
    let vocab = match &model.config.arch {
        hone::model::ArchConfig::Bert(c) => c.vocab_size,
        _ => bail!("bench supports BERT-family models"),
    };
    let (b, t) = (args.batch_size, args.seq_len);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let ids: Vec<u32> = (0..b * t)
        .map(|_| rng.gen_range(1000..vocab as u32))
        .collect();
    let ids = Tensor::from_vec(ids, (b, t), &device)?;
    let types = ids.zeros_like()?;
    let mask = ids.ones_like()?;
    let labels = Tensor::from_vec(
        (0..b).map(|i| (i % 2) as i64).collect::<Vec<_>>(),
        b,
        &device,
    )?;
    let params = select_params(model.params.params(), &NoDecayRule::default(), &[])?;
    let mut opt = AdamW::new(params, AdamWConfig::default())?;
    let mut times = Vec::new();
    for i in 0..args.warmup + args.steps {
        let start = Instant::now();
        match args.mode {
            Mode::Infer => {
                let logits = head.forward(&ids, &types, &mask)?;
                logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            }
            Mode::Train => {
                model.mode.set_training(true);
                let logits = head.forward(&ids, &types, &mask)?;
                let loss = head.loss(&logits, &labels, &CrossEntropyOptions::default())?;
                let mut grads = loss.backward()?;
                clip_grad_norm(opt.params(), &mut grads, 1.0)?;
                opt.step(&grads, 1e-5)?;
            }
        }
        sync(&device)?;
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
            "mode": format!("{:?}", args.mode).to_lowercase(), "batch_size": b, "seq_len": t,
            "median_ms": median * 1e3, "mean_ms": mean * 1e3, "tokens_per_s": tokens / median,
            "tflops": flops_per_token * tokens / median / 1e12, "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}

fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}
