//! The REST routes of the control plane (e2b-protocol.md 2.2 and 2.4), all behind the API
//! key except the template file upload, which checks its one-time token instead.
//!
//! - `sandboxes`: create, connect (resuming a paused sandbox), list, get, kill, timeout,
//!   metrics, pause and the legacy resume.
//! - `snapshots`: live snapshots and fork.
//! - `templates`: E2B's template builder API, template listing, tags, rebuild and delete,
//!   and Warren's build-context archive submission.
//! - `pending`: network rules: routed so clients get a clear `501` JSON error until the
//!   runtime supports them.

mod pending;
mod sandboxes;
mod snapshots;
pub mod templates;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post, put};

use crate::AppState;
use crate::error::{ApiFailure, ensure_json_errors};
pub use templates::MAX_ARCHIVE_BYTES;

/// Runs an operation that changes sandboxes (create, kill, pause, resume, snapshot, fork) to
/// its end even if the client goes away. A request handler is dropped when its connection
/// closes; dropped halfway, such an operation would leave what it had done so far (a VM
/// without its record, a half-made snapshot directory, a fork's RAM image in memory) until
/// the next restart. The sandbox it made lives out its timeout like any other.
pub(crate) async fn to_completion<T: Send + 'static>(
    operation: impl Future<Output = T> + Send + 'static,
) -> Result<T, ApiFailure> {
    use tracing::Instrument as _;
    tokio::spawn(operation.in_current_span())
        .await
        .map_err(|e| ApiFailure::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

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
        .route("/v3/templates", post(templates::request_build))
        .route(
            "/v2/templates/{id}/builds/{build_id}",
            post(templates::start_build),
        )
        .route("/templates", get(templates::list))
        .route(
            "/templates/{id}",
            get(templates::get)
                .post(templates::rebuild)
                .delete(templates::delete),
        )
        .route("/templates/{id}/files/{hash}", get(templates::upload_link))
        .route(
            "/templates/{id}/builds/{build_id}/status",
            get(templates::build_status),
        )
        .route("/templates/{id}/tags", get(templates::list_tags))
        .route("/templates/aliases/{alias}", get(templates::alias))
        .route(
            "/templates/tags",
            post(templates::assign_tags).delete(templates::delete_tags),
        )
        .route(
            "/warren/templates/builds",
            post(templates::submit_archive).layer(DefaultBodyLimit::max(MAX_ARCHIVE_BYTES)),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_api_key,
        ))
        // Reached with the token of an upload link, without the API key.
        .route(
            "/templates/{id}/files/{hash}/upload",
            put(templates::upload).layer(DefaultBodyLimit::max(MAX_ARCHIVE_BYTES)),
        )
        .fallback(|| async { ApiFailure::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(ensure_json_errors))
        .with_state(state)
}
