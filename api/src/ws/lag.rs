//! How far behind a connection's client reads, measured with WebSocket pings.
//!
//! Issue 19: at 1,000 connections the load client could not read everything the
//! server sent; the backlog sat in the client's kernel receive buffers (235 KiB per
//! connection, 0.65 s of its reading, measured from `/proc/net/tcp` by the fanout
//! bench), where the server cannot see it: its own send queues were nearly empty, so
//! no write waited and nothing conflated. A ping is answered only once the client has
//! read everything sent before it (frames are read in order), so the time from a ping
//! to its pong is the network's round trip plus the client's backlog. The session
//! appends a probe to a market-data write at most every [`PROBE_EVERY`], one at a
//! time. The fastest answer of the last [`BASELINE_FOR`] stands for the round trip
//! (a client across the internet answers tens of milliseconds late without being
//! behind); while the last answer took longer than that plus `ws_max_client_lag_ms`,
//! or the probe out has waited longer than that, the connection counts as congested:
//! it gets the latest quotes and books, not queued trades (skipped and counted in
//! `missed`), and writes less often, until the client has caught up.

use std::time::{Duration, Instant};

/// The least time between two probes of one connection.
pub const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long the fastest answer stands for the round trip: a slower one replaces it
/// after this (the path may have changed).
pub const BASELINE_FOR: Duration = Duration::from_secs(10);

/// One connection's probe state.
#[derive(Debug)]
pub struct LagProbe {
    /// Zero: probing is off.
    max_lag: Duration,
    next_id: u64,
    /// The probe awaiting its pong: its id and when it went out.
    out: Option<(u64, Instant)>,
    last_sent: Option<Instant>,
    /// The fastest answer lately (the round trip without a backlog) and when.
    baseline: Option<(Duration, Instant)>,
    /// The last answer came later than the baseline plus `max_lag`.
    behind: bool,
}

impl LagProbe {
    pub fn new(max_lag: Duration) -> Self {
        Self {
            max_lag,
            next_id: 0,
            out: None,
            last_sent: None,
            baseline: None,
            behind: false,
        }
    }

    /// A ping payload to send with the write going out at `now`, if a probe is due
    /// (none out, and [`PROBE_EVERY`] since the last).
    pub fn due(&mut self, now: Instant) -> Option<[u8; 8]> {
        if self.max_lag.is_zero() || self.out.is_some() {
            return None;
        }
        if self
            .last_sent
            .is_some_and(|t| now.saturating_duration_since(t) < PROBE_EVERY)
        {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1);
        self.out = Some((self.next_id, now));
        self.last_sent = Some(now);
        Some(self.next_id.to_be_bytes())
    }

    /// A pong arrived at `now` (one that answers no probe of ours, such as the
    /// heartbeat's, is ignored).
    pub fn on_pong(&mut self, payload: &[u8], now: Instant) {
        let Some((id, sent)) = self.out else { return };
        if payload != id.to_be_bytes() {
            return;
        }
        self.out = None;
        let rtt = now.saturating_duration_since(sent);
        let base = match self.baseline {
            Some((b, at)) if b <= rtt && now.saturating_duration_since(at) < BASELINE_FOR => b,
            _ => {
                self.baseline = Some((rtt, now));
                rtt
            }
        };
        self.behind = rtt > base + self.max_lag;
    }

    /// Whether the client is behind at `now`: its last answer was late, or the probe
    /// out has waited longer than the round trip plus the limit already (not before
    /// a first answer: the round trip is not known yet).
    pub fn lagging(&self, now: Instant) -> bool {
        self.behind
            || self
                .out
                .zip(self.baseline)
                .is_some_and(|((_, sent), (base, _))| now.saturating_duration_since(sent) > base + self.max_lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_millis(25);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_prompt_answer_is_not_lagging_and_a_late_one_is_until_a_prompt_one() {
        let t0 = Instant::now();
        let mut p = LagProbe::new(LAG);
        let a = p.due(t0).expect("the first write carries a probe");
        assert_eq!(p.due(ms(t0, 1)), None, "one probe out at a time");
        assert!(!p.lagging(ms(t0, 40)), "no round trip known yet");
        p.on_pong(&a, ms(t0, 5));
        assert!(!p.lagging(ms(t0, 5)));
        assert_eq!(p.due(ms(t0, 20)), None, "not before PROBE_EVERY");
        let b = p.due(ms(t0, 50)).expect("due again");
        assert!(
            !p.lagging(ms(t0, 79)),
            "out for 29 ms: within the round trip (5) and the limit (25)"
        );
        assert!(p.lagging(ms(t0, 81)), "out for 31 ms: behind before it is answered");
        p.on_pong(&b, ms(t0, 90));
        assert!(p.lagging(ms(t0, 91)), "answered after 40 ms");
        let c = p.due(ms(t0, 100)).expect("due");
        p.on_pong(&c, ms(t0, 110));
        assert!(!p.lagging(ms(t0, 111)), "caught up");
    }

    #[test]
    fn a_far_client_is_not_behind_for_its_round_trip_and_the_baseline_expires() {
        let t0 = Instant::now();
        let mut p = LagProbe::new(LAG);
        let mut now = t0;
        for _ in 0..5 {
            let id = p.due(now).expect("due");
            now += Duration::from_millis(80);
            p.on_pong(&id, now);
            assert!(
                !p.lagging(now),
                "80 ms across the internet is its round trip, not a backlog"
            );
            now += PROBE_EVERY;
        }
        let id = p.due(now).expect("due");
        now += Duration::from_millis(110);
        p.on_pong(&id, now);
        assert!(p.lagging(now), "30 ms over its round trip: behind");
        // The round trip grows for good: after BASELINE_FOR the slower answers stand.
        now += BASELINE_FOR;
        let id = p.due(now).expect("due");
        now += Duration::from_millis(200);
        p.on_pong(&id, now);
        assert!(
            !p.lagging(now),
            "the old baseline expired: 200 ms is the new round trip"
        );
    }

    #[test]
    fn pongs_that_answer_no_probe_are_ignored_and_zero_turns_probing_off() {
        let t0 = Instant::now();
        let mut p = LagProbe::new(LAG);
        let a = p.due(t0).expect("probe");
        p.on_pong(&[], ms(t0, 1));
        p.on_pong(&[0; 8], ms(t0, 1));
        assert!(
            p.out.is_some(),
            "the heartbeat's empty pong and a stale id answer nothing"
        );
        p.on_pong(&a, ms(t0, 2));
        assert!(p.out.is_none());
        let mut off = LagProbe::new(Duration::ZERO);
        assert_eq!(off.due(t0), None);
        assert!(!off.lagging(ms(t0, 1_000)));
    }

    proptest::proptest! {
        /// Over any schedule of writes and answers: at most one probe out, probes at
        /// least PROBE_EVERY apart, and lagging exactly when the last answer took
        /// longer than the round trip (the fastest recent answer) plus the limit, or
        /// the probe out is older than that.
        #[test]
        fn lagging_follows_the_answers(steps in proptest::collection::vec((0u64..40, proptest::bool::ANY, 0u64..60), 1..60)) {
            let t0 = Instant::now();
            let mut p = LagProbe::new(LAG);
            let mut now = t0;
            let mut last_probe: Option<Instant> = None;
            let mut out: Option<([u8; 8], Instant)> = None;
            let mut last_rtt: Option<Duration> = None;
            let mut base: Option<(Duration, Instant)> = None;
            for (gap, answer, delay) in steps {
                now += Duration::from_millis(gap);
                if let Some(id) = p.due(now) {
                    proptest::prop_assert!(out.is_none());
                    if let Some(l) = last_probe {
                        proptest::prop_assert!(now - l >= PROBE_EVERY);
                    }
                    last_probe = Some(now);
                    out = Some((id, now));
                }
                if answer {
                    if let Some((id, sent)) = out.take() {
                        now += Duration::from_millis(delay);
                        p.on_pong(&id, now);
                        let rtt = now - sent;
                        if !base.is_some_and(|(b, at)| b <= rtt && now - at < BASELINE_FOR) {
                            base = Some((rtt, now));
                        }
                        last_rtt = Some(rtt);
                    }
                }
                let b = base.map(|(b, _)| b);
                let want = last_rtt.zip(b).is_some_and(|(r, b)| r > b + LAG)
                    || out.zip(b).is_some_and(|((_, s), b)| now - s > b + LAG);
                proptest::prop_assert_eq!(p.lagging(now), want);
            }
        }
    }
}
