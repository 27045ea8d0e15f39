//! The API's integration tests, one binary: each file here is a module (`rest`, `orders`,
//! `hostile`, ...; test names are `<module>::<test>`), compiled and linked once instead
//! of once per file, which was most of the test build's time. Run one area with
//! `cargo test -p stocksblitz-api --test it <module>::`. The soak (`tests/soak.rs`)
//! stays a binary of its own; `tests/common/` serves both.
//!
//! Everything here shares one process, so the tests keep to these rules:
//! - environment variables are changed only through `stocksblitz_testkit::env` (a
//!   process-wide lock; every name is unique to its test) and never read back by
//!   another test; configuration takes its overrides as an explicit list, not from
//!   the process environment;
//! - signals go to child processes only: the TLS rotation test sends SIGHUP to the
//!   real binary it started, never to this process (whose default SIGHUP action would
//!   end every test);
//! - the open-file limit is only ever raised (to the hard limit, by the hostile tests
//!   that hold thousands of connections), never lowered; the test that needs a low
//!   limit sets it in a child shell (`ulimit -n`) for the real binary;
//! - nothing installs a global tracing subscriber or panic hook: tests that read logs
//!   run the real binary and read its output;
//! - ports are free loopback ports (`common::process::free_port`), directories are
//!   fresh (`common::fresh_dir`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod cluster_engine;
mod cluster_kill;
mod cluster_shards;
mod config;
mod dashboard;
mod deploy;
mod feed_cli;
mod hostile;
mod journal_recovery;
mod openapi;
mod orders;
mod orders_stream;
mod questdb_sink;
mod raw_ws;
mod redis;
mod replay_feed;
mod rest;
mod scripts;
mod secrets_in_logs;
mod security;
mod stream;
mod surveillance;
mod tidy;
mod ws_memory;
