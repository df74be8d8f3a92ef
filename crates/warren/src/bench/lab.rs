//! The bench's workbench: a temporary directory holding every VM's run dir and disk, a reaper
//! that kills every QEMU started under it when dropped (error, panic or Ctrl-C included), and
//! the small helpers both paths use: running a command in a guest, reading a QEMU process's
//! PSS, and moving a running VM onto a new disk overlay.
//!
//! Every QEMU the bench starts (sources, clones, the snapshot recorder that `snapshot::take`
//! starts internally) has its run dir below the lab directory, so "a `qemu-system` process
//! whose command line names the lab directory" identifies exactly our processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use warren_image::BaseImage;
use warren_proto::connect::{Envelope, EnvelopeDecoder};
use warren_vm::{Vm, VmConfig};

/// The temporary directory, the image and the VM shape shared by all runs.
pub struct Lab {
    dir: tempfile::TempDir,
    image: BaseImage,
    /// Guest RAM of every VM, MiB.
    pub memory_mib: u64,
    /// vCPUs of every VM.
    pub vcpus: u32,
    counter: std::sync::atomic::AtomicU32,
}

impl Lab {
    pub fn new(image: BaseImage, memory_mib: u64, vcpus: u32) -> anyhow::Result<Lab> {
        // Not /tmp: RAM images and migration streams are hundreds of MiB each.
        let dir = tempfile::Builder::new()
            .prefix("warren-bench-")
            .tempdir_in("/var/tmp")
            .context("creating the bench's temporary directory")?;
        Ok(Lab {
            dir,
            image,
            memory_mib,
            vcpus,
            counter: std::sync::atomic::AtomicU32::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn image(&self) -> &BaseImage {
        &self.image
    }

    /// A fresh name `prefix-N`, unique within the lab.
    pub fn name(&self, prefix: &str) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}-{n}")
    }

    /// The config of a VM `id` on `disk`, its run dir inside the lab.
    pub fn vm_config(&self, id: &str, disk: &Path) -> VmConfig {
        let mut cfg = VmConfig::new(
            id,
            &self.image.vmlinux,
            &self.image.initramfs,
            disk,
            self.path().join("run").join(id),
        );
        cfg.memory_mib = self.memory_mib;
        cfg.vcpus = self.vcpus;
        cfg
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let killed = kill_qemus_under(self.path());
        if killed > 0 {
            eprintln!("bench: killed {killed} leftover QEMU process(es)");
        }
        // QEMU must be gone before its files are removed (TempDir's drop follows).
        std::thread::sleep(Duration::from_millis(200));
        // A fork snapshot interrupted midway keeps its RAM image in tmpfs, outside the lab.
        let dirs = std::fs::read_dir(self.path())
            .into_iter()
            .flatten()
            .flatten();
        for dir in dirs.filter(|e| e.path().is_dir()) {
            let _ = warren_vm::snapshot::remove_dir(&dir.path());
        }
    }
}

/// SIGKILLs every `qemu-system` process whose command line mentions `dir`; returns how many.
pub fn kill_qemus_under(dir: &Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw);
        let argv0 = cmdline.split('\0').next().unwrap_or_default();
        if argv0.contains("qemu-system") && cmdline.contains(&needle) {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
    }
    killed
}

/// Runs `cmd` with bash in the guest through the agent's `process.Process/Start` and waits
/// for it to end; fails on a non-zero exit code.
pub async fn exec(vm: &Vm, cmd: &str) -> anyhow::Result<()> {
    let body = json!({ "process": { "cmd": "/bin/bash", "args": ["-c", cmd] } });
    let envelope = Envelope::json(&body)?.encode();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/process.Process/Start", vm.agent_addr()))
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .body(envelope)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .with_context(|| format!("starting `{cmd}` in the guest"))?;
    let bytes = resp
        .bytes()
        .await
        .with_context(|| format!("reading the output of `{cmd}`"))?;
    let mut dec = EnvelopeDecoder::new(64 << 20);
    dec.push(&bytes);
    while let Some(env) = dec.next_envelope()? {
        if env.is_end_stream() {
            let end: Value = serde_json::from_slice(&env.data)?;
            anyhow::ensure!(end.get("error").is_none(), "`{cmd}` failed: {end}");
            continue;
        }
        let msg: Value = serde_json::from_slice(&env.data)?;
        if let Some(end) = msg.pointer("/event/end") {
            // proto3 JSON leaves a zero exit code out.
            let code = end.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
            anyhow::ensure!(code == 0, "`{cmd}` exited with {code}");
            return Ok(());
        }
    }
    anyhow::bail!("`{cmd}`: the agent's stream ended without an end event")
}

/// The proportional set size of process `pid`, in KiB (from `smaps_rollup`).
pub fn pss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no Pss line in {path}"))
}

/// Creates `next`, a qcow2 overlay on `current` (not opened: the VM holds its lock), as big
/// as the VM's root disk.
pub async fn prepare_overlay(vm: &Vm, current: &Path, next: &Path) -> anyhow::Result<()> {
    let blocks = vm.qmp().execute("query-block", None).await?;
    let size = blocks
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|b| {
            b.pointer("/inserted/image/virtual-size")
                .and_then(Value::as_u64)
        })
        .context("query-block shows no root disk size")?;
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b"])
        .arg(current)
        .arg(next)
        .arg(size.to_string())
        .output()
        .await
        .context("running qemu-img")?;
    anyhow::ensure!(
        out.status.success(),
        "qemu-img create failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Puts the prepared overlay `next` on top of the VM's root disk (the VM should be stopped
/// so the layer below is frozen at the same instant as its memory).
pub async fn switch_disk(vm: &Vm, next: &Path, node: &str) -> anyhow::Result<()> {
    let q = vm.qmp();
    let blocks = q.execute("query-block", None).await?;
    let top = blocks
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|b| b.pointer("/inserted/node-name").and_then(Value::as_str))
        .context("query-block shows no root disk")?
        .to_owned();
    let add = json!({
        "driver": "qcow2",
        "node-name": node,
        "file": { "driver": "file", "filename": next },
        "backing": Value::Null,
    });
    q.execute("blockdev-add", Some(add)).await?;
    let snap = json!({ "node": top, "overlay": node });
    q.execute("blockdev-snapshot", Some(snap)).await?;
    Ok(())
}

/// Path of a file named `name` in the lab.
pub fn file(lab: &Lab, name: &str) -> PathBuf {
    lab.path().join(name)
}
