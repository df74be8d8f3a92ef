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

pub async fn update_network() -> ApiFailure {
    not_implemented("updating sandbox network rules")
}
