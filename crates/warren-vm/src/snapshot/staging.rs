//! Where the recorder writes the guest's RAM while a snapshot is taken.
//!
//! Receiving a migration into a file mapping on a disk filesystem is slow: QEMU touches every
//! page of the destination (it reads each page to decide whether a zero page must be written),
//! and each first touch of a file page on ext4 is a page fault through the filesystem.
//! Measured here with a 512 MiB guest: 4–5 s to receive 75 MB of data plus 440 MB of zero
//! pages into a file on disk, 0.8–1.3 s into a file on tmpfs.
//!
//! So the recorder's RAM is a tmpfs file (`/dev/shm`) that is unlinked as soon as QEMU has
//! mapped it: only our descriptor and QEMU's mapping keep it alive, and a crash of the server
//! or QEMU frees it by itself. When the snapshot is complete, [`Staging::persist`] writes its
//! non-zero pages to the snapshot's `mem` file, which stays sparse. Without a usable
//! `/dev/shm` the recorder writes to the final file directly, as before.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::FileRef;

/// Folder of the staged RAM files.
pub(super) const SHM_DIR: &str = "/dev/shm";
/// Name prefix of the staged RAM files.
pub(super) const PREFIX: &str = "warren-ram-";
/// Granularity of the zero check when writing the image out.
const PAGE: usize = 4096;

/// The recorder's RAM file for one snapshot.
pub(super) struct Staging {
    /// Path handed to QEMU.
    path: PathBuf,
    /// Our descriptor of a tmpfs file (`None` when writing to the final file directly).
    shm: Option<File>,
    /// Whether `path` is a tmpfs name that still has to be removed.
    named: bool,
}

impl Staging {
    /// A staging file for an image of `bytes` that ends up at `final_path`. tmpfs is used
    /// only when it has room for the whole image: a recorder writing into a full tmpfs
    /// mapping would be killed by SIGBUS.
    pub(super) fn new(final_path: &Path, bytes: u64) -> Staging {
        let direct = Staging {
            path: final_path.to_owned(),
            shm: None,
            named: false,
        };
        let room = nix::sys::statvfs::statvfs(SHM_DIR)
            .map(|v| v.blocks_available().saturating_mul(v.fragment_size()))
            .unwrap_or(0);
        if room < bytes.saturating_add(bytes / 4) {
            tracing::debug!(
                room,
                bytes,
                "not enough room in tmpfs; the recorder writes to disk"
            );
            return direct;
        }
        let name = format!("{PREFIX}{:016x}", rand::random::<u64>());
        let path = Path::new(SHM_DIR).join(name);
        let created = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path);
        match created {
            Ok(file) => Staging {
                path,
                shm: Some(file),
                named: true,
            },
            Err(e) => {
                tracing::debug!(error = %e, "no tmpfs staging; the recorder writes to disk");
                direct
            }
        }
    }

    /// The path QEMU maps.
    pub(super) fn qemu_path(&self) -> &Path {
        &self.path
    }

    /// The image as a path we can open for patching (valid after [`Staging::unlink`] too).
    pub(super) fn image_path(&self) -> PathBuf {
        match &self.shm {
            Some(f) => PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())),
            None => self.path.clone(),
        }
    }

    /// Removes the tmpfs name once QEMU has mapped the file.
    pub(super) fn unlink(&mut self) {
        if self.named {
            let _ = std::fs::remove_file(&self.path);
            self.named = false;
        }
    }

    /// Keeps the staged image where it is, in tmpfs, and links `link` to it (see
    /// `RamImage::InMemory`). `None` when nothing is staged (the recorder wrote to the final
    /// file directly, which then is the image).
    pub(super) fn keep_as(&mut self, link: &Path) -> io::Result<Option<FileRef>> {
        if self.shm.is_none() || !self.named {
            return Ok(None);
        }
        let size = std::fs::metadata(&self.path)?.len();
        std::os::unix::fs::symlink(&self.path, link)?;
        // From here the link owns the file; `release` removes it.
        self.named = false;
        let name = link.file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(Some(FileRef {
            path: name.unwrap_or_default(),
            size,
            sha256: String::new(),
        }))
    }

    /// Writes the image's non-zero pages to `final_path` (a new, sparse file) and returns the
    /// image's size and SHA-256, computed from the staged copy (reading the sparse file back
    /// would fault in every hole). `None` when the recorder wrote to `final_path` directly.
    ///
    /// The hash and the copy each read the whole image; they run on two threads, since
    /// together they are most of the time a snapshot takes after the source has resumed.
    pub(super) fn persist(mut self, final_path: &Path) -> io::Result<Option<(u64, String)>> {
        self.unlink();
        let Some(src) = self.shm.take() else {
            return Ok(None);
        };
        let len = src.metadata()?.len();
        let out = File::create(final_path)?;
        out.set_len(len)?;
        std::thread::scope(|scope| {
            let hashing = scope.spawn(|| sha256_of(&src, len));
            copy_non_zero(&src, &out, len)?;
            out.sync_all()?;
            let digest = hashing
                .join()
                .map_err(|_| io::Error::other("the hashing thread panicked"))??;
            Ok(Some((len, digest)))
        })
    }
}

/// If `link` is a symbolic link to a staged image kept in tmpfs, removes that image.
pub(super) fn release(link: &Path) {
    let Ok(target) = std::fs::read_link(link) else {
        return;
    };
    let staged = target.parent() == Some(Path::new(SHM_DIR))
        && target
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(PREFIX));
    if staged {
        let _ = std::fs::remove_file(&target);
    }
}

/// SHA-256 of the first `len` bytes of `src`, hex.
fn sha256_of(src: &File, len: u64) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let n = chunk_len(len - offset);
        src.read_exact_at(&mut buf[..n], offset)?;
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Copies the non-zero pages of `src` to the same offsets of `out`, one write per run of
/// consecutive non-zero pages; zero pages stay holes.
fn copy_non_zero(src: &File, out: &File, len: u64) -> io::Result<()> {
    let zero = [0u8; PAGE];
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let n = chunk_len(len - offset);
        src.read_exact_at(&mut buf[..n], offset)?;
        // Slice equality is a memcmp, far faster than a byte loop over the zero pages.
        let pages: Vec<bool> = buf[..n]
            .chunks(PAGE)
            .map(|p| p != &zero[..p.len()])
            .collect();
        let mut i = 0;
        while i < pages.len() {
            if !pages[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < pages.len() && pages[i] {
                i += 1;
            }
            let bytes = &buf[start * PAGE..(i * PAGE).min(n)];
            out.write_all_at(bytes, offset + (start * PAGE) as u64)?;
        }
        offset += n as u64;
    }
    Ok(())
}

/// Bytes per read while persisting.
const CHUNK: usize = 1 << 20;

fn chunk_len(left: u64) -> usize {
    usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK))
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.unlink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn persisted_image_keeps_data_and_stays_sparse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let final_path = dir.path().join("mem");
        let mut staging = Staging::new(&final_path, 64 << 20);
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(staging.image_path())
                .expect("open staged");
            f.set_len(64 << 20).expect("size");
            f.seek(SeekFrom::Start(10 << 20)).expect("seek");
            f.write_all(b"hello").expect("write");
            // A run of two non-zero pages.
            f.seek(SeekFrom::Start((20 << 20) - 2)).expect("seek");
            f.write_all(b"abcd").expect("write");
        }
        staging.unlink();
        let (size, sha) = staging
            .persist(&final_path)
            .expect("persist")
            .expect("staged");
        assert_eq!(size, 64 << 20);
        let (size2, sha2) = crate::snapshot::manifest::hash_file(&final_path).expect("hash");
        assert_eq!((size, sha), (size2, sha2));
        let data = std::fs::read(&final_path).expect("read");
        assert_eq!(data.len(), 64 << 20);
        assert_eq!(&data[(10 << 20)..(10 << 20) + 5], b"hello");
        assert_eq!(&data[(20 << 20) - 2..(20 << 20) + 2], b"abcd");
        use std::os::unix::fs::MetadataExt as _;
        let allocated = std::fs::metadata(&final_path).expect("meta").blocks() * 512;
        assert!(
            allocated < (1 << 20),
            "not sparse: {allocated} bytes allocated"
        );
    }
}
