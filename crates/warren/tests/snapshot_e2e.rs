//! End-to-end tests of live snapshots through the real path (client → server → QEMU →
//! agent): a process holding state in memory continues in sandboxes started from a
//! snapshot, siblings are isolated and get fresh randomness and the current time, a
//! snapshot outlives the deletion checks, and a clone can be snapshotted in turn.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{KillOnDrop, count, rt, run, server, start_counter};
use warren_client::SnapshotQuery;

#[test]
fn clones_continue_in_memory_state_and_diverge() {
    rt().block_on(async {
        let client = server().client();
        let source = common::create(&client, "base").await;
        let _g = KillOnDrop(Some(source.clone()));
        start_counter(&source).await;
        run(&source, "echo original > /home/user/state.txt; sync").await;

        let at_snapshot = count(&source).await.unwrap();
        let snap = source.create_snapshot(Some("e2e")).await.unwrap();
        assert!(snap.snapshot_id.starts_with("warren/e2e:"), "{snap:?}");
        // The source keeps running, with the same id.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(count(&source).await.unwrap() > at_snapshot);
        run(&source, "echo source-changed > /home/user/state.txt").await;

        let listed = client
            .list_snapshots(&SnapshotQuery {
                sandbox_id: Some(source.id().to_owned()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(listed.iter().any(|s| s.snapshot_id == snap.snapshot_id));

        let a = common::create(&client, &snap.snapshot_id).await;
        let _ga = KillOnDrop(Some(a.clone()));
        let b = common::create(&client, &snap.snapshot_id).await;
        let _gb = KillOnDrop(Some(b.clone()));

        for clone in [&a, &b] {
            // The counter process survived in memory: it continues from the snapshot's value.
            let c = count(clone).await.unwrap();
            assert!(c >= at_snapshot, "clone counter {c} < {at_snapshot}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                count(clone).await.unwrap() > c,
                "the clone's counter runs on"
            );
            assert_eq!(run(clone, "cat /home/user/state.txt").await, "original\n");
            // The wall clock is the host's (within a second), not the snapshot's.
            let host = || {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
            };
            let before = host();
            let guest: f64 = run(clone, "date +%s.%N").await.trim().parse().unwrap();
            let after = host();
            assert!(
                before - 1.0 <= guest && guest <= after + 1.0,
                "guest clock {guest} vs host {before}..{after}"
            );
        }
        // Writes stay in their own sandbox.
        run(&a, "echo from-a > /home/user/state.txt").await;
        assert_eq!(run(&b, "cat /home/user/state.txt").await, "original\n");
        assert_eq!(
            run(&source, "cat /home/user/state.txt").await,
            "source-changed\n"
        );
        // Siblings get fresh, different randomness.
        let rng = "cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -An -tx1";
        assert_ne!(run(&a, rng).await, run(&b, rng).await);

        // A clone can itself be snapshotted, and that snapshot carries its changes.
        let snap2 = a.create_snapshot(None).await.unwrap();
        let c = common::create(&client, &snap2.snapshot_id).await;
        let _gc = KillOnDrop(Some(c.clone()));
        assert_eq!(run(&c, "cat /home/user/state.txt").await, "from-a\n");
        assert!(count(&c).await.unwrap() >= at_snapshot);

        // Deleting: true, then false; running clones are not affected.
        assert!(client.delete_snapshot(&snap.snapshot_id).await.unwrap());
        assert!(!client.delete_snapshot(&snap.snapshot_id).await.unwrap());
        assert!(client.delete_snapshot(&snap2.snapshot_id).await.unwrap());
        assert_eq!(run(&b, "cat /home/user/state.txt").await, "original\n");
        assert!(count(&b).await.is_some());
        // A deleted snapshot cannot be started from.
        let gone = client
            .create_sandbox(&warren_client::NewSandbox {
                template_id: snap.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(gone.status(), Some(400), "{gone:?}");
    });
}

#[test]
fn fork_starts_copies_in_the_same_state() {
    rt().block_on(async {
        let client = server().client();
        let source = common::create(&client, "base").await;
        let _g = KillOnDrop(Some(source.clone()));
        run(&source, "echo forked > /tmp/marker").await;
        let forks = client.fork(source.id(), 2, Some(300)).await.unwrap();
        assert_eq!(forks.len(), 2);
        let mut guards = Vec::new();
        for f in &forks {
            let sb = f.sandbox.as_ref().expect("a forked sandbox");
            let sb = client.connect(&sb.sandbox_id, None).await.unwrap();
            assert_eq!(run(&sb, "cat /tmp/marker").await, "forked\n");
            guards.push(KillOnDrop(Some(sb)));
        }
        // Fork leaves no snapshot behind, listed or on disk.
        let query = SnapshotQuery {
            sandbox_id: Some(source.id().to_owned()),
            ..Default::default()
        };
        let left = client.list_snapshots(&query).await.unwrap();
        assert!(left.is_empty(), "{left:?}");
        let snapshots_dir = server().data_dir.join("snapshots");
        let leftovers: Vec<_> = std::fs::read_dir(&snapshots_dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            !leftovers
                .iter()
                .any(|n| n.to_string_lossy().contains("fork")),
            "{leftovers:?}"
        );
        // A fork (its RAM mapped from the fork's in-memory image) can itself be snapshotted,
        // and a sandbox from that snapshot has the fork's files and its own later writes.
        let fork = guards[0].0.clone().expect("a fork");
        run(&fork, "echo second > /tmp/marker2").await;
        let snap = fork.create_snapshot(None).await.unwrap();
        let from_fork = common::create(&client, &snap.snapshot_id).await;
        let _g2 = KillOnDrop(Some(from_fork.clone()));
        assert_eq!(
            run(&from_fork, "cat /tmp/marker /tmp/marker2").await,
            "forked\nsecond\n"
        );
        assert!(client.delete_snapshot(&snap.snapshot_id).await.unwrap());
    });
}

#[test]
fn twenty_concurrent_create_exec_kill_cycles_leave_nothing_behind() {
    rt().block_on(async {
        let client = server().client();
        let source = common::create(&client, "base").await;
        let _g = KillOnDrop(Some(source.clone()));
        let snap = source.create_snapshot(Some("churn")).await.unwrap();

        let cycles = (0..20).map(|i| {
            let client = client.clone();
            let template = snap.snapshot_id.clone();
            tokio::spawn(async move {
                let sb = common::create(&client, &template).await;
                let out = sb.commands().run(&format!("echo cycle-{i}")).await;
                let mem = common::mem_path_of(sb.id());
                let killed = client.kill_sandbox(sb.id()).await;
                (i, sb.id().to_owned(), out.map(|o| o.stdout), killed, mem)
            })
        });
        let mut ids = Vec::new();
        let mut mem = String::new();
        for joined in futures::future::join_all(cycles).await {
            let (i, id, out, killed, their_mem) = joined.expect("cycle task");
            assert_eq!(out.expect("exec"), format!("cycle-{i}\n"));
            assert!(killed.expect("kill"), "cycle {i} was not killed");
            ids.push(id);
            mem = their_mem;
        }
        assert!(client.delete_snapshot(&snap.snapshot_id).await.unwrap());

        // No QEMU of the 20 is left, nor one mapping the snapshot's memory (a standby VM
        // prepared for the next create from it goes with the snapshot).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left: Vec<String> = common::qemus_mentioning(&mem)
                .into_iter()
                .chain(ids.iter().filter_map(|id| common::qemu_cmdline_of(id)))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "QEMU processes left behind: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Nothing of the 20 is left on disk: run dirs, disk overlays.
        let data = &server().data_dir;
        let disks: Vec<String> = std::fs::read_dir(data.join("disks"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for id in &ids {
            assert!(
                !data.join("sandboxes").join(id).exists(),
                "run dir of {id} left"
            );
            assert!(
                !disks.iter().any(|d| d.starts_with(id.as_str())),
                "disk of {id} left: {disks:?}"
            );
            let gone = client.get_sandbox(id).await.unwrap_err();
            assert_eq!(gone.status(), Some(404));
        }
    });
}

#[test]
fn a_fork_its_client_abandons_still_completes_and_cleans_up() {
    rt().block_on(async {
        let client = server().client();
        let tag = format!("abandoned-{}", std::process::id());
        let mut metadata = warren_proto::api::StringMap::new();
        metadata.insert("fork-test".into(), tag.clone());
        let source = client
            .create_sandbox(&warren_client::NewSandbox {
                template_id: "base".into(),
                timeout: Some(600),
                metadata: Some(metadata),
                ..Default::default()
            })
            .await
            .expect("create the source");
        let _g = KillOnDrop(Some(source.clone()));
        // The client gives up long before the fork can be done.
        let abandoned = reqwest::Client::new()
            .post(format!("{}/sandboxes/{}/fork", server().url, source.id()))
            .header("X-API-Key", &server().api_key)
            .json(&serde_json::json!({ "count": 2 }))
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(
            abandoned.is_err(),
            "the fork answered within 300 ms: {abandoned:?}"
        );

        // The forks (they carry the source's metadata) still come up...
        let query = warren_client::SandboxQuery {
            metadata: vec![("fork-test".into(), tag)],
            ..Default::default()
        };
        let is_fork = |s: &warren_client::ListedSandbox| s.sandbox_id != source.id();
        let limit = Duration::from_secs(120);
        let listed = common::list_until(&client, &query, limit, |l| {
            l.iter().filter(|s| is_fork(s)).count() == 2
        })
        .await;
        let forks: Vec<_> = listed.into_iter().filter(is_fork).collect();
        let mut guards = Vec::new();
        for f in &forks {
            guards.push(KillOnDrop(client.connect(&f.sandbox_id, None).await.ok()));
        }
        assert_eq!(forks.len(), 2, "{forks:?}");
        // ...and the fork's snapshot directory is removed once they have.
        let snapshots = server().data_dir.join("snapshots");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left: Vec<String> = std::fs::read_dir(&snapshots)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.contains("fork"))
                        .collect()
                })
                .unwrap_or_default();
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "left behind: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[test]
fn back_to_back_creates_each_take_a_standby() {
    rt().block_on(async {
        let client = server().client();
        let source = common::create(&client, "base").await;
        let _g = KillOnDrop(Some(source.clone()));
        let snap = source.create_snapshot(None).await.unwrap();
        // Each create asks for the next one's standby as it starts; a create sent right
        // after the previous one returned usually finds it still warming up and waits for it
        // rather than starting QEMU itself. Either way its QEMU already ran when it was
        // asked for. Three rounds, so that one host hiccup beyond the wait's bound (the
        // create then starts its own VM, correctly) does not fail the test.
        let mut took_over = 0;
        for _ in 0..3 {
            let a = common::create(&client, &snap.snapshot_id).await;
            let _ga = KillOnDrop(Some(a.clone()));
            let mem = common::mem_path_of(a.id());
            let before = common::qemus_of(std::path::Path::new(&mem));
            let b = common::create(&client, &snap.snapshot_id).await;
            let _gb = KillOnDrop(Some(b.clone()));
            let pid = common::qemu_pid_of(b.id()).expect("the second sandbox's QEMU");
            took_over += usize::from(before.contains(&pid));
            assert_eq!(run(&b, "echo up").await, "up\n");
        }
        assert!(
            took_over >= 2,
            "{took_over} of 3 back-to-back creates took a standby"
        );
        assert!(client.delete_snapshot(&snap.snapshot_id).await.unwrap());
    });
}

/// Waits for a QEMU mapping `mem` that belongs to none of `not`: the standby VM the server
/// prepares for the next create from that snapshot. Returns its sandbox id (from `-name`).
async fn standby_of(mem: &str, not: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = common::qemus_mentioning(mem).into_iter().find_map(|cmd| {
            let start = cmd.find("-name warren-")? + "-name warren-".len();
            let id = cmd[start..].split(',').next()?.to_owned();
            (!not.contains(&id.as_str())).then_some(id)
        });
        // QEMU is up once `Vm::launch` has written `vm.json`; the pool takes the VM after
        // loading its device state and warming the guest up, about 100 ms later (3 s
        // cover a host loaded by the other tests).
        let launched = |id: &String| {
            let run_dir = server().data_dir.join("sandboxes").join(id);
            run_dir.join("vm.json").exists()
        };
        if let Some(id) = found.filter(launched) {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no standby VM appeared for {mem}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_create_takes_over_the_standby_vm_of_its_snapshot() {
    rt().block_on(async {
        let client = server().client();
        let source = common::create(&client, "base").await;
        let _g = KillOnDrop(Some(source.clone()));
        run(&source, "echo prepared > /home/user/standby.txt; sync").await;
        let snap = source.create_snapshot(Some("standby")).await.unwrap();

        let first = common::create(&client, &snap.snapshot_id).await;
        let _g1 = KillOnDrop(Some(first.clone()));
        let mem = common::mem_path_of(first.id());
        // After a create, the server starts QEMU for the next one ahead of demand...
        let standby = standby_of(&mem, &[first.id()]).await;
        // ...which is no sandbox until a create claims it.
        let unknown = client.get_sandbox(&standby).await.unwrap_err();
        assert_eq!(unknown.status(), Some(404), "{unknown:?}");

        let second = common::create(&client, &snap.snapshot_id).await;
        let _g2 = KillOnDrop(Some(second.clone()));
        assert_eq!(
            second.id(),
            standby,
            "the create did not use the standby VM"
        );
        // It is a full sandbox in the snapshot's state, isolated from its sibling.
        assert_eq!(
            run(&second, "cat /home/user/standby.txt").await,
            "prepared\n"
        );
        run(&second, "echo second > /home/user/standby.txt").await;
        assert_eq!(
            run(&first, "cat /home/user/standby.txt").await,
            "prepared\n"
        );
        let a = run(&first, "cat /proc/sys/kernel/random/uuid").await;
        let b = run(&second, "cat /proc/sys/kernel/random/uuid").await;
        assert_ne!(a, b);

        // The next standby replaces the claimed one; deleting the snapshot stops it, and the
        // sandboxes started from the snapshot keep running.
        let next = standby_of(&mem, &[first.id(), second.id()]).await;
        assert_ne!(next, standby);
        assert!(client.delete_snapshot(&snap.snapshot_id).await.unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while common::qemu_cmdline_of(&next).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the standby of a deleted snapshot still runs"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(run(&second, "cat /home/user/standby.txt").await, "second\n");
        assert_eq!(run(&first, "echo alive").await, "alive\n");
    });
}
