//! `[surveillance]`: thresholds of every rule (defaults from the design documents are
//! in configs/default.toml), a severity per rule, an action per severity, and how
//! repeated anomalies escalate. Validated into [`Thresholds`] at start-up.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::anomaly::{Action, Rule, Severity};
use crate::fixed::parse_decimal;
use crate::orders::VALUE_SCALE;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SurveillanceConfig {
    /// More new orders than this in any minute (per account).
    pub max_orders_per_min: u32,
    /// One order larger than this (instrument units, decimal string).
    pub max_order_qty: String,
    /// One order worth more than this in the base currency (decimal string).
    pub max_order_notional: String,
    /// More distinct symbols than this in one trading day (the instrument's time zone).
    pub max_symbols_per_day: u32,
    /// More cancellations than this in any minute.
    pub max_cancels_per_min: u32,
    /// More orders per fill than this over the last minute...
    pub max_orders_per_fill: u32,
    /// ...once at least this many orders were sent in it.
    pub order_to_trade_min_orders: u32,
    /// Layering: this many orders on one side cancelled...
    pub layering_cancels: u32,
    /// ...within this many milliseconds after a fill on the other side.
    pub layering_window_ms: u64,
    /// A trade price return beyond this many standard deviations (EWMA of returns).
    pub price_jump_sigma: u32,
    /// Weight of the newest return in the EWMA of squared returns, percent.
    pub ewma_weight_pct: u32,
    /// Returns seen before the price-jump rule judges.
    pub min_returns: u32,
    /// A minute's volume above this multiple of the rolling baseline...
    pub volume_spike_factor: u32,
    /// ...once this many minutes built the baseline (an EWMA of minute volumes).
    pub volume_baseline_minutes: u32,
    /// The same rule for the same account or instrument reports at most once per this
    /// many milliseconds.
    pub cooldown_ms: u64,
    /// Every this many anomalies with an action beyond alert, an account's action
    /// climbs one rung (0: never).
    pub escalate_after: u32,
    /// Severity per rule (every rule listed).
    pub severity: BTreeMap<String, String>,
    /// Action per severity: "alert", "throttle", "block" or "kill".
    pub actions: ActionsConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    pub low: String,
    pub medium: String,
    pub high: String,
    pub critical: String,
}

/// Validated thresholds; money and quantities at [`VALUE_SCALE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    pub max_orders_per_min: u32,
    pub max_order_qty: i64,
    pub max_order_notional: i64,
    pub max_symbols_per_day: u32,
    pub max_cancels_per_min: u32,
    pub max_orders_per_fill: u32,
    pub order_to_trade_min_orders: u32,
    pub layering_cancels: u32,
    pub layering_window_ns: i64,
    pub price_jump_sigma: u32,
    pub ewma_weight_pct: u32,
    pub min_returns: u32,
    pub volume_spike_factor: u32,
    pub volume_baseline_minutes: u32,
    pub cooldown_ns: i64,
    pub escalate_after: u32,
    /// By `Rule as usize`.
    pub severity: [Severity; Rule::ALL.len()],
    /// By `Severity as usize`.
    pub actions: [Action; 4],
    /// The engine's stale threshold (`[engine] stale_after_ms`), set by the engine:
    /// the stale-feed rule reports the silence against it.
    pub stale_after_ns: i64,
}

/// A rejected key and what is wrong with it.
fn fault(key: &str, message: String) -> (String, String) {
    (key.to_owned(), message)
}

fn action(s: &str) -> Option<Action> {
    match s {
        "alert" => Some(Action::Alert),
        "throttle" => Some(Action::Throttle),
        "block" => Some(Action::Block),
        "kill" => Some(Action::Kill),
        _ => None,
    }
}

impl SurveillanceConfig {
    /// The design documents' defaults: what configs/default.toml sets (a test keeps the
    /// two equal). For tests and benches; a server always reads its configuration.
    pub fn design_defaults() -> Self {
        let severity = [
            (Rule::OrderRate, Severity::Medium),
            (Rule::LargeQty, Severity::High),
            (Rule::LargeNotional, Severity::High),
            (Rule::SymbolSpread, Severity::Low),
            (Rule::OutsideSession, Severity::Medium),
            (Rule::CancelRate, Severity::Medium),
            (Rule::OrderToTrade, Severity::Medium),
            (Rule::Layering, Severity::High),
            (Rule::PriceJump, Severity::High),
            (Rule::StaleFeed, Severity::High),
            (Rule::CrossedBook, Severity::High),
            (Rule::LockedBook, Severity::Medium),
            (Rule::SequenceGap, Severity::Medium),
            (Rule::VolumeSpike, Severity::Medium),
        ]
        .into_iter()
        .map(|(r, s)| (r.as_str().to_owned(), s.as_str().to_owned()))
        .collect();
        Self {
            max_orders_per_min: 30,
            max_order_qty: "50000".into(),
            max_order_notional: "1000000".into(),
            max_symbols_per_day: 15,
            max_cancels_per_min: 20,
            max_orders_per_fill: 20,
            order_to_trade_min_orders: 25,
            layering_cancels: 5,
            layering_window_ms: 2_000,
            price_jump_sigma: 6,
            ewma_weight_pct: 2,
            min_returns: 50,
            volume_spike_factor: 10,
            volume_baseline_minutes: 5,
            cooldown_ms: 60_000,
            escalate_after: 3,
            severity,
            actions: ActionsConfig {
                low: "alert".into(),
                medium: "alert".into(),
                high: "throttle".into(),
                critical: "block".into(),
            },
        }
    }

    /// Every severity only alerts (accounts keep trading): for measuring the rules.
    pub fn alerts_only(mut self) -> Self {
        self.actions = ActionsConfig {
            low: "alert".into(),
            medium: "alert".into(),
            high: "alert".into(),
            critical: "alert".into(),
        };
        self
    }

    /// Thresholds, or the key at fault and what is wrong.
    pub fn thresholds(&self) -> Result<Thresholds, (String, String)> {
        self.check_counts()?;
        let severity = self.severities()?;
        let actions = self.actions()?;
        let value = |k: &str, s: &str| match parse_decimal(s.as_bytes(), VALUE_SCALE) {
            Ok(v) if v > 0 => Ok(v),
            Ok(_) => Err(fault(k, "must be above zero".into())),
            Err(e) => Err(fault(k, format!("{s:?}: {e}"))),
        };
        Ok(Thresholds {
            max_orders_per_min: self.max_orders_per_min,
            max_order_qty: value("max_order_qty", &self.max_order_qty)?,
            max_order_notional: value("max_order_notional", &self.max_order_notional)?,
            max_symbols_per_day: self.max_symbols_per_day,
            max_cancels_per_min: self.max_cancels_per_min,
            max_orders_per_fill: self.max_orders_per_fill,
            order_to_trade_min_orders: self.order_to_trade_min_orders,
            layering_cancels: self.layering_cancels,
            layering_window_ns: self.layering_window_ms as i64 * 1_000_000,
            price_jump_sigma: self.price_jump_sigma,
            ewma_weight_pct: self.ewma_weight_pct,
            min_returns: self.min_returns,
            volume_spike_factor: self.volume_spike_factor,
            volume_baseline_minutes: self.volume_baseline_minutes,
            cooldown_ns: self.cooldown_ms as i64 * 1_000_000,
            escalate_after: self.escalate_after,
            severity,
            actions,
            // The engine's, set when surveillance is attached to it.
            stale_after_ns: 0,
        })
    }

    /// Counts and windows: positive, the EWMA weight a percentage, windows bounded.
    fn check_counts(&self) -> Result<(), (String, String)> {
        let positive = |k: &str, v: u64| {
            if v == 0 {
                Err(fault(k, "must be at least 1".into()))
            } else {
                Ok(())
            }
        };
        positive("max_orders_per_min", self.max_orders_per_min.into())?;
        positive("max_symbols_per_day", self.max_symbols_per_day.into())?;
        positive("max_cancels_per_min", self.max_cancels_per_min.into())?;
        positive("max_orders_per_fill", self.max_orders_per_fill.into())?;
        positive("layering_cancels", self.layering_cancels.into())?;
        positive("layering_window_ms", self.layering_window_ms)?;
        positive("price_jump_sigma", self.price_jump_sigma.into())?;
        positive("min_returns", self.min_returns.into())?;
        positive("volume_spike_factor", self.volume_spike_factor.into())?;
        positive("volume_baseline_minutes", self.volume_baseline_minutes.into())?;
        if !(1..=100).contains(&self.ewma_weight_pct) {
            return Err(fault("ewma_weight_pct", "must be 1 to 100".into()));
        }
        if self.layering_window_ms > 3_600_000 || self.cooldown_ms > 86_400_000 {
            return Err(fault(
                "cooldown_ms",
                "windows are at most an hour (cooldown a day)".into(),
            ));
        }
        Ok(())
    }

    /// Every rule's severity, by rule: each a rule's name, none missing.
    fn severities(&self) -> Result<[Severity; Rule::ALL.len()], (String, String)> {
        let mut severity = [Severity::Medium; Rule::ALL.len()];
        for (name, s) in &self.severity {
            let rule = Rule::parse(name).ok_or_else(|| {
                let all: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
                fault(
                    &format!("severity.{name}"),
                    format!("not a rule; rules: {}", all.join(", ")),
                )
            })?;
            severity[rule as usize] = Severity::parse(s).ok_or_else(|| {
                fault(
                    &format!("severity.{name}"),
                    format!("{s:?}: LOW, MEDIUM, HIGH or CRITICAL"),
                )
            })?;
        }
        if let Some(missing) = Rule::ALL.iter().find(|r| !self.severity.contains_key(r.as_str())) {
            return Err(fault(
                &format!("severity.{}", missing.as_str()),
                "missing: every rule needs a severity".into(),
            ));
        }
        Ok(severity)
    }

    /// The action per severity, low to critical, never milder for a higher severity.
    fn actions(&self) -> Result<[Action; 4], (String, String)> {
        let mut actions = [Action::Alert; 4];
        for (i, (k, v)) in [
            ("low", &self.actions.low),
            ("medium", &self.actions.medium),
            ("high", &self.actions.high),
            ("critical", &self.actions.critical),
        ]
        .into_iter()
        .enumerate()
        {
            actions[i] = action(v).ok_or_else(|| {
                fault(
                    &format!("actions.{k}"),
                    format!("{v:?}: alert, throttle, block or kill"),
                )
            })?;
        }
        if actions.windows(2).any(|w| w[0] > w[1]) {
            return Err(fault("actions", "a higher severity may not get a milder action".into()));
        }
        Ok(actions)
    }
}
