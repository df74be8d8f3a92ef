//! `warren image build`: builds (or finds in the cache) the guest kernel, initramfs and root
//! disk, showing each step on the terminal.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use warren_image::{BaseImage, ImageOptions, Progress, Step};

/// Arguments of `warren image build`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// Image cache directory [default: $XDG_CACHE_HOME/warren or ~/.cache/warren].
    #[arg(long, env = "WARREN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Rebuild every layer even if it is cached.
    #[arg(long)]
    pub force: bool,
    /// Debian mirror for debootstrap.
    #[arg(long)]
    pub mirror: Option<String>,
}

/// The agent binary baked into images: `WARREN_AGENT_BIN`, else `warren-agent` next to this
/// executable (where cargo puts both).
pub fn agent_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("WARREN_AGENT_BIN").filter(|p| !p.is_empty()) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("locating the warren executable")?;
    let path = exe.with_file_name("warren-agent");
    anyhow::ensure!(
        path.exists(),
        "no guest agent at {} (build it with `cargo build -p warren-agent`, or set \
         WARREN_AGENT_BIN)",
        path.display()
    );
    Ok(path)
}

/// Builds the base image, or returns the cached one, reporting progress to `progress`.
pub async fn ensure(
    cache_dir: PathBuf,
    mirror: Option<String>,
    progress: Box<dyn Progress>,
) -> anyhow::Result<BaseImage> {
    let mut opts = ImageOptions::new(cache_dir, agent_bin()?);
    opts.mirror = mirror;
    tokio::task::spawn_blocking(move || warren_image::ensure_base_image(&opts, progress.as_ref()))
        .await
        .context("the image build task failed")?
        .context("building the guest image")
}

/// Builds the base image.
pub async fn build(args: ImageArgs, json: bool) -> anyhow::Result<()> {
    let cache_dir = args
        .cache_dir
        .unwrap_or_else(warren_image::default_cache_dir);
    if args.force {
        for layer in ["images", "kernel", "rootfs"] {
            let dir = cache_dir.join(layer);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
        }
    }
    let started = std::time::Instant::now();
    let image = ensure(
        cache_dir,
        args.mirror,
        Box::new(TerminalProgress::default()),
    )
    .await?;
    if json {
        let out = serde_json::json!({
            "key": image.key,
            "vmlinux": image.vmlinux,
            "initramfs": image.initramfs,
            "rootfs": image.rootfs_qcow2,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{out}");
    } else {
        println!(
            "image {} ready in {:.1}s\n  kernel     {}\n  initramfs  {}\n  root disk  {}",
            image.key,
            started.elapsed().as_secs_f64(),
            image.vmlinux.display(),
            image.initramfs.display(),
            image.rootfs_qcow2.display()
        );
    }
    Ok(())
}

/// Shows each build step as a spinner that turns into a line with its duration.
#[derive(Default)]
struct TerminalProgress {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for TerminalProgress {
    fn step_started(&self, step: Step) {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.set_message(step.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn step_finished(&self, step: Step, elapsed: Duration) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
        eprintln!("  ✓ {step} ({:.1}s)", elapsed.as_secs_f64());
    }

    fn message(&self, _step: Step, message: &str) {
        if let Some(bar) = self.bar.lock().ok().as_ref().and_then(|b| b.as_ref()) {
            bar.set_message(message.to_owned());
        }
    }
}
