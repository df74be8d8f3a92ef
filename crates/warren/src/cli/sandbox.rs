//! `warren sandbox ...`: lifecycle of sandboxes and running commands in them.

use clap::{Args, Subcommand, ValueEnum};
use warren_client::{ListedSandbox, NewSandbox, SandboxQuery, SandboxState};

use super::output::{Table, pairs, print_json, time};
use super::{Ctx, parse_pair};

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox (from a template or a snapshot) and print its id.
    Create(CreateArgs),
    /// List running and paused sandboxes.
    List {
        /// Only sandboxes whose metadata has KEY=VALUE (repeatable; all must match).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// Only sandboxes in these states (comma-separated or repeated).
        #[arg(long, value_enum, value_delimiter = ',')]
        state: Vec<StateArg>,
    },
    /// Show the details of a sandbox.
    Info { id: String },
    /// Run a command in a sandbox, streaming its output; exits with the command's code.
    Exec(super::exec::ExecArgs),
    /// Open an interactive terminal in a sandbox.
    Shell {
        id: String,
        /// Linux user to log in as (default: the sandbox's default user).
        #[arg(long, short)]
        user: Option<String>,
    },
    /// Kill sandboxes.
    Kill {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Fork a running sandbox into copies of its current state (memory and disk).
    Fork {
        id: String,
        /// Number of copies (1 to 20).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
        count: u32,
        /// Lifetime of each copy in seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Pause a sandbox (its memory and disk are kept; resume continues it).
    Pause { id: String },
    /// Resume a paused sandbox.
    Resume {
        id: String,
        /// New lifetime in seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Set the remaining lifetime of a sandbox.
    SetTimeout { id: String, seconds: u64 },
    /// Show resource usage samples of a sandbox.
    Metrics { id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateArg {
    Running,
    Paused,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Template to boot.
    #[arg(long, default_value = "base", conflicts_with = "from")]
    template: String,
    /// Snapshot to start from instead of a template.
    #[arg(long, value_name = "SNAPSHOT")]
    from: Option<String>,
    /// Lifetime in seconds (server default: 300).
    #[arg(long)]
    timeout: Option<u64>,
    /// Metadata KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
    metadata: Vec<(String, String)>,
    /// Environment variable KEY=VALUE for every process (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// Deny the sandbox access to the internet.
    #[arg(long)]
    no_internet: bool,
}

pub async fn run(command: SandboxCommand, ctx: &Ctx) -> anyhow::Result<i32> {
    match command {
        SandboxCommand::Create(args) => create(args, ctx).await?,
        SandboxCommand::List { metadata, state } => list(metadata, state, ctx).await?,
        SandboxCommand::Info { id } => info(&id, ctx).await?,
        SandboxCommand::Exec(args) => return super::exec::run(args, ctx).await,
        SandboxCommand::Shell { id, user } => return super::shell::run(&id, user, ctx).await,
        SandboxCommand::Kill { ids } => kill(&ids, ctx).await?,
        SandboxCommand::Fork { id, count, timeout } => fork(&id, count, timeout, ctx).await?,
        SandboxCommand::Pause { id } => pause(&id, ctx).await?,
        SandboxCommand::Resume { id, timeout } => {
            let sandbox = ctx.client.resume(&id, timeout).await?;
            report(ctx, sandbox.info(), &format!("resumed {}", sandbox.id()))?;
        }
        SandboxCommand::SetTimeout { id, seconds } => {
            ctx.client.set_timeout(&id, seconds).await?;
            report(
                ctx,
                &serde_json::json!({ "sandboxID": id, "timeout": seconds }),
                "ok",
            )?;
        }
        SandboxCommand::Metrics { id } => metrics(&id, ctx).await?,
    }
    Ok(0)
}

/// Prints `value` as JSON, or `text` for people.
fn report<T: serde::Serialize + ?Sized>(ctx: &Ctx, value: &T, text: &str) -> anyhow::Result<()> {
    if ctx.json {
        print_json(value)
    } else {
        println!("{text}");
        Ok(())
    }
}

async fn create(args: CreateArgs, ctx: &Ctx) -> anyhow::Result<()> {
    // Empty maps are sent like the Python SDK does (`{}`), not omitted.
    let spec = NewSandbox {
        template_id: args.from.unwrap_or(args.template),
        timeout: args.timeout.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        metadata: Some(args.metadata.into_iter().collect()),
        env_vars: Some(args.env.into_iter().collect()),
        allow_internet_access: args.no_internet.then_some(false),
        ..NewSandbox::default()
    };
    let sandbox = ctx.client.create_sandbox(&spec).await?;
    // Only the id on stdout, so `ID=$(warren sandbox create)` works.
    report(ctx, sandbox.info(), sandbox.id())
}

async fn list(
    metadata: Vec<(String, String)>,
    states: Vec<StateArg>,
    ctx: &Ctx,
) -> anyhow::Result<()> {
    let query = SandboxQuery {
        metadata,
        states: states
            .into_iter()
            .map(|s| match s {
                StateArg::Running => SandboxState::Running,
                StateArg::Paused => SandboxState::Paused,
            })
            .collect(),
        limit: None,
    };
    let sandboxes = ctx.client.list_sandboxes(&query).await?;
    if ctx.json {
        return print_json(&sandboxes);
    }
    let mut table = Table::new(&["ID", "TEMPLATE", "STATE", "STARTED", "ENDS", "METADATA"]);
    for s in &sandboxes {
        table.row(row(s));
    }
    table.print();
    Ok(())
}

fn row(s: &ListedSandbox) -> Vec<String> {
    vec![
        s.sandbox_id.clone(),
        s.alias.clone().unwrap_or_else(|| s.template_id.clone()),
        s.state.as_str().to_owned(),
        time(&s.started_at),
        time(&s.end_at),
        pairs(s.metadata.iter().flatten()),
    ]
}

async fn info(id: &str, ctx: &Ctx) -> anyhow::Result<()> {
    let detail = ctx.client.get_sandbox(id).await?;
    if ctx.json {
        return print_json(&detail);
    }
    let s = &detail.listed;
    let mut table = Table::new(&["FIELD", "VALUE"]);
    let fields = [
        ("id", s.sandbox_id.clone()),
        ("template", s.template_id.clone()),
        ("state", s.state.as_str().to_owned()),
        ("started", time(&s.started_at)),
        ("ends", time(&s.end_at)),
        ("cpus", s.cpu_count.to_string()),
        ("memory", format!("{} MiB", s.memory_mb)),
        ("disk", format!("{} MiB", s.disk_size_mb)),
        ("envd", s.envd_version.clone()),
        ("metadata", pairs(s.metadata.iter().flatten())),
    ];
    for (k, v) in fields {
        table.row(vec![k.to_owned(), v]);
    }
    table.print();
    Ok(())
}

async fn kill(ids: &[String], ctx: &Ctx) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for id in ids {
        if ctx.client.kill_sandbox(id).await? {
            if !ctx.json {
                println!("killed {id}");
            }
        } else {
            missing.push(id.clone());
        }
    }
    if ctx.json {
        print_json(
            &serde_json::json!({ "killed": ids.len() - missing.len(), "notFound": missing }),
        )?;
    }
    if !missing.is_empty() {
        anyhow::bail!("sandbox not found: {}", missing.join(", "));
    }
    Ok(())
}

async fn fork(id: &str, count: u32, timeout: Option<u64>, ctx: &Ctx) -> anyhow::Result<()> {
    let results = ctx.client.fork(id, count, timeout).await?;
    let failed = results.iter().filter(|r| r.sandbox.is_none()).count();
    if ctx.json {
        print_json(&results)?;
    } else {
        for r in &results {
            match (&r.sandbox, &r.error) {
                (Some(s), _) => println!("{}", s.sandbox_id),
                (None, Some(e)) => eprintln!("fork failed: {} ({})", e.message, e.code),
                (None, None) => eprintln!("fork failed without a reason"),
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} forks failed", results.len());
    }
    Ok(())
}

async fn pause(id: &str, ctx: &Ctx) -> anyhow::Result<()> {
    let paused = ctx.client.pause(id).await?;
    let text = if paused {
        format!("paused {id}")
    } else {
        format!("{id} was already paused")
    };
    report(
        ctx,
        &serde_json::json!({ "sandboxID": id, "paused": paused }),
        &text,
    )
}

async fn metrics(id: &str, ctx: &Ctx) -> anyhow::Result<()> {
    let samples = ctx.client.metrics(id).await?;
    if ctx.json {
        return print_json(&samples);
    }
    let mut table = Table::new(&["TIME", "CPUS", "CPU%", "MEM USED", "MEM TOTAL", "DISK USED"]);
    for m in &samples {
        table.row(vec![
            time(&m.timestamp),
            m.cpu_count.to_string(),
            format!("{:.1}", m.cpu_used_pct),
            m.mem_used.to_string(),
            m.mem_total.to_string(),
            m.disk_used.to_string(),
        ]);
    }
    table.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> SandboxCommand {
        let argv = ["warren", "sandbox"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Sandbox { command } => command,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn create_from_snapshot_and_its_conflict_with_template() {
        match parse(&[
            "create",
            "--from",
            "snap:1",
            "--metadata",
            "a=b",
            "--timeout",
            "60",
        ]) {
            SandboxCommand::Create(c) => {
                assert_eq!(c.from.as_deref(), Some("snap:1"));
                assert_eq!(c.metadata, [("a".to_owned(), "b".to_owned())]);
                assert_eq!(c.timeout, Some(60));
            }
            other => panic!("parsed as {other:?}"),
        }
        let argv = [
            "warren",
            "sandbox",
            "create",
            "--from",
            "s",
            "--template",
            "t",
        ];
        assert_eq!(
            Cli::try_parse_from(argv).expect_err("conflict").exit_code(),
            2
        );
    }

    #[test]
    fn list_states_accept_commas_and_fork_count_is_bounded() {
        match parse(&["list", "--state", "running,paused"]) {
            SandboxCommand::List { state, .. } => assert_eq!(state.len(), 2),
            other => panic!("parsed as {other:?}"),
        }
        let argv = ["warren", "sandbox", "fork", "sb", "--count", "21"];
        assert!(Cli::try_parse_from(argv).is_err());
    }
}
