//! Training new tokenizers from text files with the `tokenizers` crate's trainers.
//!
//! Four recipes, each a complete pipeline (normalizer, pre-tokenizer, model, post-processor,
//! decoder) so the saved `tokenizer.json` encodes and decodes on its own:
//! - [`TokenizerKind::WordPiece`]: BERT's (`[CLS] ... [SEP]`, `##` continuations);
//! - [`TokenizerKind::Bpe`]: whitespace-split words, `</w>` marking word ends so decoding
//!   can put the spaces back;
//! - [`TokenizerKind::ByteLevelBpe`]: GPT-2's, lossless on any UTF-8 text;
//! - [`TokenizerKind::Char`]: one token per character, ids as nanoGPT's Shakespeare setting;
//! - [`TokenizerKind::SentencePieceBpe`]: Marian's (SentencePiece-style BPE over `▁`-marked
//!   words, `</s>` appended), for translation.
//!
//! Files are streamed line by line (`train_from_files`), never read whole.
//!
//! Training is deterministic: the same files give the same `tokenizer.json`, byte for byte.
//! The `tokenizers` BPE trainer assigns ids (and so breaks ties between equally frequent
//! merges) in the iteration order of its word-count map, whose hash seed is random per
//! process. Here the words are counted through the tokenizer's own normalizer and
//! pre-tokenizer ([`WordCounts`]) and handed to the trainer in a fixed-seed map.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::decoders::bpe::BPEDecoder;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::{BertNormalizer, Lowercase, NFC};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Model, SplitDelimiterBehavior, Tokenizer, Trainer};

use super::TextTokenizer;

/// Which tokenizer recipe to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TokenizerKind {
    /// BERT WordPiece: BERT normalizer, BERT pre-tokenizer, `[CLS] ... [SEP]`.
    #[cfg_attr(feature = "clap", value(name = "wordpiece", alias = "word-piece"))]
    WordPiece,
    /// Classic BPE over whitespace/punctuation-split words.
    Bpe,
    /// GPT-2 byte-level BPE: every byte is in the alphabet, so nothing is ever unknown.
    #[cfg_attr(
        feature = "clap",
        value(name = "bytelevel-bpe", alias = "byte-level-bpe", alias = "bytelevel")
    )]
    ByteLevelBpe,
    /// One token per character (spaces and newlines included), ids in code-point order.
    #[cfg_attr(feature = "clap", value(alias = "character"))]
    Char,
    /// SentencePiece-style BPE as Marian's tokenizers are: NFC, spaces become `▁` prefixed
    /// to every word, `</s>` appended to every sequence; `<pad>`, `</s>`, `<unk>` are ids
    /// 0, 1, 2. One vocabulary for source and target when trained on both.
    #[cfg_attr(feature = "clap", value(name = "sentencepiece-bpe", alias = "marian"))]
    SentencePieceBpe,
}

impl TokenizerKind {
    /// The special tokens a recipe gets when the caller names none.
    pub fn default_special_tokens(self) -> Vec<String> {
        let s: &[&str] = match self {
            TokenizerKind::WordPiece => &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            TokenizerKind::Bpe => &["[UNK]", "[PAD]"],
            TokenizerKind::ByteLevelBpe => &["<|endoftext|>"],
            // None: the vocabulary is exactly the corpus's characters, as in nanoGPT.
            TokenizerKind::Char => &[],
            TokenizerKind::SentencePieceBpe => &["<pad>", "</s>", "<unk>"],
        };
        s.iter().map(|t| t.to_string()).collect()
    }
}

/// Train a `kind` tokenizer on `files`.
///
/// `vocab_size` counts special tokens; for [`TokenizerKind::Char`] it is only an upper bound
/// (every character is kept when it fits, else the most frequent). An empty
/// `special_tokens` means [`TokenizerKind::default_special_tokens`]. Tokens seen fewer than
/// `min_frequency` times are not learned. `lowercase` lower-cases text before everything
/// else (for WordPiece through the BERT normalizer, which also strips accents then, as
/// BERT-uncased does).
pub fn train_tokenizer(
    kind: TokenizerKind,
    files: &[PathBuf],
    vocab_size: usize,
    special_tokens: Vec<String>,
    min_frequency: u64,
    lowercase: bool,
) -> Result<TextTokenizer> {
    if files.is_empty() {
        bail!("no training files given")
    }
    let file_names = files
        .iter()
        .map(|p| {
            if !p.is_file() {
                bail!("training file {} does not exist", p.display())
            }
            p.to_str()
                .map(str::to_string)
                .with_context(|| format!("path {} is not UTF-8", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let special_tokens = if special_tokens.is_empty() {
        kind.default_special_tokens()
    } else {
        special_tokens
    };
    let specials: Vec<AddedToken> = special_tokens
        .iter()
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    let unk = ["[UNK]", "<unk>", "<UNK>"]
        .into_iter()
        .find(|u| special_tokens.iter().any(|t| t == u));

    let mut tok = match kind {
        TokenizerKind::WordPiece => {
            let mut tok = Tokenizer::new(BPE::default());
            tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
                .map_err(err)?;
            tok.with_pre_tokenizer(Some(BertPreTokenizer));
            // WordPiece is trained as BPE with `##` continuations, as `WordPieceTrainer` does.
            let trainer = BpeTrainer::builder()
                .vocab_size(vocab_size)
                .min_frequency(min_frequency)
                .special_tokens(specials)
                .continuing_subword_prefix("##".into())
                .show_progress(false)
                .build();
            let mut bpe = BPE::builder()
                .unk_token(unk.unwrap_or("[UNK]").into())
                .build()
                .map_err(err)?;
            train_bpe(&mut tok, &trainer, &mut bpe, file_names)?;
            tok.with_model(WordPiece::from_bpe(&bpe));
            let id = |t: &str| {
                tok.token_to_id(t)
                    .with_context(|| format!("a WordPiece tokenizer needs a {t} special token"))
            };
            let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
            tok.with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )));
            tok.with_decoder(Some(WordPieceDecoder::default()));
            tok
        }
        TokenizerKind::Bpe => {
            // Word ends are marked with `</w>` so that decoding can restore word boundaries
            // (the whitespace pre-tokenizer drops the spaces themselves).
            let mut builder = BPE::builder().end_of_word_suffix("</w>".into());
            if let Some(u) = unk {
                builder = builder.unk_token(u.into());
            }
            let mut tok = Tokenizer::new(BPE::default());
            if lowercase {
                tok.with_normalizer(Some(Lowercase)).map_err(err)?;
            }
            tok.with_pre_tokenizer(Some(Whitespace));
            let trainer = BpeTrainer::builder()
                .vocab_size(vocab_size)
                .min_frequency(min_frequency)
                .special_tokens(specials)
                .end_of_word_suffix("</w>".into())
                .show_progress(false)
                .build();
            let mut bpe = builder.build().map_err(err)?;
            train_bpe(&mut tok, &trainer, &mut bpe, file_names)?;
            tok.with_model(bpe);
            tok.with_decoder(Some(BPEDecoder::new("</w>".into())));
            tok
        }
        TokenizerKind::ByteLevelBpe => {
            let mut tok = Tokenizer::new(BPE::default());
            if lowercase {
                tok.with_normalizer(Some(Lowercase)).map_err(err)?;
            }
            // GPT-2's settings: no prefix space (so decoding is exact), GPT-2's split regex.
            let byte_level = ByteLevel::new(false, true, true);
            tok.with_pre_tokenizer(Some(byte_level));
            let trainer = BpeTrainer::builder()
                .vocab_size(vocab_size)
                .min_frequency(min_frequency)
                .special_tokens(specials)
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect::<HashSet<char>>())
                .show_progress(false)
                .build();
            let mut bpe = BPE::default();
            train_bpe(&mut tok, &trainer, &mut bpe, file_names)?;
            tok.with_model(bpe);
            tok.with_post_processor(Some(byte_level));
            tok.with_decoder(Some(byte_level));
            tok
        }
        TokenizerKind::SentencePieceBpe => {
            let mut tok = Tokenizer::new(BPE::default());
            tok.with_normalizer(Some(NFC)).map_err(err)?;
            let metaspace = Metaspace::new('\u{2581}', PrependScheme::Always, true);
            tok.with_pre_tokenizer(Some(metaspace.clone()));
            let trainer = BpeTrainer::builder()
                .vocab_size(vocab_size)
                .min_frequency(min_frequency)
                .special_tokens(specials)
                .show_progress(false)
                .build();
            let mut bpe = BPE::builder()
                .unk_token(unk.unwrap_or("<unk>").into())
                .build()
                .map_err(err)?;
            train_bpe(&mut tok, &trainer, &mut bpe, file_names)?;
            tok.with_model(bpe);
            let eos = tok
                .token_to_id("</s>")
                .context("a SentencePiece-style tokenizer needs a </s> special token")?;
            let template = TemplateProcessing::builder()
                .try_single("$A </s>")
                .and_then(|b| b.try_pair("$A $B </s>"))
                .map_err(err)?
                .special_tokens(vec![("</s>", eos)])
                .build()
                .map_err(err)?;
            tok.with_post_processor(Some(template));
            tok.with_decoder(Some(metaspace));
            tok
        }
        TokenizerKind::Char => train_char(
            file_names,
            vocab_size,
            specials,
            unk,
            min_frequency,
            lowercase,
        )?,
    };
    // Trained specials must never be split or normalised away at encoding time; the
    // trainers register them already, this only makes sure of it for every recipe.
    tok.add_special_tokens(
        special_tokens
            .iter()
            .map(|t| AddedToken::from(t.clone(), true)),
    )
    .map_err(err)?;
    Ok(TextTokenizer::from_tokenizer(tok))
}

/// The character-level recipe. The trainer only counts characters; the vocabulary is then
/// rebuilt in code-point order (nanoGPT's `sorted(set(text))`), so id `i` is the `i`-th
/// smallest character, with the special tokens after all characters.
fn train_char(
    file_names: Vec<String>,
    vocab_size: usize,
    specials: Vec<AddedToken>,
    unk: Option<&str>,
    min_frequency: u64,
    lowercase: bool,
) -> Result<Tokenizer> {
    let configure = |tok: &mut Tokenizer| -> Result<()> {
        if lowercase {
            tok.with_normalizer(Some(Lowercase)).map_err(err)?;
        }
        // `[\s\S]` is any one character, newline included, in both regex back-ends
        // (Oniguruma does not take `(?s)`); Isolated makes each one its own piece.
        tok.with_pre_tokenizer(Some(
            Split::new(
                SplitPattern::Regex(r"[\s\S]".into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(err)?,
        ));
        Ok(())
    };
    let mut counter = Tokenizer::new(WordLevel::default());
    configure(&mut counter)?;
    let n_specials = specials.len();
    let trainer = WordLevelTrainer::builder()
        .vocab_size(vocab_size.saturating_sub(n_specials))
        .min_frequency(min_frequency)
        .show_progress(false)
        .build()
        .map_err(err)?;
    train(&mut counter, &mut TrainerWrapper::from(trainer), file_names)?;
    let chars: BTreeSet<String> = counter.get_model().get_vocab().into_keys().collect();
    if chars.is_empty() {
        bail!("the training files contain no characters")
    }
    // Strings of one char compare like their code points (UTF-8 preserves the order).
    let vocab = chars
        .into_iter()
        .chain(specials.iter().map(|t| t.content.clone()))
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    // Without an unknown token, an unseen character is an encoding error (as a KeyError in
    // nanoGPT) rather than a silent substitution.
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token(unk.unwrap_or("<unk>").into())
        .build()
        .map_err(err)?;
    let mut tok = Tokenizer::new(model);
    configure(&mut tok)?;
    tok.with_decoder(Some(Fuse::new()));
    Ok(tok)
}

/// Train `bpe` with `trainer` on the words of `files`, as `tok` normalises and splits them,
/// independently of any per-process hash seed.
fn train_bpe(
    tok: &mut Tokenizer,
    trainer: &BpeTrainer,
    bpe: &mut BPE,
    files: Vec<String>,
) -> Result<()> {
    let mut counts = WordCounts::default();
    train(tok, &mut counts, files)?;
    // Fixed keys, and insertion in sorted order: the map iterates the same way every run.
    let hasher = ahash::RandomState::with_seeds(0x686f6e65, 1, 2, 3);
    let mut words = ahash::AHashMap::with_capacity_and_hasher(counts.words.len(), hasher);
    words.extend(
        counts
            .words
            .into_iter()
            .map(|(w, c)| (compact_str::CompactString::from(w), c)),
    );
    trainer
        .do_train(&words, bpe)
        .map_err(|e| anyhow!("tokenizer training failed: {e}"))?;
    Ok(())
}

/// A "trainer" that only counts the words `train_from_files` feeds it (after the tokenizer's
/// normalizer and pre-tokenizer), in a sorted map; the real training happens in [`train_bpe`].
#[derive(Default)]
struct WordCounts {
    words: BTreeMap<String, u64>,
}

impl Trainer for WordCounts {
    type Model = ModelWrapper;

    fn should_show_progress(&self) -> bool {
        false
    }

    fn train(&self, _model: &mut ModelWrapper) -> tokenizers::Result<Vec<AddedToken>> {
        Ok(Vec::new())
    }

    fn feed<I, S, F>(&mut self, iterator: I, process: F) -> tokenizers::Result<()>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        for sequence in iterator {
            for word in process(sequence.as_ref())? {
                *self.words.entry(word).or_default() += 1;
            }
        }
        Ok(())
    }
}

/// Feed `files` through `tok`'s normalizer and pre-tokenizer into `trainer`.
fn train<T>(tok: &mut Tokenizer, trainer: &mut T, files: Vec<String>) -> Result<()>
where
    T: Trainer<Model = ModelWrapper> + Sync,
{
    tok.train_from_files(trainer, files)
        .map_err(|e| anyhow!("tokenizer training failed: {e}"))?;
    Ok(())
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}
