//! Processes in a sandbox over envd's `process.Process` service: one-shot commands, streamed
//! output, background processes, stdin, signals and PTYs.
//!
//! A process stream (`Start` or `Connect`) must open with a `start{pid}` event, then carries
//! any number of `data` (stdout/stderr/pty bytes, arbitrarily chunked) and `keepalive`
//! events, then exactly one `end` event before the end-of-stream envelope. Commands run as
//! `/bin/bash -l -c <cmd>` like the official SDKs, so shell syntax works.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use warren_proto::connect::ErrorCode;
use warren_proto::envd::process::{
    CloseStdinRequest, ConnectRequest, DataEvent, Empty, EndEvent, ListRequest, ListResponse,
    ProcessConfig, ProcessEvent, ProcessInfo, ProcessInput, ProcessSelector, Pty as PtyRequest,
    PtySize, SendInputRequest, SendSignalRequest, Signal, StartRequest, StartResponse,
    UpdateRequest,
};

use crate::connect::{self, RpcStream};
use crate::error::ClientError;
use crate::sandbox::EnvdTarget;

const START: &str = "process.Process/Start";
const CONNECT: &str = "process.Process/Connect";

/// How to run a command.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Extra environment variables (over the sandbox-wide ones).
    pub envs: BTreeMap<String, String>,
    /// Working directory; the user's home when unset.
    pub cwd: Option<String>,
    /// Linux user; the sandbox's default user when unset.
    pub user: Option<String>,
    /// Deadline of the whole command, sent to the server as `Connect-Timeout-Ms` and also
    /// enforced by [`Commands::run_with`] (which kills the process when it passes); none
    /// when unset.
    pub timeout: Option<Duration>,
    /// Keep a stdin pipe open for [`Commands::send_stdin`].
    pub stdin: bool,
}

/// Output of a process, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    /// Terminal output of a PTY process.
    Pty(Bytes),
    /// The process ended; no event follows.
    End(EndEvent),
}

/// Collected result of a finished command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    /// envd's description of a failure, when it gave one.
    pub error: Option<String>,
}

impl CommandOutput {
    /// `Err(CommandExit)` when the exit code is not 0.
    pub fn check(self) -> Result<CommandOutput, ClientError> {
        if self.exit_code == 0 {
            Ok(self)
        } else {
            Err(ClientError::CommandExit {
                exit_code: self.exit_code,
                stdout: self.stdout,
                stderr: self.stderr,
                error: self.error,
            })
        }
    }
}

/// A started (or connected) process and its output stream.
pub struct CommandHandle {
    pid: u32,
    stream: RpcStream<StartResponse>,
    step: &'static str,
    ended: bool,
}

impl std::fmt::Debug for CommandHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandle")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl CommandHandle {
    /// Reads the opening `start` event of a process stream.
    async fn open(
        mut stream: RpcStream<StartResponse>,
        step: &'static str,
    ) -> Result<CommandHandle, ClientError> {
        loop {
            let msg = match stream.next().await {
                Some(msg) => msg?,
                None => return Err(protocol(step, "stream ended before the start event")),
            };
            match msg.event {
                ProcessEvent::Start(start) => {
                    return Ok(CommandHandle {
                        pid: start.pid,
                        stream,
                        step,
                        ended: false,
                    });
                }
                // Keepalives may come at any time; anything else first is a violation.
                ProcessEvent::Keepalive(_) => {}
                ProcessEvent::Data(_) | ProcessEvent::End(_) => {
                    return Err(protocol(step, "first event was not a start event"));
                }
            }
        }
    }

    /// The process id inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next output event; `None` after [`CommandEvent::End`] was returned.
    pub async fn next(&mut self) -> Option<Result<CommandEvent, ClientError>> {
        if self.ended {
            return None;
        }
        loop {
            let msg = match self.stream.next().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                None => {
                    self.ended = true;
                    return Some(Err(protocol(
                        self.step,
                        "command ended without an end event",
                    )));
                }
            };
            let event = match msg.event {
                ProcessEvent::End(end) => {
                    self.ended = true;
                    CommandEvent::End(end)
                }
                ProcessEvent::Data(DataEvent::Stdout(b)) => CommandEvent::Stdout(b),
                ProcessEvent::Data(DataEvent::Stderr(b)) => CommandEvent::Stderr(b),
                ProcessEvent::Data(DataEvent::Pty(b)) => CommandEvent::Pty(b),
                // A keepalive or a repeated start: nothing to report.
                ProcessEvent::Keepalive(_) | ProcessEvent::Start(_) => continue,
            };
            return Some(Ok(event));
        }
    }

    /// Reads the stream to the end and collects the output (any exit code is `Ok`).
    pub async fn wait(mut self) -> Result<CommandOutput, ClientError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(event) = self.next().await {
            match event? {
                CommandEvent::Stdout(b) | CommandEvent::Pty(b) => stdout.extend_from_slice(&b),
                CommandEvent::Stderr(b) => stderr.extend_from_slice(&b),
                CommandEvent::End(end) => {
                    return Ok(CommandOutput {
                        stdout: String::from_utf8_lossy(&stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&stderr).into_owned(),
                        exit_code: end.exit_code,
                        error: end.error,
                    });
                }
            }
        }
        Err(protocol(self.step, "command ended without an end event"))
    }
}

fn protocol(step: &str, detail: &str) -> ClientError {
    ClientError::Protocol {
        step: format!("RPC {step}"),
        detail: detail.to_owned(),
    }
}

fn timeout_ms(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// Commands of one sandbox.
#[derive(Debug, Clone)]
pub struct Commands {
    envd: EnvdTarget,
}

impl Commands {
    pub(crate) fn new(envd: EnvdTarget) -> Commands {
        Commands { envd }
    }

    /// Runs `cmd` to completion and collects its output, whatever its exit code; chain
    /// [`CommandOutput::check`] to turn a non-zero exit into `Err(CommandExit)` as the
    /// official SDKs do.
    pub async fn run(&self, cmd: &str) -> Result<CommandOutput, ClientError> {
        self.run_with(cmd, &RunOptions::default()).await
    }

    /// As [`Commands::run`], with options; `Err(Timeout)` (after killing the process) when
    /// [`RunOptions::timeout`] passes first.
    pub async fn run_with(
        &self,
        cmd: &str,
        opts: &RunOptions,
    ) -> Result<CommandOutput, ClientError> {
        let handle = self.start(cmd, opts).await?;
        let Some(limit) = opts.timeout else {
            return handle.wait().await;
        };
        let pid = handle.pid();
        match tokio::time::timeout(limit, handle.wait()).await {
            Ok(output) => output,
            Err(_) => {
                // Best effort: the server may already have ended it on the same deadline.
                let _ = self.kill(pid).await;
                Err(ClientError::Timeout { after: limit })
            }
        }
    }

    /// Starts `cmd` and returns once it is running; read its output from the handle.
    /// Dropping the handle only stops reading; use [`Commands::kill`] to stop the process.
    pub async fn start(&self, cmd: &str, opts: &RunOptions) -> Result<CommandHandle, ClientError> {
        let request = StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/bash".to_owned(),
                args: vec!["-l".to_owned(), "-c".to_owned(), cmd.to_owned()],
                envs: opts.envs.clone(),
                cwd: opts.cwd.clone(),
            }),
            pty: None,
            tag: None,
            stdin: Some(opts.stdin),
        };
        let target = self.envd.with_user(opts.user.as_deref());
        let stream = connect::server_stream(&target, START, &request, timeout_ms(opts.timeout));
        CommandHandle::open(stream.await?, "process.Process/Start").await
    }

    /// Attaches to a running process's output.
    pub async fn connect(&self, pid: u32) -> Result<CommandHandle, ClientError> {
        let request = ConnectRequest {
            process: Some(ProcessSelector::Pid(pid)),
        };
        let stream = connect::server_stream(&self.envd, CONNECT, &request, None).await?;
        CommandHandle::open(stream, "process.Process/Connect").await
    }

    /// The processes envd is running.
    pub async fn list(&self) -> Result<Vec<ProcessInfo>, ClientError> {
        let resp: ListResponse =
            connect::unary(&self.envd, "process.Process/List", &ListRequest {}).await?;
        Ok(resp.processes)
    }

    /// Sends SIGKILL to `pid`; `Ok(false)` if no such process exists.
    pub async fn kill(&self, pid: u32) -> Result<bool, ClientError> {
        kill(&self.envd, pid).await
    }

    /// Writes to the stdin of `pid` (started with [`RunOptions::stdin`]).
    pub async fn send_stdin(&self, pid: u32, data: impl Into<Bytes>) -> Result<(), ClientError> {
        send_input(&self.envd, pid, ProcessInput::Stdin(data.into())).await
    }

    /// Closes the stdin of `pid` so it sees end-of-file.
    pub async fn close_stdin(&self, pid: u32) -> Result<(), ClientError> {
        let request = CloseStdinRequest {
            process: Some(ProcessSelector::Pid(pid)),
        };
        let _: Empty = connect::unary(&self.envd, "process.Process/CloseStdin", &request).await?;
        Ok(())
    }
}

async fn kill(envd: &EnvdTarget, pid: u32) -> Result<bool, ClientError> {
    let request = SendSignalRequest {
        process: Some(ProcessSelector::Pid(pid)),
        signal: Signal::Sigkill,
    };
    match connect::unary::<_, Empty>(envd, "process.Process/SendSignal", &request).await {
        Ok(_) => Ok(true),
        Err(e) if e.rpc_code() == Some(ErrorCode::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn send_input(envd: &EnvdTarget, pid: u32, input: ProcessInput) -> Result<(), ClientError> {
    let request = SendInputRequest {
        process: Some(ProcessSelector::Pid(pid)),
        input: Some(input),
    };
    let _: Empty = connect::unary(envd, "process.Process/SendInput", &request).await?;
    Ok(())
}

fn pty_size(cols: u16, rows: u16) -> PtyRequest {
    PtyRequest {
        size: Some(PtySize {
            cols: cols.into(),
            rows: rows.into(),
        }),
    }
}

/// Interactive terminals of one sandbox.
#[derive(Debug, Clone)]
pub struct Pty {
    envd: EnvdTarget,
}

impl Pty {
    pub(crate) fn new(envd: EnvdTarget) -> Pty {
        Pty { envd }
    }

    /// Starts an interactive login shell on a `cols`×`rows` terminal.
    pub async fn create(&self, cols: u16, rows: u16) -> Result<CommandHandle, ClientError> {
        self.create_with(cols, rows, &RunOptions::default()).await
    }

    /// As [`Pty::create`], with options; `TERM`, `LANG` and `LC_ALL` default like the SDKs.
    pub async fn create_with(
        &self,
        cols: u16,
        rows: u16,
        opts: &RunOptions,
    ) -> Result<CommandHandle, ClientError> {
        let mut envs = BTreeMap::from([
            ("TERM".to_owned(), "xterm-256color".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("LC_ALL".to_owned(), "C.UTF-8".to_owned()),
        ]);
        envs.extend(opts.envs.clone());
        let request = StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/bash".to_owned(),
                args: vec!["-i".to_owned(), "-l".to_owned()],
                envs,
                cwd: opts.cwd.clone(),
            }),
            pty: Some(pty_size(cols, rows)),
            tag: None,
            stdin: None,
        };
        let target = self.envd.with_user(opts.user.as_deref());
        let stream = connect::server_stream(&target, START, &request, timeout_ms(opts.timeout));
        CommandHandle::open(stream.await?, "process.Process/Start").await
    }

    /// Sends keystrokes to the terminal of `pid`.
    pub async fn send(&self, pid: u32, data: impl Into<Bytes>) -> Result<(), ClientError> {
        send_input(&self.envd, pid, ProcessInput::Pty(data.into())).await
    }

    /// Changes the terminal size of `pid`.
    pub async fn resize(&self, pid: u32, cols: u16, rows: u16) -> Result<(), ClientError> {
        let request = UpdateRequest {
            process: Some(ProcessSelector::Pid(pid)),
            pty: Some(pty_size(cols, rows)),
        };
        let _: Empty = connect::unary(&self.envd, "process.Process/Update", &request).await?;
        Ok(())
    }

    /// Kills the terminal's process; `Ok(false)` if it was already gone.
    pub async fn kill(&self, pid: u32) -> Result<bool, ClientError> {
        kill(&self.envd, pid).await
    }
}
