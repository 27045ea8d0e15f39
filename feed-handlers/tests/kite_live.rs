//! The real Kite handler against the feed simulator: the 5-level depth recovers to the
//! simulator's true top of book after every fault, and heartbeat-only silence is STALE.

mod common;

use std::time::Duration;

use common::{instrument, Harness};
use stocksblitz_engine::FeedStatus;
use stocksblitz_feed_handlers::sim::faults::FaultKind;
use stocksblitz_feed_handlers::venue::Venue;

#[test]
fn depth_recovers_from_every_fault() {
    let instruments = [
        instrument("RELIANCE", "nse", "738561", 2, 0),
        instrument("INFY", "nse", "408065", 2, 0),
    ];
    let mut h = Harness::start(
        Venue::Kite,
        &instruments,
        &[("RELIANCE", "2450.00"), ("INFY", "1520.00")],
        |_| {},
    );
    h.run_for(Duration::from_millis(800));
    assert!(h.statuses.contains(&FeedStatus::Live), "{:?}", h.statuses);
    h.assert_books_match("after start", Some(5));

    for (kind, count, ms) in [
        (FaultKind::Drop, 3, 0),
        (FaultKind::Duplicate, 3, 0),
        (FaultKind::Malformed, 2, 0),
        (FaultKind::Slow, 10, 5),
    ] {
        h.fault(kind, count, ms);
        h.run_for(Duration::from_millis(600));
        h.assert_books_match(&format!("{kind:?}"), Some(5));
    }
    assert!(h.stats().parse_errors.get() >= 2, "truncated frames counted");

    for (kind, ms) in [(FaultKind::Disconnect, 0), (FaultKind::Shutdown, 300)] {
        let reconnects = h.stats().reconnects.get();
        h.fault(kind, 1, ms);
        h.run_for(Duration::from_millis(1200));
        assert!(h.stats().reconnects.get() > reconnects, "{kind:?}: reconnected");
        h.assert_books_match(&format!("{kind:?}"), Some(5));
    }

    // Kite has no sequence numbers: silence with heartbeats flowing is caught by the
    // stale timer, without dropping the connection.
    h.statuses.clear();
    let reconnects = h.stats().reconnects.get();
    h.fault(FaultKind::Silence, 1, 2_500);
    h.run_for(Duration::from_millis(2_000));
    assert!(h.statuses.contains(&FeedStatus::Stale), "{:?}", h.statuses);
    assert_eq!(h.stats().reconnects.get(), reconnects, "heartbeats keep the connection");
    h.run_for(Duration::from_millis(1_000));
    h.assert_books_match("silence", Some(5));
}
