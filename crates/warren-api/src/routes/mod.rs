//! The REST routes of the control plane (e2b-protocol.md 2.2), all behind the API key.
//!
//! - `sandboxes`: create, connect (resuming a paused sandbox), list, get, kill, timeout,
//!   metrics, pause and the legacy resume.
//! - `snapshots`: live snapshots and fork.
//! - `pending`: network rules: routed so clients get a clear `501` JSON error until the
//!   runtime supports them.

mod pending;
mod sandboxes;
mod snapshots;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post, put};

use crate::AppState;
use crate::error::{ApiFailure, ensure_json_errors};

/// Largest accepted control-plane request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The control-plane router (without the gateway).
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v2/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .route("/v2/sandboxes/{id}/connect", post(sandboxes::connect))
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get).delete(sandboxes::kill),
        )
        .route("/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/sandboxes/{id}/metrics", get(sandboxes::metrics))
        .route("/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/sandboxes/{id}/fork", post(snapshots::fork))
        .route("/sandboxes/{id}/network", put(pending::update_network))
        .route("/snapshots", get(snapshots::list))
        .route("/templates/{id}", delete(snapshots::delete))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_api_key,
        ))
        .fallback(|| async { ApiFailure::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(ensure_json_errors))
        .with_state(state)
}
