//! Rust client for Warren, speaking the same wire protocol as the official E2B SDKs.
//!
//! - [`Client`] — configuration and the control-plane REST calls: create, connect/resume,
//!   list, kill, pause, fork, timeouts, metrics and snapshots (`client`).
//! - [`Sandbox`] — a handle on one sandbox; reaches its envd through the shared sandbox URL
//!   with the `E2b-Sandbox-Id` routing header (`sandbox`).
//! - [`Commands`] / [`Pty`] — processes over Connect RPC (`commands`, `connect`).
//! - [`Files`] — file contents over `/files`, metadata over RPC (`files`).
//! - Templates — [`pack_template`] packs a template file with its build context; `Client`
//!   submits it, follows the build and lists, tags, rebuilds and deletes templates
//!   (`templates`).
//! - [`ClientError`] — every failure, classified by protocol layer (`error`).
//!
//! Wire types (REST models, envd messages, Connect framing) come from `warren_proto`, so the
//! client, the server and the agent agree on them by construction.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren_client::ClientError> {
//! let client = warren_client::Client::from_env();
//! let sandbox = client.create_sandbox(&warren_client::NewSandbox {
//!     template_id: "base".into(),
//!     ..Default::default()
//! }).await?;
//! let out = sandbox.commands().run("echo hi").await?;
//! assert_eq!(out.stdout, "hi\n");
//! sandbox.kill().await?;
//! # Ok(()) }
//! ```

mod client;
mod commands;
mod connect;
mod error;
mod files;
mod models;
mod query;
mod sandbox;
mod templates;

pub use client::{Client, DEFAULT_API_URL, Page};
pub use commands::{CommandEvent, CommandHandle, CommandOutput, Commands, Pty, RunOptions};
pub use error::ClientError;
pub use files::{Files, WriteInfo};
pub use models::{
    ApiError, ForkResult, ListedSandbox, NewSandbox, SandboxDetail, SandboxInfo, SandboxMetric,
    SandboxQuery, SandboxState, SnapshotInfo, SnapshotQuery, StringMap,
};
pub use sandbox::{ENVD_PORT, Sandbox};
pub use templates::{
    ARCHIVE_TEMPLATE_FILE, PackError, copy_sources, pack_definition, pack_template,
};
/// Template wire types.
pub use warren_proto::api::{TemplateBuildStarted, TemplateBuildSummary, TemplateInfo};
/// Connect error codes, as carried by [`ClientError::Rpc`].
pub use warren_proto::connect::ErrorCode;
/// envd messages that appear in this crate's API.
pub use warren_proto::envd::filesystem::{EntryInfo, FileType};
pub use warren_proto::envd::process::{EndEvent, ProcessConfig, ProcessInfo};
pub use warren_template::e2b::{
    AssignedTemplateTags, BuildStatusReason, TemplateBuildInfo, TemplateTag,
};
pub use warren_template::logs::{LogEntry, LogLevel};
pub use warren_template::registry::BuildStatus;
