//! REST quote reads from the hub's encoded quotes (issue 19, point 4), over the same
//! generated event streams and real fan-out as the WebSocket tests: the body is the
//! mirror's [`QuoteDto`] byte for byte after every batch, a read never waits for the
//! fan-out's write lock on the mirror, and the per-request path (quote body, request
//! metrics, rate-limit bucket) allocates a small fixed number of times.

use axum::body::Bytes;
use axum::http::Method;

use super::*;
use crate::http::market::cached_quote;
use crate::http::metrics::HttpMetrics;
use crate::http::reply::encoded_json;
use crate::ratelimit::gcra::Rate;
use crate::ratelimit::store::{Class, LocalBuckets};

/// The body `GET /quotes/{symbol}` answers for `instrument`.
fn rest_quote(rig: &Rig, instrument: usize) -> String {
    let inst = rig
        .market
        .registry
        .get(InstrumentId(instrument as u32))
        .expect("instrument");
    cached_quote(&rig.hub, inst).expect("quote").as_str().to_owned()
}

/// The quote encoded from the mirror now, in `QuoteDto`'s field order.
fn mirror_quote(rig: &Rig, instrument: usize) -> String {
    let id = InstrumentId(instrument as u32);
    let inst = rig.market.registry.get(id).expect("instrument");
    let mirror = rig.market.mirror.read();
    serde_json::to_string(&QuoteDto::new(inst, mirror.get(id).expect("view"))).expect("json")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any event stream: after every batch the cached REST quote of every instrument
    /// is exactly (byte for byte) the quote encoded from the mirror, so caching per
    /// change never serves an old quote once the fan-out has published its batch.
    #[test]
    fn the_cached_quote_is_the_mirrors_quote_after_every_batch(batches in gen_batches()) {
        let mut rig = Rig::new(4, None);
        for i in 0..INSTRUMENTS {
            prop_assert_eq!(rest_quote(&rig, i), mirror_quote(&rig, i));
        }
        for batch in &batches {
            rig.run_batch(batch);
            for i in 0..INSTRUMENTS {
                prop_assert_eq!(rest_quote(&rig, i), mirror_quote(&rig, i), "instrument {}", i);
            }
        }
    }
}

/// A REST quote read while the fan-out holds the mirror's write lock (applying a
/// batch) still answers, with the last published quote.
#[test]
fn a_quote_read_does_not_wait_for_the_mirror() {
    let mut rig = Rig::new(8, None);
    rig.run_batch(&[(0, Gen::Quote(1)), (0, Gen::Trade), (1, Gen::Quote(2))]);
    let want = [mirror_quote(&rig, 0), mirror_quote(&rig, 1)];
    let hub = Arc::clone(&rig.hub);
    let registry = Arc::clone(&rig.market.registry);
    let applying = rig.market.mirror.write();
    let (done_tx, done_rx) = mpsc::channel();
    let reader = spawn_thread("test-rest-reader", None, move || {
        let bodies: Vec<String> = (0..INSTRUMENTS)
            .map(|i| {
                let inst = registry.get(InstrumentId(i as u32)).expect("instrument");
                cached_quote(&hub, inst).expect("quote").as_str().to_owned()
            })
            .collect();
        let _ = done_tx.send(bodies);
    })
    .expect("reader thread");
    let done = done_rx.recv_timeout(Duration::from_secs(60));
    drop(applying);
    reader.join().expect("reader");
    assert_eq!(
        done.ok(),
        Some(want.to_vec()),
        "both quotes answered under the write lock"
    );
}

/// What a quote request costs beyond axum itself: the cached body into a response,
/// the request counted in the metrics and its rate-limit bucket spent. Counted over
/// many requests after the first (which may claim its metrics row and bucket): a
/// small fixed number per request (the response's header map and boxed body), no
/// serialization, nothing that grows with the body or the number of callers.
#[test]
fn a_quote_request_allocates_a_few_times() {
    let mut rig = Rig::new(8, None);
    rig.run_batch(&[(0, Gen::Quote(1)), (0, Gen::Trade), (0, Gen::Level(3))]);
    let inst = rig.market.registry.get(InstrumentId(0)).expect("instrument");
    let metrics = HttpMetrics::new(["/api/v1/quotes/{symbol}"]);
    let buckets = LocalBuckets::new(1_000);
    let rate = Rate { limit: 1_000_000 };
    let request = |t: i64| {
        let body = cached_quote(&rig.hub, inst).expect("quote");
        let resp = encoded_json(Bytes::from(body));
        metrics.record(
            Some("/api/v1/quotes/{symbol}"),
            &Method::GET,
            resp.status().as_u16(),
            1_000,
        );
        let d = buckets.check("ip:192.0.2.1", Class::Anonymous, rate, t);
        std::hint::black_box((resp, d));
    };
    request(0);
    const N: u64 = 1_000;
    let (_, n) = stocksblitz_testkit::alloc::count_allocations(|| {
        for t in 1..=N {
            request(t as i64);
        }
    });
    assert!(n <= 3 * N, "{n} allocations in {N} requests");
    // And the parts that must not allocate at all: metrics and the bucket.
    let (_, n) = stocksblitz_testkit::alloc::count_allocations(|| {
        for t in 1..=N {
            metrics.record(Some("/api/v1/quotes/{symbol}"), &Method::GET, 200, t);
            std::hint::black_box(buckets.check("ip:192.0.2.1", Class::Anonymous, rate, t as i64));
            std::hint::black_box(cached_quote(&rig.hub, inst));
        }
    });
    assert_eq!(n, 0, "metrics, rate limiting and the cached quote allocate nothing");
}
