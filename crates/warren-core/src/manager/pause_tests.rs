//! Pause and resume against the fake runtime: the state machine, the pause snapshot's life,
//! re-keying the resumed agent, and auto-pause on timeout.

use std::sync::Arc;
use std::time::Duration;

use warren_proto::api::SandboxState;

use super::*;
use crate::lifecycle::Phase;
use crate::testing::FakeRuntime;

async fn start(dir: &std::path::Path, runtime: &Arc<FakeRuntime>) -> SandboxManager {
    let config = Config::new(dir.to_owned(), dir.join("cache"));
    let store = Store::open(dir).expect("store");
    SandboxManager::start(config, store, runtime.clone())
        .await
        .expect("start")
}

fn cmd() -> CreateSandbox {
    CreateSandbox {
        template_id: "base".into(),
        env_vars: [("FOO".to_owned(), "bar".to_owned())].into_iter().collect(),
        ..Default::default()
    }
}

fn pause_dir(manager: &SandboxManager, id: &str) -> std::path::PathBuf {
    let record = manager
        .store()
        .get_sandbox(id)
        .expect("get")
        .expect("record");
    record.run_dir.join("pause")
}

#[tokio::test]
async fn pause_connect_resumes_with_the_same_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = FakeRuntime::new();
    let manager = start(dir.path(), &runtime).await;
    let sb = manager.create(cmd()).await.expect("create");
    let id = sb.sandbox_id.clone();
    let token = sb.envd_access_token.clone().expect("token");

    manager.pause(&id, true, true).await.expect("pause");
    assert!(runtime.running().is_empty(), "a paused sandbox has no VM");
    let snap = pause_dir(&manager, &id);
    assert!(snap.join(crate::testing::FAKE_SNAPSHOT_FILE).exists());
    assert!(
        !dir.path()
            .join("sandboxes")
            .join(&id)
            .join("pause.tmp")
            .exists()
    );
    let stored = manager
        .store()
        .get_sandbox(&id)
        .expect("get")
        .expect("record");
    assert_eq!(stored.phase, Phase::Paused);
    assert_eq!((stored.pid, stored.agent_port), (None, None));
    assert_eq!(
        manager.get(&id).expect("detail").listed.state,
        SandboxState::Paused
    );
    // Not in the user's snapshots, but kept from disk garbage collection.
    assert!(
        manager
            .list_snapshots(SnapshotFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    manager.collect_garbage().await;
    assert!(runtime.last_keep().expect("collected").contains(&snap));
    // The gateway must not reach it, and a second pause is a conflict (SDKs' `false`).
    assert!(manager.route(&id).is_err());
    let again = manager.pause(&id, true, false).await.expect_err("twice");
    assert_eq!(again.kind(), ErrorKind::Conflict);
    assert!(matches!(
        manager.pause("nope", true, false).await,
        Err(PauseError::NotFound(_))
    ));

    let before = now();
    let (resumed, was_paused) = manager.connect(&id, Some(60)).await.expect("connect");
    assert!(was_paused);
    assert_eq!(resumed.sandbox_id, id);
    assert_eq!(resumed.envd_access_token.as_deref(), Some(token.as_str()));
    assert_eq!(runtime.running(), vec![id.clone()]);
    // The restored agent held the old token and was re-keyed (to the same one) by /init.
    let agent = runtime.agent(&id).expect("agent");
    let inits = agent.inits.lock().expect("lock").clone();
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0]["accessToken"], token.as_str());
    assert_eq!(inits[0]["envVars"]["FOO"], "bar");
    assert!(manager.route(&id).is_ok());
    let detail = manager.get(&id).expect("detail");
    assert_eq!(detail.listed.state, SandboxState::Running);
    assert!(detail.listed.end_at >= before + chrono::Duration::seconds(60));
    let stored = manager
        .store()
        .get_sandbox(&id)
        .expect("get")
        .expect("record");
    assert_eq!(stored.phase, Phase::Running);
    assert!(stored.pid.is_some());
    assert!(
        !snap.exists(),
        "the pause snapshot is deleted after a resume"
    );
    // Connecting to the running sandbox is a plain connect again.
    let (_, was_paused) = manager.connect(&id, None).await.expect("connect");
    assert!(!was_paused);
    // Legacy resume refuses a running sandbox.
    let err = manager.resume_paused(&id, None).await.expect_err("running");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    manager.shutdown(ShutdownMode::KillAll).await;
    assert!(runtime.running().is_empty());
}

#[tokio::test]
async fn list_filters_paused_and_kill_removes_a_paused_sandbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = FakeRuntime::new();
    let manager = start(dir.path(), &runtime).await;
    let paused = manager.create(cmd()).await.expect("create").sandbox_id;
    let running = manager.create(cmd()).await.expect("create").sandbox_id;
    manager.pause(&paused, false, false).await.expect("pause");

    let only = |states| {
        let filter = ListFilter {
            states: Some(states),
            ..Default::default()
        };
        let page = manager.list(&filter).expect("list");
        page.items
            .into_iter()
            .map(|i| (i.sandbox_id, i.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        only(vec![SandboxState::Paused]),
        vec![(paused.clone(), SandboxState::Paused)]
    );
    assert_eq!(
        only(vec![SandboxState::Running]),
        vec![(running.clone(), SandboxState::Running)]
    );
    assert_eq!(
        manager
            .list(&ListFilter::default())
            .expect("list")
            .items
            .len(),
        2
    );

    let run_dir = dir.path().join("sandboxes").join(&paused);
    assert!(run_dir.join("pause").exists());
    manager.kill(&paused).await.expect("kill paused");
    assert!(
        !run_dir.exists(),
        "the pause snapshot goes with the sandbox"
    );
    assert!(manager.store().get_sandbox(&paused).expect("get").is_none());
    assert!(manager.get(&paused).is_none());
    assert_eq!(runtime.running(), vec![running.clone()]);
    manager.shutdown(ShutdownMode::KillAll).await;
}

#[tokio::test]
async fn auto_pause_on_timeout_and_paused_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = FakeRuntime::new();
    let manager = start(dir.path(), &runtime).await;
    let auto = manager
        .create(CreateSandbox {
            timeout: Some(1),
            auto_pause: true,
            ..cmd()
        })
        .await
        .expect("create")
        .sandbox_id;
    let killed = manager
        .create(CreateSandbox {
            timeout: Some(1),
            ..cmd()
        })
        .await
        .expect("create")
        .sandbox_id;
    let mut state = None;
    for _ in 0..300 {
        state = manager.get(&auto).map(|d| d.listed.state);
        if state == Some(SandboxState::Paused) && manager.get(&killed).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        state,
        Some(SandboxState::Paused),
        "autoPause pauses on timeout"
    );
    assert!(
        manager.get(&killed).is_none(),
        "without autoPause the timeout kills"
    );
    assert!(runtime.running().is_empty());
    // No deadline while paused: it stays paused past its old endAt.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        manager.get(&auto).map(|d| d.listed.state),
        Some(SandboxState::Paused)
    );

    // A restart keeps the paused record and its snapshot.
    manager.shutdown(ShutdownMode::Detach).await;
    drop(manager);
    let manager = start(dir.path(), &runtime).await;
    assert_eq!(
        manager.get(&auto).map(|d| d.listed.state),
        Some(SandboxState::Paused)
    );
    assert!(pause_dir(&manager, &auto).exists());
    let (_, resumed) = manager.connect(&auto, None).await.expect("resume");
    assert!(resumed);
    assert_eq!(runtime.running(), vec![auto.clone()]);
    manager.shutdown(ShutdownMode::KillAll).await;
    assert!(runtime.running().is_empty());
}

#[tokio::test]
async fn failed_pause_keeps_running_and_failed_resume_keeps_paused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = FakeRuntime::new();
    let manager = start(dir.path(), &runtime).await;
    let id = manager.create(cmd()).await.expect("create").sandbox_id;

    runtime.set_fail_snapshot(true);
    let err = manager
        .pause(&id, true, false)
        .await
        .expect_err("pause fails");
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert_eq!(
        manager.get(&id).map(|d| d.listed.state),
        Some(SandboxState::Running)
    );
    assert!(manager.route(&id).is_ok(), "the VM still serves");
    assert!(
        !dir.path()
            .join("sandboxes")
            .join(&id)
            .join("pause.tmp")
            .exists()
    );
    runtime.set_fail_snapshot(false);

    manager.pause(&id, true, false).await.expect("pause");
    runtime.set_fail_start(true);
    let err = manager.connect(&id, None).await.expect_err("resume fails");
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert_eq!(
        manager.get(&id).map(|d| d.listed.state),
        Some(SandboxState::Paused)
    );
    assert!(
        pause_dir(&manager, &id).exists(),
        "the snapshot survives for a retry"
    );
    runtime.set_fail_start(false);
    let sandbox = manager.resume_paused(&id, Some(30)).await.expect("retry");
    assert_eq!(sandbox.sandbox_id, id);
    assert_eq!(
        manager.get(&id).map(|d| d.listed.state),
        Some(SandboxState::Running)
    );
    manager.shutdown(ShutdownMode::KillAll).await;
}

#[tokio::test]
async fn concurrent_connects_share_one_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = FakeRuntime::new();
    let manager = start(dir.path(), &runtime).await;
    let id = manager.create(cmd()).await.expect("create").sandbox_id;
    manager.pause(&id, true, false).await.expect("pause");
    runtime.set_start_delay(Duration::from_millis(300));
    let (a, b) = tokio::join!(manager.connect(&id, None), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        manager.connect(&id, None).await
    });
    let mut resumed = [a.expect("first").1, b.expect("second").1];
    resumed.sort();
    assert_eq!(
        resumed,
        [false, true],
        "one resumes, the other finds it running"
    );
    assert_eq!(runtime.running(), vec![id.clone()]);
    manager.shutdown(ShutdownMode::KillAll).await;
}
