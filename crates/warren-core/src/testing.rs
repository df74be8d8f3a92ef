//! A fake [`Runtime`] for tests without QEMU (feature `testing`).
//!
//! Each "VM" is an HTTP stub agent on `127.0.0.1:0` that implements the private routes of
//! docs/CONTRACTS.md (`/health`, `/init`, `/metrics`, with the token check) and answers
//! every other path by echoing: the response streams the request body back chunk by chunk
//! as it arrives, with the request's method, path, query and selected headers reported in
//! `x-echo-*` response headers. That is enough to test the manager, the REST routes and the
//! gateway's streaming. VMs survive a manager restart as long as the same `FakeRuntime` is
//! used, which is how restart recovery is tested.
//!
//! Snapshots are a directory holding a `fake-snapshot.json` with the source agent's token and
//! whether memory was kept; a VM started from one gets a stub agent that already holds that
//! token, so the host must re-key it with `/init` as it would a restored guest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::runtime::{
    AttachSpec, BoxFuture, Runtime, RuntimeError, SnapshotTaken, StartedVm, VmExit, VmInfo, VmSpec,
};

/// What a stub agent has seen.
#[derive(Debug, Default)]
pub struct FakeAgentState {
    /// Bodies of every `POST /init`, in order.
    pub inits: Mutex<Vec<serde_json::Value>>,
    /// Current access token (set by `/init`).
    pub token: Mutex<Option<String>>,
}

struct FakeVm {
    addr: SocketAddr,
    pid: u32,
    agent: Arc<FakeAgentState>,
    server: tokio::task::JoinHandle<()>,
    exited: watch::Sender<bool>,
}

/// The fake runtime.
#[derive(Default)]
pub struct FakeRuntime {
    vms: Mutex<HashMap<String, FakeVm>>,
    next_pid: AtomicU32,
    fail_start: AtomicBool,
    fail_snapshot: AtomicBool,
    start_delay_ms: AtomicU32,
    /// The `keep` list of the last `collect_garbage`.
    last_keep: Mutex<Option<Vec<std::path::PathBuf>>>,
}

/// The file a fake snapshot consists of.
pub const FAKE_SNAPSHOT_FILE: &str = "fake-snapshot.json";

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime").finish_non_exhaustive()
    }
}

/// Error type of the fake's failures.
#[derive(Debug, thiserror::Error)]
#[error("fake runtime failure: {0}")]
pub struct FakeError(&'static str);

impl FakeRuntime {
    /// A runtime with no VMs.
    pub fn new() -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime {
            next_pid: AtomicU32::new(1000),
            ..Default::default()
        })
    }

    /// Makes every following `start` fail (or succeed again).
    pub fn set_fail_start(&self, fail: bool) {
        self.fail_start.store(fail, Ordering::SeqCst);
    }

    /// Makes every following `snapshot` fail (or succeed again).
    pub fn set_fail_snapshot(&self, fail: bool) {
        self.fail_snapshot.store(fail, Ordering::SeqCst);
    }

    /// The `keep` list given to the last `collect_garbage`, if any was called.
    pub fn last_keep(&self) -> Option<Vec<std::path::PathBuf>> {
        self.last_keep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes every following `start` take this long (a slow boot).
    pub fn set_start_delay(&self, delay: std::time::Duration) {
        let ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self.start_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Ids of the VMs that run now.
    pub fn running(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The stub agent of a VM.
    pub fn agent(&self, id: &str) -> Option<Arc<FakeAgentState>> {
        self.lock().get(id).map(|vm| vm.agent.clone())
    }

    /// Stops a VM's agent while the VM itself keeps "running" (an unresponsive guest).
    pub fn stop_agent(&self, id: &str) {
        if let Some(vm) = self.lock().get(id) {
            vm.server.abort();
        }
    }

    /// Simulates the VM process dying on its own.
    pub fn crash(&self, id: &str) {
        if let Some(vm) = self.lock().remove(id) {
            vm.server.abort();
            let _ = vm.exited.send(true);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FakeVm>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a stub VM; `token` is the access token its agent already holds (restored).
    async fn boot(&self, spec: VmSpec, token: Option<String>) -> Result<StartedVm, RuntimeError> {
        if self.fail_start.load(Ordering::SeqCst) {
            return Err(RuntimeError::Start(Box::new(FakeError("start disabled"))));
        }
        let delay = self.start_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(delay.into())).await;
        if spec.template_id == "nonexistent" {
            return Err(RuntimeError::UnknownTemplate(spec.template_id));
        }
        std::fs::write(spec.run_dir.join("overlay.qcow2"), b"fake")
            .map_err(|e| RuntimeError::Start(Box::new(e)))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| RuntimeError::Start(Box::new(e)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| RuntimeError::Start(Box::new(e)))?;
        let agent = Arc::new(FakeAgentState {
            token: Mutex::new(token),
            ..Default::default()
        });
        let app = stub_agent(agent.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let (tx, rx) = watch::channel(false);
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        self.lock().insert(
            spec.sandbox_id.clone(),
            FakeVm {
                addr,
                pid,
                agent,
                server,
                exited: tx,
            },
        );
        Ok(StartedVm {
            info: VmInfo {
                agent_addr: addr,
                pid: Some(pid),
            },
            exited: Self::exit_watch(rx),
        })
    }

    fn exit_watch(rx: watch::Receiver<bool>) -> crate::runtime::ExitWatch {
        let mut rx = rx;
        Box::pin(async move {
            let _ = rx.wait_for(|exited| *exited).await;
            VmExit {
                description: "fake VM stopped".to_owned(),
            }
        })
    }
}

impl Runtime for FakeRuntime {
    fn start(&self, spec: VmSpec) -> BoxFuture<'_, Result<StartedVm, RuntimeError>> {
        Box::pin(self.boot(spec, None))
    }

    fn snapshot(
        &self,
        sandbox_id: &str,
        dir: std::path::PathBuf,
        kind: crate::runtime::SnapshotKind,
    ) -> BoxFuture<'_, Result<SnapshotTaken, RuntimeError>> {
        let id = sandbox_id.to_owned();
        let memory = kind != crate::runtime::SnapshotKind::DiskOnly;
        Box::pin(async move {
            let fail = |what| RuntimeError::Snapshot(Box::new(FakeError(what)));
            if self.fail_snapshot.load(Ordering::SeqCst) {
                return Err(fail("snapshot disabled"));
            }
            let agent = self.agent(&id).ok_or_else(|| fail("no such VM"))?;
            let token = agent
                .token
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let body = serde_json::json!({ "sourceId": id, "token": token, "memory": memory });
            std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Snapshot(Box::new(e)))?;
            std::fs::write(dir.join(FAKE_SNAPSHOT_FILE), body.to_string())
                .map_err(|e| RuntimeError::Snapshot(Box::new(e)))?;
            Ok(SnapshotTaken {
                disk_bytes: 4,
                memory_bytes: if memory { 1 << 20 } else { 0 },
                frozen_ms: 1,
            })
        })
    }

    fn start_from_snapshot(
        &self,
        spec: VmSpec,
        dir: std::path::PathBuf,
    ) -> BoxFuture<'_, Result<StartedVm, RuntimeError>> {
        Box::pin(async move {
            let restore = |e: Box<dyn std::error::Error + Send + Sync>| RuntimeError::Restore(e);
            let text = std::fs::read_to_string(dir.join(FAKE_SNAPSHOT_FILE))
                .map_err(|e| restore(Box::new(e)))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| restore(Box::new(e)))?;
            let token = value["token"].as_str().map(str::to_owned);
            self.boot(spec, token).await
        })
    }

    fn collect_garbage(&self, keep: Vec<std::path::PathBuf>) -> BoxFuture<'_, ()> {
        *self.last_keep.lock().unwrap_or_else(|p| p.into_inner()) = Some(keep);
        Box::pin(async {})
    }

    fn kill(&self, sandbox_id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = sandbox_id.to_owned();
        Box::pin(async move {
            self.crash(&id);
            Ok(())
        })
    }

    fn attach(&self, spec: AttachSpec) -> BoxFuture<'_, Result<Option<StartedVm>, RuntimeError>> {
        Box::pin(async move {
            let vms = self.lock();
            let Some(vm) = vms.get(&spec.sandbox_id) else {
                return Ok(None);
            };
            let info = VmInfo {
                agent_addr: vm.addr,
                pid: Some(vm.pid),
            };
            Ok(Some(StartedVm {
                info,
                exited: Self::exit_watch(vm.exited.subscribe()),
            }))
        })
    }
}

fn stub_agent(state: Arc<FakeAgentState>) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .route("/init", post(init))
        .route("/metrics", get(metrics))
        .fallback(echo)
        .with_state(state)
}

fn token_ok(state: &FakeAgentState, headers: &HeaderMap) -> bool {
    let current = state
        .token
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match current {
        None => true,
        Some(t) => headers
            .get("x-access-token")
            .is_some_and(|h| h.as_bytes() == t.as_bytes()),
    }
}

async fn init(
    State(state): State<Arc<FakeAgentState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if !token_ok(&state, &headers) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let token = value
        .get("accessToken")
        .and_then(|t| t.as_str())
        .map(str::to_owned);
    *state.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
    state
        .inits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(value);
    StatusCode::NO_CONTENT
}

async fn metrics(State(state): State<Arc<FakeAgentState>>, headers: HeaderMap) -> Response {
    if !token_ok(&state, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body = serde_json::json!({
        "cpuCount": 2, "cpuUsedPct": 1.5, "memUsed": 1000, "memTotal": 2000,
        "memCache": 10, "diskUsed": 3000, "diskTotal": 4000
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header("x-echo-method", parts.method.as_str())
        .header("x-echo-path", parts.uri.path())
        .header("x-echo-query", parts.uri.query().unwrap_or(""))
        .header("x-echo-token", header("x-access-token"))
        .header("x-echo-authorization", header("authorization"))
        .header("x-echo-sandbox-id", header("e2b-sandbox-id"))
        .header("x-echo-host", header("host"))
        .header("x-echo-connection", header("connection"))
        .header("content-type", "application/octet-stream");
    if parts.headers.contains_key("transfer-encoding") {
        builder = builder.header("x-echo-chunked", "1");
    }
    builder
        .body(Body::from_stream(body.into_data_stream()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
