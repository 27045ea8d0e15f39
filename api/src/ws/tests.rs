//! The fan-out redesign (issue 19) over generated event streams: the real fan-out agent
//! polled by hand, real hub channels, and connections' real [`Reader`]s read on
//! generated schedules, without sockets (the wire is covered by `tests/it/stream.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::FutureExt;
use parking_lot::RwLock;
use proptest::prelude::*;
use serde_json::Value;
use stocksblitz_engine::agent::{spawn_thread, Agent};
use stocksblitz_engine::ring::{ring, RingProducer};
use stocksblitz_engine::{
    Aggressor, Bar, BarInterval, BarState, BookFlags, DataQuality, EngineEvent, EventData, InstrumentId,
    InstrumentRegistry, Price, Qty, Side, UnixNanos,
};

use super::channel::{ChannelKey, ChannelKind};
use super::hub::{Dispatcher, Hub};
use super::reader::Reader;
use crate::dto::{BarDto, BookDto, QuoteDto, TradeDto};
use crate::market::fanout::{fanout, Fanout};
use crate::market::{FanoutStats, Market, Mirror};

const INSTRUMENTS: usize = 2;
const BOOK_DEPTH: usize = 5;
const TRADES_HISTORY: usize = 4;
const KINDS: [ChannelKind; 4] = [
    ChannelKind::Quotes,
    ChannelKind::Book,
    ChannelKind::Trades,
    ChannelKind::Bars,
];

/// One generated market event (on instrument `.0`).
#[derive(Debug, Clone, Copy)]
enum Gen {
    Quote(i64),
    Trade,
    Level(i64),
    Bar,
    /// The engine reports the instrument LIVE (`true`) or STALE.
    Quality(bool),
    /// Events lost between engine and API: the next event's sequence jumps.
    Gap,
    /// The engine's resync: a book snapshot (clears the API's GAPPED).
    Snapshot(i64),
}

fn gen_event() -> impl Strategy<Value = (u8, Gen)> {
    let g = prop_oneof![
        (0i64..50).prop_map(Gen::Quote),
        Just(Gen::Trade),
        (0i64..20).prop_map(Gen::Level),
        Just(Gen::Bar),
        proptest::bool::ANY.prop_map(Gen::Quality),
        Just(Gen::Gap),
        (0i64..20).prop_map(Gen::Snapshot),
    ];
    (0u8..INSTRUMENTS as u8, g)
}

fn gen_batches() -> impl Strategy<Value = Vec<Vec<(u8, Gen)>>> {
    proptest::collection::vec(proptest::collection::vec(gen_event(), 0..12), 1..30)
}

/// The server side of a test: market, hub, the fan-out agent and its input ring.
struct Rig {
    market: Arc<Market>,
    hub: Arc<Hub>,
    fanout: Fanout,
    input: RingProducer<EngineEvent>,
    /// Per instrument: engine sequence, trades and bars published so far.
    seq: [u64; INSTRUMENTS],
    trades: [u64; INSTRUMENTS],
    bars: [u64; INSTRUMENTS],
    /// Per instrument: the quality the engine reports.
    live: [bool; INSTRUMENTS],
    clock: i64,
}

fn registry() -> InstrumentRegistry {
    use stocksblitz_testkit::instruments::crypto_spot;
    InstrumentRegistry::from_config(&[crypto_spot("BTCUSDT", "binance"), crypto_spot("ETHUSDT", "binance")])
        .expect("registry")
}

impl Rig {
    fn new(ring_capacity: usize, hook: Option<Box<dyn FnMut() + Send>>) -> Self {
        let registry = Arc::new(registry());
        let market = Arc::new(Market {
            mirror: RwLock::new(Mirror::new(registry.len(), 50, TRADES_HISTORY, 4)),
            feed_of: vec![None; registry.len()],
            registry: Arc::clone(&registry),
        });
        let hub = Arc::new(Hub::new(
            &registry,
            &market.mirror.read(),
            BOOK_DEPTH,
            ring_capacity,
            TRADES_HISTORY,
        ));
        let mut dispatcher = Dispatcher::new(Arc::clone(&hub), registry);
        if let Some(f) = hook {
            dispatcher.on_publish(f);
        }
        let (input, output) = ring("test-api", 1 << 14);
        let fanout = fanout(
            Arc::clone(&market),
            dispatcher,
            output,
            Vec::new(),
            Arc::new(FanoutStats::default()),
        );
        Self {
            market,
            hub,
            fanout,
            input,
            seq: [0; INSTRUMENTS],
            trades: [0; INSTRUMENTS],
            bars: [0; INSTRUMENTS],
            live: [true; INSTRUMENTS],
            clock: 0,
        }
    }

    fn event(&mut self, i: usize, g: Gen) -> EngineEvent {
        self.seq[i] += if matches!(g, Gen::Gap) { 2 } else { 1 };
        self.clock += 1_000;
        let data = match g {
            Gen::Quote(x) => EventData::Quote {
                bid: Price(10_000 + x),
                bid_qty: Qty(1_000),
                ask: Price(10_100 + x),
                ask_qty: Qty(2_000),
            },
            Gen::Trade => {
                self.trades[i] += 1;
                EventData::Trade {
                    price: Price(10_050),
                    qty: Qty(1),
                    trade_id: self.trades[i],
                    aggressor: Aggressor::Buy,
                }
            }
            Gen::Level(x) => EventData::Book {
                side: if x % 2 == 0 { Side::Buy } else { Side::Sell },
                price: Price(if x % 2 == 0 { 9_000 + x } else { 11_000 + x }),
                qty: Qty(x + 1),
                flags: BookFlags::END_OF_BATCH,
            },
            Gen::Quality(live) => {
                self.live[i] = live;
                EventData::Status {
                    previous: DataQuality::Live,
                }
            }
            Gen::Gap => EventData::Quote {
                bid: Price(10_000),
                bid_qty: Qty(3),
                ask: Price(10_100),
                ask_qty: Qty(3),
            },
            Gen::Snapshot(x) => EventData::Book {
                side: Side::Buy,
                price: Price(9_000 + x),
                qty: Qty(1),
                flags: BookFlags::CLEAR.with(BookFlags::SNAPSHOT).with(BookFlags::END_OF_BATCH),
            },
            Gen::Bar => {
                self.bars[i] += 1;
                EventData::Bar {
                    bar: Bar {
                        interval: BarInterval::OneSecond,
                        start: UnixNanos(self.bars[i] as i64 * 1_000_000_000),
                        open: Price(1),
                        high: Price(2),
                        low: Price(1),
                        close: Price(2),
                        volume: Qty(1),
                        trades: 1,
                    },
                    state: BarState::Closed,
                }
            }
        };
        EngineEvent {
            seq: self.seq[i],
            instrument: InstrumentId(i as u32),
            quality: if self.live[i] {
                DataQuality::Live
            } else {
                DataQuality::Stale
            },
            exchange_ts: UnixNanos(self.clock),
            recv_ts: UnixNanos(self.clock),
            engine_ts: UnixNanos(self.clock),
            data,
        }
    }

    /// Hands the batch to the fan-out and lets it take it (one poll: one batch);
    /// returns the allocations the fan-out made on this thread doing so.
    fn run_batch(&mut self, batch: &[(u8, Gen)]) -> u64 {
        for &(i, g) in batch {
            let ev = self.event(usize::from(i), g);
            assert!(self.input.push(ev), "the test ring has room");
        }
        let fanout = &mut self.fanout;
        stocksblitz_testkit::alloc::count_allocations(|| fanout.poll()).1
    }
}

/// A test connection: its reader and what it was sent.
struct Conn {
    reader: Reader,
    frames: Vec<Bytes>,
    instrument: usize,
}

impl Conn {
    fn subscribe(rig: &Rig, instrument: usize) -> Self {
        let mut c = Self {
            reader: Reader::new(Arc::clone(&rig.hub)),
            frames: Vec::new(),
            instrument,
        };
        for kind in KINDS {
            let key = ChannelKey {
                kind,
                instrument: InstrumentId(instrument as u32),
            };
            assert!(c.reader.subscribe(key, &mut c.frames));
            if !kind.is_conflated() {
                let snap: Value = serde_json::from_slice(c.frames.last().expect("snapshot")).expect("json");
                assert_eq!(
                    snap["data"],
                    mirror_snapshot(rig, kind, instrument),
                    "{}",
                    name(kind, instrument)
                );
            }
        }
        c
    }

    /// Reads when woken, as a session does; nothing may be pending without a wake-up.
    fn read(&mut self) {
        let woken = self.reader.ready().now_or_never().is_some();
        let before = self.frames.len();
        self.reader.collect(&mut self.frames);
        if !woken {
            assert_eq!(self.frames.len(), before, "messages pending without a wake-up");
        }
    }
}

fn name(kind: ChannelKind, instrument: usize) -> String {
    let sym = ["BTCUSDT", "ETHUSDT"][instrument];
    format!("{}.{sym}", kind.as_str())
}

/// A trades or bars snapshot as the mirror (REST's view) has it.
fn mirror_snapshot(rig: &Rig, kind: ChannelKind, instrument: usize) -> Value {
    let id = InstrumentId(instrument as u32);
    let inst = rig.market.registry.get(id).expect("instrument");
    let mirror = rig.market.mirror.read();
    let view = mirror.get(id).expect("view");
    if kind == ChannelKind::Trades {
        let trades: Vec<_> = view.trades.iter().map(|t| TradeDto::new(inst, t)).collect();
        return serde_json::json!({ "symbol": inst.symbol, "trades": trades });
    }
    let mut bars = Vec::new();
    for iv in BarInterval::ALL {
        let s = view.bars(iv);
        if let Some(b) = s.closed.back() {
            bars.push(BarDto::new(inst, b, BarState::Closed));
        }
        if let Some(b) = &s.current {
            bars.push(BarDto::new(inst, b, BarState::Open));
        }
    }
    serde_json::json!({ "symbol": inst.symbol, "bars": bars })
}

/// The conflated payload the final state must show.
fn expected_latest(rig: &Rig, kind: ChannelKind, instrument: usize) -> Value {
    let id = InstrumentId(instrument as u32);
    let inst = rig.market.registry.get(id).expect("instrument");
    let mirror = rig.market.mirror.read();
    let view = mirror.get(id).expect("view");
    match kind {
        ChannelKind::Quotes => serde_json::to_value(QuoteDto::new(inst, view)),
        _ => serde_json::to_value(BookDto::new(inst, view, BOOK_DEPTH)),
    }
    .expect("json")
}

/// A queued message's place in its channel (trade id, bar number), from its data.
type Index = fn(&Value) -> Option<u64>;

/// Every property a connection's messages must have, given the rig's final state.
fn check(rig: &Rig, conn: &Conn) -> Result<(), TestCaseError> {
    let mut per: HashMap<String, Vec<Value>> = HashMap::new();
    for f in &conn.frames {
        let v: Value = serde_json::from_slice(f).map_err(|e| TestCaseError::fail(format!("{e}: {f:?}")))?;
        let ch = v["channel"].as_str().unwrap_or("").to_owned();
        per.entry(ch).or_default().push(v);
    }
    for kind in KINDS {
        let ch = name(kind, conn.instrument);
        let msgs = per.get(&ch).map(Vec::as_slice).unwrap_or(&[]);
        prop_assert!(!msgs.is_empty(), "{} sent its snapshot", ch);
        for (n, m) in msgs.iter().enumerate() {
            prop_assert_eq!(m["seq"].as_u64(), Some(n as u64 + 1), "{}: gapless seq: {}", &ch, m);
            let want = if n == 0 { "snapshot" } else { "update" };
            prop_assert_eq!(m["type"].as_str(), Some(want), "{}", &ch);
            prop_assert!(m["engine_ts_us"].is_i64(), "{}: engine_ts_us is an integer: {}", &ch, m);
        }
        let ts: Vec<i64> = msgs.iter().filter_map(|m| m["engine_ts_us"].as_i64()).collect();
        if kind.is_conflated() {
            prop_assert!(
                ts.windows(2).all(|w| w[0] <= w[1]),
                "{}: never older after newer: {:?}",
                &ch,
                ts
            );
            let seqs: Vec<u64> = msgs.iter().filter_map(|m| m["data"]["engine_seq"].as_u64()).collect();
            prop_assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{}: {:?}", &ch, seqs);
            let last = msgs.last().map(|m| m["data"].clone()).unwrap_or_default();
            prop_assert_eq!(
                last,
                expected_latest(rig, kind, conn.instrument),
                "{}: ends at the latest state",
                &ch
            );
            continue;
        }
        // Queued: every message after the snapshot in order, each skip reported as
        // `missed` on the next message, up to the last one published.
        // Where the snapshot left off: the last trade / closed bar in it.
        let snapshot = &msgs[0]["data"];
        let (index_of, start, published): (Index, u64, u64) = match kind {
            ChannelKind::Trades => {
                let index: Index = |d| d["trade_id"].as_u64();
                let list = snapshot["trades"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                (
                    index,
                    list.last().and_then(index).unwrap_or(0),
                    rig.trades[conn.instrument],
                )
            }
            _ => {
                let index: Index = |d| d["start_us"].as_u64().map(|us| us / 1_000_000);
                let list = snapshot["bars"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                let closed = list.iter().filter(|b| b["state"] == "closed").filter_map(index).max();
                (index, closed.unwrap_or(0), rig.bars[conn.instrument])
            }
        };
        let mut prev = start;
        let (mut delivered, mut missed) = (0u64, 0u64);
        for m in msgs.iter().skip(1) {
            let Some(i) = index_of(&m["data"]) else {
                return Err(TestCaseError::fail(format!("{ch}: no index in {m}")));
            };
            let skipped = m["missed"].as_u64().unwrap_or(0);
            prop_assert!(m.get("missed").is_none() || skipped > 0, "{}: missed is never 0", &ch);
            prop_assert_eq!(i, prev + 1 + skipped, "{}: in order, skips reported: {}", &ch, m);
            prev = i;
            delivered += 1;
            missed += skipped;
        }
        prop_assert_eq!(prev, published, "{}: up to the last message published", &ch);
        prop_assert_eq!(delivered + missed, published - start, "{}: delivered + missed", &ch);
        prop_assert!(ts.iter().skip(1).all(|t| *t > 0), "{}: {:?}", &ch, ts);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Generated event streams, read by connections on generated schedules (some
    /// subscribe mid-stream, some read every batch, some rarely): every connection
    /// gets gapless per-channel sequences, snapshot first; conflated channels end at
    /// the latest state and never go back; trades and bars arrive in order, every skip
    /// (the ring overtook a slow reader) counted in `missed` so that delivered + missed
    /// is what was published since it subscribed; and no message waits without a
    /// wake-up.
    #[test]
    fn every_connection_sees_a_consistent_stream(
        batches in gen_batches(),
        ring_capacity in 1usize..8,
        schedules in proptest::collection::vec((0usize..30, 1usize..8, 0usize..INSTRUMENTS), 1..6),
    ) {
        let mut rig = Rig::new(ring_capacity, None);
        let mut conns: Vec<Option<Conn>> = schedules.iter().map(|_| None).collect();
        for (b, batch) in batches.iter().enumerate() {
            for (slot, &(at, _, instrument)) in conns.iter_mut().zip(&schedules) {
                if at == b {
                    *slot = Some(Conn::subscribe(&rig, instrument));
                }
            }
            rig.run_batch(batch);
            for (slot, &(_, every, _)) in conns.iter_mut().zip(&schedules) {
                if let Some(c) = slot.as_mut() {
                    if b % every == 0 {
                        c.read();
                    }
                }
            }
        }
        for c in conns.iter_mut().flatten() {
            c.reader.collect(&mut c.frames);
            check(&rig, c)?;
        }
    }

    /// The fan-out's work per batch (channel publications and wake-ups, and the
    /// allocations it makes) is the same with one subscriber per channel (who never
    /// reads) and with many, reading or not.
    #[test]
    fn fanout_work_does_not_depend_on_subscribers(
        batches in gen_batches(),
        subscribers in INSTRUMENTS..64,
    ) {
        let mut alone = Rig::new(4, None);
        let _one: Vec<Conn> = (0..INSTRUMENTS).map(|i| Conn::subscribe(&alone, i)).collect();
        let mut crowded = Rig::new(4, None);
        let mut conns: Vec<Conn> = (0..subscribers).map(|i| Conn::subscribe(&crowded, i % INSTRUMENTS)).collect();
        for (b, batch) in batches.iter().enumerate() {
            let one = alone.run_batch(batch);
            let many = crowded.run_batch(batch);
            prop_assert_eq!(
                alone.hub.dispatch_ops.load(Ordering::Relaxed),
                crowded.hub.dispatch_ops.load(Ordering::Relaxed),
                "batch {}", b
            );
            prop_assert_eq!(one, many, "batch {}: the fan-out allocated per subscriber", b);
            for (i, c) in conns.iter_mut().enumerate() {
                if (b + i) % 3 == 0 {
                    c.read();
                }
            }
        }
        prop_assert_eq!(crowded.hub.subscription_count(), subscribers * KINDS.len());
        drop(conns);
        prop_assert_eq!(crowded.hub.subscription_count(), 0);
    }
}

/// A subscribe (every channel kind) and the shared snapshots' readers do not wait for
/// a fan-out batch in progress: the fan-out is held half-way through publishing a
/// batch while they run, and the subscriber still ends at the batch's state after it.
#[test]
fn subscribe_does_not_wait_for_a_batch_in_progress() {
    let (paused_tx, paused_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let armed = Arc::new(AtomicBool::new(false));
    let hook_armed = Arc::clone(&armed);
    let hook = move || {
        if hook_armed.swap(false, Ordering::SeqCst) {
            let _ = paused_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(60));
        }
    };
    let mut rig = Rig::new(8, Some(Box::new(hook)));
    rig.run_batch(&[(0, Gen::Quote(1)), (0, Gen::Level(2)), (0, Gen::Trade)]);
    let hub = Arc::clone(&rig.hub);
    // The next batch stops after its first snapshot, mid-dispatch.
    armed.store(true, Ordering::SeqCst);
    let batch = [(0, Gen::Quote(7)), (0, Gen::Level(4)), (0, Gen::Trade), (0, Gen::Bar)];
    let fanout = spawn_thread("test-fanout", None, move || {
        rig.run_batch(&batch);
        rig
    })
    .expect("fan-out thread");
    paused_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the fan-out reached its pause");
    let (done_tx, done_rx) = mpsc::channel();
    let subscriber = spawn_thread("test-subscriber", None, move || {
        let mut reader = Reader::new(Arc::clone(&hub));
        let mut frames = Vec::new();
        for kind in KINDS {
            let key = ChannelKey {
                kind,
                instrument: InstrumentId(0),
            };
            assert!(reader.subscribe(key, &mut frames));
            // What a REST read of the shared snapshot does.
            let _ = hub.channel(key).map(|c| c.latest().version);
        }
        let _ = done_tx.send(());
        (reader, frames)
    })
    .expect("subscriber thread");
    let done = done_rx.recv_timeout(Duration::from_secs(60));
    let fanout_was_paused = !fanout.is_finished();
    release_tx.send(()).expect("release the fan-out");
    assert!(done.is_ok(), "subscribing waited for the fan-out's batch");
    assert!(fanout_was_paused, "the subscribe ran while the batch was in progress");
    let (reader, frames) = subscriber.join().expect("subscriber");
    let rig = fanout.join().expect("fan-out thread");
    let mut conn = Conn {
        reader,
        frames,
        instrument: 0,
    };
    assert!(
        conn.reader.ready().now_or_never().is_some(),
        "the batch's wake-up reached the subscriber"
    );
    conn.reader.collect(&mut conn.frames);
    if let Err(e) = check(&rig, &conn) {
        panic!("{e}");
    }
}

/// Nor does a subscribe wait for the fan-out's other phase, applying a batch to the
/// mirror under its write lock: subscribing reads only the hub's shared snapshots.
#[test]
fn subscribe_does_not_wait_for_the_mirror() {
    let mut rig = Rig::new(8, None);
    rig.run_batch(&[(0, Gen::Quote(1)), (0, Gen::Trade), (0, Gen::Bar), (0, Gen::Level(3))]);
    let hub = Arc::clone(&rig.hub);
    let applying = rig.market.mirror.write();
    let (done_tx, done_rx) = mpsc::channel();
    let subscriber = spawn_thread("test-subscriber", None, move || {
        let mut reader = Reader::new(hub);
        let mut frames = Vec::new();
        for kind in KINDS {
            let key = ChannelKey {
                kind,
                instrument: InstrumentId(0),
            };
            assert!(reader.subscribe(key, &mut frames));
        }
        let _ = done_tx.send(frames.len());
    })
    .expect("subscriber thread");
    let done = done_rx.recv_timeout(Duration::from_secs(60));
    drop(applying);
    subscriber.join().expect("subscriber");
    assert_eq!(done.ok(), Some(KINDS.len()), "four snapshots without the mirror");
}

/// A reader that gets to trades later than its lag limit skips them and says how many
/// it skipped in the next trade it sends; what it sends is in order and never stale.
#[test]
fn trades_older_than_the_lag_limit_are_skipped_and_counted_missed() {
    let mut rig = Rig::new(64, None);
    let key = ChannelKey {
        kind: ChannelKind::Trades,
        instrument: InstrumentId(0),
    };
    let lag = Duration::from_millis(200);
    let mut reader = Reader::new(Arc::clone(&rig.hub)).with_max_lag(lag);
    let mut frames = Vec::new();
    assert!(reader.subscribe(key, &mut frames));
    rig.run_batch(&[(0, Gen::Trade), (0, Gen::Trade), (0, Gen::Trade)]);
    std::thread::sleep(lag + Duration::from_millis(50));
    rig.run_batch(&[(0, Gen::Trade), (0, Gen::Trade)]);
    let sent = collect_json(&mut reader, &mut frames);
    assert_eq!(sent.len(), 2, "only the fresh trades: {frames:?}");
    assert_eq!(sent[0]["missed"], 3, "the stale ones are reported");
    assert_eq!(sent[0]["seq"], 2, "message numbers stay gapless");
    assert_eq!(sent[1]["seq"], 3);
    assert!(sent[1].get("missed").is_none());
    assert!(sent[0]["data"]["trade_id"].as_u64() < sent[1]["data"]["trade_id"].as_u64());
    // Without a limit nothing is skipped however late the reader is.
    let mut patient = Reader::new(Arc::clone(&rig.hub));
    assert!(patient.subscribe(key, &mut frames));
    rig.run_batch(&[(0, Gen::Trade)]);
    std::thread::sleep(lag + Duration::from_millis(50));
    frames.clear();
    patient.collect(&mut frames);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(!text(&frames[0]).contains("missed"));
}

/// While a connection is congested it gets the latest quote but no trades; the first
/// trade after the congestion clears reports every one it skipped.
#[test]
fn a_congested_connection_gets_quotes_and_counts_the_trades_it_skips() {
    let mut rig = Rig::new(64, None);
    let key = |kind| ChannelKey {
        kind,
        instrument: InstrumentId(0),
    };
    let mut reader = Reader::new(Arc::clone(&rig.hub));
    let mut frames = Vec::new();
    assert!(reader.subscribe(key(ChannelKind::Quotes), &mut frames));
    assert!(reader.subscribe(key(ChannelKind::Trades), &mut frames));
    reader.set_congested(true);
    rig.run_batch(&[(0, Gen::Trade), (0, Gen::Quote(3)), (0, Gen::Trade)]);
    let sent = collect_json(&mut reader, &mut frames);
    assert_eq!(sent.len(), 1, "the quote only: {frames:?}");
    assert_eq!(sent[0]["channel"], "quotes.BTCUSDT");
    reader.set_congested(false);
    rig.run_batch(&[(0, Gen::Trade)]);
    let sent = collect_json(&mut reader, &mut frames);
    let trades: Vec<&Value> = sent.iter().filter(|m| m["channel"] == "trades.BTCUSDT").collect();
    assert_eq!(trades.len(), 1, "{frames:?}");
    assert_eq!(trades[0]["missed"], 2, "both skipped trades reported");
    assert_eq!(trades[0]["seq"], 2, "gapless message numbers");
}

/// A reader that falls more than its batch limit behind gets the newest messages
/// only, the older ones reported as `missed` with the first sent; seq stays gapless.
#[test]
fn a_reader_far_behind_gets_the_newest_trades_and_a_missed_count() {
    let mut rig = Rig::new(64, None);
    let key = ChannelKey {
        kind: ChannelKind::Trades,
        instrument: InstrumentId(0),
    };
    let mut reader = Reader::new(Arc::clone(&rig.hub)).with_max_batch(3);
    let mut frames = Vec::new();
    assert!(reader.subscribe(key, &mut frames));
    rig.run_batch(&[(0, Gen::Trade); 10]);
    let sent = collect_json(&mut reader, &mut frames);
    assert_eq!(sent.len(), 3, "the newest three: {frames:?}");
    assert_eq!(sent[0]["missed"], 7);
    assert_eq!(sent[0]["seq"], 2);
    assert_eq!(sent[2]["seq"], 4);
    let ids: Vec<u64> = sent.iter().filter_map(|m| m["data"]["trade_id"].as_u64()).collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive, the newest: {ids:?}"
    );
    // Again, once the snapshot is behind (skipped by position, unread).
    rig.run_batch(&[(0, Gen::Trade); 9]);
    let sent = collect_json(&mut reader, &mut frames);
    assert_eq!(sent.len(), 3, "{frames:?}");
    assert_eq!(sent[0]["missed"], 6);
    assert_eq!(sent[0]["seq"], 5);
    let newer: Vec<u64> = sent.iter().filter_map(|m| m["data"]["trade_id"].as_u64()).collect();
    assert_eq!(
        newer.first().copied(),
        ids.last().map(|l| l + 7),
        "the newest three of the nine"
    );
    // Within the limit everything is sent.
    rig.run_batch(&[(0, Gen::Trade); 2]);
    frames.clear();
    reader.collect(&mut frames);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames.iter().all(|f| !text(f).contains("missed")));
}

/// A collect of K messages makes one buffer for all of them (and one shared header
/// for its slices), not one allocation per message: every message is a slice of the
/// same buffer, back to back, and the collect's allocations do not grow with K.
#[test]
fn a_collect_frames_its_messages_into_one_buffer() {
    const K: usize = 50;
    let mut rig = Rig::new(256, None);
    let key = |kind| ChannelKey {
        kind,
        instrument: InstrumentId(0),
    };
    let mut reader = Reader::new(Arc::clone(&rig.hub)).with_max_batch(64);
    let mut frames = Vec::new();
    assert!(reader.subscribe(key(ChannelKind::Quotes), &mut frames));
    assert!(reader.subscribe(key(ChannelKind::Trades), &mut frames));
    let mut allocations = Vec::new();
    for round in 0..3 {
        let mut batch = vec![(0, Gen::Trade); K];
        batch.push((0, Gen::Quote(round)));
        rig.run_batch(&batch);
        frames.clear();
        frames.reserve(2 * K);
        let ((), n) = stocksblitz_testkit::alloc::count_allocations(|| reader.collect(&mut frames));
        assert_eq!(frames.len(), K + 1, "{frames:?}");
        let start = frames[0].as_ptr() as usize;
        let mut at = start;
        for f in &frames {
            assert_eq!(f.as_ptr() as usize, at, "back to back in one buffer");
            at += f.len();
            let v: Value = serde_json::from_slice(f).expect("json");
            assert_eq!(v["type"], "update");
        }
        allocations.push(n);
    }
    // The first collect grows its buffer from nothing; later ones start at the last
    // one's size: the buffer, and the header its slices share.
    assert!(
        allocations[1..].iter().all(|&n| n <= 2),
        "{allocations:?} for {K} messages each"
    );
}

mod rest;

/// What one collect sends (left in `frames` too), parsed.
fn collect_json(reader: &mut Reader, frames: &mut Vec<Bytes>) -> Vec<Value> {
    frames.clear();
    reader.collect(frames);
    frames
        .iter()
        .map(|f| serde_json::from_slice(f).expect("json"))
        .collect()
}

/// A message's text.
fn text(f: &Bytes) -> &str {
    std::str::from_utf8(f).expect("utf-8")
}
