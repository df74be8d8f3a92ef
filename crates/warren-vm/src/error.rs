//! Errors of VM operations, one enum per operation; the cause sits in `#[source]`.

use std::path::PathBuf;

use crate::qmp::QmpError;
use crate::vm::VmExit;

/// Why [`crate::Vm::launch`] failed. Nothing is left running after an error.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot prepare the run dir {path}")]
    PrepareRunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find a free host port for the agent")]
    PickPort(#[source] std::io::Error),
    #[error("cannot start qemu-system-x86_64")]
    Spawn(#[source] std::io::Error),
    #[error("QEMU exited during startup ({status}): {log_tail}")]
    Exited {
        status: std::process::ExitStatus,
        log_tail: String,
    },
    #[error("QEMU's QMP socket did not come up in time")]
    QmpTimeout,
    #[error("cannot set up the QMP session")]
    Qmp(#[source] QmpError),
    #[error("cannot write the VM state file {path}")]
    WriteState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why [`crate::Vm::attach`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("cannot read the VM state file {path}")]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse the VM state file {path}")]
    ParseState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("QEMU (pid {pid}) of this run dir is not running")]
    NotRunning { pid: u32 },
    #[error("cannot reconnect to QMP")]
    Qmp(#[source] QmpError),
}

/// Why waiting for the guest agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentWaitError {
    #[error("the VM exited ({exit}) before its agent answered; console tail: {console_tail}")]
    Exited { exit: VmExit, console_tail: String },
    #[error("the agent did not answer GET /health in time; console tail: {console_tail}")]
    Timeout { console_tail: String },
}

/// Why [`crate::Vm::stop`] or [`crate::Vm::kill`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("cannot signal QEMU (pid {pid})")]
    Kill {
        pid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("QEMU (pid {pid}) did not exit after SIGKILL")]
    NoExit { pid: u32 },
}
