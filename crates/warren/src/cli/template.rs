//! `warren template ...`: build a template from its file (see docs/templates.md) and follow
//! the build's log, list and show templates, tag, untag, rebuild and delete them. A template
//! name is what `warren sandbox create --template` takes.
//!
//! `build` packs the file with its `copy` sources (`warren_client::pack_template`), submits
//! the archive, then polls the build's status every 250 ms, printing each new log entry on
//! stderr while a spinner shows the current step. It exits 0 when the build is ready and 1
//! when it failed (after printing why); `--json` prints the final status on stdout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use warren_client::{
    BuildStatus, LogEntry, LogLevel, TemplateBuildInfo, TemplateBuildStarted, pack_template,
};

use super::Ctx;
use super::output::{Table, pairs, print_json, time};

/// Pause between two status polls.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Build a template from its file and follow the build until it is ready or failed.
    Build {
        /// The template file (TOML); `copy` sources are relative to its folder.
        file: PathBuf,
        /// Rebuild every step instead of reusing cached layers.
        #[arg(long)]
        force: bool,
        /// Print the build id and return without waiting for the build.
        #[arg(long)]
        no_wait: bool,
    },
    /// List templates.
    List,
    /// Show a template and its builds.
    Get { name: String },
    /// Delete a template and its snapshots (sandboxes started from it keep running).
    Delete { name: String },
    /// Point tags at a build: NAME's current build, or the build NAME:TAG points at.
    Tag {
        #[arg(value_name = "NAME[:TAG]")]
        target: String,
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Remove tags of a template (`default` always follows the current build).
    Untag {
        name: String,
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Build a template again from its current definition.
    Rebuild {
        name: String,
        /// Rebuild every step instead of reusing cached layers.
        #[arg(long)]
        force: bool,
        /// Print the build id and return without waiting for the build.
        #[arg(long)]
        no_wait: bool,
    },
}

pub async fn run(command: TemplateCommand, ctx: &Ctx) -> anyhow::Result<i32> {
    match command {
        TemplateCommand::Build {
            file,
            force,
            no_wait,
        } => {
            let start = Instant::now();
            let path = file.clone();
            let archive = tokio::task::spawn_blocking(move || pack_template(&path))
                .await
                .context("packing the template")??;
            // Valid: packing read it. Its step labels name the steps while they run.
            let labels: Vec<String> = warren_template::file::load(&file)
                .map(|(def, _)| def.steps.iter().map(|s| s.label()).collect())
                .unwrap_or_default();
            let started = ctx.client.submit_template_archive(archive, force).await?;
            finish_start(ctx, &started, &labels, no_wait, start).await
        }
        TemplateCommand::Rebuild {
            name,
            force,
            no_wait,
        } => {
            let start = Instant::now();
            let started = ctx.client.rebuild_template(&name, force).await?;
            finish_start(ctx, &started, &[], no_wait, start).await
        }
        TemplateCommand::List => list(ctx).await.map(|()| 0),
        TemplateCommand::Get { name } => get(ctx, &name).await.map(|()| 0),
        TemplateCommand::Delete { name } => {
            if !ctx.client.delete_template(&name).await? {
                anyhow::bail!("template {name} not found");
            }
            if ctx.json {
                print_json(&serde_json::json!({ "deleted": name }))?;
            } else {
                println!("deleted {name}");
            }
            Ok(0)
        }
        TemplateCommand::Tag { target, tags } => {
            let tagged = ctx.client.tag_template(&target, &tags).await?;
            if ctx.json {
                print_json(&tagged)?;
            } else {
                println!("tagged build {} as {}", tagged.build_id, tags.join(", "));
            }
            Ok(0)
        }
        TemplateCommand::Untag { name, tags } => {
            ctx.client.untag_template(&name, &tags).await?;
            if ctx.json {
                print_json(&serde_json::json!({ "template": name, "untagged": tags }))?;
            } else {
                println!("removed {} from {name}", tags.join(", "));
            }
            Ok(0)
        }
    }
}

/// After a build was started: print it and return, or follow it to its end.
async fn finish_start(
    ctx: &Ctx,
    started: &TemplateBuildStarted,
    labels: &[String],
    no_wait: bool,
    start: Instant,
) -> anyhow::Result<i32> {
    if no_wait {
        if ctx.json {
            print_json(started)?;
        } else {
            println!("{}", started.build_id);
        }
        return Ok(0);
    }
    eprintln!(
        "building {} (template {}, build {})",
        started.name, started.template_id, started.build_id
    );
    let info = follow(ctx, started, labels).await?;
    let ok = info.status == BuildStatus::Ready;
    if ctx.json {
        print_json(&info)?;
    } else if ok {
        println!(
            "ready: {} (template {}, build {}) in {:.1}s",
            started.name,
            started.template_id,
            started.build_id,
            start.elapsed().as_secs_f64()
        );
    }
    if !ok {
        eprintln!("{}", failure_text(&info, labels));
    }
    Ok(if ok { 0 } else { 1 })
}

/// Polls the build until it is ready or failed, printing log entries as they come.
async fn follow(
    ctx: &Ctx,
    started: &TemplateBuildStarted,
    labels: &[String],
) -> anyhow::Result<TemplateBuildInfo> {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed}] {wide_msg}") {
        bar.set_style(style);
    }
    bar.set_message("waiting for the build to start");
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut offset = 0;
    let result = loop {
        let info = match ctx
            .client
            .template_build_status(&started.template_id, &started.build_id, offset)
            .await
        {
            Ok(info) => info,
            Err(e) => break Err(e.into()),
        };
        offset += info.log_entries.len();
        for entry in &info.log_entries {
            let line = entry_line(entry);
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
            if let Some(step) = &entry.step {
                bar.set_message(step_text(step, labels));
            }
        }
        if matches!(info.status, BuildStatus::Ready | BuildStatus::Error) {
            break Ok(info);
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    result
}

/// One log entry as printed: `[step] message`, with the level when it is not `info`.
fn entry_line(entry: &LogEntry) -> String {
    let level = match entry.level {
        LogLevel::Debug => "debug: ",
        LogLevel::Info => "",
        LogLevel::Warn => "warn: ",
        LogLevel::Error => "error: ",
    };
    match &entry.step {
        Some(step) => format!("[{step}] {level}{}", entry.message),
        None => format!("{level}{}", entry.message),
    }
}

/// The spinner's text for a step name (`base`, `1`, `2`, ..., `finalize`).
fn step_text(step: &str, labels: &[String]) -> String {
    match step {
        "base" => "preparing the base".to_owned(),
        "finalize" => "starting and snapshotting".to_owned(),
        n => match n
            .parse::<usize>()
            .ok()
            .and_then(|i| labels.get(i.wrapping_sub(1)))
        {
            Some(label) => format!("step {n}/{}: {label}", labels.len()),
            None => format!("step {n}"),
        },
    }
}

/// Why a build failed. Messages of failed template steps already name the step; the others
/// (`base`, `finalize`) get it added.
fn failure_text(info: &TemplateBuildInfo, labels: &[String]) -> String {
    let Some(reason) = &info.reason else {
        return format!("error: build {} failed", info.build_id);
    };
    match &reason.step {
        Some(step) if step.parse::<usize>().is_err() => format!(
            "error: build failed while {}: {}",
            step_text(step, labels),
            reason.message
        ),
        _ => format!("error: build failed: {}", reason.message),
    }
}

async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let templates = ctx.client.list_templates().await?;
    if ctx.json {
        return print_json(&templates);
    }
    let mut table = Table::new(&[
        "NAME", "TEMPLATE", "STATUS", "BUILDS", "VCPUS", "MEMORY", "UPDATED", "TAGS",
    ]);
    for t in &templates {
        let tags: Vec<&str> = t.tags.keys().map(String::as_str).collect();
        table.row(vec![
            t.names.first().cloned().unwrap_or_default(),
            t.template_id.clone(),
            t.build_status.clone(),
            t.build_count.to_string(),
            t.cpu_count.to_string(),
            format!("{} MiB", t.memory_mb),
            time(&t.updated_at),
            if tags.is_empty() {
                "-".to_owned()
            } else {
                tags.join(",")
            },
        ]);
    }
    table.print();
    Ok(())
}

async fn get(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let t = ctx.client.get_template(name).await?;
    if ctx.json {
        return print_json(&t);
    }
    let mut head = Table::new(&["FIELD", "VALUE"]);
    let rows = [
        ("name", t.names.first().cloned().unwrap_or_default()),
        ("template", t.template_id.clone()),
        ("build", t.build_id.clone()),
        ("status", t.build_status.clone()),
        ("vcpus", t.cpu_count.to_string()),
        ("memory", format!("{} MiB", t.memory_mb)),
        ("tags", pairs(&t.tags)),
        ("created", time(&t.created_at)),
        ("updated", time(&t.updated_at)),
    ];
    for (k, v) in rows {
        head.row(vec![k.to_owned(), v]);
    }
    // Key/value lines without the header row.
    for line in head.render().lines().skip(1) {
        println!("{line}");
    }
    println!();
    let mut builds = Table::new(&["BUILD", "STATUS", "CREATED", "FINISHED", "REASON"]);
    for b in &t.builds {
        let reason = match (&b.reason, &b.step) {
            (Some(r), Some(step)) => format!("step {step}: {}", first_line(r)),
            (Some(r), None) => first_line(r),
            _ => "-".to_owned(),
        };
        builds.row(vec![
            b.build_id.clone(),
            b.status.clone(),
            time(&b.created_at),
            b.finished_at.as_ref().map_or_else(|| "-".to_owned(), time),
            reason,
        ]);
    }
    builds.print();
    Ok(())
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_named_by_their_labels() {
        let labels = vec!["RUN echo hi".to_owned(), "COPY a /a".to_owned()];
        assert_eq!(step_text("2", &labels), "step 2/2: COPY a /a");
        assert_eq!(step_text("3", &labels), "step 3");
        assert_eq!(step_text("0", &labels), "step 0");
        assert_eq!(step_text("1", &[]), "step 1");
        assert_eq!(step_text("base", &labels), "preparing the base");
    }

    #[test]
    fn log_lines_show_step_and_level() {
        let entry = |level: &str, step: Option<&str>| -> LogEntry {
            let mut v = serde_json::json!({
                "timestamp": "2026-01-01T00:00:00Z", "level": level, "message": "hello"});
            if let Some(step) = step {
                v["step"] = step.into();
            }
            serde_json::from_value(v).expect("entry")
        };
        assert_eq!(entry_line(&entry("info", Some("1"))), "[1] hello");
        assert_eq!(entry_line(&entry("warn", Some("2"))), "[2] warn: hello");
        assert_eq!(entry_line(&entry("info", None)), "hello");
    }

    #[test]
    fn failures_name_the_step_once() {
        let info = |step: &str| -> TemplateBuildInfo {
            serde_json::from_value(serde_json::json!({
                "logs": [], "logEntries": [], "templateID": "t", "buildID": "b",
                "status": "error", "reason": {"message": "it broke", "step": step}}))
            .expect("info")
        };
        assert_eq!(
            failure_text(&info("2"), &[]),
            "error: build failed: it broke"
        );
        assert_eq!(
            failure_text(&info("finalize"), &[]),
            "error: build failed while starting and snapshotting: it broke"
        );
    }
}
