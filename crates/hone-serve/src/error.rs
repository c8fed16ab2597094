//! Errors as Text Embeddings Inference writes them: a status code and
//! `{"error": "...", "error_type": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// TEI's error kinds (its `error_type` field), plus the ones a server of ours adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorType {
    /// The request is malformed or breaks a limit.
    Validation,
    /// The input could not be tokenized.
    Tokenizer,
    /// Too many requests in flight.
    Overloaded,
    /// The model failed (or its worker panicked) on this batch.
    Backend,
    /// The request waited longer than the server's per-request timeout.
    Timeout,
    /// No or a wrong API key.
    Unauthorized,
    /// The route needs a model of a kind the server does not hold.
    NotFound,
    /// The server is shutting down.
    Unhealthy,
}

/// One failed request.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_type: ErrorType,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 400: the body is not the JSON the route takes (the message names the field).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorType::Validation, message)
    }

    /// 422: well-formed, but not something the model can do.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Validation,
            message,
        )
    }

    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Backend,
            message,
        )
    }

    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::Overloaded,
            "Model is overloaded",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.message,
            error_type: self.kind,
        };
        (self.status, Json(body)).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}
