//! One connection's public subscriptions: what it read of each shared channel.
//!
//! The hub publishes each channel's payload once ([`super::hub`]); a connection only
//! remembers where it is (the version of a conflated channel it last sent, its
//! position in a queued channel's ring) and its own message numbers, and frames the
//! shared `data` bytes with its `type`, `channel`, `seq`, `missed` and the payload's
//! `engine_ts_us` without serializing them again (a trades or bars snapshot splices
//! the shared messages of the channel's history). It takes no lock: it waits on the
//! subscribed channels' wake-ups, never on the fan-out thread.
//!
//! The frames of one [`Reader::collect`] are written back to back into one buffer and
//! handed on as `Bytes` slices of it ([`Framer`]): one allocation per write, not one
//! `String` per message, and the socket sends each slice as it is (no copy, no UTF-8
//! check: only our own JSON goes through here).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use super::channel::{ChannelKey, ChannelKind};
use super::hub::{Hub, Item};

/// Room for a frame's fields around its channel name and data.
const FRAME_OVERHEAD: usize = 96;
/// The most a batch's buffer starts with (from the last batch's size); a larger batch
/// grows it.
const HINT_MAX: usize = 64 * 1024;
/// Message ends a [`Framer`] keeps room for between batches (512 bytes: a batch of
/// up to this many messages records its ends without allocating).
const ENDS_KEPT: usize = 64;

/// Frames messages back to back into one buffer, then hands each on as a `Bytes`
/// slice of it ([`Framer::finish`]). The buffer is not kept between batches: once the
/// write sent its slices it is freed, so a held connection holds none. It starts at
/// the last batch's size (and a quarter more, as the per-frame reservation
/// overestimates), so a steady stream costs one buffer per batch, plus the header its
/// slices share.
#[derive(Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where each message framed since the last `finish` ends in `buf`.
    ends: Vec<usize>,
    /// The last batch's size.
    hint: usize,
}

impl Framer {
    /// Appends one data frame: `{"type":..,"channel":..,"seq":..,["missed":..,]
    /// "engine_ts_us":..,"data":<data>}`, `data` spliced in as it is (already JSON).
    pub fn frame(&mut self, kind: &str, name_json: &str, seq: u64, missed: Option<u64>, engine_ts_us: i64, data: &str) {
        let need = FRAME_OVERHEAD + name_json.len() + data.len();
        let s = &mut self.buf;
        if s.capacity() == 0 {
            let hint = self.hint.min(HINT_MAX);
            s.reserve(need.max(hint + hint / 4));
        } else {
            s.reserve(need);
        }
        s.extend_from_slice(b"{\"type\":\"");
        s.extend_from_slice(kind.as_bytes());
        s.extend_from_slice(b"\",\"channel\":");
        s.extend_from_slice(name_json.as_bytes());
        let mut num = itoa::Buffer::new();
        s.extend_from_slice(b",\"seq\":");
        s.extend_from_slice(num.format(seq).as_bytes());
        if let Some(m) = missed {
            s.extend_from_slice(b",\"missed\":");
            s.extend_from_slice(num.format(m).as_bytes());
        }
        s.extend_from_slice(b",\"engine_ts_us\":");
        s.extend_from_slice(num.format(engine_ts_us).as_bytes());
        s.extend_from_slice(b",\"data\":");
        s.extend_from_slice(data.as_bytes());
        s.push(b'}');
        self.ends.push(s.len());
    }

    /// Appends the messages framed since the last call to `out`, each a slice of one
    /// shared buffer.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.ends.is_empty() {
            return;
        }
        let all = Bytes::from(std::mem::take(&mut self.buf));
        self.hint = all.len();
        let mut start = 0;
        for &end in &self.ends {
            out.push(all.slice(start..end));
            start = end;
        }
        self.ends.clear();
        self.ends.shrink_to(ENDS_KEPT);
    }
}

#[derive(Debug, Clone, Copy)]
enum Position {
    /// The version of the last state sent.
    Conflated { version: u64 },
    /// The next ring position to read; ring messages whose engine sequence is at or
    /// below `cutoff` were in the snapshot; `missed` waits for the next message.
    Queued { pos: u64, cutoff: u64, missed: u64 },
}

struct Sub {
    /// Messages sent on this channel (the last `seq`).
    seq: u64,
    at: Position,
    notify: Arc<Notify>,
    /// Completes on the channel's next publication (made before anything was read,
    /// so no publication falls between reading and waiting).
    wait: Pin<Box<OwnedNotified>>,
}

/// A connection's public channels.
pub struct Reader {
    hub: Arc<Hub>,
    subs: BTreeMap<ChannelKey, Sub>,
    /// Queued messages that waited longer than this are skipped and counted missed.
    max_lag: Option<Duration>,
    /// The connection's last write had to wait for the client: queued messages are
    /// skipped (counted missed) until a write goes through at once.
    congested: bool,
    /// At most this many of a queued channel's messages per [`Reader::collect`] (the
    /// newest; the older ones skipped and counted missed).
    max_batch: Option<u64>,
    framer: Framer,
}

impl Reader {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self {
            hub,
            subs: BTreeMap::new(),
            max_lag: None,
            congested: false,
            max_batch: None,
            framer: Framer::default(),
        }
    }

    /// Sends at most `n` of a queued channel's messages per [`Reader::collect`]: the
    /// newest, the ones before them skipped and reported as `missed`. A reader that
    /// fell behind gets the present in one small write instead of its backlog in one
    /// large one (which, to a client that does not keep up, sits in its receive
    /// buffer and delays everything sent after it, the latest quotes and books
    /// included).
    pub fn with_max_batch(mut self, n: u64) -> Self {
        self.set_max_batch(n);
        self
    }

    /// Changes the limit of [`Reader::with_max_batch`] for the next collects.
    pub fn set_max_batch(&mut self, n: u64) {
        self.max_batch = Some(n.max(1));
    }

    /// Whether the connection's last write had to wait for the client to read. While
    /// it does, [`Reader::collect`] sends only the conflated channels (the latest
    /// quotes and books) and counts the trades and bars it skips as `missed`: the
    /// backlog in the client's socket buffers drains instead of growing, and the
    /// client gets the present.
    pub fn set_congested(&mut self, congested: bool) {
        self.congested = congested;
    }

    /// Skips trades and bars that waited longer than `lag` when [`Reader::collect`]
    /// gets to them (reported as `missed` with the next message sent).
    pub fn with_max_lag(mut self, lag: Duration) -> Self {
        self.max_lag = Some(lag);
        self
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    pub fn contains(&self, key: &ChannelKey) -> bool {
        self.subs.contains_key(key)
    }

    /// Subscribes and appends the channel's snapshot (seq 1) to `out`; `false` (and
    /// nothing sent) when already subscribed or the channel does not exist.
    pub fn subscribe(&mut self, key: ChannelKey, out: &mut Vec<Bytes>) -> bool {
        if self.subs.contains_key(&key) {
            return false;
        }
        let Some(ch) = self.hub.channel(key) else {
            return false;
        };
        ch.add_reader();
        let notify = ch.notify();
        // Waiting starts before reading, so nothing published after the read is lost.
        let wait = Box::pin(Arc::clone(&notify).notified_owned());
        let at = if let Some(ring) = ch.ring() {
            // Everything before `pos` is in the snapshot read after it (the fan-out
            // publishes a batch's snapshot before it appends the batch's messages);
            // what comes after and is in the snapshot too is skipped by its engine
            // sequence.
            let pos = ring.head();
            let history = ch.history();
            let field = if key.kind == ChannelKind::Trades {
                "trades"
            } else {
                "bars"
            };
            let size: usize = history.items.iter().map(|i| i.len() + 1).sum();
            let mut data = String::with_capacity(32 + ch.symbol_json.len() + size);
            data.push_str("{\"symbol\":");
            data.push_str(&ch.symbol_json);
            let _ = write!(data, ",\"{field}\":[");
            for (n, item) in history.items.iter().enumerate() {
                if n > 0 {
                    data.push(',');
                }
                data.push_str(item.as_str());
            }
            data.push_str("]}");
            self.framer
                .frame("snapshot", &ch.name_json, 1, None, history.engine_ts_us, &data);
            Position::Queued {
                pos,
                cutoff: history.cutoff,
                missed: 0,
            }
        } else {
            let latest = ch.latest();
            self.framer
                .frame("snapshot", &ch.name_json, 1, None, latest.engine_ts_us, &latest.data);
            Position::Conflated {
                version: latest.version,
            }
        };
        self.framer.finish(out);
        self.subs.insert(
            key,
            Sub {
                seq: 1,
                at,
                notify,
                wait,
            },
        );
        self.hub.subscribed();
        true
    }

    pub fn unsubscribe(&mut self, key: &ChannelKey) -> bool {
        let removed = self.subs.remove(key).is_some();
        if removed {
            self.hub.unsubscribed();
            if let Some(ch) = self.hub.channel(*key) {
                ch.remove_reader();
            }
        }
        removed
    }

    /// Appends to `out` what the subscribed channels published since the last call:
    /// each conflated channel's latest state once if it changed, each queued
    /// channel's new messages in order (the first after a skip says how many were
    /// `missed`).
    pub fn collect(&mut self, out: &mut Vec<Bytes>) {
        let stats = &self.hub.stats;
        let framer = &mut self.framer;
        let stale_before = self.max_lag.and_then(|lag| Instant::now().checked_sub(lag));
        let congested = self.congested;
        for (key, sub) in &mut self.subs {
            let Some(ch) = self.hub.channel(*key) else {
                continue;
            };
            match &mut sub.at {
                Position::Conflated { version } => {
                    let latest = ch.latest();
                    if latest.version > *version {
                        let folded = latest.version - *version - 1;
                        if folded > 0 {
                            stats.conflated.fetch_add(folded, Ordering::Relaxed);
                        }
                        *version = latest.version;
                        sub.seq += 1;
                        framer.frame(
                            "update",
                            &ch.name_json,
                            sub.seq,
                            None,
                            latest.engine_ts_us,
                            &latest.data,
                        );
                    }
                }
                Position::Queued { pos, cutoff, missed } => {
                    let Some(ring) = ch.ring() else { continue };
                    let seq = &mut sub.seq;
                    let mut stale = 0u64;
                    // Over the batch limit: the oldest are skipped.
                    let mut excess = self
                        .max_batch
                        .map_or(0, |n| ring.head().saturating_sub(*pos).saturating_sub(n));
                    if excess > 0 && *cutoff == 0 {
                        // Nothing left of the snapshot: skipped by position, unread.
                        *pos += excess;
                        *missed += excess;
                        stale += excess;
                        excess = 0;
                    }
                    let r = ring.read(*pos, |item: &Item, skipped: u64| {
                        *missed += skipped;
                        excess = excess.saturating_sub(skipped);
                        if item.engine_seq <= *cutoff {
                            excess = excess.saturating_sub(1);
                            return;
                        }
                        // Engine sequences only grow: the snapshot is behind us.
                        *cutoff = 0;
                        let too_many = excess > 0;
                        excess = excess.saturating_sub(1);
                        if congested || too_many || stale_before.is_some_and(|t| item.published < t) {
                            stale += 1;
                            *missed += 1;
                            return;
                        }
                        *seq += 1;
                        let m = std::mem::take(missed);
                        framer.frame(
                            "update",
                            &ch.name_json,
                            *seq,
                            (m > 0).then_some(m),
                            item.engine_ts_us,
                            &item.data,
                        );
                    });
                    // Reported with the next message.
                    *missed += r.trailing;
                    if r.missed + stale > 0 {
                        stats.dropped.fetch_add(r.missed + stale, Ordering::Relaxed);
                    }
                    *pos = r.next;
                }
            }
        }
        self.framer.finish(out);
    }

    /// Forgets the publications seen so far without waiting (a paced session calls it
    /// right before [`Reader::collect`], which takes them all): the next
    /// [`Reader::ready`] completes on a publication after this call only.
    pub fn rearm(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        for sub in self.subs.values_mut() {
            if sub.wait.as_mut().poll(&mut cx).is_ready() {
                sub.wait = Box::pin(Arc::clone(&sub.notify).notified_owned());
            }
        }
    }

    /// Completes when a subscribed channel published since the last completion (never,
    /// without subscriptions). Call [`Reader::collect`] after it.
    pub fn ready(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut fired = false;
            for sub in self.subs.values_mut() {
                if sub.wait.as_mut().poll(cx).is_ready() {
                    sub.wait = Box::pin(Arc::clone(&sub.notify).notified_owned());
                    fired = true;
                }
            }
            if fired {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        for key in self.subs.keys() {
            self.hub.unsubscribed();
            if let Some(ch) = self.hub.channel(*key) {
                ch.remove_reader();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Framer;
    use axum::body::Bytes;
    use serde_json::{json, Value};

    proptest::proptest! {
        /// Every frame is one JSON object carrying exactly the numbers it was given
        /// (integers written without fmt), messages back to back split where they end.
        #[test]
        fn frames_are_json_with_the_given_numbers(
            msgs in proptest::collection::vec((proptest::num::u64::ANY, proptest::option::of(proptest::num::u64::ANY), proptest::num::i64::ANY, 0u32..1000), 1..8),
        ) {
            let mut f = Framer::default();
            for &(seq, missed, ts, v) in &msgs {
                f.frame("quote", "\"quotes:BTCUSDT\"", seq, missed, ts, &format!("{{\"v\":{v}}}"));
            }
            let mut out: Vec<Bytes> = Vec::new();
            f.finish(&mut out);
            proptest::prop_assert_eq!(out.len(), msgs.len());
            for (b, &(seq, missed, ts, v)) in out.iter().zip(&msgs) {
                let got: Value = serde_json::from_slice(b).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                let mut want = json!({"type": "quote", "channel": "quotes:BTCUSDT", "seq": seq, "engine_ts_us": ts, "data": {"v": v}});
                if let Some(m) = missed {
                    want["missed"] = json!(m);
                }
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
