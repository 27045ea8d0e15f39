//! The naive fan-out baseline (`stocksblitz_benches::naive`) as a process of its own,
//! so the `fanout` bench can read its CPU time and memory from /proc like the
//! product's: `sbz-naive-fanout <listen address> <steps per second>`. A plain
//! `#[tokio::main]` server with the system allocator: what a user would write.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(rate)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|a| a.parse::<u64>().ok()).filter(|r| *r > 0),
    ) else {
        eprintln!("usage: sbz-naive-fanout <listen address, e.g. 127.0.0.1:9000> <steps per second, > 0>");
        return ExitCode::from(2);
    };
    match stocksblitz_benches::naive::serve(listen, rate).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sbz-naive-fanout: cannot serve on {listen}: {e}");
            ExitCode::from(1)
        }
    }
}
