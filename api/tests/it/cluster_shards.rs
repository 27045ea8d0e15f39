//! More than one engine (issue 21 point 2): instruments assigned to engine nodes in
//! config, one API node routing by symbol and by order id, reads merged across the
//! engines' replicas, account-wide commands sent to every engine, and an engine whose
//! announcement overlaps another's refused with the reason in `/health`.
//!
//! Real engine and API nodes in this process, a real Redis between them.

use crate::cluster::{api_node, cluster_metric, engine_node, order, WAIT};

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::redis_server::RedisServer;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stocksblitz_api::app::{start_api_node, RunningApp};
use stocksblitz_api::config::{self, Source};
use tokio::net::TcpListener;

/// A node's config: `[cluster]` as `node` with `extra` (an engine's shard and
/// instruments, an API node's engines); every node has the same instruments (SBY too).
fn config(url: &str, node: &str, extra: &str) -> String {
    test_config(|d| {
        add_sby(d);
        lift_order_limits(d);
        d.insert("redis".into(), redis_section(url));
        let mut t: toml::Table = toml::from_str(&format!(
            "command_stream_len = 10000\noutput_stream_len = 100000\noutput_backlog = 100000\n{extra}"
        ))
        .expect("toml");
        t.insert("node".into(), node.into());
        d.insert("cluster".into(), toml::Value::Table(t));
    })
}

/// An API node, not waiting for its replicas (one test's never sync).
async fn api(text: &str) -> RunningApp {
    let v = config::load(&Source::Embedded, text, Vec::new()).expect("config");
    start_api_node(v, TcpListener::bind("127.0.0.1:0").await.expect("bind"))
        .await
        .expect("api node starts")
}

fn sby(side: &str, price: &str) -> Value {
    json!({ "symbol": "SBY", "side": side, "type": "limit", "price": price, "qty": "1" })
}

fn shard(id: &str) -> u64 {
    id.parse::<u64>().expect("numeric order id") >> 56
}

async fn place(c: &Client, body: Value) -> String {
    let (s, v) = c.post("/orders", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["order"]["order_id"].as_str().expect("order id").to_owned()
}

async fn open_ids(c: &Client) -> HashSet<String> {
    let (s, v) = c.get("/orders?status=open").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["order_id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_own_their_instruments_behind_one_api_node() {
    let root = fresh_dir("cluster-shards");
    let redis = RedisServer::start(&root);
    let url = redis.url();
    let a = engine_node(&config(
        &url,
        "engine-a",
        "shard = 0
instruments = [\"SBZ\", \"BTCUSDT\"]",
    ))
    .await;
    let b = engine_node(&config(
        &url,
        "engine-b",
        "shard = 3
instruments = [\"SBY\"]",
    ))
    .await;
    let node = api_node(&config(&url, "api-1", "engines = [\"engine-a\", \"engine-b\"]")).await;
    let alice = Client::new(&node, "alice", "trader");
    let bob = Client::new(&node, "bob", "trader");
    let on_a = Client::new(&a, "alice", "trader");
    let on_b = Client::new(&b, "alice", "trader");

    // The private channel on the API node carries both engines' events, gapless.
    let mut ws = ws_as(&node, "alice").await;
    send(&mut ws, json!({"op":"subscribe","channels":["orders"],"id":1})).await;
    assert_eq!(recv(&mut ws, WAIT).await.expect("subscribed")["type"], "subscribed");
    assert_eq!(recv(&mut ws, WAIT).await.expect("snapshot")["type"], "snapshot");

    // Routed by symbol: SBZ to engine-a (shard 0), SBY to engine-b (shard 3).
    let z = place(&alice, order("99.00")).await;
    let y = place(&alice, sby("buy", "50.00")).await;
    assert_eq!((shard(&z), shard(&y)), (0, 3), "{z} {y}");
    assert_eq!(on_a.get(&format!("/orders/{z}")).await.0, StatusCode::OK);
    assert_eq!(on_b.get(&format!("/orders/{y}")).await.0, StatusCode::OK);
    assert_eq!(on_a.get(&format!("/orders/{y}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(on_b.get(&format!("/orders/{z}")).await.0, StatusCode::NOT_FOUND);
    // Read your writes on the API node, from either replica.
    for id in [&z, &y] {
        let (s, v) = alice.get(&format!("/orders/{id}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // An instrument no engine owns: refused, nothing placed.
    let (s, v) = alice
        .post(
            "/orders",
            json!({ "symbol": "ETHUSDT", "side": "buy", "type": "limit", "price": "1.00", "qty": "1" }),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("INSTRUMENT_NOT_ROUTED")),
        "{v}"
    );

    // Amend and cancel by id go to the engine in the id.
    let (s, v) = alice
        .call(Method::PATCH, &format!("/orders/{y}"), Some(json!({"price": "51.00"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = on_b.get(&format!("/orders/{y}")).await;
    assert_eq!((s, &v["price"]), (StatusCode::OK, &json!("51.00")), "{v}");

    // Paging merges both engines' orders: every order once, whatever the page size.
    let mut placed: HashSet<String> = [z.clone(), y.clone()].into();
    for i in 0..3 {
        placed.insert(place(&alice, order(&format!("98.{i}0"))).await);
        placed.insert(place(&alice, sby("buy", &format!("50.{i}0"))).await);
    }
    for limit in [1, 2, 3, 5, 100] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/orders?limit={limit}&cursor={c}"),
                None => format!("/orders?limit={limit}"),
            };
            let (s, v) = alice.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let page = v["orders"].as_array().expect("orders");
            assert!(page.len() <= limit);
            seen.extend(page.iter().map(|o| o["order_id"].as_str().expect("id").to_owned()));
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            (unique.len(), seen.len()),
            (placed.len(), placed.len()),
            "limit {limit}: {seen:?}"
        );
        assert_eq!(unique, placed);
    }
    let (s, v) = alice.get("/orders?cursor=1").await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_PARAMETER")),
        "{v}"
    );

    // Account-wide: risk usage summed, mass cancel on every engine.
    let (s, v) = alice.get("/accounts/me/risk").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["usage"]["open_orders"],
        json!(placed.len()),
        "summed over engines: {v}"
    );
    let (s, v) = alice.call(Method::DELETE, "/orders", None).await;
    assert_eq!((s, &v["cancelled"]), (StatusCode::OK, &json!(placed.len())), "{v}");
    assert!(open_ids(&on_a).await.is_empty() && open_ids(&on_b).await.is_empty());
    assert!(open_ids(&alice).await.is_empty());

    // A fill on engine-b: the API node's fills and positions have it.
    place(&bob, sby("sell", "51.00")).await;
    place(&alice, sby("buy", "51.00")).await;
    let mut fills = Value::Null;
    for _ in 0..100 {
        fills = alice.get("/fills").await.1;
        if fills["fills"].as_array().is_some_and(|f| !f.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fills["fills"][0]["symbol"], json!("SBY"), "{fills}");
    assert_eq!(shard(fills["fills"][0]["order_id"].as_str().expect("id")), 3);
    let (_, pos) = alice.get("/positions").await;
    assert_eq!(pos["positions"][0]["symbol"], json!("SBY"), "{pos}");

    // Every order event of both engines reached the private channel, numbered gaplessly.
    let mut last = 1; // the snapshot
    let mut ids = HashSet::new();
    while let Some(v) = recv_until(&mut ws, Duration::from_millis(500), |v| v["channel"] == "orders").await {
        let seq = v["seq"].as_u64().expect("seq");
        assert_eq!(seq, last + 1, "{v}");
        last = seq;
        if let Some(id) = v["data"]["order"]["order_id"].as_str() {
            ids.insert(id.to_owned());
        }
    }
    assert!(placed.iter().all(|id| ids.contains(id)), "{ids:?}");

    // Kill switch (admin) on every engine, then released.
    let admin = Client::new(&node, "ops", "admin");
    let (s, v) = admin
        .post("/admin/kill-switch", json!({"scope": "global", "active": true}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for c in [&alice] {
        let (s, v) = c.post("/orders", sby("buy", "50.00")).await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (StatusCode::FORBIDDEN, &json!("KILL_SWITCH_ACTIVE")),
            "engine-b: {v}"
        );
        let (s, v) = c.post("/orders", order("98.00")).await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (StatusCode::FORBIDDEN, &json!("KILL_SWITCH_ACTIVE")),
            "engine-a: {v}"
        );
    }
    let (s, v) = admin
        .post("/admin/kill-switch", json!({"scope": "global", "active": false}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    place(&alice, sby("buy", "50.00")).await;

    // Anomalies are numbered per engine: name one.
    let (s, v) = alice.get("/anomalies").await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_PARAMETER")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.contains("engine-b")),
        "{v}"
    );
    assert_eq!(alice.get("/anomalies?engine=engine-b").await.0, StatusCode::OK);
    assert_eq!(alice.get("/anomalies?engine=nope").await.0, StatusCode::BAD_REQUEST);

    // Metrics: a series per engine link.
    let m = metrics(&node).await;
    for e in ["engine-a", "engine-b"] {
        let line = format!("stocksblitz_cluster_synced{{node=\"api-1\",engine=\"{e}\",role=\"api\"}} 1");
        assert!(m.contains(&line), "{line} in {m}");
    }
    assert_eq!(cluster_metric(&m, "stocksblitz_cluster_synced"), 1);

    // An engine that claims what another owns: refused, and health says why.
    let c = engine_node(&config(
        &url,
        "engine-c",
        "shard = 4
instruments = [\"SBZ\"]",
    ))
    .await;
    let node2 = api(&config(&url, "api-2", "engines = [\"engine-a\", \"engine-c\"]")).await;
    let mut health = Value::Null;
    for _ in 0..100 {
        health = reqwest::get(format!("http://{}/health", node2.addr))
            .await
            .expect("health")
            .json()
            .await
            .unwrap_or(Value::Null);
        if health.to_string().contains("both own SBZ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(health.to_string().contains("both own SBZ"), "{health}");
    let (s, v) = Client::new(&node2, "alice", "trader")
        .post("/orders", order("98.00"))
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("ORDERS_NOT_SYNCED")),
        "{v}"
    );

    for app in [node2, c, node, b, a] {
        app.shutdown().await.expect("shutdown");
    }
}
