//! Handlers of `filesystem.Filesystem` (e2b-protocol.md 3.2, 3.5).
//!
//! Blocking filesystem work runs on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use warren_proto::connect::{ConnectError, ErrorCode};
use warren_proto::envd::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, EntryInfo, EntryResponse, GetWatcherEventsRequest,
    GetWatcherEventsResponse, ListDirRequest, ListDirResponse, MakeDirRequest, MoveRequest,
    RemoveRequest, RemoveWatcherRequest, StatRequest, WatchDirRequest, WatchDirResponse,
    WatchStart,
};
use warren_proto::envd::process::{Empty, KeepAlive};

use super::watch::{DirWatch, watch};
use super::{create_dirs_owned, entry_info, io_to_connect, resolve_path};
use crate::rpc::{self, MessageReader, encode, stream_error, stream_response};
use crate::state::AppState;

type AppStateRef = State<Arc<AppState>>;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConnectError> + Send + 'static,
) -> Result<T, ConnectError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ConnectError::internal(format!(
            "filesystem task failed: {e}"
        )))
    })
}

fn require_path(path: &str) -> Result<(), ConnectError> {
    if path.is_empty() {
        return Err(ConnectError::invalid_argument("path is required"));
    }
    Ok(())
}

fn stat(path: &Path) -> Result<EntryInfo, ConnectError> {
    entry_info(path).map_err(|e| io_to_connect(&e, "stat", path))
}

/// `Stat`.
pub async fn stat_rpc(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |_state, ctx, req: StatRequest| async move {
            require_path(&req.path)?;
            let path = resolve_path(&req.path, &ctx.user);
            blocking(move || {
                Ok(EntryResponse {
                    entry: Some(stat(&path)?),
                })
            })
            .await
        },
    )
    .await
}

/// `MakeDir`: creates the directory and its parents; `already_exists` if it exists.
pub async fn make_dir(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |_state, ctx, req: MakeDirRequest| async move {
            require_path(&req.path)?;
            let path = resolve_path(&req.path, &ctx.user);
            blocking(move || {
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => {
                        return Err(ConnectError::new(
                            ErrorCode::AlreadyExists,
                            format!("directory {} already exists", path.display()),
                        ));
                    }
                    Ok(_) => {
                        return Err(ConnectError::invalid_argument(format!(
                            "{} exists and is not a directory",
                            path.display()
                        )));
                    }
                    Err(_) => {}
                }
                create_dirs_owned(&path, &ctx.user)
                    .map_err(|e| io_to_connect(&e, "creating", &path))?;
                Ok(EntryResponse {
                    entry: Some(stat(&path)?),
                })
            })
            .await
        },
    )
    .await
}

/// `Move`: renames, creating the destination's parent directories.
pub async fn move_rpc(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |_state, ctx, req: MoveRequest| async move {
            require_path(&req.source)?;
            require_path(&req.destination)?;
            let source = resolve_path(&req.source, &ctx.user);
            let dest = resolve_path(&req.destination, &ctx.user);
            blocking(move || {
                std::fs::symlink_metadata(&source)
                    .map_err(|e| io_to_connect(&e, "moving", &source))?;
                if let Some(parent) = dest.parent() {
                    create_dirs_owned(parent, &ctx.user)
                        .map_err(|e| io_to_connect(&e, "creating", parent))?;
                }
                std::fs::rename(&source, &dest)
                    .map_err(|e| io_to_connect(&e, "moving", &source))?;
                Ok(EntryResponse {
                    entry: Some(stat(&dest)?),
                })
            })
            .await
        },
    )
    .await
}

fn list(dir: &Path, depth: u32, out: &mut Vec<EntryInfo>) -> Result<(), ConnectError> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_to_connect(&e, "listing", dir))?;
    let mut children: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        // Entries can vanish while listing; skip them rather than failing the listing.
        let Ok(info) = entry_info(&child) else {
            continue;
        };
        let is_dir = info.file_type == warren_proto::envd::filesystem::FileType::Directory;
        out.push(info);
        if depth > 1 && is_dir {
            list(&child, depth - 1, out)?;
        }
    }
    Ok(())
}

/// `ListDir`: depth 0 and 1 list direct children; n lists n levels (symlinks not followed).
pub async fn list_dir(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |_state, ctx, req: ListDirRequest| async move {
            let path = resolve_path(if req.path.is_empty() { "~" } else { &req.path }, &ctx.user);
            blocking(move || {
                let meta =
                    std::fs::metadata(&path).map_err(|e| io_to_connect(&e, "listing", &path))?;
                if !meta.is_dir() {
                    return Err(ConnectError::invalid_argument(format!(
                        "path {} is not a directory",
                        path.display()
                    )));
                }
                let mut entries = Vec::new();
                list(&path, req.depth.max(1), &mut entries)?;
                Ok(ListDirResponse { entries })
            })
            .await
        },
    )
    .await
}

/// `Remove`: files, symlinks and whole directory trees.
pub async fn remove(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |_state, ctx, req: RemoveRequest| async move {
            require_path(&req.path)?;
            let path = resolve_path(&req.path, &ctx.user);
            blocking(move || {
                let meta = std::fs::symlink_metadata(&path)
                    .map_err(|e| io_to_connect(&e, "removing", &path))?;
                let res = if meta.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                res.map_err(|e| io_to_connect(&e, "removing", &path))?;
                Ok(Empty {})
            })
            .await
        },
    )
    .await
}

fn start_watch(req: &WatchDirRequest, ctx: &rpc::RpcContext) -> Result<DirWatch, ConnectError> {
    require_path(&req.path)?;
    let path = resolve_path(&req.path, &ctx.user);
    let meta = std::fs::metadata(&path).map_err(|e| io_to_connect(&e, "watching", &path))?;
    if !meta.is_dir() {
        return Err(ConnectError::invalid_argument(format!(
            "path {} is not a directory",
            path.display()
        )));
    }
    watch(&path, req.recursive, req.include_entry)
        .map_err(|e| ConnectError::internal(format!("{e}: {}", source_text(&e))))
}

fn source_text(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}

/// `WatchDir`: `{"start":{}}`, then events until the client goes away.
pub async fn watch_dir(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    // The request is read first so that the connection stays reusable (see `single`).
    let req: WatchDirRequest = match MessageReader::new(body).single().await {
        Ok(r) => r,
        Err(e) => return stream_error(e),
    };
    let ctx = match rpc::context(&state, &headers) {
        Ok(c) => c,
        Err(e) => return stream_error(e),
    };
    let dir_watch = match start_watch(&req, &ctx) {
        Ok(w) => w,
        Err(e) => return stream_error(e),
    };
    let events = async_stream::stream! {
        // Move the whole watch in: capturing only `events` would drop the watcher itself.
        let mut dir_watch = dir_watch;
        yield encode(&WatchDirResponse::Start(WatchStart {}));
        while let Some(ev) = dir_watch.events.recv().await {
            yield encode(&WatchDirResponse::Filesystem(ev));
        }
    };
    let keepalive = encode(&WatchDirResponse::Keepalive(KeepAlive {})).unwrap_or_default();
    stream_response(events, ctx.deadline, Some((ctx.keepalive, keepalive)))
}

/// `CreateWatcher`.
pub async fn create_watcher(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |state, ctx, req: CreateWatcherRequest| async move {
            let w = start_watch(&req, &ctx)?;
            Ok(CreateWatcherResponse {
                watcher_id: state.watchers.insert(w),
            })
        },
    )
    .await
}

/// `GetWatcherEvents`.
pub async fn get_watcher_events(
    State(state): AppStateRef,
    headers: HeaderMap,
    body: Body,
) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |state, _ctx, req: GetWatcherEventsRequest| async move {
            let events = state.watchers.drain(&req.watcher_id).ok_or_else(|| {
                ConnectError::not_found(format!("watcher {} not found", req.watcher_id))
            })?;
            Ok(GetWatcherEventsResponse { events })
        },
    )
    .await
}

/// `RemoveWatcher`.
pub async fn remove_watcher(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |state, _ctx, req: RemoveWatcherRequest| async move {
            if !state.watchers.remove(&req.watcher_id) {
                return Err(ConnectError::not_found(format!(
                    "watcher {} not found",
                    req.watcher_id
                )));
            }
            Ok(Empty {})
        },
    )
    .await
}
