//! envd calls of the client against the stub: Connect streaming and unary requests for
//! commands and PTYs, `/files` uploads and downloads, and the client-side deadline.

mod common;

use axum::body::Bytes;
use common::{body_json, header, start_stub};
use warren_client::{ClientError, CommandEvent, NewSandbox};

#[tokio::test]
async fn run_sends_start_envelope_and_collects_output() {
    let (client, stub) = start_stub().await;
    let sandbox = client.create_sandbox(&NewSandbox::default()).await.unwrap();
    let out = sandbox.commands().run("echo hi").await.unwrap();
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.exit_code),
        ("hi\n", "oops", 0)
    );

    let seen = stub.seen.lock().unwrap()[1].clone();
    assert_eq!(seen.uri, "/process.Process/Start");
    assert_eq!(header(&seen, "content-type"), "application/connect+json");
    assert_eq!(header(&seen, "connect-protocol-version"), "1");
    assert_eq!(header(&seen, "e2b-sandbox-id"), "sbx1");
    assert_eq!(header(&seen, "e2b-sandbox-port"), "49983");
    assert_eq!(header(&seen, "x-access-token"), "tok");
    assert_eq!(header(&seen, "x-api-key"), "<absent>");
    assert_eq!(header(&seen, "connect-timeout-ms"), "<absent>");
    // One envelope, flag 0, exact length, then the SDK's JSON.
    assert_eq!(seen.body[0], 0);
    let len = u32::from_be_bytes([seen.body[1], seen.body[2], seen.body[3], seen.body[4]]);
    assert_eq!(usize::try_from(len).unwrap(), seen.body.len() - 5);
    let msg: serde_json::Value = serde_json::from_slice(&seen.body[5..]).unwrap();
    assert_eq!(
        msg,
        serde_json::json!({"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"]},
                           "stdin":false})
    );
}

#[tokio::test]
async fn nonzero_exit_is_output_then_command_exit_and_stream_yields_events_in_order() {
    let (client, _stub) = start_stub().await;
    let sandbox = client.create_sandbox(&NewSandbox::default()).await.unwrap();
    let out = sandbox.commands().run("exit 3").await.unwrap();
    assert_eq!((out.exit_code, out.stderr.as_str()), (3, "oops"));
    match out.check() {
        Err(ClientError::CommandExit {
            exit_code, stdout, ..
        }) => {
            assert_eq!((exit_code, stdout.as_str()), (3, "hi\n"));
        }
        other => panic!("expected CommandExit, got {other:?}"),
    }

    let mut handle = sandbox
        .commands()
        .start("exit 3", &Default::default())
        .await
        .unwrap();
    assert_eq!(handle.pid(), 1002);
    let mut events = Vec::new();
    while let Some(event) = handle.next().await {
        events.push(event.unwrap());
    }
    assert_eq!(events.len(), 3);
    assert_eq!(events[0], CommandEvent::Stdout(Bytes::from_static(b"hi\n")));
    assert_eq!(events[1], CommandEvent::Stderr(Bytes::from_static(b"oops")));
    assert!(matches!(&events[2], CommandEvent::End(end) if end.exit_code == 3));
}

#[tokio::test]
async fn file_write_then_read_round_trips_octet_stream() {
    let (client, stub) = start_stub().await;
    let sandbox = client.create_sandbox(&NewSandbox::default()).await.unwrap();
    let files = sandbox.files();
    let written = files
        .write("/home/user/a b.txt", b"hello\x00world".to_vec())
        .await
        .unwrap();
    assert_eq!(written[0].path, "/home/user/a.txt");
    let back = files.read("/home/user/a b.txt").await.unwrap();
    assert_eq!(&back[..], b"hello\x00world");
    assert!(!files.exists("/nope").await.unwrap());

    let seen = stub.seen.lock().unwrap().clone();
    let (write, read) = (&seen[1], &seen[2]);
    assert_eq!(
        (write.method.as_str(), write.uri.as_str()),
        ("POST", "/files?path=%2Fhome%2Fuser%2Fa%20b.txt")
    );
    assert_eq!(header(write, "content-type"), "application/octet-stream");
    assert_eq!(header(write, "e2b-sandbox-id"), "sbx1");
    assert_eq!(header(write, "x-access-token"), "tok");
    assert_eq!(&write.body[..], b"hello\x00world");
    assert_eq!(
        (read.method.as_str(), read.uri.as_str()),
        ("GET", "/files?path=%2Fhome%2Fuser%2Fa%20b.txt")
    );
    assert_eq!(header(&seen[3], "content-type"), "application/json");
    assert_eq!(seen[3].uri, "/filesystem.Filesystem/Stat");
}

#[tokio::test]
async fn pty_stdin_signal_and_list_send_sdk_shaped_unary_calls() {
    let (client, stub) = start_stub().await;
    let sandbox = client.create_sandbox(&NewSandbox::default()).await.unwrap();
    let (pty, commands) = (sandbox.pty(), sandbox.commands());
    pty.send(7, b"ls\n".to_vec()).await.unwrap();
    pty.resize(7, 120, 40).await.unwrap();
    commands.send_stdin(8, b"hi".to_vec()).await.unwrap();
    commands.close_stdin(8).await.unwrap();
    assert!(commands.kill(8).await.unwrap());
    assert!(!commands.kill(999).await.unwrap());
    let listed = commands.list().await.unwrap();
    assert_eq!((listed.len(), listed[0].pid), (1, 7));

    let expected = [
        (
            "/process.Process/SendInput",
            r#"{"process":{"pid":7},"input":{"pty":"bHMK"}}"#,
        ),
        (
            "/process.Process/Update",
            r#"{"process":{"pid":7},"pty":{"size":{"cols":120,"rows":40}}}"#,
        ),
        (
            "/process.Process/SendInput",
            r#"{"process":{"pid":8},"input":{"stdin":"aGk="}}"#,
        ),
        ("/process.Process/CloseStdin", r#"{"process":{"pid":8}}"#),
        (
            "/process.Process/SendSignal",
            r#"{"process":{"pid":8},"signal":"SIGNAL_SIGKILL"}"#,
        ),
        (
            "/process.Process/SendSignal",
            r#"{"process":{"pid":999},"signal":"SIGNAL_SIGKILL"}"#,
        ),
        ("/process.Process/List", "{}"),
    ];
    for (i, (uri, body)) in expected.iter().enumerate() {
        let (seen_uri, seen_body) = body_json(&stub, i + 1);
        assert_eq!(seen_uri, *uri);
        assert_eq!(
            seen_body,
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            "{uri}"
        );
    }
    let seen = stub.seen.lock().unwrap()[1].clone();
    assert_eq!(header(&seen, "content-type"), "application/json");
    assert_eq!(header(&seen, "e2b-sandbox-id"), "sbx1");
}

#[tokio::test]
async fn pty_create_sends_size_and_terminal_env() {
    let (client, stub) = start_stub().await;
    let sandbox = client.create_sandbox(&NewSandbox::default()).await.unwrap();
    let handle = sandbox.pty().create(100, 30).await.unwrap();
    assert_eq!(handle.pid(), 1002);
    let seen = stub.seen.lock().unwrap()[1].clone();
    let msg: serde_json::Value = serde_json::from_slice(&seen.body[5..]).unwrap();
    assert_eq!(
        msg,
        serde_json::json!({"process":{"cmd":"/bin/bash","args":["-i","-l"],
            "envs":{"LANG":"C.UTF-8","LC_ALL":"C.UTF-8","TERM":"xterm-256color"}},
            "pty":{"size":{"cols":100,"rows":30}}})
    );
}

#[tokio::test]
async fn run_with_deadline_times_out_and_kills_the_process() {
    let (client, stub) = start_stub().await;
    let sandbox = client.create_sandbox(&NewSandbox::default()).await.unwrap();
    let opts = warren_client::RunOptions {
        timeout: Some(std::time::Duration::from_millis(200)),
        user: Some("root".to_owned()),
        ..Default::default()
    };
    let err = sandbox
        .commands()
        .run_with("sleep forever", &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");

    let seen = stub.seen.lock().unwrap().clone();
    assert_eq!(header(&seen[1], "connect-timeout-ms"), "200");
    assert_eq!(header(&seen[1], "authorization"), "Basic cm9vdDo=");
    assert_eq!(seen[2].uri, "/process.Process/SendSignal");
    let kill: serde_json::Value = serde_json::from_slice(&seen[2].body).unwrap();
    assert_eq!(kill["process"]["pid"], 77);
}

#[tokio::test]
async fn gateway_502_for_a_dead_sandbox_keeps_its_message() {
    let (client, _stub) = start_stub().await;
    let sandbox = client.create_sandbox(&NewSandbox::default()).await.unwrap();
    let err = sandbox.commands().run("gone").await.unwrap_err();
    match &err {
        ClientError::Rpc { code, message, .. } => {
            assert_eq!(*code, warren_client::ErrorCode::Unavailable);
            assert_eq!(message, "The sandbox sbx1 was not found");
        }
        other => panic!("expected an RPC error, got {other:?}"),
    }
    assert!(err.to_string().contains("was not found"), "{err}");
}
