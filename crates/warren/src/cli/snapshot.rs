//! `warren snapshot ...`: capture a running sandbox, list and delete snapshots. A snapshot id
//! is what `warren sandbox create --from` takes.

use clap::Subcommand;
use warren_client::SnapshotQuery;

use super::Ctx;
use super::output::{Table, print_json};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a running sandbox (memory and disk); it keeps running. Prints the id.
    Create {
        id: String,
        /// Name for the snapshot (reusing a name adds a new version of it).
        #[arg(long)]
        name: Option<String>,
    },
    /// List snapshots.
    List {
        /// Only snapshots taken from this sandbox.
        #[arg(long, value_name = "ID")]
        sandbox: Option<String>,
        /// Only snapshots with this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a snapshot (sandboxes started from it keep running).
    Delete { snapshot: String },
}

pub async fn run(command: SnapshotCommand, ctx: &Ctx) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Create { id, name } => {
            let snap = ctx.client.create_snapshot(&id, name.as_deref()).await?;
            if ctx.json {
                print_json(&snap)?;
            } else {
                println!("{}", snap.snapshot_id);
            }
        }
        SnapshotCommand::List { sandbox, name } => {
            let query = SnapshotQuery {
                sandbox_id: sandbox,
                name,
                limit: None,
            };
            let snaps = ctx.client.list_snapshots(&query).await?;
            if ctx.json {
                return print_json(&snaps);
            }
            let mut table = Table::new(&["SNAPSHOT", "NAMES"]);
            for s in &snaps {
                let names = if s.names.is_empty() {
                    "-".to_owned()
                } else {
                    s.names.join(",")
                };
                table.row(vec![s.snapshot_id.clone(), names]);
            }
            table.print();
        }
        SnapshotCommand::Delete { snapshot } => {
            if !ctx.client.delete_snapshot(&snapshot).await? {
                anyhow::bail!("snapshot {snapshot} not found");
            }
            if ctx.json {
                print_json(&serde_json::json!({ "deleted": snapshot }))?;
            } else {
                println!("deleted {snapshot}");
            }
        }
    }
    Ok(())
}
