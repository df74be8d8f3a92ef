//! filesystem.Filesystem against a real agent on loopback.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::{Agent, Frame};
use serde_json::{Value, json};

const FS: &str = "filesystem.Filesystem";

async fn call(agent: &Agent, method: &str, body: Value) -> (u16, Value) {
    agent.unary(&format!("{FS}/{method}"), body).await
}

#[tokio::test]
async fn stat_make_dir_move_list_remove() {
    let agent = Agent::start().await;
    let home = agent.home();

    // Missing path.
    let (status, body) = call(&agent, "Stat", json!({"path": "missing.txt"})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    // Relative and `~` paths resolve against the home; parents are created.
    let (status, body) = call(&agent, "MakeDir", json!({"path": "~/a/b/c"})).await;
    assert_eq!(status, 200, "{body}");
    let entry = &body["entry"];
    assert_eq!(entry["path"], home.join("a/b/c").display().to_string());
    assert_eq!(entry["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(entry["name"], "c");
    assert!(home.join("a/b/c").is_dir());
    let (status, body) = call(&agent, "MakeDir", json!({"path": "a/b/c"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_exists"))
    );

    // A file with known contents and mode.
    let file = home.join("a/f.txt");
    std::fs::write(&file, b"hello world").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("f.txt", home.join("a/link")).unwrap();
    let (status, body) = call(&agent, "Stat", json!({"path": file})).await;
    assert_eq!(status, 200);
    let e = &body["entry"];
    assert_eq!(e["type"], "FILE_TYPE_FILE");
    assert_eq!(e["size"], "11");
    assert_eq!(e["mode"], 0o640);
    assert_eq!(e["permissions"], "-rw-r-----");
    assert_eq!(e["owner"], "root");
    assert!(e["group"].as_str().is_some_and(|g| !g.is_empty()));
    assert!(e["modifiedTime"].as_str().unwrap().ends_with('Z'));
    let (_, body) = call(&agent, "Stat", json!({"path": "a/link"})).await;
    assert_eq!(body["entry"]["isSymlink"], true);
    assert_eq!(body["entry"]["type"], "FILE_TYPE_SYMLINK");
    assert_eq!(body["entry"]["symlinkTarget"], file.display().to_string());

    // ListDir: depth 0 and 1 are direct children; 3 recurses.
    for depth in [0, 1] {
        let (status, body) = call(&agent, "ListDir", json!({"path": "a", "depth": depth})).await;
        assert_eq!(status, 200);
        let names: Vec<&str> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "f.txt", "link"]);
    }
    let (_, body) = call(&agent, "ListDir", json!({"path": "a", "depth": 3})).await;
    let paths: Vec<String> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["path"]
                .as_str()
                .unwrap()
                .strip_prefix(&home.display().to_string())
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(paths, ["/a/b", "/a/b/c", "/a/f.txt", "/a/link"]);
    let (status, body) = call(&agent, "ListDir", json!({"path": "a/f.txt"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (status, _) = call(&agent, "ListDir", json!({"path": "nope"})).await;
    assert_eq!(status, 404);

    // Move into a new directory.
    let (status, body) = call(
        &agent,
        "Move",
        json!({"source": "a/f.txt", "destination": "moved/g.txt"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["name"], "g.txt");
    assert_eq!(
        std::fs::read(home.join("moved/g.txt")).unwrap(),
        b"hello world"
    );
    let (status, _) = call(
        &agent,
        "Move",
        json!({"source": "a/f.txt", "destination": "x"}),
    )
    .await;
    assert_eq!(status, 404);

    // Remove a file and a tree.
    let (status, _) = call(&agent, "Remove", json!({"path": "moved/g.txt"})).await;
    assert_eq!(status, 200);
    let (status, _) = call(&agent, "Remove", json!({"path": "a"})).await;
    assert_eq!(status, 200);
    assert!(!home.join("a").exists());
    let (status, body) = call(&agent, "Remove", json!({"path": "a"})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn watch_dir_stream_and_polling_watchers() {
    let agent = Agent::start().await;
    let home = agent.home();
    std::fs::create_dir_all(home.join("w/sub")).unwrap();

    let mut s = agent
        .stream(
            &format!("{FS}/WatchDir"),
            json!({"path": "w", "recursive": true}),
            &[],
        )
        .await;
    let Some(Frame::Msg(first)) = s.next().await else {
        panic!()
    };
    assert_eq!(first, json!({"start": {}}));
    std::fs::write(home.join("w/sub/new.txt"), b"x").unwrap();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(n, t): &(String, String)| n == "sub/new.txt" && t == "EVENT_TYPE_CREATE")
    {
        let m = match s.next().await {
            Some(Frame::Msg(m)) => m,
            other => panic!("stream ended: {other:?}"),
        };
        let ev = &m["filesystem"];
        seen.push((
            ev["name"].as_str().unwrap().to_owned(),
            ev["type"].as_str().unwrap().to_owned(),
        ));
    }
    drop(s);

    // Non-recursive: changes inside subdirectories are not reported.
    let mut s = agent
        .stream(&format!("{FS}/WatchDir"), json!({"path": "w"}), &[])
        .await;
    let Some(Frame::Msg(first)) = s.next().await else {
        panic!()
    };
    assert_eq!(first, json!({"start": {}}));
    std::fs::write(home.join("w/sub/ignored.txt"), b"x").unwrap();
    std::fs::write(home.join("w/top2.txt"), b"x").unwrap();
    let Some(Frame::Msg(m)) = s.next().await else {
        panic!()
    };
    assert_eq!(m["filesystem"]["name"], "top2.txt", "{m}");
    drop(s);

    let (status, _) = call(&agent, "CreateWatcher", json!({"path": "missing"})).await;
    assert_eq!(status, 404);
    let (status, body) = call(&agent, "CreateWatcher", json!({"path": "w"})).await;
    assert_eq!(status, 200);
    let id = body["watcherId"].as_str().unwrap().to_owned();
    std::fs::write(home.join("w/top.txt"), b"x").unwrap();
    std::fs::remove_file(home.join("w/top.txt")).unwrap();
    let mut events = Vec::new();
    for _ in 0..50 {
        let (status, body) = call(&agent, "GetWatcherEvents", json!({"watcherId": id})).await;
        assert_eq!(status, 200);
        events.extend(body["events"].as_array().cloned().unwrap_or_default());
        if events.iter().any(|e| e["type"] == "EVENT_TYPE_REMOVE") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"EVENT_TYPE_CREATE"), "{events:?}");
    assert_eq!(kinds.last(), Some(&"EVENT_TYPE_REMOVE"), "{events:?}");
    assert!(events.iter().all(|e| e["name"] == "top.txt"));
    let (status, _) = call(&agent, "RemoveWatcher", json!({"watcherId": id})).await;
    assert_eq!(status, 200);
    let (status, _) = call(&agent, "GetWatcherEvents", json!({"watcherId": id})).await;
    assert_eq!(status, 404);
}
