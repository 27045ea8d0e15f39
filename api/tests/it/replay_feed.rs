//! A capture replayed into a running engine (`kind = "replay"`) is served like live data.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_capture_reaches_the_api() {
    let cap = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../feed-handlers/tests/fixtures/binance.cap");
    let text = test_config(|doc| {
        let feed: toml::Table = toml::from_str(&format!(
            "name = \"replay\"\nkind = \"replay\"\ninstruments = [\"BTCUSDT\"]\n[replay]\npath = {:?}\nvenue = \"binance\"\nspeed = \"max\"\n",
            cap.display().to_string()
        ))
        .expect("feed table");
        doc["feeds"].as_array_mut().expect("feeds")[0] = toml::Value::Table(feed);
    });
    let app = start_with(&text).await;
    let client = reqwest::Client::new();
    let mut book = Value::Null;
    for _ in 0..100 {
        book = client
            .get(http(&app, "/api/v1/book/BTCUSDT?depth=5"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if book["bids"][0][0] == "65000.40000000" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The final book of the capture after its two gaps and resyncs (see feed_cli.rs),
    // at Binance's 8-decimal wire precision.
    assert_eq!(
        book["bids"],
        serde_json::json!([
            ["65000.40000000", "0.12345678"],
            ["65000.30000000", "1.00000000"],
            ["65000.20000000", "1.00000000"]
        ])
    );
    assert_eq!(
        book["asks"],
        serde_json::json!([["65001.00000000", "2.50000000"], ["65001.50000000", "4.00000000"]])
    );
    let metrics = client
        .get(http(&app, "/metrics"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("stocksblitz_feed_parse_errors_total{feed=\"replay\",kind=\"replay\"} 3"),
        "the truncated frame and the two values finer than 8 decimals are counted"
    );
    assert!(metrics.contains("stocksblitz_feed_gaps_total{feed=\"replay\",kind=\"replay\"} 2"));
    app.shutdown().await.expect("clean shutdown");
}
