//! Progress reporting for image builds: the CLI renders it (e.g. with indicatif), the server
//! logs it. A build reports each step as started and finished, with messages in between.

use std::fmt;
use std::time::Duration;

/// One step of an image build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ResolveKernel,
    DownloadKernel,
    ExtractKernel,
    BuildInitramfs,
    Debootstrap,
    ConfigureRootfs,
    BuildDisk,
    Verify,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::ResolveKernel => "resolve kernel package",
            Step::DownloadKernel => "download kernel package",
            Step::ExtractKernel => "extract vmlinux",
            Step::BuildInitramfs => "build initramfs",
            Step::Debootstrap => "debootstrap root filesystem",
            Step::ConfigureRootfs => "configure root filesystem",
            Step::BuildDisk => "build root disk",
            Step::Verify => "verify image",
        })
    }
}

/// Receives build progress. Called from the building thread.
pub trait Progress: Send + Sync {
    fn step_started(&self, step: Step);
    fn step_finished(&self, step: Step, elapsed: Duration);
    fn message(&self, step: Step, message: &str);
}

/// Ignores all progress.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn step_started(&self, _step: Step) {}
    fn step_finished(&self, _step: Step, _elapsed: Duration) {}
    fn message(&self, _step: Step, _message: &str) {}
}

/// Logs progress with `tracing` (info for steps, debug for messages).
#[derive(Debug, Default)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn step_started(&self, step: Step) {
        tracing::info!(%step, "image build step started");
    }
    fn step_finished(&self, step: Step, elapsed: Duration) {
        tracing::info!(%step, elapsed_ms = elapsed.as_millis(), "image build step finished");
    }
    fn message(&self, step: Step, message: &str) {
        tracing::debug!(%step, message, "image build");
    }
}

/// Runs `f` as `step`, reporting start and finish (finish only on success).
pub(crate) fn run_step<T, E>(
    progress: &dyn Progress,
    step: Step,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    progress.step_started(step);
    let started = std::time::Instant::now();
    let out = f()?;
    progress.step_finished(step, started.elapsed());
    Ok(out)
}
