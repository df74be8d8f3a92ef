//! Chooses the accelerator. `/dev/kvm` existing proves little: on the development hosts it is
//! a paravirtual module that takes ~25 s to bring a stock kernel to memory init and then fails
//! on an instruction it cannot emulate. So KVM is chosen only if a probe guest really works:
//! the real kernel boots under `-accel kvm` with the real initramfs and `warren.probe` on its
//! command line, which makes `/init` print `WARREN-PROBE-OK` and reboot (QEMU exits thanks to
//! `-no-reboot`). The marker must reach the serial console within [`PROBE_TIMEOUT`];
//! otherwise TCG is used. The result is computed once per process.
//!
//! `WARREN_ACCEL=kvm|tcg` skips the probe.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::config::Accel;

/// A healthy KVM host prints the marker in well under a second.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const MARKER: &str = "WARREN-PROBE-OK";

/// The accelerator to use for VMs of this process (cached after the first call).
pub async fn probe_accel(kernel: &Path, initramfs: &Path) -> Accel {
    static ACCEL: OnceCell<Accel> = OnceCell::const_new();
    *ACCEL
        .get_or_init(|| probe_uncached(kernel, initramfs))
        .await
}

async fn probe_uncached(kernel: &Path, initramfs: &Path) -> Accel {
    match std::env::var("WARREN_ACCEL").as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    if std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        tracing::info!(accel = "tcg", "no usable /dev/kvm");
        return Accel::Tcg;
    }
    let started = Instant::now();
    let accel = match kvm_boots(kernel, initramfs).await {
        Ok(true) => Accel::Kvm,
        Ok(false) => Accel::Tcg,
        Err(error) => {
            tracing::warn!(%error, "KVM probe could not run");
            Accel::Tcg
        }
    };
    tracing::info!(
        accel = accel.as_qemu(),
        elapsed_ms = started.elapsed().as_millis(),
        "accelerator probe finished"
    );
    accel
}

/// Boots the probe guest under KVM; true if the marker appeared in time.
async fn kvm_boots(kernel: &Path, initramfs: &Path) -> std::io::Result<bool> {
    let dir = std::env::temp_dir().join(format!(
        "warren-probe-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir(&dir)?;
    let console = dir.join("console.log");
    let cmdline =
        crate::cmdline::kernel_cmdline(crate::tsc::host_tsc_khz(), &["warren.probe".to_owned()]);
    let spawned = tokio::process::Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "microvm,accel=kvm",
            "-cpu",
            "host",
            "-m",
            "256M",
            "-smp",
            "1",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &cmdline])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut found = false;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains(MARKER) {
            found = true;
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            // Exited without the marker (or with it, written just before exit).
            found = std::fs::read_to_string(&console)
                .unwrap_or_default()
                .contains(MARKER);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(found)
}
