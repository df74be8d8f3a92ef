//! Finished builds' logs on disk, so that a restarted server still serves them.
//!
//! A build's log lives in memory while it runs (readers wait on it by offset); when the build
//! ends, the whole log is written to `<data>/templates/logs/<build_id>.json` (a JSON array
//! of E2B log entries; written to a temporary file, fsynced and renamed, so a reader sees the
//! old file or the new one, never half of one). A build cut off by a server stop or crash
//! never reaches that point: after the restart it is marked failed, without log lines.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use warren_template::logs::LogEntry;

/// `<data>/templates/logs`.
pub(super) fn dir(templates_dir: &Path) -> PathBuf {
    templates_dir.join("logs")
}

fn path(templates_dir: &Path, build_id: &str) -> Option<PathBuf> {
    // Build ids are generated ([a-z0-9]); anything else never names a file.
    let valid = !build_id.is_empty() && build_id.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| dir(templates_dir).join(format!("{build_id}.json")))
}

/// Writes the finished log of `build_id`.
pub(super) fn save(
    templates_dir: &Path,
    build_id: &str,
    entries: &[LogEntry],
) -> std::io::Result<()> {
    let Some(path) = path(templates_dir, build_id) else {
        return Err(std::io::Error::other(format!("bad build id {build_id:?}")));
    };
    std::fs::create_dir_all(dir(templates_dir))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(entries)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// The saved log of `build_id`, if there is one.
pub(super) fn load(templates_dir: &Path, build_id: &str) -> Option<Vec<LogEntry>> {
    let bytes = std::fs::read(path(templates_dir, build_id)?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the saved log of `build_id` (a deleted template's builds).
pub(super) fn remove(templates_dir: &Path, build_id: &str) {
    if let Some(path) = path(templates_dir, build_id) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_template::logs::{BuildLog, LogLevel};

    #[test]
    fn a_saved_log_reads_back_and_bad_ids_name_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = BuildLog::new();
        log.push(LogLevel::Info, Some("step-1"), "hello");
        log.push(LogLevel::Error, None, "failed");
        let entries = log.since(0);
        save(dir.path(), "b1", &entries).unwrap();
        // Timestamps are kept to the microsecond, as the API shows them.
        let json = |e: &[LogEntry]| serde_json::to_value(e).unwrap();
        assert_eq!(json(&load(dir.path(), "b1").unwrap()), json(&entries));
        assert_eq!(load(dir.path(), "b2"), None);
        assert!(save(dir.path(), "../x", &[]).is_err());
        assert_eq!(load(dir.path(), "../b1"), None);
        remove(dir.path(), "b1");
        assert_eq!(load(dir.path(), "b1"), None);
    }
}
