//! Live snapshots on real VMs (TCG here): a process counting in guest memory keeps counting
//! in VMs restored from the snapshot, disks diverge, and a restored VM can itself be
//! snapshotted. Needs root, QEMU, the cached base image and `target/debug/warren-agent`
//! (built by `cargo test --workspace`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren_image::{ImageOptions, NoProgress};
use warren_proto::connect::{Envelope, EnvelopeDecoder};
use warren_vm::snapshot::{self, DiskSwitch, RamImage};
use warren_vm::{Vm, VmConfig, create_overlay};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

/// Runs `cmd` through the agent's `process.Process/Start` and returns its stdout.
async fn exec(vm: &Vm, cmd: &str) -> String {
    let body = serde_json::json!({
        "process": { "cmd": "/bin/bash", "args": ["-c", cmd] }
    });
    let env = Envelope::json(&body).expect("envelope").encode();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/process.Process/Start", vm.agent_addr()))
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .body(env)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("Start request");
    let bytes: Bytes = resp.bytes().await.expect("Start body");
    let mut dec = EnvelopeDecoder::new(16 << 20);
    dec.push(&bytes);
    let mut out = Vec::new();
    while let Some(e) = dec.next_envelope().expect("valid envelopes") {
        let v: serde_json::Value = serde_json::from_slice(&e.data).expect("json");
        if let Some(s) = v.pointer("/event/data/stdout").and_then(|s| s.as_str()) {
            use base64::Engine as _;
            out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .expect("b64"),
            );
        }
    }
    String::from_utf8(out).expect("utf8")
}

async fn count(vm: &Vm) -> u64 {
    exec(vm, "cat /tmp/count")
        .await
        .trim()
        .parse()
        .expect("a counter value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_continue_from_the_snapshot_and_diverge() {
    let agent = target_dir().join("debug/warren-agent");
    let opts = ImageOptions::new(warren_image::default_cache_dir(), agent);
    let image =
        tokio::task::spawn_blocking(move || warren_image::ensure_base_image(&opts, &NoProgress))
            .await
            .expect("image task")
            .expect("base image");
    let dir = tempfile::tempdir().expect("temp dir");
    // `WARREN_E2E_KEEP=1` keeps the run dirs (console logs, QEMU logs) for post-mortems.
    let kept;
    let d = if std::env::var_os("WARREN_E2E_KEEP").is_some() {
        kept = dir.keep();
        eprintln!("keeping {}", kept.display());
        kept.as_path()
    } else {
        dir.path()
    };
    let _reaper = Reaper(d.to_owned());
    let vm_cfg = |id: &str, disk: &Path| {
        let mut c = VmConfig::new(id, &image.vmlinux, &image.initramfs, disk, d.join(id));
        c.vcpus = std::env::var("T_VCPUS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        c
    };

    // The source: boots, starts a counter in memory (it writes the value out, but only the
    // process's memory knows the next one), and writes a file.
    let src_disk = d.join("src-0.qcow2");
    create_overlay(&image.rootfs_qcow2, &src_disk)
        .await
        .expect("overlay");
    let src_cfg = vm_cfg("src", &src_disk);
    let src = Vm::launch(src_cfg.clone()).await.expect("launch source");
    src.wait_agent(Duration::from_secs(120))
        .await
        .expect("source agent");
    exec(
        &src,
        // (written to a temporary file and renamed, so that a reader never sees it empty)
        "nohup python3 -c 'import os,time\nn=0\nwhile True:\n n+=1\n \
         open(\"/tmp/c.tmp\",\"w\").write(str(n))\n os.replace(\"/tmp/c.tmp\",\"/tmp/count\")\n \
         time.sleep(0.05)' >/dev/null 2>&1 &",
    )
    .await;
    exec(&src, "echo before > /home/user/f; sync").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let snap_dir = d.join("snap1");
    let switch = DiskSwitch {
        current: src_disk.clone(),
        next: d.join("src-1.qcow2"),
        next_node: "disk1".into(),
    };
    let before = count(&src).await;
    let outcome = snapshot::take(&src, &src_cfg, &switch, &snap_dir, RamImage::Durable)
        .await
        .expect("snapshot");
    let after = count(&src).await;
    eprintln!(
        "snapshot: frozen {:?}, total {:?}, mem {} bytes, devstate {} bytes",
        outcome.frozen_for, outcome.total, outcome.memory.size, outcome.devstate.size
    );
    assert!(
        after > before,
        "the source keeps running after the snapshot"
    );
    assert_eq!(outcome.memory.size, 512 << 20);
    // The source writes to its new overlay; the frozen layer stays as it was.
    exec(&src, "echo source-after > /home/user/f; sync").await;

    let mut clones = Vec::new();
    for i in 0..2 {
        let disk = d.join(format!("clone{i}.qcow2"));
        create_overlay(&outcome.frozen_disk, &disk)
            .await
            .expect("clone overlay");
        let started = Instant::now();
        let vm = snapshot::restore(vm_cfg(&format!("clone{i}"), &disk), &snap_dir)
            .await
            .expect("restore");
        vm.wait_agent(Duration::from_secs(30))
            .await
            .expect("clone agent");
        eprintln!("clone {i} answered after {:?}", started.elapsed());
        clones.push(vm);
    }
    for (i, vm) in clones.iter().enumerate() {
        let c = count(vm).await;
        // It continues from the snapshot's value, not from zero.
        assert!(
            c >= before && c < before + 400,
            "clone {i} counter {c}, source was {before}"
        );
        assert_eq!(
            exec(vm, "cat /home/user/f").await,
            "before\n",
            "clone {i} file"
        );
    }
    exec(&clones[0], "echo clone0 > /home/user/f; sync").await;
    assert_eq!(exec(&clones[1], "cat /home/user/f").await, "before\n");
    assert_eq!(exec(&src, "cat /home/user/f").await, "source-after\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c0 = count(&clones[0]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(count(&clones[0]).await > c0, "the clone's counter runs on");

    // A restored VM can be snapshotted in turn (its RAM is a private mapping).
    let clone_disk = d.join("clone0.qcow2");
    let switch = DiskSwitch {
        current: clone_disk.clone(),
        next: d.join("clone0-1.qcow2"),
        next_node: "disk1".into(),
    };
    let clone_cfg = vm_cfg("clone0", &clone_disk);
    // Deep enough that the recorder's run dir (`<snap2>/recorder`) is too long a path for a
    // Unix socket: its QMP socket must move elsewhere and still work.
    let snap2 = d.join(format!("snap2-{}", "deep".repeat(25)));
    let second = snapshot::take(&clones[0], &clone_cfg, &switch, &snap2, RamImage::Durable)
        .await
        .expect("snapshot of a clone");
    let disk = d.join("grandchild.qcow2");
    create_overlay(&second.frozen_disk, &disk)
        .await
        .expect("overlay");
    let grandchild = snapshot::restore(vm_cfg("grandchild", &disk), &snap2)
        .await
        .expect("restore the second snapshot");
    grandchild
        .wait_agent(Duration::from_secs(30))
        .await
        .expect("grandchild agent");
    assert_eq!(exec(&grandchild, "cat /home/user/f").await, "clone0\n");
    assert!(count(&grandchild).await >= c0);

    for vm in clones.iter().chain([&src, &grandchild]) {
        vm.kill().await.expect("kill");
    }
}

/// Kills every QEMU whose command line names the test's directory, even when the test panics.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let needle = self.0.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.starts_with("qemu-system") && cmd.contains(&needle) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}
