//! The sandbox manager: the one command set behind the REST API, the CLI and the gateway.
//!
//! Each command is a method taking a typed request ([`CreateSandbox`], a timeout, a list
//! filter...) and returning a typed error with an [`ErrorKind`]. Live sandboxes sit in an
//! in-memory table (mirrored to the store), guarded by a plain mutex that is never held
//! across an await: a command takes the lock, checks the transition with
//! [`lifecycle::check`], writes the new phase, releases the lock and then does the slow part
//! (VM, agent, disk). The modules split the commands by concern:
//! - `create`: create and the post-boot `/init` handshake.
//! - `stop`: kill, the timeout timer (one task, woken when a deadline moves) and the VM-exit
//!   watchers; all three end in the same teardown.
//! - `recovery`: adopting or cleaning up what a previous server process left behind.
//! - `query`: list (filters and cursor pagination), get, connect, set timeout, metrics and
//!   gateway routing.
//!
//! - `snapshot`: live snapshots (create, list, delete), starting from one, and fork.
//! - `pause`: pause (a snapshot kept with the sandbox, then no VM) and resume from it.

mod create;
mod errors;
mod pause;
mod query;
mod recovery;
mod snapshot;
mod stop;
mod templates;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use warren_proto::api::StringMap;

use crate::agent::AgentClient;
use crate::config::Config;
use crate::lifecycle;
use crate::runtime::Runtime;
use crate::store::{SandboxRecord, Store};

pub use errors::{
    ConnectError, CreateError, ErrorKind, InvalidTimeout, KillError, ListError, MetricsError,
    PauseError, RouteError, SetTimeoutError, StartError,
};
pub use query::{DEFAULT_LIST_LIMIT, ListFilter, ListOrder, ListPage, MAX_LIST_LIMIT, Route};
pub use snapshot::{SnapshotError, SnapshotFilter};
pub use templates::TemplateSource;

/// Create command (from `POST /v2/sandboxes` or the CLI).
#[derive(Debug, Clone, Default)]
pub struct CreateSandbox {
    pub template_id: String,
    /// Seconds; `None` = the configured default.
    pub timeout: Option<i64>,
    pub metadata: StringMap,
    pub env_vars: StringMap,
    pub allow_internet: Option<bool>,
    pub auto_pause: bool,
    pub auto_resume: bool,
    /// Template builds and forks: where to boot from instead of resolving `template_id`.
    pub boot_from: Option<BootFrom>,
    /// vCPUs; `None` = the template's default, else the configured default.
    pub vcpus: Option<u32>,
    /// Memory in MiB; `None` = the template's default, else the configured default.
    pub memory_mb: Option<u32>,
}

/// An explicit boot source (template builds boot on cached layers that are not templates).
#[derive(Debug, Clone)]
pub enum BootFrom {
    /// Cold boot of the base image.
    Image,
    /// A snapshot or disk-layer directory (cold boot when it has no memory image).
    Dir(std::path::PathBuf),
}

/// Why a sandbox is being torn down, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Killed,
    TimedOut,
    VmExited,
    Shutdown,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            StopReason::Killed => "killed",
            StopReason::TimedOut => "timeout",
            StopReason::VmExited => "vm exited",
            StopReason::Shutdown => "server shutdown",
        }
    }
}

/// What [`SandboxManager::shutdown`] does with running sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Kill every sandbox and remove its record (nothing survives the server).
    KillAll,
    /// Leave VMs running; the next server adopts them through restart recovery.
    Detach,
}

/// A live sandbox in memory.
struct Live {
    record: SandboxRecord,
    agent: Option<SocketAddr>,
    watcher: Option<AbortHandle>,
}

struct Inner {
    config: Config,
    store: Store,
    runtime: Arc<dyn Runtime>,
    agent: AgentClient,
    live: Mutex<HashMap<String, Live>>,
    /// Wakes the timeout timer when a deadline is added or moved.
    deadlines_changed: Notify,
    timer: Mutex<Option<AbortHandle>>,
}

/// Handle to the manager; cheap to clone.
#[derive(Clone)]
pub struct SandboxManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SandboxManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxManager").finish_non_exhaustive()
    }
}

impl SandboxManager {
    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store (API keys, snapshots).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether `key` is an accepted API key (runs the lookup on the blocking pool).
    pub async fn verify_api_key(&self, key: &str) -> Result<bool, crate::api_keys::ApiKeyError> {
        let store = self.inner.store.clone();
        let static_key = self.inner.config.static_api_key.clone();
        let key = key.to_owned();
        store
            .call(move |s| Ok(crate::api_keys::verify(s, static_key.as_deref(), &key)))
            .await?
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        // Every critical section only edits the map, so a poisoned lock holds consistent data.
        self.inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Validates a timeout in seconds against the configured maximum.
    fn check_timeout(&self, requested: i64) -> Result<chrono::Duration, InvalidTimeout> {
        let max = self.inner.config.max_timeout.as_secs();
        if requested < 1 || u64::try_from(requested).map_or(true, |r| r > max) {
            return Err(InvalidTimeout { requested, max });
        }
        Ok(chrono::Duration::seconds(requested))
    }
}

/// Current time, truncated to microseconds as stored.
fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Checks a transition for a live sandbox and applies it in memory.
fn transition(
    live: &mut Live,
    t: lifecycle::Transition,
) -> Result<lifecycle::Phase, lifecycle::TransitionError> {
    let to = lifecycle::check(live.record.phase, t)?;
    live.record.phase = to;
    Ok(to)
}

#[cfg(test)]
mod pause_tests;
#[cfg(test)]
mod template_tests;
#[cfg(test)]
mod tests;
