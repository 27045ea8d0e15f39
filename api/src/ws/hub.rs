//! The WebSocket fan-out's shared state: every public channel's encoded messages, and
//! who receives the private ones.
//!
//! Issue 19: the fan-out thread's work must not grow with the number of subscribers.
//! So it never visits a subscriber. Per batch of engine events it encodes each changed
//! public channel's payload once into shared bytes and publishes it on the channel:
//! - conflated channels (quotes, book) hold their latest payload as an immutable
//!   [`Latest`] swapped in whole ([`ArcSwap`]) with a version that counts the updates
//!   folded into it; a session reads it when it is ready to write, and a subscribe (or
//!   any other reader) never waits for the fan-out;
//! - queued channels (trades, bars) append each message to a bounded [`Ring`] of
//!   encoded messages; each session keeps its own read position, and one that fell
//!   more than the ring's capacity behind skips ahead and is told how many it missed.
//!   Their snapshot (recent trades, the latest bars) is a [`History`] of the same
//!   encoded messages swapped in whole, published before the batch's messages are
//!   appended, so a subscriber that reads the ring's head and then the history misses
//!   nothing and skips what the history already holds (by engine sequence).
//!
//! Then it wakes each touched channel's waiters once (one [`Notify`] per channel).
//! Sessions add only their own framing (`type`, `channel`, `seq`) around the shared
//! `data` bytes ([`super::reader`]). Private channels (orders, fills, positions,
//! anomalies) are per account and never dropped: they still go through each
//! connection's [`Outbox`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::extract::ws::Utf8Bytes;
use parking_lot::RwLock;
use serde::Serialize;
use stocksblitz_engine::orders::{AccountId, OrderEvent, OrderEventData};
use stocksblitz_engine::{Bar, BarInterval, BarState, Instrument, InstrumentId, InstrumentRegistry, UnixNanos};
use tokio::sync::Notify;

use super::channel::{ChannelKey, ChannelKind};
use super::outbox::{Outbox, WsStats};
use crate::dto::{micros, BarDto, BookDto, QuoteDto, TradeDto};
use crate::market::{Change, InstrumentView, Mirror, TradeView};

/// Channel kinds per instrument, in [`ChannelKind`] order.
const KINDS: [ChannelKind; 4] = [
    ChannelKind::Quotes,
    ChannelKind::Book,
    ChannelKind::Trades,
    ChannelKind::Bars,
];

/// The latest state of a conflated channel, immutable once published.
#[derive(Debug)]
pub struct Latest {
    /// Updates applied to the channel since start (0: the initial, empty state); a
    /// reader that saw version `v` and now sees `w` had `w - v - 1` updates folded.
    pub version: u64,
    /// When the engine published the newest event behind it (Unix µs; 0: none yet).
    pub engine_ts_us: i64,
    /// The payload (`data`), encoded once for every reader.
    pub data: Utf8Bytes,
}

/// A queued channel's snapshot, immutable once published: the recent trades (the
/// last `trades_history`) or the latest bars (last closed and forming, per interval).
#[derive(Debug, Default)]
pub struct History {
    /// The engine sequence of the newest event it holds: ring messages at or below it
    /// are in it.
    pub cutoff: u64,
    /// When the engine published that event (Unix µs; 0: none yet).
    pub engine_ts_us: i64,
    /// The messages' payloads, oldest first, as the channel's updates carry them.
    pub items: Vec<Utf8Bytes>,
}

/// One encoded message of a queued channel.
#[derive(Debug)]
pub struct Item {
    /// Its position in the channel's ring (0, 1, 2, ... without gaps).
    pub pos: u64,
    /// The engine's per-instrument sequence of its event (snapshot cut-off).
    pub engine_seq: u64,
    pub engine_ts_us: i64,
    /// When the fan-out appended it (monotonic: a reader measures its own lag with it,
    /// whatever the wall clock does).
    pub published: Instant,
    pub data: Utf8Bytes,
}

/// A bounded ring of encoded messages: one writer (the fan-out thread), any number
/// of readers, each with its own position; nothing waits, the oldest is overwritten.
/// Its slots are allocated for its first reader (a channel nobody ever read costs
/// nothing, whatever `ws_queue_capacity` is).
pub struct Ring {
    capacity: usize,
    slots: OnceLock<Box<[ArcSwapOption<Item>]>>,
    /// Position of the next message (messages published so far).
    head: AtomicU64,
}

/// What [`Ring::read`] found past a reader's position.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The reader's next position.
    pub next: u64,
    /// Messages that were overwritten before the reader got to them.
    pub missed: u64,
    /// Of those, the ones after the last message delivered (still to report).
    pub trailing: u64,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            slots: OnceLock::new(),
            head: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    /// Allocates the slots (once; a reader does, before it starts reading).
    fn open(&self) {
        self.slots
            .get_or_init(|| (0..self.capacity).map(|_| ArcSwapOption::empty()).collect());
    }

    /// Messages published so far: a new reader starts here.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    fn slot(&self, pos: u64) -> Option<&ArcSwapOption<Item>> {
        self.slots.get()?.get((pos % self.capacity()) as usize)
    }

    /// Appends a message (the fan-out thread only: one writer; a ring without a
    /// reader yet takes nothing).
    fn push(&self, engine_seq: u64, engine_ts_us: i64, published: Instant, data: Utf8Bytes) {
        let pos = self.head.load(Ordering::Relaxed);
        let Some(slot) = self.slot(pos) else { return };
        slot.store(Some(Arc::new(Item {
            pos,
            engine_seq,
            engine_ts_us,
            published,
            data,
        })));
        self.head.store(pos + 1, Ordering::Release);
    }

    /// Hands `f` every message from position `from` on, in order, with how many
    /// messages right before it were overwritten before they could be read (missed).
    /// `next - from` is always `delivered + missed`.
    pub fn read(&self, from: u64, mut f: impl FnMut(&Item, u64)) -> ReadOutcome {
        let head = self.head();
        let oldest = head.saturating_sub(self.capacity());
        let start = from.max(oldest);
        let mut total = start.saturating_sub(from);
        let mut skipped = total;
        for pos in start..head {
            let guard = self.slot(pos).map(ArcSwapOption::load);
            match guard.as_ref().and_then(|g| g.as_deref()) {
                Some(item) if item.pos == pos => {
                    f(item, skipped);
                    skipped = 0;
                }
                // The writer lapped this reader while it read.
                _ => {
                    skipped += 1;
                    total += 1;
                }
            }
        }
        ReadOutcome {
            next: head.max(from),
            missed: total,
            trailing: skipped,
        }
    }
}

/// One public channel.
pub struct Channel {
    /// The channel's name as a JSON string, quotes included (`"quotes.BTCUSDT"`).
    pub name_json: Box<str>,
    notify: Arc<Notify>,
    /// The symbol as a JSON string (the `symbol` of queued snapshots).
    pub symbol_json: Box<str>,
    /// Conflated channels: the latest state.
    latest: ArcSwap<Latest>,
    /// Queued channels: the snapshot.
    history: ArcSwap<History>,
    /// Queued channels: the recent messages.
    ring: Option<Ring>,
    /// Connections subscribed: nothing is appended to the ring of a queued channel
    /// nobody reads (a new reader starts at the ring's head and takes the past from
    /// the channel's history, which is kept either way).
    readers: AtomicU64,
}

impl Channel {
    /// Latest state (conflated channels; queued ones hold an empty one).
    pub fn latest(&self) -> arc_swap::Guard<Arc<Latest>> {
        self.latest.load()
    }

    pub fn ring(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    /// Snapshot of a queued channel (conflated ones hold an empty one).
    pub fn history(&self) -> arc_swap::Guard<Arc<History>> {
        self.history.load()
    }

    /// A handle to wait on: it completes on the next publication after it was made.
    pub fn notify(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// A connection starts reading (before it reads the ring's head and snapshot).
    pub fn add_reader(&self) {
        if let Some(ring) = &self.ring {
            ring.open();
        }
        self.readers.fetch_add(1, Ordering::SeqCst);
    }

    pub fn remove_reader(&self) {
        self.readers.fetch_sub(1, Ordering::SeqCst);
    }

    fn has_readers(&self) -> bool {
        self.readers.load(Ordering::SeqCst) > 0
    }
}

/// Adds `outbox` to `key`'s list once.
fn add<K: Eq + Hash>(map: &mut HashMap<K, Vec<Arc<Outbox>>>, key: K, outbox: &Arc<Outbox>) {
    let list = map.entry(key).or_default();
    if !list.iter().any(|o| o.id == outbox.id) {
        list.push(Arc::clone(outbox));
    }
}

/// Removes outbox `id` from `key`'s list, and the list when it empties.
fn remove<K: Eq + Hash>(map: &mut HashMap<K, Vec<Arc<Outbox>>>, key: K, id: u64) {
    if let Some(list) = map.get_mut(&key) {
        list.retain(|o| o.id != id);
        if list.is_empty() {
            map.remove(&key);
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Utf8Bytes {
    // Serializing these DTOs (strings, integers, decimals) cannot fail; an empty
    // object keeps the frame valid JSON if it ever did.
    Utf8Bytes::from(serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned()))
}

fn ts_us(t: UnixNanos) -> i64 {
    micros(t).unwrap_or(0)
}

/// A bars snapshot's messages: per interval the last closed bar and the forming one.
fn bar_items(inst: &Instrument, view: &InstrumentView) -> Vec<Utf8Bytes> {
    let mut items = Vec::with_capacity(2 * BarInterval::ALL.len());
    for iv in BarInterval::ALL {
        let s = view.bars(iv);
        if let Some(b) = s.closed.back() {
            items.push(encode(&BarDto::new(inst, b, BarState::Closed)));
        }
        if let Some(b) = &s.current {
            items.push(encode(&BarDto::new(inst, b, BarState::Open)));
        }
    }
    items
}

pub struct Hub {
    channels: Box<[Channel]>,
    /// Connections with private channels, by account.
    private: RwLock<HashMap<AccountId, Vec<Arc<Outbox>>>>,
    /// Connections subscribed to `anomalies` (each filters what its caller may see).
    anomalies: RwLock<HashMap<(), Vec<Arc<Outbox>>>>,
    /// Public channel subscriptions across connections.
    subscriptions: AtomicU64,
    /// Channel publications (a snapshot swapped or a message appended) and wake-ups
    /// the fan-out thread made: its work, which must not depend on subscribers.
    pub dispatch_ops: AtomicU64,
    /// `ws_book_depth`: levels per side in book payloads.
    book_depth: usize,
    /// `trades_history`: trades in a trades snapshot.
    trades_history: usize,
    pub stats: Arc<WsStats>,
}

impl Hub {
    /// Channels for every instrument, their snapshots encoded from `mirror`; queued
    /// channels keep the last `ring_capacity` messages, trades snapshots the last
    /// `trades_history` trades.
    pub fn new(
        registry: &InstrumentRegistry,
        mirror: &Mirror,
        book_depth: usize,
        ring_capacity: usize,
        trades_history: usize,
    ) -> Self {
        let mut channels = Vec::with_capacity(registry.len() * KINDS.len());
        for i in 0..registry.len() {
            let id = InstrumentId(i as u32);
            let (inst, view) = (registry.get(id), mirror.get(id));
            for kind in KINDS {
                let name = ChannelKey { kind, instrument: id }.name(registry);
                let data = match (inst, view) {
                    (Some(inst), Some(view)) if kind == ChannelKind::Quotes => encode(&QuoteDto::new(inst, view)),
                    (Some(inst), Some(view)) if kind == ChannelKind::Book => {
                        encode(&BookDto::new(inst, view, book_depth))
                    }
                    _ => Utf8Bytes::from_static("{}"),
                };
                let history = match (inst, view) {
                    (Some(inst), Some(view)) if kind == ChannelKind::Trades => History {
                        cutoff: view.seq,
                        engine_ts_us: ts_us(view.engine_ts),
                        items: view.trades.iter().map(|t| encode(&TradeDto::new(inst, t))).collect(),
                    },
                    (Some(inst), Some(view)) if kind == ChannelKind::Bars => History {
                        cutoff: view.seq,
                        engine_ts_us: ts_us(view.engine_ts),
                        items: bar_items(inst, view),
                    },
                    _ => History::default(),
                };
                let symbol = inst.map_or("?", |i| i.symbol.as_str());
                channels.push(Channel {
                    name_json: serde_json::to_string(&name).unwrap_or_else(|_| "\"?\"".into()).into(),
                    symbol_json: serde_json::to_string(symbol).unwrap_or_else(|_| "\"?\"".into()).into(),
                    notify: Arc::new(Notify::new()),
                    latest: ArcSwap::from_pointee(Latest {
                        version: 0,
                        engine_ts_us: 0,
                        data,
                    }),
                    history: ArcSwap::from_pointee(history),
                    ring: (!kind.is_conflated()).then(|| Ring::new(ring_capacity)),
                    readers: AtomicU64::new(0),
                });
            }
        }
        Self {
            channels: channels.into(),
            private: RwLock::default(),
            anomalies: RwLock::default(),
            subscriptions: AtomicU64::new(0),
            dispatch_ops: AtomicU64::new(0),
            book_depth,
            trades_history: trades_history.max(1),
            stats: Arc::default(),
        }
    }

    fn index(key: ChannelKey) -> usize {
        key.instrument.index() * KINDS.len() + key.kind as usize
    }

    pub fn channel(&self, key: ChannelKey) -> Option<&Channel> {
        self.channels.get(Self::index(key))
    }

    /// Counts a public subscription (the `stocksblitz_ws_subscriptions` gauge).
    pub fn subscribed(&self) {
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unsubscribed(&self) {
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Routes the account's order events to `outbox` (its private channels).
    pub fn subscribe_private(&self, account: AccountId, outbox: &Arc<Outbox>) {
        add(&mut self.private.write(), account, outbox);
    }

    pub fn unsubscribe_private(&self, account: AccountId, outbox_id: u64) {
        remove(&mut self.private.write(), account, outbox_id);
    }

    pub fn subscribe_anomalies(&self, outbox: &Arc<Outbox>) {
        add(&mut self.anomalies.write(), (), outbox);
    }

    pub fn unsubscribe_anomalies(&self, outbox_id: u64) {
        remove(&mut self.anomalies.write(), (), outbox_id);
    }

    /// Hands each order event to its account's connections, and anomalies to the
    /// connections watching them.
    pub fn dispatch_private(&self, events: &[OrderEvent]) {
        let watchers = self.anomalies.read();
        if let Some(list) = watchers.get(&()) {
            for e in events.iter().filter(|e| matches!(e.data, OrderEventData::Anomaly(_))) {
                for o in list {
                    o.enqueue_private(*e);
                }
            }
        }
        let private = self.private.read();
        if private.is_empty() {
            return;
        }
        for e in events.iter().filter(|e| !matches!(e.data, OrderEventData::Anomaly(_))) {
            if let Some(list) = private.get(&e.account) {
                for o in list {
                    o.enqueue_private(*e);
                }
            }
        }
    }

    /// Closes every private channel (4008): their events can no longer be delivered
    /// without a gap.
    pub fn break_private(&self) {
        for list in self.private.read().values().chain(self.anomalies.read().values()) {
            for o in list {
                o.break_private();
            }
        }
    }

    /// Public subscriptions across all connections, for metrics.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed) as usize
    }
}

/// A change the fan-out applied to the mirror.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    pub instrument: InstrumentId,
    pub change: Change,
    /// The event also moved the instrument's data quality, which quotes and books show.
    pub quality_changed: bool,
    /// The event's engine sequence (per instrument).
    pub seq: u64,
    /// When the engine published the event.
    pub engine_ts: UnixNanos,
}

/// The fan-out thread's side of the hub: coalesces a batch's changes per channel,
/// encodes each changed payload once, publishes, and wakes each channel once.
pub struct Dispatcher {
    hub: Arc<Hub>,
    registry: Arc<InstrumentRegistry>,
    /// Per channel (by hub index): messages or updates in this batch, and the newest
    /// event's engine time.
    pending: Vec<(u64, UnixNanos)>,
    /// Per queued channel: the newest event's engine sequence in this batch.
    cut: Vec<u64>,
    /// Per instrument: the last `trades_history` encoded trades (the trades snapshot).
    trades: Vec<VecDeque<Utf8Bytes>>,
    /// This batch's queued messages (channel, engine sequence, time, payload), appended
    /// to the rings after the snapshots are published.
    queued: Vec<(usize, u64, UnixNanos, Utf8Bytes)>,
    /// Channels touched in this batch (by hub index), each once.
    touched: Vec<usize>,
    is_touched: Vec<bool>,
    /// Called after each snapshot published (tests pause the fan-out mid-batch).
    after_publish: Option<Box<dyn FnMut() + Send>>,
}

impl Dispatcher {
    pub fn new(hub: Arc<Hub>, registry: Arc<InstrumentRegistry>) -> Self {
        let n = hub.channels.len();
        let trades = (0..registry.len())
            .map(|i| {
                let key = ChannelKey {
                    kind: ChannelKind::Trades,
                    instrument: InstrumentId(i as u32),
                };
                hub.channel(key)
                    .map(|c| c.history().items.iter().cloned().collect())
                    .unwrap_or_default()
            })
            .collect();
        Self {
            hub,
            registry,
            pending: vec![(0, UnixNanos::UNKNOWN); n],
            cut: vec![0; n],
            trades,
            queued: Vec::new(),
            touched: Vec::with_capacity(n),
            is_touched: vec![false; n],
            after_publish: None,
        }
    }

    /// Calls `f` after each snapshot published, on the fan-out thread (a test pauses a
    /// batch half-way with it).
    pub fn on_publish(&mut self, f: impl FnMut() + Send + 'static) {
        self.after_publish = Some(Box::new(f));
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn touch(&mut self, i: usize) {
        if let Some(t) = self.is_touched.get_mut(i) {
            if !*t {
                *t = true;
                self.touched.push(i);
            }
        }
    }

    fn mark(&mut self, kind: ChannelKind, id: InstrumentId, at: UnixNanos) -> usize {
        let i = Hub::index(ChannelKey { kind, instrument: id });
        if let Some(p) = self.pending.get_mut(i) {
            p.0 += 1;
            if at.is_known() {
                p.1 = at;
            }
        }
        self.touch(i);
        i
    }

    /// A queued channel's message: into this batch's list and its snapshot's cut-off.
    fn queue(&mut self, kind: ChannelKind, id: InstrumentId, engine_seq: u64, at: UnixNanos, data: Utf8Bytes) {
        let i = self.mark(kind, id, at);
        if let Some(c) = self.cut.get_mut(i) {
            *c = engine_seq;
        }
        self.queued.push((i, engine_seq, at, data));
    }

    fn trade(&mut self, id: InstrumentId, t: &TradeView, at: UnixNanos) {
        let Some(inst) = self.registry.get(id) else { return };
        let data = encode(&TradeDto::new(inst, t));
        if let Some(recent) = self.trades.get_mut(id.index()) {
            if recent.len() >= self.hub.trades_history {
                recent.pop_front();
            }
            recent.push_back(data.clone());
        }
        self.queue(ChannelKind::Trades, id, t.seq, at, data);
    }

    fn bar(&mut self, id: InstrumentId, b: &Bar, state: BarState, engine_seq: u64, at: UnixNanos) {
        let Some(inst) = self.registry.get(id) else { return };
        let data = encode(&BarDto::new(inst, b, state));
        self.queue(ChannelKind::Bars, id, engine_seq, at, data);
    }

    /// Publishes a batch of changes applied to `mirror` (the fan-out holds its read
    /// lock, so the views are the batch's final state): each changed snapshot encoded
    /// once and swapped in, then the queued messages appended in order (to channels
    /// someone reads). Wake the readers with [`Dispatcher::wake`] after releasing the
    /// mirror.
    pub fn publish(&mut self, mirror: &Mirror, changes: &[Applied]) {
        for a in changes {
            let (id, at) = (a.instrument, a.engine_ts);
            match a.change {
                Change::None => {}
                Change::Quote => {
                    self.mark(ChannelKind::Quotes, id, at);
                }
                Change::Book => {
                    self.mark(ChannelKind::Book, id, at);
                }
                Change::Status => {
                    self.mark(ChannelKind::Quotes, id, at);
                    self.mark(ChannelKind::Book, id, at);
                }
                Change::Trade(t) => {
                    self.trade(id, &t, at);
                    // The quote message carries the last trade.
                    self.mark(ChannelKind::Quotes, id, at);
                }
                Change::Bar(bar, state) => self.bar(id, &bar, state, a.seq, at),
            }
            if a.quality_changed {
                // Quotes and books show the quality: refresh the ones this change did
                // not already mark.
                if !matches!(a.change, Change::Quote | Change::Trade(_) | Change::Status) {
                    self.mark(ChannelKind::Quotes, id, at);
                }
                if !matches!(a.change, Change::Book | Change::Status) {
                    self.mark(ChannelKind::Book, id, at);
                }
            }
        }
        // Snapshots first: a subscriber reads the ring's head, then the snapshot, so
        // every message before the head must be in the snapshot it then reads.
        for k in 0..self.touched.len() {
            let Some(&i) = self.touched.get(k) else { continue };
            self.publish_snapshot(mirror, i);
        }
        let now = Instant::now();
        for (i, engine_seq, at, data) in self.queued.drain(..) {
            let Some(ch) = self.hub.channels.get(i) else { continue };
            // Without readers nothing is lost: a subscriber starts at the head and
            // takes the past from the snapshot, published above.
            if let Some(ring) = ch.ring.as_ref().filter(|_| ch.has_readers()) {
                ring.push(engine_seq, ts_us(at), now, data);
                self.hub.dispatch_ops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Encodes and swaps in channel `i`'s snapshot if this batch changed it.
    fn publish_snapshot(&mut self, mirror: &Mirror, i: usize) {
        let Some(&(count, at)) = self.pending.get(i) else {
            return;
        };
        if count == 0 {
            return;
        }
        let instrument = InstrumentId((i / KINDS.len()) as u32);
        let kind = KINDS.get(i % KINDS.len()).copied().unwrap_or(ChannelKind::Quotes);
        let (Some(inst), Some(view), Some(ch)) = (
            self.registry.get(instrument),
            mirror.get(instrument),
            self.hub.channels.get(i),
        ) else {
            return;
        };
        match kind {
            ChannelKind::Quotes | ChannelKind::Book => {
                let data = match kind {
                    ChannelKind::Book => encode(&BookDto::new(inst, view, self.hub.book_depth)),
                    _ => encode(&QuoteDto::new(inst, view)),
                };
                let old = ch.latest.load();
                let engine_ts_us = if at.is_known() { ts_us(at) } else { old.engine_ts_us };
                let version = old.version + count;
                drop(old);
                ch.latest.store(Arc::new(Latest {
                    version,
                    engine_ts_us,
                    data,
                }));
            }
            ChannelKind::Trades | ChannelKind::Bars => {
                let old = ch.history.load();
                let engine_ts_us = if at.is_known() { ts_us(at) } else { old.engine_ts_us };
                drop(old);
                let items = match kind {
                    ChannelKind::Trades => self
                        .trades
                        .get(instrument.index())
                        .map(|t| t.iter().cloned().collect())
                        .unwrap_or_default(),
                    _ => bar_items(inst, view),
                };
                ch.history.store(Arc::new(History {
                    cutoff: self.cut.get(i).copied().unwrap_or(0),
                    engine_ts_us,
                    items,
                }));
            }
        }
        self.hub.dispatch_ops.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = self.pending.get_mut(i) {
            *p = (0, UnixNanos::UNKNOWN);
        }
        if let Some(f) = self.after_publish.as_mut() {
            f();
        }
    }

    /// Wakes each channel touched since the last wake once, whoever waits on it.
    pub fn wake(&mut self) {
        for i in self.touched.drain(..) {
            if let Some(ch) = self.hub.channels.get(i) {
                ch.notify.notify_waiters();
                self.hub.dispatch_ops.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(t) = self.is_touched.get_mut(i) {
                *t = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// A reader racing the writer on another thread (so the writer laps it in the
        /// middle of reads): what it gets is in order, each message once, and every
        /// message it did not get is counted missed right before the next one it got
        /// (or at the end): delivered + missed is everything published.
        #[test]
        fn a_lapped_reader_counts_exactly_what_it_missed(capacity in 1usize..16, total in 1u64..3_000) {
            let ring = Arc::new(Ring::new(capacity));
            ring.open();
            let writer = {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    for i in 0..total {
                        ring.push(i, 0, Instant::now(), Utf8Bytes::from_static("{}"));
                    }
                })
            };
            let (mut pos, mut expected, mut pending) = (0u64, 0u64, 0u64);
            let mut delivered = 0u64;
            loop {
                let done = writer.is_finished();
                let r = ring.read(pos, |item, skipped| {
                    pending += skipped;
                    assert_eq!(item.engine_seq, expected + pending, "in order, skips counted");
                    expected = item.engine_seq + 1;
                    pending = 0;
                    delivered += 1;
                });
                pending += r.trailing;
                pos = r.next;
                if done && pos == ring.head() {
                    break;
                }
                std::thread::yield_now();
            }
            writer.join().map_err(|_| proptest::test_runner::TestCaseError::fail("writer"))?;
            proptest::prop_assert_eq!(expected + pending, total);
            proptest::prop_assert!(delivered >= 1, "the newest message is always there");
            proptest::prop_assert_eq!(pos, total);
        }
    }
}
