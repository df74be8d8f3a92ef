//! Snapshot and fork routes: `POST /sandboxes/{id}/snapshots`, `GET /snapshots`,
//! `DELETE /templates/{id}` (a snapshot id, percent-decoded as one segment) and
//! `POST /sandboxes/{id}/fork`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use warren_core::manager::SnapshotFilter;
use warren_proto::api::{ApiError, ForkRequest, ForkResult, NewSnapshot, SnapshotInfo};

use crate::AppState;
use crate::error::{ApiFailure, OptionalJsonBody};
use crate::trace::record_sandbox;

use super::to_completion;

/// Page size when the client gives none, and the largest it may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `POST /sandboxes/{id}/snapshots` → 201 SnapshotInfo.
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<NewSnapshot>,
) -> Result<Response, ApiFailure> {
    record_sandbox(&id);
    let manager = state.manager.clone();
    let memory = body.memory.unwrap_or(true);
    let info = to_completion(async move { manager.create_snapshot(&id, body.name, memory).await })
        .await?
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// Query of `GET /snapshots`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// `GET /snapshots` → 200 [SnapshotInfo], cursor in `x-next-token`. The cursor is the
/// position in the oldest-first list.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiFailure> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        let msg = format!("limit must be between 1 and {MAX_LIMIT}");
        return Err(ApiFailure::new(StatusCode::BAD_REQUEST, msg));
    }
    let start = match q.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiFailure::new(StatusCode::BAD_REQUEST, "invalid nextToken"))?,
    };
    let filter = SnapshotFilter {
        sandbox_id: q.sandbox_id,
        name: q.name,
    };
    let all = state
        .manager
        .list_snapshots(filter)
        .await
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    let page: Vec<SnapshotInfo> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|r| SnapshotInfo {
            snapshot_id: r.id.clone(),
            names: r.names.clone(),
        })
        .collect();
    let mut headers = HeaderMap::new();
    let next = start + page.len();
    if next < all.len()
        && let Ok(v) = HeaderValue::from_str(&next.to_string())
    {
        headers.insert("x-next-token", v);
    }
    Ok((StatusCode::OK, headers, Json(page)).into_response())
}

/// `DELETE /templates/{id}` → 204, or 404 when there is no such snapshot.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let deleted = state
        .manager
        .delete_snapshot(&id)
        .await
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiFailure::not_found(format!(
            "snapshot or template {id} not found"
        )))
    }
}

/// `POST /sandboxes/{id}/fork` → 201 [{sandbox} | {error}].
pub async fn fork(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ForkRequest>,
) -> Result<Response, ApiFailure> {
    record_sandbox(&id);
    let manager = state.manager.clone();
    let count = body.count.unwrap_or(1);
    let results = to_completion(async move { manager.fork(&id, count, body.timeout).await })
        .await?
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    let out: Vec<ForkResult> = results
        .into_iter()
        .map(|r| match r {
            Ok(sandbox) => ForkResult {
                sandbox: Some(sandbox),
                error: None,
            },
            Err(e) => {
                let failure = ApiFailure::from_kind(e.kind(), &e);
                ForkResult {
                    sandbox: None,
                    error: Some(ApiError {
                        code: failure.status.as_u16(),
                        message: failure.message,
                        error_code: None,
                    }),
                }
            }
        })
        .collect();
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
