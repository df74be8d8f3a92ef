//! Copy-on-write disks: every VM writes to its own qcow2 overlay on a read-only base.

use std::path::Path;

/// Why an overlay could not be created.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The base image's header could not be read (missing, or not qcow2).
    #[error("cannot read the base image {path}")]
    ReadBase {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The overlay file could not be written.
    #[error("cannot write the overlay {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run qemu-img")]
    Spawn(#[source] std::io::Error),
    #[error("qemu-img create failed ({status}): {stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Creates the qcow2 overlay `path` backed by the qcow2 `base` (which must stay unchanged).
/// `path` must not exist. The file is written directly (see `qcow2`), not by `qemu-img`.
pub async fn create_overlay(base: &Path, path: &Path) -> Result<(), OverlayError> {
    let (base, path) = (base.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || {
        let size = qcow2_virtual_size(&base).map_err(|source| OverlayError::ReadBase {
            path: base.clone(),
            source,
        })?;
        crate::qcow2::write_overlay(&base, size, &path)
            .map_err(|source| OverlayError::Write { path, source })
    })
    .await
    .map_err(|e| OverlayError::Spawn(std::io::Error::other(e)))?
}

/// The virtual size in a qcow2 header.
fn qcow2_virtual_size(path: &Path) -> std::io::Result<u64> {
    let (_, header) = qcow2_header(path)?;
    Ok(u64::from_be_bytes(
        header[24..32].try_into().unwrap_or_default(),
    ))
}

/// Opens a qcow2 image and reads the start of its header (through the virtual size),
/// checking the magic.
fn qcow2_header(path: &Path) -> std::io::Result<(std::fs::File, [u8; 32])> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut header = [0u8; 32];
    file.read_exact(&mut header)?;
    if header[..4] != *b"QFI\xfb" {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a qcow2 image", path.display()),
        ));
    }
    Ok((file, header))
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

/// The backing file named in a qcow2 header, if any (relative names are resolved against the
/// image's directory, as QEMU does). Reads only the header: no lock on the image is needed.
pub fn qcow2_backing_file(path: &Path) -> std::io::Result<Option<std::path::PathBuf>> {
    use std::io::{Read, Seek, SeekFrom};
    let (mut file, header) = qcow2_header(path)?;
    let offset = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
    let size = u32::from_be_bytes(header[16..20].try_into().unwrap_or_default());
    if offset == 0 || size == 0 {
        return Ok(None);
    }
    // QEMU caps backing file names at 1023 bytes.
    if size > 1023 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: backing file name of {size} bytes", path.display()),
        ));
    }
    let mut name = vec![0u8; size as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut name)?;
    let name = std::path::PathBuf::from(String::from_utf8_lossy(&name).into_owned());
    Ok(Some(match path.parent() {
        Some(dir) if name.is_relative() => dir.join(name),
        _ => name,
    }))
}

/// `path` and every file of its backing chain, top first. Stops at a file that cannot be
/// read (it is reported by whoever opens the chain).
pub fn qcow2_chain(path: &Path) -> Vec<std::path::PathBuf> {
    let mut chain = vec![path.to_owned()];
    while let Some(Ok(Some(next))) = chain.last().map(|p| qcow2_backing_file(p)) {
        if chain.contains(&next) || chain.len() > 1000 {
            break;
        }
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_backing_chains() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let mut cmd = tokio::process::Command::new("qemu-img");
        cmd.args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("1M");
        run_qemu_img(cmd).await.unwrap();
        let mid = dir.path().join("mid.qcow2");
        create_overlay(&base, &mid).await.unwrap();
        let top = dir.path().join("top.qcow2");
        create_overlay(&mid, &top).await.unwrap();
        assert_eq!(qcow2_backing_file(&base).unwrap(), None);
        assert_eq!(
            qcow2_chain(&top),
            vec![top.clone(), mid.clone(), base.clone()]
        );
        std::fs::write(dir.path().join("junk"), b"not an image at all").unwrap();
        assert!(qcow2_backing_file(&dir.path().join("junk")).is_err());
        // Overlays take their base's size (read from its header).
        assert_eq!(qcow2_virtual_size(&top).unwrap(), 1 << 20);
        // A missing base is reported, not papered over.
        let orphan = dir.path().join("orphan.qcow2");
        let missing = create_overlay(&dir.path().join("missing.qcow2"), &orphan).await;
        assert!(
            matches!(missing, Err(OverlayError::ReadBase { .. })),
            "{missing:?}"
        );
    }
}
