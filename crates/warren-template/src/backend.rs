//! The seam between the template builder and the VM runtime.
//!
//! The builder decides *what* to run; a [`BuildBackend`] provides build VMs and layer storage.
//! A build VM's root disk is a writable qcow2 overlay. [`BuildVm::commit_layer`] freezes the
//! current overlay as the immutable layer `key` and lets the VM continue on a fresh overlay
//! above it (QEMU's `blockdev-snapshot-sync`, after a guest `sync`), so several uncached steps
//! share one boot yet each leaves its own cached layer. Dropping or [`BuildVm::discard`]-ing a
//! VM stops it and deletes its uncommitted overlay, which is how a failed step leaves nothing.
//!
//! The ready snapshot is taken from a separate, fresh boot of the top layer: memory of the
//! snapshot then holds only the start command's state, not leftovers of the build steps.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::logs::StepLog;

/// A boxed, sendable future (the traits are object safe without extra crates).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An immutable disk layer, named by its key (`layers.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// The layer key.
    pub key: String,
}

/// A live snapshot produced by a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// Backend-defined snapshot id (what sandboxes are started from).
    pub id: String,
}

/// Why a VM is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmPurpose {
    /// Runs build steps.
    Build,
    /// Runs the start command and is snapshotted.
    Snapshot,
}

/// Shape of a VM to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Template being built (for logs and file names).
    pub template: String,
    /// Build id.
    pub build_id: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// What the VM is for.
    pub purpose: VmPurpose,
}

/// A command to run in the guest.
#[derive(Debug, Clone, Copy)]
pub struct ExecRequest<'a> {
    /// Passed to `sh -c`.
    pub cmd: &'a str,
    /// Unix user.
    pub user: &'a str,
    /// Extra environment, in order (later wins).
    pub env: &'a [(String, String)],
    /// Working directory; `None` = the user's home.
    pub cwd: Option<&'a str>,
    /// The backend should kill the process after this long (the builder also stops waiting);
    /// `Duration::MAX` means no limit (the background start command).
    pub timeout: Duration,
}

/// Failure of a backend operation; the builder adds which step it was.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed")]
pub struct BackendError {
    /// Short name of the failed operation, e.g. `boot`, `exec`.
    pub operation: &'static str,
    /// Cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl BackendError {
    /// Wraps `source` as the failure of `operation`.
    pub fn new(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            operation,
            source: source.into(),
        }
    }
}

/// Provider of build VMs and layer storage (implemented over `warren-vm` by the lead).
pub trait BuildBackend: Send + Sync {
    /// Identity of the Debian base image (its content hash), the root of every key chain.
    fn base_image_id(&self) -> String;

    /// Whether the layer `key` is stored and usable.
    fn layer_exists(&self, key: &str) -> bool;

    /// Boots a VM whose root disk is a new overlay on `parent` (`None` = the base image).
    fn boot<'a>(
        &'a self,
        parent: Option<&'a LayerRef>,
        spec: &'a VmSpec,
    ) -> BoxFuture<'a, Result<Box<dyn BuildVm>, BackendError>>;
}

/// A running build VM.
pub trait BuildVm: Send {
    /// Runs a command to completion, streaming its output to `log`; returns its exit code.
    fn exec<'a>(
        &'a mut self,
        req: ExecRequest<'a>,
        log: StepLog,
    ) -> BoxFuture<'a, Result<i32, BackendError>>;

    /// Starts a command in the background (its output keeps going to `log`) and returns.
    fn spawn<'a>(
        &'a mut self,
        req: ExecRequest<'a>,
        log: StepLog,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Copies a host file or folder to `guest_path`, owned by `user`, optionally `chmod`-ed.
    fn copy_in<'a>(
        &'a mut self,
        host_path: &'a Path,
        guest_path: &'a str,
        user: &'a str,
        mode: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Freezes the disk as of now as layer `key`; the VM continues on a new overlay above it.
    fn commit_layer<'a>(
        &'a mut self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<LayerRef, BackendError>>;

    /// Takes a live snapshot (memory and disk) and stops the VM, also when the snapshot fails.
    fn snapshot(self: Box<Self>) -> BoxFuture<'static, Result<SnapshotRef, BackendError>>;

    /// Stops the VM and deletes its uncommitted overlay.
    fn discard(self: Box<Self>) -> BoxFuture<'static, ()>;
}
