//! Template routes over real HTTP with the fake runtime: the 501 answer of servers without
//! templates, authentication (API key, and the upload link's one-time token), the E2B build
//! flow up to the build (the fake runtime's stub VMs cannot run build steps) and the refusals
//! of bad input.

mod common;

use std::time::Duration;

use common::{KEY, Server, assert_error};
use serde_json::{Value, json};

const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A tar.gz of `(path, content)` files.
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
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).expect("gzip");
    gz.finish().expect("gzip")
}

async fn json_of(resp: reqwest::Response, status: u16) -> Value {
    let code = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(code, status, "body: {text}");
    serde_json::from_str(&text).expect("json")
}

/// Polls a build until it is `ready` or `error`.
async fn wait_for_end(s: &Server, template_id: &str, build_id: &str) -> Value {
    let path = format!("/templates/{template_id}/builds/{build_id}/status");
    for _ in 0..200 {
        let info = json_of(s.get(&path).send().await.expect("send"), 200).await;
        if info["status"] == "ready" || info["status"] == "error" {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("build {build_id} did not end");
}

#[tokio::test]
async fn without_a_template_service_template_routes_answer_501() {
    let s = Server::start().await;
    let cases: Vec<(&str, &str, Option<Value>)> = vec![
        ("POST", "/v3/templates", Some(json!({"name": "app"}))),
        ("GET", "/templates", None),
        ("GET", "/templates/app", None),
        ("POST", "/templates/app", None),
        (
            "GET",
            &*Box::leak(format!("/templates/app/files/{HASH}").into()),
            None,
        ),
        ("GET", "/templates/app/builds/b/status", None),
        ("POST", "/v2/templates/app/builds/b", Some(json!({}))),
        ("GET", "/templates/aliases/app", None),
        ("GET", "/templates/app/tags", None),
        (
            "POST",
            "/templates/tags",
            Some(json!({"target": "app", "tags": ["x"]})),
        ),
        (
            "DELETE",
            "/templates/tags",
            Some(json!({"name": "app", "tags": ["x"]})),
        ),
    ];
    for (method, path, body) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = s
            .http
            .request(method.clone(), s.url(path))
            .header("X-API-KEY", KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let body = assert_error(req.send().await.expect("send"), 501).await;
        assert!(
            body["message"].as_str().expect("msg").contains("templates"),
            "{method} {path}: {body}"
        );
    }
    let resp = s
        .post("/warren/templates/builds")
        .body(tar_gz(&[("template.toml", "name = \"app\"\n")]))
        .send()
        .await
        .expect("send");
    assert_error(resp, 501).await;
    let upload = format!("/templates/app/files/{HASH}/upload?token=x");
    let resp = s.http.put(s.url(&upload)).body("x").send().await;
    assert_error(resp.expect("send"), 501).await;
    // DELETE /templates/{id} keeps deleting snapshots.
    let resp = s.delete("/templates/nope").send().await.expect("send");
    assert_error(resp, 404).await;
    s.finish().await;
}

#[tokio::test]
async fn template_routes_need_the_api_key_but_uploads_need_the_token() {
    let s = Server::start_with_templates().await;
    for (method, path) in [
        ("POST", "/v3/templates"),
        ("GET", "/templates"),
        ("GET", "/templates/app"),
        ("POST", "/templates/app"),
        ("DELETE", "/templates/app"),
        ("GET", "/templates/app/builds/b/status"),
        ("POST", "/v2/templates/app/builds/b"),
        ("GET", "/templates/aliases/app"),
        ("GET", "/templates/app/tags"),
        ("POST", "/templates/tags"),
        ("DELETE", "/templates/tags"),
        ("POST", "/warren/templates/builds"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = s.http.request(method, s.url(path)).send().await;
        assert_error(resp.expect("send"), 401).await;
    }
    let upload = format!("/templates/app/files/{HASH}/upload");
    let resp = s.http.put(s.url(&upload)).body("x").send().await;
    let body = assert_error(resp.expect("send"), 401).await;
    assert!(
        body["message"].as_str().expect("msg").contains("token"),
        "{body}"
    );
    // The API key is no substitute for the token.
    let resp = s.put(&upload).body("x").send().await.expect("send");
    assert_error(resp, 401).await;
    let resp = s
        .http
        .put(s.url(&format!("{upload}?token=forged")))
        .body("x")
        .send()
        .await;
    assert_error(resp.expect("send"), 403).await;
    s.finish().await;
}

#[tokio::test]
async fn e2b_build_flow_and_its_refusals() {
    let s = Server::start_with_templates().await;
    // Step 1: the name is required and must follow the naming rules.
    for body in [json!({}), json!({"tags": ["v1"]}), json!({"name": "  "})] {
        let resp = s.post("/v3/templates").json(&body).send().await;
        assert_error(resp.expect("send"), 400).await;
    }
    let resp = s
        .post("/v3/templates")
        .json(&json!({"name": "Bad Name"}))
        .send();
    assert_error(resp.await.expect("send"), 400).await;
    let req = json!({"name": "my-app:v1", "tags": ["stable"], "cpuCount": 4, "memoryMB": 1024});
    let resp = s.post("/v3/templates").json(&req).send().await;
    let created = json_of(resp.expect("send"), 202).await;
    let id = created["templateID"].as_str().expect("id").to_owned();
    let build = created["buildID"].as_str().expect("build").to_owned();
    assert_eq!(created["names"], json!(["my-app"]));
    assert_eq!(created["aliases"], json!(["my-app"]));
    assert_eq!(created["tags"], json!(["stable", "v1"]));
    assert_eq!(created["public"], false);

    // The template is listed, with its waiting build.
    let list = json_of(s.get("/templates").send().await.expect("send"), 200).await;
    let listed = &list.as_array().expect("array")[0];
    assert_eq!(listed["templateID"], id.as_str());
    assert_eq!(listed["buildStatus"], "waiting");
    assert_eq!(
        (listed["cpuCount"].as_u64(), listed["memoryMB"].as_u64()),
        (Some(4), Some(1024))
    );
    assert!(listed.get("builds").is_none(), "{listed}");
    let one = json_of(s.get("/templates/my-app").send().await.expect("send"), 200).await;
    assert_eq!(one["builds"][0]["buildID"], build.as_str());
    assert_eq!(one["buildCount"], 1);
    let alias = json_of(
        s.get("/templates/aliases/my-app")
            .send()
            .await
            .expect("send"),
        200,
    );
    assert_eq!(alias.await["templateID"], id.as_str());
    let resp = s.get("/templates/aliases/nope").send().await.expect("send");
    assert_error(resp, 404).await;
    let resp = s.get("/templates/nope").send().await.expect("send");
    assert_error(resp, 404).await;

    // Step 2: an upload link, then the upload with its one-time token.
    let resp = s
        .get(&format!("/templates/{id}/files/not-hex"))
        .send()
        .await;
    assert_error(resp.expect("send"), 400).await;
    let resp = s.get(&format!("/templates/nope/files/{HASH}")).send().await;
    assert_error(resp.expect("send"), 404).await;
    let link_path = format!("/templates/{id}/files/{HASH}");
    let link = json_of(s.get(&link_path).send().await.expect("send"), 201).await;
    assert_eq!(link["present"], false);
    let url = link["url"].as_str().expect("url").to_owned();
    let prefix = format!("{}/templates/{id}/files/{HASH}/upload?token=", s.base);
    assert!(url.starts_with(&prefix), "{url}");
    // A token is bound to its hash.
    let other = url.replace(HASH, &HASH.replace('0', "f"));
    let resp = s.http.put(&other).body("x").send().await.expect("send");
    assert_error(resp, 403).await;
    let archive = tar_gz(&[("app/main.py", "print('hi')\n")]);
    let resp = s.http.put(&url).body(archive.clone()).send().await;
    assert_eq!(resp.expect("send").status(), 200);
    let stored = s.dir.path().join("templates/uploads").join(HASH);
    assert!(stored.join("app/main.py").is_file());
    // Single use.
    let resp = s.http.put(&url).body(archive).send().await.expect("send");
    assert_error(resp, 403).await;
    let link = json_of(s.get(&link_path).send().await.expect("send"), 201).await;
    assert_eq!(link, json!({"present": true}));
    // Garbage is refused.
    let link = json_of(
        s.get(&format!("/templates/{id}/files/{}", "ab".repeat(32)))
            .send()
            .await
            .expect("send"),
        201,
    )
    .await;
    let resp = s
        .http
        .put(link["url"].as_str().expect("url"))
        .body("garbage")
        .send();
    assert_error(resp.await.expect("send"), 400).await;

    // Step 3: bad bodies leave the build waiting.
    let start = format!("/v2/templates/{id}/builds/{build}");
    for body in [
        json!({"fromImage": "ubuntu:22.04"}),
        json!({"fromImageRegistry": {"type": "aws"}}),
        json!({"steps": [{"type": "EXPLODE", "args": []}]}),
        json!({"steps": [{"type": "COPY", "args": ["a", "/a"]}]}),
        json!({"steps": 3}),
    ] {
        let resp = s.post(&start).json(&body).send().await.expect("send");
        assert_error(resp, 400).await;
    }
    let resp = s
        .post(&format!("/v2/templates/{id}/builds/nope"))
        .json(&json!({}))
        .send();
    assert_error(resp.await.expect("send"), 404).await;

    // Status: unknown builds and bad offsets are refused.
    let status = format!("/templates/{id}/builds/{build}/status");
    let resp = s
        .get(&format!("/templates/{id}/builds/nope/status"))
        .send()
        .await;
    assert_error(resp.expect("send"), 404).await;
    let resp = s
        .get(&format!("/templates/nope/builds/{build}/status"))
        .send()
        .await;
    assert_error(resp.expect("send"), 404).await;
    let resp = s.get(&format!("{status}?logsOffset=-1")).send().await;
    assert_error(resp.expect("send"), 400).await;
    let info = json_of(s.get(&status).send().await.expect("send"), 200).await;
    assert_eq!(info["status"], "waiting");
    assert_eq!(info["logEntries"], json!([]));

    // A valid body starts the build; a second start is a conflict.
    let body = json!({"fromImage": "e2bdev/base", "steps": [
        {"type": "RUN", "args": ["echo hi"], "force": false},
        {"type": "COPY", "args": ["app", "/app"], "filesHash": HASH, "force": false}]});
    let resp = s.post(&start).json(&body).send().await.expect("send");
    assert_eq!(resp.status(), 202);
    let resp = s.post(&start).json(&body).send().await.expect("send");
    assert_error(resp, 409).await;
    let end = wait_for_end(&s, &id, &build).await;
    // Offsets past the end give no entries.
    let info = json_of(
        s.get(&format!("{status}?logsOffset=100000"))
            .send()
            .await
            .expect("send"),
        200,
    )
    .await;
    assert_eq!(info["logEntries"], json!([]));
    assert_eq!(info["status"], end["status"]);

    // Tags: the default tag stays; unknown templates are 404.
    let resp = s
        .delete("/templates/tags")
        .json(&json!({"name": "my-app", "tags": ["default"]}))
        .send()
        .await;
    assert_error(resp.expect("send"), 400).await;
    let resp = s
        .delete("/templates/tags")
        .json(&json!({"name": "nope", "tags": ["x"]}))
        .send()
        .await;
    assert_error(resp.expect("send"), 404).await;
    let resp = s
        .post("/templates/tags")
        .json(&json!({"target": "nope:default", "tags": ["x"]}))
        .send()
        .await;
    assert_error(resp.expect("send"), 404).await;
    let tags = json_of(
        s.get(&format!("/templates/{id}/tags"))
            .send()
            .await
            .expect("send"),
        200,
    );
    assert!(tags.await.is_array());

    // Delete: the template, then 404.
    let resp = s.delete("/templates/my-app").send().await.expect("send");
    assert_eq!(resp.status(), 204);
    let resp = s.delete("/templates/my-app").send().await.expect("send");
    assert_error(resp, 404).await;
    s.finish().await;
}

#[tokio::test]
async fn archive_builds_report_bad_archives_and_template_files() {
    let s = Server::start_with_templates().await;
    let submit = |body: Vec<u8>, query: &str| {
        s.post(&format!("/warren/templates/builds{query}"))
            .header("content-type", "application/gzip")
            .body(body)
            .send()
    };
    let resp = submit(Vec::new(), "").await.expect("send");
    assert_error(resp, 400).await;
    let resp = submit(b"not a tar".to_vec(), "").await.expect("send");
    assert_error(resp, 400).await;
    let resp = submit(tar_gz(&[("other.txt", "x")]), "")
        .await
        .expect("send");
    let body = assert_error(resp, 400).await;
    assert!(
        body["message"]
            .as_str()
            .expect("msg")
            .contains("template.toml"),
        "{body}"
    );
    let bad = "name = \"app\"\n\n[[steps]]\nrnu = \"echo hi\"\n";
    let resp = submit(tar_gz(&[("template.toml", bad)]), "")
        .await
        .expect("send");
    let body = assert_error(resp, 400).await;
    let message = body["message"].as_str().expect("msg");
    assert!(message.contains("line 4, column 1"), "{message}");
    let copy_out = "name = \"app\"\n[[steps]]\ncopy = \"../secret\"\ndest = \"/x\"\n";
    let resp = submit(tar_gz(&[("template.toml", copy_out)]), "").await;
    let body = assert_error(resp.expect("send"), 400).await;
    assert!(
        body["message"].as_str().expect("msg").contains("line 3"),
        "{body}"
    );
    let good = "name = \"app\"\n[[steps]]\ncopy = \"src\"\ndest = \"/src\"\n";
    let archive = tar_gz(&[("template.toml", good), ("src/a.txt", "a")]);
    let resp = submit(archive.clone(), "?force=maybe").await.expect("send");
    assert_error(resp, 400).await;
    let started = json_of(submit(archive, "?force=true").await.expect("send"), 202).await;
    assert_eq!(started["name"], "app");
    let id = started["templateID"].as_str().expect("id").to_owned();
    let build = started["buildID"].as_str().expect("build").to_owned();
    wait_for_end(&s, &id, &build).await;
    // The unpacked context is removed once the build ended.
    let contexts = s.dir.path().join("templates/contexts");
    for _ in 0..100 {
        let left = std::fs::read_dir(&contexts).map_or(0, |d| d.count());
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_dir(&contexts).map_or(0, |d| d.count()), 0);
    // A template built from local files cannot be rebuilt without them.
    let resp = s.post("/templates/app").send().await.expect("send");
    assert_error(resp, 400).await;
    let resp = s
        .post("/templates/nope")
        .json(&json!({"force": true}))
        .send()
        .await;
    assert_error(resp.expect("send"), 404).await;
    s.finish().await;
}

#[tokio::test]
async fn ready_builds_can_be_tagged_listed_and_deleted() {
    let s = Server::start_with_templates().await;
    let resp = s
        .post("/v3/templates")
        .json(&json!({"name": "plain"}))
        .send()
        .await;
    let created = json_of(resp.expect("send"), 202).await;
    let id = created["templateID"].as_str().expect("id").to_owned();
    let build = created["buildID"].as_str().expect("build").to_owned();
    let start = format!("/v2/templates/{id}/builds/{build}");
    let resp = s.post(&start).json(&json!({})).send().await.expect("send");
    assert_eq!(resp.status(), 202);
    let end = wait_for_end(&s, &id, &build).await;
    assert_eq!(end["status"], "ready", "{end}");
    assert!(end.get("reason").is_none(), "{end}");
    let one = json_of(s.get("/templates/plain").send().await.expect("send"), 200).await;
    assert_eq!(
        (&one["buildStatus"], &one["buildID"]),
        (&json!("ready"), &json!(build))
    );
    assert_eq!(one["tags"], json!({"default": build}));
    assert!(one["builds"][0]["finishedAt"].is_string(), "{one}");

    // Tags point at ready builds.
    let resp = s
        .post("/templates/tags")
        .json(&json!({"target": "plain:default", "tags": ["v1", "prod"]}))
        .send()
        .await;
    let tagged = json_of(resp.expect("send"), 201).await;
    assert_eq!(tagged, json!({"tags": ["v1", "prod"], "buildID": build}));
    let resp = s
        .post("/templates/tags")
        .json(&json!({"target": "plain", "tags": ["Not Valid"]}))
        .send()
        .await;
    assert_error(resp.expect("send"), 400).await;
    let tags = json_of(
        s.get(&format!("/templates/{id}/tags"))
            .send()
            .await
            .expect("send"),
        200,
    );
    let tags = tags.await;
    let names: Vec<&str> = tags
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["tag"].as_str().expect("tag"))
        .collect();
    assert_eq!(names, ["default", "prod", "v1"]);
    let resp = s
        .delete("/templates/tags")
        .json(&json!({"name": "plain", "tags": ["prod"]}))
        .send()
        .await;
    assert_eq!(resp.expect("send").status(), 204);
    let one = json_of(s.get("/templates/plain").send().await.expect("send"), 200).await;
    assert_eq!(one["tags"], json!({"default": build, "v1": build}));

    // A rebuild makes a second build.
    let resp = s
        .post("/templates/plain")
        .json(&json!({"force": true}))
        .send()
        .await;
    let again = json_of(resp.expect("send"), 202).await;
    assert_eq!(again["name"], "plain");
    let second = again["buildID"].as_str().expect("build").to_owned();
    assert_ne!(second, build);
    wait_for_end(&s, &id, &second).await;
    let one = json_of(s.get("/templates/plain").send().await.expect("send"), 200).await;
    assert_eq!(one["buildCount"], 2);
    assert_eq!(one["builds"][0]["buildID"], second.as_str());

    // A template others are built on cannot be deleted.
    let resp = s
        .post("/v3/templates")
        .json(&json!({"name": "derived"}))
        .send()
        .await;
    let derived = json_of(resp.expect("send"), 202).await;
    let (did, dbuild) = (
        derived["templateID"].as_str().expect("id"),
        derived["buildID"].as_str().expect("build"),
    );
    let start = format!("/v2/templates/{did}/builds/{dbuild}");
    let resp = s
        .post(&start)
        .json(&json!({"fromTemplate": "plain"}))
        .send()
        .await;
    assert_eq!(resp.expect("send").status(), 202);
    let end = wait_for_end(&s, did, dbuild).await;
    assert_eq!(end["status"], "ready", "{end}");

    // Rebuilding `plain` on `derived` would close a cycle of bases: refused, and `plain`
    // keeps its last good build.
    let resp = s
        .post("/v3/templates")
        .json(&json!({"name": "plain"}))
        .send()
        .await;
    let cyclic = json_of(resp.expect("send"), 202).await;
    let cbuild = cyclic["buildID"].as_str().expect("build").to_owned();
    let start = format!("/v2/templates/{id}/builds/{cbuild}");
    let body = json!({"fromTemplate": "derived"});
    let resp = s.post(&start).json(&body).send().await.expect("send");
    assert_eq!(resp.status(), 202);
    let end = wait_for_end(&s, &id, &cbuild).await;
    assert_eq!(end["status"], "error", "{end}");
    let reason = end["reason"]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("cycle"), "{end}");
    let one = json_of(s.get("/templates/plain").send().await.expect("send"), 200).await;
    assert_eq!(one["buildID"], second.as_str(), "{one}");

    let resp = s.delete("/templates/plain").send().await.expect("send");
    assert_error(resp, 409).await;
    let resp = s
        .delete(&format!("/templates/{did}"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 204);
    let resp = s.delete("/templates/plain").send().await.expect("send");
    assert_eq!(resp.status(), 204);
    let list = json_of(s.get("/templates").send().await.expect("send"), 200).await;
    assert_eq!(list, json!([]));
    s.finish().await;
}
