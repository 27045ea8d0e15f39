//! Protocol details of the live connection loop against a bare WebSocket server:
//! pings are answered with the same payload, and a refused connection is retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use stocksblitz_engine::tick_ring::tick_ring;
use stocksblitz_engine::{InstrumentConfig, InstrumentRegistry};
use stocksblitz_feed_handlers::backoff::BackoffConfig;
use stocksblitz_feed_handlers::live::{spawn_live, LiveConfig};
use stocksblitz_feed_handlers::venue::Venue;
use stocksblitz_testkit::instruments::crypto_spot;
use tokio_tungstenite::tungstenite::Message;

fn registry() -> InstrumentRegistry {
    InstrumentRegistry::from_config(&[InstrumentConfig {
        qty_decimals: 5,
        lot_size: "0.00001".into(),
        ..crypto_spot("BTCUSDT", "binance")
    }])
    .unwrap()
}

fn live(addr: std::net::SocketAddr) -> LiveConfig {
    LiveConfig {
        ws_url: format!("ws://{addr}"),
        rest_url: Some(format!("http://{addr}")),
        depth_limit: 100,
        stale_after_ms: 2_000,
        dead_after_ms: 5_000,
        connect_timeout_ms: 1_000,
        max_connection_age_secs: 3_600,
        reconnect: BackoffConfig {
            base_ms: 20,
            cap_ms: 100,
            reset_after_ms: 1_000,
        },
        audit_interval_secs: 0,
        capture: None,
        auth_query: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_with_the_same_payload_and_refusals_are_retried() {
    // Reserve a port, then refuse the first connection attempts by not listening yet.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let (tx, _rx) = tick_ring("t", 1024);
    let stop = Arc::new(AtomicBool::new(false));
    let feed = spawn_live(
        "b".into(),
        Venue::parse("binance").unwrap(),
        None,
        live(addr),
        &registry(),
        &["BTCUSDT".into()],
        tx,
        Arc::clone(&stop),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        feed.stats.reconnects.get() >= 1,
        "refused connections are retried with backoff"
    );

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    ws.send(Message::Ping(b"are-you-there-42".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Pong(p) = m {
                return Some(p);
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(pong.as_deref(), Some(&b"are-you-there-42"[..]));
    stop.store(true, Ordering::Relaxed);
    drop(ws);
    tokio::task::spawn_blocking(move || feed.join()).await.unwrap();
}
