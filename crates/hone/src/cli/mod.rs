//! `hone` subcommands: thin wrappers that parse arguments and call the pipelines.

mod embed;
mod info;

use clap::{Parser, Subcommand};

/// hone: build, pretrain, fine-tune, evaluate and serve Transformer models.
#[derive(Parser, Debug)]
#[command(name = "hone", version, about)]
pub struct Cli {
    /// Log level filter (error, warn, info, debug, trace), or set RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Describe a model directory: architecture, sizes, parameter count.
    Info(info::InfoArgs),
    /// Embed texts (arguments, or one per line on stdin) as JSON lines.
    Embed(embed::EmbedArgs),
}

/// Parse the command line and run it.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Embed(a) => embed::run(a),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
