//! The client's template calls against the real `warren-api` router with a template service
//! on `warren-core`'s fake runtime: pack a template file, submit it, follow the build, then
//! list, get, tag, untag, rebuild and delete. The fake runtime's stub VMs cannot run
//! commands, so built templates only use steps that need none.

mod common;

use std::path::Path;
use std::time::Duration;

use warren_client::{BuildStatus, Client, TemplateBuildInfo, pack_template};

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// Follows a build to its end the way the CLI does; returns the final status and every
/// log entry's message.
async fn follow(client: &Client, template_id: &str, build_id: &str) -> (TemplateBuildInfo, usize) {
    let mut offset = 0;
    for _ in 0..400 {
        let info = client
            .template_build_status(template_id, build_id, offset)
            .await
            .expect("status");
        offset += info.log_entries.len();
        if matches!(info.status, BuildStatus::Ready | BuildStatus::Error) {
            return (info, offset);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("build {build_id} did not end");
}

#[tokio::test]
async fn build_from_a_file_then_manage_the_template() {
    let (client, _server_dir) = common::server::start(true).await;
    let ctx = tempfile::tempdir().expect("tempdir");
    let file = ctx.path().join("app.toml");
    write(
        ctx.path(),
        "app.toml",
        "name = \"app\"\ntags = [\"v1\"]\nvcpus = 1\n\
         [[steps]]\nenv = { MODE = \"prod\" }\n[[steps]]\nworkdir = \"/srv\"\n",
    );
    let archive = pack_template(&file).expect("pack");
    let started = client
        .submit_template_archive(archive.clone(), false)
        .await
        .expect("submit");
    assert_eq!(started.name, "app");
    let (end, entries) = follow(&client, &started.template_id, &started.build_id).await;
    assert_eq!(end.status, BuildStatus::Ready, "{end:?}");
    assert!(entries > 0);

    let list = client.list_templates().await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].cpu_count, list[0].build_status.as_str()),
        (1, "ready")
    );
    let one = client.get_template("app").await.expect("get");
    assert_eq!(one.template_id, started.template_id);
    assert_eq!(one.builds.len(), 1);
    assert_eq!(one.tags.get("v1"), Some(&started.build_id));

    let tagged = client
        .tag_template("app:v1", &["prod".to_owned()])
        .await
        .expect("tag");
    assert_eq!(tagged.build_id, started.build_id);
    client
        .untag_template("app", &["v1".to_owned()])
        .await
        .expect("untag");
    let tags: Vec<String> = client
        .template_tags("app")
        .await
        .expect("tags")
        .into_iter()
        .map(|t| t.tag)
        .collect();
    assert_eq!(tags, ["default", "prod"]);

    let again = client.rebuild_template("app", true).await.expect("rebuild");
    assert_ne!(again.build_id, started.build_id);
    let (end, _) = follow(&client, &again.template_id, &again.build_id).await;
    assert_eq!(end.status, BuildStatus::Ready, "{end:?}");
    assert_eq!(
        client.get_template("app").await.expect("get").builds.len(),
        2
    );

    assert!(client.delete_template("app").await.expect("delete"));
    assert!(!client.delete_template("app").await.expect("delete again"));
    let err = client.get_template("app").await.expect_err("gone");
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn server_errors_reach_the_caller() {
    let (client, _server_dir) = common::server::start(true).await;
    let err = client
        .submit_template_archive(b"not an archive".to_vec(), false)
        .await
        .expect_err("garbage");
    assert_eq!(err.status(), Some(400));
    let err = client
        .template_build_status("nope", "nope", 0)
        .await
        .expect_err("unknown");
    assert!(err.is_not_found(), "{err}");
    let err = client
        .tag_template("nope", &["x".to_owned()])
        .await
        .expect_err("unknown");
    assert!(err.is_not_found(), "{err}");
    let err = client
        .rebuild_template("nope", false)
        .await
        .expect_err("unknown");
    assert!(err.is_not_found(), "{err}");

    let (client, _server_dir) = common::server::start(false).await;
    let err = client.list_templates().await.expect_err("no templates");
    assert_eq!(err.status(), Some(501));
}
