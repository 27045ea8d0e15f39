//! The manager's durable state as bytes and back, for journal snapshots.
//!
//! The image holds what [`OrderManager::state_hash`] covers (orders, free list, books,
//! stops, accounts with their limits, trading states and kill switches, positions,
//! global and instrument kill switches, counters, the generated client id counter and
//! the limits the last run was configured with; after it, only when the engine does
//! not own every instrument, the ones it owns, so images of engines that own all are
//! what they always were). Instrument rules are not in
//! it: they come from the configuration, and a snapshot whose shapes (instruments,
//! accounts, pool size) do not match the configuration is refused, so that recovery
//! replays the journal instead of guessing.

use crate::ids::InstrumentId;
use crate::time::UnixNanos;

use super::manager::OrderManager;
use super::pool::{slot_of, OrderPool};
use super::position::Position;
use super::queue_book::{Links, QueueBook};
use super::risk::{AccountRisk, RiskLimits};
use super::types::{AccountId, ClientOrderId, OrderId};

#[derive(serde::Serialize)]
struct ImageRef<'a> {
    pool: &'a OrderPool,
    links: &'a Links,
    books: &'a [QueueBook],
    stops: &'a [Vec<OrderId>],
    accounts: &'a [AccountRisk],
    positions: &'a [Position],
    position_exposure: &'a [i128],
    client_ids: Vec<(AccountId, ClientOrderId, OrderId)>,
    global_kill: bool,
    instrument_kill: &'a [bool],
    seq: u64,
    fill_seq: u64,
    trade_seq: &'a [u64],
    next_expiry_check: UnixNanos,
    auto_ids: u64,
    configured: &'a [RiskLimits],
}

#[derive(serde::Deserialize)]
struct Image {
    pool: OrderPool,
    links: Links,
    books: Vec<QueueBook>,
    stops: Vec<Vec<OrderId>>,
    accounts: Vec<AccountRisk>,
    positions: Vec<Position>,
    position_exposure: Vec<i128>,
    client_ids: Vec<(AccountId, ClientOrderId, OrderId)>,
    global_kill: bool,
    instrument_kill: Vec<bool>,
    seq: u64,
    fill_seq: u64,
    trade_seq: Vec<u64>,
    next_expiry_check: UnixNanos,
    auto_ids: u64,
    configured: Vec<RiskLimits>,
}

/// Why an image cannot be restored into this manager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("snapshot cannot be decoded: {0}")]
    Decode(String),
    #[error("snapshot was taken with a different {0} than configured now")]
    Shape(&'static str),
}

impl OrderManager {
    /// Appends the image to `out`.
    pub fn encode_image(&self, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
        let client_ids = self.client_id_list();
        let image = ImageRef {
            pool: &self.pool,
            links: &self.links,
            books: &self.books,
            stops: &self.stops,
            accounts: &self.accounts,
            positions: &self.positions,
            position_exposure: &self.position_exposure,
            client_ids,
            global_kill: self.global_kill,
            instrument_kill: &self.instrument_kill,
            seq: self.seq,
            fill_seq: self.fill_seq,
            trade_seq: &self.trade_seq,
            next_expiry_check: self.next_expiry_check,
            auto_ids: self.auto_ids,
            configured: &self.configured,
        };
        postcard::to_io(&image, &mut *out)?;
        if let Some(owned) = self.owned() {
            postcard::to_io(&owned, out)?;
        }
        Ok(())
    }

    /// Replaces the state with an image's. Nothing changes on error. Preallocated
    /// sizes are kept, so the restored manager allocates no more than a fresh one.
    pub fn restore_image(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        let (mut img, rest): (Image, _) =
            postcard::take_from_bytes(bytes).map_err(|e| ImageError::Decode(e.to_string()))?;
        let owned: Option<Vec<InstrumentId>> = match rest {
            [] => None,
            rest => {
                Some(postcard::from_bytes(rest).map_err(|e| ImageError::Decode(format!("owned instruments: {e}")))?)
            }
        };
        if owned.iter().flatten().any(|i| i.index() >= self.rules.len()) {
            return Err(ImageError::Shape("instrument count"));
        }
        let n = self.rules.len();
        let shapes = [
            (img.pool.capacity() == self.pool.capacity(), "max_orders"),
            (img.links.capacity() == self.links.capacity(), "max_orders"),
            (img.books.len() == n && img.stops.len() == n, "instrument count"),
            (
                img.instrument_kill.len() == n && img.trade_seq.len() == n,
                "instrument count",
            ),
            (img.accounts.len() == self.accounts.len(), "account count"),
            (img.configured.len() == self.configured.len(), "account count"),
            (
                img.positions.len() == self.positions.len(),
                "account or instrument count",
            ),
            (
                img.position_exposure.len() == self.position_exposure.len(),
                "account or instrument count",
            ),
        ];
        if let Some((_, what)) = shapes.iter().find(|(ok, _)| !ok) {
            return Err(ImageError::Shape(what));
        }
        for (new, old) in img.books.iter_mut().zip(&self.books) {
            new.reserve_to(old.capacity());
        }
        for (new, old) in img.stops.iter_mut().zip(&self.stops) {
            new.reserve_exact(old.capacity().saturating_sub(new.len()));
        }
        // The table keeps only slots: every listed id must be the live order it names.
        let mut client_ids = super::client_ids::ClientIdTable::with_slots(img.pool.capacity());
        for (account, client, id) in img.client_ids {
            let live = img
                .pool
                .live_order(slot_of(id))
                .is_some_and(|o| o.id == id && o.account == account && o.client_id == client);
            if !live || !client_ids.insert(client_ids.key(account, &client), slot_of(id)) {
                return Err(ImageError::Decode(format!(
                    "client order id {client:?} of account {} does not name a live order",
                    account.0
                )));
            }
        }
        // The shard is configuration (not in the image): this manager's stays.
        let shard = self.pool.shard();
        self.pool = img.pool;
        self.pool.set_shard_unchecked(shard);
        self.links = img.links;
        self.books = img.books;
        self.stops = img.stops;
        self.accounts = img.accounts;
        self.positions = img.positions;
        self.position_exposure = img.position_exposure;
        self.client_ids = client_ids;
        self.global_kill = img.global_kill;
        self.instrument_kill = img.instrument_kill;
        self.seq = img.seq;
        self.fill_seq = img.fill_seq;
        self.trade_seq = img.trade_seq;
        self.next_expiry_check = img.next_expiry_check;
        self.auto_ids = img.auto_ids;
        self.configured = img.configured;
        self.set_owned(owned.as_deref());
        self.clear();
        Ok(())
    }

    /// The client id table as (account, client order id, order id), sorted: what
    /// images and the state hash hold.
    pub(super) fn client_id_list(&self) -> Vec<(AccountId, ClientOrderId, OrderId)> {
        let mut list: Vec<_> = self
            .client_ids
            .slots()
            .filter_map(|s| self.pool.live_order(s))
            .map(|o| (o.account, o.client_id, o.id))
            .collect();
        list.sort_unstable_by(|a, b| (a.0, a.1.as_str(), a.2).cmp(&(b.0, b.1.as_str(), b.2)));
        list
    }

    /// Every account's limits, in account order.
    pub fn limits(&self) -> Vec<RiskLimits> {
        self.accounts.iter().map(|a| a.limits).collect()
    }

    /// Starts a run configured with `configured` (every account's limits in the
    /// configuration; journaled in the run's start record and applied again when it is
    /// replayed). An account whose configured limits differ from the last run's takes
    /// them: the operator changed the configuration. The others keep the limits they
    /// have, so limits an admin set at run time (`SetLimits`) survive restarts. Returns
    /// the accounts that took the configured limits.
    pub fn start_run(&mut self, configured: &[RiskLimits]) -> Vec<AccountId> {
        let mut changed = Vec::new();
        for (i, ((acct, was), now)) in self
            .accounts
            .iter_mut()
            .zip(self.configured.iter_mut())
            .zip(configured)
            .enumerate()
        {
            if was != now {
                acct.limits = *now;
                *was = *now;
                changed.push(AccountId(i as u32));
            }
        }
        changed
    }

    /// Every account's limits as the configuration gave them when the last run started.
    pub fn configured_limits(&self) -> &[RiskLimits] {
        &self.configured
    }
}
