//! `[redis]`: idempotency keys shared by API nodes, last quotes, and market data
//! published for API nodes on other machines. Absent: none of that (idempotency keys
//! stay in process, backed by the order journal).

use serde::Deserialize;
use stocksblitz_engine::idle::IdleConfig;

use super::error::range;
use super::error::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`, without a password.
    pub url: String,
    /// Environment variable holding the password (or `<VAR>_FILE`, a path to it);
    /// absent: no AUTH.
    #[serde(default)]
    pub password_env: Option<String>,
    /// `quote:{SYM}` keys expire this long after the instrument's last quote.
    pub quote_ttl_secs: u64,
    /// At most one `quote:{SYM}` write per symbol per this many milliseconds (the
    /// latest quote wins).
    pub quote_interval_ms: u64,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl_secs: u64,
    /// Publish every market data event on this channel (API nodes on other machines
    /// subscribe: `stocksblitz serve --role api`).
    pub channel: String,
    /// A command to Redis that takes longer than this counts as failed.
    pub timeout_ms: u64,
    /// `[redis.idle]`: what the publisher does when its tap ring is empty (same keys
    /// as `[engine.idle]`). Default: sleep 1 ms at a time.
    #[serde(default = "default_idle")]
    pub idle: IdleConfig,
}

/// `[redis.idle]` when absent: the publisher is off the hot path; it sleeps 1 ms at
/// a time when its ring is empty.
pub const DEFAULT_IDLE: IdleConfig = IdleConfig::parked(1_000, 1_000);

fn default_idle() -> IdleConfig {
    DEFAULT_IDLE
}

#[derive(Debug, Clone)]
pub struct RedisSetup {
    pub url: String,
    pub password_env: Option<String>,
    pub quote_ttl_secs: u64,
    pub quote_interval_ms: u64,
    pub idempotency_ttl_secs: u64,
    pub channel: String,
    pub timeout_ms: u64,
    /// The publisher's idle strategy.
    pub idle: IdleConfig,
}

pub fn setup(c: &RedisConfig) -> Result<RedisSetup, ConfigError> {
    let rest = c
        .url
        .strip_prefix("redis://")
        .ok_or_else(|| ConfigError::invalid("redis.url", format!("{:?}: use redis://host:port/db", c.url)))?;
    if rest.contains('@') {
        return Err(ConfigError::invalid(
            "redis.url",
            "must not carry credentials: put the password in the variable named by redis.password_env",
        ));
    }
    let host_port = rest.split('/').next().unwrap_or("");
    if !host_port
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return Err(ConfigError::invalid(
            "redis.url",
            format!("{:?}: expected redis://host:port/db", c.url),
        ));
    }
    if let Some(v) = &c.password_env {
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ConfigError::invalid(
                "redis.password_env",
                "an environment variable name: A-Z, 0-9, '_'",
            ));
        }
    }
    range("redis.quote_ttl_secs", c.quote_ttl_secs, 1, 86_400 * 30)?;
    range("redis.quote_interval_ms", c.quote_interval_ms, 1, 60_000)?;
    range("redis.idempotency_ttl_secs", c.idempotency_ttl_secs, 60, 86_400 * 7)?;
    range("redis.timeout_ms", c.timeout_ms, 10, 60_000)?;
    if let Err((k, m)) = c.idle.validate() {
        return Err(ConfigError::invalid(format!("redis.idle.{k}"), m));
    }
    if c.channel.is_empty() || c.channel.len() > 128 {
        return Err(ConfigError::invalid("redis.channel", "1 to 128 characters"));
    }
    Ok(RedisSetup {
        url: c.url.clone(),
        password_env: c.password_env.clone(),
        quote_ttl_secs: c.quote_ttl_secs,
        quote_interval_ms: c.quote_interval_ms,
        idempotency_ttl_secs: c.idempotency_ttl_secs,
        channel: c.channel.clone(),
        timeout_ms: c.timeout_ms,
        idle: c.idle,
    })
}
