//! Surveillance (SPEC section 4): order-flow rules per account and market-data rules
//! per instrument, run in the engine thread in constant time per event, with
//! escalating actions.
//!
//! The detector watches what the engine already produces (the order path's events,
//! the market events it publishes) and never changes state itself: each anomaly it
//! finds is handed to the order manager ([`OrderManager::apply_anomaly`]), which
//! reports it as an event and applies its action (throttle, block, kill switch) as a
//! journaled step. Recovery replays those steps, so actions survive a restart exactly;
//! the detector's own windows start empty after one (a minute of history at most).

pub mod config;
pub mod market;
pub mod order_flow;
pub mod window;

pub use crate::anomaly::{Action, Anomaly, Rule, Severity};
pub use config::{SurveillanceConfig, Thresholds};

use crate::event::EventData;
use crate::ids::InstrumentId;
use crate::instrument::InstrumentRegistry;
use crate::orders::{AccountId, Command, CommandKind, KillScope, OrderEvent, OrderManager, TradingState};
use crate::quality::DataQuality;
use crate::time::UnixNanos;
use market::MarketFlow;
use order_flow::{AccountFlow, Finding, InstrumentInfo};

/// Most anomalies waiting for the order manager (more in one step are counted and
/// dropped: the cooldown makes that need a flood of distinct rules and subjects).
const PENDING: usize = 256;

/// Counters (read by /metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct SurveillanceStats {
    pub anomalies: u64,
    /// Findings within a rule's cooldown for the same subject.
    pub suppressed: u64,
    pub dropped: u64,
}

/// An account's place on the action ladder.
#[derive(Debug, Clone, Copy)]
struct Ladder {
    strikes: u32,
    rung: Action,
}

pub struct Surveillance {
    t: Thresholds,
    info: Vec<InstrumentInfo>,
    accounts: Vec<AccountFlow>,
    ladders: Vec<Ladder>,
    markets: Vec<MarketFlow>,
    /// Last report per (subject, rule): accounts first, then instruments.
    last: Vec<UnixNanos>,
    pending: Vec<Anomaly>,
    pub stats: SurveillanceStats,
}

impl Surveillance {
    pub fn new(t: Thresholds, registry: &InstrumentRegistry, accounts: usize) -> Self {
        let info: Vec<InstrumentInfo> = registry
            .iter()
            .map(|i| InstrumentInfo {
                price_scale: i.price_scale,
                tick: i.tick_size.0,
                qty_scale: i.qty_scale,
                session: i.session.clone(),
            })
            .collect();
        let n = info.len();
        Self {
            t,
            accounts: (0..accounts).map(|_| AccountFlow::new(n)).collect(),
            ladders: vec![
                Ladder {
                    strikes: 0,
                    rung: Action::Alert
                };
                accounts
            ],
            markets: vec![MarketFlow::default(); n],
            last: vec![UnixNanos(i64::MIN); (accounts + n) * Rule::ALL.len()],
            info,
            pending: Vec::with_capacity(PENDING),
            stats: SurveillanceStats::default(),
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.t
    }

    /// The engine's stale threshold, which stale-feed anomalies report against.
    pub fn set_stale_after(&mut self, stale_after_ns: i64) {
        self.t.stale_after_ns = stale_after_ns;
    }

    /// Runs the order-flow rules over a step's events.
    pub fn observe_orders(&mut self, manager: &OrderManager, events: &[OrderEvent]) {
        for e in events {
            let Some(flow) = self.accounts.get_mut(e.account.index()) else {
                continue;
            };
            let mut found: [Option<Finding>; 8] = [None; 8];
            let mut n = 0;
            order_flow::observe(&self.t, flow, &self.info, manager, e, &mut |f| {
                if let Some(slot) = found.get_mut(n) {
                    *slot = Some(f);
                    n += 1;
                }
            });
            for f in found.into_iter().flatten() {
                self.report(Some(e.account), f, e.at);
            }
        }
    }

    /// Runs the market-data rules over one event the engine published.
    pub fn observe_market(&mut self, id: InstrumentId, quality: DataQuality, data: &EventData, at: UnixNanos) {
        let (Some(m), Some(info)) = (self.markets.get_mut(id.index()), self.info.get(id.index())) else {
            return;
        };
        let mut found: Option<Finding> = None;
        market::observe(&self.t, m, id, info, quality, data, at, &mut |f| found = Some(f));
        if let Some(mut f) = found {
            f.4 = match f.0 {
                Rule::VolumeSpike => info.qty_scale,
                Rule::CrossedBook | Rule::LockedBook => info.price_scale,
                _ => f.4,
            };
            self.report(None, f, at);
        }
    }

    /// An admin cleared the account (trading state active, or its kill switch off):
    /// it starts again at the bottom of the ladder.
    pub fn clear_account(&mut self, account: AccountId) {
        if let Some(l) = self.ladders.get_mut(account.index()) {
            *l = Ladder {
                strikes: 0,
                rung: Action::Alert,
            };
        }
    }

    /// Sees a command before the order path handles it: an admin clearing an account
    /// (its trading state set back to active, or its account kill switch turned off)
    /// resets the account's place on the action ladder.
    pub fn observe_command(&mut self, cmd: &Command) {
        match cmd.kind {
            CommandKind::SetTradingState {
                target,
                state: TradingState::Active,
            } => self.clear_account(target),
            CommandKind::KillSwitch {
                scope: KillScope::Account(account),
                on: false,
            } => self.clear_account(account),
            _ => {}
        }
    }

    /// Anomalies found since the last call, for the order manager to apply.
    pub fn take_pending(&mut self, mut f: impl FnMut(&Anomaly)) {
        for a in &self.pending {
            f(a);
        }
        self.pending.clear();
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn report(&mut self, account: Option<AccountId>, f: Finding, at: UnixNanos) {
        let (rule, instrument, observed, threshold, scale) = f;
        let subject = match (account, instrument) {
            (Some(a), _) => a.index(),
            (None, Some(i)) => self.accounts.len() + i.index(),
            (None, None) => return,
        };
        let Some(last) = self.last.get_mut(subject * Rule::ALL.len() + rule as usize) else {
            return;
        };
        if last.0 != i64::MIN && at.0.saturating_sub(last.0) < self.t.cooldown_ns {
            self.stats.suppressed += 1;
            return;
        }
        *last = at;
        let severity = self.t.severity.get(rule as usize).copied().unwrap_or(Severity::Medium);
        let action = match account.and_then(|a| self.ladders.get_mut(a.index())) {
            // Market data has no account to act on: alert.
            None => Action::Alert,
            Some(l) => {
                let base = self.t.actions.get(severity as usize).copied().unwrap_or(Action::Alert);
                if base == Action::Alert {
                    Action::Alert
                } else {
                    l.strikes += 1;
                    let mut action = base.max(l.rung);
                    if self.t.escalate_after > 0 && l.strikes % self.t.escalate_after == 0 {
                        action = action.next();
                    }
                    l.rung = action;
                    action
                }
            }
        };
        if self.pending.len() == PENDING {
            self.stats.dropped += 1;
            return;
        }
        self.stats.anomalies += 1;
        self.pending.push(Anomaly {
            rule,
            severity,
            action,
            account,
            instrument,
            observed,
            threshold,
            scale,
            at,
        });
    }
}
