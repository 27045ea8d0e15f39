//! Table creation over QuestDB's HTTP SQL endpoint (`/exec`), and the start-up
//! reachability check. Tables get a designated timestamp, daily partitions, WAL and
//! DEDUP UPSERT KEYS, so that re-sending a batch (after a timeout whose outcome was
//! unknown, or a drained spill file) never doubles a row. The keys are unique per real
//! event (see [`super::row`]): a trade's exchange time (seconds for Kite, which has no
//! trade id) is not, so market data rows are keyed by their receive time and the
//! engine's per-instrument sequence too.

use std::time::Duration;

use super::row::{ANOMALIES, BARS, FILLS, ORDER_EVENTS, QUOTES, TRADES};
use crate::config::questdb::{IlpAuth, IlpTransport, QuestDbSetup};

/// The `Authorization` header value for the configured auth, if any.
fn authorization(s: &QuestDbSetup, secret: Option<&str>) -> Option<String> {
    use base64::Engine as _;
    match (&s.auth, secret) {
        (IlpAuth::Basic { username, .. }, Some(p)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{p}"))
        )),
        (IlpAuth::Token { .. }, Some(t)) => Some(format!("Bearer {t}")),
        _ => None,
    }
}

/// For every table the sink writes: `CREATE TABLE IF NOT EXISTS`, then (for a table an
/// earlier version created with other keys) its key columns added if missing and its
/// DEDUP UPSERT KEYS set to the current ones (QuestDB replaces the key list). Each
/// statement is idempotent.
pub fn statements() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (name, columns, keys) in tables() {
        out.push((
            name,
            format!(
                "CREATE TABLE IF NOT EXISTS {name} (ts TIMESTAMP, {columns}) TIMESTAMP(ts) PARTITION BY DAY WAL \
                 DEDUP UPSERT KEYS(ts, {keys})"
            ),
        ));
        for key in keys.split(", ") {
            let typed = columns
                .split(", ")
                .find(|c| c.split_once(' ').is_some_and(|(n, _)| n == key));
            if let Some(typed) = typed {
                out.push((name, format!("ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {typed}")));
            }
        }
        out.push((name, format!("ALTER TABLE {name} DEDUP ENABLE UPSERT KEYS(ts, {keys})")));
    }
    out
}

/// Each table: its name, its columns besides `ts`, and its DEDUP keys besides `ts`.
pub fn tables() -> Vec<(&'static str, String, &'static str)> {
    let table = |name: &'static str, columns: &str, keys: &'static str| (name, columns.to_owned(), keys);
    vec![
        table(
            TRADES,
            "symbol SYMBOL, aggressor SYMBOL, price DOUBLE, qty DOUBLE, trade_id LONG, recv_ts TIMESTAMP, seq LONG",
            "symbol, recv_ts, seq",
        ),
        table(
            QUOTES,
            "symbol SYMBOL, bid DOUBLE, bid_qty DOUBLE, ask DOUBLE, ask_qty DOUBLE, seq LONG",
            "symbol, seq",
        ),
        table(
            BARS,
            "symbol SYMBOL, interval SYMBOL, open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, \
             trades LONG, revised BOOLEAN, recv_ts TIMESTAMP, seq LONG",
            "symbol, interval, recv_ts, seq",
        ),
        table(
            ORDER_EVENTS,
            "account SYMBOL, symbol SYMBOL, event SYMBOL, status SYMBOL, side SYMBOL, type SYMBOL, seq LONG, \
             order_id LONG, price DOUBLE, qty DOUBLE, filled DOUBLE, client_order_id VARCHAR",
            "seq",
        ),
        table(
            FILLS,
            "account SYMBOL, symbol SYMBOL, side SYMBOL, liquidity SYMBOL, fill_id LONG, order_id LONG, price DOUBLE, \
             qty DOUBLE, trade_id LONG",
            "fill_id",
        ),
        table(
            ANOMALIES,
            "rule SYMBOL, severity SYMBOL, action SYMBOL, account SYMBOL, symbol SYMBOL, seq LONG, observed DOUBLE, \
             threshold DOUBLE",
            "seq",
        ),
    ]
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Fails with a clear message when the server cannot be reached (a configured store
/// that is down at start-up stops start-up).
pub fn check_reachable(s: &QuestDbSetup, secret: Option<&str>) -> Result<(), String> {
    match s.transport {
        IlpTransport::Http => {
            let url = format!("http://{}/ping", s.addr);
            let mut req = agent(s.request_timeout).get(&url);
            if let Some(a) = authorization(s, secret) {
                req = req.header("Authorization", a);
            }
            match req.call() {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{url} answered {}", r.status())),
                Err(e) => Err(format!("{url}: {e}")),
            }
        }
        IlpTransport::Tcp => {
            use std::net::ToSocketAddrs;
            let addrs = s.addr.to_socket_addrs().map_err(|e| format!("{}: {e}", s.addr))?;
            let mut last = format!("{} resolves to no address", s.addr);
            for a in addrs {
                match std::net::TcpStream::connect_timeout(&a, s.request_timeout) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("{a}: {e}"),
                }
            }
            Err(last)
        }
    }
}

/// Creates the tables (idempotent).
pub fn create_tables(s: &QuestDbSetup, secret: Option<&str>) -> Result<(), String> {
    let agent = agent(s.request_timeout);
    for (name, sql) in statements() {
        let url = format!("http://{}/exec", s.addr);
        let mut req = agent.get(&url).query("query", &sql);
        if let Some(a) = authorization(s, secret) {
            req = req.header("Authorization", a);
        }
        let mut r = req.call().map_err(|e| format!("creating table {name}: {url}: {e}"))?;
        if !r.status().is_success() {
            let body = r.body_mut().read_to_string().unwrap_or_default();
            return Err(format!("creating table {name}: {url} answered {}: {body}", r.status()));
        }
    }
    Ok(())
}
