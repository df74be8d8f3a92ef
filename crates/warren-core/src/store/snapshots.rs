//! Snapshot records. The snapshot commands that fill this table come with the snapshot
//! runtime; the table and its typed access exist now so the schema is settled.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, Row, params};

use super::{Store, StoreError, from_db_time, to_db_time};

/// A snapshot: a disk layer and optionally a memory image, under `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// `<templateID>:<tag>` or `<namespace>/<name>:<tag>`.
    pub id: String,
    pub names: Vec<String>,
    pub source_sandbox: Option<String>,
    /// Template of the sandbox the snapshot was taken from.
    pub template_id: String,
    pub created_at: DateTime<Utc>,
    pub disk_bytes: u64,
    pub memory_bytes: u64,
    pub has_memory: bool,
    pub dir: PathBuf,
    /// Files of the snapshot, relative to `dir`.
    pub files: Vec<String>,
}

const COLUMNS: &str = "id, names, source_sandbox, template_id, created_at, disk_bytes, \
    memory_bytes, has_memory, dir, files";

fn from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotRecord> {
    let list = |index: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = row.get(index)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into())
        })
    };
    Ok(SnapshotRecord {
        id: row.get(0)?,
        names: list(1)?,
        source_sandbox: row.get(2)?,
        template_id: row.get(3)?,
        created_at: from_db_time(&row.get::<_, String>(4)?)?,
        disk_bytes: row.get(5)?,
        memory_bytes: row.get(6)?,
        has_memory: row.get(7)?,
        dir: PathBuf::from(row.get::<_, String>(8)?),
        files: list(9)?,
    })
}

impl Store {
    /// Stores a snapshot record.
    pub fn insert_snapshot(&self, r: &SnapshotRecord) -> Result<(), StoreError> {
        let json = |v: &Vec<String>| {
            serde_json::to_string(v).map_err(|source| StoreError::Malformed {
                id: r.id.clone(),
                source,
            })
        };
        self.lock().execute(
            &format!("INSERT INTO snapshots ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"),
            params![
                r.id,
                json(&r.names)?,
                r.source_sandbox,
                r.template_id,
                to_db_time(r.created_at),
                r.disk_bytes,
                r.memory_bytes,
                r.has_memory,
                r.dir.to_string_lossy(),
                json(&r.files)?,
            ],
        )?;
        Ok(())
    }

    /// One snapshot.
    pub fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM snapshots WHERE id = ?1"))?;
        Ok(stmt.query_row(params![id], from_row).optional()?)
    }

    /// All snapshots, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM snapshots ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Deletes a snapshot record; `false` if there was none.
    pub fn delete_snapshot(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .execute("DELETE FROM snapshots WHERE id = ?1", params![id])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let r = SnapshotRecord {
            id: "team/snap:default".into(),
            names: vec!["team/snap:default".into()],
            source_sandbox: Some("abc".into()),
            template_id: "base".into(),
            created_at: DateTime::from_timestamp(1_796_000_000, 0).expect("time"),
            disk_bytes: 10,
            memory_bytes: 20,
            has_memory: true,
            dir: PathBuf::from("/d"),
            files: vec!["disk.qcow2".into(), "mem.raw".into()],
        };
        store.insert_snapshot(&r).expect("insert");
        assert_eq!(store.get_snapshot(&r.id).expect("get"), Some(r.clone()));
        assert_eq!(store.list_snapshots().expect("list"), vec![r.clone()]);
        assert!(store.delete_snapshot(&r.id).expect("delete"));
        assert!(store.get_snapshot(&r.id).expect("get").is_none());
    }
}
