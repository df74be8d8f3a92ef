//! Starting a VM from a snapshot: a new QEMU whose RAM is the snapshot's `mem` mapped
//! privately (pages come from the page cache that every clone shares, and are copied only
//! when written), waiting for an incoming migration; the device state is loaded from
//! `devstate` (saved without RAM, hence `x-ignore-shared`), and the guest is resumed.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::migration::{cont, describe};
use super::{DEVSTATE_FILE, MEM_FILE, MIGRATION_TIMEOUT};
use crate::config::{MemoryBacking, VmConfig};
use crate::error::LaunchError;
use crate::qmp::QmpError;
use crate::vm::Vm;

/// Why a VM could not be started from a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// QEMU did not start.
    #[error("starting the VM")]
    Launch(#[source] LaunchError),
    /// A QMP command failed; `step` names the stage.
    #[error("restore step `{step}` failed")]
    Qmp {
        /// The stage of the protocol.
        step: &'static str,
        /// The QMP failure.
        #[source]
        source: QmpError,
    },
    /// Loading the device state ended in a state other than `completed`.
    #[error("loading the device state ended as {status}")]
    Migration {
        /// QEMU's final status.
        status: String,
    },
    /// Loading the device state did not finish in time.
    #[error("loading the device state timed out")]
    Timeout,
    /// The guest's agent did not answer while the VM was being warmed up.
    #[error("warming up: the agent did not answer")]
    Warm(#[source] crate::error::AgentWaitError),
}

/// Starts a VM from the snapshot in `dir`. `cfg` must describe the same machine as the
/// snapshot's source (same vCPUs, memory, kernel, initramfs, command line); its root disk
/// must be a new overlay on the snapshot's disk layer. Returns once the guest runs; the
/// caller then waits for the agent and re-initialises it.
pub async fn restore(cfg: VmConfig, dir: &Path) -> Result<Vm, RestoreError> {
    let started = Instant::now();
    let vm = prelaunch(cfg, dir).await?;
    let loaded = started.elapsed();
    finish(&vm).await?;
    tracing::debug!(?loaded, total = ?started.elapsed(), "restored");
    Ok(vm)
}

/// The first part of [`restore`]: starts QEMU for the snapshot in `dir` and loads its
/// device state, leaving the guest paused; [`finish`] resumes it. Starting QEMU and loading
/// the state are a third of a restore's time (dynamic linking and machine set-up, 25-40 ms
/// here), so a VM prelaunched ahead of demand lets a sandbox start without them. The guest's
/// clock does not advance while it waits: QEMU's virtual clock only runs with the guest.
pub async fn prelaunch(mut cfg: VmConfig, dir: &Path) -> Result<Vm, RestoreError> {
    cfg.memory = MemoryBacking::Private(dir.join(MEM_FILE));
    cfg.incoming = true;
    cfg.incoming_state = Some(dir.join(DEVSTATE_FILE));
    let vm = Vm::launch(cfg).await.map_err(RestoreError::Launch)?;
    if let Err(e) = load(&vm).await {
        let _ = vm.kill().await;
        return Err(e);
    }
    Ok(vm)
}

/// The second part of [`restore`]: resumes the guest of a VM from [`prelaunch`]. On failure
/// the VM is killed.
pub async fn finish(vm: &Vm) -> Result<(), RestoreError> {
    if let Err(source) = cont(vm.qmp()).await {
        let _ = vm.kill().await;
        return Err(RestoreError::Qmp {
            step: "resume",
            source,
        });
    }
    Ok(())
}

/// Runs the guest of a VM from [`prelaunch`] until its agent answers, then pauses it again,
/// for a VM kept ahead of demand. Why: under TCG the restored guest's first answer takes
/// 70-90 ms, nearly all of it QEMU translating the guest code that answers (its network
/// stack, the agent) — afresh in every QEMU process, since translations live in the
/// process. They survive a pause, so a warmed VM's agent answers [`finish`] in a few
/// milliseconds. The guest runs for that one request: its processes go on for a few
/// hundred milliseconds of guest time before the sandbox is handed out, as if it had
/// started that much earlier. On failure the VM is killed.
pub async fn warm(vm: &Vm, timeout: Duration) -> Result<(), RestoreError> {
    let map = |step| move |source| RestoreError::Qmp { step, source };
    let warmed = async {
        cont(vm.qmp()).await.map_err(map("warm: resume"))?;
        vm.wait_agent(timeout).await.map_err(RestoreError::Warm)?;
        vm.qmp()
            .execute("stop", None)
            .await
            .map_err(map("warm: pause"))?;
        Ok(())
    }
    .await;
    if warmed.is_err() {
        let _ = vm.kill().await;
    }
    warmed
}

async fn load(vm: &Vm) -> Result<(), RestoreError> {
    let q = vm.qmp();
    let map = |step| move |source| RestoreError::Qmp { step, source };
    let caps = json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] });
    q.execute("migrate-set-capabilities", Some(caps))
        .await
        .map_err(map("capabilities"))?;
    // The device state file is QEMU's descriptor 3 (`incoming_state`).
    let uri = format!("fd:{}", crate::cmdline::INCOMING_FD);
    q.execute("migrate-incoming", Some(json!({ "uri": uri })))
        .await
        .map_err(map("load devices"))?;
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let st = q
            .execute("query-migrate", None)
            .await
            .map_err(map("load devices"))?;
        match st.get("status").and_then(Value::as_str) {
            Some("completed") => break,
            Some("failed") | Some("cancelled") => {
                return Err(RestoreError::Migration {
                    status: describe(&st),
                });
            }
            _ if Instant::now() > deadline => return Err(RestoreError::Timeout),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    // The capability must not leak into this VM's own snapshots (see `record`).
    let caps = json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": false }] });
    q.execute("migrate-set-capabilities", Some(caps))
        .await
        .map_err(map("reset capabilities"))?;
    Ok(())
}
