//! `/health`, `/health/live`, `/health/ready`.
//!
//! Live: the process answers. Ready: the engine and fan-out loops are running (their
//! heartbeats are fresh), the order journal and audit log work, and the feeds deliver
//! data a trader can trust, by the rule of `[health]` (`config::health`): a feed
//! unconnected past its grace, or more in-session instruments than allowed in a
//! not-ready data-quality state past theirs, make the service unready. A closed market
//! (CLOSED) and an instrument without a feed never count. A load balancer sends
//! traffic only to a ready server.
//!
//! `/health` adds the detail an on-call engineer wants first: "down" (503) when not
//! ready, "degraded" (200) when something is not ok but within the rule, "ok" (200)
//! otherwise. Every non-ok status lists its reasons: which feed or instrument, what
//! state, since when.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use stocksblitz_engine::{DataQuality, UnixNanos};
use stocksblitz_feed_handlers::FeedState;

use crate::config::health::HealthRule;
use crate::state::AppState;

/// A loop whose heartbeat is older than this is considered stalled.
const STALL_NS: i64 = 2 * UnixNanos::NANOS_PER_SEC;

fn age_ms(now: i64, heartbeat_ns: u64) -> Option<i64> {
    (heartbeat_ns != 0).then(|| (now - heartbeat_ns as i64) / UnixNanos::NANOS_PER_MILLI)
}

/// A wall-clock time as RFC 3339 UTC with milliseconds.
fn when(t: UnixNanos) -> String {
    chrono::DateTime::from_timestamp_nanos(t.0).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A duration for people: "850 ms", "12.4 s", "3.2 min", "1.5 h".
fn span(ns: i64) -> String {
    let ms = ns.max(0) / UnixNanos::NANOS_PER_MILLI;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{:.1} s", ms as f64 / 1e3),
        120_000..7_200_000 => format!("{:.1} min", ms as f64 / 60e3),
        _ => format!("{:.1} h", ms as f64 / 3_600e3),
    }
}

/// What a data-quality state means, for the reason text.
fn meaning(q: DataQuality) -> &'static str {
    match q {
        DataQuality::Syncing => "waiting for the feed's first snapshot or quote",
        DataQuality::Stale => "no market data for longer than the stale threshold",
        DataQuality::Gapped => "messages were lost; waiting for a resync",
        DataQuality::Crossed => "best bid above best ask",
        DataQuality::Halted => "the venue halted trading",
        DataQuality::Live => "live",
        DataQuality::Closed => "out of session",
    }
}

/// What one instrument's state means for the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// LIVE, CLOSED (a closed market is healthy), or a feedless instrument waiting
    /// for its first trade (a quiet market).
    Ok,
    /// Not ok, but not against readiness (within its grace, a state the rule does not
    /// count, or an instrument without a feed).
    Degraded,
    /// Counts against readiness: a fed instrument in a not-ready state past its grace.
    NotReady,
}

/// The `[health]` rule for one instrument: `has_feed` (a feed delivers it), its
/// quality, and how long it has had that quality.
fn judge(rule: &HealthRule, has_feed: bool, q: DataQuality, age_ns: i64) -> Verdict {
    if matches!(q, DataQuality::Live | DataQuality::Closed) || (!has_feed && q == DataQuality::Syncing) {
        Verdict::Ok
    } else if has_feed && rule.counts(q) && age_ns >= rule.instrument_grace_ns {
        Verdict::NotReady
    } else {
        Verdict::Degraded
    }
}

/// One instrument as `/health` reports it.
struct InstrumentHealth {
    symbol: String,
    feed: Option<String>,
    quality: DataQuality,
    since: UnixNanos,
    verdict: Verdict,
}

struct Check {
    ready: bool,
    /// Why the service is not ready (empty when ready).
    reasons: Vec<String>,
    /// What is not ok without making it unready.
    degraded: Vec<String>,
    engine_age_ms: Option<i64>,
    fanout_age_ms: Option<i64>,
    instruments: Vec<InstrumentHealth>,
}

fn stores_ok(app: &AppState) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(q) = &app.questdb {
        if !(q.connected.get() == 1 || q.rows_in.get() == 0) {
            out.push(format!(
                "questdb: not reachable ({}); rows wait in memory and spill files",
                q.last_error().unwrap_or_else(|| "no answer".into())
            ));
        } else if q.catching_up() {
            out.push(format!(
                "questdb: catching up ({} rows pending, {} in spill files)",
                q.pending(),
                q.spill_rows.get()
            ));
        }
        if q.lost.get() > 0 || q.upstream_missed.get() > 0 {
            out.push(format!(
                "questdb: {} rows lost to a full or failing spill disk, {} rows the engine could not hand to the sink (its ring was full)",
                q.lost.get(),
                q.upstream_missed.get()
            ));
        }
    }
    if let Some(r) = &app.redis {
        if r.stats.connected.get() != 1 {
            out.push(format!(
                "redis: not connected ({}); retried",
                r.stats.last_error().unwrap_or_else(|| "no answer".into())
            ));
        }
    }
    let (held, max) = app.access.limiter.local_fill();
    if held >= max {
        out.push(format!(
            "rate limits: this node's bucket table is full ({held} buckets, rate_limits.max_keys = {max}): newcomers evict the least-used anonymous buckets, and are refused \
             with 429 when only live account buckets are left; raise max_keys or find the flood"
        ));
    }
    out
}

/// The order streams (`[cluster]`): an API node is not ready while its order replica
/// is out of step or the engine is silent; an engine node holding output Redis has
/// not taken is degraded.
fn cluster(app: &AppState, reasons: &mut Vec<String>, degraded: &mut Vec<String>) {
    for (c, setup) in &app.cluster {
        link(c, setup, reasons, degraded);
    }
}

fn link(
    c: &crate::cluster::ClusterStats,
    setup: &crate::config::cluster::ClusterSetup,
    reasons: &mut Vec<String>,
    degraded: &mut Vec<String>,
) {
    if setup.forwards {
        if let Some(why) = c.problem.lock().as_ref() {
            reasons.push(format!("orders: {why}"));
        }
        if c.synced.get() != 1 {
            reasons.push(format!(
                "orders: this API node's order replica is catching up with engine {} (order routes answer 503 \
                 ORDERS_NOT_SYNCED)",
                setup.engine
            ));
        }
        let age = c.heartbeat_age_ms();
        let silent = crate::cluster::api_link::ENGINE_SILENT_AFTER.as_millis() as u64;
        if c.engine_heartbeat_ns.get() == 0 || age >= silent {
            reasons.push(format!(
                "orders: engine {} is silent (no heartbeat on its output stream {}): orders sent now may time out as \
                 ORDER_STATUS_UNKNOWN",
                setup.engine,
                if c.engine_heartbeat_ns.get() == 0 {
                    "yet".to_owned()
                } else {
                    format!("for {age} ms")
                }
            ));
        }
    } else if c.output_backlog.get() > 0 && c.publish_errors.get() > 0 {
        degraded.push(format!(
            "orders: {} order output items wait for redis (API nodes lag; past cluster.output_backlog they resync)",
            c.output_backlog.get()
        ));
    }
}

fn check(app: &AppState) -> Check {
    let now = UnixNanos::now().0;
    let started = UnixNanos(now - i64::try_from(app.started.elapsed().as_nanos()).unwrap_or(i64::MAX));
    let rule = &app.health;
    let engine_age_ms = age_ms(now, app.engine.stats.heartbeat_ns.get());
    let fanout_age_ms = age_ms(now, app.fanout.heartbeat_ns.get());
    let stall_ms = STALL_NS / UnixNanos::NANOS_PER_MILLI;
    let mut reasons = Vec::new();
    let mut degraded = Vec::new();
    if engine_age_ms.is_none_or(|a| a >= stall_ms) {
        reasons.push(if app.api_node {
            "not subscribed to market data in redis".to_owned()
        } else {
            "engine loop is not running".to_owned()
        });
    }
    if fanout_age_ms.is_none_or(|a| a >= stall_ms) {
        reasons.push("API fan-out loop is not running".to_owned());
    }
    if let Some(j) = app.desk.orders.as_ref().map(|o| o.journal()) {
        if j.is_failed() {
            reasons.push(format!(
                "order journal failed, order intake stopped: {}",
                j.failure().unwrap_or("unknown error")
            ));
        }
    }
    cluster(app, &mut reasons, &mut degraded);
    if let Some(why) = app.access.audit.failure() {
        reasons.push(format!(
            "audit log cannot be written ({why}): order and admin actions are refused with 503 AUDIT_UNAVAILABLE"
        ));
    }
    // Feeds: running, and connected (a refused token is a state with its reason).
    for f in &app.feeds {
        if f.stats.running.get() != 1 {
            reasons.push(format!("feed {} is not running", f.name));
            continue;
        }
        let state = f.state();
        if state == FeedState::Connected {
            continue;
        }
        let since = f.stats.state_since().unwrap_or(started);
        let age = now.saturating_sub(since.0);
        let why = f.stats.reason().map(|r| format!(": {r}")).unwrap_or_default();
        let text = format!(
            "feed {} {} since {} ({}){why}",
            f.name,
            state.as_str(),
            when(since),
            span(age)
        );
        if age >= rule.feed_grace_ns {
            reasons.push(text);
        } else {
            degraded.push(format!("{text} (within the {} grace)", span(rule.feed_grace_ns)));
        }
    }
    // Instruments: data quality by the rule.
    let mut instruments = Vec::new();
    {
        let mirror = app.desk.market.mirror.read();
        for v in &mirror.instruments {
            let quality = v.quality();
            let since = if v.quality_since.is_known() {
                v.quality_since
            } else {
                started
            };
            let feed = app.desk.market.feed_of(v.id).map(str::to_owned);
            let age = now.saturating_sub(since.0);
            let verdict = judge(rule, feed.is_some(), quality, age);
            instruments.push(InstrumentHealth {
                symbol: app
                    .desk
                    .market
                    .registry
                    .get(v.id)
                    .map_or_else(|| format!("#{}", v.id.0), |i| i.symbol.clone()),
                feed,
                quality,
                since,
                verdict,
            });
        }
    }
    let not_ready = instruments.iter().filter(|i| i.verdict == Verdict::NotReady).count() as u64;
    let blocking = not_ready > rule.max_not_ready_instruments;
    for i in &instruments {
        if i.verdict == Verdict::Ok {
            continue;
        }
        let source = match &i.feed {
            Some(f) => format!("feed {f}"),
            None => "no feed".to_owned(),
        };
        let text = format!(
            "instrument {} ({source}) {} since {} ({}): {}",
            i.symbol,
            i.quality.as_str(),
            when(i.since),
            span(now.saturating_sub(i.since.0)),
            meaning(i.quality)
        );
        let not_ready = i.verdict == Verdict::NotReady;
        if not_ready && blocking {
            reasons.push(text);
        } else if not_ready {
            degraded.push(format!(
                "{text} (tolerated: at most {} not-ready instruments)",
                rule.max_not_ready_instruments
            ));
        } else if i.feed.is_some() && app.health.counts(i.quality) {
            degraded.push(format!("{text} (within the {} grace)", span(rule.instrument_grace_ns)));
        } else {
            degraded.push(text);
        }
    }
    degraded.extend(stores_ok(app));
    Check {
        ready: reasons.is_empty(),
        reasons,
        degraded,
        engine_age_ms,
        fanout_age_ms,
        instruments,
    }
}

#[utoipa::path(
    get,
    path = "/health/live",
    tag = "ops",
    summary = "Liveness",
    responses((status = 200, description = "OK", body = Object)),
)]
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Whether the server is ready by the `[health]` rule (for `/metrics`).
pub fn is_ready(app: &AppState) -> bool {
    check(app).ready
}

#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "ops",
    summary = "Readiness",
    description = "Ready when the engine, fan-out, journal and audit log run and the feeds deliver \
                   trustworthy data by the [health] rule (a feed unconnected past feed_grace_ms, or \
                   instruments in a not-ready state past instrument_grace_ms, make it unready; \
                   CLOSED and instruments without a feed never count).",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "Not ready, with the reasons", body = Object),
    ),
)]
pub async fn ready(State(app): State<AppState>) -> Response {
    let c = check(&app);
    let stores = stores(&app);
    if c.ready {
        Json(json!({ "status": "ready", "warnings": c.degraded, "stores": stores })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reasons": c.reasons, "stores": stores })),
        )
            .into_response()
    }
}

/// The external stores' state. A store that is down degrades the service but does
/// not make it unready: its rows wait (in memory, then spill files) and are retried.
fn stores(app: &AppState) -> serde_json::Value {
    let questdb = match &app.questdb {
        None => json!("not_configured"),
        Some(q) => json!({
            // Degraded while the server is unreachable, while the sink is behind
            // (catching up: spill files, or more than two batches in memory), and for
            // good once a row was lost (a full disk, or rows the engine could not hand
            // to the sink).
            "status": if q.healthy() { "ok" } else { "degraded" },
            "last_error": q.last_error(),
            "catching_up": q.catching_up(),
            "lag_seconds": q.lag_ns.get() as f64 / 1e9,
            "pending_rows": q.pending(),
            "memory_rows": q.memory_rows.get(),
            "spill_rows": q.spill_rows.get(),
            "spill_bytes": q.spill_bytes.get(),
            "spilled_rows": q.spilled_rows.get(),
            "lost_rows": q.lost.get(),
            "upstream_missed_events": q.upstream_missed.get(),
            "send_errors": q.errors.get(),
            "rows_sent": q.rows_sent.get(),
        }),
    };
    let redis = match &app.redis {
        None => json!("not_configured"),
        Some(r) => json!({
            "status": if r.stats.connected.get() == 1 { "ok" } else { "degraded" },
            "last_error": r.stats.last_error(),
            "errors": r.stats.errors.get(),
        }),
    };
    json!({ "questdb": questdb, "redis": redis })
}

/// `GET /health/redis`: connectivity, latency, memory and key counts, from one round
/// trip of constant work, cached for a couple of seconds (the route is unauthenticated:
/// no request rate becomes a command rate against Redis).
#[utoipa::path(
    get,
    path = "/health/redis",
    tag = "ops",
    summary = "Redis connectivity, latency, memory and keys",
    description = "One round trip (PING, DBSIZE, INFO; never a keyspace scan), cached for 2 s unless the \
                   connection state changed; `cached_ms` is the report's age.",
    responses(
        (status = 200, description = "OK", body = Object),
        (status = 404, description = "Redis is not configured", body = Object),
        (status = 503, description = "Redis is configured but down", body = Object),
    ),
)]
pub async fn redis(State(app): State<AppState>) -> Response {
    match &app.redis {
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "status": "not_configured", "message": "[redis] is not configured on this server" })),
        )
            .into_response(),
        Some(r) => {
            let report = r.health().await;
            let code = if report["status"] == "ok" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(report)).into_response()
        }
    }
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    summary = "Health summary",
    description = "status \"ok\" (200), \"degraded\" (200: something is not ok within the [health] rule) \
                   or \"down\" (503: not ready). Every non-ok status lists its reasons: which feed or \
                   instrument, what state, since when.",
    responses(
        (status = 200, description = "ok or degraded, with the reasons", body = Object),
        (status = 503, description = "down, with the reasons", body = Object),
    ),
)]
pub async fn health(State(app): State<AppState>) -> Response {
    let c = check(&app);
    let mut qualities: BTreeMap<&'static str, u64> = BTreeMap::new();
    for i in &c.instruments {
        *qualities.entry(i.quality.as_str()).or_default() += 1;
    }
    let status = if !c.ready {
        "down"
    } else if !c.degraded.is_empty() {
        "degraded"
    } else {
        "ok"
    };
    let feeds: Vec<_> = app
        .feeds
        .iter()
        .map(|f| {
            let state = f.state();
            json!({
                "name": f.name,
                "kind": f.kind,
                "running": f.stats.running.get() == 1,
                "state": state.as_str(),
                "since": f.stats.state_since().map(when),
                "reason": f.stats.reason(),
                "auth_failures": f.stats.auth_failures.get(),
                "reconnects": f.stats.reconnects.get(),
                "ticks": f.stats.ticks.get(),
                "ring_dropped": f.ring.dropped.get(),
            })
        })
        .collect();
    let instruments: Vec<_> = c
        .instruments
        .iter()
        .map(|i| {
            json!({
                "symbol": i.symbol,
                "feed": i.feed,
                "quality": i.quality.as_str(),
                "since": when(i.since),
                "blocks_readiness": i.verdict == Verdict::NotReady,
            })
        })
        .collect();
    let reasons: Vec<&String> = c.reasons.iter().chain(c.degraded.iter()).collect();
    let body = json!({
        "status": status,
        "ready": c.ready,
        "reasons": reasons,
        "uptime_secs": app.started.elapsed().as_secs(),
        "engine": { "heartbeat_age_ms": c.engine_age_ms, "ticks": app.engine.stats.ticks.get() },
        "fanout": { "heartbeat_age_ms": c.fanout_age_ms, "events": app.fanout.events.get() },
        "feeds": feeds,
        "instruments": instruments,
        "instruments_by_quality": qualities,
        "rule": {
            "not_ready_states": app.health.not_ready.iter().map(|q| q.as_str()).collect::<Vec<_>>(),
            "instrument_grace_ms": app.health.instrument_grace_ns / UnixNanos::NANOS_PER_MILLI,
            "feed_grace_ms": app.health.feed_grace_ns / UnixNanos::NANOS_PER_MILLI,
            "max_not_ready_instruments": app.health.max_not_ready_instruments,
        },
        "stores": stores(&app),
        "journal": app.desk.orders.as_ref().map(|o| {
            let j = o.journal();
            json!({
                "status": if j.is_failed() { "failed" } else { "ok" },
                "error": j.failure(),
                "head_record": j.head.get(),
                "records": j.records.get(),
                "bytes": j.bytes.get(),
                // Retention: the first record the directory still holds, and the
                // record the last snapshot was taken at (0: none this run).
                "first_record": j.first_record.get(),
                "snapshot_record": j.snapshot_record.get(),
                "segments_removed": j.segments_removed.get(),
            })
        }),
        "audit": {
            "status": if app.access.audit.healthy() { "ok" } else { "failed" },
            "error": app.access.audit.failure(),
            "written": app.access.audit.stats.written.load(std::sync::atomic::Ordering::Relaxed),
            "refused": app.access.audit.stats.refused.load(std::sync::atomic::Ordering::Relaxed),
        },
    });
    let code = if c.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn quality() -> impl Strategy<Value = DataQuality> {
        proptest::sample::select(DataQuality::ALL.to_vec())
    }

    proptest! {
        /// The documented rule over every rule, state, feed and age: LIVE and CLOSED
        /// are always ok; an instrument without a feed never counts against readiness;
        /// a fed one counts exactly when its state is listed and has lasted the grace.
        #[test]
        fn the_readiness_rule(
            listed in proptest::collection::vec(quality(), 0..7),
            grace_ms in 0i64..100_000,
            has_feed: bool,
            q in quality(),
            age_ms in -1_000i64..200_000,
        ) {
            let rule = HealthRule {
                not_ready: listed.clone(),
                instrument_grace_ns: grace_ms * UnixNanos::NANOS_PER_MILLI,
                feed_grace_ns: 0,
                max_not_ready_instruments: 0,
            };
            let v = judge(&rule, has_feed, q, age_ms * UnixNanos::NANOS_PER_MILLI);
            if matches!(q, DataQuality::Live | DataQuality::Closed) {
                prop_assert_eq!(v, Verdict::Ok);
            }
            if !has_feed {
                prop_assert_ne!(v, Verdict::NotReady);
            }
            let counts = has_feed && listed.contains(&q) && age_ms >= grace_ms
                && !matches!(q, DataQuality::Live | DataQuality::Closed);
            prop_assert_eq!(v == Verdict::NotReady, counts);
            prop_assert_eq!(v == Verdict::Ok, matches!(q, DataQuality::Live | DataQuality::Closed)
                || (!has_feed && q == DataQuality::Syncing));
        }
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(-5), "0 ms");
        assert_eq!(span(850 * UnixNanos::NANOS_PER_MILLI), "850 ms");
        assert_eq!(span(12_400 * UnixNanos::NANOS_PER_MILLI), "12.4 s");
        assert_eq!(span(192 * UnixNanos::NANOS_PER_SEC), "3.2 min");
        assert_eq!(span(5_400 * UnixNanos::NANOS_PER_SEC), "90.0 min");
        assert_eq!(span(9_000 * UnixNanos::NANOS_PER_SEC), "2.5 h");
        assert_eq!(when(UnixNanos(0)), "1970-01-01T00:00:00.000Z");
    }
}
