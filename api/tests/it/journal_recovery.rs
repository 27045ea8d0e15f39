//! Durability over real sockets: orders, fills, positions, the internal venue's book
//! and admin changes (risk limits, trading states, kill switches) survive a restart,
//! and orders without a client id keep working after it; the real binary, killed with
//! SIGKILL at random points while clients trade and admins change things, comes back
//! with every acknowledged order, fill and admin change, nothing half-applied, never a
//! duplicate generated client id, and a journal that `stocksblitz journal verify`
//! accepts; a damaged journal makes `journal verify` fail and start-up refuse, naming
//! the segment and byte offset; a journal trimmed by retention verifies from its first
//! kept segment and without a fitting snapshot is refused saying what to restore; and
//! `scripts/backup.sh` backs up a running server that `--restore` brings back whole.

use crate::common;

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
        lift_order_limits(d);
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

/// Risk limits an admin sets at run time (distinct from the configuration's).
fn admin_limits(max_order_qty: u32) -> Value {
    json!({
        "max_order_qty": max_order_qty.to_string(), "max_order_notional": "9000000", "price_collar_bps": 700,
        "max_open_orders": 100000, "max_position_qty": "1000000", "max_gross_exposure": "50000000",
        "daily_loss_limit": "1000000", "orders_per_sec": 100000, "cancels_per_sec": 100000,
        "self_trade": "cancel_both"
    })
}

/// An account's risk view: state, kill switch and limits.
async fn risk(c: &Client) -> Value {
    let (s, v) = c.get("/accounts/me/risk").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    json!({ "trading_state": v["trading_state"], "kill_switch": v["kill_switch"], "limits": v["limits"] })
}

async fn admin(c: &Client, method: Method, path: &str, body: Value) {
    let (s, v) = c.call(method, path, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
}

/// Places `n` orders without a client id (as the dashboard does): every one is
/// accepted, with an id none of `taken` has; returns the ids.
async fn orders_without_client_id(c: &Client, n: usize, taken: &std::collections::HashSet<String>) -> Vec<String> {
    let mut ids = Vec::new();
    for k in 0..n {
        let (s, v) = c
            .post("/orders", limit("buy", &format!("99.{:02}", 10 + 5 * k), "1"))
            .await;
        assert_eq!(
            s,
            StatusCode::CREATED,
            "an order without a client id after a restart: {v}"
        );
        let id = v["order"]["client_order_id"].as_str().expect("generated id").to_owned();
        assert!(!taken.contains(&id), "generated client id {id} was used before");
        ids.push(id);
    }
    ids
}

fn client_ids(orders: &[Value]) -> std::collections::HashSet<String> {
    orders
        .iter()
        .filter_map(|o| o["client_order_id"].as_str().map(str::to_owned))
        .collect()
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
    // Admin changes at run time: bob's limits, ops's trading state, a kill switch on
    // INFY and on ops's account.
    let ops_admin = Client::new(&app, "ops", "admin");
    admin(&ops_admin, Method::PUT, "/admin/risk-limits/bob", admin_limits(5000)).await;
    admin(
        &ops_admin,
        Method::PUT,
        "/admin/trading-state/ops",
        json!({"state": "reduce_only"}),
    )
    .await;
    let infy = json!({"scope": "instrument", "symbol": "INFY", "active": true});
    admin(&ops_admin, Method::POST, "/admin/kill-switch", infy).await;
    let ops_account = json!({"scope": "account", "account": "ops", "active": true});
    admin(&ops_admin, Method::POST, "/admin/kill-switch", ops_account).await;
    let ops = Client::new(&app, "ops", "trader");
    let admin_before = (risk(&bob).await, risk(&ops).await, risk(&alice).await);
    assert_eq!(admin_before.0["limits"]["max_order_qty"], "5000.00000000");
    assert_eq!(admin_before.1["trading_state"], "reduce_only");
    assert_eq!(admin_before.1["kill_switch"], true);

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
    let ops = Client::new(&app, "ops", "trader");
    assert_eq!(
        (risk(&bob).await, risk(&ops).await, risk(&alice).await),
        admin_before,
        "limits, trading states and kill switches set at run time survive"
    );
    let (s, v) = alice
        .post(
            "/orders",
            json!({ "symbol": "INFY", "side": "buy", "type": "limit", "price": "1520.00", "qty": "1" }),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("KILL_SWITCH_ACTIVE")),
        "the instrument kill switch survives"
    );
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
    // Orders without a client id (all of the above) keep working after the restart,
    // with ids never used before.
    let mut taken = client_ids(&all_orders(&alice).await);
    taken.extend(client_ids(&all_orders(&bob).await));
    assert!(taken.len() >= 8, "{taken:?}");
    orders_without_client_id(&alice, 3, &taken).await;
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

/// Places crossing orders without client ids (and cancels some) until the server goes
/// away; returns every acknowledgement it received, and every order refused as a
/// duplicate client order id (there must be none).
async fn trade_until_killed(c: Client, seed: u64) -> (Vec<(String, Acked)>, Vec<Value>) {
    let mut out = Vec::new();
    let mut duplicates = Vec::new();
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
            return (out, duplicates);
        };
        if v["error"]["code"] == "DUPLICATE_CLIENT_ORDER_ID" {
            duplicates.push(v.clone());
        }
        if s == StatusCode::CREATED {
            out.extend(acked(&v["order"]));
            if next() % 3 == 0 {
                if let Some(id) = v["order"]["order_id"].as_str() {
                    match c.try_call(Method::DELETE, &format!("/orders/{id}"), None).await {
                        None => return (out, duplicates),
                        Some((StatusCode::OK, v)) => out.extend(acked(&v["order"])),
                        Some(_) => {}
                    }
                }
            }
        }
    }
}

/// The admin changes of the round before the kill are all still in force.
async fn admin_changes_survived(ops: &Client, alice: &Client, want: &(Value, bool), round: u32) {
    assert_eq!(
        &risk(ops).await,
        &want.0,
        "round {round}: ops's limits, state and kill switch"
    );
    let infy = json!({ "symbol": "INFY", "side": "buy", "type": "limit", "price": "1520.00", "qty": "1" });
    let (s, v) = alice.post("/orders/test", infy).await;
    let code = v["error"]["code"].as_str();
    if want.1 {
        assert_eq!(
            (s, code),
            (StatusCode::FORBIDDEN, Some("KILL_SWITCH_ACTIVE")),
            "round {round}: {v}"
        );
    } else {
        assert_ne!(code, Some("KILL_SWITCH_ACTIVE"), "round {round}: released, {v}");
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
    // What the admin changes acknowledged before the last kill left behind.
    let mut admin_expected: Option<(Value, bool)> = None;
    for round in 0..10u32 {
        let mut server = spawn_server(&config, &log, &[]).await;
        let ops = Client::at(server.base.clone(), "ops", "trader");
        let ops_admin = Client::at(server.base.clone(), "ops", "admin");
        let alice = Client::at(server.base.clone(), "alice", "trader");
        if let Some(want) = &admin_expected {
            admin_changes_survived(&ops, &alice, want, round).await;
        }
        // Orders without a client id work at once after the restart, with new ids.
        for c in [&alice, &Client::at(server.base.clone(), "bob", "trader")] {
            let taken = client_ids(&all_orders(c).await);
            orders_without_client_id(c, 1, &taken).await;
        }
        // An admin changes ops's limits, trading state and kill switch and the INFY kill
        // switch (acknowledged, so journaled) while the others trade.
        let state = ["reduce_only", "blocked", "throttled", "active"][round as usize % 4];
        admin(
            &ops_admin,
            Method::PUT,
            "/admin/risk-limits/ops",
            admin_limits(1000 + round),
        )
        .await;
        admin(
            &ops_admin,
            Method::PUT,
            "/admin/trading-state/ops",
            json!({ "state": state }),
        )
        .await;
        let killed = round % 3 == 0;
        let body = json!({"scope": "account", "account": "ops", "active": killed});
        admin(&ops_admin, Method::POST, "/admin/kill-switch", body).await;
        let infy = round % 2 == 0;
        let body = json!({"scope": "instrument", "symbol": "INFY", "active": infy});
        admin(&ops_admin, Method::POST, "/admin/kill-switch", body).await;
        let view = risk(&ops).await;
        assert_eq!(
            (
                view["trading_state"].as_str(),
                &view["kill_switch"],
                &view["limits"]["max_order_qty"]
            ),
            (
                Some(state),
                &json!(killed),
                &json!(format!("{}.00000000", 1000 + round))
            ),
            "{view}"
        );
        admin_expected = Some((view, infy));
        let mut clients = Vec::new();
        for (k, account) in ["alice", "bob", "alice", "bob"].into_iter().enumerate() {
            let c = Client::at(server.base.clone(), account, "trader");
            clients.push(tokio::spawn(trade_until_killed(c, seed.wrapping_add(k as u64 * 7919))));
        }
        seed = seed.rotate_left(17) ^ u64::from(round);
        tokio::time::sleep(Duration::from_millis(150 + seed % 600)).await;
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        for c in clients {
            let (got, duplicates) = c.await.expect("client");
            assert!(
                duplicates.is_empty(),
                "orders without a client id refused: {duplicates:?}"
            );
            for (id, a) in got {
                acks.insert(id, a);
            }
        }
    }
    assert!(acks.len() > 20, "the clients got work done ({} acks)", acks.len());

    // Restart once more and check everything acknowledged against what came back.
    let mut server = spawn_server(&config, &log, &[]).await;
    let alice = Client::at(server.base.clone(), "alice", "trader");
    let bob = Client::at(server.base.clone(), "bob", "trader");
    let ops = Client::at(server.base.clone(), "ops", "trader");
    if let Some(want) = &admin_expected {
        admin_changes_survived(&ops, &alice, want, 10).await;
    }
    // Every generated client id is unique within its account, across all the restarts.
    for c in [&alice, &bob] {
        let orders = all_orders(c).await;
        let ids = client_ids(&orders);
        assert_eq!(ids.len(), orders.len(), "a client order id repeats");
    }
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

/// Records of a segment file: (offset, length).
fn records_of(segment: &[u8]) -> Vec<(usize, usize)> {
    use stocksblitz_engine::journal::format::{read_record, SEGMENT_HEADER};
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER;
    while at < segment.len() {
        let r = read_record(&segment[at..]).expect("an intact record");
        out.push((at, r.len));
        at += r.len;
    }
    out
}

fn verify(journal: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(["journal", "verify"])
        .arg(journal)
        .output()
        .expect("verify runs")
}

/// Starts the real binary on `config` and waits for it to exit by itself (start-up
/// refused); returns its log.
async fn refused_start(config: &Path, log: &Path) -> String {
    let out = std::fs::File::create(log).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(["serve", "--config"])
        .arg(config)
        .env("STOCKSBLITZ_API_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env_remove("SBZ_JWT_SECRET")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("server runs");
    for _ in 0..600 {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "start-up must fail");
            return std::fs::read_to_string(log).unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "the server started on a damaged journal:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_fails_verify_and_stops_start_up() {
    let root = fresh_dir("damaged");
    std::fs::create_dir_all(&root).expect("dir");
    let journal = root.join("journal");
    let config = root.join("config.toml");
    std::fs::write(&config, with_journal(&journal)).expect("config");
    let app = start_with(&with_journal(&journal)).await;
    let alice = Client::new(&app, "alice", "trader");
    for k in 0..12 {
        let (s, v) = alice
            .post("/orders", limit("buy", &format!("99.{:02}", k * 5), "1"))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    app.shutdown().await.expect("clean shutdown");
    let segment = stocksblitz_engine::journal::reader::segments(&journal)
        .expect("segments")
        .pop()
        .expect("a segment")
        .path;
    let name = segment.file_name().and_then(|n| n.to_str()).expect("name").to_owned();
    let orig = std::fs::read(&segment).expect("read");
    let recs = records_of(&orig);
    assert!(recs.len() >= 12, "{} records", recs.len());
    let out = verify(&journal);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The issue's reports: a length field one too large in the middle of the segment,
    // and the last three records zeroed. Both are damage, not a torn tail.
    let (mid, _) = recs[recs.len() / 2];
    let mut longer = orig.clone();
    let len = u32::from_le_bytes(longer[mid + 8..mid + 12].try_into().expect("4 bytes"));
    longer[mid + 8..mid + 12].copy_from_slice(&(len + 1).to_le_bytes());
    let (tail_from, _) = recs[recs.len() - 3];
    let mut zeroed = orig.clone();
    zeroed[tail_from..].fill(0);
    for (what, bad, offset) in [("length + 1", longer, mid), ("last three zeroed", zeroed, tail_from)] {
        std::fs::write(&segment, &bad).expect("write");
        let out = verify(&journal);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{what}: journal verify must fail");
        assert!(
            err.contains(&name) && err.contains(&format!("at byte {offset}")),
            "{what}: names the segment and offset: {err}"
        );
        let log = refused_start(&config, &root.join("refused.log")).await;
        assert!(
            log.contains(&name) && log.contains(&format!("at byte {offset}")),
            "{what}: start-up names the segment and offset: {log}"
        );
        assert_eq!(std::fs::read(&segment).expect("read"), bad, "{what}: nothing was cut");
    }

    // A genuinely torn tail (the file ends inside the last record) is no damage:
    // verify reports it and succeeds, start-up cuts it and runs.
    let (last_at, last_len) = recs[recs.len() - 1];
    std::fs::write(&segment, &orig[..last_at + last_len / 2]).expect("write");
    let out = verify(&journal);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(summary["torn_tail"]["offset"], last_at as u64, "{summary}");
    let log = root.join("server.log");
    let mut server = spawn_server(&config, &log, &[]).await;
    let alice = Client::at(server.base.clone(), "alice", "trader");
    assert!(all_orders(&alice).await.len() >= 11);
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    let _ = std::fs::remove_dir_all(&root);
}

/// The feeds connect only once the order journal is recovered and the engine runs: a
/// feed started first filled its input ring during a long recovery (the soak saw
/// 486,234 Kite ticks dropped after one restart, and the backlog then overflowed the
/// engine's API output). Read from the real binary's log, for a fresh journal and
/// for a restart on a journal with orders in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_connect_only_after_the_journal_is_recovered() {
    let root = fresh_dir("feeds-after-recovery");
    std::fs::create_dir_all(&root).expect("dir");
    let journal = root.join("journal");
    let config = root.join("config.toml");
    std::fs::write(&config, with_journal(&journal)).expect("config");
    for run in 0..2 {
        let log = root.join(format!("run{run}.log"));
        let server = spawn_server(&config, &log, &[]).await;
        if run == 0 {
            let c = Client::at(server.base.clone(), "alice", "trader");
            for k in 0..20 {
                let price = format!("{}.00", 90 + k % 5);
                let (s, v) = c.post("/orders", limit("buy", &price, "1")).await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
            }
        }
        // Every feed has connected by the time it is LIVE.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let connected = text.lines().filter(|l| l.contains(r#""message":"connected""#)).count();
            if connected >= 3 || std::time::Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        drop(server);
        let lines: Vec<&str> = text.lines().collect();
        let recovered = lines
            .iter()
            .position(|l| l.contains("order journal recovered"))
            .unwrap_or_else(|| panic!("run {run}: no recovery line:\n{text}"));
        let connected: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(r#""message":"connected""#))
            .map(|(i, _)| i)
            .collect();
        assert!(connected.len() >= 3, "run {run}: the three feeds connect:\n{text}");
        assert!(
            connected.iter().all(|&i| i > recovered),
            "run {run}: a feed connected before the journal was recovered:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(root);
}

/// A journal and audit log under `root`, for the real binary.
fn with_data(root: &Path) -> String {
    let journal = root.join("journal");
    let audit = root.join("audit.log");
    let mut doc: toml::Table = toml::from_str(&with_journal(&journal)).expect("toml");
    doc["audit"]["path"] = toml::Value::String(audit.display().to_string());
    toml::to_string(&doc).expect("toml")
}

/// Runs `scripts/backup.sh` with `args` (on a blocking thread: the server under test
/// keeps being served meanwhile).
async fn backup_sh(args: &[&Path]) -> std::process::Output {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.as_os_str().to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/backup.sh"))
            .args(args)
            .env("SBZ_BIN", env!("CARGO_BIN_EXE_stocksblitz"))
            .output()
            .expect("backup.sh runs")
    })
    .await
    .expect("backup.sh")
}

/// `scripts/backup.sh` on a running server while a client keeps placing orders, then
/// `--restore` into a fresh directory and the real binary started on it: every order
/// acknowledged before the backup began is there as it was, nothing that was never
/// acknowledged is, fills and positions match, the audit chain verifies and continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_running_server_restores_orders_and_the_audit_chain() {
    let root = fresh_dir("backup");
    let (live, restored_dir) = (root.join("live"), root.join("restored"));
    std::fs::create_dir_all(&live).expect("dir");
    std::fs::create_dir_all(&restored_dir).expect("dir");
    let config = root.join("live.toml");
    std::fs::write(&config, with_data(&live)).expect("config");
    let log = root.join("server.log");
    let server = spawn_server(&config, &log, &[]).await;
    let alice = Client::at(server.base.clone(), "alice", "trader");
    let bob = Client::at(server.base.clone(), "bob", "trader");
    for k in 0..20 {
        let (s, v) = alice
            .post("/orders", limit("sell", &format!("100.{:02}", 5 * k), "5"))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = bob.post("/orders", limit("buy", "100.05", "10")).await;
    assert_eq!(
        (s, &v["order"]["status"]),
        (StatusCode::CREATED, &json!("filled")),
        "{v}"
    );
    let (_, cancel) = alice.post("/orders", limit("sell", "105.00", "1")).await;
    let id = cancel["order"]["order_id"].as_str().expect("id").to_owned();
    assert_eq!(
        alice.call(Method::DELETE, &format!("/orders/{id}"), None).await.0,
        StatusCode::OK
    );
    let before = (
        all_orders(&alice).await,
        all_orders(&bob).await,
        positions(&alice).await,
        positions(&bob).await,
    );

    // Orders keep arriving while the backup copies (bids below every ask: nothing
    // already acknowledged changes).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (Client::at(server.base.clone(), "bob", "trader"), stop.clone());
        tokio::spawn(async move {
            let mut placed = Vec::new();
            let mut k = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (s, v) = c
                    .post("/orders", limit("buy", &format!("99.{:02}", 5 * (k % 20)), "1"))
                    .await;
                if s == StatusCode::CREATED {
                    placed.push(v["order"]["order_id"].as_str().unwrap_or_default().to_owned());
                }
                k += 1;
            }
            placed
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = root.join("backup");
    let (journal, audit) = (live.join("journal"), live.join("audit.log"));
    let backup = backup_sh(&[
        Path::new("--journal"),
        &journal,
        Path::new("--audit"),
        &audit,
        Path::new("--out"),
        &out,
        Path::new("--config"),
        &config,
    ])
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = writer.await.expect("writer");
    assert!(!during.is_empty(), "orders were acknowledged while the backup ran");
    assert!(
        backup.status.success(),
        "backup failed:\n{}{}",
        String::from_utf8_lossy(&backup.stdout),
        String::from_utf8_lossy(&backup.stderr)
    );
    let verified: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("journal-verify.json")).expect("summary"))
            .expect("json");
    assert_eq!(
        (verified["status"].as_str(), verified["replayed"].as_bool()),
        (Some("ok"), Some(true))
    );
    assert!(out.join("SHA256SUMS").exists() && out.join("audit-verify.json").exists());
    stop_gracefully(server);

    // Restore into fresh places and start there.
    let (journal, audit) = (restored_dir.join("journal"), restored_dir.join("audit.log"));
    let restore_args = [
        Path::new("--restore"),
        &out,
        Path::new("--journal"),
        &journal,
        Path::new("--audit"),
        &audit,
    ];
    let restore = backup_sh(&restore_args).await;
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    // Restoring over existing data is refused.
    let again = backup_sh(&restore_args).await;
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let config2 = root.join("restored.toml");
    std::fs::write(&config2, with_data(&restored_dir)).expect("config");
    let server = spawn_server(&config2, &log, &[]).await;
    let alice = Client::at(server.base.clone(), "alice", "trader");
    let bob = Client::at(server.base.clone(), "bob", "trader");
    let (a, b) = (all_orders(&alice).await, all_orders(&bob).await);
    assert_eq!(a, before.0, "alice's orders as acknowledged before the backup");
    assert_eq!(positions(&alice).await, before.2);
    assert_eq!(positions(&bob).await, before.3);
    // Bob's: everything from before, then only orders that were acknowledged during it.
    let ids = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|o| o["order_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (restored_bob, before_bob) = (ids(&b), ids(&before.1));
    for id in &before_bob {
        assert!(
            restored_bob.contains(id),
            "order {id} acknowledged before the backup is missing"
        );
    }
    for id in restored_bob.iter().filter(|id| !before_bob.contains(id)) {
        assert!(during.contains(id), "order {id} in the restore was never acknowledged");
    }
    // The restored server keeps trading, journaling and auditing.
    let (s, v) = alice.post("/orders", limit("sell", "101.00", "1")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    stop_gracefully(server);
    let audit = Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(["audit", "verify"])
        .arg(restored_dir.join("audit.log"))
        .output()
        .expect("audit verify");
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    let summary: Value = serde_json::from_slice(&audit.stdout).expect("json");
    assert!(summary["entries"].as_u64().is_some_and(|n| n >= 23), "{summary}");
    let journal = verify(&restored_dir.join("journal"));
    assert!(journal.status.success(), "{}", String::from_utf8_lossy(&journal.stderr));
    let _ = std::fs::remove_dir_all(root);
}

/// Stops the real binary with SIGTERM and waits for it (SIGKILL after 30 s).
fn stop_gracefully(mut server: Server) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    for _ in 0..600 {
        if let Ok(Some(_)) = server.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A journal of `records` start records in tiny segments (a few records each).
fn small_segments(dir: &Path, records: i64) {
    use stocksblitz_engine::journal::{self, FsyncPolicy, JournalWriter, RecordRef, RunStart};
    let empty = journal::scan(dir, |_, _| Ok(())).expect("empty");
    let mut w = JournalWriter::open(dir, &empty, FsyncPolicy::None, 300).expect("writer");
    for k in 0..records {
        let run = RunStart {
            format: journal::FORMAT_VERSION,
            at: stocksblitz_engine::UnixNanos(1_700_000_000_000_000_000 + k),
            engine: "test".into(),
            instruments: 1,
            accounts: 1,
            max_orders: 16,
            limits: Vec::new(),
        };
        w.append(&RecordRef::Start(&run)).expect("append");
        w.commit().expect("commit");
    }
    drop(w);
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

/// A journal whose older segments retention removed: `journal verify` checks the chain
/// from the first kept segment and says where it starts; recovering it (`--config`, as
/// start-up) without a snapshot that fits is refused with what to restore, and so is
/// the server's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_verify_checks_a_trimmed_journal_from_its_first_kept_segment() {
    use stocksblitz_engine::journal;
    let root = fresh_dir("trimmed");
    let dir = root.join("journal");
    small_segments(&dir, 30);
    let segments = journal::reader::segments(&dir).expect("segments");
    assert!(segments.len() >= 4, "{} segments", segments.len());
    let full: Value = serde_json::from_slice(&verify(&dir).stdout).expect("summary");
    for s in &segments[..2] {
        std::fs::remove_file(&s.path).expect("trim");
    }
    let first = segments[2].first_seq;

    let out = verify(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["first_record"], first, "{v}");
    assert_eq!(v["records"], 30 - (first - 1), "{v}");
    assert_eq!(v["head_hash"], full["head_hash"], "the same chain to the same head");
    // A record altered in a kept segment still breaks the chain.
    let kept = &segments[3].path;
    let original = std::fs::read(kept).expect("read");
    let mut bad = original.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x01;
    std::fs::write(kept, &bad).expect("write");
    assert!(!verify(&dir).status.success(), "damage in a trimmed journal is caught");
    std::fs::write(kept, &original).expect("restore");

    // As start-up would: no snapshot, and a full replay needs record 1.
    let config = root.join("config.toml");
    std::fs::write(&config, with_journal(&dir)).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(["journal", "verify"])
        .arg(&dir)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("verify runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("starts at record {first}"))
            && err.contains("there is no snapshot")
            && err.contains("archive/"),
        "{err}"
    );
    let log = refused_start(&config, &root.join("server.log")).await;
    assert!(log.contains(&format!("starts at record {first}")), "{log}");
    let _ = std::fs::remove_dir_all(root);
}

/// What backup.sh copies when retention runs in the middle of it: segments moved to
/// `archive/` between the listing and the copy leave the main copy with a hole, which
/// the script fills from the archive copy; segments deleted meanwhile take the older
/// copies with them. Either way the backup verifies (with the same head), and `archive/`
/// is backed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_retention_runs_verifies() {
    use stocksblitz_engine::journal;
    let root = fresh_dir("backup-retention");
    let dir = root.join("journal");
    small_segments(&dir, 30);
    let segments = journal::reader::segments(&dir).expect("segments");
    assert!(segments.len() >= 5);
    let head: Value = serde_json::from_slice(&verify(&dir).stdout).expect("summary");
    let name = |i: usize| segments[i].path.file_name().expect("name").to_owned();
    // As the copy saw it: segment 0 in the main directory (copied before it moved),
    // segment 1 already in archive/ (moved before its turn came).
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).expect("archive");
    std::fs::rename(&segments[1].path, archive.join(name(1))).expect("move");
    let out = root.join("backup");
    let audit = root.join("audit.log");
    let backup = backup_sh(&[
        Path::new("--journal"),
        &dir,
        Path::new("--audit"),
        &audit,
        Path::new("--out"),
        &out,
    ])
    .await;
    assert!(backup.status.success(), "{}", String::from_utf8_lossy(&backup.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(out.join("journal-verify.json")).expect("summary"))
        .expect("json");
    assert_eq!(
        (v["first_record"].as_u64(), &v["head_hash"]),
        (Some(1), &head["head_hash"]),
        "{v}"
    );
    assert!(
        out.join("journal").join(name(1)).exists(),
        "the hole was filled from archive/"
    );

    // Deleted instead (retention = "delete"): listed, then gone when its turn came (a
    // dangling link stands for it). The copy of segment 0 goes too, so the backup starts
    // at segment 2 with no hole.
    std::fs::remove_dir_all(&archive).expect("no archive");
    std::os::unix::fs::symlink(root.join("deleted"), &segments[1].path).expect("link");
    let out = root.join("backup-2");
    let backup = backup_sh(&[
        Path::new("--journal"),
        &dir,
        Path::new("--audit"),
        &audit,
        Path::new("--out"),
        &out,
    ])
    .await;
    assert!(backup.status.success(), "{}", String::from_utf8_lossy(&backup.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(out.join("journal-verify.json")).expect("summary"))
        .expect("json");
    assert_eq!(
        (v["first_record"].as_u64(), &v["head_hash"]),
        (Some(segments[2].first_seq), &head["head_hash"]),
        "{v}"
    );
    assert!(!out.join("journal").join(name(0)).exists());
    let _ = std::fs::remove_dir_all(root);
}
