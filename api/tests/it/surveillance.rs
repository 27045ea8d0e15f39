//! Surveillance end to end over the API: the escalation ladder (throttle, block, an
//! admin clearing it), anomalies on `GET /api/v1/anomalies` (filtered by caller and
//! severity) and on the WebSocket channel `anomalies`, in the audit log and metrics;
//! and no false positives over a normal stretch of the feed simulator's markets.

use crate::common;

use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn with_surveillance(cooldown_ms: i64, audit: Option<std::path::PathBuf>) -> impl FnOnce(&mut toml::Table) {
    move |d| {
        let mut s = surveillance_section();
        s["cooldown_ms"] = toml::Value::Integer(cooldown_ms);
        d.insert("surveillance".into(), s);
        if let Some(a) = audit {
            d["audit"]["path"] = toml::Value::String(a.display().to_string());
        }
    }
}

/// 60,000 SBZ at 10.00: over the 50,000 quantity threshold (HIGH), under every risk
/// limit and the notional threshold.
fn big_order(client: &str) -> Value {
    json!({ "symbol": "SBZ", "side": "sell", "type": "limit", "price": "10.00", "qty": "60000", "client_order_id": client })
}

async fn anomalies(c: &Client, query: &str) -> Vec<Value> {
    let (s, v) = c.get(&format!("/anomalies{query}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["anomalies"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_escalation_ladder_over_the_api() {
    let dir = fresh_dir("surveillance");
    let audit = dir.join("audit.log");
    let app = start_with(&test_config(with_surveillance(0, Some(audit.clone())))).await;
    let alice = Client::new(&app, "alice", "trader");
    let bob = Client::new(&app, "bob", "trader");
    let ops = Client::new(&app, "ops", "admin");

    // Watchers on the anomalies channel: the admin sees all, bob not alice's.
    let mut ops_ws = ws_connect(&app).await;
    send(&mut ops_ws, json!({ "op": "auth", "token": token("ops", "admin") })).await;
    send(
        &mut ops_ws,
        json!({ "op": "subscribe", "channels": ["anomalies"], "id": 1 }),
    )
    .await;
    let snap = recv_until(&mut ops_ws, Duration::from_secs(5), |v| v["channel"] == "anomalies")
        .await
        .expect("snapshot");
    assert_eq!(snap["type"], "snapshot");
    let mut bob_ws = ws_connect(&app).await;
    send(&mut bob_ws, json!({ "op": "auth", "token": token("bob", "trader") })).await;
    send(&mut bob_ws, json!({ "op": "subscribe", "channels": ["anomalies"] })).await;
    recv_until(&mut bob_ws, Duration::from_secs(5), |v| v["channel"] == "anomalies")
        .await
        .expect("snapshot");

    // First HIGH finding: throttle.
    let (s, v) = alice.post("/orders", big_order("big-1")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, risk) = alice.get("/accounts/me/risk").await;
    assert_eq!(risk["trading_state"], "throttled", "{risk}");
    let seen = anomalies(&ops, "").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let a = &seen[0];
    assert_eq!(
        (
            a["rule"].as_str(),
            a["severity"].as_str(),
            a["action"].as_str(),
            a["account"].as_str(),
            a["symbol"].as_str()
        ),
        (
            Some("large_qty"),
            Some("HIGH"),
            Some("throttle"),
            Some("alice"),
            Some("SBZ")
        )
    );
    assert_eq!(
        (a["observed"].as_str(), a["threshold"].as_str()),
        (Some("60000.00000000"), Some("50000.00000000"))
    );
    let pushed = recv_until(&mut ops_ws, Duration::from_secs(5), |v| {
        v["channel"] == "anomalies" && v["type"] == "update"
    })
    .await
    .expect("pushed to the admin");
    assert_eq!(pushed["data"]["rule"], "large_qty");

    // Throttled: a tenth of the order rate (10/s -> 1/s).
    let (s, v) = alice.post("/orders", big_order("too-soon")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("ACCOUNT_THROTTLED")),
        "{v}"
    );
    // Second: throttle again; third: blocked.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (s, v) = alice.post("/orders", big_order("big-2")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (s, v) = alice.post("/orders", big_order("big-3")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let seen = anomalies(&ops, "").await;
    let actions: Vec<&str> = seen.iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(actions, ["throttle", "throttle", "block"]);
    let (s, v) = alice
        .post(
            "/orders",
            json!({ "symbol": "SBZ", "side": "sell", "type": "limit", "price": "10.00", "qty": "1" }),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("ACCOUNT_BLOCKED")),
        "{v}"
    );
    // Others trade on.
    let (s, _) = bob
        .post(
            "/orders",
            json!({ "symbol": "SBZ", "side": "sell", "type": "limit", "price": "10.05", "qty": "1" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // Filters: since and severity; alice sees hers, bob none of alice's.
    let next = seen[1]["seq"].as_u64().expect("seq");
    assert_eq!(anomalies(&ops, &format!("?since={next}")).await.len(), 1);
    assert_eq!(anomalies(&ops, "?severity=critical").await.len(), 0);
    assert_eq!(anomalies(&ops, "?severity=HIGH").await.len(), 3);
    assert_eq!(anomalies(&alice, "").await.len(), 3);
    assert_eq!(anomalies(&bob, "").await.len(), 0);
    let (s, v) = ops.get("/anomalies?severity=huge").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER"))
    );
    let leaked = tokio::time::timeout(Duration::from_millis(300), async {
        recv_until(&mut bob_ws, Duration::from_millis(300), |v| v["type"] == "update").await
    })
    .await
    .ok()
    .flatten();
    assert!(leaked.is_none(), "bob saw alice's anomaly: {leaked:?}");

    // An admin clears the block: alice trades again, and the ladder starts over.
    let (s, v) = ops
        .call(
            Method::PUT,
            "/admin/trading-state/alice",
            Some(json!({ "state": "active" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = alice.post("/orders", big_order("big-4")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let last = anomalies(&ops, "").await;
    assert_eq!(
        last.last().and_then(|a| a["action"].as_str()),
        Some("throttle"),
        "{last:?}"
    );

    // Audited, and counted.
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(text.matches("surveillance.anomaly").count() >= 3, "{text}");
    let metrics = metrics(&app).await;
    let total = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stocksblitz_surveillance_anomalies_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(total, Some(4), "{metrics}");
    app.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_stretch_of_the_simulated_markets_raises_nothing() {
    // The simulator's venues (Binance, Coinbase, Kite) through the real handlers, with
    // every market-data rule on and the default thresholds.
    let app = start_with(&test_config(with_surveillance(60_000, None))).await;
    for sym in ["BTCUSDT", "ETHUSDT", "BTC-USD"] {
        wait_live(&app, sym).await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let ops = Client::new(&app, "ops", "admin");
    let seen = anomalies(&ops, "").await;
    let market: Vec<&Value> = seen.iter().filter(|a| a["account"].is_null()).collect();
    assert!(market.is_empty(), "false positives: {market:?}");
    app.shutdown().await.expect("shutdown");
}
