//! Linux users that processes and file operations run as.
//!
//! The SDK selects a user with `Authorization: Basic base64("<user>:")` on RPCs and the
//! `username` query parameter on `/files`. Without one, the sandbox's default user applies
//! (set by `/init`, `user` unless told otherwise). When the default user does not exist on
//! this machine (host-side tests) the agent's own user is used instead; an explicitly named
//! user that does not exist is an error.

use std::ffi::CString;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nix::unistd::{Gid, Uid};

/// A resolved user account.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (including the primary one).
    pub groups: Vec<u32>,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
}

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The named user has no account.
    #[error("user {0:?} does not exist")]
    Unknown(String),
    /// Reading the account database failed.
    #[error("looking up user {name:?}")]
    Lookup {
        /// The user.
        name: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The `Authorization` header is not `Basic <base64 user:>`.
    #[error("malformed Authorization header")]
    BadHeader,
}

impl User {
    fn from_account(u: nix::unistd::User) -> Self {
        let groups = CString::new(u.name.clone())
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, u.gid).ok())
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_else(|| vec![u.gid.as_raw()]);
        Self {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups,
            home: u.dir,
            shell: u.shell.to_string_lossy().into_owned(),
        }
    }

    /// Looks up `name` in the account database.
    pub fn lookup(name: &str) -> Result<Self, UserError> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Self::from_account(u)),
            Ok(None) => Err(UserError::Unknown(name.to_owned())),
            Err(source) => Err(UserError::Lookup {
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// The user this agent runs as (fallback for a missing default user). Its home is
    /// `$HOME` when set, so that host-side tests can point it at a scratch directory.
    pub fn current() -> Self {
        let env_home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        match nix::unistd::User::from_uid(Uid::current()) {
            Ok(Some(u)) => {
                let mut user = Self::from_account(u);
                if let Some(home) = env_home {
                    user.home = home;
                }
                user
            }
            _ => Self {
                name: Uid::current().to_string(),
                uid: Uid::current().as_raw(),
                gid: Gid::current().as_raw(),
                groups: vec![Gid::current().as_raw()],
                home: env_home.unwrap_or_else(|| PathBuf::from("/")),
                shell: "/bin/sh".to_owned(),
            },
        }
    }

    /// Resolves an optional requested user against the default user.
    pub fn resolve(requested: Option<&str>, default: &str) -> Result<Self, UserError> {
        match requested.filter(|n| !n.is_empty()) {
            Some(name) => Self::lookup(name),
            None => match Self::lookup(default) {
                Err(UserError::Unknown(_)) => Ok(Self::current()),
                other => other,
            },
        }
    }

    /// Whether switching to this user is needed (the agent is root and this is not root).
    pub fn needs_switch(&self) -> bool {
        Uid::effective().is_root() && self.uid != 0
    }
}

/// Extracts the user name from `Authorization: Basic base64("<user>:")`.
pub fn basic_auth_user(header: &str) -> Result<String, UserError> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .ok_or(UserError::BadHeader)?;
    let raw = STANDARD
        .decode(encoded.trim())
        .map_err(|_| UserError::BadHeader)?;
    let text = String::from_utf8(raw).map_err(|_| UserError::BadHeader)?;
    Ok(text
        .split_once(':')
        .map_or(text.as_str(), |(u, _)| u)
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_auth() {
        assert_eq!(basic_auth_user("Basic cm9vdDo=").unwrap(), "root");
        assert!(basic_auth_user("Bearer x").is_err());
    }
}
