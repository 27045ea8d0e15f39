//! The `stocksblitz` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stocksblitz_api::{app, config, logging};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// StocksBlitz: low-latency market data and order engine.
#[derive(Parser)]
#[command(name = "stocksblitz", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine, feeds and API (the default with no subcommand, on the embedded
    /// configs/default.toml).
    Serve {
        /// Config file; the embedded default when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (with STOCKSBLITZ_* overrides applied) and exit.
    Check {
        /// Config file; the embedded default when absent.
        config: Option<PathBuf>,
    },
    /// Print the embedded default configuration.
    Default,
}

fn load(path: Option<&std::path::Path>) -> Result<config::Validated, config::ConfigError> {
    let (source, text) = config::read_source(path)?;
    config::load(&source, &text, std::env::vars())
}

fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    let v = load(path.as_deref()).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    logging::init(&v.config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("api")
        .build()?;
    runtime.block_on(async move {
        let running = app::start(v).await?;
        eprintln!(
            "stocksblitz serving on http://{addr} (try /api/v1/quotes/BTCUSDT, ws://{addr}/api/v1/stream)",
            addr = running.addr
        );
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await
    })
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(None),
        Some(Command::Serve { config }) => serve(config),
        Some(Command::Config {
            command: ConfigCommand::Check { config },
        }) => match load(config.as_deref()) {
            Ok(v) => {
                println!(
                    "config ok: {} instruments, {} feeds, api on {}",
                    v.registry.len(),
                    v.config.feeds.len(),
                    v.listen
                );
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("configuration error: {e}")),
        },
        Some(Command::Config {
            command: ConfigCommand::Default,
        }) => {
            print!("{}", config::DEFAULT_TOML);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stocksblitz: {e:#}");
            ExitCode::from(2)
        }
    }
}
