//! Registry tests: the visible template changes only on success.

use super::*;
use crate::model::Step;

fn def(name: &str, base: Base) -> TemplateDef {
    TemplateDef {
        name: name.into(),
        tags: vec!["v1".into()],
        base,
        steps: vec![Step::Run {
            cmd: "echo".into(),
            user: None,
            timeout: None,
        }],
        start: None,
        resources: Resources::default(),
        step_timeout: None,
        default_user: None,
    }
}

fn outcome(build_id: &str) -> BuildOutcome {
    BuildOutcome {
        template: "t".into(),
        build_id: build_id.into(),
        layer_keys: vec!["k1".into()],
        final_key: "k1".into(),
        base_layer_keys: vec!["k0".into()],
        top_layer: Some(LayerRef { key: "k1".into() }),
        snapshot: SnapshotRef {
            id: format!("snap-{build_id}"),
        },
        ran: vec![0],
        cached: vec![],
        state: BuildState::default(),
        resources: Resources::default(),
    }
}

fn step_failure() -> BuildError {
    BuildError::Step(StepError::Failed {
        index: 0,
        name: "1".into(),
        label: "RUN make".into(),
        exit_code: 2,
        output: "make: *** no rule".into(),
    })
}

#[test]
fn failed_build_leaves_the_previous_one_in_use() {
    let now = Utc::now();
    let mut t = create(&[], "tid1", def("t", Base::Image), now).unwrap();
    let mut b1 = start_build(&t, t.def.clone(), "b1", &Force::default(), now);
    assert_eq!(b1.status, BuildStatus::Waiting);
    mark_building(&mut b1);
    assert_eq!(b1.status, BuildStatus::Building);
    finish_build(&mut t, &mut b1, &Ok(outcome("b1")), now);
    assert_eq!(b1.status, BuildStatus::Ready);
    assert_eq!(t.current.as_ref().unwrap().snapshot.id, "snap-b1");
    assert_eq!(t.tags.get(DEFAULT_TAG).map(String::as_str), Some("b1"));
    assert_eq!(t.tags.get("v1").map(String::as_str), Some("b1"));

    let before = t.clone();
    let mut changed = t.def.clone();
    changed.steps.push(Step::Run {
        cmd: "make".into(),
        user: None,
        timeout: None,
    });
    let mut b2 = start_build(&t, changed, "b2", &Force::default(), now);
    finish_build(&mut t, &mut b2, &Err(step_failure()), now);
    assert_eq!(t, before, "a failed build changes nothing visible");
    assert_eq!(b2.status, BuildStatus::Error);
    let failure = b2.failure.unwrap();
    assert_eq!(failure.step.as_deref(), Some("1"));
    assert_eq!(failure.exit_code, Some(2));
    assert_eq!(
        failure.message,
        "build step failed: step 1 (RUN make) exited with code 2"
    );
    assert_eq!(failure.output.as_deref(), Some("make: *** no rule"));
}

#[test]
fn names_tags_and_deletion() {
    let now = Utc::now();
    let a = create(&[], "ida", def("a", Base::Image), now).unwrap();
    assert!(matches!(
        create(std::slice::from_ref(&a), "idx", def("a", Base::Image), now),
        Err(RegistryError::NameTaken { .. })
    ));
    let mut b = create(
        std::slice::from_ref(&a),
        "idb",
        def("b", Base::Template("a".into())),
        now,
    )
    .unwrap();
    let records = vec![a.clone(), b.clone()];
    assert_eq!(find(&records, "a:default").unwrap().template_id, "ida");
    assert_eq!(find(&records, "idb").unwrap().def.name, "b");
    assert!(matches!(
        check_delete(&records, "a"),
        Err(RegistryError::InUseAsBase { .. })
    ));
    assert!(check_delete(&records, "b").is_ok());
    assert!(matches!(
        check_delete(&records, "zz"),
        Err(RegistryError::NotFound { .. })
    ));
    assert_eq!(lookup(&records)["b"].def.base, Base::Template("a".into()));
    assert!(lookup(&records)["b"].built.is_none());

    let mut build = start_build(&b, b.def.clone(), "b1", &Force::default(), now);
    finish_build(&mut b, &mut build, &Ok(outcome("b1")), now);
    let builds = vec![build];
    assert!(matches!(
        tag(&mut b, &builds, "nope", &["prod".into()], now),
        Err(RegistryError::BuildNotReady { .. })
    ));
    tag(&mut b, &builds, "b1", &["prod".into()], now).unwrap();
    assert_eq!(
        resolve_tag(&b, &builds, Some("prod")).unwrap().build_id,
        "b1"
    );
    assert!(resolve_tag(&b, &builds, Some("missing")).is_none());
    assert_eq!(list(&[a.clone(), b.clone()], Some("prod")).len(), 1);
    untag(&mut b, &["prod".into()], now).unwrap();
    assert!(matches!(
        untag(&mut b, &["default".into()], now),
        Err(RegistryError::DefaultTag)
    ));
    assert_eq!(
        layers_in_use(&builds),
        BTreeSet::from(["k0".to_string(), "k1".to_string()])
    );
    let as_base = base_template(&b).built.unwrap();
    assert_eq!(
        (as_base.final_key.as_str(), as_base.layer_keys.len()),
        ("k1", 2)
    );

    let rb = rebuild(&b, "b2", true, now);
    assert!(rb.force_all && rb.def == b.def);
    let req = build_request(&rb, BuildContext::default());
    assert!(req.force.all && req.build_id == "b2");
}

#[test]
fn records_round_trip_through_json() {
    let now = Utc::now();
    let mut t = create(&[], "tid", def("t", Base::Image), now).unwrap();
    let mut b = start_build(&t, t.def.clone(), "b1", &Force::default(), now);
    finish_build(&mut t, &mut b, &Ok(outcome("b1")), now);
    let back: TemplateRecord = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert_eq!(back, t);
    let back: BuildRecord = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    assert_eq!(back, b);
    assert_eq!(
        serde_json::to_value(BuildStatus::Building).unwrap(),
        "building"
    );
}
