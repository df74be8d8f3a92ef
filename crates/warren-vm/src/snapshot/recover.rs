//! Putting a VM back into a normal state after its server died in the middle of a snapshot,
//! and finding the snapshot processes it left behind.
//!
//! A snapshot is driven step by step by the server over QMP (see the module above). If the
//! server is killed midway, QEMU is left wherever the protocol was: still migrating into the
//! recorder, or stopped at the `pre-switchover` pause waiting for a "continue" nobody sends,
//! or stopped after the migration completed. [`settle`] cancels what is in flight and resumes
//! the guest, so an adopted sandbox runs and can be snapshotted again. It also reports the
//! disk file QEMU really writes to, because the crash may have fallen between the disk switch
//! and the server saving which overlay is current.
//!
//! A write-tracking snapshot (QEMU's `background-snapshot`) still copying is the exception:
//! it is left to finish into its recorder, which outlives the server (the guest runs
//! meanwhile, and the copy ends within a second or two). Cancelling one is not safe in QEMU
//! 7.2: in the durability test, a guest whose background snapshot was cancelled mid-copy
//! sometimes stopped answering, or its next snapshot failed.
//!
//! The recorder QEMU of an interrupted snapshot has no owner after the crash: its RAM file
//! lives in the unfinished `.tmp-` snapshot directory, which is how [`kill_qemus_under`]
//! finds it before that directory is removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::SnapshotError;
use crate::qmp::{Qmp, QmpError};
use crate::vm::Vm;

/// How long a cancelled migration may take to wind down.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an interrupted write-tracking snapshot is given to finish its copy before it is
/// cancelled after all (its recorder died too, or the host is very busy).
const BACKGROUND_FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Migration states in which QEMU is still working on an outgoing migration.
const IN_FLIGHT: &[&str] = &[
    "setup",
    "active",
    "pre-switchover",
    "device",
    "wait-unplug",
    "cancelling",
];

fn qmp_err(step: &'static str) -> impl Fn(QmpError) -> SnapshotError {
    move |source| SnapshotError::Qmp { step, source }
}

async fn query_migrate(q: &Qmp) -> Result<Value, SnapshotError> {
    q.execute("query-migrate", None)
        .await
        .map_err(qmp_err("recover: query migration"))
}

fn migration_status(v: &Value) -> &str {
    v.get("status").and_then(Value::as_str).unwrap_or("none")
}

/// Cancels an interrupted outgoing migration, resumes a stopped guest, and returns the file
/// of the root disk's top image (`None` if QEMU does not say).
pub async fn settle(vm: &Vm) -> Result<Option<PathBuf>, SnapshotError> {
    let q = vm.qmp();
    let mut st = query_migrate(q).await?;
    if IN_FLIGHT.contains(&migration_status(&st)) && is_background(q).await? {
        tracing::info!(vm = %vm.id(), status = migration_status(&st),
            "letting a write-tracking snapshot left by a crash finish its copy");
        st = finish_background(q).await?;
        tracing::info!(vm = %vm.id(), status = migration_status(&st),
            "interrupted write-tracking snapshot ended");
    }
    if IN_FLIGHT.contains(&migration_status(&st)) {
        tracing::info!(vm = %vm.id(), status = migration_status(&st),
            "cancelling a migration left by an interrupted snapshot");
        q.execute("migrate_cancel", None)
            .await
            .map_err(qmp_err("recover: cancel migration"))?;
        wait_until_settled(q).await?;
    }
    let status = q
        .execute("query-status", None)
        .await
        .map_err(qmp_err("recover: query status"))?;
    let running = status
        .get("running")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if !running {
        tracing::info!(vm = %vm.id(), "resuming a guest stopped by an interrupted snapshot");
        super::migration::resume(q).await?;
    }
    let blocks = q
        .execute("query-block", None)
        .await
        .map_err(qmp_err("recover: query disks"))?;
    Ok(top_image(&blocks))
}

/// Whether the VM's migration capabilities say write tracking (`background-snapshot`).
async fn is_background(q: &Qmp) -> Result<bool, SnapshotError> {
    let caps = q
        .execute("query-migrate-capabilities", None)
        .await
        .map_err(qmp_err("recover: query capabilities"))?;
    Ok(caps.as_array().is_some_and(|all| {
        all.iter().any(|c| {
            c.get("capability").and_then(Value::as_str) == Some("background-snapshot")
                && c.get("state").and_then(Value::as_bool) == Some(true)
        })
    }))
}

/// Waits (up to [`BACKGROUND_FINISH_TIMEOUT`]) for a write-tracking snapshot to end on its
/// own; returns the last `query-migrate` answer, which may still be in flight.
async fn finish_background(q: &Qmp) -> Result<Value, SnapshotError> {
    let deadline = Instant::now() + BACKGROUND_FINISH_TIMEOUT;
    loop {
        let st = query_migrate(q).await?;
        if !IN_FLIGHT.contains(&migration_status(&st)) || Instant::now() > deadline {
            return Ok(st);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until_settled(q: &Qmp) -> Result<(), SnapshotError> {
    let deadline = Instant::now() + CANCEL_TIMEOUT;
    loop {
        let st = query_migrate(q).await?;
        if !IN_FLIGHT.contains(&migration_status(&st)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(SnapshotError::Timeout {
                step: "recover: cancel migration",
            });
        }
        // At `pre-switchover` QEMU waits for this before it can act on the cancel.
        if migration_status(&st) == "pre-switchover" {
            let _ = q
                .execute(
                    "migrate-continue",
                    Some(json!({ "state": "pre-switchover" })),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The top image file of the first block device with a medium.
fn top_image(blocks: &Value) -> Option<PathBuf> {
    blocks
        .as_array()?
        .iter()
        .find_map(|b| b.pointer("/inserted/image/filename")?.as_str())
        .map(PathBuf::from)
}

/// Kills (SIGKILL) every QEMU process whose command line mentions `dir`; returns their pids.
/// Used for the recorders of snapshots that a crash left unfinished.
pub fn kill_qemus_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("qemu-system") && cmd.contains(&needle) {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            let target = nix::unistd::Pid::from_raw(raw);
            if nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed.push(pid);
            }
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_image_is_read_from_query_block() {
        let blocks = json!([
            { "device": "", "qdev": "/machine/peripheral-anon/device[0]/virtio-backend",
              "inserted": { "image": { "filename": "/d/disks/sb-abc.qcow2",
                                        "backing-image": { "filename": "/d/disks/sb.qcow2" } } } }
        ]);
        assert_eq!(
            top_image(&blocks),
            Some(PathBuf::from("/d/disks/sb-abc.qcow2"))
        );
        assert_eq!(top_image(&json!([{ "device": "x" }])), None);
    }

    #[test]
    fn migration_states_in_flight() {
        assert!(IN_FLIGHT.contains(&migration_status(&json!({"status": "active"}))));
        assert!(!IN_FLIGHT.contains(&migration_status(&json!({"status": "completed"}))));
        assert!(!IN_FLIGHT.contains(&migration_status(&json!({}))));
    }
}
