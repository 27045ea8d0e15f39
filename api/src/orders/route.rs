//! Which engine a command goes to when an API node forwards to more than one, and how
//! the answers of a command sent to every engine become one.
//!
//! Instruments are owned by one engine each (its books, journal and feeds), announced
//! by the engine itself, so an API node needs no routing table of its own that could
//! disagree with the engines':
//! - a new or test order, a mass cancel of one instrument and an instrument kill
//!   switch go to the engine that owns the instrument;
//! - a cancel or an amend goes to the engine whose shard is in the order id's top 8
//!   bits (ids never collide across engines);
//! - account-wide commands (mass cancel of everything, the global and account kill
//!   switches, limits, trading state, risk usage) go to every engine. Limits are
//!   enforced by each engine on its own orders (an account's limits apply per engine);
//!   risk usage is the sum over engines.
//!
//! A command for an instrument no engine has announced yet is refused as not synced
//! (503, retry); one that no engine owns is refused as not routed (422).

use std::sync::Arc;

use stocksblitz_engine::orders::risk::{AccountRisk, TradingState};
use stocksblitz_engine::orders::{CommandKind, KillScope, OrderEvent, OrderEventData, OrderId};
use stocksblitz_engine::InstrumentId;

use super::forward::{Forward, SubmitError};

/// Where a command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// To engine `k` (in configuration order).
    One(usize),
    /// To every engine, answers merged.
    All,
}

/// The shard an order id names (its top 8 bits).
pub fn shard_of(id: OrderId) -> u8 {
    (id.0 >> 56) as u8
}

/// Where `kind` goes among `engines`.
pub fn target(engines: &[Arc<dyn Forward>], kind: &CommandKind) -> Result<Target, SubmitError> {
    if engines.len() == 1 {
        return Ok(Target::One(0));
    }
    let by_instrument = |i: InstrumentId| {
        if let Some(k) = engines.iter().position(|e| e.owns(i) == Some(true)) {
            return Ok(Target::One(k));
        }
        if engines.iter().any(|e| e.owns(i).is_none()) {
            return Err(SubmitError::NotSynced);
        }
        Err(SubmitError::NotRouted)
    };
    match *kind {
        CommandKind::New(o) | CommandKind::Test(o) => by_instrument(o.instrument),
        CommandKind::MassCancel { instrument: Some(i) }
        | CommandKind::KillSwitch {
            scope: KillScope::Instrument(i),
            ..
        } => by_instrument(i),
        CommandKind::Cancel { order } | CommandKind::Replace { order, .. } => {
            let shard = shard_of(order);
            if let Some(k) = engines.iter().position(|e| e.shard() == Some(shard)) {
                return Ok(Target::One(k));
            }
            if engines.iter().any(|e| e.shard().is_none()) {
                return Err(SubmitError::NotSynced);
            }
            // No engine has ids of that shard: the first answers that it has no such
            // order, as a single engine would.
            Ok(Target::One(0))
        }
        CommandKind::MassCancel { instrument: None }
        | CommandKind::KillSwitch { .. }
        | CommandKind::SetLimits { .. }
        | CommandKind::SetTradingState { .. }
        | CommandKind::QueryRisk => Ok(Target::All),
    }
}

/// One answer from the answers of every engine to `kind`: their events in engine order
/// (risk usage summed into one report). Any engine's refusal is the answer: the others
/// may have applied it, and a retry with the same `Idempotency-Key` applies it on the
/// rest without applying it twice anywhere.
pub fn merge(
    kind: &CommandKind,
    answers: Vec<Result<Vec<OrderEvent>, SubmitError>>,
) -> Result<Vec<OrderEvent>, SubmitError> {
    let mut events = Vec::new();
    for a in answers {
        events.extend(a?);
    }
    if matches!(kind, CommandKind::QueryRisk) {
        let mut risks = events.iter().filter_map(|e| match e.data {
            OrderEventData::Risk(r) => Some((e, r)),
            _ => None,
        });
        if let Some((first, mut sum)) = risks.next() {
            let mut first = *first;
            for (_, r) in risks {
                add_risk(&mut sum, &r);
            }
            first.data = OrderEventData::Risk(sum);
            return Ok(vec![first]);
        }
    }
    Ok(events)
}

/// How restrictive a trading state is (the most restrictive engine's is reported).
fn rank(s: TradingState) -> u8 {
    match s {
        TradingState::Active => 0,
        TradingState::Throttled => 1,
        TradingState::ReduceOnly => 2,
        TradingState::Blocked => 3,
    }
}

/// `r`'s usage added to `sum` (limits and rate buckets are the first engine's: the
/// same limits are set on every engine, and each enforces them on its own orders).
fn add_risk(sum: &mut AccountRisk, r: &AccountRisk) {
    if rank(r.state) > rank(sum.state) {
        sum.state = r.state;
    }
    sum.killed |= r.killed;
    sum.open_orders = sum.open_orders.saturating_add(r.open_orders);
    sum.open_notional = sum.open_notional.saturating_add(r.open_notional);
    sum.position_exposure = sum.position_exposure.saturating_add(r.position_exposure);
    sum.unrealized = sum.unrealized.saturating_add(r.unrealized);
    sum.marked_exposure = sum.marked_exposure.saturating_add(r.marked_exposure);
    match r.day.cmp(&sum.day) {
        std::cmp::Ordering::Greater => (sum.day, sum.realized_today) = (r.day, r.realized_today),
        std::cmp::Ordering::Equal => sum.realized_today = sum.realized_today.saturating_add(r.realized_today),
        std::cmp::Ordering::Less => {}
    }
    match r.day_24x7.cmp(&sum.day_24x7) {
        std::cmp::Ordering::Greater => (sum.day_24x7, sum.realized_today_24x7) = (r.day_24x7, r.realized_today_24x7),
        std::cmp::Ordering::Equal => {
            sum.realized_today_24x7 = sum.realized_today_24x7.saturating_add(r.realized_today_24x7)
        }
        std::cmp::Ordering::Less => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::forward::BoxFuture;
    use stocksblitz_engine::orders::{
        ClientOrderId, Command, NewOrder, OrderType, RiskLimits, SelfTradeMode, TimeInForce,
    };
    use stocksblitz_engine::{Price, Qty, Side, UnixNanos};

    /// An engine that owns `owns` (or has not been heard from: `None`).
    struct Fake {
        owns: Option<Vec<u32>>,
        shard: u8,
    }

    impl Forward for Fake {
        fn synced(&self) -> bool {
            self.owns.is_some()
        }
        fn ready(&self) -> Result<(), SubmitError> {
            Ok(())
        }
        fn tagged(&self, cmd: Command) -> Command {
            cmd
        }
        fn send(&self, _: Command, _: UnixNanos) -> BoxFuture<'_, Result<(), Option<SubmitError>>> {
            Box::pin(async { Ok(()) })
        }
        fn name(&self) -> &str {
            "fake"
        }
        fn owns(&self, i: InstrumentId) -> Option<bool> {
            self.owns.as_ref().map(|l| l.contains(&i.0))
        }
        fn shard(&self) -> Option<u8> {
            self.owns.as_ref().map(|_| self.shard)
        }
    }

    fn engines(list: &[(Option<&[u32]>, u8)]) -> Vec<Arc<dyn Forward>> {
        list.iter()
            .map(|(o, s)| {
                Arc::new(Fake {
                    owns: o.map(<[u32]>::to_vec),
                    shard: *s,
                }) as Arc<dyn Forward>
            })
            .collect()
    }

    fn new_order(i: u32) -> CommandKind {
        CommandKind::New(NewOrder {
            instrument: InstrumentId(i),
            client_id: ClientOrderId::EMPTY,
            side: Side::Buy,
            kind: OrderType::Limit,
            tif: TimeInForce::Gtc,
            price: Price(1),
            stop_price: Price(0),
            qty: Qty(1),
            post_only: false,
            reduce_only: false,
        })
    }

    fn risk() -> AccountRisk {
        AccountRisk::new(RiskLimits {
            max_order_qty: 0,
            max_order_notional: 0,
            price_collar_bps: 0,
            max_open_orders: 0,
            max_position_qty: 0,
            max_gross_exposure: 0,
            daily_loss_limit: 0,
            orders_per_sec: 0,
            cancels_per_sec: 0,
            self_trade: SelfTradeMode::CancelNewest,
        })
    }

    #[test]
    fn commands_go_to_the_owner_by_instrument_or_id_and_account_wide_ones_to_all() {
        let two = engines(&[(Some(&[0, 1]), 0), (Some(&[2]), 5)]);
        assert_eq!(target(&two, &new_order(1)), Ok(Target::One(0)));
        assert_eq!(target(&two, &new_order(2)), Ok(Target::One(1)));
        assert_eq!(target(&two, &new_order(3)), Err(SubmitError::NotRouted));
        let on_five = OrderId((5u64 << 56) | (1 << 24) | 7);
        assert_eq!(
            target(&two, &CommandKind::Cancel { order: on_five }),
            Ok(Target::One(1))
        );
        assert_eq!(
            target(
                &two,
                &CommandKind::Cancel {
                    order: OrderId((1 << 24) | 7)
                }
            ),
            Ok(Target::One(0))
        );
        assert_eq!(
            target(
                &two,
                &CommandKind::Cancel {
                    order: OrderId(9 << 56)
                }
            ),
            Ok(Target::One(0)),
            "no such shard: the first engine says not found"
        );
        assert_eq!(
            target(
                &two,
                &CommandKind::MassCancel {
                    instrument: Some(InstrumentId(2))
                }
            ),
            Ok(Target::One(1))
        );
        for all in [
            CommandKind::MassCancel { instrument: None },
            CommandKind::QueryRisk,
            CommandKind::KillSwitch {
                scope: KillScope::Global,
                on: true,
            },
        ] {
            assert_eq!(target(&two, &all), Ok(Target::All), "{all:?}");
        }
        // An engine not heard from yet: what it may own waits; what others own goes.
        let half = engines(&[(Some(&[0]), 0), (None, 1)]);
        assert_eq!(target(&half, &new_order(0)), Ok(Target::One(0)));
        assert_eq!(target(&half, &new_order(2)), Err(SubmitError::NotSynced));
        assert_eq!(
            target(
                &half,
                &CommandKind::Cancel {
                    order: OrderId(1 << 56)
                }
            ),
            Err(SubmitError::NotSynced)
        );
        // One engine: everything goes there, known or not (as before there were more).
        let one = engines(&[(None, 0)]);
        assert_eq!(target(&one, &new_order(3)), Ok(Target::One(0)));
    }

    #[test]
    fn answers_from_every_engine_merge_and_any_refusal_wins() {
        let ev = |data| OrderEvent {
            seq: 1,
            request: 1,
            account: stocksblitz_engine::orders::AccountId(0),
            at: UnixNanos(0),
            last: true,
            data,
        };
        let mut a = risk();
        a.open_orders = 2;
        a.open_notional = 100;
        a.day = 10;
        a.realized_today = 5;
        let mut b = a;
        b.open_orders = 3;
        b.state = TradingState::Blocked;
        b.realized_today = 7;
        let merged = merge(
            &CommandKind::QueryRisk,
            vec![
                Ok(vec![ev(OrderEventData::Risk(a))]),
                Ok(vec![ev(OrderEventData::Risk(b))]),
            ],
        )
        .expect("merged");
        let [e] = merged.as_slice() else {
            panic!("one report: {merged:?}")
        };
        let OrderEventData::Risk(r) = e.data else {
            panic!("a risk report")
        };
        assert_eq!(
            (r.open_orders, r.open_notional, r.realized_today, r.state),
            (5, 200, 12, TradingState::Blocked)
        );
        let mass = CommandKind::MassCancel { instrument: None };
        assert_eq!(
            merge(&mass, vec![Ok(vec![]), Err(SubmitError::Busy)]),
            Err(SubmitError::Busy)
        );
    }
}
