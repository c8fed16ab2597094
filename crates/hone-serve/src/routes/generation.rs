//! `/generate` and `/generate_stream`: TGI's requests to a causal LM (sampled or greedy,
//! streamed per token) or to a translation model (greedy or beam search, whole sentences).

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use hone_core::inference::generate::{FinishReason as HoneFinish, GenerationConfig};

use super::{count_input, Body, Shared};
use crate::api::*;
use crate::error::ApiError;
use crate::models::{GenerationJob, GenerationOutcome, ServedModel, Task, TranslationJob, Worker};
use crate::AppState;

/// 422 for a TGI parameter hone has no implementation of, named.
fn refuse_unsupported(p: &GenerateParameters) -> Result<(), ApiError> {
    let unsupported = [
        (
            "repetition_penalty",
            p.repetition_penalty.is_some_and(|v| v != 1.0),
        ),
        (
            "frequency_penalty",
            p.frequency_penalty.is_some_and(|v| v != 0.0),
        ),
        ("typical_p", p.typical_p.is_some_and(|v| v < 1.0)),
        ("best_of", p.best_of.is_some_and(|v| v > 1)),
        ("watermark", p.watermark),
        ("decoder_input_details", p.decoder_input_details),
        ("top_n_tokens", p.top_n_tokens.is_some_and(|v| v > 0)),
        ("grammar", p.grammar.is_some()),
        ("adapter_id", p.adapter_id.is_some()),
    ];
    match unsupported.iter().find(|(_, set)| *set) {
        Some((name, _)) => Err(ApiError::unprocessable(format!(
            "`{name}` is not supported by hone"
        ))),
        None => Ok(()),
    }
}

/// `max_new_tokens` within the server's limit.
fn check_max_new_tokens(state: &AppState, max_new_tokens: usize) -> Result<(), ApiError> {
    if max_new_tokens == 0 || max_new_tokens > state.options.max_new_tokens {
        return Err(ApiError::unprocessable(format!(
            "`max_new_tokens` must be between 1 and {}. Given: {max_new_tokens}",
            state.options.max_new_tokens
        )));
    }
    Ok(())
}

/// A TGI request as hone's generation settings, or 422 naming the parameter.
fn generation_config(
    state: &AppState,
    model: &ServedModel,
    prompt_tokens: usize,
    p: &GenerateParameters,
) -> Result<GenerationConfig, ApiError> {
    refuse_unsupported(p)?;
    if p.num_beams.is_some_and(|b| b > 1) {
        return Err(ApiError::unprocessable(
            "`num_beams` is for translation models; a causal LM samples or decodes greedily",
        ));
    }
    if p.temperature.is_some_and(|t| t.is_nan() || t <= 0.0) {
        return Err(ApiError::unprocessable(
            "`temperature` must be strictly positive",
        ));
    }
    if p.top_p.is_some_and(|t| t.is_nan() || t <= 0.0 || t >= 1.0) {
        return Err(ApiError::unprocessable("`top_p` must be > 0.0 and < 1.0"));
    }
    if p.top_k == Some(0) {
        return Err(ApiError::unprocessable("`top_k` must be strictly positive"));
    }
    let max_new_tokens = p.max_new_tokens.unwrap_or(100);
    check_max_new_tokens(state, max_new_tokens)?;
    let total = model.max_input_length;
    if prompt_tokens + max_new_tokens > total {
        return Err(ApiError::unprocessable(format!(
            "`inputs` tokens + `max_new_tokens` must be <= {total}. Given: {prompt_tokens} \
             `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )));
    }
    // TGI samples when asked to, or when a sampling setting is given.
    let sample = p.do_sample
        || p.temperature.is_some_and(|t| t != 1.0)
        || p.top_k.is_some()
        || p.top_p.is_some();
    Ok(GenerationConfig {
        max_new_tokens,
        temperature: p.temperature.unwrap_or(1.0),
        top_k: p.top_k,
        top_p: p.top_p,
        seed: p.seed.unwrap_or(0),
        stop: p.stop.clone(),
        greedy: !sample,
        ..Default::default()
    })
}

fn finish_reason(f: HoneFinish) -> FinishReason {
    match f {
        HoneFinish::Length => FinishReason::Length,
        HoneFinish::Eos => FinishReason::EosToken,
        HoneFinish::Stop => FinishReason::StopSequence,
    }
}

/// Check a generation request and queue it; the permit lives as long as the work.
fn start_generation(
    state: &Shared,
    index: usize,
    req: &GenerateRequest,
    stream: Option<tokio::sync::mpsc::UnboundedSender<StreamToken>>,
) -> Result<(GenerationConfig, GenerationJob), ApiError> {
    let model = &state.models[index];
    if req.inputs.is_empty() {
        return Err(ApiError::unprocessable("`inputs` cannot be empty"));
    }
    let prompt_tokens = model.count_tokens(&[(req.inputs.as_str(), None)], false)?;
    count_input(state, "/generate", prompt_tokens);
    let config = generation_config(state, model, prompt_tokens, &req.parameters)?;
    let job = GenerationJob {
        prompt: req.inputs.clone(),
        config: config.clone(),
        stream,
    };
    Ok((config, job))
}

async fn run_job(
    state: &Shared,
    index: usize,
    job: GenerationJob,
) -> Result<GenerationOutcome, ApiError> {
    let Worker::Generate(worker) = &state.models[index].worker else {
        unreachable!("a causal LM has a generation worker")
    };
    let tokens = job.config.max_new_tokens;
    let mut out = state.in_time(worker.submit(vec![job], tokens)).await?;
    let outcome = out.remove(0);
    state
        .metrics
        .generated_tokens
        .inc_by(outcome.new_tokens as u64);
    Ok(outcome)
}

/// What `/generate` and `/generate_stream` may run.
const GENERATORS: [Task; 2] = [Task::TextGeneration, Task::Translation];

/// `/generate` on a translation model: the whole sentence at once, greedy or beam search.
async fn translate_request(
    state: &Shared,
    model: &ServedModel,
    req: &GenerateRequest,
) -> Result<GenerateResponse, ApiError> {
    let p = &req.parameters;
    refuse_unsupported(p)?;
    let sampling = [
        ("do_sample", p.do_sample),
        ("temperature", p.temperature.is_some()),
        ("top_k", p.top_k.is_some()),
        ("top_p", p.top_p.is_some()),
        ("stop", !p.stop.is_empty()),
    ];
    if let Some((name, _)) = sampling.iter().find(|(_, set)| *set) {
        return Err(ApiError::unprocessable(format!(
            "`{name}` is not supported by translation models (greedy or beam search)"
        )));
    }
    if req.inputs.is_empty() {
        return Err(ApiError::unprocessable("`inputs` cannot be empty"));
    }
    if p.num_beams == Some(0) {
        return Err(ApiError::unprocessable("`num_beams` must be at least 1"));
    }
    if let Some(m) = p.max_new_tokens {
        check_max_new_tokens(state, m)?;
    }
    let tokens = model.count_tokens(&[(req.inputs.as_str(), None)], false)?;
    count_input(state, "/generate", tokens);
    let config = model.generation.translation_config(
        model.max_input_length,
        p.num_beams,
        p.max_new_tokens,
        None,
    );
    let _permit = state.permit()?;
    let Worker::Translate(worker) = &model.worker else {
        unreachable!("a translation model has a translation worker")
    };
    let job = TranslationJob {
        source: req.inputs.clone(),
        config,
    };
    let outcome = state
        .in_time(worker.submit(vec![job], tokens))
        .await?
        .remove(0);
    let t = outcome.translation;
    state.metrics.generated_tokens.inc_by(t.ids.len() as u64);
    Ok(GenerateResponse {
        generated_text: match p.return_full_text {
            Some(true) => format!("{}{}", req.inputs, t.text),
            _ => t.text,
        },
        details: p.details.then_some(Details {
            finish_reason: match outcome.reached_eos {
                true => FinishReason::EosToken,
                false => FinishReason::Length,
            },
            generated_tokens: t.ids.len(),
            seed: None,
        }),
    })
}

pub(super) async fn generate(
    State(state): State<Shared>,
    Body(req): Body<GenerateRequest>,
) -> Result<Json<GenerateResponse>, ApiError> {
    let index = state.pick_index(&GENERATORS, req.model.as_deref())?;
    let model = &state.models[index];
    if model.task == Task::Translation {
        return translate_request(&state, model, &req).await.map(Json);
    }
    let (config, job) = start_generation(&state, index, &req, None)?;
    let _permit = state.permit()?;
    let outcome = run_job(&state, index, job).await?;
    let generated_text = match req.parameters.return_full_text {
        Some(true) => format!("{}{}", req.inputs, outcome.text),
        _ => outcome.text,
    };
    Ok(Json(GenerateResponse {
        generated_text,
        details: req.parameters.details.then(|| Details {
            finish_reason: finish_reason(outcome.finish_reason),
            generated_tokens: outcome.new_tokens,
            seed: (!config.greedy).then_some(config.seed),
        }),
    }))
}

/// TGI's stream: one `data:` event per token, the last with the text and details; an
/// error after the stream has started is an event `{"error": ..., "error_type": ...}`.
pub(super) async fn generate_stream(
    State(state): State<Shared>,
    Body(req): Body<GenerateRequest>,
) -> Result<Response, ApiError> {
    let index = state.pick_index(&GENERATORS, req.model.as_deref())?;
    if state.models[index].task == Task::Translation {
        return Err(ApiError::unprocessable(
            "`/generate_stream` needs a causal LM: a translation model decodes whole \
             sentences (beam search); use /generate",
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<StreamToken>();
    let (config, job) = start_generation(&state, index, &req, Some(tx))?;
    let permit = state.permit()?;
    let (last_tx, last_rx) = tokio::sync::oneshot::channel::<Event>();
    let worker_state = state.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let event = match run_job(&worker_state, index, job).await {
            Ok(outcome) => {
                let token = outcome.last_token.unwrap_or(StreamToken {
                    id: 0,
                    text: String::new(),
                    logprob: None,
                    special: true,
                });
                let last = StreamResponse {
                    index: outcome.new_tokens,
                    token,
                    generated_text: Some(outcome.text),
                    details: Some(Details {
                        finish_reason: finish_reason(outcome.finish_reason),
                        generated_tokens: outcome.new_tokens,
                        seed: (!config.greedy).then_some(config.seed),
                    }),
                };
                Event::default().json_data(last).expect("serialisable")
            }
            Err(e) => Event::default()
                .json_data(json!({"error": e.message, "error_type": e.kind}))
                .expect("serialisable"),
        };
        let _ = last_tx.send(event);
    });
    let mut index = 0;
    let tokens = UnboundedReceiverStream::new(rx).map(move |token| {
        index += 1;
        let event = StreamResponse {
            index,
            token,
            generated_text: None,
            details: None,
        };
        Ok::<_, Infallible>(Event::default().json_data(event).expect("serialisable"))
    });
    // The worker drops the token sender when it is done, then the last event follows.
    let mut last_rx = Some(last_rx);
    let last = tokio_stream::once(()).then(move |_| {
        let last_rx = last_rx.take();
        async move {
            let event = match last_rx {
                Some(rx) => rx.await.ok(),
                None => None,
            };
            Ok::<_, Infallible>(event.unwrap_or_else(|| Event::default().comment("end")))
        }
    });
    Ok(Sse::new(tokens.chain(last)).into_response())
}
