//! warren-agent: the guest agent of a Warren sandbox.
//!
//! Runs as root inside the guest and serves the envd protocol (e2b-protocol.md section 3)
//! over HTTP/1.1 on `0.0.0.0:49983`: the Connect services `process.Process` and
//! `filesystem.Filesystem`, `/files` transfers, `/health`, and the host-only `/init` and
//! `/metrics` (docs/CONTRACTS.md). It also runs unprivileged on a development host, which
//! the integration tests use.
//!
//! Modules: [`rpc`] (Connect framing), [`process`] (spawning, output fan-out, reaping),
//! [`fs`] (filesystem RPCs and watches), [`files`] (HTTP transfers), [`host`] (host routes),
//! [`user`] (user selection), [`state`] (shared state).

mod files;
mod fs;
mod host;
mod process;
mod rpc;
mod state;
mod user;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use clap::Parser;

use crate::fs::service as fsrpc;
use crate::process::service as procrpc;
use crate::state::AppState;

/// Command line.
#[derive(Debug, Parser)]
#[command(version, about = "Warren guest agent (envd-compatible)")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "WARREN_AGENT_LISTEN", default_value = "0.0.0.0:49983")]
    listen: SocketAddr,
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(host::health))
        .route("/init", post(host::init))
        .route("/metrics", get(host::metrics))
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/Start", post(procrpc::start))
        .route("/process.Process/Connect", post(procrpc::connect))
        .route("/process.Process/List", post(procrpc::list))
        .route("/process.Process/SendInput", post(procrpc::send_input))
        .route("/process.Process/StreamInput", post(procrpc::stream_input))
        .route("/process.Process/CloseStdin", post(procrpc::close_stdin))
        .route("/process.Process/SendSignal", post(procrpc::send_signal))
        .route("/process.Process/Update", post(procrpc::update))
        .route("/filesystem.Filesystem/Stat", post(fsrpc::stat_rpc))
        .route("/filesystem.Filesystem/MakeDir", post(fsrpc::make_dir))
        .route("/filesystem.Filesystem/Move", post(fsrpc::move_rpc))
        .route("/filesystem.Filesystem/ListDir", post(fsrpc::list_dir))
        .route("/filesystem.Filesystem/Remove", post(fsrpc::remove))
        .route("/filesystem.Filesystem/WatchDir", post(fsrpc::watch_dir))
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(fsrpc::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(fsrpc::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(fsrpc::remove_watcher),
        )
        .with_state(state)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let state = AppState::new();
    state
        .processes
        .reaper
        .start()
        .context("installing the SIGCHLD handler")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %args.listen, "warren-agent listening");
    axum::serve(listener, router(state))
        .await
        .context("serving")?;
    Ok(())
}
