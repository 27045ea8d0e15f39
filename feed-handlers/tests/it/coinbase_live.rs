//! The real Coinbase handler against the feed simulator: the level2 book recovers to
//! the simulator's true book after every fault; match gaps are counted; audits catch a
//! silently corrupted book.

use crate::common;

use std::time::Duration;

use common::{instrument, Harness};
use stocksblitz_engine::FeedStatus;
use stocksblitz_feed_handlers::sim::faults::FaultKind;
use stocksblitz_feed_handlers::venue::Venue;

#[test]
fn level2_recovers_from_every_fault() {
    let instruments = [instrument("BTC-USD", "coinbase", "BTC-USD", 2, 8)];
    let mut h = Harness::start(
        Venue::parse("coinbase").unwrap(),
        &instruments,
        &[("BTC-USD", "65010.00")],
        |l| l.audit_interval_secs = 1,
    );
    h.run_for(Duration::from_millis(800));
    assert!(
        h.statuses.contains(&FeedStatus::Live),
        "snapshot applied: {:?}",
        h.statuses
    );
    h.assert_books_match("after start", None);

    // A dropped match is a trade_id gap: counted, the book is unaffected.
    h.fault(FaultKind::Drop, 2, 0);
    h.run_for(Duration::from_millis(1500));
    assert!(h.stats().gaps.get() >= 1, "missed trades detected");
    h.assert_books_match("drop", None);

    for (kind, count, ms) in [(FaultKind::Duplicate, 3, 0), (FaultKind::Slow, 10, 5)] {
        h.fault(kind, count, ms);
        h.run_for(Duration::from_millis(600));
        h.assert_books_match(&format!("{kind:?}"), None);
    }
    // An unreadable l2update may have carried changes: counted, and the book leaves
    // LIVE and resubscribes for a fresh snapshot instead of going on without them.
    let resyncs = h.stats().resyncs.get();
    h.fault(FaultKind::Malformed, 1, 0);
    h.run_for(Duration::from_millis(1500));
    assert!(h.stats().parse_errors.get() >= 1, "malformed frame counted");
    assert!(h.stats().resyncs.get() > resyncs, "the book resubscribed");
    h.assert_books_match("malformed", None);

    // A reordered update can corrupt a level2 book silently (no sequence numbers): the
    // periodic audit finds it and resubscribes. Keep reordering until an audit fires.
    let resyncs = h.stats().resyncs.get();
    for _ in 0..20 {
        h.fault(FaultKind::Reorder, 5, 0);
        h.run_for(Duration::from_millis(300));
        if h.stats().resyncs.get() > resyncs {
            break;
        }
    }
    h.assert_books_match("reorder", None);

    for (kind, ms) in [(FaultKind::Disconnect, 0), (FaultKind::Shutdown, 300)] {
        let reconnects = h.stats().reconnects.get();
        h.fault(kind, 1, ms);
        h.run_for(Duration::from_millis(1200));
        assert!(h.stats().reconnects.get() > reconnects, "{kind:?}: reconnected");
        h.assert_books_match(&format!("{kind:?}"), None);
    }
}

/// Heartbeats alone do not count as market data: the feed reports STALE.
#[test]
fn heartbeat_only_silence_is_stale() {
    let instruments = [instrument("BTC-USD", "coinbase", "BTC-USD", 2, 8)];
    let mut h = Harness::start(
        Venue::parse("coinbase").unwrap(),
        &instruments,
        &[("BTC-USD", "65010.00")],
        |l| {
            l.stale_after_ms = 500;
            l.dead_after_ms = 5_000;
        },
    );
    h.run_for(Duration::from_millis(600));
    h.fault(FaultKind::Silence, 1, 2_000);
    h.run_for(Duration::from_millis(1_500));
    assert!(h.statuses.contains(&FeedStatus::Stale), "{:?}", h.statuses);
}

/// A busy market with no faults: audits every second never find a mismatch, so the
/// handler never resubscribes and counts no gap.
#[test]
fn audits_of_a_healthy_book_never_resync() {
    let instruments = [instrument("BTC-USD", "coinbase", "BTC-USD", 2, 8)];
    let mut h = Harness::start(
        Venue::parse("coinbase").unwrap(),
        &instruments,
        &[("BTC-USD", "65010.00")],
        |l| l.audit_interval_secs = 1,
    );
    h.run_for(Duration::from_millis(7_000));
    assert!(h.statuses.contains(&FeedStatus::Live), "{:?}", h.statuses);
    let s = h.stats();
    assert_eq!(
        (s.resyncs.get(), s.gaps.get(), s.reconnects.get()),
        (0, 0, 0),
        "resyncs, gaps, reconnects"
    );
    h.assert_books_match("after audits", None);
}

/// Make-before-break past a lagging old connection (see the harness): the new
/// connection's own snapshot re-bases the book, and no match is skipped or doubled.
#[test]
fn a_switch_past_a_lagging_old_connection_loses_no_match() {
    Harness::start(
        Venue::parse("coinbase").unwrap(),
        &[instrument("BTC-USD", "coinbase", "BTC-USD", 2, 8)],
        &[("BTC-USD", "65010.00")],
        |l| l.max_connection_age_secs = 1,
    )
    .switches_past_a_lagging_old_connection(None, true);
}
