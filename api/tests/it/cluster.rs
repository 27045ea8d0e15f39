//! Orders through API nodes over Redis Streams (`[cluster]`, issue 21), with real
//! servers on loopback and a real redis-server: an API node takes orders and answers
//! with the engine's journaled result, reads its own writes, serves the private
//! channels; an idempotent retry from any node gets the same answer; a redelivered
//! command is answered from the journal and never applied twice; a command past its
//! deadline is never applied; a gap closes private channels with 4008 and the replica
//! resynchronizes; the engine restarting keeps the replica in step.

use crate::common;

use std::time::Duration;

use common::redis_server::RedisServer;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stocksblitz_api::app::{start_api_node, start_on, RunningApp};
use stocksblitz_api::cluster::wire::{self, FromEngine, ToEngine};
use stocksblitz_api::cluster::{command_stream, output_stream};
use stocksblitz_api::config::{self, Source};
use stocksblitz_engine::orders::{AccountId, Command, CommandKind, IdemTag};
use stocksblitz_engine::UnixNanos;
use tokio::net::TcpListener;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn cluster_section(node: &str, engine: Option<&str>) -> toml::Value {
    let mut t: toml::Table = toml::from_str(
        r#"
        command_stream_len = 10000
        output_stream_len = 100000
        output_backlog = 100000
        "#,
    )
    .expect("toml");
    t.insert("node".into(), node.into());
    if let Some(e) = engine {
        t.insert("engines".into(), toml::Value::Array(vec![e.into()]));
    }
    toml::Value::Table(t)
}

/// A node's config: Redis at `url`, `[cluster]` as `node` (forwarding to `engine`),
/// the journal at `journal` when given.
pub(crate) fn node_config(url: &str, node: &str, engine: Option<&str>, journal: Option<&std::path::Path>) -> String {
    test_config(|d| {
        d.insert("redis".into(), redis_section(url));
        d.insert("cluster".into(), cluster_section(node, engine));
        if let Some(j) = journal {
            d["orders"]["journal"]["dir"] = toml::Value::String(j.display().to_string());
        }
    })
}

pub(crate) async fn engine_node(text: &str) -> RunningApp {
    let v = config::load(&Source::Embedded, text, Vec::new()).expect("config");
    start_on(v, TcpListener::bind("127.0.0.1:0").await.expect("bind"))
        .await
        .expect("engine node starts")
}

pub(crate) async fn api_node(text: &str) -> RunningApp {
    let v = config::load(&Source::Embedded, text, Vec::new()).expect("config");
    let api = start_api_node(v, TcpListener::bind("127.0.0.1:0").await.expect("bind"))
        .await
        .expect("api node starts");
    wait_synced(&api).await;
    api
}

/// Waits until the API node's order replica is in step (its order routes answer).
pub(crate) async fn wait_synced(api: &RunningApp) {
    let alice = Client::new(api, "alice", "trader");
    for _ in 0..200 {
        if alice.get("/orders").await.0 == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the API node's order replica never synced");
}

pub(crate) fn order(price: &str) -> Value {
    json!({ "symbol": "SBZ", "side": "buy", "type": "limit", "price": price, "qty": "1" })
}

pub(crate) fn cluster_metric(m: &str, name: &str) -> u64 {
    m.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

pub(crate) async fn open_orders(c: &Client) -> Vec<Value> {
    let (s, v) = c.get("/orders").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["orders"].as_array().cloned().unwrap_or_default()
}

/// Adds a raw message to the engine's command stream (what an API node sends).
async fn xadd(store: &stocksblitz_api::redis_store::RedisStore, stream: &str, bytes: Vec<u8>) {
    let _: String = store
        .query(
            redis::cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg(wire::FIELD)
                .arg(bytes)
                .to_owned(),
        )
        .await
        .expect("xadd");
}

/// On the engine's output stream, every answer to an API node comes after the output
/// holding its events (what makes an API node read its own writes), whatever the
/// timing was; at least `min` answers checked.
async fn assert_answers_follow_their_output(engine: &RunningApp, min: usize) {
    let store = engine.state.redis.clone().expect("redis");
    let all: redis::Value = store
        .query(
            redis::cmd("XRANGE")
                .arg(output_stream("engine-a"))
                .arg("-")
                .arg("+")
                .to_owned(),
        )
        .await
        .expect("xrange");
    let entries = wire::entries(redis::Value::Array(vec![redis::Value::Array(vec![
        redis::Value::Nil,
        all,
    ])]))
    .expect("entries");
    let mut seen = std::collections::HashSet::new();
    let mut answers = 0;
    for e in &entries {
        match e.data.as_deref().and_then(|d| wire::decode::<FromEngine>(d).ok()) {
            Some(FromEngine::Output(items)) => {
                for i in items {
                    if let stocksblitz_engine::orders::gateway::OrderOutput::Event(ev) = i {
                        seen.insert(ev.seq);
                    }
                }
            }
            Some(FromEngine::Answer {
                answer: Ok(events),
                request,
                node,
            }) if node.starts_with("api-") => {
                answers += 1;
                for ev in events {
                    assert!(
                        seen.contains(&ev.seq),
                        "{node}'s answer to {request} came before event {}",
                        ev.seq
                    );
                }
            }
            _ => {}
        }
    }
    assert!(answers >= min, "{answers} answers checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_nodes_trade_through_redis_streams_with_the_single_nodes_guarantees() {
    let root = fresh_dir("cluster");
    let redis = RedisServer::start(&root);
    let url = redis.url();
    let journal = fresh_dir("cluster-journal");
    let engine = engine_node(&node_config(&url, "engine-a", None, Some(&journal))).await;
    let api1 = api_node(&node_config(&url, "api-1", Some("engine-a"), None)).await;
    let api2 = api_node(&node_config(&url, "api-2", Some("engine-a"), None)).await;
    let on_engine = Client::new(&engine, "alice", "trader");
    let on_api1 = Client::new(&api1, "alice", "trader");
    let on_api2 = Client::new(&api2, "alice", "trader");

    // A private channel on api-2 sees what is placed through api-1.
    let mut ws = ws_as(&api2, "alice").await;
    send(&mut ws, json!({"op":"subscribe","channels":["orders"],"id":1})).await;
    assert_eq!(recv(&mut ws, WAIT).await.expect("subscribed")["type"], "subscribed");
    assert_eq!(recv(&mut ws, WAIT).await.expect("snapshot")["type"], "snapshot");

    // Placed through api-1: the engine's answer, and api-1 reads its own write at once.
    let (s, placed) = on_api1.post("/orders", order("99.00")).await;
    assert_eq!(s, StatusCode::CREATED, "{placed}");
    let id = placed["order"]["order_id"].as_str().expect("order id").to_owned();
    let (s, mine) = on_api1.get(&format!("/orders/{id}")).await;
    assert_eq!(s, StatusCode::OK, "read your writes on the API node: {mine}");
    let (s, there) = on_engine.get(&format!("/orders/{id}")).await;
    assert_eq!((s, &there["status"]), (StatusCode::OK, &json!("open")), "{there}");
    let update = recv_until(&mut ws, WAIT, |v| v["type"] == "update" && v["channel"] == "orders")
        .await
        .expect("api-2's private channel gets the order");
    assert_eq!(update["data"]["order"]["order_id"], json!(id), "{update}");

    // An idempotent retry from any node: the same answer, one order.
    let (s, first) = on_api1.post_keyed(Some("k-1"), &order("98.00")).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    for c in [&on_api2, &on_engine, &on_api1] {
        let (s, again) = c.post_keyed(Some("k-1"), &order("98.00")).await;
        assert_eq!((s, &again), (StatusCode::CREATED, &first));
    }
    assert_eq!(open_orders(&on_engine).await.len(), 2);

    // A command delivered twice (a redelivery after an engine restart, or a retry
    // that raced): answered from the journaled answer, applied once.
    let store = engine.state.redis.clone().expect("redis");
    let before = cluster_metric(
        &metrics(&engine).await,
        "stocksblitz_cluster_commands_deduplicated_total",
    );
    let tag = IdemTag::new("replayed-command", b"");
    let new_order = |price: &str| {
        CommandKind::New(stocksblitz_engine::orders::NewOrder {
            instrument: engine.state.desk.market.registry.by_symbol("SBZ").expect("SBZ").id,
            client_id: stocksblitz_engine::orders::ClientOrderId::EMPTY,
            side: stocksblitz_engine::Side::Buy,
            kind: stocksblitz_engine::orders::OrderType::Limit,
            tif: stocksblitz_engine::orders::TimeInForce::Gtc,
            price: stocksblitz_engine::Price::parse_str(price, 2).expect("price"),
            stop_price: stocksblitz_engine::Price(0),
            qty: stocksblitz_engine::Qty::parse_str("1", 0).expect("qty"),
            post_only: false,
            reduce_only: false,
        })
    };
    let command = |price: &str, tag: IdemTag, deadline: UnixNanos| ToEngine::Command {
        node: "probe".into(),
        command: Command {
            request: 1,
            account: AccountId(0),
            at: UnixNanos::now(),
            kind: new_order(price),
            idempotency: Some(tag),
        },
        deadline,
    };
    let later = UnixNanos(UnixNanos::now().0 + 60 * UnixNanos::NANOS_PER_SEC);
    for _ in 0..2 {
        xadd(
            &store,
            &command_stream("engine-a"),
            wire::encode(&command("97.00", tag, later)),
        )
        .await;
    }
    // A command past its deadline: never applied.
    let past = UnixNanos(UnixNanos::now().0 - UnixNanos::NANOS_PER_SEC);
    xadd(
        &store,
        &command_stream("engine-a"),
        wire::encode(&command("96.00", IdemTag::new("late", b""), past)),
    )
    .await;
    // Damage: skipped and counted.
    xadd(&store, &command_stream("engine-a"), vec![0xff, 0x00, 0x13]).await;
    let mut m = String::new();
    for _ in 0..100 {
        m = metrics(&engine).await;
        if cluster_metric(&m, "stocksblitz_cluster_commands_undecodable_total") == 1
            && cluster_metric(&m, "stocksblitz_cluster_commands_expired_total") == 1
            && cluster_metric(&m, "stocksblitz_cluster_commands_deduplicated_total") == before + 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cluster_metric(&m, "stocksblitz_cluster_commands_deduplicated_total"),
        before + 1,
        "{m}"
    );
    assert_eq!(
        cluster_metric(&m, "stocksblitz_cluster_commands_expired_total"),
        1,
        "{m}"
    );
    assert_eq!(
        cluster_metric(&m, "stocksblitz_cluster_commands_undecodable_total"),
        1,
        "{m}"
    );
    let prices: Vec<String> = open_orders(&on_engine)
        .await
        .iter()
        .map(|o| o["price"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        prices.iter().filter(|p| p.as_str() == "97.00").count(),
        1,
        "applied once: {prices:?}"
    );
    assert!(
        !prices.iter().any(|p| p == "96.00"),
        "the late command was never applied: {prices:?}"
    );
    let m1 = metrics(&api1).await;
    assert_eq!(cluster_metric(&m1, "stocksblitz_cluster_synced"), 1, "{m1}");
    // Every command read was answered and acknowledged (the group samples each second).
    let mut pending = u64::MAX;
    for _ in 0..60 {
        pending = cluster_metric(&metrics(&engine).await, "stocksblitz_cluster_group_pending");
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0);
    // The link's ring is in the ring metrics, with nothing dropped.
    let m = metrics(&engine).await;
    assert_eq!(
        sample(
            &m,
            "stocksblitz_ring_dropped_total{ring=\"cluster-out\",direction=\"tap\"}"
        ),
        Some(0),
        "{m}"
    );

    // Output this node never saw (a heartbeat ahead of it): the private channel closes
    // with 4008, the replica resyncs from a snapshot and matches the engine again.
    let ahead = FromEngine::Heartbeat {
        run: 1,
        last_seq: u64::MAX / 2,
        owner: engine.state.cluster[0].1.owner.clone(),
    };
    let _: String = store
        .query(
            redis::cmd("XADD")
                .arg(output_stream("engine-a"))
                .arg("*")
                .arg(wire::FIELD)
                .arg(wire::encode(&ahead))
                .to_owned(),
        )
        .await
        .expect("xadd");
    let closed = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(closed, Some(4008));
    // (A real engine's next heartbeat is behind the fake one: the resync converges once
    // the engine publishes past it; here the replica is rebuilt and compared.)
    let m2 = metrics(&api2).await;
    assert!(cluster_metric(&m2, "stocksblitz_cluster_resyncs_total") >= 1, "{m2}");

    // The engine restarts (its journal recovered): api-1 stays in step and trades on.
    engine.shutdown().await.expect("shutdown");
    // Meanwhile an order through api-1 gets no answer: unknown, never applied later.
    let (s, v) = on_api1.post("/orders", order("95.00")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::GATEWAY_TIMEOUT, Some("ORDER_STATUS_UNKNOWN")),
        "{v}"
    );
    let engine = engine_node(&node_config(&url, "engine-a", None, Some(&journal))).await;
    let on_engine = Client::new(&engine, "alice", "trader");
    let (s, v) = on_api1.post("/orders", order("94.00")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let engine_view: Vec<Value> = open_orders(&on_engine).await;
    assert!(
        !engine_view.iter().any(|o| o["price"] == "95.00"),
        "expired while the engine was down: {engine_view:?}"
    );
    let mut api_view = Vec::new();
    for _ in 0..100 {
        api_view = open_orders(&on_api1).await;
        if api_view.len() == engine_view.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = |v: &[Value]| {
        let mut ids: Vec<String> = v
            .iter()
            .map(|o| o["order_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&api_view), ids(&engine_view), "api-1's replica equals the engine");

    // Order entry over api-1's WebSocket, whose private channel then outlives a Redis
    // restart (nothing lost: no gap, no close) and carries the next order.
    let mut ws1 = ws_as(&api1, "alice").await;
    send(&mut ws1, json!({"op":"subscribe","channels":["orders"],"id":1})).await;
    assert_eq!(recv(&mut ws1, WAIT).await.expect("subscribed")["type"], "subscribed");
    assert_eq!(recv(&mut ws1, WAIT).await.expect("snapshot")["type"], "snapshot");
    send(
        &mut ws1,
        json!({"op":"order.new","id":"c1","order":{"symbol":"SBZ","side":"buy","type":"limit","price":"93.00","qty":"1"}}),
    )
    .await;
    let ack = recv_until(&mut ws1, WAIT, |v| v["type"] == "order.ack")
        .await
        .expect("ack");
    assert_eq!(ack["data"]["order"]["status"], "open", "{ack}");
    assert_answers_follow_their_output(&engine, 4).await;
    let mut redis = redis;
    redis.stop();
    let (s, v) = on_api1.post("/orders", order("92.00")).await;
    assert!(
        matches!(
            v["error"]["code"].as_str(),
            Some("ORDER_STATUS_UNKNOWN" | "ENGINE_UNREACHABLE")
        ),
        "{s} {v}"
    );
    redis.restart();
    let mut placed = None;
    for _ in 0..100 {
        let (s, v) = on_api1.post("/orders", order("91.00")).await;
        if s == StatusCode::CREATED {
            placed = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let placed = placed.expect("orders go through again once Redis is back");
    let id = placed["order"]["order_id"].as_str().expect("id").to_owned();
    let update = recv_until(&mut ws1, WAIT, |v| {
        v["type"] == "update" && v["channel"] == "orders" && v["data"]["order"]["order_id"] == json!(id)
    })
    .await
    .expect("the private channel stayed open across the Redis restart and carries the order");
    assert_eq!(update["data"]["event"], "accepted", "{update}");

    assert_answers_follow_their_output(&engine, 1).await;

    for app in [api1, api2, engine] {
        app.shutdown().await.expect("shutdown");
    }
    drop(redis);
    let _ = std::fs::remove_dir_all(root);
}
