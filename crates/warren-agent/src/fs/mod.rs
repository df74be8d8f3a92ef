//! Filesystem access on behalf of a sandbox user: path resolution, `EntryInfo`, ownership.
//!
//! The agent runs as root and performs file operations itself; it does not check the
//! selected user's permissions (known shortcoming: inside a sandbox every user may become
//! root anyway, so the VM is the security boundary). What it does do is give files and
//! directories it creates to the selected user, so that they look as if the user made them.

pub mod service;
pub mod watch;

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::unistd::{Gid, Uid};
use warren_proto::connect::{ConnectError, ErrorCode};
use warren_proto::envd::filesystem::{EntryInfo, FileType};

use crate::user::User;

/// Resolves `~`, `~/x` and relative paths against the user's home and removes `.` and `..`
/// components lexically (so that returned paths are clean absolute paths).
pub fn resolve_path(path: &str, user: &User) -> PathBuf {
    let raw = if path == "~" {
        user.home.clone()
    } else if let Some(rest) = path.strip_prefix("~/") {
        user.home.join(rest)
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        user.home.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in raw.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Maps an I/O error on `path` to a Connect error.
pub fn io_to_connect(err: &io::Error, what: &str, path: &Path) -> ConnectError {
    let code = match err.kind() {
        io::ErrorKind::NotFound => ErrorCode::NotFound,
        io::ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
        io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        io::ErrorKind::InvalidInput => ErrorCode::InvalidArgument,
        _ => match err.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => ErrorCode::ResourceExhausted,
            Some(libc::ENOTDIR | libc::EISDIR | libc::ENOTEMPTY | libc::EXDEV) => {
                ErrorCode::InvalidArgument
            }
            _ => ErrorCode::Internal,
        },
    };
    ConnectError::new(code, format!("{what} {}: {err}", path.display()))
}

/// `ls -l`-style permission string (`drwxr-xr-x`).
pub fn permission_string(meta: &Metadata) -> String {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else {
        '-'
    };
    let mode = meta.permissions().mode();
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// Describes `path` without following a final symlink (whose target is reported).
pub fn entry_info(path: &Path) -> io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let (file_type, symlink_target) = if ft.is_symlink() {
        let target = std::fs::read_link(path)?;
        let absolute = match path.parent() {
            Some(parent) if target.is_relative() => parent.join(&target),
            _ => target,
        };
        (
            FileType::Symlink,
            Some(absolute.to_string_lossy().into_owned()),
        )
    } else if ft.is_dir() {
        (FileType::Directory, None)
    } else if ft.is_file() {
        (FileType::File, None)
    } else {
        (FileType::Unspecified, None)
    };
    let modified = DateTime::<Utc>::from_timestamp(
        meta.mtime(),
        u32::try_from(meta.mtime_nsec()).unwrap_or(0),
    );
    Ok(EntryInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        file_type,
        path: path.to_string_lossy().into_owned(),
        size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
        mode: meta.permissions().mode() & 0o777,
        permissions: permission_string(&meta),
        owner: user_name(meta.uid()),
        group: group_name(meta.gid()),
        modified_time: modified,
        symlink_target,
        metadata: Default::default(),
        is_symlink: ft.is_symlink(),
    })
}

/// Gives `path` to `user` when the agent is root (a no-op otherwise).
pub fn chown_to(path: &Path, user: &User) -> io::Result<()> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
}

/// Creates `dir` and its missing ancestors, giving each created directory to `user`.
pub fn create_dirs_owned(dir: &Path, user: &User) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => chown_to(d, user)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_against_home() {
        let mut user = User::current();
        user.home = PathBuf::from("/home/user");
        assert_eq!(
            resolve_path("a.txt", &user),
            PathBuf::from("/home/user/a.txt")
        );
        assert_eq!(resolve_path("~", &user), PathBuf::from("/home/user"));
        assert_eq!(
            resolve_path("~/x/../y", &user),
            PathBuf::from("/home/user/y")
        );
        assert_eq!(
            resolve_path("/etc/./hosts", &user),
            PathBuf::from("/etc/hosts")
        );
        assert_eq!(resolve_path("/../..", &user), PathBuf::from("/"));
    }
}
