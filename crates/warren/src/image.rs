//! `warren image build`: builds (or finds in the cache) the guest kernel, initramfs and root
//! disk.
//!
//! Placeholder owned by the lead: the arguments parse, the body is not written yet.

use std::path::PathBuf;

/// Arguments of `warren image build`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// Image cache directory [default: $XDG_CACHE_HOME/warren or ~/.cache/warren].
    #[arg(long, env = "WARREN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Rebuild every layer even if it is cached.
    #[arg(long)]
    pub force: bool,
    /// Debian mirror for debootstrap.
    #[arg(long)]
    pub mirror: Option<String>,
}

/// Builds the base image.
pub async fn build(args: ImageArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("not wired yet")
}
