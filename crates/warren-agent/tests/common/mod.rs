//! Test harness: runs the built agent on a free loopback port with a scratch home, and a
//! small Connect client (unary calls and envelope streams) on top of reqwest.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use warren_proto::connect::{Envelope, EnvelopeDecoder};

/// A running agent, killed on drop.
pub struct Agent {
    child: Child,
    pub base: String,
    pub home: tempfile::TempDir,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One frame of a response stream.
#[derive(Debug, Clone)]
pub enum Frame {
    Msg(Value),
    End(Value),
}

pub struct RpcStream {
    resp: reqwest::Response,
    dec: EnvelopeDecoder,
    pub content_type: String,
    done: bool,
}

impl RpcStream {
    /// The next frame; panics after 20 s without one.
    pub async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(20), self.next_inner())
            .await
            .expect("timed out waiting for a stream frame")
    }

    async fn next_inner(&mut self) -> Option<Frame> {
        loop {
            if let Some(env) = self.dec.next_envelope().expect("valid envelopes") {
                let v: Value = serde_json::from_slice(&env.data).expect("JSON payload");
                return Some(if env.is_end_stream() {
                    Frame::End(v)
                } else {
                    Frame::Msg(v)
                });
            }
            if self.done {
                return None;
            }
            match self.resp.chunk().await.expect("reading the stream") {
                Some(c) => self.dec.push(&c),
                None => {
                    self.dec.finish().expect("no truncated envelope");
                    self.done = true;
                }
            }
        }
    }

    /// Every remaining message and the end payload.
    pub async fn collect(mut self) -> (Vec<Value>, Value) {
        let mut msgs = Vec::new();
        while let Some(f) = self.next().await {
            match f {
                Frame::Msg(v) => msgs.push(v),
                Frame::End(v) => {
                    assert!(
                        self.next().await.is_none(),
                        "nothing may follow the end envelope"
                    );
                    return (msgs, v);
                }
            }
        }
        panic!("stream ended without an end envelope");
    }
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

impl Agent {
    pub async fn start() -> Agent {
        Self::start_with_env(&[]).await
    }

    pub async fn start_with_env(env: &[(&str, &str)]) -> Agent {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let home = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_warren-agent"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("HOME", home.path())
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the agent");
        let agent = Agent {
            child,
            base: format!("http://127.0.0.1:{port}"),
            home,
            client: reqwest::Client::new(),
            token: None,
        };
        for _ in 0..200 {
            if let Ok(r) = agent
                .client
                .get(format!("{}/health", agent.base))
                .send()
                .await
                && r.status() == 204
            {
                return agent;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("agent did not become healthy");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn home(&self) -> PathBuf {
        self.home.path().to_path_buf()
    }

    fn with_token(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.header("X-Access-Token", t),
            None => rb,
        }
    }

    /// Unary call: (HTTP status, JSON body).
    pub async fn unary(&self, method: &str, body: Value) -> (u16, Value) {
        self.unary_with(method, body, &[]).await
    }

    pub async fn unary_with(
        &self,
        method: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut rb = self
            .client
            .post(format!("{}/{method}", self.base))
            .header("Content-Type", "application/json")
            .header("Connect-Protocol-Version", "1")
            .body(body.to_string());
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = self.with_token(rb).send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("application/json"), "content type {ct}");
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        (status, v)
    }

    /// Opens a stream with raw request body bytes.
    pub async fn stream_raw(
        &self,
        method: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> RpcStream {
        let mut rb = self
            .client
            .post(format!("{}/{method}", self.base))
            .header("Content-Type", "application/connect+json")
            .header("Connect-Protocol-Version", "1")
            .body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = self.with_token(rb).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        RpcStream {
            resp,
            dec: EnvelopeDecoder::new(64 << 20),
            content_type,
            done: false,
        }
    }

    /// Opens a server stream with one request message.
    pub async fn stream(&self, method: &str, body: Value, headers: &[(&str, &str)]) -> RpcStream {
        let env = Envelope::message(body.to_string()).encode();
        self.stream_raw(method, env, headers).await
    }

    pub fn get(&self, path_and_query: &str) -> reqwest::RequestBuilder {
        self.with_token(self.client.get(format!("{}{path_and_query}", self.base)))
    }

    pub fn post(&self, path_and_query: &str) -> reqwest::RequestBuilder {
        self.with_token(self.client.post(format!("{}{path_and_query}", self.base)))
    }
}

/// Starts `bash -c script` and returns the stream after checking the `start` event.
pub async fn start_bash(agent: &Agent, script: &str, extra: Value) -> (u32, RpcStream) {
    let mut req = json!({"process": {"cmd": "/bin/bash", "args": ["-c", script]}});
    if let (Value::Object(r), Value::Object(e)) = (&mut req, extra) {
        r.extend(e);
    }
    let mut s = agent.stream("process.Process/Start", req, &[]).await;
    assert_eq!(s.content_type, "application/connect+json");
    let Some(Frame::Msg(first)) = s.next().await else {
        panic!("no start event")
    };
    let pid = first["event"]["start"]["pid"]
        .as_u64()
        .expect("first event is start");
    let pid = u32::try_from(pid).expect("pid fits u32");
    (pid, s)
}

/// Output of a finished process: (stdout, stderr, pty, end event, end envelope).
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub end: Value,
    pub keepalives: usize,
    pub trailer: Value,
}

pub async fn finish(s: RpcStream) -> Finished {
    let (msgs, trailer) = s.collect().await;
    let mut f = Finished {
        stdout: vec![],
        stderr: vec![],
        pty: vec![],
        end: Value::Null,
        keepalives: 0,
        trailer,
    };
    for m in msgs {
        let ev = &m["event"];
        if let Some(d) = ev.get("data") {
            for (k, buf) in [
                ("stdout", &mut f.stdout),
                ("stderr", &mut f.stderr),
                ("pty", &mut f.pty),
            ] {
                if let Some(t) = d.get(k) {
                    buf.extend(unb64(t.as_str().unwrap()));
                }
            }
        } else if let Some(e) = ev.get("end") {
            assert!(f.end.is_null(), "a single end event");
            f.end = e.clone();
        } else if ev.get("start").is_some() {
            // Streams opened with `Agent::stream` still hold their start event.
        } else if ev.get("keepalive").is_some() {
            f.keepalives += 1;
        } else {
            panic!("unexpected event {m}");
        }
    }
    f
}
