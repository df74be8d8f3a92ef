//! `warren bench snapshot`: measures live snapshots and clones started from them against the
//! naive QEMU path (stop + migrate to a file + cont; a fresh QEMU loading the whole file),
//! in one run on real VMs. See `measure` for what is measured in which order.
//!
//! Every VM runs in a temporary directory under /var/tmp; the [`lab::Lab`] guard kills every
//! QEMU started there when the run ends, fails, or is interrupted with Ctrl-C.

mod lab;
mod measure;
mod naive;
mod report;

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `warren bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Measures snapshot and restore of a sandbox, beside the naive QEMU path.
    Snapshot {
        /// Restores per path for the create-from-snapshot latency.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Live snapshots per guest memory state for the freeze time.
        #[arg(long, default_value_t = 5)]
        snapshots: u32,
        /// Guest RAM, MiB.
        #[arg(long, default_value_t = 512)]
        memory_mib: u64,
        /// Also write the results as JSON to this file (`--json` is the global flag).
        #[arg(long = "json-out", value_name = "PATH")]
        json_path: Option<PathBuf>,
        /// Image cache directory [default: $XDG_CACHE_HOME/warren or ~/.cache/warren].
        #[arg(long, env = "WARREN_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
}

/// Runs the chosen benchmark.
pub async fn run(args: BenchArgs, json: bool) -> anyhow::Result<()> {
    let BenchCommand::Snapshot {
        runs,
        snapshots,
        memory_mib,
        json_path,
        cache_dir,
    } = args.command;
    anyhow::ensure!(
        runs > 0 && snapshots > 0,
        "--runs and --snapshots must be positive"
    );
    let cache_dir = cache_dir.unwrap_or_else(warren_image::default_cache_dir);
    eprintln!("bench: preparing the guest image");
    let image = crate::image::ensure(cache_dir, None, Box::new(warren_image::NoProgress)).await?;
    let lab = lab::Lab::new(image, memory_mib, 2)?;
    let mut report = report::Report {
        memory_mib,
        vcpus: lab.vcpus,
        runs,
        snapshots,
        ..report::Report::default()
    };
    let measured = tokio::select! {
        r = measure::all(&lab, runs, snapshots, &mut report) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // The guard kills whatever QEMU is left (an interrupted restore, a recorder) and removes
    // the directory, before the results are printed or the error returned.
    drop(lab);
    measured?;

    let value = report.to_json();
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&value)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{value}");
    } else {
        println!("{}", report.table());
    }
    Ok(())
}
