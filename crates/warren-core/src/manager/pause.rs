//! Pause and resume: a paused sandbox is a live snapshot of it plus its record, no VM.
//!
//! ```text
//!  pause:  Running ─► Pausing ─ snapshot into <run_dir>/pause.tmp ─► rename to pause/
//!                               ─► VM killed ─► Paused (no VM, no deadline)
//!  resume: Paused ─► Starting ─ VM started from <run_dir>/pause ─► /health ─► /init
//!                               ─► Running (new deadline) ─► pause/ deleted, disks collected
//! ```
//!
//! The pause snapshot lives in the sandbox's own run dir, so it is never listed with the
//! user's snapshots and goes away with the sandbox when a paused sandbox is killed. The store
//! keeps saying `running` while a pause is in progress: a server crash midway then re-adopts
//! the still running VM, and the unfinished `pause.tmp` is removed by the next pause. A
//! resumed agent keeps its access token (it is re-keyed to the same value with fresh time and
//! entropy), so SDK objects and signed URLs made before the pause keep working.
//!
//! A failed resume leaves the sandbox paused with its snapshot intact, so it can be retried.
//! Known shortcoming: `memory: false` on connect (reboot from the filesystem instead of
//! resuming) is not honoured; the sandbox is always resumed in its captured state when the
//! pause kept memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use warren_proto::api::Sandbox;

use super::query::sandbox_of;
use super::{ConnectError, PauseError, SandboxManager, transition};
use crate::lifecycle::{Phase, Transition, check};
use crate::runtime::{SnapshotKind, StartedVm, VmSpec};
use crate::store::SandboxRecord;

/// The pause snapshot's directory inside a run dir.
const PAUSE_DIR: &str = "pause";
/// Where a pause snapshot is written before it is complete.
const PAUSE_TMP_DIR: &str = "pause.tmp";
/// How long `requireHealthyGuest` waits for the agent before refusing to pause.
const HEALTHY_GUEST_WAIT: Duration = Duration::from_secs(5);

/// The pause snapshot directory of a sandbox.
pub(super) fn pause_dir(record: &SandboxRecord) -> PathBuf {
    record.run_dir.join(PAUSE_DIR)
}

impl SandboxManager {
    /// Pauses a running sandbox: snapshot (`memory: false` keeps only its disk), then its VM
    /// is stopped. With `require_healthy_guest` the agent must answer `/health` first.
    pub async fn pause(
        &self,
        id: &str,
        memory: bool,
        require_healthy_guest: bool,
    ) -> Result<(), PauseError> {
        let manager = self.clone();
        let id = id.to_owned();
        // Like kill, the work runs in its own task so that a client giving up cannot leave
        // the sandbox stuck in `Pausing`.
        tokio::spawn(async move {
            manager
                .pause_detached(&id, memory, require_healthy_guest)
                .await
        })
        .await
        .map_err(PauseError::Task)?
    }

    async fn pause_detached(
        &self,
        id: &str,
        memory: bool,
        require_healthy_guest: bool,
    ) -> Result<(), PauseError> {
        let (record, agent) = {
            let mut table = self.live();
            let live = table
                .get_mut(id)
                .filter(|l| l.record.phase.visible_state().is_some())
                .ok_or_else(|| PauseError::NotFound(id.to_owned()))?;
            transition(live, Transition::Pause).map_err(|source| PauseError::NotRunning {
                id: id.to_owned(),
                source,
            })?;
            (live.record.clone(), live.agent)
        };
        match self
            .capture(&record, agent, memory, require_healthy_guest)
            .await
        {
            Ok(()) => {}
            Err(err) => {
                self.back_to(id, Phase::Pausing, Phase::Running);
                return Err(err);
            }
        }
        // The VM is stopped on purpose: its exit must not tear the sandbox down.
        let watcher = self.live().get_mut(id).and_then(|l| l.watcher.take());
        if let Some(w) = watcher {
            w.abort();
        }
        let killed = self.inner.runtime.kill(id).await;
        {
            let mut table = self.live();
            let Some(live) = table
                .get_mut(id)
                .filter(|l| l.record.phase == Phase::Pausing)
            else {
                // Killed while pausing: the kill removes the run dir and the snapshot in it.
                return Err(PauseError::NotFound(id.to_owned()));
            };
            live.record.phase = Phase::Paused;
            live.record.agent_port = None;
            live.record.pid = None;
            live.agent = None;
        }
        let sid = id.to_owned();
        self.inner
            .store
            .call(move |s| s.set_sandbox_running(&sid, Phase::Paused, None, None))
            .await?;
        // The snapshot is complete, so the sandbox stays paused; a VM that could not be
        // stopped is only reported (known shortcoming: nothing retries stopping it).
        killed.map_err(PauseError::StopVm)?;
        tracing::info!(sandbox_id = %id, memory, "sandbox paused");
        Ok(())
    }

    /// Takes the pause snapshot and publishes it as `<run_dir>/pause`.
    async fn capture(
        &self,
        record: &SandboxRecord,
        agent: Option<std::net::SocketAddr>,
        memory: bool,
        require_healthy_guest: bool,
    ) -> Result<(), PauseError> {
        if require_healthy_guest {
            let addr = agent.ok_or_else(|| PauseError::NotFound(record.id.clone()))?;
            self.inner
                .agent
                .wait_healthy(addr, HEALTHY_GUEST_WAIT)
                .await
                .map_err(PauseError::UnhealthyGuest)?;
        }
        let tmp = record.run_dir.join(PAUSE_TMP_DIR);
        let dir = pause_dir(record);
        let prepare = |path: &Path| {
            let path = path.to_owned();
            move |source| PauseError::Prepare { path, source }
        };
        // Leftovers of a pause interrupted by a crash.
        for stale in [&tmp, &dir] {
            match std::fs::remove_dir_all(stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(prepare(stale)(e));
                }
                _ => {}
            }
        }
        let taken = self
            .inner
            .runtime
            .snapshot(&record.id, tmp.clone(), SnapshotKind::with_memory(memory))
            .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(PauseError::Snapshot(e));
            }
        };
        let publish = std::fs::rename(&tmp, &dir)
            .and_then(|()| std::fs::File::open(&record.run_dir)?.sync_all());
        if let Err(e) = publish {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(prepare(&dir)(e));
        }
        tracing::debug!(sandbox_id = %record.id, frozen_ms = taken.frozen_ms,
            disk_bytes = taken.disk_bytes, "pause snapshot taken");
        Ok(())
    }

    /// Moves a sandbox from phase `from` back to `to` (a failed pause or resume).
    fn back_to(&self, id: &str, from: Phase, to: Phase) {
        if let Some(live) = self.live().get_mut(id)
            && live.record.phase == from
        {
            live.record.phase = to;
        }
    }

    /// Resumes a paused sandbox (the legacy `POST /sandboxes/{id}/resume`): unlike connect,
    /// a sandbox that is not paused is refused. `timeout` in seconds, default if `None`.
    pub async fn resume_paused(
        &self,
        id: &str,
        timeout: Option<i64>,
    ) -> Result<Sandbox, ConnectError> {
        let timeout = match timeout {
            Some(t) => self
                .check_timeout(t)
                .map_err(ConnectError::InvalidTimeout)?,
            None => chrono::Duration::from_std(self.inner.config.default_timeout)
                .unwrap_or(chrono::Duration::seconds(300)),
        };
        let Some(record) = self.begin_resume(id)? else {
            let table = self.live();
            let phase = table
                .get(id)
                .map(|l| l.record.phase)
                .filter(|p| p.visible_state().is_some())
                .ok_or_else(|| ConnectError::NotFound(id.to_owned()))?;
            let source = check(phase, Transition::Resume)
                .err()
                .unwrap_or(crate::lifecycle::TransitionError::Refused(phase));
            return Err(ConnectError::NotRunning {
                id: id.to_owned(),
                source,
            });
        };
        self.resume(record, timeout).await
    }

    /// Waits (up to the boot timeout) while a sandbox is `Starting`, so that a connect that
    /// arrives during another client's resume answers once that resume is done.
    pub(super) async fn wait_while_starting(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + self.inner.config.boot_timeout;
        while self
            .live()
            .get(id)
            .is_some_and(|l| l.record.phase == Phase::Starting)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Moves a paused sandbox to `Starting` for a resume; `None` if it is not paused.
    pub(super) fn begin_resume(&self, id: &str) -> Result<Option<SandboxRecord>, ConnectError> {
        let mut table = self.live();
        let Some(live) = table
            .get_mut(id)
            .filter(|l| l.record.phase == Phase::Paused)
        else {
            return Ok(None);
        };
        transition(live, Transition::Resume).map_err(|source| ConnectError::NotRunning {
            id: id.to_owned(),
            source,
        })?;
        Ok(Some(live.record.clone()))
    }

    /// Resumes a paused sandbox from its pause snapshot; its deadline is `timeout` from now.
    /// Called by connect, which has already moved the sandbox to `Starting`.
    pub(super) async fn resume(
        &self,
        record: SandboxRecord,
        timeout: chrono::Duration,
    ) -> Result<Sandbox, ConnectError> {
        let manager = self.clone();
        tokio::spawn(async move {
            let id = record.id.clone();
            let resumed = manager.resume_detached(&record, timeout).await;
            if resumed.is_err() {
                manager.back_to(&id, Phase::Starting, Phase::Paused);
            }
            resumed
        })
        .await
        .map_err(ConnectError::Task)?
    }

    async fn resume_detached(
        &self,
        record: &SandboxRecord,
        timeout: chrono::Duration,
    ) -> Result<Sandbox, ConnectError> {
        let id = &record.id;
        let spec = VmSpec {
            sandbox_id: id.clone(),
            template_id: record.template_id.clone(),
            vcpus: record.vcpus,
            memory_mb: record.memory_mb,
            disk_mb: record.disk_mb,
            run_dir: record.run_dir.clone(),
            allow_internet: record.allow_internet.unwrap_or(true),
        };
        let dir = pause_dir(record);
        let StartedVm { info, exited } = self
            .inner
            .runtime
            .start_from_snapshot(spec, dir.clone())
            .await
            .map_err(ConnectError::StartVm)?;
        let watcher = self.watch_exit(id.clone(), exited);
        match self.live().get_mut(id) {
            Some(live) if live.record.phase == Phase::Starting => {
                live.agent = Some(info.agent_addr);
                live.watcher = Some(watcher);
            }
            _ => {
                watcher.abort();
                return Err(ConnectError::NotFound(id.clone()));
            }
        }
        let agent = &self.inner.agent;
        let token = &record.access_token;
        let handshake = async {
            agent
                .wait_healthy(info.agent_addr, self.inner.config.boot_timeout)
                .await
                .map_err(ConnectError::AgentBoot)?;
            agent
                .init(info.agent_addr, Some(token), token, &record.env_vars)
                .await
                .map_err(ConnectError::AgentInit)
        };
        if let Err(err) = handshake.await {
            // Back to paused: stop the new VM without letting its exit tear the sandbox down.
            let watcher = self.live().get_mut(id).and_then(|l| l.watcher.take());
            if let Some(w) = watcher {
                w.abort();
            }
            if let Err(e) = self.inner.runtime.kill(id).await {
                tracing::warn!(sandbox_id = %id, error = %e, "cannot stop a failed resume");
            }
            if let Some(live) = self.live().get_mut(id) {
                live.agent = None;
            }
            return Err(err);
        }
        let end_at = self
            .mark_running(id, info, timeout)
            .await?
            .ok_or_else(|| ConnectError::NotFound(id.clone()))?;
        // The new VM holds what it needs of the snapshot (its RAM mapped, its disk layer as
        // a backing file), so the directory can go; unused layers go with the collection.
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(sandbox_id = %id, error = %e, "cannot remove the pause snapshot");
        }
        self.collect_garbage().await;
        tracing::info!(sandbox_id = %id, agent = %info.agent_addr, end_at = %end_at,
            "sandbox resumed");
        Ok(sandbox_of(record))
    }

    /// Expired sandbox with `autoPause`: pause it, and kill it if the pause fails so that
    /// nothing outlives its deadline.
    pub(super) async fn pause_on_timeout(&self, id: &str) {
        match self.pause(id, true, false).await {
            Ok(()) => tracing::info!(sandbox_id = %id, "sandbox paused on timeout"),
            // Another pause (a client's, or an earlier wake of the timer) got there first.
            Err(PauseError::NotRunning { .. } | PauseError::NotFound(_)) => {}
            Err(err) => {
                let running = self
                    .live()
                    .get(id)
                    .is_some_and(|l| l.record.phase == Phase::Running);
                if running {
                    tracing::warn!(sandbox_id = %id, error = %err,
                        "cannot pause an expired sandbox; killing it");
                    self.teardown(id, super::StopReason::TimedOut).await;
                } else {
                    tracing::warn!(sandbox_id = %id, error = %err, "pause on timeout failed");
                }
            }
        }
    }

    /// Pause snapshot directories of every sandbox, for disk garbage collection.
    pub(super) fn pause_dirs(&self) -> Vec<PathBuf> {
        self.live().values().map(|l| pause_dir(&l.record)).collect()
    }
}
