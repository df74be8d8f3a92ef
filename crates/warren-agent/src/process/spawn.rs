//! Starting child processes and collecting their exit statuses.
//!
//! Children are started with `std::process::Command` and never waited for through it: one
//! reaper task calls `waitpid(-1, WNOHANG)` on every `SIGCHLD` (and once a second as a
//! safety net) and hands each status to whoever registered the pid. This single point of
//! reaping also collects orphans re-parented to the agent (it is PID 1 or a subreaper), without
//! racing a per-child waiter. A pid is registered while the reaper lock is held across the
//! spawn, so a child that exits immediately cannot be reaped before it is known.
//!
//! Every child gets its own session (so signals can address its whole process group, and a
//! PTY can become its controlling terminal), and switches to the selected user's uid, gid
//! and supplementary groups after the fork.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::pty::{Winsize, openpty};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::io::AsyncFile;
use crate::user::User;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Normal exit with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether a core was dumped.
        core: bool,
    },
}

/// What to start.
#[derive(Debug)]
pub struct SpawnSpec {
    /// Executable.
    pub cmd: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// User to run as.
    pub user: User,
    /// Run in a PTY of this size (cols, rows).
    pub pty: Option<(u16, u16)>,
    /// Keep a stdin pipe.
    pub stdin: bool,
}

/// A started child and its descriptors.
pub struct Spawned {
    /// Its pid.
    pub pid: u32,
    /// Stdout pipe (no PTY).
    pub stdout: Option<AsyncFile>,
    /// Stderr pipe (no PTY).
    pub stderr: Option<AsyncFile>,
    /// Stdin pipe, when asked for (no PTY).
    pub stdin: Option<AsyncFile>,
    /// PTY master (read output, write input, resize).
    pub pty: Option<Arc<AsyncFile>>,
    /// Resolves when the child is reaped.
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `openpty` failed.
    #[error("opening a PTY")]
    OpenPty(#[source] nix::Error),
    /// Duplicating the PTY slave failed.
    #[error("preparing the PTY slave")]
    PtySlave(#[source] io::Error),
    /// fork/exec failed (missing executable, bad cwd...).
    #[error("starting {cmd:?}")]
    Exec {
        /// The command.
        cmd: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Registering a descriptor with the reactor failed.
    #[error("registering the child's descriptors")]
    Register(#[source] io::Error),
}

/// Collects exit statuses (see the module docs).
#[derive(Default, Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>,
}

impl Reaper {
    /// Makes the agent the reaper of its descendants' orphans (`PR_SET_CHILD_SUBREAPER`;
    /// implicit when it is PID 1) and starts the reaping task. Must be called inside the
    /// runtime.
    pub fn start(&self) -> io::Result<()> {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot become a subreaper");
        }
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(Duration::from_secs(1), sigchld.recv()).await;
                this.reap();
            }
        });
        Ok(())
    }

    fn reap(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, core)) => (
                    pid,
                    ExitStatus::Signaled {
                        signal: sig as i32,
                        core,
                    },
                ),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            match waiters.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => tracing::debug!(pid = pid.as_raw(), "reaped an orphan"),
            }
        }
    }

    /// Starts a child as described by `spec`.
    pub fn spawn(&self, spec: SpawnSpec) -> Result<Spawned, SpawnError> {
        let mut command = Command::new(&spec.cmd);
        command
            .args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().cloned())
            .current_dir(&spec.cwd);
        let mut pty_master = None;
        if let Some((cols, rows)) = spec.pty {
            let size = Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = openpty(Some(&size), None).map_err(SpawnError::OpenPty)?;
            let slave = |fd: &OwnedFd| -> Result<Stdio, SpawnError> {
                Ok(Stdio::from(
                    fd.as_fd()
                        .try_clone_to_owned()
                        .map_err(SpawnError::PtySlave)?,
                ))
            };
            command
                .stdin(slave(&pty.slave)?)
                .stdout(slave(&pty.slave)?)
                .stderr(slave(&pty.slave)?);
            pty_master = Some(pty.master);
            // `pty.slave` is dropped at the end of this block; the child keeps its copies.
        } else {
            command
                .stdin(if spec.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        let with_pty = spec.pty.is_some();
        let switch = spec.user.needs_switch().then(|| {
            let groups: Vec<libc::gid_t> = spec.user.groups.clone();
            (spec.user.uid, spec.user.gid, groups)
        });
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe functions (setsid, ioctl, setgroups, setgid, setuid) on data
        // prepared before the fork; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if with_pty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some((uid, gid, groups)) = &switch
                    && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                        || libc::setgid(*gid) < 0
                        || libc::setuid(*uid) < 0)
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, exit) = oneshot::channel();
        let mut child = {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            let child = command.spawn().map_err(|source| SpawnError::Exec {
                cmd: spec.cmd.clone(),
                source,
            })?;
            let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
            waiters.insert(pid, tx);
            child
        };
        drop(command);
        let pipe = |fd: Option<OwnedFd>| fd.map(AsyncFile::new).transpose();
        let stdout = pipe(child.stdout.take().map(OwnedFd::from)).map_err(SpawnError::Register)?;
        let stderr = pipe(child.stderr.take().map(OwnedFd::from)).map_err(SpawnError::Register)?;
        let stdin = pipe(child.stdin.take().map(OwnedFd::from)).map_err(SpawnError::Register)?;
        let pty = pipe(pty_master)
            .map_err(SpawnError::Register)?
            .map(Arc::new);
        Ok(Spawned {
            pid: child.id(),
            stdout,
            stderr,
            stdin,
            pty,
            exit,
        })
    }
}

/// Sends `signal` to the child's process group, or to the child alone if that fails.
pub fn signal_process(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).map_err(|_| nix::Error::ESRCH)?);
    nix::sys::signal::killpg(pid, signal).or_else(|_| nix::sys::signal::kill(pid, signal))
}

/// Go-style status text (`exit status 3`, `signal: killed`), as envd reports it.
pub fn status_text(status: ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exit status {code}"),
        ExitStatus::Signaled { signal, core } => {
            let name = match signal {
                libc::SIGHUP => "hangup".to_owned(),
                libc::SIGINT => "interrupt".to_owned(),
                libc::SIGQUIT => "quit".to_owned(),
                libc::SIGILL => "illegal instruction".to_owned(),
                libc::SIGABRT => "aborted".to_owned(),
                libc::SIGBUS => "bus error".to_owned(),
                libc::SIGFPE => "floating point exception".to_owned(),
                libc::SIGKILL => "killed".to_owned(),
                libc::SIGSEGV => "segmentation fault".to_owned(),
                libc::SIGPIPE => "broken pipe".to_owned(),
                libc::SIGALRM => "alarm clock".to_owned(),
                libc::SIGTERM => "terminated".to_owned(),
                libc::SIGUSR1 => "user defined signal 1".to_owned(),
                libc::SIGUSR2 => "user defined signal 2".to_owned(),
                n => format!("signal {n}"),
            };
            let core = if core { " (core dumped)" } else { "" };
            format!("signal: {name}{core}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_texts_match_go() {
        assert_eq!(status_text(ExitStatus::Exited(3)), "exit status 3");
        let killed = ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core: false,
        };
        assert_eq!(status_text(killed), "signal: killed");
        let segv = ExitStatus::Signaled {
            signal: libc::SIGSEGV,
            core: true,
        };
        assert_eq!(
            status_text(segv),
            "signal: segmentation fault (core dumped)"
        );
    }
}
