//! WebSocket `/api/v1/stream` against a running server fed by the simulated venues.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().expect("seq is a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_arrive_with_increasing_sequence_numbers() {
    let app = start().await;
    wait_live(&app, "BTCUSDT").await;
    let mut ws = ws_connect(&app).await;
    send(
        &mut ws,
        json!({"op":"subscribe","channels":["quotes.BTCUSDT"],"id":"r1"}),
    )
    .await;
    let ack = recv(&mut ws, WAIT).await.expect("ack");
    assert_eq!(ack["type"], "subscribed");
    assert_eq!(ack["id"], "r1");

    let snap = recv(&mut ws, WAIT).await.expect("snapshot");
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["channel"], "quotes.BTCUSDT");
    assert_eq!(seq(&snap), 1);
    let mut last = 1;
    let mut prices = std::collections::HashSet::new();
    for _ in 0..30 {
        let m = recv(&mut ws, WAIT).await.expect("update");
        assert_eq!(m["type"], "update");
        assert_eq!(m["channel"], "quotes.BTCUSDT");
        assert_eq!(seq(&m), last + 1, "per-channel sequence has no gaps");
        last = seq(&m);
        let d = &m["data"];
        assert_eq!(d["symbol"], "BTCUSDT");
        assert_eq!(d["quality"], "LIVE");
        let (bid, ask) = (d["bid"].as_str().expect("bid"), d["ask"].as_str().expect("ask"));
        assert!(bid.parse::<f64>().expect("decimal") < ask.parse::<f64>().expect("decimal"));
        assert_eq!(
            bid.split('.').nth(1).map(str::len),
            Some(8),
            "price at the instrument's 8 decimals (Binance's wire precision)"
        );
        prices.insert(bid.to_owned());
    }
    assert!(last > 1);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_trades_and_bars_channels() {
    let app = start().await;
    wait_live(&app, "ETHUSDT").await;
    let mut ws = ws_connect(&app).await;
    send(
        &mut ws,
        json!({"op":"subscribe","channels":["book.ETHUSDT","trades.ETHUSDT","bars.ETHUSDT"]}),
    )
    .await;
    assert_eq!(recv(&mut ws, WAIT).await.expect("ack")["type"], "subscribed");

    // The first message on every channel is its snapshot, with seq 1.
    let mut first: std::collections::HashMap<String, Value> = Default::default();
    while first.len() < 3 {
        let m = recv(&mut ws, WAIT).await.expect("snapshots");
        let ch = m["channel"].as_str().expect("channel").to_owned();
        first.entry(ch).or_insert(m);
    }
    for (ch, m) in &first {
        assert_eq!((m["type"].as_str(), seq(m)), (Some("snapshot"), 1), "{ch}");
    }
    let book = &first["book.ETHUSDT"];
    let bids = book["data"]["bids"].as_array().expect("bids");
    let asks = book["data"]["asks"].as_array().expect("asks");
    assert_eq!(bids.len(), 10, "ws_book_depth levels");
    assert_eq!(asks.len(), 10);
    let px = |l: &Value| l[0].as_str().expect("price").parse::<f64>().expect("decimal");
    assert!(px(&bids[0]) < px(&asks[0]));
    assert!(bids.windows(2).all(|w| px(&w[0]) > px(&w[1])), "bids best first");
    assert!(first["trades.ETHUSDT"]["data"]["trades"].is_array());
    assert!(first["bars.ETHUSDT"]["data"]["bars"].is_array());

    let trade = recv_until(&mut ws, WAIT, |m| {
        m["channel"] == "trades.ETHUSDT" && m["type"] == "update"
    })
    .await
    .expect("trade update");
    assert!(["buy", "sell"].contains(&trade["data"]["side"].as_str().expect("side")));
    assert_eq!(seq(&trade), 2);

    let closed = recv_until(&mut ws, WAIT, |m| {
        m["channel"] == "bars.ETHUSDT" && m["data"]["state"] == "closed"
    })
    .await
    .expect("a 1s bar closes within seconds");
    assert_eq!(closed["data"]["interval"], "1s");
    let d = &closed["data"];
    let f = |k: &str| d[k].as_str().expect(k).parse::<f64>().expect("decimal");
    assert!(f("low") <= f("open") && f("open") <= f("high") && f("low") <= f("close") && f("close") <= f("high"));

    // Unsubscribe stops a channel.
    send(
        &mut ws,
        json!({"op":"unsubscribe","channels":["trades.ETHUSDT","bars.ETHUSDT","book.ETHUSDT"],"id":7}),
    )
    .await;
    recv_until(&mut ws, WAIT, |m| m["type"] == "unsubscribed" && m["id"] == 7)
        .await
        .expect("unsubscribed");
    let after = recv(&mut ws, Duration::from_millis(600)).await;
    assert!(after.is_none(), "no data after unsubscribing everything: {after:?}");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_connection_survives() {
    let app = start().await;
    let mut ws = ws_connect(&app).await;
    let cases = [
        ("{not json", "BAD_MESSAGE"),
        (r#"{"op":"subscribe"}"#, "BAD_MESSAGE"),
        (
            r#"{"op":"subscribe","channels":["candles.BTCUSDT"]}"#,
            "UNKNOWN_CHANNEL",
        ),
        (r#"{"op":"subscribe","channels":["quotes"]}"#, "UNKNOWN_CHANNEL"),
        (r#"{"op":"subscribe","channels":["quotes.NOPE"]}"#, "UNKNOWN_SYMBOL"),
        (r#"{"op":"dance","id":1}"#, "UNKNOWN_OP"),
        (
            r#"{"op":"subscribe","channels":["quotes.BTCUSDT"],"extra":true}"#,
            "BAD_MESSAGE",
        ),
        (r#"["subscribe"]"#, "BAD_MESSAGE"),
        ("", "BAD_MESSAGE"),
    ];
    for (text, code) in cases {
        ws.send(Message::Text(text.into())).await.expect("send");
        let m = recv(&mut ws, WAIT).await.expect("error reply");
        assert_eq!(m["type"], "error", "{text}");
        assert_eq!(m["error"]["code"], code, "{text}");
        assert!(!m["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.expect("send");
    assert_eq!(
        recv(&mut ws, WAIT).await.expect("reply")["error"]["code"],
        "BAD_MESSAGE"
    );

    // A rejected batch subscribes nothing: the valid channel in it is not live.
    send(
        &mut ws,
        json!({"op":"subscribe","channels":["quotes.BTCUSDT","quotes.NOPE"]}),
    )
    .await;
    assert_eq!(
        recv(&mut ws, WAIT).await.expect("reply")["error"]["code"],
        "UNKNOWN_SYMBOL"
    );
    assert!(recv(&mut ws, Duration::from_millis(400)).await.is_none());

    // Ping is answered; a duplicate subscribe does not restart the channel.
    send(&mut ws, json!({"op":"ping","id":"p"})).await;
    assert_eq!(recv(&mut ws, WAIT).await.expect("pong")["type"], "pong");
    send(&mut ws, json!({"op":"subscribe","channels":["quotes.BTCUSDT"]})).await;
    recv_until(&mut ws, WAIT, |m| m["type"] == "snapshot")
        .await
        .expect("snapshot");
    send(&mut ws, json!({"op":"subscribe","channels":["quotes.BTCUSDT"]})).await;
    let mut last = 1;
    for _ in 0..10 {
        let m = recv(&mut ws, WAIT).await.expect("message");
        if m["type"] == "subscribed" {
            continue;
        }
        assert_eq!(m["type"], "update", "no second snapshot: {m}");
        assert_eq!(seq(&m), last + 1);
        last = seq(&m);
    }

    // An oversized frame closes the connection.
    let big = "x".repeat(64 * 1024);
    let _ = ws.send(Message::Text(big.into())).await;
    let mut closed = false;
    for _ in 0..1000 {
        match recv(&mut ws, WAIT).await {
            None => {
                closed = true;
                break;
            }
            Some(_) => continue,
        }
    }
    assert!(closed, "oversized frame must close the socket");
    app.shutdown().await.expect("clean shutdown");
}

/// A client that stops reading gets the latest quote per symbol, not a backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_conflated() {
    let text = test_config(|doc| {
        doc["simulator"]["rate_per_sec"] = toml::Value::Integer(5_000);
    });
    let app = start_with(&text).await;
    wait_live(&app, "BTCUSDT").await;
    let mut ws = ws_connect(&app).await;
    let symbols = ["BTCUSDT", "ETHUSDT", "BTC-USD", "RELIANCE", "INFY"];
    let channels: Vec<String> = symbols.iter().map(|s| format!("quotes.{s}")).collect();
    send(&mut ws, json!({"op":"subscribe","channels":channels})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Read what was buffered plus one more second of live updates.
    let mut per_channel: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        let Some(m) = recv(&mut ws, Duration::from_millis(300)).await else {
            break;
        };
        if let Some(ch) = m["channel"].as_str() {
            per_channel.entry(ch.to_owned()).or_default().push(seq(&m));
        }
    }
    assert_eq!(per_channel.len(), symbols.len(), "every channel delivered");
    for (ch, seqs) in &per_channel {
        assert_eq!(seqs[0], 1, "{ch} starts with its snapshot");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{ch} sequence is contiguous");
    }
    let metrics = metrics(&app).await;
    let conflated: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stocksblitz_ws_conflated_total "))
        .and_then(|v| v.parse().ok())
        .expect("conflation metric");
    let ticks: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stocksblitz_engine_ticks_total "))
        .and_then(|v| v.parse().ok())
        .expect("ticks metric");
    let sent: usize = per_channel.values().map(Vec::len).sum();
    assert!(conflated > 0, "updates were folded while the client was not reading");
    assert!(
        (sent as u64) < ticks,
        "fewer messages ({sent}) than market events ({ticks})"
    );
    app.shutdown().await.expect("clean shutdown");
}

/// Heartbeats arrive on schedule; a client that never answers (no frames, no pongs) is
/// closed with 1001 after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_idle_timeout() {
    use futures_util::StreamExt;
    let text = test_config(|doc| {
        doc["api"]["ws_heartbeat_secs"] = toml::Value::Integer(1);
        doc["api"]["ws_idle_timeout_secs"] = toml::Value::Integer(2);
    });
    let app = start_with(&text).await;
    let mut ws = ws_connect(&app).await;
    let hb: Value = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame");
        if let Message::Text(t) = frame.expect("open").expect("ok") {
            break serde_json::from_str(t.as_str()).expect("json");
        }
    };
    assert_eq!(hb["type"], "heartbeat");
    assert!(hb["ts_us"].as_i64().is_some_and(|t| t > 1_600_000_000_000_000));

    // Stop reading (so no pongs go back) long enough to pass the idle timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut close_code = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let Message::Close(Some(f)) = m {
            close_code = Some(u16::from(f.code));
            break;
        }
    }
    assert_eq!(close_code, Some(1001));
    app.shutdown().await.expect("clean shutdown");
}
