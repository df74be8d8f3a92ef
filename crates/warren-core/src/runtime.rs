//! The seam between the control plane and the VM layer.
//!
//! [`Runtime`] is object safe (boxed futures) so the manager holds an `Arc<dyn Runtime>`:
//! the QEMU adapter in `qemu.rs` in production, [`crate::testing::FakeRuntime`] in tests.
//! A runtime owns per-host state only (processes, sockets, overlays in the run dir); the
//! manager owns the records. Contract:
//! - [`Runtime::start`] returns once the VM process runs and its agent address is known;
//!   the agent may still be booting (the manager polls `/health`).
//! - every started or attached VM comes with an [`ExitWatch`] that resolves when the VM
//!   process is gone for any reason, so the manager can drop the sandbox.
//! - [`Runtime::kill`] is idempotent and returns once the process is gone; it does not
//!   remove the run dir (the manager does, after the record is gone).
//! - [`Runtime::attach`] is called for every record after a server restart: it re-adopts a
//!   VM that is still running (its pid and agent port are in the record and run dir) or
//!   answers `Ok(None)` when there is nothing to adopt.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

/// A boxed, sendable future, as returned by [`Runtime`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A cause from the VM layer, kept as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What to start.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub sandbox_id: String,
    pub template_id: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    /// Created by the manager, empty; the runtime puts overlays, sockets and logs here.
    pub run_dir: PathBuf,
    pub allow_internet: bool,
}

/// A running VM as the manager needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmInfo {
    /// Where the host reaches the agent (`127.0.0.1:<forwarded port>`).
    pub agent_addr: SocketAddr,
    /// The VM process, if the runtime has one.
    pub pid: Option<u32>,
}

/// Resolves when the VM process has exited (crash, guest poweroff, kill).
pub type ExitWatch = BoxFuture<'static, VmExit>;

/// How a VM ended, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    pub description: String,
}

/// A started or attached VM.
pub struct StartedVm {
    pub info: VmInfo,
    pub exited: ExitWatch,
}

impl std::fmt::Debug for StartedVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedVm")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Failure of a runtime operation.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the VM")]
    Start(#[source] BoxError),
    #[error("cannot kill the VM")]
    Kill(#[source] BoxError),
    #[error("cannot attach to the VM")]
    Attach(#[source] BoxError),
    #[error("the template {0} does not exist")]
    UnknownTemplate(String),
    #[error("cannot snapshot the VM")]
    Snapshot(#[source] BoxError),
    #[error("cannot start the VM from the snapshot")]
    Restore(#[source] BoxError),
    #[error("this runtime does not support {0}")]
    Unsupported(&'static str),
}

/// What taking a snapshot produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTaken {
    /// Bytes the snapshot's files use on disk (sparse RAM image included as allocated).
    pub disk_bytes: u64,
    /// Size of the guest RAM image (0 without memory).
    pub memory_bytes: u64,
    /// How long the source's guest was paused, in milliseconds.
    pub frozen_ms: u64,
}

/// What a snapshot captures, and how long its RAM image is meant to last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// The disk only; sandboxes started from it boot afresh.
    DiskOnly,
    /// Disk and memory, the RAM image written out and checksummed: a snapshot that lasts.
    Memory,
    /// Disk and memory, the RAM image left in host memory: for a fork, whose snapshot only
    /// lives while its sandboxes start. Its directory must be removed with
    /// `warren_vm::snapshot::remove_dir`, which frees that memory.
    Fork,
}

impl SnapshotKind {
    /// `Memory` or `DiskOnly`, as the API's `memory` flag asks.
    pub fn with_memory(memory: bool) -> Self {
        if memory {
            SnapshotKind::Memory
        } else {
            SnapshotKind::DiskOnly
        }
    }
}

/// The VM layer as seen by the control plane.
pub trait Runtime: Send + Sync + 'static {
    /// Boots a VM for `spec`.
    fn start(&self, spec: VmSpec) -> BoxFuture<'_, Result<StartedVm, RuntimeError>>;

    /// Stops the VM of `sandbox_id` for good; no error if it is already gone.
    fn kill(&self, sandbox_id: &str) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// After a restart: re-adopts the VM described by a record, or `None` if it is dead.
    fn attach(&self, spec: AttachSpec) -> BoxFuture<'_, Result<Option<StartedVm>, RuntimeError>>;

    /// Takes a live snapshot of the running VM of `sandbox_id` into the new directory
    /// `dir`, of the given kind. The VM keeps running.
    fn snapshot(
        &self,
        sandbox_id: &str,
        dir: PathBuf,
        kind: SnapshotKind,
    ) -> BoxFuture<'_, Result<SnapshotTaken, RuntimeError>> {
        let _ = (sandbox_id, dir, kind);
        Box::pin(async { Err(RuntimeError::Unsupported("snapshots")) })
    }

    /// Starts a VM for `spec` from the snapshot in `dir`: in the captured state when it has
    /// memory, cold-booted from its disk otherwise.
    fn start_from_snapshot(
        &self,
        spec: VmSpec,
        dir: PathBuf,
    ) -> BoxFuture<'_, Result<StartedVm, RuntimeError>> {
        let _ = (spec, dir);
        Box::pin(async { Err(RuntimeError::Unsupported("snapshots")) })
    }

    /// Starts, ahead of demand, a standby VM for the memory snapshot in `dir`: QEMU launched
    /// for `spec` with the snapshot's state loaded and the guest paused, for a later create
    /// to claim (see `standby.rs`). `Ok(false)` when none was wanted (there is one already,
    /// the snapshot has no memory, or standbys are off).
    fn prepare_standby(
        &self,
        spec: VmSpec,
        dir: PathBuf,
    ) -> BoxFuture<'_, Result<bool, RuntimeError>> {
        let _ = (spec, dir);
        Box::pin(async { Ok(false) })
    }

    /// Claims the standby VM of the snapshot in `dir`, if there is one (or one is being
    /// launched that is worth waiting for); returns the sandbox id it was launched for. The
    /// create must use that id: `start_from_snapshot` then finishes the standby instead of
    /// starting QEMU, and `kill` drops it.
    fn claim_standby<'a>(
        &'a self,
        dir: &'a std::path::Path,
        allow_internet: bool,
    ) -> BoxFuture<'a, Option<String>> {
        let _ = (dir, allow_internet);
        Box::pin(async { None })
    }

    /// Kills every standby VM (server shutdown).
    fn drop_standbys(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Deletes disk layers that no running VM and none of `keep` (snapshot directories still
    /// listed) depend on; standby VMs of snapshots no longer in `keep` are dropped first.
    fn collect_garbage(&self, keep: Vec<PathBuf>) -> BoxFuture<'_, ()> {
        let _ = keep;
        Box::pin(async {})
    }
}

/// What the manager knows about a VM from before a restart.
#[derive(Debug, Clone)]
pub struct AttachSpec {
    pub sandbox_id: String,
    pub run_dir: PathBuf,
    pub pid: Option<u32>,
    pub agent_port: Option<u16>,
}
