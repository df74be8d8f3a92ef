//! `/files`, `/init`, `/metrics`, `/health` and access control against a real agent.

mod common;

use std::io::{Read as _, Write as _};

use common::{Agent, start_bash};
use serde_json::{Value, json};
use warren_proto::signature::{FileOperation, file_url_signature};

fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "warrentestboundary";
    let mut body = Vec::new();
    for (name, data) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn uploads_and_downloads() {
    let agent = Agent::start().await;
    let home = agent.home();

    // Multipart, several files, destinations in the filenames, parents created.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (ct, body) = multipart(&[("up/one.txt", b"first"), ("up/deep/two.bin", &big)]);
    let r = agent
        .post("/files")
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let written: Value = r.json().await.unwrap();
    let one = home.join("up/one.txt").display().to_string();
    assert_eq!(
        written[0],
        json!({"name": "one.txt", "type": "file", "path": one})
    );
    assert_eq!(written[1]["name"], "two.bin");
    assert_eq!(std::fs::read(home.join("up/deep/two.bin")).unwrap(), big);

    // Multipart with a `path` query (single-file write).
    let (ct, body) = multipart(&[("ignored-name", b"via query")]);
    let r = agent
        .post("/files?path=up/q.txt")
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(std::fs::read(home.join("up/q.txt")).unwrap(), b"via query");

    // Octet stream, plain and gzip-encoded.
    let r = agent
        .post(&format!(
            "/files?path={}",
            home.join("oct/plain.txt").display()
        ))
        .header("Content-Type", "application/octet-stream")
        .body("plain body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        std::fs::read(home.join("oct/plain.txt")).unwrap(),
        b"plain body"
    );
    let r = agent
        .post("/files?path=oct/gz.bin")
        .header("Content-Type", "application/octet-stream")
        .header("Content-Encoding", "gzip")
        .body(gzip(&big))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(std::fs::read(home.join("oct/gz.bin")).unwrap(), big);

    // Download with a length, as Python asks (gzip, deflate): not compressed.
    let r = agent
        .get("/files?path=up/deep/two.bin")
        .header("Accept-Encoding", "gzip, deflate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        big.len().to_string().as_str()
    );
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.bytes().await.unwrap(), big);
    // Empty files say so.
    std::fs::write(home.join("empty"), b"").unwrap();
    let r = agent.get("/files?path=empty").send().await.unwrap();
    assert_eq!(r.headers()["content-length"], "0");
    // gzip only when it is the only coding asked for.
    let r = agent
        .get("/files?path=up/deep/two.bin")
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let compressed = r.bytes().await.unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, big);

    // Files written for another user belong to that user.
    let r = agent
        .post("/files?path=/tmp/warren-agent-test-owned/x.txt&username=nobody")
        .header("Content-Type", "application/octet-stream")
        .body("mine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata("/tmp/warren-agent-test-owned/x.txt").unwrap();
        assert_eq!(meta.uid(), 65534);
        let dir = std::fs::metadata("/tmp/warren-agent-test-owned").unwrap();
        assert_eq!(dir.uid(), 65534, "created parent directories too");
        std::fs::remove_dir_all("/tmp/warren-agent-test-owned").unwrap();
    }

    // Errors.
    for (query, status) in [
        ("/files?path=up", 400),
        ("/files?path=missing", 404),
        ("/files?path=up/one.txt&username=no-such-user-here", 401),
    ] {
        let r = agent.get(query).send().await.unwrap();
        assert_eq!(r.status(), status, "{query}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], status);
        assert!(v["message"].as_str().is_some());
    }
    let r = agent
        .post("/files?path=up")
        .header("Content-Type", "application/octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn access_token_signatures_init_and_metrics() {
    let mut agent = Agent::start().await;
    let r = agent
        .post("/init")
        .json(&json!({"accessToken": "secret-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // Without the token.
    let (status, body) = agent.unary("process.Process/List", json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let s = agent
        .stream(
            "process.Process/Start",
            json!({"process": {"cmd": "true"}}),
            &[],
        )
        .await;
    let (msgs, end) = s.collect().await;
    assert!(msgs.is_empty());
    assert_eq!(end["error"]["code"], "unauthenticated");
    let r = agent.get("/files?path=x").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 401);
    assert_eq!(agent.get("/metrics").send().await.unwrap().status(), 401);
    assert_eq!(agent.get("/health").send().await.unwrap().status(), 204);
    // Re-init needs the current token.
    let r = agent
        .post("/init")
        .json(&json!({"accessToken": "stolen"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Wrong token.
    agent.token = Some("wrong".into());
    let (status, _) = agent.unary("process.Process/List", json!({})).await;
    assert_eq!(status, 401);

    // Right token.
    agent.token = Some("secret-1".into());
    let (status, _) = agent.unary("process.Process/List", json!({})).await;
    assert_eq!(status, 200);
    let (_, s) = start_bash(&agent, "echo ok", json!({})).await;
    assert_eq!(common::finish(s).await.stdout, b"ok\n");

    // Signed URLs instead of the token.
    let path = agent.home().join("signed.txt").display().to_string();
    std::fs::write(&path, b"signed content").unwrap();
    let anon = reqwest::Client::new();
    let sig = file_url_signature(&path, FileOperation::Read, "", "secret-1", None);
    // Signatures are standard base64 (`+`, `/`): the SDKs URL-encode the query.
    let files = format!("{}/files", agent.base);
    let url =
        reqwest::Url::parse_with_params(&files, [("path", &path), ("signature", &sig)]).unwrap();
    let r = anon.get(url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), "signed content");
    let bad = format!("{}/files?path={path}&signature=v1_AAAA", agent.base);
    assert_eq!(anon.get(&bad).send().await.unwrap().status(), 401);
    let expired = file_url_signature(&path, FileOperation::Read, "", "secret-1", Some(1000));
    let expired_url = reqwest::Url::parse_with_params(
        &files,
        [
            ("path", path.as_str()),
            ("signature", &expired),
            ("signature_expiration", "1000"),
        ],
    )
    .unwrap();
    assert_eq!(anon.get(expired_url).send().await.unwrap().status(), 401);
    let future = chrono::Utc::now().timestamp() + 600;
    let wsig = file_url_signature("up.txt", FileOperation::Write, "", "secret-1", Some(future));
    let future = future.to_string();
    let wurl = reqwest::Url::parse_with_params(
        &files,
        [
            ("path", "up.txt"),
            ("signature", &wsig),
            ("signature_expiration", &future),
        ],
    )
    .unwrap();
    let r = anon
        .post(wurl)
        .header("Content-Type", "application/octet-stream")
        .body("w")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A read signature does not allow writing.
    let r = anon
        .post(url)
        .header("Content-Type", "application/octet-stream")
        .body("w")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Metrics.
    let r = agent.get("/metrics").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert!(m["cpuCount"].as_u64().unwrap() >= 1);
    assert!(m["memTotal"].as_u64().unwrap() > 0);
    assert!(m["memUsed"].as_u64().unwrap() <= m["memTotal"].as_u64().unwrap());
    assert!(m["diskTotal"].as_u64().unwrap() > 0);
    assert!(m["cpuUsedPct"].as_f64().unwrap() >= 0.0);

    // Entropy injection (harmless on the host) and clearing the token.
    let entropy = common::b64(&[7u8; 48]);
    let r = agent
        .post("/init")
        .json(&json!({"accessToken": null, "entropy": entropy, "defaultUser": "root"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    agent.token = None;
    let (status, _) = agent.unary("process.Process/List", json!({})).await;
    assert_eq!(status, 200);
}
