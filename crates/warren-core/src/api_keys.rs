//! API keys of the control plane.
//!
//! A key is `wrn_` followed by 40 random alphanumeric characters (about 238 bits). Only its
//! SHA-256 is stored, so a leaked database does not leak usable keys. On first start the
//! server creates one key, writes it to `<data_dir>/api-key` (mode 0600) and prints it once.
//! `WARREN_API_KEY` ([`Config::static_api_key`](crate::Config)) adds a key that is never stored.
//! The CLI calls the functions here directly on the data dir; the server checks every request
//! against the database, so a key revoked by the CLI stops working at once.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::Utc;
use sha2::{Digest as _, Sha256};

use crate::ids;
use crate::store::{ApiKeyRecord, Store, StoreError};

/// Prefix of every generated key.
pub const KEY_PREFIX: &str = "wrn_";

/// Failure of an API key operation.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("cannot access the API key table")]
    Store(#[from] StoreError),
    #[error("cannot write the API key file {path}")]
    WriteKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A newly created key; `key` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub key: String,
}

/// SHA-256 of a key, hex encoded: what the database stores.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates and stores a new key.
pub fn create_key(store: &Store, name: &str) -> Result<NewApiKey, ApiKeyError> {
    let key = format!("{KEY_PREFIX}{}", ids::secret(40));
    let record = ApiKeyRecord {
        id: format!("key_{}", ids::secret(12).to_ascii_lowercase()),
        name: name.to_owned(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    store.insert_api_key(&record, &hash_key(&key))?;
    tracing::info!(key_id = %record.id, name, "API key created");
    Ok(NewApiKey { record, key })
}

/// All keys, revoked ones included.
pub fn list_keys(store: &Store) -> Result<Vec<ApiKeyRecord>, ApiKeyError> {
    Ok(store.list_api_keys()?)
}

/// Revokes a key by id; `false` if no active key has that id.
pub fn revoke_key(store: &Store, id: &str) -> Result<bool, ApiKeyError> {
    let revoked = store.revoke_api_key(id, Utc::now())?;
    if revoked {
        tracing::info!(key_id = id, "API key revoked");
    }
    Ok(revoked)
}

/// On a store without any key, creates one named `default`, writes it to
/// `<data_dir>/api-key` with mode 0600 and returns it so the caller can print it once.
/// Returns `None` when keys already exist.
pub fn ensure_initial_key(store: &Store, data_dir: &Path) -> Result<Option<String>, ApiKeyError> {
    if !store.list_api_keys()?.is_empty() {
        return Ok(None);
    }
    let new = create_key(store, "default")?;
    let path = data_dir.join("api-key");
    write_private(&path, &new.key).map_err(|source| ApiKeyError::WriteKeyFile {
        path: path.clone(),
        source,
    })?;
    Ok(Some(new.key))
}

fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{key}")?;
    file.sync_all()
}

/// Whether `presented` is an accepted key: the static key or an active stored one.
pub fn verify(
    store: &Store,
    static_key: Option<&str>,
    presented: &str,
) -> Result<bool, ApiKeyError> {
    if presented.is_empty() {
        return Ok(false);
    }
    if let Some(expected) = static_key
        && constant_time_eq(expected.as_bytes(), presented.as_bytes())
    {
        return Ok(true);
    }
    // Looking up by hash compares digests, not the key, so timing reveals nothing usable.
    Ok(store.api_key_hash_is_active(&hash_key(presented))?)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_key_is_written_once_and_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let key = ensure_initial_key(&store, dir.path())
            .expect("ensure")
            .expect("created");
        assert!(key.starts_with(KEY_PREFIX) && key.len() == 44);
        let path = dir.path().join("api-key");
        assert_eq!(std::fs::read_to_string(&path).expect("read").trim(), key);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            ensure_initial_key(&store, dir.path())
                .expect("ensure again")
                .is_none()
        );
        assert!(verify(&store, None, &key).expect("verify"));
        assert!(!verify(&store, None, "wrn_wrong").expect("verify"));
        assert!(!verify(&store, None, "").expect("verify"));
    }

    #[test]
    fn static_key_and_revocation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        assert!(verify(&store, Some("env-key"), "env-key").expect("verify"));
        assert!(!verify(&store, Some("env-key"), "env-kez").expect("verify"));
        let new = create_key(&store, "ci").expect("create");
        assert!(verify(&store, None, &new.key).expect("verify"));
        assert!(revoke_key(&store, &new.record.id).expect("revoke"));
        assert!(!revoke_key(&store, &new.record.id).expect("revoke twice"));
        assert!(!verify(&store, None, &new.key).expect("verify revoked"));
        let keys = list_keys(&store).expect("list");
        assert_eq!(keys.len(), 1);
        assert!(keys[0].revoked_at.is_some());
    }
}
