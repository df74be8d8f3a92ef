//! Sandbox records: one row per sandbox that exists (starting, running, paused).
//!
//! A row is written before the VM starts, so that a crash during start leaves a record
//! that restart recovery finds and cleans up; it is deleted once the sandbox is gone.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, Row, params};
use warren_proto::api::StringMap;

use super::{Store, StoreError, from_db_time, to_db_time};
use crate::lifecycle::Phase;

/// Everything the control plane persists about a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub template_id: String,
    pub phase: Phase,
    pub started_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub metadata: StringMap,
    pub env_vars: StringMap,
    pub allow_internet: Option<bool>,
    /// The envd access token (`X-Access-Token`) of this sandbox.
    pub access_token: String,
    /// Host port forwarded to the agent, once the VM is up.
    pub agent_port: Option<u16>,
    /// QEMU's pid, once the VM is up.
    pub pid: Option<u32>,
    /// `<data_dir>/sandboxes/<id>`: overlay, sockets, logs of this VM.
    pub run_dir: PathBuf,
    pub auto_pause: bool,
    pub auto_resume: bool,
}

const COLUMNS: &str = "id, template_id, state, started_at, end_at, vcpus, memory_mb, disk_mb, \
    metadata, env_vars, allow_internet, access_token, agent_port, pid, run_dir, auto_pause, \
    auto_resume";

fn bad_column(index: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("invalid {what}").into(),
    )
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<SandboxRecord> {
    let state: String = row.get(2)?;
    let json = |index: usize| -> rusqlite::Result<StringMap> {
        let text: String = row.get(index)?;
        serde_json::from_str(&text).map_err(|_| bad_column(index, "JSON map"))
    };
    Ok(SandboxRecord {
        id: row.get(0)?,
        template_id: row.get(1)?,
        phase: Phase::parse(&state).ok_or_else(|| bad_column(2, "state"))?,
        started_at: from_db_time(&row.get::<_, String>(3)?)?,
        end_at: from_db_time(&row.get::<_, String>(4)?)?,
        vcpus: row.get(5)?,
        memory_mb: row.get(6)?,
        disk_mb: row.get(7)?,
        metadata: json(8)?,
        env_vars: json(9)?,
        allow_internet: row.get(10)?,
        access_token: row.get(11)?,
        agent_port: row.get(12)?,
        pid: row.get(13)?,
        run_dir: PathBuf::from(row.get::<_, String>(14)?),
        auto_pause: row.get(15)?,
        auto_resume: row.get(16)?,
    })
}

fn to_json(id: &str, map: &StringMap) -> Result<String, StoreError> {
    serde_json::to_string(map).map_err(|source| StoreError::Malformed {
        id: id.to_owned(),
        source,
    })
}

impl Store {
    /// Inserts a new sandbox record.
    pub fn insert_sandbox(&self, r: &SandboxRecord) -> Result<(), StoreError> {
        let metadata = to_json(&r.id, &r.metadata)?;
        let env_vars = to_json(&r.id, &r.env_vars)?;
        self.lock().execute(
            &format!(
                "INSERT INTO sandboxes ({COLUMNS}) VALUES \
                (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ),
            params![
                r.id,
                r.template_id,
                r.phase.as_str(),
                to_db_time(r.started_at),
                to_db_time(r.end_at),
                r.vcpus,
                r.memory_mb,
                r.disk_mb,
                metadata,
                env_vars,
                r.allow_internet,
                r.access_token,
                r.agent_port,
                r.pid,
                r.run_dir.to_string_lossy(),
                r.auto_pause,
                r.auto_resume,
            ],
        )?;
        Ok(())
    }

    /// Records where a started VM's agent listens and its process id, and its new phase.
    pub fn set_sandbox_running(
        &self,
        id: &str,
        phase: Phase,
        agent_port: Option<u16>,
        pid: Option<u32>,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE sandboxes SET state = ?2, agent_port = ?3, pid = ?4 WHERE id = ?1",
            params![id, phase.as_str(), agent_port, pid],
        )?;
        Ok(())
    }

    /// Updates the phase of a sandbox.
    pub fn set_sandbox_phase(&self, id: &str, phase: Phase) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE sandboxes SET state = ?2 WHERE id = ?1",
            params![id, phase.as_str()],
        )?;
        Ok(())
    }

    /// Moves the deadline of a sandbox.
    pub fn set_sandbox_end(&self, id: &str, end_at: DateTime<Utc>) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE sandboxes SET end_at = ?2 WHERE id = ?1",
            params![id, to_db_time(end_at)],
        )?;
        Ok(())
    }

    /// Deletes a sandbox record; `false` if there was none.
    pub fn delete_sandbox(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .execute("DELETE FROM sandboxes WHERE id = ?1", params![id])?
            > 0)
    }

    /// One sandbox record.
    pub fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"))?;
        Ok(stmt.query_row(params![id], from_row).optional()?)
    }

    /// All sandbox records, oldest first.
    pub fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM sandboxes ORDER BY started_at, id"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(id: &str) -> SandboxRecord {
        let now = DateTime::from_timestamp(1_796_000_000, 123_456_000).expect("time");
        SandboxRecord {
            id: id.into(),
            template_id: "base".into(),
            phase: Phase::Starting,
            started_at: now,
            end_at: now + chrono::Duration::seconds(300),
            vcpus: 2,
            memory_mb: 512,
            disk_mb: 2048,
            metadata: [("k y".to_owned(), "v&x".to_owned())].into_iter().collect(),
            env_vars: StringMap::new(),
            allow_internet: None,
            access_token: "tok".into(),
            agent_port: None,
            pid: None,
            run_dir: PathBuf::from("/tmp/run"),
            auto_pause: false,
            auto_resume: false,
        }
    }

    #[test]
    fn sandbox_round_trip_update_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut r = record("aaaa");
        store.insert_sandbox(&r).expect("insert");
        assert!(
            store.insert_sandbox(&r).is_err(),
            "duplicate id must be refused"
        );
        store
            .set_sandbox_running("aaaa", Phase::Running, Some(4000), Some(42))
            .expect("update");
        let later = r.end_at + chrono::Duration::seconds(10);
        store.set_sandbox_end("aaaa", later).expect("end");
        drop(store);

        let store = Store::open(dir.path()).expect("reopen");
        let got = store.get_sandbox("aaaa").expect("get").expect("present");
        r.phase = Phase::Running;
        r.agent_port = Some(4000);
        r.pid = Some(42);
        r.end_at = later;
        assert_eq!(got, r);
        assert_eq!(store.list_sandboxes().expect("list"), vec![r]);
        assert!(store.delete_sandbox("aaaa").expect("delete"));
        assert!(!store.delete_sandbox("aaaa").expect("delete again"));
        assert!(store.get_sandbox("aaaa").expect("get").is_none());
    }
}
