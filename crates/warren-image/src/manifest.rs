//! `image.json`: the manifest written last into every cached layer directory. It carries a
//! magic string, a format version, the layer's kind, key and inputs, and the size and sha256 of
//! each file. A layer is used only if its manifest verifies: sizes and file magics always,
//! sha256 checksums when asked (they cost a full read of several hundred MB).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name inside a layer directory.
pub(crate) const MANIFEST: &str = "image.json";
const MAGIC: &str = "warren-image";
/// Bump when the layout or meaning of cached layers changes.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// A manifest is a few hundred bytes; anything much larger is not ours.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The size and checksum of one file of a layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub size: u64,
    pub sha256: String,
}

/// The contents of `image.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub magic: String,
    pub format: u32,
    pub kind: String,
    pub key: String,
    pub inputs: BTreeMap<String, String>,
    pub files: BTreeMap<String, FileEntry>,
}

/// Why a cached layer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse the manifest")]
    Parse(#[source] serde_json::Error),
    #[error("the manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("bad magic, kind or format version (found {magic:?}, {kind:?}, {format})")]
    Header {
        magic: String,
        kind: String,
        format: u32,
    },
    #[error("{name}: size {actual}, manifest says {expected}")]
    Size {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("{name} does not start with the expected magic bytes")]
    FileMagic { name: String },
    #[error("{name}: sha256 mismatch")]
    Checksum { name: String },
}

/// Computes the entries of `files` (relative to `dir`) and writes the manifest, fsynced.
pub(crate) fn write(
    dir: &Path,
    kind: &str,
    key: &str,
    inputs: BTreeMap<String, String>,
    files: &[&str],
) -> std::io::Result<Manifest> {
    let mut entries = BTreeMap::new();
    for name in files {
        let path = dir.join(name);
        let size = std::fs::metadata(&path)?.len();
        entries.insert(
            (*name).to_owned(),
            FileEntry {
                size,
                sha256: sha256_file(&path)?,
            },
        );
    }
    let manifest = Manifest {
        magic: MAGIC.to_owned(),
        format: FORMAT_VERSION,
        kind: kind.to_owned(),
        key: key.to_owned(),
        inputs,
        files: entries,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    let path = dir.join(MANIFEST);
    let mut file = std::fs::File::create(&path)?;
    std::io::Write::write_all(&mut file, &json)?;
    file.sync_all()?;
    Ok(manifest)
}

/// Reads and checks the manifest of the layer in `dir`.
pub(crate) fn verify(dir: &Path, kind: &str, checksums: bool) -> Result<Manifest, ManifestError> {
    let path = dir.join(MANIFEST);
    let read = |path: &Path| -> Result<Vec<u8>, ManifestError> {
        let file = std::fs::File::open(path).map_err(|source| ManifestError::Read {
            path: path.into(),
            source,
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ManifestError::Read {
                path: path.into(),
                source,
            })?;
        Ok(bytes)
    };
    let bytes = read(&path)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(ManifestError::Parse)?;
    if manifest.magic != MAGIC || manifest.kind != kind || manifest.format != FORMAT_VERSION {
        return Err(ManifestError::Header {
            magic: manifest.magic,
            kind: manifest.kind,
            format: manifest.format,
        });
    }
    for (name, entry) in &manifest.files {
        let path = dir.join(name);
        let io_err = |source| ManifestError::Read {
            path: path.clone(),
            source,
        };
        let actual = std::fs::metadata(&path).map_err(io_err)?.len();
        if actual != entry.size {
            return Err(ManifestError::Size {
                name: name.clone(),
                expected: entry.size,
                actual,
            });
        }
        if !has_expected_magic(name, &path).map_err(io_err)? {
            return Err(ManifestError::FileMagic { name: name.clone() });
        }
        if checksums && sha256_file(&path).map_err(io_err)? != entry.sha256 {
            return Err(ManifestError::Checksum { name: name.clone() });
        }
    }
    Ok(manifest)
}

/// Known file kinds are checked by their first bytes; others pass.
fn has_expected_magic(name: &str, path: &Path) -> std::io::Result<bool> {
    let expected: &[u8] = if name == "vmlinux" {
        b"\x7fELF"
    } else if name.ends_with(".gz") {
        b"\x1f\x8b"
    } else if name.ends_with(".qcow2") {
        b"QFI\xfb"
    } else {
        return Ok(true);
    };
    let mut head = vec![0u8; expected.len()];
    std::fs::File::open(path)?.read_exact(&mut head)?;
    Ok(head == expected)
}

/// Hex sha256 of a file's contents.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("vmlinux"), b"\x7fELF rest").expect("write");
        write(dir.path(), "kernel", "k1", BTreeMap::new(), &["vmlinux"]).expect("manifest");
        verify(dir.path(), "kernel", true).expect("verifies");
        assert!(matches!(
            verify(dir.path(), "image", false),
            Err(ManifestError::Header { .. })
        ));

        std::fs::write(dir.path().join("vmlinux"), b"\x7fELF REST").expect("write");
        verify(dir.path(), "kernel", false).expect("same size passes the quick check");
        assert!(matches!(
            verify(dir.path(), "kernel", true),
            Err(ManifestError::Checksum { .. })
        ));

        std::fs::write(dir.path().join("vmlinux"), b"MZ not an elf").expect("write");
        assert!(matches!(
            verify(dir.path(), "kernel", false),
            Err(ManifestError::Size { .. })
        ));
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("rootfs.qcow2"), b"QFI\xfbxx").expect("write");
        write(dir.path(), "image", "k", BTreeMap::new(), &["rootfs.qcow2"]).expect("manifest");
        std::fs::write(dir.path().join("rootfs.qcow2"), b"RAWDxx").expect("write");
        assert!(matches!(
            verify(dir.path(), "image", false),
            Err(ManifestError::FileMagic { .. })
        ));
    }
}
