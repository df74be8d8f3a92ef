//! Create: record → run dir → VM → agent `/health` → agent `/init` → running.
//!
//! The record is stored before the VM starts so a crash at any point leaves something for
//! restart recovery to clean up. Any failure tears down what was made, in reverse.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use warren_proto::api::Sandbox;

use super::query::sandbox_of;
use super::snapshot::SnapshotSource;
use super::{
    BootFrom, CreateError, CreateSandbox, Live, SandboxManager, StopReason, now, transition,
};
use crate::ids;
use crate::lifecycle::{Phase, Transition};
use crate::runtime::{RuntimeError, StartedVm, VmInfo, VmSpec};
use crate::store::{SandboxRecord, StoreError};

impl SandboxManager {
    /// Creates and boots a sandbox; returns once its agent is initialised.
    ///
    /// The work runs in its own task: if the caller gives up (an HTTP client disconnects),
    /// the create still either completes or cleans up, instead of leaving a VM behind.
    pub async fn create(&self, cmd: CreateSandbox) -> Result<Sandbox, CreateError> {
        let manager = self.clone();
        tokio::spawn(async move { manager.create_detached(cmd).await })
            .await
            .map_err(CreateError::Task)?
    }

    async fn create_detached(&self, cmd: CreateSandbox) -> Result<Sandbox, CreateError> {
        let config = &self.inner.config;
        if cmd.template_id.trim().is_empty() {
            return Err(CreateError::EmptyTemplate);
        }
        let timeout = match cmd.timeout {
            Some(t) => self.check_timeout(t).map_err(CreateError::InvalidTimeout)?,
            None => chrono::Duration::from_std(config.default_timeout)
                .unwrap_or(chrono::Duration::seconds(300)),
        };
        let plan = self.boot_plan(&cmd).await?;
        let mut env_vars = plan.env.clone();
        env_vars.extend(cmd.env_vars);
        // Templates and snapshots (not fork or build sources, which are short-lived) get a
        // standby VM; a create that finds one takes over its sandbox id.
        let standby_dir = plan
            .source
            .as_ref()
            .filter(|_| cmd.boot_from.is_none())
            .map(|s| s.dir.clone());
        let allow_internet = cmd.allow_internet.unwrap_or(true);
        let claimed = match &standby_dir {
            Some(dir) => self.inner.runtime.claim_standby(dir, allow_internet).await,
            None => None,
        };
        let id = claimed.clone().unwrap_or_else(ids::sandbox_id);
        let started_at = now();
        let record = SandboxRecord {
            id: id.clone(),
            template_id: cmd.template_id.clone(),
            phase: Phase::Starting,
            started_at,
            end_at: started_at + timeout,
            vcpus: cmd.vcpus.or(plan.vcpus).unwrap_or(config.default_vcpus),
            memory_mb: cmd
                .memory_mb
                .or(plan.memory_mb)
                .unwrap_or(config.default_memory_mb),
            disk_mb: config.default_disk_mb,
            metadata: cmd.metadata,
            env_vars,
            allow_internet: cmd.allow_internet,
            access_token: ids::secret(32),
            agent_port: None,
            pid: None,
            run_dir: config.sandboxes_dir().join(&id),
            auto_pause: cmd.auto_pause,
            auto_resume: cmd.auto_resume,
        };
        let full = {
            let mut live = self.live();
            let full = live.len() >= config.max_sandboxes;
            if !full {
                let entry = Live {
                    record: record.clone(),
                    agent: None,
                    watcher: None,
                };
                live.insert(id.clone(), entry);
            }
            full
        };
        if full {
            if claimed.is_some() {
                // Nothing will start the claimed standby now: drop it.
                let _ = self.inner.runtime.kill(&id).await;
            }
            return Err(CreateError::TooMany(config.max_sandboxes));
        }
        tracing::info!(sandbox_id = %id, template_id = %record.template_id, "sandbox starting");
        if let Some(dir) = standby_dir {
            self.spawn_standby(dir, allow_internet, record.vcpus, record.memory_mb);
        }
        let cold_image = matches!(cmd.boot_from, Some(BootFrom::Image));
        match self.boot(&record, plan.source, cold_image, timeout).await {
            Ok(sandbox) => {
                tracing::debug!(sandbox_id = %id, standby = claimed.is_some(), "started");
                Ok(sandbox)
            }
            Err(err) => {
                tracing::warn!(sandbox_id = %id, error = %err, "sandbox failed to start");
                self.teardown(&id, StopReason::Killed).await;
                Err(err)
            }
        }
    }

    async fn boot(
        &self,
        record: &SandboxRecord,
        source: Option<SnapshotSource>,
        cold_image: bool,
        timeout: chrono::Duration,
    ) -> Result<Sandbox, CreateError> {
        let id = &record.id;
        let stored = record.clone();
        self.inner
            .store
            .call(move |s| s.insert_sandbox(&stored))
            .await?;
        std::fs::create_dir_all(&record.run_dir).map_err(|source| CreateError::CreateRunDir {
            path: record.run_dir.clone(),
            source,
        })?;
        let spec = VmSpec {
            sandbox_id: id.clone(),
            // A build VM's record names the template being built; its disk is the image's.
            template_id: if cold_image {
                crate::qemu::BASE_TEMPLATE.to_owned()
            } else {
                record.template_id.clone()
            },
            vcpus: record.vcpus,
            memory_mb: record.memory_mb,
            disk_mb: record.disk_mb,
            run_dir: record.run_dir.clone(),
            allow_internet: record.allow_internet.unwrap_or(true),
        };
        // `<name>:<tag>` ids are snapshots; one that is not (or no longer) there is unknown.
        if source.is_none() && !cold_image && record.template_id.contains(':') {
            let unknown = RuntimeError::UnknownTemplate(record.template_id.clone());
            return Err(CreateError::StartVm(unknown));
        }
        let started = match &source {
            Some(snap) => {
                let dir = snap.dir.clone();
                self.inner.runtime.start_from_snapshot(spec, dir).await
            }
            None => self.inner.runtime.start(spec).await,
        };
        let StartedVm { info, exited } = started.map_err(CreateError::StartVm)?;
        // Watch the VM from now on so a crash during the handshake is noticed too.
        let watcher = self.watch_exit(id.clone(), exited);
        if let Some(live) = self.live().get_mut(id) {
            live.agent = Some(info.agent_addr);
            live.watcher = Some(watcher);
        } else {
            watcher.abort();
            return Err(CreateError::KilledDuringStart);
        }
        let agent = &self.inner.agent;
        let vm_started = std::time::Instant::now();
        agent
            .wait_healthy(info.agent_addr, self.inner.config.boot_timeout)
            .await
            .map_err(CreateError::AgentBoot)?;
        let healthy = vm_started.elapsed();
        agent
            .init(
                info.agent_addr,
                // A restored agent still holds its source's token and wants it to be re-keyed.
                source.as_ref().and_then(|s| s.agent_token.as_deref()),
                &record.access_token,
                &record.env_vars,
            )
            .await
            .map_err(CreateError::AgentInit)?;
        tracing::debug!(sandbox_id = %id, ?healthy, initialised = ?vm_started.elapsed(),
            "agent ready");

        let end_at = self
            .mark_running(id, info, timeout)
            .await?
            .ok_or(CreateError::KilledDuringStart)?;
        tracing::info!(
            sandbox_id = %id,
            agent = %info.agent_addr,
            pid = ?info.pid,
            end_at = %end_at,
            "sandbox running"
        );
        Ok(sandbox_of(record))
    }
}

impl SandboxManager {
    /// Prepares, in the background, the standby VM the next create from the snapshot in
    /// `dir` will claim (nothing happens when the runtime has one or keeps none). Called as a
    /// create starts: starting QEMU then overlaps with that create's guest warming up, which
    /// keeps one host core busy, so back-to-back creates each find a standby (prepared after
    /// the create instead, every other one of them had to start QEMU itself).
    fn spawn_standby(&self, dir: PathBuf, allow_internet: bool, vcpus: u32, memory_mb: u32) {
        let manager = self.clone();
        tokio::spawn(async move {
            let id = ids::sandbox_id();
            let spec = VmSpec {
                sandbox_id: id.clone(),
                template_id: String::new(),
                vcpus,
                memory_mb,
                disk_mb: manager.inner.config.default_disk_mb,
                run_dir: manager.inner.config.sandboxes_dir().join(&id),
                allow_internet,
            };
            if let Err(e) = manager.inner.runtime.prepare_standby(spec, dir).await {
                tracing::warn!(error = %e, "cannot prepare a standby VM");
            }
        });
    }

    /// Marks a sandbox whose agent is initialised as running: phase, a deadline `timeout`
    /// from now (the client gets its whole timeout from the moment the sandbox is usable),
    /// the agent's address; in memory, then in the store, then wakes the timeout timer.
    /// `None` when the sandbox vanished meanwhile (it was killed while starting).
    pub(super) async fn mark_running(
        &self,
        id: &str,
        info: VmInfo,
        timeout: chrono::Duration,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let end_at = now() + timeout;
        {
            let mut table = self.live();
            let Some(live) = table.get_mut(id) else {
                return Ok(None);
            };
            if transition(live, Transition::Started).is_err() {
                return Ok(None);
            }
            live.record.end_at = end_at;
            live.record.agent_port = Some(info.agent_addr.port());
            live.record.pid = info.pid;
        }
        let (sid, port, pid) = (id.to_owned(), info.agent_addr.port(), info.pid);
        self.inner
            .store
            .call(move |s| {
                s.set_sandbox_running(&sid, Phase::Running, Some(port), pid)?;
                s.set_sandbox_end(&sid, end_at)
            })
            .await?;
        self.inner.deadlines_changed.notify_one();
        Ok(Some(end_at))
    }
}
