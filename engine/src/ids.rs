//! Dense identifiers used as array indexes on the hot path.

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
