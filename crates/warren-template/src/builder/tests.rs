//! Builder tests over a fake backend that records what it was asked to do.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::backend::{BoxFuture, BuildVm};
use crate::logs::{LogLine, StepLog};
use crate::model::{Base, CopyStep, Step};
use crate::resolve::BaseTemplate;
use crate::run::StepError;

#[derive(Default)]
struct Shared {
    layers: HashSet<String>,
    events: Vec<String>,
    live_vms: usize,
}

#[derive(Clone, Default)]
struct Fake {
    shared: Arc<Mutex<Shared>>,
}

impl Fake {
    fn events(&self) -> Vec<String> {
        std::mem::take(&mut self.shared.lock().unwrap().events)
    }
    fn event(&self, e: String) {
        self.shared.lock().unwrap().events.push(e);
    }
}

struct FakeVm {
    fake: Fake,
    ready_attempts: u32,
}

impl BuildBackend for Fake {
    fn base_image_id(&self) -> String {
        "debian-test".into()
    }
    fn layer_exists(&self, key: &str) -> bool {
        self.shared.lock().unwrap().layers.contains(key)
    }
    fn boot<'a>(
        &'a self,
        parent: Option<&'a LayerRef>,
        spec: &'a VmSpec,
    ) -> BoxFuture<'a, Result<Box<dyn BuildVm>, BackendError>> {
        Box::pin(async move {
            let parent = parent.map_or("base".to_string(), |l| l.key[..8].to_string());
            self.event(format!("boot {:?} {parent}", spec.purpose));
            self.shared.lock().unwrap().live_vms += 1;
            Ok(Box::new(FakeVm {
                fake: self.clone(),
                ready_attempts: 0,
            }) as Box<dyn BuildVm>)
        })
    }
}

impl BuildVm for FakeVm {
    fn exec<'a>(
        &'a mut self,
        req: ExecRequest<'a>,
        log: StepLog,
    ) -> BoxFuture<'a, Result<i32, BackendError>> {
        Box::pin(async move {
            let env: Vec<String> = req.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let cwd = req.cwd.unwrap_or("~");
            self.fake.event(format!(
                "exec {} as {} in {cwd} [{}]",
                req.cmd,
                req.user,
                env.join(",")
            ));
            log.line(LogLine {
                stderr: false,
                text: format!("running {}", req.cmd),
            });
            if req.cmd.contains("HANG") {
                std::future::pending::<()>().await;
            }
            if req.cmd.contains("FAIL") {
                log.line(LogLine {
                    stderr: true,
                    text: "oops: it broke".into(),
                });
                return Ok(3);
            }
            if req.cmd.contains("NEVER") {
                return Ok(1);
            }
            if req.cmd.contains("/dev/tcp") {
                self.ready_attempts += 1;
                return Ok(if self.ready_attempts >= 3 { 0 } else { 1 });
            }
            Ok(0)
        })
    }
    fn spawn<'a>(
        &'a mut self,
        req: ExecRequest<'a>,
        _log: StepLog,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let env: Vec<String> = req.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let cwd = req.cwd.unwrap_or("~");
            self.fake.event(format!(
                "spawn {} as {} in {cwd} [{}]",
                req.cmd,
                req.user,
                env.join(",")
            ));
            Ok(())
        })
    }
    fn copy_in<'a>(
        &'a mut self,
        host_path: &'a Path,
        guest_path: &'a str,
        user: &'a str,
        _mode: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let name = host_path.file_name().unwrap_or_default().to_string_lossy();
            self.fake
                .event(format!("copy {name} -> {guest_path} as {user}"));
            Ok(())
        })
    }
    fn commit_layer<'a>(
        &'a mut self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<LayerRef, BackendError>> {
        Box::pin(async move {
            self.fake.event(format!("commit {}", &key[..8]));
            self.fake
                .shared
                .lock()
                .unwrap()
                .layers
                .insert(key.to_string());
            Ok(LayerRef {
                key: key.to_string(),
            })
        })
    }
    fn snapshot(self: Box<Self>) -> BoxFuture<'static, Result<SnapshotRef, BackendError>> {
        Box::pin(async move {
            self.fake.event("snapshot".into());
            self.fake.shared.lock().unwrap().live_vms -= 1;
            Ok(SnapshotRef {
                id: "snap-1".into(),
            })
        })
    }
    fn discard(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.fake.event("discard".into());
            self.fake.shared.lock().unwrap().live_vms -= 1;
        })
    }
}

fn run(cmd: &str) -> Step {
    Step::Run {
        cmd: cmd.into(),
        user: None,
        timeout: None,
    }
}

fn def(name: &str, steps: Vec<Step>) -> TemplateDef {
    TemplateDef {
        name: name.into(),
        tags: vec![],
        base: Base::Image,
        steps,
        start: None,
        resources: Resources::default(),
        step_timeout: None,
        default_user: None,
    }
}

fn request(def: TemplateDef) -> BuildRequest {
    BuildRequest {
        def,
        build_id: "b1".into(),
        context: BuildContext::default(),
        force: Force::default(),
    }
}

async fn build_with(fake: &Fake, req: &BuildRequest) -> Result<BuildOutcome, BuildError> {
    let lookup: HashMap<String, BaseTemplate> = HashMap::new();
    build(
        fake,
        &lookup,
        req,
        &BuildOptions::default(),
        &BuildLog::new(),
    )
    .await
}

fn execs(events: &[String]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.starts_with("exec"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn changing_the_last_step_rebuilds_only_that_step() {
    let fake = Fake::default();
    let first = request(def("t", vec![run("one"), run("two"), run("three")]));
    let out = build_with(&fake, &first).await.unwrap();
    assert_eq!(out.ran, [0, 1, 2]);
    assert_eq!(execs(&fake.events()).len(), 3);
    assert_eq!(out.top_layer.as_ref().unwrap().key, out.layer_keys[2]);

    let again = build_with(&fake, &first).await.unwrap();
    assert!(again.ran.is_empty());
    assert_eq!(again.cached, [0, 1, 2]);
    let events = fake.events();
    assert!(execs(&events).is_empty());
    assert_eq!(
        events.iter().filter(|e| e.starts_with("boot")).count(),
        1,
        "{events:?}"
    );

    let changed = request(def("t", vec![run("one"), run("two"), run("three!")]));
    let out2 = build_with(&fake, &changed).await.unwrap();
    assert_eq!(out2.ran, [2]);
    assert_eq!(out2.cached, [0, 1]);
    assert_eq!(out2.layer_keys[..2], out.layer_keys[..2]);
    let events = fake.events();
    assert_eq!(execs(&events), ["exec three! as root in ~ []"]);
    let build_boot = format!("boot Build {}", &out.layer_keys[1][..8]);
    assert!(events.contains(&build_boot), "{events:?}");
    assert_eq!(fake.shared.lock().unwrap().live_vms, 0);
}

#[tokio::test]
async fn failing_step_reports_index_output_and_exit_code() {
    let fake = Fake::default();
    let req = request(def("t", vec![run("one"), run("FAIL now"), run("three")]));
    let log = BuildLog::new();
    let lookup: HashMap<String, BaseTemplate> = HashMap::new();
    let err = build(&fake, &lookup, &req, &BuildOptions::default(), &log)
        .await
        .unwrap_err();
    match &err {
        BuildError::Step(StepError::Failed {
            index,
            name,
            exit_code,
            output,
            ..
        }) => {
            assert_eq!((*index, name.as_str(), *exit_code), (1, "2", 3));
            assert!(output.contains("oops: it broke"), "{output}");
            assert!(
                !output.contains("running one"),
                "only this step's output: {output}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.step_name(), Some("2"));
    let events = fake.events();
    assert_eq!(
        events.iter().filter(|e| e.starts_with("commit")).count(),
        1,
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.contains("three") || e == "snapshot"),
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("discard"));
    assert_eq!(fake.shared.lock().unwrap().live_vms, 0);
    assert!(
        log.since(0)
            .iter()
            .any(|e| e.level == LogLevel::Error && e.step.as_deref() == Some("2"))
    );
}

#[tokio::test]
async fn hanging_step_is_stopped_after_its_timeout() {
    let fake = Fake::default();
    let hang = Step::Run {
        cmd: "HANG".into(),
        user: None,
        timeout: Some(Duration::from_millis(50)),
    };
    let req = request(def("t", vec![run("one"), hang]));
    let started = std::time::Instant::now();
    let err = build_with(&fake, &req).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(err, BuildError::Step(StepError::TimedOut { index: 1, .. })),
        "{err:?}"
    );

    // The template-wide default applies to steps that name no timeout.
    let mut d = def("t2", vec![run("HANG too")]);
    d.step_timeout = Some(Duration::from_millis(30));
    let err = build_with(&fake, &request(d)).await.unwrap_err();
    match err {
        BuildError::Step(StepError::TimedOut { timeout, .. }) => {
            assert_eq!(timeout, Duration::from_millis(30))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fake.shared.lock().unwrap().live_vms, 0);
}

#[tokio::test]
async fn state_steps_shape_later_steps_and_the_start_command() {
    let fake = Fake::default();
    let mut d = def(
        "t",
        vec![
            Step::Env {
                vars: vec![("A".into(), "1".into())],
            },
            Step::Workdir {
                path: "/app".into(),
            },
            Step::User {
                name: "user".into(),
            },
            run("whoami"),
            Step::Apt {
                packages: vec!["curl".into()],
                timeout: None,
            },
            Step::Env {
                vars: vec![("A".into(), "2".into())],
            },
        ],
    );
    d.start = Some(StartSpec {
        cmd: Some("serve".into()),
        ready: ReadyCheck::Port(8000),
        ready_timeout: None,
    });
    let opts = BuildOptions {
        ready_poll_interval: Duration::from_millis(1),
        ..Default::default()
    };
    let lookup: HashMap<String, BaseTemplate> = HashMap::new();
    let out = build(&fake, &lookup, &request(d), &opts, &BuildLog::new())
        .await
        .unwrap();
    assert_eq!(out.ran, [3, 4]);
    let events = fake.events();
    let execs = execs(&events);
    assert_eq!(execs[0], "exec whoami as user in /app [A=1]");
    assert!(execs[1].contains("apt-get install") && execs[1].contains("as root in ~ [A=1]"));
    assert!(
        events.contains(&"spawn serve as user in /app [A=2]".to_string()),
        "{events:?}"
    );
    assert_eq!(
        execs
            .iter()
            .filter(|e| e.contains("/dev/tcp/127.0.0.1/8000"))
            .count(),
        3
    );
    assert_eq!(events.last().map(String::as_str), Some("snapshot"));
    assert_eq!(out.state.env, [("A".to_string(), "2".to_string())]);
    assert_eq!(out.snapshot.id, "snap-1");
}

#[tokio::test]
async fn ready_check_times_out() {
    let fake = Fake::default();
    let mut d = def("t", vec![]);
    d.start = Some(StartSpec {
        cmd: Some("serve".into()),
        ready: ReadyCheck::Command("NEVER".into()),
        ready_timeout: Some(Duration::from_millis(40)),
    });
    let opts = BuildOptions {
        ready_poll_interval: Duration::from_millis(5),
        ..Default::default()
    };
    let lookup: HashMap<String, BaseTemplate> = HashMap::new();
    let err = build(&fake, &lookup, &request(d), &opts, &BuildLog::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::NotReady { .. }), "{err:?}");
    assert_eq!(err.step_name(), Some("finalize"));
    assert_eq!(fake.events().last().map(String::as_str), Some("discard"));
}

#[tokio::test]
async fn copy_key_follows_file_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), "v1").unwrap();
    let copy = Step::Copy(CopyStep {
        src: "app.py".into(),
        dest: "/srv/".into(),
        user: None,
        mode: None,
        files_hash: None,
    });
    let fake = Fake::default();
    let mut req = request(def("t", vec![run("one"), copy, run("after")]));
    req.context.dir = Some(dir.path().to_path_buf());
    let first = build_with(&fake, &req).await.unwrap();
    assert!(
        fake.events()
            .contains(&"copy app.py -> /srv/ as root".to_string())
    );
    std::fs::write(dir.path().join("app.py"), "v2").unwrap();
    let second = build_with(&fake, &req).await.unwrap();
    assert_eq!(second.layer_keys[0], first.layer_keys[0]);
    assert_ne!(second.layer_keys[1], first.layer_keys[1]);
    assert_eq!(second.ran, [1, 2]);
    fake.events();

    let mut escape = request(def(
        "t",
        vec![Step::Copy(CopyStep {
            src: "../etc".into(),
            dest: "/x".into(),
            user: None,
            mode: None,
            files_hash: None,
        })],
    ));
    escape.context.dir = Some(dir.path().to_path_buf());
    let err = build_with(&fake, &escape).await.unwrap_err();
    assert!(matches!(err, BuildError::Plan(_)), "{err:?}");
    assert!(
        fake.events().is_empty(),
        "nothing boots when planning fails"
    );
}

#[tokio::test]
async fn forced_step_reruns_it_and_everything_after() {
    let fake = Fake::default();
    let mut req = request(def("t", vec![run("one"), run("two"), run("three")]));
    build_with(&fake, &req).await.unwrap();
    req.force.steps.insert(1);
    req.build_id = "b2".into();
    let out = build_with(&fake, &req).await.unwrap();
    assert_eq!(out.ran, [1, 2]);
}

#[tokio::test]
async fn derived_template_builds_on_its_base_build() {
    let fake = Fake::default();
    let mut base = def(
        "py",
        vec![
            run("apt python"),
            Step::User {
                name: "user".into(),
            },
        ],
    );
    base.start = Some(StartSpec {
        cmd: Some("serve".into()),
        ready: ReadyCheck::Delay(Duration::ZERO),
        ready_timeout: None,
    });
    let mut child = def("app", vec![run("pip app")]);
    child.base = Base::Template("py".into());
    let opts = BuildOptions::default();
    let empty: HashMap<String, BaseTemplate> = HashMap::new();
    let base_out = build(
        &fake,
        &empty,
        &request(base.clone()),
        &opts,
        &BuildLog::new(),
    )
    .await
    .unwrap();
    fake.events();

    let unbuilt: HashMap<String, BaseTemplate> = [(
        "py".to_string(),
        BaseTemplate {
            def: base.clone(),
            built: None,
        },
    )]
    .into();
    let err = build(
        &fake,
        &unbuilt,
        &request(child.clone()),
        &opts,
        &BuildLog::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BuildError::Resolve { .. }), "{err:?}");

    let built = BaseTemplate {
        def: base.clone(),
        built: Some(base_out.as_base()),
    };
    let lookup: HashMap<String, BaseTemplate> = [("py".to_string(), built)].into();
    let out = build(
        &fake,
        &lookup,
        &request(child.clone()),
        &opts,
        &BuildLog::new(),
    )
    .await
    .unwrap();
    assert_eq!(out.ran, [0]);
    let events = fake.events();
    let boot = format!("boot Build {}", &base_out.layer_keys[0][..8]);
    assert_eq!(events[0], boot, "the child boots on the base's top layer");
    assert_eq!(
        execs(&events),
        ["exec pip app as user in ~ []"],
        "base state carries over"
    );
    assert!(
        events.contains(&"spawn serve as user in ~ []".to_string()),
        "start is inherited"
    );
    assert_eq!(out.all_layer_keys().len(), 3);
    assert_eq!(out.base_layer_keys, base_out.all_layer_keys());

    let again = build(&fake, &lookup, &request(child), &opts, &BuildLog::new())
        .await
        .unwrap();
    assert!(again.ran.is_empty() && again.final_key == out.final_key);

    let mut cyclic = def("py", vec![]);
    cyclic.base = Base::Template("app".into());
    let lookup: HashMap<String, BaseTemplate> = [
        (
            "app".to_string(),
            BaseTemplate {
                def: def("app", vec![]),
                built: None,
            },
        ),
        (
            "py".to_string(),
            BaseTemplate {
                def: cyclic,
                built: Some(base_out.as_base()),
            },
        ),
    ]
    .into();
    let mut app = def("app", vec![]);
    app.base = Base::Template("py".into());
    let err = build(&fake, &lookup, &request(app), &opts, &BuildLog::new())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        BuildError::Resolve {
            source: ResolveError::Cycle { .. },
            ..
        }
    ));
}

#[tokio::test]
async fn default_user_applies_until_a_user_step_and_is_keyed() {
    let fake = Fake::default();
    let steps = vec![
        run("a"),
        Step::User {
            name: "root".into(),
        },
        run("b"),
    ];
    let plain = build_with(&fake, &request(def("t", steps.clone())))
        .await
        .unwrap();
    fake.events();
    let mut d = def("t", steps);
    d.default_user = Some("user".into());
    let out = build_with(&fake, &request(d)).await.unwrap();
    assert_ne!(
        out.layer_keys[0], plain.layer_keys[0],
        "the default user is part of the key"
    );
    assert_eq!(
        execs(&fake.events()),
        ["exec a as user in ~ []", "exec b as root in ~ []"]
    );
}
