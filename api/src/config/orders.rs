//! `[orders]`: order entry, accounts and their risk limits, the venue each
//! instrument's orders go to, and currency rates into the base currency. Validated
//! into [`OrderSetup`], what the engine is built from.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::Deserialize;
use stocksblitz_engine::fixed::parse_decimal;
use stocksblitz_engine::idle::IdleConfig;
use stocksblitz_engine::journal::{FsyncPolicy, Retention, RetentionAction, Snapshotter};
use stocksblitz_engine::orders::{OrderCapacity, RiskLimits, RiskLimitsConfig, VenueKind, VALUE_SCALE};
use stocksblitz_engine::InstrumentRegistry;

use super::error::range;
use super::error::ConfigError;

/// `[orders]`. Absent: order entry is off and the order routes answer 503.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// Currency money limits are expressed in (e.g. "INR").
    pub base_currency: String,
    /// Base-currency value of one unit of each instrument currency (decimal strings).
    pub currency_rates: BTreeMap<String, String>,
    /// Where each instrument's orders execute: "internal" (our book) or "paper".
    pub venues: BTreeMap<String, VenueKind>,
    /// Orders the engine holds at once (open plus recently finished).
    pub max_orders: usize,
    /// Commands waiting for the engine; a full queue answers 503 ENGINE_BUSY.
    pub command_queue_capacity: usize,
    /// Slots in the engine -> API order event ring.
    pub event_ring_capacity: usize,
    /// Price levels per side of each order book.
    pub levels_per_side: usize,
    /// Stop orders waiting per instrument.
    pub stops_per_instrument: usize,
    /// Offset of the trading day from UTC, minutes (330 = IST).
    pub trading_day_utc_offset_minutes: i32,
    /// "HH:MM" UTC at which 24x7 instruments start a new trading day (their DAY
    /// orders expire then). Default "00:00".
    #[serde(default = "default_day_roll")]
    pub day_roll_24x7_utc: String,
    /// Longest wait for the engine's answer before the outcome is reported UNKNOWN.
    pub response_timeout_ms: u64,
    /// Finished orders and fills the API keeps per account for queries.
    pub history_per_account: usize,
    /// Limits of every account without its own.
    pub default_limits: RiskLimitsConfig,
    pub accounts: Vec<AccountConfig>,
    /// `[orders.journal]`: where and how orders are made durable.
    pub journal: JournalConfig,
}

/// `[orders.journal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Directory of the journal's segment files (created if missing).
    pub dir: PathBuf,
    /// "batch": fsync every group commit before acknowledging (survives power loss);
    /// "interval": fsync every `fsync_interval_ms` (acknowledged once written);
    /// "none": never fsync (survives a process crash, not a power loss).
    pub fsync: FsyncMode,
    /// Required with `fsync = "interval"`, refused otherwise.
    #[serde(default)]
    pub fsync_interval_ms: Option<u64>,
    /// A new segment file starts past this size.
    pub segment_bytes: u64,
    /// A snapshot of the order state is written every this many records, so start-up
    /// replays at most about this many.
    pub snapshot_every_records: u64,
    /// Snapshots kept (older ones are deleted).
    pub snapshots_kept: usize,
    /// What happens to segments no kept snapshot needs: "keep" (never removed, the
    /// default), "archive" (moved to `<dir>/archive/`) or "delete".
    #[serde(default)]
    pub retention: RetentionMode,
    /// Records kept before the oldest kept snapshot on top of what it needs (default 0).
    #[serde(default)]
    pub retention_margin_records: u64,
    /// `[orders.journal.snapshot_idle]`: how long the snapshot thread sleeps between
    /// rounds (same keys as `[engine.idle]`). Default: 100 ms.
    #[serde(default = "default_snapshot_idle")]
    pub snapshot_idle: IdleConfig,
}

fn default_snapshot_idle() -> IdleConfig {
    Snapshotter::DEFAULT_IDLE
}

/// `[orders.journal] retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionMode {
    #[default]
    Keep,
    Archive,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    Batch,
    Interval,
    None,
}

/// The validated journal settings.
#[derive(Debug, Clone)]
pub struct JournalSetup {
    pub dir: PathBuf,
    pub policy: FsyncPolicy,
    pub segment_bytes: u64,
    pub snapshot_every_records: u64,
    pub snapshots_kept: usize,
    pub retention: Retention,
    pub snapshot_idle: IdleConfig,
}

fn journal(c: &JournalConfig) -> Result<JournalSetup, ConfigError> {
    if c.dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid("orders.journal.dir", "must not be empty"));
    }
    range("orders.journal.segment_bytes", c.segment_bytes, 1 << 20, 1 << 34)?;
    range(
        "orders.journal.snapshot_every_records",
        c.snapshot_every_records,
        1,
        1 << 40,
    )?;
    range("orders.journal.snapshots_kept", c.snapshots_kept as u64, 1, 100)?;
    range(
        "orders.journal.retention_margin_records",
        c.retention_margin_records,
        0,
        1 << 40,
    )?;
    if c.retention != RetentionMode::Keep && c.snapshots_kept < 2 {
        return Err(ConfigError::invalid(
            "orders.journal.snapshots_kept",
            "must be at least 2 with retention = \"archive\" or \"delete\" (a damaged newest snapshot must leave \
             an older one whose records are kept)",
        ));
    }
    if let Err((k, m)) = c.snapshot_idle.validate() {
        return Err(ConfigError::invalid(format!("orders.journal.snapshot_idle.{k}"), m));
    }
    let policy = match (c.fsync, c.fsync_interval_ms) {
        (FsyncMode::Interval, Some(ms)) => {
            range("orders.journal.fsync_interval_ms", ms, 1, 10_000)?;
            FsyncPolicy::Interval(std::time::Duration::from_millis(ms))
        }
        (FsyncMode::Interval, None) => {
            return Err(ConfigError::invalid(
                "orders.journal.fsync_interval_ms",
                "required with fsync = \"interval\"",
            ))
        }
        (_, Some(_)) => {
            return Err(ConfigError::invalid(
                "orders.journal.fsync_interval_ms",
                "only allowed with fsync = \"interval\"",
            ))
        }
        (FsyncMode::Batch, None) => FsyncPolicy::Batch,
        (FsyncMode::None, None) => FsyncPolicy::None,
    };
    Ok(JournalSetup {
        dir: c.dir.clone(),
        policy,
        segment_bytes: c.segment_bytes,
        snapshot_every_records: c.snapshot_every_records,
        snapshots_kept: c.snapshots_kept,
        retention: Retention {
            action: match c.retention {
                RetentionMode::Keep => RetentionAction::Keep,
                RetentionMode::Archive => RetentionAction::Archive,
                RetentionMode::Delete => RetentionAction::Delete,
            },
            margin_records: c.retention_margin_records,
        },
        snapshot_idle: c.snapshot_idle,
    })
}

/// `[[orders.accounts]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The account name tokens carry (`sub`/`account` claim).
    pub name: String,
    /// Overrides `[orders.default_limits]` as a whole when present.
    #[serde(default)]
    pub limits: Option<RiskLimitsConfig>,
}

/// What the engine's order path and the API's order routes are built from.
#[derive(Debug, Clone)]
pub struct OrderSetup {
    pub venues: Vec<VenueKind>,
    pub rates: Vec<i128>,
    /// Account names, by `AccountId` index.
    pub accounts: Vec<String>,
    pub limits: Vec<RiskLimits>,
    pub capacity: OrderCapacity,
    pub command_queue_capacity: usize,
    pub event_ring_capacity: usize,
    pub response_timeout_ms: u64,
    pub history_per_account: usize,
    pub journal: JournalSetup,
    /// Seconds after 00:00 UTC at which 24x7 instruments roll to the next trading day.
    pub day_roll_secs: i64,
}

fn default_day_roll() -> String {
    "00:00".to_owned()
}

/// `"HH:MM"` (24-hour) as seconds after midnight.
fn day_roll_secs(s: &str) -> Result<i64, ConfigError> {
    let bad = || {
        ConfigError::invalid(
            "orders.day_roll_24x7_utc",
            format!("{s:?}: use 24-hour \"HH:MM\" UTC, e.g. \"00:00\""),
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60)
}

fn limits(key: &str, c: &RiskLimitsConfig) -> Result<RiskLimits, ConfigError> {
    c.limits()
        .map_err(|(k, m)| ConfigError::invalid(format!("{key}.{k}"), m))
}

/// Validates `[orders]` against the instruments.
pub fn setup(c: &OrdersConfig, registry: &InstrumentRegistry) -> Result<OrderSetup, ConfigError> {
    range("orders.max_orders", c.max_orders as u64, 1, 1 << 24)?;
    range(
        "orders.command_queue_capacity",
        c.command_queue_capacity as u64,
        1,
        1 << 20,
    )?;
    range("orders.event_ring_capacity", c.event_ring_capacity as u64, 16, 1 << 24)?;
    range("orders.levels_per_side", c.levels_per_side as u64, 1, 1 << 20)?;
    range("orders.stops_per_instrument", c.stops_per_instrument as u64, 1, 1 << 20)?;
    range("orders.response_timeout_ms", c.response_timeout_ms, 1, 60_000)?;
    range(
        "orders.history_per_account",
        c.history_per_account as u64,
        1,
        10_000_000,
    )?;
    if !(-720..=840).contains(&c.trading_day_utc_offset_minutes) {
        return Err(ConfigError::invalid(
            "orders.trading_day_utc_offset_minutes",
            "must be between -720 and 840",
        ));
    }
    let day_roll_secs = day_roll_secs(&c.day_roll_24x7_utc)?;
    let mut rates = Vec::with_capacity(registry.len());
    let mut venues = Vec::with_capacity(registry.len());
    for inst in registry.iter() {
        let rate = if inst.currency == c.base_currency {
            Ok(10i128.pow(u32::from(VALUE_SCALE)))
        } else {
            let key = format!("orders.currency_rates.{}", inst.currency);
            match c.currency_rates.get(&inst.currency) {
                None => Err(ConfigError::invalid(
                    key,
                    format!(
                        "missing: {} is quoted in {}; give its value in {}",
                        inst.symbol, inst.currency, c.base_currency
                    ),
                )),
                Some(s) => match parse_decimal(s.as_bytes(), VALUE_SCALE) {
                    Ok(v) if v > 0 => Ok(i128::from(v)),
                    Ok(_) => Err(ConfigError::invalid(key, "must be above zero")),
                    Err(e) => Err(ConfigError::invalid(key, format!("{s:?}: {e}"))),
                },
            }
        }?;
        rates.push(rate);
        let venue = c.venues.get(&inst.symbol).copied().ok_or_else(|| {
            ConfigError::invalid(
                format!("orders.venues.{}", inst.symbol),
                "missing: every instrument needs \"internal\" or \"paper\"",
            )
        })?;
        venues.push(venue);
    }
    for sym in c.venues.keys() {
        if registry.by_symbol(sym).is_none() {
            return Err(ConfigError::invalid(
                format!("orders.venues.{sym}"),
                "not in [[instruments]]",
            ));
        }
    }
    let defaults = limits("orders.default_limits", &c.default_limits)?;
    if c.accounts.is_empty() {
        return Err(ConfigError::invalid(
            "orders.accounts",
            "at least one [[orders.accounts]] entry is required",
        ));
    }
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    let mut account_limits = Vec::new();
    for (i, a) in c.accounts.iter().enumerate() {
        let key = format!("orders.accounts[{i}]");
        let ok = !a.name.is_empty()
            && a.name.len() <= 64
            && a.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
        if !ok {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                "1-64 letters, digits, '-', '_' or '.'",
            ));
        }
        if !seen.insert(a.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!("{:?} is used twice", a.name),
            ));
        }
        names.push(a.name.clone());
        account_limits.push(match &a.limits {
            Some(l) => limits(&format!("{key}.limits"), l)?,
            None => defaults,
        });
    }
    Ok(OrderSetup {
        venues,
        rates,
        accounts: names,
        limits: account_limits,
        capacity: OrderCapacity {
            orders: c.max_orders,
            levels: c.levels_per_side,
            stops: c.stops_per_instrument,
            day_offset_secs: i64::from(c.trading_day_utc_offset_minutes) * 60,
        },
        command_queue_capacity: c.command_queue_capacity,
        event_ring_capacity: c.event_ring_capacity,
        response_timeout_ms: c.response_timeout_ms,
        history_per_account: c.history_per_account,
        journal: journal(&c.journal)?,
        day_roll_secs,
    })
}

#[cfg(test)]
mod day_roll_tests {
    use super::day_roll_secs;

    #[test]
    fn day_roll_is_hh_mm_utc() {
        assert_eq!(day_roll_secs("00:00").ok(), Some(0));
        assert_eq!(day_roll_secs("08:30").ok(), Some(8 * 3600 + 30 * 60));
        assert_eq!(day_roll_secs("23:59").ok(), Some(23 * 3600 + 59 * 60));
        for bad in ["24:00", "8:00", "08:60", "0800", "", "aa:bb", "-1:00"] {
            assert!(day_roll_secs(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod retention_tests {
    use super::{journal, JournalConfig};
    use stocksblitz_engine::journal::{Retention, RetentionAction};

    fn parse(extra: &str) -> Result<JournalConfig, toml::de::Error> {
        toml::from_str(&format!(
            "dir = \"j\"\nfsync = \"batch\"\nsegment_bytes = 1048576\nsnapshot_every_records = 10\n{extra}"
        ))
    }

    #[test]
    fn retention_is_typed_validated_and_off_by_default() {
        let c = parse("snapshots_kept = 1").expect("parses");
        assert_eq!(journal(&c).expect("valid").retention, Retention::default());
        assert_eq!(Retention::default().action, RetentionAction::Keep);
        let c = parse("snapshots_kept = 2\nretention = \"archive\"\nretention_margin_records = 500").expect("parses");
        let r = journal(&c).expect("valid").retention;
        assert_eq!((r.action, r.margin_records), (RetentionAction::Archive, 500));
        let c = parse("snapshots_kept = 3\nretention = \"delete\"").expect("parses");
        assert_eq!(journal(&c).expect("valid").retention.action, RetentionAction::Delete);
        // One snapshot is not enough to remove segments behind.
        let c = parse("snapshots_kept = 1\nretention = \"delete\"").expect("parses");
        let e = journal(&c).expect_err("refused").to_string();
        assert!(
            e.contains("orders.journal.snapshots_kept") && e.contains("at least 2"),
            "{e}"
        );
        let c = parse("snapshots_kept = 2\nretention_margin_records = 2000000000000").expect("parses");
        let e = journal(&c).expect_err("refused").to_string();
        assert!(e.contains("orders.journal.retention_margin_records"), "{e}");
        // Unknown values and keys are refused by the parser.
        assert!(parse("snapshots_kept = 2\nretention = \"trim\"").is_err());
        assert!(parse("snapshots_kept = 2\nretention_margin = 5").is_err());
    }
}
