//! Command-line interface: the argument tree (clap derive) and dispatch to the server,
//! image and benchmark modules or to the client commands.
//!
//! Client commands reach the server through `warren_client`, configured by the global
//! `--api-url`, `--api-key` and `--sandbox-url` options or their environment variables.
//! Without any key, the key the server wrote to `<data dir>/api-key` on first start is used,
//! so a local `warren serve` works without configuration.

mod exec;
mod files;
mod key;
mod output;
mod sandbox;
mod shell;
mod snapshot;
mod template;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use warren_client::{Client, DEFAULT_API_URL};

use crate::bench::BenchArgs;
use crate::image::ImageArgs;
use crate::serve::ServeArgs;

/// Warren: microVM sandboxes for untrusted code, compatible with the E2B SDKs.
#[derive(Debug, Parser)]
#[command(
    name = "warren",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 on success, 1 when the operation failed, 2 on a usage error; \
                  `sandbox exec` and `sandbox shell` exit with the remote command's code; \
                  `template build` exits 1 when the build failed."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Control-plane URL [env: WARREN_API_URL, then E2B_API_URL; default:
    /// http://127.0.0.1:3000].
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// API key [env: WARREN_API_KEY, then E2B_API_KEY; default: the key file in the data
    /// dir].
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Base URL for sandbox (envd) traffic [env: E2B_SANDBOX_URL; default: the API URL].
    #[arg(long, global = true, value_name = "URL")]
    pub sandbox_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (REST API and sandbox gateway).
    Serve(ServeArgs),
    /// Guest images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Benchmarks.
    Bench(BenchArgs),
    /// API keys (acts on the server's data dir directly).
    Key {
        #[command(subcommand)]
        command: key::KeyCommand,
    },
    /// Sandboxes: create, list, run commands, open a shell, fork, pause.
    Sandbox {
        #[command(subcommand)]
        command: sandbox::SandboxCommand,
    },
    /// Snapshots of sandboxes.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// Templates: build from a file, list, tag, rebuild, delete.
    Template {
        #[command(subcommand)]
        command: template::TemplateCommand,
    },
    /// Files inside a sandbox.
    Files {
        #[command(subcommand)]
        command: files::FilesCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the base guest image (kernel, initramfs, root disk) into the cache.
    Build(ImageArgs),
}

impl Command {
    /// Whether this command runs a long-lived server (affects the default log level).
    pub fn is_server(&self) -> bool {
        matches!(self, Command::Serve(_))
    }
}

/// What client commands need: the client and the output mode.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
}

/// Runs the parsed command; `Ok` carries the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let json = cli.global.json;
    match cli.command {
        Command::Serve(args) => crate::serve::run(args).await.map(|()| 0),
        Command::Image {
            command: ImageCommand::Build(args),
        } => crate::image::build(args, json).await.map(|()| 0),
        Command::Bench(args) => crate::bench::run(args, json).await.map(|()| 0),
        Command::Key { command } => key::run(command, json).map(|()| 0),
        Command::Sandbox { command } => sandbox::run(command, &ctx(&cli.global, json)?).await,
        Command::Snapshot { command } => snapshot::run(command, &ctx(&cli.global, json)?)
            .await
            .map(|()| 0),
        Command::Template { command } => template::run(command, &ctx(&cli.global, json)?).await,
        Command::Files { command } => files::run(command, &ctx(&cli.global, json)?)
            .await
            .map(|()| 0),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn ctx(global: &GlobalArgs, json: bool) -> anyhow::Result<Ctx> {
    let api_url = global
        .api_url
        .clone()
        .or_else(|| env("WARREN_API_URL"))
        .or_else(|| env("E2B_API_URL"))
        .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
    let api_key = match global.api_key.clone() {
        Some(key) => Some(key),
        None => env("WARREN_API_KEY")
            .or_else(|| env("E2B_API_KEY"))
            .map_or_else(key_from_file, |k| Ok(Some(k)))?,
    };
    let mut client = Client::new(api_url, api_key);
    if let Some(url) = global
        .sandbox_url
        .clone()
        .or_else(|| env("E2B_SANDBOX_URL"))
    {
        client = client.with_sandbox_url(url);
    }
    Ok(Ctx { client, json })
}

/// The key `warren serve` wrote to `<data dir>/api-key` on first start, if readable.
fn key_from_file() -> anyhow::Result<Option<String>> {
    let Some(dir) = default_data_dir() else {
        return Ok(None);
    };
    let path = dir.join("api-key");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|k| !k.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("cannot read the API key file {}", path.display()))
        }
    }
}

/// `$WARREN_DATA_DIR`, else `$XDG_DATA_HOME/warren`, else `~/.local/share/warren`
/// (the layout of docs/CONTRACTS.md).
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(dir) = env("WARREN_DATA_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = env("XDG_DATA_HOME") {
        return Some(PathBuf::from(dir).join("warren"));
    }
    env("HOME").map(|home| PathBuf::from(home).join(".local/share/warren"))
}

/// Parses `KEY=VALUE` arguments.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn argument_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pairs_need_a_key_and_an_equals_sign() {
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_pair("a="), Ok(("a".into(), String::new())));
        assert!(parse_pair("=b").is_err());
        assert!(parse_pair("ab").is_err());
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "warren",
            "sandbox",
            "list",
            "--json",
            "--api-url",
            "http://x",
        ])
        .expect("parses");
        assert!(cli.global.json);
        assert_eq!(cli.global.api_url.as_deref(), Some("http://x"));
    }

    #[test]
    fn unknown_subcommand_is_a_usage_error() {
        let err = Cli::try_parse_from(["warren", "sandbox", "explode"]).expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
    }
}
