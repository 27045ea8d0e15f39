//! What a journal record holds: the start of a run, or one order-manager step with
//! the events it produced. Encoded with postcard (compact, stable); variant and field
//! order are the format: append only, bump [`FORMAT_VERSION`] otherwise.

use crate::ids::InstrumentId;
use crate::orders::{OrderEvent, RiskLimits, Step};
use crate::time::UnixNanos;

/// 2: records framed with a header checksum and flags (see [`super::format`]); start
/// records apply configured limits only where the configuration changed.
pub const FORMAT_VERSION: u32 = 2;

/// Written once each time the engine opens the journal: who wrote what follows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunStart {
    pub format: u32,
    pub at: UnixNanos,
    /// The engine's version (`CARGO_PKG_VERSION`).
    pub engine: String,
    pub instruments: u32,
    pub accounts: u32,
    pub max_orders: u64,
    /// Every account's limits as the run started (from the configuration): replay
    /// applies them here, so history replays under the limits it ran with.
    pub limits: Vec<RiskLimits>,
}

/// A record as read back (and as `stocksblitz journal dump` prints it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
// Decoded off the hot path, one record at a time: the step's size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Start(RunStart),
    Step {
        step: Step,
        events: Vec<OrderEvent>,
    },
    /// The instruments the engine takes orders for from here on (`cluster.instruments`;
    /// `None`: all), written after a run's start record when the configuration differs
    /// from what the journal had (a journal that never had one owns all). Replay
    /// applies it ([`crate::orders::OrderManager::set_owned`]).
    Owned(Option<Vec<InstrumentId>>),
}

/// The same encoding as [`Record`], borrowed: the journal thread writes steps without
/// copying their events into a new vector.
#[derive(Debug, serde::Serialize)]
pub enum RecordRef<'a> {
    Start(&'a RunStart),
    Step { step: &'a Step, events: &'a [OrderEvent] },
    Owned(Option<&'a [InstrumentId]>),
}

pub fn decode(payload: &[u8]) -> Result<Record, postcard::Error> {
    postcard::from_bytes(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::{Input, OrderEventData};

    #[test]
    fn borrowed_and_owned_encodings_agree() {
        let step = Step {
            input: Input::Timer { at: UnixNanos(5) },
            market: None,
            events: 1,
            ctx: Default::default(),
        };
        let events = [OrderEvent {
            seq: 1,
            request: 0,
            account: crate::orders::AccountId(0),
            at: UnixNanos(5),
            last: true,
            data: OrderEventData::Done { count: 3 },
        }];
        let bytes = postcard::to_stdvec(&RecordRef::Step {
            step: &step,
            events: &events,
        })
        .unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            Record::Step {
                step,
                events: events.to_vec()
            }
        );
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
