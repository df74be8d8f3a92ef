//! The control-plane client: configuration and every REST call of section 2 of the protocol
//! doc (sandboxes, snapshots, fork, pause), sending `X-API-KEY` like the official SDKs.
//!
//! List calls follow the cursor the server returns in the `x-next-token` response header
//! until it is absent or empty.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use warren_proto::api::{ConnectSandbox, ForkRequest, NewSnapshot, PauseSandbox, SetTimeout};

use crate::error::ClientError;
use crate::models::{
    ForkResult, ListedSandbox, NewSandbox, SandboxDetail, SandboxInfo, SandboxMetric, SandboxQuery,
    SnapshotInfo, SnapshotQuery,
};
use crate::query::{QueryBuilder, encode_segment};
use crate::sandbox::Sandbox;

/// Default control-plane URL when none is configured.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:3000";

/// User-Agent of every request.
const USER_AGENT: &str = concat!("warren-client/", env!("CARGO_PKG_VERSION"));

/// A connection to a Warren (or E2B-compatible) server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    api_url: String,
    sandbox_url: String,
    api_key: Option<String>,
}

/// One page of a paginated list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Cursor for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

impl Client {
    /// A client for `api_url` (envd traffic goes to the same URL).
    pub fn new(api_url: impl Into<String>, api_key: Option<String>) -> Client {
        let api_url = trim_slash(api_url.into());
        Client {
            // Building a client without TLS or custom roots cannot fail; fall back to the
            // default client rather than panicking if it ever does.
            http: reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            sandbox_url: api_url.clone(),
            api_url,
            api_key,
        }
    }

    /// A client configured from the environment: `WARREN_API_URL` or `E2B_API_URL` (default
    /// [`DEFAULT_API_URL`]), `WARREN_API_KEY` or `E2B_API_KEY`, and `E2B_SANDBOX_URL` for
    /// envd (default: the API URL).
    pub fn from_env() -> Client {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let api_url = var("WARREN_API_URL")
            .or_else(|| var("E2B_API_URL"))
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        let key = var("WARREN_API_KEY").or_else(|| var("E2B_API_KEY"));
        let client = Client::new(api_url, key);
        match var("E2B_SANDBOX_URL") {
            Some(url) => client.with_sandbox_url(url),
            None => client,
        }
    }

    /// Sends envd traffic (RPCs, `/files`) to `url` instead of the API URL.
    pub fn with_sandbox_url(mut self, url: impl Into<String>) -> Client {
        self.sandbox_url = trim_slash(url.into());
        self
    }

    /// The control-plane base URL.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The envd base URL shared by all sandboxes.
    pub fn sandbox_url(&self) -> &str {
        &self.sandbox_url
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn request(&self, method: Method, path_and_query: &str) -> RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{path_and_query}", self.api_url));
        match &self.api_key {
            Some(key) => req.header("X-API-KEY", key),
            None => req,
        }
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(T, Option<String>), ClientError> {
        let step = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = send_checked(&step, req).await?;
        let next = next_token(&resp);
        Ok((json_body(&step, resp).await?, next))
    }

    /// Like `call` for endpoints whose success answer has no body.
    pub(crate) async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<StatusCode, ClientError> {
        let step = format!("{method} {path}");
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        Ok(send_checked(&step, req).await?.status())
    }

    /// A handle on a sandbox whose create answer the caller already holds, without asking the
    /// server (the server's template builder uses it with the agent's own address as the
    /// sandbox URL).
    pub fn sandbox_from_info(&self, info: SandboxInfo) -> Sandbox {
        Sandbox::new(self.clone(), info)
    }

    /// Creates a sandbox (`POST /v2/sandboxes`) and returns a handle to it.
    pub async fn create_sandbox(&self, spec: &NewSandbox) -> Result<Sandbox, ClientError> {
        let body = serde_json::to_value(spec).map_err(|source| ClientError::Decode {
            step: "encoding the create request".to_owned(),
            source,
        })?;
        let (info, _) = self
            .call(Method::POST, "/v2/sandboxes", Some(&body))
            .await?;
        Ok(Sandbox::new(self.clone(), info))
    }

    /// Connects to a running sandbox, resuming it if it is paused; `timeout` (seconds)
    /// extends its lifetime.
    pub async fn connect(&self, id: &str, timeout: Option<u64>) -> Result<Sandbox, ClientError> {
        let body = to_json(&ConnectSandbox {
            timeout: timeout.map(seconds),
            memory: None,
        })?;
        let path = format!("/v2/sandboxes/{}/connect", encode_segment(id));
        let (info, _) = self
            .call::<SandboxInfo>(Method::POST, &path, Some(&body))
            .await?;
        Ok(Sandbox::new(self.clone(), info))
    }

    /// Resumes a paused sandbox; the same call as [`Client::connect`].
    pub async fn resume(&self, id: &str, timeout: Option<u64>) -> Result<Sandbox, ClientError> {
        self.connect(id, timeout).await
    }

    /// One page of `GET /v2/sandboxes`.
    pub async fn list_sandboxes_page(
        &self,
        query: &SandboxQuery,
        next_token: Option<&str>,
    ) -> Result<Page<ListedSandbox>, ClientError> {
        let mut q = QueryBuilder::default();
        q.metadata(&query.metadata);
        if !query.states.is_empty() {
            let states: Vec<&str> = query.states.iter().map(|s| s.as_str()).collect();
            q.push("state", &states.join(","));
        }
        if let Some(limit) = query.limit {
            q.push("limit", &limit.to_string());
        }
        if let Some(token) = next_token {
            q.push("nextToken", token);
        }
        let (items, next_token) = self
            .call(Method::GET, &with_query("/v2/sandboxes", &q), None)
            .await?;
        Ok(Page { items, next_token })
    }

    /// Every sandbox matching `query`, following all pages.
    pub async fn list_sandboxes(
        &self,
        query: &SandboxQuery,
    ) -> Result<Vec<ListedSandbox>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_sandboxes_page(query, token.as_deref()).await?;
            all.extend(page.items);
            match page.next_token {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// Details of one sandbox (`GET /sandboxes/{id}`).
    pub async fn get_sandbox(&self, id: &str) -> Result<SandboxDetail, ClientError> {
        let path = format!("/sandboxes/{}", encode_segment(id));
        Ok(self.call(Method::GET, &path, None).await?.0)
    }

    /// Kills a sandbox; `Ok(false)` if it did not exist.
    pub async fn kill_sandbox(&self, id: &str) -> Result<bool, ClientError> {
        let path = format!("/sandboxes/{}", encode_segment(id));
        not_found_as_false(self.call_empty(Method::DELETE, &path, None).await)
    }

    /// Sets the sandbox's remaining lifetime to `seconds` from now.
    pub async fn set_timeout(&self, id: &str, seconds: u64) -> Result<(), ClientError> {
        let path = format!("/sandboxes/{}/timeout", encode_segment(id));
        let body = to_json(&SetTimeout {
            timeout: self::seconds(seconds),
        })?;
        self.call_empty(Method::POST, &path, Some(&body))
            .await
            .map(drop)
    }

    /// Resource samples of a sandbox.
    pub async fn metrics(&self, id: &str) -> Result<Vec<SandboxMetric>, ClientError> {
        let path = format!("/sandboxes/{}/metrics", encode_segment(id));
        Ok(self.call(Method::GET, &path, None).await?.0)
    }

    /// Pauses a sandbox; `Ok(false)` if it was already paused (HTTP 409).
    pub async fn pause(&self, id: &str) -> Result<bool, ClientError> {
        let path = format!("/sandboxes/{}/pause", encode_segment(id));
        let body = to_json(&PauseSandbox::default())?;
        match self.call_empty(Method::POST, &path, Some(&body)).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Snapshots a running sandbox (memory and disk); it keeps running.
    pub async fn create_snapshot(
        &self,
        id: &str,
        name: Option<&str>,
    ) -> Result<SnapshotInfo, ClientError> {
        let path = format!("/sandboxes/{}/snapshots", encode_segment(id));
        let body = to_json(&NewSnapshot {
            name: name.map(str::to_owned),
            memory: None,
        })?;
        Ok(self.call(Method::POST, &path, Some(&body)).await?.0)
    }

    /// One page of `GET /snapshots`.
    pub async fn list_snapshots_page(
        &self,
        query: &SnapshotQuery,
        next_token: Option<&str>,
    ) -> Result<Page<SnapshotInfo>, ClientError> {
        let mut q = QueryBuilder::default();
        if let Some(id) = &query.sandbox_id {
            q.push("sandboxID", id);
        }
        if let Some(name) = &query.name {
            q.push("name", name);
        }
        if let Some(limit) = query.limit {
            q.push("limit", &limit.to_string());
        }
        if let Some(token) = next_token {
            q.push("nextToken", token);
        }
        let (items, next_token) = self
            .call(Method::GET, &with_query("/snapshots", &q), None)
            .await?;
        Ok(Page { items, next_token })
    }

    /// Every snapshot matching `query`, following all pages.
    pub async fn list_snapshots(
        &self,
        query: &SnapshotQuery,
    ) -> Result<Vec<SnapshotInfo>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_snapshots_page(query, token.as_deref()).await?;
            all.extend(page.items);
            match page.next_token {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// Deletes a snapshot; `Ok(false)` if it did not exist.
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<bool, ClientError> {
        let path = format!("/templates/{}", encode_segment(snapshot_id));
        not_found_as_false(self.call_empty(Method::DELETE, &path, None).await)
    }

    /// Forks a running sandbox into `count` copies of its current state.
    pub async fn fork(
        &self,
        id: &str,
        count: u32,
        timeout: Option<u64>,
    ) -> Result<Vec<ForkResult>, ClientError> {
        let path = format!("/sandboxes/{}/fork", encode_segment(id));
        let body = to_json(&ForkRequest {
            timeout: timeout.map(seconds),
            count: Some(count),
        })?;
        Ok(self.call(Method::POST, &path, Some(&body)).await?.0)
    }
}

/// Seconds as the API's signed integer; absurdly large values saturate.
fn seconds(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

pub(crate) fn to_json<T: Serialize>(body: &T) -> Result<serde_json::Value, ClientError> {
    serde_json::to_value(body).map_err(|source| ClientError::Decode {
        step: "encoding a request body".to_owned(),
        source,
    })
}

/// The error body of a non-2xx answer, read leniently: a missing field must not hide the
/// rest of the error.
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_code: Option<String>,
}

fn trim_slash(mut url: String) -> String {
    while url.ends_with('/') {
        url.pop();
    }
    url
}

fn with_query(path: &str, q: &QueryBuilder) -> String {
    let query = q.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

fn next_token(resp: &Response) -> Option<String> {
    resp.headers()
        .get("x-next-token")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

pub(crate) fn not_found_as_false(
    result: Result<StatusCode, ClientError>,
) -> Result<bool, ClientError> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.status() == Some(404) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends a request and returns the answer if its status is 2xx, the API error otherwise.
pub(crate) async fn send_checked(step: &str, req: RequestBuilder) -> Result<Response, ClientError> {
    let resp = req.send().await.map_err(|source| ClientError::Transport {
        step: step.to_owned(),
        source,
    })?;
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(api_error(step, resp).await)
    }
}

/// Reads a whole answer body and decodes it as JSON; errors name `step`.
pub(crate) async fn json_body<T: DeserializeOwned>(
    step: &str,
    resp: Response,
) -> Result<T, ClientError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Transport {
            step: step.to_owned(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
        step: step.to_owned(),
        source,
    })
}

/// Turns a non-2xx answer into [`ClientError::Api`], reading the `{code, message}` body.
pub(crate) async fn api_error(step: &str, resp: Response) -> ClientError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error_code, body.message),
        Err(_) => (None, text),
    };
    ClientError::Api {
        step: step.to_owned(),
        status,
        code,
        message,
    }
}
