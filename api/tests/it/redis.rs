//! Redis over real sockets (a redis-server per test): idempotency keys shared by two
//! engine nodes, keyed orders refused (retryably) while Redis is down and accepted
//! again after, last quotes in `quote:{SYM}`, `/health/redis`, an API node fed market
//! data through Redis, and a configured but unreachable Redis stopping start-up.

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
    let claim = store.claim("alice", "k-2", b"{}").await.expect("claim");
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
    assert_eq!(h["keys"]["idem:*"], 2, "{h}");

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
    assert!(h["keys"]["quote:*"].as_u64().is_some_and(|n| n >= 1), "{h}");
    api.shutdown().await.expect("shutdown");
    engine.shutdown().await.expect("shutdown");
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
