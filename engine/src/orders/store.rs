//! The read model of orders, fills and positions that the API serves, filled from the
//! order events: by the API's order fan-out thread, and at start-up from the journal
//! (journal snapshots include it, so history survives them). REST queries read it; the
//! engine is never asked. Open orders are always kept; finished ones and fills are
//! kept up to `[orders] history_per_account` per account (oldest dropped first).
//!
//! Every event costs a bounded amount of work whatever the history holds: orders are
//! indexed by arrival sequence per account and the finished ones have an index of
//! their own, so dropping the oldest finished order is a first-entry removal, not a
//! scan (a scan per event made a 10,000-order history cost ~250 µs an event, in the
//! fan-out thread and at every start-up's replay). That index is derived, so it is not
//! in snapshots: it is rebuilt when one is read.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::ids::InstrumentId;
use crate::time::UnixNanos;

use super::event::{Fill, OrderEvent, OrderEventData};
use super::position::Position;
use super::step::{Input, Step};
use super::types::{AccountId, Order, OrderId};
use crate::anomaly::Anomaly;

type Hasher = foldhash::fast::RandomState;

/// How long a keyed request's answer is kept (the API's idempotency window).
pub const KEYED_TTL_NS: i64 = 24 * 3600 * UnixNanos::NANOS_PER_SEC;

/// At most this many keyed answers are kept (the oldest go first), the same bound as
/// the API's in-process key table: memory is bounded by count, not only by the window,
/// whatever the order rate.
pub const KEYED_MAX: usize = 1_000_000;

/// A keyed request: the body it came with and the events that answered it (the
/// requester's own). The events are kept postcard-encoded, about half their size in
/// memory: answers are kept for a day, read back only when a key is retried after a
/// restart, and were most of the read model's memory. Snapshots hold them as events,
/// as before.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "KeyedWire", into = "KeyedWire")]
pub struct Keyed {
    pub body: [u8; 16],
    pub at: UnixNanos,
    events: Box<[u8]>,
}

/// [`Keyed`] as snapshots hold it. Field order and types are the snapshot format.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeyedWire {
    body: [u8; 16],
    at: UnixNanos,
    events: Vec<OrderEvent>,
}

impl Keyed {
    pub fn new(body: [u8; 16], at: UnixNanos, events: &[OrderEvent]) -> Self {
        // Encoding plain values into a growing buffer cannot fail (postcard fails only
        // on a full fixed buffer or a type it cannot represent).
        let events = postcard::to_allocvec(events).unwrap_or_default().into_boxed_slice();
        Self { body, at, events }
    }

    /// The events that answered the request.
    pub fn events(&self) -> Result<Vec<OrderEvent>, postcard::Error> {
        postcard::from_bytes(&self.events)
    }
}

impl From<KeyedWire> for Keyed {
    fn from(w: KeyedWire) -> Self {
        Self::new(w.body, w.at, &w.events)
    }
}

impl From<Keyed> for KeyedWire {
    fn from(k: Keyed) -> Self {
        // Bytes this process encoded itself decode.
        let events = k.events().unwrap_or_default();
        Self {
            body: k.body,
            at: k.at,
            events,
        }
    }
}

/// What the read model holds, counted ([`OrderStore::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    pub orders: usize,
    pub fills: usize,
    pub keyed: usize,
}

/// One order as last reported, with the API's own arrival sequence (the cursor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderRecord {
    pub seq: u64,
    pub order: Order,
}

/// The read model. Serialized (in journal snapshots) as what it keeps; the finished
/// index is rebuilt when it is read back.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(from = "Kept")]
pub struct OrderStore {
    kept: Kept,
    /// Per account, the arrival sequences of its finished orders (oldest first).
    finished: Vec<BTreeSet<u64>>,
    /// [`KEYED_MAX`], smaller in tests.
    keyed_max: usize,
}

/// What the store holds. Field order and types are the snapshot format.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Kept {
    orders: HashMap<OrderId, OrderRecord, Hasher>,
    /// Per account, order ids by arrival sequence.
    by_account: Vec<BTreeMap<u64, OrderId>>,
    fills: Vec<VecDeque<Fill>>,
    positions: HashMap<(AccountId, InstrumentId), Position, Hasher>,
    history: usize,
    /// Answers to requests that carried an `Idempotency-Key`, for 24 hours.
    keyed: HashMap<(AccountId, [u8; 16]), Keyed, Hasher>,
    /// Keyed entries oldest first, for expiry.
    keyed_order: VecDeque<(UnixNanos, AccountId, [u8; 16])>,
    /// Surveillance anomalies, oldest first, with their event sequence (the cursor of
    /// `GET /api/v1/anomalies?since=`), at most [`ANOMALIES_KEPT`].
    anomalies: VecDeque<(u64, Anomaly)>,
    /// Last engine event sequence applied (gaps would mean loss: counted, never expected).
    last_seq: u64,
    seq_gaps: u64,
}

impl From<Kept> for OrderStore {
    fn from(kept: Kept) -> Self {
        let finished = kept
            .by_account
            .iter()
            .map(|list| {
                list.iter()
                    .filter(|(_, id)| kept.orders.get(id).is_some_and(|r| !r.order.status.is_open()))
                    .map(|(seq, _)| *seq)
                    .collect()
            })
            .collect();
        Self {
            kept,
            finished,
            keyed_max: KEYED_MAX,
        }
    }
}

impl serde::Serialize for OrderStore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.kept.serialize(s)
    }
}

/// Anomalies the read model keeps (the QuestDB sink keeps them all).
pub const ANOMALIES_KEPT: usize = 10_000;

impl OrderStore {
    pub fn new(accounts: usize, history: usize) -> Self {
        Kept {
            orders: HashMap::default(),
            by_account: vec![BTreeMap::new(); accounts],
            fills: vec![VecDeque::new(); accounts],
            positions: HashMap::default(),
            history: history.max(1),
            keyed: HashMap::default(),
            keyed_order: VecDeque::new(),
            anomalies: VecDeque::new(),
            last_seq: 0,
            seq_gaps: 0,
        }
        .into()
    }

    /// Keeps at most `max` keyed answers instead of [`KEYED_MAX`] (tests).
    pub fn with_keyed_max(mut self, max: usize) -> Self {
        self.keyed_max = max.max(1);
        self
    }

    /// Keyed answers kept.
    pub fn keyed_len(&self) -> usize {
        self.kept.keyed.len()
    }

    /// How much the store holds: what its memory grows with.
    pub fn held(&self) -> Held {
        Held {
            orders: self.kept.orders.len(),
            fills: self.kept.fills.iter().map(VecDeque::len).sum(),
            keyed: self.kept.keyed.len(),
        }
    }

    /// Last engine event sequence applied.
    pub fn last_seq(&self) -> u64 {
        self.kept.last_seq
    }

    /// Event sequence gaps seen (loss upstream: counted, never expected).
    pub fn seq_gaps(&self) -> u64 {
        self.kept.seq_gaps
    }

    /// Whether a restored store has the shape of `fresh` (same accounts).
    pub fn fits(&self, fresh: &OrderStore) -> bool {
        self.kept.by_account.len() == fresh.kept.by_account.len() && self.kept.fills.len() == fresh.kept.fills.len()
    }

    /// Applies a whole step: its events, and for a keyed command, its answer.
    pub fn apply_step(&mut self, step: &Step, events: &[OrderEvent]) {
        for e in events {
            self.apply(e);
        }
        let Input::Command(cmd) = step.input else { return };
        let Some(tag) = cmd.idempotency else { return };
        let k = &mut self.kept;
        // A key answered again replaces its entry, queue position included. The API
        // replays a kept answer instead of sending its key again, so this is only a key
        // whose answer was evicted here, never a hot path: the search is fine.
        if let Some(old) = k.keyed.get(&(cmd.account, tag.key)) {
            let old = (old.at, cmd.account, tag.key);
            if let Some(p) = k.keyed_order.iter().position(|e| *e == old) {
                k.keyed_order.remove(p);
            }
            k.keyed.remove(&(cmd.account, tag.key));
        }
        // Expired answers go, and the oldest while a new one would not fit.
        while let Some(&(at, account, key)) = k.keyed_order.front() {
            let full = k.keyed.len() >= self.keyed_max;
            if !full && at.0 > cmd.at.0.saturating_sub(KEYED_TTL_NS) {
                break;
            }
            k.keyed_order.pop_front();
            if k.keyed.get(&(account, key)).is_some_and(|k| k.at == at) {
                k.keyed.remove(&(account, key));
            }
        }
        let mine: Vec<OrderEvent> = events.iter().filter(|e| e.account == cmd.account).copied().collect();
        k.keyed
            .insert((cmd.account, tag.key), Keyed::new(tag.body, cmd.at, &mine));
        k.keyed_order.push_back((cmd.at, cmd.account, tag.key));
    }

    /// The answer to an earlier request with this key, if it is still kept.
    pub fn keyed(&self, account: AccountId, key: &[u8; 16], now: UnixNanos) -> Option<&Keyed> {
        self.kept
            .keyed
            .get(&(account, *key))
            .filter(|k| k.at.0 > now.0.saturating_sub(KEYED_TTL_NS))
    }

    pub fn apply(&mut self, e: &OrderEvent) {
        let k = &mut self.kept;
        if e.seq != k.last_seq + 1 {
            k.seq_gaps += 1;
        }
        k.last_seq = e.seq;
        match e.data {
            OrderEventData::Order { order, .. } => self.apply_order(e.seq, order),
            OrderEventData::Fill(f) => {
                if let Some(list) = k.fills.get_mut(f.account.index()) {
                    list.push_back(f);
                    while list.len() > k.history {
                        list.pop_front();
                    }
                }
            }
            OrderEventData::Position { instrument, position } => {
                k.positions.insert((e.account, instrument), position);
            }
            OrderEventData::Anomaly(a) => {
                k.anomalies.push_back((e.seq, a));
                if k.anomalies.len() > ANOMALIES_KEPT {
                    k.anomalies.pop_front();
                }
            }
            _ => {}
        }
    }

    /// Records an order's new state; a finished order past the history bound drops the
    /// account's oldest finished one.
    fn apply_order(&mut self, seq: u64, order: Order) {
        let k = &mut self.kept;
        let account = order.account.index();
        let arrival = match k.orders.get_mut(&order.id) {
            Some(r) => {
                r.order = order;
                r.seq
            }
            None => {
                k.orders.insert(order.id, OrderRecord { seq, order });
                if let Some(list) = k.by_account.get_mut(account) {
                    list.insert(seq, order.id);
                }
                seq
            }
        };
        if order.status.is_open() || !k.by_account.get(account).is_some_and(|l| l.contains_key(&arrival)) {
            return;
        }
        let Some(finished) = self.finished.get_mut(account) else {
            return;
        };
        finished.insert(arrival);
        while finished.len() > k.history {
            let Some(oldest) = finished.pop_first() else { break };
            if let Some(id) = k.by_account.get_mut(account).and_then(|l| l.remove(&oldest)) {
                k.orders.remove(&id);
            }
        }
    }

    pub fn order(&self, account: AccountId, id: OrderId) -> Option<&OrderRecord> {
        self.kept.orders.get(&id).filter(|r| r.order.account == account)
    }

    /// The account's orders, newest first, with arrival sequence below `before`.
    pub fn orders(&self, account: AccountId, before: Option<u64>) -> impl Iterator<Item = &OrderRecord> {
        self.kept
            .by_account
            .get(account.index())
            .into_iter()
            .flat_map(move |l| l.range(..before.unwrap_or(u64::MAX)).rev())
            .filter_map(|(_, id)| self.kept.orders.get(id))
    }

    /// The account's fills, newest first.
    pub fn fills(&self, account: AccountId) -> impl Iterator<Item = &Fill> {
        self.kept
            .fills
            .get(account.index())
            .into_iter()
            .flat_map(|l| l.iter().rev())
    }

    /// Anomalies after event sequence `since`, oldest first.
    pub fn anomalies(&self, since: u64) -> impl DoubleEndedIterator<Item = &(u64, Anomaly)> {
        let start = self.kept.anomalies.partition_point(|(seq, _)| *seq <= since);
        self.kept.anomalies.range(start..)
    }

    pub fn positions(&self, account: AccountId) -> impl Iterator<Item = (InstrumentId, &Position)> {
        self.kept
            .positions
            .iter()
            .filter(move |((a, _), _)| *a == account)
            .map(|((_, i), p)| (*i, p))
    }
}
