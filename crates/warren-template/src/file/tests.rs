//! Template file tests: the accepted format and the location of every kind of error.

use super::*;

const FULL: &str = r#"
name = "python-web"
tags = ["v1"]
base = "base"
vcpus = 4
memory_mib = 1024
step_timeout_secs = 900

[[steps]]
apt = ["curl", "git"]

[[steps]]
pip = ["flask==3.0.3"]
timeout_secs = 300

[[steps]]
copy = "app/"
dest = "/home/user/app/"
as_user = "user"
mode = "0755"

[[steps]]
env = { FLASK_APP = "main.py", PORT = "8000" }

[[steps]]
workdir = "/home/user/app"

[[steps]]
user = "user"

[[steps]]
run = "python3 -m compileall ."
as_user = "root"

[start]
cmd = "flask run --port 8000"
ready_port = 8000
ready_timeout_secs = 60
"#;

#[test]
fn parses_every_step_kind() {
    let def = parse(FULL).unwrap();
    assert_eq!(def.name, "python-web");
    assert_eq!(def.base, Base::Image);
    assert_eq!(
        def.resources,
        Resources {
            vcpus: 4,
            memory_mib: 1024
        }
    );
    assert_eq!(def.step_timeout, Some(Duration::from_secs(900)));
    assert_eq!(def.steps.len(), 7);
    assert_eq!(
        def.steps[1],
        Step::Pip {
            packages: vec!["flask==3.0.3".into()],
            timeout: Some(Duration::from_secs(300))
        }
    );
    match &def.steps[2] {
        Step::Copy(c) => {
            assert_eq!(
                (c.src.as_str(), c.dest.as_str()),
                ("app/", "/home/user/app/")
            );
            assert_eq!(
                (c.user.as_deref(), c.mode.as_deref()),
                (Some("user"), Some("0755"))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        def.steps[3],
        Step::Env {
            vars: vec![
                ("FLASK_APP".into(), "main.py".into()),
                ("PORT".into(), "8000".into())
            ]
        }
    );
    assert_eq!(
        def.steps[5],
        Step::User {
            name: "user".into()
        }
    );
    let start = def.start.unwrap();
    assert_eq!(start.ready, ReadyCheck::Port(8000));
    assert_eq!(start.ready_timeout, Some(Duration::from_secs(60)));
}

#[test]
fn other_template_as_base() {
    let def = parse("name = \"app\"\nbase = \"python-web\"\n").unwrap();
    assert_eq!(def.base, Base::Template("python-web".into()));
    assert!(def.steps.is_empty() && def.start.is_none());
    let err = parse("name = \"app\"\nbase = \"app\"\n").unwrap_err();
    assert_eq!(err.location(), Some(Location { line: 2, column: 8 }));
}

fn error_at(text: &str) -> (Location, String) {
    let err = parse(text).unwrap_err();
    (err.location().unwrap(), err.to_string())
}

#[test]
fn syntax_and_type_errors_name_line_and_column() {
    let (at, msg) = error_at("name = \"x\"\n\n[[steps]]\nrun = \"a\"\nrnu = \"b\"\n");
    assert_eq!(at.line, 5, "{msg}");
    assert!(
        msg.starts_with("line 5, column 1:") && msg.contains("rnu"),
        "{msg}"
    );

    let (at, msg) = error_at("name = \"x\"\nvcpus = \"two\"\n");
    assert_eq!(at, Location { line: 2, column: 9 }, "{msg}");

    let (at, msg) = error_at("name = \"x\"\n[[steps]]\nrun = \"unterminated\n");
    assert_eq!(at.line, 3, "{msg}");

    let (at, msg) = error_at("name = \"x\"\n[start]\ncmd = \"s\"\nready_port = 70000\n");
    assert_eq!(at.line, 4, "{msg}");
}

#[test]
fn rule_violations_name_the_field() {
    let (at, msg) = error_at("name = \"x\"\n[[steps]]\napt = [\"curl\", \"a;b\"]\n");
    assert_eq!(
        at,
        Location {
            line: 3,
            column: 16
        },
        "{msg}"
    );
    assert!(msg.contains("apt: `a;b`"), "{msg}");

    let (at, msg) = error_at("name = \"x\"\n[[steps]]\nrun = \"a\"\napt = [\"b\"]\n");
    assert_eq!(at.line, 4, "{msg}");
    assert!(msg.contains("cannot be combined"), "{msg}");

    let (at, msg) = error_at("name = \"x\"\n[[steps]]\nrun = \"a\"\nmode = \"0644\"\n");
    assert_eq!(at.line, 4, "{msg}");
    assert!(msg.contains("does not apply to a `run` step"), "{msg}");

    let (at, msg) = error_at("name = \"x\"\n[[steps]]\ncopy = \"../secret\"\ndest = \"/x\"\n");
    assert_eq!(at.line, 3, "{msg}");
    assert!(msg.contains("leaves the build context"), "{msg}");

    let (_, msg) = error_at("name = \"x\"\n[[steps]]\ncopy = \"a\"\n");
    assert!(msg.contains("dest: is required"), "{msg}");

    let (at, msg) = error_at("name = \"Bad Name\"\n");
    assert_eq!(at, Location { line: 1, column: 8 }, "{msg}");

    let (at, msg) =
        error_at("name = \"x\"\n[start]\ncmd = \"s\"\nready_port = 1\nready_cmd = \"t\"\n");
    assert!(at.line == 4 || at.line == 5, "{msg}");
    assert!(msg.contains("only one ready check"), "{msg}");

    let (_, msg) = error_at("name = \"x\"\n[start]\ncmd = \"s\"\n");
    assert!(msg.contains("needs one of ready_cmd"), "{msg}");

    let (at, msg) = error_at("name = \"x\"\n\n[[steps]]\ntimeout_secs = 5\n");
    assert!(msg.contains("needs one of run"), "{msg}");
    assert!(at.line >= 3, "{msg}");
}

#[test]
fn load_uses_the_file_folder_as_context() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, "name = \"x\"\n").unwrap();
    let (def, ctx) = load(&path).unwrap();
    assert_eq!(def.name, "x");
    assert_eq!(ctx.dir.as_deref(), Some(dir.path()));
    assert!(matches!(
        load(&dir.path().join("nope.toml")),
        Err(TemplateFileError::Read { .. })
    ));
}

#[test]
fn shipped_examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates");
    let mut files = vec![root.join("python-web/template.toml")];
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for path in files {
        let (def, ctx) = load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for step in &def.steps {
            if let Step::Copy(copy) = step {
                crate::layers::locate_copy_source(&ctx, copy)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }
}

#[test]
fn written_files_read_back_as_the_same_definition() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates");
    let mut files = vec![root.join("python-web/template.toml")];
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    let mut defs: Vec<TemplateDef> = files.iter().map(|p| load(p).unwrap().0).collect();
    defs.push(parse(FULL).unwrap());
    for def in defs {
        let text = to_toml(&def).unwrap();
        assert_eq!(parse(&text).unwrap(), def, "{text}");
    }
}

#[test]
fn what_files_cannot_say_is_refused() {
    let mut def = parse(FULL).unwrap();
    def.default_user = Some("user".into());
    assert!(matches!(to_toml(&def), Err(WriteError::Unsupported(_))));
}
