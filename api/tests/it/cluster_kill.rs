//! Issue 21 points 2 and 3: two engine nodes (engine-a owns SBZ, engine-b owns SBY),
//! two API nodes forwarding to both, and one Redis, each a real process on loopback.
//! Clients on both API nodes place (on both instruments) and cancel orders at the same
//! time (retrying with the same `Idempotency-Key` on the other node when a node is
//! down or answers "unknown", and getting an answer within a minute), while a seeded
//! schedule kills -9 an API node, an engine and Redis (no persistence: its streams
//! and keys are lost) at random moments and restarts them. At the end every
//! acknowledged order is in its engine's final state exactly once (and one whose
//! outcome stayed unknown at most once), every cancel acknowledged took, both API
//! nodes' merged views equal the engines', and every
//! private WebSocket channel was gapless until it closed (with 4008, or by its node
//! being killed).
//!
//! `SBZ_CLUSTER_SEED` replays a schedule; `SBZ_CLUSTER_SECS` lengthens the fault phase
//! (default 25 s).

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{free_port, spawn_node, Server};
use common::redis_server::RedisServer;
use common::rng::Rng;
use common::*;
use futures_util::StreamExt;
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// `[cluster]` for `node`, with `extra` (an engine's shard and instruments, or an API
/// node's engines).
fn cluster_section(node: &str, extra: &str) -> toml::Value {
    let mut t: toml::Table = toml::from_str(&format!(
        "command_stream_len = 100000\noutput_stream_len = 1000000\noutput_backlog = 1000000\n{extra}\n"
    ))
    .expect("toml");
    t.insert("node".into(), node.into());
    toml::Value::Table(t)
}

fn write_config(dir: &Path, name: &str, redis: &str, cluster: &str, journal: &Path) -> PathBuf {
    let text = test_config(|d| {
        add_sby(d);
        d.insert("redis".into(), redis_section(redis));
        d.insert("cluster".into(), cluster_section(name, cluster));
        d["orders"]["journal"]["dir"] = toml::Value::String(journal.display().to_string());
        d["log"]["format"] = toml::Value::String("json".into());
        // Headroom for the clients' rate and open orders.
        lift_order_limits(d);
    });
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("config");
    path
}

/// A node the schedule kills and restarts on the same port.
struct Node {
    name: &'static str,
    config: PathBuf,
    log: PathBuf,
    args: Vec<&'static str>,
    port: u16,
    server: Option<Server>,
}

impl Node {
    async fn start(&mut self) {
        let args: Vec<&str> = self.args.clone();
        self.server = Some(spawn_node(&self.config, &self.log, &[], &args, self.port).await);
    }
    fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1", self.port)
    }
}

/// What the clients learned, per client order id.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// 201: the order id.
    Placed(String),
    /// Never a final answer.
    Unknown,
    /// A final refusal (must not be a duplicate).
    Refused(String),
}

#[derive(Default)]
struct Ledger {
    orders: BTreeMap<String, Outcome>,
    /// Order ids whose cancel was acknowledged (200, or 409 ORDER_NOT_OPEN after an
    /// earlier attempt that may have taken).
    cancelled: Vec<String>,
    violations: Vec<String>,
}

async fn place(
    http: &reqwest::Client,
    bases: &[String; 2],
    first: usize,
    token: &str,
    cid: &str,
    symbol: &str,
    price: &str,
) -> Outcome {
    let body =
        json!({ "symbol": symbol, "side": "buy", "type": "limit", "price": price, "qty": "1", "client_order_id": cid });
    let started = Instant::now();
    let mut node = first;
    while started.elapsed() < Duration::from_secs(60) {
        let r = http
            .post(format!("{}/orders", bases[node % 2]))
            .bearer_auth(token)
            .header("idempotency-key", format!("key-{cid}"))
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        if let Ok(r) = r {
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if status == StatusCode::CREATED {
                return Outcome::Placed(v["order"]["order_id"].as_str().unwrap_or_default().to_owned());
            }
            let code = v["error"]["code"].as_str().unwrap_or_default().to_owned();
            let retry = status.is_server_error()
                || matches!(code.as_str(), "IDEMPOTENCY_KEY_IN_FLIGHT" | "RATE_LIMITED")
                || status == StatusCode::TOO_MANY_REQUESTS;
            if !retry {
                return Outcome::Refused(code);
            }
        }
        node += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Outcome::Unknown
}

async fn cancel(http: &reqwest::Client, bases: &[String; 2], first: usize, token: &str, id: &str) -> bool {
    let started = Instant::now();
    let mut node = first;
    let mut tried = false;
    while started.elapsed() < Duration::from_secs(60) {
        let r = http
            .delete(format!("{}/orders/{id}", bases[node % 2]))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(r) = r {
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return true;
            }
            // An earlier attempt took (its answer was lost): it is cancelled.
            if v["error"]["code"] == "ORDER_NOT_OPEN" && tried {
                return true;
            }
            if !status.is_server_error() {
                return false;
            }
            tried = true;
        }
        node += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    false
}

/// A private `orders` channel on `base`'s node: checks every message's sequence is
/// the last plus one until it closes; returns how it closed.
async fn watch(
    port: u16,
    account: &'static str,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    killed: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut req) = format!("ws://127.0.0.1:{port}/api/v1/stream").into_client_request() else {
            return;
        };
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", token(account, "trader")).parse().expect("header"),
        );
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        killed.store(false, Ordering::Relaxed);
        let sub = json!({"op":"subscribe","channels":["orders"],"id":1}).to_string();
        if futures_util::SinkExt::send(&mut ws, Message::Text(sub.into()))
            .await
            .is_err()
        {
            continue;
        }
        let mut last: Option<u64> = None;
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) { return }
                    continue
                }
            };
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["channel"] != "orders" {
                        continue;
                    }
                    let Some(seq) = v["seq"].as_u64() else { continue };
                    if let Some(l) = last {
                        if seq != l + 1 {
                            ledger
                                .lock()
                                .violations
                                .push(format!("{account} on :{port}: private seq {l} then {seq}"));
                        }
                    }
                    last = Some(seq);
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    // 4008: gap (resync); 1001: the node shutting down.
                    if !matches!(code, Some(4008 | 1001)) {
                        ledger
                            .lock()
                            .violations
                            .push(format!("{account} on :{port}: closed with {code:?}"));
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    // No close frame: only a killed node may do that.
                    if !killed.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        ledger
                            .lock()
                            .violations
                            .push(format!("{account} on :{port}: dropped without a close"));
                    }
                    break;
                }
            }
        }
    }
}

async fn all_orders(http: &reqwest::Client, base: &str, token: &str) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{base}/orders?status=all&limit=500&cursor={c}"),
            None => format!("{base}/orders?status=all&limit=500"),
        };
        let r = http.get(url).bearer_auth(token).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        out.extend(v["orders"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Some(out),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_api_nodes_and_redis_killed_at_random_lose_and_double_nothing() {
    let seed = std::env::var("SBZ_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_secs() ^ 0x5eed);
    let secs: u64 = std::env::var("SBZ_CLUSTER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    println!("cluster kill test: SBZ_CLUSTER_SEED={seed} SBZ_CLUSTER_SECS={secs}");
    let mut rng = Rng(seed);
    let root = fresh_dir("cluster-kill");
    std::fs::create_dir_all(&root).expect("dir");
    test_secret();
    let mut redis = RedisServer::start(&root.join("redis"));
    let url = redis.url();
    let mut engines: Vec<Node> = Vec::new();
    for (name, owns) in [
        (
            "engine-a",
            "shard = 0\ninstruments = [\"SBZ\", \"BTCUSDT\", \"ETHUSDT\"]",
        ),
        ("engine-b", "shard = 2\ninstruments = [\"SBY\"]"),
    ] {
        let mut n = Node {
            name,
            config: write_config(&root, name, &url, owns, &root.join(format!("{name}-journal"))),
            log: root.join(format!("{name}.log")),
            args: vec![],
            port: free_port(),
            server: None,
        };
        n.start().await;
        engines.push(n);
    }
    let mut apis: Vec<Node> = Vec::new();
    for name in ["api-1", "api-2"] {
        let mut n = Node {
            name,
            config: write_config(
                &root,
                name,
                &url,
                "engines = [\"engine-a\", \"engine-b\"]",
                &root.join(format!("{name}-unused")),
            ),
            log: root.join(format!("{name}.log")),
            args: vec!["--role", "api"],
            port: free_port(),
            server: None,
        };
        n.start().await;
        apis.push(n);
    }
    let bases = [apis[0].base(), apis[1].base()];
    let http = reqwest::Client::new();

    // Latency per hop, before any fault: an order straight to the engine node vs the
    // same through an API node (REST round trips, sequential).
    let alice = token("alice", "trader");
    let direct = engines[0].base();
    for _ in 0..200 {
        if http
            .get(format!("{}/orders", bases[0]))
            .bearer_auth(&alice)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut hops: HashMap<&str, Vec<u64>> = HashMap::new();
    for i in 0..600 {
        let (name, base) = if i % 2 == 0 {
            ("direct", &direct)
        } else {
            ("via api node", &bases[0])
        };
        let t = Instant::now();
        let r = http
            .post(format!("{base}/orders"))
            .bearer_auth(&alice)
            .json(&json!({ "symbol": "SBZ", "side": "buy", "type": "limit", "price": "50.00", "qty": "1", "client_order_id": format!("hop-{i}") }))
            .send()
            .await
            .expect("order");
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        hops.entry(name).or_default().push(t.elapsed().as_micros() as u64);
    }
    for (name, mut v) in hops {
        v.sort_unstable();
        let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
        println!(
            "order round trip {name}: n={} p50={} us p99={} us",
            v.len(),
            at(0.5),
            at(0.99)
        );
    }

    // Clients, private channels, then the faults.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let killed: Vec<Arc<AtomicBool>> = (0..2).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut tasks = Vec::new();
    for (i, n) in apis.iter().enumerate() {
        tasks.push(tokio::spawn(watch(
            n.port,
            "alice",
            Arc::clone(&stop),
            Arc::clone(&ledger),
            Arc::clone(&killed[i]),
        )));
    }
    for c in 0..4usize {
        let (http, bases, ledger, stop, token) = (
            http.clone(),
            bases.clone(),
            Arc::clone(&ledger),
            Arc::clone(&stop),
            alice.clone(),
        );
        let mut rng = Rng(seed ^ (c as u64 + 1));
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let cid = format!("c{c}-{n}");
                let price = format!("{}.{:02}", 60 + rng.below(30), rng.below(20) * 5);
                let symbol = if rng.below(2) == 0 { "SBZ" } else { "SBY" };
                let outcome = place(&http, &bases, c, &token, &cid, symbol, &price).await;
                if let Outcome::Refused(code) = &outcome {
                    ledger.lock().violations.push(format!("{cid}: refused {code}"));
                }
                let placed = match &outcome {
                    Outcome::Placed(id) => Some(id.clone()),
                    _ => None,
                };
                ledger.lock().orders.insert(cid, outcome);
                if let Some(id) = placed.filter(|_| rng.below(3) == 0) {
                    if cancel(&http, &bases, c + 1, &token, &id).await {
                        ledger.lock().cancelled.push(id);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let mut faults = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(1_500 + rng.below(3_000))).await;
        match rng.below(4) {
            0 | 1 => {
                let i = rng.below(2) as usize;
                faults.push(format!("kill -9 {}", apis[i].name));
                killed[i].store(true, Ordering::Relaxed);
                apis[i].kill();
                tokio::time::sleep(Duration::from_millis(rng.below(1_500))).await;
                apis[i].start().await;
            }
            2 => {
                let e = &mut engines[rng.below(2) as usize];
                faults.push(format!("kill -9 {}", e.name));
                e.kill();
                tokio::time::sleep(Duration::from_millis(rng.below(1_500))).await;
                e.start().await;
            }
            _ => {
                faults.push("kill -9 redis".into());
                redis.stop();
                tokio::time::sleep(Duration::from_millis(rng.below(1_500))).await;
                redis.restart();
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    println!("faults: {faults:?}");

    // The final state: the engines', and each API node's merged view once in step.
    let mut engine_orders = Vec::new();
    for e in &engines {
        let orders = all_orders(&http, &e.base(), &alice).await.expect("engine orders");
        // Each engine's orders carry its shard in their ids' top 8 bits.
        let shard = if e.name == "engine-a" { 0 } else { 2 };
        for o in &orders {
            let id: u64 = o["order_id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
            assert_eq!(id >> 56, shard, "{} has {o}", e.name);
        }
        engine_orders.extend(orders);
    }
    let mut by_cid: HashMap<String, Vec<&Value>> = HashMap::new();
    for o in &engine_orders {
        by_cid
            .entry(o["client_order_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(o);
    }
    let ledger = std::mem::take(&mut *ledger.lock());
    let mut violations = ledger.violations.clone();
    let (mut acked, mut unknown) = (0, 0);
    for (cid, outcome) in &ledger.orders {
        let found = by_cid.get(cid).map_or(0, Vec::len);
        match outcome {
            Outcome::Placed(id) => {
                acked += 1;
                let same = by_cid
                    .get(cid)
                    .is_some_and(|v| v.len() == 1 && v[0]["order_id"] == json!(id));
                if !same {
                    violations.push(format!("{cid}: acknowledged as {id}, engine has {found}"));
                }
            }
            Outcome::Unknown => {
                // Retried for a minute on both nodes without an answer: a node that
                // died mid-request must not hold its key (or anything) that long.
                unknown += 1;
                violations.push(format!("{cid}: no answer in 60 s of retries; engine has {found}"));
            }
            Outcome::Refused(_) => {}
        }
    }
    for id in &ledger.cancelled {
        let o = engine_orders.iter().find(|o| o["order_id"] == json!(id));
        if o.is_none_or(|o| o["status"] != "cancelled") {
            violations.push(format!(
                "order {id}: cancel acknowledged, engine says {:?}",
                o.map(|o| &o["status"])
            ));
        }
    }
    let key = |v: &[Value]| {
        let mut k: Vec<(String, String)> = v
            .iter()
            .map(|o| {
                (
                    o["order_id"].as_str().unwrap_or_default().to_owned(),
                    o["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        k.sort();
        k
    };
    for base in &bases {
        let mut replica = None;
        for _ in 0..300 {
            replica = all_orders(&http, base, &alice).await;
            if replica.as_ref().is_some_and(|r| key(r) == key(&engine_orders)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if replica.as_ref().is_none_or(|r| key(r) != key(&engine_orders)) {
            violations.push(format!("{base}: merged replicas differ from the engines"));
        }
    }
    println!(
        "cluster kill test: {acked} acknowledged, {unknown} unknown, {} cancels, {} orders on the engines, {} faults",
        ledger.cancelled.len(),
        engine_orders.len(),
        faults.len()
    );
    assert!(acked > 0, "clients placed orders");
    assert!(
        violations.is_empty(),
        "violations (replay: SBZ_CLUSTER_SEED={seed}): {violations:#?}\nlogs in {}",
        root.display()
    );
    for mut n in apis.into_iter().chain(engines) {
        n.kill();
    }
    drop(redis);
    let _ = std::fs::remove_dir_all(root);
}
