//! Handlers of `process.Process` (e2b-protocol.md 3.2, 3.4).
//!
//! A process outlives the stream that started it: when the client goes away or
//! `Connect-Timeout-Ms` expires (the stream then ends with `deadline_exceeded`), the process
//! keeps running and can be reattached with `Connect` or killed with `SendSignal`, which
//! signals its whole process group. Environment: `HOME`, `USER`, `LOGNAME`, `SHELL`,
//! `PATH`, then the sandbox-wide variables from `/init`, then the request's `envs`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use nix::sys::signal::Signal as NixSignal;
use tokio::sync::mpsc;
use warren_proto::connect::{ConnectError, ErrorCode};
use warren_proto::envd::process::{
    CloseStdinRequest, ConnectRequest, ConnectResponse, Empty, KeepAlive, ListRequest,
    ListResponse, ProcessEvent, ProcessInput, ProcessSelector, SendInputRequest, SendSignalRequest,
    Signal, StartEvent, StartRequest, StartResponse, StreamInputRequest, UpdateRequest,
};

use super::spawn::{SpawnError, SpawnSpec, signal_process};
use super::{Output, Process};
use crate::fs::resolve_path;
use crate::rpc::{self, MessageReader, RpcContext, encode, stream_error, stream_response};
use crate::state::AppState;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

type AppStateRef = State<Arc<AppState>>;

fn keepalive_payload() -> Bytes {
    encode(&StartResponse {
        event: ProcessEvent::Keepalive(KeepAlive {}),
    })
    .unwrap_or_default()
}

fn find(
    state: &AppState,
    selector: Option<&ProcessSelector>,
) -> Result<Arc<Process>, ConnectError> {
    let found = match selector {
        Some(ProcessSelector::Pid(pid)) => state.processes.by_pid(*pid),
        Some(ProcessSelector::Tag(tag)) => state.processes.by_tag(tag),
        None => {
            return Err(ConnectError::invalid_argument(
                "process selector is required",
            ));
        }
    };
    found.ok_or_else(|| match selector {
        Some(ProcessSelector::Tag(tag)) => {
            ConnectError::not_found(format!("process with tag {tag} not found"))
        }
        Some(ProcessSelector::Pid(pid)) => {
            ConnectError::not_found(format!("process with pid {pid} not found"))
        }
        None => ConnectError::not_found("process not found"),
    })
}

/// Streams a subscription: `start{pid}`, output, `end`; wraps each event with `wrap`.
fn event_stream<T: serde::Serialize + Send + 'static>(
    pid: u32,
    mut rx: mpsc::Receiver<Output>,
    wrap: fn(ProcessEvent) -> T,
) -> impl futures::Stream<Item = Result<Bytes, ConnectError>> + Send + 'static {
    async_stream::stream! {
        yield encode(&wrap(ProcessEvent::Start(StartEvent { pid })));
        loop {
            match rx.recv().await {
                Some(Output::Data(d)) => yield encode(&wrap(ProcessEvent::Data(d))),
                Some(Output::End(e)) => {
                    yield encode(&wrap(ProcessEvent::End(e)));
                    break;
                }
                None => {
                    yield Err(ConnectError::new(
                        ErrorCode::Unavailable,
                        "output subscriber was dropped because it did not keep up",
                    ));
                    break;
                }
            }
        }
    }
}

fn build_spec(
    state: &AppState,
    ctx: &RpcContext,
    req: &StartRequest,
) -> Result<SpawnSpec, ConnectError> {
    let config = req
        .process
        .as_ref()
        .ok_or_else(|| ConnectError::invalid_argument("process config is required"))?;
    if config.cmd.is_empty() {
        return Err(ConnectError::invalid_argument("cmd is required"));
    }
    let user = &ctx.user;
    let cwd = match config.cwd.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => resolve_path(c, user),
        // A user without an existing home (e.g. `nobody`) starts in `/`.
        None if user.home.is_dir() => user.home.clone(),
        None => std::path::PathBuf::from("/"),
    };
    if !cwd.is_dir() {
        return Err(ConnectError::invalid_argument(format!(
            "cwd {} is not an existing directory",
            cwd.display()
        )));
    }
    let home = user.home.to_string_lossy().into_owned();
    let mut env = vec![
        ("HOME".to_owned(), home),
        ("USER".to_owned(), user.name.clone()),
        ("LOGNAME".to_owned(), user.name.clone()),
        ("SHELL".to_owned(), user.shell.clone()),
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
    ];
    let settings = state.settings();
    for (k, v) in settings.env_vars.iter().chain(config.envs.iter()) {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let pty = req.pty.as_ref().map(|p| {
        let size = p.size.unwrap_or_default();
        let clamp = |v: u32, default: u16| {
            if v == 0 {
                default
            } else {
                u16::try_from(v).unwrap_or(u16::MAX)
            }
        };
        (clamp(size.cols, 80), clamp(size.rows, 24))
    });
    Ok(SpawnSpec {
        cmd: config.cmd.clone(),
        args: config.args.clone(),
        env,
        cwd,
        user: user.clone(),
        pty,
        stdin: req.stdin.unwrap_or(false) && pty.is_none(),
    })
}

/// `Start`: runs a process and streams its events.
pub async fn start(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    // The request is read first so that the connection stays reusable (see `single`).
    let req: StartRequest = match MessageReader::new(body).single().await {
        Ok(r) => r,
        Err(e) => return stream_error(e),
    };
    let ctx = match rpc::context(&state, &headers) {
        Ok(c) => c,
        Err(e) => return stream_error(e),
    };
    let spec = match build_spec(&state, &ctx, &req) {
        Ok(s) => s,
        Err(e) => return stream_error(e),
    };
    let spawned = match state.processes.reaper.spawn(spec) {
        Ok(s) => s,
        Err(err) => {
            tracing::debug!(error = %err, "starting a process failed");
            let code = match &err {
                SpawnError::Exec { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    ErrorCode::NotFound
                }
                SpawnError::Exec { .. } => ErrorCode::InvalidArgument,
                _ => ErrorCode::Internal,
            };
            let message = match std::error::Error::source(&err) {
                Some(cause) => format!("{err}: {cause}"),
                None => err.to_string(),
            };
            return stream_error(ConnectError::new(code, message));
        }
    };
    let config = req.process.clone().unwrap_or_default();
    let (process, rx) = state.processes.register(spawned, config, req.tag.clone());
    tracing::debug!(pid = process.pid, user = %ctx.user.name, "process started");
    let events = event_stream(process.pid, rx, |event| StartResponse { event });
    stream_response(
        events,
        ctx.deadline,
        Some((ctx.keepalive, keepalive_payload())),
    )
}

/// `Connect`: attaches to a running process.
pub async fn connect(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    // The request is read first so that the connection stays reusable (see `single`).
    let req: ConnectRequest = match MessageReader::new(body).single().await {
        Ok(r) => r,
        Err(e) => return stream_error(e),
    };
    let ctx = match rpc::context(&state, &headers) {
        Ok(c) => c,
        Err(e) => return stream_error(e),
    };
    let process = match find(&state, req.process.as_ref()) {
        Ok(p) => p,
        Err(e) => return stream_error(e),
    };
    let Some(rx) = process.subscribe() else {
        return stream_error(ConnectError::not_found(format!(
            "process with pid {} not found",
            process.pid
        )));
    };
    let events = event_stream(process.pid, rx, |event| ConnectResponse { event });
    stream_response(
        events,
        ctx.deadline,
        Some((ctx.keepalive, keepalive_payload())),
    )
}

/// `List`.
pub async fn list(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |state, _ctx, _req: ListRequest| async move {
            let mut processes: Vec<_> = state.processes.list().iter().map(|p| p.info()).collect();
            processes.sort_by_key(|p| p.pid);
            Ok(ListResponse { processes })
        },
    )
    .await
}

async fn write_input(process: &Process, input: &ProcessInput) -> Result<(), ConnectError> {
    let io_err = |e: std::io::Error| ConnectError::internal(format!("writing input: {e}"));
    if let Some(pty) = &process.pty {
        let data = match input {
            ProcessInput::Pty(d) | ProcessInput::Stdin(d) => d,
        };
        return pty.write_all(data).await.map_err(io_err);
    }
    let data = match input {
        ProcessInput::Stdin(d) => d,
        ProcessInput::Pty(_) => {
            return Err(ConnectError::invalid_argument("process has no PTY"));
        }
    };
    let stdin = process.stdin.lock().await;
    match stdin.as_ref() {
        Some(pipe) => pipe.write_all(data).await.map_err(io_err),
        None => Err(ConnectError::new(
            ErrorCode::FailedPrecondition,
            "stdin is not enabled or already closed for this process",
        )),
    }
}

/// `SendInput`.
pub async fn send_input(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |state, _ctx, req: SendInputRequest| async move {
            let process = find(&state, req.process.as_ref())?;
            let input = req
                .input
                .ok_or_else(|| ConnectError::invalid_argument("input is required"))?;
            write_input(&process, &input).await?;
            Ok(Empty {})
        },
    )
    .await
}

/// `StreamInput` (client stream): `start` selects the process, then `data` messages.
pub async fn stream_input(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    let mut reader = MessageReader::new(body);
    let ctx = match rpc::context(&state, &headers) {
        Ok(c) => c,
        Err(e) => {
            reader.drain().await;
            return stream_error(e);
        }
    };
    let result = async {
        let mut process = None;
        while let Some(msg) = reader.next::<StreamInputRequest>().await? {
            match msg {
                StreamInputRequest::Start(start) => {
                    process = Some(find(&state, start.process.as_ref())?);
                }
                StreamInputRequest::Data(data) => {
                    let p = process.as_ref().ok_or_else(|| {
                        ConnectError::invalid_argument("the first message must be start")
                    })?;
                    if let Some(input) = &data.input {
                        write_input(p, input).await?;
                    }
                }
                StreamInputRequest::Keepalive(_) => {}
            }
        }
        encode(&Empty {})
    }
    .await;
    if result.is_err() {
        // Keep the connection reusable (see `MessageReader::single`).
        reader.drain().await;
    }
    stream_response(
        futures::stream::once(async move { result }),
        ctx.deadline,
        None,
    )
}

/// `CloseStdin`.
pub async fn close_stdin(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |state, _ctx, req: CloseStdinRequest| async move {
            let process = find(&state, req.process.as_ref())?;
            if process.pty.is_some() {
                return Err(ConnectError::new(
                    ErrorCode::FailedPrecondition,
                    "a PTY has no separate stdin; send Ctrl-D (0x04) instead",
                ));
            }
            // Dropping the pipe closes it; the child then reads end of file.
            process.stdin.lock().await.take();
            Ok(Empty {})
        },
    )
    .await
}

/// `SendSignal`.
pub async fn send_signal(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |state, _ctx, req: SendSignalRequest| async move {
            let process = find(&state, req.process.as_ref())?;
            let signal = match req.signal {
                Signal::Sigkill => NixSignal::SIGKILL,
                Signal::Sigterm => NixSignal::SIGTERM,
                Signal::Unspecified => {
                    return Err(ConnectError::invalid_argument("signal is required"));
                }
            };
            signal_process(process.pid, signal)
                .map_err(|e| ConnectError::internal(format!("sending {signal}: {e}")))?;
            Ok(Empty {})
        },
    )
    .await
}

/// `Update`: resizes a PTY (the kernel then sends SIGWINCH to its foreground group).
pub async fn update(State(state): AppStateRef, headers: HeaderMap, body: Body) -> Response {
    rpc::unary(
        state,
        headers,
        body,
        |state, _ctx, req: UpdateRequest| async move {
            let process = find(&state, req.process.as_ref())?;
            let Some(size) = req.pty.and_then(|p| p.size) else {
                return Ok(Empty {});
            };
            let pty = process
                .pty
                .as_ref()
                .ok_or_else(|| ConnectError::invalid_argument("process has no PTY"))?;
            let ws = libc::winsize {
                ws_row: u16::try_from(size.rows).unwrap_or(u16::MAX),
                ws_col: u16::try_from(size.cols).unwrap_or(u16::MAX),
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the
            // call; the descriptor is the PTY master owned by `pty`.
            let rc = unsafe { libc::ioctl(pty.raw(), libc::TIOCSWINSZ, &ws) };
            if rc < 0 {
                return Err(ConnectError::internal(format!(
                    "resizing the PTY: {}",
                    std::io::Error::last_os_error()
                )));
            }
            Ok(Empty {})
        },
    )
    .await
}
