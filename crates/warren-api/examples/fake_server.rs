//! Serves the API with the fake runtime (stub agents, no QEMU), for trying the control plane
//! and the gateway with the real SDKs: `cargo run -p warren-api --example fake_server -- PORT`.
//! The API key is `WARREN_API_KEY` (default `fake-key`); state lives in a temporary dir.
//! Stops on Ctrl-C or SIGTERM and kills its fake sandboxes.

use warren_core::manager::ShutdownMode;
use warren_core::store::Store;
use warren_core::testing::FakeRuntime;
use warren_core::{Config, SandboxManager};

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let dir = tempfile::tempdir().expect("temporary data dir");
    let mut config = Config::new(dir.path().to_owned(), dir.path().join("cache")).apply_env();
    config
        .static_api_key
        .get_or_insert_with(|| "fake-key".to_owned());
    let store = Store::open(dir.path()).expect("store");
    let manager = SandboxManager::start(config, store, FakeRuntime::new())
        .await
        .expect("manager");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!(
        "listening on http://{}",
        listener.local_addr().expect("addr")
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    warren_api::serve(listener, manager.clone(), shutdown)
        .await
        .expect("serve");
    manager.shutdown(ShutdownMode::KillAll).await;
}
