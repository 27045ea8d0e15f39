//! REST routes, health, metrics and the error contract against a running server.

use crate::common;

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

    // Requests count under their route template (nested routes with the /api/v1
    // prefix), a path no route matched under `unmatched`, exactly once each.
    let scrape = || async {
        reqwest::get(http(&app, "/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let sample = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map_or(0, |v| v.parse().expect("integer sample"))
    };
    let quote_ok = "stocksblitz_http_requests_total{route=\"/api/v1/quotes/{symbol}\",method=\"GET\",status=\"200\"}";
    let quote_count =
        "stocksblitz_http_request_duration_seconds_count{route=\"/api/v1/quotes/{symbol}\",method=\"GET\"}";
    let quote_inf = "stocksblitz_http_request_duration_seconds_bucket{route=\"/api/v1/quotes/{symbol}\",method=\"GET\",le=\"+Inf\"}";
    let unmatched = "stocksblitz_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}";
    let before = scrape().await;
    for _ in 0..5 {
        let (s, _, _) = get(&app, "/api/v1/quotes/BTCUSDT").await;
        assert_eq!(s, StatusCode::OK);
    }
    for _ in 0..3 {
        let (s, _, _) = get(&app, "/no/such/route").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let after = scrape().await;
    assert_eq!(sample(&after, quote_ok), sample(&before, quote_ok) + 5, "{after}");
    assert_eq!(sample(&after, quote_count), sample(&before, quote_count) + 5);
    assert_eq!(sample(&after, quote_inf), sample(&after, quote_count));
    assert_eq!(sample(&after, unmatched), sample(&before, unmatched) + 3, "{after}");

    // After the engine stops, readiness fails.
    let state = app.state.clone();
    app.shutdown().await.expect("clean shutdown");
    assert!(state.feeds.iter().all(|f| f.stats.running.get() == 0));
}

// ---------------------------------------------------------------------------------
// Health that tells the truth: readiness follows whether the feeds deliver, every
// non-ok status says why (feed, instrument, since when), closed and feedless markets
// are healthy, a refused venue token is a visible feed state.

/// GET `{base}/health`, checking the contract on every answer: 503 exactly when
/// "down", and a status other than "ok" always lists its reasons (and "ok" none).
async fn health_at(base: &str) -> (StatusCode, Value) {
    let r = reqwest::get(format!("{base}/health")).await.expect("health");
    let code = r.status();
    let v: Value = r.json().await.expect("json");
    let status = v["status"].as_str().unwrap_or("");
    assert!(["ok", "degraded", "down"].contains(&status), "{v}");
    assert_eq!(code == StatusCode::SERVICE_UNAVAILABLE, status == "down", "{v}");
    assert_eq!(code == StatusCode::OK, status != "down", "{v}");
    let reasons = v["reasons"].as_array().map_or(0, Vec::len);
    assert_eq!(
        status == "ok",
        reasons == 0,
        "every non-ok status lists its reasons: {v}"
    );
    assert_eq!(v["ready"] == true, status != "down", "{v}");
    (code, v)
}

async fn ready_at(base: &str) -> (StatusCode, Value) {
    let r = reqwest::get(format!("{base}/health/ready")).await.expect("ready");
    let code = r.status();
    let v: Value = r.json().await.expect("json");
    if code != StatusCode::OK {
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(
            v["reasons"].as_array().is_some_and(|r| !r.is_empty()),
            "not ready says why: {v}"
        );
    }
    (code, v)
}

/// Polls `f` every 100 ms until it yields a value; panics after `secs` seconds.
async fn until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Posts to the feed simulator's control API.
async fn sim_control(port: u16, path: &str, body: Value) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .json(&body)
        .send()
        .await
        .expect("simulator control");
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

/// The instrument's entry in a `/health` body.
fn instrument_health<'a>(h: &'a Value, symbol: &str) -> &'a Value {
    h["instruments"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["symbol"] == symbol))
        .unwrap_or_else(|| panic!("{symbol} in /health: {h}"))
}

fn feed_health<'a>(h: &'a Value, name: &str) -> &'a Value {
    h["feeds"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == name))
        .unwrap_or_else(|| panic!("feed {name} in /health: {h}"))
}

/// The real binary on `text`, its log in the returned path; the base URL has no /api/v1.
async fn spawn_binary(name: &str, text: &str, env: &[(&str, &str)]) -> (process::Server, String, std::path::PathBuf) {
    let dir = fresh_dir(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).expect("config");
    let log = dir.join("server.log");
    let server = process::spawn_server(&cfg, &log, env).await;
    let base = server.base.trim_end_matches("/api/v1").to_owned();
    (server, base, log)
}

/// The JSON log lines with `message`.
fn log_lines(log: &std::path::Path, message: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

/// A simulated Binance feed goes silent: its instruments turn STALE, readiness goes 503
/// naming the feed, the instrument and since when; /health is "down" (503); then the
/// data returns and readiness with it. Each quality transition is one JSON log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_feed_makes_the_server_unready_naming_feed_and_instrument_then_it_recovers() {
    let sim = process::free_port();
    let text = test_config(|d| {
        d["simulator"]["listen"] = toml::Value::String(format!("127.0.0.1:{sim}"));
        d["engine"]["stale_after_ms"] = toml::Value::Integer(1_000);
        // Silence, not a dead connection: no reconnect while it lasts.
        d["feeds"][0]["live"]["stale_after_ms"] = toml::Value::Integer(500);
        d["feeds"][0]["live"]["dead_after_ms"] = toml::Value::Integer(120_000);
        d["health"]["instrument_grace_ms"] = toml::Value::Integer(500);
    });
    let (server, base, log) = spawn_binary("health-silence", &text, &[]).await;
    until("ready at start", 60, || async {
        let (code, _) = ready_at(&base).await;
        (code == StatusCode::OK).then_some(())
    })
    .await;
    let (_, h) = health_at(&base).await;
    assert_eq!(instrument_health(&h, "BTCUSDT")["quality"], "LIVE", "{h}");

    sim_control(
        sim,
        "/control/faults/binance",
        serde_json::json!({"kind": "silence", "ms": 8_000}),
    )
    .await;
    let reasons = until("not ready", 30, || async {
        let (code, v) = ready_at(&base).await;
        (code == StatusCode::SERVICE_UNAVAILABLE).then_some(v["reasons"].clone())
    })
    .await;
    let text_of = |r: &Value| {
        r.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let named = text_of(&reasons);
    assert!(
        named.iter().any(|r| r.contains("BTCUSDT")
            && r.contains("feed binance")
            && r.contains("STALE")
            && r.contains(" since 20")),
        "a reason names the instrument, its feed, the state and since when: {named:?}"
    );
    let (code, h) = health_at(&base).await;
    assert_eq!(
        (code, h["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("down"))
    );
    let btc = instrument_health(&h, "BTCUSDT");
    assert_eq!(
        (btc["quality"].as_str(), btc["feed"].as_str()),
        (Some("STALE"), Some("binance")),
        "{h}"
    );
    assert_eq!(btc["blocks_readiness"], true);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    assert!(metrics.contains("\nstocksblitz_ready 0\n"), "metrics say not ready");

    // The data returns: ready again.
    until("ready again", 60, || async {
        let (code, _) = ready_at(&base).await;
        (code == StatusCode::OK).then_some(())
    })
    .await;
    let (_, h) = health_at(&base).await;
    assert_ne!(instrument_health(&h, "BTCUSDT")["quality"], "STALE", "{h}");
    drop(server);

    // One log line per transition: each starts where the previous one ended.
    let seen: Vec<(String, String)> = log_lines(&log, "data quality changed")
        .into_iter()
        .filter(|v| v["symbol"] == "BTCUSDT")
        .map(|v| {
            assert_eq!(v["feed"], "binance", "{v}");
            (
                v["from"].as_str().unwrap_or("").to_owned(),
                v["to"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(seen.iter().all(|(f, t)| f != t), "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].1 == w[1].0),
        "no transition logged twice: {seen:?}"
    );
    let stale = seen.iter().position(|(_, t)| t == "STALE").expect("went STALE, logged");
    assert!(
        seen[stale..].iter().any(|(_, t)| t == "LIVE"),
        "came back LIVE, logged: {seen:?}"
    );
}

/// An NSE instrument out of its session shows CLOSED (never LIVE, never STALE) while
/// the simulator keeps sending it ticks, and does not stop the server being ready; an
/// instrument in session on the same feed is LIVE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_session_instrument_is_closed_and_healthy() {
    use chrono::Timelike;
    let hour = chrono::Utc::now().hour();
    // A window that excludes now, and one that (but for the last minute of the day)
    // includes it.
    let closed = if hour < 12 {
        "UTC 13:00-23:00 mon-sun"
    } else {
        "UTC 01:00-11:00 mon-sun"
    };
    let text = test_config(|d| {
        for inst in d["instruments"].as_array_mut().expect("instruments") {
            match inst["symbol"].as_str() {
                Some("RELIANCE") => inst["session"] = toml::Value::String(closed.into()),
                Some("INFY") => inst["session"] = toml::Value::String("UTC 00:00-23:59 mon-sun".into()),
                _ => {}
            }
        }
        d["engine"]["stale_after_ms"] = toml::Value::Integer(500);
        d["health"]["instrument_grace_ms"] = toml::Value::Integer(1_000);
    });
    let app = start_with(&text).await;
    wait_live(&app, "INFY").await;
    let base = format!("http://{}", app.addr);
    until("ready", 60, || async {
        let (code, _) = ready_at(&base).await;
        (code == StatusCode::OK).then_some(())
    })
    .await;
    // Over several stale periods of ticks from the simulator: CLOSED throughout.
    for _ in 0..20 {
        let (_, _, q) = get(&app, "/api/v1/quotes/RELIANCE").await;
        assert_eq!(q["quality"], "CLOSED", "{q}");
        let (code, h) = health_at(&base).await;
        let r = instrument_health(&h, "RELIANCE");
        assert_eq!(
            (r["quality"].as_str(), r["blocks_readiness"].as_bool()),
            (Some("CLOSED"), Some(false))
        );
        assert!(
            h["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|x| !x.as_str().unwrap_or("").contains("RELIANCE")),
            "a closed market is no reason: {h}"
        );
        assert_eq!(code, StatusCode::OK, "{h}");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    let metrics = metrics(&app).await;
    assert!(metrics.contains("stocksblitz_instrument_quality{symbol=\"RELIANCE\",state=\"CLOSED\"} 1"));
    assert!(metrics.contains("stocksblitz_instrument_quality{symbol=\"INFY\",state=\"CLOSED\"} 0"));
    app.shutdown().await.expect("clean shutdown");
}

/// The internal venue's SBZ has no feed: after a trade and a long quiet spell (many
/// times a short stale threshold) it is never STALE, raises no stale-feed anomaly, and
/// is no reason in /health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_venue_is_never_stale_for_silence() {
    let text = test_config(|d| {
        d["engine"]["stale_after_ms"] = toml::Value::Integer(100);
        d.insert("surveillance".into(), surveillance_section());
    });
    let app = start_with(&text).await;
    let base = format!("http://{}", app.addr);
    let (alice, bob) = (Client::new(&app, "alice", "trader"), Client::new(&app, "bob", "trader"));
    let order =
        |side: &str| serde_json::json!({"symbol": "SBZ", "side": side, "type": "limit", "price": "100.00", "qty": "1"});
    let (s, v) = alice.post("/orders", order("buy")).await;
    assert!(s.is_success(), "{v}");
    let (s, v) = bob.post("/orders", order("sell")).await;
    assert!(s.is_success(), "{v}");
    until("the SBZ trade", 30, || async {
        let (_, _, t) = get(&app, "/api/v1/trades/SBZ").await;
        t["trades"].as_array().is_some_and(|a| !a.is_empty()).then_some(())
    })
    .await;
    // A quiet spell of 30 stale periods, looked at throughout.
    for _ in 0..30 {
        let (_, _, q) = get(&app, "/api/v1/quotes/SBZ").await;
        assert_ne!(q["quality"], "STALE", "{q}");
        let (_, h) = health_at(&base).await;
        assert_ne!(instrument_health(&h, "SBZ")["quality"], "STALE", "{h}");
        assert!(
            h["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|x| !x.as_str().unwrap_or("").contains("SBZ")),
            "{h}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ops = Client::new(&app, "ops", "admin");
    let (_, v) = ops.get("/anomalies?limit=500").await;
    let stale_sbz: Vec<&Value> = v["anomalies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["symbol"] == "SBZ" && a["rule"] == "stale_feed")
        .collect();
    assert!(stale_sbz.is_empty(), "{stale_sbz:?}");
    // Every anomaly that was raised says what it saw in words.
    for a in v["anomalies"].as_array().into_iter().flatten() {
        assert!(
            a["message"].as_str().is_some_and(|m| m.split_whitespace().count() >= 5),
            "{a}"
        );
    }
    app.shutdown().await.expect("clean shutdown");
}

/// Kite's daily token: a refused token (HTTP 403 from the simulator) shows as the kite
/// feed's state with its reason in /health and metrics, logged once however often it
/// is retried, and makes the server unready past the grace; writing the new token to
/// KITE_ACCESS_TOKEN_FILE's file recovers on the next reconnect, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_kite_token_shows_in_health_and_metrics_and_a_rotated_file_recovers() {
    let sim = process::free_port();
    let dir = fresh_dir("kite-token");
    std::fs::create_dir_all(&dir).expect("dir");
    let token = dir.join("kite_access_token");
    std::fs::write(&token, "token-monday\n").expect("token");
    let text = test_config(|d| {
        d["simulator"]["listen"] = toml::Value::String(format!("127.0.0.1:{sim}"));
        let kite = &mut d["feeds"][2];
        assert_eq!(kite["name"].as_str(), Some("kite"));
        let auth: toml::Table = toml::from_str("access_token = \"SBZ_TEST_KITE_ACCESS_TOKEN\"").expect("toml");
        kite["live"]
            .as_table_mut()
            .expect("live")
            .insert("auth_query".into(), toml::Value::Table(auth));
        kite["live"]["reconnect"]["base_ms"] = toml::Value::Integer(50);
        kite["live"]["reconnect"]["cap_ms"] = toml::Value::Integer(300);
        d["health"]["feed_grace_ms"] = toml::Value::Integer(1_000);
    });
    let file = token.display().to_string();
    let (server, base, log) = spawn_binary(
        "health-kite",
        &text,
        &[("SBZ_TEST_KITE_ACCESS_TOKEN_FILE", file.as_str())],
    )
    .await;
    let kite_state = |h: &Value| feed_health(h, "kite")["state"].as_str().unwrap_or("").to_owned();
    until("kite connected", 60, || async {
        let (_, h) = health_at(&base).await;
        (kite_state(&h) == "connected").then_some(())
    })
    .await;

    // Monday's token expires: the venue drops the connection and refuses the token.
    sim_control(
        sim,
        "/control/auth/kite",
        serde_json::json!({"refused_tokens": ["token-monday"]}),
    )
    .await;
    sim_control(sim, "/control/faults/kite", serde_json::json!({"kind": "disconnect"})).await;
    let h = until("kite unauthorized", 30, || async {
        let (_, h) = health_at(&base).await;
        (kite_state(&h) == "unauthorized").then_some(h)
    })
    .await;
    let feed = feed_health(&h, "kite");
    let reason = feed["reason"].as_str().unwrap_or("");
    assert!(reason.contains("HTTP 403"), "{feed}");
    assert!(
        reason.contains("SBZ_TEST_KITE_ACCESS_TOKEN_FILE"),
        "says where the token goes: {feed}"
    );
    assert!(!h.to_string().contains("token-monday"), "never the token itself");
    assert!(feed["since"].as_str().is_some_and(|s| s.starts_with("20")), "{feed}");
    let reasons = until("not ready, naming the feed", 30, || async {
        let (code, v) = ready_at(&base).await;
        (code == StatusCode::SERVICE_UNAVAILABLE).then_some(v["reasons"].to_string())
    })
    .await;
    assert!(
        reasons.contains("feed kite unauthorized since") && reasons.contains("HTTP 403"),
        "{reasons}"
    );
    // Retried, visibly, and counted.
    let metrics_text = || async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .expect("m")
            .text()
            .await
            .expect("t")
    };
    let failures =
        |m: &str| sample(m, "stocksblitz_feed_auth_failures_total{feed=\"kite\",kind=\"kite\"} ").unwrap_or(0);
    let m = metrics_text().await;
    assert!(
        m.contains("stocksblitz_feed_state{feed=\"kite\",kind=\"kite\",state=\"unauthorized\"} 1"),
        "{m}"
    );
    assert!(m.contains("stocksblitz_feed_state{feed=\"kite\",kind=\"kite\",state=\"connected\"} 0"));
    let first = failures(&m);
    assert!(first >= 1);
    until("more refused attempts", 30, || async {
        let m = metrics_text().await;
        (failures(&m) >= first + 2).then_some(())
    })
    .await;

    // The token job writes Tuesday's token: picked up on the next reconnect.
    std::fs::write(&token, "token-tuesday\n").expect("token");
    until("kite connected again", 30, || async {
        let (_, h) = health_at(&base).await;
        (kite_state(&h) == "connected").then_some(())
    })
    .await;
    until("ready again", 60, || async {
        let (code, _) = ready_at(&base).await;
        (code == StatusCode::OK).then_some(())
    })
    .await;
    let m = metrics_text().await;
    assert!(m.contains("stocksblitz_feed_state{feed=\"kite\",kind=\"kite\",state=\"connected\"} 1"));
    drop(server);

    // One log line for the refusal however many attempts were refused, and the
    // token never in the log.
    let refused = log_lines(&log, "feed refused by the venue");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["feed"], "kite");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("token-monday") && !text.contains("token-tuesday"),
        "no token in the log"
    );
    let _ = std::fs::remove_dir_all(dir);
}
