//! REST routes, errors, request ids and metrics.

pub mod conn;
pub mod cors;
pub mod edge;
pub mod guard;
pub mod health;
pub mod market;
pub mod metrics;
pub mod orders;
pub mod reply;
pub mod request_id;
pub mod router;
pub mod security;
pub mod server;
pub mod tls;
