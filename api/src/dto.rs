//! JSON shapes of market data, shared by REST responses and WebSocket messages.
//!
//! Prices and quantities are decimal strings at the instrument's precision ("65000.10"),
//! never floats: a client gets exactly what the venue sent. Times are integer
//! microseconds since the Unix epoch (exact in a JavaScript number), `null` when the
//! venue sent none.

use serde::Serialize;
use stocksblitz_engine::instrument_state::Bbo;
use stocksblitz_engine::{Bar, BarState, Decimal, Instrument, Level, UnixNanos};
use utoipa::ToSchema;

use crate::market::{InstrumentView, QuoteView, TradeView};

/// A fixed-point value serialized as its exact decimal string.
#[derive(Debug, Clone, Copy)]
pub struct Dec(pub Decimal);

impl Serialize for Dec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Microseconds, or `None` for an unknown time.
pub fn micros(t: UnixNanos) -> Option<i64> {
    t.known().map(|t| t.0.div_euclid(1_000))
}

/// The value with no trailing fractional zeros: order steps read as configured
/// (`"0.01"`) although prices are kept at the wire scale (8 decimals on Binance).
fn shortest(mut mantissa: i64, mut scale: u8) -> Decimal {
    while scale > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    Decimal::new(mantissa, scale)
}

#[derive(Serialize, ToSchema)]
#[schema(as = Instrument)]
pub struct InstrumentDto<'a> {
    pub id: u32,
    pub symbol: &'a str,
    pub venue: &'a str,
    pub venue_symbol: &'a str,
    /// `equity`, `crypto_spot` or `index`.
    pub kind: &'static str,
    pub currency: &'a str,
    pub price_decimals: u8,
    pub qty_decimals: u8,
    #[schema(value_type = String)]
    pub tick_size: Dec,
    #[schema(value_type = String)]
    pub lot_size: Dec,
    pub session: String,
}

impl<'a> InstrumentDto<'a> {
    pub fn new(i: &'a Instrument) -> Self {
        Self {
            id: i.id.0,
            symbol: &i.symbol,
            venue: &i.venue,
            venue_symbol: &i.venue_symbol,
            kind: i.kind.as_str(),
            currency: &i.currency,
            price_decimals: i.price_scale,
            qty_decimals: i.qty_scale,
            tick_size: Dec(shortest(i.tick_size.0, i.price_scale)),
            lot_size: Dec(shortest(i.lot_size.0, i.qty_scale)),
            session: i.session.describe(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Trade)]
pub struct TradeDto<'a> {
    pub symbol: &'a str,
    #[schema(value_type = String)]
    pub price: Dec,
    #[schema(value_type = String)]
    pub qty: Dec,
    /// The aggressor: `buy`, `sell` or `unknown`.
    pub side: &'static str,
    pub trade_id: u64,
    pub exchange_ts_us: Option<i64>,
    pub recv_ts_us: Option<i64>,
    pub engine_seq: u64,
}

impl<'a> TradeDto<'a> {
    pub fn new(inst: &'a Instrument, t: &TradeView) -> Self {
        Self {
            symbol: &inst.symbol,
            price: Dec(t.price.decimal(inst.price_scale)),
            qty: Dec(t.qty.decimal(inst.qty_scale)),
            side: t.aggressor.as_str(),
            trade_id: t.trade_id,
            exchange_ts_us: micros(t.exchange_ts),
            recv_ts_us: micros(t.recv_ts),
            engine_seq: t.seq,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Quote)]
pub struct QuoteDto<'a> {
    pub symbol: &'a str,
    /// `null` when that side of the book is empty.
    #[schema(value_type = Option<String>)]
    pub bid: Option<Dec>,
    #[schema(value_type = Option<String>)]
    pub bid_qty: Option<Dec>,
    #[schema(value_type = Option<String>)]
    pub ask: Option<Dec>,
    #[schema(value_type = Option<String>)]
    pub ask_qty: Option<Dec>,
    /// `SYNCING`, `LIVE`, `STALE`, `GAPPED`, `CROSSED`, `HALTED` or `CLOSED` (out of session).
    pub quality: &'static str,
    pub exchange_ts_us: Option<i64>,
    pub recv_ts_us: Option<i64>,
    pub engine_seq: u64,
    /// The last trade, or the venue's own report of its last trade when newer (trade
    /// id 0, side `unknown`: not a trade).
    pub last: Option<TradeDto<'a>>,
    /// The venue's day statistics, `null` when it reports none (Kite does).
    pub day: Option<DayDto>,
}

/// Day open/high/low, previous close and the change of the last price from it; a
/// value the venue did not report is `null`.
#[derive(Serialize, ToSchema)]
#[schema(as = DayStats)]
pub struct DayDto {
    #[schema(value_type = Option<String>)]
    pub open: Option<Dec>,
    #[schema(value_type = Option<String>)]
    pub high: Option<Dec>,
    #[schema(value_type = Option<String>)]
    pub low: Option<Dec>,
    #[schema(value_type = Option<String>)]
    pub close: Option<Dec>,
    /// Last price minus close.
    #[schema(value_type = Option<String>)]
    pub change: Option<Dec>,
    /// That change in percent of the close, two decimals (truncated).
    #[schema(value_type = Option<String>)]
    pub change_pct: Option<Dec>,
}

impl DayDto {
    pub fn new(inst: &Instrument, view: &InstrumentView) -> Option<Self> {
        let d = view.day?;
        let p = |v: stocksblitz_engine::Price| (v.0 != 0).then(|| Dec(v.decimal(inst.price_scale)));
        let last = view.last_price().map(|t| t.price).filter(|_| d.close.0 != 0);
        let change = last.map(|l| i128::from(l.0) - i128::from(d.close.0));
        let pct = change.map(|c| c * 10_000 / i128::from(d.close.0));
        let dec = |v: i128, scale: u8| i64::try_from(v).ok().map(|m| Dec(Decimal::new(m, scale)));
        Some(Self {
            open: p(d.open),
            high: p(d.high),
            low: p(d.low),
            close: p(d.close),
            change: change.and_then(|c| dec(c, inst.price_scale)),
            change_pct: pct.and_then(|c| dec(c, 2)),
        })
    }
}

fn side_of(
    inst: &Instrument,
    price: stocksblitz_engine::Price,
    qty: stocksblitz_engine::Qty,
) -> (Option<Dec>, Option<Dec>) {
    if qty.is_zero() {
        (None, None)
    } else {
        (
            Some(Dec(price.decimal(inst.price_scale))),
            Some(Dec(qty.decimal(inst.qty_scale))),
        )
    }
}

impl<'a> QuoteDto<'a> {
    pub fn new(inst: &'a Instrument, view: &InstrumentView) -> Self {
        let q = view.quote.unwrap_or(QuoteView {
            bbo: Bbo::default(),
            exchange_ts: UnixNanos::UNKNOWN,
            recv_ts: UnixNanos::UNKNOWN,
            seq: 0,
        });
        let (bid, bid_qty) = side_of(inst, q.bbo.bid, q.bbo.bid_qty);
        let (ask, ask_qty) = side_of(inst, q.bbo.ask, q.bbo.ask_qty);
        Self {
            symbol: &inst.symbol,
            bid,
            bid_qty,
            ask,
            ask_qty,
            quality: view.quality().as_str(),
            exchange_ts_us: micros(q.exchange_ts),
            recv_ts_us: micros(q.recv_ts),
            engine_seq: q.seq,
            last: view.last_price().map(|t| TradeDto::new(inst, t)),
            day: DayDto::new(inst, view),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Book)]
pub struct BookDto<'a> {
    pub symbol: &'a str,
    /// `[price, qty]` pairs, best first.
    #[schema(value_type = Vec<Vec<String>>)]
    pub bids: Vec<[Dec; 2]>,
    #[schema(value_type = Vec<Vec<String>>)]
    pub asks: Vec<[Dec; 2]>,
    pub quality: &'static str,
    pub engine_seq: u64,
}

impl<'a> BookDto<'a> {
    pub fn new(inst: &'a Instrument, view: &InstrumentView, depth: usize) -> Self {
        let levels = |ls: &[Level]| {
            ls.iter()
                .take(depth)
                .map(|l| {
                    [
                        Dec(l.price.decimal(inst.price_scale)),
                        Dec(l.qty.decimal(inst.qty_scale)),
                    ]
                })
                .collect()
        };
        Self {
            symbol: &inst.symbol,
            bids: levels(view.book.bids()),
            asks: levels(view.book.asks()),
            quality: view.quality().as_str(),
            engine_seq: view.book_seq,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Bar)]
pub struct BarDto<'a> {
    pub symbol: &'a str,
    pub interval: &'static str,
    pub start_us: i64,
    #[schema(value_type = String)]
    pub open: Dec,
    #[schema(value_type = String)]
    pub high: Dec,
    #[schema(value_type = String)]
    pub low: Dec,
    #[schema(value_type = String)]
    pub close: Dec,
    #[schema(value_type = String)]
    pub volume: Dec,
    pub trades: u32,
    /// `open` (forming), `closed` or `revised` (replaces the closed bar).
    pub state: &'static str,
}

impl<'a> BarDto<'a> {
    pub fn new(inst: &'a Instrument, b: &Bar, state: BarState) -> Self {
        let p = |v: stocksblitz_engine::Price| Dec(v.decimal(inst.price_scale));
        Self {
            symbol: &inst.symbol,
            interval: b.interval.as_str(),
            start_us: b.start.0.div_euclid(1_000),
            open: p(b.open),
            high: p(b.high),
            low: p(b.low),
            close: p(b.close),
            volume: Dec(b.volume.decimal(inst.qty_scale)),
            trades: b.trades,
            state: state.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::{EngineEvent, EventData, InstrumentConfig, InstrumentId, InstrumentRegistry, Price, Qty};

    fn reliance() -> InstrumentRegistry {
        InstrumentRegistry::from_config(&[InstrumentConfig {
            symbol: "RELIANCE".into(),
            venue: "nse".into(),
            venue_symbol: "738561".into(),
            kind: stocksblitz_engine::instrument::InstrumentKind::Equity,
            currency: "INR".into(),
            price_decimals: 2,
            qty_decimals: 0,
            tick_size: "0.05".into(),
            lot_size: "1".into(),
            session: "24x7".into(),
        }])
        .expect("registry")
    }

    fn event(seq: u64, data: EventData) -> EngineEvent {
        EngineEvent {
            seq,
            data,
            ..EngineEvent::EMPTY
        }
    }

    /// Day statistics as served: unreported values null, the change of the last price
    /// from the previous close in price units and in percent (two decimals).
    #[test]
    fn day_statistics_and_change() {
        let reg = reliance();
        let inst = reg.get(InstrumentId(0)).expect("instrument");
        let mut v = InstrumentView::new(InstrumentId(0), 10, 10, 10);
        assert!(DayDto::new(inst, &v).is_none());
        v.apply(&event(
            1,
            EventData::DayStats {
                open: Price(0),
                high: Price(246_000),
                low: Price(243_500),
                close: Price(244_900),
            },
        ));
        let d = serde_json::to_value(DayDto::new(inst, &v)).expect("json");
        assert_eq!(
            d,
            serde_json::json!({"open": null, "high": "2460.00", "low": "2435.00", "close": "2449.00", "change": null, "change_pct": null})
        );
        v.apply(&event(
            2,
            EventData::LastPrice {
                price: Price(245_005),
                qty: Qty(10),
            },
        ));
        let d = serde_json::to_value(DayDto::new(inst, &v)).expect("json");
        assert_eq!(
            (d["change"].as_str(), d["change_pct"].as_str()),
            (Some("1.05"), Some("0.04"))
        );
        let q = serde_json::to_value(QuoteDto::new(inst, &v)).expect("json");
        assert_eq!(q["last"]["price"], "2450.05");
        assert_eq!(q["last"]["side"], "unknown");
        assert_eq!(q["day"]["close"], "2449.00");
        v.apply(&event(
            3,
            EventData::LastPrice {
                price: Price(240_000),
                qty: Qty(1),
            },
        ));
        let d = serde_json::to_value(DayDto::new(inst, &v)).expect("json");
        assert_eq!(
            (d["change"].as_str(), d["change_pct"].as_str()),
            (Some("-49.00"), Some("-2.00"))
        );
    }
}
