//! The order manager: the engine thread's order path. It owns every order, book,
//! position and account's risk usage, takes [`Command`]s, and reports
//! [`OrderEvent`]s (plus, for the internal venue, market data ticks) into buffers the
//! engine drains after each step.
//!
//! Single-threaded and allocation-free after construction: the pool, the books' level
//! vectors, the client-id index and the output buffers are all sized up front
//! (`OrderConfig`). Execution (matching, paper fills, stops) lives in
//! [`super::execution`]; order-shape validation in `super::validate`, pre-trade risk in
//! [`super::risk`]; this file is state and the command handlers.

use crate::anomaly::{Action, Anomaly};
use crate::book::Level;
use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::instrument::InstrumentRegistry;
use crate::quality::DataQuality;
use crate::session::TradingSession;
use crate::side::Side;
use crate::tick::Tick;
use crate::time::UnixNanos;

use super::client_ids::{ClientIdTable, ClientKey};
use super::command::{Command, CommandKind, KillScope, NewOrder};
use super::context::{DayClock, Depth, Mtm, StepContext};
use super::event::{CancelReason, OrderEvent, OrderEventData, OrderEventKind};
use super::pool::OrderPool;
use super::position::Position;
use super::queue_book::{Links, QueueBook};
use super::reject::Reject;
use super::risk::{AccountRisk, RiskLimits, TradingState, VALUE_SCALE};
use super::step::{Input, Step};
use super::types::{AccountId, ClientOrderId, Order, OrderId, OrderStatus, Placement, TimeInForce, VenueKind};
pub(super) use super::value::pow10 as pow10_i128;
use super::value::ToValue;

/// Per instrument: where it trades and its grid, as the order path needs them.
#[derive(Debug, Clone)]
pub struct InstrumentRules {
    pub venue: VenueKind,
    pub tick: Price,
    pub lot: Qty,
    pub price_scale: u8,
    pub qty_scale: u8,
    pub session: TradingSession,
    /// Base currency per unit of the quote currency, at [`VALUE_SCALE`].
    pub rate: i128,
    /// `rate` and the scales folded into one conversion of price x qty amounts.
    pub to_value: ToValue,
    /// The qty scale folded into one conversion of quantities to limit units
    /// ([`VALUE_SCALE`] decimals): no runtime power of ten in the checks.
    pub qty_to_value: ToValue,
}

/// The live market an instrument's orders are checked and paper-filled against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MarketRef {
    pub bid: Price,
    pub bid_qty: Qty,
    pub ask: Price,
    pub ask_qty: Qty,
    /// Last trade price; zero before the first trade.
    pub last: Price,
    /// The instrument's data quality as the engine last published it. Paper orders
    /// neither fill nor take a reference from data that is not LIVE.
    pub quality: DataQuality,
}

impl MarketRef {
    /// Last trade, else the mid, else nothing.
    pub fn reference(&self) -> Option<Price> {
        if self.last.0 > 0 {
            Some(self.last)
        } else if self.bid_qty.0 > 0 && self.ask_qty.0 > 0 {
            Some(Price((self.bid.0 + self.ask.0) / 2))
        } else {
            None
        }
    }

    /// The best opposite price and size an incoming `side` order would take.
    pub fn opposite(&self, side: Side) -> Option<(Price, Qty)> {
        let (p, q) = match side {
            Side::Buy => (self.ask, self.ask_qty),
            Side::Sell => (self.bid, self.bid_qty),
        };
        (q.0 > 0).then_some((p, q))
    }
}

/// Sizes of everything the order path preallocates.
#[derive(Debug, Clone, Copy)]
pub struct OrderCapacity {
    /// Orders the engine holds at once (open plus recently finished).
    pub orders: usize,
    /// Price levels per book side.
    pub levels: usize,
    /// Stop orders waiting per instrument.
    pub stops: usize,
    /// Seconds to add to UTC to get the accounts' trading day (19800 = IST).
    pub day_offset_secs: i64,
}

/// `[orders] day_roll_24x7_utc` default: 24x7 instruments roll at 00:00 UTC.
pub const DEFAULT_DAY_ROLL_SECS: i64 = 0;

/// `Clone` makes the journal's shadow copy (snapshots are taken from it, off the
/// engine thread).
#[derive(Clone)]
pub struct OrderManager {
    pub(super) rules: Vec<InstrumentRules>,
    pub(super) pool: OrderPool,
    pub(super) links: Links,
    pub(super) books: Vec<QueueBook>,
    pub(super) stops: Vec<Vec<OrderId>>,
    pub(super) markets: Vec<MarketRef>,
    pub(super) accounts: Vec<AccountRisk>,
    /// `account * instruments + instrument`.
    pub(super) positions: Vec<Position>,
    /// Base-currency exposure counted per position (same index as `positions`).
    pub(super) position_exposure: Vec<i128>,
    /// Open orders by (account, client order id): probed on every new order, removed
    /// when one finishes.
    pub(super) client_ids: ClientIdTable,
    pub(super) global_kill: bool,
    pub(super) instrument_kill: Vec<bool>,
    /// Per instrument: whether this engine takes its orders (`cluster.instruments`;
    /// all by default). Journaled when it changes ([`crate::journal::Record::Owned`]),
    /// in images and the state hash only when not all.
    pub(super) owned: Vec<bool>,
    pub(super) seq: u64,
    pub(super) fill_seq: u64,
    pub(super) trade_seq: Vec<u64>,
    /// Events since the last clear: the first `events_len`. As with `steps`, entries
    /// past it are kept and overwritten in place by the next events (a 240-byte event
    /// built and pushed was copied twice).
    pub(super) events: Vec<OrderEvent>,
    pub(super) events_len: usize,
    pub(super) ticks: Vec<Tick>,
    /// Internal-venue levels touched by the current step: (instrument, side, price).
    pub(super) touched: Vec<(InstrumentId, Side, Price)>,
    /// Where trading days start (accounts' day, 24x7 instruments' roll).
    pub(super) clock: DayClock,
    pub(super) next_expiry_check: UnixNanos,
    /// The request being handled (0 while reacting to the market).
    pub(super) request: u64,
    /// Instruments whose last price moved in this step: their stops are checked.
    pub(super) stop_checks: Vec<InstrumentId>,
    /// Steps since the last clear that produced events (what the journal records):
    /// the first `steps_len`. Entries past it are kept and overwritten field by field
    /// by the next steps (a step is ~560 bytes; building one and pushing it copied it
    /// twice per command).
    pub(super) steps: Vec<Step>,
    pub(super) steps_len: usize,
    /// Client order ids generated so far (`auto-<n>`, for orders sent without one).
    pub(super) auto_ids: u64,
    /// Every account's limits as the configuration gave them when the last run started.
    pub(super) configured: Vec<RiskLimits>,
    /// The depth the current command's paper order checks and sweeps against.
    pub(super) depth: Depth,
    /// The commanding account's marks for the current command.
    pub(super) mtm_now: Mtm,
    // Mark-to-market cache (live only: not in the image or the state hash; the
    // figures a decision used are journaled in the step's context instead).
    /// The reference price each instrument's positions are marked at (0: at cost).
    pub(super) marks: Vec<Price>,
    /// Per position (same index as `positions`): its part of its account's sums.
    pub(super) position_mtm: Vec<Mtm>,
    /// Per account: sums over its positions.
    pub(super) account_mtm: Vec<Mtm>,
}

/// Largest number of events one step may report before the engine must drain them.
const EVENT_BUFFER: usize = 16_384;

impl OrderManager {
    pub fn new(
        registry: &InstrumentRegistry,
        venues: &[VenueKind],
        rates: &[i128],
        accounts: &[RiskLimits],
        cap: OrderCapacity,
    ) -> Self {
        let n = registry.len();
        let rules = registry
            .iter()
            .map(|i| {
                // An instrument without a rate is in the base currency.
                let rate = rates.get(i.id.index()).copied().unwrap_or(pow10_i128(VALUE_SCALE));
                InstrumentRules {
                    venue: venues.get(i.id.index()).copied().unwrap_or(VenueKind::Paper),
                    tick: i.tick_size,
                    lot: i.lot_size,
                    price_scale: i.price_scale,
                    qty_scale: i.qty_scale,
                    session: i.session.clone(),
                    rate,
                    to_value: ToValue::new(rate, i.price_scale.saturating_add(i.qty_scale)),
                    qty_to_value: ToValue::new(pow10_i128(VALUE_SCALE), i.qty_scale),
                }
            })
            .collect();
        let pool = OrderPool::new(cap.orders);
        let slots = pool.capacity();
        Self {
            rules,
            links: Links::new(slots, super::pool::slot_mask()),
            pool,
            books: (0..n).map(|_| QueueBook::with_capacity(cap.levels)).collect(),
            stops: (0..n).map(|_| Vec::with_capacity(cap.stops)).collect(),
            markets: vec![MarketRef::default(); n],
            accounts: accounts.iter().map(|l| AccountRisk::new(*l)).collect(),
            positions: vec![Position::default(); n * accounts.len()],
            position_exposure: vec![0; n * accounts.len()],
            client_ids: ClientIdTable::with_slots(slots),
            global_kill: false,
            instrument_kill: vec![false; n],
            owned: vec![true; n],
            seq: 0,
            fill_seq: 0,
            trade_seq: vec![0; n],
            events: Vec::with_capacity(EVENT_BUFFER),
            events_len: 0,
            ticks: Vec::with_capacity(EVENT_BUFFER),
            touched: Vec::with_capacity(EVENT_BUFFER),
            clock: DayClock {
                offset_ns: cap.day_offset_secs.saturating_mul(UnixNanos::NANOS_PER_SEC),
                roll_ns: DEFAULT_DAY_ROLL_SECS,
            },
            next_expiry_check: UnixNanos(i64::MIN),
            request: 0,
            stop_checks: Vec::with_capacity(n.max(16)),
            steps: Vec::with_capacity(EVENT_BUFFER),
            steps_len: 0,
            auto_ids: 0,
            configured: accounts.to_vec(),
            depth: Depth::EMPTY,
            mtm_now: Mtm::default(),
            marks: vec![Price(0); n],
            position_mtm: vec![Mtm::default(); n * accounts.len()],
            account_mtm: vec![Mtm::default(); accounts.len()],
        }
    }

    /// Sets the UTC time of day (seconds after midnight) at which 24x7 instruments
    /// start a new trading day: their DAY orders expire then.
    pub fn set_day_roll(&mut self, secs: i64) {
        self.clock.roll_ns = secs.rem_euclid(86_400).saturating_mul(UnixNanos::NANOS_PER_SEC);
    }

    /// Takes orders only for `owned` instruments from now on (`cluster.instruments`;
    /// `None`: all). Others' new, test and replace orders and instrument mass cancels
    /// are rejected with [`Reject::InstrumentNotOnThisEngine`]; cancels of orders
    /// already open still work. It decides what history did, so the journal records
    /// each change ([`crate::journal::open`] compares the configured set with the
    /// recovered one); unknown ids are ignored.
    pub fn set_owned(&mut self, owned: Option<&[InstrumentId]>) {
        match owned {
            None => self.owned.fill(true),
            Some(list) => {
                self.owned.fill(false);
                for i in list {
                    if let Some(o) = self.owned.get_mut(i.index()) {
                        *o = true;
                    }
                }
            }
        }
    }

    /// The instruments this engine takes orders for; `None`: all of them.
    pub fn owned(&self) -> Option<Vec<InstrumentId>> {
        if self.owned.iter().all(|o| *o) {
            return None;
        }
        let ids = self.owned.iter().enumerate().filter(|(_, o)| **o);
        Some(ids.map(|(i, _)| InstrumentId(i as u32)).collect())
    }

    /// Whether this engine takes orders for `instrument`.
    #[inline]
    pub fn owns(&self, instrument: InstrumentId) -> bool {
        self.owned.get(instrument.index()) == Some(&true)
    }

    /// Makes this engine shard `shard` (`cluster.shard`): the top 8 bits of the order
    /// and fill ids it issues, and only such ids are found. Set it before the journal
    /// is recovered (replay issues the journaled ids again). Refused when the manager
    /// holds orders of another shard (a journal written under another
    /// `cluster.shard`). Shard 0 is what a single engine always was.
    pub fn set_shard(&mut self, shard: u8) -> Result<(), super::shard::ShardMismatch> {
        self.pool.set_shard(shard)
    }

    /// This engine's shard ([`set_shard`](Self::set_shard)).
    pub fn shard(&self) -> u8 {
        self.pool.shard()
    }

    /// Refuses a manager holding orders of another shard than its own (a restored
    /// snapshot of another `cluster.shard`). Scans the pool: start-up only.
    pub fn check_shard(&self) -> Result<(), super::shard::ShardMismatch> {
        let configured = self.pool.shard();
        match self.pool.foreign_shard(configured) {
            Some(found) => Err(super::shard::ShardMismatch { configured, found }),
            None => Ok(()),
        }
    }

    pub fn day_clock(&self) -> DayClock {
        self.clock
    }

    /// Records the instrument's data quality as the engine publishes it (no step: the
    /// quality is journaled with the market reference of every step that reads it).
    #[inline]
    pub fn set_quality(&mut self, instrument: InstrumentId, quality: DataQuality) {
        if let Some(m) = self.markets.get_mut(instrument.index()) {
            m.quality = quality;
        }
    }

    /// The account's positions marked to market, as the next order check sees them.
    pub fn marked(&self, account: AccountId) -> Mtm {
        self.account_mtm.get(account.index()).copied().unwrap_or_default()
    }

    // ---- read access (tests, snapshots, the API's resync) ----

    pub fn order(&self, id: OrderId) -> Option<&Order> {
        self.pool.get(id)
    }

    pub fn open_orders(&self) -> impl Iterator<Item = &Order> {
        self.pool.iter_live().filter(|o| o.status.is_open())
    }

    pub fn position(&self, account: AccountId, instrument: InstrumentId) -> Option<&Position> {
        self.positions.get(self.position_index(account, instrument)?)
    }

    pub fn account(&self, account: AccountId) -> Option<&AccountRisk> {
        self.accounts.get(account.index())
    }

    pub fn market(&self, instrument: InstrumentId) -> Option<&MarketRef> {
        self.markets.get(instrument.index())
    }

    pub fn book(&self, instrument: InstrumentId) -> Option<&QueueBook> {
        self.books.get(instrument.index())
    }

    /// Calls `f(order id, price, remaining qty)` for the instrument's resting orders on
    /// `side`, best price first, in time priority within a price.
    pub fn for_each_resting(&self, instrument: InstrumentId, side: Side, mut f: impl FnMut(OrderId, Price, Qty)) {
        let Some(book) = self.books.get(instrument.index()) else {
            return;
        };
        for level in book.levels(side) {
            let mut next = QueueBook::head(level);
            while let Some(id) = next {
                if let Some(o) = self.pool.get(id) {
                    f(id, level.price, o.leaves());
                }
                next = QueueBook::next(&self.links, id);
            }
        }
    }

    pub fn rules(&self, instrument: InstrumentId) -> Option<&InstrumentRules> {
        self.rules.get(instrument.index())
    }

    /// Events produced since the last [`clear`](Self::clear).
    pub fn events(&self) -> &[OrderEvent] {
        self.events.get(..self.events_len).unwrap_or(&[])
    }

    /// Internal-venue market data produced since the last clear.
    pub fn ticks(&self) -> &[Tick] {
        &self.ticks
    }

    /// The steps behind [`events`](Self::events), in order: each step's events follow
    /// the previous step's.
    pub fn steps(&self) -> &[Step] {
        self.steps.get(..self.steps_len).unwrap_or(&[])
    }

    pub fn clear(&mut self) {
        self.events_len = 0;
        self.ticks.clear();
        self.steps_len = 0;
    }

    /// Records a step that started with `before` events buffered, if it produced any.
    #[inline]
    pub(super) fn record_step(&mut self, input: Input, market: Option<(InstrumentId, MarketRef)>, before: usize) {
        let events = self.event_count().saturating_sub(before);
        if events == 0 {
            return;
        }
        let command = matches!(input, Input::Command(_));
        let (mtm, clock) = (self.mtm_now, self.clock);
        match self.steps.get_mut(self.steps_len) {
            Some(step) => {
                step.input = input;
                step.market = market;
                step.events = events as u32;
                if command {
                    step.ctx.depth.assign(&self.depth);
                } else {
                    step.ctx.depth.clear();
                }
                step.ctx.mtm = mtm;
                step.ctx.clock = clock;
            }
            None => self.steps.push(Step {
                input,
                market,
                events: events as u32,
                ctx: StepContext {
                    depth: if command { self.depth } else { Depth::EMPTY },
                    mtm,
                    clock,
                },
            }),
        }
        self.steps_len += 1;
    }

    /// The market a step on `instrument` starts from (journaled with the step).
    pub(super) fn market_before(&self, instrument: InstrumentId) -> Option<(InstrumentId, MarketRef)> {
        self.markets.get(instrument.index()).map(|m| (instrument, *m))
    }

    /// The instrument whose market a command may read.
    fn command_instrument(&self, cmd: &Command) -> Option<InstrumentId> {
        match cmd.kind {
            CommandKind::New(n) | CommandKind::Test(n) => Some(n.instrument),
            CommandKind::Replace { order, .. } | CommandKind::Cancel { order } => {
                self.pool.get(order).map(|o| o.instrument)
            }
            _ => None,
        }
    }

    /// Re-runs a journaled step: restores the market it saw, then handles its input
    /// exactly as the live engine did. The caller compares the events.
    pub fn replay(&mut self, step: &Step) {
        if let Some((id, m)) = step.market {
            if let Some(slot) = self.markets.get_mut(id.index()) {
                *slot = m;
            }
            self.remark(id);
        }
        // The step's own day clock; this run's configuration comes back after it.
        let clock = self.clock;
        self.clock = step.ctx.clock;
        match step.input {
            Input::Command(cmd) => {
                self.depth = step.ctx.depth;
                self.mtm_now = step.ctx.mtm;
                self.run_command(&cmd);
            }
            Input::Quote {
                instrument,
                bid,
                bid_qty,
                ask,
                ask_qty,
                at,
            } => self.on_quote(instrument, bid, bid_qty, ask, ask_qty, at),
            Input::Trade {
                instrument,
                price,
                qty,
                trade_id,
                at,
            } => self.on_trade(instrument, price, qty, trade_id, at),
            Input::Timer { at } => {
                // The live engine passed the 100 ms gate at this time.
                self.next_expiry_check = at;
                self.on_timer(at);
            }
            Input::Anomaly(a) => self.apply_anomaly(&a),
        }
        self.clock = clock;
    }

    /// Reports a surveillance anomaly and applies its action to the account: throttle
    /// (a tenth of its order rate), block new orders, or its kill switch (cancelling
    /// its open orders). Never relaxes a stricter state; admins clear it.
    pub fn apply_anomaly(&mut self, a: &Anomaly) {
        let before = self.event_count();
        let account = a.account.unwrap_or(AccountId::SYSTEM);
        self.emit(account, a.at, OrderEventData::Anomaly(*a));
        if let Some(acct) = a.account.and_then(|id| self.accounts.get_mut(id.index())) {
            match a.action {
                Action::Alert => {}
                Action::Throttle => {
                    if matches!(acct.state, TradingState::Active | TradingState::ReduceOnly) {
                        acct.state = TradingState::Throttled;
                    }
                }
                Action::Block => acct.state = TradingState::Blocked,
                Action::Kill => {
                    acct.killed = true;
                    let id = account;
                    self.cancel_where(CancelReason::KillSwitch, a.at, |o| o.account == id);
                }
            }
        }
        self.record_step(Input::Anomaly(*a), None, before);
    }

    /// Room left in the event buffer: the engine only takes a command when a worst
    /// case step still fits.
    pub fn headroom(&self) -> usize {
        EVENT_BUFFER.saturating_sub(self.event_count())
    }

    pub(super) fn position_index(&self, account: AccountId, instrument: InstrumentId) -> Option<usize> {
        (account.index() < self.accounts.len() && instrument.index() < self.rules.len())
            .then(|| account.index() * self.rules.len() + instrument.index())
    }

    /// The account's open order with `client_id` (`key` is their hash), if any.
    pub(super) fn open_client_order(
        &self,
        key: ClientKey,
        account: AccountId,
        client_id: &ClientOrderId,
    ) -> Option<OrderId> {
        let pool = &self.pool;
        let slot = self.client_ids.find(key, |s| {
            pool.live_order(s)
                .is_some_and(|o| o.account == account && o.client_id == *client_id)
        })?;
        pool.live_order(slot).map(|o| o.id)
    }

    // ---- event helpers ----

    /// Events buffered since the last clear.
    #[inline]
    pub(super) fn event_count(&self) -> usize {
        self.events_len
    }

    #[inline]
    pub(super) fn emit(&mut self, account: AccountId, at: UnixNanos, data: OrderEventData) {
        self.seq += 1;
        let (seq, request) = (self.seq, self.request);
        match self.events.get_mut(self.events_len) {
            Some(e) => {
                e.seq = seq;
                e.request = request;
                e.account = account;
                e.at = at;
                e.last = false;
                e.data = data;
            }
            None => self.events.push(OrderEvent {
                seq,
                request,
                account,
                at,
                last: false,
                data,
            }),
        }
        self.events_len += 1;
    }

    /// Reports the order as it is now (copied once, from its pool slot into the event).
    pub(super) fn emit_order(&mut self, kind: OrderEventKind, id: OrderId, at: UnixNanos) {
        let Some(order) = self.pool.get(id) else { return };
        self.seq += 1;
        let (seq, request) = (self.seq, self.request);
        match self.events.get_mut(self.events_len) {
            Some(e) => {
                e.seq = seq;
                e.request = request;
                e.account = order.account;
                e.at = at;
                e.last = false;
                e.data = OrderEventData::Order { kind, order: *order };
            }
            None => self.events.push(OrderEvent {
                seq,
                request,
                account: order.account,
                at,
                last: false,
                data: OrderEventData::Order { kind, order: *order },
            }),
        }
        self.events_len += 1;
    }

    /// Reports a refused command. `order` is the order id the command named (also when
    /// no such order is the account's: the client sees the id it sent); the order's
    /// instrument and client id are only read from the account's own order.
    fn reject(&mut self, cmd: &Command, reject: Reject, new: Option<&NewOrder>, order: Option<OrderId>) {
        let own = order
            .and_then(|id| self.pool.get(id))
            .filter(|o| o.account == cmd.account);
        let (instrument, client_id) = match (new, own) {
            (Some(n), _) => (Some(n.instrument), n.client_id),
            (None, Some(o)) => (Some(o.instrument), o.client_id),
            (None, None) => (None, ClientOrderId::EMPTY),
        };
        self.emit(
            cmd.account,
            cmd.at,
            OrderEventData::Rejected {
                reject,
                instrument,
                client_id,
                order,
            },
        );
    }

    /// Base-currency value (at [`VALUE_SCALE`]) of `qty` at `price` in `instrument`.
    pub fn notional(&self, instrument: InstrumentId, price: Price, qty: Qty) -> i128 {
        let Some(r) = self.rules.get(instrument.index()) else {
            return 0;
        };
        r.to_value.of(i128::from(price.0) * i128::from(qty.0))
    }

    /// Quantity in limit units ([`VALUE_SCALE`] decimals).
    pub(super) fn qty_value(&self, instrument: InstrumentId, qty: i128) -> i128 {
        let Some(r) = self.rules.get(instrument.index()) else {
            return 0;
        };
        r.qty_to_value.of(qty)
    }

    /// A price x qty amount (price scale + qty scale) in base currency at VALUE_SCALE.
    pub(super) fn amount_value(&self, instrument: InstrumentId, amount: i128) -> i128 {
        let Some(r) = self.rules.get(instrument.index()) else {
            return 0;
        };
        r.to_value.of(amount)
    }

    pub(super) fn trading_day(&self, now: UnixNanos) -> i64 {
        self.clock.account_day(now.0)
    }

    // ---- commands ----

    /// Handles one command; its events are appended to [`events`](Self::events), the
    /// last one flagged `last`. A paper order sees only the best bid/offer; the
    /// engine passes its visible depth with [`handle_with_depth`](Self::handle_with_depth).
    pub fn handle(&mut self, cmd: &Command) {
        self.handle_with_depth(cmd, &[]);
    }

    /// Starts loading what `cmd` will touch first and is least likely to be cached (a
    /// new order's client-id bucket, a cancel's or replace's pooled order) without
    /// waiting for it. The engine calls it for the next command in its ring before it
    /// handles the current one, so those misses overlap the current command's work
    /// (BENCHMARKS.md, order path). A hint only: state and results do not change.
    #[inline]
    pub fn prefetch(&self, cmd: &Command) {
        match &cmd.kind {
            CommandKind::New(n) | CommandKind::Test(n) => self.prefetch_new(cmd.account, &n.client_id),
            CommandKind::Cancel { order } | CommandKind::Replace { order, .. } => self.prefetch_order(*order),
            _ => {}
        }
    }

    /// [`prefetch`](Self::prefetch) for a new order by `account` with `client_id`.
    #[inline]
    pub fn prefetch_new(&self, account: AccountId, client_id: &ClientOrderId) {
        self.client_ids.prefetch(self.client_ids.key(account, client_id));
    }

    /// [`prefetch`](Self::prefetch) for a command about the pooled order `id`.
    #[inline]
    pub fn prefetch_order(&self, id: OrderId) {
        self.pool.prefetch(id);
    }

    /// Which visible book side a command's paper order may take from: the instrument
    /// and the side of the book (asks for a buy). `None` for everything else.
    pub fn depth_side(&self, cmd: &Command) -> Option<(InstrumentId, Side)> {
        let (instrument, side) = self.command_order_side(cmd)?;
        let paper = self.rules.get(instrument.index())?.venue == VenueKind::Paper;
        paper.then_some((instrument, side.opposite()))
    }

    fn command_order_side(&self, cmd: &Command) -> Option<(InstrumentId, Side)> {
        match cmd.kind {
            CommandKind::New(n) | CommandKind::Test(n) => Some((n.instrument, n.side)),
            CommandKind::Replace { order, .. } => self
                .pool
                .get(order)
                .filter(|o| o.account == cmd.account)
                .map(|o| (o.instrument, o.side)),
            _ => None,
        }
    }

    /// [`handle`](Self::handle) with the instrument's visible levels on the side the
    /// order would take (from [`depth_side`](Self::depth_side), best first): paper
    /// orders sweep them level by level, within their limit and the price collar.
    /// What was used is journaled with the step.
    pub fn handle_with_depth(&mut self, cmd: &Command, book: &[Level]) {
        // Only paper orders take from the feed's depth (the internal venue has its own
        // book in the manager).
        let paper = self
            .command_order_side(cmd)
            .filter(|(i, _)| self.rules.get(i.index()).is_some_and(|r| r.venue == VenueKind::Paper));
        match (paper, cmd.kind) {
            (Some((instrument, side)), CommandKind::Replace { order, price, .. }) => {
                let limit = self
                    .pool
                    .get(order)
                    .and_then(|o| o.kind.has_limit_price().then(|| price.unwrap_or(o.price)));
                self.depth = self.capture_depth(cmd.account, instrument, side, limit, book);
            }
            (Some((instrument, side)), CommandKind::New(n) | CommandKind::Test(n)) => {
                let limit = n.kind.has_limit_price().then_some(n.price);
                self.depth = self.capture_depth(cmd.account, instrument, side, limit, book);
            }
            _ => self.depth.clear(),
        }
        self.mtm_now = self.marked(cmd.account);
        self.run_command(cmd);
    }

    fn run_command(&mut self, cmd: &Command) {
        self.request = cmd.request;
        let before = self.event_count();
        let market = self.command_instrument(cmd).and_then(|i| self.market_before(i));
        match cmd.kind {
            CommandKind::New(new) => {
                let new = self.with_client_id(cmd.account, new, true);
                self.place(cmd, &new, false)
            }
            CommandKind::Test(new) => {
                let new = self.with_client_id(cmd.account, new, false);
                self.place(cmd, &new, true)
            }
            CommandKind::Cancel { order } => self.cancel_cmd(cmd, order),
            CommandKind::Replace { order, qty, price } => self.replace(cmd, order, qty, price),
            CommandKind::MassCancel { instrument } => self.mass_cancel(cmd, instrument),
            CommandKind::KillSwitch { scope, on } => self.kill_switch(cmd, scope, on),
            CommandKind::SetLimits { target, limits } => match self.accounts.get_mut(target.index()) {
                Some(a) => {
                    a.limits = limits;
                    self.emit(cmd.account, cmd.at, OrderEventData::Done { count: 0 });
                }
                None => self.reject(cmd, Reject::UnknownAccount, None, None),
            },
            CommandKind::QueryRisk => {
                let day = self.trading_day(cmd.at);
                let day_24x7 = self.clock.day_24x7(cmd.at.0);
                match self.accounts.get_mut(cmd.account.index()) {
                    Some(a) => {
                        a.roll_day(day);
                        a.roll_day_24x7(day_24x7);
                        let mut risk = *a;
                        risk.unrealized = self.mtm_now.unrealized;
                        risk.marked_exposure = self.mtm_now.exposure;
                        self.emit(cmd.account, cmd.at, OrderEventData::Risk(risk));
                    }
                    None => self.reject(cmd, Reject::UnknownAccount, None, None),
                }
            }
            CommandKind::SetTradingState { target, state } => match self.accounts.get_mut(target.index()) {
                Some(a) => {
                    a.state = state;
                    self.emit(cmd.account, cmd.at, OrderEventData::Done { count: 0 });
                }
                None => self.reject(cmd, Reject::UnknownAccount, None, None),
            },
        }
        self.finish_step(cmd.at);
        if self.event_count() == before {
            // Every command answers; this only guards the invariant.
            self.emit(cmd.account, cmd.at, OrderEventData::Done { count: 0 });
        }
        if let Some(last) = self.events_len.checked_sub(1).and_then(|i| self.events.get_mut(i)) {
            last.last = true;
        }
        self.request = 0;
        self.record_step(Input::Command(*cmd), market, before);
        self.depth.clear();
        self.mtm_now = Mtm::default();
    }

    /// Every check a new order must pass, in a fixed order (cheap and structural
    /// first): its shape and whether it may trade ([`validate`](super::validate)),
    /// pre-trade risk ([`risk`](super::risk)), then a unique client id, the book's
    /// liquidity right now and a free slot. Constant time. Does not change state except
    /// the rate bucket when `take_rate`. Returns the price its notional counts at.
    fn check_new(
        &mut self,
        cmd: &Command,
        new: &NewOrder,
        key: ClientKey,
        take_rate: bool,
        new_slot: bool,
    ) -> Result<Price, Reject> {
        let market = self.validate_order(cmd, new)?;
        let notional_price = self.check_risk(cmd, new, &market, take_rate)?;
        self.check_unique_client_id(cmd, new, key)?;
        self.check_liquidity(cmd.account, new)?;
        // A replace keeps its slot: only a new order needs a free one.
        if new_slot && self.pool.next_id().is_none() {
            return Err(Reject::EngineCapacity);
        }
        Ok(notional_price)
    }

    fn place(&mut self, cmd: &Command, new: &NewOrder, dry_run: bool) {
        // Hashed once: the uniqueness check and the insert share it.
        let key = self.client_ids.key(cmd.account, &new.client_id);
        let notional_price = match self.check_new(cmd, new, key, !dry_run, true) {
            Ok(p) => p,
            Err(r) => return self.reject(cmd, r, Some(new), None),
        };
        if dry_run {
            return self.emit(
                cmd.account,
                cmd.at,
                OrderEventData::TestPassed {
                    instrument: new.instrument,
                },
            );
        }
        let order = Order {
            id: OrderId(0),
            account: cmd.account,
            instrument: new.instrument,
            client_id: new.client_id,
            side: new.side,
            kind: new.kind,
            tif: new.tif,
            post_only: new.post_only,
            reduce_only: new.reduce_only,
            price: new.price,
            stop_price: new.stop_price,
            qty: new.qty,
            filled: Qty(0),
            status: OrderStatus::Open,
            triggered: !new.kind.has_stop_price(),
            created: cmd.at,
            updated: cmd.at,
            fill_cost: 0,
            notional_price,
            reserved: 0,
            last_trade: 0,
            place: Placement::None,
        };
        let Some(id) = self.pool.insert(order) else {
            return self.reject(cmd, Reject::EngineCapacity, Some(new), None);
        };
        self.client_ids.insert(key, super::pool::slot_of(id));
        if let Some(a) = self.accounts.get_mut(cmd.account.index()) {
            a.open_orders += 1;
        }
        self.reserve(id);
        self.emit_order(OrderEventKind::Accepted, id, cmd.at);
        self.work(id, cmd.at);
    }

    fn cancel_cmd(&mut self, cmd: &Command, id: OrderId) {
        let Some(status) = self.pool.get(id).filter(|o| o.account == cmd.account).map(|o| o.status) else {
            return self.reject(cmd, Reject::OrderNotFound, None, Some(id));
        };
        if !status.is_open() {
            return self.reject(cmd, Reject::OrderNotOpen, None, Some(id));
        }
        let rate = self
            .accounts
            .get(cmd.account.index())
            .map_or(1, |a| a.limits.cancels_per_sec);
        if let Some(a) = self.accounts.get_mut(cmd.account.index()) {
            if !a.cancels.try_take(cmd.at, rate) {
                return self.reject(cmd, Reject::CancelRate, None, Some(id));
            }
        }
        self.cancel(id, CancelReason::User, cmd.at);
    }

    fn replace(&mut self, cmd: &Command, id: OrderId, qty: Option<Qty>, price: Option<Price>) {
        let Some(order) = self.pool.get(id).copied().filter(|o| o.account == cmd.account) else {
            return self.reject(cmd, Reject::OrderNotFound, None, Some(id));
        };
        let checked = replacement(&order, qty, price).and_then(|(new_qty, new_price)| {
            self.check_replacement(cmd, id, &order, new_qty, new_price)?;
            Ok((new_qty, new_price))
        });
        match checked {
            Ok((new_qty, new_price)) => self.apply_replace(cmd, id, &order, new_qty, new_price),
            Err(r) => self.reject(cmd, r, None, Some(id)),
        }
    }

    /// The replacement must pass the same checks as a new order for its size and
    /// price (the old order's own reservation and open-order count do not count
    /// against it). On success the old reservation stays released.
    fn check_replacement(
        &mut self,
        cmd: &Command,
        id: OrderId,
        order: &Order,
        new_qty: Qty,
        new_price: Price,
    ) -> Result<(), Reject> {
        let as_new = NewOrder {
            instrument: order.instrument,
            client_id: ClientOrderId::EMPTY,
            side: order.side,
            kind: order.kind,
            tif: order.tif,
            price: new_price,
            stop_price: order.stop_price,
            qty: Qty(new_qty.0 - order.filled.0),
            post_only: order.post_only,
            reduce_only: order.reduce_only,
        };
        self.unreserve(id);
        if let Some(a) = self.accounts.get_mut(cmd.account.index()) {
            a.open_orders -= 1;
        }
        let key = self.client_ids.key(cmd.account, &as_new.client_id);
        let checked = self.check_new(cmd, &as_new, key, true, false);
        if let Some(a) = self.accounts.get_mut(cmd.account.index()) {
            a.open_orders += 1;
        }
        if checked.is_err() {
            self.reserve(id);
        }
        checked.map(|_| ())
    }

    /// Applies a checked replace: a smaller quantity at the same price keeps the
    /// order's place in the queue; anything else takes it off the book and works it
    /// again as if new.
    fn apply_replace(&mut self, cmd: &Command, id: OrderId, order: &Order, new_qty: Qty, new_price: Price) {
        let keeps_priority = new_price == order.price && new_qty.0 < order.qty.0;
        let resting = order.place == Placement::Book;
        if resting {
            if keeps_priority {
                if let Some(book) = self.books.get_mut(order.instrument.index()) {
                    book.reduce(order.side, order.price, Qty(order.qty.0 - new_qty.0));
                }
                self.touch(order.instrument, order.side, order.price);
            } else {
                self.unrest(id);
            }
        }
        if let Some(o) = self.pool.get_mut(id) {
            o.qty = new_qty;
            o.price = new_price;
            if o.kind.has_limit_price() {
                o.notional_price = new_price;
            }
            o.updated = cmd.at;
        }
        self.reserve(id);
        self.emit_order(OrderEventKind::Replaced, id, cmd.at);
        if resting && !keeps_priority {
            self.work(id, cmd.at);
        }
    }

    fn mass_cancel(&mut self, cmd: &Command, instrument: Option<InstrumentId>) {
        if self.accounts.get(cmd.account.index()).is_none() {
            return self.reject(cmd, Reject::UnknownAccount, None, None);
        }
        if let Some(i) = instrument.filter(|i| !self.owns(*i)) {
            // An unknown instrument cancels nothing, as before.
            if self.rules.get(i.index()).is_some() {
                return self.reject(cmd, Reject::InstrumentNotOnThisEngine, None, None);
            }
        }
        let count = self.cancel_where(CancelReason::Mass, cmd.at, |o| {
            o.account == cmd.account && instrument.is_none_or(|i| o.instrument == i)
        });
        self.emit(cmd.account, cmd.at, OrderEventData::Done { count });
    }

    fn kill_switch(&mut self, cmd: &Command, scope: KillScope, on: bool) {
        match scope {
            KillScope::Global => self.global_kill = on,
            KillScope::Account(a) => match self.accounts.get_mut(a.index()) {
                Some(acct) => acct.killed = on,
                None => return self.reject(cmd, Reject::UnknownAccount, None, None),
            },
            KillScope::Instrument(i) => match self.instrument_kill.get_mut(i.index()) {
                Some(k) => *k = on,
                None => return self.reject(cmd, Reject::UnknownInstrument, None, None),
            },
        }
        let count = if on {
            self.cancel_where(CancelReason::KillSwitch, cmd.at, |o| match scope {
                KillScope::Global => true,
                KillScope::Account(a) => o.account == a,
                KillScope::Instrument(i) => o.instrument == i,
            })
        } else {
            0
        };
        self.emit(cmd.account, cmd.at, OrderEventData::Done { count });
    }

    /// Cancels every open order matching `pred`; returns how many.
    fn cancel_where(&mut self, reason: CancelReason, at: UnixNanos, pred: impl Fn(&Order) -> bool) -> u32 {
        let mut count = 0;
        // Walk by slot so cancelling (which frees slots) cannot disturb the walk.
        for slot in 0..self.pool.capacity() {
            let Some(id) = self.pool.live_id(slot) else { continue };
            let Some(order) = self.pool.get(id).copied() else {
                continue;
            };
            if order.status.is_open() && pred(&order) {
                self.cancel(id, reason, at);
                count += 1;
            }
        }
        count
    }

    /// Time-driven work: expiries (DAY at session close, GTD at its time), checked
    /// every 100 ms.
    pub fn on_timer(&mut self, now: UnixNanos) {
        if now < self.next_expiry_check {
            return;
        }
        let before = self.event_count();
        self.next_expiry_check = now.saturating_add_nanos(100 * UnixNanos::NANOS_PER_MILLI);
        for slot in 0..self.pool.capacity() {
            let Some(id) = self.pool.live_id(slot) else { continue };
            let Some(order) = self.pool.get(id).copied() else {
                continue;
            };
            if !order.status.is_open() {
                continue;
            }
            let expired = match order.tif {
                TimeInForce::Gtd(t) => t <= now,
                // Sessions expire DAY orders at their close; 24x7 instruments at
                // the day roll.
                TimeInForce::Day => self
                    .rules
                    .get(order.instrument.index())
                    .is_some_and(|r| match r.session {
                        TradingSession::Always => self.clock.day_24x7(now.0) != self.clock.day_24x7(order.created.0),
                        TradingSession::Daily { .. } => !r.session.is_open(now),
                    }),
                _ => false,
            };
            if expired {
                self.finish(id, OrderStatus::Expired, OrderEventKind::Expired, now);
            }
        }
        self.finish_step(now);
        self.record_step(Input::Timer { at: now }, None, before);
    }
}

/// The quantity and price a replace asks for (unchanged where not given), if the open
/// order may change that way: something changes, a price only where the type has one,
/// and more than what has filled.
fn replacement(order: &Order, qty: Option<Qty>, price: Option<Price>) -> Result<(Qty, Price), Reject> {
    if !order.status.is_open() {
        return Err(Reject::OrderNotOpen);
    }
    let new_qty = qty.unwrap_or(order.qty);
    let new_price = price.unwrap_or(order.price);
    if new_qty == order.qty && new_price == order.price {
        return Err(Reject::ReplaceNoChange);
    }
    if price.is_some() && !order.kind.has_limit_price() {
        return Err(Reject::UnexpectedPrice);
    }
    if new_qty.0 <= order.filled.0 {
        return Err(Reject::ReplaceBelowFilled);
    }
    Ok((new_qty, new_price))
}
