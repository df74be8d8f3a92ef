//! Manager tests against the fake runtime.

use std::sync::Arc;
use std::time::Duration;

use warren_proto::api::SandboxState;

use super::*;
use crate::lifecycle::Phase;
use crate::testing::FakeRuntime;

struct Env {
    dir: tempfile::TempDir,
    runtime: Arc<FakeRuntime>,
    manager: SandboxManager,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = FakeRuntime::new();
    let manager = start(dir.path(), &runtime).await;
    Env {
        dir,
        runtime,
        manager,
    }
}

async fn start(dir: &std::path::Path, runtime: &Arc<FakeRuntime>) -> SandboxManager {
    let config = Config::new(dir.to_owned(), dir.join("cache"));
    let store = Store::open(dir).expect("store");
    SandboxManager::start(config, store, runtime.clone())
        .await
        .expect("start")
}

fn cmd(metadata: &[(&str, &str)]) -> CreateSandbox {
    CreateSandbox {
        template_id: "base".into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        env_vars: [("FOO".to_owned(), "bar".to_owned())].into_iter().collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_initialises_agent_and_kill_removes_everything() {
    let env = env().await;
    let sb = env.manager.create(cmd(&[])).await.expect("create");
    let id = sb.sandbox_id.clone();
    assert_eq!(id.len(), 20);
    let token = sb.envd_access_token.clone().expect("token");

    let agent = env.runtime.agent(&id).expect("agent");
    let init = agent.inits.lock().expect("lock")[0].clone();
    assert_eq!(init["accessToken"], token.as_str());
    assert_eq!(init["envVars"]["FOO"], "bar");
    assert!(init["hostTimeUnixNanos"].as_i64().expect("time") > 1_700_000_000_000_000_000);
    let entropy = init["entropy"].as_str().expect("entropy");
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, entropy)
            .expect("b64")
            .len(),
        32
    );

    let stored = env
        .manager
        .store()
        .get_sandbox(&id)
        .expect("get")
        .expect("record");
    assert_eq!(stored.phase, Phase::Running);
    assert!(stored.run_dir.join("overlay.qcow2").exists());
    let detail = env.manager.get(&id).expect("detail");
    assert_eq!(detail.listed.state, SandboxState::Running);

    env.manager.kill(&id).await.expect("kill");
    assert!(env.runtime.running().is_empty());
    assert!(!stored.run_dir.exists());
    assert!(env.manager.store().get_sandbox(&id).expect("get").is_none());
    assert!(env.manager.get(&id).is_none());
    assert!(matches!(
        env.manager.kill(&id).await,
        Err(KillError::NotFound(_))
    ));
}

#[tokio::test]
async fn failed_start_leaves_nothing() {
    let env = env().await;
    env.runtime.set_fail_start(true);
    let err = env.manager.create(cmd(&[])).await.expect_err("must fail");
    assert_eq!(err.kind(), ErrorKind::Internal);
    env.runtime.set_fail_start(false);
    let err = env.manager.create(CreateSandbox {
        template_id: "nonexistent".into(),
        ..cmd(&[])
    });
    assert_eq!(
        err.await.expect_err("unknown template").kind(),
        ErrorKind::InvalidRequest
    );
    assert!(
        env.manager
            .store()
            .list_sandboxes()
            .expect("list")
            .is_empty()
    );
    let dirs = std::fs::read_dir(env.dir.path().join("sandboxes"))
        .expect("dir")
        .count();
    assert_eq!(dirs, 0);
}

#[tokio::test]
async fn invalid_timeouts_are_rejected() {
    let env = env().await;
    for t in [0, -5, 3601] {
        let err = env
            .manager
            .create(CreateSandbox {
                timeout: Some(t),
                ..cmd(&[])
            })
            .await;
        assert!(
            matches!(err, Err(CreateError::InvalidTimeout(_))),
            "timeout {t}"
        );
    }
    let sb = env.manager.create(cmd(&[])).await.expect("create");
    let err = env
        .manager
        .set_timeout(&sb.sandbox_id, 0)
        .await
        .expect_err("zero");
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    let err = env
        .manager
        .set_timeout("nope", 10)
        .await
        .expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn timeout_kills_and_set_timeout_moves_the_deadline() {
    let env = env().await;
    let short = env
        .manager
        .create(CreateSandbox {
            timeout: Some(1),
            ..cmd(&[])
        })
        .await;
    let short = short.expect("create").sandbox_id;
    let moved = env
        .manager
        .create(CreateSandbox {
            timeout: Some(1),
            ..cmd(&[])
        })
        .await;
    let moved = moved.expect("create").sandbox_id;
    env.manager
        .set_timeout(&moved, 3)
        .await
        .expect("set timeout");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        env.manager.get(&short).is_none(),
        "expired sandbox must be gone"
    );
    assert!(
        env.manager
            .store()
            .get_sandbox(&short)
            .expect("get")
            .is_none()
    );
    assert!(
        env.manager.get(&moved).is_some(),
        "extended sandbox must live"
    );
    // Shortening works too.
    env.manager
        .set_timeout(&moved, 1)
        .await
        .expect("set timeout");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(env.manager.get(&moved).is_none());
    assert!(env.runtime.running().is_empty());
}

#[tokio::test]
async fn connect_extends_but_never_shortens() {
    let env = env().await;
    let sb = env
        .manager
        .create(CreateSandbox {
            timeout: Some(100),
            ..cmd(&[])
        })
        .await;
    let id = sb.expect("create").sandbox_id;
    let end = env.manager.get(&id).expect("get").listed.end_at;
    let (again, resumed) = env.manager.connect(&id, Some(10)).await.expect("connect");
    assert!(!resumed);
    assert_eq!(again.sandbox_id, id);
    assert_eq!(env.manager.get(&id).expect("get").listed.end_at, end);
    env.manager.connect(&id, Some(1000)).await.expect("connect");
    let extended = env.manager.get(&id).expect("get").listed.end_at;
    assert!(extended > end + chrono::Duration::seconds(800));
    let stored = env
        .manager
        .store()
        .get_sandbox(&id)
        .expect("get")
        .expect("record");
    assert_eq!(stored.end_at, extended);
    assert!(matches!(
        env.manager.connect("nope", None).await,
        Err(ConnectError::NotFound(_))
    ));
}

#[tokio::test]
async fn vm_crash_removes_the_sandbox() {
    let env = env().await;
    let id = env
        .manager
        .create(cmd(&[]))
        .await
        .expect("create")
        .sandbox_id;
    env.runtime.crash(&id);
    for _ in 0..100 {
        if env.manager.get(&id).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(env.manager.get(&id).is_none());
    assert!(matches!(
        env.manager.route(&id),
        Err(RouteError::NotFound(_))
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(env.manager.store().get_sandbox(&id).expect("get").is_none());
}

#[tokio::test]
async fn metrics_come_from_the_agent() {
    let env = env().await;
    let id = env
        .manager
        .create(cmd(&[]))
        .await
        .expect("create")
        .sandbox_id;
    let m = env.manager.metrics(&id).await.expect("metrics");
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].cpu_count, m[0].mem_total, m[0].disk_used),
        (2, 2000, 3000)
    );
    assert!(matches!(
        env.manager.metrics("nope").await,
        Err(MetricsError::NotFound(_))
    ));
}

#[tokio::test]
async fn list_filters_and_pages() {
    let env = env().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let parity = if i % 2 == 0 { "even" } else { "odd" };
        let sb = env
            .manager
            .create(cmd(&[("parity", parity), ("k y", "v&x")]))
            .await;
        ids.push(sb.expect("create").sandbox_id);
    }
    let all = env.manager.list(&ListFilter::default()).expect("list");
    assert_eq!(all.items.len(), 5);
    assert!(all.next_token.is_none());
    let in_order: Vec<_> = all.items.iter().map(|i| i.sandbox_id.clone()).collect();
    assert_eq!(in_order, ids, "ascending by start time");

    let odd = ListFilter {
        metadata: vec![
            ("parity".into(), "odd".into()),
            ("k y".into(), "v&x".into()),
        ],
        ..Default::default()
    };
    let odd = env.manager.list(&odd).expect("list");
    assert_eq!(
        odd.items.iter().map(|i| &i.sandbox_id).collect::<Vec<_>>(),
        vec![&ids[1], &ids[3]]
    );

    let mut seen = Vec::new();
    let mut filter = ListFilter {
        limit: 2,
        order: ListOrder::Desc,
        ..Default::default()
    };
    loop {
        let page = env.manager.list(&filter).expect("page");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|i| i.sandbox_id));
        match page.next_token {
            Some(token) => filter.next_token = Some(token),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let paused_only = ListFilter {
        states: Some(vec![SandboxState::Paused]),
        ..Default::default()
    };
    assert!(
        env.manager
            .list(&paused_only)
            .expect("list")
            .items
            .is_empty()
    );
    let bad = ListFilter {
        next_token: Some("garbage".into()),
        ..Default::default()
    };
    assert_eq!(
        env.manager.list(&bad).expect_err("bad token"),
        ListError::InvalidToken
    );
}

#[tokio::test]
async fn restart_adopts_live_vms_and_cleans_the_rest() {
    let env = env().await;
    let keep = env
        .manager
        .create(cmd(&[]))
        .await
        .expect("create")
        .sandbox_id;
    let dead = env
        .manager
        .create(cmd(&[]))
        .await
        .expect("create")
        .sandbox_id;
    env.manager.shutdown(ShutdownMode::Detach).await;
    drop(env.manager);
    // While the server is down, one VM dies and a run dir without a record appears.
    env.runtime.crash(&dead);
    let orphan = env
        .dir
        .path()
        .join("sandboxes")
        .join("orphan00000000000000");
    std::fs::create_dir_all(&orphan).expect("orphan dir");

    let manager = start(env.dir.path(), &env.runtime).await;
    assert!(manager.get(&keep).is_some());
    assert!(manager.route(&keep).is_ok());
    assert!(manager.get(&dead).is_none());
    assert!(manager.store().get_sandbox(&dead).expect("get").is_none());
    assert!(!env.dir.path().join("sandboxes").join(&dead).exists());
    assert!(!orphan.exists());
    // The adopted sandbox is watched again: a crash now removes it.
    env.runtime.crash(&keep);
    for _ in 0..100 {
        if manager.get(&keep).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(manager.get(&keep).is_none());
    manager.shutdown(ShutdownMode::KillAll).await;
}

#[tokio::test]
async fn shutdown_kill_all_leaves_nothing() {
    let env = env().await;
    for _ in 0..3 {
        env.manager.create(cmd(&[])).await.expect("create");
    }
    env.manager.shutdown(ShutdownMode::KillAll).await;
    assert!(env.runtime.running().is_empty());
    assert!(
        env.manager
            .store()
            .list_sandboxes()
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        std::fs::read_dir(env.dir.path().join("sandboxes"))
            .expect("dir")
            .count(),
        0
    );
}

#[tokio::test]
async fn an_abandoned_create_still_completes() {
    let env = env().await;
    env.runtime.set_start_delay(Duration::from_millis(300));
    let abandoned = tokio::time::timeout(Duration::from_millis(50), env.manager.create(cmd(&[])));
    assert!(abandoned.await.is_err(), "the caller gave up");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let page = env.manager.list(&ListFilter::default()).expect("list");
    assert_eq!(
        page.items.len(),
        1,
        "the create finished without its caller"
    );
    assert_eq!(env.runtime.running().len(), 1);
    env.manager.shutdown(ShutdownMode::KillAll).await;
    assert!(env.runtime.running().is_empty());
}

#[tokio::test]
async fn the_sandbox_limit_is_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = FakeRuntime::new();
    let mut config = Config::new(dir.path().to_owned(), dir.path().join("cache"));
    config.max_sandboxes = 1;
    let store = Store::open(dir.path()).expect("store");
    let manager = SandboxManager::start(config, store, runtime.clone())
        .await
        .expect("start");
    manager.create(cmd(&[])).await.expect("first");
    let err = manager.create(cmd(&[])).await.expect_err("over the limit");
    assert_eq!(err.kind(), ErrorKind::TooMany);
    assert_eq!(runtime.running().len(), 1);
    manager.shutdown(ShutdownMode::KillAll).await;
}
