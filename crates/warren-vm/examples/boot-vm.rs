//! Boots one VM from the cached base image and prints how long each stage took: QEMU up
//! (QMP answering), `/sbin/warren-init` reached (console marker), agent `/health` = 204.
//! Usage: `boot-vm <agent-binary>`; the image cache is the contract's default.

use std::time::{Duration, Instant};

use warren_image::{ImageOptions, NoProgress};
use warren_vm::{Vm, VmConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let agent = std::env::args_os()
        .nth(1)
        .ok_or("usage: boot-vm <agent-binary>")?;
    let opts = ImageOptions::new(warren_image::default_cache_dir(), agent);
    let image = warren_image::ensure_base_image(&opts, &NoProgress)?;
    let dir = std::env::temp_dir().join(format!("warren-boot-vm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("root.qcow2");
    warren_vm::create_overlay(&image.rootfs_qcow2, &disk).await?;
    let mut cfg = VmConfig::new(
        "boot-vm",
        &image.vmlinux,
        &image.initramfs,
        disk,
        dir.join("run"),
    );
    // E.g. WARREN_CMDLINE_EXTRA=loglevel=7 to see kernel timestamps in the kept console log.
    if let Ok(extra) = std::env::var("WARREN_CMDLINE_EXTRA") {
        cfg.cmdline_extra = extra.split_whitespace().map(str::to_owned).collect();
    }
    cfg.accel = warren_vm::probe_accel(&image.vmlinux, &image.initramfs).await;

    let started = Instant::now();
    let vm = Vm::launch(cfg).await?;
    let qemu_up = started.elapsed();
    let mut init_at = None;
    let mut first_output = None;
    let ready = loop {
        if first_output.is_none() && std::fs::metadata(vm.console_log()).is_ok_and(|m| m.len() > 0)
        {
            first_output = Some(started.elapsed());
        }
        if init_at.is_none()
            && std::fs::read_to_string(vm.console_log())
                .is_ok_and(|c| c.contains("warren-init: starting"))
        {
            init_at = Some(started.elapsed());
        }
        match vm.wait_agent(Duration::from_millis(10)).await {
            Ok(()) => break Ok(started.elapsed()),
            Err(warren_vm::AgentWaitError::Timeout { .. })
                if started.elapsed() < Duration::from_secs(90) => {}
            Err(e) => break Err(e),
        }
    };
    let stopped = vm.stop(Duration::from_secs(5)).await;
    let _ = std::fs::copy(
        vm.console_log(),
        std::env::temp_dir().join("warren-boot-vm.log"),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let ready = ready?;
    stopped?;
    println!(
        "qemu up {:.2} s, first console output {:.2} s, warren-init {:.2} s, \
         agent /health {:.2} s",
        qemu_up.as_secs_f64(),
        first_output.map_or(f64::NAN, |d| d.as_secs_f64()),
        init_at.map_or(f64::NAN, |d| d.as_secs_f64()),
        ready.as_secs_f64()
    );
    Ok(())
}
