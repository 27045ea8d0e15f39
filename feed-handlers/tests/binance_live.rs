//! The real Binance handler against the feed simulator: for every fault scenario the
//! local book, after recovery, equals the simulator's true book.

mod common;

use std::time::Duration;

use common::{instrument, Harness};
use stocksblitz_engine::FeedStatus;
use stocksblitz_feed_handlers::sim::faults::FaultKind;
use stocksblitz_feed_handlers::venue::Venue;

#[test]
fn syncs_and_recovers_from_every_fault() {
    let instruments = [
        instrument("BTCUSDT", "binance", "btcusdt", 2, 5),
        instrument("ETHUSDT", "binance", "ethusdt", 2, 5),
    ];
    let mut h = Harness::start(
        Venue::Binance,
        &instruments,
        &[("BTCUSDT", "65000.00"), ("ETHUSDT", "3400.00")],
        |_| {},
    );
    h.run_for(Duration::from_millis(800));
    assert!(h.statuses.contains(&FeedStatus::Live), "book synced: {:?}", h.statuses);
    h.assert_books_match("after start", None);

    for (kind, count, ms) in [
        (FaultKind::Drop, 1, 0),
        (FaultKind::Duplicate, 3, 0),
        (FaultKind::Reorder, 1, 0),
        (FaultKind::Malformed, 2, 0),
        (FaultKind::Slow, 20, 5),
    ] {
        h.fault(kind, count, ms);
        h.run_for(Duration::from_millis(600));
        h.assert_books_match(&format!("{kind:?}"), None);
    }
    assert!(h.stats().gaps.get() >= 1, "drop and reorder are gaps");
    assert!(h.stats().parse_errors.get() >= 2, "malformed frames counted");

    // Abrupt disconnect: reconnect with backoff, resync.
    let reconnects = h.stats().reconnects.get();
    h.fault(FaultKind::Disconnect, 1, 0);
    h.run_for(Duration::from_millis(1000));
    assert!(h.stats().reconnects.get() > reconnects);
    h.assert_books_match("disconnect", None);

    // Silence: STALE after stale_after_ms, then a reconnect after dead_after_ms.
    h.statuses.clear();
    h.fault(FaultKind::Silence, 1, 2500);
    h.run_for(Duration::from_millis(3500));
    assert!(h.statuses.contains(&FeedStatus::Stale), "{:?}", h.statuses);
    h.assert_books_match("silence", None);

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
    h.assert_books_match("shutdown", None);
}
