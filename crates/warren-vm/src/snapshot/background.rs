//! Snapshots by write tracking: the source is stopped only while its disk is switched and its
//! device state captured, and its RAM is sent afterwards while it runs, each page as it was at
//! the stop.
//!
//! This is QEMU's `background-snapshot` migration mode. At the stop QEMU write-protects the
//! guest's RAM with userfaultfd and resumes the guest; the first write to a page that has not
//! been sent yet traps, and QEMU sends that page before letting the write through. The stream
//! is an ordinary migration stream (RAM, then the device state captured at the stop), so the
//! recorder loads it like a pre-copy. The freeze is the same few milliseconds however much
//! memory the guest dirties, and no verification pass is needed: writes are caught by the host
//! kernel's page protection, which sees every store (TCG's included), not by QEMU's dirty log,
//! whose misses the pre-copy path has to repair (see `verify`).
//!
//! The order of the pause:
//!
//! ```text
//!  we: stop ─ switch disk ─ migrate (background-snapshot)
//!  QEMU's migration thread: capture devices ─ write-protect RAM ─ resume guest ─ copy RAM
//! ```
//!
//! The disk must be switched at the same instant as the memory is captured, so Warren stops
//! the guest itself before QEMU does (QEMU's own stop happens on its migration thread, where no
//! QMP command can be slotted in). QEMU 7.2 resumes the guest unconditionally once the state is
//! captured; a QEMU that instead restores the run state it found (paused, since Warren stopped
//! it) is resumed by Warren when the copy ends, a longer but still correct freeze.
//!
//! Where it works: the host kernel must be able to write-protect the mapping that holds the
//! guest's RAM. Anonymous and shared-memory (memfd) mappings qualify; a private mapping of a
//! file on disk, which is how a VM restored from a snapshot holds its RAM, does not. QEMU checks
//! this when the capability is set, and where it refuses, the caller falls back to pre-copy.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::migration::{describe, next_event, qmp, resume, set_capabilities, wait_migration};
use super::{DiskSwitch, MAX_BANDWIDTH, MIGRATION_TIMEOUT, SnapshotError, switch_disk, verify};
use crate::config::VmConfig;
use crate::qmp::{Qmp, QmpError};
use crate::vm::Vm;

/// How often the run state is asked for when no event arrives.
const STATE_POLL: Duration = Duration::from_millis(5);

/// Takes the snapshot of the source behind `sq` into the recorder listening at `uri`. Returns
/// `None`, having changed nothing, when the source's RAM cannot be write-tracked; otherwise how
/// long the guest was stopped, once the source's side of the copy is complete.
pub(super) async fn record(
    source: &Vm,
    source_cfg: &VmConfig,
    disk: &DiskSwitch,
    uri: &str,
) -> Result<Option<Duration>, SnapshotError> {
    let sq = source.qmp();
    // `pause-before-switchover` is incompatible with this mode; `x-ignore-shared` may be left
    // on by the source's own restore and must be off so that its RAM is sent.
    let caps = [
        ("pause-before-switchover", false),
        ("x-ignore-shared", false),
        ("events", true),
        ("background-snapshot", true),
    ];
    match set_capabilities(sq, "source: capabilities", &caps).await {
        Ok(()) => {}
        Err(SnapshotError::Qmp {
            source: QmpError::Command { desc, .. },
            ..
        }) => {
            tracing::debug!(reason = %desc, "no write tracking for this VM; using pre-copy");
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    let params = json!({ "max-bandwidth": MAX_BANDWIDTH });
    qmp(sq, "source: parameters", "migrate-set-parameters", params).await?;
    // Best effort: without it, QEMU faults the pages in during the freeze instead.
    let (pid, bytes) = (source.pid(), source_cfg.memory_mib << 20);
    let hint = super::ram_file(source_cfg);
    let populated =
        tokio::task::spawn_blocking(move || verify::populate(pid, bytes, hint.as_deref())).await;
    if let Ok(Err(e)) = populated {
        tracing::debug!(error = %e, "could not fault in the guest's RAM before the snapshot");
    }

    // Subscribed before the stop, so that the RESUME event cannot be missed.
    let mut events = sq.subscribe();
    qmp(sq, "source: pause", "stop", Value::Null).await?;
    let stopped = Instant::now();
    let started = match switch_disk(sq, disk).await {
        Ok(()) => qmp(sq, "source: migrate", "migrate", json!({ "uri": uri }))
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        let _ = resume(sq).await;
        return Err(e);
    }
    let resumed = wait_resumed(sq, &mut events).await;
    let frozen_for = stopped.elapsed();
    if let Err(e) = resumed {
        let _ = sq.execute("migrate_cancel", None).await;
        let _ = resume(sq).await;
        return Err(e);
    }
    tracing::debug!(?frozen_for, "source frozen (write tracking)");
    let copied = wait_migration(sq, "source: background copy", &["completed"]).await;
    // A QEMU that left the guest paused (see the module docs) is resumed now.
    let still_paused = !is_running(sq).await?;
    if still_paused {
        resume(sq).await?;
    }
    copied?;
    Ok(Some(if still_paused {
        stopped.elapsed()
    } else {
        frozen_for
    }))
}

/// Waits until QEMU has resumed the guest after capturing its state, or until the migration
/// has ended (a QEMU that does not resume the guest itself; or a failure, reported here).
async fn wait_resumed(
    sq: &Qmp,
    events: &mut broadcast::Receiver<crate::qmp::QmpEvent>,
) -> Result<(), SnapshotError> {
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        if is_running(sq).await? {
            return Ok(());
        }
        let st = qmp(sq, "source: capture", "query-migrate", Value::Null).await?;
        match st.get("status").and_then(Value::as_str) {
            Some("completed") => return Ok(()),
            Some("failed" | "cancelled") => {
                return Err(SnapshotError::Migration {
                    step: "source: capture",
                    status: describe(&st),
                });
            }
            _ if Instant::now() > deadline => {
                return Err(SnapshotError::Timeout {
                    step: "source: capture",
                });
            }
            _ => {}
        }
        next_event(events, &["RESUME", "MIGRATION"], STATE_POLL).await;
    }
}

async fn is_running(sq: &Qmp) -> Result<bool, SnapshotError> {
    let st = qmp(sq, "source: query state", "query-status", Value::Null).await?;
    Ok(st.get("running").and_then(Value::as_bool).unwrap_or(false))
}
