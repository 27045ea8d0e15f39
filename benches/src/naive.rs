//! The naive fan-out baseline of the `fanout` bench: the WebSocket server a user would
//! write without StocksBlitz, so the bench can say how much the product's fan-out buys.
//!
//! One tokio task generates market events at the bench's rate from the same synthetic
//! market as the product's `synthetic` feed (same generator, seed and depth, so the
//! same kinds and numbers of events per step: a top-10 book after every step, a quote
//! when the best bid or offer changed, a trade per trade), stamps each with
//! `engine_ts_us` (Unix microseconds when it was generated) and sends it into a
//! `tokio::sync::broadcast` channel. Every WebSocket session receives every event and
//! serializes the ones it subscribed to with serde_json, per subscriber. A session
//! whose receiver lagged reports the lost events as `missed` on its next message.
//! Nothing is conflated. It speaks the subscribe protocol and message shapes of
//! `api/src/ws/protocol.rs`, so one load client drives both servers.
//!
//! It also serves `GET /api/v1/quotes/{symbol}` as a bare axum handler (the latest
//! quote as `Json`) for the REST comparison, and `GET /health/live`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use stocksblitz_engine::book::L2Book;
use stocksblitz_engine::tick::{BookFlags, TickData};
use stocksblitz_engine::{InstrumentId, Price, Qty, UnixNanos};
use stocksblitz_feed_handlers::{SimSpec, SyntheticMarket, TickBuf};
use tokio::sync::broadcast;

/// The one instrument both servers publish.
pub const SYMBOL: &str = "BTCUSDT";
/// Its market-data scale (Binance: 8 decimals for prices and quantities).
pub const SCALE: u8 = 8;
/// Synthetic feed settings shared with the product's bench config.
pub const SEED: u64 = 1;
pub const DEPTH: usize = 10;
/// `configs/default.toml`'s BTCUSDT start price, tick size 0.01 and lot size 0.00001,
/// at scale 8.
pub const START_PRICE: Price = Price(6_500_000_000_000);
pub const TICK_SIZE: Price = Price(1_000_000);
pub const LOT_SIZE: Qty = Qty(1_000);
/// Levels per side in book messages (`api.ws_book_depth` in the product's config).
pub const BOOK_LEVELS: usize = 10;
/// Events buffered per subscriber before it lags (the product's `ws_queue_capacity`).
pub const BROADCAST_CAPACITY: usize = 1024;
/// Recent trades kept for trades snapshots (the product's `trades_history`).
const TRADES_KEPT: usize = 200;

/// The channel kinds of the bench, in the order the load client counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Quotes,
    Book,
    Trades,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Quotes, Kind::Book, Kind::Trades];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Quotes => "quotes",
            Kind::Book => "book",
            Kind::Trades => "trades",
        }
    }

    /// The kind of a channel name such as `quotes.BTCUSDT`.
    pub fn of_channel(channel: &str) -> Option<Kind> {
        let (prefix, _) = channel.split_once('.')?;
        Kind::ALL.into_iter().find(|k| k.prefix() == prefix)
    }
}

/// A quote, shaped like the product's `QuoteDto`.
#[derive(Debug, Clone, Serialize)]
pub struct QuoteData {
    pub symbol: &'static str,
    pub bid: Option<String>,
    pub bid_qty: Option<String>,
    pub ask: Option<String>,
    pub ask_qty: Option<String>,
    pub quality: &'static str,
    pub exchange_ts_us: Option<i64>,
    pub recv_ts_us: Option<i64>,
    pub engine_seq: u64,
    pub last: Option<TradeData>,
    pub day: Option<()>,
}

/// A top-of-book, shaped like the product's `BookDto`.
#[derive(Debug, Clone, Serialize)]
pub struct BookData {
    pub symbol: &'static str,
    pub bids: Vec<[String; 2]>,
    pub asks: Vec<[String; 2]>,
    pub quality: &'static str,
    pub engine_seq: u64,
}

/// A trade, shaped like the product's `TradeDto`.
#[derive(Debug, Clone, Serialize)]
pub struct TradeData {
    pub symbol: &'static str,
    pub price: String,
    pub qty: String,
    pub side: &'static str,
    pub trade_id: u64,
    pub exchange_ts_us: Option<i64>,
    pub recv_ts_us: Option<i64>,
    pub engine_seq: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Data {
    Quote(QuoteData),
    Book(BookData),
    Trade(TradeData),
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub engine_ts_us: i64,
    pub data: Data,
}

/// The synthetic market plus the book the events are read from.
pub struct Generator {
    market: SyntheticMarket,
    book: L2Book,
    buf: TickBuf,
    seq: u64,
    last_bbo: Option<(Price, Qty, Price, Qty)>,
    /// The last trade, carried in quotes as the product's quotes carry theirs.
    last_trade: Option<TradeData>,
}

impl Default for Generator {
    fn default() -> Self {
        Self::new()
    }
}

impl Generator {
    pub fn new() -> Self {
        let spec = SimSpec {
            id: InstrumentId(0),
            tick_size: TICK_SIZE,
            lot_size: LOT_SIZE,
            start_price: START_PRICE,
        };
        let market = SyntheticMarket::new(SEED, DEPTH, &[spec]);
        let mut book = L2Book::new(DEPTH * 4);
        market.snapshot(0, UnixNanos(0), |t| {
            book.apply_tick(&t.data);
        });
        Self {
            market,
            book,
            buf: TickBuf::default(),
            seq: 0,
            last_bbo: None,
            last_trade: None,
        }
    }

    /// One market step at `now_us`: the events it makes, in `out` (cleared first).
    pub fn step(&mut self, now_us: i64, out: &mut Vec<Event>) {
        out.clear();
        self.market.step(UnixNanos(now_us.saturating_mul(1_000)), &mut self.buf);
        for t in self.buf.as_slice() {
            self.book.apply_tick(&t.data);
            self.seq += 1;
            match t.data {
                TickData::Trade {
                    price,
                    qty,
                    trade_id,
                    aggressor,
                } => {
                    let trade = TradeData {
                        symbol: SYMBOL,
                        price: price.decimal(SCALE).to_string(),
                        qty: qty.decimal(SCALE).to_string(),
                        side: aggressor.as_str(),
                        trade_id,
                        exchange_ts_us: Some(now_us),
                        recv_ts_us: Some(now_us),
                        engine_seq: self.seq,
                    };
                    self.last_trade = Some(trade.clone());
                    out.push(Event {
                        kind: Kind::Trades,
                        engine_ts_us: now_us,
                        data: Data::Trade(trade),
                    });
                }
                TickData::BookDelta { flags, .. } if flags.contains(BookFlags::END_OF_BATCH) => {
                    let level = |l: &stocksblitz_engine::Level| {
                        [l.price.decimal(SCALE).to_string(), l.qty.decimal(SCALE).to_string()]
                    };
                    out.push(Event {
                        kind: Kind::Book,
                        engine_ts_us: now_us,
                        data: Data::Book(BookData {
                            symbol: SYMBOL,
                            bids: self.book.bids().iter().take(BOOK_LEVELS).map(level).collect(),
                            asks: self.book.asks().iter().take(BOOK_LEVELS).map(level).collect(),
                            quality: "LIVE",
                            engine_seq: self.seq,
                        }),
                    });
                    let (bid, ask) = (self.book.best_bid(), self.book.best_ask());
                    let bbo = (
                        bid.map_or(Price(0), |l| l.price),
                        bid.map_or(Qty(0), |l| l.qty),
                        ask.map_or(Price(0), |l| l.price),
                        ask.map_or(Qty(0), |l| l.qty),
                    );
                    if self.last_bbo != Some(bbo) {
                        self.last_bbo = Some(bbo);
                        let p = |v: Option<stocksblitz_engine::Level>, f: fn(&stocksblitz_engine::Level) -> String| {
                            v.as_ref().map(f)
                        };
                        out.push(Event {
                            kind: Kind::Quotes,
                            engine_ts_us: now_us,
                            data: Data::Quote(QuoteData {
                                symbol: SYMBOL,
                                bid: p(bid, |l| l.price.decimal(SCALE).to_string()),
                                bid_qty: p(bid, |l| l.qty.decimal(SCALE).to_string()),
                                ask: p(ask, |l| l.price.decimal(SCALE).to_string()),
                                ask_qty: p(ask, |l| l.qty.decimal(SCALE).to_string()),
                                quality: "LIVE",
                                exchange_ts_us: Some(now_us),
                                recv_ts_us: Some(now_us),
                                engine_seq: self.seq,
                                last: self.last_trade.clone(),
                                day: None,
                            }),
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

/// Events per market step on each channel (quotes, book, trades), averaged over
/// `steps` steps of the generator: what a client of a server that conflates nothing
/// receives per step. The bench derives conflation from it.
pub fn events_per_step(steps: u64) -> [f64; 3] {
    let mut g = Generator::new();
    let mut out = Vec::new();
    let mut n = [0u64; 3];
    for i in 0..steps {
        g.step(i as i64, &mut out);
        for e in &out {
            n[e.kind.index()] += 1;
        }
    }
    let steps = steps.max(1) as f64;
    n.map(|c| c as f64 / steps)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// What a snapshot reads: the latest of each channel.
#[derive(Default)]
struct Latest {
    quote: Option<QuoteData>,
    book: Option<BookData>,
    trades: VecDeque<TradeData>,
}

struct Shared {
    tx: broadcast::Sender<Arc<Event>>,
    latest: RwLock<Latest>,
}

/// Generates `rate` steps a second into the broadcast channel, paced by a 1 ms
/// interval (the steps due at each tick; at most one second's worth after a stall).
async fn generate(shared: Arc<Shared>, rate: u64) {
    let mut g = Generator::new();
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut done: u64 = 0;
    loop {
        tick.tick().await;
        let due = (start.elapsed().as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
        if due.saturating_sub(done) > rate {
            done = due - rate;
        }
        while done < due {
            done += 1;
            g.step(now_us(), &mut out);
            if let Ok(mut l) = shared.latest.write() {
                for e in &out {
                    match &e.data {
                        Data::Quote(q) => l.quote = Some(q.clone()),
                        Data::Book(b) => l.book = Some(b.clone()),
                        Data::Trade(t) => {
                            if l.trades.len() == TRADES_KEPT {
                                l.trades.pop_front();
                            }
                            l.trades.push_back(t.clone());
                        }
                    }
                }
            }
            for e in out.drain(..) {
                // No receivers is not an error for a broadcast server.
                let _ = shared.tx.send(Arc::new(e));
            }
        }
    }
}

#[derive(Deserialize)]
struct ClientMessage {
    op: String,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
}

#[derive(Serialize)]
struct DataMessage<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<u64>,
    engine_ts_us: i64,
    data: T,
}

#[derive(Serialize)]
struct ErrorMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: Option<&'a serde_json::Value>,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct TradesSnapshot<'a> {
    symbol: &'static str,
    trades: &'a VecDeque<TradeData>,
}

/// One WebSocket session: per subscribed channel its `seq`, and every event of those
/// channels serialized for this subscriber alone.
struct Session {
    socket: WebSocket,
    shared: Arc<Shared>,
    rx: Option<broadcast::Receiver<Arc<Event>>>,
    channels: [Option<String>; 3],
    seq: [u64; 3],
    missed: u64,
}

impl Session {
    async fn send(&mut self, text: String) -> bool {
        self.socket.send(Message::Text(text.into())).await.is_ok()
    }

    async fn on_text(&mut self, text: &str) -> bool {
        let msg: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                let body = ErrorMessage {
                    kind: "error",
                    id: None,
                    error: ErrorBody {
                        code: "BAD_MESSAGE",
                        message: &e.to_string(),
                    },
                };
                return self.send(serde_json::to_string(&body).unwrap_or_default()).await;
            }
        };
        match msg.op.as_str() {
            "ping" => {
                let ack = Ack {
                    kind: "pong",
                    id: msg.id.as_ref(),
                    channels: None,
                };
                self.send(serde_json::to_string(&ack).unwrap_or_default()).await
            }
            "subscribe" => self.subscribe(&msg).await,
            _ => {
                let body = ErrorMessage {
                    kind: "error",
                    id: msg.id.as_ref(),
                    error: ErrorBody {
                        code: "UNKNOWN_OP",
                        message: "this baseline knows subscribe and ping",
                    },
                };
                self.send(serde_json::to_string(&body).unwrap_or_default()).await
            }
        }
    }

    async fn subscribe(&mut self, msg: &ClientMessage) -> bool {
        let mut kinds = Vec::new();
        for c in &msg.channels {
            match (Kind::of_channel(c), c.split_once('.')) {
                (Some(k), Some((_, sym))) if sym == SYMBOL => kinds.push((k, c.clone())),
                _ => {
                    let body = ErrorMessage {
                        kind: "error",
                        id: msg.id.as_ref(),
                        error: ErrorBody {
                            code: "UNKNOWN_CHANNEL",
                            message: "this baseline serves quotes, book and trades of BTCUSDT",
                        },
                    };
                    return self.send(serde_json::to_string(&body).unwrap_or_default()).await;
                }
            }
        }
        if self.rx.is_none() {
            self.rx = Some(self.shared.tx.subscribe());
        }
        let ack = Ack {
            kind: "subscribed",
            id: msg.id.as_ref(),
            channels: Some(&msg.channels),
        };
        if !self.send(serde_json::to_string(&ack).unwrap_or_default()).await {
            return false;
        }
        for (k, channel) in kinds {
            if self.channels[k.index()].is_some() {
                continue;
            }
            self.seq[k.index()] = 1;
            let now = now_us();
            let text = {
                let Ok(latest) = self.shared.latest.read() else {
                    return false;
                };
                let msg = |data: Option<Data>| DataMessage {
                    kind: "snapshot",
                    channel: &channel,
                    seq: 1,
                    missed: None,
                    engine_ts_us: now,
                    data,
                };
                match k {
                    Kind::Quotes => serde_json::to_string(&msg(latest.quote.clone().map(Data::Quote))),
                    Kind::Book => serde_json::to_string(&msg(latest.book.clone().map(Data::Book))),
                    Kind::Trades => serde_json::to_string(&DataMessage {
                        kind: "snapshot",
                        channel: &channel,
                        seq: 1,
                        missed: None,
                        engine_ts_us: now,
                        data: TradesSnapshot {
                            symbol: SYMBOL,
                            trades: &latest.trades,
                        },
                    }),
                }
                .unwrap_or_default()
            };
            self.channels[k.index()] = Some(channel);
            if !self.send(text).await {
                return false;
            }
        }
        true
    }

    async fn on_event(&mut self, e: &Event) -> bool {
        let i = e.kind.index();
        let Some(channel) = &self.channels[i] else {
            return true;
        };
        self.seq[i] += 1;
        let text = serde_json::to_string(&DataMessage {
            kind: "update",
            channel,
            seq: self.seq[i],
            missed: (self.missed > 0).then_some(self.missed),
            engine_ts_us: e.engine_ts_us,
            data: &e.data,
        })
        .unwrap_or_default();
        self.missed = 0;
        self.send(text).await
    }

    async fn run(mut self) {
        loop {
            let ok = match &mut self.rx {
                None => match self.socket.recv().await {
                    Some(Ok(Message::Text(t))) => self.on_text(t.as_str()).await,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => false,
                    Some(Ok(_)) => true,
                },
                Some(rx) => tokio::select! {
                    m = self.socket.recv() => match m {
                        Some(Ok(Message::Text(t))) => self.on_text(t.as_str()).await,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => false,
                        Some(Ok(_)) => true,
                    },
                    e = rx.recv() => match e {
                        Ok(e) => self.on_event(&e).await,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            self.missed += n;
                            true
                        }
                        Err(broadcast::error::RecvError::Closed) => false,
                    },
                },
            };
            if !ok {
                return;
            }
        }
    }
}

async fn stream(ws: WebSocketUpgrade, State(shared): State<Arc<Shared>>) -> Response {
    ws.on_upgrade(move |socket| {
        Session {
            socket,
            shared,
            rx: None,
            channels: [None, None, None],
            seq: [0; 3],
            missed: 0,
        }
        .run()
    })
}

async fn quote(Path(symbol): Path<String>, State(shared): State<Arc<Shared>>) -> Response {
    let q = if symbol == SYMBOL {
        shared.latest.read().ok().and_then(|l| l.quote.clone())
    } else {
        None
    };
    match q {
        Some(q) => Json(q).into_response(),
        None => (StatusCode::NOT_FOUND, "unknown symbol").into_response(),
    }
}

/// Serves the baseline on `listen` with the generator at `rate` steps a second until
/// the process is killed.
pub async fn serve(listen: SocketAddr, rate: u64) -> std::io::Result<()> {
    let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
    let shared = Arc::new(Shared {
        tx,
        latest: RwLock::new(Latest::default()),
    });
    tokio::spawn(generate(Arc::clone(&shared), rate));
    let app = Router::new()
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/quotes/{symbol}", get(quote))
        .route("/health/live", get(|| async { "ok" }))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step ends one book batch, so the book channel gets one event per step; a
    /// quarter of steps trade; the quote changes on a good share of them.
    #[test]
    fn the_generator_makes_a_book_per_step_and_trades_and_quotes() {
        let [q, b, t] = events_per_step(20_000);
        assert!((b - 1.0).abs() < 1e-9, "book per step {b}");
        assert!((0.2..0.3).contains(&t), "trades per step {t}");
        assert!(q > t && q < 1.0, "quotes per step {q}");
    }

    #[test]
    fn channel_kinds_parse() {
        assert_eq!(Kind::of_channel("quotes.BTCUSDT"), Some(Kind::Quotes));
        assert_eq!(Kind::of_channel("book.X"), Some(Kind::Book));
        assert_eq!(Kind::of_channel("trades.BTCUSDT"), Some(Kind::Trades));
        assert_eq!(Kind::of_channel("bars.BTCUSDT"), None);
        assert_eq!(Kind::of_channel("quotes"), None);
    }
}
