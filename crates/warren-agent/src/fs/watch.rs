//! Directory watches (`WatchDir` streams and polling `CreateWatcher` watchers) via inotify.
//!
//! notify's inotify events are mapped to envd's event types: creations to CREATE, data
//! changes to WRITE, metadata changes to CHMOD, deletions to REMOVE, the old name of a
//! rename to RENAME and the new name to CREATE (as Go's fsnotify reports them). Names are
//! relative to the watched directory. Events go through a bounded queue of
//! [`EVENT_QUEUE`]; when a consumer falls behind, further events are dropped (and counted
//! in a debug log) rather than buffered without limit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use warren_proto::envd::filesystem::{EventType, FilesystemEvent};

use super::entry_info;

/// Events queued per watch.
pub const EVENT_QUEUE: usize = 4096;

/// An active watch; dropping it stops watching.
pub struct DirWatch {
    _watcher: RecommendedWatcher,
    /// Mapped events.
    pub events: mpsc::Receiver<FilesystemEvent>,
}

/// Why a watch could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Creating the inotify instance failed.
    #[error("creating the watcher")]
    Create(#[source] notify::Error),
    /// Adding the directory failed.
    #[error("watching {0}")]
    Add(PathBuf, #[source] notify::Error),
}

fn map_kind(kind: &EventKind) -> Option<EventType> {
    Some(match kind {
        EventKind::Create(_) => EventType::Create,
        EventKind::Remove(_) => EventType::Remove,
        EventKind::Modify(ModifyKind::Metadata(_)) => EventType::Chmod,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => EventType::Create,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return None,
        EventKind::Modify(ModifyKind::Name(_)) => EventType::Rename,
        EventKind::Modify(_) => EventType::Write,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => return None,
    })
}

/// Starts watching `dir` (which must be an existing directory).
pub fn watch(dir: &Path, recursive: bool, include_entry: bool) -> Result<DirWatch, WatchError> {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let root = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        let Some(event_type) = map_kind(&event.kind) else {
            return;
        };
        for path in &event.paths {
            let name = path
                .strip_prefix(&root)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned();
            let entry = if include_entry {
                entry_info(path).ok()
            } else {
                None
            };
            let ev = FilesystemEvent {
                name,
                event_type,
                entry,
            };
            if tx.try_send(ev).is_err() {
                tracing::debug!("watch consumer is behind; dropping an event");
            }
        }
    })
    .map_err(WatchError::Create)?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher
        .watch(dir, mode)
        .map_err(|e| WatchError::Add(dir.to_path_buf(), e))?;
    Ok(DirWatch {
        _watcher: watcher,
        events: rx,
    })
}

/// Watchers created by `CreateWatcher`, polled by `GetWatcherEvents`.
#[derive(Default)]
pub struct WatcherRegistry {
    watchers: Mutex<HashMap<String, DirWatch>>,
}

impl WatcherRegistry {
    /// Stores a watch and returns its id.
    pub fn insert(&self, watch: DirWatch) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        self.lock().insert(id.clone(), watch);
        id
    }

    /// Drains the pending events of a watcher; `None` for an unknown id.
    pub fn drain(&self, id: &str) -> Option<Vec<FilesystemEvent>> {
        let mut watchers = self.lock();
        let watch = watchers.get_mut(id)?;
        let mut events = Vec::new();
        while let Ok(ev) = watch.events.try_recv() {
            events.push(ev);
        }
        Some(events)
    }

    /// Removes a watcher; false for an unknown id.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DirWatch>> {
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
