//! `warren serve`: runs the control plane and the envd gateway.
//!
//! Placeholder owned by the lead: the arguments are final enough for the CLI to parse, the
//! body is not written yet.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `warren serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for the REST API and the envd gateway.
    #[arg(long, default_value = "127.0.0.1:3000", env = "WARREN_LISTEN")]
    pub listen: SocketAddr,
    /// State directory (database, API key, sandboxes, snapshots)
    /// [default: $XDG_DATA_HOME/warren or ~/.local/share/warren].
    #[arg(long, env = "WARREN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Image cache directory [default: $XDG_CACHE_HOME/warren or ~/.cache/warren].
    #[arg(long, env = "WARREN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// Runs the server until it is stopped.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("not wired yet")
}
