//! The host's client for the agent's private routes (docs/CONTRACTS.md): `GET /health`
//! while a VM boots, `POST /init` to hand it its token, env vars, the time and entropy,
//! and `GET /metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use warren_proto::api::StringMap;

use crate::ids;

/// Failure talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("the agent did not become healthy within {0:?}")]
    NotHealthy(Duration),
    #[error("request to the agent failed")]
    Request(#[source] reqwest::Error),
    #[error("the agent answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the agent's answer is malformed")]
    Decode(#[source] reqwest::Error),
}

/// Body of `POST /init`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InitBody<'a> {
    access_token: &'a str,
    env_vars: &'a StringMap,
    host_time_unix_nanos: i64,
    entropy: String,
}

/// `GET /metrics` of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentMetrics {
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// HTTP client for agents; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
}

impl AgentClient {
    /// A client that never goes through a proxy (agents are on loopback).
    pub fn new() -> Result<Self, AgentError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(AgentError::Client)?;
        Ok(AgentClient { http })
    }

    /// Polls `GET /health` until it answers 2xx or `limit` passes.
    pub async fn wait_healthy(&self, addr: SocketAddr, limit: Duration) -> Result<(), AgentError> {
        let deadline = tokio::time::Instant::now() + limit;
        let url = format!("http://{addr}/health");
        let mut delay = Duration::from_millis(20);
        // Doubles up to 8 s: an answer that is slow because many guests warm up at once is
        // better waited for than dropped and asked for again.
        let mut patience = Duration::from_secs(2);
        loop {
            let attempt = self.http.get(&url).timeout(patience).send().await;
            patience = (patience * 2).min(Duration::from_secs(8));
            if matches!(&attempt, Ok(resp) if resp.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Err(AgentError::NotHealthy(limit));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }

    /// `POST /init` with a new token, the sandbox's env vars, the host time and 32 bytes of
    /// fresh entropy. `current_token` is the token the agent already has (a restored clone).
    pub async fn init(
        &self,
        addr: SocketAddr,
        current_token: Option<&str>,
        token: &str,
        env_vars: &StringMap,
    ) -> Result<(), AgentError> {
        let now = chrono::Utc::now();
        let body = InitBody {
            access_token: token,
            env_vars,
            host_time_unix_nanos: now.timestamp_nanos_opt().unwrap_or(i64::MAX),
            entropy: base64::engine::general_purpose::STANDARD.encode(ids::random_bytes(32)),
        };
        let mut req = self.http.post(format!("http://{addr}/init")).json(&body);
        if let Some(current) = current_token {
            req = req.header("X-Access-Token", current);
        }
        let resp = req.send().await.map_err(AgentError::Request)?;
        if !resp.status().is_success() {
            return Err(AgentError::Status(resp.status()));
        }
        Ok(())
    }

    /// `GET /metrics`.
    pub async fn metrics(&self, addr: SocketAddr, token: &str) -> Result<AgentMetrics, AgentError> {
        let resp = self
            .http
            .get(format!("http://{addr}/metrics"))
            .header("X-Access-Token", token)
            .send()
            .await
            .map_err(AgentError::Request)?;
        if !resp.status().is_success() {
            return Err(AgentError::Status(resp.status()));
        }
        resp.json().await.map_err(AgentError::Decode)
    }
}
