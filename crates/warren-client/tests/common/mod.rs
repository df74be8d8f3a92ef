//! The in-process axum stub shared by the client tests: it records every request (method,
//! URI, headers, body) and answers like a Warren server would, with Connect envelopes split
//! into 3-byte body chunks so the client must reassemble them.
//! [`server`] starts the real router instead, for the tests against the API itself.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the stub"
)]

pub mod server;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use warren_client::Client;

/// One request as the stub saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
pub struct Stub {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Contents of the single file the stub stores.
    pub file: Arc<Mutex<Vec<u8>>>,
}

pub fn envelope(flags: u8, json: &str) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&u32::try_from(json.len()).unwrap().to_be_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

/// Splits `wire` into 3-byte chunks so the client must reassemble envelopes.
pub fn chunked(wire: Vec<u8>) -> Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = wire
        .chunks(3)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures::stream::iter(chunks))
}

pub fn sandbox_json() -> &'static str {
    r#"{"templateID":"base","sandboxID":"sbx1","clientID":"c","envdVersion":"0.5.7",
        "envdAccessToken":"tok"}"#
}

pub fn listed(id: &str) -> String {
    format!(
        r#"{{"templateID":"base","sandboxID":"{id}","clientID":"c",
        "startedAt":"2026-01-01T00:00:00Z","endAt":"2026-01-01T00:05:00Z",
        "cpuCount":2,"memoryMB":512,"diskSizeMB":1024,
        "state":"running","envdVersion":"0.5.7","metadata":{{"a":"b"}}}}"#
    )
}

pub async fn handle(State(stub): State<Stub>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let uri = parts.uri.to_string();
    stub.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let json = |status: StatusCode, text: String| {
        (status, [("content-type", "application/json")], text).into_response()
    };
    match (parts.method.as_str(), parts.uri.path()) {
        ("POST", "/v2/sandboxes") => json(StatusCode::CREATED, sandbox_json().to_owned()),
        ("GET", "/v2/sandboxes") if uri.contains("nextToken=page%202") => {
            json(StatusCode::OK, format!("[{}]", listed("sbx3")))
        }
        ("GET", "/v2/sandboxes") => {
            let mut resp = json(
                StatusCode::OK,
                format!("[{},{}]", listed("sbx1"), listed("sbx2")),
            );
            resp.headers_mut()
                .insert("x-next-token", "page 2".parse().unwrap());
            resp
        }
        ("DELETE", "/sandboxes/gone") => json(
            StatusCode::NOT_FOUND,
            r#"{"code":404,"message":"sandbox gone not found"}"#.to_owned(),
        ),
        ("POST", "/process.Process/Start") => {
            let request: serde_json::Value = serde_json::from_slice(&body[5..]).unwrap();
            let cmd = request["process"]["args"][2]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if cmd == "gone" {
                // What the gateway answers for a sandbox that no longer exists.
                let body = r#"{"code":502,"message":"The sandbox sbx1 was not found"}"#;
                return json(StatusCode::BAD_GATEWAY, body.to_owned());
            }
            if cmd == "sleep forever" {
                // Starts, then never ends: the client's deadline must fire.
                let start = envelope(0, r#"{"event":{"start":{"pid":77}}}"#);
                let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(start))])
                    .chain(futures::stream::pending());
                let body = Body::from_stream(chunks);
                return (
                    StatusCode::OK,
                    [("content-type", "application/connect+json")],
                    body,
                )
                    .into_response();
            }
            let exit = if cmd == "exit 3" {
                r#""exitCode":3,"#
            } else {
                ""
            };
            let mut wire = envelope(0, r#"{"event":{"start":{"pid":1002}}}"#);
            wire.extend(envelope(0, r#"{"event":{"keepalive":{}}}"#));
            wire.extend(envelope(0, r#"{"event":{"data":{"stdout":"aGkK"}}}"#));
            wire.extend(envelope(0, r#"{"event":{"data":{"stderr":"b29wcw=="}}}"#));
            let end = format!(r#"{{"event":{{"end":{{{exit}"exited":true,"status":"x"}}}}}}"#);
            wire.extend(envelope(0, &end));
            wire.extend(envelope(2, "{}"));
            (
                StatusCode::OK,
                [("content-type", "application/connect+json")],
                chunked(wire),
            )
                .into_response()
        }
        ("POST", "/process.Process/SendSignal") if body.windows(3).any(|w| w == b"999") => json(
            StatusCode::NOT_FOUND,
            r#"{"code":"not_found","message":"no process 999"}"#.to_owned(),
        ),
        ("POST", "/process.Process/SendInput" | "/process.Process/Update")
        | ("POST", "/process.Process/SendSignal" | "/process.Process/CloseStdin") => {
            json(StatusCode::OK, "{}".to_owned())
        }
        ("POST", "/process.Process/List") => json(
            StatusCode::OK,
            r#"{"processes":[{"pid":7,"config":{"cmd":"/bin/bash","args":["-i","-l"]}}]}"#
                .to_owned(),
        ),
        ("POST", "/filesystem.Filesystem/Stat") => json(
            StatusCode::NOT_FOUND,
            r#"{"code":"not_found","message":"no such file"}"#.to_owned(),
        ),
        ("POST", "/files") => {
            *stub.file.lock().unwrap() = body.to_vec();
            json(
                StatusCode::OK,
                r#"[{"name":"a.txt","type":"file","path":"/home/user/a.txt"}]"#.to_owned(),
            )
        }
        ("GET", "/files") => {
            let data = stub.file.lock().unwrap().clone();
            (
                StatusCode::OK,
                [("content-type", "application/octet-stream")],
                data,
            )
                .into_response()
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"code":404,"message":"no route"}"#.to_owned(),
        ),
    }
}

/// Starts the stub on an ephemeral port; the task ends with the test's runtime.
pub async fn start_stub() -> (Client, Stub) {
    let stub = Stub::default();
    let app = Router::new().fallback(handle).with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(format!("http://{addr}/"), Some("key-1".to_owned()));
    (client, stub)
}

pub fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<absent>")
}

/// The JSON body of the `index`-th request the stub saw.
pub fn body_json(stub: &Stub, index: usize) -> (String, serde_json::Value) {
    let seen = stub.seen.lock().unwrap()[index].clone();
    (seen.uri, serde_json::from_slice(&seen.body).unwrap())
}
