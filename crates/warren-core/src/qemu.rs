//! The production [`Runtime`]: one QEMU `microvm` per sandbox through `warren-vm`.
//!
//! Every sandbox's root disk is its own qcow2 overlay in `<data_dir>/disks/`, kept outside the
//! sandbox's run dir on purpose: once snapshots freeze an overlay as a disk layer, that file
//! must outlive the sandbox. The VM's configuration is saved next to QEMU's own state in the
//! run dir (`runtime.json`) so that a restarted server can re-adopt the VM and still knows
//! its disk.
//!
//! `kill` is the single cleanup point: the manager calls it for every sandbox that ends
//! (killed, timed out, or its QEMU exited on its own), and it removes the overlay.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use warren_image::BaseImage;
use warren_vm::snapshot::{
    self, DiskSwitch, MANIFEST_MAGIC, MANIFEST_VERSION, MachineSpec, SnapshotManifest,
};
use warren_vm::{Accel, MemoryBacking, Vm, VmConfig};

use crate::runtime::{
    AttachSpec, BoxError, BoxFuture, Runtime, RuntimeError, SnapshotKind, SnapshotTaken, StartedVm,
    VmExit, VmInfo, VmSpec,
};
use crate::standby::StandbyPool;
use standby::Standby;

mod standby;

/// The template every sandbox boots from until templates and snapshots are wired in.
pub const BASE_TEMPLATE: &str = "base";
/// The VM configuration saved in each run dir.
const CONFIG_FILE: &str = "runtime.json";
/// Disks younger than this are never garbage-collected (they may be mid-setup).
const GC_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs sandboxes as QEMU processes.
pub struct QemuRuntime {
    image: BaseImage,
    accel: Accel,
    disks_dir: PathBuf,
    vms: Mutex<HashMap<String, Arc<Running>>>,
    standbys: Mutex<StandbyPool<Standby>>,
    /// Woken whenever a standby launch ends, for a create waiting for one.
    standby_launched: tokio::sync::Notify,
}

struct Running {
    vm: Vm,
    /// Changes when a snapshot moves the VM onto a new disk overlay.
    cfg: Mutex<VmConfig>,
    /// One snapshot of a VM at a time.
    snapshotting: tokio::sync::Mutex<()>,
}

impl Running {
    fn cfg(&self) -> VmConfig {
        self.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl std::fmt::Debug for QemuRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuRuntime")
            .field("image", &self.image.key)
            .field("accel", &self.accel)
            .finish_non_exhaustive()
    }
}

/// Why the runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QemuRuntimeError {
    /// The disks directory could not be created.
    #[error("creating the disks directory {path}")]
    DisksDir {
        /// The directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

impl QemuRuntime {
    /// A runtime booting `image` with `accel`, keeping overlays under `data_dir/disks`.
    pub fn new(image: BaseImage, accel: Accel, data_dir: &Path) -> Result<Self, QemuRuntimeError> {
        let disks_dir = data_dir.join("disks");
        std::fs::create_dir_all(&disks_dir).map_err(|source| QemuRuntimeError::DisksDir {
            path: disks_dir.clone(),
            source,
        })?;
        Ok(QemuRuntime {
            image,
            accel,
            disks_dir,
            vms: Mutex::new(HashMap::new()),
            standbys: Mutex::new(StandbyPool::new(0)),
            standby_launched: tokio::sync::Notify::new(),
        })
    }

    /// Keeps standby VMs (see `standby.rs`) for up to `snapshots` snapshots; 0, the default,
    /// keeps none.
    pub fn with_standbys(self, snapshots: usize) -> Self {
        QemuRuntime {
            standbys: Mutex::new(StandbyPool::new(snapshots)),
            ..self
        }
    }

    fn vms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Running>>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn disk_path(&self, sandbox_id: &str) -> PathBuf {
        self.disks_dir.join(format!("{sandbox_id}.qcow2"))
    }

    async fn start_vm(&self, spec: VmSpec) -> Result<StartedVm, RuntimeError> {
        if spec.template_id != BASE_TEMPLATE {
            return Err(RuntimeError::UnknownTemplate(spec.template_id));
        }
        let disk = self.disk_path(&spec.sandbox_id);
        warren_vm::create_overlay(&self.image.rootfs_qcow2, &disk)
            .await
            .map_err(|e| RuntimeError::Start(Box::new(e)))?;
        let mut cfg = VmConfig::new(
            &spec.sandbox_id,
            &self.image.vmlinux,
            &self.image.initramfs,
            &disk,
            &spec.run_dir,
        );
        cfg.vcpus = spec.vcpus;
        cfg.memory_mib = u64::from(spec.memory_mb);
        cfg.allow_internet = spec.allow_internet;
        cfg.accel = self.accel;
        if let Err(e) = save_config(&cfg) {
            let _ = std::fs::remove_file(&disk);
            return Err(RuntimeError::Start(e));
        }
        let vm = match Vm::launch(cfg.clone()).await {
            Ok(vm) => vm,
            Err(e) => {
                let _ = std::fs::remove_file(&disk);
                return Err(RuntimeError::Start(Box::new(e)));
            }
        };
        Ok(self.adopt(&spec.sandbox_id, vm, cfg))
    }

    /// Registers a running VM and builds the manager's view of it.
    fn adopt(&self, sandbox_id: &str, vm: Vm, cfg: VmConfig) -> StartedVm {
        let info = VmInfo {
            agent_addr: vm.agent_addr(),
            pid: Some(vm.pid()),
        };
        let running = Arc::new(Running {
            vm,
            cfg: Mutex::new(cfg),
            snapshotting: tokio::sync::Mutex::new(()),
        });
        self.vms().insert(sandbox_id.to_owned(), running.clone());
        let exited = Box::pin(async move {
            let exit = running.vm.wait_exit().await;
            VmExit {
                description: format!("QEMU ended ({exit})"),
            }
        });
        StartedVm { info, exited }
    }

    async fn kill_vm(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        // A standby claimed by a create that failed before starting it.
        let standby = self.standbys().take(sandbox_id);
        if let Some(standby) = standby {
            standby.discard(false).await;
            return Ok(());
        }
        let running = self.vms().remove(sandbox_id);
        if let Some(running) = running {
            running
                .vm
                .kill()
                .await
                .map_err(|e| RuntimeError::Kill(Box::new(e)))?;
            remove_if_present(&running.cfg().root_disk).map_err(RuntimeError::Kill)?;
        }
        // Without a known VM (an orphan after a restart) nothing is deleted by name: the file
        // may be a snapshot's frozen layer. Disk garbage collection removes what nothing uses.
        Ok(())
    }

    async fn attach_vm(&self, spec: AttachSpec) -> Result<Option<StartedVm>, RuntimeError> {
        let cfg = match load_config(&spec.run_dir) {
            Ok(cfg) => cfg,
            Err(e) => {
                tracing::warn!(sandbox_id = %spec.sandbox_id, error = %e,
                    "no usable VM configuration in the run dir; treating the VM as gone");
                return Ok(None);
            }
        };
        match Vm::attach(&spec.run_dir).await {
            Ok(vm) => {
                let cfg = settle_adopted(&spec.sandbox_id, &vm, cfg).await;
                Ok(Some(self.adopt(&spec.sandbox_id, vm, cfg)))
            }
            Err(warren_vm::AttachError::NotRunning { .. }) => Ok(None),
            Err(e) => {
                tracing::warn!(sandbox_id = %spec.sandbox_id, error = %e,
                    "cannot re-attach to the VM; treating it as gone");
                Ok(None)
            }
        }
    }
}

impl QemuRuntime {
    async fn snapshot_vm(
        &self,
        sandbox_id: &str,
        dir: PathBuf,
        kind: SnapshotKind,
    ) -> Result<SnapshotTaken, RuntimeError> {
        let running = self.vms().get(sandbox_id).cloned().ok_or_else(|| {
            RuntimeError::Snapshot(format!("no VM for sandbox {sandbox_id}").into())
        })?;
        let _one_at_a_time = running.snapshotting.lock().await;
        let cfg = running.cfg();
        let tag = crate::ids::secret(8).to_ascii_lowercase();
        let switch = DiskSwitch {
            current: cfg.root_disk.clone(),
            next: self.disks_dir.join(format!("{sandbox_id}-{tag}.qcow2")),
            next_node: format!("disk-{tag}"),
        };
        let snap_err = |e: snapshot::SnapshotError| RuntimeError::Snapshot(Box::new(e));
        let ram = match kind {
            SnapshotKind::Fork => Some(snapshot::RamImage::InMemory),
            SnapshotKind::Memory => Some(snapshot::RamImage::Durable),
            SnapshotKind::DiskOnly => None,
        };
        let taken = if let Some(ram) = ram {
            snapshot::take(&running.vm, &cfg, &switch, &dir, ram)
                .await
                .map(|o| (o.frozen_for, Some(o.memory), Some(o.devstate)))
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Snapshot(Box::new(e)))?;
            snapshot::freeze_disk(&running.vm, &switch)
                .await
                .map(|paused| (paused, None, None))
        };
        let (frozen, mem, devstate) = match taken {
            Ok(taken) => taken,
            Err(e) => {
                // The failure may have come after the disk switch: the VM then writes to the
                // new overlay, and the next snapshot must build on that, not on the old top.
                let settled = settle_adopted(sandbox_id, &running.vm, cfg.clone()).await;
                *running.cfg.lock().unwrap_or_else(|p| p.into_inner()) = settled;
                return Err(snap_err(e));
            }
        };
        // From here on the VM writes to the new overlay; record that before anything else
        // can fail, so the configuration never points at the frozen layer.
        let mut moved = cfg.clone();
        moved.root_disk = switch.next.clone();
        save_config(&moved).map_err(RuntimeError::Snapshot)?;
        *running.cfg.lock().unwrap_or_else(|p| p.into_inner()) = moved;

        let mut manifest = SnapshotManifest {
            magic: MANIFEST_MAGIC.to_owned(),
            version: MANIFEST_VERSION,
            // The directory is filled as `.tmp-<id>` and renamed to `<id>` once complete.
            id: dir
                .file_name()
                .map(|n| n.to_string_lossy().trim_start_matches(".tmp-").to_owned())
                .unwrap_or_default(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            machine: MachineSpec {
                vcpus: cfg.vcpus,
                memory_mib: u32::try_from(cfg.memory_mib).unwrap_or(u32::MAX),
                kernel: cfg.kernel.clone(),
                initramfs: cfg.initramfs.clone(),
                cmdline: cfg.cmdline_extra.join(" "),
            },
            memory: mem,
            devstate,
            disk_layer: switch.current.clone(),
            checksum: String::new(),
        };
        manifest
            .write(&dir)
            .map_err(|e| RuntimeError::Snapshot(Box::new(e)))?;
        let disk_bytes = allocated_bytes(&dir) + allocated_bytes(&switch.current);
        Ok(SnapshotTaken {
            disk_bytes,
            memory_bytes: manifest.memory.as_ref().map_or(0, |m| m.size),
            frozen_ms: u64::try_from(frozen.as_millis()).unwrap_or(u64::MAX),
        })
    }

    async fn restore_vm(&self, spec: VmSpec, dir: PathBuf) -> Result<StartedVm, RuntimeError> {
        let taken = self.standbys().take(&spec.sandbox_id);
        if let Some(standby) = taken {
            return self.finish_loaded(&spec.sandbox_id, standby).await;
        }
        let err = |e: BoxError| RuntimeError::Restore(e);
        let manifest = SnapshotManifest::load(&dir).map_err(|e| err(Box::new(e)))?;
        if manifest.memory.is_some() {
            let loaded = self.launch_loaded(&spec, &dir, &manifest).await?;
            return self.finish_loaded(&spec.sandbox_id, loaded).await;
        }
        // A disk-only snapshot: a cold boot of its layer.
        let cfg = self.restore_config(&spec, &dir, &manifest).await?;
        let launched = match save_config(&cfg) {
            Ok(()) => Vm::launch(cfg.clone()).await.map_err(|e| err(Box::new(e))),
            Err(e) => Err(err(e)),
        };
        match launched {
            Ok(vm) => Ok(self.adopt(&spec.sandbox_id, vm, cfg)),
            Err(e) => {
                let _ = std::fs::remove_file(&cfg.root_disk);
                Err(e)
            }
        }
    }

    /// The configuration of a VM for `spec` from the snapshot in `dir`, on a new overlay of
    /// the snapshot's disk layer (created here).
    async fn restore_config(
        &self,
        spec: &VmSpec,
        dir: &Path,
        manifest: &SnapshotManifest,
    ) -> Result<VmConfig, RuntimeError> {
        // A fresh name: a resumed sandbox's earlier disk is now the snapshot's frozen layer.
        let tag = crate::ids::secret(8).to_ascii_lowercase();
        let disk = self
            .disks_dir
            .join(format!("{}-{tag}.qcow2", spec.sandbox_id));
        warren_vm::create_overlay(&manifest.disk_layer, &disk)
            .await
            .map_err(|e| RuntimeError::Restore(Box::new(e)))?;
        let m = &manifest.machine;
        let mut cfg = VmConfig::new(
            &spec.sandbox_id,
            &m.kernel,
            &m.initramfs,
            &disk,
            &spec.run_dir,
        );
        // A memory image fixes the machine's size; a disk-only snapshot boots at any size.
        if manifest.memory.is_some() {
            cfg.vcpus = m.vcpus;
            cfg.memory_mib = u64::from(m.memory_mib);
            cfg.memory = MemoryBacking::Private(dir.join(snapshot::MEM_FILE));
            cfg.incoming = true;
        } else {
            cfg.vcpus = spec.vcpus;
            cfg.memory_mib = u64::from(spec.memory_mb);
        }
        cfg.cmdline_extra = m.cmdline.split_whitespace().map(str::to_owned).collect();
        cfg.allow_internet = spec.allow_internet;
        cfg.accel = self.accel;
        Ok(cfg)
    }

    async fn collect(&self, keep: &[PathBuf]) {
        let gone = self
            .standbys()
            .remove_unless(|dir| keep.iter().any(|k| k == dir));
        for standby in gone {
            standby.discard(true).await;
        }
        let mut used: HashSet<PathBuf> = HashSet::new();
        let mut tops: Vec<PathBuf> = self.vms().values().map(|r| r.cfg().root_disk).collect();
        tops.extend(self.standbys().iter().map(|s| s.cfg.root_disk.clone()));
        let layers = keep
            .iter()
            .filter_map(|dir| SnapshotManifest::load(dir).ok())
            .map(|m| m.disk_layer);
        for top in tops.into_iter().chain(layers) {
            used.extend(warren_vm::qcow2_chain(&top));
        }
        let Ok(entries) = std::fs::read_dir(&self.disks_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // A disk younger than this may belong to a VM or snapshot still being set up.
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < GC_MIN_AGE);
            if young || used.contains(&path) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(disk = %path.display(), "removed unused disk layer"),
                Err(e) => tracing::warn!(disk = %path.display(), error = %e,
                    "cannot remove an unused disk layer"),
            }
        }
    }
}

/// Undoes what a server crash (or a failed snapshot) left in a VM midway through a snapshot (a
/// migration in flight, a stopped guest) and points the configuration at the disk QEMU really
/// writes to: the interruption may have come between the disk switch and saving the new
/// overlay's name.
async fn settle_adopted(sandbox_id: &str, vm: &Vm, mut cfg: VmConfig) -> VmConfig {
    match snapshot::recover::settle(vm).await {
        Ok(Some(top)) if top != cfg.root_disk => {
            tracing::info!(sandbox_id, disk = %top.display(),
                "the VM writes to a newer overlay than recorded; following it");
            cfg.root_disk = top;
            if let Err(e) = save_config(&cfg) {
                tracing::warn!(sandbox_id, error = %e, "cannot save the VM configuration");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(sandbox_id, error = %e,
            "cannot settle an adopted VM after an interrupted snapshot"),
    }
    cfg
}

/// Bytes allocated on disk by a file or, recursively, a directory.
fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| allocated_bytes(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.blocks() * 512
    }
}

impl Runtime for QemuRuntime {
    fn start(&self, spec: VmSpec) -> BoxFuture<'_, Result<StartedVm, RuntimeError>> {
        Box::pin(self.start_vm(spec))
    }

    fn kill(&self, sandbox_id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = sandbox_id.to_owned();
        Box::pin(async move { self.kill_vm(&id).await })
    }

    fn attach(&self, spec: AttachSpec) -> BoxFuture<'_, Result<Option<StartedVm>, RuntimeError>> {
        Box::pin(self.attach_vm(spec))
    }

    fn snapshot(
        &self,
        sandbox_id: &str,
        dir: PathBuf,
        kind: SnapshotKind,
    ) -> BoxFuture<'_, Result<SnapshotTaken, RuntimeError>> {
        let id = sandbox_id.to_owned();
        Box::pin(async move { self.snapshot_vm(&id, dir, kind).await })
    }

    fn start_from_snapshot(
        &self,
        spec: VmSpec,
        dir: PathBuf,
    ) -> BoxFuture<'_, Result<StartedVm, RuntimeError>> {
        Box::pin(self.restore_vm(spec, dir))
    }

    fn collect_garbage(&self, keep: Vec<PathBuf>) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.collect(&keep).await })
    }

    fn prepare_standby(
        &self,
        spec: VmSpec,
        dir: PathBuf,
    ) -> BoxFuture<'_, Result<bool, RuntimeError>> {
        Box::pin(self.prepare(spec, dir))
    }

    fn claim_standby<'a>(
        &'a self,
        dir: &'a Path,
        allow_internet: bool,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(self.claim_or_await(dir, allow_internet))
    }

    fn drop_standbys(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let all = self.standbys().drain();
            for standby in all {
                standby.discard(true).await;
            }
        })
    }
}

fn save_config(cfg: &VmConfig) -> Result<(), BoxError> {
    std::fs::create_dir_all(&cfg.run_dir)?;
    let bytes = serde_json::to_vec_pretty(cfg)?;
    let path = cfg.run_dir.join(CONFIG_FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

fn load_config(run_dir: &Path) -> Result<VmConfig, BoxError> {
    let bytes = std::fs::read(run_dir.join(CONFIG_FILE))?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn remove_if_present(path: &Path) -> Result<(), BoxError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Box::new(e)),
    }
}
