//! Engine shards: with more than one engine node (SPEC section 7), each engine's
//! order and fill ids carry its shard number (`cluster.shard`, 0-255) in their top 8
//! bits, so ids never collide across engines and an API node can tell from an id
//! alone which engine owns it. Shard 0 gives exactly the ids a single engine always
//! gave (the bits were zero).
//!
//! The shard is configuration, not journaled state: the journal's ids already carry
//! it, so recovery checks them against the configured shard and refuses to start on
//! a journal written by another shard ([`ShardMismatch`]) instead of colliding ids.

use super::event::{OrderEvent, OrderEventData};
use super::types::OrderId;

/// Where the shard sits in an order or fill id.
pub(super) const SHARD_SHIFT: u32 = 56;

/// The engine shard that issued an order id.
pub const fn shard_of_order(id: OrderId) -> u8 {
    (id.0 >> SHARD_SHIFT) as u8
}

/// The engine shard that issued a fill id ([`super::Fill::id`]).
pub const fn shard_of_fill(id: u64) -> u8 {
    (id >> SHARD_SHIFT) as u8
}

/// The fill id of shard `shard`'s `n`th fill. `n` stays far below 2^56 (one fill a
/// nanosecond for two years); past it the count would wrap within the shard's ids.
pub const fn fill_id(shard: u8, n: u64) -> u64 {
    ((shard as u64) << SHARD_SHIFT) | (n & ((1 << SHARD_SHIFT) - 1))
}

/// The state (a recovered journal or snapshot) holds ids of another shard than the
/// one configured: continuing would issue ids that collide with the other engine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the order journal holds orders or fills of engine shard {found}, but this engine is configured as shard \
     {configured} (cluster.shard): start it with cluster.shard = {found}, or give shard {configured} a journal of \
     its own ([orders.journal] dir)"
)]
pub struct ShardMismatch {
    /// `cluster.shard` as configured now.
    pub configured: u8,
    /// The shard the state's ids were issued by.
    pub found: u8,
}

/// Refuses journaled events (a step's) that report orders or fills of another shard
/// than `configured`: replaying them would diverge at the first new id.
pub fn check_events(events: &[OrderEvent], configured: u8) -> Result<(), ShardMismatch> {
    let found = events.iter().find_map(|e| {
        let found = match e.data {
            OrderEventData::Order { order, .. } => shard_of_order(order.id),
            OrderEventData::Fill(f) => shard_of_fill(f.id),
            _ => configured,
        };
        (found != configured).then_some(found)
    });
    match found {
        Some(found) => Err(ShardMismatch { configured, found }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_bits_round_trip() {
        for shard in [0u8, 1, 7, 255] {
            for n in [1u64, 2, 1 << 40, (1 << 56) - 1] {
                let id = fill_id(shard, n);
                assert_eq!(shard_of_fill(id), shard);
                assert_eq!(id & ((1 << 56) - 1), n);
            }
            let order = OrderId((u64::from(shard) << 56) | (5 << 24) | 3);
            assert_eq!(shard_of_order(order), shard);
        }
        // Shard 0 changes nothing.
        assert_eq!(fill_id(0, 42), 42);
    }

    #[test]
    fn mismatch_names_both_shards() {
        let msg = ShardMismatch {
            configured: 3,
            found: 1,
        }
        .to_string();
        assert!(
            msg.contains("shard 1") && msg.contains("shard 3") && msg.contains("cluster.shard"),
            "{msg}"
        );
    }
}
