//! The real `warren-api` router over `warren-core`'s fake runtime (stub agents, no QEMU),
//! for the tests that check both sides of the REST protocol.

use warren_client::Client;
use warren_core::store::Store;
use warren_core::templates::TemplateService;
use warren_core::testing::FakeRuntime;
use warren_core::{Config, SandboxManager};

pub const KEY: &str = "client-test-key";

/// A server on an ephemeral port, with a template service when `templates`; it stops when
/// the test's runtime ends.
pub async fn start(templates: bool) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(dir.path().to_owned(), dir.path().join("cache"));
    config.static_api_key = Some(KEY.to_owned());
    let store = Store::open(dir.path()).expect("store");
    let manager = SandboxManager::start(config, store, FakeRuntime::new())
        .await
        .expect("manager");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let service = templates
        .then(|| TemplateService::new(manager.clone(), "test-image".into(), Default::default()));
    let state = warren_api::AppState::new(manager, service);
    tokio::spawn(warren_api::serve_state(
        listener,
        state,
        std::future::pending(),
    ));
    (Client::new(base, Some(KEY.to_owned())), dir)
}
