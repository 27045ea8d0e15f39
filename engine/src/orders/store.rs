//! The read model of orders, fills and positions that the API serves, filled from the
//! order events: by the API's order fan-out thread, and at start-up from the journal
//! (journal snapshots include it, so history survives them). REST queries read it; the
//! engine is never asked. Open orders are always kept; finished ones and fills are
//! kept up to `[orders] history_per_account` per account (oldest dropped first).

use std::collections::{HashMap, VecDeque};

use crate::ids::InstrumentId;
use crate::time::UnixNanos;

use super::event::{Fill, OrderEvent, OrderEventData};
use super::position::Position;
use super::step::{Input, Step};
use super::types::{AccountId, Order, OrderId};
use crate::anomaly::Anomaly;

/// How long a keyed request's answer is kept (the API's idempotency window).
pub const KEYED_TTL_NS: i64 = 24 * 3600 * UnixNanos::NANOS_PER_SEC;

/// A keyed request: the body it came with and the events that answered it (the
/// requester's own).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Keyed {
    pub body: [u8; 16],
    pub at: UnixNanos,
    pub events: Vec<OrderEvent>,
}

/// One order as last reported, with the API's own arrival sequence (the cursor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderRecord {
    pub seq: u64,
    pub order: Order,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OrderStore {
    orders: HashMap<OrderId, OrderRecord>,
    /// Per account, order ids in arrival order.
    by_account: Vec<VecDeque<(u64, OrderId)>>,
    fills: Vec<VecDeque<Fill>>,
    positions: HashMap<(AccountId, InstrumentId), Position>,
    history: usize,
    /// Answers to requests that carried an `Idempotency-Key`, for 24 hours.
    keyed: HashMap<(AccountId, [u8; 16]), Keyed>,
    /// Keyed entries oldest first, for expiry.
    keyed_order: VecDeque<(UnixNanos, AccountId, [u8; 16])>,
    /// Surveillance anomalies, oldest first, with their event sequence (the cursor of
    /// `GET /api/v1/anomalies?since=`), at most [`ANOMALIES_KEPT`].
    anomalies: VecDeque<(u64, Anomaly)>,
    /// Last engine event sequence applied (gaps would mean loss: counted, never expected).
    pub last_seq: u64,
    pub seq_gaps: u64,
}

/// Anomalies the read model keeps (the QuestDB sink keeps them all).
pub const ANOMALIES_KEPT: usize = 10_000;

impl OrderStore {
    pub fn new(accounts: usize, history: usize) -> Self {
        Self {
            orders: HashMap::new(),
            by_account: vec![VecDeque::new(); accounts],
            fills: vec![VecDeque::new(); accounts],
            positions: HashMap::new(),
            history: history.max(1),
            keyed: HashMap::new(),
            keyed_order: VecDeque::new(),
            anomalies: VecDeque::new(),
            last_seq: 0,
            seq_gaps: 0,
        }
    }

    /// Whether a restored store has the shape of `fresh` (same accounts).
    pub fn fits(&self, fresh: &OrderStore) -> bool {
        self.by_account.len() == fresh.by_account.len() && self.fills.len() == fresh.fills.len()
    }

    /// Applies a whole step: its events, and for a keyed command, its answer.
    pub fn apply_step(&mut self, step: &Step, events: &[OrderEvent]) {
        for e in events {
            self.apply(e);
        }
        let Input::Command(cmd) = step.input else { return };
        let Some(tag) = cmd.idempotency else { return };
        while let Some(&(at, account, key)) = self.keyed_order.front() {
            if at.0 > cmd.at.0.saturating_sub(KEYED_TTL_NS) {
                break;
            }
            self.keyed_order.pop_front();
            if self.keyed.get(&(account, key)).is_some_and(|k| k.at == at) {
                self.keyed.remove(&(account, key));
            }
        }
        let mine = events.iter().filter(|e| e.account == cmd.account).copied().collect();
        self.keyed.insert(
            (cmd.account, tag.key),
            Keyed {
                body: tag.body,
                at: cmd.at,
                events: mine,
            },
        );
        self.keyed_order.push_back((cmd.at, cmd.account, tag.key));
    }

    /// The answer to an earlier request with this key, if it is still kept.
    pub fn keyed(&self, account: AccountId, key: &[u8; 16], now: UnixNanos) -> Option<&Keyed> {
        self.keyed
            .get(&(account, *key))
            .filter(|k| k.at.0 > now.0.saturating_sub(KEYED_TTL_NS))
    }

    pub fn apply(&mut self, e: &OrderEvent) {
        if e.seq != self.last_seq + 1 {
            self.seq_gaps += 1;
        }
        self.last_seq = e.seq;
        match e.data {
            OrderEventData::Order { order, .. } => {
                match self.orders.get_mut(&order.id) {
                    Some(r) => r.order = order,
                    None => {
                        self.orders.insert(order.id, OrderRecord { seq: e.seq, order });
                        if let Some(list) = self.by_account.get_mut(order.account.index()) {
                            list.push_back((e.seq, order.id));
                        }
                    }
                }
                self.trim(order.account);
            }
            OrderEventData::Fill(f) => {
                if let Some(list) = self.fills.get_mut(f.account.index()) {
                    list.push_back(f);
                    while list.len() > self.history {
                        list.pop_front();
                    }
                }
            }
            OrderEventData::Position { instrument, position } => {
                self.positions.insert((e.account, instrument), position);
            }
            OrderEventData::Anomaly(a) => {
                self.anomalies.push_back((e.seq, a));
                if self.anomalies.len() > ANOMALIES_KEPT {
                    self.anomalies.pop_front();
                }
            }
            _ => {}
        }
    }

    /// Drops the oldest finished orders past the history bound.
    fn trim(&mut self, account: AccountId) {
        let Some(list) = self.by_account.get_mut(account.index()) else {
            return;
        };
        let mut finished = list
            .iter()
            .filter(|(_, id)| self.orders.get(id).is_some_and(|r| !r.order.status.is_open()))
            .count();
        while finished > self.history {
            let Some(pos) = list
                .iter()
                .position(|(_, id)| self.orders.get(id).is_some_and(|r| !r.order.status.is_open()))
            else {
                break;
            };
            if let Some((_, id)) = list.remove(pos) {
                self.orders.remove(&id);
            }
            finished -= 1;
        }
    }

    pub fn order(&self, account: AccountId, id: OrderId) -> Option<&OrderRecord> {
        self.orders.get(&id).filter(|r| r.order.account == account)
    }

    /// The account's orders, newest first, with arrival sequence below `before`.
    pub fn orders(&self, account: AccountId, before: Option<u64>) -> impl Iterator<Item = &OrderRecord> {
        self.by_account
            .get(account.index())
            .into_iter()
            .flat_map(|l| l.iter().rev())
            .filter(move |(seq, _)| before.is_none_or(|b| *seq < b))
            .filter_map(|(_, id)| self.orders.get(id))
    }

    /// The account's fills, newest first.
    pub fn fills(&self, account: AccountId) -> impl Iterator<Item = &Fill> {
        self.fills.get(account.index()).into_iter().flat_map(|l| l.iter().rev())
    }

    /// Anomalies after event sequence `since`, oldest first.
    pub fn anomalies(&self, since: u64) -> impl DoubleEndedIterator<Item = &(u64, Anomaly)> {
        let start = self.anomalies.partition_point(|(seq, _)| *seq <= since);
        self.anomalies.range(start..)
    }

    pub fn positions(&self, account: AccountId) -> impl Iterator<Item = (InstrumentId, &Position)> {
        self.positions
            .iter()
            .filter(move |((a, _), _)| *a == account)
            .map(|((_, i), p)| (*i, p))
    }
}
