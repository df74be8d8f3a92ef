//! The control plane's error responses and its JSON body extractors.
//!
//! Every non-2xx answer is `{"code": <status>, "message": ..., "error_code"?: ...}`
//! (e2b-protocol.md 2.1): the Python SDK crashes on anything else. Errors also carry
//! `Should-Retry: false`, because Python otherwise retries 429/502/503/504 even for
//! non-idempotent calls such as create. Body extraction is done here rather than with
//! axum's `Json` so that malformed JSON, wrong types, oversized and missing bodies all get
//! this shape, a clear message and the right status (400 or 413), whatever the
//! `Content-Type` header says.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use warren_core::manager::ErrorKind;
use warren_proto::api::ApiError;

/// An error answer of the control plane.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
    pub error_code: Option<&'static str>,
}

impl ApiFailure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            message: message.into(),
            error_code: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiFailure::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiFailure::new(StatusCode::NOT_FOUND, message)
    }

    /// Maps a manager error by its kind, with the error and its causes as the message.
    pub fn from_kind(kind: ErrorKind, err: &(dyn std::error::Error + 'static)) -> Self {
        let status = match kind {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::TooMany => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::AgentUnavailable => StatusCode::BAD_GATEWAY,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %chain(err), "request failed");
        }
        ApiFailure::new(status, chain(err))
    }
}

/// An error and its sources joined with ": ".
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: self.status.as_u16(),
            message: self.message,
            error_code: self.error_code.map(str::to_owned),
        };
        error_response(self.status, &body)
    }
}

/// Serialises an error body with the headers every error carries.
pub fn error_response(status: StatusCode, body: &ApiError) -> Response {
    let json = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (status, json).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("should-retry", HeaderValue::from_static("false"));
    resp
}

/// A required JSON body.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// A JSON body that may be absent or empty (then `T::default()`).
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

pub(crate) async fn read_body<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<Bytes, ApiFailure> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is too large".to_owned()
        } else {
            format!("cannot read the request body: {}", rejection.body_text())
        };
        ApiFailure::new(status, message)
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiFailure> {
    serde_json::from_slice(bytes).map_err(|err| {
        let what = match err.classify() {
            serde_json::error::Category::Data => "request body has a wrong field",
            serde_json::error::Category::Eof => "request body is incomplete JSON",
            _ => "request body is not valid JSON",
        };
        ApiFailure::bad_request(format!("{what}: {err}"))
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiFailure::bad_request("request body is required"));
        }
        parse(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse(&bytes).map(OptionalJsonBody)
    }
}

/// Turns any non-JSON error response of the API router (405 from routing, 413 from a
/// layer, a panic caught by a layer...) into the JSON error shape.
pub async fn ensure_json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let message = status.canonical_reason().unwrap_or("error").to_owned();
    error_response(status, &ApiError::new(status.as_u16(), message))
}
