//! The real Kite handler against the feed simulator: the 5-level depth recovers to the
//! simulator's true top of book after every fault, and heartbeat-only silence is STALE.

use crate::common;

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
        Venue::parse("kite").unwrap(),
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

/// Kite's access token rotates daily. A refused token (HTTP 403) shows as the feed's
/// state with a reason naming where the token comes from (never the token itself), is
/// counted and retried with backoff; the token file is re-read before every reconnect,
/// so writing the new token there recovers the feed without a restart. Two rotations.
#[test]
fn a_refused_token_shows_and_a_rotated_token_file_is_picked_up() {
    use stocksblitz_feed_handlers::FeedState;
    let var = format!("SBZ_TEST_KITE_TOKEN_{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("sbz-kite-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("access_token");
    std::fs::write(&file, "day-1-token\n").unwrap();
    // This test alone uses this variable (its name carries the process id).
    stocksblitz_testkit::env::set(format!("{var}_FILE"), &file);
    let instruments = [instrument("RELIANCE", "nse", "738561", 2, 0)];
    let env = var.clone();
    let mut h = Harness::start(
        Venue::parse("kite").unwrap(),
        &instruments,
        &[("RELIANCE", "2450.00")],
        move |c| {
            c.auth_query.insert("access_token".into(), env);
        },
    );
    let wait_for = |h: &mut Harness, state: FeedState| {
        for _ in 0..200 {
            if h.stats().state() == state {
                return;
            }
            h.run_for(Duration::from_millis(50));
        }
        panic!("feed never {state:?}: {:?} {:?}", h.stats().state(), h.stats().reason());
    };
    wait_for(&mut h, FeedState::Connected);
    for (old, new) in [("day-1-token", "day-2-token"), ("day-2-token", "day-3-token")] {
        // The day's token expires: the venue drops the connection and refuses it.
        h.control("/control/auth/kite", serde_json::json!({ "refused_tokens": [old] }));
        h.fault(FaultKind::Disconnect, 1, 0);
        wait_for(&mut h, FeedState::Unauthorized);
        let reason = h.stats().reason().unwrap_or_default();
        assert!(reason.contains("HTTP 403"), "{reason}");
        assert!(
            reason.contains(&format!("{var}_FILE")),
            "says where the token goes: {reason}"
        );
        assert!(!reason.contains(old), "never the token itself: {reason}");
        let refused = h.stats().auth_failures.get();
        assert!(refused >= 1);
        // Retried, visibly, while the token is wrong.
        h.run_for(Duration::from_millis(600));
        assert_eq!(h.stats().state(), FeedState::Unauthorized);
        assert!(h.stats().auth_failures.get() > refused, "still retried");
        // The operator (or the token job) writes the new token: no restart.
        h.statuses.clear();
        std::fs::write(&file, format!("{new}\n")).unwrap();
        wait_for(&mut h, FeedState::Connected);
        assert_eq!(h.stats().reason(), None);
        h.run_for(Duration::from_millis(500));
        assert!(h.statuses.contains(&FeedStatus::Live), "{:?}", h.statuses);
        h.assert_books_match(&format!("after {new}"), Some(5));
    }
    drop(h);
    let _ = std::fs::remove_dir_all(dir);
}

/// Make-before-break past a lagging old connection (see the harness): Kite's full-mode
/// ticks are whole quotes and depth, so the new connection's first ticks are the truth.
#[test]
fn a_switch_past_a_lagging_old_connection_keeps_the_book() {
    Harness::start(
        Venue::parse("kite").unwrap(),
        &[instrument("RELIANCE", "nse", "738561", 2, 0)],
        &[("RELIANCE", "2450.00")],
        |l| l.max_connection_age_secs = 1,
    )
    .switches_past_a_lagging_old_connection(Some(5), false);
}
