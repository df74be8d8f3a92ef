//! REST calls of the client against the stub: exact paths, query strings, headers and
//! bodies of create, list (filters and pagination) and kill.

mod common;

use common::{header, start_stub};
use warren_client::{NewSandbox, SandboxQuery, SandboxState};

#[tokio::test]
async fn create_sends_v2_body_with_api_key() {
    let (client, stub) = start_stub().await;
    let spec = NewSandbox {
        template_id: "base".into(),
        timeout: Some(120),
        metadata: Some([("smoke".to_owned(), "yes".to_owned())].into()),
        env_vars: Some(Default::default()),
        ..Default::default()
    };
    let sandbox = client.create_sandbox(&spec).await.unwrap();
    assert_eq!(sandbox.id(), "sbx1");
    assert_eq!(sandbox.info().envd_access_token.as_deref(), Some("tok"));

    let seen = stub.seen.lock().unwrap()[0].clone();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/v2/sandboxes")
    );
    assert_eq!(header(&seen, "x-api-key"), "key-1");
    assert_eq!(header(&seen, "content-type"), "application/json");
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"templateID":"base","timeout":120,"metadata":{"smoke":"yes"},
                           "envVars":{}})
    );
}

#[tokio::test]
async fn list_encodes_filters_and_follows_next_token() {
    let (client, stub) = start_stub().await;
    let query = SandboxQuery {
        metadata: vec![
            ("k y".into(), "v&x=1/ü".into()),
            ("plain".into(), "p".into()),
        ],
        states: vec![SandboxState::Running, SandboxState::Paused],
        limit: None,
    };
    let all = client.list_sandboxes(&query).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s.sandbox_id.as_str()).collect();
    assert_eq!(ids, ["sbx1", "sbx2", "sbx3"]);

    let seen = stub.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let filters = "metadata=k%252520y%3Dv%252526x%25253D1%252F%2525C3%2525BC%26plain%3Dp\
                   &state=running%2Cpaused";
    assert_eq!(seen[0].uri, format!("/v2/sandboxes?{filters}"));
    assert_eq!(
        seen[1].uri,
        format!("/v2/sandboxes?{filters}&nextToken=page%202")
    );
}

#[tokio::test]
async fn kill_of_unknown_sandbox_is_false() {
    let (client, _stub) = start_stub().await;
    assert!(!client.kill_sandbox("gone").await.unwrap());
}
