//! Redis over real sockets (a redis-server per test): idempotency keys shared by two
//! engine nodes, keyed orders refused (retryably) while Redis is down and accepted
//! again after, last quotes in `quote:{SYM}`, `/health/redis` (bounded and cached: no
//! keyspace scan, whatever the request rate) and Redis in `/metrics`, an API node fed
//! market data through Redis, and a configured but unreachable Redis stopping start-up.

use crate::common;

use std::time::Duration;

use common::redis_server::RedisServer;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stocksblitz_api::app::{start_api_node, start_on};
use stocksblitz_api::config::{self, Source};
use tokio::net::TcpListener;

fn with_redis(url: &str) -> impl FnOnce(&mut toml::Table) + '_ {
    move |d| {
        d.insert("redis".into(), redis_section(url));
    }
}

fn order(price: &str) -> Value {
    json!({ "symbol": "SBZ", "side": "buy", "type": "limit", "price": price, "qty": "1" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_shared_and_a_redis_outage_refuses_keyed_orders() {
    let root = fresh_dir("redis-idem");
    let mut redis = RedisServer::start(&root);
    // Two engine nodes (each its own journal) sharing one Redis.
    let a = start_with(&test_config(with_redis(&redis.url()))).await;
    let b = start_with(&test_config(with_redis(&redis.url()))).await;
    let alice_a = Client::new(&a, "alice", "trader");
    let alice_b = Client::new(&b, "alice", "trader");

    let (s, first) = alice_a.post_keyed(Some("k-1"), &order("99.00")).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    // Another node, same key and body: the original answer, nothing placed there.
    let (s, again) = alice_b.post_keyed(Some("k-1"), &order("99.00")).await;
    assert_eq!((s, &again), (StatusCode::CREATED, &first));
    let (_, orders_b) = alice_b.get("/orders").await;
    assert_eq!(orders_b["orders"].as_array().map(Vec::len), Some(0), "{orders_b}");
    let (s, v) = alice_b.post_keyed(Some("k-1"), &order("98.00")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    // The key's record in Redis, with its expiry.
    let store = a.state.redis.clone().expect("redis");
    let ttl: i64 = store
        .query(redis::cmd("TTL").arg("idem:alice:k-1").to_owned())
        .await
        .expect("ttl");
    assert!((1..=3600).contains(&ttl), "ttl {ttl}");
    // A key still in flight (claimed, not answered) is a conflict.
    let claim = store
        .claim("alice", "k-2", b"{}", Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(matches!(claim, stocksblitz_api::orders::idempotency::Claim::Proceed));
    let (s, v) = alice_a.post_keyed(Some("k-2"), &json!({})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_KEY_IN_FLIGHT")),
        "{v}"
    );

    let health = reqwest::get(http(&a, "/health/redis")).await.expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    let h: Value = health.json().await.expect("json");
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["latency_ms"].as_f64().is_some_and(|l| l >= 0.0), "{h}");
    assert!(h["used_memory_bytes"].as_u64().is_some_and(|m| m > 0), "{h}");
    // Two idempotency keys (and the quote keys the publisher keeps writing), counted
    // by the server (DBSIZE).
    let all: Vec<String> = store
        .query(redis::cmd("KEYS").arg("idem:*").to_owned())
        .await
        .expect("keys");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(h["keys"]["total"].as_u64().is_some_and(|n| n >= 2), "{h}");

    // Redis goes away: keyed orders are refused (retryable), unkeyed ones still work,
    // and health says so.
    redis.stop();
    let (s, v) = alice_a.post_keyed(Some("k-3"), &order("97.00")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("IDEMPOTENCY_UNAVAILABLE")),
        "{v}"
    );
    let (s, v) = alice_a.post_keyed(None, &order("97.00")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let health = reqwest::get(http(&a, "/health/redis")).await.expect("health");
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let h: Value = reqwest::get(http(&a, "/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(h["stores"]["redis"]["status"], "degraded", "{h}");

    // Back: the same key goes through (nothing was placed the first time).
    redis.restart();
    let mut placed = None;
    for _ in 0..50 {
        let (s, v) = alice_a.post_keyed(Some("k-3"), &order("97.00")).await;
        if s == StatusCode::CREATED {
            placed = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(placed.is_some(), "keyed orders work again once Redis is back");
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
    drop(redis);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_land_in_redis_and_an_api_node_serves_the_same_market() {
    let root = fresh_dir("redis-md");
    let redis = RedisServer::start(&root);
    let cfg = test_config(with_redis(&redis.url()));
    let engine = start_with(&cfg).await;
    wait_live(&engine, "BTCUSDT").await;

    // quote:{SYM} with a TTL.
    let store = engine.state.redis.clone().expect("redis");
    let mut quote: Option<String> = None;
    for _ in 0..100 {
        quote = store
            .query(redis::cmd("GET").arg("quote:BTCUSDT").to_owned())
            .await
            .expect("get");
        if quote.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let q: Value = serde_json::from_str(&quote.expect("quote:BTCUSDT written")).expect("json");
    assert_eq!(q["symbol"], "BTCUSDT");
    assert!(q["bid"].is_string() && q["ask"].is_string(), "{q}");
    let ttl: i64 = store
        .query(redis::cmd("TTL").arg("quote:BTCUSDT").to_owned())
        .await
        .expect("ttl");
    assert!((1..=30).contains(&ttl), "ttl {ttl}");

    // An API node with no engine of its own serves the engine node's market.
    let v = config::load(&Source::Embedded, &cfg, Vec::new()).expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = start_api_node(v, listener).await.expect("api node starts");
    wait_live(&api, "BTCUSDT").await;
    let book: Value = reqwest::get(http(&api, "/api/v1/book/BTCUSDT?depth=5"))
        .await
        .expect("book")
        .json()
        .await
        .expect("json");
    assert!(
        book["bids"].as_array().is_some_and(|b| !b.is_empty()),
        "the books arrived (snapshot on join): {book}"
    );
    let ready = reqwest::get(http(&api, "/health/ready")).await.expect("ready");
    assert_eq!(ready.status(), StatusCode::OK);
    // Order entry stays on the engine node.
    let alice = Client::new(&api, "alice", "trader");
    let (s, v) = alice.post("/orders", order("99.00")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("ORDER_ENTRY_DISABLED"))
    );
    let h: Value = reqwest::get(http(&engine, "/health/redis"))
        .await
        .expect("h")
        .json()
        .await
        .expect("json");
    assert!(h["keys"]["total"].as_u64().is_some_and(|n| n >= 1), "{h}");
    api.shutdown().await.expect("shutdown");
    engine.shutdown().await.expect("shutdown");
    drop(redis);
    let _ = std::fs::remove_dir_all(root);
}

/// `INFO commandstats` calls of `cmd` (0 when never called).
async fn calls(store: &stocksblitz_api::redis_store::RedisStore, cmd: &str) -> u64 {
    let info: String = store
        .query(redis::cmd("INFO").arg("commandstats").to_owned())
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `/health/redis` is unauthenticated: however many keys Redis holds and however often
/// it is asked, it never scans the keyspace, and requests share one cached report, so
/// the commands it sends Redis are bounded by the cache, not by the request rate. The
/// counts are the server's. Redis metrics are in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_redis_is_bounded_cached_and_redis_is_in_metrics() {
    let root = fresh_dir("redis-health");
    let redis = RedisServer::start(&root);
    let app = start_with(&test_config(with_redis(&redis.url()))).await;
    let store = app.state.redis.clone().expect("redis");
    // Many keys, some with an expiry.
    for chunk in 0..20u32 {
        let mut pipe = redis::pipe();
        for i in 0..1_000u32 {
            let key = format!("filler:{chunk}:{i}");
            if i % 4 == 0 {
                pipe.cmd("SET").arg(&key).arg("x").arg("EX").arg(600).ignore();
            } else {
                pipe.cmd("SET").arg(&key).arg("x").ignore();
            }
        }
        store.pipeline(&pipe).await.expect("fill");
    }
    let _: () = store
        .query(redis::cmd("CONFIG").arg("RESETSTAT").to_owned())
        .await
        .expect("resetstat");

    let mut cached = 0;
    let mut reports = Vec::new();
    for _ in 0..40 {
        let r = reqwest::get(http(&app, "/health/redis")).await.expect("health");
        assert_eq!(r.status(), StatusCode::OK);
        let h: Value = r.json().await.expect("json");
        assert_eq!(h["status"], "ok", "{h}");
        if h["cached_ms"].as_u64().is_some_and(|ms| ms > 0) {
            cached += 1;
        }
        reports.push(h);
    }
    // Concurrent callers share a report too.
    let many = (0..40).map(|_| reqwest::get(http(&app, "/health/redis")));
    for r in futures_util::future::join_all(many).await {
        assert_eq!(r.expect("health").status(), StatusCode::OK);
    }
    assert_eq!(calls(&store, "scan").await, 0, "no keyspace scan");
    assert_eq!(calls(&store, "keys").await, 0, "no KEYS");
    let dbsize = calls(&store, "dbsize").await;
    let m = metrics(&app).await;
    let checks = sample(&m, "stocksblitz_redis_health_checks_total ").expect("health checks counted");
    assert_eq!(dbsize, checks, "one DBSIZE per computed report");
    // 80 requests; a report lives 2 s: even on a slow machine far fewer reach Redis.
    assert!(checks < 20, "{checks} reports computed for 80 requests");
    assert!(cached > 0, "repeated requests were served from the cache");
    // The server's own counts.
    let total: u64 = store.query(redis::cmd("DBSIZE").to_owned()).await.expect("dbsize");
    let last = reports.last().expect("report");
    assert!(
        last["keys"]["total"]
            .as_u64()
            .is_some_and(|n| n >= 20_000 && n <= total),
        "{last}"
    );
    assert!(
        last["keys"]["with_expiry"].as_u64().is_some_and(|n| n >= 5_000),
        "{last}"
    );
    assert!(last["used_memory_bytes"].as_u64().is_some_and(|n| n > 0), "{last}");

    // Redis in /metrics.
    assert_eq!(sample(&m, "stocksblitz_redis_connected "), Some(1), "{m}");
    assert!(
        sample(&m, "stocksblitz_redis_commands_total ").is_some_and(|n| n >= 20),
        "{m}"
    );
    assert_eq!(sample(&m, "stocksblitz_redis_errors_total "), Some(0), "{m}");
    for name in [
        "stocksblitz_redis_round_trip_seconds_total ",
        "stocksblitz_redis_round_trip_max_seconds ",
        "stocksblitz_redis_published_total ",
        "stocksblitz_redis_publish_errors_total ",
    ] {
        assert!(m.lines().any(|l| l.starts_with(name)), "{name} missing");
    }
    app.shutdown().await.expect("shutdown");
    drop(redis);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_but_unreachable_redis_stops_start_up() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}/0", closed.local_addr().expect("addr"));
    drop(closed);
    let cfg = test_config(with_redis(&url));
    let v = config::load(&Source::Embedded, &cfg, Vec::new()).expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = start_on(v, listener).await.err().expect("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("unreachable at start-up") && msg.contains(&url), "{msg}");
}
