//! Proves the hot path allocates nothing per tick after warm-up: synthetic feed step ->
//! input ring -> engine poll/housekeeping -> output ring -> consumer pop.
//!
//! The testkit's counting allocator (installed in main.rs) counts only this thread's
//! allocations while it is armed, so the other tests of the binary do not disturb the
//! count.

use stocksblitz_engine::ring::ring;
use stocksblitz_engine::tick_ring::tick_ring;
use stocksblitz_engine::{Engine, EngineConfig, EngineEvent, InstrumentId, Price, Qty, Tick, UnixNanos};
use stocksblitz_feed_handlers::{SimSpec, SyntheticMarket, TickBuf};
use stocksblitz_testkit::alloc;

#[test]
fn engine_loop_allocates_nothing_per_tick_after_warm_up() {
    let specs: Vec<SimSpec> = (0..4)
        .map(|i| SimSpec {
            id: InstrumentId(i),
            tick_size: Price(1),
            lot_size: Qty(100),
            start_price: Price(100_000 + i64::from(i) * 1_000),
        })
        .collect();
    let config = EngineConfig {
        book_max_levels: 16,
        ..EngineConfig::default()
    };
    let (mut input, input_rx) = tick_ring("in", 4096);
    let (output, mut output_rx) = ring::<EngineEvent>("out", 8192);
    let mut engine = Engine::new(&config, specs.len(), vec![input_rx], vec![output]);
    // Depth above book_max_levels exercises eviction and discards too.
    let mut market = SyntheticMarket::new(9, 20, &specs);
    let mut buf = TickBuf::default();
    let mut now = UnixNanos(1_700_000_000 * UnixNanos::NANOS_PER_SEC);
    for i in 0..market.len() {
        market.snapshot(i, now, |t| {
            input.push(t);
        });
    }

    let mut run = |steps: usize, now: &mut UnixNanos| {
        let mut events = 0u64;
        for step in 0..steps {
            // 1 ms of market time per 10 steps: bars close, progress is published.
            if step % 10 == 0 {
                *now = now.saturating_add_nanos(UnixNanos::NANOS_PER_MILLI);
            }
            market.step(*now, &mut buf);
            for t in buf.as_slice() {
                input.push(*t);
            }
            engine.poll();
            engine.housekeeping(*now);
            while output_rx.pop().is_some() {
                events += 1;
            }
        }
        events
    };

    let warm = run(50_000, &mut now);
    assert!(warm > 50_000, "warm-up produced {warm} events");

    // The counter works: an allocation while armed is seen.
    alloc::arm();
    let probe = std::hint::black_box(vec![1u8; 16]);
    alloc::disarm();
    drop(probe);
    assert!(alloc::count() > 0, "counting allocator is not counting");

    alloc::reset();
    alloc::arm();
    let events = run(100_000, &mut now);
    alloc::disarm();

    assert!(events > 100_000, "measured run produced {events} events");
    assert_eq!(alloc::count(), 0, "heap allocations on the hot path");
    let stats = engine.handles().stats;
    assert_eq!(stats.unknown_instrument.get(), 0);
    assert!(stats.book_discarded.get() > 0 || stats.events.get() > 0);
}

/// Venue parse paths allocate nothing per frame: Binance trades, book tickers and
/// synced depth diffs, Coinbase level2 updates and matches, Kite full packets.
#[test]
fn venue_normalizers_allocate_nothing_per_frame() {
    use stocksblitz_feed_handlers::binance::normalizer::{BinanceNormalizer, TradeSource};
    use stocksblitz_feed_handlers::coinbase::normalizer::CoinbaseNormalizer;
    use stocksblitz_feed_handlers::kite::decode::encode;
    use stocksblitz_feed_handlers::kite::normalizer::KiteNormalizer;
    use stocksblitz_feed_handlers::normalize::FrameRef;
    use stocksblitz_feed_handlers::symbols::{SymbolMap, VenueInstrument};
    use stocksblitz_feed_handlers::FeedStats;

    let inst = |id, q| VenueInstrument {
        id: InstrumentId(id),
        price_scale: 2,
        qty_scale: q,
    };
    let stats = FeedStats::default();
    let mut ticks = 0u64;

    let mut binance = BinanceNormalizer::new(&[("BTCUSDT".into(), inst(0, 5), true)], 3, TradeSource::Trade);
    let snap = BinanceNormalizer::wrap_snapshot(
        "BTCUSDT",
        r#"{"lastUpdateId":100,"bids":[["100.00","1.00000"]],"asks":[["101.00","1.00000"]]}"#,
    );
    binance
        .on_frame(FrameRef::Text(snap.as_bytes()), UnixNanos(1), &stats, &mut |_| {})
        .unwrap();
    let diffs: Vec<String> = (0..1000u64)
        .map(|i| {
            let u = 101 + i;
            format!(
                r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":{u},"u":{u},"b":[["100.{:02}","0.50000"]],"a":[["101.{:02}","0.25000"]]}}}}"#,
                i % 100,
                i % 100
            )
        })
        .collect();
    let trades: Vec<String> = (0..1000u64)
        .map(|i| format!(r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":1,"s":"BTCUSDT","t":{},"p":"100.50","q":"0.00100","T":1,"m":true,"M":true}}}}"#, 5_000_000_000 + i))
        .collect();
    let ticker = r#"{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"100.00","B":"1.00000","a":"101.00","A":"1.00000"}}"#;

    let mut coinbase = CoinbaseNormalizer::new(&[("BTC-USD".into(), inst(1, 8))], 3);
    let cb_snap = r#"{"type":"snapshot","product_id":"BTC-USD","bids":[["100.00","1"]],"asks":[["101.00","1"]]}"#;
    coinbase
        .on_frame(FrameRef::Text(cb_snap.as_bytes()), UnixNanos(1), &stats, &mut |_| {})
        .unwrap();
    let l2 = r#"{"type":"l2update","product_id":"BTC-USD","time":"2024-01-01T00:00:00.5Z","changes":[["buy","100.10","0.5"],["sell","101.00","0"]]}"#;
    let matches: Vec<String> = (1..=1000u64)
        .map(|i| format!(r#"{{"type":"match","trade_id":{i},"sequence":{i},"time":"2024-01-01T00:00:00Z","product_id":"BTC-USD","size":"0.5","price":"100.50","side":"buy"}}"#))
        .collect();

    let mut tokens = SymbolMap::new();
    tokens.insert(738_561u32, inst(2, 0));
    let mut kite = KiteNormalizer::new(tokens, 3);
    let mut q = encode::Quote {
        token: 738_561,
        ltp: 10_050,
        volume: 1,
        ..encode::Quote::default()
    };
    for i in 0..5 {
        q.depth[i] = (10, 10_000 - 5 * i as i32, 1);
        q.depth[5 + i] = (10, 10_100 + 5 * i as i32, 1);
    }
    let kite_frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            q.volume = 1 + i;
            encode::frame(&[encode::full(&q)])
        })
        .collect();
    kite.on_frame(FrameRef::Binary(&kite_frames[0]), UnixNanos(1), &stats, &mut |_| {})
        .unwrap();

    alloc::reset();
    alloc::arm();
    for i in 0..1000 {
        let mut count = |_: Tick| ticks += 1;
        let r = [
            binance
                .on_frame(FrameRef::Text(diffs[i].as_bytes()), UnixNanos(2), &stats, &mut count)
                .is_ok(),
            binance
                .on_frame(FrameRef::Text(trades[i].as_bytes()), UnixNanos(2), &stats, &mut count)
                .is_ok(),
            binance
                .on_frame(FrameRef::Text(ticker.as_bytes()), UnixNanos(2), &stats, &mut count)
                .is_ok(),
            coinbase
                .on_frame(FrameRef::Text(l2.as_bytes()), UnixNanos(2), &stats, &mut count)
                .is_ok(),
            coinbase
                .on_frame(FrameRef::Text(matches[i].as_bytes()), UnixNanos(2), &stats, &mut count)
                .is_ok(),
            kite.on_frame(
                FrameRef::Binary(&kite_frames[i.max(1)]),
                UnixNanos(2),
                &stats,
                &mut count,
            )
            .is_ok(),
        ];
        assert!(r.iter().all(|ok| *ok), "frame {i}: {r:?}");
    }
    alloc::disarm();
    assert_eq!(alloc::count(), 0, "heap allocations on the venue parse path");
    assert!(ticks > 10_000, "{ticks}");
}
