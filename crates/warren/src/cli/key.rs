//! `warren key ...`: API keys, managed directly in the server's data dir (no server
//! needed). A running server checks keys against the same database, so a revoked key stops
//! working at once.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use warren_core::api_keys;
use warren_core::store::{ApiKeyRecord, Store};

use super::output::{Table, print_json, time};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key and print it (it is shown only once).
    Create {
        #[command(flatten)]
        dir: DataDir,
        /// A label to recognise the key by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List keys (ids and names; the keys themselves are not stored).
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revoke a key by id.
    Revoke {
        #[command(flatten)]
        dir: DataDir,
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct DataDir {
    /// The server's data dir [env: WARREN_DATA_DIR; default: ~/.local/share/warren].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        match self.data_dir.clone().or_else(super::default_data_dir) {
            Some(dir) => Ok(dir),
            None => anyhow::bail!("no data dir: pass --data-dir or set WARREN_DATA_DIR"),
        }
    }
}

pub fn run(command: KeyCommand, json: bool) -> anyhow::Result<()> {
    let dir = match &command {
        KeyCommand::Create { dir, .. }
        | KeyCommand::List { dir }
        | KeyCommand::Revoke { dir, .. } => dir.resolve()?,
    };
    dispatch(command, &dir, json)
}

fn dispatch(command: KeyCommand, data_dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let store = Store::open(data_dir)
        .with_context(|| format!("cannot open the state in {}", data_dir.display()))?;
    match command {
        KeyCommand::Create { name, .. } => {
            let new = api_keys::create_key(&store, &name)?;
            if json {
                let mut value = record_json(&new.record);
                value["key"] = serde_json::Value::String(new.key);
                print_json(&value)?;
            } else {
                println!("{}", new.key);
                eprintln!(
                    "created key {} ({name}); it is not shown again",
                    new.record.id
                );
            }
        }
        KeyCommand::List { .. } => {
            let keys = api_keys::list_keys(&store)?;
            if json {
                let values: Vec<_> = keys.iter().map(record_json).collect();
                return print_json(&values);
            }
            let mut table = Table::new(&["ID", "NAME", "CREATED", "REVOKED"]);
            for k in &keys {
                table.row(vec![
                    k.id.clone(),
                    k.name.clone(),
                    time(&k.created_at),
                    k.revoked_at.as_ref().map_or_else(|| "-".to_owned(), time),
                ]);
            }
            table.print();
        }
        KeyCommand::Revoke { id, .. } => {
            if !api_keys::revoke_key(&store, &id)? {
                anyhow::bail!("no active key with id {id}");
            }
            if json {
                print_json(&serde_json::json!({ "revoked": id }))?;
            } else {
                println!("revoked {id}");
            }
        }
    }
    Ok(())
}

fn record_json(record: &ApiKeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.id,
        "name": record.name,
        "createdAt": record.created_at,
        "revokedAt": record.revoked_at,
    })
}
