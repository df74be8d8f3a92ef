//! `warren sandbox exec ID -- CMD...`: runs one command, streams its stdout and stderr to
//! this process's as they arrive, optionally forwards stdin, and exits with the command's
//! exit code. Ctrl-C kills the remote command (it would outlive the CLI otherwise).

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::io::AsyncWriteExt as _;
use tokio::signal::unix::{SignalKind, signal};
use warren_client::{CommandEvent, Commands, RunOptions};

use super::output::print_json;
use super::{Ctx, parse_pair};

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub id: String,
    /// Working directory (default: the user's home).
    #[arg(long)]
    cwd: Option<String>,
    /// Linux user (default: the sandbox's default user).
    #[arg(long, short)]
    user: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long, short, value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// Deadline in seconds, enforced by the server.
    #[arg(long)]
    timeout: Option<u64>,
    /// Forward this terminal's stdin to the command.
    #[arg(long, short = 'i')]
    stdin: bool,
    /// The command; one argument is run as a shell line (`'ls | wc -l'`), several are
    /// quoted and joined.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The shell line for `command`: a single argument as-is, several single-quoted and joined.
pub fn shell_line(command: &[String]) -> String {
    if let [only] = command {
        return only.clone();
    }
    command
        .iter()
        .map(|arg| quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

pub async fn run(args: ExecArgs, ctx: &Ctx) -> anyhow::Result<i32> {
    let sandbox = ctx.client.connect(&args.id, None).await?;
    let opts = RunOptions {
        envs: args.env.into_iter().collect(),
        cwd: args.cwd,
        user: args.user,
        timeout: args.timeout.map(Duration::from_secs),
        stdin: args.stdin,
    };
    let commands = sandbox.commands();
    let line = shell_line(&args.command);
    let mut handle = commands.start(&line, &opts).await?;
    let pid = handle.pid();
    let stdin_task = args
        .stdin
        .then(|| tokio::spawn(forward_stdin(commands.clone(), pid)));
    // Registered once, before the loop, so a Ctrl-C between two events is not lost.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch Ctrl-C")?;

    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    let (mut stdout_buf, mut stderr_buf) = (Vec::new(), Vec::new());
    let end = loop {
        let event = tokio::select! {
            event = handle.next() => event,
            _ = interrupt.recv() => {
                // The remote process would outlive this CLI otherwise.
                commands.kill(pid).await.context("cannot kill the command after Ctrl-C")?;
                return Ok(130);
            }
        };
        match event.context("command stream ended unexpectedly")?? {
            CommandEvent::Stdout(b) | CommandEvent::Pty(b) if ctx.json => stdout_buf.extend(b),
            CommandEvent::Stderr(b) if ctx.json => stderr_buf.extend(b),
            CommandEvent::Stdout(b) | CommandEvent::Pty(b) => {
                out.write_all(&b).await?;
                out.flush().await?;
            }
            CommandEvent::Stderr(b) => {
                err.write_all(&b).await?;
                err.flush().await?;
            }
            CommandEvent::End(end) => break end,
        }
    };
    if let Some(task) = stdin_task {
        task.abort();
    }
    if let (Some(error), false) = (&end.error, ctx.json) {
        eprintln!("warren: the command failed: {error}");
    }
    if ctx.json {
        print_json(&serde_json::json!({
            "pid": pid,
            "stdout": String::from_utf8_lossy(&stdout_buf),
            "stderr": String::from_utf8_lossy(&stderr_buf),
            "exitCode": end.exit_code,
            "error": end.error,
        }))?;
    }
    Ok(end.exit_code)
}

/// Copies this process's stdin to the command's, then closes it so the command sees EOF.
/// A failure stops the forwarding only; the command's output keeps streaming.
async fn forward_stdin(commands: Commands, pid: u32) {
    let mut chunks = super::shell::stdin_chunks();
    while let Some(chunk) = chunks.recv().await {
        if let Err(err) = commands.send_stdin(pid, chunk).await {
            tracing::warn!(pid, error = %err, "stopped forwarding stdin");
            return;
        }
    }
    if let Err(err) = commands.close_stdin(pid).await {
        tracing::warn!(pid, error = %err, "cannot close the command's stdin");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;
    use crate::cli::Command;
    use crate::cli::sandbox::SandboxCommand;

    fn parse(args: &[&str]) -> SandboxCommand {
        let argv = ["warren", "sandbox"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Sandbox { command } => command,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn exec_takes_the_rest_of_the_line_with_or_without_double_dash() {
        for args in [
            &["exec", "sb", "ls", "-la"][..],
            &["exec", "sb", "--", "ls", "-la"],
        ] {
            match parse(args) {
                SandboxCommand::Exec(e) => assert_eq!(e.command, ["ls", "-la"]),
                other => panic!("parsed as {other:?}"),
            }
        }
        match parse(&["exec", "-e", "A=1", "--cwd", "/tmp", "sb", "env"]) {
            SandboxCommand::Exec(e) => {
                assert_eq!(e.env, [("A".to_owned(), "1".to_owned())]);
                assert_eq!((e.cwd.as_deref(), e.id.as_str()), (Some("/tmp"), "sb"));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn one_argument_is_a_shell_line_several_are_quoted() {
        assert_eq!(shell_line(&["ls | wc -l".into()]), "ls | wc -l");
        let args: Vec<String> = ["echo", "a b", "it's", "x=1"].map(String::from).to_vec();
        assert_eq!(shell_line(&args), r"echo 'a b' 'it'\''s' x=1");
    }
}
