//! A handle on one sandbox: its identity, the envd endpoint its commands and files go to,
//! and shortcuts for the control-plane calls that concern it.
//!
//! envd traffic goes to the client's sandbox URL (one origin for all sandboxes) and is routed
//! by the server with `E2b-Sandbox-Id` and `E2b-Sandbox-Port: 49983`, authenticated with the
//! sandbox's `X-Access-Token` when the create/connect answer carried one.

use reqwest::RequestBuilder;

use crate::client::Client;
use crate::commands::{Commands, Pty};
use crate::error::ClientError;
use crate::files::Files;
use crate::models::{SandboxDetail, SandboxInfo, SandboxMetric, SnapshotInfo};

/// The port envd listens on inside a sandbox; the SDKs send it in `E2b-Sandbox-Port`.
pub const ENVD_PORT: u16 = 49983;

/// Where and how to reach one sandbox's envd.
#[derive(Debug, Clone)]
pub(crate) struct EnvdTarget {
    http: reqwest::Client,
    base_url: String,
    sandbox_id: String,
    access_token: Option<String>,
    /// Linux user to act as; `None` lets the server pick the sandbox's default user.
    user: Option<String>,
}

impl EnvdTarget {
    /// The same target acting as `user` (sent as `Authorization: Basic base64("user:")`
    /// on RPCs and as the `username` query parameter on `/files`).
    pub(crate) fn with_user(&self, user: Option<&str>) -> EnvdTarget {
        EnvdTarget {
            user: user.map(str::to_owned).or_else(|| self.user.clone()),
            ..self.clone()
        }
    }

    /// A POST to `path` (starting with `/`) with the routing and auth headers.
    pub(crate) fn post(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header("E2b-Sandbox-Id", &self.sandbox_id)
            .header("E2b-Sandbox-Port", ENVD_PORT.to_string());
        let req = match &self.access_token {
            Some(token) => req.header("X-Access-Token", token),
            None => req,
        };
        match &self.user {
            Some(user) => {
                use base64::Engine;
                let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
                req.header("Authorization", format!("Basic {basic}"))
            }
            None => req,
        }
    }
}

/// A sandbox that was created or connected to.
#[derive(Debug, Clone)]
pub struct Sandbox {
    client: Client,
    info: SandboxInfo,
    envd: EnvdTarget,
}

impl Sandbox {
    pub(crate) fn new(client: Client, info: SandboxInfo) -> Sandbox {
        let envd = EnvdTarget {
            http: client.http().clone(),
            base_url: client.sandbox_url().to_owned(),
            sandbox_id: info.sandbox_id.clone(),
            access_token: info.envd_access_token.clone(),
            user: None,
        };
        Sandbox { client, info, envd }
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.info.sandbox_id
    }

    /// The create/connect answer this handle was made from.
    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }

    /// Running commands and background processes.
    pub fn commands(&self) -> Commands {
        Commands::new(self.envd.clone())
    }

    /// Interactive terminals.
    pub fn pty(&self) -> Pty {
        Pty::new(self.envd.clone())
    }

    /// The sandbox's filesystem.
    pub fn files(&self) -> Files {
        Files::new(self.envd.clone())
    }

    /// Whether the sandbox's envd answers `GET /health` with a 2xx status.
    pub async fn is_running(&self) -> Result<bool, ClientError> {
        let resp = self
            .envd
            .request(reqwest::Method::GET, "/health")
            .send()
            .await;
        match resp {
            Ok(resp) => Ok(resp.status().is_success()),
            Err(source) => Err(ClientError::Transport {
                step: "GET /health".to_owned(),
                source,
            }),
        }
    }

    /// Kills the sandbox; `Ok(false)` if it was already gone.
    pub async fn kill(&self) -> Result<bool, ClientError> {
        self.client.kill_sandbox(self.id()).await
    }

    /// Sets the remaining lifetime to `seconds` from now.
    pub async fn set_timeout(&self, seconds: u64) -> Result<(), ClientError> {
        self.client.set_timeout(self.id(), seconds).await
    }

    /// Current details from the control plane.
    pub async fn get_info(&self) -> Result<SandboxDetail, ClientError> {
        self.client.get_sandbox(self.id()).await
    }

    /// Resource samples.
    pub async fn metrics(&self) -> Result<Vec<SandboxMetric>, ClientError> {
        self.client.metrics(self.id()).await
    }

    /// Snapshots this sandbox.
    pub async fn create_snapshot(&self, name: Option<&str>) -> Result<SnapshotInfo, ClientError> {
        self.client.create_snapshot(self.id(), name).await
    }

    /// Pauses this sandbox; `Ok(false)` if it was already paused.
    pub async fn pause(&self) -> Result<bool, ClientError> {
        self.client.pause(self.id()).await
    }
}
