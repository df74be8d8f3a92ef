//! process.Process against a real agent on loopback.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Agent, Frame, b64, finish, start_bash, unb64};
use serde_json::json;
use warren_proto::connect::Envelope;

#[tokio::test]
async fn runs_a_command_with_exit_code_and_both_streams() {
    let agent = Agent::start().await;
    let (_pid, s) = start_bash(
        &agent,
        "echo hi; echo oops >&2; exit 3",
        json!({"stdin": false}),
    )
    .await;
    let f = finish(s).await;
    assert_eq!(f.stdout, b"hi\n");
    assert_eq!(f.stderr, b"oops\n");
    assert_eq!(f.end["exitCode"], 3);
    assert_eq!(f.end["exited"], true);
    assert_eq!(f.end["status"], "exit status 3");
    assert_eq!(f.trailer, json!({}));
}

#[tokio::test]
async fn environment_cwd_and_init_env_vars() {
    let agent = Agent::start().await;
    let r = agent
        .post("/init")
        .json(&json!({"envVars": {"SANDBOX_VAR": "s", "OVERRIDDEN": "sandbox"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, s) = start_bash(
        &agent,
        "echo $HOME; pwd; echo $SANDBOX_VAR $OVERRIDDEN $MINE; echo $USER",
        json!({"process": {"cmd": "/bin/bash",
            "args": ["-c", "echo $HOME; pwd; echo $SANDBOX_VAR $OVERRIDDEN $MINE"],
            "envs": {"OVERRIDDEN": "request", "MINE": "m"}}}),
    )
    .await;
    let f = finish(s).await;
    let home = agent.home().display().to_string();
    assert_eq!(
        String::from_utf8(f.stdout).unwrap(),
        format!("{home}\n{home}\ns request m\n")
    );

    let sub = agent.home().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let (_, s) = start_bash(
        &agent,
        "pwd",
        json!({"process": {"cmd": "pwd", "cwd": "sub"}}),
    )
    .await;
    assert_eq!(
        finish(s).await.stdout,
        format!("{}\n", sub.display()).as_bytes()
    );

    let s = agent
        .stream(
            "process.Process/Start",
            json!({"process": {"cmd": "true", "cwd": "/nonexistent"}}),
            &[],
        )
        .await;
    let (msgs, end) = s.collect().await;
    assert!(msgs.is_empty());
    assert_eq!(end["error"]["code"], "invalid_argument");
}

#[tokio::test]
async fn unknown_pid_is_not_found_everywhere() {
    let agent = Agent::start().await;
    let sel = json!({"process": {"pid": 999_999}});
    let (_, end) = agent
        .stream("process.Process/Connect", sel.clone(), &[])
        .await
        .collect()
        .await;
    assert_eq!(end["error"]["code"], "not_found");
    let (status, body) = agent
        .unary(
            "process.Process/SendSignal",
            json!({"process": {"pid": 999_999}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = agent
        .unary(
            "process.Process/SendInput",
            json!({"process": {"tag": "nope"}, "input": {"stdin": "eA=="}}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, _) = agent.unary("process.Process/CloseStdin", sel.clone()).await;
    assert_eq!(status, 404);
    let (status, _) = agent.unary("process.Process/Update", sel).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn malformed_requests_are_invalid_argument() {
    let agent = Agent::start().await;
    // A truncated envelope.
    let s = agent
        .stream_raw(
            "process.Process/Start",
            Bytes::from_static(&[0, 0, 0, 0, 50, b'{']),
            &[],
        )
        .await;
    let (_, end) = s.collect().await;
    assert_eq!(end["error"]["code"], "invalid_argument");
    // Not JSON inside a valid envelope.
    let s = agent
        .stream_raw(
            "process.Process/Start",
            Envelope::message("nope").encode(),
            &[],
        )
        .await;
    let (_, end) = s.collect().await;
    assert_eq!(end["error"]["code"], "invalid_argument");
    // An oversized envelope header.
    let s = agent
        .stream_raw(
            "process.Process/Start",
            Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]),
            &[],
        )
        .await;
    let (_, end) = s.collect().await;
    assert_eq!(end["error"]["code"], "invalid_argument");
    // Bad unary JSON.
    let r = agent
        .post("/process.Process/List")
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "invalid_argument");
}

#[tokio::test]
async fn streams_50_mb_without_ballooning() {
    let agent = Agent::start().await;
    let total = 50 * 1024 * 1024;
    let (_, mut s) = start_bash(&agent, &format!("head -c {total} /dev/urandom"), json!({})).await;
    let started = Instant::now();
    let mut got = 0usize;
    let mut end = None;
    while let Some(frame) = s.next().await {
        match frame {
            Frame::Msg(m) => {
                if let Some(d) = m["event"]["data"]["stdout"].as_str() {
                    got += unb64(d).len();
                } else if let Some(e) = m["event"].get("end") {
                    end = Some(e.clone());
                }
            }
            Frame::End(t) => {
                assert_eq!(t, json!({}));
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(got, total);
    assert_eq!(end.unwrap()["status"], "exit status 0");
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!(
        "50 MiB streamed in {elapsed:?}; agent peak RSS {} MiB",
        hwm_kb / 1024
    );
    assert!(hwm_kb < 80 * 1024, "agent peak RSS {hwm_kb} kB");
}

#[tokio::test]
async fn binary_output_is_intact() {
    let agent = Agent::start().await;
    let script = r#"for i in $(seq 0 255); do printf "\\$(printf %03o $i)"; done"#;
    let (_, s) = start_bash(&agent, script, json!({})).await;
    let f = finish(s).await;
    let expected: Vec<u8> = (0..=255u8).collect();
    assert_eq!(f.stdout, expected);
}

#[tokio::test]
async fn ten_processes_at_once() {
    let agent = Agent::start().await;
    let runs = (0..10).map(|i| {
        let agent = &agent;
        async move {
            let (pid, s) = start_bash(agent, &format!("sleep 0.3; echo proc-{i}"), json!({})).await;
            (i, pid, finish(s).await)
        }
    });
    let started = Instant::now();
    let results = futures::future::join_all(runs).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "ran concurrently"
    );
    let mut pids: Vec<u32> = results.iter().map(|r| r.1).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 10);
    for (i, _, f) in results {
        assert_eq!(f.stdout, format!("proc-{i}\n").as_bytes());
        assert_eq!(f.end["status"], "exit status 0");
    }
}

#[tokio::test]
async fn stdin_send_stream_and_close() {
    let agent = Agent::start().await;
    let (pid, mut s) = start_bash(&agent, "cat", json!({"stdin": true})).await;
    let sel = json!({"pid": pid});
    let (status, body) = agent
        .unary(
            "process.Process/SendInput",
            json!({"process": sel, "input": {"stdin": b64(b"one\n")}}),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let Some(Frame::Msg(m)) = s.next().await else {
        panic!()
    };
    assert_eq!(
        unb64(m["event"]["data"]["stdout"].as_str().unwrap()),
        b"one\n"
    );

    let mut body = Vec::new();
    body.extend_from_slice(
        &Envelope::message(json!({"start": {"process": sel}}).to_string()).encode(),
    );
    for chunk in [&b"two "[..], b"three\n"] {
        let msg = json!({"data": {"input": {"stdin": b64(chunk)}}});
        body.extend_from_slice(&Envelope::message(msg.to_string()).encode());
    }
    body.extend_from_slice(&Envelope::message(r#"{"keepalive":{}}"#).encode());
    let (msgs, end) = agent
        .stream_raw("process.Process/StreamInput", body.into(), &[])
        .await
        .collect()
        .await;
    assert_eq!((msgs, end), (vec![json!({})], json!({})));

    let (status, _) = agent
        .unary("process.Process/CloseStdin", json!({"process": sel}))
        .await;
    assert_eq!(status, 200);
    let f = finish(s).await;
    assert_eq!(f.stdout, b"two three\n");
    assert_eq!(f.end["status"], "exit status 0");

    // Without `stdin: true` there is no pipe to write to.
    let (pid, s) = start_bash(&agent, "sleep 1", json!({})).await;
    let (status, body) = agent
        .unary(
            "process.Process/SendInput",
            json!({"process": {"pid": pid}, "input": {"stdin": "eA=="}}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("failed_precondition"))
    );
    finish(s).await;
}

#[tokio::test]
async fn list_connect_by_tag_and_kill() {
    let agent = Agent::start().await;
    let (pid, s1) = start_bash(
        &agent,
        "",
        json!({"process": {"cmd": "/bin/bash", "args": ["-c", "sleep 0.5; echo late; sleep 30"]},
               "tag": "sleeper"}),
    )
    .await;
    let (status, list) = agent.unary("process.Process/List", json!({})).await;
    assert_eq!(status, 200);
    let procs = list["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0]["pid"], pid);
    assert_eq!(procs[0]["tag"], "sleeper");
    assert_eq!(procs[0]["config"]["cmd"], "/bin/bash");

    let mut s2 = agent
        .stream(
            "process.Process/Connect",
            json!({"process": {"tag": "sleeper"}}),
            &[],
        )
        .await;
    let Some(Frame::Msg(first)) = s2.next().await else {
        panic!()
    };
    assert_eq!(first["event"]["start"]["pid"], pid);
    let Some(Frame::Msg(data)) = s2.next().await else {
        panic!()
    };
    assert_eq!(
        unb64(data["event"]["data"]["stdout"].as_str().unwrap()),
        b"late\n"
    );

    let (status, _) = agent
        .unary(
            "process.Process/SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    assert_eq!(status, 200);
    for s in [s1, s2] {
        let f = finish(s).await;
        assert_eq!(f.end["status"], "signal: killed");
        assert_eq!(f.end["exitCode"], -1);
    }
    let (_, list) = agent.unary("process.Process/List", json!({})).await;
    assert_eq!(list, json!({}));
}

#[tokio::test]
async fn deadline_and_keepalives() {
    let agent = Agent::start().await;
    let req = json!({"process": {"cmd": "sleep", "args": ["1.3"]}});
    let s = agent
        .stream(
            "process.Process/Start",
            req.clone(),
            &[("Keepalive-Ping-Interval", "1")],
        )
        .await;
    let f = finish(s).await;
    assert!(f.keepalives >= 1, "saw {} keepalives", f.keepalives);
    assert_eq!(f.end["status"], "exit status 0");

    let s = agent
        .stream(
            "process.Process/Start",
            json!({"process": {"cmd": "sleep", "args": ["5"]}}),
            &[("Connect-Timeout-Ms", "300")],
        )
        .await;
    let started = Instant::now();
    let (msgs, end) = s.collect().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(msgs.len(), 1, "only the start event");
    assert_eq!(end["error"]["code"], "deadline_exceeded");
}

#[tokio::test]
async fn pty_resize_and_typing() {
    let agent = Agent::start().await;
    let req = json!({
        "process": {"cmd": "/bin/bash", "args": ["--norc", "--noprofile", "-i"],
                    "envs": {"TERM": "xterm-256color", "PS1": "$ "}},
        "pty": {"size": {"cols": 80, "rows": 24}}
    });
    let mut s = agent.stream("process.Process/Start", req, &[]).await;
    let Some(Frame::Msg(first)) = s.next().await else {
        panic!()
    };
    let pid = first["event"]["start"]["pid"].as_u64().unwrap();
    let sel = json!({"pid": pid});

    let mut seen = Vec::new();
    async fn wait_for(s: &mut common::RpcStream, seen: &mut Vec<u8>, needle: &str) {
        while !String::from_utf8_lossy(seen).contains(needle) {
            match s.next().await {
                Some(Frame::Msg(m)) => {
                    if let Some(p) = m["event"]["data"]["pty"].as_str() {
                        seen.extend(unb64(p));
                    }
                }
                other => panic!(
                    "stream ended early: {other:?}; output {:?}",
                    String::from_utf8_lossy(seen)
                ),
            }
        }
    }
    let send = |text: &str| {
        agent.unary(
            "process.Process/SendInput",
            json!({"process": sel, "input": {"pty": b64(text.as_bytes())}}),
        )
    };
    assert_eq!(send("stty size\n").await.0, 200);
    wait_for(&mut s, &mut seen, "24 80").await;
    let (status, _) = agent
        .unary(
            "process.Process/Update",
            json!({"process": sel, "pty": {"size": {"cols": 100, "rows": 40}}}),
        )
        .await;
    assert_eq!(status, 200);
    seen.clear();
    assert_eq!(send("stty size\n").await.0, 200);
    wait_for(&mut s, &mut seen, "40 100").await;
    assert_eq!(send("exit 7\n").await.0, 200);
    let f = finish(s).await;
    assert_eq!(f.end["exitCode"], 7);
}

#[tokio::test]
async fn runs_as_the_selected_user_and_reaps_children() {
    let agent = Agent::start().await;
    // `Basic base64("nobody:")` as the SDK sends it.
    let auth = format!("Basic {}", b64(b"nobody:"));
    let script = "id -un; id -u; echo $HOME $USER; pwd";
    let req = json!({"process": {"cmd": "/bin/bash", "args": ["-c", script]}});
    let s = agent
        .stream("process.Process/Start", req, &[("Authorization", &auth)])
        .await;
    let f = finish(s).await;
    let out = String::from_utf8(f.stdout).unwrap();
    assert_eq!(
        out, "nobody\n65534\n/nonexistent nobody\n/\n",
        "stderr: {:?}",
        f.stderr
    );

    let auth = format!("Basic {}", b64(b"no-such-user:"));
    let s = agent
        .stream(
            "process.Process/Start",
            json!({"process": {"cmd": "true"}}),
            &[("Authorization", &auth)],
        )
        .await;
    assert_eq!(s.collect().await.1["error"]["code"], "unauthenticated");

    // Orphans left behind by a finished command and the commands themselves are reaped.
    let (_, s) = start_bash(
        &agent,
        "(sleep 0.2 >/dev/null 2>&1 &); echo done",
        json!({}),
    )
    .await;
    assert_eq!(finish(s).await.stdout, b"done\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let agent_pid = agent.pid().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&agent_pid.as_str()) && fields.first() == Some(&"Z") {
            zombies.push(stat);
        }
    }
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
}

#[tokio::test]
async fn a_stalled_client_cannot_block_the_process_forever() {
    let agent = Agent::start_with_env(&[("WARREN_AGENT_SLOW_SUBSCRIBER_MS", "300")]).await;
    let marker = agent.home().join("finished");
    let script = format!("head -c 64000000 /dev/zero; touch {}", marker.display());
    // Open the stream and read nothing: socket buffers and the queue fill up.
    let (_, mut s) = start_bash(&agent, &script, json!({})).await;
    let started = Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "process stayed blocked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stalled stream was cut off with an error instead of receiving everything.
    let mut got = 0;
    let end = loop {
        match s.next().await {
            Some(Frame::Msg(m)) => {
                assert!(
                    m["event"].get("end").is_none(),
                    "dropped subscriber got the end"
                );
                if let Some(d) = m["event"]["data"]["stdout"].as_str() {
                    got += unb64(d).len();
                }
            }
            Some(Frame::End(e)) => break e,
            None => panic!("no end envelope"),
        }
    };
    assert!(got < 64_000_000);
    assert_eq!(end["error"]["code"], "unavailable");
}
