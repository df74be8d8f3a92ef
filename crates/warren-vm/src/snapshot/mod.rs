//! Live snapshots of running VMs, and VMs started from them.
//!
//! See ARCHITECTURE.md ("Live snapshots") for why it works this way. In short, a snapshot of a
//! running VM `S` into a directory `D` is a migration of `S` into a "recorder" QEMU that never
//! runs guest code (`-S -incoming`, its RAM a file), after which the recorder writes the
//! device state next to that RAM. `S` is moved onto a new disk overlay in the same pause that
//! captures its memory, so the frozen overlay is the snapshot's disk layer. Two ways to migrate:
//!
//! - Write tracking (module `background`), when QEMU can write-protect `S`'s RAM (a VM booted from
//!   scratch: its RAM is a memfd): `S` is stopped, its disk switched, its device state captured
//!   and its RAM write-protected, and it runs again, all in a few milliseconds; RAM is sent
//!   afterwards, each page as it was at the stop.
//! - Pre-copy, otherwise (a VM that was itself started from a snapshot maps that snapshot's RAM
//!   file privately, which cannot be write-protected):
//!
//! ```text
//!  recorder QEMU (-S, -incoming, RAM = D/mem shared)      source S (running)
//!       migrate-incoming unix:/tmp/…sock   ◀── pre-copy ──  migrate (guest keeps running)
//!                                                           … last pass: S stops (freeze)
//!                                                           state pre-switchover:
//!                                                             disk: blockdev-snapshot onto a
//!                                                             pre-created overlay
//!                                          ◀── devices ───  migrate-continue → completed
//!       (receive completed)                                 verify: pages S wrote since its
//!                                                             restore compared with D/mem
//!                                                           cont  (S runs again: freeze ends)
//!       migrate exec:cat > D/devstate  (x-ignore-shared: RAM stays in D/mem)
//!       quit;  fsync D/mem, D/devstate;  manifest written last
//! ```
//!
//! Why the `verify` step: with TCG on a loaded host, QEMU 7.2's pre-copy sometimes does not
//! re-send a page the guest wrote during the copy. Every clone of such a snapshot oopsed within
//! seconds (memory disagreeing with the CPU state). Stopping the guest for the whole copy fixes
//! that but freezes it for seconds; comparing the stopped source's written pages with the
//! image costs a memory-speed pass instead, and makes the image exact whatever QEMU missed.
//! Write tracking needs no such pass: the host kernel traps every write.
//!
//! Starting from a snapshot: QEMU with RAM = `D/mem` mapped private (`share=off`), `-S
//! -incoming defer`, `x-ignore-shared`, `migrate-incoming exec:cat D/devstate`, `cont`.
//! Pages are read from the page cache that all clones of `D` share and copied only on write.
//!
//! What the caller owns: the snapshot directory's lifetime and atomic publication (this module
//! fills a directory it is given), the disk layers (which file is frozen and must be kept),
//! and telling the guest agent that it was restored (new token, clock, entropy).

mod background;
pub mod manifest;
mod migration;
mod precopy;
pub mod recover;
mod restore;
mod staging;
mod verify;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::{MemoryBacking, VmConfig};
use crate::error::LaunchError;
use crate::qmp::{Qmp, QmpError};
use crate::vm::Vm;

pub use manifest::{
    FileRef, MANIFEST_FILE, MANIFEST_MAGIC, MANIFEST_VERSION, MachineSpec, ManifestLoadError,
    ManifestWriteError, SnapshotManifest, VerifyError,
};
use migration::{MigrationSocket, qmp, resume, set_capabilities, wait_migration};
use precopy::precopy;
pub use restore::{RestoreError, finish, prelaunch, restore, warm};

/// The RAM image's file name inside a snapshot directory.
pub const MEM_FILE: &str = "mem";
/// The device state's file name inside a snapshot directory.
pub const DEVSTATE_FILE: &str = "devstate";

/// Bandwidth cap for the snapshot migration: effectively none (the default is 128 MiB/s).
const MAX_BANDWIDTH: u64 = 64 << 30;
/// The longest final pause pre-copy aims for, in milliseconds.
const DOWNTIME_LIMIT_MS: u64 = 10;
/// How long any one migration may take before it is abandoned.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a `MIGRATION` event before asking QEMU anyway.
const EVENT_POLL_FALLBACK: Duration = Duration::from_millis(50);

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot directory could not be prepared.
    #[error("preparing the snapshot directory {path}")]
    PrepareDir {
        /// The directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The new overlay for the source's disk could not be created.
    #[error("creating the source's next disk overlay")]
    CreateOverlay(#[source] crate::disk::OverlayError),
    /// The recorder QEMU did not start.
    #[error("starting the recorder VM")]
    LaunchRecorder(#[source] LaunchError),
    /// A QMP command failed; `step` names the stage.
    #[error("snapshot step `{step}` failed")]
    Qmp {
        /// The stage of the protocol.
        step: &'static str,
        /// The QMP failure.
        #[source]
        source: QmpError,
    },
    /// A migration ended in a state other than `completed`.
    #[error("migration during `{step}` ended as {status}")]
    Migration {
        /// The stage of the protocol.
        step: &'static str,
        /// QEMU's final status (`failed`, `cancelled`, ...) and error description if any.
        status: String,
    },
    /// A migration did not finish in time.
    #[error("migration during `{step}` timed out")]
    Timeout {
        /// The stage of the protocol.
        step: &'static str,
    },
    /// Syncing or describing the snapshot files failed.
    #[error("writing the snapshot files")]
    Files(#[source] std::io::Error),
}

/// What taking a snapshot produced and cost.
#[derive(Debug, Clone)]
pub struct SnapshotOutcome {
    /// The source's disk file that is now frozen: the snapshot's disk layer. The source
    /// continues on `next_disk`, whose backing file it is.
    pub frozen_disk: PathBuf,
    /// How long the source's guest was stopped.
    pub frozen_for: Duration,
    /// Wall time of the whole operation, recorder included.
    pub total: Duration,
    /// The RAM image and device state written into the snapshot directory.
    pub memory: FileRef,
    /// The device state.
    pub devstate: FileRef,
}

/// The source's disk at snapshot time: which file is its writable top now, and which new
/// overlay (backed by it) it should continue on.
#[derive(Debug, Clone)]
pub struct DiskSwitch {
    /// The source's current writable qcow2 (becomes frozen).
    pub current: PathBuf,
    /// The new overlay to create; it is backed by `current` (by that path).
    pub next: PathBuf,
    /// The node name to give the new overlay inside QEMU.
    pub next_node: String,
}

/// Where a snapshot's RAM image is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamImage {
    /// Written into the snapshot directory, synced and checksummed: a snapshot that lasts.
    Durable,
    /// Left in host memory (the recorder's tmpfs file), `mem` a symbolic link to it, with no
    /// checksum: for a snapshot that lives only while sandboxes are started from it (a fork),
    /// which then need not wait for the image to be written out. Such a directory must be
    /// removed with [`remove_dir`], which frees the memory. Without room in tmpfs the image is
    /// written out as for `Durable`.
    InMemory,
}

/// Takes a live snapshot of `source` (launched with `source_cfg`) into `dir`.
///
/// On success `dir` holds `mem` and `devstate`, both synced (or `mem` in memory, see
/// [`RamImage`]); writing the manifest is left to the caller (it knows the disk layer's final
/// place and the snapshot id). On failure the source is running again (best effort: it is
/// resumed on every error path after it was stopped), and the caller removes `dir`.
pub async fn take(
    source: &Vm,
    source_cfg: &VmConfig,
    disk: &DiskSwitch,
    dir: &Path,
    ram: RamImage,
) -> Result<SnapshotOutcome, SnapshotError> {
    let started = Instant::now();
    let prepare = |source| SnapshotError::PrepareDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(prepare)?;
    let mem_path = dir.join(MEM_FILE);
    let recorder_run = dir.join("recorder");
    let recorder_disk = dir.join("recorder.qcow2");

    // The source's next overlay is created up front so that the pause only has to switch to
    // it (`create_overlay` reads only the header of the file the source has open for writing).
    crate::disk::create_overlay(&disk.current, &disk.next)
        .await
        .map_err(SnapshotError::CreateOverlay)?;
    // The recorder never runs guest code; its disk only has to exist with the same size.
    let size = disk_virtual_size(source.qmp()).await?;
    create_blank_qcow2(&recorder_disk, size)
        .await
        .map_err(SnapshotError::CreateOverlay)?;

    let mut staging = staging::Staging::new(&mem_path, source_cfg.memory_mib << 20);
    let mut rec_cfg = source_cfg.clone();
    rec_cfg.id = format!("{}-recorder", source_cfg.id);
    rec_cfg.run_dir = recorder_run.clone();
    rec_cfg.root_disk = recorder_disk.clone();
    rec_cfg.agent_host_port = 0;
    rec_cfg.memory = MemoryBacking::Shared(staging.qemu_path().to_owned());
    rec_cfg.incoming = true;
    // A restored source's config names the state it was restored from; the recorder waits.
    rec_cfg.incoming_state = None;
    let recorder = Vm::launch(rec_cfg)
        .await
        .map_err(SnapshotError::LaunchRecorder)?;
    // QEMU has mapped its RAM file by now (memory backends exist before QMP answers).
    if ram == RamImage::Durable {
        staging.unlink();
    }
    let launched = started.elapsed();
    let image = staging.image_path();
    let mut result = record(source, source_cfg, &recorder, disk, dir, &image).await;
    let recorded = started.elapsed();
    // The recorder is disposable whatever happened; its log explains a failed receive.
    let _ = recorder.kill().await;
    if let Err(SnapshotError::Migration { status, .. }) = &mut result {
        let log = std::fs::read_to_string(recorder_run.join("qemu.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        if !tail.is_empty() {
            status.push_str(&format!(" (recorder: {})", tail.join(" | ")));
        }
    }
    let _ = std::fs::remove_dir_all(&recorder_run);
    let _ = std::fs::remove_file(&recorder_disk);
    let frozen_for = result?;
    if ram == RamImage::InMemory
        && let Some(memory) = staging.keep_as(&mem_path).map_err(SnapshotError::Files)?
    {
        let devstate = manifest::file_ref(dir, DEVSTATE_FILE).map_err(SnapshotError::Files)?;
        tracing::debug!(vm = %source.id(), ?launched, ?recorded, ?frozen_for, "snapshot taken");
        return Ok(SnapshotOutcome {
            frozen_disk: disk.current.clone(),
            frozen_for,
            total: started.elapsed(),
            memory,
            devstate,
        });
    }
    let persist = {
        let mem_path = mem_path.clone();
        tokio::task::spawn_blocking(move || staging.persist(&mem_path))
            .await
            .map_err(|e| SnapshotError::Files(std::io::Error::other(e)))?
    };
    let staged_digest = persist.map_err(SnapshotError::Files)?;
    let persisted = started.elapsed();

    let sync = |name: &str| -> std::io::Result<FileRef> {
        std::fs::File::open(dir.join(name))?.sync_all()?;
        manifest::file_ref(dir, name)
    };
    let memory = match staged_digest {
        // Written and synced by `persist`, which hashed it on the way.
        Some((size, sha256)) => FileRef {
            path: MEM_FILE.to_owned(),
            size,
            sha256,
        },
        None => sync(MEM_FILE).map_err(SnapshotError::Files)?,
    };
    let devstate = sync(DEVSTATE_FILE).map_err(SnapshotError::Files)?;
    tracing::debug!(vm = %source.id(), ?launched, ?recorded, ?persisted, ?frozen_for,
        total = ?started.elapsed(), "snapshot taken");
    Ok(SnapshotOutcome {
        frozen_disk: disk.current.clone(),
        frozen_for,
        total: started.elapsed(),
        memory,
        devstate,
    })
}

/// Migrates `source` into `recorder`, switching the source's disk in the pause, then has the
/// recorder write its device state. Returns how long the source was stopped.
async fn record(
    source: &Vm,
    source_cfg: &VmConfig,
    recorder: &Vm,
    disk: &DiskSwitch,
    dir: &Path,
    image: &Path,
) -> Result<Duration, SnapshotError> {
    let rq = recorder.qmp();
    // Not in the run dir: a Unix socket path holds at most 107 bytes, which a deep data dir
    // exceeds. The name is random and the socket is removed once the migration is over.
    let socket = MigrationSocket::new();
    let uri = format!("unix:{}", socket.0.display());
    set_capabilities(rq, "recorder: capabilities", &[("events", true)]).await?;
    qmp(
        rq,
        "recorder: listen",
        "migrate-incoming",
        json!({ "uri": uri }),
    )
    .await?;
    let frozen_for = match background::record(source, source_cfg, disk, &uri).await? {
        Some(frozen_for) => frozen_for,
        None => precopy(source, source_cfg, rq, disk, image, &uri).await?,
    };
    wait_migration(rq, "recorder: receive", &["completed"]).await?;

    set_capabilities(
        rq,
        "recorder: capabilities",
        &[("x-ignore-shared", true), ("events", true)],
    )
    .await?;
    let out = shell_quote(&dir.join(DEVSTATE_FILE));
    let args = json!({ "uri": format!("exec:cat > {out}") });
    qmp(rq, "recorder: save devices", "migrate", args).await?;
    wait_migration(rq, "recorder: save devices", &["completed"]).await?;
    Ok(frozen_for)
}

/// Removes a snapshot directory, and the RAM image it keeps in memory if it was taken with
/// [`RamImage::InMemory`] (VMs started from it keep their mappings of that image).
pub fn remove_dir(dir: &Path) -> std::io::Result<()> {
    staging::release(&dir.join(MEM_FILE));
    std::fs::remove_dir_all(dir)
}

/// Removes what snapshots taken by a process that died midway left outside their directories,
/// if older than `older_than`, and returns how many files that was. A staged RAM image in
/// tmpfs keeps its name only while a recorder starts (milliseconds) or, for a fork, until the
/// forks have started (seconds); an older one would hold its memory until the host reboots.
/// A migration socket lives for one snapshot. Another process on this host may be taking a
/// snapshot right now, hence the age limit.
pub fn remove_stale_leftovers(older_than: Duration) -> usize {
    let tmp = std::env::temp_dir();
    remove_older(Path::new(staging::SHM_DIR), staging::PREFIX, older_than)
        + remove_older(&tmp, migration::SOCKET_PREFIX, older_than)
}

/// Removes the files of `dir` named `prefix…` last changed more than `older_than` ago.
fn remove_older(dir: &Path, prefix: &str, older_than: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok();
            let age = modified.and_then(|t| t.elapsed().ok());
            age.is_some_and(|age| age > older_than)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// The file a VM maps as its RAM, if it is not a fresh memfd.
fn ram_file(cfg: &VmConfig) -> Option<PathBuf> {
    match &cfg.memory {
        MemoryBacking::Private(path) | MemoryBacking::Shared(path) => Some(path.clone()),
        MemoryBacking::Fresh => None,
    }
}

/// Freezes the running VM's disk without capturing memory: a brief pause while the VM
/// switches to `disk.next` (a filesystem-only snapshot). Returns how long the guest was paused.
/// The frozen disk is crash-consistent: what the guest had not written out is not in it.
pub async fn freeze_disk(vm: &Vm, disk: &DiskSwitch) -> Result<Duration, SnapshotError> {
    let q = vm.qmp();
    crate::disk::create_overlay(&disk.current, &disk.next)
        .await
        .map_err(SnapshotError::CreateOverlay)?;
    qmp(q, "source: pause", "stop", Value::Null).await?;
    let stopped = Instant::now();
    let switched = switch_disk(q, disk).await;
    let resumed = resume(q).await;
    let paused = stopped.elapsed();
    switched?;
    resumed?;
    Ok(paused)
}

/// Puts the pre-created overlay `disk.next` on top of the source's root disk.
async fn switch_disk(qmp_: &Qmp, disk: &DiskSwitch) -> Result<(), SnapshotError> {
    let top = top_node(qmp_).await?;
    let add = json!({
        "driver": "qcow2",
        "node-name": disk.next_node,
        "file": { "driver": "file", "filename": disk.next },
        "backing": Value::Null,
    });
    qmp(qmp_, "source: open next overlay", "blockdev-add", add).await?;
    let snap = json!({ "node": top, "overlay": disk.next_node });
    qmp(qmp_, "source: switch disk", "blockdev-snapshot", snap).await?;
    Ok(())
}

/// The node name of the root disk's current top (it changes with every snapshot).
async fn top_node(qmp_: &Qmp) -> Result<String, SnapshotError> {
    let blocks = qmp(qmp_, "source: query disk", "query-block", Value::Null).await?;
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|b| b.pointer("/inserted/node-name").and_then(Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| SnapshotError::Migration {
            step: "source: query disk",
            status: "no root disk found".into(),
        })
}

/// The root disk's virtual size in bytes.
async fn disk_virtual_size(qmp_: &Qmp) -> Result<u64, SnapshotError> {
    let blocks = qmp(qmp_, "source: query disk", "query-block", Value::Null).await?;
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|b| {
            b.pointer("/inserted/image/virtual-size")
                .and_then(Value::as_u64)
        })
        .ok_or_else(|| SnapshotError::Migration {
            step: "source: query disk",
            status: "no root disk size found".into(),
        })
}

/// Creates an empty qcow2 of `size` bytes with no backing file.
async fn create_blank_qcow2(path: &Path, size: u64) -> Result<(), crate::disk::OverlayError> {
    let mut cmd = tokio::process::Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size.to_string());
    crate::disk::run_qemu_img(cmd).await
}

/// Quotes a path for `sh -c` (QEMU runs `exec:` URIs through the shell).
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_old_files_with_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        for name in ["warren-ram-old", "warren-ram-new", "other-old"] {
            let file = std::fs::File::create(dir.path().join(name)).unwrap();
            if name.ends_with("old") {
                file.set_modified(old).unwrap();
            }
        }
        let removed = remove_older(dir.path(), "warren-ram-", Duration::from_secs(600));
        assert_eq!(removed, 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["other-old", "warren-ram-new"]);
    }

    #[test]
    fn quotes_paths_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/a b/c")), "'/a b/c'");
        assert_eq!(shell_quote(Path::new("/it's")), r"'/it'\''s'");
    }
}
