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
