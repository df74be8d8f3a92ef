//! The pre-copy way of taking a snapshot, for sources whose RAM cannot be write-tracked (a VM
//! started from a snapshot): see the parent module's docs, and `verify` for why the image is
//! checked against the stopped source before it runs again.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::migration::{qmp, resume, set_capabilities, wait_migration};
use super::{
    DOWNTIME_LIMIT_MS, DiskSwitch, MAX_BANDWIDTH, SnapshotError, ram_file, switch_disk, verify,
};
use crate::config::{MemoryBacking, VmConfig};
use crate::qmp::Qmp;
use crate::vm::Vm;

/// The pre-copy path, for sources whose RAM cannot be write-tracked (see `background`):
/// RAM is copied while the guest runs, QEMU stops it for the last pass, the disk is switched
/// and the image made exact (see [`verify`]) before the guest runs again.
pub(super) async fn precopy(
    source: &Vm,
    source_cfg: &VmConfig,
    rq: &Qmp,
    disk: &DiskSwitch,
    image: &Path,
    uri: &str,
) -> Result<Duration, SnapshotError> {
    let sq = source.qmp();
    // A source that was itself restored from a snapshot still has `x-ignore-shared` on from
    // its own restore; it changes the stream format, and its RAM must be sent anyway.
    let caps = [
        ("background-snapshot", false),
        ("pause-before-switchover", true),
        ("x-ignore-shared", false),
        ("events", true),
    ];
    set_capabilities(sq, "source: capabilities", &caps).await?;
    let params = json!({ "max-bandwidth": MAX_BANDWIDTH, "downtime-limit": DOWNTIME_LIMIT_MS });
    qmp(sq, "source: parameters", "migrate-set-parameters", params).await?;
    qmp(sq, "source: migrate", "migrate", json!({ "uri": uri })).await?;

    // Pre-copy runs with the guest live; QEMU stops it for the last pass and then waits for us.
    wait_migration(sq, "source: pre-copy", &["pre-switchover"]).await?;
    let stopped = Instant::now();
    let switched = switch_disk(sq, disk).await;
    let continued = match switched {
        Ok(()) => {
            let args = json!({ "state": "pre-switchover" });
            match qmp(sq, "source: continue", "migrate-continue", args).await {
                Ok(_) => wait_migration(sq, "source: switchover", &["completed"]).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    // Still stopped: make the image exact (see `verify`) before the guest runs again. The
    // recorder must have loaded the whole stream first.
    let patched = match continued {
        Ok(()) => match wait_migration(rq, "recorder: receive", &["completed"]).await {
            Ok(()) => patch(source, source_cfg, image).await,
            Err(e) => Err(e),
        },
        Err(e) => {
            let _ = sq.execute("migrate_cancel", None).await;
            Err(e)
        }
    };
    // Whatever happened, the source must run again.
    let resumed = resume(sq).await;
    let frozen_for = stopped.elapsed();
    let verified = patched?;
    resumed?;
    tracing::debug!(vm = %source_cfg.id, ?frozen_for, checked = verified.checked_pages,
        "source frozen (pre-copy)");
    if verified.patched_pages > 0 {
        tracing::info!(
            vm = %source_cfg.id,
            patched = verified.patched_pages,
            checked = verified.checked_pages,
            "pre-copy missed pages; the snapshot image was corrected"
        );
    }
    Ok(frozen_for)
}

/// Runs [`verify::patch_image`] for `source` against the snapshot's RAM image.
async fn patch(
    source: &Vm,
    cfg: &VmConfig,
    image: &Path,
) -> Result<verify::Verified, SnapshotError> {
    let pid = source.pid();
    let bytes = cfg.memory_mib << 20;
    let hint = ram_file(cfg);
    let candidates = match &cfg.memory {
        MemoryBacking::Private(_) => verify::Candidates::Anonymous,
        MemoryBacking::Shared(_) | MemoryBacking::Fresh => verify::Candidates::Resident,
    };
    let image = image.to_owned();
    tokio::task::spawn_blocking(move || {
        verify::patch_image(pid, bytes, hint.as_deref(), candidates, &image)
    })
    .await
    .map_err(|e| SnapshotError::Files(std::io::Error::other(e)))?
    .map_err(SnapshotError::Files)
}
