//! `stocksblitz serve --config <file>` for the `fanout` bench, as a process of its own
//! (so the bench reads its CPU time and memory from /proc).
//!
//! A bench can start only the binaries of its own package, and the `stocksblitz`
//! binary belongs to the api crate: this one runs the very same code,
//! `stocksblitz_api::serve::serve` (what `stocksblitz serve` calls) with the same
//! global allocator, and reports a failure the same way.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let Some(config) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: sbz-bench-serve <config file> (as stocksblitz serve --config)");
        return ExitCode::from(2);
    };
    match stocksblitz_api::serve::serve(Some(config), false) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            stocksblitz_api::logging::fatal(&e);
            ExitCode::from(2)
        }
    }
}
