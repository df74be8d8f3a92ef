//! envd's plain-HTTP file transfer: `GET /files` (download) and `POST /files` (upload).
//!
//! Both stream between the socket and the disk in chunks; nothing holds a whole file.
//! Access: `X-Access-Token`, or a pre-signed URL (`signature`, `signature_expiration`).
//! Errors are JSON `{"code": <status>, "message": ...}` as the SDKs expect.
//!
//! Compression (design decision): Python sends `Accept-Encoding: gzip, deflate` on every
//! download, so "gzip is acceptable" says nothing about what the user asked for. A download
//! is gzip-compressed only when gzip is the *only* coding the client lists (what the SDKs
//! send for `gzip=True`); otherwise it is sent as is, with a `Content-Length` (the JS SDK
//! detects empty files by `content-length: 0`). Compressed downloads have no length.
//! Uploads accept `Content-Encoding: gzip` on octet-stream bodies; decompression happens
//! chunk by chunk, so a highly compressed chunk can expand in memory up to its ratio
//! (known shortcoming: no cap on a single chunk's expansion).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio_util::io::ReaderStream;
use warren_proto::signature::{FileOperation, verify_file_url_signature};

use crate::fs::{chown_to, create_dirs_owned, resolve_path};
use crate::state::AppState;
use crate::user::User;

/// Query parameters of `/files`.
#[derive(Debug, Deserialize)]
pub struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<i64>,
}

#[derive(Serialize)]
struct WrittenEntry {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    path: String,
}

/// An HTTP error of the files API.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn io(err: &std::io::Error, what: &str, path: &Path) -> Self {
        let status = match err.kind() {
            std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
            std::io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            _ => match err.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT) => StatusCode::INSUFFICIENT_STORAGE,
                Some(libc::EISDIR | libc::ENOTDIR) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        Self::new(status, format!("{what} {}: {err}", path.display()))
    }

    /// The JSON response.
    pub fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    q: &FilesQuery,
    op: FileOperation,
) -> Result<User, HttpError> {
    let settings = state.settings();
    let presented = headers.get("x-access-token").and_then(|v| v.to_str().ok());
    let allowed = match (&settings.access_token, presented, &q.signature) {
        (None, _, _) => true,
        (Some(_), Some(p), _) if state.token_ok(Some(p)) => true,
        (Some(token), _, Some(sig)) => {
            let unexpired = q
                .signature_expiration
                .is_none_or(|exp| exp >= chrono::Utc::now().timestamp());
            unexpired
                && verify_file_url_signature(
                    sig,
                    q.path.as_deref().unwrap_or(""),
                    op,
                    q.username.as_deref().unwrap_or(""),
                    token,
                    q.signature_expiration,
                )
        }
        _ => false,
    };
    if !allowed {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "invalid access token or signature",
        ));
    }
    User::resolve(q.username.as_deref(), &settings.default_user)
        .map_err(|e| HttpError::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

fn wants_gzip_only(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let codings: Vec<&str> = value
        .split(',')
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "identity")
        .collect();
    codings == ["gzip"]
}

fn gzip_stream(file: tokio::fs::File) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    async_stream::try_stream! {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut chunks = ReaderStream::with_capacity(file, 64 * 1024);
        while let Some(chunk) = chunks.next().await {
            enc.write_all(&chunk?)?;
            let out = std::mem::take(enc.get_mut());
            if !out.is_empty() {
                yield Bytes::from(out);
            }
        }
        yield Bytes::from(enc.finish()?);
    }
}

/// `GET /files`.
pub async fn download(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<FilesQuery>,
) -> Response {
    match download_inner(&state, &headers, &q).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn download_inner(
    state: &AppState,
    headers: &HeaderMap,
    q: &FilesQuery,
) -> Result<Response, HttpError> {
    let user = authorize(state, headers, q, FileOperation::Read)?;
    let raw = q
        .path
        .as_deref()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| HttpError::new(StatusCode::BAD_REQUEST, "path is required"))?;
    let path = resolve_path(raw, &user);
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| HttpError::io(&e, "reading", &path))?;
    if meta.is_dir() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("path {} is a directory", path.display()),
        ));
    }
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| HttpError::io(&e, "opening", &path))?;
    let mut resp = if wants_gzip_only(headers) {
        let mut r = Body::from_stream(gzip_stream(file)).into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        let mut r = Body::from_stream(ReaderStream::with_capacity(file, 64 * 1024)).into_response();
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
        r
    };
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// `POST /files`: multipart (`file` parts, filename = destination) or octet-stream.
pub async fn upload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<FilesQuery>,
    body: Body,
) -> Response {
    match upload_inner(&state, &headers, &q, body).await {
        Ok(written) => axum::Json(written).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn upload_inner(
    state: &AppState,
    headers: &HeaderMap,
    q: &FilesQuery,
    body: Body,
) -> Result<Vec<WrittenEntry>, HttpError> {
    let user = authorize(state, headers, q, FileOperation::Write)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let query_path = q.path.as_deref().filter(|p| !p.is_empty());
    let mut written = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let mut multipart = multer::Multipart::new(body.into_data_stream(), boundary);
        let bad = |e: multer::Error| HttpError::new(StatusCode::BAD_REQUEST, e.to_string());
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            let dest = match (query_path, field.file_name()) {
                (Some(p), _) => p.to_owned(),
                (None, Some(name)) if !name.is_empty() => name.to_owned(),
                _ => continue,
            };
            let path = resolve_path(&dest, &user);
            let chunks = field.map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
            written.push(write_file(&path, &user, chunks, false).await?);
        }
    } else {
        let dest = query_path
            .ok_or_else(|| HttpError::new(StatusCode::BAD_REQUEST, "path is required"))?;
        let gzip = match headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
        {
            None | Some("identity" | "") => false,
            Some("gzip") => true,
            Some(other) => {
                return Err(HttpError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    format!("unsupported content encoding {other}"),
                ));
            }
        };
        let path = resolve_path(dest, &user);
        let chunks = body
            .into_data_stream()
            .map(|r| r.map_err(std::io::Error::other));
        written.push(write_file(&path, &user, chunks, gzip).await?);
    }
    if written.is_empty() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "no file in the request",
        ));
    }
    Ok(written)
}

async fn write_file<S>(
    path: &PathBuf,
    user: &User,
    chunks: S,
    gzip: bool,
) -> Result<WrittenEntry, HttpError>
where
    S: Stream<Item = std::io::Result<Bytes>>,
{
    if tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir()) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("path {} is a directory", path.display()),
        ));
    }
    if let Some(parent) = path.parent() {
        let (parent, user2) = (parent.to_path_buf(), user.clone());
        tokio::task::spawn_blocking(move || {
            create_dirs_owned(&parent, &user2).map_err(|e| HttpError::io(&e, "creating", &parent))
        })
        .await
        .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    }
    let write_err = |e: std::io::Error| HttpError::io(&e, "writing", path);
    let mut file = tokio::fs::File::create(path).await.map_err(write_err)?;
    chown_to(path, user).map_err(write_err)?;
    let mut decoder = gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            )
        })?;
        match decoder.as_mut() {
            Some(dec) => {
                dec.write_all(&chunk).map_err(|e| {
                    HttpError::new(StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}"))
                })?;
                let out = std::mem::take(dec.get_mut());
                file.write_all(&out).await.map_err(write_err)?;
            }
            None => file.write_all(&chunk).await.map_err(write_err)?,
        }
    }
    if let Some(dec) = decoder {
        let rest = dec.finish().map_err(|e| {
            HttpError::new(StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}"))
        })?;
        file.write_all(&rest).await.map_err(write_err)?;
    }
    file.flush().await.map_err(write_err)?;
    Ok(WrittenEntry {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        kind: "file",
        path: path.to_string_lossy().into_owned(),
    })
}
