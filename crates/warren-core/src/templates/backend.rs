//! The template builder's VMs are sandboxes: [`VmBuildBackend`] implements warren-template's
//! `BuildBackend` with the sandbox manager, so a build VM gets the same boot, agent handshake,
//! exit watch and cleanup as any sandbox (and shows up in `warren sandbox list` with the
//! metadata `warren.build=<build id>` while it runs).
//!
//! - boot: a sandbox cold-booted from the base image or from a layer directory;
//! - exec / spawn: `process.Start` on the VM's agent, reached directly at its forwarded port;
//! - copy_in: the source packed as a tar, written through the agent's `/files` and unpacked
//!   by `tar` in the guest (modes and symlinks survive, ownership is set to the step's user);
//! - commit_layer: `sync` in the guest, then a disk-only snapshot into
//!   `<data>/templates/layers/<key>` (the VM continues on a fresh overlay above it);
//! - snapshot: a live snapshot into `<data>/templates/snapshots/<random>`, then the VM ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use warren_client::{Client, CommandEvent, CommandHandle, RunOptions};
use warren_template::backend::{
    BackendError, BoxFuture, BuildBackend, BuildVm, ExecRequest, LayerRef, SnapshotRef, VmSpec,
};
use warren_template::logs::{LogLine, StepLog};
use warren_vm::snapshot::SnapshotManifest;

use crate::manager::{BootFrom, CreateSandbox, SandboxManager};

/// Metadata key naming the build a sandbox runs for.
pub const BUILD_METADATA: &str = "warren.build";

/// Build VMs as sandboxes of one manager.
pub struct VmBuildBackend {
    manager: SandboxManager,
    image_id: String,
}

impl VmBuildBackend {
    /// A backend whose base image is identified by `image_id` (its content key).
    pub fn new(manager: SandboxManager, image_id: String) -> Self {
        VmBuildBackend { manager, image_id }
    }

    fn layer_dir(&self, key: &str) -> PathBuf {
        self.manager.config().template_layers_dir().join(key)
    }
}

/// Keys are sha256 hex; anything else never names a directory.
fn valid_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

impl BuildBackend for VmBuildBackend {
    fn base_image_id(&self) -> String {
        self.image_id.clone()
    }

    fn layer_exists(&self, key: &str) -> bool {
        valid_key(key)
            && SnapshotManifest::load(&self.layer_dir(key)).is_ok_and(|m| m.disk_layer.exists())
    }

    fn boot<'a>(
        &'a self,
        parent: Option<&'a LayerRef>,
        spec: &'a VmSpec,
    ) -> BoxFuture<'a, Result<Box<dyn BuildVm>, BackendError>> {
        Box::pin(async move {
            let boot_from = match parent {
                Some(layer) if valid_key(&layer.key) => BootFrom::Dir(self.layer_dir(&layer.key)),
                Some(layer) => {
                    let msg = format!("layer key {:?} is malformed", layer.key);
                    return Err(BackendError::new("boot", msg));
                }
                None => BootFrom::Image,
            };
            let max = self.manager.config().max_timeout.as_secs();
            let sandbox = self
                .manager
                .create(CreateSandbox {
                    template_id: spec.template.clone(),
                    timeout: Some(i64::try_from(max).unwrap_or(i64::MAX)),
                    metadata: BTreeMap::from([(BUILD_METADATA.to_owned(), spec.build_id.clone())]),
                    boot_from: Some(boot_from),
                    vcpus: Some(spec.vcpus),
                    memory_mb: Some(spec.memory_mib),
                    ..CreateSandbox::default()
                })
                .await
                .map_err(|e| BackendError::new("boot", e))?;
            let route = self
                .manager
                .route(&sandbox.sandbox_id)
                .map_err(|e| BackendError::new("boot", e))?;
            let client = Client::new("http://127.0.0.1:9", None)
                .with_sandbox_url(format!("http://{}", route.agent));
            let vm = SandboxVm {
                manager: self.manager.clone(),
                id: sandbox.sandbox_id.clone(),
                handle: client.sandbox_from_info(sandbox),
                snapshot_dir: self
                    .manager
                    .config()
                    .template_snapshots_dir()
                    .join(crate::ids::secret(12).to_ascii_lowercase()),
                layers_dir: self.manager.config().template_layers_dir(),
                background: Vec::new(),
                ended: false,
            };
            Ok(Box::new(vm) as Box<dyn BuildVm>)
        })
    }
}

/// One build VM.
struct SandboxVm {
    manager: SandboxManager,
    id: String,
    handle: warren_client::Sandbox,
    snapshot_dir: PathBuf,
    layers_dir: PathBuf,
    /// Readers of background commands' output.
    background: Vec<tokio::task::JoinHandle<()>>,
    ended: bool,
}

impl SandboxVm {
    /// Starts `req` in the guest; `operation` names it in errors.
    async fn start(
        &self,
        operation: &'static str,
        req: &ExecRequest<'_>,
    ) -> Result<CommandHandle, BackendError> {
        let opts = RunOptions {
            envs: req.env.iter().cloned().collect(),
            cwd: req.cwd.map(str::to_owned),
            user: Some(req.user.to_owned()),
            timeout: (req.timeout != Duration::MAX).then_some(req.timeout),
            stdin: false,
        };
        self.handle
            .commands()
            .start(req.cmd, &opts)
            .await
            .map_err(|e| BackendError::new(operation, e))
    }

    /// Runs a short command as root, failing on a non-zero exit.
    async fn root(&self, operation: &'static str, cmd: &str) -> Result<(), BackendError> {
        let opts = RunOptions {
            user: Some("root".to_owned()),
            timeout: Some(Duration::from_secs(300)),
            ..RunOptions::default()
        };
        let out = self
            .handle
            .commands()
            .run_with(cmd, &opts)
            .await
            .map_err(|e| BackendError::new(operation, e))?;
        if out.exit_code != 0 {
            let msg = format!(
                "`{cmd}` exited with {}: {}",
                out.exit_code,
                out.stderr.trim()
            );
            return Err(BackendError::new(operation, msg));
        }
        Ok(())
    }

    async fn end(&mut self) {
        self.ended = true;
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Err(e) = self.manager.kill(&self.id).await {
            tracing::warn!(sandbox_id = %self.id, error = %e, "cannot stop a build VM");
        }
    }
}

impl Drop for SandboxVm {
    fn drop(&mut self) {
        // A build future dropped midway (server shutdown, cancelled build) still ends its VM.
        if self.ended {
            return;
        }
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (manager, id) = (self.manager.clone(), self.id.clone());
            rt.spawn(async move {
                let _ = manager.kill(&id).await;
            });
        }
    }
}

/// Splits a byte stream into lines for the build log.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    fn push(&mut self, bytes: &[u8], stderr: bool, log: &StepLog) {
        self.pending.extend_from_slice(bytes);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            emit(&line[..line.len() - 1], stderr, log);
        }
    }

    fn flush(&mut self, stderr: bool, log: &StepLog) {
        if !self.pending.is_empty() {
            emit(&std::mem::take(&mut self.pending), stderr, log);
        }
    }
}

fn emit(line: &[u8], stderr: bool, log: &StepLog) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r').to_owned();
    log.line(LogLine { stderr, text });
}

/// Reads a command's events into `log`; its exit code, -1 if the stream ended without one.
async fn drain(
    mut handle: CommandHandle,
    log: &StepLog,
) -> Result<i32, warren_client::ClientError> {
    let (mut out, mut err) = (Lines::default(), Lines::default());
    while let Some(event) = handle.next().await {
        match event? {
            CommandEvent::Stdout(b) | CommandEvent::Pty(b) => out.push(&b, false, log),
            CommandEvent::Stderr(b) => err.push(&b, true, log),
            CommandEvent::End(end) => {
                out.flush(false, log);
                err.flush(true, log);
                return Ok(end.exit_code);
            }
        }
    }
    out.flush(false, log);
    err.flush(true, log);
    Ok(-1)
}

impl BuildVm for SandboxVm {
    fn exec<'a>(
        &'a mut self,
        req: ExecRequest<'a>,
        log: StepLog,
    ) -> BoxFuture<'a, Result<i32, BackendError>> {
        Box::pin(async move {
            let handle = self.start("exec", &req).await?;
            drain(handle, &log)
                .await
                .map_err(|e| BackendError::new("exec", e))
        })
    }

    fn spawn<'a>(
        &'a mut self,
        req: ExecRequest<'a>,
        log: StepLog,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let handle = self.start("spawn", &req).await?;
            self.background.push(tokio::spawn(async move {
                let _ = drain(handle, &log).await;
            }));
            Ok(())
        })
    }

    fn copy_in<'a>(
        &'a mut self,
        host_path: &'a Path,
        guest_path: &'a str,
        user: &'a str,
        mode: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let dest = copy_destination(host_path, guest_path);
            let (parent, name) = match dest.rsplit_once('/') {
                Some(("", name)) => ("/".to_owned(), name.to_owned()),
                Some((parent, name)) => (parent.to_owned(), name.to_owned()),
                None => return Err(BackendError::new("copy", "destination is not absolute")),
            };
            let archive = {
                let (host, name) = (host_path.to_owned(), name.clone());
                tokio::task::spawn_blocking(move || pack(&host, &name))
                    .await
                    .map_err(|e| BackendError::new("copy", e))?
                    .map_err(|e| BackendError::new("copy", e))?
            };
            let staged = format!("/tmp/.warren-copy-{}.tar", crate::ids::secret(8));
            self.handle
                .files()
                .as_user("root")
                .write(&staged, archive)
                .await
                .map_err(|e| BackendError::new("copy", e))?;
            // Folders the copy creates belong to the copy's user too (a later step running
            // as that user may write next to the copied files), existing ones keep theirs.
            let mut script = format!(
                "set -e; new=''; d={p}; \
                 while [ ! -e \"$d\" ]; do new=\"$d\n$new\"; d=$(dirname \"$d\"); done; \
                 mkdir -p {p}; tar -xf {s} -C {p}; rm -f {s}; chown -R {u}: {d}; \
                 printf '%b' \"$new\" | while IFS= read -r m; do \
                 [ -z \"$m\" ] || chown {u}: \"$m\"; done",
                p = quote(&parent),
                d = quote(&dest),
                s = quote(&staged),
                u = quote(user),
            );
            if let Some(mode) = mode {
                script.push_str(&format!("; chmod -R {} {}", quote(mode), quote(&dest)));
            }
            self.root("copy", &script).await
        })
    }

    fn commit_layer<'a>(
        &'a mut self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<LayerRef, BackendError>> {
        Box::pin(async move {
            if !valid_key(key) {
                return Err(BackendError::new(
                    "commit",
                    format!("bad layer key {key:?}"),
                ));
            }
            // The guest's page cache is not in the disk layer: write it out first.
            self.root("commit", "sync").await?;
            let dir = self.layers_dir.join(key);
            if SnapshotManifest::load(&dir).is_ok() {
                // Another build committed the same content meanwhile; keep the first.
                return Ok(LayerRef {
                    key: key.to_owned(),
                });
            }
            self.manager
                .snapshot_into(&self.id, &dir, false)
                .await
                .map_err(|e| BackendError::new("commit", e))?;
            Ok(LayerRef {
                key: key.to_owned(),
            })
        })
    }

    fn snapshot(mut self: Box<Self>) -> BoxFuture<'static, Result<SnapshotRef, BackendError>> {
        Box::pin(async move {
            let dir = self.snapshot_dir.clone();
            let taken = self.manager.snapshot_into(&self.id, &dir, true).await;
            self.end().await;
            taken.map_err(|e| BackendError::new("snapshot", e))?;
            Ok(SnapshotRef {
                id: dir.to_string_lossy().into_owned(),
            })
        })
    }

    fn discard(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.end().await })
    }
}

/// `guest_path`, or the source's name inside it when it ends with `/`.
fn copy_destination(host_path: &Path, guest_path: &str) -> String {
    let trimmed = guest_path.trim_end_matches('/');
    if guest_path.ends_with('/') || trimmed.is_empty() {
        let name = host_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{trimmed}/{name}")
    } else {
        trimmed.to_owned()
    }
}

/// A tar of `host` whose top entry is called `name` (symlinks kept as links).
fn pack(host: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    if host.is_dir() {
        builder.append_dir_all(name, host)?;
    } else {
        builder.append_path_with_name(host, name)?;
    }
    builder.into_inner()
}

/// Single-quotes `s` for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_of_a_copy() {
        let src = Path::new("/ctx/app.py");
        assert_eq!(copy_destination(src, "/srv/"), "/srv/app.py");
        assert_eq!(copy_destination(src, "/srv/main.py"), "/srv/main.py");
        assert_eq!(copy_destination(src, "/"), "/app.py");
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn packs_a_folder_under_its_new_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("src")).expect("mkdir");
        std::fs::write(dir.path().join("src/a.txt"), "hi").expect("write");
        let bytes = pack(&dir.path().join("src"), "dst").expect("pack");
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert!(names.contains(&"dst/a.txt".to_owned()), "{names:?}");
    }

    #[test]
    fn layer_keys_must_be_hex_digests() {
        assert!(valid_key(&"a".repeat(64)));
        assert!(!valid_key("../../etc"));
        assert!(!valid_key(&"g".repeat(64)));
    }
}
