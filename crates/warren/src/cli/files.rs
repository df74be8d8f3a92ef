//! `warren files ...`: list, copy and remove files inside a sandbox. Copies stream in both
//! directions, so file size is not bounded by memory.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{CommandFactory as _, Subcommand};
use warren_client::{EntryInfo, FileType};

use super::output::{Table, print_json, time};
use super::{Cli, Ctx};

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// List a directory.
    Ls {
        id: String,
        #[arg(default_value = ".")]
        path: String,
        /// Levels to descend (1 = direct children).
        #[arg(long, default_value_t = 1)]
        depth: u32,
    },
    /// Copy a file between this machine and a sandbox; exactly one side is `ID:/path`.
    Cp { src: String, dst: String },
    /// Remove a file or directory tree.
    Rm { id: String, path: String },
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote { id: String, path: String },
}

/// `ID:/path` is remote when `ID` is non-empty and holds no `/` (so `./a:b` is local).
pub fn parse_location(arg: &str) -> Location {
    match arg.split_once(':') {
        Some((id, path)) if !id.is_empty() && !id.contains('/') => Location::Remote {
            id: id.to_owned(),
            path: path.to_owned(),
        },
        _ => Location::Local(PathBuf::from(arg)),
    }
}

pub async fn run(command: FilesCommand, ctx: &Ctx) -> anyhow::Result<()> {
    match command {
        FilesCommand::Ls { id, path, depth } => ls(&id, &path, depth, ctx).await,
        FilesCommand::Cp { src, dst } => cp(&src, &dst, ctx).await,
        FilesCommand::Rm { id, path } => {
            let sandbox = ctx.client.connect(&id, None).await?;
            sandbox.files().remove(&path).await?;
            Ok(())
        }
    }
}

fn kind(t: FileType) -> &'static str {
    match t {
        FileType::File => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Unspecified => "?",
    }
}

async fn ls(id: &str, path: &str, depth: u32, ctx: &Ctx) -> anyhow::Result<()> {
    let sandbox = ctx.client.connect(id, None).await?;
    let entries: Vec<EntryInfo> = sandbox.files().list(path, depth).await?;
    if ctx.json {
        return print_json(&entries);
    }
    let mut table = Table::new(&["TYPE", "PERMS", "OWNER", "SIZE", "MODIFIED", "PATH"]);
    for e in &entries {
        table.row(vec![
            kind(e.file_type).to_owned(),
            e.permissions.clone(),
            e.owner.clone(),
            e.size.to_string(),
            e.modified_time.as_ref().map(time).unwrap_or_default(),
            e.path.clone(),
        ]);
    }
    table.print();
    Ok(())
}

async fn cp(src: &str, dst: &str, ctx: &Ctx) -> anyhow::Result<()> {
    match (parse_location(src), parse_location(dst)) {
        (Location::Local(local), Location::Remote { id, path }) => {
            let file = tokio::fs::File::open(&local)
                .await
                .with_context(|| format!("cannot open {}", local.display()))?;
            let sandbox = ctx.client.connect(&id, None).await?;
            let written = sandbox.files().write_from(&path, file).await?;
            if ctx.json {
                print_json(&written)?;
            }
            Ok(())
        }
        (Location::Remote { id, path }, Location::Local(local)) => {
            let sandbox = ctx.client.connect(&id, None).await?;
            let mut file = tokio::fs::File::create(&local)
                .await
                .with_context(|| format!("cannot create {}", local.display()))?;
            let bytes = match sandbox.files().read_to(&path, &mut file).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    // Leave no truncated copy behind.
                    drop(file);
                    let _ = tokio::fs::remove_file(&local).await;
                    return Err(e.into());
                }
            };
            if ctx.json {
                print_json(&serde_json::json!({ "path": local, "bytes": bytes }))?;
            }
            Ok(())
        }
        _ => Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "exactly one of SRC and DST must be a sandbox path ID:/path",
            )
            .exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_locations_need_an_id_without_slashes() {
        assert_eq!(
            parse_location("abc:/tmp/x"),
            Location::Remote {
                id: "abc".into(),
                path: "/tmp/x".into()
            }
        );
        assert_eq!(parse_location("./a:b"), Location::Local("./a:b".into()));
        assert_eq!(parse_location("/tmp/x"), Location::Local("/tmp/x".into()));
        assert_eq!(parse_location(":x"), Location::Local(":x".into()));
    }
}
