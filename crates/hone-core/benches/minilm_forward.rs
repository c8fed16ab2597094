//! Forward latency of all-MiniLM-L6-v2 on the CPU, in the cases of the peer script
//! (`../shared/bench/hf_cpu_baseline.py`): batch 1 x 12 tokens and batch 64 x 64 tokens (the
//! same 12-token sentence padded to 64). Prints one JSON line per case with the median.
//!
//! `cargo bench -p hone --bench minilm_forward [-- MODEL_DIR]`; threads follow
//! `RAYON_NUM_THREADS`. `HONE_BENCH_ROUNDS` scales the number of timed runs (default 1);
//! `HONE_BENCH_CASE=b1` or `b64` runs one case alone (for `perf record`).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use hone_core::model::{Encoder, Model};
use hone_core::tokenization::{pad_ids, TextTokenizer};

const SENTENCE: &str = "the film is a charming and often affecting journey .";

fn median_ms(mut f: impl FnMut(), warmup: usize, n: usize) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut ts: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ts[ts.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2")
        });
    let rounds: usize = std::env::var("HONE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let case = std::env::var("HONE_BENCH_CASE").unwrap_or_default();
    let device = Device::Cpu;
    // An inference program: the linear layers may pack their weights once.
    let model = Model::load(&dir, &device)?
        .frozen()
        .into_kind::<dyn Encoder>()?;
    // A directory from `hone quantize --int8` runs its linear layers in int8.
    let name = match model.mode.int8() {
        Some(_) => "hone int8 infer",
        None => "hone infer",
    };
    let bert = &model.net;
    let tok = TextTokenizer::from_dir(&dir)?;
    let enc = tok.encode(SENTENCE, None)?;
    let ids = enc.get_ids();
    let types = enc.get_type_ids();

    let run = |input_ids: &Tensor, type_ids: &Tensor, mask: &Tensor| {
        let out =
            hone_core::runtime::on_thread_pool(|| bert.encode(input_ids, type_ids, mask)).unwrap();
        // Make sure the work is done and the result is read, as the peer's output is.
        std::hint::black_box(out.sequence.flatten_all().unwrap().get(0).unwrap());
    };

    // Batch 1: the sentence alone.
    if case != "b64" {
        let one = pad_ids(&[ids], &[types], 0, &device)?;
        let ms1 = median_ms(
            || run(&one.input_ids, &one.token_type_ids, &one.attention_mask),
            5,
            50 * rounds,
        );
        println!(
            "{{\"case\": \"{name} minilm-L6 B1 S{}\", \"threads\": {}, \"ms\": {:.3}}}",
            ids.len(),
            rayon::current_num_threads(),
            ms1
        );
    }
    if case == "b1" {
        return Ok(());
    }

    // Batch 64 x 64: the sentence padded to 64 positions, as the peer does.
    let (b, t) = (64usize, 64usize);
    let mut row_ids = vec![0u32; t];
    row_ids[..ids.len()].copy_from_slice(ids);
    let mut mask_row = vec![0u32; t];
    mask_row[..ids.len()].fill(1);
    let input_ids = Tensor::from_vec(row_ids.repeat(b), (b, t), &device)?;
    let type_ids = Tensor::zeros((b, t), candle_core::DType::U32, &device)?;
    let mask = Tensor::from_vec(mask_row.repeat(b), (b, t), &device)?;
    let ms64 = median_ms(|| run(&input_ids, &type_ids, &mask), 2, 10 * rounds);
    println!(
        "{{\"case\": \"{name} minilm-L6 B64 S64\", \"threads\": {}, \"ms\": {:.1}}}",
        rayon::current_num_threads(),
        ms64
    );
    Ok(())
}
