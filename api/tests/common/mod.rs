//! Starts a real server (engine, synthetic feed, API) on a free loopback port.

#![allow(dead_code)]

pub mod ilp;
pub mod process;
pub mod redis_server;
pub mod rng;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use stocksblitz_api::app::{start_on, RunningApp};
use stocksblitz_api::config::{self, Source, DEFAULT_TOML};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The embedded default, unpinned (tests share cores), with `edit` applied.
pub fn test_config(edit: impl FnOnce(&mut toml::Table)) -> String {
    let mut doc: toml::Table = toml::from_str(DEFAULT_TOML).expect("default parses");
    doc["engine"].as_table_mut().expect("engine").remove("core");
    for f in doc["feeds"].as_array_mut().expect("feeds") {
        f.as_table_mut().expect("feed").remove("core");
    }
    // The simulator takes a free port; the feeds find it through {simulator}.
    doc["simulator"]["listen"] = toml::Value::String("127.0.0.1:0".into());
    // A development token key of this test's own, never the working directory's.
    let key = key_path();
    doc["auth"]["dev_key_file"] = toml::Value::String(key.display().to_string());
    // A journal of this server's own (two servers never share one).
    doc["orders"]["journal"]["dir"] = toml::Value::String(fresh_dir("journal").display().to_string());
    // An audit log of its own.
    doc["audit"]["path"] = toml::Value::String(fresh_dir("audit").join("audit.log").display().to_string());
    // Tests call far faster than people: limits only where a test sets them.
    for tier in [
        "anonymous_per_min",
        "authenticated_per_min",
        "premium_per_min",
        "auth_failures_per_min",
    ] {
        doc["rate_limits"][tier] = toml::Value::Integer(1_000_000);
    }
    // Surveillance would act on the accounts other tests trade with: only the tests
    // that are about it turn it on (with `surveillance_section`).
    doc.remove("surveillance");
    edit(&mut doc);
    toml::to_string(&doc).expect("serializes")
}

/// The embedded default's `[surveillance]` section.
pub fn surveillance_section() -> toml::Value {
    let doc: toml::Table = toml::from_str(DEFAULT_TOML).expect("default parses");
    doc["surveillance"].clone()
}

/// A new directory path under this process's temporary test directory.
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    key_path()
        .parent()
        .expect("key path has a parent")
        .join(format!("{name}-{n}"))
}

/// A fresh temporary path for this process's development token key.
pub fn key_path() -> std::path::PathBuf {
    static KEY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "stocksblitz-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        dir.join("jwt-dev.key")
    })
    .clone()
}

/// The test server's development key.
pub fn test_secret() -> Vec<u8> {
    stocksblitz_api::auth::key::load("SBZ_TEST_UNSET_SECRET", Some(&key_path())).expect("key")
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A token for `account` with `role`, signed with the test server's key.
pub fn token(account: &str, role: &str) -> String {
    use stocksblitz_api::auth::Role;
    token_with(
        account,
        Role::parse(role).expect("role"),
        stocksblitz_api::auth::Tier::Standard,
        now_secs(),
    )
}

/// A token with a tier, issued at `iat` (an hour's life), signed with the test key.
pub fn token_with(
    account: &str,
    role: stocksblitz_api::auth::Role,
    tier: stocksblitz_api::auth::Tier,
    iat: u64,
) -> String {
    stocksblitz_api::auth::Tokens::new(&test_secret(), "stocksblitz", "stocksblitz-api", 30)
        .mint(account, role, tier, iat, 3_600)
        .expect("mint")
}

/// A `[redis]` section for a test server on `url`.
pub fn redis_section(url: &str) -> toml::Value {
    toml::Value::Table(
        toml::from_str(&format!(
            r#"
            url = "{url}"
            quote_ttl_secs = 30
            quote_interval_ms = 50
            idempotency_ttl_secs = 3600
            channel = "sbz:md"
            timeout_ms = 500
            "#
        ))
        .expect("toml"),
    )
}

/// Adds an `[[auth.services]]` entry whose secret is in `secret_env`.
pub fn add_service(d: &mut toml::Table, name: &str, secret_env: &str, account: &str, operations: &[&str]) {
    let svc: toml::Table = toml::from_str(&format!(
        r#"
        name = "{name}"
        key_id = "{name}-k1"
        secret_env = "{secret_env}"
        account = "{account}"
        operations = {operations:?}
        "#
    ))
    .expect("toml");
    let auth = d["auth"].as_table_mut().expect("auth");
    let list = auth.entry("services").or_insert_with(|| toml::Value::Array(Vec::new()));
    list.as_array_mut().expect("array").push(toml::Value::Table(svc));
}

pub async fn start_with(text: &str) -> RunningApp {
    let v = config::load(&Source::Embedded, text, Vec::new()).expect("test config is valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_on(v, listener).await.expect("server starts")
}

pub async fn start() -> RunningApp {
    start_with(&test_config(|_| {})).await
}

/// The server's `/metrics` text.
pub async fn metrics(app: &RunningApp) -> String {
    reqwest::get(http(app, "/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of an unlabelled-or-labelled sample line starting with `prefix`.
pub fn sample(metrics: &str, prefix: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

pub fn http(app: &RunningApp, path: &str) -> String {
    format!("http://{}{}", app.addr, path)
}

pub async fn ws_connect(app: &RunningApp) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/api/v1/stream", app.addr))
        .await
        .expect("websocket connects");
    ws
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.expect("send");
}

/// Next JSON text message, skipping heartbeats and control frames; None on timeout/close.
pub async fn recv(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match msg.ok()? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
                if v["type"] != "heartbeat" {
                    return Some(v);
                }
            }
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Waits until `pred` holds for a message; returns it.
pub async fn recv_until(ws: &mut Ws, wait: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = recv(ws, left).await?;
        if pred(&v) {
            return Some(v);
        }
    }
}

/// Polls until the instrument's quote is LIVE (the feed has started).
pub async fn wait_live(app: &RunningApp, symbol: &str) {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(http(app, &format!("/api/v1/quotes/{symbol}"))).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if v["quality"] == "LIVE" && v["bid"].is_string() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{symbol} never became LIVE");
}

/// An authenticated REST client for one account.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Client {
    pub fn new(app: &RunningApp, account: &str, role: &str) -> Self {
        Self::at(format!("http://{}/api/v1", app.addr), account, role)
    }

    /// A client of the server whose API is at `base` (`http://host:port/api/v1`).
    pub fn at(base: String, account: &str, role: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
            token: token(account, role),
        }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.try_call(method, path, body).await.expect("request")
    }

    /// POST /orders, with an `Idempotency-Key` when given.
    pub async fn post_keyed(&self, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}/orders", self.base))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Like `call`, but a connection failure is `None` (the server may be gone).
    pub async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.ok()?;
        let status = r.status();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        // A connection of its own: the server may close it after refusing the body
        // unread (413), and a pooled connection would then fail the next request.
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A WebSocket to `app`'s stream, authenticated as `account` (trader) at the upgrade.
pub async fn ws_as(app: &RunningApp, account: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/v1/stream", app.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(account, "trader")).parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .expect("authenticated upgrade")
        .0
}

/// Lifts the default accounts' order and cancel rates and open-order count out of the
/// way of tests that load the order path.
pub fn lift_order_limits(d: &mut toml::Table) {
    let limits = d["orders"]["default_limits"].as_table_mut().expect("limits");
    for (k, v) in [
        ("orders_per_sec", 100_000),
        ("cancels_per_sec", 100_000),
        ("max_open_orders", 100_000),
    ] {
        limits.insert(k.into(), toml::Value::Integer(v));
    }
}

/// Adds SBY, a second instrument on the internal venue (a copy of SBZ), so two engines
/// of a cluster each have a book of their own that needs no feed.
pub fn add_sby(doc: &mut toml::Table) {
    let list = doc["instruments"].as_array_mut().expect("instruments");
    let mut sby = list
        .iter()
        .find(|i| i["symbol"].as_str() == Some("SBZ"))
        .cloned()
        .expect("SBZ");
    sby["symbol"] = "SBY".into();
    sby["venue_symbol"] = "SBY".into();
    list.push(sby);
    doc["orders"]["venues"]
        .as_table_mut()
        .expect("venues")
        .insert("SBY".into(), "internal".into());
}
