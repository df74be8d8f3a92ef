//! Copy-on-write disks: every VM writes to its own qcow2 overlay on a read-only base.

use std::path::Path;

/// Why an overlay could not be created.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("cannot run qemu-img")]
    Spawn(#[source] std::io::Error),
    #[error("qemu-img create failed ({status}): {stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Creates the qcow2 overlay `path` backed by the qcow2 `base` (which must stay unchanged).
pub async fn create_overlay(base: &Path, path: &Path) -> Result<(), OverlayError> {
    let mut cmd = tokio::process::Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(path);
    run_qemu_img(cmd).await
}

/// Runs a prepared `qemu-img` command, turning a failure into an [`OverlayError`].
pub(crate) async fn run_qemu_img(mut cmd: tokio::process::Command) -> Result<(), OverlayError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(OverlayError::Spawn)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(OverlayError::Failed {
            status: out.status,
            stderr,
        });
    }
    Ok(())
}
