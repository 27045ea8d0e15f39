//! Redis in the API process (SPEC section 5): idempotency keys shared by API nodes,
//! the last quote per symbol, and market data published for API nodes on other
//! machines. Optional and explicit: with no `[redis]` none of it runs (idempotency
//! keys then live in process, backed by the order journal).
//!
//! Configured but unreachable at start-up: start-up stops with the reason. Lost later:
//! `/health` turns degraded, the connection manager reconnects with back-off, and
//! order entry with an `Idempotency-Key` is refused with a retryable error rather than
//! placed without the check.
//!
//! - [`idempotency`]: `SET NX` claims holding the original answer;
//! - [`publisher`]: market data out (pub/sub channel, `quote:{SYM}` keys);
//! - [`subscriber`]: market data in, for `stocksblitz serve --role api`.

pub mod idempotency;
pub mod publisher;
pub mod subscriber;

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use serde_json::json;
use stocksblitz_engine::counter::Counter;

use crate::config::redis::RedisSetup;

/// Why a Redis operation failed (the caller turns it into a retryable API error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisDown(pub String);

#[derive(Debug, Default)]
pub struct RedisStats {
    pub errors: Counter,
    /// 1 while the last command succeeded.
    pub connected: Counter,
    pub published: Counter,
    pub publish_errors: Counter,
    pub quotes_written: Counter,
    /// Market data batches an API node could not decode.
    pub decode_errors: Counter,
    last_error: Mutex<Option<String>>,
}

impl RedisStats {
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

pub struct RedisStore {
    pub setup: RedisSetup,
    client: Client,
    conn: ConnectionManager,
    pub stats: RedisStats,
}

/// A client for the configured server, with the password from the environment.
pub fn client(setup: &RedisSetup) -> anyhow::Result<Client> {
    let mut info = setup
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
    if let Some(var) = &setup.password_env {
        let password =
            crate::foundation::secrets::from_env(var).map_err(|e| anyhow::anyhow!("redis.password_env: {e}"))?;
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    Client::open(info).map_err(|e| anyhow::anyhow!("redis.url: {e}"))
}

impl RedisStore {
    /// Connects and checks the server answers; an error here stops start-up.
    pub async fn connect(setup: &RedisSetup) -> anyhow::Result<Self> {
        let client = client(setup)?;
        let timeout = Duration::from_millis(setup.timeout_ms);
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(timeout * 3, ConnectionManager::new_with_config(client.clone(), config))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "[redis] is configured but unreachable at start-up: {}: timed out",
                    setup.url
                )
            })?
            .map_err(|e| anyhow::anyhow!("[redis] is configured but unreachable at start-up: {}: {e}", setup.url))?;
        let store = Self {
            setup: setup.clone(),
            client,
            conn,
            stats: RedisStats::default(),
        };
        store.query::<String>(redis::cmd("PING")).await.map_err(|e| {
            anyhow::anyhow!(
                "[redis] is configured but unreachable at start-up: {}: {}",
                setup.url,
                e.0
            )
        })?;
        Ok(store)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Awaits one round trip with the configured timeout, keeping the health state current.
    async fn timed<T>(&self, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, RedisDown> {
        let timeout = Duration::from_millis(self.setup.timeout_ms);
        let r = match tokio::time::timeout(timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisDown(e.to_string())),
            Err(_) => Err(RedisDown(format!("no answer within {} ms", self.setup.timeout_ms))),
        };
        self.note(&r);
        r
    }

    /// Runs a command.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, RedisDown> {
        let mut conn = self.conn.clone();
        self.timed(cmd.query_async::<T>(&mut conn)).await
    }

    /// Runs a pipeline (one round trip).
    pub async fn pipeline(&self, pipe: &redis::Pipeline) -> Result<(), RedisDown> {
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// Runs a Lua script (by hash, loading it on first use).
    pub async fn invoke<T: redis::FromRedisValue>(&self, inv: &redis::ScriptInvocation<'_>) -> Result<T, RedisDown> {
        let mut conn = self.conn.clone();
        self.timed(inv.invoke_async::<T>(&mut conn)).await
    }

    fn note<T>(&self, r: &Result<T, RedisDown>) {
        match r {
            Ok(_) => {
                self.stats.connected.set(1);
            }
            Err(e) => {
                self.stats.errors.inc();
                if self.stats.connected.get() == 1 {
                    tracing::warn!(error = %e.0, "redis: command failed");
                }
                self.stats.connected.set(0);
                *self.stats.last_error.lock() = Some(e.0.clone());
            }
        }
    }

    /// `GET /health/redis`: connectivity, round-trip latency, memory and key counts
    /// by pattern (counted with SCAN, never KEYS).
    pub async fn health(&self) -> serde_json::Value {
        let started = Instant::now();
        let ping = self.query::<String>(redis::cmd("PING")).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        if let Err(e) = ping {
            return json!({ "status": "down", "error": e.0, "url": self.setup.url });
        }
        let info: String = self
            .query(redis::cmd("INFO").arg("memory").to_owned())
            .await
            .unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_owned())
        };
        let mut keys = serde_json::Map::new();
        for pattern in ["quote:*", "idem:*"] {
            keys.insert(pattern.to_owned(), json!(self.count_keys(pattern).await));
        }
        json!({
            "status": "ok",
            "url": self.setup.url,
            "latency_ms": latency_ms,
            "used_memory_bytes": field("used_memory").and_then(|v| v.parse::<u64>().ok()),
            "used_memory_human": field("used_memory_human"),
            "maxmemory_bytes": field("maxmemory").and_then(|v| v.parse::<u64>().ok()),
            "keys": keys,
            "errors": self.stats.errors.get(),
            "published": self.stats.published.get(),
            "quotes_written": self.stats.quotes_written.get(),
        })
    }

    /// Keys matching `pattern`, by SCAN (bounded work per call).
    async fn count_keys(&self, pattern: &str) -> Option<u64> {
        let mut cursor: u64 = 0;
        let mut n = 0;
        for _ in 0..10_000 {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .to_owned(),
                )
                .await
                .ok()?;
            n += batch.len() as u64;
            cursor = next;
            if cursor == 0 {
                return Some(n);
            }
        }
        None
    }
}

/// An async connection config with the store's timeout (pub/sub connections).
pub fn async_config(setup: &RedisSetup) -> AsyncConnectionConfig {
    let timeout = Duration::from_millis(setup.timeout_ms);
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
}
