//! The engine's integration tests, one binary: each file here is a module (`journal`,
//! `order_engine`, ...; test names are `<module>::<test>`), compiled and linked once
//! instead of once per file. Run one area with
//! `cargo test -p stocksblitz-engine --test it <module>::`.
//!
//! The counting allocator (`stocksblitz_testkit::alloc`) counts per thread, so the
//! no-allocation tests in `order_engine` measure only their own thread while the other
//! tests of this binary allocate in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod orders_common;

mod clob_model;
mod engine_flow;
mod journal;
mod order_engine;
mod order_risk;
mod order_store;
mod owned;
mod paper_venue;
mod surveillance;

#[global_allocator]
static GLOBAL: stocksblitz_testkit::alloc::CountingAllocator = stocksblitz_testkit::alloc::CountingAllocator;
