//! `[api.connections]` and `[api.tls]`: what clients may hold open at the connection
//! level (before any authentication), and the certificate the API serves TLS with.
//!
//! Unauthenticated clients reach the accept loop before any token is checked, so these
//! limits are what bounds the file descriptors, buffers and tasks a hostile client
//! (or many) can pin: a total and a per-address cap on open connections, a deadline for
//! a request's head, a deadline for any byte to move, and a size limit on the head.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::range;
use super::{ApiConfig, ConfigError, Environment};

/// `[api.connections]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Open connections (HTTP and WebSocket) across all clients; past it new ones are
    /// answered 503 `TOO_MANY_CONNECTIONS` and closed.
    pub max_connections: usize,
    /// Open connections from one client address; past it new ones from that address
    /// are answered 503 `TOO_MANY_CONNECTIONS` and closed.
    pub max_connections_per_address: usize,
    /// Time a client has to send a complete request head (request line and headers),
    /// from the connection opening or the end of the previous response; also the TLS
    /// handshake deadline. Past it the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A connection on which no byte moves either way for this long (a request body
    /// that stopped arriving, a client that stopped reading its responses) is closed.
    pub idle_timeout_secs: u64,
    /// Largest request head (request line plus headers); larger ones are answered 431.
    pub max_header_bytes: usize,
}

/// `[api.tls]`: serve HTTPS/WSS natively. Absent = plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Re-read on SIGHUP.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    pub key_path: PathBuf,
}

pub fn check(a: &ApiConfig, listen: SocketAddr) -> Result<(), ConfigError> {
    let c = &a.connections;
    range(
        "api.connections.max_connections",
        c.max_connections as u64,
        1,
        1_000_000,
    )?;
    range(
        "api.connections.max_connections_per_address",
        c.max_connections_per_address as u64,
        1,
        c.max_connections as u64,
    )
    .map_err(|_| {
        ConfigError::invalid(
            "api.connections.max_connections_per_address",
            format!(
                "{} must be from 1 to api.connections.max_connections ({})",
                c.max_connections_per_address, c.max_connections
            ),
        )
    })?;
    range(
        "api.connections.header_read_timeout_ms",
        c.header_read_timeout_ms,
        100,
        600_000,
    )?;
    range("api.connections.idle_timeout_secs", c.idle_timeout_secs, 1, 86_400)?;
    if c.idle_timeout_secs.saturating_mul(1_000) <= a.request_timeout_ms {
        return Err(ConfigError::invalid(
            "api.connections.idle_timeout_secs",
            format!(
                "must be longer than api.request_timeout_ms ({} ms), or slow requests are cut off before they are answered",
                a.request_timeout_ms
            ),
        ));
    }
    range(
        "api.connections.max_header_bytes",
        c.max_header_bytes as u64,
        1_024,
        1 << 20,
    )?;
    range("api.ws_write_timeout_ms", a.ws_write_timeout_ms, 100, 600_000)?;
    if let Some(t) = &a.tls {
        for (key, p) in [("api.tls.cert_path", &t.cert_path), ("api.tls.key_path", &t.key_path)] {
            if p.as_os_str().is_empty() {
                return Err(ConfigError::invalid(key, "must name a PEM file"));
            }
        }
    } else if a.environment == Environment::Production && !listen.ip().is_loopback() && !a.hsts {
        return Err(ConfigError::invalid(
            "api.tls",
            format!(
                "production serves plain HTTP on {listen} only behind a TLS-terminating proxy: add [api.tls] \
                 cert_path/key_path, or put the proxy in front and set api.hsts = true"
            ),
        ));
    }
    Ok(())
}
