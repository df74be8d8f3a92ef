//! One QEMU `microvm` process per VM and its lifecycle.
//!
//! States: `launch` spawns QEMU, waits for its QMP socket and records `vm.json` (pid, agent
//! port) in the run dir → running (QEMU up; the guest boots on its own) → `wait_agent` sees
//! `GET /health` = 204 → ready. QEMU ends by `stop` (QMP `quit`, then SIGKILL after a grace
//! period), by `kill`, or on its own (guest panic or reboot, both turned into an exit by
//! `panic=-1` and `-no-reboot`); the exit watch reports each of them once.
//!
//! QEMU's life is deliberately **not** tied to the process that launched it (no
//! PR_SET_PDEATHSIG; it gets its own process group so a terminal's Ctrl-C does not reach it):
//! a restarted server re-adopts running VMs with [`Vm::attach`] from the run dir. The owner
//! must therefore stop its VMs explicitly on shutdown. For an attached VM the exit status is
//! unknown (it is not our child); its exit is noticed when the QMP socket closes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cmdline::{self, CONSOLE_LOG, PID_FILE, QEMU_LOG};
use crate::config::VmConfig;
use crate::error::{AgentWaitError, AttachError, LaunchError, StopError};
use crate::health::health_status;
use crate::qmp::Qmp;

const QEMU: &str = "qemu-system-x86_64";
const STATE_FILE: &str = "vm.json";
/// How long QEMU may take to open its QMP socket.
const QMP_STARTUP: Duration = Duration::from_secs(10);
/// How long the first `/health` request of [`Vm::wait_agent`] may take; later ones get twice
/// as long, up to four times.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How QEMU ended. Both fields are `None` when the status is unknown (attached VMs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "signal {s}"),
            (None, None) => f.write_str("status unknown"),
        }
    }
}

/// What a run dir records for [`Vm::attach`].
#[derive(Debug, Serialize, Deserialize)]
struct VmState {
    id: String,
    pid: u32,
    agent_port: u16,
}

/// A running (or exited) QEMU process.
#[derive(Debug)]
pub struct Vm {
    id: String,
    run_dir: PathBuf,
    pid: u32,
    agent_port: u16,
    qmp: Arc<Qmp>,
    exit: watch::Receiver<Option<VmExit>>,
}

impl Vm {
    /// Starts QEMU for `cfg` and returns once QMP answers; the guest is still booting (see
    /// [`Vm::wait_agent`]). With `agent_host_port == 0` a free port is picked, and picked
    /// again if another process takes it first.
    pub async fn launch(cfg: VmConfig) -> Result<Vm, LaunchError> {
        let mkdir = std::fs::create_dir_all(&cfg.run_dir);
        mkdir.map_err(|source| LaunchError::PrepareRunDir {
            path: cfg.run_dir.clone(),
            source,
        })?;
        let cmdline = cmdline::kernel_cmdline(crate::tsc::host_tsc_khz(), &cfg.cmdline_extra);
        let mut attempt = 0;
        loop {
            let port = match cfg.agent_host_port {
                0 => free_port().map_err(LaunchError::PickPort)?,
                p => p,
            };
            match spawn(&cfg, port, &cmdline).await {
                Err(LaunchError::Exited { log_tail, .. })
                    if cfg.agent_host_port == 0
                        && attempt < 2
                        && log_tail.contains("host forwarding") =>
                {
                    tracing::debug!(vm = %cfg.id, port, "agent port taken, retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Re-adopts the QEMU of `run_dir` after a restart of the owning process.
    pub async fn attach(run_dir: &Path) -> Result<Vm, AttachError> {
        let path = run_dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|source| AttachError::ReadState {
            path: path.clone(),
            source,
        })?;
        let state: VmState =
            serde_json::from_slice(&bytes).map_err(|source| AttachError::ParseState {
                path: path.clone(),
                source,
            })?;
        let qmp_path = cmdline::qmp_socket(run_dir);
        // Guards against a recycled pid: the process must be the QEMU of this run dir.
        if !is_our_qemu(state.pid, &qmp_path) {
            return Err(AttachError::NotRunning { pid: state.pid });
        }
        let qmp = Arc::new(Qmp::connect(&qmp_path).await.map_err(AttachError::Qmp)?);
        let (tx, exit) = watch::channel(None);
        let (watch_qmp, pid) = (qmp.clone(), state.pid);
        tokio::spawn(async move {
            watch_qmp.closed().await;
            // QMP closes as QEMU exits; give the process a moment to disappear.
            for _ in 0..50 {
                if !is_alive(pid) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = tx.send(Some(VmExit {
                code: None,
                signal: None,
            }));
        });
        tracing::info!(vm = %state.id, pid, "attached to running VM");
        Ok(Vm {
            id: state.id,
            run_dir: run_dir.to_owned(),
            pid,
            agent_port: state.agent_port,
            qmp,
            exit,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where the host reaches the guest agent.
    pub fn agent_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.agent_port))
    }

    /// The QMP session, for snapshot work.
    pub fn qmp(&self) -> &Arc<Qmp> {
        &self.qmp
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The guest's serial console output.
    pub fn console_log(&self) -> PathBuf {
        self.run_dir.join(CONSOLE_LOG)
    }

    /// Becomes `Some` once QEMU has exited.
    pub fn exit_watch(&self) -> watch::Receiver<Option<VmExit>> {
        self.exit.clone()
    }

    /// How QEMU ended, if it has.
    pub fn try_exit(&self) -> Option<VmExit> {
        *self.exit.borrow()
    }

    /// Waits until QEMU has exited.
    pub async fn wait_exit(&self) -> VmExit {
        let mut rx = self.exit.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(exit) => exit.unwrap_or(VmExit {
                code: None,
                signal: None,
            }),
            // The watcher task is gone without reporting: treat as exited, status unknown.
            Err(_) => VmExit {
                code: None,
                signal: None,
            },
        }
    }

    /// Polls the agent's `GET /health` until it answers 204, QEMU exits, or `timeout`.
    pub async fn wait_agent(&self, timeout: Duration) -> Result<(), AgentWaitError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if let Some(exit) = self.try_exit() {
                return Err(AgentWaitError::Exited {
                    exit,
                    console_tail: self.console_tail(),
                });
            }
            // A request the guest is slow to answer (many VMs warming up at once under TCG
            // take over a second) is better waited for than dropped and sent again; one that
            // hangs because the guest is not up yet is retried after this long.
            let patience = ATTEMPT_TIMEOUT * 2u32.pow(attempts.min(3) - 1);
            if health_status(self.agent_addr(), patience).await == Some(204) {
                tracing::debug!(vm = %self.id, attempts, waited = ?started.elapsed(),
                    "agent answered");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(AgentWaitError::Timeout {
                    console_tail: self.console_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops QEMU: QMP `quit` (QEMU flushes its disk caches and exits), then SIGKILL if it
    /// is still running after `grace`. The guest is not asked to sync its page cache first;
    /// see the crate docs.
    pub async fn stop(&self, grace: Duration) -> Result<VmExit, StopError> {
        if let Some(exit) = self.try_exit() {
            return Ok(exit);
        }
        // The reply may be lost in the socket closing; the exit watch is what counts.
        let _ = tokio::time::timeout(grace, self.qmp.execute("quit", None)).await;
        match tokio::time::timeout(grace, self.wait_exit()).await {
            Ok(exit) => Ok(exit),
            Err(_) => {
                tracing::warn!(vm = %self.id, pid = self.pid, "QEMU ignored quit; killing it");
                self.kill().await
            }
        }
    }

    /// Kills QEMU with SIGKILL and waits for it to go.
    pub async fn kill(&self) -> Result<VmExit, StopError> {
        if let Some(exit) = self.try_exit() {
            return Ok(exit);
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(source) => {
                return Err(StopError::Kill {
                    pid: self.pid,
                    source,
                });
            }
        }
        tokio::time::timeout(Duration::from_secs(10), self.wait_exit())
            .await
            .map_err(|_| StopError::NoExit { pid: self.pid })
    }

    fn console_tail(&self) -> String {
        file_tail(&self.console_log(), 1500)
    }
}

/// Spawns QEMU once and waits for QMP.
async fn spawn(cfg: &VmConfig, port: u16, cmdline: &str) -> Result<Vm, LaunchError> {
    let prep = |source| LaunchError::PrepareRunDir {
        path: cfg.run_dir.clone(),
        source,
    };
    let stale = [PID_FILE, STATE_FILE].map(|name| cfg.run_dir.join(name));
    for stale in [cmdline::qmp_socket(&cfg.run_dir)].iter().chain(&stale) {
        match std::fs::remove_file(stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(prep(e)),
            _ => {}
        }
    }
    let log_path = cfg.run_dir.join(QEMU_LOG);
    let log = std::fs::File::create(&log_path).map_err(prep)?;
    let log2 = log.try_clone().map_err(prep)?;
    let args = cmdline::qemu_args(cfg, port, cmdline);
    tracing::debug!(vm = %cfg.id, ?args, "starting QEMU");
    let mut command = tokio::process::Command::new(QEMU);
    command
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    // Kept open until QEMU has started: the child gets its own copy as descriptor 3.
    let incoming = match cfg.incoming_state.as_ref().filter(|_| cfg.incoming) {
        Some(path) => Some(std::fs::File::open(path).map_err(prep)?),
        None => None,
    };
    if let Some(file) = &incoming {
        use std::os::fd::AsRawFd as _;
        let fd = file.as_raw_fd();
        let target = cmdline::INCOMING_FD;
        // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls
        // are allowed: `dup2` and `fcntl` are, and nothing here allocates or locks.
        unsafe {
            command.pre_exec(move || {
                if fd == target {
                    // Already in place: only the close-on-exec flag must go.
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().map_err(LaunchError::Spawn)?;
    drop(incoming);
    let pid = child.id().unwrap_or_default();

    let qmp_path = cmdline::qmp_socket(&cfg.run_dir);
    let deadline = Instant::now() + QMP_STARTUP;
    let qmp = loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LaunchError::Exited {
                status,
                log_tail: file_tail(&log_path, 2000),
            });
        }
        if qmp_path.exists() {
            match Qmp::connect(&qmp_path).await {
                Ok(qmp) => break qmp,
                Err(e) if Instant::now() >= deadline => {
                    let _ = child.kill().await;
                    return Err(LaunchError::Qmp(e));
                }
                Err(_) => {}
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err(LaunchError::QmpTimeout);
        }
        // QEMU creates the socket 30-60 ms after exec; a short poll keeps that from being
        // rounded up, which shows in the time to start a sandbox from a snapshot.
        tokio::time::sleep(Duration::from_millis(2)).await;
    };

    let state = VmState {
        id: cfg.id.clone(),
        pid,
        agent_port: port,
    };
    if let Err(e) = write_state(&cfg.run_dir, &state) {
        let _ = child.kill().await;
        return Err(e);
    }
    let (tx, exit) = watch::channel(None);
    let id = cfg.id.clone();
    // The watcher owns the child and reaps it, even if the Vm is dropped.
    let outside = (!qmp_path.starts_with(&cfg.run_dir)).then(|| qmp_path.clone());
    tokio::spawn(async move {
        let exit = match child.wait().await {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                VmExit {
                    code: status.code(),
                    signal: status.signal(),
                }
            }
            Err(_) => VmExit {
                code: None,
                signal: None,
            },
        };
        tracing::info!(vm = %id, %exit, "QEMU exited");
        // A socket outside the run dir is not removed with it.
        if let Some(socket) = outside {
            let _ = std::fs::remove_file(socket);
        }
        let _ = tx.send(Some(exit));
    });
    tracing::info!(vm = %cfg.id, pid, agent_port = port, accel = cfg.accel.as_qemu(), "VM started");
    Ok(Vm {
        id: cfg.id.clone(),
        run_dir: cfg.run_dir.clone(),
        pid,
        agent_port: port,
        qmp: Arc::new(qmp),
        exit,
    })
}

fn write_state(run_dir: &Path, state: &VmState) -> Result<(), LaunchError> {
    let path = run_dir.join(STATE_FILE);
    let tmp = run_dir.join(format!("{STATE_FILE}.tmp"));
    let err = |source| LaunchError::WriteState {
        path: path.clone(),
        source,
    };
    let json = serde_json::to_vec(state).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::write(&tmp, json).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

/// A port that was free a moment ago (QEMU binds it; a race is retried by `launch`).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn is_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn is_our_qemu(pid: u32, qmp_path: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = qmp_path.to_string_lossy();
    is_alive(pid) && String::from_utf8_lossy(&cmdline).contains(needle.as_ref())
}

/// The last `max` bytes of a text file, or an empty string.
pub(crate) fn file_tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}
