//! The routes, and what every request goes through: the API key, the in-flight limit, the
//! body limit, JSON that names the field it fails at, the timeout, the metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::OwnedSemaphorePermit;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use hone_core::inference::generate::{FinishReason as HoneFinish, GenerationConfig};

use crate::api::*;
use crate::error::{ApiError, ErrorType};
use crate::models::{GenerationJob, GenerationOutcome, ServedModel, Task, TranslationJob, Worker};
use crate::AppState;

type Shared = Arc<AppState>;

/// Every route, with the layers every request goes through.
pub fn router(state: Shared) -> Router {
    let guarded = Router::new()
        .route("/embed", post(embed))
        .route("/predict", post(predict))
        .route("/tokenize", post(tokenize))
        .route("/ner", post(ner))
        .route("/generate", post(generate))
        .route("/generate_stream", post(generate_stream))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/health", get(health))
        .merge(guarded)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.options.payload_limit,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Requests by route and status, and their latency.
async fn record(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let start = Instant::now();
    state.metrics.in_flight.inc();
    let response = next.run(req).await;
    state.metrics.in_flight.dec();
    state
        .metrics
        .requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[&route])
        .observe(start.elapsed().as_secs_f64());
    response
}

/// With `--api-key`, `Authorization: Bearer KEY`, compared in constant time.
async fn require_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.options.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorType::Unauthorized,
                "missing or wrong API key (Authorization: Bearer KEY)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorType::NotFound, "no such route")
}

/// A JSON body: any content type, a clear 400 that names the field, 413 past the limit.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), ErrorType::Validation, e.body_text()))?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || !inner.is_data() {
                ApiError::bad_request(format!("invalid JSON body: {inner}"))
            } else {
                ApiError::bad_request(format!("`{path}`: {inner}"))
            }
        })?;
        Ok(Body(value))
    }
}

impl AppState {
    /// The model that serves one of `tasks` (the one named `name` when several do).
    fn pick(&self, tasks: &[Task], name: Option<&str>) -> Result<&ServedModel, ApiError> {
        Ok(&self.models[self.pick_index(tasks, name)?])
    }

    /// [`Self::pick`]'s model as its place in `models` (what a spawned task keeps).
    fn pick_index(&self, tasks: &[Task], name: Option<&str>) -> Result<usize, ApiError> {
        let mut candidates =
            (0..self.models.len()).filter(|&i| tasks.contains(&self.models[i].task));
        let found = match name {
            Some(name) => candidates.find(|&i| self.models[i].name == name),
            None => candidates.next(),
        };
        found.ok_or_else(|| {
            let kinds: Vec<String> = tasks.iter().map(|t| format!("{t:?}")).collect();
            let kinds = kinds.join(" or ");
            let what = match name {
                Some(name) => format!("no {kinds} model named `{name}` is served"),
                None => format!("this server holds no {kinds} model for this route"),
            };
            ApiError::new(StatusCode::NOT_FOUND, ErrorType::NotFound, what)
        })
    }

    /// A place among the requests in flight, or 429.
    fn permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded())
    }

    /// `work` within the request timeout, or 504.
    async fn in_time<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        tokio::time::timeout(self.options.request_timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorType::Timeout,
                    format!(
                        "the request was not answered within {} ms",
                        self.options.request_timeout.as_millis()
                    ),
                ))
            })
    }

    /// Between 1 and `--max-client-batch-size` inputs (TEI's checks and words).
    fn check_batch(&self, n: usize) -> Result<(), ApiError> {
        if n == 0 {
            return Err(ApiError::unprocessable("`inputs` cannot be empty"));
        }
        let max = self.options.max_client_batch_size;
        if n > max {
            return Err(ApiError::unprocessable(format!(
                "batch size {n} > maximum allowed batch size {max}"
            )));
        }
        Ok(())
    }
}

async fn health(State(state): State<Shared>) -> Response {
    if state.shutting_down() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Unhealthy,
            "shutting down",
        )
        .into_response();
    }
    StatusCode::OK.into_response()
}

async fn embed(
    State(state): State<Shared>,
    Body(req): Body<EmbedRequest>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    let model = state.pick(&[Task::Embedding], req.model.as_deref())?;
    let texts = req.inputs.into_vec();
    state.check_batch(texts.len())?;
    let pairs: Vec<_> = texts.iter().map(|t| (t.as_str(), None)).collect();
    let tokens = model.count_tokens(&pairs, req.truncate)?;
    count_input(&state, "/embed", tokens);
    let _permit = state.permit()?;
    let Worker::Embed(worker) = &model.worker else {
        unreachable!("an embedding model has an embedding worker")
    };
    let mut out = state.in_time(worker.submit(texts, tokens)).await?;
    if req.normalize {
        for v in &mut out {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Ok(Json(out))
}

async fn predict(
    State(state): State<Shared>,
    Body(req): Body<PredictRequest>,
) -> Result<Response, ApiError> {
    let model = state.pick(&[Task::Classification], req.model.as_deref())?;
    let (inputs, batch) = match req.inputs {
        PredictInput::Single(s) => (vec![s], false),
        PredictInput::Batch(b) => (b, true),
    };
    state.check_batch(inputs.len())?;
    let pairs: Vec<_> = inputs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_deref()))
        .collect();
    let tokens = model.count_tokens(&pairs, req.truncate)?;
    count_input(&state, "/predict", tokens);
    let _permit = state.permit()?;
    let Worker::Classify(worker) = &model.worker else {
        unreachable!("a classifier has a classification worker")
    };
    let predictions = state.in_time(worker.submit(inputs, tokens)).await?;
    let scored: Vec<Vec<LabelScore>> = predictions
        .into_iter()
        .map(|p| {
            let mut scores: Vec<LabelScore> = if req.raw_scores {
                model
                    .labels
                    .iter()
                    .zip(&p.logits)
                    .map(|(label, &score)| LabelScore {
                        score,
                        label: label.clone(),
                    })
                    .collect()
            } else {
                p.probabilities
                    .into_iter()
                    .map(|(label, score)| LabelScore { score, label })
                    .collect()
            };
            scores.sort_by(|a, b| b.score.total_cmp(&a.score));
            scores
        })
        .collect();
    Ok(if batch {
        Json(scored).into_response()
    } else {
        Json(scored.into_iter().next()).into_response()
    })
}

async fn tokenize(
    State(state): State<Shared>,
    Body(req): Body<TokenizeRequest>,
) -> Result<Json<Vec<Vec<SimpleToken>>>, ApiError> {
    // Any served model with a tokenizer will do; the named one if given.
    let model = match &req.model {
        Some(name) => state.models.iter().find(|m| &m.name == name),
        None => state.models.first(),
    }
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, ErrorType::NotFound, "no such model"))?;
    let texts = req.inputs.into_vec();
    state.check_batch(texts.len())?;
    let tokenizer = model.tokenizer.inner();
    let mut out = Vec::with_capacity(texts.len());
    for text in &texts {
        let enc = tokenizer
            .encode(text.as_str(), req.add_special_tokens)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorType::Tokenizer,
                    format!("cannot tokenize: {e}"),
                )
            })?;
        let tokens = enc
            .get_ids()
            .iter()
            .zip(enc.get_tokens())
            .zip(enc.get_offsets().iter().zip(enc.get_special_tokens_mask()))
            .map(|((&id, token), (&(start, stop), &special))| {
                let special = special == 1;
                SimpleToken {
                    id,
                    text: if special {
                        token.clone()
                    } else {
                        text.get(start..stop).unwrap_or(token).to_string()
                    },
                    special,
                    start: (!special).then_some(start),
                    stop: (!special).then_some(stop),
                }
            })
            .collect();
        out.push(tokens);
    }
    Ok(Json(out))
}

async fn ner(
    State(state): State<Shared>,
    Body(req): Body<NerRequest>,
) -> Result<Response, ApiError> {
    let model = state.pick(&[Task::TokenClassification], req.model.as_deref())?;
    let batch = req.inputs.is_batch();
    let texts = req.inputs.into_vec();
    state.check_batch(texts.len())?;
    // Long texts are read in overlapping windows: no length limit but the body's.
    let pairs: Vec<_> = texts.iter().map(|t| (t.as_str(), None)).collect();
    let tokens = model.count_tokens(&pairs, true)?;
    count_input(&state, "/ner", tokens);
    let _permit = state.permit()?;
    let Worker::Ner(worker) = &model.worker else {
        unreachable!("a token classifier has a token-classification worker")
    };
    let out = state.in_time(worker.submit(texts, tokens)).await?;
    let mut entities: Vec<_> = out.into_iter().map(|t| t.entities).collect();
    Ok(if batch {
        Json(entities).into_response()
    } else {
        Json(entities.remove(0)).into_response()
    })
}

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

async fn generate(
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
async fn generate_stream(
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

fn count_input(state: &AppState, route: &str, tokens: usize) {
    state
        .metrics
        .input_tokens
        .with_label_values(&[route])
        .inc_by(tokens as u64);
}

async fn info(State(state): State<Shared>) -> Json<serde_json::Value> {
    let o = &state.options;
    let models: Vec<_> = state
        .models
        .iter()
        .map(|m| {
            json!({
                "model_id": m.name,
                "model_path": m.path.display().to_string(),
                "model_class": m.class_name,
                "task": m.task,
                "labels": m.labels,
                "max_input_length": m.max_input_length,
            })
        })
        .collect();
    let first = state.models.first();
    // TEI's own fields describe the first model; `models` lists every one.
    let model_type = first.map(|m| match m.task {
        Task::Embedding => json!({"embedding": {"pooling": format!("{:?}", o.pooling).to_lowercase()}}),
        Task::Classification | Task::TokenClassification => json!({"classifier": {
            "id2label": m.labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect::<std::collections::BTreeMap<_, _>>(),
            "label2id": m.labels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect::<std::collections::BTreeMap<_, _>>(),
        }}),
        Task::TextGeneration | Task::Translation => json!({"generation": {}}),
    });
    Json(json!({
        "model_id": first.map(|m| m.name.clone()),
        "model_type": model_type,
        "max_concurrent_requests": o.max_concurrent_requests,
        "max_input_length": first.map(|m| m.max_input_length),
        "max_batch_tokens": o.max_batch_tokens,
        "max_batch_requests": o.max_batch_requests,
        "max_client_batch_size": o.max_client_batch_size,
        "max_wait_ms": o.max_wait.as_millis() as u64,
        "payload_limit": o.payload_limit,
        "request_timeout_ms": o.request_timeout.as_millis() as u64,
        "max_new_tokens": o.max_new_tokens,
        "device": o.device.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "models": models,
    }))
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
