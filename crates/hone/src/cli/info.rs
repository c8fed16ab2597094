use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use hone::model::{ArchConfig, LoadedModel};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A Hugging Face model directory (config.json + model.safetensors).
    model_dir: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let model = LoadedModel::load(&args.model_dir, &Device::Cpu)?;
    let (arch, layers, hidden, heads, vocab, positions) = match &model.config.arch {
        ArchConfig::Bert(c) => (
            "bert",
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.vocab_size,
            c.max_position_embeddings,
        ),
        ArchConfig::Gpt2(c) => (
            "gpt2",
            c.n_layer,
            c.n_embd,
            c.n_head,
            c.vocab_size,
            c.n_positions,
        ),
    };
    let info = serde_json::json!({
        "model_dir": args.model_dir.display().to_string(),
        "model_type": arch,
        "architecture": model.task.architecture_name(),
        "parameters": model.num_parameters(),
        "layers": layers,
        "hidden_size": hidden,
        "attention_heads": heads,
        "vocab_size": vocab,
        "max_positions": positions,
        "labels": model.config.id2label.values().collect::<Vec<_>>(),
    });
    if args.json {
        println!("{info}");
    } else {
        for (k, v) in info.as_object().expect("object") {
            println!(
                "{k:>16}: {}",
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            );
        }
    }
    Ok(())
}
