//! Routes whose runtime support is not there yet: each answers `501` with a JSON error
//! naming the feature, after the API key check, so SDK calls fail clearly.

use axum::http::StatusCode;

use crate::error::ApiFailure;

fn not_implemented(what: &str) -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("{what} is not implemented yet"),
    )
}

pub async fn pause() -> ApiFailure {
    not_implemented("pausing sandboxes")
}

pub async fn resume() -> ApiFailure {
    not_implemented("resuming sandboxes")
}

pub async fn create_snapshot() -> ApiFailure {
    not_implemented("creating snapshots")
}

pub async fn fork() -> ApiFailure {
    not_implemented("forking sandboxes")
}

pub async fn update_network() -> ApiFailure {
    not_implemented("updating sandbox network rules")
}

pub async fn list_snapshots() -> ApiFailure {
    not_implemented("listing snapshots")
}

pub async fn delete_template() -> ApiFailure {
    not_implemented("deleting snapshots and templates")
}
