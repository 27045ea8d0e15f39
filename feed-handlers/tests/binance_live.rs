//! The real Binance handler against the feed simulator: for every fault scenario the
//! local book, after recovery, equals the simulator's true book.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stocksblitz_engine::instrument::InstrumentKind;
use stocksblitz_engine::ring::{ring, RingConsumer};
use stocksblitz_engine::{BookFlags, FeedStatus, InstrumentConfig, InstrumentRegistry, L2Book, Tick, TickData};
use stocksblitz_feed_handlers::live::{spawn_live, LiveConfig};
use stocksblitz_feed_handlers::sim::faults::FaultKind;
use stocksblitz_feed_handlers::sim::{self, SimHandle, SimulatorConfig};
use stocksblitz_feed_handlers::venue::Venue;

fn registry() -> InstrumentRegistry {
    let inst = |symbol: &str, venue_symbol: &str| InstrumentConfig {
        symbol: symbol.into(),
        venue: "binance".into(),
        venue_symbol: venue_symbol.into(),
        kind: InstrumentKind::CryptoSpot,
        currency: "USDT".into(),
        price_decimals: 2,
        qty_decimals: 5,
        tick_size: "0.01".into(),
        lot_size: "0.00001".into(),
        session: "24x7".into(),
    };
    InstrumentRegistry::from_config(&[inst("BTCUSDT", "btcusdt"), inst("ETHUSDT", "ethusdt")]).unwrap()
}

struct Harness {
    rt: tokio::runtime::Runtime,
    sim: Option<SimHandle>,
    rx: RingConsumer<Tick>,
    books: Vec<L2Book>,
    statuses: Vec<FeedStatus>,
    stop: Arc<AtomicBool>,
    feed: Option<stocksblitz_feed_handlers::FeedHandle>,
}

impl Harness {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let reg = registry();
        let cfg = SimulatorConfig {
            enabled: true,
            listen: "127.0.0.1:0".into(),
            seed: 5,
            rate_per_sec: 400,
            depth: 10,
            start_prices: [
                ("BTCUSDT".into(), "65000.00".into()),
                ("ETHUSDT".into(), "3400.00".into()),
            ]
            .into(),
        };
        let setup = sim::setup_from(&reg, &cfg).unwrap();
        let sim = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            sim::start(setup, l).await.unwrap()
        });
        let live = LiveConfig {
            ws_url: format!("ws://{}/binance", sim.addr),
            rest_url: Some(format!("http://{}/binance", sim.addr)),
            depth_limit: 1000,
            stale_after_ms: 400,
            dead_after_ms: 1500,
            connect_timeout_ms: 1000,
            max_connection_age_secs: 3600,
            reconnect: stocksblitz_feed_handlers::backoff::BackoffConfig {
                base_ms: 20,
                cap_ms: 200,
                reset_after_ms: 1000,
            },
            audit_interval_secs: 0,
            capture: None,
            auth_query: Default::default(),
        };
        let (tx, rx) = ring::<Tick>("test", 1 << 16);
        let stop = Arc::new(AtomicBool::new(false));
        let feed = spawn_live(
            "binance".into(),
            Venue::Binance,
            None,
            live,
            &reg,
            &["BTCUSDT".into(), "ETHUSDT".into()],
            tx,
            Arc::clone(&stop),
        )
        .unwrap();
        Self {
            rt,
            sim: Some(sim),
            rx,
            books: vec![L2Book::new(1000), L2Book::new(1000)],
            statuses: Vec::new(),
            stop,
            feed: Some(feed),
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.rx.pop() {
            match t.data {
                TickData::BookDelta {
                    side,
                    price,
                    qty,
                    flags,
                    ..
                } => {
                    let b = &mut self.books[t.instrument.index()];
                    if flags.contains(BookFlags::CLEAR) {
                        b.clear();
                    }
                    b.apply(side, price, qty);
                }
                TickData::Status { status, .. } if t.instrument.0 == 0 => self.statuses.push(status),
                _ => {}
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.drain();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn control(&self, path: &str, body: serde_json::Value) {
        let addr = self.sim.as_ref().unwrap().addr;
        self.rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("http://{addr}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        });
    }

    fn fault(&self, kind: FaultKind, count: u32, ms: u64) {
        let kind = serde_json::to_value(format!("{kind:?}").to_lowercase()).unwrap();
        self.control(
            "/control/faults/binance",
            serde_json::json!({ "kind": kind, "count": count, "ms": ms }),
        );
    }

    /// Pauses the market, lets the handler catch up, and compares every book.
    fn assert_books_match(&mut self, context: &str) {
        self.control("/control/pause/binance", serde_json::json!({ "paused": true }));
        let addr = self.sim.as_ref().unwrap().addr;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.run_for(Duration::from_millis(100));
            let mut all = true;
            for (i, sym) in ["btcusdt", "ethusdt"].iter().enumerate() {
                let truth: serde_json::Value = self.rt.block_on(async {
                    reqwest::get(format!("http://{addr}/control/book/binance/{sym}"))
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap()
                });
                let ours = |ls: &[stocksblitz_engine::Level]| -> Vec<[String; 2]> {
                    ls.iter()
                        .map(|l| [l.price.decimal(2).to_string(), l.qty.decimal(5).to_string()])
                        .collect()
                };
                let same = serde_json::json!(ours(self.books[i].bids())) == truth["bids"]
                    && serde_json::json!(ours(self.books[i].asks())) == truth["asks"];
                all &= same;
                if !same && Instant::now() > deadline {
                    panic!(
                        "{context}: {sym} book differs\nours bids {:?}\ntrue {}",
                        ours(self.books[i].bids()),
                        truth["bids"]
                    );
                }
            }
            if all {
                break;
            }
        }
        self.control("/control/pause/binance", serde_json::json!({ "paused": false }));
    }

    fn stats(&self) -> &stocksblitz_feed_handlers::FeedStats {
        &self.feed.as_ref().unwrap().stats
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(f) = self.feed.take() {
            f.join();
        }
        if let Some(s) = self.sim.take() {
            self.rt.block_on(s.stop());
        }
    }
}

#[test]
fn syncs_and_recovers_from_every_fault() {
    let mut h = Harness::start();
    h.run_for(Duration::from_millis(800));
    assert!(h.statuses.contains(&FeedStatus::Live), "book synced: {:?}", h.statuses);
    h.assert_books_match("after start");

    for (kind, count, ms) in [
        (FaultKind::Drop, 1, 0),
        (FaultKind::Duplicate, 3, 0),
        (FaultKind::Reorder, 1, 0),
        (FaultKind::Malformed, 2, 0),
        (FaultKind::Slow, 20, 5),
    ] {
        h.fault(kind, count, ms);
        h.run_for(Duration::from_millis(600));
        h.assert_books_match(&format!("{kind:?}"));
    }
    assert!(h.stats().gaps.get() >= 1, "drop and reorder are gaps");
    assert!(h.stats().parse_errors.get() >= 2, "malformed frames counted");

    // Abrupt disconnect: reconnect with backoff, resync.
    let reconnects = h.stats().reconnects.get();
    h.fault(FaultKind::Disconnect, 1, 0);
    h.run_for(Duration::from_millis(1000));
    assert!(h.stats().reconnects.get() > reconnects);
    h.assert_books_match("disconnect");

    // Silence: STALE after stale_after_ms, then a reconnect after dead_after_ms.
    h.statuses.clear();
    h.fault(FaultKind::Silence, 1, 2500);
    h.run_for(Duration::from_millis(3500));
    assert!(h.statuses.contains(&FeedStatus::Stale), "{:?}", h.statuses);
    h.assert_books_match("silence");

    // Announced shutdown: make-before-break, no resync needed.
    let reconnects = h.stats().reconnects.get();
    h.statuses.clear();
    h.fault(FaultKind::Shutdown, 1, 500);
    h.run_for(Duration::from_millis(1500));
    assert!(h.stats().reconnects.get() > reconnects, "switched connections");
    assert!(
        !h.statuses.contains(&FeedStatus::Gap),
        "no gap across the switch: {:?}",
        h.statuses
    );
    h.assert_books_match("shutdown");
}
