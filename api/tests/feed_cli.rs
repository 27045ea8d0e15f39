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

#[test]
fn parse_binance_capture() {
    let cap = fixture("binance.cap");
    let (code, out, err) = run(&["feed", "parse", "--venue", "binance", cap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ticks = ndjson(&out);
    let trades: Vec<_> = ticks.iter().filter(|t| t["kind"] == "trade").collect();
    assert_eq!(trades.len(), 1, "trade stream only (aggTrade would double count)");
    assert_eq!(trades[0]["price"], "65000.50");
    assert_eq!(trades[0]["qty"], "0.01000");
    assert_eq!(trades[0]["side"], "buy");
    assert_eq!(trades[0]["trade_id"], 5_000_000_001u64);
    assert_eq!(trades[0]["exchange_ts_ns"], 1_700_000_000_005_000_000i64);
    let quote = ticks.iter().find(|t| t["kind"] == "quote").expect("bookTicker");
    assert!(quote["exchange_ts_ns"].is_null(), "bookTicker has no exchange time");
    let statuses: Vec<_> = ticks
        .iter()
        .filter(|t| t["kind"] == "status")
        .map(|t| t["status"].clone())
        .collect();
    assert_eq!(statuses, vec!["live", "gap", "live"]);
    assert!(err.contains("frame 10") && err.contains("1 bad frames"), "{err}");
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
    assert_eq!(b["state"], "live");
    assert_eq!(b["gaps"].as_array().map(Vec::len), Some(1));
    assert_eq!(b["gaps"][0]["expected"], 105);
    // After the resync: snapshot 108 + buffered 109-110 + 111.
    assert_eq!(
        b["bids"],
        serde_json::json!([
            ["65000.30", "1.00000"],
            ["65000.20", "1.00000"],
            ["65000.00", "1.50000"]
        ])
    );
    assert_eq!(
        b["asks"],
        serde_json::json!([["65001.00", "2.50000"], ["65001.50", "4.00000"]])
    );
}

#[test]
fn coinbase_and_kite_captures() {
    let cap = fixture("coinbase.cap");
    let (code, out, err) = run(&["feed", "parse", "--venue", "coinbase", cap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ticks = ndjson(&out);
    let trades: Vec<_> = ticks.iter().filter(|t| t["kind"] == "trade").collect();
    assert_eq!(trades.len(), 1, "the duplicate match is dropped");
    assert_eq!(trades[0]["side"], "buy", "maker sold: the aggressor bought");
    let (code, out, _) = run(&[
        "feed",
        "book",
        "--venue",
        "coinbase",
        "--symbol",
        "BTC-USD",
        cap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let b: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(b["bids"][0], serde_json::json!(["65010.00", "0.16256700"]));
    assert_eq!(b["asks"], serde_json::json!([["65010.02", "2.50000000"]]));

    let cap = fixture("kite.cap");
    let (code, out, err) = run(&["feed", "parse", "--venue", "kite", cap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ticks = ndjson(&out);
    let trade = ticks
        .iter()
        .find(|t| t["kind"] == "trade" && t["symbol"] == "RELIANCE")
        .expect("volume-derived trade");
    assert_eq!(
        (trade["price"].as_str(), trade["qty"].as_str()),
        (Some("2450.10"), Some("25"))
    );
    let infy = ticks
        .iter()
        .find(|t| t["symbol"] == "INFY" && t["kind"] == "trade")
        .expect("INFY LTP");
    assert_eq!(infy["price"], "1520.50");
    assert!(
        ticks
            .iter()
            .filter(|t| t["symbol"] == "RELIANCE" && t["kind"] == "book")
            .count()
            >= 20
    );
    assert!(err.contains("1 bad frames"), "the truncated frame is reported: {err}");
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
