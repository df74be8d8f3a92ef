//! The QEMU side of standby VMs (what they are and why: `crate::standby`): launching one
//! for a snapshot and warming it up, finishing a claimed one into a running sandbox, and
//! discarding one. A restore that has no standby goes through the same two halves back to
//! back (without the warm-up, which would only add to its time).

use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::Duration;

use warren_vm::snapshot::{self, SnapshotManifest};
use warren_vm::{Vm, VmConfig};

use super::{QemuRuntime, save_config};
use crate::runtime::{RuntimeError, StartedVm, VmSpec};
use crate::standby::StandbyPool;

/// How long a standby's guest may take to answer its warm-up request (see
/// [`snapshot::warm`]); a host busy with many VMs under TCG can take seconds.
const WARM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a create waits for a standby being launched before it starts its own VM. A
/// launch takes 100-300 ms here; waiting longer than a cold start (~150 ms, more on a busy
/// host) only pays off when the launch is nearly done, which this bound cannot know, so it
/// is a generous cap for a loaded host rather than a tuned figure.
const LAUNCH_WAIT: Duration = Duration::from_millis(500);

/// QEMU launched for a restore, its device state loaded, its guest paused: a standby VM in
/// the pool, or a create's restore between its two halves.
pub(crate) struct Standby {
    pub vm: Vm,
    pub cfg: VmConfig,
}

impl Standby {
    /// Kills the standby's QEMU and removes its overlay, and its run dir when `run_dir` (a
    /// standby nobody claimed; a claimed one's run dir belongs to the sandbox's record).
    pub async fn discard(self, run_dir: bool) {
        if let Err(e) = self.vm.kill().await {
            tracing::warn!(sandbox_id = %self.cfg.id, error = %e, "cannot kill a standby VM");
        }
        let _ = std::fs::remove_file(&self.cfg.root_disk);
        if run_dir {
            let _ = std::fs::remove_dir_all(&self.cfg.run_dir);
        }
    }
}

impl QemuRuntime {
    pub(super) fn standbys(&self) -> MutexGuard<'_, StandbyPool<Standby>> {
        self.standbys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the standby of the snapshot in `dir`; when there is none but one is being
    /// launched and no other create waits for it, waits (up to [`LAUNCH_WAIT`]) for the launch
    /// to end and claims its standby if it is still unclaimed.
    pub(super) async fn claim_or_await(&self, dir: &Path, allow_internet: bool) -> Option<String> {
        let deadline = tokio::time::Instant::now() + LAUNCH_WAIT;
        let mut waiting = false;
        loop {
            // Registered before looking at the pool, so that a launch ending in between
            // still wakes us.
            let launched = self.standby_launched.notified();
            let mut launched = std::pin::pin!(launched);
            launched.as_mut().enable();
            {
                let mut pool = self.standbys();
                let claimed = pool.claim(dir, allow_internet, |s| s.vm.try_exit().is_none());
                if claimed.is_some() {
                    return claimed;
                }
                let wait = if waiting {
                    pool.is_starting(dir, allow_internet)
                } else {
                    pool.await_starting(dir, allow_internet)
                };
                if !wait {
                    return None;
                }
            }
            waiting = true;
            if tokio::time::timeout_at(deadline, launched).await.is_err() {
                return None;
            }
        }
    }

    /// Launches a standby for `spec` from the snapshot in `dir`, unless the pool has one for
    /// it (or is launching one) or the snapshot has no memory; `Ok(true)` when one was added.
    /// A create waiting for the launch is woken when it ends, whatever the outcome.
    pub(super) async fn prepare(&self, spec: VmSpec, dir: PathBuf) -> Result<bool, RuntimeError> {
        let result = self.launch_standby(spec, dir).await;
        self.standby_launched.notify_waiters();
        result
    }

    async fn launch_standby(&self, spec: VmSpec, dir: PathBuf) -> Result<bool, RuntimeError> {
        let allow_internet = spec.allow_internet;
        if !self.standbys().reserve(&dir, allow_internet) {
            return Ok(false);
        }
        let launched = match SnapshotManifest::load(&dir) {
            Ok(manifest) if manifest.memory.is_none() => Ok(None),
            Ok(manifest) => self.launch_warmed(&spec, &dir, &manifest).await.map(Some),
            Err(e) => Err(RuntimeError::Restore(Box::new(e))),
        };
        let refused = {
            let mut pool = self.standbys();
            pool.release(&dir, allow_internet);
            match launched {
                // Deleting a snapshot removes its files, then drops its standbys under this
                // lock: one that finished starting after that must not be kept.
                Ok(Some(standby)) if dir.join(snapshot::MANIFEST_FILE).exists() => {
                    pool.insert(spec.sandbox_id.clone(), dir, allow_internet, standby)
                }
                Ok(Some(standby)) => vec![standby],
                Ok(None) => return Ok(false),
                Err(e) => {
                    drop(pool);
                    // Nobody claimed this run dir: `save_config` made it for the standby.
                    let _ = std::fs::remove_dir_all(&spec.run_dir);
                    return Err(e);
                }
            }
        };
        let mut added = true;
        for standby in refused {
            added &= standby.cfg.id != spec.sandbox_id;
            standby.discard(true).await;
        }
        if added {
            tracing::debug!(sandbox_id = %spec.sandbox_id, "standby VM ready");
        }
        Ok(added)
    }

    /// [`Self::launch_loaded`], then the guest warmed up ([`snapshot::warm`]): a standby.
    /// On failure the VM is killed and its overlay removed.
    async fn launch_warmed(
        &self,
        spec: &VmSpec,
        dir: &Path,
        manifest: &SnapshotManifest,
    ) -> Result<Standby, RuntimeError> {
        let standby = self.launch_loaded(spec, dir, manifest).await?;
        match snapshot::warm(&standby.vm, WARM_TIMEOUT).await {
            Ok(()) => Ok(standby),
            Err(e) => {
                // `warm` killed the VM.
                let _ = std::fs::remove_file(&standby.cfg.root_disk);
                Err(RuntimeError::Restore(Box::new(e)))
            }
        }
    }

    /// The first half of every restore from a memory snapshot, a standby's or a create's:
    /// a new overlay, the saved configuration, QEMU launched with the device state loaded
    /// and the guest paused. On failure the overlay is removed.
    pub(super) async fn launch_loaded(
        &self,
        spec: &VmSpec,
        dir: &Path,
        manifest: &SnapshotManifest,
    ) -> Result<Standby, RuntimeError> {
        let cfg = self.restore_config(spec, dir, manifest).await?;
        let launched = match save_config(&cfg) {
            Ok(()) => snapshot::prelaunch(cfg.clone(), dir)
                .await
                .map_err(|e| RuntimeError::Restore(Box::new(e))),
            Err(e) => Err(RuntimeError::Restore(e)),
        };
        match launched {
            Ok(vm) => Ok(Standby { vm, cfg }),
            Err(e) => {
                let _ = std::fs::remove_file(&cfg.root_disk);
                Err(e)
            }
        }
    }

    /// The second half: resumes the guest of `loaded`, which becomes sandbox `sandbox_id`.
    pub(super) async fn finish_loaded(
        &self,
        sandbox_id: &str,
        loaded: Standby,
    ) -> Result<StartedVm, RuntimeError> {
        match snapshot::finish(&loaded.vm).await {
            Ok(()) => Ok(self.adopt(sandbox_id, loaded.vm, loaded.cfg)),
            Err(e) => {
                // `finish` killed the VM; its run dir is the sandbox's, removed by the manager.
                let _ = std::fs::remove_file(&loaded.cfg.root_disk);
                Err(RuntimeError::Restore(Box::new(e)))
            }
        }
    }
}
