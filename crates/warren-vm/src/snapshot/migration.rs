//! QMP steps shared by the ways of taking a snapshot: capabilities, waiting for a migration
//! to reach a state, resuming the source, and the socket the recorder listens on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{EVENT_POLL_FALLBACK, MIGRATION_TIMEOUT, SnapshotError};
use crate::qmp::{Qmp, QmpError, QmpEvent};

/// A short, random Unix socket path for one migration, removed on drop.
pub(super) struct MigrationSocket(pub(super) PathBuf);

/// Name prefix of the migration sockets.
pub(super) const SOCKET_PREFIX: &str = "warren-mig-";

impl MigrationSocket {
    pub(super) fn new() -> Self {
        let name = format!("{SOCKET_PREFIX}{:016x}.sock", rand::random::<u64>());
        MigrationSocket(std::env::temp_dir().join(name))
    }
}

impl Drop for MigrationSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Resumes a stopped source, retrying while QEMU finishes the migration's bookkeeping.
pub(super) async fn resume(q: &Qmp) -> Result<(), SnapshotError> {
    cont(q).await.map_err(|source| SnapshotError::Qmp {
        step: "source: resume",
        source,
    })
}

/// `cont`, retried for a while: right after a migration (either side) QEMU refuses it until
/// it has finished the migration's bookkeeping.
pub(super) async fn cont(q: &Qmp) -> Result<(), QmpError> {
    let mut tries = 0;
    loop {
        match q.execute("cont", None).await {
            Ok(_) => return Ok(()),
            Err(QmpError::Command { .. }) if tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Polls `query-migrate` until the status is one of `want`.
pub(super) async fn wait_migration(
    q: &Qmp,
    step: &'static str,
    want: &[&str],
) -> Result<(), SnapshotError> {
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    // Subscribed before the first query, so no status change can fall between the two.
    let mut events = q.subscribe();
    loop {
        let st = qmp(q, step, "query-migrate", Value::Null).await?;
        let status = st.get("status").and_then(Value::as_str).unwrap_or("none");
        if want.contains(&status) {
            tracing::trace!(step, migration = %st, "migration reached the awaited state");
            return Ok(());
        }
        if matches!(status, "failed" | "cancelled") {
            return Err(SnapshotError::Migration {
                step,
                status: describe(&st),
            });
        }
        if Instant::now() > deadline {
            return Err(SnapshotError::Timeout { step });
        }
        // Woken by the next `MIGRATION` event (capability `events`). Polling QEMU every
        // millisecond instead took its big lock thousands of times per snapshot and slowed
        // the copy itself on two cores; the slow poll is only a safety net.
        next_event(&mut events, &["MIGRATION"], EVENT_POLL_FALLBACK).await;
    }
}

/// Waits for the next QMP event named one of `names`, at most `limit`. Returns early, too,
/// when events were dropped (the subscriber lagged): one of them may have been awaited.
pub(super) async fn next_event(
    events: &mut broadcast::Receiver<QmpEvent>,
    names: &[&str],
    limit: Duration,
) {
    let next = async {
        loop {
            match events.recv().await {
                Ok(ev) if names.contains(&ev.name.as_str()) => break,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(limit, next).await;
}

pub(super) fn describe(st: &Value) -> String {
    let status = st
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    match st.get("error-desc").and_then(Value::as_str) {
        Some(desc) => format!("{status}: {desc}"),
        None => status.to_owned(),
    }
}

pub(super) async fn set_capabilities(
    q: &Qmp,
    step: &'static str,
    caps: &[(&str, bool)],
) -> Result<(), SnapshotError> {
    let list: Vec<Value> = caps
        .iter()
        .map(|(name, state)| json!({ "capability": name, "state": state }))
        .collect();
    let args = json!({ "capabilities": list });
    qmp(q, step, "migrate-set-capabilities", args)
        .await
        .map(drop)
}

pub(super) async fn qmp(
    q: &Qmp,
    step: &'static str,
    command: &str,
    args: Value,
) -> Result<Value, SnapshotError> {
    let args = if args.is_null() { None } else { Some(args) };
    q.execute(command, args)
        .await
        .map_err(|source| SnapshotError::Qmp { step, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_failed_migrations() {
        let st = json!({ "status": "failed", "error-desc": "boom" });
        assert_eq!(describe(&st), "failed: boom");
        assert_eq!(describe(&json!({ "status": "cancelled" })), "cancelled");
    }
}
