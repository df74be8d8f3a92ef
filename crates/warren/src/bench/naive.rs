//! The naive QEMU path the bench compares against: a stock, non-live migration to a file
//! (`stop`, `migrate exec:cat > FILE`, wait for `completed`, `cont`) to save, and a new QEMU
//! with fresh (unshared) memory and `-incoming` loading the whole file to restore.
//!
//! The save also moves the source onto a new disk overlay while it is stopped (a few ms),
//! since a snapshot whose disk kept changing after its memory was saved would not be usable;
//! that switch is counted in the frozen time like everything between `stop` and `cont`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use warren_vm::{MemoryBacking, Qmp, QmpError, Vm, VmConfig};

use super::lab;

/// How long one migration may take before the bench gives up on it.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(180);

/// A migration bandwidth cap: QEMU's default or raised to effectively unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bandwidth {
    /// Whatever `query-migrate-parameters` said before the bench touched anything.
    Default(u64),
    /// 64 GiB/s, what the shared notes call standard practice for local saves.
    Raised,
}

impl Bandwidth {
    fn bytes_per_second(self) -> u64 {
        match self {
            Bandwidth::Default(b) => b,
            Bandwidth::Raised => 64 << 30,
        }
    }
}

impl std::fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bandwidth::Default(b) => write!(f, "default bandwidth cap, {} MiB/s", b >> 20),
            Bandwidth::Raised => f.write_str("raised bandwidth cap"),
        }
    }
}

/// Reads the source's default migration bandwidth cap, before any migration changed it.
pub async fn default_bandwidth(vm: &Vm) -> anyhow::Result<u64> {
    let params = vm.qmp().execute("query-migrate-parameters", None).await?;
    params
        .get("max-bandwidth")
        .and_then(Value::as_u64)
        .context("query-migrate-parameters has no max-bandwidth")
}

/// Saves `vm` to `out` the stock way and moves it onto `next_disk` (an overlay on
/// `current_disk`) during the stop. Returns how long the guest was stopped.
pub async fn save(
    vm: &Vm,
    out: &Path,
    bandwidth: Bandwidth,
    current_disk: &Path,
    next_disk: &Path,
    node: &str,
) -> anyhow::Result<Duration> {
    let q = vm.qmp();
    lab::prepare_overlay(vm, current_disk, next_disk).await?;
    // `snapshot::take` leaves its own settings on the source; undo them.
    let caps = json!({ "capabilities": [
        { "capability": "pause-before-switchover", "state": false },
        { "capability": "x-ignore-shared", "state": false },
        { "capability": "background-snapshot", "state": false },
    ]});
    q.execute("migrate-set-capabilities", Some(caps)).await?;
    let params = json!({
        "max-bandwidth": bandwidth.bytes_per_second(),
        "downtime-limit": 300,
    });
    q.execute("migrate-set-parameters", Some(params)).await?;
    let uri = format!("exec:cat > {}", shell_quote(out));

    q.execute("stop", None)
        .await
        .context("stopping the source")?;
    let stopped = Instant::now();
    let saved = async {
        q.execute("migrate", Some(json!({ "uri": uri }))).await?;
        wait_completed(q).await?;
        lab::switch_disk(vm, next_disk, node).await
    }
    .await;
    let resumed = resume(q).await;
    let frozen = stopped.elapsed();
    saved.context("naive save")?;
    resumed.context("resuming the source after the naive save")?;
    Ok(frozen)
}

/// Starts a VM for `cfg` with fresh memory and loads the saved file `from` into it.
pub async fn restore(mut cfg: VmConfig, from: &Path) -> anyhow::Result<Vm> {
    cfg.memory = MemoryBacking::Fresh;
    cfg.incoming = true;
    let vm = Vm::launch(cfg)
        .await
        .context("starting the incoming QEMU")?;
    let q = vm.qmp();
    let uri = format!("exec:cat {}", shell_quote(from));
    let loaded = async {
        q.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await?;
        wait_completed(q).await?;
        resume(q).await
    }
    .await;
    if let Err(e) = loaded {
        let _ = vm.kill().await;
        return Err(e.context("loading the saved state"));
    }
    Ok(vm)
}

async fn wait_completed(q: &Qmp) -> anyhow::Result<()> {
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let st = q.execute("query-migrate", None).await?;
        match st.get("status").and_then(Value::as_str) {
            Some("completed") => return Ok(()),
            Some(s @ ("failed" | "cancelled")) => {
                let desc = st.get("error-desc").and_then(Value::as_str).unwrap_or("");
                anyhow::bail!("migration {s} {desc}");
            }
            _ if Instant::now() > deadline => anyhow::bail!("migration timed out"),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// `cont`, retried while QEMU finishes a migration's bookkeeping (it refuses for a moment).
async fn resume(q: &Qmp) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        match q.execute("cont", None).await {
            Ok(_) => return Ok(()),
            Err(QmpError::Command { .. }) if tries < 500 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Quotes a path for `sh -c` (QEMU runs `exec:` URIs through the shell).
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}
