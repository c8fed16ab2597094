//! Request and response bodies. The shapes are Text Embeddings Inference's (`/embed`,
//! `/predict`, `/tokenize`, `/info`) and Text Generation Inference's (`/generate`,
//! `/generate_stream`), so that their clients work unchanged; `/ner` is hone's own.
//! Fields these servers define and hone does not use are accepted and ignored, as they
//! are there; a sampling option hone cannot honour is refused (422), never ignored.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// `inputs` of `/embed`, `/tokenize` and `/ner`: one string or a batch of strings.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Single(String),
    Batch(Vec<String>),
}

impl Input {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Input::Single(s) => vec![s],
            Input::Batch(b) => b,
        }
    }

    pub fn is_batch(&self) -> bool {
        matches!(self, Input::Batch(_))
    }
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Input;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Input, E> {
                Ok(Input::Single(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Input, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Input::Batch(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One classifier input: a text or a pair of texts.
pub type Sequence = (String, Option<String>);

/// `inputs` of `/predict`, read as TEI reads it: `"text"` and `["text"]` are one input,
/// `["a", "b"]` is one pair, `[["a"], ["b", "c"], ...]` a batch of singles and pairs.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictInput {
    Single(Sequence),
    Batch(Vec<Sequence>),
}

impl<'de> Deserialize<'de> for PredictInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Element {
            Text(String),
            Sequence(Vec<String>),
        }
        struct V;
        const EXPECTED: &str =
            "a string, a pair of strings [string, string] or a batch [[string], [string, string], ...]";
        fn sequence<E: de::Error>(mut v: Vec<String>) -> Result<Sequence, E> {
            match v.len() {
                1 => Ok((v.remove(0), None)),
                2 => {
                    let second = v.pop();
                    Ok((v.remove(0), second))
                }
                n => Err(E::invalid_length(n, &"a text or a pair of texts")),
            }
        }
        impl<'de> Visitor<'de> for V {
            type Value = PredictInput;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PredictInput, E> {
                Ok(PredictInput::Single((v.to_string(), None)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PredictInput, A::Error> {
                match seq.next_element::<Element>()? {
                    None => Err(de::Error::invalid_length(0, &EXPECTED)),
                    Some(Element::Text(first)) => {
                        let second = seq.next_element::<String>()?;
                        if seq.next_element::<String>()?.is_some() {
                            return Err(de::Error::invalid_length(3, &EXPECTED));
                        }
                        Ok(PredictInput::Single((first, second)))
                    }
                    Some(Element::Sequence(first)) => {
                        let mut batch = vec![sequence(first)?];
                        while let Some(v) = seq.next_element::<Vec<String>>()? {
                            batch.push(sequence(v)?);
                        }
                        Ok(PredictInput::Batch(batch))
                    }
                }
            }
        }
        d.deserialize_any(V)
    }
}

fn yes() -> bool {
    true
}

/// `POST /embed` (TEI).
#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    pub inputs: Input,
    /// Cut inputs longer than the model takes instead of refusing them (413).
    #[serde(default)]
    pub truncate: bool,
    /// L2-normalise each embedding.
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Which served model, when several could answer (its directory name).
    #[serde(default)]
    pub model: Option<String>,
}

/// `POST /predict` (TEI).
#[derive(Debug, Deserialize)]
pub struct PredictRequest {
    pub inputs: PredictInput,
    #[serde(default)]
    pub truncate: bool,
    /// Logits instead of probabilities.
    #[serde(default)]
    pub raw_scores: bool,
    #[serde(default)]
    pub model: Option<String>,
    /// Which adapter answers, for a model served with several (`--adapter`); the first by
    /// default.
    #[serde(default)]
    pub adapter: Option<String>,
}

/// One label of a `/predict` answer; a list of them, best first, per input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelScore {
    pub score: f32,
    pub label: String,
}

/// `POST /tokenize` (TEI).
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub inputs: Input,
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    #[serde(default)]
    pub model: Option<String>,
}

/// One token of a `/tokenize` answer: byte offsets `start..stop` into the input (none for
/// a special token the tokenizer added).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimpleToken {
    pub id: u32,
    pub text: String,
    pub special: bool,
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

/// `POST /ner` (hone's): entities with character offsets, as `hone predict` writes them.
#[derive(Debug, Deserialize)]
pub struct NerRequest {
    pub inputs: Input,
    #[serde(default)]
    pub model: Option<String>,
}

/// `POST /generate` and `/generate_stream` (TGI).
#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    pub inputs: String,
    #[serde(default)]
    pub parameters: GenerateParameters,
    #[serde(default)]
    pub model: Option<String>,
}

/// TGI's `parameters`. The ones hone has no implementation for are read so that a
/// request setting them is refused by name rather than silently answered otherwise.
#[derive(Debug, Default, Deserialize)]
pub struct GenerateParameters {
    #[serde(default)]
    pub do_sample: bool,
    pub max_new_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub details: bool,
    /// Prepend the prompt to `generated_text` (TGI's default is false).
    #[serde(default)]
    pub return_full_text: Option<bool>,
    pub repetition_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub typical_p: Option<f64>,
    pub best_of: Option<usize>,
    #[serde(default)]
    pub watermark: bool,
    #[serde(default)]
    pub decoder_input_details: bool,
    pub top_n_tokens: Option<u32>,
    pub grammar: Option<serde_json::Value>,
    pub truncate: Option<usize>,
    pub adapter_id: Option<String>,
    /// hone's: the beam width of a translation model (default: its
    /// generation_config.json, else greedy).
    pub num_beams: Option<usize>,
}

/// Why generation ended, in TGI's words.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Length,
    EosToken,
    StopSequence,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Details {
    pub finish_reason: FinishReason,
    pub generated_tokens: usize,
    pub seed: Option<u64>,
}

/// The answer of `/generate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerateResponse {
    pub generated_text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

/// A streamed token. `text` is what this token adds to the generated text once it is
/// settled (a piece that could still become a stop string waits for the next tokens), so
/// the texts of the events concatenate to `generated_text`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamToken {
    pub id: u32,
    pub text: String,
    /// hone does not compute log-probabilities while streaming: null.
    pub logprob: Option<f32>,
    pub special: bool,
}

/// One server-sent event of `/generate_stream`; the last carries `generated_text` and
/// `details`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamResponse {
    pub index: usize,
    pub token: StreamToken,
    pub generated_text: Option<String>,
    pub details: Option<Details>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predict(json: &str) -> PredictInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn predict_inputs_read_as_tei_reads_them() {
        let one = |s: &str| (s.to_string(), None);
        let pair = |a: &str, b: &str| (a.to_string(), Some(b.to_string()));
        assert_eq!(
            predict(r#""I like you""#),
            PredictInput::Single(one("I like you"))
        );
        assert_eq!(
            predict(r#"["I like you"]"#),
            PredictInput::Single(one("I like you"))
        );
        assert_eq!(
            predict(r#"["a", "b"]"#),
            PredictInput::Single(pair("a", "b"))
        );
        assert_eq!(
            predict(r#"[["a"], ["b", "c"]]"#),
            PredictInput::Batch(vec![one("a"), pair("b", "c")])
        );
        for bad in [r#"[]"#, r#"["a", "b", "c"]"#, r#"[["a", "b", "c"]]"#, "3"] {
            assert!(serde_json::from_str::<PredictInput>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inputs_are_a_string_or_strings() {
        let single: Input = serde_json::from_str(r#""x""#).unwrap();
        assert_eq!(single, Input::Single("x".into()));
        let batch: Input = serde_json::from_str(r#"["x", "y"]"#).unwrap();
        assert_eq!(batch.into_vec(), vec!["x".to_string(), "y".to_string()]);
        let err = serde_json::from_str::<Input>("[1]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid type: integer"), "{err}");
    }

    #[test]
    fn tgi_parameters_default_when_absent() {
        let r: GenerateRequest = serde_json::from_str(r#"{"inputs": "Hi"}"#).unwrap();
        assert_eq!(r.parameters.max_new_tokens, None);
        assert!(!r.parameters.do_sample && r.parameters.stop.is_empty());
    }
}
