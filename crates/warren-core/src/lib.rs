//! Warren's control-plane core, independent of HTTP.
//!
//! - [`config`]: server configuration and defaults.
//! - [`store`]: the SQLite state store (sandboxes, API keys, snapshots), versioned schema.
//! - [`api_keys`]: creating, listing, revoking and verifying API keys.
//! - [`lifecycle`]: sandbox phases and the single transition check.
//! - [`runtime`]: the trait the VM layer implements; [`qemu`]: its QEMU implementation.
//! - [`manager`]: the typed command set (create, connect, list, get, kill, timeouts,
//!   metrics, gateway routing), the timeout timer and restart recovery.
//! - [`agent`]: the host's client for the agent's private routes (`/init`, `/metrics`).
//! - [`templates`]: template builds (build VMs are sandboxes), their records and uploads.
//! - [`testing`] (feature `testing`): a fake runtime with stub agents.

pub mod agent;
pub mod api_keys;
pub mod config;
pub mod ids;
pub mod lifecycle;
pub mod manager;
pub mod qemu;
pub mod runtime;
mod standby;
pub mod store;
pub mod templates;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::Config;
pub use manager::SandboxManager;
