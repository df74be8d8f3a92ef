//! `warren sandbox shell ID`: an interactive terminal in a sandbox.
//!
//! The local terminal is put in raw mode (every key, Ctrl-C included, goes to the remote
//! shell) and restored when the session ends, also on errors, by a drop guard. A PTY process
//! is started in the sandbox at the local terminal's size; its output is copied to stdout,
//! stdin is forwarded as PTY input, and SIGWINCH triggers a resize. The session ends when
//! the remote shell exits, and this command exits with the shell's exit code.

use std::io::{IsTerminal as _, Read as _};
use std::os::fd::AsRawFd as _;

use anyhow::Context as _;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::AsyncWriteExt as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use warren_client::{CommandEvent, RunOptions};

use super::Ctx;

/// Puts stdin's terminal in raw mode; restores the previous mode on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enable() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).context("cannot read the terminal mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
            .context("cannot switch the terminal to raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing sensible is left to do if restoring fails; the user can run `reset`.
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Columns and rows of the terminal on stdout, if it is one.
fn terminal_size() -> Option<(u16, u16)> {
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let fd = std::io::stdout().as_raw_fd();
    // SAFETY: TIOCGWINSZ only writes a `winsize` through the pointer, which points to a live,
    // properly aligned local; `fd` is this process's stdout, open for the whole call.
    let rc = unsafe { nix::libc::ioctl(fd, nix::libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// Reads stdin on a plain thread and sends its chunks; the channel closes at end of input.
///
/// A detached thread rather than `tokio::io::stdin`, because the runtime would wait for a
/// pending blocking read at exit, i.e. until the user pressed a key.
pub fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

pub async fn run(id: &str, user: Option<String>, ctx: &Ctx) -> anyhow::Result<i32> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("`sandbox shell` needs a terminal on stdin; use `sandbox exec` instead");
    }
    let (cols, rows) = terminal_size().unwrap_or((80, 24));
    let sandbox = ctx.client.connect(id, None).await?;
    let pty = sandbox.pty();
    let opts = RunOptions {
        user,
        ..RunOptions::default()
    };
    let mut handle = pty.create_with(cols, rows, &opts).await?;
    let pid = handle.pid();
    let mut winch = signal(SignalKind::window_change()).context("cannot watch resizes")?;
    let mut input = stdin_chunks();
    let mut stdin_open = true;
    let mut out = tokio::io::stdout();

    let raw = RawMode::enable()?;
    let code = loop {
        tokio::select! {
            event = handle.next() => match event {
                Some(Ok(
                    CommandEvent::Pty(b) | CommandEvent::Stdout(b) | CommandEvent::Stderr(b),
                )) => {
                    out.write_all(&b).await?;
                    out.flush().await?;
                }
                Some(Ok(CommandEvent::End(end))) => break end.exit_code,
                Some(Err(e)) => return Err(e).context("terminal stream failed"),
                None => break 0,
            },
            chunk = input.recv(), if stdin_open => match chunk {
                Some(bytes) => pty.send(pid, bytes).await.context("cannot send keystrokes")?,
                // End of local input: Ctrl-D is how a terminal says so to the shell.
                None => {
                    stdin_open = false;
                    pty.send(pid, vec![4u8]).await.context("cannot send end of input")?;
                }
            },
            _ = winch.recv() => {
                if let Some((cols, rows)) = terminal_size() {
                    pty.resize(pid, cols, rows).await.context("cannot resize the terminal")?;
                }
            }
        }
    };
    drop(raw);
    Ok(code)
}
