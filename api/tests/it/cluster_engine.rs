//! An engine node of a cluster (`[cluster]` shard and instruments, issue 21), with a
//! real server and a real redis-server: its order ids carry its shard, it refuses
//! orders on instruments it does not own (`INSTRUMENT_NOT_ON_THIS_ENGINE`, 422), its
//! Redis publisher sends only its own instruments' market data, and it refuses to
//! start as another shard on its journal (the ids would collide), naming both.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stocksblitz_api::app::start_on;
use stocksblitz_api::config::{self, Source};
use stocksblitz_engine::orders::{shard_of_order, OrderId};
use stocksblitz_engine::EngineEvent;
use tokio::net::TcpListener;

/// An engine node's config: Redis at `url`, shard `shard`, owning `owned` (all when
/// `None`), its journal in `journal`.
fn engine_config(url: &str, shard: u8, owned: Option<&[&str]>, journal: &std::path::Path) -> String {
    test_config(|d| {
        d.insert("redis".into(), redis_section(url));
        let mut c: toml::Table = toml::from_str(
            r#"
            node = "engine-a"
            command_stream_len = 10000
            output_stream_len = 100000
            output_backlog = 100000
            "#,
        )
        .expect("toml");
        c.insert("shard".into(), toml::Value::Integer(i64::from(shard)));
        if let Some(list) = owned {
            let list = list.iter().map(|s| toml::Value::String((*s).to_owned())).collect();
            c.insert("instruments".into(), toml::Value::Array(list));
        }
        d.insert("cluster".into(), toml::Value::Table(c));
        d["orders"]["journal"]["dir"] = toml::Value::String(journal.display().to_string());
    })
}

fn order(symbol: &str, price: &str) -> Value {
    json!({ "symbol": symbol, "side": "buy", "type": "limit", "price": price, "qty": "1" })
}

async fn start(text: &str) -> anyhow::Result<stocksblitz_api::app::RunningApp> {
    let v = config::load(&Source::Embedded, text, Vec::new()).expect("config");
    start_on(v, TcpListener::bind("127.0.0.1:0").await.expect("bind")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_node_trades_and_publishes_only_its_instruments_and_keeps_its_shard() {
    let root = fresh_dir("cluster-engine");
    let redis = RedisServer::start(&root);
    let url = redis.url();
    let journal = fresh_dir("cluster-engine-journal");

    // Everything the node publishes, from before it starts.
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe("sbz:md").await.expect("subscribe");

    let owned = ["SBZ", "BTCUSDT"];
    let text = engine_config(&url, 3, Some(&owned), &journal);
    let registry = config::load(&Source::Embedded, &text, Vec::new())
        .expect("config")
        .registry;
    let engine = start(&text).await.expect("engine node starts");
    wait_live(&engine, "BTCUSDT").await;
    let id_of = |s: &str| registry.by_symbol(s).expect("configured").id;

    // Orders on its instruments: ids of shard 3. Others': refused, saying where to go.
    let alice = Client::new(&engine, "alice", "trader");
    let (s, placed) = alice.post("/orders", order("SBZ", "99.00")).await;
    assert_eq!(s, StatusCode::CREATED, "{placed}");
    let id: u64 = placed["order"]["order_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("order id");
    assert_eq!(shard_of_order(OrderId(id)), 3, "{id:#x}");
    let (s, refused) = alice.post("/orders", order("ETHUSDT", "1000.00")).await;
    assert_eq!(
        (s, refused["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("INSTRUMENT_NOT_ON_THIS_ENGINE")),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("API node")),
        "{refused}"
    );

    // Two seconds of the channel: only its instruments, BTCUSDT among them.
    let mut seen = BTreeSet::new();
    let mut messages = pubsub.on_message();
    let until = Instant::now() + Duration::from_secs(2);
    while let Ok(Some(msg)) = tokio::time::timeout_at(until.into(), messages.next()).await {
        let events: Vec<EngineEvent> = postcard::from_bytes(msg.get_payload_bytes()).expect("a batch of events");
        seen.extend(events.iter().map(|e| e.instrument));
    }
    drop(messages);
    let mine: BTreeSet<_> = owned.iter().map(|s| id_of(s)).collect();
    assert!(seen.contains(&id_of("BTCUSDT")), "{seen:?}");
    assert!(seen.is_subset(&mine), "published {seen:?}, owns {mine:?}");
    // The last quotes too.
    let store = engine.state.redis.clone().expect("redis");
    let get = |key: &'static str| {
        let store = store.clone();
        async move {
            store
                .query::<Option<String>>(redis::cmd("GET").arg(key).to_owned())
                .await
                .expect("get")
        }
    };
    assert!(get("quote:BTCUSDT").await.is_some(), "its quotes are written");
    assert!(get("quote:ETHUSDT").await.is_none(), "another engine's are not");
    engine.shutdown().await.expect("shutdown");

    // Another shard on this journal would collide with shard 3's ids: refused.
    let err = start(&engine_config(&url, 4, Some(&owned), &journal))
        .await
        .err()
        .expect("another shard is refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("shard 3") && msg.contains("shard 4") && msg.contains("cluster.shard"),
        "{msg}"
    );

    // Its own shard, now owning everything: the journal replays as it was, the order
    // is there, and ETHUSDT is this engine's now.
    let engine = start(&engine_config(&url, 3, None, &journal))
        .await
        .expect("the same shard restarts");
    let alice = Client::new(&engine, "alice", "trader");
    let (s, again) = alice.get(&format!("/orders/{id}")).await;
    assert_eq!((s, &again["status"]), (StatusCode::OK, &json!("open")), "{again}");
    let (_, v) = alice.post("/orders", order("ETHUSDT", "1000.00")).await;
    assert_ne!(
        v["error"]["code"].as_str(),
        Some("INSTRUMENT_NOT_ON_THIS_ENGINE"),
        "{v}"
    );
    engine.shutdown().await.expect("shutdown");
    drop(redis);
    let _ = std::fs::remove_dir_all(root);
}
