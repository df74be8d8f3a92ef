//! Errors of the manager's commands, one enum per command, each with an [`ErrorKind`]
//! that front ends (REST, CLI) map to their own codes.

use std::path::PathBuf;

use crate::agent::AgentError;
use crate::lifecycle::TransitionError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

/// The class of a failure, independent of the front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (bad value); retrying it cannot help.
    InvalidRequest,
    /// No such sandbox.
    NotFound,
    /// The sandbox exists but is in a state that does not allow this.
    Conflict,
    /// A server limit is reached.
    TooMany,
    /// The sandbox's agent cannot be reached or answered wrongly.
    AgentUnavailable,
    /// Not implemented by this server yet.
    NotImplemented,
    /// Anything else: the server failed.
    Internal,
}

/// A timeout outside 1..=max seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timeout must be between 1 and {max} seconds, got {requested}")]
pub struct InvalidTimeout {
    pub requested: i64,
    pub max: u64,
}

/// Failure of [`SandboxManager::create`](super::SandboxManager::create).
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    InvalidTimeout(InvalidTimeout),
    #[error("templateID must not be empty")]
    EmptyTemplate,
    #[error("the server already runs its maximum of {0} sandboxes")]
    TooMany(usize),
    #[error("cannot create the run directory {path}")]
    CreateRunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot record the sandbox")]
    Store(#[from] StoreError),
    #[error("cannot start the sandbox VM")]
    StartVm(#[source] RuntimeError),
    #[error("the sandbox agent did not come up")]
    AgentBoot(#[source] AgentError),
    #[error("cannot initialise the sandbox agent")]
    AgentInit(#[source] AgentError),
    #[error("the sandbox was killed while it was starting")]
    KilledDuringStart,
    #[error("the create task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl CreateError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CreateError::InvalidTimeout(_) | CreateError::EmptyTemplate => {
                ErrorKind::InvalidRequest
            }
            CreateError::StartVm(RuntimeError::UnknownTemplate(_)) => ErrorKind::InvalidRequest,
            CreateError::TooMany(_) => ErrorKind::TooMany,
            CreateError::KilledDuringStart => ErrorKind::Conflict,
            _ => ErrorKind::Internal,
        }
    }
}

/// Failure of [`SandboxManager::connect`](super::SandboxManager::connect).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error(transparent)]
    InvalidTimeout(InvalidTimeout),
    #[error("cannot connect to sandbox {id}")]
    NotRunning {
        id: String,
        #[source]
        source: TransitionError,
    },
    #[error("cannot record the sandbox's new state")]
    Store(#[from] StoreError),
    #[error("cannot start the VM from the pause snapshot")]
    StartVm(#[source] RuntimeError),
    #[error("the resumed sandbox agent did not come up")]
    AgentBoot(#[source] AgentError),
    #[error("cannot re-key the resumed sandbox agent")]
    AgentInit(#[source] AgentError),
    #[error("the resume task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl ConnectError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectError::NotFound(_) => ErrorKind::NotFound,
            ConnectError::InvalidTimeout(_) => ErrorKind::InvalidRequest,
            ConnectError::NotRunning { .. } => ErrorKind::Conflict,
            ConnectError::Store(_)
            | ConnectError::StartVm(_)
            | ConnectError::AgentBoot(_)
            | ConnectError::AgentInit(_)
            | ConnectError::Task(_) => ErrorKind::Internal,
        }
    }
}

/// Failure of [`SandboxManager::pause`](super::SandboxManager::pause).
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("cannot pause sandbox {id}")]
    NotRunning {
        id: String,
        #[source]
        source: TransitionError,
    },
    #[error("the sandbox agent does not answer")]
    UnhealthyGuest(#[source] AgentError),
    #[error("cannot prepare the pause snapshot directory {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot snapshot the sandbox")]
    Snapshot(#[source] RuntimeError),
    #[error("the sandbox is paused but its VM could not be stopped")]
    StopVm(#[source] RuntimeError),
    #[error("cannot record the paused sandbox")]
    Store(#[from] StoreError),
    #[error("the pause task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl PauseError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PauseError::NotFound(_) => ErrorKind::NotFound,
            // E2B's SDKs read 409 as "already paused".
            PauseError::NotRunning { .. } => ErrorKind::Conflict,
            PauseError::UnhealthyGuest(_) => ErrorKind::AgentUnavailable,
            PauseError::Prepare { .. }
            | PauseError::Snapshot(_)
            | PauseError::StopVm(_)
            | PauseError::Store(_)
            | PauseError::Task(_) => ErrorKind::Internal,
        }
    }
}

/// Failure of [`SandboxManager::kill`](super::SandboxManager::kill).
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("cannot stop the sandbox VM")]
    Runtime(#[source] RuntimeError),
    #[error("cannot remove the sandbox record")]
    Store(#[from] StoreError),
    #[error("the kill task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl KillError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            KillError::NotFound(_) => ErrorKind::NotFound,
            KillError::Runtime(_) | KillError::Store(_) | KillError::Task(_) => ErrorKind::Internal,
        }
    }
}

/// Failure of [`SandboxManager::set_timeout`](super::SandboxManager::set_timeout).
#[derive(Debug, thiserror::Error)]
pub enum SetTimeoutError {
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error(transparent)]
    InvalidTimeout(InvalidTimeout),
    #[error("cannot change the timeout of sandbox {id}")]
    NotRunning {
        id: String,
        #[source]
        source: TransitionError,
    },
    #[error("cannot record the new timeout")]
    Store(#[from] StoreError),
}

impl SetTimeoutError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SetTimeoutError::NotFound(_) => ErrorKind::NotFound,
            SetTimeoutError::InvalidTimeout(_) => ErrorKind::InvalidRequest,
            SetTimeoutError::NotRunning { .. } => ErrorKind::Conflict,
            SetTimeoutError::Store(_) => ErrorKind::Internal,
        }
    }
}

/// Failure of [`SandboxManager::metrics`](super::SandboxManager::metrics).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("cannot read metrics of sandbox {id}")]
    NotRunning {
        id: String,
        #[source]
        source: TransitionError,
    },
    #[error("cannot read metrics from the sandbox agent")]
    Agent(#[source] AgentError),
}

impl MetricsError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            MetricsError::NotFound(_) => ErrorKind::NotFound,
            MetricsError::NotRunning { .. } => ErrorKind::Conflict,
            MetricsError::Agent(_) => ErrorKind::AgentUnavailable,
        }
    }
}

/// Failure of [`SandboxManager::list`](super::SandboxManager::list).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("nextToken is not a token returned by this server")]
    InvalidToken,
}

impl ListError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidRequest
    }
}

/// Failure of [`SandboxManager::route`](super::SandboxManager::route) (the gateway).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the sandbox {0} was not found")]
    NotFound(String),
    #[error("the sandbox {id} is not running")]
    NotRunning {
        id: String,
        #[source]
        source: TransitionError,
    },
}

/// Failure of [`SandboxManager::start`](super::SandboxManager::start).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the sandboxes directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read sandbox records")]
    Store(#[from] StoreError),
    #[error("cannot create the agent client")]
    AgentClient(#[source] AgentError),
}
