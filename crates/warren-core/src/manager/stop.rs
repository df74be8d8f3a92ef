//! Stopping sandboxes: kill, the timeout timer and VM-exit watchers, which all end in
//! [`SandboxManager::teardown`]; and server shutdown.
//!
//! The timer is one task that sleeps until the earliest deadline of a running sandbox or
//! until [`Inner::deadlines_changed`](super::Inner) is notified (create, connect, set
//! timeout), then kills whatever has expired. Deadlines are wall-clock times, checked
//! against the clock on every wake, so the kill happens within the second of `endAt`.
//! An expired sandbox created with `autoPause` is paused instead (and killed only if the
//! pause fails).

use std::time::Duration;

use super::{KillError, SandboxManager, ShutdownMode, StopReason, now};
use crate::lifecycle::{Phase, Transition, check};
use crate::runtime::ExitWatch;
use crate::store::SandboxRecord;

impl SandboxManager {
    /// Kills a sandbox and removes every trace of it.
    ///
    /// Like create, the teardown runs in its own task so a caller that gives up cannot
    /// leave a sandbox half-stopped.
    pub async fn kill(&self, id: &str) -> Result<(), KillError> {
        let Some(record) = self.begin_stop(id) else {
            return Err(KillError::NotFound(id.to_owned()));
        };
        let manager = self.clone();
        tokio::spawn(async move { manager.finish_stop(record, StopReason::Killed, true).await })
            .await
            .map_err(KillError::Task)?
    }

    /// Tears a sandbox down if it is still there; used on failure paths, where the error
    /// that matters has already been reported.
    pub(super) async fn teardown(&self, id: &str, reason: StopReason) {
        let Some(record) = self.begin_stop(id) else {
            return;
        };
        if let Err(err) = self.finish_stop(record, reason, true).await {
            tracing::error!(sandbox_id = %id, error = %err, "sandbox teardown failed");
        }
    }

    /// Moves a live sandbox to `Stopping`; `None` if it is unknown or already stopping.
    /// Returns the record as it was, so the teardown knows whether there is a VM.
    fn begin_stop(&self, id: &str) -> Option<SandboxRecord> {
        let mut table = self.live();
        let live = table.get_mut(id)?;
        let to = check(live.record.phase, Transition::Kill).ok()?;
        let before = live.record.clone();
        live.record.phase = to;
        Some(before)
    }

    async fn finish_stop(
        &self,
        record: SandboxRecord,
        reason: StopReason,
        abort_watcher: bool,
    ) -> Result<(), KillError> {
        let id = record.id.clone();
        let watcher = self.live().get_mut(&id).and_then(|l| l.watcher.take());
        if let (true, Some(w)) = (abort_watcher, watcher) {
            w.abort();
        }
        // A paused sandbox has no VM, and asking the runtime to kill one by id could remove
        // disks of that id that the pause snapshot or other snapshots still use.
        let killed = if record.phase == Phase::Paused {
            Ok(())
        } else {
            self.inner.runtime.kill(&id).await
        };
        // Whatever happens next, the sandbox is no longer served.
        self.live().remove(&id);
        // Its disk chain may have been the last user of some snapshot's layers.
        self.collect_garbage().await;
        if let Err(err) = killed {
            // The record stays (as `stopping`) so the next start retries the cleanup.
            let (sid, phase) = (id.clone(), Phase::Stopping);
            let _ = self
                .inner
                .store
                .call(move |s| s.set_sandbox_phase(&sid, phase))
                .await;
            return Err(KillError::Runtime(err));
        }
        remove_run_dir(&record);
        let sid = id.clone();
        self.inner
            .store
            .call(move |s| s.delete_sandbox(&sid))
            .await?;
        tracing::info!(sandbox_id = %id, reason = reason.as_str(), "sandbox stopped");
        Ok(())
    }

    /// Spawns the task that tears a sandbox down when its VM exits.
    pub(super) fn watch_exit(&self, id: String, exited: ExitWatch) -> tokio::task::AbortHandle {
        let manager = self.clone();
        tokio::spawn(async move {
            let exit = exited.await;
            tracing::info!(sandbox_id = %id, exit = %exit.description, "sandbox VM exited");
            if let Some(record) = manager.begin_stop(&id) {
                // This task is the watcher: it must not abort itself.
                if let Err(err) = manager
                    .finish_stop(record, StopReason::VmExited, false)
                    .await
                {
                    tracing::error!(sandbox_id = %id, error = %err, "sandbox teardown failed");
                }
            }
        })
        .abort_handle()
    }

    /// Starts the timeout timer (once; called by `start`).
    pub(super) fn spawn_timer(&self) {
        let manager = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let notified = manager.inner.deadlines_changed.notified();
                let sleep = manager.kill_expired();
                tokio::select! {
                    () = tokio::time::sleep(sleep) => {}
                    () = notified => {}
                }
            }
        });
        let mut slot = self.inner.timer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// Starts the teardown of every expired running sandbox; returns how long to sleep
    /// until the next deadline (capped so a clock jump is noticed within a minute).
    fn kill_expired(&self) -> Duration {
        let now = now();
        let mut next = Duration::from_secs(60);
        let mut expired = Vec::new();
        for (id, live) in self.live().iter() {
            if live.record.phase != Phase::Running {
                continue;
            }
            match (live.record.end_at - now).to_std() {
                Ok(left) if !left.is_zero() => next = next.min(left),
                _ => expired.push((id.clone(), live.record.auto_pause)),
            }
        }
        for (id, auto_pause) in expired {
            let manager = self.clone();
            tokio::spawn(async move {
                if auto_pause {
                    manager.pause_on_timeout(&id).await;
                } else {
                    manager.teardown(&id, StopReason::TimedOut).await;
                }
            });
        }
        next
    }

    /// Stops the timer and, with [`ShutdownMode::KillAll`], every sandbox.
    pub async fn shutdown(&self, mode: ShutdownMode) {
        if let Some(timer) = self
            .inner
            .timer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            timer.abort();
        }
        // Standby VMs belong to no sandbox: nothing would adopt them.
        self.inner.runtime.drop_standbys().await;
        let ids: Vec<String> = self.live().keys().cloned().collect();
        match mode {
            ShutdownMode::Detach => {
                for live in self.live().values_mut() {
                    if let Some(w) = live.watcher.take() {
                        w.abort();
                    }
                }
            }
            ShutdownMode::KillAll => {
                let tasks: Vec<_> = ids
                    .into_iter()
                    .map(|id| {
                        let manager = self.clone();
                        tokio::spawn(async move {
                            manager.teardown(&id, StopReason::Shutdown).await;
                        })
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            }
        }
    }
}

/// Removes a sandbox's run dir; a missing dir is fine.
pub(super) fn remove_run_dir(record: &SandboxRecord) {
    match std::fs::remove_dir_all(&record.run_dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(
            sandbox_id = %record.id,
            path = %record.run_dir.display(),
            error = %err,
            "cannot remove the sandbox run dir"
        ),
    }
}
