//! Test harness: a real server on 127.0.0.1:0 with the fake runtime.

#![allow(dead_code)]

use std::sync::Arc;

use warren_core::manager::ShutdownMode;
use warren_core::store::Store;
use warren_core::templates::TemplateService;
use warren_core::testing::FakeRuntime;
use warren_core::{Config, SandboxManager};

pub const KEY: &str = "test-key";

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pub runtime: Arc<FakeRuntime>,
    pub manager: SandboxManager,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(false).await
    }

    /// A server with a template service (builds run on the fake runtime's stub VMs).
    pub async fn start_with_templates() -> Server {
        Server::start_with(true).await
    }

    async fn start_with(templates: bool) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::new(dir.path().to_owned(), dir.path().join("cache"));
        config.static_api_key = Some(KEY.to_owned());
        let store = Store::open(dir.path()).expect("store");
        let runtime = FakeRuntime::new();
        let manager = SandboxManager::start(config, store, runtime.clone())
            .await
            .expect("manager");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let manager = manager.clone();
            async move {
                let shutdown = async move {
                    let _ = stopped.await;
                };
                let templates = templates.then(|| {
                    TemplateService::new(manager.clone(), "test-image".into(), Default::default())
                });
                let state = warren_api::AppState::new(manager, templates);
                warren_api::serve_state(listener, state, shutdown)
                    .await
                    .expect("serve");
            }
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Server {
            base,
            http,
            runtime,
            manager,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).header("X-API-KEY", KEY)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).header("X-API-KEY", KEY)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).header("X-API-KEY", KEY)
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path)).header("X-API-KEY", KEY)
    }

    /// Creates a sandbox through the API and returns the response body.
    pub async fn create(&self, body: serde_json::Value) -> serde_json::Value {
        let resp = self
            .post("/v2/sandboxes")
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 201);
        resp.json().await.expect("json")
    }

    /// Kills every sandbox and stops the server.
    pub async fn finish(mut self) {
        self.manager.shutdown(ShutdownMode::KillAll).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        assert!(
            self.runtime.running().is_empty(),
            "no VM may be left running"
        );
    }
}

/// Asserts an error response: status, JSON `{code, message}`, `Should-Retry: false`.
pub async fn assert_error(resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status(), status, "status");
    assert_eq!(
        resp.headers().get("should-retry").map(|v| v.as_bytes()),
        Some(&b"false"[..])
    );
    let ct = resp
        .headers()
        .get("content-type")
        .expect("content-type")
        .to_str()
        .expect("ascii");
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let body: serde_json::Value = resp.json().await.expect("json body");
    assert_eq!(body["code"], status, "code field: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {body}"
    );
    body
}
