//! Order, fill, position, risk and admin routes (issue: order engine). Commands go to
//! the engine through [`OrderService`]; queries read the API's order store.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stocksblitz_engine::orders::{
    AccountId, CommandKind, IdemTag, KillScope, OrderEvent, OrderEventData, RiskLimitsConfig, TradingState,
};
use stocksblitz_engine::UnixNanos;
use utoipa::ToSchema;

use super::reply::ok;
use crate::auth::{Principal, Role};
use crate::foundation::ApiError;
use crate::orders::entry::{
    bad, instrument, not_found, order_id, parse_order, rejection, replace_command, service, submit, submit_error,
};
use crate::orders::idempotency::{Claim, MAX_KEY_LEN};
use crate::orders::json::{
    anomaly_visible, events_json, AccountRiskJson, AnomalyJson, FillJson, LimitsJson, NewOrderBody, OrderJson,
    OrderResult, PositionJson, ReplaceBody,
};
use crate::orders::pages;
use crate::orders::Desk;
use crate::orders::{OrderService, SubmitError};
use stocksblitz_engine::orders::store::{OrderRecord, OrderStore};
use stocksblitz_engine::orders::Fill;
use stocksblitz_engine::surveillance::Severity;

type ApiResult = Result<Response, ApiError>;

/// Most items in one page.
const MAX_PAGE: usize = 500;

/// A page size from `limit` (default 100).
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid_parameter(
            "limit",
            format!("limit must be 1 to {MAX_PAGE}"),
        ))
    }
}

/// An optional `cursor`: the `next_cursor` of a previous page.
/// Where a page starts in each read model, and the read models (one per engine on an
/// API node), read-locked.
fn replicas<'a>(
    svc: &'a OrderService,
    cursor: Option<&str>,
) -> Result<(pages::Cursor, Vec<parking_lot::RwLockReadGuard<'a, OrderStore>>), ApiError> {
    let before = pages::parse(cursor, svc.stores().len())?;
    Ok((before, svc.stores().iter().map(|s| s.read()).collect()))
}

/// An optional `symbol` query filter.
fn symbol_filter(desk: &Desk, symbol: Option<&str>) -> Result<Option<stocksblitz_engine::InstrumentId>, ApiError> {
    symbol.map(|s| instrument(desk, s).map(|i| i.id)).transpose()
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.split(';').next().map(str::trim) == Some("application/json") {
        Ok(())
    } else {
        Err(ApiError::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, ""))
    }
}

fn respond(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

#[derive(Serialize, ToSchema)]
pub struct TestResult {
    pub ok: bool,
    pub message: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct OrderList<'a> {
    /// Newest first.
    pub orders: Vec<OrderJson<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MassCancelResult {
    pub cancelled: u32,
}

#[derive(Serialize, ToSchema)]
pub struct FillList<'a> {
    pub fills: Vec<FillJson<'a>>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PositionList<'a> {
    pub positions: Vec<PositionJson<'a>>,
}

#[derive(Serialize, ToSchema)]
pub struct AnomalyList<'a> {
    pub anomalies: Vec<AnomalyJson<'a>>,
    pub next_since: u64,
}

#[derive(Serialize, ToSchema)]
pub struct KillSwitchResult {
    pub scope: String,
    pub active: bool,
    /// Orders cancelled by switching it on.
    pub cancelled: u32,
}

#[derive(Serialize, ToSchema)]
pub struct LimitsResult {
    pub account: String,
    pub limits: LimitsJson,
}

#[derive(Serialize, ToSchema)]
pub struct TradingStateResult {
    pub account: String,
    pub trading_state: &'static str,
}

// The values the kill switch's `scope` accepts (for the document; the handler matches
// them with the fields each needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = KillScope)]
pub enum KillScopeName {
    Global,
    Account,
    Instrument,
}

// The engine's `TradingState` as the document names its values (a test compares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TradingState)]
pub enum TradingStateName {
    Active,
    ReduceOnly,
    Throttled,
    Blocked,
}

// The engine's `SelfTradeMode` as the document names its values (a test compares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SelfTrade)]
pub enum SelfTradeName {
    CancelNewest,
    CancelOldest,
    CancelBoth,
}

/// `PUT /api/v1/admin/risk-limits/{account}`: the account's whole set of limits.
// The handler reads the engine's `RiskLimitsConfig` (the `[risk]` config's shape; the
// engine does not depend on the document's crate); this is that shape for the
// document, and a test checks the two accept the same fields.
#[derive(Serialize, ToSchema)]
pub struct SetRiskLimits {
    #[schema(example = "100000")]
    pub max_order_qty: String,
    #[schema(example = "1000000")]
    pub max_order_notional: String,
    pub price_collar_bps: u32,
    pub max_open_orders: u32,
    #[schema(example = "500000")]
    pub max_position_qty: String,
    #[schema(example = "5000000")]
    pub max_gross_exposure: String,
    #[schema(example = "100000")]
    pub daily_loss_limit: String,
    pub orders_per_sec: u32,
    pub cancels_per_sec: u32,
    pub self_trade: SelfTradeName,
}

#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    summary = "Place an order",
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and body within 24 h: the original answer")),
    request_body(content = NewOrderBody, content_type = "application/json"),
    responses((status = 201, description = "OK", body = OrderResult)),
    security(("bearer" = []), ("hmac" = [])),
    extensions(("x-audit-action" = json!("order.place")), ("x-signed-operation" = json!("place"))),
)]
pub async fn place(State(desk): State<Desk>, p: Principal, headers: HeaderMap, body: Bytes) -> ApiResult {
    p.require(Role::Trader)?;
    require_json(&headers)?;
    // A header that is not visible ASCII is refused by the key check (as empty).
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().ok().map(str::to_owned).unwrap_or_default());
    let (status, value) = place_keyed(&desk, &p, key.as_deref(), &body).await?;
    Ok(respond(status, value))
}

/// Checks an idempotency key (from the header or the WebSocket message).
pub fn idempotency_key(k: &str) -> Result<&str, ApiError> {
    if !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        Ok(k)
    } else {
        Err(ApiError::invalid_parameter(
            "Idempotency-Key",
            format!("Idempotency-Key must be 1-{MAX_KEY_LEN} visible ASCII characters"),
        ))
    }
}

/// Places an order from its JSON body, honouring an idempotency key: shared by `POST
/// /orders` and the WebSocket `order.new`, so both give the same guarantees. Returns
/// the status and body to answer with (a replay may carry the original refusal).
pub async fn place_keyed(
    desk: &Desk,
    p: &Principal,
    key: Option<&str>,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let svc = service(desk)?;
    let key = key.map(idempotency_key).transpose()?;
    let tag = key.map(|k| IdemTag::new(k, body));
    if let (Some(k), Some(tag)) = (key, &tag) {
        let claim = svc.claim_key(p.account, k, body).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "IDEMPOTENCY_UNAVAILABLE",
                "the idempotency store (Redis) cannot be reached: nothing was placed; retry with the same key",
            )
            .with_details(json!({ "reason": e.0 }))
        })?;
        match claim {
            Claim::Proceed => {
                // A key answered before a restart lives on in the journaled read model.
                let prior = svc.keyed(p.account, &tag.key, UnixNanos::now());
                if let Some(prior) = prior {
                    if prior.body != tag.body {
                        svc.finish_key(p.account, k, body, StatusCode::OK, &Value::Null, false)
                            .await;
                        return Err(key_reused());
                    }
                    let events = match prior.events() {
                        Ok(events) => events,
                        Err(e) => {
                            tracing::error!(error = %e, "a kept idempotent answer does not decode");
                            svc.finish_key(p.account, k, body, StatusCode::OK, &Value::Null, false)
                                .await;
                            return Err(ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR, ""));
                        }
                    };
                    let (status, value, _) = answer(placement_answer(desk, p.account, &events));
                    svc.finish_key(p.account, k, body, status, &value, true).await;
                    return Ok((status, value));
                }
            }
            Claim::Replay { status, body } => return Ok((status, body)),
            Claim::Mismatch => return Err(key_reused()),
            Claim::InFlight => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "IDEMPOTENCY_KEY_IN_FLIGHT",
                    "a request with this Idempotency-Key is still being processed: retry shortly",
                ))
            }
            Claim::Full => return Err(submit_error(SubmitError::Busy)),
        }
    }
    let outcome = place_inner(desk, svc, p, body, tag).await;
    if let Some(k) = key {
        // Final answers (placed or rejected) are remembered; busy/unknown are not.
        let (status, value, final_outcome) = answer(outcome.clone());
        svc.finish_key(p.account, k, body, status, &value, final_outcome).await;
    }
    outcome.map(|v| (StatusCode::CREATED, v))
}

fn key_reused() -> ApiError {
    submit_error(SubmitError::KeyReused)
}

/// A placement's outcome as the status and body an idempotent replay answers with,
/// and whether it is final (busy and unknown are not: the key is released).
fn answer(outcome: Result<Value, ApiError>) -> (StatusCode, Value, bool) {
    match outcome {
        Ok(v) => (StatusCode::CREATED, v, true),
        Err(e) => (
            e.status,
            json!({ "error": { "code": e.code, "message": e.message, "details": e.details } }),
            !matches!(
                e.code,
                "ENGINE_BUSY"
                    | "ORDER_STATUS_UNKNOWN"
                    | "JOURNAL_UNAVAILABLE"
                    | "ENGINE_UNREACHABLE"
                    | "ORDERS_NOT_SYNCED"
            ),
        ),
    }
}

/// The answer to a placement, from its events.
fn placement_answer(desk: &Desk, account: AccountId, events: &[OrderEvent]) -> Result<Value, ApiError> {
    match rejection(events) {
        Some(e) => Err(e),
        None => Ok(events_json(events, &desk.market.registry, account, None)),
    }
}

async fn place_inner(
    desk: &Desk,
    svc: &OrderService,
    p: &Principal,
    body: &[u8],
    tag: Option<IdemTag>,
) -> Result<Value, ApiError> {
    let order = parse_order(desk, body)?;
    let events = svc
        .submit_keyed(p.account, CommandKind::New(order), tag)
        .await
        .map_err(submit_error)?;
    placement_answer(desk, p.account, &events)
}

#[utoipa::path(
    post,
    path = "/orders/test",
    tag = "orders",
    summary = "Run every check on an order without placing it",
    request_body(content = NewOrderBody, content_type = "application/json"),
    responses((status = 200, description = "OK", body = TestResult)),
    security(("bearer" = []), ("hmac" = [])),
    extensions(("x-audit-action" = json!("order.test")), ("x-signed-operation" = json!("place"))),
)]
pub async fn test_order(State(desk): State<Desk>, p: Principal, headers: HeaderMap, body: Bytes) -> ApiResult {
    p.require(Role::Trader)?;
    require_json(&headers)?;
    service(&desk)?;
    let order = parse_order(&desk, &body)?;
    submit(&desk, &p, CommandKind::Test(order)).await?;
    ok(&TestResult {
        ok: true,
        message: "the order passed every check; nothing was placed",
    })
}

#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    summary = "One of your orders",
    params(("id" = String, Path, description = "The order id")),
    responses((status = 200, description = "OK", body = OrderJson)),
    security(("bearer" = []), ("hmac" = [])),
)]
pub async fn get_order(State(desk): State<Desk>, p: Principal, Path(raw): Path<String>) -> ApiResult {
    let id = order_id(&raw)?;
    let r = service(&desk)?.order(p.account, id).ok_or_else(|| not_found(id))?;
    let i = desk
        .market
        .registry
        .get(r.order.instrument)
        .ok_or_else(|| not_found(id))?;
    ok(&OrderJson::new(&r.order, i))
}

#[utoipa::path(
    delete,
    path = "/orders/{id}",
    tag = "orders",
    summary = "Cancel an order",
    params(("id" = String, Path, description = "The order id")),
    responses((status = 200, description = "OK", body = OrderResult)),
    security(("bearer" = []), ("hmac" = [])),
    extensions(("x-audit-action" = json!("order.cancel")), ("x-signed-operation" = json!("cancel"))),
)]
pub async fn cancel_order(State(desk): State<Desk>, p: Principal, Path(raw): Path<String>) -> ApiResult {
    p.require(Role::Trader)?;
    let id = order_id(&raw)?;
    let events = submit(&desk, &p, CommandKind::Cancel { order: id }).await?;
    ok(&OrderResult::new(&events, &desk.market.registry, p.account, Some(id)))
}

#[utoipa::path(
    patch,
    path = "/orders/{id}",
    tag = "orders",
    summary = "Replace an order's quantity and/or price",
    params(("id" = String, Path, description = "The order id")),
    request_body(content = ReplaceBody, content_type = "application/json"),
    responses((status = 200, description = "OK", body = OrderResult)),
    security(("bearer" = []), ("hmac" = [])),
    extensions(("x-audit-action" = json!("order.replace")), ("x-signed-operation" = json!("modify"))),
)]
pub async fn replace_order(
    State(desk): State<Desk>,
    p: Principal,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    p.require(Role::Trader)?;
    require_json(&headers)?;
    let id = order_id(&raw)?;
    let b: ReplaceBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
            format!("invalid replace JSON: {e}"),
        )
    })?;
    let kind = replace_command(&desk, &p, id, b.qty.as_deref(), b.price.as_deref())?;
    let events = submit(&desk, &p, kind).await?;
    ok(&OrderResult::new(&events, &desk.market.registry, p.account, Some(id)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    symbol: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    summary = "Your orders, newest first, paged",
    params(("symbol" = Option<String>, Query, description = "Only this symbol"), ("status" = Option<String>, Query, description = "open, closed or all (default)"), ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "OK", body = OrderList)),
    security(("bearer" = []), ("hmac" = [])),
)]
pub async fn list_orders(State(desk): State<Desk>, p: Principal, Query(q): Query<ListParams>) -> ApiResult {
    let instrument = symbol_filter(&desk, q.symbol.as_deref())?;
    let want_open = match q.status.as_deref().unwrap_or("all") {
        "all" => None,
        "open" => Some(true),
        "closed" => Some(false),
        other => {
            return Err(ApiError::invalid_parameter(
                "status",
                format!("status must be open, closed or all, got {other:?}"),
            ))
        }
    };
    let limit = page_limit(q.limit)?;
    let (before, stores) = replicas(service(&desk)?, q.cursor.as_deref())?;
    let registry = &desk.market.registry;
    let lists = stores
        .iter()
        .zip(&before)
        .map(|(store, before)| {
            Box::new(store.orders(p.account, *before).filter(move |r| {
                instrument.is_none_or(|i| r.order.instrument == i)
                    && want_open.is_none_or(|o| r.order.status.is_open() == o)
                    && registry.get(r.order.instrument).is_some()
            })) as Box<dyn Iterator<Item = _>>
        })
        .collect();
    // Newest first; the next page holds the orders that arrived before the last ones here.
    let (page, next_cursor) = pages::page(
        lists,
        &before,
        limit,
        |r: &&OrderRecord| (r.order.created, r.seq),
        |r| r.seq,
    );
    let orders = page
        .into_iter()
        .filter_map(|r| registry.get(r.order.instrument).map(|i| OrderJson::new(&r.order, i)))
        .collect();
    ok(&OrderList { orders, next_cursor })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MassCancelParams {
    symbol: Option<String>,
}

#[utoipa::path(
    delete,
    path = "/orders",
    tag = "orders",
    summary = "Cancel all your open orders (or one symbol's)",
    params(("symbol" = Option<String>, Query, description = "Only this symbol")),
    responses((status = 200, description = "OK", body = MassCancelResult)),
    security(("bearer" = []), ("hmac" = [])),
    extensions(("x-audit-action" = json!("order.mass_cancel")), ("x-signed-operation" = json!("mass_cancel"))),
)]
pub async fn mass_cancel(State(desk): State<Desk>, p: Principal, Query(q): Query<MassCancelParams>) -> ApiResult {
    p.require(Role::Trader)?;
    let instrument = symbol_filter(&desk, q.symbol.as_deref())?;
    let events = submit(&desk, &p, CommandKind::MassCancel { instrument }).await?;
    ok(&MassCancelResult {
        cancelled: done_count(&events),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillParams {
    symbol: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/fills",
    tag = "orders",
    summary = "Your fills, newest first, paged",
    params(("symbol" = Option<String>, Query, description = "Only this symbol"), ("limit" = Option<u32>, Query, description = "Page size, 1-500 (default 100)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "OK", body = FillList)),
    security(("bearer" = []), ("hmac" = [])),
)]
pub async fn fills(State(desk): State<Desk>, p: Principal, Query(q): Query<FillParams>) -> ApiResult {
    let instrument = symbol_filter(&desk, q.symbol.as_deref())?;
    let limit = page_limit(q.limit)?;
    let (before, stores) = replicas(service(&desk)?, q.cursor.as_deref())?;
    let registry = &desk.market.registry;
    let lists = stores
        .iter()
        .zip(&before)
        .map(|(store, before)| {
            let before = *before;
            Box::new(store.fills(p.account).filter(move |f| {
                before.is_none_or(|b| f.id < b)
                    && instrument.is_none_or(|i| f.instrument == i)
                    && registry.get(f.instrument).is_some()
            })) as Box<dyn Iterator<Item = _>>
        })
        .collect();
    // Newest first (fill ids only grow); the next page holds the fills before the last ones here.
    let (page, next_cursor) = pages::page(lists, &before, limit, |f: &&Fill| (f.at, f.id), |f| f.id);
    let fills = page
        .into_iter()
        .filter_map(|f| registry.get(f.instrument).map(|i| FillJson::new(f, i)))
        .collect();
    ok(&FillList { fills, next_cursor })
}

#[utoipa::path(
    get,
    path = "/positions",
    tag = "orders",
    summary = "Your positions with P&L",
    responses((status = 200, description = "OK", body = PositionList)),
    security(("bearer" = []), ("hmac" = [])),
)]
pub async fn positions(State(desk): State<Desk>, p: Principal) -> ApiResult {
    let stores: Vec<_> = service(&desk)?.stores().iter().map(|s| s.read()).collect();
    let mirror = desk.market.mirror.read();
    // Each instrument is one engine's: the replicas' positions never overlap.
    let mut items: Vec<(u32, PositionJson)> = stores
        .iter()
        .flat_map(|s| s.positions(p.account))
        .filter_map(|(id, pos)| {
            let i = desk.market.registry.get(id)?;
            let mark = mirror.get(id).and_then(|v| v.mark_price());
            Some((id.0, PositionJson::new(pos, i, mark)))
        })
        .collect();
    items.sort_by_key(|(id, _)| *id);
    ok(&PositionList {
        positions: items.into_iter().map(|(_, v)| v).collect(),
    })
}

#[utoipa::path(
    get,
    path = "/accounts/me/risk",
    tag = "orders",
    summary = "Your risk limits and their usage",
    responses((status = 200, description = "OK", body = AccountRiskJson)),
    security(("bearer" = []), ("hmac" = [])),
)]
pub async fn my_risk(State(desk): State<Desk>, p: Principal) -> ApiResult {
    let events = submit(&desk, &p, CommandKind::QueryRisk).await?;
    let risk = events.iter().find_map(|e| match e.data {
        OrderEventData::Risk(r) => Some(r),
        _ => None,
    });
    let risk = risk.ok_or_else(|| ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR, ""))?;
    ok(&AccountRiskJson::new(&p.name, &risk))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyParams {
    since: Option<u64>,
    engine: Option<String>,
    severity: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/anomalies",
    tag = "orders",
    summary = "Surveillance anomalies after `since`, oldest first (admins: all; others: market data and their own)",
    params(
        ("since" = Option<u64>, Query, description = "The `seq` of the last anomaly already seen (default 0)"),
        ("engine" = Option<String>, Query, description = "On an API node forwarding to several engines (required there): the engine whose anomalies to list (each numbers its own)"),
        ("severity" = Option<String>, Query, description = "Minimum severity: LOW, MEDIUM, HIGH or CRITICAL"),
        ("limit" = Option<u32>, Query, description = "1-500 (default 100)"),
    ),
    responses((status = 200, description = "OK", body = AnomalyList)),
    security(("bearer" = []), ("hmac" = [])),
)]
pub async fn anomalies(State(desk): State<Desk>, p: Principal, Query(q): Query<AnomalyParams>) -> ApiResult {
    let min = match q.severity.as_deref() {
        None => Severity::Low,
        Some(s) => Severity::parse(s).ok_or_else(|| {
            ApiError::invalid_parameter(
                "severity",
                format!("severity must be LOW, MEDIUM, HIGH or CRITICAL, got {s:?}"),
            )
        })?,
    };
    let limit = page_limit(q.limit)?;
    let svc = service(&desk)?;
    let admin = p.role == Role::Admin;
    let store = anomaly_store(svc, q.engine.as_deref())?.read();
    let list: Vec<AnomalyJson> = store
        .anomalies(q.since.unwrap_or(0))
        .filter(|(_, a)| a.severity >= min && anomaly_visible(a, p.account, admin))
        .take(limit)
        .map(|(seq, a)| AnomalyJson::new(*seq, a, &svc.accounts, &desk.market.registry))
        .collect();
    let next = list.last().map(|a| a.seq).or(q.since).unwrap_or(0);
    ok(&AnomalyList {
        anomalies: list,
        next_since: next,
    })
}

/// The read model whose anomalies `GET /anomalies` lists: an API node forwarding to
/// several engines needs `engine` (each engine numbers its anomalies itself, so one
/// `since` cannot page through them all).
fn anomaly_store<'a>(
    svc: &'a OrderService,
    engine: Option<&str>,
) -> Result<&'a parking_lot::RwLock<OrderStore>, ApiError> {
    let names: Vec<&str> = svc.remotes().iter().map(|r| r.name()).collect();
    match (engine, names.len()) {
        (None, 0 | 1) => Ok(svc.store()),
        (Some(e), _) => names
            .iter()
            .position(|n| *n == e)
            .and_then(|k| svc.stores().get(k))
            .ok_or_else(|| {
                ApiError::invalid_parameter(
                    "engine",
                    if names.is_empty() {
                        "engine: this server is the engine; leave engine out".to_owned()
                    } else {
                        format!("engine: this node forwards to {}; name one of them", names.join(", "))
                    },
                )
            }),
        (None, _) => Err(ApiError::invalid_parameter(
            "engine",
            format!(
                "engine: this node forwards to {}, which number their anomalies separately; name one (engine=...)",
                names.join(", ")
            ),
        )),
    }
}

/// `global` (nothing else), `account` (with `account`) or `instrument` (with `symbol`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KillSwitch)]
pub struct KillSwitchBody {
    #[schema(value_type = KillScopeName)]
    scope: String,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    symbol: Option<String>,
    active: bool,
}

fn account_id(desk: &Desk, name: &str) -> Result<stocksblitz_engine::orders::AccountId, ApiError> {
    service(desk)?.accounts.id(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_ACCOUNT",
            format!("{name:?} is not a configured account"),
        )
    })
}

/// What a mass cancel or kill switch cancelled (summed over engines on an API node
/// that forwards to several).
fn done_count(events: &[OrderEvent]) -> u32 {
    events
        .iter()
        .filter_map(|e| match e.data {
            OrderEventData::Done { count } => Some(count),
            _ => None,
        })
        .fold(0, u32::saturating_add)
}

#[utoipa::path(
    post,
    path = "/admin/kill-switch",
    tag = "admin",
    summary = "Switch a kill switch on or off (admin)",
    request_body(content = KillSwitchBody, content_type = "application/json"),
    responses((status = 200, description = "OK", body = KillSwitchResult)),
    security(("bearer" = []), ("hmac" = [])),
    extensions(("x-audit-action" = json!("admin.kill_switch")), ("x-signed-operation" = json!(null))),
)]
pub async fn kill_switch(State(desk): State<Desk>, p: Principal, Json(b): Json<KillSwitchBody>) -> ApiResult {
    p.require(Role::Admin)?;
    let scope = match (b.scope.as_str(), b.account.as_deref(), b.symbol.as_deref()) {
        ("global", None, None) => KillScope::Global,
        ("account", Some(a), None) => KillScope::Account(account_id(&desk, a)?),
        ("instrument", None, Some(s)) => KillScope::Instrument(instrument(&desk, s)?.id),
        _ => {
            return Err(bad(
                "scope",
                "scope is \"global\" (nothing else), \"account\" (with account) or \"instrument\" (with symbol)",
            ))
        }
    };
    let events = submit(&desk, &p, CommandKind::KillSwitch { scope, on: b.active }).await?;
    tracing::warn!(admin = %p.name, scope = %b.scope, active = b.active, "kill switch");
    ok(&KillSwitchResult {
        scope: b.scope,
        active: b.active,
        cancelled: done_count(&events),
    })
}

#[utoipa::path(
    put,
    path = "/admin/risk-limits/{account}",
    tag = "admin",
    summary = "Replace an account's risk limits (admin)",
    params(("account" = String, Path, description = "A configured account")),
    request_body(content = SetRiskLimits, content_type = "application/json"),
    responses((status = 200, description = "OK", body = LimitsResult)),
    security(("bearer" = []), ("hmac" = [])),
    extensions(("x-audit-action" = json!("admin.risk_limits")), ("x-signed-operation" = json!(null))),
)]
pub async fn set_limits(
    State(desk): State<Desk>,
    p: Principal,
    Path(account): Path<String>,
    Json(b): Json<RiskLimitsConfig>,
) -> ApiResult {
    p.require(Role::Admin)?;
    let target = account_id(&desk, &account)?;
    let limits = b.limits().map_err(|(k, m)| bad(k, format!("{k}: {m}")))?;
    submit(&desk, &p, CommandKind::SetLimits { target, limits }).await?;
    tracing::warn!(admin = %p.name, account = %account, "risk limits changed");
    ok(&LimitsResult {
        account,
        limits: LimitsJson::new(&limits),
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SetTradingState)]
pub struct TradingStateBody {
    #[schema(value_type = TradingStateName)]
    state: TradingState,
}

#[utoipa::path(
    put,
    path = "/admin/trading-state/{account}",
    tag = "admin",
    summary = "Set an account's trading state (admin)",
    params(("account" = String, Path, description = "A configured account")),
    request_body(content = TradingStateBody, content_type = "application/json"),
    responses((status = 200, description = "OK", body = TradingStateResult)),
    security(("bearer" = []), ("hmac" = [])),
    extensions(("x-audit-action" = json!("admin.trading_state")), ("x-signed-operation" = json!(null))),
)]
pub async fn set_trading_state(
    State(desk): State<Desk>,
    p: Principal,
    Path(account): Path<String>,
    Json(b): Json<TradingStateBody>,
) -> ApiResult {
    p.require(Role::Admin)?;
    let target = account_id(&desk, &account)?;
    submit(&desk, &p, CommandKind::SetTradingState { target, state: b.state }).await?;
    tracing::warn!(admin = %p.name, account = %account, state = b.state.as_str(), "trading state changed");
    ok(&TradingStateResult {
        account,
        trading_state: b.state.as_str(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::orders::SelfTradeMode;

    fn name<T: Serialize>(v: T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    /// The document's trading states and self-trade modes are the engine's, one for each
    /// of its variants (the matches fail to compile when the engine gains one).
    #[test]
    fn documented_admin_values_are_the_engines() {
        use TradingState as S;
        for s in [S::Active, S::ReduceOnly, S::Throttled, S::Blocked] {
            let doc = match s {
                S::Active => TradingStateName::Active,
                S::ReduceOnly => TradingStateName::ReduceOnly,
                S::Throttled => TradingStateName::Throttled,
                S::Blocked => TradingStateName::Blocked,
            };
            assert_eq!(name(doc), name(s));
            let body: TradingStateBody = serde_json::from_value(json!({ "state": name(doc) })).unwrap();
            assert_eq!(body.state, s);
        }
        use SelfTradeMode as M;
        for m in [M::CancelNewest, M::CancelOldest, M::CancelBoth] {
            let doc = match m {
                M::CancelNewest => SelfTradeName::CancelNewest,
                M::CancelOldest => SelfTradeName::CancelOldest,
                M::CancelBoth => SelfTradeName::CancelBoth,
            };
            assert_eq!(name(doc), name(m));
        }
    }

    /// The documented risk-limits body is exactly what the handler reads: the engine's
    /// `RiskLimitsConfig` (which refuses unknown fields and has no defaults) accepts it
    /// with every self-trade mode, and the limits it gives are valid.
    #[test]
    fn the_documented_risk_limits_body_is_what_the_handler_reads() {
        for self_trade in [
            SelfTradeName::CancelNewest,
            SelfTradeName::CancelOldest,
            SelfTradeName::CancelBoth,
        ] {
            let doc = SetRiskLimits {
                max_order_qty: "100000".into(),
                max_order_notional: "1000000".into(),
                price_collar_bps: 500,
                max_open_orders: 100,
                max_position_qty: "500000".into(),
                max_gross_exposure: "5000000".into(),
                daily_loss_limit: "100000".into(),
                orders_per_sec: 10,
                cancels_per_sec: 10,
                self_trade,
            };
            let v = name(&doc);
            let fields = v.as_object().unwrap().len();
            let read: RiskLimitsConfig = serde_json::from_value(v).expect("the handler reads the documented body");
            assert!(read.limits().is_ok());
            // Each documented field is one the handler needs: without it, it is refused.
            for key in name(&doc).as_object().unwrap().keys() {
                let mut less = name(&doc);
                less.as_object_mut().unwrap().remove(key);
                assert!(
                    serde_json::from_value::<RiskLimitsConfig>(less).is_err(),
                    "{key} is optional to the handler ({fields} fields documented)"
                );
            }
        }
    }
}
