//! Order entry shared by REST and WebSocket: parsing a client's order into the
//! engine's form, submitting a command, and turning engine rejections into the API's
//! error contract (stable code, HTTP status, message saying what to fix).

use axum::http::StatusCode;
use serde_json::json;
use stocksblitz_engine::orders::{
    ClientOrderId, CommandKind, NewOrder, OrderEvent, OrderEventData, OrderId, OrderType, Reject, TimeInForce,
};
use stocksblitz_engine::{Instrument, Price, Qty, Side, UnixNanos};

use super::json::NewOrderBody;
use super::{disabled, Desk, OrderService, SubmitError};
use crate::auth::Principal;
use crate::foundation::ApiError;

/// The order service; on an API node with an order replica resynchronizing with its
/// engine, a retryable refusal (its reads would be incomplete).
pub fn service(desk: &Desk) -> Result<&std::sync::Arc<OrderService>, ApiError> {
    let svc = desk.orders.as_ref().ok_or_else(disabled)?;
    if svc.remotes().iter().any(|r| !r.synced()) {
        return Err(not_synced());
    }
    Ok(svc)
}

fn not_synced() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ORDERS_NOT_SYNCED",
        "this API node is catching up with the engine's orders (after a start, a gap or a Redis restart): nothing was \
         placed, retry shortly",
    )
}

pub fn instrument<'a>(desk: &'a Desk, symbol: &str) -> Result<&'a Instrument, ApiError> {
    desk.market
        .registry
        .by_symbol(symbol)
        .ok_or_else(|| ApiError::unknown_symbol(symbol))
}

pub fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ORDER", message).with_details(json!({ "field": field }))
}

/// The HTTP status of an engine rejection.
pub fn reject_status(r: Reject) -> StatusCode {
    match r {
        Reject::OrderNotFound | Reject::UnknownInstrument => StatusCode::NOT_FOUND,
        Reject::DuplicateClientOrderId | Reject::OrderNotOpen => StatusCode::CONFLICT,
        Reject::OrderRate | Reject::CancelRate | Reject::Throttled => StatusCode::TOO_MANY_REQUESTS,
        Reject::KillSwitch | Reject::AccountBlocked | Reject::UnknownAccount => StatusCode::FORBIDDEN,
        Reject::EngineCapacity => StatusCode::SERVICE_UNAVAILABLE,
        Reject::InvalidQty
        | Reject::InvalidPrice
        | Reject::MissingPrice
        | Reject::UnexpectedPrice
        | Reject::MissingStopPrice
        | Reject::InvalidTif => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

pub fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Busy => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ENGINE_BUSY",
            "the engine's command queue is full: nothing was placed, retry shortly",
        ),
        SubmitError::Timeout { request } => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "ORDER_STATUS_UNKNOWN",
            "the engine did not answer in time: the outcome is unknown (not rejected); check GET /api/v1/orders before retrying",
        )
        .with_details(json!({ "request": request.to_string() })),
        SubmitError::JournalDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "JOURNAL_UNAVAILABLE",
            "order intake is stopped because the order journal cannot write (see /health/ready): nothing was placed",
        ),
        SubmitError::Unreachable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ENGINE_UNREACHABLE",
            "this API node cannot reach Redis, which carries orders to the engine: nothing was placed, retry shortly",
        ),
        SubmitError::KeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used with a different request body: use a new key",
        ),
        SubmitError::NotSynced => not_synced(),
        SubmitError::NotRouted => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INSTRUMENT_NOT_ROUTED",
            "no engine of this cluster takes orders for this instrument (it is listed for market data only): nothing \
             was placed",
        ),
    }
}

/// The rejection among a request's events, as an error.
pub fn rejection(events: &[OrderEvent]) -> Option<ApiError> {
    events.iter().find_map(|e| match e.data {
        // The order the command named (null for a new order, which has no id yet) and
        // the client's id for it when known.
        OrderEventData::Rejected {
            reject,
            order,
            client_id,
            ..
        } => Some(
            ApiError::new(reject_status(reject), reject.code(), reject.message()).with_details(json!({
                "order_id": order.map(|o| o.0.to_string()),
                "client_order_id": (!client_id.is_empty()).then(|| client_id.as_str()),
            })),
        ),
        _ => None,
    })
}

pub async fn submit(desk: &Desk, p: &Principal, kind: CommandKind) -> Result<Vec<OrderEvent>, ApiError> {
    let events = service(desk)?.submit(p.account, kind).await.map_err(submit_error)?;
    match rejection(&events) {
        Some(e) => Err(e),
        None => Ok(events),
    }
}

pub fn parse_price(field: &str, s: &str, i: &Instrument) -> Result<Price, ApiError> {
    Price::parse_str(s, i.price_scale).map_err(|e| bad(field, format!("{field}: {e}")))
}

pub fn parse_qty(field: &str, s: &str, i: &Instrument) -> Result<Qty, ApiError> {
    Qty::parse_str(s, i.qty_scale).map_err(|e| bad(field, format!("{field}: {e}")))
}

/// An order body (JSON bytes) into the engine's form.
pub fn parse_order(desk: &Desk, body: &[u8]) -> Result<NewOrder, ApiError> {
    let b: NewOrderBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
            format!("invalid order JSON: {e}"),
        )
    })?;
    order_from(desk, b)
}

/// A decoded order body into the engine's form.
pub fn order_from(desk: &Desk, b: NewOrderBody) -> Result<NewOrder, ApiError> {
    let i = instrument(desk, &b.symbol)?;
    let side = match b.side.as_str() {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        _ => return Err(bad("side", "side must be \"buy\" or \"sell\"")),
    };
    let kind = match b.kind.as_str() {
        "limit" => OrderType::Limit,
        "market" => OrderType::Market,
        "stop" => OrderType::Stop,
        "stop_limit" => OrderType::StopLimit,
        _ => return Err(bad("type", "type must be limit, market, stop or stop_limit")),
    };
    let default_tif = if kind == OrderType::Market { "ioc" } else { "gtc" };
    let tif = match (b.time_in_force.as_deref().unwrap_or(default_tif), b.expire_time) {
        ("gtc", None) => TimeInForce::Gtc,
        ("day", None) => TimeInForce::Day,
        ("ioc", None) => TimeInForce::Ioc,
        ("fok", None) => TimeInForce::Fok,
        ("gtd", Some(us)) => TimeInForce::Gtd(UnixNanos(us.saturating_mul(1_000))),
        ("gtd", None) => {
            return Err(bad(
                "expire_time",
                "gtd needs expire_time (microseconds since the epoch)",
            ))
        }
        (_, Some(_)) => return Err(bad("expire_time", "expire_time is only for time_in_force \"gtd\"")),
        _ => return Err(bad("time_in_force", "time_in_force must be gtc, day, ioc, fok or gtd")),
    };
    // Without one, the engine generates `auto-<n>` (unique per account, across restarts).
    let client_id = match b.client_order_id.as_deref() {
        Some(c) => ClientOrderId::new(c).map_err(|e| bad("client_order_id", e.to_string()))?,
        None => ClientOrderId::EMPTY,
    };
    Ok(NewOrder {
        instrument: i.id,
        client_id,
        side,
        kind,
        tif,
        price: b
            .price
            .as_deref()
            .map(|s| parse_price("price", s, i))
            .transpose()?
            .unwrap_or(Price(0)),
        stop_price: b
            .stop_price
            .as_deref()
            .map(|s| parse_price("stop_price", s, i))
            .transpose()?
            .unwrap_or(Price(0)),
        qty: parse_qty("qty", &b.qty, i)?,
        post_only: b.post_only,
        reduce_only: b.reduce_only,
    })
}

/// An order id as clients send it (a decimal string).
pub fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    raw.parse::<u64>()
        .map(OrderId)
        .map_err(|_| ApiError::invalid_parameter("id", format!("order id must be a decimal integer, got {raw:?}")))
}

pub fn not_found(id: OrderId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        Reject::OrderNotFound.code(),
        Reject::OrderNotFound.message(),
    )
    .with_details(json!({ "order_id": id.0.to_string() }))
}

/// A replace of `id` (qty and/or price as decimal strings) checked against the
/// account's own order and its instrument's precision.
pub fn replace_command(
    desk: &Desk,
    p: &Principal,
    id: OrderId,
    qty: Option<&str>,
    price: Option<&str>,
) -> Result<CommandKind, ApiError> {
    if qty.is_none() && price.is_none() {
        return Err(bad("qty", "give qty and/or price to change"));
    }
    let instrument = service(desk)?
        .order(p.account, id)
        .map(|r| r.order.instrument)
        .ok_or_else(|| not_found(id))?;
    let i = desk.market.registry.get(instrument).ok_or_else(|| not_found(id))?;
    let qty = qty.map(|s| parse_qty("qty", s, i)).transpose()?;
    let price = price.map(|s| parse_price("price", s, i)).transpose()?;
    Ok(CommandKind::Replace { order: id, qty, price })
}
