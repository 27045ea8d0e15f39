//! A venue feed handler connected to the in-process feed simulator, with the handler's
//! ticks applied to local books that tests compare against the simulator's true books.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stocksblitz_engine::tick_ring::{tick_ring, TickConsumer};
use stocksblitz_engine::{FeedStatus, InstrumentConfig, InstrumentRegistry, L2Book, Level, TickData};
use stocksblitz_feed_handlers::backoff::BackoffConfig;
use stocksblitz_feed_handlers::live::{spawn_live, LiveConfig};
use stocksblitz_feed_handlers::sim::faults::FaultKind;
use stocksblitz_feed_handlers::sim::{self, SimHandle, SimulatorConfig};
use stocksblitz_feed_handlers::venue::Venue;
use stocksblitz_feed_handlers::{FeedHandle, FeedStats};

/// An instrument of `venue` for tests.
pub fn instrument(
    symbol: &str,
    venue: &str,
    venue_symbol: &str,
    price_decimals: u8,
    qty_decimals: u8,
) -> InstrumentConfig {
    InstrumentConfig {
        symbol: symbol.into(),
        venue: venue.into(),
        venue_symbol: venue_symbol.into(),
        kind: stocksblitz_engine::instrument::InstrumentKind::CryptoSpot,
        currency: "USD".into(),
        price_decimals,
        qty_decimals,
        tick_size: format!("0.{}1", "0".repeat(usize::from(price_decimals).saturating_sub(1))),
        lot_size: if qty_decimals == 0 {
            "1".into()
        } else {
            format!("0.{}1", "0".repeat(usize::from(qty_decimals) - 1))
        },
        session: "24x7".into(),
    }
}

pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub sim: Option<SimHandle>,
    pub venue: Venue,
    pub registry: InstrumentRegistry,
    rx: TickConsumer,
    pub books: Vec<L2Book>,
    /// Statuses seen for instrument 0.
    pub statuses: Vec<FeedStatus>,
    /// Trade ids seen for instrument 0, in order.
    pub trades: Vec<u64>,
    stop: Arc<AtomicBool>,
    feed: Option<FeedHandle>,
}

impl Harness {
    /// Starts the simulator for `instruments` and a `venue` handler connected to it.
    pub fn start(
        venue: Venue,
        instruments: &[InstrumentConfig],
        start_prices: &[(&str, &str)],
        edit: impl FnOnce(&mut LiveConfig),
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let registry = InstrumentRegistry::from_config(instruments).unwrap();
        let cfg = SimulatorConfig {
            enabled: true,
            listen: "127.0.0.1:0".into(),
            seed: 5,
            rate_per_sec: 400,
            depth: 10,
            start_prices: start_prices
                .iter()
                .map(|(s, p)| (s.to_string(), p.to_string()))
                .collect(),
        };
        let setup = sim::setup_from(&registry, &cfg).unwrap();
        let sim = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            sim::start(setup, l).await.unwrap()
        });
        let path = venue.as_str();
        let mut live = LiveConfig {
            ws_url: format!("ws://{}/{path}", sim.addr),
            rest_url: Some(format!("http://{}/{path}", sim.addr)),
            depth_limit: 1000,
            stale_after_ms: 400,
            dead_after_ms: 1500,
            connect_timeout_ms: 1000,
            max_connection_age_secs: 3600,
            reconnect: BackoffConfig {
                base_ms: 20,
                cap_ms: 200,
                reset_after_ms: 1000,
            },
            audit_interval_secs: 0,
            capture: None,
            auth_query: Default::default(),
        };
        edit(&mut live);
        let (tx, rx) = tick_ring("test", 1 << 16);
        let stop = Arc::new(AtomicBool::new(false));
        let symbols: Vec<String> = registry.iter().map(|i| i.symbol.clone()).collect();
        let feed = spawn_live(
            path.into(),
            venue,
            None,
            live,
            &registry,
            &symbols,
            tx,
            Arc::clone(&stop),
        )
        .unwrap();
        let books = (0..registry.len()).map(|_| L2Book::new(1000)).collect();
        Self {
            rt,
            sim: Some(sim),
            venue,
            registry,
            rx,
            books,
            statuses: Vec::new(),
            trades: Vec::new(),
            stop,
            feed: Some(feed),
        }
    }

    pub fn drain(&mut self) {
        while let Some(t) = self.rx.pop() {
            if let Some(b) = self.books.get_mut(t.instrument.index()) {
                b.apply_tick(&t.data);
            }
            match t.data {
                TickData::Status { status, .. } if t.instrument.0 == 0 => self.statuses.push(status),
                TickData::Trade { trade_id, .. } if t.instrument.0 == 0 => self.trades.push(trade_id),
                _ => {}
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.drain();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn control(&self, path: &str, body: serde_json::Value) {
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

    pub fn fault(&self, kind: FaultKind, count: u32, ms: u64) {
        let kind = format!("{kind:?}").to_lowercase();
        let venue = self.venue.as_str();
        self.control(
            &format!("/control/faults/{venue}"),
            serde_json::json!({ "kind": kind, "count": count, "ms": ms }),
        );
    }

    pub fn pause(&self, paused: bool) {
        self.control(
            &format!("/control/pause/{}", self.venue.as_str()),
            serde_json::json!({ "paused": paused }),
        );
    }

    /// Pauses the market, lets the handler catch up, and compares every book (the top
    /// `depth` levels per side when given).
    pub fn assert_books_match(&mut self, context: &str, depth: Option<usize>) {
        self.pause(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.run_for(Duration::from_millis(100));
            match self.first_difference(depth) {
                None => break,
                Some(d) if Instant::now() > deadline => panic!("{context}: {d}"),
                Some(_) => {}
            }
        }
        self.pause(false);
    }

    /// The first book (the top `depth` levels per side when given) that is not the
    /// simulator's, described; `None` when every book is.
    pub fn first_difference(&self, depth: Option<usize>) -> Option<String> {
        let n = depth.unwrap_or(usize::MAX);
        self.registry.iter().find_map(|i| {
            let truth = self.truth(&i.venue_symbol);
            let ours = |ls: &[Level]| -> Vec<[String; 2]> {
                ls.iter()
                    .take(n)
                    .map(|l| {
                        [
                            l.price.decimal(i.price_scale).to_string(),
                            l.qty.decimal(i.qty_scale).to_string(),
                        ]
                    })
                    .collect()
            };
            let theirs = |v: &serde_json::Value| -> Vec<[String; 2]> {
                serde_json::from_value::<Vec<[String; 2]>>(v.clone())
                    .unwrap()
                    .into_iter()
                    .take(n)
                    .collect()
            };
            let book = &self.books[i.id.index()];
            let same = ours(book.bids()) == theirs(&truth["bids"]) && ours(book.asks()) == theirs(&truth["asks"]);
            (!same).then(|| {
                format!(
                    "{} book differs\nours bids {:?}\ntrue bids {:?}",
                    i.venue_symbol,
                    ours(book.bids()),
                    theirs(&truth["bids"])
                )
            })
        })
    }

    /// The simulator's `GET /control/in_flight/{venue}`: how many sessions still have
    /// rendered market data to hand to their socket.
    pub fn in_flight(&self) -> serde_json::Value {
        self.control_get(&format!("/control/in_flight/{}", self.venue.as_str()))
    }

    /// A GET of the simulator's control API, as JSON.
    fn control_get(&self, path: &str) -> serde_json::Value {
        let addr = self.sim.as_ref().unwrap().addr;
        self.rt.block_on(async {
            reqwest::get(format!("http://{addr}{path}"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    /// The simulator's true book of `venue_symbol`, with its last update and trade ids.
    pub fn truth(&self, venue_symbol: &str) -> serde_json::Value {
        self.control_get(&format!("/control/book/{}/{venue_symbol}", self.venue.as_str()))
    }

    /// The venue's last trade id for instrument 0.
    pub fn last_trade_id(&self) -> u64 {
        let sym = self.registry.iter().next().unwrap().venue_symbol.clone();
        self.truth(&sym)["last_trade_id"].as_u64().unwrap()
    }

    /// Make-before-break when the old connection is behind the new one (a slower
    /// path): before each of several switches (the connection age limit is 1 s) the
    /// current connection falls 50 to 900 ms behind (the `lag` fault), so the new
    /// stream's first messages arrive while messages before them are still on their
    /// way on the old one. No gap is reported, the book is the venue's (the top `depth`
    /// levels when given), and with
    /// `trade_ids` every trade arrives exactly once (ids contiguous up to the venue's
    /// last).
    pub fn switches_past_a_lagging_old_connection(mut self, depth: Option<usize>, trade_ids: bool) {
        self.run_for(Duration::from_millis(800));
        self.assert_books_match("before the first switch", depth);
        self.statuses.clear();
        let before = self.stats().reconnects.get();
        let started = Instant::now();
        let mut switches = 0;
        for lag_ms in [400, 50, 900, 200, 650] {
            self.fault(FaultKind::Lag, 1, lag_ms);
            // Until the next switch (at most 60 s on a loaded machine).
            while self.stats().reconnects.get() - before == switches && started.elapsed() < Duration::from_secs(60) {
                self.run_for(Duration::from_millis(50));
            }
            switches = self.stats().reconnects.get() - before;
            // The lagging connection's last frames arrive before the switch completes.
            self.run_for(Duration::from_millis(lag_ms + 300));
        }
        assert!(switches >= 5, "{switches} switches");
        assert!(
            !self.statuses.contains(&FeedStatus::Gap),
            "no gap across {switches} switches with a lagging old connection: {:?}",
            self.statuses
        );
        assert_eq!(self.stats().gaps.get(), 0, "no gap counted");
        self.assert_books_match("after the switches", depth);
        if trade_ids {
            self.pause(true);
            self.run_for(Duration::from_millis(300));
            let last = self.last_trade_id();
            let first = *self.trades.first().expect("trades arrived");
            let want: Vec<u64> = (first..=last).collect();
            assert!(
                self.trades == want,
                "every trade once: {} received, {} expected from {first} to {last}; first difference at {:?}",
                self.trades.len(),
                want.len(),
                self.trades.iter().zip(&want).position(|(a, b)| a != b)
            );
        }
    }

    pub fn stats(&self) -> &FeedStats {
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
