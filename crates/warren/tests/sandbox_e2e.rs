//! End-to-end tests of sandboxes through the real path: the Rust client talks to a real
//! `warren serve`, which boots real QEMU VMs (TCG on these machines) whose agent runs the
//! commands. One sandbox is shared by the tests that do not change its lifecycle.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{KillOnDrop, rt, run, server};
use warren_client::{ClientError, ErrorCode, NewSandbox, RunOptions};

#[test]
fn commands_files_and_lifecycle_through_a_real_vm() {
    rt().block_on(async {
        let client = server().client();
        let created = Instant::now();
        let sb = client
            .create_sandbox(&NewSandbox {
                template_id: "base".into(),
                timeout: Some(600),
                metadata: Some(BTreeMap::from([("suite".to_owned(), "e2e".to_owned())])),
                env_vars: Some(BTreeMap::from([(
                    "GREETING".to_owned(),
                    "hello warren".to_owned(),
                )])),
                ..Default::default()
            })
            .await
            .expect("create");
        eprintln!("create took {:?}", created.elapsed());
        let guard = KillOnDrop(Some(sb.clone()));

        // Commands: output, exit codes, sandbox-wide env vars, the default user.
        let out = sb
            .commands()
            .run("echo $GREETING; whoami; pwd")
            .await
            .unwrap();
        assert_eq!(out.stdout, "hello warren\nuser\n/home/user\n");
        assert_eq!(out.exit_code, 0);
        let err = sb.commands().run("echo oops >&2; exit 3").await.unwrap();
        assert_eq!(err.exit_code, 3);
        assert_eq!(err.stderr, "oops\n");
        let kernel = sb.commands().run("uname -r").await.unwrap().stdout;
        assert!(
            kernel.contains("cloud-amd64"),
            "runs in the guest, got {kernel}"
        );

        let started = Instant::now();
        let t = sb.commands().run("true").await.unwrap();
        assert_eq!(t.exit_code, 0);
        eprintln!("`true` round trip took {:?}", started.elapsed());

        // Streaming a few MB of binary output through the gateway, byte-exact.
        let big = sb
            .commands()
            .run("head -c 4000000 /dev/zero | tr '\\0' 'x'")
            .await
            .unwrap();
        assert_eq!(big.stdout.len(), 4_000_000);

        // Files: write, read back, list, stat, remove; a missing file is not found.
        let files = sb.files();
        files
            .write("/home/user/dir/a.txt", "content a")
            .await
            .unwrap();
        assert_eq!(
            &files.read("/home/user/dir/a.txt").await.unwrap()[..],
            b"content a"
        );
        let owner = sb
            .commands()
            .run("stat -c %U /home/user/dir/a.txt")
            .await
            .unwrap();
        assert_eq!(owner.stdout.trim(), "user");
        let names: Vec<String> = files
            .list("/home/user/dir", 1)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["a.txt"]);
        files.remove("/home/user/dir/a.txt").await.unwrap();
        assert!(!files.exists("/home/user/dir/a.txt").await.unwrap());
        let missing = files.read("/home/user/nope").await.unwrap_err();
        assert!(missing.is_not_found(), "{missing:?}");

        // Background process, list, kill.
        let handle = sb
            .commands()
            .start("sleep 300", &RunOptions::default())
            .await
            .unwrap();
        let pids: Vec<u32> = sb
            .commands()
            .list()
            .await
            .unwrap()
            .iter()
            .map(|p| p.pid)
            .collect();
        assert!(pids.contains(&handle.pid()));
        assert!(sb.commands().kill(handle.pid()).await.unwrap());

        // Metrics come from the guest.
        let metrics = sb.metrics().await.unwrap();
        let m = metrics.last().expect("a metric sample");
        assert!(m.mem_total > 400 << 20 && m.mem_total < 600 << 20, "{m:?}");
        assert!(m.disk_total > 0 && m.cpu_count == 2, "{m:?}");

        // Kill: the sandbox and its QEMU are gone, envd calls say "not found".
        assert!(common::qemu_cmdline_of(sb.id()).is_some());
        assert!(client.kill_sandbox(sb.id()).await.unwrap());
        assert!(!client.kill_sandbox(sb.id()).await.unwrap());
        let gone = client.get_sandbox(sb.id()).await.unwrap_err();
        assert_eq!(gone.status(), Some(404), "{gone:?}");
        let dead = sb.commands().run("true").await.unwrap_err();
        assert!(format!("{dead}").contains("was not found"), "{dead}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while common::qemu_cmdline_of(sb.id()).is_some() {
            assert!(
                Instant::now() < deadline,
                "QEMU of the killed sandbox still runs"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(guard);
    });
}

#[test]
fn isolation_between_sandboxes_and_timeouts() {
    rt().block_on(async {
        let client = server().client();
        let a = common::create(&client, "base").await;
        let _ga = KillOnDrop(Some(a.clone()));
        let b = common::create(&client, "base").await;
        let _gb = KillOnDrop(Some(b.clone()));

        a.files().write("/tmp/only-a", "a").await.unwrap();
        a.commands().run("echo a > /home/user/a.txt").await.unwrap();
        assert!(!b.files().exists("/tmp/only-a").await.unwrap());
        assert!(!b.files().exists("/home/user/a.txt").await.unwrap());

        // A sandbox dies when its timeout passes.
        b.set_timeout(2).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match client.get_sandbox(b.id()).await {
                Err(e) if e.status() == Some(404) => break,
                _ => {}
            }
            assert!(Instant::now() < deadline, "sandbox outlived its timeout");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // An unknown process is not found.
        let err = a.commands().kill(999_999).await;
        assert!(matches!(err, Ok(false)), "{err:?}");
        let err = a.commands().connect(999_999).await.unwrap_err();
        assert!(
            matches!(
                &err,
                ClientError::Rpc {
                    code: ErrorCode::NotFound,
                    ..
                }
            ),
            "{err:?}"
        );
    });
}

#[test]
fn a_create_its_client_abandons_still_completes() {
    rt().block_on(async {
        let client = server().client();
        let tag = format!("abandoned-create-{}", std::process::id());
        // The client gives up before the sandbox can be up.
        let abandoned = reqwest::Client::new()
            .post(format!("{}/v2/sandboxes", server().url))
            .header("X-API-Key", &server().api_key)
            .json(&serde_json::json!({
                "templateID": "base",
                "timeout": 120,
                "metadata": { "create-test": tag },
            }))
            .timeout(Duration::from_millis(20))
            .send()
            .await;
        assert!(abandoned.is_err(), "created within 20 ms: {abandoned:?}");
        // The sandbox still comes up, recorded and usable, rather than half made.
        let query = warren_client::SandboxQuery {
            metadata: vec![("create-test".into(), tag)],
            ..Default::default()
        };
        let limit = Duration::from_secs(60);
        let listed = common::list_until(&client, &query, limit, |l| !l.is_empty()).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        let sandbox = client
            .connect(&listed[0].sandbox_id, None)
            .await
            .expect("connect");
        let _g = KillOnDrop(Some(sandbox.clone()));
        assert_eq!(run(&sandbox, "echo up").await, "up\n");
    });
}
