//! Market-data REST routes, all served from the API's read model (never the engine):
//! quotes from the WebSocket hub's encoded quotes (shared bytes, encoded once per change
//! by the fan-out), the rest from the mirror.

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stocksblitz_engine::{BarInterval, BarState, Instrument, UnixNanos};
use utoipa::ToSchema;

use super::reply::{encoded_json, ok};
use crate::dto::{micros, BarDto, BookDto, DayDto, Dec, InstrumentDto, QuoteDto, TradeDto};
use crate::foundation::ApiError;
use crate::market::InstrumentView;
use crate::state::AppState;
use crate::ws::channel::{ChannelKey, ChannelKind};
use crate::ws::hub::Hub;

type ApiResult = Result<Response, ApiError>;

#[derive(Serialize, ToSchema)]
pub struct InstrumentList<'a> {
    pub instruments: Vec<InstrumentDto<'a>>,
}

#[derive(Serialize, ToSchema)]
pub struct QuoteList<'a> {
    pub quotes: Vec<QuoteDto<'a>>,
}

#[derive(Serialize, ToSchema)]
pub struct TradeList<'a> {
    pub symbol: &'a str,
    /// Newest first.
    pub trades: Vec<TradeDto<'a>>,
}

#[derive(Serialize, ToSchema)]
pub struct BarList<'a> {
    pub symbol: &'a str,
    pub interval: &'static str,
    /// Oldest first.
    pub bars: Vec<BarDto<'a>>,
}

#[derive(Serialize, ToSchema)]
pub struct InstrumentStatus<'a> {
    pub symbol: &'a str,
    pub venue: &'a str,
    pub session: String,
    pub in_session: bool,
    pub quality: Option<&'static str>,
    pub last_update_us: Option<i64>,
    /// The last price (trade or venue report), `null` before any.
    #[schema(value_type = Option<String>)]
    pub last: Option<Dec>,
    pub day: Option<DayDto>,
}

impl<'a> InstrumentStatus<'a> {
    pub fn new(inst: &'a Instrument, view: Option<&InstrumentView>, now: UnixNanos) -> Self {
        Self {
            symbol: &inst.symbol,
            venue: &inst.venue,
            session: inst.session.describe(),
            in_session: inst.session.is_open(now),
            quality: view.map(|v| v.quality().as_str()),
            last_update_us: view.and_then(|v| micros(v.last_update)),
            last: view
                .and_then(|v| v.last_price())
                .map(|t| Dec(t.price.decimal(inst.price_scale))),
            day: view.and_then(|v| DayDto::new(inst, v)),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MarketStatus<'a> {
    pub time_us: Option<i64>,
    pub instruments: Vec<InstrumentStatus<'a>>,
}

/// Most symbols in one batch quote request.
const MAX_BATCH: usize = 100;

fn instrument<'a>(app: &'a AppState, symbol: &str) -> Result<&'a Instrument, ApiError> {
    app.desk
        .market
        .registry
        .by_symbol(symbol)
        .ok_or_else(|| ApiError::unknown_symbol(symbol))
}

/// Parses an optional integer query parameter within `lo..=hi`.
fn int_param(name: &str, v: Option<&str>, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    match v.parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::invalid_parameter(
            name,
            format!("{name} must be an integer from {lo} to {hi}, got {v:?}"),
        )),
    }
}

#[utoipa::path(
    get,
    path = "/instruments",
    tag = "market",
    summary = "The instrument registry",
    responses((status = 200, description = "OK", body = InstrumentList)),
)]
pub async fn instruments(State(app): State<AppState>) -> ApiResult {
    ok(&InstrumentList {
        instruments: app.desk.market.registry.iter().map(InstrumentDto::new).collect(),
    })
}

#[utoipa::path(
    get,
    path = "/quotes/{symbol}",
    tag = "market",
    summary = "Best bid/offer, last trade and data quality",
    params(("symbol" = String, Path, description = "Our symbol", example = "BTCUSDT")),
    responses((status = 200, description = "OK", body = QuoteDto)),
)]
pub async fn quote(State(app): State<AppState>, Path(symbol): Path<String>) -> ApiResult {
    let inst = instrument(&app, &symbol)?;
    let body = cached_quote(&app.hub, inst).ok_or_else(|| ApiError::unknown_symbol(&symbol))?;
    Ok(encoded_json(Bytes::from(body)))
}

/// `inst`'s quote as the fan-out last encoded it (once per change, for the WebSocket
/// `quotes` channel and REST alike; the same [`QuoteDto`] in field order): a read clones
/// shared bytes, serializes nothing and never waits for the fan-out's lock on the
/// mirror.
pub fn cached_quote(hub: &Hub, inst: &Instrument) -> Option<Utf8Bytes> {
    let ch = hub.channel(ChannelKey {
        kind: ChannelKind::Quotes,
        instrument: inst.id,
    })?;
    let latest = ch.latest();
    Some(latest.data.clone())
}

/// The `symbols=` list of a batch quote request: 1 to [`MAX_BATCH`] comma-separated
/// symbols, none of them empty (`symbols=,,` or `A,,B` is a client mistake, not a
/// request for nothing).
fn batch_symbols(raw: &str) -> Result<Vec<&str>, ApiError> {
    if raw.trim().is_empty() {
        return Err(ApiError::invalid_parameter(
            "symbols",
            "symbols is required: ?symbols=BTCUSDT,ETHUSDT",
        ));
    }
    let symbols: Vec<&str> = raw.split(',').map(str::trim).collect();
    if let Some(i) = symbols.iter().position(|s| s.is_empty()) {
        return Err(ApiError::invalid_parameter(
            "symbols",
            format!(
                "symbols entry {} of {} is empty: list symbols separated by single commas, e.g. ?symbols=BTCUSDT,ETHUSDT",
                i + 1,
                symbols.len()
            ),
        ));
    }
    if symbols.len() > MAX_BATCH {
        return Err(ApiError::invalid_parameter(
            "symbols",
            format!("at most {MAX_BATCH} symbols per request, got {}", symbols.len()),
        ));
    }
    Ok(symbols)
}

#[derive(Deserialize)]
pub struct QuotesParams {
    symbols: Option<String>,
}

#[utoipa::path(
    get,
    path = "/quotes",
    tag = "market",
    summary = "Quotes for several symbols",
    params(("symbols" = String, Query, description = "Comma-separated symbols, at most 100", example = "BTCUSDT,ETHUSDT")),
    responses((status = 200, description = "OK", body = QuoteList)),
)]
pub async fn quotes(State(app): State<AppState>, Query(p): Query<QuotesParams>) -> ApiResult {
    let raw = p.symbols.unwrap_or_default();
    let symbols = batch_symbols(&raw)?;
    let unknown: Vec<&str> = symbols
        .iter()
        .copied()
        .filter(|s| app.desk.market.registry.by_symbol(s).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "UNKNOWN_SYMBOL",
            format!("unknown symbols: {}; see GET /api/v1/instruments", unknown.join(", ")),
        )
        .with_details(json!({ "symbols": unknown })));
    }
    let mut seen = std::collections::HashSet::new();
    let quotes: Vec<Utf8Bytes> = symbols
        .iter()
        .filter(|s| seen.insert(**s))
        .filter_map(|s| app.desk.market.registry.by_symbol(s))
        .filter_map(|inst| cached_quote(&app.hub, inst))
        .collect();
    // `{"quotes":[...]}` around the cached quotes, as `QuoteList` serializes.
    let mut body = Vec::with_capacity(14 + quotes.iter().map(|q| q.as_str().len() + 1).sum::<usize>());
    body.extend_from_slice(b"{\"quotes\":[");
    for (i, q) in quotes.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(q.as_str().as_bytes());
    }
    body.extend_from_slice(b"]}");
    Ok(encoded_json(Bytes::from(body)))
}

#[derive(Deserialize)]
pub struct BookParams {
    depth: Option<String>,
}

#[utoipa::path(
    get,
    path = "/book/{symbol}",
    tag = "market",
    summary = "L2 book, best first",
    params(("symbol" = String, Path, description = "Our symbol", example = "BTCUSDT"), ("depth" = Option<u32>, Query, description = "Levels per side (default 10)")),
    responses((status = 200, description = "OK", body = BookDto)),
)]
pub async fn book(State(app): State<AppState>, Path(symbol): Path<String>, Query(p): Query<BookParams>) -> ApiResult {
    let inst = instrument(&app, &symbol)?;
    let depth = int_param("depth", p.depth.as_deref(), 1, app.book_max_levels as i64)?.unwrap_or(10) as usize;
    let mirror = app.desk.market.mirror.read();
    let view = mirror.get(inst.id).ok_or_else(|| ApiError::unknown_symbol(&symbol))?;
    ok(&BookDto::new(inst, view, depth))
}

#[derive(Deserialize)]
pub struct TradesParams {
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/trades/{symbol}",
    tag = "market",
    summary = "Recent trades, newest first",
    params(("symbol" = String, Path, description = "Our symbol", example = "BTCUSDT"), ("limit" = Option<u32>, Query, description = "How many (default 100)")),
    responses((status = 200, description = "OK", body = TradeList)),
)]
pub async fn trades(
    State(app): State<AppState>,
    Path(symbol): Path<String>,
    Query(p): Query<TradesParams>,
) -> ApiResult {
    let inst = instrument(&app, &symbol)?;
    let max = app.config.trades_history as i64;
    let limit = int_param("limit", p.limit.as_deref(), 1, max)?.unwrap_or(max.min(100)) as usize;
    let mirror = app.desk.market.mirror.read();
    let view = mirror.get(inst.id).ok_or_else(|| ApiError::unknown_symbol(&symbol))?;
    // Newest first.
    ok(&TradeList {
        symbol: &inst.symbol,
        trades: view
            .trades
            .iter()
            .rev()
            .take(limit)
            .map(|t| TradeDto::new(inst, t))
            .collect(),
    })
}

#[derive(Deserialize)]
pub struct HistoricalParams {
    interval: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

/// Bars oldest first; `from`/`to` are Unix milliseconds (inclusive bounds on bar start).
#[utoipa::path(
    get,
    path = "/historical/{symbol}",
    tag = "market",
    summary = "Bars, oldest first",
    params(("symbol" = String, Path, description = "Our symbol", example = "BTCUSDT"), ("interval" = String, Query, description = "1s or 1m", example = "1m"), ("from" = Option<i64>, Query, description = "Earliest bar start, Unix ms"), ("to" = Option<i64>, Query, description = "Latest bar start, Unix ms"), ("limit" = Option<u32>, Query, description = "Most bars")),
    responses((status = 200, description = "OK", body = BarList)),
)]
pub async fn historical(
    State(app): State<AppState>,
    Path(symbol): Path<String>,
    Query(p): Query<HistoricalParams>,
) -> ApiResult {
    let inst = instrument(&app, &symbol)?;
    let interval = match p.interval.as_deref() {
        None => {
            return Err(ApiError::invalid_parameter(
                "interval",
                "interval is required: 1s or 1m",
            ))
        }
        Some(s) => BarInterval::parse(s)
            .ok_or_else(|| ApiError::invalid_parameter("interval", format!("interval must be 1s or 1m, got {s:?}")))?,
    };
    let from = int_param("from", p.from.as_deref(), 0, i64::MAX / UnixNanos::NANOS_PER_MILLI)?;
    let to = int_param("to", p.to.as_deref(), 0, i64::MAX / UnixNanos::NANOS_PER_MILLI)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::invalid_parameter("from", "from must not be after to"));
        }
    }
    let max = app.config.bars_history as i64;
    let limit = int_param("limit", p.limit.as_deref(), 1, max)?.unwrap_or(max) as usize;
    let in_range = |start: UnixNanos| {
        let ms = start.millis();
        from.is_none_or(|f| ms >= f) && to.is_none_or(|t| ms <= t)
    };
    let mirror = app.desk.market.mirror.read();
    let view = mirror.get(inst.id).ok_or_else(|| ApiError::unknown_symbol(&symbol))?;
    let series = view.bars(interval);
    let mut bars: Vec<_> = series
        .closed
        .iter()
        .filter(|b| in_range(b.start))
        .map(|b| BarDto::new(inst, b, BarState::Closed))
        .collect();
    if let Some(cur) = series.current.as_ref().filter(|b| in_range(b.start)) {
        bars.push(BarDto::new(inst, cur, BarState::Open));
    }
    let skip = bars.len().saturating_sub(limit);
    let bars: Vec<_> = bars.into_iter().skip(skip).collect();
    ok(&BarList {
        symbol: &inst.symbol,
        interval: interval.as_str(),
        bars,
    })
}

#[utoipa::path(
    get,
    path = "/market-status",
    tag = "market",
    summary = "Per instrument: session, in session now, data quality, last price, day statistics",
    responses((status = 200, description = "OK", body = MarketStatus)),
)]
pub async fn market_status(State(app): State<AppState>) -> ApiResult {
    let now = UnixNanos::now();
    let mirror = app.desk.market.mirror.read();
    let list: Vec<_> = app
        .desk
        .market
        .registry
        .iter()
        .map(|inst| InstrumentStatus::new(inst, mirror.get(inst.id), now))
        .collect();
    ok(&MarketStatus {
        time_us: micros(now),
        instruments: list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::{EngineEvent, EventData, InstrumentConfig, InstrumentId, InstrumentRegistry, Price, Qty};

    /// An instrument's market status before any data, with a day's statistics and then
    /// with a last price: the typed body is byte for byte the JSON
    /// it replaced.
    #[test]
    fn market_status_entries_serialize_as_before() {
        let reg = InstrumentRegistry::from_config(&[InstrumentConfig {
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
        .expect("registry");
        let inst = reg.get(InstrumentId(0)).expect("instrument");
        let before = |view: Option<&InstrumentView>, now: UnixNanos| {
            serde_json::to_string(&json!({
                "symbol": inst.symbol,
                "venue": inst.venue,
                "session": inst.session.describe(),
                "in_session": inst.session.is_open(now),
                "quality": view.map(|v| v.quality().as_str()),
                "last_update_us": view.and_then(|v| micros(v.last_update)),
                "last": view.and_then(|v| v.last_price()).map(|t| Dec(t.price.decimal(inst.price_scale))),
                "day": view.and_then(|v| DayDto::new(inst, v)),
            }))
            .unwrap()
        };
        let typed = |v: &InstrumentStatus| serde_json::to_string(&crate::http::reply::value(v).unwrap()).unwrap();
        let times = [
            UnixNanos(1_767_236_400_000_000_000),
            UnixNanos(1_767_247_200_000_000_000),
        ];
        for now in times {
            assert_eq!(typed(&InstrumentStatus::new(inst, None, now)), before(None, now));
        }
        let mut view = InstrumentView::new(InstrumentId(0), 10, 10, 10);
        let events = [
            EventData::DayStats {
                open: Price(0),
                high: Price(246_000),
                low: Price(243_500),
                close: Price(244_900),
            },
            EventData::LastPrice {
                price: Price(245_005),
                qty: Qty(10),
            },
        ];
        for (seq, data) in events.into_iter().enumerate() {
            for now in times {
                assert_eq!(
                    typed(&InstrumentStatus::new(inst, Some(&view), now)),
                    before(Some(&view), now)
                );
            }
            view.apply(&EngineEvent {
                seq: seq as u64 + 1,
                data,
                ..EngineEvent::EMPTY
            });
        }
        for now in times {
            let got = typed(&InstrumentStatus::new(inst, Some(&view), now));
            assert_eq!(got, before(Some(&view), now));
            assert!(got.contains("\"last\":\"2450.05\""), "{got}");
            assert!(got.contains("\"close\":\"2449.00\""), "{got}");
        }
    }

    proptest::proptest! {
        /// Any list of entries (symbols, empty, blank), joined by commas: accepted exactly
        /// when it has 1..=MAX_BATCH entries and none is blank, and then the trimmed
        /// entries come back in order.
        #[test]
        fn batch_symbols_refuses_every_empty_entry(
            entries in proptest::collection::vec(
                proptest::prop_oneof![
                    "[A-Z]{1,8}",
                    proptest::strategy::Just(String::new()),
                    " {1,3}",
                    " ?[A-Z-]{1,8} ?",
                ],
                0..120,
            ),
        ) {
            let raw = entries.join(",");
            let got = batch_symbols(&raw);
            let blank = entries.iter().any(|e| e.trim().is_empty());
            let ok = !entries.is_empty() && !blank && entries.len() <= MAX_BATCH;
            match got {
                Ok(list) => {
                    proptest::prop_assert!(ok, "accepted {raw:?}");
                    let want: Vec<&str> = entries.iter().map(|e| e.trim()).collect();
                    proptest::prop_assert_eq!(list, want);
                }
                Err(e) => {
                    proptest::prop_assert!(!ok, "refused {raw:?}");
                    proptest::prop_assert_eq!(e.code, "INVALID_PARAMETER");
                    proptest::prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
                }
            }
        }
    }
}
