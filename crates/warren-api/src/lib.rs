//! Warren's HTTP server: the E2B-compatible control plane and the envd gateway on one port.
//!
//! Request path: [`trace::request_span`] gives every request its span and id, then
//! [`gateway::dispatch`] takes envd traffic (header `E2b-Sandbox-Id`, envd paths, signed
//! `/files` URLs) and streams it to the sandbox's agent; everything else reaches the REST
//! routes of [`routes`], which check the API key ([`auth`]), decode bodies with the JSON
//! extractors of [`error`] and call the [`SandboxManager`]'s typed commands.

pub mod auth;
pub mod error;
pub mod gateway;
pub mod list_query;
pub mod routes;
pub mod staging;
pub mod trace;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::middleware;
use warren_core::SandboxManager;
use warren_core::templates::TemplateService;

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    pub manager: SandboxManager,
    pub agent_http: gateway::AgentHttpClient,
    /// Template builds; `None` (servers without a VM runtime, tests) answers 501.
    pub templates: Option<TemplateService>,
    /// One-time tokens of E2B template file uploads.
    pub upload_tokens: staging::UploadTokens,
    /// Unpacked build contexts of running `warren template build`s.
    pub build_contexts: staging::ContextDirs,
}

impl AppState {
    /// State for `manager`, with template builds when `templates` is given.
    pub fn new(manager: SandboxManager, templates: Option<TemplateService>) -> Self {
        AppState {
            manager,
            agent_http: gateway::agent_client(),
            templates,
            upload_tokens: staging::UploadTokens::default(),
            build_contexts: staging::ContextDirs::default(),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Failure of the server loop.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// The whole application: gateway in front of the control plane.
pub fn router(manager: SandboxManager) -> Router {
    app(AppState::new(manager, None))
}

/// The whole application over a prepared state.
pub fn app(state: AppState) -> Router {
    routes::api_router(state.clone())
        .layer(middleware::from_fn_with_state(state, gateway::dispatch))
        .layer(middleware::from_fn(trace::request_span))
}

/// How long [`serve`] waits for open requests (long envd streams) after `shutdown`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting and waits up to
/// [`SHUTDOWN_GRACE`] for open requests before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    manager: SandboxManager,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_grace(listener, manager, shutdown, SHUTDOWN_GRACE).await
}

/// [`serve`] of a prepared state (the production server passes its template service).
pub async fn serve_state(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_app(listener, app(state), shutdown, SHUTDOWN_GRACE).await
}

/// [`serve`] with a chosen grace period.
pub async fn serve_with_grace(
    listener: tokio::net::TcpListener,
    manager: SandboxManager,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServeError> {
    serve_app(listener, router(manager), shutdown, grace).await
}

async fn serve_app(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServeError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "API listening");
    }
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stopping.send(true);
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let deadline = async move {
        // Errs only once the server future (which owns the sender) is gone.
        if stopped.wait_for(|s| *s).await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result.map_err(ServeError::Serve),
        () = deadline => {
            tracing::warn!(?grace, "requests still open after the shutdown grace; dropping them");
            Ok(())
        }
    }
}
