use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use hone_core::model::{Model, ModelDir};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A Hugging Face model directory (config.json + model.safetensors).
    model_dir: PathBuf,
    /// For an adapter directory: the base model (instead of the one its
    /// adapter_config.json names).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let dir = ModelDir::open_with_base(&args.model_dir, args.base.as_deref())?;
    let model = Model::open(&dir, &Device::Cpu)?;
    let arch = &model.config.arch;
    let mut info = serde_json::json!({
        "model_dir": args.model_dir.display().to_string(),
        "model_type": arch.model_type().as_str(),
        "architecture": model.class_name(),
        "parameters": model.num_parameters(),
        "layers": arch.num_layers(),
        "hidden_size": arch.hidden_size(),
        "attention_heads": arch.num_attention_heads(),
        "vocab_size": arch.vocab_size(),
        "max_positions": arch.max_positions(),
        "labels": model.head.labels(),
    });
    if let Some(lora) = &model.adapter {
        info["base_model"] = dir.weights_dir.display().to_string().into();
        info["adapter"] = serde_json::json!({
            "peft_type": lora.peft_type, "r": lora.r, "lora_alpha": lora.lora_alpha,
            "target_modules": lora.target_modules,
        });
        info["trainable_parameters"] = model.num_trainable_parameters().into();
    }
    if let Some(int8) = model.mode.int8() {
        info["quantization"] = format!(
            "int8 weights per output channel, int8 activations per row, in {} linear layers",
            int8.modules().len()
        )
        .into();
    }
    if args.json {
        println!("{info}");
    } else {
        for (k, v) in info.as_object().expect("object") {
            println!(
                "{k:>20}: {}",
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            );
        }
    }
    Ok(())
}
