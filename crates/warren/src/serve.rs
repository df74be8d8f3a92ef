//! `warren serve`: runs the control plane and the envd gateway.
//!
//! Start-up: find or build the guest image (the first start builds it, a few minutes), probe
//! the accelerator, open the state store, create the first API key if there is none (printed
//! once), adopt the sandboxes a previous server left running, then serve until SIGINT or
//! SIGTERM. On exit sandboxes are left running for the next server to adopt, unless
//! `--on-exit kill` asks for them to be killed (tests and demos use that).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use warren_core::manager::ShutdownMode;
use warren_core::qemu::QemuRuntime;
use warren_core::store::Store;
use warren_core::templates::TemplateService;
use warren_core::{Config, SandboxManager, api_keys};
use warren_template::builder::BuildOptions;

/// Arguments of `warren serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for the REST API and the envd gateway.
    #[arg(long, default_value = "127.0.0.1:3000", env = "WARREN_LISTEN")]
    pub listen: SocketAddr,
    /// State directory (database, API key, sandboxes, snapshots)
    /// [default: $XDG_DATA_HOME/warren or ~/.local/share/warren].
    #[arg(long, env = "WARREN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Image cache directory [default: $XDG_CACHE_HOME/warren or ~/.cache/warren].
    #[arg(long, env = "WARREN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// What happens to running sandboxes when the server stops: `detach` leaves them running
    /// for the next server to adopt, `kill` kills them.
    #[arg(long, value_enum, default_value_t = OnExit::Detach)]
    pub on_exit: OnExit,
    /// Longest sandbox timeout a client may ask for, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub max_timeout: u64,
    /// How many snapshots (templates included) get a standby VM: a QEMU started and its
    /// guest warmed up ahead of demand, so that the next sandbox from them starts in ~15 ms
    /// instead of ~110 ms under TCG. Each idle standby holds ~30 MiB of its own memory.
    /// 0 turns them off.
    #[arg(long, default_value_t = 2, env = "WARREN_STANDBY")]
    pub standby: usize,
}

/// What `warren serve` does with running sandboxes when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnExit {
    /// Leave them running; the next server adopts them.
    Detach,
    /// Kill them.
    Kill,
}

/// Runs the server until it is stopped.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .or_else(crate::cli::default_data_dir)
        .context("no data dir: pass --data-dir or set HOME")?;
    let cache_dir = args
        .cache_dir
        .unwrap_or_else(warren_image::default_cache_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;

    let image =
        crate::image::ensure(cache_dir.clone(), None, Box::new(warren_image::LogProgress)).await?;
    let accel = warren_vm::probe_accel(&image.vmlinux, &image.initramfs).await;
    tracing::info!(image = %image.key, ?accel, "guest image ready");

    let mut config = Config::new(data_dir.clone(), cache_dir).apply_env();
    config.listen = args.listen;
    config.max_timeout = std::time::Duration::from_secs(args.max_timeout);
    let store = Store::open(&data_dir).context("opening the state store")?;
    if let Some(key) =
        api_keys::ensure_initial_key(&store, &data_dir).context("creating the first API key")?
    {
        println!(
            "Created the first API key (also saved in {}):",
            data_dir.join("api-key").display()
        );
        println!("  {key}");
    }
    let image_key = image.key.clone();
    let runtime = QemuRuntime::new(image, accel, &data_dir)
        .context("setting up the runtime")?
        .with_standbys(args.standby);
    let manager = SandboxManager::start(config, store, Arc::new(runtime))
        .await
        .context("starting the sandbox manager")?;

    let templates = TemplateService::new(manager.clone(), image_key, BuildOptions::default());
    if let Err(e) = templates.recover().await {
        tracing::warn!(error = %e, "cannot clean up the template builds of the last run");
    }
    // Until the base template is built, `base` sandboxes cold-boot the image.
    let base = templates.clone();
    tokio::spawn(async move {
        if let Err(e) = base.ensure_base().await {
            tracing::warn!(error = %e, "cannot build the base template");
        }
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let state = warren_api::AppState::new(manager.clone(), Some(templates));
    let served = warren_api::serve_state(listener, state, shutdown_signal()).await;
    let mode = match args.on_exit {
        OnExit::Detach => ShutdownMode::Detach,
        OnExit::Kill => ShutdownMode::KillAll,
    };
    manager.shutdown(mode).await;
    served.context("serving the API")
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the server can only be killed; wait forever.
            std::future::pending::<()>().await;
        }
    }
    tracing::info!("shutting down");
}
