//! The on-disk cache of image layers and its atomicity rules.
//!
//! Layout under the cache directory:
//! - `.lock`: an exclusive `flock` held for the whole of [`crate::ensure_base_image`], so
//!   servers and tests sharing the cache never build the same layer twice at once;
//! - `tmp/<label>-<pid>-<random>/`: where every layer is built. Because builders hold the lock,
//!   anything found in `tmp/` when the lock is taken is left over from a killed build and is
//!   removed (after detaching any mounts a killed debootstrap left inside it);
//! - `kernel/<key>/`, `rootfs/<key>/`, `images/<key>/`: finished layers. A layer directory
//!   appears only by `rename` of a complete temp dir after `syncfs`, with its `image.json`
//!   written last, so a crash leaves either nothing or a whole layer.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use crate::error::ImageBuildError;

/// An opened, locked cache.
pub(crate) struct Cache {
    root: PathBuf,
    _lock: Flock<File>,
}

fn cache_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageBuildError + '_ {
    move |source| ImageBuildError::Cache {
        path: path.to_owned(),
        source,
    }
}

impl Cache {
    /// Creates the cache directories, takes the lock (waiting for other builders) and
    /// removes stale temp dirs.
    pub fn open(root: &Path) -> Result<Cache, ImageBuildError> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(cache_err(&tmp))?;
        let lock_path = root.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(cache_err(&lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, source)| {
            ImageBuildError::Lock {
                path: lock_path.clone(),
                source,
            }
        })?;
        let cache = Cache {
            root: root.to_owned(),
            _lock: lock,
        };
        cache.remove_stale()?;
        Ok(cache)
    }

    /// The directory of a finished layer.
    pub fn layer(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(kind).join(key)
    }

    /// A fresh, empty build directory.
    pub fn temp_dir(&self, label: &str) -> Result<PathBuf, ImageBuildError> {
        let name = format!(
            "{label}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = self.root.join("tmp").join(name);
        std::fs::create_dir(&path).map_err(cache_err(&path))?;
        Ok(path)
    }

    /// Makes the finished build in `tmp` the layer at `dest`, replacing an invalid one.
    pub fn publish(&self, tmp: &Path, dest: &Path) -> Result<(), ImageBuildError> {
        syncfs(tmp).map_err(cache_err(tmp))?;
        let parent = dest.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(cache_err(parent))?;
        if dest.exists() {
            tracing::warn!(layer = %dest.display(), "replacing an invalid cached layer");
            remove_tree(dest).map_err(cache_err(dest))?;
        }
        std::fs::rename(tmp, dest).map_err(cache_err(dest))?;
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(cache_err(parent))
    }

    /// Removes a build directory that will not be published (best effort).
    pub fn discard(&self, tmp: &Path) {
        if let Err(error) = remove_tree(tmp) {
            tracing::warn!(dir = %tmp.display(), %error, "cannot remove a build directory");
        }
    }

    fn remove_stale(&self) -> Result<(), ImageBuildError> {
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(cache_err(&tmp))? {
            let path = entry.map_err(cache_err(&tmp))?.path();
            tracing::info!(dir = %path.display(), "removing a stale image build directory");
            self.discard(&path);
        }
        Ok(())
    }
}

/// Removes a directory tree, first detaching mounts inside it: a debootstrap killed midway
/// leaves /proc and /sys (and in containers a bind of the host's /dev) mounted in its target,
/// and a recursive delete must never walk into those.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut inside: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(path))
        .collect();
    // Deepest first, so nested mounts come off before their parents.
    inside.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for mount in &inside {
        nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
            std::io::Error::other(format!("cannot unmount {}: {e}", mount.display()))
        })?;
    }
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Flushes the filesystem holding `path`: one call instead of an fsync per file of a
/// several-thousand-file tree.
fn syncfs(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(path)?;
    nix::unistd::syncfs(dir.as_raw_fd()).map_err(std::io::Error::from)
}

/// A short stable key: hex of the first 16 bytes of sha256 over `name=value` lines.
pub(crate) fn key(inputs: &std::collections::BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in inputs {
        hasher.update(k.as_bytes());
        hasher.update(b"=");
        hasher.update(v.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temp_dirs_are_removed_and_publish_is_atomic() {
        let root = tempfile::tempdir().expect("tempdir");
        let stale = root.path().join("tmp/rootfs-1-deadbeef/tree");
        std::fs::create_dir_all(&stale).expect("mkdir");
        let cache = Cache::open(root.path()).expect("open");
        assert!(!root.path().join("tmp/rootfs-1-deadbeef").exists());

        let tmp = cache.temp_dir("kernel").expect("temp");
        std::fs::write(tmp.join("f"), b"x").expect("write");
        let dest = cache.layer("kernel", "abc");
        cache.publish(&tmp, &dest).expect("publish");
        assert!(dest.join("f").exists());
        assert!(!tmp.exists());
    }

    #[test]
    fn key_depends_on_every_input() {
        let mut a = std::collections::BTreeMap::new();
        a.insert("suite".to_owned(), "bookworm".to_owned());
        let k1 = key(&a);
        a.insert("agent".to_owned(), "x".to_owned());
        assert_ne!(k1, key(&a));
        assert_eq!(key(&a).len(), 32);
    }
}
