//! `[questdb]`: the time-series sink (trades, quotes, bars, order events, fills). Absent:
//! nothing is exported. Validated into [`QuestDbSetup`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::validate::range;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestDbConfig {
    /// ILP endpoint: `http://host:port` (ILP over HTTP, QuestDB's 9000) or
    /// `tcp://host:port` (QuestDB's 9009).
    pub url: String,
    /// ILP protocol version: 1 (text, any ILP server) or 2 (binary doubles, QuestDB 8.3+).
    pub protocol_version: u8,
    /// Create the tables (designated timestamps, DEDUP UPSERT KEYS) at start-up over
    /// the HTTP SQL endpoint. QuestDB only; needs an `http://` url.
    pub create_tables: bool,
    /// A batch is sent once it has this many rows...
    pub batch_rows: usize,
    /// ...or its oldest row is this old.
    pub flush_interval_ms: u64,
    /// Rows held in memory while QuestDB is slow or down; past this they spill to files.
    pub memory_rows: usize,
    /// Where spilled rows wait (drained in order when QuestDB is back).
    pub spill_dir: PathBuf,
    /// Retry back-off after a failed send: first wait, and the cap it doubles up to.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// One send may take this long before it counts as failed.
    pub request_timeout_ms: u64,
    /// Also export order events and fills (read from the order journal).
    pub orders: bool,
}

/// How rows reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IlpTransport {
    Http,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct QuestDbSetup {
    pub transport: IlpTransport,
    /// `host:port`.
    pub addr: String,
    pub protocol_version: u8,
    pub create_tables: bool,
    pub batch_rows: usize,
    pub flush_interval: Duration,
    pub memory_rows: usize,
    pub spill_dir: PathBuf,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub request_timeout: Duration,
    pub orders: bool,
}

impl QuestDbSetup {
    /// The questdb-rs configuration string: no client-side retries (the sink retries
    /// and spills itself) and the protocol version pinned.
    pub fn conf(&self) -> String {
        let scheme = match self.transport {
            IlpTransport::Http => "http",
            IlpTransport::Tcp => "tcp",
        };
        let mut conf = format!(
            "{scheme}::addr={};protocol_version={};",
            self.addr, self.protocol_version
        );
        if self.transport == IlpTransport::Http {
            conf.push_str(&format!(
                "retry_timeout=0;request_timeout={};",
                self.request_timeout.as_millis()
            ));
        }
        conf
    }
}

pub fn setup(c: &QuestDbConfig, orders_configured: bool) -> Result<QuestDbSetup, ConfigError> {
    let (transport, addr) = match c.url.split_once("://") {
        Some(("http", a)) => (IlpTransport::Http, a),
        Some(("tcp", a)) => (IlpTransport::Tcp, a),
        _ => {
            return Err(ConfigError::invalid(
                "questdb.url",
                format!("{:?}: use http://host:port (ILP over HTTP) or tcp://host:port", c.url),
            ))
        }
    };
    let addr = addr.trim_end_matches('/');
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok || addr.contains('/') {
        return Err(ConfigError::invalid(
            "questdb.url",
            format!("{:?}: expected scheme://host:port", c.url),
        ));
    }
    if !(1..=2).contains(&c.protocol_version) {
        return Err(ConfigError::invalid("questdb.protocol_version", "must be 1 or 2"));
    }
    if c.create_tables && transport != IlpTransport::Http {
        return Err(ConfigError::invalid(
            "questdb.create_tables",
            "needs an http:// url (tables are created over QuestDB's HTTP SQL endpoint)",
        ));
    }
    range("questdb.batch_rows", c.batch_rows as u64, 1, 1_000_000)?;
    range("questdb.flush_interval_ms", c.flush_interval_ms, 1, 60_000)?;
    range(
        "questdb.memory_rows",
        c.memory_rows as u64,
        c.batch_rows as u64,
        100_000_000,
    )?;
    range("questdb.retry_initial_ms", c.retry_initial_ms, 1, 60_000)?;
    range("questdb.retry_max_ms", c.retry_max_ms, c.retry_initial_ms, 600_000)?;
    range("questdb.request_timeout_ms", c.request_timeout_ms, 100, 600_000)?;
    if c.spill_dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid("questdb.spill_dir", "must not be empty"));
    }
    if c.orders && !orders_configured {
        return Err(ConfigError::invalid(
            "questdb.orders",
            "exports order events from the order journal: it needs [orders]",
        ));
    }
    Ok(QuestDbSetup {
        transport,
        addr: addr.to_owned(),
        protocol_version: c.protocol_version,
        create_tables: c.create_tables,
        batch_rows: c.batch_rows,
        flush_interval: Duration::from_millis(c.flush_interval_ms),
        memory_rows: c.memory_rows,
        spill_dir: c.spill_dir.clone(),
        retry_initial: Duration::from_millis(c.retry_initial_ms),
        retry_max: Duration::from_millis(c.retry_max_ms),
        request_timeout: Duration::from_millis(c.request_timeout_ms),
        orders: c.orders,
    })
}
