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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use warren_image::BaseImage;
use warren_vm::{Accel, Vm, VmConfig};

use crate::runtime::{
    AttachSpec, BoxError, BoxFuture, Runtime, RuntimeError, StartedVm, VmExit, VmInfo, VmSpec,
};

/// The template every sandbox boots from until templates and snapshots are wired in.
pub const BASE_TEMPLATE: &str = "base";
/// The VM configuration saved in each run dir.
const CONFIG_FILE: &str = "runtime.json";

/// Runs sandboxes as QEMU processes.
pub struct QemuRuntime {
    image: BaseImage,
    accel: Accel,
    disks_dir: PathBuf,
    vms: Mutex<HashMap<String, Arc<Running>>>,
}

struct Running {
    vm: Vm,
    cfg: VmConfig,
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
        })
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
        let running = Arc::new(Running { vm, cfg });
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
        let running = self.vms().remove(sandbox_id);
        if let Some(running) = running {
            running
                .vm
                .kill()
                .await
                .map_err(|e| RuntimeError::Kill(Box::new(e)))?;
            remove_if_present(&running.cfg.root_disk).map_err(RuntimeError::Kill)?;
        } else {
            // An orphan (no VM known, e.g. after a restart): its disk may still be there.
            remove_if_present(&self.disk_path(sandbox_id)).map_err(RuntimeError::Kill)?;
        }
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
            Ok(vm) => Ok(Some(self.adopt(&spec.sandbox_id, vm, cfg))),
            Err(warren_vm::AttachError::NotRunning { .. }) => Ok(None),
            Err(e) => {
                tracing::warn!(sandbox_id = %spec.sandbox_id, error = %e,
                    "cannot re-attach to the VM; treating it as gone");
                Ok(None)
            }
        }
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
