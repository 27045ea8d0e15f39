//! Commands into the engine's order path: what the API hands over through the bounded
//! command queue. Fixed-size and `Copy`; every command carries the API's request id so
//! the results can be routed back to the waiting caller.
//!
//! Orders sent without a `client_order_id` get one here, in the engine (`auto-<n>`
//! from a counter that is part of the journaled and snapshotted state), so generated
//! ids never repeat across restarts and replay reproduces them exactly.

use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::side::Side;
use crate::time::UnixNanos;

use super::manager::OrderManager;
use super::risk::{RiskLimits, TradingState};
use super::types::{AccountId, ClientOrderId, OrderId, OrderType, TimeInForce};

/// A new order as the client asked for it (decimals already parsed at the
/// instrument's scale; `price`/`stop_price` are zero when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewOrder {
    pub instrument: InstrumentId,
    pub client_id: ClientOrderId,
    pub side: Side,
    pub kind: OrderType,
    pub tif: TimeInForce,
    pub price: Price,
    pub stop_price: Price,
    pub qty: Qty,
    pub post_only: bool,
    pub reduce_only: bool,
}

/// Scope of a kill switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KillScope {
    Global,
    Account(AccountId),
    Instrument(InstrumentId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CommandKind {
    New(NewOrder),
    /// Full validation and risk, nothing placed.
    Test(NewOrder),
    Cancel {
        order: OrderId,
    },
    /// Change qty and/or price (`None` keeps it).
    Replace {
        order: OrderId,
        qty: Option<Qty>,
        price: Option<Price>,
    },
    /// Cancel the account's open orders (in one instrument, or all).
    MassCancel {
        instrument: Option<InstrumentId>,
    },
    /// Admin: engage (`on`) or release a kill switch; engaging cancels the open orders
    /// in scope.
    KillSwitch {
        scope: KillScope,
        on: bool,
    },
    /// Admin: replace the account's limits.
    SetLimits {
        target: AccountId,
        limits: RiskLimits,
    },
    /// The account's limits and usage, answered with an `OrderEventData::Risk`.
    QueryRisk,
    /// Admin (and surveillance): active, reduce-only, throttled or blocked.
    SetTradingState {
        target: AccountId,
        state: TradingState,
    },
}

/// An `Idempotency-Key` as the engine and the journal keep it: truncated SHA-256 of
/// the key and of the request body (the key itself stays in the API). Recovery
/// rebuilds the original answers of keyed requests from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IdemTag {
    pub key: [u8; 16],
    pub body: [u8; 16],
}

impl IdemTag {
    pub fn new(key: &str, body: &[u8]) -> Self {
        Self {
            key: digest16(key.as_bytes()),
            body: digest16(body),
        }
    }
}

fn digest16(b: &[u8]) -> [u8; 16] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Command {
    /// The API's id for the request, echoed on every event it causes.
    pub request: u64,
    /// Who is asking (orders are only ever touched by their own account).
    pub account: AccountId,
    /// When the API received it.
    pub at: UnixNanos,
    pub kind: CommandKind,
    /// The request's `Idempotency-Key`, if it had one.
    pub idempotency: Option<IdemTag>,
}

/// Prefix of the client order ids the engine generates.
pub const GENERATED_PREFIX: &str = "auto-";

/// The generated client order id number `n` (`auto-<n>`), without allocating.
pub fn generated_client_id(n: u64) -> ClientOrderId {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = n;
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || at == 0 {
            break;
        }
    }
    let mut text = [0u8; 25];
    let p = GENERATED_PREFIX.len();
    let digits = digits.get(at..).unwrap_or(&[]);
    text[..p].copy_from_slice(GENERATED_PREFIX.as_bytes());
    text[p..p + digits.len()].copy_from_slice(digits);
    core::str::from_utf8(&text[..p + digits.len()])
        .ok()
        .and_then(|s| ClientOrderId::new(s).ok())
        .unwrap_or(ClientOrderId::EMPTY)
}

impl OrderManager {
    /// `new` with a client order id: its own, or for an order sent without one the
    /// next generated id that the account does not use yet. `take` (a real order, not
    /// a test) consumes it, so it is never generated again.
    pub(super) fn with_client_id(&mut self, account: AccountId, mut new: NewOrder, take: bool) -> NewOrder {
        if !new.client_id.is_empty() {
            return new;
        }
        let mut n = self.auto_ids;
        loop {
            n = n.saturating_add(1);
            let id = generated_client_id(n);
            let key = self.client_ids.key(account, &id);
            if n == u64::MAX || self.open_client_order(key, account, &id).is_none() {
                new.client_id = id;
                break;
            }
        }
        if take {
            self.auto_ids = n;
        }
        new
    }

    /// Client order ids generated so far.
    pub fn generated_client_ids(&self) -> u64 {
        self.auto_ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_the_prefix_and_the_number() {
        for n in [0, 1, 9, 10, 12_345, u64::MAX] {
            assert_eq!(generated_client_id(n).as_str(), format!("auto-{n}"));
        }
    }
}
