//! Who is subscribed to what, and routing of changes to connections' outboxes.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::RwLock;
use stocksblitz_engine::orders::{AccountId, OrderEvent, OrderEventData};
use stocksblitz_engine::InstrumentId;

use super::channel::{ChannelKey, ChannelKind};
use super::outbox::{Outbox, Queued, WsStats};
use crate::market::Change;

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

#[derive(Default)]
pub struct Hub {
    subs: RwLock<HashMap<ChannelKey, Vec<Arc<Outbox>>>>,
    /// Connections with private channels, by account.
    private: RwLock<HashMap<AccountId, Vec<Arc<Outbox>>>>,
    /// Connections subscribed to `anomalies` (each filters what its caller may see).
    anomalies: RwLock<HashMap<(), Vec<Arc<Outbox>>>>,
    pub stats: Arc<WsStats>,
}

impl Hub {
    pub fn subscribe(&self, key: ChannelKey, outbox: &Arc<Outbox>) {
        add(&mut self.subs.write(), key, outbox);
    }

    pub fn unsubscribe(&self, key: ChannelKey, outbox_id: u64) {
        remove(&mut self.subs.write(), key, outbox_id);
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

    /// Subscriptions across all connections, for metrics.
    pub fn subscription_count(&self) -> usize {
        self.subs.read().values().map(Vec::len).sum()
    }

    fn for_each(subs: &HashMap<ChannelKey, Vec<Arc<Outbox>>>, key: ChannelKey, mut f: impl FnMut(&Outbox)) {
        if let Some(list) = subs.get(&key) {
            for o in list {
                f(o);
            }
        }
    }

    /// Routes a batch of mirror changes to subscribed outboxes.
    pub fn dispatch(&self, changes: &[(InstrumentId, Change)]) {
        let subs = self.subs.read();
        if subs.is_empty() {
            return;
        }
        let st = &self.stats;
        let key = |kind, instrument| ChannelKey { kind, instrument };
        for &(id, change) in changes {
            match change {
                Change::None => {}
                Change::Quote => Self::for_each(&subs, key(ChannelKind::Quotes, id), |o| {
                    o.mark(key(ChannelKind::Quotes, id), st)
                }),
                Change::Book => Self::for_each(&subs, key(ChannelKind::Book, id), |o| {
                    o.mark(key(ChannelKind::Book, id), st)
                }),
                Change::Status => {
                    for kind in [ChannelKind::Quotes, ChannelKind::Book] {
                        Self::for_each(&subs, key(kind, id), |o| o.mark(key(kind, id), st));
                    }
                }
                Change::Trade(t) => {
                    let k = key(ChannelKind::Trades, id);
                    Self::for_each(&subs, k, |o| o.enqueue(Queued::Trade(k, t), st));
                    // The quote message carries the last trade.
                    Self::for_each(&subs, key(ChannelKind::Quotes, id), |o| {
                        o.mark(key(ChannelKind::Quotes, id), st)
                    });
                }
                Change::Bar(bar, state) => {
                    let k = key(ChannelKind::Bars, id);
                    Self::for_each(&subs, k, |o| o.enqueue(Queued::Bar(k, bar, state), st));
                }
            }
        }
    }
}
