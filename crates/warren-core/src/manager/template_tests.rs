//! Creating sandboxes from templates, against the fake runtime: the name (or `name:tag`)
//! resolves to the ready build's snapshot, whose resources and env vars the sandbox gets.

use std::collections::BTreeMap;

use warren_template::backend::SnapshotRef;
use warren_template::model::{Base, Resources, TemplateDef};
use warren_template::registry::{ReadyBuild, TemplateRecord};
use warren_template::run::BuildState;

use super::*;
use crate::testing::FakeRuntime;

fn record(name: &str, snapshot_dir: &std::path::Path) -> TemplateRecord {
    let now = chrono::Utc::now();
    let ready = ReadyBuild {
        build_id: "b1".into(),
        snapshot: SnapshotRef {
            id: snapshot_dir.to_string_lossy().into_owned(),
        },
        top_layer: None,
        final_key: "k".into(),
        layer_keys: Vec::new(),
        state: BuildState {
            env: vec![
                ("FROM_TEMPLATE".into(), "yes".into()),
                ("FOO".into(), "tpl".into()),
            ],
            ..BuildState::default()
        },
        resources: Resources {
            vcpus: 1,
            memory_mib: 256,
        },
        finished_at: now,
    };
    TemplateRecord {
        template_id: "tid123".into(),
        def: TemplateDef {
            name: name.into(),
            tags: Vec::new(),
            base: Base::Image,
            steps: Vec::new(),
            start: None,
            resources: Resources::default(),
            step_timeout: None,
            default_user: None,
        },
        public: false,
        current: Some(ready),
        tags: BTreeMap::new(),
        created_at: now,
        updated_at: now,
    }
}

#[tokio::test]
async fn a_template_name_starts_from_its_ready_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = FakeRuntime::new();
    let config = Config::new(dir.path().to_owned(), dir.path().join("cache"));
    let store = Store::open(dir.path()).expect("store");
    let manager = SandboxManager::start(config, store, runtime.clone())
        .await
        .expect("start");

    // A "build VM" whose snapshot becomes the template's ready snapshot.
    let source = manager
        .create(CreateSandbox {
            template_id: "web".into(),
            boot_from: Some(BootFrom::Image),
            ..Default::default()
        })
        .await
        .expect("build vm");
    let snap = dir.path().join("templates/snapshots/b1");
    manager
        .snapshot_into(&source.sandbox_id, &snap, true)
        .await
        .expect("snapshot_into");
    assert!(snap.join(crate::testing::FAKE_SNAPSHOT_FILE).is_file());
    assert!(!dir.path().join("templates/snapshots/.tmp-b1").exists());
    manager.kill(&source.sandbox_id).await.expect("kill");

    let r = record("web", &snap);
    manager.store().put_template(&r).expect("put");

    let env = [("FOO".to_owned(), "request".to_owned())]
        .into_iter()
        .collect();
    let sb = manager
        .create(CreateSandbox {
            template_id: "web".into(),
            env_vars: env,
            ..Default::default()
        })
        .await
        .expect("create from the template");
    let detail = manager.get(&sb.sandbox_id).expect("detail");
    assert_eq!((detail.listed.cpu_count, detail.listed.memory_mb), (1, 256));
    let agent = runtime.agent(&sb.sandbox_id).expect("agent");
    let init = agent
        .inits
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("init");
    assert_eq!(init["envVars"]["FROM_TEMPLATE"], "yes");
    assert_eq!(init["envVars"]["FOO"], "request", "the request's env wins");

    // An unknown tag is an unknown template (and not a snapshot either).
    let unknown = manager
        .create(CreateSandbox {
            template_id: "web:nope".into(),
            ..Default::default()
        })
        .await;
    assert!(unknown.is_err());
}
