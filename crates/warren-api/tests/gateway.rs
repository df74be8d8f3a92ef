//! The envd gateway over real HTTP: routing, streaming, header handling, errors.

mod common;

use std::time::Duration;

use common::{Server, assert_error};
use futures::SinkExt as _;
use serde_json::json;
use warren_proto::signature::{FileOperation, file_url_signature};

async fn sandbox(s: &Server) -> (String, String) {
    let sb = s.create(json!({"templateID": "base"})).await;
    let id = sb["sandboxID"].as_str().expect("id").to_owned();
    let token = sb["envdAccessToken"].as_str().expect("token").to_owned();
    (id, token)
}

#[tokio::test]
async fn streams_a_chunked_body_both_ways() {
    let s = Server::start().await;
    let (id, token) = sandbox(&s).await;
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let mut resp = s
        .http
        .post(s.url("/process.Process/Start"))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", "49983")
        .header("X-Access-Token", &token)
        .header("Authorization", "Basic dXNlcjo=")
        .header("Content-Type", "application/connect+json")
        .body(reqwest::Body::wrap_stream(rx))
        .send_and_first_chunk(&mut tx)
        .await;
    assert_eq!(resp.status(), 200);
    let h = |name: &str| resp.headers()[name].to_str().expect("ascii").to_owned();
    assert_eq!(h("x-echo-path"), "/process.Process/Start");
    assert_eq!(h("x-echo-token"), token);
    assert_eq!(h("x-echo-authorization"), "Basic dXNlcjo=");
    assert_eq!(h("x-echo-sandbox-id"), id);
    assert_eq!(
        h("x-echo-chunked"),
        "1",
        "the agent must see a chunked body"
    );
    assert_eq!(
        h("x-echo-connection"),
        "",
        "hop-by-hop headers must not be forwarded"
    );
    // Each chunk comes back before the next one is sent: nothing is buffered.
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await;
    assert_eq!(
        first
            .expect("first chunk in time")
            .expect("chunk")
            .as_deref(),
        Some(&b"one"[..])
    );
    tx.send(Ok(bytes::Bytes::from_static(b"two")))
        .await
        .expect("send");
    let second = tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await;
    assert_eq!(
        second
            .expect("second chunk in time")
            .expect("chunk")
            .as_deref(),
        Some(&b"two"[..])
    );
    drop(tx);
    assert!(resp.chunk().await.expect("end").is_none());
    s.finish().await;
}

/// Sends the request with "one" as its first chunk, without ending the body.
trait SendFirst {
    async fn send_and_first_chunk(
        self,
        tx: &mut futures::channel::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    ) -> reqwest::Response;
}

impl SendFirst for reqwest::RequestBuilder {
    async fn send_and_first_chunk(
        self,
        tx: &mut futures::channel::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    ) -> reqwest::Response {
        let feed = tx.send(Ok(bytes::Bytes::from_static(b"one")));
        let (resp, fed) = tokio::join!(self.send(), feed);
        fed.expect("feed");
        resp.expect("response headers")
    }
}

#[tokio::test]
async fn unknown_or_dead_sandboxes_get_502_not_found() {
    let s = Server::start().await;
    let resp = s
        .http
        .get(s.url("/health"))
        .header("E2b-Sandbox-Id", "doesnotexist")
        .send()
        .await
        .expect("send");
    let body = assert_error(resp, 502).await;
    assert_eq!(body["message"], "The sandbox doesnotexist was not found");

    let (id, _) = sandbox(&s).await;
    let resp = s
        .http
        .get(s.url("/health"))
        .header("E2b-Sandbox-Id", &id)
        .send()
        .await;
    assert_eq!(resp.expect("health").status(), 204);
    s.runtime.crash(&id);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = s
        .http
        .get(s.url("/health"))
        .header("E2b-Sandbox-Id", &id)
        .send()
        .await;
    let body = assert_error(resp.expect("send"), 502).await;
    assert!(
        body["message"]
            .as_str()
            .expect("m")
            .contains("was not found")
    );
    s.finish().await;
}

#[tokio::test]
async fn private_agent_routes_are_never_forwarded() {
    let s = Server::start().await;
    let (id, token) = sandbox(&s).await;
    for (method, path) in [("POST", "/init"), ("GET", "/metrics")] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = s
            .http
            .request(method, s.url(path))
            .header("E2b-Sandbox-Id", &id)
            .header("X-Access-Token", &token)
            .body(r#"{"accessToken":"stolen"}"#)
            .send()
            .await
            .expect("send");
        assert_error(resp, 404).await;
    }
    let agent = s.runtime.agent(&id).expect("agent");
    assert_eq!(
        agent.inits.lock().expect("lock").len(),
        1,
        "only the host's own /init"
    );
    s.finish().await;
}

#[tokio::test]
async fn envd_paths_without_sandbox_id_are_refused() {
    let s = Server::start().await;
    sandbox(&s).await;
    for path in [
        "/files?path=/etc/hostname",
        "/health",
        "/filesystem.Filesystem/Stat",
    ] {
        let resp = s.http.get(s.url(path)).send().await.expect("send");
        assert_error(resp, 400).await;
    }
    let resp = s
        .http
        .get(s.url("/files?path=/a&signature=v1_wrong"))
        .send()
        .await;
    // A signature that matches no sandbox is an authentication failure (the SDK's
    // tampered-URL expectation), not a malformed request.
    assert_error(resp.expect("send"), 401).await;
    s.finish().await;
}

#[tokio::test]
async fn signed_file_urls_find_their_sandbox() {
    let s = Server::start().await;
    // Two sandboxes: the gateway must pick the one whose token made the signature.
    let (_other, _) = sandbox(&s).await;
    let (id, token) = sandbox(&s).await;
    let agent = s.manager.route(&id).expect("route").agent.to_string();
    let sig = file_url_signature(
        "/home/user/a.txt",
        FileOperation::Read,
        "",
        &token,
        Some(9999999999),
    );
    let url = format!(
        "/files?path=%2Fhome%2Fuser%2Fa.txt&signature={}&signature_expiration=9999999999",
        sig.replace('+', "%2B").replace('/', "%2F")
    );
    let resp = s.http.get(s.url(&url)).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-path"], "/files");
    // The agent receives the request without the sandbox header: the gateway found it.
    assert_eq!(resp.headers()["x-echo-sandbox-id"], "");
    assert_eq!(
        resp.headers()["x-echo-host"],
        agent.as_str(),
        "routed to the signer"
    );
    // A signature for writing does not open a read.
    let sig = file_url_signature("/home/user/a.txt", FileOperation::Write, "", &token, None);
    let url = format!(
        "/files?path=%2Fhome%2Fuser%2Fa.txt&signature={}",
        sig.replace('+', "%2B").replace('/', "%2F")
    );
    assert_error(s.http.get(s.url(&url)).send().await.expect("send"), 401).await;
    let resp = s
        .http
        .post(s.url(&url))
        .body("data")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "data");
    s.finish().await;
}

#[tokio::test]
async fn unreachable_agent_of_a_running_sandbox_is_reported() {
    let s = Server::start().await;
    let (id, token) = sandbox(&s).await;
    s.runtime.stop_agent(&id);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let resp = s
        .http
        .get(s.url("/health"))
        .header("E2b-Sandbox-Id", &id)
        .header("X-Access-Token", &token)
        .send()
        .await
        .expect("send");
    let body = assert_error(resp, 502).await;
    assert!(
        body["message"]
            .as_str()
            .expect("m")
            .contains("port is not open"),
        "{body}"
    );
    // The control plane reports the agent failure of metrics as 502 too.
    let resp = s
        .get(&format!("/sandboxes/{id}/metrics"))
        .send()
        .await
        .expect("send");
    assert_error(resp, 502).await;
    s.finish().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_for_open_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = warren_core::Config::new(dir.path().to_owned(), dir.path().join("cache"));
    config.static_api_key = Some(common::KEY.to_owned());
    let store = warren_core::store::Store::open(dir.path()).expect("store");
    let runtime = warren_core::testing::FakeRuntime::new();
    let manager = warren_core::SandboxManager::start(config, store, runtime.clone())
        .await
        .expect("manager");
    let sb = manager
        .create(warren_core::manager::CreateSandbox {
            template_id: "base".into(),
            ..Default::default()
        })
        .await
        .expect("create");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/process.Process/Start",
        listener.local_addr().expect("addr")
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(warren_api::serve_with_grace(
        listener,
        manager.clone(),
        async move {
            let _ = stopped.await;
        },
        Duration::from_millis(300),
    ));
    // A stream that stays open: the request body never ends.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let resp = http
        .post(url)
        .header("E2b-Sandbox-Id", &sb.sandbox_id)
        .body(reqwest::Body::wrap_stream(rx))
        .send_and_first_chunk(&mut tx)
        .await;
    assert_eq!(resp.status(), 200);
    let started = std::time::Instant::now();
    stop.send(()).expect("stop");
    let result = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(result.expect("serve returned").expect("task").is_ok());
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(tx);
    manager
        .shutdown(warren_core::manager::ShutdownMode::KillAll)
        .await;
    assert!(runtime.running().is_empty());
}
