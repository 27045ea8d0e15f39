//! Dense identifiers used as array indexes on the hot path: instruments and accounts
//! (shared by the order path, surveillance and the journal, so they live below all of
//! them).

/// An instrument's position in the registry: `0..registry.len()`. Dense so the engine
/// keeps per-instrument state in a `Vec` indexed by it, with no hashing per tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[repr(transparent)]
pub struct InstrumentId(pub u32);

impl InstrumentId {
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A trading account's position in the account registry (dense, like instruments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[repr(transparent)]
pub struct AccountId(pub u32);

impl AccountId {
    /// The subject of events about no account (market-data anomalies).
    pub const SYSTEM: AccountId = AccountId(u32::MAX);

    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}
