//! Data-quality state: how far a consumer may trust an instrument's market data.
//!
//! The state travels in-band with every engine output event, so a UI, a strategy or
//! the risk checks never act on a book that is resyncing, gapped or crossed without
//! knowing it.

/// Per-instrument data quality, most severe first in [`DataQuality::derive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum DataQuality {
    /// Waiting for the first snapshot or quote after start-up or a resync.
    #[default]
    Syncing = 0,
    /// Data is flowing and consistent.
    Live = 1,
    /// Connected but nothing has arrived for longer than the stale threshold.
    Stale = 2,
    /// The feed reported a sequence gap; the book is not trustworthy until resynced.
    Gapped = 3,
    /// Best bid is above best ask.
    Crossed = 4,
    /// The venue halted trading in the instrument.
    Halted = 5,
    /// Out of the instrument's trading session: a quiet market, not a stale one.
    Closed = 6,
}

/// The independent conditions the state is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QualityFlags {
    pub synced: bool,
    pub stale: bool,
    pub gapped: bool,
    pub crossed: bool,
    pub halted: bool,
    /// Out of the instrument's trading session.
    pub closed: bool,
}

impl DataQuality {
    pub const fn as_str(self) -> &'static str {
        match self {
            DataQuality::Syncing => "SYNCING",
            DataQuality::Live => "LIVE",
            DataQuality::Stale => "STALE",
            DataQuality::Gapped => "GAPPED",
            DataQuality::Crossed => "CROSSED",
            DataQuality::Halted => "HALTED",
            DataQuality::Closed => "CLOSED",
        }
    }

    /// The single state a consumer sees: the most severe condition wins
    /// (closed > halted > gapped > syncing > stale > crossed > live). Out of session
    /// is its own state whatever else holds: never LIVE, never STALE.
    pub const fn derive(f: QualityFlags) -> Self {
        if f.closed {
            DataQuality::Closed
        } else if f.halted {
            DataQuality::Halted
        } else if f.gapped {
            DataQuality::Gapped
        } else if !f.synced {
            DataQuality::Syncing
        } else if f.stale {
            DataQuality::Stale
        } else if f.crossed {
            DataQuality::Crossed
        } else {
            DataQuality::Live
        }
    }

    /// The state named `s` (as [`as_str`](Self::as_str) writes it, any case).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.as_str().eq_ignore_ascii_case(s))
    }

    /// All states, for metrics and docs.
    pub const ALL: [DataQuality; 7] = [
        DataQuality::Syncing,
        DataQuality::Live,
        DataQuality::Stale,
        DataQuality::Gapped,
        DataQuality::Crossed,
        DataQuality::Halted,
        DataQuality::Closed,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_severe_condition_wins() {
        let mut f = QualityFlags::default();
        assert_eq!(DataQuality::derive(f), DataQuality::Syncing);
        f.synced = true;
        assert_eq!(DataQuality::derive(f), DataQuality::Live);
        f.crossed = true;
        assert_eq!(DataQuality::derive(f), DataQuality::Crossed);
        f.stale = true;
        assert_eq!(DataQuality::derive(f), DataQuality::Stale);
        f.gapped = true;
        assert_eq!(DataQuality::derive(f), DataQuality::Gapped);
        f.halted = true;
        assert_eq!(DataQuality::derive(f), DataQuality::Halted);
        f.closed = true;
        assert_eq!(DataQuality::derive(f), DataQuality::Closed);
    }

    /// Out of session wins over every other condition, and nothing but the closed flag
    /// ever yields CLOSED: over all 2^6 flag combinations.
    #[test]
    fn closed_is_its_own_state_never_live_or_stale() {
        for bits in 0u8..64 {
            let f = QualityFlags {
                synced: bits & 1 != 0,
                stale: bits & 2 != 0,
                gapped: bits & 4 != 0,
                crossed: bits & 8 != 0,
                halted: bits & 16 != 0,
                closed: bits & 32 != 0,
            };
            let q = DataQuality::derive(f);
            assert_eq!(q == DataQuality::Closed, f.closed, "{f:?} -> {q:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for q in DataQuality::ALL {
            assert_eq!(DataQuality::parse(q.as_str()), Some(q));
            assert_eq!(DataQuality::parse(&q.as_str().to_ascii_lowercase()), Some(q));
        }
        assert_eq!(DataQuality::parse("OPEN"), None);
    }
}
