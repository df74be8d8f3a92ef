//! Checks the server's responses against /openapi.yaml: every status it answers must be
//! documented for that operation, and every JSON body must match the documented schema
//! (types, required fields, enums, nullability, `$ref`, `allOf`, arrays, maps).

mod common;

use common::Server;
use serde_json::{Value, json};

struct Spec(Value);

impl Spec {
    fn load() -> Spec {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.yaml");
        let text = std::fs::read_to_string(path).expect("read openapi.yaml");
        // The file is YAML written in its JSON subset, after a few `#` comment lines.
        let json: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        Spec(serde_json::from_str(&json).expect("openapi.yaml is JSON-subset YAML"))
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").expect("local ref");
                &self.0["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    /// Validates `value` against `schema`; returns the problems found.
    fn check(&self, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.check(part, value, at, problems);
            }
            return;
        }
        if value.is_null() {
            if schema.get("nullable") != Some(&json!(true)) {
                problems.push(format!("{at}: null is not allowed"));
            }
            return;
        }
        let ty = schema.get("type").and_then(Value::as_str);
        let type_ok = match ty {
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            _ => true,
        };
        if !type_ok {
            problems.push(format!("{at}: expected {ty:?}, got {value}"));
            return;
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            problems.push(format!("{at}: {value} is not one of {options:?}"));
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or("")).is_err()
        {
            problems.push(format!("{at}: {value} is not RFC 3339"));
        }
        if let Some(items) = schema.get("items") {
            for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"), problems);
            }
        }
        let Some(obj) = value.as_object() else { return };
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            if !obj.contains_key(name) {
                problems.push(format!("{at}: required field {name} is missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (key, field) in obj {
            match (
                props.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(prop), _) => self.check(prop, field, &format!("{at}.{key}"), problems),
                (None, Some(extra)) => self.check(extra, field, &format!("{at}.{key}"), problems),
                (None, None) => {}
            }
        }
    }

    /// Checks one response of `method path_template`.
    fn check_response(&self, method: &str, template: &str, status: u16, body: &Value) {
        let op = &self.0["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let doc = &op["responses"][status.to_string()];
        assert!(
            doc.is_object(),
            "{method} {template}: status {status} is not documented"
        );
        let mut problems = Vec::new();
        if let Some(schema) = doc.pointer("/content/application~1json/schema") {
            self.check(schema, body, "body", &mut problems);
        } else {
            assert!(
                body.is_null(),
                "{method} {template} {status}: undocumented body {body}"
            );
        }
        assert!(
            problems.is_empty(),
            "{method} {template} {status}: {problems:#?}"
        );
    }
}

async fn call(s: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let mut req = s
        .http
        .request(m, s.url(path))
        .header("X-API-KEY", common::KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (status, value)
}

#[tokio::test]
async fn responses_match_the_document() {
    let spec = Spec::load();
    let s = Server::start().await;
    let create = json!({"templateID": "base", "metadata": {"a": "b"}});
    let (status, sb) = call(&s, "post", "/v2/sandboxes", Some(create)).await;
    spec.check_response("post", "/v2/sandboxes", status, &sb);
    assert_eq!(status, 201);
    let id = sb["sandboxID"].as_str().expect("id").to_owned();

    let cases: Vec<(&str, String, &str, Option<Value>)> = vec![
        ("get", "/v2/sandboxes".into(), "/v2/sandboxes", None),
        ("get", "/v2/sandboxes?limit=0".into(), "/v2/sandboxes", None),
        (
            "post",
            "/v2/sandboxes".into(),
            "/v2/sandboxes",
            Some(json!({"templateID": 1})),
        ),
        (
            "post",
            "/v2/sandboxes".into(),
            "/v2/sandboxes",
            Some(json!({"templateID": "x:y"})),
        ),
        (
            "post",
            format!("/v2/sandboxes/{id}/connect"),
            "/v2/sandboxes/{sandboxID}/connect",
            Some(json!({"timeout": 60})),
        ),
        (
            "post",
            "/v2/sandboxes/nope/connect".into(),
            "/v2/sandboxes/{sandboxID}/connect",
            Some(json!({})),
        ),
        (
            "get",
            format!("/sandboxes/{id}"),
            "/sandboxes/{sandboxID}",
            None,
        ),
        (
            "get",
            "/sandboxes/nope".into(),
            "/sandboxes/{sandboxID}",
            None,
        ),
        (
            "post",
            format!("/sandboxes/{id}/timeout"),
            "/sandboxes/{sandboxID}/timeout",
            Some(json!({"timeout": 60})),
        ),
        (
            "post",
            format!("/sandboxes/{id}/timeout"),
            "/sandboxes/{sandboxID}/timeout",
            Some(json!({"timeout": -1})),
        ),
        (
            "get",
            format!("/sandboxes/{id}/metrics"),
            "/sandboxes/{sandboxID}/metrics",
            None,
        ),
        (
            "get",
            "/sandboxes/nope/metrics".into(),
            "/sandboxes/{sandboxID}/metrics",
            None,
        ),
        (
            "post",
            format!("/sandboxes/{id}/pause"),
            "/sandboxes/{sandboxID}/pause",
            Some(json!({})),
        ),
        (
            "post",
            format!("/sandboxes/{id}/snapshots"),
            "/sandboxes/{sandboxID}/snapshots",
            Some(json!({})),
        ),
        (
            "post",
            format!("/sandboxes/{id}/fork"),
            "/sandboxes/{sandboxID}/fork",
            Some(json!({})),
        ),
        ("get", "/snapshots".into(), "/snapshots", None),
        (
            "delete",
            "/templates/a%2Fb%3Ac".into(),
            "/templates/{templateID}",
            None,
        ),
        (
            "delete",
            format!("/sandboxes/{id}"),
            "/sandboxes/{sandboxID}",
            None,
        ),
        (
            "delete",
            format!("/sandboxes/{id}"),
            "/sandboxes/{sandboxID}",
            None,
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (method, path, template, body) in cases {
        let (status, value) = call(&s, method, &path, body).await;
        spec.check_response(method, template, status, &value);
        seen.insert((method, template, status));
    }
    // The cases above exercise success and failure of the main operations.
    for expected in [
        ("get", "/v2/sandboxes", 200),
        ("get", "/v2/sandboxes", 400),
        ("post", "/v2/sandboxes", 400),
        ("post", "/v2/sandboxes/{sandboxID}/connect", 200),
        ("post", "/v2/sandboxes/{sandboxID}/connect", 404),
        ("get", "/sandboxes/{sandboxID}", 200),
        ("post", "/sandboxes/{sandboxID}/timeout", 204),
        ("get", "/sandboxes/{sandboxID}/metrics", 200),
        ("delete", "/sandboxes/{sandboxID}", 204),
        ("delete", "/sandboxes/{sandboxID}", 404),
    ] {
        assert!(seen.contains(&expected), "case not exercised: {expected:?}");
    }
    s.finish().await;
}

/// Sends a raw body (uploads and archives) and returns the status and JSON body.
async fn call_raw(
    s: &Server,
    method: reqwest::Method,
    url: &str,
    key: bool,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = s.http.request(method, url).body(body);
    if key {
        req = req.header("X-API-KEY", common::KEY);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (status, value)
}

fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        b.append_data(&mut header, path, content.as_bytes())
            .expect("append");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().expect("tar")).expect("gzip");
    gz.finish().expect("gzip")
}

type Case = (&'static str, String, &'static str, Option<Value>);
type Seen = std::collections::BTreeSet<(&'static str, &'static str, u16)>;

/// Calls each case, checks its answer against the document and records what was seen.
async fn run_cases(s: &Server, spec: &Spec, cases: Vec<Case>, seen: &mut Seen) {
    for (method, path, template, body) in cases {
        let (status, value) = call(s, method, &path, body).await;
        spec.check_response(method, template, status, &value);
        seen.insert((method, template, status));
    }
}

#[tokio::test]
async fn template_responses_match_the_document() {
    let spec = Spec::load();
    let hash = "ab".repeat(32);
    let s = Server::start_with_templates().await;
    let (status, created) = call(&s, "post", "/v3/templates", Some(json!({"name": "app"}))).await;
    spec.check_response("post", "/v3/templates", status, &created);
    assert_eq!(status, 202);
    let id = created["templateID"].as_str().expect("id").to_owned();
    let build = created["buildID"].as_str().expect("build").to_owned();
    let (status, link) = call(&s, "get", &format!("/templates/{id}/files/{hash}"), None).await;
    spec.check_response("get", "/templates/{templateID}/files/{hash}", status, &link);
    let url = link["url"].as_str().expect("url").to_owned();
    let upload = "/templates/{templateID}/files/{hash}/upload";
    let put = reqwest::Method::PUT;
    let (status, value) = call_raw(&s, put.clone(), &url, false, b"garbage".to_vec()).await;
    spec.check_response("put", upload, status, &value);
    let (status, value) = call_raw(&s, put.clone(), &url, false, Vec::new()).await;
    spec.check_response("put", upload, status, &value);
    assert_eq!(status, 403);
    let bare = url.split('?').next().expect("url").to_owned();
    let (status, value) = call_raw(&s, put, &bare, false, Vec::new()).await;
    spec.check_response("put", upload, status, &value);
    let start = format!("/v2/templates/{id}/builds/{build}");
    let status_path = format!("/templates/{id}/builds/{build}/status");
    let cases: Vec<Case> = vec![
        (
            "post",
            "/v3/templates".into(),
            "/v3/templates",
            Some(json!({})),
        ),
        ("get", "/templates".into(), "/templates", None),
        (
            "get",
            "/templates/app".into(),
            "/templates/{templateID}",
            None,
        ),
        (
            "get",
            "/templates/nope".into(),
            "/templates/{templateID}",
            None,
        ),
        (
            "get",
            "/templates/aliases/app".into(),
            "/templates/aliases/{alias}",
            None,
        ),
        (
            "get",
            "/templates/aliases/nope".into(),
            "/templates/aliases/{alias}",
            None,
        ),
        (
            "get",
            format!("/templates/{id}/files/nothex"),
            "/templates/{templateID}/files/{hash}",
            None,
        ),
        (
            "post",
            start.clone(),
            "/v2/templates/{templateID}/builds/{buildID}",
            Some(json!({"fromImage": "ubuntu"})),
        ),
        (
            "get",
            format!("{status_path}?logsOffset=x"),
            "/templates/{templateID}/builds/{buildID}/status",
            None,
        ),
        (
            "post",
            start.clone(),
            "/v2/templates/{templateID}/builds/{buildID}",
            Some(json!({})),
        ),
        (
            "post",
            start,
            "/v2/templates/{templateID}/builds/{buildID}",
            Some(json!({})),
        ),
        (
            "get",
            status_path.clone(),
            "/templates/{templateID}/builds/{buildID}/status",
            None,
        ),
        (
            "get",
            format!("/templates/{id}/builds/nope/status"),
            "/templates/{templateID}/builds/{buildID}/status",
            None,
        ),
    ];
    let mut seen = Seen::new();
    run_cases(&s, &spec, cases, &mut seen).await;
    // Wait for the (empty) build to end, then the calls that need a ready build.
    for _ in 0..200 {
        let (_, info) = call(&s, "get", &status_path, None).await;
        if info["status"] == "ready" || info["status"] == "error" {
            spec.check_response(
                "get",
                "/templates/{templateID}/builds/{buildID}/status",
                200,
                &info,
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let tags = Some(json!({"target": "app", "tags": ["v1"]}));
    let cases = vec![
        (
            "get",
            "/templates/app".into(),
            "/templates/{templateID}",
            None,
        ),
        ("post", "/templates/tags".into(), "/templates/tags", tags),
        (
            "post",
            "/templates/tags".into(),
            "/templates/tags",
            Some(json!({"target": "nope", "tags": ["v1"]})),
        ),
        (
            "get",
            format!("/templates/{id}/tags"),
            "/templates/{templateID}/tags",
            None,
        ),
        (
            "delete",
            "/templates/tags".into(),
            "/templates/tags",
            Some(json!({"name": "app", "tags": ["v1"]})),
        ),
        (
            "delete",
            "/templates/tags".into(),
            "/templates/tags",
            Some(json!({"name": "app", "tags": ["default"]})),
        ),
        (
            "post",
            "/templates/app".into(),
            "/templates/{templateID}",
            None,
        ),
        (
            "post",
            "/templates/nope".into(),
            "/templates/{templateID}",
            None,
        ),
    ];
    run_cases(&s, &spec, cases, &mut seen).await;
    let archive = "/warren/templates/builds";
    let post = reqwest::Method::POST;
    for body in [
        tar_gz(&[("template.toml", "name = \"a-b\"\n")]),
        tar_gz(&[("template.toml", "name = 3\n")]),
    ] {
        let (status, value) = call_raw(&s, post.clone(), &s.url(archive), true, body).await;
        spec.check_response("post", archive, status, &value);
        seen.insert(("post", archive, status));
    }
    // Let the rebuild and the archive build end before deleting.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let cases = vec![
        (
            "delete",
            "/templates/a-b".into(),
            "/templates/{templateID}",
            None,
        ),
        (
            "delete",
            "/templates/app".into(),
            "/templates/{templateID}",
            None,
        ),
    ];
    run_cases(&s, &spec, cases, &mut seen).await;
    for expected in [
        ("post", "/v3/templates", 400),
        ("get", "/templates/{templateID}", 200),
        ("get", "/templates/{templateID}", 404),
        ("get", "/templates/aliases/{alias}", 200),
        ("post", "/v2/templates/{templateID}/builds/{buildID}", 202),
        ("post", "/v2/templates/{templateID}/builds/{buildID}", 409),
        (
            "get",
            "/templates/{templateID}/builds/{buildID}/status",
            200,
        ),
        (
            "get",
            "/templates/{templateID}/builds/{buildID}/status",
            404,
        ),
        ("post", "/templates/tags", 201),
        ("delete", "/templates/tags", 204),
        ("post", "/templates/{templateID}", 202),
        ("post", "/warren/templates/builds", 202),
        ("post", "/warren/templates/builds", 400),
        ("delete", "/templates/{templateID}", 204),
    ] {
        assert!(seen.contains(&expected), "case not exercised: {expected:?}");
    }
    s.finish().await;

    // Without templates: 501, as documented.
    let s = Server::start().await;
    let (status, value) = call(&s, "get", "/templates", None).await;
    spec.check_response("get", "/templates", status, &value);
    assert_eq!(status, 501);
    s.finish().await;
}

#[test]
fn checker_catches_mismatches() {
    let spec = Spec::load();
    let sandbox = &json!({"$ref": "#/components/schemas/Sandbox"});
    let mut problems = Vec::new();
    spec.check(
        sandbox,
        &json!({"templateID": "a", "sandboxID": 1}),
        "b",
        &mut problems,
    );
    assert!(
        problems.iter().any(|p| p.contains("sandboxID")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("clientID is missing")),
        "{problems:?}"
    );
    let mut problems = Vec::new();
    let listed = &json!({"$ref": "#/components/schemas/SandboxDetail"});
    spec.check(
        listed,
        &json!({"state": "stopped", "startedAt": "yesterday"}),
        "b",
        &mut problems,
    );
    assert!(
        problems.iter().any(|p| p.contains("not one of")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("RFC 3339")),
        "{problems:?}"
    );
}
