//! Files staged for template builds, in this server process's memory:
//!
//! - [`UploadTokens`]: the one-time tokens of E2B upload URLs. The SDK uploads COPY sources
//!   with a plain HTTP client that sends no API key (E2B hands out pre-signed storage URLs),
//!   so `GET /templates/{id}/files/{hash}` grants a token for that hash and the upload route
//!   checks it instead of the key.
//! - [`ContextDirs`]: the folders that `POST /warren/templates/builds` unpacks build contexts
//!   into, so folders left behind by an earlier server process can be told apart from those
//!   of running builds and removed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng as _;
use rand::distributions::Alphanumeric;

/// How long an upload URL stays valid.
pub const UPLOAD_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Why an upload token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown, used or expired upload token")]
    Unknown,
    #[error("the upload token was issued for another template or file")]
    Mismatch,
}

#[derive(Debug, Clone)]
struct Grant {
    template_id: String,
    hash: String,
    expires: Instant,
}

/// One-time upload tokens (token → what it allows, until when).
#[derive(Debug, Clone, Default)]
pub struct UploadTokens {
    grants: Arc<Mutex<HashMap<String, Grant>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation: a panic cannot leave it half done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A random token of 32 alphanumeric characters.
pub fn random_token() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

impl UploadTokens {
    /// A new token allowing one upload of `hash` for `template_id` within `ttl`.
    pub fn issue(&self, template_id: &str, hash: &str, ttl: Duration) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut grants = lock(&self.grants);
        grants.retain(|_, g| g.expires > now);
        grants.insert(
            token.clone(),
            Grant {
                template_id: template_id.to_owned(),
                hash: hash.to_owned(),
                expires: now + ttl,
            },
        );
        token
    }

    /// Uses up `token` if it allows uploading `hash` for `template_id`.
    pub fn redeem(&self, token: &str, template_id: &str, hash: &str) -> Result<(), TokenError> {
        let mut grants = lock(&self.grants);
        let grant = grants.remove(token).ok_or(TokenError::Unknown)?;
        if grant.expires <= Instant::now() {
            return Err(TokenError::Unknown);
        }
        if grant.template_id != template_id || grant.hash != hash {
            // Not for this upload: it stays usable for the one it was issued for.
            grants.insert(token.to_owned(), grant);
            return Err(TokenError::Mismatch);
        }
        Ok(())
    }
}

/// Build-context folders of this process's running builds.
#[derive(Debug, Clone, Default)]
pub struct ContextDirs {
    live: Arc<Mutex<HashSet<PathBuf>>>,
}

impl ContextDirs {
    /// A new folder name under `root`, registered as live before it exists.
    pub fn reserve(&self, root: &Path) -> PathBuf {
        let dir = root.join(random_token().to_ascii_lowercase());
        lock(&self.live).insert(dir.clone());
        dir
    }

    /// Removes `dir` and forgets it.
    pub fn release(&self, dir: &Path) {
        if let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a build context");
        }
        lock(&self.live).remove(dir);
    }

    /// Removes the folders under `root` that no build of this process uses (left by an
    /// earlier process that stopped while building).
    pub fn sweep(&self, root: &Path) {
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        let stale: Vec<PathBuf> = {
            let live = lock(&self.live);
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| !live.contains(p))
                .collect()
        };
        for dir in stale {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_bound_to_their_upload() {
        let tokens = UploadTokens::default();
        let t = tokens.issue("tpl", "abc", UPLOAD_TOKEN_TTL);
        assert_eq!(
            tokens.redeem("nope", "tpl", "abc"),
            Err(TokenError::Unknown)
        );
        assert_eq!(tokens.redeem(&t, "tpl", "def"), Err(TokenError::Mismatch));
        assert_eq!(tokens.redeem(&t, "other", "abc"), Err(TokenError::Mismatch));
        assert_eq!(tokens.redeem(&t, "tpl", "abc"), Ok(()));
        assert_eq!(tokens.redeem(&t, "tpl", "abc"), Err(TokenError::Unknown));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let tokens = UploadTokens::default();
        let t = tokens.issue("tpl", "abc", Duration::ZERO);
        assert_eq!(tokens.redeem(&t, "tpl", "abc"), Err(TokenError::Unknown));
    }

    #[test]
    fn sweep_keeps_live_folders_only() {
        let root = tempfile::tempdir().expect("tempdir");
        let dirs = ContextDirs::default();
        let live = dirs.reserve(root.path());
        std::fs::create_dir_all(&live).expect("mkdir");
        let stale = root.path().join("stale");
        std::fs::create_dir_all(&stale).expect("mkdir");
        dirs.sweep(root.path());
        assert!(live.is_dir());
        assert!(!stale.exists());
        dirs.release(&live);
        assert!(!live.exists());
    }
}
