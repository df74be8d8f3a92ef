//! Build logs: an append-only list of entries that a status endpoint reads by offset.
//!
//! E2B's SDK polls `GET .../status?logsOffset=N` and advances N by the number of entries it
//! received, so entries are never removed or reordered: offset N always means "the entries
//! after the first N". The list is shared (cheap clones) between the running build and the
//! readers; [`BuildLog::wait_beyond`] lets a streaming reader sleep until something new comes.
//!
//! Step names follow E2B (whose SDK maps them back to the user's source lines): `"base"` for
//! resolving the base, `"1"`, `"2"`, ... for the template's steps, `"finalize"` for the
//! start command, ready check and snapshot.
//!
//! Guest output is untrusted and may be endless, so the list is capped at
//! [`MAX_LOG_ENTRIES`] (past the cap one warning is added and further lines are dropped) and
//! each guest line at [`MAX_LINE_BYTES`].

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Upper bound on kept entries per build.
pub const MAX_LOG_ENTRIES: usize = 50_000;

/// Upper bound on the bytes of one guest line; longer lines are cut.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Step name of base work.
pub const STEP_BASE: &str = "base";
/// Step name of the start command, ready check and snapshot.
pub const STEP_FINALIZE: &str = "finalize";

/// Severity, spelled as E2B's `LogLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// One log entry (serializes as E2B's `BuildLogEntry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was recorded (RFC 3339 with microseconds, like E2B's own timestamps).
    #[serde(serialize_with = "rfc3339_micros")]
    pub timestamp: DateTime<Utc>,
    /// Severity.
    pub level: LogLevel,
    /// One line of text.
    pub message: String,
    /// Step name (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

fn rfc3339_micros<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// A line of guest output, as a backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// From stderr (logged as `warn`) rather than stdout (`info`).
    pub stderr: bool,
    /// The text, without its newline.
    pub text: String,
}

#[derive(Default)]
struct Inner {
    entries: Mutex<Vec<LogEntry>>,
    changed: Notify,
}

/// The shared log of one build.
#[derive(Clone, Default)]
pub struct BuildLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BuildLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildLog")
            .field("len", &self.len())
            .finish()
    }
}

impl BuildLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<LogEntry>> {
        // A panic while holding the lock cannot leave the Vec half-updated (push is atomic
        // from our point of view), so a poisoned lock is still safe to use.
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an entry.
    pub fn push(&self, level: LogLevel, step: Option<&str>, message: impl Into<String>) {
        let mut entries = self.lock();
        let entry = |level, message| LogEntry {
            timestamp: Utc::now(),
            level,
            message,
            step: step.map(str::to_string),
        };
        match entries.len() {
            n if n < MAX_LOG_ENTRIES - 1 => entries.push(entry(level, message.into())),
            n if n == MAX_LOG_ENTRIES - 1 => entries.push(entry(
                LogLevel::Warn,
                "log limit reached; output dropped".into(),
            )),
            _ => return,
        }
        drop(entries);
        self.inner.changed.notify_waiters();
    }

    /// Number of entries so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was logged yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries after the first `offset` (empty when `offset` is past the end).
    pub fn since(&self, offset: usize) -> Vec<LogEntry> {
        self.lock()
            .get(offset..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Waits until there are more than `offset` entries.
    pub async fn wait_beyond(&self, offset: usize) {
        loop {
            let changed = self.inner.changed.notified();
            if self.len() > offset {
                return;
            }
            changed.await;
        }
    }

    /// A writer bound to one step.
    pub fn step(&self, step: &str) -> StepLog {
        StepLog {
            log: self.clone(),
            step: step.to_string(),
        }
    }
}

/// A [`BuildLog`] writer that tags entries with a step name; given to backends.
#[derive(Clone, Debug)]
pub struct StepLog {
    log: BuildLog,
    step: String,
}

impl StepLog {
    /// Records a line of guest output.
    pub fn line(&self, line: LogLine) {
        let level = if line.stderr {
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        let mut text = line.text;
        if text.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        self.log.push(level, Some(&self.step), text);
    }

    /// Records a message of the builder or backend.
    pub fn note(&self, level: LogLevel, message: impl Into<String>) {
        self.log.push(level, Some(&self.step), message);
    }

    /// The step name.
    pub fn step(&self) -> &str {
        &self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_serde() {
        let log = BuildLog::new();
        log.push(LogLevel::Info, None, "a");
        log.step("1").line(LogLine {
            stderr: true,
            text: "b".into(),
        });
        assert_eq!(log.since(0).len(), 2);
        assert_eq!(log.since(1)[0].message, "b");
        assert_eq!(log.since(1)[0].level, LogLevel::Warn);
        assert!(log.since(5).is_empty());
        let json = serde_json::to_value(&log.since(1)[0]).unwrap();
        assert_eq!(json["level"], "warn");
        assert_eq!(json["step"], "1");
        let ts = json["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-12-03T14:23:50.061740Z".len(),
            "{ts}"
        );
        assert!(
            serde_json::to_value(&log.since(0)[0])
                .unwrap()
                .get("step")
                .is_none()
        );
        let long = "é".repeat(MAX_LINE_BYTES);
        log.step("2").line(LogLine {
            stderr: false,
            text: long,
        });
        assert!(log.since(2)[0].message.len() <= MAX_LINE_BYTES + '…'.len_utf8());
    }

    #[test]
    fn capped() {
        let log = BuildLog::new();
        for i in 0..MAX_LOG_ENTRIES + 10 {
            log.push(LogLevel::Info, None, i.to_string());
        }
        assert_eq!(log.len(), MAX_LOG_ENTRIES);
        assert_eq!(log.since(MAX_LOG_ENTRIES - 1)[0].level, LogLevel::Warn);
    }

    #[tokio::test]
    async fn wait_beyond_wakes_on_push() {
        let log = BuildLog::new();
        let writer = log.clone();
        let waiter = tokio::spawn(async move { log.wait_beyond(0).await });
        tokio::task::yield_now().await;
        writer.push(LogLevel::Info, None, "x");
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
