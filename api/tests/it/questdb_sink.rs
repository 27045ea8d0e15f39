//! The QuestDB sink over real sockets: exact ILP lines (recording endpoint), table
//! creation with DEDUP keys, refusal to start when the store is unreachable, and
//! against a real VictoriaMetrics: every row stored exactly once, through a server
//! stop and restart mid-stream, spill files included.

use crate::common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::ilp::{recorder, Victoria};
use common::*;
use stocksblitz_api::config::questdb::{IlpAuth, IlpTransport, QuestDbSetup};
use stocksblitz_api::sink::{self, ilp::Names, row::SinkRow, QuestDbSink, SinkStats};
use stocksblitz_engine::orders::{
    AccountId, ClientOrderId, Liquidity, OrderEventKind, OrderId, OrderStatus, OrderType,
};
use stocksblitz_engine::ring::{ring, RingProducer};
use stocksblitz_engine::{
    Aggressor, DataQuality, EngineEvent, EventData, InstrumentId, InstrumentRegistry, Price, Qty, Side, UnixNanos,
};
use stocksblitz_testkit::instruments::crypto_spot;

fn registry() -> InstrumentRegistry {
    InstrumentRegistry::from_config(&[crypto_spot("BTCUSDT", "binance"), crypto_spot("ETH-USD", "binance")])
        .expect("registry")
}

fn setup(addr: &str, spill: &std::path::Path, memory_rows: usize) -> QuestDbSetup {
    QuestDbSetup {
        transport: IlpTransport::Http,
        addr: addr.to_owned(),
        protocol_version: 1,
        create_tables: false,
        batch_rows: 200,
        flush_interval: Duration::from_millis(20),
        memory_rows,
        ring_capacity: 65_536,
        spill_dir: spill.to_path_buf(),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        request_timeout: Duration::from_millis(2_000),
        orders: false,
        auth: IlpAuth::None,
        idle: stocksblitz_api::config::questdb::DEFAULT_IDLE,
    }
}

/// The sizes that differ between the tests' `[questdb]` sections.
struct Sizes {
    batch_rows: u32,
    flush_ms: u32,
    memory_rows: u32,
    timeout_ms: u32,
    orders: bool,
}

/// A `[questdb]` section sending to `addr` over ILP/HTTP (protocol 1, tables not
/// created), spilling to `spill`, retrying quickly.
fn questdb_section(addr: &str, spill: &std::path::Path, z: Sizes) -> toml::Value {
    let q: toml::Table = toml::from_str(&format!(
        r#"
        url = "http://{addr}"
        protocol_version = 1
        create_tables = false
        batch_rows = {}
        flush_interval_ms = {}
        memory_rows = {}
        spill_dir = "{}"
        retry_initial_ms = 50
        retry_max_ms = 1000
        request_timeout_ms = {}
        orders = {}
        "#,
        z.batch_rows,
        z.flush_ms,
        z.memory_rows,
        spill.display(),
        z.timeout_ms,
        z.orders
    ))
    .expect("toml");
    toml::Value::Table(q)
}

/// A sink thread fed through a real engine output ring.
fn sink(
    setup: QuestDbSetup,
) -> (
    RingProducer<EngineEvent>,
    Arc<SinkStats>,
    Arc<AtomicBool>,
    stocksblitz_engine::agent::ThreadHandle,
) {
    let (p, c) = ring("questdb", 1 << 16);
    let stats = Arc::new(SinkStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let s = QuestDbSink::new(
        setup,
        None,
        Names::new(&registry(), &["alice".to_owned()]),
        Some(c),
        None,
        Arc::clone(&stats),
    )
    .expect("sink");
    let join = s.spawn(Arc::clone(&stop)).expect("thread");
    (p, stats, stop, join)
}

fn trade(instrument: u32, ts_ms: i64, n: u64) -> EngineEvent {
    EngineEvent {
        seq: n,
        instrument: InstrumentId(instrument),
        quality: DataQuality::Live,
        exchange_ts: UnixNanos(ts_ms * 1_000_000),
        recv_ts: UnixNanos(ts_ms * 1_000_000 + 250_000),
        engine_ts: UnixNanos::UNKNOWN,
        data: EventData::Trade {
            price: Price(10_050 + (n % 7) as i64),
            qty: Qty(250),
            trade_id: n,
            aggressor: Aggressor::Buy,
        },
    }
}

fn now_ms() -> i64 {
    UnixNanos::now().0 / 1_000_000
}

fn stop_sink(stop: &AtomicBool, join: stocksblitz_engine::agent::ThreadHandle) {
    stop.store(true, std::sync::atomic::Ordering::Release);
    join.join().expect("sink thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_become_exact_ilp_lines() {
    let (addr, rec) = recorder().await;
    let dir = fresh_dir("ilp-lines");
    let names = Names::new(&registry(), &["alice".to_owned()]);
    let ts = 1_796_205_600_123_456_789i64;
    let rows = [
        SinkRow::Trade {
            ts,
            recv: ts + 1_000,
            instrument: InstrumentId(0),
            price: Price(10_050),
            qty: Qty(250),
            trade_id: 42,
            aggressor: Aggressor::Sell,
            seq: 5,
        },
        SinkRow::Quote {
            ts,
            seq: 6,
            instrument: InstrumentId(1),
            bid: Price(199_999),
            bid_qty: Qty(1),
            ask: Price(0),
            ask_qty: Qty(0),
        },
        SinkRow::Bar {
            ts,
            recv: ts + 2_000,
            seq: 7,
            instrument: InstrumentId(0),
            interval_secs: 60,
            open: Price(100),
            high: Price(120),
            low: Price(90),
            close: Price(110),
            volume: Qty(12_345),
            trades: 7,
            revised: true,
        },
        SinkRow::Order {
            ts,
            seq: 9,
            account: AccountId(0),
            order: OrderId(16_777_216),
            instrument: InstrumentId(0),
            event: OrderEventKind::Accepted,
            status: OrderStatus::Open,
            side: Side::Buy,
            kind: OrderType::Limit,
            price: Price(10_000),
            qty: Qty(1_500),
            filled: Qty(0),
            client_id: ClientOrderId::new("a.b:c_d-e").expect("id"),
        },
        SinkRow::Fill {
            ts,
            fill_id: 3,
            order: OrderId(16_777_216),
            account: AccountId(0),
            instrument: InstrumentId(0),
            side: Side::Buy,
            price: Price(10_000),
            qty: Qty(500),
            liquidity: Liquidity::Maker,
            trade_id: 77,
        },
        SinkRow::Anomaly {
            ts,
            seq: 10,
            anomaly: stocksblitz_engine::surveillance::Anomaly {
                rule: stocksblitz_engine::surveillance::Rule::LargeQty,
                severity: stocksblitz_engine::surveillance::Severity::High,
                action: stocksblitz_engine::surveillance::Action::Throttle,
                account: Some(AccountId(0)),
                instrument: Some(InstrumentId(0)),
                observed: 6_000_000_000_000,
                threshold: 5_000_000_000_000,
                scale: 8,
                at: UnixNanos(ts),
            },
        },
    ];
    let mut buf = questdb::ingress::Buffer::new(questdb::ingress::ProtocolVersion::V1);
    for r in &rows {
        sink::ilp::write_row(&mut buf, r, &names).expect("row");
    }
    let text = String::from_utf8(buf.as_bytes().to_vec()).expect("utf8");
    let want = [
        "trades,symbol=BTCUSDT,aggressor=sell price=100.5,qty=0.25,trade_id=42i,recv_ts=1796205600123457t,seq=5i 1796205600123456789",
        "quotes,symbol=ETH-USD bid=1999.99,bid_qty=0.001,seq=6i 1796205600123456789",
        "bars,symbol=BTCUSDT,interval=1m open=1.0,high=1.2,low=0.9,close=1.1,volume=12.345,trades=7i,revised=t,recv_ts=1796205600123458t,seq=7i 1796205600123456789",
        "order_events,account=alice,symbol=BTCUSDT,event=accepted,status=open,side=buy,type=limit seq=9i,order_id=16777216i,price=100.0,qty=1.5,filled=0.0,client_order_id=\"a.b:c_d-e\" 1796205600123456789",
        "fills,account=alice,symbol=BTCUSDT,side=buy,liquidity=maker fill_id=3i,order_id=16777216i,price=100.0,qty=0.5,trade_id=77i 1796205600123456789",
        "anomalies,rule=large_qty,severity=HIGH,action=throttle,account=alice,symbol=BTCUSDT seq=10i,observed=60000.0,threshold=50000.0 1796205600123456789",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), want);

    // Through the sink thread to a recording server: the same lines arrive.
    let (mut p, stats, stop, join) = sink(setup(&addr, &dir, 10_000));
    assert!(p.push(trade(0, 1_796_205_600_000, 1)));
    for _ in 0..100 {
        if stats.rows_sent.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_sink(&stop, join);
    assert_eq!(
        rec.lines(),
        ["trades,symbol=BTCUSDT,aggressor=buy price=100.51,qty=0.25,trade_id=1i,recv_ts=1796205600000250t,seq=1i 1796205600000000000"]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_created_with_dedup_keys_and_an_unreachable_store_stops_start_up() {
    let (addr, rec) = recorder().await;
    let dir = fresh_dir("ddl");
    let mut s = setup(&addr, &dir, 1000);
    s.create_tables = true;
    let (_, c) = ring::<EngineEvent>("questdb", 16);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SinkStats::default());
    let join = sink::start(&s, &registry(), &[], c, None, stats, Arc::clone(&stop)).expect("starts");
    stop_sink(&stop, join);
    let queries = rec.queries.lock().unwrap().clone();
    assert!(
        rec.auth.lock().unwrap().iter().all(String::is_empty),
        "no auth configured"
    );
    // Keys unique per real event: market data rows by receive time and the engine's
    // per-instrument sequence (a Kite trade has no trade id and a second-resolution
    // exchange time).
    let want = [
        ("trades", "ts, symbol, recv_ts, seq"),
        ("quotes", "ts, symbol, seq"),
        ("bars", "ts, symbol, interval, recv_ts, seq"),
        ("order_events", "ts, seq"),
        ("fills", "ts, fill_id"),
        ("anomalies", "ts, seq"),
    ];
    let creates: Vec<&String> = queries.iter().filter(|q| q.starts_with("CREATE")).collect();
    assert_eq!(creates.len(), want.len(), "{queries:?}");
    for (q, (table, keys)) in creates.iter().zip(want) {
        assert!(
            q.starts_with(&format!("CREATE TABLE IF NOT EXISTS {table} (ts TIMESTAMP")),
            "{q}"
        );
        assert!(q.contains("TIMESTAMP(ts) PARTITION BY DAY WAL"), "{q}");
        assert!(q.ends_with(&format!("DEDUP UPSERT KEYS({keys})")), "{q}");
        // A table an earlier version created gets the key columns and the keys.
        let enable = format!("ALTER TABLE {table} DEDUP ENABLE UPSERT KEYS({keys})");
        assert!(queries.contains(&enable), "{enable} in {queries:?}");
        for key in keys.split(", ").skip(1) {
            let declared = q
                .split(['(', ')'])
                .nth(1)
                .expect("columns")
                .split(", ")
                .find(|c| c.split(' ').next() == Some(key))
                .unwrap_or_else(|| panic!("{key} declared in {q}"));
            let add = format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {declared}");
            assert!(queries.contains(&add), "{add} in {queries:?}");
        }
        // The keys' ALTER statements come after the CREATE (they need the table).
        let at = |s: &str| queries.iter().position(|x| x == s).expect("sent");
        assert!(at(q) < at(&enable));
    }

    // Nothing listens here: start-up refuses, saying what and where.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let gone = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let (_, c) = ring::<EngineEvent>("questdb", 16);
    let stats = Arc::new(SinkStats::default());
    let err = sink::start(
        &setup(&gone, &dir, 1000),
        &registry(),
        &[],
        c,
        None,
        stats,
        Arc::clone(&stop),
    )
    .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("unreachable at start-up") && msg.contains(&gone), "{msg}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_row_is_stored_once_through_a_store_outage_and_a_sink_restart() {
    let root = fresh_dir("vm");
    let mut vm = Victoria::start(&root.join("vm"));
    let spill = root.join("spill");
    // A small memory bound: the outage spills to files.
    let (mut p, stats, stop, join) = sink(setup(&vm.addr, &spill, 300));
    let base = now_ms() - 60_000;
    let mut sent = 0u64;
    let mut push = |p: &mut RingProducer<EngineEvent>, n: u64| {
        for _ in 0..n {
            sent += 1;
            // One row per instrument per millisecond: VictoriaMetrics stores per
            // (series, millisecond), so every row is distinct there.
            let e = trade((sent % 2) as u32, base + sent as i64, sent);
            while !p.push(e) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    push(&mut p, 2_000);
    assert_eq!(
        vm.wait_count("trades_price", 2_000, Duration::from_secs(30)),
        2_000,
        "a normal run"
    );

    // The store goes away mid-stream: rows wait in memory, then in spill files.
    vm.stop();
    push(&mut p, 3_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (stats.spilled_rows.get() == 0 || stats.errors.get() == 0) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stats.spilled_rows.get() > 0, "the outage spilled to files");
    assert!(stats.errors.get() > 0, "sends failed and were retried");
    vm.restart();
    push(&mut p, 1_000);
    assert_eq!(
        vm.wait_count("trades_price", 6_000, Duration::from_secs(60)),
        6_000,
        "nothing lost, nothing doubled after the outage; sink: in {} sent {} memory {} spilled {} errors {} last {:?}",
        stats.rows_in.get(),
        stats.rows_sent.get(),
        stats.memory_rows.get(),
        stats.spilled_rows.get(),
        stats.errors.get(),
        stats.last_error()
    );

    // The store is down when the sink stops: what it holds goes to spill files, and a
    // new sink on the same directory drains them.
    vm.stop();
    push(&mut p, 1_500);
    std::thread::sleep(Duration::from_millis(300));
    stop_sink(&stop, join);
    assert!(
        std::fs::read_dir(&spill).expect("spill dir").count() > 0,
        "rows spilled at stop"
    );
    vm.restart();
    let (_p2, stats2, stop2, join2) = sink(setup(&vm.addr, &spill, 300));
    assert_eq!(
        vm.wait_count("trades_price", 7_500, Duration::from_secs(60)),
        7_500,
        "the spill of the previous run was drained"
    );
    stop_sink(&stop2, join2);
    // The new run counts what it found and balances its books on it.
    assert_eq!(
        stats2.recovered.get(),
        1_500,
        "rows found in the earlier run's spill files"
    );
    assert_eq!(stats2.rows_sent.get(), 1_500);
    assert_eq!((stats2.pending(), stats2.lost.get()), (0, 0));
    assert_eq!(stats2.unaccounted(), 0);
    assert_eq!(vm.count("trades_qty"), 7_500, "every field stored once");
    let leftover: Vec<_> = std::fs::read_dir(&spill)
        .expect("spill dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("spill-"))
        .collect();
    assert!(leftover.is_empty(), "drained spill files are deleted");
    drop(vm);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_exports_market_data_and_order_events() {
    let root = fresh_dir("vm-app");
    let vm = Victoria::start(&root.join("vm"));
    let spill = root.join("spill");
    let cfg = test_config(|d| {
        d.insert(
            "questdb".into(),
            questdb_section(
                &vm.addr,
                &spill,
                Sizes {
                    batch_rows: 500,
                    flush_ms: 50,
                    memory_rows: 100_000,
                    timeout_ms: 5_000,
                    orders: true,
                },
            ),
        );
    });
    let app = start_with(&cfg).await;
    let alice = Client::new(&app, "alice", "trader");
    let bob = Client::new(&app, "bob", "trader");
    let order = |side: &str, qty: &str| serde_json::json!({ "symbol": "SBZ", "side": side, "type": "limit", "price": "100.00", "qty": qty });
    assert_eq!(
        alice.post("/orders", order("sell", "5")).await.0,
        reqwest::StatusCode::CREATED
    );
    let (s, v) = bob.post("/orders", order("buy", "2")).await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
    assert_eq!(v["order"]["status"], "filled");

    // Two fills (maker and taker), and the order events: accepted (sell), accepted and
    // filled (buy), partially filled (sell).
    let addr = vm.addr.clone();
    let (fills, events, trades) = tokio::task::spawn_blocking(move || {
        let vm = Victoria::attach(&addr);
        (
            vm.wait_count("fills_qty", 2, Duration::from_secs(30)),
            vm.wait_count("order_events_qty", 4, Duration::from_secs(30)),
            vm.wait_count("trades_price", 1, Duration::from_secs(30)),
        )
    })
    .await
    .expect("count");
    assert_eq!(fills, 2);
    assert!(events >= 4, "{events} order events");
    assert!(trades >= 1, "market data trades are exported too");
    let r = reqwest::get(http(&app, "/health/ready")).await.expect("ready");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["stores"]["questdb"]["status"], "ok", "{body}");
    let metrics = metrics(&app).await;
    assert!(metrics.contains("stocksblitz_questdb_rows_sent_total"), "metrics");
    app.shutdown().await.expect("shutdown");
    // Where the order events were exported up to is saved for the next start.
    assert!(spill.join("orders.position").exists());
    drop(vm);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_environment_and_reach_every_request() {
    let (addr, rec) = recorder().await;
    let dir = fresh_dir("auth");
    let var = format!("SBZ_TEST_QDB_PASSWORD_{}", std::process::id());
    // Unique to this test: nothing else in the process reads it. The `;` checks the
    // escaping in questdb-rs's configuration string.
    stocksblitz_testkit::env::set(&var, "s3cr;t");
    let mut s = setup(&addr, &dir, 1000);
    s.create_tables = true;
    s.auth = IlpAuth::Basic {
        username: "ingest".into(),
        password_env: var.clone(),
    };
    let (mut p, c) = ring::<EngineEvent>("questdb", 16);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SinkStats::default());
    let join = sink::start(&s, &registry(), &[], c, None, Arc::clone(&stats), Arc::clone(&stop)).expect("starts");
    assert!(p.push(trade(0, 1_796_205_600_000, 1)));
    for _ in 0..100 {
        if stats.rows_sent.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_sink(&stop, join);
    let want = "Basic aW5nZXN0OnMzY3I7dA=="; // base64("ingest:s3cr;t")
    let auth = rec.auth.lock().unwrap().clone();
    let statements = sink::ddl::statements().len();
    assert!(statements >= 12, "a CREATE and a DEDUP ENABLE per table");
    assert_eq!(auth.len(), statements + 1, "every statement and 1 write: {auth:?}");
    assert!(auth.iter().all(|a| a == want), "{auth:?}");
    stocksblitz_testkit::env::remove(&var);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_server_refuses_is_set_aside_and_the_rest_flows() {
    let (addr, rec) = recorder().await;
    let dir = fresh_dir("poison");
    // Trade 13 is refused by the server (a 400 with QuestDB's JSON error).
    *rec.poison.lock().unwrap() = Some("trade_id=13i".into());
    let (mut p, stats, stop, join) = sink(setup(&addr, &dir, 10_000));
    let t0 = now_ms();
    for n in 1..=40 {
        assert!(p.push(trade(0, t0 + n as i64, n)));
    }
    for _ in 0..300 {
        if stats.rows_sent.get() == 39 && stats.rejected.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (stats.rows_sent.get(), stats.rejected.get()),
        (39, 1),
        "poison row set aside"
    );
    // Rows after it keep flowing.
    assert!(p.push(trade(0, t0 + 100, 100)));
    for _ in 0..100 {
        if stats.rows_sent.get() == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.rows_sent.get(), 40);
    let stored: Vec<String> = rec.lines();
    assert!(!stored.iter().any(|l| l.contains("trade_id=13i")));
    for n in (1..=40).filter(|n| *n != 13).chain([100]) {
        assert!(
            stored.iter().any(|l| l.contains(&format!("trade_id={n}i"))),
            "trade {n} stored"
        );
    }
    // The refused row is kept, not lost.
    let kept = std::fs::metadata(dir.join("rejected.rows"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(kept > 0, "rejected.rows holds it");

    // A server refusing everything (an outage, not a bad row) sets nothing aside.
    *rec.poison.lock().unwrap() = None;
    *rec.fail.lock().unwrap() = true;
    for n in 200..210 {
        assert!(p.push(trade(0, t0 + n as i64, n)));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stats.rejected.get(), 1, "an outage rejects nothing");
    *rec.fail.lock().unwrap() = false;
    for _ in 0..1000 {
        if stats.rows_sent.get() == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stats.rows_sent.get(),
        50,
        "every row after the outage (rejected {})",
        stats.rejected.get()
    );
    stop_sink(&stop, join);
    let _ = std::fs::remove_dir_all(dir);
}

/// An ILP line as (table, column -> value text, designated timestamp). Tags and fields
/// alike; values here have no spaces or commas.
fn parse_line(line: &str) -> (String, std::collections::BTreeMap<String, String>, String) {
    let mut parts = line.split(' ');
    let (series, fields, ts) = (
        parts.next().expect("series"),
        parts.next().expect("fields"),
        parts.next().expect("ts"),
    );
    let mut tags = series.split(',');
    let table = tags.next().expect("table").to_owned();
    let cols = tags
        .chain(fields.split(','))
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("k=v");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (table, cols, ts.to_owned())
}

/// Each table's DEDUP key columns, read from the DDL the sink sends.
fn dedup_keys() -> std::collections::BTreeMap<String, Vec<String>> {
    sink::ddl::statements()
        .into_iter()
        .filter(|(_, q)| q.starts_with("CREATE"))
        .map(|(table, q)| {
            let keys = q
                .rsplit_once("DEDUP UPSERT KEYS(")
                .and_then(|(_, k)| k.strip_suffix(')'))
                .expect("keys");
            (table.to_owned(), keys.split(", ").map(str::to_owned).collect())
        })
        .collect()
}

/// A row's key under its table's DEDUP keys (from its ILP line).
fn row_key(row: &SinkRow, names: &Names, keys: &std::collections::BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut buf = questdb::ingress::Buffer::new(questdb::ingress::ProtocolVersion::V1);
    sink::ilp::write_row(&mut buf, row, names).expect("row");
    let line = String::from_utf8(buf.as_bytes().to_vec()).expect("utf8");
    let (table, cols, ts) = parse_line(line.trim_end());
    let mut key = vec![table.clone()];
    for k in &keys[&table] {
        if k == "ts" {
            key.push(ts.clone());
        } else {
            key.push(
                cols.get(k)
                    .unwrap_or_else(|| panic!("key column {k} in {line}"))
                    .clone(),
            );
        }
    }
    key
}

/// A market event as a feed (Kite-like when `kite`: no trade id, exchange time in whole
/// seconds) hands it to the engine.
fn market_event(kind: u8, instrument: u32, second: i64, recv_ns: i64, seq: u64, kite: bool) -> EngineEvent {
    use stocksblitz_engine::bars::{Bar, BarInterval, BarState};
    let base = 1_796_205_600_000_000_000i64 + second * 1_000_000_000;
    let data = match kind {
        0 => EventData::Trade {
            price: Price(10_000 + seq as i64 % 3),
            qty: Qty(100),
            trade_id: if kite { 0 } else { seq },
            aggressor: Aggressor::Buy,
        },
        1 => EventData::Quote {
            bid: Price(9_999),
            bid_qty: Qty(5),
            ask: Price(10_001),
            ask_qty: Qty(5),
        },
        _ => EventData::Bar {
            bar: Bar {
                interval: BarInterval::OneMinute,
                start: UnixNanos(base - base % 60_000_000_000),
                open: Price(10_000),
                high: Price(10_002),
                low: Price(9_998),
                close: Price(10_001),
                volume: Qty(1_000),
                trades: 10,
            },
            state: if kind == 2 { BarState::Closed } else { BarState::Revised },
        },
    };
    EngineEvent {
        seq,
        instrument: InstrumentId(instrument),
        quality: DataQuality::Live,
        exchange_ts: UnixNanos(base),
        recv_ts: UnixNanos(base + recv_ns),
        engine_ts: UnixNanos::UNKNOWN,
        data,
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Distinct events never share a key, whatever they share (exchange second, no trade
    /// id, receive time within a frame, a bar and its revision, a restart that begins the
    /// engine's sequences again); a re-sent row has exactly the same line.
    #[test]
    fn market_rows_have_keys_unique_per_event_and_identical_when_resent(
        runs in proptest::collection::vec(
            proptest::collection::vec((0u8..4, 0u32..2, 0i64..2, 0i64..3, proptest::bool::ANY), 1..60),
            1..3,
        ),
    ) {
        let names = Names::new(&registry(), &[]);
        let keys = dedup_keys();
        let mut seen = std::collections::HashMap::new();
        for (run, events) in runs.iter().enumerate() {
            // Each run (a restart) begins the per-instrument sequences again, later in time.
            let mut seq = [0u64; 2];
            for (i, &(kind, instrument, second, recv, kite)) in events.iter().enumerate() {
                seq[instrument as usize] += 1;
                let recv_ns = run as i64 * 5_000_000_000 + recv * 300;
                let e = market_event(kind, instrument, second, recv_ns, seq[instrument as usize], kite);
                let row = SinkRow::from_market(&e).expect("stored");
                let key = row_key(&row, &names, &keys);
                // Re-sent: the same line, so the same key.
                let again = SinkRow::from_market(&e).expect("stored");
                proptest::prop_assert_eq!(&row_key(&again, &names, &keys), &key);
                if let Some(other) = seen.insert(key.clone(), (run, i)) {
                    proptest::prop_assert!(false, "events {:?} and {:?} share the key {:?}", other, (run, i), key);
                }
            }
        }
    }
}

/// The VictoriaMetrics key of a stored row: its symbol and its `id` field (`seq`, or a
/// fill's `fill_id`). Within one run that alone tells events apart (the engine's
/// per-instrument sequence, the order event sequence, the fill id), so it counts
/// distinct rows; a re-sent row must come back with the same millisecond. Returns the
/// samples stored and the distinct keys.
fn stored_keys(vm: &Victoria, table: &str, id: &str) -> (usize, std::collections::BTreeMap<(String, u64), i64>) {
    let samples = vm.samples(&format!("{table}_{id}"));
    let mut keys = std::collections::BTreeMap::new();
    for s in &samples {
        let symbol = s.labels.get("symbol").cloned().unwrap_or_default();
        let key = (symbol, s.value as u64);
        if let Some(ts) = keys.insert(key.clone(), s.ts_ms) {
            assert_eq!(ts, s.ts_ms, "{table}: a re-sent row is identical: {key:?}");
        }
    }
    (samples.len(), keys)
}

#[test]
fn two_same_second_kite_trades_are_both_stored_and_a_resent_batch_adds_nothing() {
    let root = fresh_dir("vm-kite");
    let vm = Victoria::start_raw(&root.join("vm"));
    let (mut p, stats, stop, join) = sink(setup(&vm.addr, &root.join("spill"), 1_000));
    // Two distinct trades in the same exchange second, no trade id, same frame.
    let a = market_event(0, 0, 0, 7_000, 1, true);
    let b = market_event(0, 0, 0, 7_000, 2, true);
    assert!(p.push(a) && p.push(b));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stats.rows_sent.get() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(vm.wait_count("trades_seq", 2, Duration::from_secs(30)), 2);
    let (samples, keys) = stored_keys(&vm, "trades", "seq");
    assert_eq!((samples, keys.len()), (2, 2), "both trades stored: {keys:?}");
    // The same batch again (a retry after a timeout whose outcome was unknown): this
    // server stores the samples again, the keys are the same (QuestDB's DEDUP UPSERT
    // KEYS keep one row per key).
    assert!(p.push(a) && p.push(b));
    assert_eq!(vm.wait_count("trades_seq", 4, Duration::from_secs(30)), 4);
    let (samples, again) = stored_keys(&vm, "trades", "seq");
    assert_eq!(samples, 4);
    assert_eq!(again, keys, "nothing new under the keys");
    stop_sink(&stop, join);
    drop(vm);
    let _ = std::fs::remove_dir_all(root);
}

/// The issue's test: the ILP server paused (SIGSTOP) for 60 s under the default
/// simulator rate, then resumed. Rows wait in memory and spill files (reported in
/// /metrics and /health while the sink catches up); afterwards every row the engine
/// emitted (counted per table by the API fan-out; order events and fills by the
/// journal) is stored exactly once: the server holds exactly that many distinct keys
/// per table (re-sent rows, from requests that timed out while it was paused, come
/// back identical), and the sink's books balance with nothing pending or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_for_a_minute_loses_nothing_and_doubles_nothing() {
    use stocksblitz_api::sink::row::Table;
    let root = fresh_dir("vm-pause");
    let vm = Victoria::start_raw(&root.join("vm"));
    let spill = root.join("spill");
    let cfg = test_config(|d| {
        // A small memory bound so the pause spills to files.
        d.insert(
            "questdb".into(),
            questdb_section(
                &vm.addr,
                &spill,
                Sizes {
                    batch_rows: 5_000,
                    flush_ms: 100,
                    memory_rows: 10_000,
                    timeout_ms: 2_000,
                    orders: true,
                },
            ),
        );
    });
    let app = start_with(&cfg).await;
    let stats = app.state.questdb.clone().expect("questdb configured");
    let (output, output_counts) = app.state.engine.outputs[0].clone();
    let flowing = tokio::time::Instant::now() + Duration::from_secs(60);
    while (stats.stored(Table::Trades) == 0 || stats.stored(Table::Quotes) == 0)
        && tokio::time::Instant::now() < flowing
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stats.stored(Table::Trades) > 0, "market data flows before the pause");

    vm.pause();
    let paused = tokio::time::Instant::now();
    // Orders while the store is paused: order events and fills wait too.
    let alice = Client::new(&app, "alice", "trader");
    let bob = Client::new(&app, "bob", "trader");
    let order = |side: &str| serde_json::json!({ "symbol": "SBZ", "side": side, "type": "limit", "price": "100.00", "qty": "1" });
    for _ in 0..3 {
        assert_eq!(
            alice.post("/orders", order("sell")).await.0,
            reqwest::StatusCode::CREATED
        );
        assert_eq!(bob.post("/orders", order("buy")).await.0, reqwest::StatusCode::CREATED);
    }
    tokio::time::sleep_until(paused + Duration::from_secs(50)).await;
    // Catching up is visible while the store is away.
    let m = metrics(&app).await;
    assert!(
        sample(&m, "stocksblitz_questdb_pending_rows ").unwrap_or(0) > 0,
        "pending rows in /metrics"
    );
    assert_eq!(
        sample(&m, "stocksblitz_questdb_catching_up "),
        Some(1),
        "spilling shows in /metrics"
    );
    assert!(
        stats.spilled_rows.get() > 0 && stats.errors.get() > 0,
        "spilled and retried"
    );
    let ready: serde_json::Value = reqwest::get(http(&app, "/health/ready"))
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    let q = &ready["stores"]["questdb"];
    assert_eq!(q["status"], "degraded", "{ready}");
    assert_eq!(q["catching_up"], true, "{ready}");
    assert!(q["spill_rows"].as_u64().unwrap_or(0) > 0, "{ready}");
    tokio::time::sleep_until(paused + Duration::from_secs(60)).await;
    vm.resume();

    // It catches up while the market keeps going.
    let caught_up = tokio::time::Instant::now() + Duration::from_secs(90);
    while (stats.catching_up() || stats.connected.get() == 0) && tokio::time::Instant::now() < caught_up {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!stats.catching_up(), "caught up: {} spill rows", stats.spill_rows.get());
    let mut ready = serde_json::Value::Null;
    while tokio::time::Instant::now() < caught_up + Duration::from_secs(30) {
        ready = reqwest::get(http(&app, "/health/ready"))
            .await
            .expect("ready")
            .json()
            .await
            .expect("json");
        if ready["stores"]["questdb"]["status"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready["stores"]["questdb"]["status"], "ok", "healthy again: {ready}");
    app.shutdown().await.expect("shutdown");

    // The fan-out saw every event the engine emitted for it...
    assert_eq!(
        (output.dropped.get(), output_counts.suppressed.get()),
        (0, 0),
        "the engine's API output dropped nothing"
    );
    assert_eq!(stats.upstream_missed.get(), 0, "no gap in the engine's sequences");
    // ...and the sink's books balance, nothing pending or lost.
    assert_eq!(stats.lost.get(), 0, "{:?}", stats.last_error());
    assert_eq!(stats.pending(), 0, "everything stored at shutdown");
    assert_eq!(stats.rejected.get(), 0);
    assert_eq!(stats.unaccounted(), 0, "emitted = stored + refused + pending + lost");
    // The server holds every emitted row, exactly once under the keys (polled: it
    // makes what it took searchable shortly after).
    let addr = vm.addr.clone();
    let want = [
        (Table::Trades, "seq"),
        (Table::Quotes, "seq"),
        (Table::Bars, "seq"),
        (Table::OrderEvents, "seq"),
        (Table::Fills, "fill_id"),
    ]
    .map(|(t, id)| (t, id, stats.emitted(t)));
    let counts = tokio::task::spawn_blocking(move || {
        let vm = Victoria::attach(&addr);
        want.map(|(t, id, emitted)| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (samples, keys) = stored_keys(&vm, t.name(), id);
                if keys.len() as u64 >= emitted || std::time::Instant::now() > deadline {
                    return (t, emitted, samples, keys.len());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    })
    .await
    .expect("export");
    for (t, emitted, samples, keys) in counts {
        assert!(emitted > 0, "{t:?}: rows emitted");
        assert_eq!(
            keys as u64, emitted,
            "{t:?}: every emitted row stored ({samples} samples with re-sends)"
        );
        assert_eq!(stats.stored(t), emitted, "{t:?}: acknowledged once each");
    }
    drop(vm);
    let _ = std::fs::remove_dir_all(root);
}

/// A tmpfs of `size` mounted at a fresh directory (a disk that fills up), unmounted
/// when dropped. `None` when this process may not mount (not root; CI runs as root).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let d = fresh_dir("small-disk");
        std::fs::create_dir_all(&d).expect("dir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&d)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(d))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The one way the sink loses rows: the store is down and the spill disk is full. The
/// loss is counted (and reported in health), and the books still balance: every row
/// taken in is stored, held in memory, in a spill file, or counted lost.
#[test]
fn a_full_spill_disk_is_the_only_loss_and_it_is_counted() {
    let Some(disk) = SmallDisk::mount("3m") else {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let gone = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let (mut p, stats, stop, join) = sink(setup(&gone, &disk.0.join("spill"), 1_000));
    let balance = |stats: &SinkStats| {
        stats.rows_in.get()
            == stats.rows_sent.get()
                + stats.rejected.get()
                + stats.memory_rows.get()
                + stats.spill_rows.get()
                + stats.lost.get()
    };
    let total = 150_000u64;
    let t0 = now_ms();
    for n in 1..=total {
        let e = trade((n % 2) as u32, t0 + n as i64, n);
        while !p.push(e) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stats.rows_in.get() < total && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(stats.rows_in.get(), total);
    assert!(stats.lost.get() > 0, "the disk filled up");
    assert!(stats.spill_rows.get() > 0, "what fitted is kept");
    assert!(!stats.healthy(), "a loss is reported");
    assert!(balance(&stats), "books balance while running");
    stop_sink(&stop, join);
    assert_eq!(stats.memory_rows.get(), 0, "memory spilled (or counted lost) at stop");
    assert!(balance(&stats), "books balance after stop");
}

/// The store reads the engine directly, not through the API fan-out: a fan-out that
/// falls far behind (here: held behind its mirror's write lock while the market runs,
/// so its ring overflows and the engine suppresses and resyncs it) costs the store no
/// row. Every trade and quote the engine produced meanwhile is in the ILP server
/// exactly once, and nothing was counted missed upstream of the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_fan_out_costs_the_store_nothing() {
    use stocksblitz_api::sink::row::Table;
    let root = fresh_dir("vm-starved");
    let vm = Victoria::start_raw(&root.join("vm"));
    let spill = root.join("spill");
    let cfg = test_config(|d| {
        d.insert(
            "questdb".into(),
            questdb_section(
                &vm.addr,
                &spill,
                Sizes {
                    batch_rows: 5_000,
                    flush_ms: 100,
                    memory_rows: 1_000_000,
                    timeout_ms: 5_000,
                    orders: false,
                },
            ),
        );
        // A small API ring and a busy market: a stalled fan-out overflows it quickly.
        d["engine"]["output_ring_capacity"] = toml::Value::Integer(2048);
        d["simulator"]["rate_per_sec"] = toml::Value::Integer(5000);
    });
    let app = start_with(&cfg).await;
    let stats = app.state.questdb.clone().expect("questdb configured");
    let (output, output_counts) = app.state.engine.outputs[0].clone();
    let flowing = tokio::time::Instant::now() + Duration::from_secs(60);
    while stats.stored(Table::Trades) == 0 && tokio::time::Instant::now() < flowing {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stats.stored(Table::Trades) > 0, "market data flows first");

    // Starve the fan-out until its ring has overflowed at least twice (suppressed
    // events, then a resync and more), at most 30 s.
    let market = Arc::clone(&app.state.desk.market);
    let (dropped, suppressed) = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for _ in 0..2 {
            let _stalled = market.mirror.write();
            let before = output.dropped.get();
            while output.dropped.get() == before && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(500));
            drop(_stalled);
            std::thread::sleep(Duration::from_millis(300));
        }
        (output.dropped.get(), output_counts.suppressed.get())
    })
    .await
    .expect("stall");
    assert!(
        dropped > 0 && suppressed > 0,
        "the fan-out fell behind: {dropped} dropped, {suppressed} suppressed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.shutdown().await.expect("shutdown");

    assert_eq!(stats.upstream_missed.get(), 0, "the engine handed the sink every row");
    assert_eq!(stats.lost.get(), 0, "{:?}", stats.last_error());
    assert_eq!(stats.pending(), 0, "everything stored at shutdown");
    assert_eq!(stats.rejected.get(), 0);
    assert_eq!(stats.unaccounted(), 0, "emitted = stored + refused + held + lost");
    let addr = vm.addr.clone();
    let want = [Table::Trades, Table::Quotes, Table::Bars].map(|t| (t, stats.emitted(t)));
    let counts = tokio::task::spawn_blocking(move || {
        let vm = Victoria::attach(&addr);
        want.map(|(t, emitted)| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (samples, keys) = stored_keys(&vm, t.name(), "seq");
                if keys.len() as u64 >= emitted || std::time::Instant::now() > deadline {
                    return (t, emitted, samples, keys);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    })
    .await
    .expect("export");
    // The sink's sequence is its own (per instrument, over the stored tables): with
    // nothing missed it runs 1..=n without a gap.
    let mut per: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
    for (t, emitted, samples, keys) in counts {
        assert!(emitted > 0 || t == Table::Bars, "{t:?}: rows emitted");
        assert_eq!(
            keys.len() as u64,
            emitted,
            "{t:?}: every row stored once ({samples} samples)"
        );
        for (instrument, seq) in keys.into_keys() {
            per.entry(instrument).or_default().push(seq);
        }
    }
    for (instrument, mut seqs) in per {
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        assert_eq!(seqs.last().copied(), Some(n), "{instrument}: seq 1..={n} without a gap");
    }
    drop(vm);
    let _ = std::fs::remove_dir_all(root);
}
