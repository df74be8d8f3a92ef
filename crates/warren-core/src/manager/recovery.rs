//! Starting the manager, including restart recovery.
//!
//! Every stored record is offered to the runtime: a running VM it can re-adopt comes back
//! as a live sandbox (with a new exit watcher, and its agent checked with `/health`);
//! anything else (a VM that died with the old server, a sandbox that was starting or
//! stopping, an agent that no longer answers) is killed to be sure and removed: record and
//! run dir. Run dirs without a record (a crash between mkdir and insert) are removed too.
//! Paused sandboxes have no VM and are kept as they are, with the pause snapshot in their
//! run dir; a VM found for one was started by a resume the old server did not finish (the
//! record only leaves `paused` once the resume is complete), so it is stopped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::stop::remove_run_dir;
use super::{Inner, Live, SandboxManager, StartError};
use crate::agent::AgentClient;
use crate::config::Config;
use crate::lifecycle::Phase;
use crate::runtime::{AttachSpec, Runtime};
use crate::store::{SandboxRecord, Store};

impl SandboxManager {
    /// Starts the manager: recovers what a previous server left and starts the timer.
    pub async fn start(
        config: Config,
        store: Store,
        runtime: Arc<dyn Runtime>,
    ) -> Result<SandboxManager, StartError> {
        let dir = config.sandboxes_dir();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let agent = AgentClient::new().map_err(StartError::AgentClient)?;
        let manager = SandboxManager {
            inner: Arc::new(Inner {
                config,
                store,
                runtime,
                agent,
                live: Mutex::new(HashMap::new()),
                deadlines_changed: Notify::new(),
                timer: Mutex::new(None),
            }),
        };
        manager.recover().await?;
        manager.clean_snapshot_leftovers().await;
        manager.spawn_timer();
        Ok(manager)
    }

    async fn recover(&self) -> Result<(), StartError> {
        let records = self.inner.store.call(|s| s.list_sandboxes()).await?;
        let known: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
        for record in records {
            let id = record.id.clone();
            if record.phase == Phase::Paused {
                self.stop_unfinished_resume(&record).await;
                self.live().insert(
                    id,
                    Live {
                        record,
                        agent: None,
                        watcher: None,
                    },
                );
                continue;
            }
            if record.phase == Phase::Running && self.adopt(&record).await {
                tracing::info!(sandbox_id = %id, "sandbox re-adopted after restart");
                continue;
            }
            tracing::info!(
                sandbox_id = %id,
                phase = record.phase.as_str(),
                "removing sandbox left by a previous server"
            );
            if let Err(err) = self.inner.runtime.kill(&id).await {
                tracing::warn!(sandbox_id = %id, error = %err, "cannot kill leftover VM");
            }
            remove_run_dir(&record);
            self.inner
                .store
                .call(move |s| s.delete_sandbox(&id))
                .await?;
        }
        self.remove_orphan_dirs(&known).await;
        Ok(())
    }

    /// Re-adopts a running VM; `false` if it is gone or its agent does not answer.
    async fn adopt(&self, record: &SandboxRecord) -> bool {
        let spec = AttachSpec {
            sandbox_id: record.id.clone(),
            run_dir: record.run_dir.clone(),
            pid: record.pid,
            agent_port: record.agent_port,
        };
        let vm = match self.inner.runtime.attach(spec).await {
            Ok(Some(vm)) => vm,
            Ok(None) => return false,
            Err(err) => {
                tracing::warn!(sandbox_id = %record.id, error = %err, "cannot attach to VM");
                return false;
            }
        };
        let healthy = self
            .inner
            .agent
            .wait_healthy(vm.info.agent_addr, Duration::from_secs(5))
            .await;
        if healthy.is_err() {
            return false;
        }
        let mut record = record.clone();
        record.pid = vm.info.pid;
        record.agent_port = Some(vm.info.agent_addr.port());
        let id = record.id.clone();
        self.live().insert(
            id.clone(),
            Live {
                record,
                agent: Some(vm.info.agent_addr),
                watcher: None,
            },
        );
        let watcher = self.watch_exit(id.clone(), vm.exited);
        if let Some(live) = self.live().get_mut(&id) {
            live.watcher = Some(watcher);
        }
        true
    }

    /// Stops the VM of a resume interrupted by a restart, if one still runs.
    async fn stop_unfinished_resume(&self, record: &SandboxRecord) {
        let spec = AttachSpec {
            sandbox_id: record.id.clone(),
            run_dir: record.run_dir.clone(),
            pid: None,
            agent_port: None,
        };
        if let Ok(Some(_vm)) = self.inner.runtime.attach(spec).await {
            tracing::info!(sandbox_id = %record.id, "stopping the VM of an unfinished resume");
            if let Err(err) = self.inner.runtime.kill(&record.id).await {
                tracing::warn!(sandbox_id = %record.id, error = %err, "cannot stop the VM");
            }
        }
    }

    async fn remove_orphan_dirs(&self, known: &HashSet<String>) {
        let dir = self.inner.config.sandboxes_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            tracing::info!(sandbox_id = %name, "removing orphaned sandbox run dir");
            // A standby VM of the previous server (or a VM whose record was never stored)
            // may still run there: adopt it to kill it.
            let spec = AttachSpec {
                sandbox_id: name.clone(),
                run_dir: entry.path(),
                pid: None,
                agent_port: None,
            };
            if let Ok(Some(_vm)) = self.inner.runtime.attach(spec).await
                && let Err(err) = self.inner.runtime.kill(&name).await
            {
                tracing::warn!(sandbox_id = %name, error = %err, "cannot kill leftover VM");
            }
            if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %err, "cannot remove dir");
            }
        }
    }
}
