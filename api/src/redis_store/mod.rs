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
//!
//! `GET /health/redis` is unauthenticated, so its work is bounded: one round trip
//! (`PING`, `DBSIZE`, `INFO`: constant work on the server, never a keyspace scan),
//! and its report is cached for [`HEALTH_CACHE`] and computed by one caller at a time,
//! so no request rate turns into a command rate against Redis.

pub mod idempotency;
pub mod publisher;
pub mod runtime;
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
    /// Round trips (commands, pipelines, scripts), failed ones included.
    pub commands: Counter,
    /// Total and worst nanoseconds spent waiting for round trips.
    pub round_trip_ns_total: Counter,
    pub round_trip_ns_max: Counter,
    /// `/health/redis` reports computed (the others were served from the cache).
    pub health_checks: Counter,
    last_error: Mutex<Option<String>>,
}

impl RedisStats {
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// How long a `/health/redis` report is served without asking Redis again (unless
/// the connection state changed since).
pub const HEALTH_CACHE: Duration = Duration::from_secs(2);

/// The last `/health/redis` report.
struct CachedHealth {
    at: Instant,
    /// The connection state it saw (a change invalidates it).
    connected: bool,
    report: serde_json::Value,
}

pub struct RedisStore {
    pub setup: RedisSetup,
    client: Client,
    conn: ConnectionManager,
    pub stats: RedisStats,
    /// Held while a report is computed: concurrent callers wait for it and share it.
    health: tokio::sync::Mutex<Option<CachedHealth>>,
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
            health: tokio::sync::Mutex::new(None),
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
        let started = Instant::now();
        let r = match tokio::time::timeout(timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisDown(e.to_string())),
            Err(_) => Err(RedisDown(format!("no answer within {} ms", self.setup.timeout_ms))),
        };
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.commands.inc();
        self.stats.round_trip_ns_total.add(ns);
        if ns > self.stats.round_trip_ns_max.get() {
            self.stats.round_trip_ns_max.set(ns);
        }
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

    /// `GET /health/redis`: connectivity, round-trip latency, memory and key counts,
    /// from one round trip of constant work (`PING`, `DBSIZE`, `INFO`), served from a
    /// cache for [`HEALTH_CACHE`] unless the connection state changed since. One
    /// caller computes it at a time; the others wait and share its answer.
    pub async fn health(&self) -> serde_json::Value {
        let mut cached = self.health.lock().await;
        let connected = self.stats.connected.get() == 1;
        if let Some(c) = cached.as_ref() {
            let age = c.at.elapsed();
            if age < HEALTH_CACHE && c.connected == connected {
                let mut report = c.report.clone();
                report["cached_ms"] = json!(age.as_millis() as u64);
                return report;
            }
        }
        let report = self.check().await;
        *cached = Some(CachedHealth {
            at: Instant::now(),
            connected: self.stats.connected.get() == 1,
            report: report.clone(),
        });
        report
    }

    async fn check(&self) -> serde_json::Value {
        self.stats.health_checks.inc();
        let started = Instant::now();
        let mut conn = self.conn.clone();
        let pipe = redis::pipe().cmd("PING").cmd("DBSIZE").cmd("INFO").to_owned();
        let answer = self.timed(pipe.query_async::<(String, u64, String)>(&mut conn)).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let (_, dbsize, info) = match answer {
            Ok(a) => a,
            Err(e) => return json!({ "status": "down", "error": e.0, "url": self.setup.url }),
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|l| l.strip_prefix(':')))
                .map(|v| v.trim().to_owned())
        };
        let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
        // `db0:keys=12,expires=10,avg_ttl=3400` for the selected database.
        let db = self.setup_db();
        let keyspace = field(&format!("db{db}"));
        let of_db = |key: &str| {
            keyspace.as_deref().and_then(|k| {
                k.split(',')
                    .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                    .and_then(|v| v.parse::<u64>().ok())
            })
        };
        json!({
            "status": "ok",
            "url": self.setup.url,
            "latency_ms": latency_ms,
            "redis_version": field("redis_version"),
            "uptime_secs": number("uptime_in_seconds"),
            "connected_clients": number("connected_clients"),
            "used_memory_bytes": number("used_memory"),
            "used_memory_human": field("used_memory_human"),
            "maxmemory_bytes": number("maxmemory"),
            "maxmemory_policy": field("maxmemory_policy"),
            "keys": {
                "db": db,
                "total": dbsize,
                "with_expiry": of_db("expires").unwrap_or(0),
            },
            "evicted_keys": number("evicted_keys"),
            "rejected_connections": number("rejected_connections"),
            "errors": self.stats.errors.get(),
            "commands": self.stats.commands.get(),
            "published": self.stats.published.get(),
            "quotes_written": self.stats.quotes_written.get(),
            "cached_ms": 0,
        })
    }

    /// The database number the URL selects (0 by default).
    fn setup_db(&self) -> i64 {
        self.client.get_connection_info().redis_settings().db()
    }
}

/// An async connection config with the store's timeout (pub/sub connections).
pub fn async_config(setup: &RedisSetup) -> AsyncConnectionConfig {
    let timeout = Duration::from_millis(setup.timeout_ms);
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
}
