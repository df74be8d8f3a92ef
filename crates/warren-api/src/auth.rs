//! API key check of the control plane: every route needs a valid `X-API-KEY`.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiFailure;

/// Middleware answering 401 (JSON) unless `X-API-KEY` is an accepted key.
pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) else {
        return ApiFailure::new(StatusCode::UNAUTHORIZED, "missing X-API-KEY header")
            .into_response();
    };
    match state.manager.verify_api_key(key).await {
        Ok(true) => next.run(req).await,
        Ok(false) => ApiFailure::new(StatusCode::UNAUTHORIZED, "invalid API key").into_response(),
        Err(err) => {
            tracing::error!(error = %crate::error::chain(&err), "cannot check the API key");
            ApiFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot check the API key",
            )
            .into_response()
        }
    }
}
