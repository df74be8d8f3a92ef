//! The on-disk format of a snapshot directory.
//!
//! A snapshot directory holds the guest RAM image (`mem`), the device state (`devstate`) and a
//! `manifest.json` that describes them. The manifest is the commit point: a directory without
//! a valid manifest is an unfinished snapshot and is discarded on the next start.
//!
//! The manifest carries a magic string, a format version and a SHA-256 checksum of its own
//! canonical content, plus the size and SHA-256 of every file it names. Loading checks the
//! magic, the version and the manifest checksum, and caps the manifest's size; the (large)
//! file checksums are verified separately by [`SnapshotManifest::verify_files`], because
//! hashing a RAM image on every restore would cost more than the restore itself.
//!
//! Writes are atomic: [`SnapshotManifest::write`] writes a temporary file, fsyncs it, renames
//! it over `manifest.json` and fsyncs the directory.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The magic string every manifest starts with.
pub const MANIFEST_MAGIC: &str = "warren-snapshot";
/// The format version this code writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// The manifest's file name inside a snapshot directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Manifests larger than this are refused rather than parsed.
const MANIFEST_MAX_BYTES: u64 = 1 << 20;

/// A file of the snapshot, named relative to the snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the snapshot directory, or absolute for shared files.
    pub path: String,
    /// Size in bytes (the apparent size; RAM images are sparse).
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole content.
    pub sha256: String,
}

/// What a restored QEMU needs to look exactly like the one that was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The kernel the guest was booted with (QEMU needs it present, even on restore).
    pub kernel: PathBuf,
    /// The initramfs the guest was booted with.
    pub initramfs: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Always [`MANIFEST_MAGIC`].
    pub magic: String,
    /// Always [`MANIFEST_VERSION`] for manifests this code writes.
    pub version: u32,
    /// The snapshot's internal id.
    pub id: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// The machine to restore into.
    pub machine: MachineSpec,
    /// The guest RAM image; absent for filesystem-only snapshots.
    pub memory: Option<FileRef>,
    /// The device state stream; absent for filesystem-only snapshots.
    pub devstate: Option<FileRef>,
    /// The frozen qcow2 disk layer the snapshot's sandboxes are backed by (absolute path).
    pub disk_layer: PathBuf,
    /// SHA-256 over the canonical JSON of every other field.
    #[serde(default)]
    pub checksum: String,
}

/// Why a manifest could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestWriteError {
    /// Serializing the manifest failed.
    #[error("serializing the snapshot manifest")]
    Serialize(#[source] serde_json::Error),
    /// Writing, syncing or renaming the file failed.
    #[error("writing the snapshot manifest {path}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
}

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestLoadError {
    /// The file could not be read.
    #[error("reading the snapshot manifest {path}")]
    Read {
        /// The manifest's path.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// The file is larger than any manifest this code writes.
    #[error("snapshot manifest {path} is {size} bytes, over the {MANIFEST_MAX_BYTES}-byte cap")]
    TooLarge {
        /// The manifest's path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("parsing the snapshot manifest {path}")]
    Parse {
        /// The manifest's path.
        path: PathBuf,
        /// The parse failure.
        #[source]
        source: serde_json::Error,
    },
    /// The magic string is wrong: this is not a Warren snapshot.
    #[error("{path} is not a Warren snapshot manifest")]
    BadMagic {
        /// The manifest's path.
        path: PathBuf,
    },
    /// The format version is one this code does not read.
    #[error(
        "snapshot manifest {path} has format version {found}; this build reads {MANIFEST_VERSION}"
    )]
    UnsupportedVersion {
        /// The manifest's path.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The manifest's own checksum does not match its content.
    #[error("snapshot manifest {path} is corrupt (checksum mismatch)")]
    Corrupt {
        /// The manifest's path.
        path: PathBuf,
    },
}

/// Why a snapshot file failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file could not be read.
    #[error("reading snapshot file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// The file's size differs from the manifest's.
    #[error("snapshot file {path} is {found} bytes, the manifest says {expected}")]
    Size {
        /// The file.
        path: PathBuf,
        /// Size in the manifest.
        expected: u64,
        /// Size on disk.
        found: u64,
    },
    /// The file's content differs from the manifest's checksum.
    #[error("snapshot file {path} is corrupt (checksum mismatch)")]
    Checksum {
        /// The file.
        path: PathBuf,
    },
}

impl SnapshotManifest {
    /// Computes the checksum over every field except `checksum` itself.
    fn compute_checksum(&self) -> Result<String, serde_json::Error> {
        let mut unsigned = self.clone();
        unsigned.checksum.clear();
        let bytes = serde_json::to_vec(&unsigned)?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    }

    /// Fills in the checksum and writes the manifest atomically into `dir`.
    pub fn write(&mut self, dir: &Path) -> Result<(), ManifestWriteError> {
        self.checksum = self
            .compute_checksum()
            .map_err(ManifestWriteError::Serialize)?;
        let bytes = serde_json::to_vec_pretty(self).map_err(ManifestWriteError::Serialize)?;
        let path = dir.join(MANIFEST_FILE);
        write_atomic(&path, &bytes).map_err(|source| ManifestWriteError::Io { path, source })
    }

    /// Loads and checks the manifest of the snapshot directory `dir`.
    pub fn load(dir: &Path) -> Result<Self, ManifestLoadError> {
        let path = dir.join(MANIFEST_FILE);
        let read_err = |source| ManifestLoadError::Read {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        if size > MANIFEST_MAX_BYTES {
            return Err(ManifestLoadError::TooLarge { path, size });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(MANIFEST_MAX_BYTES)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        // Check the magic and version on a loose parse first, so that a future format with
        // other fields is reported as "unsupported version", not as a parse error.
        let loose: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| ManifestLoadError::Parse {
                path: path.clone(),
                source,
            })?;
        if loose.get("magic").and_then(|m| m.as_str()) != Some(MANIFEST_MAGIC) {
            return Err(ManifestLoadError::BadMagic { path });
        }
        let found = loose.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if found != u64::from(MANIFEST_VERSION) {
            let found = u32::try_from(found).unwrap_or(u32::MAX);
            return Err(ManifestLoadError::UnsupportedVersion { path, found });
        }
        let manifest: Self =
            serde_json::from_value(loose).map_err(|source| ManifestLoadError::Parse {
                path: path.clone(),
                source,
            })?;
        match manifest.compute_checksum() {
            Ok(sum) if sum == manifest.checksum => Ok(manifest),
            _ => Err(ManifestLoadError::Corrupt { path }),
        }
    }

    /// Verifies the size and SHA-256 of every file the manifest names.
    pub fn verify_files(&self, dir: &Path) -> Result<(), VerifyError> {
        for file in self.memory.iter().chain(self.devstate.iter()) {
            let path = dir.join(&file.path);
            let (size, sha256) = hash_file(&path).map_err(|source| VerifyError::Read {
                path: path.clone(),
                source,
            })?;
            if size != file.size {
                return Err(VerifyError::Size {
                    path,
                    expected: file.size,
                    found: size,
                });
            }
            if sha256 != file.sha256 {
                return Err(VerifyError::Checksum { path });
            }
        }
        Ok(())
    }
}

/// Describes the file at `dir/name` for a manifest: its size and SHA-256.
pub fn file_ref(dir: &Path, name: &str) -> io::Result<FileRef> {
    let (size, sha256) = hash_file(&dir.join(name))?;
    Ok(FileRef {
        path: name.to_owned(),
        size,
        sha256,
    })
}

/// Returns the size and lower-case hex SHA-256 of a file, reading it in large blocks.
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> SnapshotManifest {
        fs::write(dir.join("mem"), vec![7u8; 8192]).unwrap();
        fs::write(dir.join("devstate"), b"QEVM....").unwrap();
        SnapshotManifest {
            magic: MANIFEST_MAGIC.into(),
            version: MANIFEST_VERSION,
            id: "snap1".into(),
            created_unix: 1_700_000_000,
            machine: MachineSpec {
                vcpus: 2,
                memory_mib: 512,
                kernel: "/k".into(),
                initramfs: "/i".into(),
                cmdline: "console=ttyS0".into(),
            },
            memory: Some(file_ref(dir, "mem").unwrap()),
            devstate: Some(file_ref(dir, "devstate").unwrap()),
            disk_layer: "/layers/a.qcow2".into(),
            checksum: String::new(),
        }
    }

    #[test]
    fn round_trip_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = sample(dir.path());
        m.write(dir.path()).unwrap();
        let loaded = SnapshotManifest::load(dir.path()).unwrap();
        assert_eq!(loaded, m);
        loaded.verify_files(dir.path()).unwrap();
    }

    #[test]
    fn detects_tampered_manifest_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = sample(dir.path());
        m.write(dir.path()).unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("\"vcpus\": 2", "\"vcpus\": 3");
        fs::write(&path, text).unwrap();
        assert!(matches!(
            SnapshotManifest::load(dir.path()),
            Err(ManifestLoadError::Corrupt { .. })
        ));

        m.write(dir.path()).unwrap();
        fs::write(dir.path().join("mem"), vec![8u8; 8192]).unwrap();
        let loaded = SnapshotManifest::load(dir.path()).unwrap();
        assert!(matches!(
            loaded.verify_files(dir.path()),
            Err(VerifyError::Checksum { .. })
        ));
        fs::write(dir.path().join("mem"), vec![8u8; 10]).unwrap();
        assert!(matches!(
            loaded.verify_files(dir.path()),
            Err(VerifyError::Size { .. })
        ));
    }

    #[test]
    fn rejects_wrong_magic_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = sample(dir.path());
        m.write(dir.path()).unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("\"version\": 1", "\"version\": 9")).unwrap();
        assert!(matches!(
            SnapshotManifest::load(dir.path()),
            Err(ManifestLoadError::UnsupportedVersion { found: 9, .. })
        ));
        fs::write(&path, text.replace(MANIFEST_MAGIC, "something-else")).unwrap();
        assert!(matches!(
            SnapshotManifest::load(dir.path()),
            Err(ManifestLoadError::BadMagic { .. })
        ));
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            SnapshotManifest::load(dir.path()),
            Err(ManifestLoadError::Parse { .. })
        ));
    }
}
