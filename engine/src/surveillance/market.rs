//! Market-data rules, per instrument, in constant time per event: price jumps against
//! an EWMA of squared returns (integer parts per million), stale feed in session,
//! crossed or locked book, sequence gaps, and minute volume against a rolling baseline.

use super::config::Thresholds;
use super::order_flow::{Finding, InstrumentInfo};
use crate::anomaly::Rule;
use crate::event::EventData;
use crate::ids::InstrumentId;
use crate::quality::DataQuality;
use crate::time::UnixNanos;

#[derive(Debug, Clone, Default)]
pub struct MarketFlow {
    last_price: i64,
    /// EWMA of squared returns, ppm^2.
    var: i128,
    returns: u32,
    /// The minute `volume` counts.
    minute: i64,
    volume: i128,
    /// EWMA of past minutes' volumes.
    baseline: i128,
    minutes: u32,
    spiked: bool,
    /// Inside a crossed or locked episode (reported once).
    crossed: bool,
    /// Receive time of the last market data event (0 = none yet): a stale feed
    /// reports how long it has been silent.
    last_data: i64,
}

const MINUTE_NS: i64 = 60 * UnixNanos::NANOS_PER_SEC;

/// Runs the rules over one event the engine published for `id`.
#[allow(clippy::too_many_arguments)]
pub fn observe(
    t: &Thresholds,
    m: &mut MarketFlow,
    id: InstrumentId,
    info: &InstrumentInfo,
    quality: DataQuality,
    data: &EventData,
    at: UnixNanos,
    out: &mut impl FnMut(Finding),
) {
    if matches!(
        data,
        EventData::Trade { .. } | EventData::Quote { .. } | EventData::Book { .. }
    ) && at.is_known()
    {
        m.last_data = at.0;
    }
    match *data {
        EventData::Trade { price, qty, .. } => {
            price_jump(t, m, id, info, price.0, out);
            volume(t, m, id, i128::from(qty.0), at, out);
        }
        EventData::Quote {
            bid,
            bid_qty,
            ask,
            ask_qty,
        } => crossed_book(m, id, (bid.0, bid_qty.0), (ask.0, ask_qty.0), out),
        EventData::Status { previous } if previous != quality => status(t, m, id, info, quality, at, out),
        _ => {}
    }
}

/// A trade at `p` more than k sigma (of the EWMA of squared returns) from the last
/// price, once enough returns were seen; then the EWMA learns the return.
fn price_jump(
    t: &Thresholds,
    m: &mut MarketFlow,
    id: InstrumentId,
    info: &InstrumentInfo,
    p: i64,
    out: &mut impl FnMut(Finding),
) {
    if m.last_price > 0 && p > 0 {
        let r = i128::from(p - m.last_price) * 1_000_000 / i128::from(m.last_price);
        let r2 = r * r;
        if m.returns >= t.min_returns {
            // Prices move in ticks: a quiet market's sigma is never taken as
            // less than one tick's return, or one tick would be a "jump".
            let tick = i128::from(info.tick.max(1)) * 1_000_000 / i128::from(m.last_price);
            let sigma = m.var.isqrt().max(tick).max(1);
            let k = i128::from(t.price_jump_sigma);
            if r.abs() > k * sigma {
                // Observed in sigmas, two decimals.
                let observed = (r.abs() * 100 / sigma).min(i128::from(i64::MAX)) as i64;
                out((
                    Rule::PriceJump,
                    Some(id),
                    observed,
                    i64::from(t.price_jump_sigma) * 100,
                    2,
                ));
            }
        }
        let w = i128::from(t.ewma_weight_pct);
        m.var = if m.returns == 0 {
            r2
        } else {
            m.var + (r2 - m.var) * w / 100
        };
        m.returns = m.returns.saturating_add(1);
    }
    if p > 0 {
        m.last_price = p;
    }
}

/// A best bid at or above the best ask (prices and sizes), reported once per episode.
fn crossed_book(m: &mut MarketFlow, id: InstrumentId, bid: (i64, i64), ask: (i64, i64), out: &mut impl FnMut(Finding)) {
    let ((bid, bid_qty), (ask, ask_qty)) = (bid, ask);
    if !(bid_qty > 0 && ask_qty > 0 && bid >= ask) {
        m.crossed = false;
        return;
    }
    if !m.crossed {
        m.crossed = true;
        let rule = if bid > ask { Rule::CrossedBook } else { Rule::LockedBook };
        out((rule, Some(id), bid - ask, 0, 0));
    }
}

/// A change of data quality: STALE while in session (with how long the feed has
/// been silent), or a sequence gap.
fn status(
    t: &Thresholds,
    m: &MarketFlow,
    id: InstrumentId,
    info: &InstrumentInfo,
    quality: DataQuality,
    at: UnixNanos,
    out: &mut impl FnMut(Finding),
) {
    match quality {
        DataQuality::Stale if info.session.is_open(at) => {
            // Silence in milliseconds (3 decimals: seconds) against the threshold.
            let silent = if m.last_data != 0 {
                at.0.saturating_sub(m.last_data) / UnixNanos::NANOS_PER_MILLI
            } else {
                0
            };
            out((
                Rule::StaleFeed,
                Some(id),
                silent,
                t.stale_after_ns / UnixNanos::NANOS_PER_MILLI,
                3,
            ))
        }
        // One gap reported by the feed.
        DataQuality::Gapped => out((Rule::SequenceGap, Some(id), 1, 0, 0)),
        _ => {}
    }
}

fn volume(
    t: &Thresholds,
    m: &mut MarketFlow,
    id: InstrumentId,
    qty: i128,
    at: UnixNanos,
    out: &mut impl FnMut(Finding),
) {
    let minute = at.0.div_euclid(MINUTE_NS);
    if minute > m.minute {
        // Close the minute (and any empty ones since, up to the baseline's length).
        let w = i128::from(t.ewma_weight_pct);
        let empty = (minute - m.minute - 1).clamp(0, i64::from(t.volume_baseline_minutes));
        if m.minute != 0 {
            for v in std::iter::once(m.volume).chain((0..empty).map(|_| 0)) {
                m.baseline = if m.minutes == 0 {
                    v
                } else {
                    m.baseline + (v - m.baseline) * w / 100
                };
                m.minutes = m.minutes.saturating_add(1);
            }
        }
        m.minute = minute;
        m.volume = 0;
        m.spiked = false;
    }
    m.volume += qty;
    let limit = m.baseline * i128::from(t.volume_spike_factor);
    if !m.spiked && m.minutes >= t.volume_baseline_minutes && m.baseline > 0 && m.volume > limit {
        m.spiked = true;
        let clamp = |v: i128| v.min(i128::from(i64::MAX)) as i64;
        out((Rule::VolumeSpike, Some(id), clamp(m.volume), clamp(limit), 0));
    }
}
