//! The measurements, in the order they run against one source VM `S` (512 MiB by default):
//!
//! 1. freeze, idle guest: `--snapshots` live snapshots of `S`, then one naive save with the
//!    default bandwidth cap and one with it raised. The last live snapshot and the raised
//!    naive save are kept for step 2;
//! 2. create-from-snapshot until `GET /health` answers 204, `--runs` times per path, one VM
//!    at a time; then the same from a standby VM, as the server keeps them (QEMU launched
//!    for the snapshot beforehand, device state loaded, guest run until its agent answered
//!    and paused again: untimed; timed from resuming the guest on, see
//!    `warren_core::standby`);
//! 3. fork 8: one snapshot of `S` plus 8 concurrent restores to agent-ready; the 8 clones
//!    then idle ~2 s and their QEMUs' PSS is read; same for the naive path;
//! 4. freeze with 256 MiB freshly dirtied: a guest process fills a 256 MiB buffer with random
//!    bytes (and keeps it) right before each save, live or naive;
//! 5. freeze again, idle and dirtied, with a source that was itself started from a snapshot,
//!    as every Warren sandbox is (from its template's ready snapshot). Such a VM holds its RAM
//!    as a private mapping of the snapshot file, which QEMU cannot write-track, so its
//!    snapshots take the pre-copy path (see `warren_vm::snapshot`). Live path only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use warren_vm::Vm;
use warren_vm::snapshot::{self, DiskSwitch, RamImage};

use super::lab::{self, Lab};
use super::naive::{self, Bandwidth};
use super::report::{Fork, Freeze, Report, Summary};

/// How long a restored VM's agent may take to answer before the run counts as failed.
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Clones forked at once.
const FORK_WIDTH: usize = 8;
/// How long the forked clones idle before their PSS is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Fills 256 MiB of a guest process's memory with random bytes and keeps it; the previous
/// filler (if any) is killed first. Returns once the buffer is full.
const DIRTY_256: &str = "if [ -f /tmp/fill.pid ]; then kill $(cat /tmp/fill.pid) 2>/dev/null; fi
rm -f /tmp/filled
nohup python3 -c 'import os, time
b = bytearray(256 << 20)
for i in range(0, len(b), 1 << 20):
    b[i:i + (1 << 20)] = os.urandom(1 << 20)
open(\"/tmp/filled\", \"w\").close()
time.sleep(86400)' >/dev/null 2>&1 &
echo $! > /tmp/fill.pid
while [ ! -f /tmp/filled ]; do sleep 0.05; done";

/// The source VM and where its disk chain stands.
struct Source {
    /// Prefix of its disk layers' file names.
    name: &'static str,
    vm: Vm,
    cfg: warren_vm::VmConfig,
    disk: PathBuf,
    layers: u32,
}

impl Source {
    /// The next overlay to move the source onto, and its QEMU node name.
    fn next_layer(&mut self, lab: &Lab) -> (PathBuf, String) {
        self.layers += 1;
        let path = lab::file(lab, &format!("{}-{}.qcow2", self.name, self.layers));
        (path, format!("layer{}", self.layers))
    }
}

/// A snapshot to start clones from: the live snapshot's directory, or the naive file.
enum Saved {
    Live { dir: PathBuf, disk: PathBuf },
    Naive { file: PathBuf, disk: PathBuf },
}

impl Saved {
    fn disk(&self) -> &Path {
        match self {
            Saved::Live { disk, .. } | Saved::Naive { disk, .. } => disk,
        }
    }
}

/// Runs every measurement; `say` reports progress.
pub async fn all(lab: &Lab, runs: u32, snapshots: u32, report: &mut Report) -> anyhow::Result<()> {
    say("booting the source VM (cold boot, TCG: this takes a while)");
    let disk = lab::file(lab, "src-0.qcow2");
    warren_vm::create_overlay(&lab.image().rootfs_qcow2, &disk).await?;
    let cfg = lab.vm_config("src", &disk);
    let vm = Vm::launch(cfg.clone())
        .await
        .context("starting the source")?;
    let mut src = Source {
        name: "src",
        vm,
        cfg,
        disk,
        layers: 0,
    };
    let result = sequence(lab, &mut src, runs, snapshots, report).await;
    let _ = src.vm.kill().await;
    result
}

async fn sequence(
    lab: &Lab,
    src: &mut Source,
    runs: u32,
    snapshots: u32,
    report: &mut Report,
) -> anyhow::Result<()> {
    src.vm
        .wait_agent(Duration::from_secs(300))
        .await
        .context("source agent")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let default_bw = naive::default_bandwidth(&src.vm).await?;
    report.default_bandwidth = default_bw;

    say("(a) freeze, idle guest");
    let (idle, live_snap, naive_file) =
        freeze(lab, src, snapshots, Some(default_bw), false).await?;
    report.freeze_idle = idle;

    say(&format!("(b) restore to agent-ready, {runs} runs per path"));
    let live = live_snap.context("no live snapshot")?;
    let naive_ = naive_file.context("no naive save")?;
    report.restore_live = restore_runs(lab, &live, runs).await;
    report.restore_naive = restore_runs(lab, &naive_, runs).await;
    report.restore_standby = standby_runs(lab, &live, runs).await;

    say("(c)(d) fork 8 and idle PSS");
    report.fork_live = fork(lab, src, true).await?;
    report.fork_naive = fork(lab, src, false).await?;

    say("(a) freeze, 256 MiB freshly dirtied");
    let (dirty, _, _) = freeze(lab, src, snapshots, Some(default_bw), true).await?;
    report.freeze_dirty = dirty;

    say("(a) freeze, source started from a snapshot (idle, then 256 MiB dirtied)");
    let mut restored = restored_source(lab, &live).await?;
    let measured = async {
        let (idle, _, _) = freeze(lab, &mut restored, snapshots, None, false).await?;
        report.freeze_restored_idle = idle;
        let (dirty, _, _) = freeze(lab, &mut restored, snapshots, None, true).await?;
        report.freeze_restored_dirty = dirty;
        anyhow::Ok(())
    }
    .await;
    let _ = restored.vm.kill().await;
    measured
}

/// A VM started from `saved` (a live snapshot) to take snapshots of, once its agent answers.
async fn restored_source(lab: &Lab, saved: &Saved) -> anyhow::Result<Source> {
    let Saved::Live { dir, disk: layer } = saved else {
        anyhow::bail!("a restored source needs a live snapshot");
    };
    let disk = lab::file(lab, "rsrc-0.qcow2");
    warren_vm::create_overlay(layer, &disk).await?;
    let mut cfg = lab.vm_config("rsrc", &disk);
    cfg.memory = warren_vm::MemoryBacking::Private(dir.join(snapshot::MEM_FILE));
    let vm = snapshot::restore(cfg.clone(), dir).await?;
    vm.wait_agent(AGENT_TIMEOUT).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Source {
        name: "rsrc",
        vm,
        cfg,
        disk,
        layers: 0,
    })
}

/// Live snapshots, then (given the default bandwidth) one naive save per bandwidth setting.
/// Returns the figures, the last live snapshot and the raised-bandwidth naive save (only kept
/// when `!dirty`).
async fn freeze(
    lab: &Lab,
    src: &mut Source,
    snapshots: u32,
    default_bw: Option<u64>,
    dirty: bool,
) -> anyhow::Result<(Freeze, Option<Saved>, Option<Saved>)> {
    let mut out = Freeze::default();
    let mut last = None;
    for i in 0..snapshots {
        if dirty {
            lab::exec(&src.vm, DIRTY_256)
                .await
                .context("dirtying guest memory")?;
        }
        let (next, node) = src.next_layer(lab);
        let switch = DiskSwitch {
            current: src.disk.clone(),
            next: next.clone(),
            next_node: node,
        };
        let dir = lab::file(lab, &lab.name("snap"));
        let o = snapshot::take(&src.vm, &src.cfg, &switch, &dir, RamImage::Durable)
            .await
            .context("live snapshot")?;
        src.disk = next;
        say(&format!(
            "  live snapshot {}: frozen {:?}",
            i + 1,
            o.frozen_for
        ));
        out.live.push(o.frozen_for);
        if let Some(Saved::Live { dir, .. }) = last.replace(Saved::Live {
            dir,
            disk: o.frozen_disk,
        }) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let mut kept = None;
    let paths = match default_bw {
        Some(bw) => vec![Bandwidth::Default(bw), Bandwidth::Raised],
        None => Vec::new(),
    };
    for bw in paths {
        if dirty {
            lab::exec(&src.vm, DIRTY_256)
                .await
                .context("dirtying guest memory")?;
        }
        let (next, node) = src.next_layer(lab);
        let file = lab::file(lab, &lab.name("naive"));
        let frozen = naive::save(&src.vm, &file, bw, &src.disk, &next, &node).await?;
        let frozen_disk = std::mem::replace(&mut src.disk, next);
        say(&format!("  naive save ({bw}): frozen {frozen:?}"));
        match bw {
            Bandwidth::Default(_) => {
                out.naive_default = Some(frozen);
                let _ = std::fs::remove_file(&file);
            }
            Bandwidth::Raised => {
                out.naive_raised = Some(frozen);
                kept = Some(Saved::Naive {
                    file,
                    disk: frozen_disk,
                });
            }
        }
    }
    if dirty {
        // Figures only: free the disk space now.
        if let Some(Saved::Live { dir, .. }) = &last {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(Saved::Naive { file, .. }) = &kept {
            let _ = std::fs::remove_file(file);
        }
        let _ = lab::exec(&src.vm, "kill $(cat /tmp/fill.pid)").await;
    }
    Ok((out, last, kept))
}

/// Starts one clone of `saved` and waits for its agent; returns it and the time taken
/// (overlay creation included: creating a sandbox needs one on either path).
async fn clone(lab: &Lab, saved: &Saved) -> anyhow::Result<(Vm, Duration)> {
    let id = lab.name("clone");
    let disk = lab::file(lab, &format!("{id}.qcow2"));
    let cfg = lab.vm_config(&id, &disk);
    let started = Instant::now();
    warren_vm::create_overlay(saved.disk(), &disk).await?;
    let vm = match saved {
        Saved::Live { dir, .. } => snapshot::restore(cfg, dir).await?,
        Saved::Naive { file, .. } => naive::restore(cfg, file).await?,
    };
    if let Err(e) = vm.wait_agent(AGENT_TIMEOUT).await {
        let _ = vm.kill().await;
        return Err(e.into());
    }
    Ok((vm, started.elapsed()))
}

async fn discard(lab: &Lab, vm: Vm) {
    let _ = vm.kill().await;
    let _ = std::fs::remove_dir_all(vm.run_dir());
    let _ = std::fs::remove_file(lab::file(lab, &format!("{}.qcow2", vm.id())));
}

async fn restore_runs(lab: &Lab, saved: &Saved, runs: u32) -> Summary {
    let mut out = Summary::default();
    let path = match saved {
        Saved::Live { .. } => "live",
        Saved::Naive { .. } => "naive",
    };
    for i in 0..runs {
        match clone(lab, saved).await {
            Ok((vm, took)) => {
                say(&format!("  {path} restore {}: {took:?}", i + 1));
                out.push(took);
                discard(lab, vm).await;
            }
            Err(e) => {
                say(&format!("  {path} restore {} failed: {e:#}", i + 1));
                out.failed += 1;
            }
        }
    }
    out
}

/// Restores of `saved` (a live snapshot) through a standby VM: QEMU is launched on a fresh
/// overlay and its device state loaded (not timed: the server does that before the create
/// comes), then the guest is resumed and its agent awaited (timed).
async fn standby_runs(lab: &Lab, saved: &Saved, runs: u32) -> Summary {
    let mut out = Summary::default();
    let Saved::Live { dir, .. } = saved else {
        return out;
    };
    for i in 0..runs {
        let id = lab.name("standby");
        let disk = lab::file(lab, &format!("{id}.qcow2"));
        let attempt = async {
            warren_vm::create_overlay(saved.disk(), &disk).await?;
            let vm = snapshot::prelaunch(lab.vm_config(&id, &disk), dir).await?;
            snapshot::warm(&vm, AGENT_TIMEOUT).await?;
            // The create comes some time later.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let started = Instant::now();
            snapshot::finish(&vm).await?;
            if let Err(e) = vm.wait_agent(AGENT_TIMEOUT).await {
                let _ = vm.kill().await;
                return Err(anyhow::Error::from(e));
            }
            anyhow::Ok((vm, started.elapsed()))
        };
        match attempt.await {
            Ok((vm, took)) => {
                say(&format!("  standby restore {}: {took:?}", i + 1));
                out.push(took);
                discard(lab, vm).await;
            }
            Err(e) => {
                say(&format!("  standby restore {} failed: {e:#}", i + 1));
                out.failed += 1;
                let _ = std::fs::remove_file(&disk);
            }
        }
    }
    out
}

/// Snapshot (live or naive) + 8 concurrent clones to agent-ready, then their idle PSS.
async fn fork(lab: &Lab, src: &mut Source, live: bool) -> anyhow::Result<Fork> {
    let (next, node) = src.next_layer(lab);
    let started = Instant::now();
    let saved = if live {
        let switch = DiskSwitch {
            current: src.disk.clone(),
            next: next.clone(),
            next_node: node,
        };
        let dir = lab::file(lab, &lab.name("fork-snap"));
        let o = snapshot::take(&src.vm, &src.cfg, &switch, &dir, RamImage::InMemory).await?;
        Saved::Live {
            dir,
            disk: o.frozen_disk,
        }
    } else {
        let file = lab::file(lab, &lab.name("fork-naive"));
        let bw = Bandwidth::Raised;
        naive::save(&src.vm, &file, bw, &src.disk, &next, &node).await?;
        Saved::Naive {
            file,
            disk: src.disk.clone(),
        }
    };
    src.disk = next;
    let snapshotted = started.elapsed();
    let results = futures::future::join_all((0..FORK_WIDTH).map(|_| clone(lab, &saved))).await;
    let wall = started.elapsed();
    let mut vms = Vec::new();
    let mut out = Fork::default();
    for r in results {
        match r {
            Ok((vm, _)) => vms.push(vm),
            Err(e) => {
                say(&format!("  fork clone failed: {e:#}"));
                out.failed += 1;
            }
        }
    }
    if out.failed == 0 {
        out.wall = Some(wall);
    }
    say(&format!(
        "  fork 8 ({}): {wall:?} (snapshot {snapshotted:?}), {} failed",
        kind(live),
        out.failed
    ));
    tokio::time::sleep(SETTLE).await;
    let mut pss = Vec::new();
    for vm in &vms {
        // A clone that died while settling has no PSS to report.
        if vm.try_exit().is_none() {
            pss.push(lab::pss_kib(vm.pid())?);
        }
    }
    if !pss.is_empty() {
        let mean = pss.iter().sum::<u64>() as f64 / pss.len() as f64;
        out.pss_mib = Some(mean / 1024.0);
        out.measured = pss.len();
        say(&format!(
            "  PSS per clone ({}): {:.1} MiB",
            kind(live),
            mean / 1024.0
        ));
    }
    for vm in vms {
        discard(lab, vm).await;
    }
    match saved {
        Saved::Live { dir, .. } => {
            let _ = snapshot::remove_dir(&dir);
        }
        Saved::Naive { file, .. } => {
            let _ = std::fs::remove_file(file);
        }
    }
    Ok(out)
}

fn kind(live: bool) -> &'static str {
    if live { "live" } else { "naive" }
}

fn say(msg: &str) {
    eprintln!("bench: {msg}");
}
