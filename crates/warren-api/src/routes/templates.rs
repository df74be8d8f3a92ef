//! Template routes: E2B's Template builder API (e2b-protocol.md 2.4) and Warren's own
//! archive submission for `warren template build`, over the [`TemplateService`].
//!
//! E2B build flow: `POST /v3/templates` (template and a waiting build), for each COPY source
//! `GET /templates/{id}/files/{hash}` (an upload URL when the server lacks it) and a `PUT` of
//! a tar to that URL, `POST /v2/templates/{id}/builds/{buildID}` (the steps; starts the
//! build), then `GET .../status?logsOffset=N` until `ready` or `error`. The upload URL carries
//! a one-time token instead of needing the API key, because the SDK sends none there.
//!
//! Warren's flow: `POST /warren/templates/builds` with a tar.gz holding `template.toml` and
//! the COPY sources; the server unpacks it into a fresh folder, reads the file and submits
//! the build; the folder is removed when the build ends.
//!
//! Without a template service (servers without a VM runtime) every route answers 501.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use warren_core::templates::{TemplateError, TemplateService};
use warren_proto::api::{
    RebuildTemplate, TemplateBuildStarted, TemplateBuildSummary, TemplateInfo,
};
use warren_template::e2b::{
    self, AssignTemplateTagsRequest, AssignedTemplateTags, DeleteTemplateTagsRequest,
    TemplateAliasResponse, TemplateBuildFileUpload, TemplateBuildRequestV3, TemplateBuildStartV2,
    TemplateRequestResponseV3, TemplateTag,
};
use warren_template::file::TemplateFileError;
use warren_template::layers::BuildContext;
use warren_template::model::TemplateDef;
use warren_template::plan::Force;
use warren_template::registry::{BuildRecord, BuildStatus, TemplateRecord};

use crate::AppState;
use crate::error::{ApiFailure, JsonBody, OptionalJsonBody, chain, read_body};
use crate::staging::{TokenError, UPLOAD_TOKEN_TTL};

/// Largest accepted upload or build-context archive.
pub const MAX_ARCHIVE_BYTES: usize = 512 * 1024 * 1024;

/// Name of the template file at the root of a submitted archive.
pub const TEMPLATE_FILE: &str = "template.toml";

/// How often the cleanup of a build context checks whether its build ended.
const CONTEXT_POLL: Duration = Duration::from_secs(2);

fn service(state: &AppState) -> Result<&TemplateService, ApiFailure> {
    state.templates.as_ref().ok_or_else(|| {
        ApiFailure::new(
            StatusCode::NOT_IMPLEMENTED,
            "templates are not available on this server (it runs without a VM runtime)",
        )
    })
}

fn fail(e: TemplateError) -> ApiFailure {
    ApiFailure::from_kind(e.kind(), &e)
}

fn status_name(status: BuildStatus) -> &'static str {
    match status {
        BuildStatus::Waiting => "waiting",
        BuildStatus::Building => "building",
        BuildStatus::Ready => "ready",
        BuildStatus::Error => "error",
    }
}

/// The API view of a template and its builds (`with_builds`: list them, newest first).
pub fn template_info(
    template: &TemplateRecord,
    builds: &[BuildRecord],
    with_builds: bool,
) -> TemplateInfo {
    let mut own: Vec<&BuildRecord> = builds
        .iter()
        .filter(|b| b.template_id == template.template_id)
        .collect();
    own.sort_by_key(|b| std::cmp::Reverse(b.created_at));
    let latest = own.first();
    let build_id = template
        .current
        .as_ref()
        .map(|c| c.build_id.clone())
        .or_else(|| latest.map(|b| b.build_id.clone()))
        .unwrap_or_default();
    let resources = template
        .current
        .as_ref()
        .map_or(template.def.resources, |c| c.resources);
    let summaries = if with_builds {
        own.iter()
            .map(|b| TemplateBuildSummary {
                build_id: b.build_id.clone(),
                status: status_name(b.status).to_owned(),
                created_at: b.created_at,
                finished_at: b.finished_at,
                reason: b.failure.as_ref().map(|f| f.message.clone()),
                step: b.failure.as_ref().and_then(|f| f.step.clone()),
            })
            .collect()
    } else {
        Vec::new()
    };
    TemplateInfo {
        template_id: template.template_id.clone(),
        build_id,
        cpu_count: resources.vcpus,
        memory_mb: resources.memory_mib,
        public: template.public,
        aliases: vec![template.def.name.clone()],
        names: vec![template.def.name.clone()],
        created_at: template.created_at,
        updated_at: template.updated_at,
        build_status: status_name(latest.map_or(BuildStatus::Waiting, |b| b.status)).to_owned(),
        build_count: u32::try_from(own.len()).unwrap_or(u32::MAX),
        tags: template.tags.clone(),
        builds: summaries,
    }
}

/// `POST /v3/templates` → 202 TemplateRequestResponseV3. `name` (or the deprecated `alias`)
/// is required; a `name:tag` form adds the tag.
pub async fn request_build(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<TemplateBuildRequestV3>,
) -> Result<Response, ApiFailure> {
    let svc = service(&state)?;
    let full = body
        .name
        .clone()
        .or_else(|| body.alias.clone())
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiFailure::bad_request("the template name is required (`name`)"))?;
    let mut tags = body.tags.clone().unwrap_or_default();
    let name = match full.split_once(':') {
        Some((name, tag)) => {
            if !tag.is_empty() && !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_owned());
            }
            name.to_owned()
        }
        None => full,
    };
    let (template, build) = svc
        .request_e2b(&name, tags.clone(), e2b::resources_of(&body))
        .await
        .map_err(fail)?;
    let answer = TemplateRequestResponseV3 {
        template_id: template.template_id,
        build_id: build.build_id,
        public: template.public,
        names: vec![template.def.name.clone()],
        tags,
        aliases: vec![template.def.name],
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// `GET /templates/{templateID}/files/{hash}` → 201 TemplateBuildFileUpload; when the
/// server lacks the files, `url` is a one-time upload URL on this server.
pub async fn upload_link(
    State(state): State<AppState>,
    Path((id, hash)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    let svc = service(&state)?;
    svc.get(&id).await.map_err(fail)?;
    let present = svc.upload_present(&hash).map_err(fail)?;
    let url = if present {
        None
    } else {
        let token = state.upload_tokens.issue(&id, &hash, UPLOAD_TOKEN_TTL);
        let origin = origin(&state, &headers);
        let id = utf8_percent_encode(&id, NON_ALPHANUMERIC);
        Some(format!(
            "{origin}/templates/{id}/files/{hash}/upload?token={token}"
        ))
    };
    let answer = TemplateBuildFileUpload {
        present,
        url,
        headers: None,
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `scheme://host` the client reached this server at.
fn origin(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(axum::http::header::HOST))
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty())
        .map_or_else(|| state.manager.config().listen.to_string(), str::to_owned);
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// `PUT /templates/{templateID}/files/{hash}/upload?token=...` (no API key: the token of
/// the upload link) → 200. The body is a tar or a tar.gz of the files.
pub async fn upload(
    State(state): State<AppState>,
    Path((id, hash)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    req: Request,
) -> Result<StatusCode, ApiFailure> {
    let svc = service(&state)?.clone();
    let token = query
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiFailure::new(StatusCode::UNAUTHORIZED, "missing upload token"))?;
    state
        .upload_tokens
        .redeem(token, &id, &hash)
        .map_err(|e: TokenError| ApiFailure::new(StatusCode::FORBIDDEN, e.to_string()))?;
    let body = read_body(req, &state).await?;
    svc.store_upload(&hash, body.to_vec()).await.map_err(fail)?;
    Ok(StatusCode::OK)
}

/// `POST /v2/templates/{templateID}/builds/{buildID}` → 202 (no body).
pub async fn start_build(
    State(state): State<AppState>,
    Path((id, build_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TemplateBuildStartV2>,
) -> Result<StatusCode, ApiFailure> {
    service(&state)?
        .start_e2b(&id, &build_id, &body)
        .await
        .map_err(fail)?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /templates/{templateID}/builds/{buildID}/status?logsOffset=N` → 200
/// TemplateBuildInfo with the log entries after the first N.
pub async fn build_status(
    State(state): State<AppState>,
    Path((id, build_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiFailure> {
    let svc = service(&state)?;
    let offset = match query.get("logsOffset").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| {
            ApiFailure::bad_request(format!("logsOffset must be a non-negative integer: {v:?}"))
        })?,
    };
    let info = svc.status(&id, &build_id, offset).await.map_err(fail)?;
    Ok((StatusCode::OK, Json(info)).into_response())
}

/// `GET /templates/aliases/{alias}` → 200 TemplateAliasResponse, or 404.
pub async fn alias(
    State(state): State<AppState>,
    Path(alias): Path<String>,
) -> Result<Response, ApiFailure> {
    let svc = service(&state)?;
    let name = alias.split_once(':').map_or(alias.as_str(), |(n, _)| n);
    let (template, _) = svc.get(name).await.map_err(fail)?;
    let answer = TemplateAliasResponse {
        template_id: template.template_id,
        public: template.public,
    };
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// `POST /templates/tags` → 201 AssignedTemplateTags.
pub async fn assign_tags(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AssignTemplateTagsRequest>,
) -> Result<Response, ApiFailure> {
    let (_, build_id) = service(&state)?
        .tag(&body.target, &body.tags)
        .await
        .map_err(fail)?;
    let answer = AssignedTemplateTags {
        tags: body.tags,
        build_id,
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /templates/tags` → 204.
pub async fn delete_tags(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DeleteTemplateTagsRequest>,
) -> Result<StatusCode, ApiFailure> {
    service(&state)?
        .untag(&body.name, &body.tags)
        .await
        .map_err(fail)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /templates/{templateID}/tags` → 200 [TemplateTag].
pub async fn list_tags(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    let (template, builds) = service(&state)?.get(&id).await.map_err(fail)?;
    let tags: Vec<TemplateTag> = template
        .tags
        .iter()
        .map(|(tag, build_id)| {
            let build = builds.iter().find(|b| &b.build_id == build_id);
            let created_at = build
                .and_then(|b| b.finished_at)
                .or_else(|| build.map(|b| b.created_at))
                .unwrap_or(template.updated_at);
            TemplateTag {
                tag: tag.clone(),
                build_id: build_id.clone(),
                created_at,
            }
        })
        .collect();
    Ok((StatusCode::OK, Json(tags)).into_response())
}

/// `GET /templates` → 200 [TemplateInfo] (name order, without builds).
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiFailure> {
    let all = service(&state)?.list().await.map_err(fail)?;
    let out: Vec<TemplateInfo> = all
        .iter()
        .map(|(t, builds)| template_info(t, builds, false))
        .collect();
    Ok((StatusCode::OK, Json(out)).into_response())
}

/// `GET /templates/{templateID}` (id or name) → 200 TemplateInfo with its builds.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    let (template, builds) = service(&state)?.get(&id).await.map_err(fail)?;
    let info = template_info(&template, &builds, true);
    Ok((StatusCode::OK, Json(info)).into_response())
}

/// `POST /templates/{templateID}` (rebuild; optional `{force}`) → 202 TemplateBuildStarted.
pub async fn rebuild(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<RebuildTemplate>,
) -> Result<Response, ApiFailure> {
    let build = service(&state)?
        .rebuild(&id, body.force.unwrap_or(false))
        .await
        .map_err(fail)?;
    let answer = TemplateBuildStarted {
        template_id: build.template_id,
        build_id: build.build_id,
        name: build.def.name,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// `DELETE /templates/{id}` → 204: a template (by name or id) when there is one, else a
/// snapshot (the SDKs' `delete_snapshot`), else 404. Snapshot ids always hold a `:`, which
/// template names cannot, so ids with a `:` go to the snapshots directly.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    if let Some(svc) = &state.templates
        && !id.contains(':')
        && svc.delete(&id).await.map_err(fail)?
    {
        return Ok(StatusCode::NO_CONTENT);
    }
    super::snapshots::delete(State(state), Path(id)).await
}

/// Why a submitted archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot unpack the build context (a tar or tar.gz is expected)")]
    Unpack(#[source] std::io::Error),
    #[error("the archive has no {TEMPLATE_FILE} at its root")]
    NoTemplateFile,
    #[error("invalid {TEMPLATE_FILE}")]
    File(#[source] TemplateFileError),
}

/// Unpacks `body` (tar or tar.gz) into `dir` and reads its template file.
pub fn unpack_context(
    body: &[u8],
    dir: &FsPath,
) -> Result<(TemplateDef, BuildContext), ArchiveError> {
    std::fs::create_dir_all(dir).map_err(ArchiveError::Unpack)?;
    warren_core::templates::unpack_archive(body, dir, false).map_err(ArchiveError::Unpack)?;
    let file = dir.join(TEMPLATE_FILE);
    if !file.is_file() {
        return Err(ArchiveError::NoTemplateFile);
    }
    warren_template::file::load(&file).map_err(ArchiveError::File)
}

/// `POST /warren/templates/builds?force=true|false` with a tar.gz body (`template.toml` and
/// the COPY sources at their relative paths) → 202 TemplateBuildStarted.
pub async fn submit_archive(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiFailure> {
    let svc = service(&state)?.clone();
    let force = match query.get("force").map(String::as_str) {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(ApiFailure::bad_request(format!(
                "force must be true or false, not {other:?}"
            )));
        }
    };
    if body.is_empty() {
        return Err(ApiFailure::bad_request(
            "the request body must be a tar.gz of the build context",
        ));
    }
    let root = state.manager.config().templates_dir().join("contexts");
    let contexts = state.build_contexts.clone();
    let dir = contexts.reserve(&root);
    let unpacked = {
        let (dir, root, contexts) = (dir.clone(), root.clone(), contexts.clone());
        tokio::task::spawn_blocking(move || {
            contexts.sweep(&root);
            unpack_context(&body, &dir)
        })
        .await
    };
    let (def, ctx) = match unpacked {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => {
            contexts.release(&dir);
            return Err(ApiFailure::bad_request(chain(&e)));
        }
        Err(e) => {
            contexts.release(&dir);
            return Err(ApiFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unpacking the build context failed: {e}"),
            ));
        }
    };
    let force = Force {
        all: force,
        ..Force::default()
    };
    let (template, build) = match svc.submit(def, ctx, force).await {
        Ok(submitted) => submitted,
        Err(e) => {
            contexts.release(&dir);
            return Err(fail(e));
        }
    };
    tokio::spawn(release_when_done(
        svc,
        template.template_id.clone(),
        build.build_id.clone(),
        contexts,
        dir,
    ));
    let answer = TemplateBuildStarted {
        template_id: template.template_id,
        build_id: build.build_id,
        name: template.def.name,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Removes a build's context folder once the build is ready, failed or gone.
async fn release_when_done(
    svc: TemplateService,
    template_id: String,
    build_id: String,
    contexts: crate::staging::ContextDirs,
    dir: PathBuf,
) {
    loop {
        match svc.status(&template_id, &build_id, usize::MAX).await {
            Ok(info) if matches!(info.status, BuildStatus::Waiting | BuildStatus::Building) => {
                tokio::time::sleep(CONTEXT_POLL).await;
            }
            Ok(_) => break,
            Err(e) if e.kind() == warren_core::manager::ErrorKind::NotFound => break,
            Err(e) => {
                tracing::debug!(error = %chain(&e), "cannot check a build; retrying");
                tokio::time::sleep(CONTEXT_POLL).await;
            }
        }
    }
    contexts.release(&dir);
}
