//! Template and build records. The records themselves are warren-template's registry types,
//! stored as JSON next to the columns that are looked up (name, template, creation time);
//! the registry's pure functions decide what changes, this module only persists it.

use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use warren_template::registry::{BuildRecord, TemplateRecord};

use super::{Store, StoreError, to_db_time};

fn to_json<T: Serialize>(id: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Malformed {
        id: id.to_owned(),
        source,
    })
}

fn from_json<T: DeserializeOwned>(id: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Malformed {
        id: id.to_owned(),
        source,
    })
}

impl Store {
    /// Inserts or replaces a template record.
    pub fn put_template(&self, r: &TemplateRecord) -> Result<(), StoreError> {
        let json = to_json(&r.template_id, r)?;
        self.lock().execute(
            "INSERT INTO templates (template_id, name, record) VALUES (?1, ?2, ?3)
             ON CONFLICT(template_id) DO UPDATE SET name = ?2, record = ?3",
            params![r.template_id, r.def.name, json],
        )?;
        Ok(())
    }

    /// All templates.
    pub fn list_templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        self.json_records("SELECT template_id, record FROM templates ORDER BY name")
    }

    /// Decodes `(id, JSON record)` rows.
    fn json_records<T: DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, text) = row?;
            out.push(from_json(&id, &text)?);
        }
        Ok(out)
    }

    /// Deletes a template and its builds; `false` if there was none.
    pub fn delete_template(&self, template_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM template_builds WHERE template_id = ?1",
            params![template_id],
        )?;
        let n = tx.execute(
            "DELETE FROM templates WHERE template_id = ?1",
            params![template_id],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Inserts or replaces a build record.
    pub fn put_build(&self, b: &BuildRecord) -> Result<(), StoreError> {
        let json = to_json(&b.build_id, b)?;
        self.lock().execute(
            "INSERT INTO template_builds (build_id, template_id, created_at, record)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(build_id) DO UPDATE SET record = ?4",
            params![b.build_id, b.template_id, to_db_time(b.created_at), json],
        )?;
        Ok(())
    }

    /// Stores a finished build and the template it updated in one transaction, so a crash
    /// never leaves a template pointing at a build that is not recorded as ready.
    pub fn finish_build(&self, t: &TemplateRecord, b: &BuildRecord) -> Result<(), StoreError> {
        let (tj, bj) = (to_json(&t.template_id, t)?, to_json(&b.build_id, b)?);
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE template_builds SET record = ?2 WHERE build_id = ?1",
            params![b.build_id, bj],
        )?;
        tx.execute(
            "UPDATE templates SET name = ?2, record = ?3 WHERE template_id = ?1",
            params![t.template_id, t.def.name, tj],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// One build.
    pub fn get_build(&self, build_id: &str) -> Result<Option<BuildRecord>, StoreError> {
        let conn = self.lock();
        let text: Option<String> = conn
            .query_row(
                "SELECT record FROM template_builds WHERE build_id = ?1",
                params![build_id],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| from_json(build_id, &t)).transpose()
    }

    /// All builds, oldest first.
    pub fn list_builds(&self) -> Result<Vec<BuildRecord>, StoreError> {
        self.json_records(
            "SELECT build_id, record FROM template_builds ORDER BY created_at, build_id",
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use warren_template::model::{Base, Resources, TemplateDef};
    use warren_template::plan::Force;
    use warren_template::registry;

    use super::*;

    fn def(name: &str) -> TemplateDef {
        TemplateDef {
            name: name.into(),
            tags: Vec::new(),
            base: Base::Image,
            steps: Vec::new(),
            start: None,
            resources: Resources::default(),
            step_timeout: None,
            default_user: None,
        }
    }

    #[test]
    fn templates_and_builds_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let now = DateTime::from_timestamp(1_796_000_000, 0).expect("time");
        let t = registry::create(&[], "tid", def("web"), now).expect("create");
        store.put_template(&t).expect("put");
        let b = registry::start_build(&t, def("web"), "b1", &Force::default(), now);
        store.put_build(&b).expect("put build");
        assert_eq!(store.list_templates().expect("list"), vec![t.clone()]);
        assert_eq!(store.get_build("b1").expect("get"), Some(b.clone()));
        assert_eq!(store.list_builds().expect("builds"), vec![b]);
        assert!(store.delete_template("tid").expect("delete"));
        assert!(store.list_builds().expect("builds").is_empty());
        assert!(!store.delete_template("tid").expect("delete again"));
    }
}
