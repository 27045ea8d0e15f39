//! `stocksblitz serve` as a library function: load the configuration, raise the
//! open-file limit, run the engine, feeds and API on a tokio runtime until SIGINT or
//! SIGTERM, then shut down in order.
//!
//! It lives in the library (not in `main.rs`) so that the fan-out benchmark
//! (`benches/src/bin/stocksblitz-bench-serve.rs`) can start exactly the code the
//! `stocksblitz` binary runs as a child process of its own.

use std::path::{Path, PathBuf};

use crate::{app, config, logging};

/// The configuration at `path` (the embedded default when `None`) with `STOCKSBLITZ_*`
/// overrides from the environment applied, validated.
pub fn load(path: Option<&Path>) -> Result<config::Validated, config::ConfigError> {
    let (source, text) = config::read_source(path)?;
    config::load(&source, &text, std::env::vars())
}

/// Runs the server until SIGINT/SIGTERM: the whole product (`api_node` false) or an API
/// node fed through Redis (`--role api`).
pub fn serve(path: Option<PathBuf>, api_node: bool) -> anyhow::Result<()> {
    let v = load(path.as_deref()).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    logging::init(&v.config.log)?;
    open_file_limit(v.config.api.connections.max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("api")
        .build()?;
    runtime.block_on(async move {
        let running = if api_node {
            app::start_api_node_bound(v).await?
        } else {
            app::start(v).await?
        };
        logging::banner(running.addr);
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await
    })
}

/// Descriptors kept for feeds, journal, sink, Redis and logs beyond client connections.
const FD_RESERVE: u64 = 256;

/// Raises the open-file soft limit to the hard limit and says whether
/// `api.connections.max_connections` fits under it.
fn open_file_limit(max_connections: usize) {
    match crate::http::server::raise_open_file_limit() {
        Ok((before, now)) => {
            tracing::info!(
                before,
                now,
                "open-file limit (RLIMIT_NOFILE soft) raised to the hard limit"
            );
            if max_connections as u64 + FD_RESERVE > now {
                tracing::warn!(
                    max_connections,
                    open_file_limit = now,
                    "api.connections.max_connections plus {FD_RESERVE} for feeds and files exceeds the open-file \
                     limit: lower it or raise LimitNOFILE / ulimit -n, or accept fails before the cap refuses"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
