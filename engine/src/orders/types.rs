//! Order identifiers, kinds and the resting order record.
//!
//! Everything here is `Copy` and fixed-size: orders live in a preallocated pool and
//! travel through rings, so no field may own heap memory (client order ids are inline
//! byte arrays, not `String`s).

use core::fmt;

use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::side::Side;
use crate::time::UnixNanos;

pub use crate::ids::AccountId;

/// Engine-assigned order id, unique for the engine's lifetime (and across restarts,
/// since the journal replays the same assignments). Ids increase with time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[repr(transparent)]
pub struct OrderId(pub u64);

/// The client's own id for an order: 1 to 36 bytes of `[A-Za-z0-9._:-]` (a UUID fits).
/// The bytes past `len` are always zero, so equality may compare them all.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientOrderId {
    len: u8,
    bytes: [u8; ClientOrderId::MAX_LEN],
}

/// Why a client order id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientOrderIdError {
    #[error("client_order_id must be 1 to 36 characters")]
    Length,
    #[error("client_order_id may contain only letters, digits, '.', '_', ':' and '-'")]
    Charset,
}

impl ClientOrderId {
    pub const MAX_LEN: usize = 36;
    pub const EMPTY: ClientOrderId = ClientOrderId {
        len: 0,
        bytes: [0; Self::MAX_LEN],
    };

    pub fn new(s: &str) -> Result<Self, ClientOrderIdError> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > Self::MAX_LEN {
            return Err(ClientOrderIdError::Length);
        }
        if !b.iter().all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c)) {
            return Err(ClientOrderIdError::Charset);
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Self {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `new`).
        core::str::from_utf8(self.bytes.get(..self.len as usize).unwrap_or(&[])).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Hashes the bytes in use (with their length), not the whole 36-byte array: the
/// client-id table hashes on every new order and every finished one.
impl core::hash::Hash for ClientOrderId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write_u8(self.len);
        state.write(self.bytes.get(..self.len as usize).unwrap_or(&[]));
    }
}

impl fmt::Debug for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Journaled as its text; the empty id (rejections of unknown orders) round-trips.
impl serde::Serialize for ClientOrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ClientOrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() {
            return Ok(ClientOrderId::EMPTY);
        }
        ClientOrderId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum OrderType {
    Limit,
    Market,
    /// Stop-market (SL-M): becomes a market order when the stop price trades.
    Stop,
    /// Stop-limit (SL): becomes a limit order when the stop price trades.
    StopLimit,
}

impl OrderType {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderType::Limit => "limit",
            OrderType::Market => "market",
            OrderType::Stop => "stop",
            OrderType::StopLimit => "stop_limit",
        }
    }

    pub const fn has_limit_price(self) -> bool {
        matches!(self, OrderType::Limit | OrderType::StopLimit)
    }

    pub const fn has_stop_price(self) -> bool {
        matches!(self, OrderType::Stop | OrderType::StopLimit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled.
    Gtc,
    /// Expires at the instrument's session close.
    Day,
    /// Immediate or cancel: fill what can be filled now, cancel the rest.
    Ioc,
    /// Fill or kill: fill all of it now or none of it.
    Fok,
    /// Good till the given time.
    Gtd(UnixNanos),
}

impl TimeInForce {
    pub const fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "gtc",
            TimeInForce::Day => "day",
            TimeInForce::Ioc => "ioc",
            TimeInForce::Fok => "fok",
            TimeInForce::Gtd(_) => "gtd",
        }
    }

    /// Never rests on a book.
    pub const fn is_immediate(self) -> bool {
        matches!(self, TimeInForce::Ioc | TimeInForce::Fok)
    }
}

/// Lifecycle state (SPEC section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum OrderStatus {
    /// Accepted, resting (or waiting for its stop to trigger), nothing filled yet.
    Open,
    PartiallyFilled,
    Filled,
    Cancelled,
    Expired,
    Rejected,
}

impl OrderStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Open => "open",
            OrderStatus::PartiallyFilled => "partially_filled",
            OrderStatus::Filled => "filled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::Rejected => "rejected",
        }
    }

    pub const fn is_open(self) -> bool {
        matches!(self, OrderStatus::Open | OrderStatus::PartiallyFilled)
    }
}

/// Where an instrument's orders execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VenueKind {
    /// Our own price-time priority book: orders match each other.
    Internal,
    /// Simulated fills against the live feed's BBO and trades.
    Paper,
}

impl VenueKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            VenueKind::Internal => "internal",
            VenueKind::Paper => "paper",
        }
    }
}

/// An order as the engine keeps it. `price` is the limit price (zero for market and
/// stop-market orders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub client_id: ClientOrderId,
    pub side: Side,
    pub kind: OrderType,
    pub tif: TimeInForce,
    pub post_only: bool,
    pub reduce_only: bool,
    pub price: Price,
    pub stop_price: Price,
    /// Current order quantity (after replaces).
    pub qty: Qty,
    pub filled: Qty,
    pub status: OrderStatus,
    /// The stop has triggered (always true for non-stop orders).
    pub triggered: bool,
    pub created: UnixNanos,
    pub updated: UnixNanos,
    /// Sum of fill price x fill qty (price scale x qty scale), for the average price.
    pub fill_cost: i128,
    /// Price used for the order's notional in risk (the limit price, or the reference
    /// price at entry for market and stop orders).
    pub notional_price: Price,
    /// Base-currency notional of the remaining quantity currently counted in the
    /// account's exposure (released exactly as it was added).
    pub reserved: i128,
    /// Highest venue trade id that filled it (paper fills are deduplicated by it).
    pub last_trade: u64,
    /// Where the engine holds it while it works.
    pub place: Placement,
}

/// Where a working order is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Placement {
    /// Not resting (being executed, or finished).
    None,
    /// In its instrument's book (internal venue: visible; paper: waiting for the market).
    Book,
    /// A stop waiting for its trigger.
    Stops,
}

impl Order {
    /// Average fill price (truncated), zero before the first fill.
    pub fn average_fill_price(&self) -> Price {
        if self.filled.0 == 0 {
            return Price(0);
        }
        Price((self.fill_cost / i128::from(self.filled.0)) as i64)
    }

    /// Quantity still working.
    #[inline]
    pub fn leaves(&self) -> Qty {
        Qty(self.qty.0 - self.filled.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::BuildHasher;
    use proptest::prelude::*;

    proptest! {
        /// Hashing only the bytes in use keeps `Hash` consistent with `Eq`: equal ids
        /// hash alike, and ids that differ (in content or length, including one a
        /// prefix of the other) hash apart.
        #[test]
        fn client_id_hash_agrees_with_equality(a in "[A-Za-z0-9._:-]{1,36}", b in "[A-Za-z0-9._:-]{1,36}") {
            let s = foldhash::fast::FixedState::with_seed(7);
            let (x, y) = (ClientOrderId::new(&a).unwrap(), ClientOrderId::new(&b).unwrap());
            prop_assert_eq!(x == y, a == b);
            prop_assert_eq!(s.hash_one((AccountId(1), x)) == s.hash_one((AccountId(1), y)), a == b);
            let prefix = ClientOrderId::new(&a[..a.len().div_ceil(2)]).unwrap();
            prop_assert_eq!(s.hash_one(prefix) == s.hash_one(x), prefix == x);
        }
    }
}
