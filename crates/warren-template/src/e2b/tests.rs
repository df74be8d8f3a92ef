//! E2B mapping tests. `sdk_body.json` is verbatim output of the Python SDK's `Template.to_json`
//! (e2b package in `.venv-compat`) for a template using every step type.

use super::*;

const SDK_BODY: &str = include_str!("sdk_body.json");

#[test]
fn maps_an_sdk_build_body() {
    let body: TemplateBuildStartV2 = serde_json::from_str(SDK_BODY).unwrap();
    let (def, force) = map_build("web", &["v1".into()], Resources::default(), &body).unwrap();
    assert_eq!(def.base, Base::Image);
    assert_eq!(def.steps.len(), 8);
    assert!(matches!(&def.steps[0], Step::Run { user: Some(u), .. } if u == "root"));
    match &def.steps[1] {
        Step::Copy(c) => {
            assert_eq!(
                (c.src.as_str(), c.dest.as_str()),
                ("app.py", "/home/user/app/")
            );
            assert_eq!((c.user.as_deref(), c.mode.as_deref()), (None, Some("0755")));
            assert_eq!(c.files_hash.as_deref().map(str::len), Some(64));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        def.steps[2],
        Step::Env {
            vars: vec![("PORT".into(), "8000".into()), ("A".into(), "b".into())]
        }
    );
    assert_eq!(
        def.steps[3],
        Step::Workdir {
            path: "/home/user/app".into()
        }
    );
    assert_eq!(
        def.steps[4],
        Step::User {
            name: "user".into()
        }
    );
    let start = def.start.unwrap();
    assert_eq!(start.cmd.as_deref(), Some("python3 -m http.server 8000"));
    assert!(matches!(start.ready, ReadyCheck::Command(ref c) if c.contains("sport = :8000")));
    assert!(!force.all && force.steps.is_empty());
    assert_eq!(def.tags, ["v1"]);
    assert_eq!(def.default_user.as_deref(), Some("user"));
}

#[test]
fn bases_and_their_errors() {
    let with = |image: Option<&str>, template: Option<&str>| TemplateBuildStartV2 {
        from_image: image.map(str::to_string),
        from_template: template.map(str::to_string),
        ..Default::default()
    };
    for ok in [
        "e2bdev/base",
        "e2bdev/base:latest",
        "debian:12",
        "docker.io/library/debian:bookworm",
    ] {
        assert_eq!(
            map_base(&with(Some(ok), None)).unwrap(),
            Base::Image,
            "{ok}"
        );
    }
    assert_eq!(map_base(&with(None, None)).unwrap(), Base::Image);
    assert_eq!(
        map_base(&with(None, Some("py:prod"))).unwrap(),
        Base::Template("py".into())
    );
    let err = map_base(&with(Some("python:3"), None)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`python:3`") && msg.contains("debian:bookworm"),
        "{msg}"
    );
    assert!(map_base(&with(Some("debian:trixie"), None)).is_err());
    assert!(matches!(
        map_base(&with(Some("x"), Some("y"))),
        Err(E2bMapError::TwoBases)
    ));
    let mut reg = with(Some("my.registry/img"), None);
    reg.from_image_registry = Some(serde_json::json!({"type": "registry", "username": "u"}));
    assert!(matches!(
        map_base(&reg),
        Err(E2bMapError::RegistryUnsupported)
    ));
}

#[test]
fn bad_steps_name_their_index() {
    let body = |steps: serde_json::Value| -> TemplateBuildStartV2 {
        serde_json::from_value(serde_json::json!({"steps": steps})).unwrap()
    };
    let run = serde_json::json!({"type": "RUN", "args": ["true"]});
    let cases = [
        (
            serde_json::json!([run, {"type": "ADD", "args": ["x"]}]),
            "step 2: unknown step type",
        ),
        (
            serde_json::json!([{"type": "ENV", "args": ["A"]}]),
            "step 1 (ENV): needs name/value",
        ),
        (
            serde_json::json!([{"type": "COPY", "args": ["a", "/b", "", ""]}]),
            "needs filesHash",
        ),
        (
            serde_json::json!([{"type": "COPY", "args": ["../a", "/b"], "filesHash": "ab"}]),
            "leaves the build context",
        ),
        (
            serde_json::json!([{"type": "RUN", "args": []}]),
            "needs a command",
        ),
    ];
    for (steps, expected) in cases {
        let err = map_build("t", &[], Resources::default(), &body(steps)).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{err} does not contain {expected}"
        );
    }
    let forced = body(serde_json::json!([run, {"type": "RUN", "args": ["x"], "force": true}]));
    let (_, force) = map_build("t", &[], Resources::default(), &forced).unwrap();
    assert_eq!(force.steps.into_iter().collect::<Vec<_>>(), [1]);
    assert!(map_build("Bad Name", &[], Resources::default(), &forced).is_err());
}

#[test]
fn wire_shapes() {
    let v3: TemplateBuildRequestV3 =
        serde_json::from_str(r#"{"name":"web","tags":["v1"],"cpuCount":4,"memoryMB":2048}"#)
            .unwrap();
    assert_eq!(
        resources_of(&v3),
        Resources {
            vcpus: 4,
            memory_mib: 2048
        }
    );
    let resp = TemplateRequestResponseV3 {
        template_id: "t1".into(),
        build_id: "b1".into(),
        public: false,
        names: vec!["web".into()],
        tags: vec!["default".into()],
        aliases: vec!["web".into()],
    };
    let json = serde_json::to_value(&resp).unwrap();
    assert_eq!(json["templateID"], "t1");
    assert_eq!(json["buildID"], "b1");

    let log = crate::logs::BuildLog::new();
    log.push(crate::logs::LogLevel::Info, Some("1"), "hello");
    let failure = BuildFailure {
        message: "build step failed: step 1 (RUN x) exited with code 2".into(),
        step: Some("1".into()),
        exit_code: Some(2),
        output: Some("boom".into()),
    };
    let info = build_info("t1", "b1", BuildStatus::Error, log.since(0), Some(&failure));
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["status"], "error");
    assert_eq!(json["logEntries"][0]["step"], "1");
    assert_eq!(json["logEntries"][0]["level"], "info");
    assert!(json["logs"][0].as_str().unwrap().ends_with("hello"));
    assert_eq!(json["reason"]["step"], "1");
    assert!(
        json["reason"]["message"]
            .as_str()
            .unwrap()
            .ends_with("code 2\nboom")
    );
    let ready = build_info("t1", "b1", BuildStatus::Ready, log.since(1), None);
    let json = serde_json::to_value(&ready).unwrap();
    assert!(json.get("reason").is_none() && json["logEntries"].as_array().unwrap().is_empty());
}
