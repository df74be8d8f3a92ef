//! Messages of `filesystem.Filesystem` (stat, list, create, move, remove and watch paths).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::json::{int32, int64, is_default, proto_enum, timestamp};

proto_enum! {
    /// Kind of a directory entry.
    FileType {
        /// Unknown (sockets, devices...); the Python SDK drops such entries from listings.
        Unspecified = 0 => "FILE_TYPE_UNSPECIFIED",
        /// Regular file.
        File = 1 => "FILE_TYPE_FILE",
        /// Directory.
        Directory = 2 => "FILE_TYPE_DIRECTORY",
        /// Symbolic link.
        Symlink = 3 => "FILE_TYPE_SYMLINK",
    }
}

proto_enum! {
    /// Kind of a filesystem change.
    EventType {
        /// Not set.
        Unspecified = 0 => "EVENT_TYPE_UNSPECIFIED",
        /// Created.
        Create = 1 => "EVENT_TYPE_CREATE",
        /// Written.
        Write = 2 => "EVENT_TYPE_WRITE",
        /// Removed.
        Remove = 3 => "EVENT_TYPE_REMOVE",
        /// Renamed.
        Rename = 4 => "EVENT_TYPE_RENAME",
        /// Permissions changed.
        Chmod = 5 => "EVENT_TYPE_CHMOD",
    }
}

/// Description of one filesystem entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EntryInfo {
    /// Base name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Kind.
    #[serde(rename = "type", skip_serializing_if = "is_default")]
    pub file_type: FileType,
    /// Absolute path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Size in bytes.
    #[serde(with = "int64", skip_serializing_if = "is_default")]
    pub size: i64,
    /// Permission bits (`0o777` part of the mode).
    #[serde(with = "int32", skip_serializing_if = "is_default")]
    pub mode: u32,
    /// `ls -l` style permissions, e.g. `-rw-r--r--`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub permissions: String,
    /// Owner name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Group name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Last modification.
    #[serde(with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<DateTime<Utc>>,
    /// Where a symlink points (absolute).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// User metadata.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Whether the entry is a symlink.
    #[serde(skip_serializing_if = "is_default")]
    pub is_symlink: bool,
}

/// Request with only a path (`Stat`, `MakeDir`, `Remove`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PathRequest {
    /// Absolute, relative to the user's home, or starting with `~`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// `Stat` request.
pub type StatRequest = PathRequest;
/// `MakeDir` request.
pub type MakeDirRequest = PathRequest;
/// `Remove` request.
pub type RemoveRequest = PathRequest;

/// Response with one entry (`Stat`, `MakeDir`, `Move`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntryResponse {
    /// The entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// `Stat` response.
pub type StatResponse = EntryResponse;
/// `MakeDir` response.
pub type MakeDirResponse = EntryResponse;
/// `Move` response.
pub type MoveResponse = EntryResponse;

/// `Move` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MoveRequest {
    /// Existing path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// New path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination: String,
}

/// `ListDir` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListDirRequest {
    /// Directory.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// 0 or 1: direct children; n: n levels.
    #[serde(with = "int32", skip_serializing_if = "is_default")]
    pub depth: u32,
}

/// `ListDir` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListDirResponse {
    /// Entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryInfo>,
}

/// `WatchDir` and `CreateWatcher` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WatchDirRequest {
    /// Directory to watch.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Include subdirectories.
    #[serde(skip_serializing_if = "is_default")]
    pub recursive: bool,
    /// Attach an `EntryInfo` to each event.
    #[serde(skip_serializing_if = "is_default")]
    pub include_entry: bool,
    /// Allow network filesystems (ignored: the guest has none).
    #[serde(skip_serializing_if = "is_default")]
    pub allow_network_mounts: bool,
}

/// `CreateWatcher` request.
pub type CreateWatcherRequest = WatchDirRequest;

/// One filesystem change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilesystemEvent {
    /// Path relative to the watched directory.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What happened.
    #[serde(rename = "type", skip_serializing_if = "is_default")]
    pub event_type: EventType,
    /// The entry, when asked for and it still exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// Empty start message of a watch stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStart {}

/// One message of the `WatchDir` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WatchDirResponse {
    /// Always first: the watch is active.
    Start(WatchStart),
    /// A change.
    Filesystem(FilesystemEvent),
    /// Sent on idle streams.
    Keepalive(super::process::KeepAlive),
}

/// `CreateWatcher` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CreateWatcherResponse {
    /// Id for `GetWatcherEvents`/`RemoveWatcher`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub watcher_id: String,
}

/// `GetWatcherEvents` and `RemoveWatcher` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WatcherRequest {
    /// The watcher.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub watcher_id: String,
}

/// `GetWatcherEvents` request.
pub type GetWatcherEventsRequest = WatcherRequest;
/// `RemoveWatcher` request.
pub type RemoveWatcherRequest = WatcherRequest;

/// `GetWatcherEvents` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GetWatcherEventsResponse {
    /// Events since the previous call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<FilesystemEvent>,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn entry_info_mapping() {
        let entry = EntryInfo {
            name: "a.txt".into(),
            file_type: FileType::File,
            path: "/home/user/a.txt".into(),
            size: 30,
            mode: 0o644,
            permissions: "-rw-r--r--".into(),
            owner: "user".into(),
            group: "user".into(),
            modified_time: Some(Utc.timestamp_opt(1_700_000_000, 500_000_000).unwrap()),
            symlink_target: None,
            metadata: BTreeMap::new(),
            is_symlink: false,
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"name":"a.txt","type":"FILE_TYPE_FILE","path":"/home/user/a.txt","#,
                r#""size":"30","mode":420,"permissions":"-rw-r--r--","owner":"user","#,
                r#""group":"user","modifiedTime":"2023-11-14T22:13:20.500Z"}"#
            )
        );
        assert_eq!(serde_json::from_str::<EntryInfo>(&json).unwrap(), entry);
        // Numbers for int64 and enums are accepted, as are offsets in timestamps.
        let other: EntryInfo = serde_json::from_str(
            r#"{"type":2,"size":30,"modifiedTime":"2023-11-14T23:13:20.5+01:00","isSymlink":true}"#,
        )
        .unwrap();
        assert_eq!(other.file_type, FileType::Directory);
        assert_eq!(other.size, 30);
        assert_eq!(other.modified_time, entry.modified_time);
        assert!(other.is_symlink);
    }

    #[test]
    fn watch_messages() {
        assert_eq!(
            serde_json::to_string(&WatchDirResponse::Start(WatchStart {})).unwrap(),
            r#"{"start":{}}"#
        );
        let ev = WatchDirResponse::Filesystem(FilesystemEvent {
            name: "new.txt".into(),
            event_type: EventType::Create,
            entry: None,
        });
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            json,
            r#"{"filesystem":{"name":"new.txt","type":"EVENT_TYPE_CREATE"}}"#
        );
        assert_eq!(serde_json::from_str::<WatchDirResponse>(&json).unwrap(), ev);
        let req: ListDirRequest = serde_json::from_str(r#"{"path":"/tmp","depth":2}"#).unwrap();
        assert_eq!(req.depth, 2);
        let req: WatchDirRequest =
            serde_json::from_str(r#"{"path":"/tmp","recursive":true,"includeEntry":true}"#)
                .unwrap();
        assert!(req.recursive && req.include_entry);
        assert_eq!(
            serde_json::to_string(&EntryResponse::default()).unwrap(),
            "{}"
        );
    }
}
