//! Processes started through `process.Process` and the fan-out of their output.
//!
//! Each process has a supervisor task that reads its stdout/stderr pipes (or its PTY
//! master) in chunks of up to [`CHUNK`] bytes and delivers every chunk to each current
//! subscriber (a `Start` stream or a `Connect` stream), then, once the child is reaped and
//! its output drained, an `end` event; after that the process leaves the table.
//!
//! Back-pressure (design decision): each subscriber has a bounded queue of
//! [`SUBSCRIBER_QUEUE`] chunks. Delivery waits for room, so a briefly slow client slows the
//! process down through its pipe instead of losing output or growing memory; a subscriber
//! that accepts nothing for [`SLOW_SUBSCRIBER_TIMEOUT`] is dropped (its stream ends with
//! `unavailable`) so that it cannot stall the process forever. Without subscribers output
//! is discarded, so a background process never blocks on a full pipe. Output is never
//! buffered beyond these queues; a late `Connect` sees output from then on.
//!
//! Output after exit: a child's descendants may keep the pipes open (`cmd &`), so after
//! the child is reaped the supervisor drains the pipes only while data keeps coming, and
//! gives up after [`DRAIN_IDLE`] without data.

pub mod io;
pub mod service;
pub mod spawn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use warren_proto::envd::process::{DataEvent, EndEvent, ProcessConfig, ProcessInfo};

use self::io::AsyncFile;
use self::spawn::{ExitStatus, Reaper, Spawned, status_text};

/// Largest output chunk read at once.
pub const CHUNK: usize = 64 * 1024;
/// Chunks queued per subscriber.
pub const SUBSCRIBER_QUEUE: usize = 16;
/// How long a subscriber may refuse output before it is dropped (default; tests shorten it
/// with `WARREN_AGENT_SLOW_SUBSCRIBER_MS`).
pub const SLOW_SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(30);

fn slow_subscriber_timeout() -> Duration {
    static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        std::env::var("WARREN_AGENT_SLOW_SUBSCRIBER_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(SLOW_SUBSCRIBER_TIMEOUT, Duration::from_millis)
    })
}
/// Idle time after which output of an exited process is considered complete.
pub const DRAIN_IDLE: Duration = Duration::from_millis(250);

/// What subscribers receive.
#[derive(Debug, Clone)]
pub enum Output {
    /// A chunk of output.
    Data(DataEvent),
    /// The process ended (last message).
    End(EndEvent),
}

type Subscribers = Vec<(u64, mpsc::Sender<Output>)>;
/// An output descriptor and the event variant its chunks become.
type Source = (Arc<AsyncFile>, fn(Bytes) -> DataEvent);

/// A running process.
pub struct Process {
    /// Its pid.
    pub pid: u32,
    /// Its tag.
    pub tag: Option<String>,
    /// How it was started (as requested).
    pub config: ProcessConfig,
    /// Stdin pipe, `None` when absent or closed.
    pub stdin: tokio::sync::Mutex<Option<AsyncFile>>,
    /// PTY master, for PTY processes.
    pub pty: Option<Arc<AsyncFile>>,
    /// `None` once the end was delivered.
    subscribers: Mutex<Option<Subscribers>>,
    next_subscriber: AtomicU64,
}

impl Process {
    /// Subscribes to output from now on; `None` if the process already ended.
    pub fn subscribe(&self) -> Option<mpsc::Receiver<Output>> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subs.as_mut()?.push((id, tx));
        Some(rx)
    }

    /// Wire description for `List`.
    pub fn info(&self) -> ProcessInfo {
        ProcessInfo {
            config: Some(self.config.clone()),
            pid: self.pid,
            tag: self.tag.clone(),
        }
    }

    async fn publish(&self, out: Output) {
        let subs: Subscribers = {
            let guard = self
                .subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            guard.as_ref().cloned().unwrap_or_default()
        };
        for (id, tx) in subs {
            if let Err(err) = tx
                .send_timeout(out.clone(), slow_subscriber_timeout())
                .await
            {
                if matches!(err, mpsc::error::SendTimeoutError::Timeout(_)) {
                    tracing::debug!(pid = self.pid, "dropping a slow output subscriber");
                }
                let mut guard = self
                    .subscribers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(list) = guard.as_mut() {
                    list.retain(|(i, _)| *i != id);
                }
            }
        }
    }
}

/// All processes that have not ended yet.
#[derive(Default)]
pub struct ProcessTable {
    procs: Arc<Mutex<HashMap<u32, Arc<Process>>>>,
    /// The reaper shared by all children.
    pub reaper: Reaper,
}

impl ProcessTable {
    /// Every live process.
    pub fn list(&self) -> Vec<Arc<Process>> {
        self.procs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// By pid.
    pub fn by_pid(&self, pid: u32) -> Option<Arc<Process>> {
        self.procs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&pid)
            .cloned()
    }

    /// By tag.
    pub fn by_tag(&self, tag: &str) -> Option<Arc<Process>> {
        let procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
        procs
            .values()
            .find(|p| p.tag.as_deref() == Some(tag))
            .cloned()
    }

    /// Registers a spawned child and starts its supervisor. Returns the process and a
    /// subscription that sees all of its output.
    pub fn register(
        &self,
        spawned: Spawned,
        config: ProcessConfig,
        tag: Option<String>,
    ) -> (Arc<Process>, mpsc::Receiver<Output>) {
        let Spawned {
            pid,
            stdout,
            stderr,
            stdin,
            pty,
            exit,
        } = spawned;
        let process = Arc::new(Process {
            pid,
            tag,
            config,
            stdin: tokio::sync::Mutex::new(stdin),
            pty: pty.clone(),
            subscribers: Mutex::new(Some(Vec::new())),
            next_subscriber: AtomicU64::new(0),
        });
        let first = process.subscribe();
        self.procs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pid, process.clone());
        let table = self.procs.clone();
        let proc2 = process.clone();
        tokio::spawn(async move {
            let mut sources: Vec<Source> = Vec::new();
            if let Some(f) = stdout {
                sources.push((Arc::new(f), DataEvent::Stdout));
            }
            if let Some(f) = stderr {
                sources.push((Arc::new(f), DataEvent::Stderr));
            }
            if let Some(f) = pty {
                sources.push((f, DataEvent::Pty));
            }
            let end = supervise(&proc2, sources, exit).await;
            proc2.publish(Output::End(end)).await;
            *proc2
                .subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&proc2.pid);
            tracing::debug!(pid = proc2.pid, "process ended");
        });
        // `first` is always Some: the subscriber list was just created.
        let rx = first.unwrap_or_else(|| mpsc::channel(1).1);
        (process, rx)
    }
}

async fn pump(
    process: Arc<Process>,
    file: Arc<AsyncFile>,
    wrap: fn(Bytes) -> DataEvent,
    counter: Arc<AtomicU64>,
    _alive: mpsc::Sender<()>,
) {
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.resize(CHUNK, 0);
        let n = match file.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(err) => {
                tracing::debug!(pid = process.pid, %err, "reading process output failed");
                return;
            }
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        let chunk = buf.split_to(n).freeze();
        process.publish(Output::Data(wrap(chunk))).await;
    }
}

async fn supervise(
    process: &Arc<Process>,
    sources: Vec<Source>,
    exit: tokio::sync::oneshot::Receiver<ExitStatus>,
) -> EndEvent {
    let counter = Arc::new(AtomicU64::new(0));
    // Every pump holds a sender; `recv` returns `None` once all pumps are done.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    let readers: Vec<_> = sources
        .into_iter()
        .map(|(f, wrap)| {
            tokio::spawn(pump(
                process.clone(),
                f,
                wrap,
                counter.clone(),
                alive.clone(),
            ))
        })
        .collect();
    drop(alive);
    let status = exit.await;
    let mut last = counter.load(Ordering::Relaxed);
    loop {
        if tokio::time::timeout(DRAIN_IDLE, all_done.recv())
            .await
            .is_ok()
        {
            break;
        }
        let now = counter.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    for r in &readers {
        r.abort();
    }
    match status {
        Ok(status) => EndEvent {
            exit_code: match status {
                ExitStatus::Exited(code) => code,
                ExitStatus::Signaled { .. } => -1,
            },
            exited: matches!(status, ExitStatus::Exited(_)),
            status: status_text(status),
            error: None,
        },
        Err(_) => EndEvent {
            exit_code: -1,
            exited: false,
            status: String::new(),
            error: Some("the process's exit status was lost".to_owned()),
        },
    }
}
