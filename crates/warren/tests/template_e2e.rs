//! End-to-end tests of templates through the real path: the `warren template build` CLI packs
//! a template file and its COPY sources, the server builds it in VMs (one cached disk layer
//! per step) and takes the ready snapshot, and sandboxes created from the template's name
//! start from that snapshot with the start command already serving.
//!
//! The build times of the first build and of a rebuild after changing only the last step
//! are printed (`--nocapture`); they are reported in issue notes, never asserted.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{KillOnDrop, bin_dir, rt, server};
use warren_client::{Client, NewSandbox};

/// Runs the CLI against the shared server.
fn cli(args: &[&str]) -> Output {
    let s = server();
    std::process::Command::new(bin_dir().join("warren"))
        .args(["--api-url", &s.url, "--api-key", &s.api_key])
        .args(args)
        .output()
        .expect("run the warren CLI")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds `dir/template.toml` with the CLI; the final status as JSON and the wall time.
fn build(dir: &Path) -> (Output, serde_json::Value, Duration) {
    let started = Instant::now();
    let file = dir.join("template.toml");
    let out = cli(&[
        "--json",
        "template",
        "build",
        file.to_str().expect("utf-8 path"),
    ]);
    let elapsed = started.elapsed();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json, elapsed)
}

fn field<'a>(json: &'a serde_json::Value, key: &str) -> &'a str {
    json[key].as_str().unwrap_or_default()
}

/// Every log message of a build, read from offset 0 after it ended.
async fn messages(client: &Client, status: &serde_json::Value) -> Vec<String> {
    let info = client
        .template_build_status(field(status, "templateID"), field(status, "buildID"), 0)
        .await
        .expect("build status");
    info.log_entries.into_iter().map(|e| e.message).collect()
}

const SERVER_PY: &str = "\
import http.server, six
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        version = open('/home/user/version').read().strip()
        body = f'six={six.__version__} version={version}'.encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
";

fn write_template(dir: &Path, name: &str, last_step: &str) {
    let toml = format!(
        r#"name = "{name}"
base = "base"

[[steps]]
apt = ["jq"]

[[steps]]
pip = ["six"]

[[steps]]
copy = "server.py"
dest = "/home/user/server.py"
as_user = "user"

[[steps]]
{last_step}

[start]
cmd = "python3 /home/user/server.py"
ready_port = 8080
"#
    );
    std::fs::write(dir.join("template.toml"), toml).expect("write template.toml");
    std::fs::write(dir.join("server.py"), SERVER_PY).expect("write server.py");
}

async fn page(client: &Client, template: &str) -> (String, KillOnDrop) {
    let sb = client
        .create_sandbox(&NewSandbox {
            template_id: template.into(),
            timeout: Some(300),
            ..Default::default()
        })
        .await
        .expect("create from the template");
    // No waiting: the server was listening when the snapshot was taken.
    let out = sb
        .commands()
        .run("curl -s --max-time 5 http://127.0.0.1:8080/")
        .await
        .expect("curl");
    (out.stdout, KillOnDrop(Some(sb)))
}

#[test]
fn build_start_rebuild_last_step_fail_and_delete() {
    rt().block_on(async {
        let client = server().client();
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!("e2e-web-{}", std::process::id());
        write_template(dir.path(), &name, r#"run = "echo v1 > /home/user/version""#);

        let (out, first, first_time) = build(dir.path());
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(field(&first, "status"), "ready", "{}", text(&out));
        println!("first build (4 steps, cold cache): {first_time:.1?}");

        let (body, sb) = page(&client, &name).await;
        assert!(
            body.starts_with("six=") && body.ends_with("version=v1"),
            "{body:?}"
        );
        let jq =
            sb.0.as_ref()
                .expect("sandbox")
                .commands()
                .run("jq --version")
                .await;
        assert_eq!(jq.expect("jq").exit_code, 0, "the apt step installed jq");
        drop(sb);

        // Only the last step changes: steps 1-3 come from the cache.
        write_template(dir.path(), &name, r#"run = "echo v2 > /home/user/version""#);
        let (out, second, second_time) = build(dir.path());
        assert!(out.status.success(), "{}", text(&out));
        println!("rebuild after changing the last step: {second_time:.1?}");
        let log = messages(&client, &second).await;
        for step in 1..=3 {
            let cached = format!("[{step}/4] cached");
            assert!(
                log.iter().any(|m| m.starts_with(&cached)),
                "{cached} in {log:#?}"
            );
        }
        assert!(
            !log.iter().any(|m| m.starts_with("[4/4] cached")),
            "{log:#?}"
        );
        let (body, running) = page(&client, &name).await;
        assert!(body.ends_with("version=v2"), "{body:?}");

        // A failing step names itself and its exit code; the last good build stays in use.
        write_template(dir.path(), &name, r#"run = "echo boom >&2; exit 3""#);
        let (out, failed, _) = build(dir.path());
        assert!(!out.status.success(), "{}", text(&out));
        assert_eq!(field(&failed, "status"), "error", "{}", text(&out));
        let reason = failed["reason"].to_string();
        assert!(reason.contains("exited with code 3"), "{reason}");
        assert_eq!(failed["reason"]["step"], "4", "{reason}");
        let (body, _still) = page(&client, &name).await;
        assert!(body.ends_with("version=v2"), "{body:?}");

        // Deleting the template leaves its running sandboxes alone.
        assert!(client.delete_template(&name).await.expect("delete"));
        let sb = running.0.as_ref().expect("sandbox");
        let echo = sb
            .commands()
            .run("echo alive")
            .await
            .expect("run after delete");
        assert_eq!(echo.stdout.trim(), "alive");
        let gone = client
            .create_sandbox(&NewSandbox {
                template_id: name.clone(),
                ..Default::default()
            })
            .await;
        assert!(gone.is_err(), "a deleted template must not start sandboxes");
    });
}

#[test]
fn a_hanging_step_is_stopped_by_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("e2e-hang-{}", std::process::id());
    let toml = format!("name = \"{name}\"\n\n[[steps]]\nrun = \"sleep 600\"\ntimeout_secs = 5\n");
    std::fs::write(dir.path().join("template.toml"), toml).expect("write");
    let started = Instant::now();
    let (out, status, _) = build(dir.path());
    assert!(!out.status.success(), "{}", text(&out));
    let reason = status["reason"].to_string();
    assert!(
        reason.contains("did not finish within 5s"),
        "{reason}\n{}",
        text(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "the build waited for the step"
    );
}

#[test]
fn an_invalid_file_names_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = "name = \"e2e-bad\"\n\n[[steps]]\nrun = 42\n";
    std::fs::write(dir.path().join("template.toml"), toml).expect("write");
    let (out, _, _) = build(dir.path());
    assert!(!out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("line 4"), "{all}");
}

#[test]
fn a_template_defined_in_rust_builds_and_starts() {
    use warren_template::model::{Base, CopyStep, Resources, Step, TemplateDef};
    rt().block_on(async {
        let client = server().client();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("greeting.txt"), "from the context\n").expect("write");
        let def = TemplateDef {
            name: format!("e2e-rust-{}", std::process::id()),
            tags: vec!["v1".into()],
            base: Base::Image,
            steps: vec![
                Step::Env {
                    vars: vec![("GREETING".into(), "hello".into())],
                },
                Step::Copy(CopyStep {
                    src: "greeting.txt".into(),
                    dest: "/home/user/".into(),
                    user: Some("user".into()),
                    mode: None,
                    files_hash: None,
                }),
                Step::Run {
                    cmd: "cp /home/user/greeting.txt /home/user/copy.txt".into(),
                    user: Some("user".into()),
                    timeout: None,
                },
            ],
            start: None,
            resources: Resources::default(),
            step_timeout: None,
            default_user: None,
        };
        let archive = warren_client::pack_definition(&def, dir.path()).expect("pack");
        let started = client
            .submit_template_archive(archive, false)
            .await
            .expect("submit");
        let ended = common::build_ended(&client, &started, Duration::from_secs(600)).await;
        let status = serde_json::to_value(ended.status).expect("status json");
        assert_eq!(status, "ready");
        // The tag given in the definition names this build too.
        let sb = client
            .create_sandbox(&NewSandbox {
                template_id: format!("{}:v1", def.name),
                timeout: Some(120),
                ..Default::default()
            })
            .await
            .expect("create from name:tag");
        let _guard = KillOnDrop(Some(sb.clone()));
        let out = sb
            .commands()
            .run("cat /home/user/copy.txt; echo $GREETING")
            .await;
        assert_eq!(out.expect("run").stdout, "from the context\nhello\n");
    });
}
