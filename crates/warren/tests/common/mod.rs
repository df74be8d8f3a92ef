//! Shared harness of the end-to-end tests: one real `warren serve` per test binary.
//!
//! The server is the built `warren` binary with a throw-away data dir and the shared image
//! cache (the default cache dir, or `WARREN_CACHE_DIR`), so every test goes through the real
//! path: client → server → QEMU → guest agent. It starts on first use and is stopped at
//! process exit by an `atexit` hook, which also kills any QEMU whose command line mentions
//! the data dir, so a failing test cannot leak VMs into the next binary.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use warren_client::{Client, ListedSandbox, NewSandbox, Sandbox, SandboxQuery};

/// A running server and a client configured for it.
pub struct TestServer {
    pub url: String,
    pub api_key: String,
    pub data_dir: PathBuf,
}

impl TestServer {
    pub fn client(&self) -> Client {
        Client::new(self.url.clone(), Some(self.api_key.clone()))
    }
}

struct Running {
    child: Child,
    data_dir: PathBuf,
}

static SERVER: OnceLock<TestServer> = OnceLock::new();
static PROCESS: Mutex<Option<Running>> = Mutex::new(None);

/// The target dir's profile directory (`target/debug`), where cargo put the binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

/// Starts the shared server if needed and returns it.
pub fn server() -> &'static TestServer {
    // Started on a plain thread: it blocks, and tests call this from async code.
    SERVER.get_or_init(|| {
        std::thread::spawn(start_server)
            .join()
            .expect("starting the test server")
    })
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn start_server() -> TestServer {
    let data_dir = std::env::temp_dir().join(format!("warren-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).expect("create the data dir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let api_key = format!("wrn_e2e_{}", std::process::id());
    let log = std::fs::File::create(data_dir.join("server.log")).expect("server log");
    let child = Command::new(bin_dir().join("warren"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            // Tests of one binary run side by side against this server, each creating from
            // its own snapshot; with the default of 2, one test's standby VM could be evicted
            // by another's before the create that should take it.
            "--standby",
            "8",
            "--data-dir",
        ])
        .arg(&data_dir)
        .env("WARREN_API_KEY", &api_key)
        .env("WARREN_AGENT_BIN", bin_dir().join("warren-agent"))
        .env("RUST_LOG", "info,warren=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("spawn warren serve");
    *PROCESS.lock().expect("server lock") = Some(Running {
        child,
        data_dir: data_dir.clone(),
    });
    // SAFETY: `stop_server` is an `extern "C" fn()` with no preconditions; registering it
    // has no other effect than calling it at exit.
    unsafe { libc::atexit(stop_server) };

    let deadline = Instant::now() + Duration::from_secs(600);
    let health = format!("{url}/v2/sandboxes");
    loop {
        let ok = reqwest::blocking::Client::new()
            .get(&health)
            .header("X-API-KEY", &api_key)
            .timeout(Duration::from_secs(2))
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ok {
            break;
        }
        if let Some(status) = PROCESS
            .lock()
            .expect("server lock")
            .as_mut()
            .and_then(|r| r.child.try_wait().ok().flatten())
        {
            let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
            panic!("warren serve exited with {status}:\n{log}");
        }
        assert!(Instant::now() < deadline, "warren serve did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    TestServer {
        url,
        api_key,
        data_dir,
    }
}

extern "C" fn stop_server() {
    let Ok(mut guard) = PROCESS.lock() else {
        return;
    };
    let Some(mut running) = guard.take() else {
        return;
    };
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(running.child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = running.child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = running.child.kill();
    let _ = running.child.wait();
    kill_qemus_of(&running.data_dir);
    if std::env::var_os("WARREN_E2E_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&running.data_dir);
    }
}

/// Pids of QEMU processes whose command line mentions `dir`.
pub fn qemus_of(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy();
    qemu_processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(needle.as_ref()))
        .map(|(pid, _)| pid)
        .collect()
}

/// Every QEMU process: its pid and its command line, arguments joined by spaces.
pub fn qemu_processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.starts_with("qemu-system").then_some((pid, cmd))
        })
        .collect()
}

/// Polls the status of a template build until it has ended (neither waiting nor building);
/// fails the test after `limit`.
pub async fn build_ended(
    client: &Client,
    started: &warren_client::TemplateBuildStarted,
    limit: Duration,
) -> warren_template::e2b::TemplateBuildInfo {
    use warren_template::registry::BuildStatus;
    let deadline = Instant::now() + limit;
    loop {
        let info = client
            .template_build_status(&started.template_id, &started.build_id, 0)
            .await
            .expect("build status");
        if !matches!(info.status, BuildStatus::Waiting | BuildStatus::Building) {
            return info;
        }
        assert!(Instant::now() < deadline, "the build did not end");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The pid and command line of the QEMU running sandbox `id` (its `-name` is
/// `warren-<id>,...`).
fn qemu_of(id: &str) -> Option<(u32, String)> {
    let needle = format!("warren-{id},");
    qemu_processes()
        .into_iter()
        .find(|(_, cmd)| cmd.contains(&needle))
}

/// The command line of the QEMU running sandbox `id`.
pub fn qemu_cmdline_of(id: &str) -> Option<String> {
    qemu_of(id).map(|(_, cmd)| cmd)
}

/// The pid of the QEMU running sandbox `id`.
pub fn qemu_pid_of(id: &str) -> Option<u32> {
    qemu_of(id).map(|(pid, _)| pid)
}

/// Command lines of the QEMU processes whose command line mentions `needle`.
pub fn qemus_mentioning(needle: &str) -> Vec<String> {
    qemu_processes()
        .into_iter()
        .map(|(_, cmd)| cmd)
        .filter(|cmd| cmd.contains(needle))
        .collect()
}

/// The RAM image a restored sandbox's QEMU maps: its snapshot's `mem` file.
pub fn mem_path_of(id: &str) -> String {
    let cmd = qemu_cmdline_of(id).unwrap_or_else(|| panic!("no QEMU for sandbox {id}"));
    let start = cmd.find("mem-path=").expect("a file-backed RAM") + "mem-path=".len();
    let rest = &cmd[start..];
    rest[..rest.find(',').unwrap_or(rest.len())].to_owned()
}

fn kill_qemus_of(dir: &Path) {
    for pid in qemus_of(dir) {
        // SAFETY: plain kill(2); at worst the process is already gone.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// A tokio runtime for a test body.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Creates a sandbox from `template` with a short timeout and returns it.
pub async fn create(client: &Client, template: &str) -> Sandbox {
    client
        .create_sandbox(&NewSandbox {
            template_id: template.into(),
            timeout: Some(600),
            ..Default::default()
        })
        .await
        .expect("create a sandbox")
}

/// Lists the sandboxes matching `query` until `done` accepts the list or `limit` has passed,
/// and returns the last list (the caller asserts on it).
pub async fn list_until(
    client: &Client,
    query: &SandboxQuery,
    limit: Duration,
    done: impl Fn(&[ListedSandbox]) -> bool,
) -> Vec<ListedSandbox> {
    let deadline = Instant::now() + limit;
    loop {
        let listed = client.list_sandboxes(query).await.expect("list sandboxes");
        if done(&listed) || Instant::now() > deadline {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kills a sandbox at the end of a test, whatever the test's outcome.
pub struct KillOnDrop(pub Option<Sandbox>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some(sb) = self.0.take() else { return };
        let client = server().client();
        let id = sb.id().to_owned();
        std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Runtime::new() {
                let _ = rt.block_on(client.kill_sandbox(&id));
            }
        })
        .join()
        .ok();
    }
}

/// Starts a Python process that counts in memory and writes each value out. Each value is
/// written to a temporary file and renamed over `/tmp/count`, so a reader (or a snapshot
/// taken at any instant) never sees a truncated, empty file.
pub async fn start_counter(sb: &Sandbox) {
    let script = "import os, time\nn = 0\nwhile True:\n    n += 1\n    \
                  open('/tmp/count.new', 'w').write(str(n))\n    \
                  os.replace('/tmp/count.new', '/tmp/count')\n    time.sleep(0.05)\n";
    sb.files().write("/tmp/counter.py", script).await.unwrap();
    sb.commands()
        .run("nohup python3 /tmp/counter.py >/dev/null 2>&1 &")
        .await
        .unwrap();
    for _ in 0..100 {
        if count(sb).await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the counter did not start");
}

pub async fn count(sb: &Sandbox) -> Option<u64> {
    let out = sb.commands().run("cat /tmp/count 2>/dev/null").await.ok()?;
    out.stdout.trim().parse().ok()
}

pub async fn run(sb: &Sandbox, cmd: &str) -> String {
    let out = sb.commands().run(cmd).await.unwrap();
    assert_eq!(out.exit_code, 0, "{cmd}: {}", out.stderr);
    out.stdout
}
