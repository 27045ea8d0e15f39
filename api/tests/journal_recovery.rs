//! Durability over real sockets: orders, fills, positions and the internal venue's
//! book survive a restart; and the real binary, killed with SIGKILL at random points
//! while clients trade, comes back with every acknowledged order and fill, nothing
//! half-applied, and a journal that `stocksblitz journal verify` accepts.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn with_journal(dir: &Path) -> String {
    test_config(|d| {
        d["orders"]["journal"]["dir"] = toml::Value::String(dir.display().to_string());
        // Enough rate and open-order headroom for the clients below.
        let limits = d["orders"]["default_limits"].as_table_mut().expect("limits");
        limits.insert("orders_per_sec".into(), toml::Value::Integer(100_000));
        limits.insert("cancels_per_sec".into(), toml::Value::Integer(100_000));
        limits.insert("max_open_orders".into(), toml::Value::Integer(100_000));
    })
}

fn limit(side: &str, price: &str, qty: &str) -> Value {
    json!({ "symbol": "SBZ", "side": side, "type": "limit", "price": price, "qty": qty })
}

/// Every order of the account, newest first, across pages.
async fn all_orders(c: &Client) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/orders?status=all&limit=500&cursor={c}"),
            None => "/orders?status=all&limit=500".to_owned(),
        };
        let (s, v) = c.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        out.extend(v["orders"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// Positions without the mark: marks come from market data (after a restart the
/// internal venue has no last trade until it trades again), not from the journal.
async fn positions(c: &Client) -> Value {
    let (_, mut v) = c.get("/positions").await;
    for p in v["positions"].as_array_mut().into_iter().flatten() {
        if let Some(p) = p.as_object_mut() {
            p.remove("mark_price");
            p.remove("unrealized_pnl");
        }
    }
    v
}

async fn book(c: &Client) -> Value {
    let (_, v) = c.get("/book/SBZ?depth=20").await;
    json!({ "bids": v["bids"], "asks": v["asks"] })
}

/// The book the market path shows (it follows the order path asynchronously).
async fn book_eventually(c: &Client, want: &Value) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = book(c).await;
        if &last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_positions_and_books_survive_a_restart() {
    let dir = fresh_dir("restart");
    let cfg = with_journal(&dir);
    let app = start_with(&cfg).await;
    let alice = Client::new(&app, "alice", "trader");
    let bob = Client::new(&app, "bob", "trader");
    let (s, first) = alice.post("/orders", limit("sell", "100.00", "10")).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let first_id = first["order"]["order_id"].as_str().expect("id").to_owned();
    for body in [limit("sell", "100.05", "4"), limit("sell", "100.00", "6")] {
        assert_eq!(alice.post("/orders", body).await.0, StatusCode::CREATED);
    }
    let (_, v) = bob.post("/orders", limit("buy", "100.00", "3")).await;
    assert_eq!(v["order"]["status"], "filled", "{v}");
    assert_eq!(
        bob.post("/orders", limit("buy", "99.50", "2")).await.0,
        StatusCode::CREATED
    );
    let (_, cancelled) = alice.post("/orders", limit("sell", "101.00", "1")).await;
    let cancel_id = cancelled["order"]["order_id"].as_str().expect("id").to_owned();
    let (s, _) = alice.call(Method::DELETE, &format!("/orders/{cancel_id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let keyed = limit("buy", "99.00", "1");
    let (s, keyed_answer) = bob.post_keyed(Some("restart-key-1"), &keyed).await;
    assert_eq!(s, StatusCode::CREATED, "{keyed_answer}");

    let before = (
        all_orders(&alice).await,
        all_orders(&bob).await,
        positions(&alice).await,
        positions(&bob).await,
        alice.get("/fills").await.1,
    );
    let want_book = json!({
        "bids": [["99.50", "2"], ["99.00", "1"]],
        "asks": [["100.00", "13"], ["100.05", "4"]],
    });
    assert_eq!(book_eventually(&alice, &want_book).await, want_book);
    app.shutdown().await.expect("clean shutdown");

    let app = start_with(&cfg).await;
    let alice = Client::new(&app, "alice", "trader");
    let bob = Client::new(&app, "bob", "trader");
    let after = (
        all_orders(&alice).await,
        all_orders(&bob).await,
        positions(&alice).await,
        positions(&bob).await,
        alice.get("/fills").await.1,
    );
    assert_eq!(before, after, "orders, positions and fills are exactly as before");
    assert_eq!(
        book_eventually(&alice, &want_book).await,
        want_book,
        "the book is rebuilt"
    );

    // Idempotency keys survive too: the same key and body answer as the first time,
    // without placing anything; another body under the key is refused.
    let (s, again) = bob.post_keyed(Some("restart-key-1"), &keyed).await;
    assert_eq!((s, &again), (StatusCode::CREATED, &keyed_answer));
    let (s, v) = bob.post_keyed(Some("restart-key-1"), &limit("buy", "99.00", "2")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    assert_eq!(all_orders(&bob).await.len(), before.1.len(), "nothing new was placed");

    // Time priority survived: the older order at 100.00 fills first.
    let (_, v) = bob.post("/orders", limit("buy", "100.00", "7")).await;
    assert_eq!(v["order"]["status"], "filled", "{v}");
    let (_, o) = alice.get(&format!("/orders/{first_id}")).await;
    assert_eq!(o["status"], "filled", "{o}");
    // New ids continue after the recovered ones.
    let new_id: u64 = v["order"]["order_id"].as_str().expect("id").parse().expect("numeric");
    let max_old = before
        .0
        .iter()
        .chain(&before.1)
        .filter_map(|o| o["order_id"].as_str()?.parse::<u64>().ok())
        .max()
        .expect("orders");
    assert!(new_id > max_old, "{new_id} after {max_old}");
    app.shutdown().await.expect("clean shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

/// What a client was told about an order, last.
#[derive(Debug, Clone)]
struct Acked {
    status: String,
    filled: String,
    price: String,
    qty: String,
    side: String,
}

fn acked(order: &Value) -> Option<(String, Acked)> {
    Some((
        order["order_id"].as_str()?.to_owned(),
        Acked {
            status: order["status"].as_str()?.to_owned(),
            filled: order["filled_qty"].as_str()?.to_owned(),
            price: order["price"].as_str()?.to_owned(),
            qty: order["qty"].as_str()?.to_owned(),
            side: order["side"].as_str()?.to_owned(),
        },
    ))
}

/// Places crossing orders (and cancels some) until the server goes away; returns
/// every acknowledgement it received.
async fn trade_until_killed(c: Client, seed: u64) -> Vec<(String, Acked)> {
    let mut out = Vec::new();
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    loop {
        let side = if next() % 2 == 0 { "buy" } else { "sell" };
        let price = format!("100.{:02}", (next() % 4) * 5);
        let qty = (1 + next() % 5).to_string();
        let Some((s, v)) = c
            .try_call(Method::POST, "/orders", Some(limit(side, &price, &qty)))
            .await
        else {
            return out;
        };
        if s == StatusCode::CREATED {
            out.extend(acked(&v["order"]));
            if next() % 3 == 0 {
                if let Some(id) = v["order"]["order_id"].as_str() {
                    match c.try_call(Method::DELETE, &format!("/orders/{id}"), None).await {
                        None => return out,
                        Some((StatusCode::OK, v)) => out.extend(acked(&v["order"])),
                        Some(_) => {}
                    }
                }
            }
        }
    }
}

fn dec(s: &str) -> i64 {
    // SBZ quantities are whole units.
    s.parse().expect("integer qty")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_acknowledged() {
    let root = fresh_dir("crash");
    std::fs::create_dir_all(&root).expect("dir");
    let journal = root.join("journal");
    let config = root.join("config.toml");
    std::fs::write(&config, with_journal(&journal)).expect("config");
    let log = root.join("server.log");
    let mut acks: HashMap<String, Acked> = HashMap::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    for round in 0..10 {
        let mut server = spawn_server(&config, &log, &[]).await;
        let mut clients = Vec::new();
        for (k, account) in ["alice", "bob", "alice", "bob"].into_iter().enumerate() {
            let c = Client::at(server.base.clone(), account, "trader");
            clients.push(tokio::spawn(trade_until_killed(c, seed.wrapping_add(k as u64 * 7919))));
        }
        seed = seed.rotate_left(17) ^ round;
        tokio::time::sleep(Duration::from_millis(150 + seed % 600)).await;
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        for c in clients {
            for (id, a) in c.await.expect("client") {
                acks.insert(id, a);
            }
        }
    }
    assert!(acks.len() > 20, "the clients got work done ({} acks)", acks.len());

    // Restart once more and check everything acknowledged against what came back.
    let mut server = spawn_server(&config, &log, &[]).await;
    let alice = Client::at(server.base.clone(), "alice", "trader");
    let bob = Client::at(server.base.clone(), "bob", "trader");
    let mut recovered: HashMap<String, Value> = HashMap::new();
    let mut net: HashMap<&str, i64> = HashMap::new();
    for (name, c) in [("alice", &alice), ("bob", &bob)] {
        for o in all_orders(c).await {
            let filled = dec(o["filled_qty"].as_str().expect("filled"));
            let signed = if o["side"] == "buy" { filled } else { -filled };
            *net.entry(name).or_default() += signed;
            recovered.insert(o["order_id"].as_str().expect("id").to_owned(), o);
        }
    }
    for (id, a) in &acks {
        let o = recovered
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged order {id} ({a:?}) is missing after recovery"));
        assert_eq!(
            (&a.side, &a.price, &a.qty),
            (
                &o["side"].as_str().unwrap_or("").to_owned(),
                &o["price"].as_str().unwrap_or("").to_owned(),
                &o["qty"].as_str().unwrap_or("").to_owned()
            ),
            "order {id}"
        );
        // Later fills may have happened after the acknowledgement; never fewer.
        assert!(
            dec(o["filled_qty"].as_str().unwrap_or("0")) >= dec(&a.filled),
            "order {id}: {a:?} vs {o}"
        );
        if matches!(a.status.as_str(), "filled" | "cancelled") {
            assert_eq!(o["status"], a.status.as_str(), "order {id} was final");
            assert_eq!(o["filled_qty"], a.filled.as_str(), "order {id} was final");
        }
    }
    // Nothing half-applied: positions are exactly the orders' fills, and every trade
    // had two sides.
    for (name, c) in [("alice", &alice), ("bob", &bob)] {
        let (_, p) = c.get("/positions").await;
        let qty = p["positions"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["symbol"] == "SBZ"))
            .map_or(0, |p| dec(p["qty"].as_str().unwrap_or("0")));
        assert_eq!(
            qty,
            net.get(name).copied().unwrap_or(0),
            "{name}'s position equals its fills"
        );
    }
    assert_eq!(
        net.get("alice").copied().unwrap_or(0),
        -net.get("bob").copied().unwrap_or(0),
        "every fill has a counterparty"
    );
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();

    // The operator's tool agrees, replay included.
    let verify = Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(["journal", "verify"])
        .arg(&journal)
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::inherit())
        .output()
        .expect("verify runs");
    assert!(verify.status.success(), "journal verify failed");
    let summary: Value = serde_json::from_slice(&verify.stdout).expect("JSON summary");
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["replayed"], true);
    assert!(summary["runs"].as_u64().unwrap_or(0) >= 11, "{summary}");
    let dump = Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(["journal", "dump", "--to", "3"])
        .arg(&journal)
        .output()
        .expect("dump runs");
    assert!(dump.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["seq"], 1);
    assert!(lines[0]["record"]["Start"].is_object(), "{}", lines[0]);
    let _ = std::fs::remove_dir_all(PathBuf::from(&root));
}
