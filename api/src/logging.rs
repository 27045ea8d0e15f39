//! Structured logs via `tracing`: JSON lines in production, text for a terminal. Once
//! the subscriber is installed, everything the server writes to stderr goes through it
//! (the start-up banner, a panic's report and a fatal error included), so with
//! `format = "json"` every stderr line is a JSON object.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` is not consulted: the level comes from
/// config (`[log] level`, or `STOCKSBLITZ_LOG_LEVEL`) so there is one source of truth.
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cfg.level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    // A panic's report goes through the subscriber too (the default hook prints text).
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        let thread = std::thread::current().name().map(str::to_owned);
        tracing::error!(panic = %payload, location = ?location, thread = ?thread, "panic");
    }));
    Ok(())
}

/// The start-up line: where the server listens and what to try first.
pub fn banner(addr: std::net::SocketAddr) {
    tracing::info!(
        addr = %addr,
        dashboard = %format!("http://{addr}/"),
        try_rest = %format!("http://{addr}/api/v1/quotes/BTCUSDT"),
        try_stream = %format!("ws://{addr}/api/v1/stream"),
        "stocksblitz serving on http://{addr}"
    );
}

/// A fatal error: through the log subscriber when one is installed (so it is JSON like
/// every other line), else plainly on stderr (a command line tool, or before logging).
pub fn fatal(e: &anyhow::Error) {
    if tracing::dispatcher::has_been_set() {
        tracing::error!(error = %format!("{e:#}"), "stocksblitz stopped");
    } else {
        eprintln!("stocksblitz: {e:#}");
    }
}
