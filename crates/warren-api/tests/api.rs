//! REST routes over real HTTP with the fake runtime.

mod common;

use common::{KEY, Server, assert_error};
use serde_json::json;

#[tokio::test]
async fn auth_is_required_everywhere() {
    let s = Server::start().await;
    for (method, path) in [
        ("GET", "/v2/sandboxes"),
        ("POST", "/v2/sandboxes"),
        ("GET", "/sandboxes/abc"),
        ("DELETE", "/sandboxes/abc"),
        ("POST", "/sandboxes/abc/timeout"),
        ("POST", "/sandboxes/abc/pause"),
        ("GET", "/snapshots"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = s
            .http
            .request(method.clone(), s.url(path))
            .send()
            .await
            .expect("send");
        let body = assert_error(resp, 401).await;
        assert!(
            body["message"].as_str().expect("msg").contains("X-API-KEY"),
            "{method} {path}"
        );
        let resp = s
            .http
            .request(method, s.url(path))
            .header("X-API-KEY", "wrong")
            .send()
            .await
            .expect("send");
        assert_error(resp, 401).await;
    }
    // A stored key works as well as the static one.
    let new = warren_core::api_keys::create_key(s.manager.store(), "t").expect("key");
    let resp = s
        .http
        .get(s.url("/v2/sandboxes"))
        .header("X-API-KEY", &new.key)
        .send()
        .await;
    assert_eq!(resp.expect("send").status(), 200);
    s.finish().await;
}

#[tokio::test]
async fn sandbox_lifecycle_over_http() {
    let s = Server::start().await;
    let sb = s
        .create(json!({"templateID": "base", "timeout": 300,
            "metadata": {"smoke": "e2b-compat"}, "envVars": {"A": "1"}}))
        .await;
    let id = sb["sandboxID"].as_str().expect("id").to_owned();
    assert_eq!(sb["templateID"], "base");
    assert_eq!(sb["envdVersion"], "0.5.7");
    assert!(sb["clientID"].is_string() && sb["envdAccessToken"].is_string());
    assert!(sb["domain"].is_null());

    let resp = s
        .get(&format!("/sandboxes/{id}"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let detail: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(detail["state"], "running");
    assert_eq!(detail["metadata"]["smoke"], "e2b-compat");
    assert_eq!(detail["envdAccessToken"], sb["envdAccessToken"]);
    let end_at = detail["endAt"].as_str().expect("endAt").to_owned();
    assert!(chrono::DateTime::parse_from_rfc3339(&end_at).is_ok());

    let resp = s
        .post(&format!("/v2/sandboxes/{id}/connect"))
        .json(&json!({}))
        .send()
        .await;
    let resp = resp.expect("connect");
    assert_eq!(resp.status(), 200);
    let again: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(again["sandboxID"], id.as_str());
    // Connect without any body is accepted too.
    let resp = s
        .post(&format!("/v2/sandboxes/{id}/connect"))
        .send()
        .await
        .expect("connect");
    assert_eq!(resp.status(), 200);

    let resp = s
        .post(&format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 30}))
        .send();
    assert_eq!(resp.await.expect("timeout").status(), 204);
    let detail: serde_json::Value = s
        .get(&format!("/sandboxes/{id}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("j");
    assert_ne!(detail["endAt"].as_str(), Some(end_at.as_str()));

    let resp = s
        .get(&format!("/sandboxes/{id}/metrics?start=1&end=2"))
        .send()
        .await;
    let resp = resp.expect("metrics");
    assert_eq!(resp.status(), 200);
    let metrics: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(metrics[0]["cpuCount"], 2);
    assert!(metrics[0]["timestampUnix"].is_i64());

    let resp = s
        .delete(&format!("/sandboxes/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    let resp = s
        .delete(&format!("/sandboxes/{id}"))
        .send()
        .await
        .expect("delete again");
    assert_error(resp, 404).await;
    let resp = s
        .get(&format!("/sandboxes/{id}"))
        .send()
        .await
        .expect("get");
    assert_error(resp, 404).await;
    for path in [format!("/sandboxes/{id}/metrics")] {
        assert_error(s.get(&path).send().await.expect("send"), 404).await;
    }
    let resp = s
        .post(&format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 5}))
        .send();
    assert_error(resp.await.expect("send"), 404).await;
    let resp = s
        .post(&format!("/v2/sandboxes/{id}/connect"))
        .json(&json!({}))
        .send();
    assert_error(resp.await.expect("send"), 404).await;
    s.finish().await;
}

#[tokio::test]
async fn list_filters_by_double_encoded_metadata_and_pages() {
    let s = Server::start().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let meta = if i == 1 {
            json!({"k y": "v&x=1/ü", "plain": "p"})
        } else {
            json!({"o": "x"})
        };
        let sb = s
            .create(json!({"templateID": "base", "metadata": meta}))
            .await;
        ids.push(sb["sandboxID"].as_str().expect("id").to_owned());
    }
    // The exact wire form sent by the Python SDK (e2b-protocol.md 2.2).
    let q = concat!(
        "metadata=k%252520y%3Dv%252526x%25253D1%252F%2525C3%2525BC%26plain%3Dp",
        "&state=running%2Cpaused"
    );
    let resp = s
        .get(&format!("/v2/sandboxes?{q}"))
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-next-token").is_none());
    let items: Vec<serde_json::Value> = resp.json().await.expect("json");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["sandboxID"], ids[1].as_str());
    assert_eq!(items[0]["metadata"]["k y"], "v&x=1/ü");

    let mut seen = Vec::new();
    let mut path = "/v2/sandboxes?limit=2".to_owned();
    loop {
        let resp = s.get(&path).send().await.expect("page");
        assert_eq!(resp.status(), 200);
        let next = resp
            .headers()
            .get("x-next-token")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let page: Vec<serde_json::Value> = resp.json().await.expect("json");
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .map(|i| i["sandboxID"].as_str().expect("id").to_owned()),
        );
        match next {
            Some(token) => path = format!("/v2/sandboxes?limit=2&nextToken={token}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let resp = s
        .get("/v2/sandboxes?state=paused")
        .send()
        .await
        .expect("list");
    let items: Vec<serde_json::Value> = resp.json().await.expect("json");
    assert!(items.is_empty());
    for bad in [
        "state=dead",
        "limit=0",
        "limit=x",
        "nextToken=zz",
        "order=sideways",
    ] {
        let resp = s
            .get(&format!("/v2/sandboxes?{bad}"))
            .send()
            .await
            .expect("list");
        assert_error(resp, 400).await;
    }
    s.finish().await;
}

#[tokio::test]
async fn bad_input_gets_clear_json_errors() {
    let s = Server::start().await;
    let send = |body: &'static str| {
        s.post("/v2/sandboxes")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let body = assert_error(send("{not json").await.expect("send"), 400).await;
    assert!(
        body["message"].as_str().expect("m").contains("JSON"),
        "{body}"
    );
    let body = assert_error(send(r#"{"templateID": 5}"#).await.expect("send"), 400).await;
    assert!(
        body["message"].as_str().expect("m").contains("wrong field"),
        "{body}"
    );
    assert_error(
        send(r#"{"templateID": "base", "timeout": "x"}"#)
            .await
            .expect("send"),
        400,
    )
    .await;
    assert_error(send(r#"{"timeout": 10}"#).await.expect("send"), 400).await;
    assert_error(send("").await.expect("send"), 400).await;
    assert_error(send(r#"{"templateID": ""}"#).await.expect("send"), 400).await;
    assert_error(
        send(r#"{"templateID": "base", "timeout": 0}"#)
            .await
            .expect("send"),
        400,
    )
    .await;
    assert_error(
        send(r#"{"templateID": "base", "timeout": 99999}"#)
            .await
            .expect("s"),
        400,
    )
    .await;
    assert_error(
        send(r#"{"templateID": "nonexistent"}"#)
            .await
            .expect("send"),
        400,
    )
    .await;
    assert_error(
        send(r#"{"templateID": "snap:default"}"#)
            .await
            .expect("send"),
        400,
    )
    .await;

    let big = format!(
        r#"{{"templateID": "base", "metadata": {{"x": "{}"}}}}"#,
        "a".repeat(2 << 20)
    );
    let resp = s
        .post("/v2/sandboxes")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_error(resp, 413).await;

    assert_error(s.get("/nope").send().await.expect("send"), 404).await;
    assert_error(
        s.http
            .put(s.url("/v2/sandboxes"))
            .header("X-API-KEY", KEY)
            .send()
            .await
            .expect("send"),
        405,
    )
    .await;
    let resp = s
        .post("/sandboxes/abc/timeout")
        .body(r#"{"timeout": true}"#)
        .send();
    assert_error(resp.await.expect("send"), 400).await;
    for path in ["/sandboxes/abc/snapshots", "/sandboxes/abc/fork"] {
        let body = assert_error(s.post(path).json(&json!({})).send().await.expect("s"), 404).await;
        assert!(body["message"].as_str().expect("m").contains("abc"));
    }
    let resp = s
        .delete("/templates/team%2Fsnap%3Av1")
        .send()
        .await
        .expect("send");
    assert_error(resp, 404).await;
    // Failed creates leave nothing behind.
    assert!(s.runtime.running().is_empty());
    assert!(s.manager.store().list_sandboxes().expect("list").is_empty());
    s.finish().await;
}

#[tokio::test]
async fn chunked_create_body_is_accepted() {
    let s = Server::start().await;
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let req = s
        .post("/v2/sandboxes")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(rx))
        .send();
    let feed = async move {
        use futures::SinkExt as _;
        for part in [&br#"{"templateID":"#[..], &br#""base"}"#[..]] {
            tx.send(Ok(bytes::Bytes::from_static(part)))
                .await
                .expect("feed");
        }
    };
    let (resp, ()) = tokio::join!(req, feed);
    let resp = resp.expect("send");
    assert_eq!(resp.status(), 201);
    s.finish().await;
}

#[tokio::test]
async fn request_ids_are_returned() {
    let s = Server::start().await;
    let resp = s
        .get("/v2/sandboxes")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("s");
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let resp = s.get("/v2/sandboxes").send().await.expect("send");
    assert_eq!(resp.headers()["x-request-id"].len(), 16);
    s.finish().await;
}
