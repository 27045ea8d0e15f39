//! StocksBlitz API: the axum REST + WebSocket server, its read model of the market, the
//! configuration loader, and the wiring of engine, feeds and API into one process.
#![cfg_attr(not(test), forbid(unsafe_code))]

pub mod app;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod dto;
pub mod foundation;
pub mod http;
pub mod journal_cli;
pub mod logging;
pub mod market;
pub mod openapi;
pub mod orders;
pub mod ratelimit;
pub mod redis_store;
pub mod serve;
pub mod sink;
pub mod state;
pub mod ws;

/// Unit tests count allocations per thread (the fan-out's work per batch, `ws::tests`).
#[cfg(test)]
#[global_allocator]
static GLOBAL: stocksblitz_testkit::alloc::CountingAllocator = stocksblitz_testkit::alloc::CountingAllocator;
