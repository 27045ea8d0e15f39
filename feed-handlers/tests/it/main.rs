//! The feed handlers' integration tests, one binary: each file here is a module
//! (`binance_live`, `no_alloc`, ...; test names are `<module>::<test>`), compiled and
//! linked once instead of once per file. Run one area with
//! `cargo test -p stocksblitz-feed-handlers --test it <module>::`.
//!
//! The counting allocator (`stocksblitz_testkit::alloc`) counts per thread, so the
//! no-allocation tests in `no_alloc` measure only their own thread while the live
//! handler tests of this binary allocate in parallel. Environment variables are set
//! only through `stocksblitz_testkit::env`, each name unique to its test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod binance_live;
mod coinbase_live;
mod kite_live;
mod live_protocol;
mod no_alloc;

#[global_allocator]
static GLOBAL: stocksblitz_testkit::alloc::CountingAllocator = stocksblitz_testkit::alloc::CountingAllocator;
