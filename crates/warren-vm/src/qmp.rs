//! A small async client for QEMU's QMP (QEMU Machine Protocol) over a unix socket.
//!
//! Protocol: on connect QEMU sends a greeting `{"QMP": {...}}`; the client must send
//! `{"execute": "qmp_capabilities"}` before any other command. Each command carries an `id`
//! that QEMU echoes in its `{"return": ...}` or `{"error": {"class", "desc"}}` reply, so
//! several commands may be in flight. Asynchronous events (`{"event": "STOP", ...}`, RESUME,
//! SHUTDOWN, ...) arrive interleaved with replies; they are fanned out to subscribers. When
//! the socket closes (QEMU exited), pending commands fail with [`QmpError::Disconnected`] and
//! [`Qmp::closed`] resolves.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, broadcast, oneshot, watch};

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to the QMP socket")]
    Connect(#[source] std::io::Error),
    #[error("QMP socket I/O failed")]
    Io(#[source] std::io::Error),
    #[error("unexpected QMP message: {0}")]
    Protocol(String),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("the QMP connection is closed")]
    Disconnected,
}

/// One parsed line from QEMU.
#[derive(Debug, PartialEq)]
pub(crate) enum Message {
    Greeting,
    Return {
        id: Option<u64>,
        value: Value,
    },
    Error {
        id: Option<u64>,
        class: String,
        desc: String,
    },
    Event(QmpEvent),
}

/// Parses one line of QMP output.
pub(crate) fn parse_message(line: &str) -> Result<Message, QmpError> {
    let v: Value = serde_json::from_str(line).map_err(|_| QmpError::Protocol(truncate(line)))?;
    let id = v.get("id").and_then(Value::as_u64);
    if v.get("QMP").is_some() {
        Ok(Message::Greeting)
    } else if let Some(value) = v.get("return") {
        Ok(Message::Return {
            id,
            value: value.clone(),
        })
    } else if let Some(err) = v.get("error") {
        let field = |k: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(Message::Error {
            id,
            class: field("class"),
            desc: field("desc"),
        })
    } else if let Some(name) = v.get("event").and_then(Value::as_str) {
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        Ok(Message::Event(QmpEvent {
            name: name.to_owned(),
            data,
        }))
    } else {
        Err(QmpError::Protocol(truncate(line)))
    }
}

fn truncate(line: &str) -> String {
    line.chars().take(200).collect()
}

type Reply = Result<Value, QmpError>;
type Pending = Arc<std::sync::Mutex<Option<HashMap<u64, (String, oneshot::Sender<Reply>)>>>>;

/// A connected QMP session. Cheap to share behind an `Arc`; commands may run concurrently.
pub struct Qmp {
    writer: Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    events: broadcast::Sender<QmpEvent>,
    closed: watch::Receiver<bool>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("closed", &*self.closed.borrow())
            .finish_non_exhaustive()
    }
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities.
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path).await.map_err(QmpError::Connect)?;
        let (read, writer) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = lines.next_line().await.map_err(QmpError::Io)?;
        match greeting.as_deref().map(parse_message) {
            Some(Ok(Message::Greeting)) => {}
            Some(_) => return Err(QmpError::Protocol(truncate(&greeting.unwrap_or_default()))),
            None => return Err(QmpError::Disconnected),
        }
        let pending: Pending = Arc::new(std::sync::Mutex::new(Some(HashMap::new())));
        let (events, _) = broadcast::channel(64);
        let (closed_tx, closed) = watch::channel(false);
        tokio::spawn(read_loop(lines, pending.clone(), events.clone(), closed_tx));
        let qmp = Qmp {
            writer: Mutex::new(writer),
            pending,
            next_id: AtomicU64::new(1),
            events,
            closed,
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command` with optional `arguments` and returns its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().map_err(|_| QmpError::Disconnected)?;
            let map = pending.as_mut().ok_or(QmpError::Disconnected)?;
            map.insert(id, (command.to_owned(), tx));
        }
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        let written = self.writer.lock().await.write_all(line.as_bytes()).await;
        if let Err(e) = written {
            if let Ok(mut p) = self.pending.lock() {
                p.as_mut().map(|m| m.remove(&id));
            }
            return Err(QmpError::Io(e));
        }
        rx.await.map_err(|_| QmpError::Disconnected)?
    }

    /// Events received from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// Resolves when the connection has closed (normally: QEMU exited).
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        // An Err means the reader is gone, which also means closed.
        let _ = rx.wait_for(|c| *c).await;
    }
}

async fn read_loop(
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    pending: Pending,
    events: broadcast::Sender<QmpEvent>,
    closed: watch::Sender<bool>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let (id, reply) = match parse_message(&line) {
            Ok(Message::Return { id, value }) => (id, Ok(value)),
            Ok(Message::Error { id, class, desc }) => (id, Err((class, desc))),
            Ok(Message::Event(event)) => {
                tracing::debug!(event = %event.name, "QMP event");
                // No subscribers is fine.
                let _ = events.send(event);
                continue;
            }
            Ok(Message::Greeting) | Err(_) => {
                tracing::warn!(line = %truncate(&line), "unexpected QMP message");
                continue;
            }
        };
        let Some(id) = id else { continue };
        let entry = pending
            .lock()
            .ok()
            .and_then(|mut p| p.as_mut()?.remove(&id));
        if let Some((command, tx)) = entry {
            let reply = reply.map_err(|(class, desc)| QmpError::Command {
                command,
                class,
                desc,
            });
            // The caller may have given up waiting.
            let _ = tx.send(reply);
        }
    }
    // Dropping the senders fails every pending command with Disconnected.
    if let Ok(mut p) = pending.lock() {
        p.take();
    }
    let _ = closed.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_message_kind() {
        let greeting = concat!(
            r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "#,
            r#""capabilities": ["oob"]}}"#
        );
        assert_eq!(
            parse_message(greeting).expect("greeting"),
            Message::Greeting
        );
        assert_eq!(
            parse_message(r#"{"return": {}, "id": 3}"#).expect("return"),
            Message::Return {
                id: Some(3),
                value: json!({})
            }
        );
        assert_eq!(
            parse_message(r#"{"id": 4, "error": {"class": "GenericError", "desc": "nope"}}"#)
                .expect("error"),
            Message::Error {
                id: Some(4),
                class: "GenericError".into(),
                desc: "nope".into()
            }
        );
        let ev = concat!(
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "#,
            r#""data": {"guest": true, "reason": "guest-reset"}}"#
        );
        match parse_message(ev).expect("event") {
            Message::Event(e) => {
                assert_eq!(e.name, "SHUTDOWN");
                assert_eq!(e.data["reason"], "guest-reset");
            }
            other => panic!("not an event: {other:?}"),
        }
        assert!(matches!(
            parse_message("not json"),
            Err(QmpError::Protocol(_))
        ));
        assert!(matches!(
            parse_message(r#"{"foo": 1}"#),
            Err(QmpError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn client_matches_replies_by_id_and_forwards_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .expect("w");
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).expect("json");
                let id = v["id"].clone();
                let reply = match v["execute"].as_str() {
                    Some("query-status") => {
                        write
                            .write_all(b"{\"event\": \"STOP\", \"data\": {}}\n")
                            .await
                            .expect("w");
                        json!({"return": {"status": "paused"}, "id": id})
                    }
                    Some("bad") => {
                        json!({"error": {"class": "CommandNotFound", "desc": "x"}, "id": id})
                    }
                    _ => json!({"return": {}, "id": id}),
                };
                write
                    .write_all(format!("{reply}\n").as_bytes())
                    .await
                    .expect("w");
            }
        });
        let qmp = Qmp::connect(&path).await.expect("connect");
        let mut events = qmp.subscribe();
        let status = qmp.execute("query-status", None).await.expect("status");
        assert_eq!(status["status"], "paused");
        assert_eq!(events.recv().await.expect("event").name, "STOP");
        let err = qmp.execute("bad", None).await.expect_err("must fail");
        assert!(matches!(err, QmpError::Command { ref class, .. } if class == "CommandNotFound"));
        server.abort();
        let _ = server.await;
        qmp.closed().await;
        assert!(matches!(
            qmp.execute("x", None).await,
            Err(QmpError::Disconnected)
        ));
    }
}
