//! REST routes, health, metrics and the error contract against a running server.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

async fn get(app: &stocksblitz_api::app::RunningApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = reqwest::get(http(app, path)).await.expect("request");
    let (status, headers) = (r.status(), r.headers().clone());
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn assert_error(status: StatusCode, headers: &reqwest::header::HeaderMap, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(!body["error"]["message"].as_str().unwrap_or("").is_empty());
    assert!(body["error"]["details"].is_object());
    let rid = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Request-ID");
    assert_eq!(body["error"]["request_id"], rid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_data_routes() {
    let app = start().await;
    wait_live(&app, "BTCUSDT").await;

    let (s, h, v) = get(&app, "/api/v1/instruments").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("x-request-id").is_some());
    let list = v["instruments"].as_array().expect("list");
    assert_eq!(list.len(), 6, "five fed instruments and the internal-venue SBZ");
    let btc = list.iter().find(|i| i["symbol"] == "BTCUSDT").expect("BTCUSDT");
    assert_eq!(btc["tick_size"], "0.01");
    assert_eq!(btc["lot_size"], "0.00001");
    assert_eq!(btc["session"], "24x7");

    let (s, _, q) = get(&app, "/api/v1/quotes/BTCUSDT").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(q["quality"], "LIVE");
    assert!(q["bid"].is_string() && q["ask"].is_string() && q["recv_ts_us"].is_i64());

    let (s, _, b) = get(&app, "/api/v1/quotes?symbols=BTCUSDT,ETHUSDT,BTCUSDT").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["quotes"].as_array().map(Vec::len), Some(2), "duplicates collapse");

    let (s, _, book) = get(&app, "/api/v1/book/BTCUSDT?depth=3").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(book["bids"].as_array().map(Vec::len), Some(3));
    assert_eq!(book["asks"].as_array().map(Vec::len), Some(3));

    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (s, _, h1) = get(&app, "/api/v1/historical/BTCUSDT?interval=1s").await;
    assert_eq!(s, StatusCode::OK);
    let bars = h1["bars"].as_array().expect("bars");
    assert!(!bars.is_empty());
    assert!(
        bars.windows(2)
            .all(|w| w[0]["start_us"].as_i64() < w[1]["start_us"].as_i64()),
        "oldest first"
    );
    let (s, _, h2) = get(&app, "/api/v1/historical/BTCUSDT?interval=1m&from=0&limit=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h2["bars"].as_array().map(Vec::len), Some(1));
    let (_, _, none) = get(&app, "/api/v1/historical/BTCUSDT?interval=1s&to=0").await;
    assert_eq!(none["bars"].as_array().map(Vec::len), Some(0));

    let (s, _, t) = get(&app, "/api/v1/trades/BTCUSDT?limit=5").await;
    assert_eq!(s, StatusCode::OK);
    assert!(t["trades"].as_array().is_some_and(|a| !a.is_empty() && a.len() <= 5));

    let (s, _, m) = get(&app, "/api/v1/market-status").await;
    assert_eq!(s, StatusCode::OK);
    let rel = m["instruments"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["symbol"] == "RELIANCE").cloned())
        .expect("RELIANCE");
    assert_eq!(rel["session"], "Asia/Kolkata 09:15-15:30 mon-fri");
    assert!(rel["in_session"].is_boolean());

    // Kite full packets: the quote shows the reported last trade from the first packet
    // (no volume change needed) and the day statistics; market-status has them too.
    let mut kite = Value::Null;
    for _ in 0..200 {
        let (_, _, q) = get(&app, "/api/v1/quotes/RELIANCE").await;
        if q["day"].is_object() && q["last"].is_object() {
            kite = q;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(kite["day"]["close"], "2450.00", "previous close: {kite}");
    assert!(kite["last"]["price"].is_string(), "{kite}");
    assert!(
        kite["day"]["change"].is_string() && kite["day"]["change_pct"].is_string(),
        "{kite}"
    );
    let (_, _, m) = get(&app, "/api/v1/market-status").await;
    let rel = m["instruments"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["symbol"] == "RELIANCE").cloned())
        .expect("RELIANCE");
    assert_eq!(rel["day"]["close"], "2450.00", "{rel}");
    assert!(rel["last"].is_string(), "{rel}");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_error_contract() {
    let app = start().await;
    let cases: &[(&str, StatusCode, &str)] = &[
        ("/api/v1/quotes/NOPE", StatusCode::NOT_FOUND, "UNKNOWN_SYMBOL"),
        ("/api/v1/quotes", StatusCode::BAD_REQUEST, "INVALID_PARAMETER"),
        ("/api/v1/quotes?symbols=", StatusCode::BAD_REQUEST, "INVALID_PARAMETER"),
        (
            "/api/v1/quotes?symbols=BTCUSDT,NOPE",
            StatusCode::NOT_FOUND,
            "UNKNOWN_SYMBOL",
        ),
        (
            "/api/v1/book/BTCUSDT?depth=0",
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/book/BTCUSDT?depth=abc",
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/book/BTCUSDT?depth=999999999999999999999",
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        ),
        ("/api/v1/book/NOPE", StatusCode::NOT_FOUND, "UNKNOWN_SYMBOL"),
        (
            "/api/v1/historical/BTCUSDT",
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/historical/BTCUSDT?interval=5m",
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/historical/BTCUSDT?interval=1s&from=10&to=5",
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/historical/BTCUSDT?interval=1s&from=-1",
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        ),
        (
            "/api/v1/trades/BTCUSDT?limit=100000000",
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        ),
        ("/api/v1/nope", StatusCode::NOT_FOUND, "NOT_FOUND"),
        ("/no-such-page", StatusCode::NOT_FOUND, "NOT_FOUND"),
    ];
    for (path, status, code) in cases {
        let (s, h, v) = get(&app, path).await;
        assert_error(s, &h, &v, *status, code);
    }
    let many = vec!["BTCUSDT"; 101].join(",");
    let (s, h, v) = get(&app, &format!("/api/v1/quotes?symbols={many}")).await;
    assert_error(s, &h, &v, StatusCode::BAD_REQUEST, "INVALID_PARAMETER");

    let client = reqwest::Client::new();
    let r = client
        .post(http(&app, "/api/v1/instruments"))
        .body("{}")
        .send()
        .await
        .expect("post");
    let (s, h) = (r.status(), r.headers().clone());
    let v: Value = r.json().await.expect("json");
    assert_error(s, &h, &v, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");

    // Request ids: a sane caller id is echoed, a hostile one replaced.
    let r = client
        .get(http(&app, "/health/live"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = client
        .get(http(&app, "/api/v1/quotes/NOPE"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .expect("get");
    let rid = r.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(rid.starts_with("req-"), "{rid}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["request_id"], rid.as_str());
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let app = start().await;
    wait_live(&app, "BTCUSDT").await;
    let (s, _, v) = get(&app, "/health/live").await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, _, v) = get(&app, "/health/ready").await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
    let (s, _, v) = get(&app, "/health").await;
    assert_eq!(s, StatusCode::OK);
    assert!(["ok", "degraded"].contains(&v["status"].as_str().unwrap_or("")), "{v}");
    assert_eq!(v["feeds"][0]["running"], true);

    let text = reqwest::get(http(&app, "/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "stocksblitz_engine_ticks_total",
        "stocksblitz_ring_pushed_total{ring=\"feed-binance\",direction=\"input\"}",
        "stocksblitz_ring_dropped_total{ring=\"api\",direction=\"output\"}",
        "stocksblitz_ring_fill",
        "stocksblitz_feed_ticks_total{feed=\"binance\",kind=\"binance\"}",
        "stocksblitz_instrument_quality{symbol=\"BTCUSDT\",state=\"LIVE\"} 1",
        "stocksblitz_http_requests_total{route=\"/health/ready\",method=\"GET\",status=\"200\"}",
        "stocksblitz_http_request_duration_seconds_bucket{route=\"/health\",method=\"GET\",le=\"+Inf\"}",
        "stocksblitz_ws_connections",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
    // Every sample line is "name{labels} value" with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }

    // After the engine stops, readiness fails.
    let state = app.state.clone();
    app.shutdown().await.expect("clean shutdown");
    assert!(state.feeds.iter().all(|f| f.stats.running.get() == 0));
}
