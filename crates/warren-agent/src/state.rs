//! State shared by all request handlers: access token, sandbox settings, processes, watchers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::fs::watch::WatcherRegistry;
use crate::host::CpuSample;
use crate::process::ProcessTable;

/// Settings replaced by `POST /init`.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// Required `X-Access-Token`, if any.
    pub access_token: Option<String>,
    /// Environment applied to every process under the per-request envs.
    pub env_vars: BTreeMap<String, String>,
    /// User for requests that name none.
    pub default_user: String,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            access_token: None,
            env_vars: BTreeMap::new(),
            default_user: "user".to_owned(),
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    /// Sandbox-wide settings.
    pub settings: RwLock<SandboxSettings>,
    /// Running processes.
    pub processes: ProcessTable,
    /// Polling watchers (`CreateWatcher`).
    pub watchers: WatcherRegistry,
    /// Previous CPU counters for `/metrics`.
    pub cpu_sample: Mutex<Option<CpuSample>>,
}

impl AppState {
    /// Fresh state.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            settings: RwLock::new(SandboxSettings::default()),
            processes: ProcessTable::default(),
            watchers: WatcherRegistry::default(),
            cpu_sample: Mutex::new(None),
        })
    }

    /// A copy of the current settings.
    pub fn settings(&self) -> SandboxSettings {
        self.settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `presented` (the `X-Access-Token` header) satisfies the current token.
    pub fn token_ok(&self, presented: Option<&str>) -> bool {
        match self.settings().access_token {
            None => true,
            Some(expected) => presented.is_some_and(|p| constant_time_eq(p, &expected)),
        }
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
