//! Server configuration: where state lives, sandbox defaults and limits.
//!
//! The binary builds a [`Config`] from its flags; [`Config::new`] fills every other field
//! with the defaults documented on it, and [`Config::apply_env`] reads the environment
//! overrides that the test scripts use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The envd version advertised to the SDKs (e2b-protocol.md 3.9): the highest version
/// whose features the agent implements.
pub const ENVD_VERSION: &str = "0.5.7";

/// The `clientID` reported for every sandbox; Warren runs on a single host.
pub const CLIENT_ID: &str = "warren";

/// Configuration of the control plane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address `warren serve` listens on (default `127.0.0.1:3000`).
    pub listen: SocketAddr,
    /// SQLite database, the `api-key` file, sandbox run dirs, snapshots.
    pub data_dir: PathBuf,
    /// Images and other content-addressed artefacts shared between servers.
    pub cache_dir: PathBuf,
    /// Timeout of a sandbox created without one (default 300 s).
    pub default_timeout: Duration,
    /// Longest timeout a client may ask for (default 1 h).
    pub max_timeout: Duration,
    /// vCPUs of a sandbox (default 2).
    pub default_vcpus: u32,
    /// Guest memory in MiB (default 512).
    pub default_memory_mb: u32,
    /// Size of the root disk in MiB as reported to clients (default 2048).
    pub default_disk_mb: u32,
    /// The agent binary baked into guest images, if not the one next to the server.
    pub agent_binary: Option<PathBuf>,
    /// How long a new VM's agent may take to answer `/health` (default 120 s, TCG is slow).
    pub boot_timeout: Duration,
    /// An API key accepted in addition to the stored ones (`WARREN_API_KEY`).
    pub static_api_key: Option<String>,
    /// Most sandboxes alive at once (default 64); creating more answers 429.
    pub max_sandboxes: usize,
}

impl Config {
    /// A configuration with defaults for everything but the directories.
    pub fn new(data_dir: PathBuf, cache_dir: PathBuf) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            data_dir,
            cache_dir,
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(3600),
            default_vcpus: 2,
            default_memory_mb: 512,
            default_disk_mb: 2048,
            agent_binary: None,
            boot_timeout: Duration::from_secs(120),
            static_api_key: None,
            max_sandboxes: 64,
        }
    }

    /// Reads `WARREN_API_KEY` (an extra accepted key) when it is set and non-empty.
    pub fn apply_env(mut self) -> Self {
        if let Ok(key) = std::env::var("WARREN_API_KEY")
            && !key.is_empty()
        {
            self.static_api_key = Some(key);
        }
        self
    }

    /// `<data_dir>/warren.db`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("warren.db")
    }

    /// `<data_dir>/sandboxes`, parent of the per-sandbox run dirs.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }

    /// `<data_dir>/snapshots`.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// `<data_dir>/templates`: template build layers, ready snapshots, uploads.
    pub fn templates_dir(&self) -> PathBuf {
        self.data_dir.join("templates")
    }

    /// `<data_dir>/templates/layers/<key>`: disk-only snapshots of build steps.
    pub fn template_layers_dir(&self) -> PathBuf {
        self.templates_dir().join("layers")
    }

    /// `<data_dir>/templates/snapshots/<random>`: ready snapshots of template builds.
    pub fn template_snapshots_dir(&self) -> PathBuf {
        self.templates_dir().join("snapshots")
    }
}
