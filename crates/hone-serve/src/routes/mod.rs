//! The routes, and what every request goes through: the API key, the in-flight limit, the
//! body limit, JSON that names the field it fails at, the timeout, the metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::OwnedSemaphorePermit;

use crate::api::*;
use crate::error::{ApiError, ErrorType};
use crate::models::{ServedModel, Task, Worker};
use crate::AppState;

mod generation;

type Shared = Arc<AppState>;

/// Every route, with the layers every request goes through.
pub fn router(state: Shared) -> Router {
    let guarded = Router::new()
        .route("/embed", post(embed))
        .route("/predict", post(predict))
        .route("/tokenize", post(tokenize))
        .route("/ner", post(ner))
        .route("/generate", post(generation::generate))
        .route("/generate_stream", post(generation::generate_stream))
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

    /// The classifier and adapter slot a `/predict` request asks for: the model holding
    /// adapter `adapter` when named (404 if none does), else [`Self::pick`]'s with slot 0.
    fn pick_adapter(
        &self,
        name: Option<&str>,
        adapter: Option<&str>,
    ) -> Result<(&ServedModel, u32), ApiError> {
        let Some(adapter) = adapter else {
            return Ok((self.pick(&[Task::Classification], name)?, 0));
        };
        self.models
            .iter()
            .filter(|m| m.task == Task::Classification && name.is_none_or(|n| m.name == n))
            .find_map(|m| {
                let slot = m.adapters.iter().position(|a| a == adapter)?;
                Some((m, slot as u32))
            })
            .ok_or_else(|| {
                let served: Vec<&str> = self
                    .models
                    .iter()
                    .flat_map(|m| m.adapters.iter().map(String::as_str))
                    .collect();
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorType::NotFound,
                    format!(
                        "no adapter `{adapter}` is served (adapters: {})",
                        served.join(", ")
                    ),
                )
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
    let (model, slot) = state.pick_adapter(req.model.as_deref(), req.adapter.as_deref())?;
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
    let routed = inputs.into_iter().map(|s| (s, slot)).collect();
    let predictions = state.in_time(worker.submit(routed, tokens)).await?;
    let scored: Vec<Vec<LabelScore>> = predictions
        .into_iter()
        .map(|p| {
            let mut scores: Vec<LabelScore> = if req.raw_scores {
                model
                    .labels_of(slot)
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
                "adapters": m.adapters,
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
