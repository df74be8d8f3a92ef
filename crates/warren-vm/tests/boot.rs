//! Boots real VMs from the cached base image under the accelerator the probe picks (TCG on
//! the development hosts). Needs root, QEMU and the packages of scripts/install-deps.sh; the
//! first run builds the image (about 2 minutes), later runs reuse it from the cache
//! (`WARREN_CACHE_DIR` or the default of CONTRACTS.md).
//!
//! The guest agent is `target/debug/warren-agent` if it answers `GET /health` when started on
//! the host; otherwise a Python stand-in that only answers `/health` is put in the image. The
//! stand-in exists only in this test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use warren_image::{ImageOptions, LogProgress};
use warren_vm::{Accel, Vm, VmConfig};

const STAND_IN: &str = r#"#!/usr/bin/python3
# Test stand-in for warren-agent: answers GET /health with 204 on the agent port.
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(204 if self.path == "/health" else 404)
        self.end_headers()
http.server.ThreadingHTTPServer(("0.0.0.0", 49983), H).serve_forever()
"#;

fn workspace_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

/// True if `bin --listen 127.0.0.1:<port>` answers `GET /health` with 204 within 3 s.
async fn serves_health(bin: &Path) -> bool {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port());
    let Ok(port) = port else { return false };
    let Ok(mut child) = tokio::process::Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    else {
        return false;
    };
    let url = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut ok = false;
    while Instant::now() < deadline && !ok {
        ok = reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().as_u16() == 204);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill().await;
    ok
}

/// A stable copy of the agent to put in the image (the real one if usable).
async fn agent_binary(dir: &Path) -> PathBuf {
    let real = workspace_target().join("debug/warren-agent");
    let dest = dir.join("warren-agent");
    if real.exists() && serves_health(&real).await {
        std::fs::copy(&real, &dest).expect("copy agent");
        eprintln!("using the real agent {}", real.display());
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&dest, STAND_IN).expect("write stand-in");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        eprintln!("target/debug/warren-agent does not serve /health: using the stand-in");
    }
    dest
}

async fn image(dir: &Path) -> warren_image::BaseImage {
    let opts = ImageOptions::new(warren_image::default_cache_dir(), agent_binary(dir).await);
    let started = Instant::now();
    let image =
        tokio::task::spawn_blocking(move || warren_image::ensure_base_image(&opts, &LogProgress))
            .await
            .expect("join")
            .expect("image");
    eprintln!("image ready in {:.1} s", started.elapsed().as_secs_f64());
    image
}

async fn config(name: &str, dir: &Path, image: &warren_image::BaseImage) -> VmConfig {
    let disk = dir.join(format!("{name}.qcow2"));
    warren_vm::create_overlay(&image.rootfs_qcow2, &disk)
        .await
        .expect("overlay");
    let mut cfg = VmConfig::new(name, &image.vmlinux, &image.initramfs, disk, dir.join(name));
    cfg.accel = warren_vm::probe_accel(&image.vmlinux, &image.initramfs).await;
    cfg
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// No QEMU process may mention this test's directory.
fn assert_no_qemu_under(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("qemu-system") && cmdline.contains(&needle) {
            let pid: u32 = entry.file_name().to_string_lossy().parse().unwrap_or(0);
            assert!(!alive(pid), "QEMU {pid} still running: {cmdline}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_to_agent_health_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = image(dir.path()).await;
    let probe_started = Instant::now();
    let cfg = config("boot", dir.path(), &image).await;
    eprintln!(
        "accel {:?} (probe {:.1} s)",
        cfg.accel,
        probe_started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let vm = Vm::launch(cfg).await.expect("launch");
    let ready = vm.wait_agent(Duration::from_secs(90)).await;
    let boot = started.elapsed();
    if let Err(e) = ready {
        let _ = vm.kill().await;
        panic!("agent not ready: {e}");
    }
    eprintln!("cold boot to /health = 204: {:.2} s", boot.as_secs_f64());

    let status = reqwest::get(format!("http://{}/health", vm.agent_addr()))
        .await
        .expect("get");
    assert_eq!(status.status().as_u16(), 204);
    let console = std::fs::read_to_string(vm.console_log()).expect("console.log");
    assert!(
        console.contains("warren-init: starting warren-agent"),
        "console: {console}"
    );
    let state = vm
        .qmp()
        .execute("query-status", None)
        .await
        .expect("query-status");
    assert_eq!(state["status"], "running");

    let pid = vm.pid();
    let exit = vm.stop(Duration::from_secs(5)).await.expect("stop");
    eprintln!("QEMU ended with {exit}");
    assert_eq!(exit.code, Some(0), "quit should end QEMU normally");
    assert!(!alive(pid));
    assert_no_qemu_under(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattaches_after_the_owner_lets_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = image(dir.path()).await;
    let mut cfg = config("attach", dir.path(), &image).await;
    cfg.allow_internet = false;
    let run_dir = cfg.run_dir.clone();
    let vm = Vm::launch(cfg).await.expect("launch");
    // restrict=on cuts the guest off but must keep the agent's port forward working.
    if let Err(e) = vm.wait_agent(Duration::from_secs(90)).await {
        let _ = vm.kill().await;
        panic!("agent not ready without internet: {e}");
    }
    let (pid, addr) = (vm.pid(), vm.agent_addr());
    // Dropping the handle closes QMP but must leave QEMU running.
    drop(vm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(alive(pid));

    let vm = Vm::attach(&run_dir).await.expect("attach");
    assert_eq!((vm.pid(), vm.agent_addr()), (pid, addr));
    let state = vm
        .qmp()
        .execute("query-status", None)
        .await
        .expect("query-status");
    assert_eq!(state["status"], "running");
    let health = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("get");
    assert_eq!(health.status().as_u16(), 204);
    vm.kill().await.expect("kill");
    assert!(!alive(pid));
    assert!(matches!(
        Vm::attach(&run_dir).await,
        Err(warren_vm::AttachError::NotRunning { .. })
    ));
    assert_no_qemu_under(dir.path());
}

#[tokio::test]
async fn launch_failure_reports_qemu_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = VmConfig::new(
        "bad",
        dir.path().join("missing-vmlinux"),
        dir.path().join("missing-initrd"),
        dir.path().join("missing.qcow2"),
        dir.path().join("run"),
    );
    cfg.accel = Accel::Tcg;
    match Vm::launch(cfg).await {
        Err(warren_vm::LaunchError::Exited { log_tail, .. }) => {
            assert!(log_tail.contains("missing"), "log: {log_tail}");
        }
        other => panic!("expected an early exit, got {other:?}"),
    }
    assert_no_qemu_under(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_reset_ends_qemu_and_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = image(dir.path()).await;
    let vm = Vm::launch(config("reset", dir.path(), &image).await)
        .await
        .expect("launch");
    let mut events = vm.qmp().subscribe();
    // A guest reboot under -no-reboot makes QEMU exit on its own, as a guest panic would.
    vm.qmp()
        .execute("system_reset", None)
        .await
        .expect("system_reset");
    let exit = tokio::time::timeout(Duration::from_secs(10), vm.wait_exit()).await;
    let Ok(exit) = exit else {
        let _ = vm.kill().await;
        panic!("QEMU did not exit after a guest reset");
    };
    assert_eq!(exit.code, Some(0));
    assert!(vm.exit_watch().borrow().is_some());
    let event = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
    assert_eq!(event.expect("an event").expect("event").name, "SHUTDOWN");
    assert_no_qemu_under(dir.path());
}
