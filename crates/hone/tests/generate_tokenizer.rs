//! Text generation (KV cache, greedy, sampling, stop strings, streaming) on the tiny GPT-2
//! fixture, and tokenizer training (char, WordPiece, BPE, byte-level BPE) with its CLI.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, IndexOp, Tensor};
use common::*;
use hone_core::inference::generate::{
    generate, generate_ids, FinishReason, GenerationConfig, IdsOutput,
};
use hone_core::model::{CausalLm, Model};
use hone_core::tokenization::train::{train_tokenizer, TokenizerKind};
use hone_core::tokenization::TextTokenizer;

const PROMPT: [u32; 5] = [17, 4, 250, 99, 3];

fn tiny_gpt2() -> std::sync::Arc<dyn CausalLm> {
    let model = Model::load(&fixture("tiny-gpt2"), &Device::Cpu).unwrap();
    model.into_kind::<dyn CausalLm>().unwrap().net
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hone-gen-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn shakespeare() -> PathBuf {
    shared_dir().join("data/tinyshakespeare/input.txt")
}

/// The first `n` lines of `src` in a temp file.
fn head_file(src: &Path, n: usize, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(src).unwrap();
    let head: String = text.lines().take(n).flat_map(|l| [l, "\n"]).collect();
    let path = temp_dir(name).join("corpus.txt");
    std::fs::write(&path, head).unwrap();
    path
}

fn run_ids(model: &dyn CausalLm, cfg: &GenerationConfig) -> IdsOutput {
    generate_ids(model, &PROMPT, cfg, |_| Ok(ControlFlow::Continue(()))).unwrap()
}

fn sampling(seed: u64) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: 24,
        temperature: 1.0,
        seed,
        ..Default::default()
    }
}

/// Next-token logits from a full forward pass without cache over the last `n_positions`
/// ids (nanoGPT's cropping).
fn full_forward_logits(model: &dyn CausalLm, ids: &[u32]) -> Vec<f32> {
    let window = &ids[ids.len().saturating_sub(model.config().max_positions())..];
    let x = Tensor::from_slice(window, (1, window.len()), &Device::Cpu).unwrap();
    let logits = model.forward(&x, None, None).unwrap();
    logits.i((0, window.len() - 1)).unwrap().to_vec1().unwrap()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn cache_and_no_cache_give_the_same_logits_at_every_position() {
    let model = tiny_gpt2();
    // 5 + 80 > 64 positions: the window fills up and the cache has to restart.
    for base in [GenerationConfig::greedy(80), sampling(3)] {
        let cfg = GenerationConfig {
            max_new_tokens: 80,
            output_logits: true,
            ..base
        };
        let cached = run_ids(&*model, &cfg);
        let uncached = run_ids(
            &*model,
            &GenerationConfig {
                use_cache: false,
                ..cfg.clone()
            },
        );
        assert_eq!(cached.new_ids, uncached.new_ids);
        assert_eq!(cached.logits.len(), 80);
        for (step, (a, b)) in cached.logits.iter().zip(&uncached.logits).enumerate() {
            let d = max_abs_diff(a, b);
            assert!(
                d < 1e-4,
                "step {step}: cached and uncached logits differ by {d}"
            );
        }
    }
}

#[test]
fn greedy_is_the_argmax_of_a_full_forward_step_by_step() {
    let model = tiny_gpt2();
    let cfg = GenerationConfig {
        output_logits: true,
        ..GenerationConfig::greedy(70)
    };
    let out = run_ids(&*model, &cfg);
    assert_eq!(out.new_ids.len(), 70);
    assert_eq!(out.finish_reason, FinishReason::Length);
    let mut ids = PROMPT.to_vec();
    for (step, &got) in out.new_ids.iter().enumerate() {
        let logits = full_forward_logits(&*model, &ids);
        assert!(
            max_abs_diff(&logits, &out.logits[step]) < 1e-4,
            "step {step}"
        );
        assert_eq!(got, argmax(&logits), "step {step}");
        ids.push(got);
    }
    // Deterministic: a second run (and temperature 0 instead of the flag) agrees.
    let again = run_ids(
        &*model,
        &GenerationConfig {
            max_new_tokens: 70,
            temperature: 0.0,
            ..Default::default()
        },
    );
    assert_eq!(again.new_ids, out.new_ids);
}

#[test]
fn a_seed_reproduces_a_sample_and_another_seed_does_not() {
    let model = tiny_gpt2();
    let a = run_ids(&*model, &sampling(1));
    let b = run_ids(&*model, &sampling(1));
    let c = run_ids(&*model, &sampling(2));
    assert_eq!(a.new_ids, b.new_ids);
    assert_ne!(a.new_ids, c.new_ids);
    // A random tiny model is close to uniform: sampling must not look like greedy.
    let greedy = run_ids(&*model, &GenerationConfig::greedy(24));
    assert_ne!(a.new_ids, greedy.new_ids);
}

#[test]
fn top_k_one_and_tiny_top_p_are_greedy() {
    let model = tiny_gpt2();
    let greedy = run_ids(&*model, &GenerationConfig::greedy(24));
    for seed in [1, 2] {
        let top_k = run_ids(
            &*model,
            &GenerationConfig {
                top_k: Some(1),
                ..sampling(seed)
            },
        );
        assert_eq!(top_k.new_ids, greedy.new_ids);
        let top_p = run_ids(
            &*model,
            &GenerationConfig {
                top_p: Some(1e-6),
                ..sampling(seed)
            },
        );
        assert_eq!(top_p.new_ids, greedy.new_ids);
    }
    // Restricting to the top 5 keeps every sampled token among the 5 most likely.
    let cfg = GenerationConfig {
        top_k: Some(5),
        output_logits: true,
        ..sampling(9)
    };
    let out = run_ids(&*model, &cfg);
    for (logits, &id) in out.logits.iter().zip(&out.new_ids) {
        let above = logits.iter().filter(|&&l| l > logits[id as usize]).count();
        assert!(above < 5, "token {id} has {above} more likely tokens");
    }
}

#[test]
fn eos_and_callback_stop_generation() {
    let model = tiny_gpt2();
    let greedy = run_ids(&*model, &GenerationConfig::greedy(20));
    let eos = greedy.new_ids[6];
    let first = greedy.new_ids.iter().position(|&t| t == eos).unwrap();
    let out = run_ids(
        &*model,
        &GenerationConfig {
            eos_token_id: Some(eos),
            ..GenerationConfig::greedy(20)
        },
    );
    assert_eq!(out.finish_reason, FinishReason::Eos);
    assert_eq!(out.new_ids, greedy.new_ids[..=first]);

    let mut seen = Vec::new();
    let out = generate_ids(&*model, &PROMPT, &GenerationConfig::greedy(20), |id| {
        seen.push(id);
        Ok(if seen.len() == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.new_ids, greedy.new_ids[..3]);
    assert_eq!(seen, out.new_ids);
}

/// A byte-level BPE of exactly the tiny model's 300 ids, so any generated id decodes.
fn byte_level_300(name: &str) -> TextTokenizer {
    let corpus = head_file(&shakespeare(), 3000, name);
    let tok = train_tokenizer(
        TokenizerKind::ByteLevelBpe,
        &[corpus],
        300,
        vec![],
        0,
        false,
    )
    .unwrap();
    assert_eq!(tok.vocab_size(), 300);
    tok
}

#[test]
fn stop_strings_truncate_and_streaming_concatenates_to_the_text() {
    let model = tiny_gpt2();
    let tok = byte_level_300("stop");
    // The fixture's eos_token_id 0 is this tokenizer's <|endoftext|>, so EOS is live; a
    // fixed sampling seed keeps the test deterministic.
    let cfg = GenerationConfig {
        max_new_tokens: 40,
        ..sampling(5)
    };
    let mut pieces = Vec::new();
    let full = generate(&*model, &tok, "First Citizen:", &cfg, |_, p| {
        pieces.push(p.to_string())
    })
    .unwrap();
    assert_eq!(pieces.concat(), full.text);
    assert_eq!(
        pieces.len(),
        full.new_tokens,
        "one call per generated token"
    );
    assert!(
        pieces.iter().filter(|p| !p.is_empty()).count() > 1,
        "text should arrive in several pieces"
    );
    assert_eq!(
        full.token_ids.len(),
        full.new_tokens + tok.encode("First Citizen:", None).unwrap().len()
    );
    let chars: Vec<(usize, char)> = full.text.char_indices().collect();
    assert!(
        chars.len() >= 8,
        "generated text too short: {:?}",
        full.text
    );

    // Stop at a two-character string from the middle of that text.
    let mid = chars
        .iter()
        .skip(chars.len() / 2)
        .position(|&(_, c)| c != '\u{FFFD}')
        .map(|i| i + chars.len() / 2)
        .unwrap();
    let start = chars[mid].0;
    let end = chars.get(mid + 2).map_or(full.text.len(), |&(i, _)| i);
    let stop = full.text[start..end].to_string();
    let expected = &full.text[..full.text.find(&stop).unwrap()];
    let mut pieces = Vec::new();
    let cut = generate(
        &*model,
        &tok,
        "First Citizen:",
        &GenerationConfig {
            stop: vec![stop.clone()],
            ..cfg.clone()
        },
        |_, p| pieces.push(p.to_string()),
    )
    .unwrap();
    assert_eq!(cut.finish_reason, FinishReason::Stop, "stop {stop:?}");
    assert_eq!(cut.text, expected);
    assert_eq!(
        pieces.concat(),
        expected,
        "no part of the stop string is streamed"
    );
    assert!(cut.new_tokens < full.new_tokens);
}

#[test]
fn char_tokenizer_matches_nanogpt() {
    let path = shakespeare();
    let tok = train_tokenizer(
        TokenizerKind::Char,
        std::slice::from_ref(&path),
        1000,
        vec![],
        0,
        false,
    )
    .unwrap();
    assert_eq!(tok.vocab_size(), 65);
    let text = std::fs::read_to_string(&path).unwrap();
    // nanoGPT: chars = sorted(list(set(data))); stoi = { ch:i for i,ch in enumerate(chars) }
    let chars: Vec<char> = text.chars().collect::<BTreeSet<_>>().into_iter().collect();
    assert_eq!(chars.len(), 65);
    assert_eq!(tok.token_to_id("\n"), Some(0));
    assert_eq!(tok.token_to_id(" "), Some(1));
    let first: String = text.chars().take(1000).collect();
    let expected: Vec<u32> = first
        .chars()
        .map(|c| chars.iter().position(|&x| x == c).unwrap() as u32)
        .collect();
    let enc = tok.encode(&first, None).unwrap();
    assert_eq!(enc.get_ids(), expected.as_slice());
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), first);

    // Saved and loaded back, it still round-trips.
    let file = temp_dir("char").join("tokenizer.json");
    tok.save(&file).unwrap();
    let loaded = TextTokenizer::from_file(&file).unwrap();
    let enc = loaded.encode(&first, None).unwrap();
    assert_eq!(enc.get_ids(), expected.as_slice());
    assert_eq!(loaded.decode(enc.get_ids(), false).unwrap(), first);
}

#[test]
fn char_tokenizer_handles_multibyte_text_and_specials() {
    let dir = temp_dir("char-utf8");
    let corpus = dir.join("corpus.txt");
    let text = "héllo wörld ✓ 🎉\n\ttabs  and  spaces\r\n";
    std::fs::write(&corpus, text).unwrap();
    let tok = train_tokenizer(
        TokenizerKind::Char,
        &[corpus],
        1000,
        vec!["<unk>".into(), "<|endoftext|>".into()],
        0,
        false,
    )
    .unwrap();
    let distinct = text.chars().collect::<BTreeSet<_>>().len();
    assert_eq!(tok.vocab_size(), distinct + 2);
    // Specials come after every character, so character ids stay nanoGPT's.
    assert_eq!(tok.token_to_id("<unk>"), Some(distinct as u32));
    let enc = tok.encode(text, None).unwrap();
    assert_eq!(enc.len(), text.chars().count());
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    // Unseen characters become <unk>; the special token is one token.
    let enc = tok.encode("hé<|endoftext|>Z", None).unwrap();
    assert_eq!(enc.get_tokens(), ["h", "é", "<|endoftext|>", "<unk>"]);
}

#[test]
fn wordpiece_encodes_with_cls_sep_and_survives_save_load() {
    let corpus = head_file(&shared_dir().join("data/sst2/train.tsv"), 2000, "wordpiece");
    let tok = train_tokenizer(TokenizerKind::WordPiece, &[corpus], 1000, vec![], 0, true).unwrap();
    assert!(
        (500..=1000).contains(&tok.vocab_size()),
        "vocab {}",
        tok.vocab_size()
    );
    for (i, t) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .enumerate()
    {
        assert_eq!(tok.token_to_id(t), Some(i as u32), "{t}");
    }
    let text = "The movie was a wonderful, moving experience";
    let enc = tok.encode(text, None).unwrap();
    let tokens = enc.get_tokens();
    assert_eq!(tokens.first().map(String::as_str), Some("[CLS]"));
    assert_eq!(tokens.last().map(String::as_str), Some("[SEP]"));
    assert!(tokens.iter().any(|t| t.starts_with("##")), "{tokens:?}");
    assert!(!enc.get_ids().contains(&1), "no [UNK] expected: {tokens:?}");
    assert_eq!(
        tok.decode(enc.get_ids(), true).unwrap(),
        "the movie was a wonderful, moving experience"
    );

    let file = temp_dir("wordpiece").join("tokenizer.json");
    tok.save(&file).unwrap();
    let loaded = TextTokenizer::from_file(&file).unwrap();
    assert_eq!(loaded.vocab_size(), tok.vocab_size());
    let again = loaded.encode(text, None).unwrap();
    assert_eq!(again.get_ids(), enc.get_ids());
    assert_eq!(again.get_tokens(), enc.get_tokens());
}

#[test]
fn bpe_decodes_words_back() {
    let corpus = head_file(&shakespeare(), 2000, "bpe");
    let tok = train_tokenizer(TokenizerKind::Bpe, &[corpus], 800, vec![], 2, false).unwrap();
    assert!(tok.vocab_size() <= 800);
    let text = "First Citizen : Before we proceed any further , hear me speak .";
    let enc = tok.encode(text, None).unwrap();
    assert!(enc.len() < text.split(' ').map(str::len).sum::<usize>());
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
}

#[test]
fn byte_level_bpe_round_trips_any_utf8() {
    let corpus = head_file(&shakespeare(), 2000, "bytelevel");
    let tok = train_tokenizer(
        TokenizerKind::ByteLevelBpe,
        &[corpus],
        600,
        vec![],
        0,
        false,
    )
    .unwrap();
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    for text in [
        "First Citizen:\nBefore we proceed any further, hear me speak.",
        "  leading and trailing spaces  \t\ttabs\r\n",
        "Grüße, 你好, Ελληνικά, emoji 🎉👍🏽 and \u{0}\u{7f} controls",
        "<|endoftext|>after the special",
        "",
    ] {
        let enc = tok.encode(text, None).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    }
    // Merges were learned: common English is shorter than its bytes.
    let enc = tok.encode("the king and the queen", None).unwrap();
    assert!(enc.len() < 15, "{:?}", enc.get_tokens());
}

fn hone() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hone"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tokenizer_cli_trains_and_encodes() {
    let dir = temp_dir("cli");
    let corpus = head_file(
        &shared_dir().join("data/sst2/train.tsv"),
        2000,
        "cli-corpus",
    );
    let output = dir.join("tokenizer.json");
    run_ok(
        hone()
            .args([
                "tokenizer",
                "train",
                "--model",
                "wordpiece",
                "--vocab-size",
                "800",
            ])
            .arg("--input")
            .arg(&corpus)
            .arg("--output")
            .arg(&output)
            .arg("--lowercase"),
    );
    let stdout = run_ok(
        hone()
            .args(["tokenizer", "encode", "--tokenizer"])
            .arg(&output)
            .arg("A great movie"),
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let lib = TextTokenizer::from_file(&output).unwrap();
    let enc = lib.encode("A great movie", None).unwrap();
    assert_eq!(json["ids"], serde_json::json!(enc.get_ids()));
    assert_eq!(
        json["tokens"],
        serde_json::json!(["[CLS]", "a", "great", "movie", "[SEP]"])
    );

    // The char model through the CLI gives nanoGPT's ids.
    let char_out = dir.join("char.json");
    run_ok(
        hone()
            .args(["tokenizer", "train", "--model", "char", "--input"])
            .arg(shakespeare())
            .arg("--output")
            .arg(&char_out),
    );
    let stdout = run_ok(
        hone()
            .args(["tokenizer", "encode", "--tokenizer"])
            .arg(&char_out)
            .arg("\n a"),
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["ids"], serde_json::json!([0, 1, 39]));

    // A bad model name is one clear error.
    let out = hone()
        .args(["tokenizer", "train", "--model", "sentencepiece", "--input"])
        .arg(&corpus)
        .arg("--output")
        .arg(dir.join("x.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    // clap names the flag, the value and the accepted ones.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'sentencepiece'") && err.contains("wordpiece, bpe, bytelevel-bpe, char"),
        "{err}"
    );
}

#[test]
fn generate_cli_streams_what_the_library_generates() {
    let dir = temp_dir("cli-generate");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-gpt2").join(f), dir.join(f)).unwrap();
    }
    let tok = byte_level_300("cli-generate-tok");
    tok.save(&dir.join("tokenizer.json")).unwrap();
    let prompt = "ROMEO:";
    let stdout = run_ok(
        hone()
            .arg("generate")
            .arg(&dir)
            .args([
                "--prompt",
                prompt,
                "--max-new-tokens",
                "12",
                "--temperature",
                "0.8",
            ])
            .args(["--top-k", "50", "--top-p", "0.9", "--seed", "4"]),
    );
    let model = tiny_gpt2();
    let cfg = GenerationConfig {
        max_new_tokens: 12,
        temperature: 0.8,
        top_k: Some(50),
        top_p: Some(0.9),
        seed: 4,
        ..Default::default()
    };
    let lib = generate(&*model, &tok, prompt, &cfg, |_, _| {}).unwrap();
    assert_eq!(stdout, format!("{prompt}{}\n", lib.text));
}

/// The `tokenizers` trainers number tokens (and break ties between merges) in the order of
/// a hash map with a random seed per map; hone's training must not depend on it, or a
/// pretraining recipe would build a different vocabulary, and so a different model, per run.
#[test]
fn training_twice_gives_the_same_tokenizer() {
    let sst2 = head_file(
        &shared_dir().join("data/sst2/train.tsv"),
        3000,
        "determinism",
    );
    for (kind, size) in [
        (TokenizerKind::WordPiece, 1200),
        (TokenizerKind::Bpe, 900),
        (TokenizerKind::ByteLevelBpe, 700),
    ] {
        let json = || {
            train_tokenizer(kind, std::slice::from_ref(&sst2), size, vec![], 0, true)
                .unwrap()
                .inner()
                .to_string(false)
                .unwrap()
        };
        let first = json();
        for _ in 0..3 {
            assert!(
                json() == first,
                "{kind:?}: a second training gave another tokenizer"
            );
        }
    }
}
