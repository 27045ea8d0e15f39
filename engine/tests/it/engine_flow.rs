//! The engine end to end on hand-written ticks: data-quality transitions in-band,
//! per-consumer sequence numbers, and resync of a consumer whose ring overflowed.

use stocksblitz_engine::ring::{ring, RingConsumer};
use stocksblitz_engine::tick_ring::{tick_ring, TickProducer};
use stocksblitz_engine::{
    Aggressor, BarState, BookFlags, DataQuality, Engine, EngineConfig, EngineEvent, EventData, FeedStatus,
    InstrumentId, L2Book, Price, Qty, Side, Tick, TickData, UnixNanos,
};

const S: i64 = UnixNanos::NANOS_PER_SEC;
const I0: InstrumentId = InstrumentId(0);

fn tick(t: i64, data: TickData) -> Tick {
    Tick {
        exchange_ts: UnixNanos(t),
        recv_ts: UnixNanos(t),
        instrument: I0,
        data,
    }
}

fn delta(side: Side, p: i64, q: i64, flags: BookFlags) -> TickData {
    TickData::BookDelta {
        side,
        price: Price(p),
        qty: Qty(q),
        update_id: 0,
        flags,
    }
}

fn status(s: FeedStatus) -> TickData {
    TickData::Status { status: s, detail: 0 }
}

fn setup(out_capacity: usize) -> (Engine, TickProducer, RingConsumer<EngineEvent>) {
    let cfg = EngineConfig {
        book_max_levels: 8,
        stale_after_ms: 1_000,
        ..EngineConfig::default()
    };
    let (tx, rx) = tick_ring("in", 1024);
    let (otx, orx) = ring::<EngineEvent>("out", out_capacity);
    (Engine::new(&cfg, 2, vec![rx], vec![otx]), tx, orx)
}

fn drain(rx: &mut RingConsumer<EngineEvent>) -> Vec<EngineEvent> {
    std::iter::from_fn(|| rx.pop()).collect()
}

fn snapshot_ticks(t: i64) -> Vec<Tick> {
    let snap = BookFlags::SNAPSHOT;
    vec![
        tick(t, delta(Side::Buy, 100, 5, snap.with(BookFlags::CLEAR))),
        tick(t, delta(Side::Buy, 99, 5, snap)),
        tick(t, delta(Side::Sell, 101, 5, snap)),
        tick(t, delta(Side::Sell, 102, 5, snap.with(BookFlags::END_OF_BATCH))),
    ]
}

#[test]
fn quality_moves_through_sync_live_crossed_gapped_stale_halted() {
    let (mut e, mut tx, mut rx) = setup(1024);
    let mut push = |ts: Vec<Tick>| ts.into_iter().for_each(|t| assert!(tx.push(t)));

    push(vec![tick(S, status(FeedStatus::Syncing))]);
    push(snapshot_ticks(S));
    e.poll();
    let evs = drain(&mut rx);
    // Mid-snapshot events are still SYNCING; the batch end makes the book LIVE.
    assert_eq!(evs.first().map(|e| e.quality), Some(DataQuality::Syncing));
    assert_eq!(evs.last().map(|e| e.quality), Some(DataQuality::Live));
    assert!(evs.iter().any(|e| matches!(
        e.data,
        EventData::Status {
            previous: DataQuality::Syncing
        }
    )));
    assert!(evs.iter().any(|e| matches!(
        e.data,
        EventData::Quote {
            bid: Price(100),
            ask: Price(101),
            ..
        }
    )));
    // Sequence numbers are contiguous from 1.
    let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());

    // A bid through the ask crosses the book.
    push(vec![tick(S + 1, delta(Side::Buy, 103, 1, BookFlags::END_OF_BATCH))]);
    e.poll();
    assert_eq!(drain(&mut rx).last().map(|e| e.quality), Some(DataQuality::Crossed));
    push(vec![tick(S + 2, delta(Side::Buy, 103, 0, BookFlags::END_OF_BATCH))]);
    e.poll();
    assert_eq!(drain(&mut rx).last().map(|e| e.quality), Some(DataQuality::Live));

    // A gap holds until a fresh snapshot.
    push(vec![tick(S + 3, status(FeedStatus::Gap))]);
    push(vec![tick(S + 3, delta(Side::Buy, 98, 1, BookFlags::END_OF_BATCH))]);
    e.poll();
    assert_eq!(drain(&mut rx).last().map(|e| e.quality), Some(DataQuality::Gapped));
    push(snapshot_ticks(S + 4));
    e.poll();
    assert_eq!(drain(&mut rx).last().map(|e| e.quality), Some(DataQuality::Live));
    assert_eq!(
        e.state(I0).map(|s| s.book.bids().len()),
        Some(2),
        "snapshot cleared the old levels"
    );

    // Silence past stale_after_ms makes it STALE; data brings it back.
    e.housekeeping(UnixNanos(S + 4 + 2 * S));
    assert_eq!(drain(&mut rx).last().map(|e| e.quality), Some(DataQuality::Stale));
    push(vec![tick(3 * S, delta(Side::Buy, 100, 7, BookFlags::END_OF_BATCH))]);
    e.poll();
    assert_eq!(drain(&mut rx).last().map(|e| e.quality), Some(DataQuality::Live));

    // Halt dominates everything until resumed.
    push(vec![tick(3 * S, status(FeedStatus::Halted))]);
    e.poll();
    assert_eq!(drain(&mut rx).last().map(|e| e.quality), Some(DataQuality::Halted));
    push(vec![tick(3 * S, status(FeedStatus::Resumed))]);
    e.poll();
    assert_eq!(drain(&mut rx).last().map(|e| e.quality), Some(DataQuality::Live));
}

#[test]
fn trades_build_bars_that_close_on_the_timer() {
    let (mut e, mut tx, mut rx) = setup(1024);
    for (i, p) in [100, 105, 95, 101].into_iter().enumerate() {
        tx.push(tick(
            10 * S + i as i64,
            TickData::Trade {
                price: Price(p),
                qty: Qty(2),
                trade_id: i as u64 + 1,
                aggressor: Aggressor::Buy,
            },
        ));
    }
    e.poll();
    assert_eq!(
        drain(&mut rx)
            .iter()
            .filter(|e| matches!(e.data, EventData::Trade { .. }))
            .count(),
        4
    );
    e.housekeeping(UnixNanos(11 * S + S / 2));
    let bars: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e.data {
            EventData::Bar {
                bar,
                state: BarState::Closed,
            } => Some(bar),
            _ => None,
        })
        .collect();
    assert_eq!(bars.len(), 1, "the 1s bar closed; the 1m bar is still open");
    let b = bars[0];
    assert_eq!(
        (b.open, b.high, b.low, b.close, b.volume, b.trades),
        (Price(100), Price(105), Price(95), Price(101), Qty(8), 4)
    );
}

#[test]
fn unknown_instrument_is_counted_not_fatal() {
    let (mut e, mut tx, mut rx) = setup(1024);
    tx.push(Tick {
        instrument: InstrumentId(99),
        ..tick(S, status(FeedStatus::Live))
    });
    tx.push(tick(S, status(FeedStatus::Live)));
    assert_eq!(e.poll(), 2);
    assert_eq!(e.handles().stats.unknown_instrument.get(), 1);
    assert_eq!(drain(&mut rx).len(), 1);
}

/// A consumer whose ring overflowed sees a sequence gap, then a full snapshot that
/// rebuilds its copy of the book exactly.
#[test]
fn overflowed_consumer_is_resynced_with_a_snapshot() {
    let (mut e, mut tx, mut rx) = setup(32);
    for t in snapshot_ticks(S) {
        tx.push(t);
    }
    e.poll();
    let mut mirror = L2Book::new(8);
    let mut last_seq = 0;
    let mut apply = |evs: Vec<EngineEvent>, mirror: &mut L2Book, gap_seen: &mut bool| {
        for ev in evs {
            if ev.seq != last_seq + 1 && !ev.is_snapshot_start() {
                *gap_seen = true;
            }
            last_seq = ev.seq;
            mirror.apply_event(&ev.data);
        }
    };
    let mut gap = false;
    apply(drain(&mut rx), &mut mirror, &mut gap);
    assert!(!gap);

    // Flood without draining: the ring (32) overflows.
    for i in 0..200 {
        tx.push(tick(
            S + i,
            delta(Side::Buy, 90 + (i % 8), 1 + i, BookFlags::END_OF_BATCH),
        ));
    }
    while e.poll() > 0 {}
    let out = e.handles().outputs;
    assert!(out[0].0.dropped.get() > 0, "ring should have overflowed");
    assert!(out[0].1.suppressed.get() > 0, "later events wait for the snapshot");
    let before = drain(&mut rx);
    let seen = before.last().map_or(0, |e| e.seq);
    apply(before, &mut mirror, &mut gap);

    e.housekeeping(UnixNanos(S + 500));
    let evs = drain(&mut rx);
    let first = evs.first().copied();
    assert!(first.is_some_and(|e| e.is_snapshot_start()));
    assert!(
        first.is_some_and(|e| e.seq > seen + 1),
        "the sequence jump shows what was missed"
    );
    apply(evs, &mut mirror, &mut gap);
    let engine_book = &e.state(I0).map(|s| s.book.clone()).unwrap_or_else(|| L2Book::new(1));
    assert_eq!(mirror.bids(), engine_book.bids());
    assert_eq!(mirror.asks(), engine_book.asks());
    assert_eq!(e.handles().stats.resyncs.get(), 1);

    // Afterwards events flow normally again.
    tx.push(tick(2 * S, delta(Side::Sell, 105, 1, BookFlags::END_OF_BATCH)));
    e.poll();
    assert_eq!(drain(&mut rx).len(), 1);
}

/// `with_market`: an instrument out of its session publishes CLOSED (with a status
/// event) and comes back by the session at its open; an instrument no feed delivers
/// stays LIVE over a long quiet spell while a fed one goes STALE.
#[test]
fn sessions_close_instruments_and_feedless_ones_never_go_stale() {
    use stocksblitz_engine::instrument::InstrumentKind;
    use stocksblitz_engine::{InstrumentConfig, InstrumentRegistry};
    let inst = |symbol: &str, session: &str| InstrumentConfig {
        symbol: symbol.into(),
        venue: "nse".into(),
        venue_symbol: symbol.into(),
        kind: InstrumentKind::Equity,
        currency: "INR".into(),
        price_decimals: 2,
        qty_decimals: 0,
        tick_size: "0.05".into(),
        lot_size: "1".into(),
        session: session.into(),
    };
    let registry = InstrumentRegistry::from_config(&[
        inst("FED", "24x7"),
        inst("QUIET", "24x7"),
        inst("NSE", "Asia/Kolkata 09:15-15:30 mon-fri"),
    ])
    .unwrap();
    let cfg = EngineConfig {
        book_max_levels: 8,
        stale_after_ms: 100,
        ..EngineConfig::default()
    };
    let (mut tx, rx) = tick_ring("in", 1024);
    let (otx, mut orx) = ring::<EngineEvent>("out", 4096);
    // 2026-11-24 (a Tuesday) 03:00 UTC = 08:30 IST: NSE not open yet.
    let t0 = 1_795_489_200 * S;
    let (fed, quiet, nse) = (InstrumentId(0), InstrumentId(1), InstrumentId(2));
    let mut e = Engine::new(&cfg, 3, vec![rx], vec![otx]).with_market(&registry, &[fed, nse], UnixNanos(t0));
    let evs = drain(&mut orx);
    assert!(evs.iter().any(|ev| ev.instrument == nse
        && ev.quality == DataQuality::Closed
        && matches!(ev.data, EventData::Status { .. })));
    for id in [fed, quiet, nse] {
        let t = |data| Tick {
            instrument: id,
            ..tick(t0, data)
        };
        assert!(tx.push(t(status(FeedStatus::Live))));
        assert!(tx.push(t(TickData::Trade {
            price: Price(100),
            qty: Qty(1),
            trade_id: 1,
            aggressor: Aggressor::Buy,
        })));
    }
    e.poll();
    let last = |evs: &[EngineEvent], id| evs.iter().rev().find(|ev| ev.instrument == id).map(|ev| ev.quality);
    let evs = drain(&mut orx);
    assert_eq!(
        last(&evs, nse),
        Some(DataQuality::Closed),
        "ticks out of session do not open it"
    );
    // 45 minutes of silence, looked at every second: the fed one is STALE, the quiet
    // one never is, NSE stays CLOSED until 09:15 IST and then opens (not STALE at once).
    let mut quiet_states = Vec::new();
    for s in 1..2_700 {
        e.housekeeping(UnixNanos(t0 + s * S));
        quiet_states.extend(e.state(quiet).map(|st| st.quality()));
    }
    assert!(
        quiet_states.iter().all(|q| *q == DataQuality::Live),
        "{:?}",
        quiet_states.last()
    );
    assert_eq!(e.state(fed).map(|s| s.quality()), Some(DataQuality::Stale));
    assert_eq!(
        e.state(nse).map(|s| s.quality()),
        Some(DataQuality::Closed),
        "09:14:59 IST"
    );
    drain(&mut orx);
    // 09:15 IST = 03:45 UTC: 45 minutes after t0.
    e.housekeeping(UnixNanos(t0 + 2_700 * S + S));
    let evs = drain(&mut orx);
    assert_eq!(
        last(&evs, nse),
        Some(DataQuality::Live),
        "open, with a fresh stale period"
    );
    // In session and silent past the threshold: now it is STALE.
    e.housekeeping(UnixNanos(t0 + 2_700 * S + 3 * S));
    assert_eq!(e.state(nse).map(|s| s.quality()), Some(DataQuality::Stale));
}

/// A recorder output (the store's) beside a conflated one (the API fan-out's) that is
/// never drained: whatever the stream and however slowly the recorder is drained, it
/// gets exactly the events it selects, in order, with its own per-instrument sequence;
/// a full ring drops and counts (a gap of exactly that many), and never suppresses
/// what follows. A recorder that keeps up loses nothing while the other output starves.
mod recorder {
    use super::*;
    use proptest::prelude::*;
    use stocksblitz_engine::publisher::OutputKind;

    fn is_trade(d: &EventData) -> bool {
        matches!(d, EventData::Trade { .. })
    }

    #[derive(Debug, Clone)]
    enum Step {
        Trade(i64),
        Delta(i64, i64),
        Drain(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1i64..50).prop_map(Step::Trade),
            (90i64..110, 0i64..5).prop_map(|(p, q)| Step::Delta(p, q)),
            (0usize..8).prop_map(Step::Drain),
        ]
    }

    proptest! {
        #[test]
        fn a_recorder_gets_its_events_whatever_the_other_outputs_do(
            capacity in 1usize..24,
            steps in proptest::collection::vec(step(), 1..300),
        ) {
            let cfg = EngineConfig { book_max_levels: 8, ..EngineConfig::default() };
            let (mut tx, rx) = tick_ring("in", 1024);
            let (api, _starved) = ring::<EngineEvent>("api", 4);
            let (store, mut recorded) = ring::<EngineEvent>("store", capacity);
            let mut e = Engine::new(&cfg, 2, vec![rx], vec![api]).with_output(store, OutputKind::Recorder(is_trade));
            let (mut sent, mut got) = (Vec::new(), Vec::<EngineEvent>::new());
            let mut take = |n: usize, got: &mut Vec<EngineEvent>| {
                for _ in 0..n {
                    match recorded.pop() {
                        Some(ev) => got.push(ev),
                        None => break,
                    }
                }
            };
            for (i, s) in steps.iter().enumerate() {
                let t = S + i as i64;
                match *s {
                    Step::Trade(q) => {
                        let id = sent.len() as u64 + 1;
                        sent.push(id);
                        tx.push(tick(t, TickData::Trade { price: Price(100), qty: Qty(q), trade_id: id, aggressor: Aggressor::Buy }));
                    }
                    Step::Delta(p, q) => {
                        tx.push(tick(t, delta(Side::Buy, p, q, BookFlags::END_OF_BATCH)));
                    }
                    Step::Drain(n) => take(n, &mut got),
                }
                e.poll();
            }
            take(usize::MAX, &mut got);
            let out = e.handles().outputs;
            let (store_ring, store_out) = &out[1];
            let dropped = store_ring.dropped.get();
            prop_assert_eq!(store_out.suppressed.get(), 0, "a recorder never suppresses");
            prop_assert_eq!(got.len() as u64 + dropped, sent.len() as u64);
            let mut last = (0u64, 0u64);
            let mut gaps = 0;
            for ev in &got {
                let EventData::Trade { trade_id, .. } = ev.data else {
                    return Err(TestCaseError::fail(format!("not selected: {ev:?}")));
                };
                prop_assert!(trade_id > last.1, "in order");
                // Its own sequence counts only what it selects: the gap is what it missed.
                prop_assert_eq!(ev.seq - last.0 - 1, trade_id - last.1 - 1);
                gaps += ev.seq - last.0 - 1;
                last = (ev.seq, trade_id);
            }
            prop_assert_eq!(gaps + (sent.len() as u64 - last.1), dropped);
            if sent.len() <= capacity {
                prop_assert_eq!(dropped, 0);
            }
        }
    }
}
