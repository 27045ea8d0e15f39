//! `stocksblitz-feed-sim`: serves simulated Binance, Coinbase and Kite feeds.
//!
//! Reads `[[instruments]]` and `[simulator]` from a StocksBlitz config file (other
//! sections are ignored) and serves every instrument whose venue the simulator speaks.
//! Usage: `stocksblitz-feed-sim [CONFIG] [--listen ADDR]`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use stocksblitz_feed_handlers::sim::{self, SimulatorConfig};

#[derive(serde::Deserialize)]
struct File {
    instruments: Vec<stocksblitz_engine::InstrumentConfig>,
    simulator: SimulatorConfig,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut listen = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next(),
            "-h" | "--help" => {
                println!("usage: stocksblitz-feed-sim [CONFIG] [--listen ADDR]");
                return ExitCode::SUCCESS;
            }
            _ => path = Some(a),
        }
    }
    let path = path.unwrap_or_else(|| "configs/default.toml".into());
    let result = (|| -> Result<(), String> {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let file: File = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let registry =
            stocksblitz_engine::InstrumentRegistry::from_config(&file.instruments).map_err(|e| e.to_string())?;
        let setup = sim::setup_from(&registry, &file.simulator).map_err(|e| e.to_string())?;
        let listen = listen.unwrap_or(file.simulator.listen.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| format!("listen {listen}: {e}"))?;
            let handle = sim::start(setup, listener).await.map_err(|e| e.to_string())?;
            eprintln!("stocksblitz-feed-sim serving on {}", handle.addr);
            let _ = tokio::signal::ctrl_c().await;
            handle.stop().await;
            Ok(())
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stocksblitz-feed-sim: {e}");
            ExitCode::from(2)
        }
    }
}
