//! Durability of live snapshots through the real path (client → `warren serve` → QEMU →
//! agent), with the server killed or restarted around a snapshot:
//!
//! - a SIGKILL of the server in the middle of a snapshot leaves nothing half-done behind:
//!   after a restart on the same data dir no unfinished (`.tmp-`) directory, no recorder
//!   QEMU and no unstartable snapshot remain, and snapshots work again;
//! - a SIGKILL of the source's QEMU in the middle of a snapshot fails the request (instead of
//!   hanging it) and leaves no snapshot, directory or recorder behind;
//! - a snapshot survives a server restart (SIGTERM, then SIGKILL) and a sandbox started from
//!   it afterwards continues the in-memory state of the snapshot.
//!
//! Each test runs its own server on its own data dir (the shared one-server-per-binary
//! harness cannot be restarted), sharing the normal image cache. A [`Node`] guard kills the
//! server's process group and every QEMU whose command line mentions its data dir when the
//! test ends, whether it passed or not.

mod common;

use common::{count, run, start_counter};

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use warren_client::{Client, ClientError, Sandbox, SandboxQuery, SnapshotInfo, SnapshotQuery};

/// A `warren serve` on a fixed data dir that can be killed and started again.
struct Node {
    data_dir: PathBuf,
    api_key: String,
    url: String,
    child: Option<Child>,
}

impl Node {
    /// A node with a fresh, empty data dir named after the test; not started yet.
    fn new(name: &str) -> Node {
        let data_dir =
            std::env::temp_dir().join(format!("warren-durability-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).expect("create the data dir");
        Node {
            data_dir,
            api_key: format!("wrn_durability_{}", std::process::id()),
            url: String::new(),
            child: None,
        }
    }

    fn client(&self) -> Client {
        Client::new(self.url.clone(), Some(self.api_key.clone()))
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// Starts the server (on a new port) and waits until its API answers.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        self.url = format!("http://127.0.0.1:{port}");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("server.log"))
            .expect("server log");
        writeln!(log, "===== warren serve on port {port} =====").expect("server log");
        let started = Instant::now();
        let child = Command::new(common::bin_dir().join("warren"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&self.data_dir)
            // Sandboxes outlive the server, for the next one to adopt (the default, explicit).
            .args(["--on-exit", "detach"])
            .env("WARREN_API_KEY", &self.api_key)
            .env("WARREN_AGENT_BIN", common::bin_dir().join("warren-agent"))
            .env("RUST_LOG", "info,warren=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            // Its own process group, so that a kill reaches its helpers (not the VMs: QEMU
            // puts itself into a group of its own).
            .process_group(0)
            .spawn()
            .expect("spawn warren serve");
        self.child = Some(child);
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let up = tokio::time::timeout(
                Duration::from_secs(5),
                client.list_sandboxes(&SandboxQuery::default()),
            )
            .await;
            if matches!(up, Ok(Ok(_))) {
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("warren serve exited with {status}:\n{}", self.log_tail(60));
            }
            assert!(Instant::now() < deadline, "warren serve did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("server up on port {port} in {:?}", started.elapsed());
    }

    /// SIGKILLs the server's process group and reaps it.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on the process group of our own child.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }

    /// Stops the server the normal way (SIGTERM) and returns its exit status.
    async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("a running server");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            if Instant::now() > deadline {
                self.child = Some(child);
                panic!("warren serve did not stop within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Names of the unfinished snapshot directories (`.tmp-*`).
    fn tmp_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.snapshots_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".tmp-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// QEMU processes of this data dir, with their command lines.
    fn qemus(&self) -> Vec<(u32, String)> {
        let dir = self.data_dir.to_string_lossy().into_owned();
        common::qemu_processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.contains(&dir))
            .collect()
    }

    /// QEMU processes recording a snapshot: their files are inside an unfinished (`.tmp-`)
    /// snapshot directory of the data dir (sandbox snapshots or template builds).
    fn recorders(&self) -> Vec<(u32, String)> {
        self.qemus()
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("/snapshots/.tmp-"))
            .collect()
    }

    /// Bytes the RAM image of the unfinished sandbox snapshot has received so far: the
    /// shared memory its recorder QEMU has touched (the image is staged in tmpfs), or the
    /// image file itself when the recorder writes to disk directly.
    fn recorded_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        let own = format!("{}/.tmp-", self.snapshots_dir().display());
        let in_memory: u64 = self
            .recorders()
            .iter()
            .filter(|(_, cmd)| cmd.contains(&own))
            .map(|(pid, _)| rss_shmem_bytes(*pid))
            .sum();
        let on_disk: u64 = self
            .tmp_dirs()
            .iter()
            .filter_map(|d| std::fs::metadata(self.snapshots_dir().join(d).join("mem")).ok())
            .map(|m| m.blocks() * 512)
            .sum();
        in_memory + on_disk
    }

    /// The pid of a sandbox's QEMU, from the pid file in its run dir.
    fn qemu_pid(&self, sandbox_id: &str) -> u32 {
        let path = self
            .data_dir
            .join("sandboxes")
            .join(sandbox_id)
            .join("qemu.pid");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.trim().parse().expect("a pid in qemu.pid")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- server log ({}) ---\n{}",
                self.data_dir.display(),
                self.log_tail(80)
            );
        }
        self.kill();
        for pid in common::qemus_of(&self.data_dir) {
            // SAFETY: plain kill(2); at worst the process is already gone.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !common::qemus_of(&self.data_dir).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if std::env::var_os("WARREN_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

async fn all_snapshots(client: &Client) -> Vec<SnapshotInfo> {
    client
        .list_snapshots(&SnapshotQuery::default())
        .await
        .expect("list snapshots")
}

async fn listed_sandboxes(client: &Client) -> Vec<String> {
    client
        .list_sandboxes(&SandboxQuery::default())
        .await
        .expect("list sandboxes")
        .into_iter()
        .map(|s| s.sandbox_id)
        .collect()
}

/// Starts a sandbox from `snapshot`, checks that it runs commands and sees `marker` (a path
/// and its expected content), then kills it.
async fn start_and_check(client: &Client, snapshot: &str, marker: Option<(&str, &str)>) {
    let clone = common::create(client, snapshot).await;
    assert_eq!(run(&clone, "echo alive").await, "alive\n");
    if let Some((path, content)) = marker {
        assert_eq!(run(&clone, &format!("cat {path}")).await, content);
    }
    assert!(client.kill_sandbox(clone.id()).await.unwrap());
}

/// `RssShmem` of a process: the shared memory pages it has touched.
fn rss_shmem_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssShmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib << 10)
}

/// Fires a snapshot of `sb` and returns the request's task once the snapshot's recorder QEMU
/// has received part of the guest's RAM (the live migration is under way), or panics if that
/// does not happen in time.
async fn snapshot_until_migrating(
    node: &Node,
    client: &Client,
    sb: &Sandbox,
    name: &str,
) -> (
    tokio::task::JoinHandle<Result<SnapshotInfo, ClientError>>,
    Instant,
) {
    let fired = Instant::now();
    let (client, id, name) = (client.clone(), sb.id().to_owned(), name.to_owned());
    let request = tokio::spawn(async move { client.create_snapshot(&id, Some(&name)).await });
    let own = format!("{}/.tmp-", node.snapshots_dir().display());
    let (mut dir_seen, mut recorder_seen) = (None, None);
    loop {
        if dir_seen.is_none() && !node.tmp_dirs().is_empty() {
            dir_seen = Some(fired.elapsed());
        }
        if recorder_seen.is_none() && node.recorders().iter().any(|(_, c)| c.contains(&own)) {
            recorder_seen = Some(fired.elapsed());
        }
        let received = node.recorded_bytes();
        if received >= 1 << 20 {
            eprintln!(
                "snapshot dir after {dir_seen:?}, recorder QEMU after {recorder_seen:?}, \
                 {} KiB of RAM received after {:?}",
                received >> 10,
                fired.elapsed()
            );
            return (request, fired);
        }
        assert!(
            !request.is_finished(),
            "the snapshot request ended before its migration was seen \
             (dir {dir_seen:?}, recorder {recorder_seen:?})"
        );
        assert!(
            fired.elapsed() < Duration::from_secs(10),
            "no migration into a recorder seen"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// SIGKILL of the server while a snapshot is being recorded, then a restart on the same data
/// dir: no unfinished directory, no snapshot that cannot be started, and no orphaned recorder
/// QEMU remain; the source, if re-adopted, still works (else it is gone entirely); new
/// snapshots work.
#[test]
fn server_killed_mid_snapshot_leaves_no_half_snapshot() {
    common::rt().block_on(async {
        let mut node = Node::new("kill-server");
        node.start().await;
        let client = node.client();
        let source = common::create(&client, "base").await;
        let source_id = source.id().to_owned();
        run(&source, "echo before-crash > /home/user/marker; sync").await;

        let (request, fired) = snapshot_until_migrating(&node, &client, &source, "crash").await;
        node.kill();
        let killed_at = fired.elapsed();
        let answer = tokio::time::timeout(Duration::from_secs(30), request)
            .await
            .expect("the in-flight request ends with the server")
            .expect("request task");
        assert!(
            answer.is_err(),
            "the snapshot finished before the kill ({killed_at:?}); nothing was interrupted: \
             {answer:?}"
        );
        // The recorders the dead server leaves behind (its own and any of a template build).
        let left_behind = node.recorders();
        eprintln!(
            "server killed {killed_at:?} after the request; left behind: tmp dirs {:?}, \
             recorder pids {:?}",
            node.tmp_dirs(),
            left_behind.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        assert!(
            !left_behind.is_empty(),
            "no recorder was running at the kill: the kill did not hit a migration"
        );

        node.start().await;
        let client = node.client();
        // No unfinished snapshot directory survives the restart.
        let tmp = node.tmp_dirs();
        assert!(tmp.is_empty(), "unfinished snapshot dirs left: {tmp:?}");
        // Every listed snapshot can be started.
        let snapshots = all_snapshots(&client).await;
        eprintln!("snapshots after the restart: {snapshots:?}");
        for snap in &snapshots {
            start_and_check(&client, &snap.snapshot_id, None).await;
        }

        // The source, if the new server adopted it, still works and can be snapshotted; if
        // not, it is gone entirely (not listed, no VM). Problems that do not stop the rest of
        // the checks are collected and fail the test at the end.
        let mut problems: Vec<String> = Vec::new();
        let adopted = listed_sandboxes(&client).await.contains(&source_id);
        eprintln!("source re-adopted after the crash: {adopted}");
        let source = if adopted {
            let source = client.connect(&source_id, None).await.unwrap();
            let marker = tokio::time::timeout(
                Duration::from_secs(30),
                run(&source, "cat /home/user/marker"),
            )
            .await
            .expect("the re-adopted source does not answer");
            assert_eq!(marker, "before-crash\n");
            run(&source, "echo source-after > /home/user/marker; sync").await;
            let snap = tokio::time::timeout(
                Duration::from_secs(60),
                source.create_snapshot(Some("again")),
            )
            .await;
            match snap {
                Ok(Ok(snap)) => {
                    let listed = all_snapshots(&client).await;
                    assert!(listed.iter().any(|s| s.snapshot_id == snap.snapshot_id));
                    let marker = ("/home/user/marker", "source-after\n");
                    start_and_check(&client, &snap.snapshot_id, Some(marker)).await;
                }
                Ok(Err(e)) => problems.push(format!(
                    "a new snapshot of the re-adopted source failed: {e}"
                )),
                Err(_) => problems.push("a new snapshot of the re-adopted source hangs".into()),
            }
            Some(source)
        } else {
            let gone = client.get_sandbox(&source_id).await.unwrap_err();
            assert!(gone.is_not_found(), "{gone:?}");
            let vm: Vec<_> = node
                .qemus()
                .into_iter()
                .filter(|(_, c)| c.contains(&source_id) && !c.contains("/snapshots/.tmp-"))
                .collect();
            assert!(
                vm.is_empty(),
                "the dropped source's QEMU still runs: {vm:?}"
            );
            None
        };

        // Snapshots work on the restarted server.
        let fresh = common::create(&client, "base").await;
        run(&fresh, "echo after-crash > /home/user/marker; sync").await;
        let snap = fresh.create_snapshot(Some("after")).await.unwrap();
        let listed = all_snapshots(&client).await;
        assert!(listed.iter().any(|s| s.snapshot_id == snap.snapshot_id));
        let marker = ("/home/user/marker", "after-crash\n");
        start_and_check(&client, &snap.snapshot_id, Some(marker)).await;
        assert!(node.tmp_dirs().is_empty(), "{:?}", node.tmp_dirs());

        // A re-adopted source keeps working (seconds after the restart).
        if let Some(source) = &source {
            let echo = tokio::time::timeout(
                Duration::from_secs(20),
                source.commands().run("echo still-alive"),
            )
            .await;
            match echo {
                Ok(Ok(out)) if out.stdout == "still-alive\n" => {}
                Ok(other) => problems.push(format!(
                    "the re-adopted source fails a command later on: {other:?}"
                )),
                Err(_) => problems.push(
                    "the re-adopted source stopped answering commands (20 s) later on".into(),
                ),
            }
        }
        // No recorder QEMU of an interrupted snapshot outlives the restart: its directory is
        // gone, so nothing would ever stop it (it would hold the guest's RAM size forever).
        let orphans: Vec<String> = left_behind
            .into_iter()
            .filter(|(pid, cmd)| cmdline(*pid) == *cmd)
            .map(|(pid, cmd)| format!("pid {pid}: {}", &cmd[..cmd.len().min(160)]))
            .collect();
        if !orphans.is_empty() {
            problems.push(format!(
                "recorder QEMUs of interrupted snapshots still run after the restart: \
                 {orphans:#?}"
            ));
        }
        assert!(
            problems.is_empty(),
            "after a server crash mid-snapshot:\n{}",
            problems.join("\n")
        );
    });
}

/// SIGKILL of the source's QEMU while a snapshot of it is being recorded: the request fails
/// promptly, nothing of the snapshot is left, and the server goes on working.
#[test]
fn source_vm_killed_mid_snapshot_fails_cleanly() {
    common::rt().block_on(async {
        let mut node = Node::new("kill-vm");
        node.start().await;
        let client = node.client();
        let source = common::create(&client, "base").await;
        let source_id = source.id().to_owned();
        let qemu = node.qemu_pid(&source_id);
        assert!(
            cmdline(qemu).contains(&source_id),
            "pid {qemu} is not the source's QEMU"
        );

        let (request, fired) = snapshot_until_migrating(&node, &client, &source, "doomed").await;
        // SAFETY: plain kill(2) on the source's QEMU, a process of this test's data dir.
        unsafe { libc::kill(qemu as libc::pid_t, libc::SIGKILL) };
        let killed_at = fired.elapsed();
        let answer = tokio::time::timeout(Duration::from_secs(60), request)
            .await
            .expect("the snapshot request hangs after its source VM died")
            .expect("request task");
        eprintln!(
            "source QEMU killed {killed_at:?} after the request; answered after {:?}: {answer:?}",
            fired.elapsed()
        );
        let err = answer.expect_err("a snapshot of a VM killed mid-way succeeded");
        assert!(
            matches!(err.status(), Some(s) if s >= 500),
            "not a server-side API error: {err:?}"
        );

        // Nothing of the snapshot is left: no record, no directory, no recorder.
        let snapshots = all_snapshots(&client).await;
        assert!(snapshots.is_empty(), "{snapshots:?}");
        let tmp = node.tmp_dirs();
        assert!(tmp.is_empty(), "unfinished snapshot dirs left: {tmp:?}");
        let leftover = std::fs::read_dir(node.snapshots_dir())
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftover, 0, "files left in the snapshots dir");
        let own = format!("{}/.tmp-", node.snapshots_dir().display());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left: Vec<_> = node
                .recorders()
                .into_iter()
                .filter(|(_, c)| c.contains(&own))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "recorder QEMU left: {left:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The dead source is not reported as running.
        let deadline = Instant::now() + Duration::from_secs(15);
        while listed_sandboxes(&client).await.contains(&source_id) {
            assert!(
                Instant::now() < deadline,
                "the sandbox whose VM died is still listed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The server goes on: a new sandbox can be created, snapshotted and started from.
        let other = common::create(&client, "base").await;
        run(&other, "echo survivor > /home/user/marker; sync").await;
        let snap = other.create_snapshot(Some("next")).await.unwrap();
        let listed = all_snapshots(&client).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].snapshot_id, snap.snapshot_id);
        start_and_check(
            &client,
            &snap.snapshot_id,
            Some(("/home/user/marker", "survivor\n")),
        )
        .await;
        assert_eq!(run(&other, "echo still-here").await, "still-here\n");
    });
}

/// Builds a one-step template whose step fails; returns its build's status once it ended.
async fn failed_build(client: &Client) -> warren_template::e2b::TemplateBuildInfo {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("template.toml");
    let toml = "name = \"restart-log\"\n\n[[steps]]\nrun = \"echo before-the-failure; exit 3\"\n";
    std::fs::write(&file, toml).expect("write the template");
    let archive = warren_client::pack_template(&file).expect("pack the template");
    let started = client
        .submit_template_archive(archive, false)
        .await
        .unwrap();
    common::build_ended(client, &started, Duration::from_secs(300)).await
}

/// A snapshot outlives server restarts (a normal stop, then a SIGKILL): it stays listed, and
/// a sandbox started from it by the new server continues the snapshot's in-memory counter.
/// A finished template build's log survives them too.
#[test]
fn snapshot_survives_server_restarts() {
    common::rt().block_on(async {
        let mut node = Node::new("restart");
        node.start().await;
        let client = node.client();
        let source = common::create(&client, "base").await;
        let source_id = source.id().to_owned();
        start_counter(&source).await;
        let at_snapshot = count(&source).await.unwrap();
        let taking = Instant::now();
        let snap = source.create_snapshot(Some("keep")).await.unwrap();
        eprintln!(
            "snapshot {} at counter {at_snapshot} took {:?}",
            snap.snapshot_id,
            taking.elapsed()
        );
        let build = failed_build(&client).await;
        let logged = |info: &warren_template::e2b::TemplateBuildInfo| {
            info.log_entries
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
        };
        let messages = logged(&build);
        assert!(
            messages.iter().any(|m| m.contains("before-the-failure")),
            "{messages:?}"
        );

        let status = node.stop().await;
        assert!(status.success(), "warren serve exited with {status}");
        node.start().await;
        let client = node.client();
        let after = client
            .template_build_status(&build.template_id, &build.build_id, 0)
            .await
            .unwrap();
        assert_eq!(after.status, build.status);
        assert_eq!(
            logged(&after),
            messages,
            "the build's log changed over a restart"
        );
        let tail = client
            .template_build_status(&build.template_id, &build.build_id, messages.len() - 1)
            .await
            .unwrap();
        assert_eq!(logged(&tail), messages[messages.len() - 1..]);

        let listed = all_snapshots(&client).await;
        assert!(
            listed.iter().any(|s| s.snapshot_id == snap.snapshot_id),
            "the snapshot is gone after a restart: {listed:?}"
        );
        // `--on-exit detach`: the source was left running and is adopted again.
        assert!(listed_sandboxes(&client).await.contains(&source_id));
        let source = client.connect(&source_id, None).await.unwrap();

        let clone = common::create(&client, &snap.snapshot_id).await;
        let c = count(&clone).await.expect("the clone's counter");
        let at_source = count(&source).await.expect("the source's counter");
        // The clone continues from the snapshot's value: not restarted from zero, and behind
        // the source, which kept counting through the restart.
        assert!(c >= at_snapshot, "clone counter {c} < {at_snapshot}");
        assert!(
            c < at_source,
            "clone counter {c} not behind the source's {at_source}: not the snapshot's state"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = count(&clone).await.unwrap();
        assert!(
            later > c,
            "the clone's counter does not run on ({c} → {later})"
        );
        assert!(client.kill_sandbox(clone.id()).await.unwrap());

        // The same after a crash of the server.
        node.kill();
        node.start().await;
        let client = node.client();
        let listed = all_snapshots(&client).await;
        assert!(
            listed.iter().any(|s| s.snapshot_id == snap.snapshot_id),
            "the snapshot is gone after a crash: {listed:?}"
        );
        let clone = common::create(&client, &snap.snapshot_id).await;
        let c = count(&clone).await.expect("the clone's counter");
        assert!(c >= at_snapshot, "clone counter {c} < {at_snapshot}");
        let running = listed_sandboxes(&client).await;
        assert!(running.contains(&source_id), "{running:?}");
        let source = client.connect(&source_id, None).await.unwrap();
        let at_source = count(&source).await.expect("the source's counter");
        assert!(
            c < at_source,
            "clone counter {c} not behind the source's {at_source}: not the snapshot's state"
        );
    });
}
