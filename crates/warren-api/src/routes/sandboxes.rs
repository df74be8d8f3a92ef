//! Sandbox routes: thin translation between HTTP and the manager's commands.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use warren_core::manager::CreateSandbox;
use warren_proto::api::{ConnectSandbox, NewSandbox, PauseSandbox, SetTimeout};

use crate::AppState;
use crate::error::{ApiFailure, JsonBody, OptionalJsonBody};
use crate::list_query::parse_list_query;
use crate::trace::record_sandbox;

use super::to_completion;

/// `POST /v2/sandboxes` → 201 Sandbox.
pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewSandbox>,
) -> Result<Response, ApiFailure> {
    let cmd = CreateSandbox {
        template_id: body.template_id,
        timeout: body.timeout,
        metadata: body.metadata.unwrap_or_default(),
        env_vars: body.env_vars.unwrap_or_default(),
        allow_internet: body.allow_internet_access,
        auto_pause: body.auto_pause.unwrap_or(false),
        auto_resume: body.auto_resume.is_some_and(|a| a.enabled),
        ..CreateSandbox::default()
    };
    let manager = state.manager.clone();
    let sandbox = to_completion(async move { manager.create(cmd).await })
        .await?
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    record_sandbox(&sandbox.sandbox_id);
    Ok((StatusCode::CREATED, Json(sandbox)).into_response())
}

/// `POST /v2/sandboxes/{id}/connect` → 200 (running) or 201 (resumed) Sandbox.
pub async fn connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ConnectSandbox>,
) -> Result<Response, ApiFailure> {
    record_sandbox(&id);
    let manager = state.manager.clone();
    let (sandbox, resumed) = to_completion(async move { manager.connect(&id, body.timeout).await })
        .await?
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sandbox)).into_response())
}

/// `GET /v2/sandboxes` → 200 [ListedSandbox], cursor in `x-next-token`.
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiFailure> {
    let filter = parse_list_query(query.as_deref())?;
    let page = state
        .manager
        .list(&filter)
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    let mut headers = HeaderMap::new();
    if let Some(token) = page
        .next_token
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        headers.insert("x-next-token", token);
    }
    Ok((StatusCode::OK, headers, Json(page.items)).into_response())
}

/// `GET /sandboxes/{id}` → 200 SandboxDetail.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    record_sandbox(&id);
    let detail = state
        .manager
        .get(&id)
        .ok_or_else(|| ApiFailure::not_found(not_found_message(&id)))?;
    Ok(Json(detail).into_response())
}

/// `DELETE /sandboxes/{id}` → 204.
pub async fn kill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    record_sandbox(&id);
    let manager = state.manager.clone();
    to_completion(async move { manager.kill(&id).await })
        .await?
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/timeout` → 204.
pub async fn set_timeout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SetTimeout>,
) -> Result<StatusCode, ApiFailure> {
    record_sandbox(&id);
    state
        .manager
        .set_timeout(&id, body.timeout)
        .await
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /sandboxes/{id}/metrics` → 200 [SandboxMetric]; `start`/`end` are accepted but
/// only the current sample exists.
pub async fn metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    record_sandbox(&id);
    let samples = state
        .manager
        .metrics(&id)
        .await
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    Ok(Json(samples).into_response())
}

/// `POST /sandboxes/{id}/pause` → 204; 409 when it is already paused (the SDKs' `false`).
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<PauseSandbox>,
) -> Result<StatusCode, ApiFailure> {
    record_sandbox(&id);
    let manager = state.manager.clone();
    let memory = body.memory.unwrap_or(true);
    let healthy = body.require_healthy_guest.unwrap_or(false);
    to_completion(async move { manager.pause(&id, memory, healthy).await })
        .await?
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/resume` (legacy) → 201 Sandbox; 409 when it is not paused.
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ConnectSandbox>,
) -> Result<Response, ApiFailure> {
    record_sandbox(&id);
    let manager = state.manager.clone();
    let sandbox = to_completion(async move { manager.resume_paused(&id, body.timeout).await })
        .await?
        .map_err(|e| ApiFailure::from_kind(e.kind(), &e))?;
    Ok((StatusCode::CREATED, Json(sandbox)).into_response())
}

fn not_found_message(id: &str) -> String {
    format!("sandbox {id} not found")
}
