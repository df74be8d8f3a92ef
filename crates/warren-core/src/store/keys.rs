//! API key records. Only the SHA-256 of a key is stored; see `crate::api_keys`.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError, from_db_time, to_db_time};

/// A stored API key (without the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Stores a new key by its hash.
    pub fn insert_api_key(&self, record: &ApiKeyRecord, key_hash: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO api_keys (id, name, key_hash, created_at, revoked_at) \
             VALUES (?1, ?2, ?3, ?4, NULL)",
            params![
                record.id,
                record.name,
                key_hash,
                to_db_time(record.created_at)
            ],
        )?;
        Ok(())
    }

    /// All keys, revoked ones included, oldest first.
    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |row| {
            let revoked: Option<String> = row.get(3)?;
            Ok(ApiKeyRecord {
                id: row.get(0)?,
                name: row.get(1)?,
                created_at: from_db_time(&row.get::<_, String>(2)?)?,
                revoked_at: revoked.as_deref().map(from_db_time).transpose()?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Whether a key with this hash exists and is not revoked.
    pub fn api_key_hash_is_active(&self, key_hash: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        let found: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
                params![key_hash],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Marks a key revoked; `false` if no active key has this id.
    pub fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let changed = self.lock().execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, to_db_time(at)],
        )?;
        Ok(changed > 0)
    }
}
