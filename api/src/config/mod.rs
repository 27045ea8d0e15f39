//! The whole configuration: one TOML file, then `STOCKSBLITZ_{SECTION}_{KEY}`
//! environment overrides, then validation. Any problem stops start-up with a message
//! naming the key to fix; nothing configured silently falls back to a default.
//!
//! Sections belong to the crates that use them (`[engine]` is the engine's
//! `EngineConfig`, `[[feeds]]` the feed handlers'); this module composes them.

pub mod audit;
pub mod auth;
pub mod cluster;
pub mod connections;
pub mod error;
pub mod health;
pub mod limits;
pub mod orders;
mod overrides;
pub mod questdb;
pub mod redis;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stocksblitz_engine::idle::IdleConfig;
use stocksblitz_engine::{EngineConfig, InstrumentConfig, InstrumentRegistry};
use stocksblitz_feed_handlers::sim::SimulatorConfig;
use stocksblitz_feed_handlers::FeedConfig;

pub use error::ConfigError;
pub use validate::Validated;

/// The embedded default (`configs/default.toml`): runs with no external services.
pub const DEFAULT_TOML: &str = include_str!("../../../configs/default.toml");

/// Environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "STOCKSBLITZ_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub api: ApiConfig,
    pub log: LogConfig,
    pub engine: EngineConfig,
    pub instruments: Vec<InstrumentConfig>,
    pub feeds: Vec<FeedConfig>,
    /// The feed simulator, optionally run in-process (`[simulator]`).
    #[serde(default)]
    pub simulator: Option<SimulatorConfig>,
    /// Order entry (`[orders]`); absent = off.
    #[serde(default)]
    pub orders: Option<orders::OrdersConfig>,
    /// Token verification (`[auth]`); required when `[orders]` is present.
    #[serde(default)]
    pub auth: Option<auth::AuthConfig>,
    /// Requests per minute per caller, by tier (`[rate_limits]`).
    pub rate_limits: limits::RateLimitsConfig,
    /// The audit log (`[audit]`).
    pub audit: audit::AuditConfig,
    /// Surveillance (`[surveillance]`, needs `[orders]`); absent = off.
    #[serde(default)]
    pub surveillance: Option<stocksblitz_engine::surveillance::SurveillanceConfig>,
    /// The QuestDB sink (`[questdb]`); absent = nothing exported.
    #[serde(default)]
    pub questdb: Option<questdb::QuestDbConfig>,
    /// Redis (`[redis]`); absent = not used.
    #[serde(default)]
    pub redis: Option<redis::RedisConfig>,
    /// Order entry through API nodes over Redis Streams (`[cluster]`); absent = single node.
    #[serde(default)]
    pub cluster: Option<cluster::ClusterConfig>,
    /// The readiness rule (`[health]`); absent keys take the documented defaults.
    #[serde(default)]
    pub health: health::HealthConfig,
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the HTTP/WebSocket server binds, e.g. "127.0.0.1:8080".
    pub listen: String,
    /// Trade/bar messages kept per channel, shared by every connection reading it; a
    /// connection further behind skips the oldest and is told how many (`missed`).
    pub ws_queue_capacity: usize,
    /// Per-connection bound on queued private (orders, fills, positions) messages. They
    /// are never dropped: a client that falls this far behind is disconnected (close code
    /// 4008) and resyncs over REST.
    pub ws_private_queue_capacity: usize,
    /// Seconds between server heartbeats on a WebSocket.
    pub ws_heartbeat_secs: u64,
    /// A WebSocket that sends nothing (not even a pong) for this long is closed.
    pub ws_idle_timeout_secs: u64,
    /// Each batch of WebSocket writes must reach the kernel within this long; a client
    /// that does not read is closed (code 4009) instead of pinning the session.
    pub ws_write_timeout_ms: u64,
    /// Market-data writes per second across all WebSockets (issue 19): each
    /// connection writes its public channels at most every `connections / this`
    /// seconds (10 connections: every 0.1 ms; 1,000: every 10 ms), and at least every
    /// `ws_max_flush_interval_ms`; quotes and books conflate in between, trades queue.
    #[serde(default = "default_ws_flushes_per_sec")]
    pub ws_flushes_per_sec: u64,
    /// The longest a connection waits between market-data writes, however many
    /// connections there are.
    #[serde(default = "default_ws_max_flush_interval_ms")]
    pub ws_max_flush_interval_ms: u64,
    /// Trades and bars that waited longer than this for a connection to get to them
    /// are skipped and reported in the next message's `missed`: a reader that fell
    /// behind gets the present, not a backlog.
    #[serde(default = "default_ws_max_queue_lag_ms")]
    pub ws_max_queue_lag_ms: u64,
    /// A connection whose client answers a ping (sent with a market-data write, at
    /// most every 50 ms) this much later than its fastest answer of the last 10 s
    /// (its round trip) is behind in reading: it gets the latest quotes and books,
    /// not queued trades, until it answers in time. 0: no probes.
    #[serde(default = "default_ws_max_client_lag_ms")]
    pub ws_max_client_lag_ms: u64,
    /// Kernel send buffer of each WebSocket (SO_SNDBUF; the kernel doubles it). Small
    /// keeps a slow reader's backlog in the server, where it conflates and is counted,
    /// not in the kernel as seconds of queued data. 0: the kernel's own autotuning.
    #[serde(default = "default_ws_send_buffer_bytes")]
    pub ws_send_buffer_bytes: usize,
    /// Price levels per side in `book.SYM` messages.
    pub ws_book_depth: usize,
    /// Most channels one connection may subscribe to.
    pub ws_max_subscriptions: usize,
    /// Recent trades kept per instrument for snapshots and REST (the WebSocket
    /// snapshot's list is re-shared per fan-out batch with trades: keep it modest).
    pub trades_history: usize,
    /// Closed bars kept per instrument and interval.
    pub bars_history: usize,
    /// A request that takes longer is answered 408 REQUEST_TIMEOUT.
    pub request_timeout_ms: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Idle strategy of the thread that drains the engine's output ring.
    #[serde(default)]
    pub fanout_idle: IdleConfig,
    /// "development" or "production": production refuses HS256 tokens, development
    /// key files and a CORS wildcard.
    pub environment: Environment,
    /// Browser origins allowed to call the API cross-origin ("https://desk.example.com");
    /// others get no CORS headers. "*" only in development.
    pub cors_allowed_origins: Vec<String>,
    /// Send `Strict-Transport-Security` (set when the API is reached over TLS, e.g.
    /// behind a TLS-terminating proxy).
    pub hsts: bool,
    /// Connection-level limits (`[api.connections]`).
    pub connections: connections::ConnectionsConfig,
    /// Native TLS (`[api.tls]`); absent = plain HTTP.
    #[serde(default)]
    pub tls: Option<connections::TlsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: "info", "warn,stocksblitz_api=debug", ...
    pub level: String,
    pub format: LogFormat,
}

/// Where the TOML text came from, for error messages.
#[derive(Debug, Clone)]
pub enum Source {
    Embedded,
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Embedded => f.write_str("embedded configs/default.toml"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Reads `path`, or the embedded default when `None`.
pub fn read_source(path: Option<&Path>) -> Result<(Source, String), ConfigError> {
    match path {
        None => Ok((Source::Embedded, DEFAULT_TOML.to_owned())),
        Some(p) => std::fs::read_to_string(p)
            .map(|text| (Source::File(p.to_owned()), text))
            .map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            }),
    }
}

/// Parses `text`, applies overrides from `env`, deserializes and validates.
pub fn load(
    source: &Source,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Validated, ConfigError> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        source_name: source.to_string(),
        message: e.to_string(),
    })?;
    let applied = overrides::apply(&mut doc, env)?;
    let config: Config = serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
        let key = e.path().to_string();
        let origin = overrides::origin_of(&applied, &key);
        ConfigError::Invalid {
            key: if key == "." { "(top level)".into() } else { key },
            message: e.into_inner().message().to_owned(),
            origin,
        }
    })?;
    validate::validate(config).map_err(|e| match e {
        ConfigError::Invalid { key, message, .. } => {
            let origin = overrides::origin_of(&applied, &key);
            ConfigError::Invalid { key, message, origin }
        }
        other => other,
    })
}

impl Config {
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.api
            .listen
            .parse()
            .map_err(|_| ConfigError::invalid("api.listen", format!("{:?} is not an IP:port address", self.api.listen)))
    }

    /// Builds the instrument registry (also checked by validation).
    pub fn registry(&self) -> Result<InstrumentRegistry, ConfigError> {
        InstrumentRegistry::from_config(&self.instruments).map_err(|e| ConfigError::invalid(e.key, e.message))
    }
}

fn default_ws_flushes_per_sec() -> u64 {
    100_000
}

fn default_ws_max_client_lag_ms() -> u64 {
    25
}

fn default_ws_max_flush_interval_ms() -> u64 {
    50
}

fn default_ws_max_queue_lag_ms() -> u64 {
    250
}

fn default_ws_send_buffer_bytes() -> usize {
    32 * 1024
}
