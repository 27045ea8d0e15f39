//! `stocksblitz feed parse|book` on the venue fixtures (feed-handlers/tests/fixtures).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../feed-handlers/tests/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(args)
        .output()
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ndjson(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// One `feed parse` line in a compact exact form: the frame it came from (captures
/// stamp frame n at n-1 ms past 1700000000 s), then every field of its kind.
fn compact(t: &Value) -> String {
    let s = |k: &str| match &t[k] {
        Value::String(v) => v.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let frame = t["recv_ts_ns"]
        .as_i64()
        .map_or(-1, |ns| (ns - 1_700_000_000_000_000_000) / 1_000_000 + 1);
    let body = match t["kind"].as_str() {
        Some("book") => {
            let flags: Vec<&str> = t["flags"]
                .as_array()
                .map_or(Vec::new(), |f| f.iter().filter_map(Value::as_str).collect());
            format!(
                "book {} {} {} u={} [{}]",
                s("side"),
                s("price"),
                s("qty"),
                s("update_id"),
                flags.join(",")
            )
        }
        Some("trade") => format!("trade {} {} {} id={}", s("side"), s("price"), s("qty"), s("trade_id")),
        Some("quote") => {
            let mut q = format!("quote {} {} / {} {}", s("bid"), s("bid_qty"), s("ask"), s("ask_qty"));
            for k in ["last", "last_ts_ns"] {
                if !t[k].is_null() {
                    q.push_str(&format!(" {k}={}", s(k)));
                }
            }
            q
        }
        Some("status") => format!("status {} {}", s("status"), s("detail")),
        Some("last") => format!("last {} {}", s("price"), s("qty")),
        Some("day") => format!("day o={} h={} l={} c={}", s("open"), s("high"), s("low"), s("close")),
        _ => format!("{t}"),
    };
    format!("f{frame} {} {} ex={}", s("symbol"), body, s("exchange_ts_ns"))
}

fn parse_compact(venue: &str, cap: &str) -> (Vec<String>, String) {
    let cap = fixture(cap);
    let (code, out, err) = run(&["feed", "parse", "--venue", venue, cap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    (ndjson(&out).iter().map(compact).collect(), err)
}

/// A real-format Binance capture at the venue's wire precision (8 decimals): every
/// tick exact, 8-decimal quantities such as 25.42618900 and 0.01391500 kept, values
/// finer than 8 decimals counted as bad frames (a bad diff resyncs the book).
#[test]
fn parse_binance_capture() {
    let (ticks, err) = parse_compact("binance", "binance.cap");
    let want = [
        "f4 BTCUSDT book buy 65000.00000000 1.00000000 u=100 [clear,snapshot] ex=-",
        "f4 BTCUSDT book buy 64999.50000000 2.00000000 u=100 [snapshot] ex=-",
        "f4 BTCUSDT book sell 65000.50000000 0.50000000 u=100 [snapshot] ex=-",
        "f4 BTCUSDT book sell 65001.00000000 3.00000000 u=100 [snapshot,end] ex=-",
        "f4 BTCUSDT book buy 65000.00000000 1.50000000 u=102 [] ex=-",
        "f4 BTCUSDT book sell 65000.50000000 0.00000000 u=102 [end] ex=-",
        "f4 BTCUSDT status live 0 ex=-",
        "f5 BTCUSDT book buy 65000.10000000 25.42618900 u=104 [] ex=1700000000103000000",
        "f5 BTCUSDT book sell 65001.00000000 2.50000000 u=104 [end] ex=1700000000103000000",
        "f7 BTCUSDT trade buy 65000.50000000 0.01391500 id=5000000001 ex=1700000000005000000",
        "f9 BTCUSDT quote 65000.10000000 25.42618900 / 65001.00000000 2.50000000 ex=-",
        "f11 BTCUSDT status gap 105 ex=-",
        "f13 BTCUSDT book buy 65000.20000000 1.00000000 u=108 [clear,snapshot] ex=-",
        "f13 BTCUSDT book buy 65000.00000000 1.50000000 u=108 [snapshot] ex=-",
        "f13 BTCUSDT book sell 65001.00000000 2.50000000 u=108 [snapshot,end] ex=-",
        "f13 BTCUSDT book buy 65000.30000000 1.00000000 u=110 [end] ex=-",
        "f13 BTCUSDT status live 0 ex=-",
        "f14 BTCUSDT book sell 65001.50000000 4.00000000 u=111 [end] ex=1700000000111000000",
        "f16 BTCUSDT status gap 112 ex=-",
        "f17 BTCUSDT book buy 65000.40000000 0.12345678 u=112 [clear,snapshot] ex=-",
        "f17 BTCUSDT book buy 65000.30000000 1.00000000 u=112 [snapshot] ex=-",
        "f17 BTCUSDT book buy 65000.20000000 1.00000000 u=112 [snapshot] ex=-",
        "f17 BTCUSDT book buy 65000.00000000 1.50000000 u=112 [snapshot] ex=-",
        "f17 BTCUSDT book sell 65001.00000000 2.50000000 u=112 [snapshot] ex=-",
        "f17 BTCUSDT book sell 65001.50000000 4.00000000 u=112 [snapshot,end] ex=-",
        "f17 BTCUSDT status live 0 ex=-",
        "f18 BTCUSDT book buy 65000.00000000 0.00000000 u=113 [end] ex=1700000000113000000",
        "f19 BTCUSDT trade sell 65001.00000000 0.00100000 id=5000000003 ex=1700000000017000000",
    ];
    assert_eq!(ticks, want);
    let errors: Vec<&str> = err.lines().collect();
    assert_eq!(
        errors,
        [
            "frame 10 (recv 1700000000009000000): binance: invalid JSON: unexpected end of input",
            "frame 15 (recv 1700000000014000000): binance: field \"q\": more than 8 decimal places: the instrument's precision is 8",
            "frame 16 (recv 1700000000015000000): binance: field \"qty\": more than 8 decimal places: the instrument's precision is 8; the book resyncs from a new snapshot",
            "19 frames, 28 ticks, 3 bad frames",
        ]
    );
}

#[test]
fn book_binance_capture_follows_sync_rules() {
    let cap = fixture("binance.cap");
    let (code, out, err) = run(&[
        "feed",
        "book",
        "--venue",
        "binance",
        "--symbol",
        "BTCUSDT",
        "--depth",
        "5",
        cap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).expect("json");
    // After the first gap: snapshot 108 + buffered 109-110 + 111. The diff at 112 is
    // rejected (a ninth decimal): the book leaves LIVE until snapshot 112, then 113.
    assert_eq!(
        b,
        serde_json::json!({
            "symbol": "BTCUSDT",
            "state": "live",
            "bids": [
                ["65000.40000000", "0.12345678"],
                ["65000.30000000", "1.00000000"],
                ["65000.20000000", "1.00000000"]
            ],
            "asks": [["65001.00000000", "2.50000000"], ["65001.50000000", "4.00000000"]],
            "gaps": [
                {"expected": 105, "recv_ts_ns": 1_700_000_000_010_000_000i64},
                {"expected": 112, "recv_ts_ns": 1_700_000_000_015_000_000i64}
            ],
            "resyncs": 2,
            "snapshot_requests": 2,
            "frames": 19,
            "errors": 3
        })
    );
}

/// A real-format Coinbase Exchange capture: sizes at the product's 8-decimal base
/// increment, a ticker without sizes (older messages) quoted from the synced book, a
/// duplicate match dropped, an update finer than the increment rejected and the
/// level2 book resubscribed.
#[test]
fn parse_coinbase_capture() {
    let (ticks, err) = parse_compact("coinbase", "coinbase.cap");
    let want = [
        "f2 BTC-USD book buy 65010.00 0.45054140 u=0 [clear,snapshot] ex=-",
        "f2 BTC-USD book buy 65009.99 1.00000000 u=0 [snapshot] ex=-",
        "f2 BTC-USD book sell 65010.01 0.57753524 u=0 [snapshot,end] ex=-",
        "f2 BTC-USD status live 0 ex=-",
        "f3 BTC-USD book buy 65010.00 0.16256700 u=0 [] ex=1700000000265000000",
        "f3 BTC-USD book sell 65010.02 2.50000000 u=0 [end] ex=1700000000265000000",
        "f4 BTC-USD trade buy 65010.01 0.00523512 id=10 ex=1700000000028459000",
        "f7 BTC-USD quote 65010.00 0.16256700 / 65010.01 0.57753524 ex=1700000002061769000",
        "f8 BTC-USD quote 65010.00 0.16256700 / 65010.01 0.57753524 ex=1700000002561769000",
        "f9 BTC-USD book sell 65010.01 0.00000000 u=0 [end] ex=1700000003000000000",
        "f10 BTC-USD trade buy 65010.02 0.01391500 id=11 ex=1700000003500000000",
        "f11 BTC-USD status gap 0 ex=-",
        "f13 BTC-USD book buy 65010.00 0.16256700 u=0 [clear,snapshot] ex=-",
        "f13 BTC-USD book buy 65009.99 0.12345678 u=0 [snapshot] ex=-",
        "f13 BTC-USD book sell 65010.02 2.48608500 u=0 [snapshot,end] ex=-",
        "f13 BTC-USD status live 0 ex=-",
        "f14 BTC-USD book buy 65010.01 0.01391500 u=0 [end] ex=1700000005120000000",
    ];
    assert_eq!(ticks, want);
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "frame 11 (recv 1700000000010000000): coinbase: field \"size\": more than 8 decimal places: the instrument's precision is 8; the level2 book resubscribes",
            "14 frames, 17 ticks, 1 bad frames",
        ]
    );
    let cap = fixture("coinbase.cap");
    let (code, out, err) = run(&[
        "feed",
        "book",
        "--venue",
        "coinbase",
        "--symbol",
        "BTC-USD",
        cap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        b,
        serde_json::json!({
            "symbol": "BTC-USD",
            "state": "live",
            "bids": [["65010.01", "0.01391500"], ["65010.00", "0.16256700"], ["65009.99", "0.12345678"]],
            "asks": [["65010.02", "2.48608500"]],
            "gaps": [{"expected": 0, "recv_ts_ns": 1_700_000_000_010_000_000i64}],
            "resyncs": 1,
            "snapshot_requests": 0,
            "frames": 14,
            "errors": 1
        })
    );
}

/// A real-format Kite capture (binary full and LTP packets, a heartbeat, a cut frame):
/// the first full packet shows the reported last trade and the day statistics at once
/// without inventing a trade; the next one's volume rise is the trade.
#[test]
fn kite_capture() {
    let (ticks, err) = parse_compact("kite", "kite.cap");
    let want = [
        "f2 RELIANCE status live 0 ex=-",
        "f2 RELIANCE last 2450.05 10 ex=1700000000000000000",
        "f2 RELIANCE day o=2440.00 h=2460.00 l=2435.00 c=2449.00 ex=1700000001000000000",
        "f2 RELIANCE book buy 2450.00 100 u=0 [clear,snapshot] ex=1700000001000000000",
        "f2 RELIANCE book buy 2449.95 101 u=0 [snapshot] ex=1700000001000000000",
        "f2 RELIANCE book buy 2449.90 102 u=0 [snapshot] ex=1700000001000000000",
        "f2 RELIANCE book buy 2449.85 103 u=0 [snapshot] ex=1700000001000000000",
        "f2 RELIANCE book buy 2449.80 104 u=0 [snapshot] ex=1700000001000000000",
        "f2 RELIANCE book sell 2450.10 200 u=0 [snapshot] ex=1700000001000000000",
        "f2 RELIANCE book sell 2450.15 201 u=0 [snapshot] ex=1700000001000000000",
        "f2 RELIANCE book sell 2450.20 202 u=0 [snapshot] ex=1700000001000000000",
        "f2 RELIANCE book sell 2450.25 203 u=0 [snapshot] ex=1700000001000000000",
        "f2 RELIANCE book sell 2450.30 204 u=0 [snapshot,end] ex=1700000001000000000",
        "f2 INFY status live 0 ex=-",
        "f2 INFY last 1520.50 0 ex=-",
        "f3 RELIANCE trade unknown 2450.10 25 id=0 ex=1700000000000000000",
        "f3 RELIANCE book buy 2450.00 100 u=0 [clear,snapshot] ex=1700000001000000000",
        "f3 RELIANCE book buy 2449.95 101 u=0 [snapshot] ex=1700000001000000000",
        "f3 RELIANCE book buy 2449.90 102 u=0 [snapshot] ex=1700000001000000000",
        "f3 RELIANCE book buy 2449.85 103 u=0 [snapshot] ex=1700000001000000000",
        "f3 RELIANCE book buy 2449.80 104 u=0 [snapshot] ex=1700000001000000000",
        "f3 RELIANCE book sell 2450.10 200 u=0 [snapshot] ex=1700000001000000000",
        "f3 RELIANCE book sell 2450.15 201 u=0 [snapshot] ex=1700000001000000000",
        "f3 RELIANCE book sell 2450.20 202 u=0 [snapshot] ex=1700000001000000000",
        "f3 RELIANCE book sell 2450.25 203 u=0 [snapshot] ex=1700000001000000000",
        "f3 RELIANCE book sell 2450.30 204 u=0 [snapshot,end] ex=1700000001000000000",
    ];
    assert_eq!(ticks, want);
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "frame 6 (recv 1700000000005000000): kite: frame ends inside packet 0 (needs 184 bytes, 46 left)",
            "6 frames, 26 ticks, 1 bad frames",
        ]
    );
}

#[test]
fn bad_arguments_and_files() {
    let (code, _, err) = run(&["feed", "parse", "--venue", "nyse", "x.cap"]);
    assert_ne!(code, 0);
    assert!(err.contains("nyse"), "{err}");
    let (code, _, err) = run(&["feed", "parse", "--venue", "binance", "/nonexistent.cap"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.cap"), "{err}");
    let dir = std::env::temp_dir().join(format!("sb-feedcli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.cap");
    std::fs::write(&bad, "123 t {}\nnot a line\n").unwrap();
    let (code, _, err) = run(&["feed", "parse", "--venue", "binance", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2"), "{err}");
    let (code, _, err) = run(&[
        "feed",
        "book",
        "--venue",
        "binance",
        "--symbol",
        "NOPE",
        fixture("binance.cap").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("NOPE"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
