//! `stocksblitz-feed-sim`: the Binance, Coinbase and Kite protocols served on loopback
//! with random-walk markets and scripted faults.
//!
//! This module is venue-agnostic: the market, faults, control API and the session
//! loop ([`session`]). Each venue's wire format, routes and client behaviour live in
//! that venue's folder (`binance/sim.rs`, ...) behind [`crate::venue::Protocol`], so a
//! venue is added to the simulator with the venue itself.
//!
//! Every venue's market is generated once per step and rendered in that venue's wire
//! format to all connected clients; the control API injects faults and exposes each
//! instrument's true book, so tests can check that a handler recovers to exactly the
//! book the venue holds. Pointing a handler at a real exchange is only a URL change.
//!
//! Routes (one port): `/binance/stream?streams=...` (WebSocket) and
//! `/binance/api/v3/depth?symbol=&limit=` (REST); `/coinbase` and `/kite` (WebSocket);
//! `POST /control/faults/{venue}` (a `FaultRequest`), `POST /control/pause/{venue}`
//! (`{"paused":true}`), `GET /control/book/{venue}/{venue_symbol}`, and
//! `GET /control/in_flight/{venue}` (how many sessions still have rendered market data
//! to hand to their socket: [`delivery`]), `POST /control/auth/{venue}` (`{"refused_tokens":["..."]}`: Kite answers HTTP 403 to a
//! connection with one of these access tokens, as it does to an expired one).

pub mod delivery;
pub mod faults;
pub mod market;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::Deserialize;
use stocksblitz_engine::UnixNanos;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};

use crate::venue::Venue;
use delivery::{Batch, Delivery};
use faults::{FaultRequest, Faults};
use market::{SimInstrument, VenueMarket};

/// A rendered message for clients of one venue.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// What a client subscribes to: a Binance stream name, a Coinbase product, a token.
    pub key: String,
    pub payload: Payload,
    pub kind: MsgKind,
}

/// What a message carries, for fault injection: drop/duplicate/reorder act on book
/// messages where the venue sequences them (Binance) and on trades where it numbers
/// those instead (Coinbase matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgKind {
    Book,
    Trade,
    Other,
}

#[derive(Debug, Clone)]
pub enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

/// One venue's simulated state.
pub struct VenueSim {
    pub venue: Venue,
    pub market: Mutex<VenueMarket>,
    pub tx: broadcast::Sender<Arc<Batch>>,
    /// Which broadcast batches each session has delivered.
    pub delivery: Delivery,
    pub faults: Faults,
    /// While set, the market does not move (tests compare books at rest).
    pub paused: std::sync::atomic::AtomicBool,
    /// Access tokens the venue refuses (HTTP 403 on connect), set by the control API.
    pub refused_tokens: Mutex<std::collections::HashSet<String>>,
}

/// `[simulator]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Start the simulator inside `stocksblitz serve`.
    pub enabled: bool,
    /// Address it listens on (loopback).
    pub listen: String,
    pub seed: u64,
    /// Market steps per second per venue.
    pub rate_per_sec: u64,
    /// Levels per side of each simulated book.
    pub depth: usize,
    /// Starting mid price per symbol (decimal string).
    pub start_prices: std::collections::BTreeMap<String, String>,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimSetup {
    pub venues: Vec<(Venue, Vec<SimInstrument>)>,
    pub seed: u64,
    pub depth: usize,
    pub rate_per_sec: u64,
}

/// Why a simulator setup was rejected; names the config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SetupError {
    pub key: String,
    pub message: String,
}

/// The setup for every instrument of `registry` whose venue the simulator speaks.
pub fn setup_from(
    registry: &stocksblitz_engine::InstrumentRegistry,
    cfg: &SimulatorConfig,
) -> Result<SimSetup, SetupError> {
    let err = |key: String, message: &str| SetupError {
        key,
        message: message.to_owned(),
    };
    if cfg.rate_per_sec == 0 || cfg.rate_per_sec > 100_000 {
        return Err(err("simulator.rate_per_sec".into(), "must be between 1 and 100000"));
    }
    if cfg.depth == 0 || cfg.depth > 1_000 {
        return Err(err("simulator.depth".into(), "must be between 1 and 1000"));
    }
    let mut venues = Vec::new();
    for venue in Venue::all() {
        let mut list = Vec::new();
        for inst in registry.iter().filter(|i| venue.serves(&i.venue)) {
            let key = format!("simulator.start_prices.{}", inst.symbol);
            let text = cfg
                .start_prices
                .get(&inst.symbol)
                .ok_or_else(|| err(key.clone(), "missing: every simulated instrument needs a start price"))?;
            let start = stocksblitz_engine::Price::parse_str(text, inst.price_scale)
                .map_err(|e| err(key.clone(), &e.to_string()))?;
            if start.0 <= 0 {
                return Err(err(key, "must be greater than zero"));
            }
            list.push(SimInstrument {
                symbol: inst.symbol.clone(),
                venue_symbol: inst.venue_symbol.clone(),
                price_scale: inst.price_scale,
                qty_scale: inst.qty_scale,
                spec: crate::synthetic::SimSpec {
                    id: inst.id,
                    tick_size: inst.tick_size,
                    lot_size: inst.lot_size,
                    start_price: start,
                },
            });
        }
        if !list.is_empty() {
            venues.push((venue, list));
        }
    }
    Ok(SimSetup {
        venues,
        seed: cfg.seed,
        depth: cfg.depth,
        rate_per_sec: cfg.rate_per_sec,
    })
}

pub struct SimHandle {
    pub addr: SocketAddr,
    pub venues: Vec<Arc<VenueSim>>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    pub fn venue(&self, v: Venue) -> Option<&Arc<VenueSim>> {
        self.venues.iter().find(|s| s.venue == v)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// What the simulator's routes share: every simulated venue.
#[derive(Clone)]
pub struct Shared {
    venues: Arc<Vec<Arc<VenueSim>>>,
}

impl Shared {
    /// The simulated venue called `name`.
    pub fn venue(&self, name: &str) -> Option<Arc<VenueSim>> {
        let v = Venue::parse(name)?;
        self.venues.iter().find(|s| s.venue == v).cloned()
    }
}

/// Generates the venue's market at `rate_per_sec` and broadcasts it.
async fn generate(sim: Arc<VenueSim>, rate_per_sec: u64) {
    let period = Duration::from_nanos(1_000_000_000 / rate_per_sec.max(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if sim.paused.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let batch = {
            let mut m = sim.market.lock();
            let events = m.step(UnixNanos::now());
            sim.venue.protocol().sim_render(&m, &events)
        };
        if !batch.is_empty() {
            // No receivers is fine: nobody is connected.
            let seq = sim.delivery.number();
            let _ = sim.tx.send(Arc::new(Batch { seq, msgs: batch }));
        }
    }
}

async fn post_fault(State(s): State<Shared>, Path(venue): Path<String>, Json(r): Json<FaultRequest>) -> Response {
    match s.venue(&venue) {
        Some(v) => {
            v.faults.request(r);
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("venue {venue:?} is not simulated")).into_response(),
    }
}

#[derive(Deserialize)]
struct Pause {
    paused: bool,
}

async fn post_pause(State(s): State<Shared>, Path(venue): Path<String>, Json(p): Json<Pause>) -> Response {
    match s.venue(&venue) {
        Some(v) => {
            v.paused.store(p.paused, std::sync::atomic::Ordering::Relaxed);
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("venue {venue:?} is not simulated")).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Auth {
    /// Replaces the refused set; empty accepts every token again.
    refused_tokens: Vec<String>,
}

async fn post_auth(State(s): State<Shared>, Path(venue): Path<String>, Json(a): Json<Auth>) -> Response {
    match s.venue(&venue) {
        Some(v) => {
            *v.refused_tokens.lock() = a.refused_tokens.into_iter().collect();
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("venue {venue:?} is not simulated")).into_response(),
    }
}

async fn get_in_flight(State(s): State<Shared>, Path(venue): Path<String>) -> Response {
    match s.venue(&venue) {
        Some(v) => Json(v.delivery.in_flight()).into_response(),
        None => (StatusCode::NOT_FOUND, format!("venue {venue:?} is not simulated")).into_response(),
    }
}

async fn get_book(State(s): State<Shared>, Path((venue, symbol)): Path<(String, String)>) -> Response {
    let Some(v) = s.venue(&venue) else {
        return (StatusCode::NOT_FOUND, format!("venue {venue:?} is not simulated")).into_response();
    };
    let m = v.market.lock();
    let Some(i) = m.index_of(&symbol) else {
        return (StatusCode::NOT_FOUND, format!("{symbol:?} is not simulated on {venue}")).into_response();
    };
    let (Some(book), Some(inst)) = (m.book(i), m.instruments.get(i)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let side = |ls: &[stocksblitz_engine::Level]| -> Vec<[String; 2]> {
        ls.iter()
            .map(|l| {
                [
                    l.price.decimal(inst.price_scale).to_string(),
                    l.qty.decimal(inst.qty_scale).to_string(),
                ]
            })
            .collect()
    };
    Json(serde_json::json!({
        "symbol": inst.symbol,
        "bids": side(book.bids()),
        "asks": side(book.asks()),
        "last_update_id": m.last_update_id(i),
        "last_trade_id": m.last_trade_id(i),
    }))
    .into_response()
}

/// Starts the simulator on `listener` (on the current tokio runtime).
pub async fn start(setup: SimSetup, listener: TcpListener) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let mut venues = Vec::new();
    for (i, (venue, instruments)) in setup.venues.into_iter().enumerate() {
        let (tx, _) = broadcast::channel(4096);
        venues.push(Arc::new(VenueSim {
            venue,
            market: Mutex::new(VenueMarket::new(
                instruments,
                setup.seed.wrapping_add(i as u64),
                setup.depth,
            )),
            tx,
            delivery: Delivery::default(),
            faults: Faults::default(),
            paused: std::sync::atomic::AtomicBool::new(false),
            refused_tokens: Mutex::new(std::collections::HashSet::new()),
        }));
    }
    let shared = Shared {
        venues: Arc::new(venues.clone()),
    };
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = venues
        .iter()
        .map(|v| tokio::spawn(generate(Arc::clone(v), setup.rate_per_sec)))
        .collect();
    let app = Venue::all()
        .fold(Router::new(), |r, v| v.protocol().sim_routes(r))
        .route("/control/faults/{venue}", post(post_fault))
        .route("/control/pause/{venue}", post(post_pause))
        .route("/control/auth/{venue}", post(post_auth))
        .route("/control/book/{venue}/{symbol}", get(get_book))
        .route("/control/in_flight/{venue}", get(get_in_flight))
        .with_state(shared);
    let (tx, rx) = oneshot::channel::<()>();
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    }));
    Ok(SimHandle {
        addr,
        venues,
        shutdown: Some(tx),
        tasks,
    })
}
