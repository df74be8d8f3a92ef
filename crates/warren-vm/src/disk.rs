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
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(path)
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
