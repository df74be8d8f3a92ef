//! The client against the real `warren-api` router with `warren-core`'s fake runtime (stub
//! agents, no QEMU): checks that both sides agree on the REST protocol, including the
//! metadata filter's triple encoding, status codes and error bodies.
//!
//! The fake agents echo envd traffic instead of running processes, so commands and files
//! are covered by the stub-server tests, not here.

mod common;

use warren_client::{Client, ClientError, NewSandbox, SandboxQuery, SandboxState};

fn spec(metadata: &[(&str, &str)]) -> NewSandbox {
    NewSandbox {
        template_id: "base".into(),
        timeout: Some(120),
        metadata: Some(
            metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        env_vars: Some(Default::default()),
        ..NewSandbox::default()
    }
}

#[tokio::test]
async fn lifecycle_and_metadata_filter_round_trip() {
    let (client, _dir) = common::server::start(false).await;
    let odd = client
        .create_sandbox(&spec(&[("k y", "v&x=1/ü"), ("plain", "p")]))
        .await;
    let odd = odd.expect("create");
    let other = client
        .create_sandbox(&spec(&[("plain", "q")]))
        .await
        .expect("create");
    assert!(odd.info().envd_access_token.is_some());
    // envd traffic reaches the sandbox's agent through the gateway (E2b-Sandbox-Id routing).
    assert!(odd.is_running().await.expect("health"));

    let query = SandboxQuery {
        metadata: vec![("k y".into(), "v&x=1/ü".into())],
        states: vec![SandboxState::Running],
        limit: None,
    };
    let found = client.list_sandboxes(&query).await.expect("list");
    let ids: Vec<&str> = found.iter().map(|s| s.sandbox_id.as_str()).collect();
    assert_eq!(ids, [odd.id()]);

    let paged = SandboxQuery {
        limit: Some(1),
        ..SandboxQuery::default()
    };
    let first = client
        .list_sandboxes_page(&paged, None)
        .await
        .expect("first page");
    assert_eq!(first.items.len(), 1);
    assert!(
        first.next_token.is_some(),
        "a full page must carry x-next-token"
    );
    assert_eq!(
        client
            .list_sandboxes(&paged)
            .await
            .expect("paged list")
            .len(),
        2
    );

    let detail = client.get_sandbox(other.id()).await.expect("get");
    assert_eq!(detail.listed.state, SandboxState::Running);
    client.set_timeout(other.id(), 600).await.expect("timeout");
    let connected = client.connect(other.id(), None).await.expect("connect");
    assert_eq!(connected.id(), other.id());

    assert!(client.kill_sandbox(other.id()).await.expect("kill"));
    assert!(!client.kill_sandbox(other.id()).await.expect("kill again"));
    match client.get_sandbox(other.id()).await {
        Err(err @ ClientError::Api { status: 404, .. }) => assert!(err.is_not_found()),
        other => panic!("expected a 404 API error, got {other:?}"),
    }
    assert!(
        !connected
            .is_running()
            .await
            .expect("health of a killed sandbox")
    );
    assert!(odd.kill().await.expect("kill odd"));
}

#[tokio::test]
async fn wrong_key_is_an_api_error_with_the_server_message() {
    let (client, _dir) = common::server::start(false).await;
    let wrong = Client::new(client.api_url(), Some("nope".to_owned()));
    match wrong.list_sandboxes(&SandboxQuery::default()).await {
        Err(ClientError::Api {
            status: 401,
            message,
            ..
        }) => assert!(!message.is_empty()),
        other => panic!("expected 401, got {other:?}"),
    }
}
