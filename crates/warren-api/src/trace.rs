//! Request ids and the per-request tracing span.
//!
//! Each request gets a span with `request_id` (the client's `X-Request-Id` when it sent a
//! sane one, else a new random id), method and path, plus an empty `sandbox_id` that
//! handlers and the gateway fill in. The id is echoed in the `X-Request-Id` response header.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// Middleware wrapping the request in its span.
pub async fn request_span(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(hex_id);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        sandbox_id = tracing::field::Empty,
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "request done"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", value);
    }
    resp
}

fn hex_id() -> String {
    use rand::Rng as _;
    format!("{:016x}", rand::thread_rng().r#gen::<u64>())
}

/// Records the sandbox a request is about in the current request span.
pub fn record_sandbox(id: &str) {
    tracing::Span::current().record("sandbox_id", id);
}
