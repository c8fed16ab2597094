//! `hone tokenizer train` and `hone tokenizer encode`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use hone_core::tokenization::train::{train_tokenizer, TokenizerKind};
use hone_core::tokenization::TextTokenizer;

#[derive(Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Train a tokenizer on text files and save it as tokenizer.json.
    Train {
        /// The tokenizer recipe.
        #[arg(long, value_enum)]
        model: TokenizerKind,
        /// Vocabulary size, special tokens included (an upper bound for char).
        #[arg(long, default_value_t = 30000)]
        vocab_size: usize,
        /// Text files to learn from (streamed line by line).
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Where to write tokenizer.json.
        #[arg(long)]
        output: PathBuf,
        /// Special tokens (default per model: BERT's five for wordpiece, [UNK] [PAD] for
        /// bpe, <|endoftext|> for bytelevel-bpe, none for char).
        #[arg(long, num_args = 1..)]
        special_tokens: Vec<String>,
        /// Lower-case text before tokenizing.
        #[arg(long)]
        lowercase: bool,
        /// Learn only tokens (merges) seen at least this often.
        #[arg(long, default_value_t = 0)]
        min_frequency: u64,
    },
    /// Encode a text and print its ids and tokens as JSON.
    Encode {
        /// A tokenizer.json file (or a model directory holding one or a vocab.txt).
        #[arg(long)]
        tokenizer: PathBuf,
        /// The text to encode.
        text: String,
    },
}

pub fn run(c: TokenizerCommand) -> Result<()> {
    match c {
        TokenizerCommand::Train {
            model,
            vocab_size,
            input,
            output,
            special_tokens,
            lowercase,
            min_frequency,
        } => {
            let tok = train_tokenizer(
                model,
                &input,
                vocab_size,
                special_tokens,
                min_frequency,
                lowercase,
            )?;
            tok.save(&output)?;
            tracing::info!(
                "trained a {model:?} tokenizer of {} tokens -> {}",
                tok.vocab_size(),
                output.display()
            );
            Ok(())
        }
        TokenizerCommand::Encode { tokenizer, text } => {
            let tok = if tokenizer.is_dir() {
                TextTokenizer::from_dir(&tokenizer)?
            } else {
                TextTokenizer::from_file(&tokenizer)?
            };
            let enc = tok.encode(&text, None)?;
            let json = serde_json::json!({
                "ids": enc.get_ids(),
                "tokens": enc.get_tokens(),
            });
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}")?;
            Ok(())
        }
    }
}
