//! Online recommendations over HTTP for a trained reg4rec model directory.
//!
//! One engine thread owns the [`reg4rec_recommender::Recommender`]; a batcher packs concurrent requests into
//! one batched beam search ([`engine`]); the API ([`api`]) puts limits on payload, history length, `k` and
//! beam width, answers 429 when the bounded queue is full, exports Prometheus metrics, and drains in-flight
//! requests on SIGTERM before exiting. [`loadgen`] is a bounded load generator for loopback servers.
//!
//! ```no_run
//! use reg4rec_serve::{run_blocking, ServeConfig};
//! let cfg = ServeConfig { addr: "127.0.0.1:8080".into(), ..Default::default() };
//! run_blocking("runs/ml-100k/stages/align-reg4rec".into(), Default::default(), cfg, |addr| {
//!     println!("listening on http://{addr}");
//! })?;
//! # Ok::<(), reg4rec_serve::ServeError>(())
//! ```

pub mod api;
pub mod config;
pub mod engine;
pub mod error;
pub mod loadgen;
pub mod metrics;

pub use config::ServeConfig;
pub use error::{Result, ServeError};
pub use loadgen::{LoadConfig, LoadReport};

use api::AppState;
use engine::Engine;
use metrics::Metrics;
use reg4rec_infer::InferConfig;
use reg4rec_recommender::Recommender;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, marks the server not ready
/// and waits for every in-flight request to be answered, for at most `serve.drain_timeout_s`: connections still
/// open then are closed (their tasks end when the runtime is dropped).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let s = state.clone();
    let deadline = std::time::Duration::from_secs_f64(state.cfg.drain_timeout_s);
    let (started, drain_started) = tokio::sync::oneshot::channel::<()>();
    let drain = async move {
        shutdown.await;
        s.ready.store(false, Ordering::SeqCst);
        tracing::info!("draining: no new connections; answering the requests in flight");
        let _ = started.send(());
    };
    let server = axum::serve(listener, api::router(state)).with_graceful_shutdown(drain);
    let expired = async move {
        match drain_started.await {
            Ok(()) => tokio::time::sleep(deadline).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        r = server => r.map_err(|e| ServeError::Io {
            what: "serving".into(),
            source: e,
        }),
        () = expired => {
            tracing::warn!(
                seconds = deadline.as_secs_f64(),
                "the drain deadline passed with connections still open (serve.drain_timeout_s): closing them"
            );
            Ok(())
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Loads the model directory (on the engine thread), binds `cfg.addr`, calls `on_bound` with the bound address
/// (port 0 picks a free port), and serves until SIGTERM or Ctrl-C; returns after the drain.
pub fn run_blocking(
    model: PathBuf,
    infer: InferConfig,
    cfg: ServeConfig,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<()> {
    cfg.validate()?;
    let metrics = Metrics::new();
    let dir = model.clone();
    let (engine, info, handle) = Engine::start(
        move || Recommender::load_with(&dir, &infer, tch_cpu()),
        &cfg,
        metrics.clone(),
    )?;
    tracing::info!(
        model = %model.display(),
        items = info.n_items,
        catalog_version = info.catalog_version,
        "model loaded"
    );
    let rt = runtime()?;
    let state = Arc::new(AppState {
        engine,
        cfg: cfg.clone(),
        metrics,
        ready: AtomicBool::new(true),
    });
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&cfg.addr)
            .await
            .map_err(|e| ServeError::Io {
                what: format!("binding {}", cfg.addr),
                source: e,
            })?;
        let addr = listener.local_addr().map_err(|e| ServeError::Io {
            what: "reading the bound address".into(),
            source: e,
        })?;
        on_bound(addr);
        serve(listener, state, terminated()).await
    });
    // Cancels the connections a drain deadline left open, so no task holds the router (and the queue's sender).
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    served?;
    // Every handler is done and the router (holding the queue's sender) is gone: the engine ends its loop.
    handle
        .join()
        .map_err(|_| ServeError::Engine("the engine thread panicked".into()))?;
    tracing::info!("drained; exiting");
    Ok(())
}

/// The async runtime of the server and the load generator: two worker threads (the engine has its own).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ServeError::Io {
            what: "starting the async runtime".into(),
            source: e,
        })
}

fn tch_cpu() -> reg4rec_recommender::TchDevice {
    reg4rec_recommender::TchDevice::Cpu
}
