//! `[health]`: the readiness rule. Readiness must say whether the feeds deliver data a
//! trader can trust, not only whether their threads run, without flapping on a brief
//! resync and without counting a closed market against the service.
//!
//! The rule (documented in `configs/default.toml` and the README):
//! - a feed that has not been connected for `feed_grace_ms` (refused credentials
//!   included) fails readiness;
//! - an instrument with a feed, in session, whose data quality is one of
//!   `not_ready_states` for `instrument_grace_ms` or longer is *not ready*; readiness
//!   fails when more than `max_not_ready_instruments` are;
//! - CLOSED (out of session) and instruments without a feed (the internal venue) never
//!   count.
//!
//! Anything else that is not ok (within its grace, CROSSED, HALTED, a store down) makes
//! `/health` "degraded", with reasons, but leaves the service ready.

use serde::Deserialize;
use stocksblitz_engine::{DataQuality, UnixNanos};

use super::error::range;
use super::error::ConfigError;

/// `[health]` as written. The section is optional; absent keys take the documented
/// defaults below (the values `configs/default.toml` spells out).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Data-quality states that count against readiness: any of SYNCING, STALE,
    /// GAPPED, CROSSED, HALTED (LIVE and CLOSED are healthy by definition).
    pub not_ready_states: Vec<String>,
    /// How long an instrument may stay in such a state before it counts.
    pub instrument_grace_ms: u64,
    /// How long a feed may be unconnected before readiness fails.
    pub feed_grace_ms: u64,
    /// How many not-ready instruments are tolerated (0: any one fails readiness).
    pub max_not_ready_instruments: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            not_ready_states: vec!["SYNCING".into(), "STALE".into(), "GAPPED".into()],
            instrument_grace_ms: 10_000,
            feed_grace_ms: 10_000,
            max_not_ready_instruments: 0,
        }
    }
}

/// The validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRule {
    pub not_ready: Vec<DataQuality>,
    pub instrument_grace_ns: i64,
    pub feed_grace_ns: i64,
    pub max_not_ready_instruments: u64,
}

impl Default for HealthRule {
    fn default() -> Self {
        // The defaults are valid by construction.
        check(&HealthConfig::default()).unwrap_or(HealthRule {
            not_ready: vec![DataQuality::Syncing, DataQuality::Stale, DataQuality::Gapped],
            instrument_grace_ns: 10 * UnixNanos::NANOS_PER_SEC,
            feed_grace_ns: 10 * UnixNanos::NANOS_PER_SEC,
            max_not_ready_instruments: 0,
        })
    }
}

impl HealthRule {
    /// Whether `q` counts against readiness.
    pub fn counts(&self, q: DataQuality) -> bool {
        self.not_ready.contains(&q)
    }
}

const DAY_MS: u64 = 86_400_000;

pub fn check(c: &HealthConfig) -> Result<HealthRule, ConfigError> {
    let mut not_ready = Vec::new();
    for (i, s) in c.not_ready_states.iter().enumerate() {
        let key = format!("health.not_ready_states[{i}]");
        let q = DataQuality::parse(s).ok_or_else(|| {
            ConfigError::invalid(
                &key,
                format!("{s:?} is not a data-quality state: use SYNCING, STALE, GAPPED, CROSSED or HALTED"),
            )
        })?;
        if matches!(q, DataQuality::Live | DataQuality::Closed) {
            return Err(ConfigError::invalid(
                key,
                format!("{s:?} is healthy by definition (a closed market is not a fault): remove it"),
            ));
        }
        if !not_ready.contains(&q) {
            not_ready.push(q);
        }
    }
    range("health.instrument_grace_ms", c.instrument_grace_ms, 0, DAY_MS)?;
    range("health.feed_grace_ms", c.feed_grace_ms, 0, DAY_MS)?;
    range(
        "health.max_not_ready_instruments",
        c.max_not_ready_instruments,
        0,
        1_000_000,
    )?;
    let ns = |ms: u64| {
        i64::try_from(ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(UnixNanos::NANOS_PER_MILLI)
    };
    Ok(HealthRule {
        not_ready,
        instrument_grace_ns: ns(c.instrument_grace_ms),
        feed_grace_ns: ns(c.feed_grace_ms),
        max_not_ready_instruments: c.max_not_ready_instruments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_checked_with_the_key_at_fault() {
        let mut c = HealthConfig::default();
        assert_eq!(check(&c).unwrap().not_ready.len(), 3);
        for (bad, why) in [
            ("LIVE", "healthy"),
            ("closed", "healthy"),
            ("BROKEN", "not a data-quality"),
        ] {
            c.not_ready_states = vec!["STALE".into(), bad.into()];
            let e = check(&c).unwrap_err();
            assert_eq!(e.key(), Some("health.not_ready_states[1]"), "{bad}");
            assert!(e.to_string().contains(why), "{e}");
        }
        c.not_ready_states = vec!["stale".into(), "STALE".into(), "crossed".into()];
        assert_eq!(
            check(&c).unwrap().not_ready,
            vec![DataQuality::Stale, DataQuality::Crossed]
        );
        c.feed_grace_ms = DAY_MS + 1;
        assert_eq!(check(&c).unwrap_err().key(), Some("health.feed_grace_ms"));
    }

    #[test]
    fn the_default_rule_is_the_documented_one() {
        assert_eq!(HealthRule::default(), check(&HealthConfig::default()).unwrap());
        // configs/default.toml spells out exactly the defaults an absent section takes.
        let doc: toml::Table = toml::from_str(super::super::DEFAULT_TOML).unwrap();
        let written: HealthConfig = doc["health"].clone().try_into().unwrap();
        assert_eq!(check(&written).unwrap(), HealthRule::default());
        assert_eq!(written.not_ready_states, HealthConfig::default().not_ready_states);
        let r = HealthRule::default();
        assert!(r.counts(DataQuality::Stale) && !r.counts(DataQuality::Closed) && !r.counts(DataQuality::Live));
    }
}
