//! `[questdb]`: the time-series sink (trades, quotes, bars, order events, fills). Absent:
//! nothing is exported. Validated into [`QuestDbSetup`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use stocksblitz_engine::idle::IdleConfig;

use super::error::range;
use super::error::ConfigError;

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
    /// Optional: slots of the engine's ring to the sink (trades, quotes and closed bars
    /// only): how much the sink's tap thread may fall behind, starved of CPU, before
    /// the engine, which never waits, counts rows it could not hand over. Default
    /// [`DEFAULT_RING_CAPACITY`].
    #[serde(default = "default_ring_capacity")]
    pub ring_capacity: usize,
    /// Where spilled rows wait (drained in order when QuestDB is back).
    pub spill_dir: PathBuf,
    /// Retry back-off after a failed send: first wait, and the cap it doubles up to.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// One send may take this long before it counts as failed.
    pub request_timeout_ms: u64,
    /// Also export order events and fills (read from the order journal).
    pub orders: bool,
    /// HTTP basic auth: the user, with the password in the environment variable named
    /// by `password_env` (or `<VAR>_FILE`). Optional.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// HTTP bearer token auth: the environment variable holding the token (or
    /// `<VAR>_FILE`). Optional; not together with `username`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// `[questdb.idle]`: what the tap and sender threads do when they find nothing to
    /// do (same keys as `[engine.idle]`). Default: sleep 1 ms at a time.
    #[serde(default = "default_idle")]
    pub idle: IdleConfig,
}

/// How the sink authenticates (secrets are read from the environment at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IlpAuth {
    None,
    Basic { username: String, password_env: String },
    Token { token_env: String },
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
    pub ring_capacity: usize,
    pub spill_dir: PathBuf,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub request_timeout: Duration,
    pub orders: bool,
    pub auth: IlpAuth,
    /// The tap and sender threads' idle strategy.
    pub idle: IdleConfig,
}

/// `[questdb.idle]` when absent: the sink's threads are off the hot path and mostly
/// idle; they sleep 1 ms at a time.
pub const DEFAULT_IDLE: IdleConfig = IdleConfig::parked(1_000, 1_000);

fn default_idle() -> IdleConfig {
    DEFAULT_IDLE
}

/// `questdb.ring_capacity` when absent: at 20,000 stored rows a second, three seconds
/// of a starved tap thread.
pub const DEFAULT_RING_CAPACITY: usize = 65_536;

fn default_ring_capacity() -> usize {
    DEFAULT_RING_CAPACITY
}

/// A value in a questdb-rs configuration string (`;` is doubled).
fn conf_value(v: &str) -> String {
    v.replace(';', ";;")
}

impl QuestDbSetup {
    /// The questdb-rs configuration string: no client-side retries (the sink retries
    /// and spills itself) and the protocol version pinned.
    /// With credentials resolved from the environment (`secret`: the password or the
    /// token, as `auth` says).
    pub fn conf_with(&self, secret: Option<&str>) -> String {
        let mut conf = self.conf();
        match (&self.auth, secret) {
            (IlpAuth::Basic { username, .. }, Some(p)) => {
                conf.push_str(&format!(
                    "username={};password={};",
                    conf_value(username),
                    conf_value(p)
                ));
            }
            (IlpAuth::Token { .. }, Some(t)) => conf.push_str(&format!("token={};", conf_value(t))),
            _ => {}
        }
        conf
    }

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
    if let Err((k, m)) = c.idle.validate() {
        return Err(ConfigError::invalid(format!("questdb.idle.{k}"), m));
    }
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
    range("questdb.ring_capacity", c.ring_capacity as u64, 1_024, 16_777_216)?;
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
    let env_name = |key: &str, v: &str| {
        let ok = !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(())
        } else {
            Err(ConfigError::invalid(key, "an environment variable name: A-Z, 0-9, '_'"))
        }
    };
    let auth = match (&c.username, &c.password_env, &c.token_env) {
        (None, None, None) => IlpAuth::None,
        (Some(u), Some(p), None) if !u.is_empty() => {
            env_name("questdb.password_env", p)?;
            IlpAuth::Basic {
                username: u.clone(),
                password_env: p.clone(),
            }
        }
        (None, None, Some(t)) => {
            env_name("questdb.token_env", t)?;
            IlpAuth::Token { token_env: t.clone() }
        }
        (_, _, Some(_)) => {
            return Err(ConfigError::invalid(
                "questdb.token_env",
                "use either a token or username + password_env, not both",
            ))
        }
        _ => {
            return Err(ConfigError::invalid(
                "questdb.password_env",
                "basic auth needs both username and password_env",
            ))
        }
    };
    if auth != IlpAuth::None && transport != IlpTransport::Http {
        return Err(ConfigError::invalid(
            "questdb.url",
            "username/password or token authentication needs an http:// url",
        ));
    }
    Ok(QuestDbSetup {
        auth,
        transport,
        addr: addr.to_owned(),
        protocol_version: c.protocol_version,
        create_tables: c.create_tables,
        batch_rows: c.batch_rows,
        flush_interval: Duration::from_millis(c.flush_interval_ms),
        memory_rows: c.memory_rows,
        ring_capacity: c.ring_capacity,
        spill_dir: c.spill_dir.clone(),
        retry_initial: Duration::from_millis(c.retry_initial_ms),
        retry_max: Duration::from_millis(c.retry_max_ms),
        request_timeout: Duration::from_millis(c.request_timeout_ms),
        orders: c.orders,
        idle: c.idle,
    })
}
