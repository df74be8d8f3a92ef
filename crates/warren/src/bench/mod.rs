//! `warren bench`: benchmarks of a running server.
//!
//! Placeholder owned by the lead: the arguments parse, the body is not written yet.

use std::path::PathBuf;

/// Arguments of `warren bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Measures snapshot and restore of a sandbox.
    Snapshot {
        /// Repetitions.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Also write the results as JSON to this file (`--json` is the global flag).
        #[arg(long = "json-out", value_name = "PATH")]
        json_path: Option<PathBuf>,
    },
}

/// Runs the chosen benchmark.
pub async fn run(args: BenchArgs, json: bool) -> anyhow::Result<()> {
    let _ = (args, json);
    anyhow::bail!("not wired yet")
}
