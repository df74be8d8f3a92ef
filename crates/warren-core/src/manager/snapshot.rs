//! Snapshots: create (live, the source keeps running), list, delete, start from, and fork.
//!
//! Ids follow E2B's shapes: an unnamed snapshot is `<random>:default`; a named one is
//! `warren/<name>:v<N>`, where reusing the name adds the next `v<N>` tag and the bare name
//! (`warren/<name>` or `<name>`) means the newest tag.
//!
//! On disk a snapshot is `<data_dir>/snapshots/<dir>/` (RAM image, device state, manifest,
//! and the source agent's access token, needed to re-key clones) plus a frozen disk layer in
//! `<data_dir>/disks/`. The directory is filled under a `.tmp-` name and renamed into place
//! before the record is stored, so a crash midway never leaves a listed half snapshot; a
//! restart removes leftover `.tmp-` directories. Deleting a snapshot removes its record and
//! its directory at once: sandboxes started from it keep their mappings of the (unlinked)
//! RAM image, and the disk layers they are backed by stay until nothing uses them.

use std::path::{Path, PathBuf};

use warren_proto::api::SnapshotInfo;

use super::{CreateSandbox, SandboxManager, now};
use crate::ids;
use crate::lifecycle::Phase;
use crate::runtime::{RuntimeError, SnapshotKind, SnapshotTaken};
use crate::store::{SnapshotRecord, StoreError};

/// The agent token file inside a snapshot directory.
const TOKEN_FILE: &str = "agent-token";
/// Namespace of named snapshots.
const NAMESPACE: &str = "warren";

/// Failure of a snapshot command.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("sandbox {0} not found")]
    SandboxNotFound(String),
    #[error("sandbox {0} is not running")]
    NotRunning(String),
    #[error("snapshot {0} not found")]
    NotFound(String),
    #[error("invalid snapshot name {0:?}: use 1-63 of a-z, 0-9, '.', '_' and '-'")]
    InvalidName(String),
    #[error("count must be between 1 and 20, got {0}")]
    InvalidCount(u32),
    #[error("cannot prepare the snapshot directory {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot take the snapshot")]
    Take(#[source] RuntimeError),
    #[error("cannot record the snapshot")]
    Store(#[from] StoreError),
}

impl SnapshotError {
    /// The error's class, for status codes.
    pub fn kind(&self) -> super::ErrorKind {
        use super::ErrorKind;
        match self {
            SnapshotError::SandboxNotFound(_) | SnapshotError::NotFound(_) => ErrorKind::NotFound,
            SnapshotError::NotRunning(_) => ErrorKind::Conflict,
            SnapshotError::InvalidName(_) | SnapshotError::InvalidCount(_) => {
                ErrorKind::InvalidRequest
            }
            _ => ErrorKind::Internal,
        }
    }
}

/// Filter of [`SandboxManager::list_snapshots`].
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub sandbox_id: Option<String>,
    pub name: Option<String>,
}

/// A snapshot to start a sandbox from: its directory and the token its agent holds (none
/// for a disk-only layer whose agent boots fresh).
#[derive(Debug, Clone)]
pub(super) struct SnapshotSource {
    pub dir: PathBuf,
    pub agent_token: Option<String>,
}

/// The agent token saved in a snapshot directory, if there is one.
pub(super) fn read_token(dir: &Path) -> Option<String> {
    let token = std::fs::read_to_string(dir.join(TOKEN_FILE)).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// The bare name of a named snapshot id (`warren/<name>:v3` → `<name>`).
fn name_of(id: &str) -> Option<&str> {
    let rest = id.strip_prefix(NAMESPACE)?.strip_prefix('/')?;
    Some(rest.split_once(':').map_or(rest, |(n, _)| n))
}

impl SandboxManager {
    fn snapshots_dir(&self) -> PathBuf {
        self.inner.config.snapshots_dir()
    }

    /// Takes a live snapshot of a running sandbox (`memory: false`: its disk only).
    pub async fn create_snapshot(
        &self,
        sandbox_id: &str,
        name: Option<String>,
        memory: bool,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let (template_id, token) = {
            let live = self.live();
            let entry = live
                .get(sandbox_id)
                .ok_or_else(|| SnapshotError::SandboxNotFound(sandbox_id.to_owned()))?;
            if entry.record.phase != Phase::Running {
                return Err(SnapshotError::NotRunning(sandbox_id.to_owned()));
            }
            (
                entry.record.template_id.clone(),
                entry.record.access_token.clone(),
            )
        };
        let id = match &name {
            Some(n) if !valid_name(n) => return Err(SnapshotError::InvalidName(n.clone())),
            Some(n) => {
                let n = n.clone();
                let taken = self
                    .inner
                    .store
                    .call(move |s| s.list_snapshots())
                    .await?
                    .iter()
                    .filter(|r| name_of(&r.id) == Some(n.as_str()))
                    .count();
                format!(
                    "{NAMESPACE}/{}:v{}",
                    name.as_deref().unwrap_or(""),
                    taken + 1
                )
            }
            None => format!("{}:default", ids::secret(12).to_ascii_lowercase()),
        };
        let dir = self
            .snapshots_dir()
            .join(ids::secret(16).to_ascii_lowercase());
        let kind = SnapshotKind::with_memory(memory);
        let taken = self.take_into(sandbox_id, &token, &dir, kind).await?;
        let record = SnapshotRecord {
            id: id.clone(),
            names: vec![id.clone()],
            source_sandbox: Some(sandbox_id.to_owned()),
            template_id,
            created_at: now(),
            disk_bytes: taken.disk_bytes,
            memory_bytes: taken.memory_bytes,
            has_memory: memory,
            dir: dir.clone(),
            files: Vec::new(),
        };
        let stored = record.clone();
        if let Err(e) = self
            .inner
            .store
            .call(move |s| s.insert_snapshot(&stored))
            .await
        {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        tracing::info!(sandbox_id, snapshot_id = %id, frozen_ms = taken.frozen_ms,
            disk_bytes = taken.disk_bytes, memory, "snapshot created");
        Ok(SnapshotInfo {
            snapshot_id: id,
            names: record.names,
        })
    }

    /// Takes a snapshot of a running sandbox into the new directory `dir` without recording
    /// it (template builds keep their own records of layers and ready snapshots).
    pub async fn snapshot_into(
        &self,
        sandbox_id: &str,
        dir: &Path,
        memory: bool,
    ) -> Result<SnapshotTaken, SnapshotError> {
        let token = {
            let live = self.live();
            let entry = live
                .get(sandbox_id)
                .ok_or_else(|| SnapshotError::SandboxNotFound(sandbox_id.to_owned()))?;
            if entry.record.phase != Phase::Running {
                return Err(SnapshotError::NotRunning(sandbox_id.to_owned()));
            }
            entry.record.access_token.clone()
        };
        self.take_into(sandbox_id, &token, dir, SnapshotKind::with_memory(memory))
            .await
    }

    /// Fills `.tmp-<name>` beside `dir`, writes the agent token, renames it to `dir` and
    /// syncs the parent, so `dir` either does not exist or holds a whole snapshot.
    async fn take_into(
        &self,
        sandbox_id: &str,
        token: &str,
        dir: &Path,
        kind: SnapshotKind,
    ) -> Result<SnapshotTaken, SnapshotError> {
        let root = dir.parent().unwrap_or(Path::new("/")).to_owned();
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = root.join(format!(".tmp-{}", name.unwrap_or_default()));
        let prepare = |source| SnapshotError::Prepare {
            path: tmp.clone(),
            source,
        };
        std::fs::create_dir_all(&root).map_err(prepare)?;
        let taken = self
            .inner
            .runtime
            .snapshot(sandbox_id, tmp.clone(), kind)
            .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(SnapshotError::Take(e));
            }
        };
        let publish = write_token(&tmp, token)
            .and_then(|()| std::fs::rename(&tmp, dir))
            .and_then(|()| std::fs::File::open(&root)?.sync_all());
        if let Err(source) = publish {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(SnapshotError::Prepare {
                path: dir.to_owned(),
                source,
            });
        }
        Ok(taken)
    }

    /// Snapshots, oldest first, filtered.
    pub async fn list_snapshots(
        &self,
        filter: SnapshotFilter,
    ) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        let all = self.inner.store.call(|s| s.list_snapshots()).await?;
        Ok(all
            .into_iter()
            .filter(|r| {
                filter
                    .sandbox_id
                    .as_ref()
                    .is_none_or(|id| r.source_sandbox.as_ref() == Some(id))
            })
            .filter(|r| {
                filter.name.as_ref().is_none_or(|n| {
                    r.id == *n || name_of(&r.id) == Some(n.trim_start_matches("warren/"))
                })
            })
            .collect())
    }

    /// Deletes a snapshot; `false` when there is none. Running sandboxes started from it are
    /// not affected (see the module docs).
    pub async fn delete_snapshot(&self, id: &str) -> Result<bool, SnapshotError> {
        let Some(record) = self.find_snapshot(id).await? else {
            return Ok(false);
        };
        let key = record.id.clone();
        if !self
            .inner
            .store
            .call(move |s| s.delete_snapshot(&key))
            .await?
        {
            return Ok(false);
        }
        if let Err(e) = std::fs::remove_dir_all(&record.dir) {
            tracing::warn!(snapshot_id = %record.id, error = %e, "cannot remove snapshot files");
        }
        tracing::info!(snapshot_id = %record.id, "snapshot deleted");
        self.collect_garbage().await;
        Ok(true)
    }

    /// After a restart: removes snapshot directories that were never published (a crash
    /// or kill during a snapshot), then unused disk layers.
    pub(super) async fn clean_snapshot_leftovers(&self) {
        let config = &self.inner.config;
        let roots = [
            self.snapshots_dir(),
            config.template_layers_dir(),
            config.template_snapshots_dir(),
        ];
        for root in roots {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let dir = entry.path();
                    tracing::info!(dir = %dir.display(), "removing an unfinished snapshot");
                    // Its recorder QEMU (RAM file in this directory) has no owner any more.
                    for pid in warren_vm::snapshot::recover::kill_qemus_under(&dir) {
                        tracing::info!(pid, "killed the recorder of an unfinished snapshot");
                    }
                    let _ = warren_vm::snapshot::remove_dir(&dir);
                }
            }
        }
        // Far longer than any snapshot or fork takes.
        let stale = std::time::Duration::from_secs(600);
        let removed = warren_vm::snapshot::remove_stale_leftovers(stale);
        if removed > 0 {
            tracing::info!(removed, "removed files left by interrupted snapshots");
        }
        self.collect_garbage().await;
    }

    /// Removes disk layers nothing depends on any more.
    pub(crate) async fn collect_garbage(&self) {
        let keep = match self.inner.store.call(|s| s.list_snapshots()).await {
            Ok(all) => all
                .into_iter()
                .map(|r| r.dir)
                .chain(self.pause_dirs())
                .chain(subdirs(&self.inner.config.template_layers_dir()))
                .chain(subdirs(&self.inner.config.template_snapshots_dir()))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list snapshots; skipping disk cleanup");
                return;
            }
        };
        self.inner.runtime.collect_garbage(keep).await;
    }

    /// The snapshot an id or name refers to: an exact id, or the newest tag of a name.
    pub(super) async fn find_snapshot(
        &self,
        id: &str,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        let all = self.inner.store.call(|s| s.list_snapshots()).await?;
        if let Some(r) = all
            .iter()
            .find(|r| r.id == id || r.names.iter().any(|n| n == id))
        {
            return Ok(Some(r.clone()));
        }
        let bare = id.trim_start_matches("warren/");
        Ok(all.into_iter().rev().find(|r| name_of(&r.id) == Some(bare)))
    }

    /// What a create with `template_id` starts from, if it names a snapshot.
    pub(super) async fn snapshot_source(
        &self,
        template_id: &str,
    ) -> Result<Option<SnapshotSource>, StoreError> {
        let Some(record) = self.find_snapshot(template_id).await? else {
            return Ok(None);
        };
        Ok(Some(SnapshotSource {
            agent_token: read_token(&record.dir),
            dir: record.dir,
        }))
    }

    /// Forks a running sandbox `count` times: one live snapshot, then `count` sandboxes
    /// started from it concurrently. The snapshot itself is not kept: it is never recorded,
    /// its RAM image stays in host memory rather than being written out (the forks map it
    /// and keep it alive until they end), and its directory is removed once they started.
    /// Its name starts with `.tmp-`, so a crash midway leaves nothing a restart keeps.
    pub async fn fork(
        &self,
        sandbox_id: &str,
        count: u32,
        timeout: Option<i64>,
    ) -> Result<Vec<Result<warren_proto::api::Sandbox, super::CreateError>>, SnapshotError> {
        if !(1..=20).contains(&count) {
            return Err(SnapshotError::InvalidCount(count));
        }
        let (template_id, token, metadata, env_vars, allow_internet) = {
            let live = self.live();
            let entry = live
                .get(sandbox_id)
                .ok_or_else(|| SnapshotError::SandboxNotFound(sandbox_id.to_owned()))?;
            let r = &entry.record;
            if r.phase != Phase::Running {
                return Err(SnapshotError::NotRunning(sandbox_id.to_owned()));
            }
            (
                r.template_id.clone(),
                r.access_token.clone(),
                r.metadata.clone(),
                r.env_vars.clone(),
                r.allow_internet,
            )
        };
        let dir = self.snapshots_dir().join(format!(
            ".tmp-fork-{}",
            ids::secret(12).to_ascii_lowercase()
        ));
        self.take_into(sandbox_id, &token, &dir, SnapshotKind::Fork)
            .await?;
        let creates = (0..count).map(|_| {
            self.create(CreateSandbox {
                template_id: template_id.clone(),
                timeout,
                metadata: metadata.clone(),
                env_vars: env_vars.clone(),
                allow_internet,
                boot_from: Some(super::BootFrom::Dir(dir.clone())),
                ..Default::default()
            })
        });
        let forks = futures::future::join_all(creates).await;
        if let Err(e) = warren_vm::snapshot::remove_dir(&dir) {
            tracing::warn!(sandbox_id, error = %e, "cannot remove a fork's snapshot");
        }
        self.collect_garbage().await;
        Ok(forks)
    }
}

/// The published (not `.tmp-`) directories under `root`.
fn subdirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.path())
        .collect()
}

fn write_token(dir: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(TOKEN_FILE))?;
    file.write_all(token.as_bytes())?;
    file.sync_all()
}
