//! The load clients of the `fanout` bench (`benches/benches/fanout.rs`), in the library
//! so the tests below can run them against a tiny server with known output.
//!
//! WebSocket: N connections, all opened (upgraded) first and only then each
//! subscribed to one instrument's `quotes`, `book` and `trades` (so no handshake
//! waits behind the updates of connections already subscribed), counting per
//! connection what arrives: deliveries per channel, `missed` (what the server says it
//! dropped), `seq` breaks (the protocol promises 1, 2, 3...
//! per channel and connection), trade-id gaps (trades that never arrived, said or
//! not), and the delivery latency of every update: receive time minus the frame's
//! top-level `engine_ts_us` (engine publish time) or, when a server sends none, minus
//! the data's `recv_ts_us` (the feed's receive time); frames with neither are counted.
//! The protocol is `api/src/ws/protocol.rs`'s.
//!
//! The client runs on the same 2 cores as the server it measures, so it is built to
//! cost as little per message as a competent client would: each wake-up reads what
//! the socket holds in one system call and walks the frames in place
//! ([`crate::ws_client`]), reads only the fields it counts without allocating
//! ([`crate::frame_scan`]), takes one clock read per read and one histogram lock per
//! read. The same client drives both servers.
//!
//! HTTP: keep-alive connections each sending one GET after the other, counting
//! statuses and timing each request (a small HTTP/1.1 client of its own so the numbers
//! are not a client library's).
//!
//! Server CPU time and memory come from /proc/<pid> (Linux).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};

use crate::frame_scan::scan;
use crate::naive::Kind;
use crate::ws_client::{self, Event};

/// Handshakes (connect and upgrade) in flight at once while connections open.
pub const CONNECT_CONCURRENCY: usize = 256;
/// Histogram shards (connections record into `id % SHARDS`).
const SHARDS: usize = 64;
/// What a connection that ended without a close frame is counted as (RFC 6455's
/// "abnormal closure", never sent on the wire).
pub const CLOSE_ABNORMAL: u64 = 1006;
/// Linux reports process CPU time in clock ticks of 1/100 s (`USER_HZ`).
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Latency histogram in microseconds (1 us .. 10 min, 3 significant digits).
#[allow(clippy::expect_used)] // constant bounds, valid by construction
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Latencies recorded only while `on` (the measurement window), sharded so that
/// connections on different worker threads rarely share a lock.
pub struct Latency {
    on: AtomicBool,
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            on: AtomicBool::new(false),
            shards: (0..SHARDS).map(|_| Mutex::new(latency_histogram())).collect(),
        }
    }
}

impl Latency {
    pub fn set_on(&self, on: bool) {
        self.on.store(on, Relaxed);
    }

    /// Records `us` (at least 1: a clock step can make it negative) when on.
    pub fn record(&self, shard: usize, us: i64) {
        if !self.on.load(Relaxed) {
            return;
        }
        if let Some(Ok(mut h)) = self.shards.get(shard % SHARDS).map(|m| m.lock()) {
            h.saturating_record(us.max(1) as u64);
        }
    }

    /// Records every value of `us` (as [`Latency::record`]) under one lock.
    pub fn record_all(&self, shard: usize, us: &[i64]) {
        if !self.on.load(Relaxed) {
            return;
        }
        if let Some(Ok(mut h)) = self.shards.get(shard % SHARDS).map(|m| m.lock()) {
            for v in us {
                h.saturating_record((*v).max(1) as u64);
            }
        }
    }

    /// Everything recorded so far, merged; the shards start empty again.
    pub fn take(&self) -> Histogram<u64> {
        let mut all = latency_histogram();
        for s in &self.shards {
            if let Ok(mut h) = s.lock() {
                let _ = all.add(&*h);
                h.reset();
            }
        }
        all
    }
}

/// One connection's counters. Only its own task writes them (so a plain load and
/// store, no locked instruction); the bench reads them at the window's edges.
#[derive(Default)]
pub struct ConnStats {
    /// The WebSocket handshake completed.
    pub connected: AtomicBool,
    pub subscribed: AtomicBool,
    pub closed: AtomicBool,
    /// The close code the server sent (`CLOSE_ABNORMAL` when the connection ended
    /// without one, 0 while open).
    pub close_code: AtomicU64,
    /// Data messages (snapshots and updates) per channel: quotes, book, trades.
    pub deliveries: [AtomicU64; 3],
    pub snapshots: AtomicU64,
    /// Sum of the `missed` fields.
    pub missed: AtomicU64,
    /// Data messages whose `seq` was not the channel's previous plus one.
    pub seq_errors: AtomicU64,
    /// Trade ids skipped between consecutive trade updates.
    pub trade_gaps: AtomicU64,
    /// Updates timed from `engine_ts_us`, from the data's `recv_ts_us`, or not at all.
    pub ts_engine: AtomicU64,
    pub ts_recv: AtomicU64,
    pub ts_none: AtomicU64,
    /// `error` messages, frames that do not parse, failed connections.
    pub errors: AtomicU64,
    /// Bytes of every text message received.
    pub bytes: AtomicU64,
    /// Anything else (heartbeats, pongs).
    pub other: AtomicU64,
}

fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A copy of [`ConnStats`]' counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub deliveries: [u64; 3],
    pub snapshots: u64,
    pub missed: u64,
    pub seq_errors: u64,
    pub trade_gaps: u64,
    pub ts_engine: u64,
    pub ts_recv: u64,
    pub ts_none: u64,
    pub errors: u64,
    pub other: u64,
    pub bytes: u64,
}

impl ConnStats {
    pub fn counts(&self) -> Counts {
        Counts {
            deliveries: [0, 1, 2].map(|i| self.deliveries[i].load(Relaxed)),
            snapshots: self.snapshots.load(Relaxed),
            missed: self.missed.load(Relaxed),
            seq_errors: self.seq_errors.load(Relaxed),
            trade_gaps: self.trade_gaps.load(Relaxed),
            ts_engine: self.ts_engine.load(Relaxed),
            ts_recv: self.ts_recv.load(Relaxed),
            ts_none: self.ts_none.load(Relaxed),
            errors: self.errors.load(Relaxed),
            other: self.other.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

impl Counts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Counts {
            deliveries: [0, 1, 2].map(|i| d(self.deliveries[i], earlier.deliveries[i])),
            snapshots: d(self.snapshots, earlier.snapshots),
            missed: d(self.missed, earlier.missed),
            seq_errors: d(self.seq_errors, earlier.seq_errors),
            trade_gaps: d(self.trade_gaps, earlier.trade_gaps),
            ts_engine: d(self.ts_engine, earlier.ts_engine),
            ts_recv: d(self.ts_recv, earlier.ts_recv),
            ts_none: d(self.ts_none, earlier.ts_none),
            errors: d(self.errors, earlier.errors),
            other: d(self.other, earlier.other),
            bytes: d(self.bytes, earlier.bytes),
        }
    }

    pub fn add(&mut self, o: &Counts) {
        for i in 0..3 {
            self.deliveries[i] += o.deliveries[i];
        }
        self.snapshots += o.snapshots;
        self.missed += o.missed;
        self.seq_errors += o.seq_errors;
        self.trade_gaps += o.trade_gaps;
        self.ts_engine += o.ts_engine;
        self.ts_recv += o.ts_recv;
        self.ts_none += o.ts_none;
        self.errors += o.errors;
        self.other += o.other;
        self.bytes += o.bytes;
    }

    pub fn total_deliveries(&self) -> u64 {
        self.deliveries.iter().sum()
    }
}

/// One connection's reading state: the last `seq` per channel, the last trade id, and
/// the latencies of the current read not yet recorded.
#[derive(Debug, Default)]
pub struct Tally {
    seq: [u64; 3],
    last_trade: Option<u64>,
    pending: Vec<i64>,
}

impl Tally {
    /// Accounts for one text message received at `now_us` (its latency waits for
    /// [`Tally::flush`]: one lock per read, not per message).
    pub fn on_text(&mut self, text: &str, now_us: i64, stats: &ConnStats) {
        bump(&stats.bytes, text.len() as u64);
        let Ok(f) = scan(text) else {
            bump(&stats.errors, 1);
            return;
        };
        match f.kind {
            "subscribed" => stats.subscribed.store(true, Relaxed),
            "snapshot" | "update" => {
                let Some(k) = f.channel.and_then(Kind::of_channel) else {
                    bump(&stats.errors, 1);
                    return;
                };
                let i = k.index();
                bump(&stats.deliveries[i], 1);
                let expected = self.seq[i] + 1;
                if f.seq != Some(expected) {
                    bump(&stats.seq_errors, 1);
                }
                self.seq[i] = f.seq.unwrap_or(expected);
                if let Some(m) = f.missed {
                    bump(&stats.missed, m);
                }
                let snapshot = f.kind == "snapshot";
                if k == Kind::Trades {
                    if snapshot {
                        if f.newest_trade.is_some() {
                            self.last_trade = f.newest_trade.max(self.last_trade);
                        }
                    } else if let Some(id) = f.trade_id {
                        if let Some(last) = self.last_trade {
                            bump(&stats.trade_gaps, id.saturating_sub(last.saturating_add(1)));
                        }
                        self.last_trade = Some(self.last_trade.map_or(id, |l| l.max(id)));
                    }
                }
                if snapshot {
                    // A snapshot is the state at subscription, not an event: not timed.
                    bump(&stats.snapshots, 1);
                    return;
                }
                let ts = if let Some(t) = f.engine_ts_us {
                    bump(&stats.ts_engine, 1);
                    Some(t)
                } else if let Some(t) = f.recv_ts_us {
                    bump(&stats.ts_recv, 1);
                    Some(t)
                } else {
                    bump(&stats.ts_none, 1);
                    None
                };
                if let Some(t) = ts {
                    self.pending.push(now_us.saturating_sub(t));
                }
            }
            "error" => bump(&stats.errors, 1),
            _ => bump(&stats.other, 1),
        }
    }

    /// Records the latencies of the messages counted since the last call.
    pub fn flush(&mut self, latency: &Latency, shard: usize) {
        if !self.pending.is_empty() {
            latency.record_all(shard, &self.pending);
            self.pending.clear();
        }
    }
}

/// The subscribe message for `symbol`'s quotes, book and trades.
pub fn subscribe_message(symbol: &str) -> String {
    format!(r#"{{"op":"subscribe","channels":["quotes.{symbol}","book.{symbol}","trades.{symbol}"],"id":"bench"}}"#)
}

const PING: &str = r#"{"op":"ping","id":"bench-ping"}"#;

struct ConnSetup {
    url: Arc<str>,
    subscribe: Arc<str>,
    stats: Arc<ConnStats>,
    latency: Arc<Latency>,
    shard: usize,
    connect_timeout: Duration,
}

/// How a connection's reading ended.
enum Ended {
    /// The bench stops it: it sends a close frame.
    Stop,
    /// The server closed (its code, or [`CLOSE_ABNORMAL`]), or the connection broke.
    Closed(u64),
}

/// One connection until `stop`: connect and upgrade, wait for `go` (the barrier
/// [`Clients::open`] lifts once every connection is upgraded or failed), subscribe,
/// read and count; a ping every 10 s so an idle-timeout never closes a connection
/// that only reads. The permit (a slot of the handshakes in flight) is released once
/// upgraded or failed. While it waits for `go` it still reads (pings answered, a
/// close seen), so a long wait behind other handshakes does not end it.
///
/// Each wake-up reads what the socket holds (up to [`ws_client::READ_CHUNK`]) in one
/// system call and counts every message in it, timed by one clock read: the messages
/// of one read reached the client at the same moment.
async fn connection(
    s: ConnSetup,
    permit: Option<OwnedSemaphorePermit>,
    mut go: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let connected = tokio::time::timeout(s.connect_timeout, ws_client::connect(&s.url)).await;
    let Ok(Ok((mut tcp, mut frames))) = connected else {
        bump(&s.stats.errors, 1);
        s.stats.closed.store(true, Relaxed);
        return;
    };
    s.stats.connected.store(true, Relaxed);
    drop(permit);
    let mut out = Vec::with_capacity(256);
    let mut subscribe_sent = false;
    let mut tally = Tally::default();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(10),
        Duration::from_secs(10),
    );
    let ended = 'conn: loop {
        out.clear();
        let now = now_us();
        let mut closed = None;
        loop {
            match frames.next_event() {
                Ok(None) => break,
                Ok(Some(Event::Text(t))) => match std::str::from_utf8(t) {
                    Ok(t) => tally.on_text(t, now, &s.stats),
                    Err(_) => bump(&s.stats.errors, 1),
                },
                Ok(Some(Event::Ping(p))) => ws_client::client_frame(&mut out, ws_client::OP_PONG, p),
                Ok(Some(Event::Close(code))) => {
                    // Answered with a close frame, as RFC 6455 asks.
                    ws_client::client_frame(&mut out, ws_client::OP_CLOSE, &code.unwrap_or(1000).to_be_bytes());
                    closed = Some(code.map_or(CLOSE_ABNORMAL, u64::from));
                    break;
                }
                Ok(Some(Event::Binary | Event::Pong)) => {}
                Err(_) => {
                    closed = Some(CLOSE_ABNORMAL);
                    break;
                }
            }
        }
        tally.flush(&s.latency, s.shard);
        if !out.is_empty() && tcp.write_all(&out).await.is_err() && closed.is_none() {
            break Ended::Closed(CLOSE_ABNORMAL);
        }
        if let Some(code) = closed {
            break Ended::Closed(code);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break 'conn Ended::Stop,
            // `is_ok` inside: the value's read guard must not live across the write.
            go_on = async { go.wait_for(|g| *g).await.is_ok() }, if !subscribe_sent => {
                if !go_on {
                    break 'conn Ended::Stop;
                }
                subscribe_sent = true;
                out.clear();
                ws_client::client_frame(&mut out, ws_client::OP_TEXT, s.subscribe.as_bytes());
                if tcp.write_all(&out).await.is_err() {
                    break 'conn Ended::Closed(CLOSE_ABNORMAL);
                }
            }
            r = tcp.read(frames.spare()) => match r {
                Ok(n) if n > 0 => frames.filled(n),
                _ => break 'conn Ended::Closed(CLOSE_ABNORMAL),
            },
            _ = ping.tick() => {
                out.clear();
                ws_client::client_frame(&mut out, ws_client::OP_TEXT, PING.as_bytes());
                if tcp.write_all(&out).await.is_err() {
                    break 'conn Ended::Closed(CLOSE_ABNORMAL);
                }
            }
        }
    };
    match ended {
        Ended::Closed(code) => {
            s.stats.close_code.store(code, Relaxed);
            s.stats.closed.store(true, Relaxed);
        }
        Ended::Stop => {
            out.clear();
            ws_client::client_frame(&mut out, ws_client::OP_CLOSE, &1000u16.to_be_bytes());
            let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&out)).await;
        }
    }
}

/// N open WebSocket connections and their counters.
pub struct Clients {
    pub stats: Vec<Arc<ConnStats>>,
    pub latency: Arc<Latency>,
    /// Seconds from the first connect until every connection was upgraded or failed
    /// (or the timeout): the moment the subscribes were let go. Opening only, with
    /// no update flowing to any of these connections yet.
    pub upgrade_secs: f64,
    /// Seconds from the first connect until every connection subscribed or failed (or
    /// the timeout): `upgrade_secs` plus the subscribe phase, in which all N
    /// subscribes go out at once and the later ones are answered while the earlier
    /// ones already receive updates.
    pub connect_secs: f64,
    /// The barrier: `true` lets every connection send its subscribe. Held here so
    /// it outlives the connections.
    _go: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
    aborts: Vec<AbortHandle>,
}

impl Clients {
    /// Opens `n` connections to `url` (at most [`CONNECT_CONCURRENCY`] handshakes at a
    /// time), waits until all are upgraded or failed, then has each subscribe to
    /// `symbol`'s quotes, book and trades, and waits until all subscribed or failed;
    /// `connect_timeout` bounds both phases together (past it the subscribes go out
    /// and `open` returns).
    ///
    /// Two phases so that no handshake waits behind updates: were each connection to
    /// subscribe as soon as it is upgraded, the client (on the same cores as the
    /// server) would be busy reading the updates of the first subscribed ones while
    /// the later handshakes wait (at N=10,000 only ~1,800 subscribed in 60 s).
    pub async fn open(url: &str, symbol: &str, n: usize, connect_timeout: Duration) -> Clients {
        let url: Arc<str> = url.into();
        let subscribe: Arc<str> = subscribe_message(symbol).into();
        let latency = Arc::new(Latency::default());
        let (stop, stop_rx) = watch::channel(false);
        let (go, go_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let mut stats = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            // Past the deadline the rest start without waiting for a slot.
            let permit = tokio::time::timeout_at(deadline, Arc::clone(&slots).acquire_owned())
                .await
                .ok()
                .and_then(Result::ok);
            let st = Arc::new(ConnStats::default());
            stats.push(Arc::clone(&st));
            let setup = ConnSetup {
                url: Arc::clone(&url),
                subscribe: Arc::clone(&subscribe),
                stats: st,
                latency: Arc::clone(&latency),
                shard: i,
                connect_timeout,
            };
            handles.push(tokio::spawn(connection(setup, permit, go_rx.clone(), stop_rx.clone())));
        }
        let aborts = handles.iter().map(JoinHandle::abort_handle).collect();
        let upgraded = |s: &ConnStats| s.connected.load(Relaxed) || s.closed.load(Relaxed);
        Self::wait_all(&stats, deadline, upgraded).await;
        let upgrade_secs = start.elapsed().as_secs_f64();
        let _ = go.send(true);
        let subscribed = |s: &ConnStats| s.subscribed.load(Relaxed) || s.closed.load(Relaxed);
        Self::wait_all(&stats, deadline, subscribed).await;
        Clients {
            stats,
            latency,
            upgrade_secs,
            connect_secs: start.elapsed().as_secs_f64(),
            _go: go,
            stop,
            handles,
            aborts,
        }
    }

    /// Waits until `settled` holds for every connection, or `deadline`.
    async fn wait_all(stats: &[Arc<ConnStats>], deadline: tokio::time::Instant, settled: impl Fn(&ConnStats) -> bool) {
        while tokio::time::Instant::now() < deadline {
            if stats.iter().all(|s| settled(s)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Connections whose WebSocket handshake completed and that are still open.
    pub fn still_open(&self) -> usize {
        self.stats
            .iter()
            .filter(|s| s.connected.load(Relaxed) && !s.closed.load(Relaxed))
            .count()
    }

    pub fn subscribed(&self) -> usize {
        self.stats.iter().filter(|s| s.subscribed.load(Relaxed)).count()
    }

    pub fn closed(&self) -> usize {
        self.stats.iter().filter(|s| s.closed.load(Relaxed)).count()
    }

    /// Closed connections per close code, sorted by code.
    pub fn close_codes(&self) -> Vec<(u64, usize)> {
        let mut codes = std::collections::BTreeMap::new();
        for s in &self.stats {
            let c = s.close_code.load(Relaxed);
            if c != 0 {
                *codes.entry(c).or_insert(0) += 1;
            }
        }
        codes.into_iter().collect()
    }

    pub fn counts(&self) -> Vec<Counts> {
        self.stats.iter().map(|s| s.counts()).collect()
    }

    /// Stops every connection (a close frame each), waiting up to 10 s.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let handles = self.handles;
        let joined = tokio::time::timeout(Duration::from_secs(10), async move {
            for h in handles {
                let _ = h.await;
            }
        })
        .await;
        if joined.is_err() {
            for a in &self.aborts {
                a.abort();
            }
        }
    }
}

/// What one measured WebSocket round saw.
pub struct WsRound {
    pub n: usize,
    /// Connections the server confirmed subscribed by the time [`Clients::open`]
    /// returned (all N upgraded first, then every subscribe sent at once).
    pub subscribed: usize,
    /// Connections open (handshake done, not closed) at the window's end: what the
    /// server's memory holds.
    pub open: usize,
    /// Connections the server closed or that failed, by the window's end.
    pub closed: usize,
    /// Of those, how many per close code (sorted by code; failed connects are not
    /// here).
    pub close_codes: Vec<(u64, usize)>,
    /// See [`Clients::upgrade_secs`]: all N opened (upgraded or failed), no subscribe
    /// sent yet.
    pub upgrade_secs: f64,
    /// See [`Clients::connect_secs`]: all N subscribed or failed, counted from the
    /// first connect (so it includes `upgrade_secs`).
    pub connect_secs: f64,
    pub window: Duration,
    /// Summed over connections, within the window.
    pub counts: Counts,
    /// Per subscribed connection, deliveries per channel within the window.
    pub per_conn: [Vec<u64>; 3],
    /// Delivery latency of updates within the window, microseconds.
    pub latency: Histogram<u64>,
    /// Server CPU seconds (user + system) within the window.
    pub cpu_secs: Option<f64>,
    /// This process's (the load client's) CPU seconds within the window.
    pub client_cpu_secs: Option<f64>,
    /// Server RSS before connecting and at the window's end, KiB.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// At the window's end, over the round's connections: bytes the kernel received
    /// for the client that it had not read yet, and bytes the server's sockets held
    /// unsent or unacknowledged (`/proc/net/tcp`). Where latency waits: in the
    /// client's receive buffers or the server's send buffers.
    pub queues: Option<TcpQueues>,
}

impl WsRound {
    pub fn deliveries_per_sec(&self) -> f64 {
        self.counts.total_deliveries() as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// One round against a running server: open `n` connections, let them run `warmup`,
/// then count for `window`. `pid`: the server, for CPU time and RSS.
pub async fn ws_round(
    url: &str,
    symbol: &str,
    n: usize,
    connect_timeout: Duration,
    warmup: Duration,
    window: Duration,
    pid: Option<u32>,
) -> WsRound {
    let rss_before_kib = pid.and_then(rss_kib);
    let clients = Clients::open(url, symbol, n, connect_timeout).await;
    let subscribed = clients.subscribed();
    tokio::time::sleep(warmup).await;
    let before = clients.counts();
    let cpu0 = pid.and_then(cpu_ticks);
    let me = std::process::id();
    let client0 = cpu_ticks(me);
    clients.latency.take();
    clients.latency.set_on(true);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    clients.latency.set_on(false);
    let window = t0.elapsed();
    let cpu1 = pid.and_then(cpu_ticks);
    let client1 = cpu_ticks(me);
    let after = clients.counts();
    let rss_after_kib = pid.and_then(rss_kib);
    let queues = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
        .and_then(tcp_queues);
    let latency = clients.latency.take();
    let closed = clients.closed();
    let open = clients.still_open();
    let close_codes = clients.close_codes();
    let mut counts = Counts::default();
    let mut per_conn: [Vec<u64>; 3] = Default::default();
    for ((a, b), s) in after.iter().zip(&before).zip(&clients.stats) {
        let d = a.since(b);
        counts.add(&d);
        if s.subscribed.load(Relaxed) {
            for (i, v) in per_conn.iter_mut().enumerate() {
                v.push(d.deliveries[i]);
            }
        }
    }
    let (upgrade_secs, connect_secs) = (clients.upgrade_secs, clients.connect_secs);
    clients.close().await;
    WsRound {
        n,
        subscribed,
        open,
        closed,
        close_codes,
        upgrade_secs,
        connect_secs,
        window,
        counts,
        per_conn,
        latency,
        cpu_secs: cpu0
            .zip(cpu1)
            .map(|(a, b)| b.saturating_sub(a) as f64 / CLOCK_TICKS_PER_SEC),
        client_cpu_secs: client0
            .zip(client1)
            .map(|(a, b)| b.saturating_sub(a) as f64 / CLOCK_TICKS_PER_SEC),
        rss_before_kib,
        rss_after_kib,
        queues,
    }
}

/// Bytes waiting in the established loopback connections of one server port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpQueues {
    /// Received by the kernel for the clients (remote port = the server's), not read.
    pub client_unread: u64,
    /// In the server's send queues (local port = the server's): unsent or unacked.
    pub server_unsent: u64,
}

/// [`TcpQueues`] for `port`, from `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn tcp_queues(port: u16) -> Option<TcpQueues> {
    let mut q = TcpQueues::default();
    let mut any = false;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        any = true;
        for (local, remote, tx, rx) in text.lines().skip(1).filter_map(tcp_line) {
            if local == port {
                q.server_unsent += tx;
            } else if remote == port {
                q.client_unread += rx;
            }
        }
    }
    any.then_some(q)
}

/// (local port, remote port, tx_queue, rx_queue) of an established connection's line
/// of `/proc/net/tcp`: `sl local_address rem_address st tx_queue:rx_queue ...`, hex.
fn tcp_line(line: &str) -> Option<(u16, u16, u64, u64)> {
    let mut f = line.split_whitespace();
    let port = |a: &str| u16::from_str_radix(a.rsplit_once(':')?.1, 16).ok();
    let (_, local, remote, state, queues) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    if state != "01" {
        return None;
    }
    let (tx, rx) = queues.split_once(':')?;
    Some((
        port(local)?,
        port(remote)?,
        u64::from_str_radix(tx, 16).ok()?,
        u64::from_str_radix(rx, 16).ok()?,
    ))
}

/// User plus system CPU time of process `pid` (all threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime
    // and stime fields 14 and 15.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident set size of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What one HTTP round saw within its window.
pub struct HttpRound {
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Responses with any other status (a 429 from a rate limit, say).
    pub not_ok: u64,
    /// Connections that failed or responses that did not parse.
    pub errors: u64,
    pub window: Duration,
    /// Request latency (write to full response), microseconds, all statuses.
    pub latency: Histogram<u64>,
    /// The server's CPU-seconds (all threads, user + system) over the window, when its
    /// pid was given.
    pub server_cpu_secs: Option<f64>,
    /// This process's (the load client's) CPU-seconds over the window.
    pub client_cpu_secs: Option<f64>,
}

impl HttpRound {
    pub fn requests_per_sec(&self) -> f64 {
        (self.ok + self.not_ok) as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Server CPU-microseconds per request (all its threads, the idle ones included).
    pub fn server_cpu_us_per_request(&self) -> Option<f64> {
        let n = (self.ok + self.not_ok).max(1) as f64;
        self.server_cpu_secs.map(|s| s * 1e6 / n)
    }
}

#[derive(Default)]
struct HttpCounters {
    on: AtomicBool,
    ok: AtomicU64,
    not_ok: AtomicU64,
    errors: AtomicU64,
}

/// A parsed response head: status, body framing, whether the server closes.
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut h = Head {
        status,
        content_length: None,
        chunked: false,
        close: false,
    };
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            h.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            h.close = value.eq_ignore_ascii_case("close");
        }
    }
    Some(h)
}

/// Reads more bytes into `buf`; an end of stream is an error here.
async fn fill<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut Vec<u8>) -> std::io::Result<()> {
    if stream.read_buf(buf).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads one whole response (content-length or chunked body); returns its status and
/// whether the server will close the connection. `buf` holds bytes read but not yet
/// used (kept for the next response).
async fn read_response<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "unparsable response");
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p;
        }
        fill(stream, buf).await?;
    };
    let head = parse_head(&buf[..head_end]).ok_or_else(bad)?;
    let body = head_end + 4;
    let consumed = if let Some(len) = head.content_length {
        while buf.len() < body + len {
            fill(stream, buf).await?;
        }
        body + len
    } else if head.chunked {
        let mut at = body;
        loop {
            let line_end = loop {
                if let Some(p) = find(&buf[at..], b"\r\n") {
                    break at + p;
                }
                fill(stream, buf).await?;
            };
            let size_text = std::str::from_utf8(&buf[at..line_end]).map_err(|_| bad())?;
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| bad())?;
            // The chunk, then its CRLF (the last chunk: the final CRLF, no trailers).
            let end = line_end + 2 + size + 2;
            while buf.len() < end {
                fill(stream, buf).await?;
            }
            at = end;
            if size == 0 {
                break at;
            }
        }
    } else if head.status >= 200 && head.status != 204 && head.status != 304 {
        // No length: the body runs to the end of the connection.
        while stream.read_buf(buf).await? > 0 {}
        buf.clear();
        return Ok((head.status, true));
    } else {
        body
    };
    buf.drain(..consumed);
    Ok((head.status, head.close))
}

/// One keep-alive connection sending `request` again and again until `stop`,
/// reconnecting when the server closes. `source`: the local address to bind.
async fn http_connection(
    server: SocketAddr,
    source: Option<Ipv4Addr>,
    request: Arc<[u8]>,
    counters: Arc<HttpCounters>,
    latency: Arc<Latency>,
    shard: usize,
    stop: Arc<AtomicBool>,
) {
    let mut buf = Vec::with_capacity(4096);
    while !stop.load(Relaxed) {
        let connected = async {
            let socket = TcpSocket::new_v4()?;
            if let Some(ip) = source {
                socket.bind(SocketAddr::from((ip, 0)))?;
            }
            let stream = socket.connect(server).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        }
        .await;
        let Ok(mut stream) = connected else {
            bump(&counters.errors, 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        buf.clear();
        while !stop.load(Relaxed) {
            let t = Instant::now();
            let result = match stream.write_all(&request).await {
                Ok(()) => read_response(&mut stream, &mut buf).await,
                Err(e) => Err(e),
            };
            let on = counters.on.load(Relaxed);
            match result {
                Ok((status, close)) => {
                    if on {
                        latency.record(shard, t.elapsed().as_micros() as i64);
                        let c = if (200..300).contains(&status) {
                            &counters.ok
                        } else {
                            &counters.not_ok
                        };
                        c.fetch_add(1, Relaxed);
                    }
                    if close {
                        break;
                    }
                }
                Err(_) => {
                    if on {
                        counters.errors.fetch_add(1, Relaxed);
                    }
                    break;
                }
            }
        }
    }
}

/// `connections` keep-alive connections sending `GET path` to `server` for `warmup`
/// then `window`. With `spread_sources`, connection i binds 127.0.0.(2 + i % 64), so
/// a per-address rate limit sees 64 callers (loopback only).
pub async fn http_round(
    server: SocketAddr,
    path: &str,
    connections: usize,
    spread_sources: bool,
    warmup: Duration,
    window: Duration,
    server_pid: Option<u32>,
) -> HttpRound {
    let request: Arc<[u8]> = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nAccept: application/json\r\n\r\n")
        .into_bytes()
        .into();
    let counters = Arc::new(HttpCounters::default());
    let latency = Arc::new(Latency::default());
    latency.set_on(true);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<JoinHandle<()>> = (0..connections)
        .map(|i| {
            let source = spread_sources.then(|| Ipv4Addr::new(127, 0, 0, 2 + (i % 64) as u8));
            tokio::spawn(http_connection(
                server,
                source,
                Arc::clone(&request),
                Arc::clone(&counters),
                Arc::clone(&latency),
                i,
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(warmup).await;
    latency.take();
    let me = std::process::id();
    let (server0, client0) = (server_pid.and_then(cpu_ticks), cpu_ticks(me));
    counters.on.store(true, Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    counters.on.store(false, Relaxed);
    let window = t0.elapsed();
    let (server1, client1) = (server_pid.and_then(cpu_ticks), cpu_ticks(me));
    let secs = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / CLOCK_TICKS_PER_SEC);
    stop.store(true, Relaxed);
    let latency_h = latency.take();
    let aborts: Vec<AbortHandle> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let joined = tokio::time::timeout(Duration::from_secs(10), async move {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    if joined.is_err() {
        for a in &aborts {
            a.abort();
        }
    }
    HttpRound {
        ok: counters.ok.load(Relaxed),
        not_ok: counters.not_ok.load(Relaxed),
        errors: counters.errors.load(Relaxed),
        window,
        latency: latency_h,
        server_cpu_secs: secs(server0, server1),
        client_cpu_secs: secs(client0, client1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws_client::FrameReader;
    use futures_util::{SinkExt, StreamExt};
    use proptest::prelude::*;
    use serde_json::json;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn tcp_lines_give_ports_and_queues_of_established_connections_only() {
        let est = "   3: 0100007F:1F90 0100007F:C350 01 0000A000:00000010 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(tcp_line(est), Some((0x1F90, 0xC350, 0xA000, 0x10)));
        let listen = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1";
        assert_eq!(
            tcp_line(listen),
            None,
            "a listening socket's rx_queue is its accept backlog"
        );
        let v6 = "   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 00000005:00000000 00:00000000 00000000 0 0 1 1";
        assert_eq!(tcp_line(v6), Some((0x1F90, 0xD431, 5, 0)));
        assert_eq!(tcp_line("  sl  local_address rem_address   st tx_queue rx_queue"), None);
    }

    /// The client's unread bytes and the server's unsent ones are seen on a real
    /// loopback connection whose client does not read.
    #[tokio::test]
    async fn tcp_queues_see_a_client_that_does_not_read() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let _client = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        server.write_all(&[7u8; 10_000]).await.expect("write");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let q = tcp_queues(port).expect("/proc/net/tcp");
            if q.client_unread == 10_000 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{q:?}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// One generated server message.
    #[derive(Debug, Clone)]
    enum Spec {
        Data {
            kind: usize,
            snapshot: bool,
            /// 1: the right next seq; 0 or 2: a broken one.
            seq_step: u64,
            missed: Option<u64>,
            /// 0: `engine_ts_us`, 1: only the data's `recv_ts_us`, 2: neither.
            ts: u8,
            /// Trades: how far the trade id moves (0: a repeat).
            trade_step: u64,
        },
        Other(&'static str),
        Garbage(String),
    }

    fn spec() -> impl Strategy<Value = Spec> {
        prop_oneof![
            6 => (0usize..3, proptest::bool::weighted(0.1), prop_oneof![8 => Just(1u64), 1 => Just(0u64), 1 => Just(2u64)],
                  proptest::option::of(0u64..50), 0u8..3, 0u64..4)
                .prop_map(|(kind, snapshot, seq_step, missed, ts, trade_step)| Spec::Data { kind, snapshot, seq_step, missed, ts, trade_step }),
            1 => prop_oneof![Just("heartbeat"), Just("pong"), Just("error"), Just("subscribed")].prop_map(Spec::Other),
            1 => "[^\"]{0,12}".prop_map(Spec::Garbage),
        ]
    }

    /// Renders the specs as a server would (fields in varied order, extra fields) and
    /// computes, independently of [`Tally`], what must be counted and which latencies
    /// (offsets below `now`) must be recorded.
    fn render(specs: &[Spec], now: i64) -> (Vec<String>, Counts, Vec<i64>, bool) {
        let mut c = Counts::default();
        let mut seq = [0u64; 3];
        let mut last_trade: Option<u64> = None;
        let mut trade_id = 100u64;
        let mut lat = Vec::new();
        let mut subscribed = false;
        let mut out = Vec::new();
        for (n, s) in specs.iter().enumerate() {
            match s {
                Spec::Data {
                    kind,
                    snapshot,
                    seq_step,
                    missed,
                    ts,
                    trade_step,
                } => {
                    let channel = format!("{}.BTCUSDT", Kind::ALL[*kind].prefix());
                    let s_next = seq[*kind] + seq_step;
                    if *seq_step != 1 {
                        c.seq_errors += 1;
                    }
                    seq[*kind] = s_next;
                    c.deliveries[*kind] += 1;
                    c.missed += missed.unwrap_or(0);
                    let offset = 1_000 + n as i64 * 7;
                    let mut data = json!({ "symbol": "BTCUSDT", "quality": "LIVE", "bids": [["1.0", "2.0"]] });
                    if *kind == 2 {
                        trade_id += trade_step;
                        if *snapshot {
                            data = json!({ "symbol": "BTCUSDT", "trades": [{ "trade_id": trade_id - 1, "price": "1" }, { "trade_id": trade_id }] });
                            last_trade = Some(last_trade.map_or(trade_id, |l| l.max(trade_id)));
                        } else {
                            data["trade_id"] = json!(trade_id);
                            if let Some(l) = last_trade {
                                c.trade_gaps += trade_id.saturating_sub(l + 1);
                            }
                            last_trade = Some(last_trade.map_or(trade_id, |l| l.max(trade_id)));
                        }
                    }
                    let mut frame = json!({ "channel": channel, "type": if *snapshot { "snapshot" } else { "update" }, "seq": s_next });
                    if let Some(m) = missed {
                        frame["missed"] = json!(m);
                    }
                    match ts {
                        0 => {
                            frame["engine_ts_us"] = json!(now - offset);
                            // The engine's stamp wins over the feed's.
                            data["recv_ts_us"] = json!(now - offset - 500_000);
                        }
                        1 => data["recv_ts_us"] = json!(now - offset),
                        _ => data["recv_ts_us"] = json!(null),
                    }
                    frame["data"] = data;
                    if *snapshot {
                        c.snapshots += 1;
                    } else {
                        match ts {
                            0 => c.ts_engine += 1,
                            1 => c.ts_recv += 1,
                            _ => c.ts_none += 1,
                        }
                        if *ts < 2 {
                            lat.push(offset);
                        }
                    }
                    out.push(frame.to_string());
                }
                Spec::Other(kind) => {
                    match *kind {
                        "error" => c.errors += 1,
                        "subscribed" => subscribed = true,
                        _ => c.other += 1,
                    }
                    out.push(json!({ "type": kind, "ts_us": now, "id": "x" }).to_string());
                }
                Spec::Garbage(g) => {
                    c.errors += 1;
                    out.push(g.clone());
                }
            }
        }
        c.bytes = out.iter().map(|f| f.len() as u64).sum();
        (out, c, lat, subscribed)
    }

    proptest! {
        /// Any sequence of server messages: every delivery, snapshot, `missed`, seq
        /// break, trade-id gap, timestamp source and latency is counted as it should be.
        #[test]
        fn the_tally_counts_any_message_sequence(specs in proptest::collection::vec(spec(), 0..60)) {
            let now = 1_700_000_000_000_000;
            let (frames, expected, lat, subscribed) = render(&specs, now);
            let stats = ConnStats::default();
            let latency = Latency::default();
            latency.set_on(true);
            let mut tally = Tally::default();
            for f in &frames {
                tally.on_text(f, now, &stats);
            }
            tally.flush(&latency, 3);
            prop_assert_eq!(stats.counts(), expected);
            prop_assert_eq!(stats.subscribed.load(Relaxed), subscribed);
            let h = latency.take();
            let mut want = latency_histogram();
            for v in &lat {
                want.record(*v as u64).unwrap();
            }
            prop_assert_eq!(h.len(), lat.len() as u64);
            prop_assert_eq!(h.min(), want.min());
            prop_assert_eq!(h.max(), want.max());
            prop_assert_eq!(h.value_at_quantile(0.5), want.value_at_quantile(0.5));
        }
    }

    /// What the client spends per message, for callgrind (`CLIENT_COST=old` or `new`;
    /// ignored in normal runs): 20,000 of the naive server's messages (the generator's
    /// mix: books, quotes, trades) as one stream of server frames, read and counted.
    /// `old` is the previous client's reading (tungstenite's message stream, serde_json
    /// into a borrowed struct, a histogram lock per message); `new` is this one's.
    #[test]
    #[ignore]
    fn client_cost_per_message() {
        use crate::naive::Generator;
        let mut g = Generator::new();
        let mut events = Vec::new();
        let mut seq = [1u64; 3];
        let mut wire = Vec::new();
        let mut n = 0;
        let mut t = 1_700_000_000_000_000;
        while n < 20_000 {
            events.clear();
            t += 50;
            g.step(t, &mut events);
            for e in &events {
                let i = e.kind.index();
                seq[i] += 1;
                let m = json!({"type": "update", "channel": format!("{}.BTCUSDT", e.kind.prefix()), "seq": seq[i],
                               "engine_ts_us": e.engine_ts_us, "data": e.data});
                let b = m.to_string().into_bytes();
                wire.push(0x81);
                if b.len() < 126 {
                    wire.push(b.len() as u8);
                } else {
                    wire.push(126);
                    wire.extend_from_slice(&(b.len() as u16).to_be_bytes());
                }
                wire.extend_from_slice(&b);
                n += 1;
            }
        }
        let mode = std::env::var("CLIENT_COST").unwrap_or_default();
        let count = read_stream(&mode, wire);
        eprintln!("{mode}: {count} of {n} messages");
    }

    /// The reading part of [`client_cost_per_message`], apart so callgrind shows its
    /// cost alone (inclusive cost of this function / messages).
    #[inline(never)]
    fn read_stream(mode: &str, wire: Vec<u8>) -> u64 {
        use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct OldFrame<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            channel: Option<&'a str>,
            seq: Option<u64>,
            missed: Option<u64>,
            engine_ts_us: Option<i64>,
            data: Option<OldData>,
        }
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct OldData {
            recv_ts_us: Option<i64>,
            trade_id: Option<u64>,
        }
        let stats = ConnStats::default();
        let latency = Latency::default();
        latency.set_on(true);
        let mut count = 0u64;
        if mode == "old" {
            let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
            let mut ws = WebSocket::from_raw_socket(std::io::Cursor::new(wire), Role::Client, Some(cfg));
            while let Ok(Message::Text(text)) = ws.read() {
                if let Ok(f) = serde_json::from_str::<OldFrame<'_>>(text.as_str()) {
                    bump(&stats.deliveries[0], 1);
                    latency.record(0, now_us() - f.engine_ts_us.unwrap_or(0));
                }
                count += 1;
            }
        } else if mode == "sonic" {
            let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
            let mut ws = WebSocket::from_raw_socket(std::io::Cursor::new(wire), Role::Client, Some(cfg));
            while let Ok(Message::Text(text)) = ws.read() {
                if let Ok(f) = sonic_rs::from_str::<OldFrame<'_>>(text.as_str()) {
                    bump(&stats.deliveries[0], 1);
                    latency.record(0, now_us() - f.engine_ts_us.unwrap_or(0));
                }
                count += 1;
            }
        } else if mode == "new" {
            let mut r = FrameReader::default();
            let mut tally = Tally::default();
            let mut at = 0;
            while at < wire.len() {
                let spare = r.spare();
                let k = spare.len().min(wire.len() - at);
                spare[..k].copy_from_slice(&wire[at..at + k]);
                r.filled(k);
                at += k;
                let now = now_us();
                while let Ok(Some(Event::Text(t))) = r.next_event() {
                    if let Ok(t) = std::str::from_utf8(t) {
                        tally.on_text(t, now, &stats);
                    }
                    count += 1;
                }
                tally.flush(&latency, 0);
            }
        }
        count
    }

    /// Outside the window nothing is recorded.
    #[test]
    fn latency_is_recorded_only_while_on() {
        let l = Latency::default();
        l.record(0, 5);
        l.set_on(true);
        l.record(1, 7);
        l.record(2, -3);
        l.set_on(false);
        l.record(3, 9);
        let h = l.take();
        assert_eq!(h.len(), 2);
        assert_eq!((h.min(), h.max()), (1, 7));
        assert!(l.take().is_empty());
    }

    /// Updates a connection of the tiny server below receives, after its snapshots.
    const QUOTES: u64 = 30;
    const BOOKS: u64 = 20;
    const TRADE_IDS: [u64; 4] = [11, 12, 16, 17];
    /// Bytes of text one connection of the tiny server sends (the same for each).
    static SENT_PER_CONN: AtomicU64 = AtomicU64::new(0);

    /// A tiny WebSocket server with known output: after the subscribe reply and
    /// three snapshots it waits for `go`, then sends quotes stamped 5 ms in the past by
    /// `engine_ts_us`, books with no time at all, trades timed only by the data's
    /// `recv_ts_us` (7 ms in the past, one id gap of 3, one `missed` of 4), a book with
    /// a broken seq, a heartbeat, an error and a frame that is not JSON.
    async fn tiny_server(listener: TcpListener, go: watch::Receiver<bool>) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let mut go = go.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let Some(Ok(Message::Text(sub))) = ws.next().await else {
                    return;
                };
                assert!(sub.as_str().contains("\"op\":\"subscribe\""), "{sub}");
                let mut sent = 0;
                let mut send = Vec::new();
                send.push(json!({"type": "subscribed", "id": "bench", "channels": ["quotes.X", "book.X", "trades.X"]}));
                send.push(json!({"type": "snapshot", "channel": "quotes.X", "seq": 1, "data": {"recv_ts_us": null}}));
                send.push(json!({"type": "snapshot", "channel": "book.X", "seq": 1, "data": {"bids": []}}));
                send.push(json!({"type": "snapshot", "channel": "trades.X", "seq": 1, "data": {"trades": [{"trade_id": 9}, {"trade_id": 10}]}}));
                for m in send.drain(..) {
                    let m = m.to_string();
                    sent += m.len() as u64;
                    ws.send(Message::text(m)).await.unwrap();
                }
                while !*go.borrow_and_update() {
                    go.changed().await.unwrap();
                }
                let now = now_us();
                for i in 0..QUOTES {
                    send.push(json!({"type": "update", "channel": "quotes.X", "seq": 2 + i, "engine_ts_us": now - 5_000, "data": {"bid": "1"}}));
                }
                for i in 0..BOOKS {
                    send.push(
                        json!({"type": "update", "channel": "book.X", "seq": 2 + i, "data": {"bids": [["1", "2"]]}}),
                    );
                }
                for (i, id) in TRADE_IDS.iter().enumerate() {
                    let mut t = json!({"type": "update", "channel": "trades.X", "seq": 2 + i, "data": {"trade_id": id, "recv_ts_us": now - 7_000}});
                    if *id == 16 {
                        t["missed"] = json!(4);
                    }
                    send.push(t);
                }
                send.push(json!({"type": "update", "channel": "book.X", "seq": BOOKS + 5, "data": {}}));
                send.push(json!({"type": "heartbeat", "ts_us": now}));
                send.push(json!({"type": "error", "error": {"code": "X", "message": "y"}}));
                for m in send {
                    let m = m.to_string();
                    sent += m.len() as u64;
                    ws.send(Message::text(m)).await.unwrap();
                }
                sent += "not json".len() as u64;
                SENT_PER_CONN.store(sent, Relaxed);
                ws.send(Message::text("not json")).await.unwrap();
                // Until the client closes.
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_client_counts_a_known_stream_exactly() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_tx, go) = watch::channel(false);
        tokio::spawn(tiny_server(listener, go));
        let n = 3;
        let clients = Clients::open(&format!("ws://{addr}/stream"), "X", n, Duration::from_secs(30)).await;
        assert_eq!(clients.subscribed(), n);
        clients.latency.set_on(true);
        go_tx.send(true).unwrap();
        let trades = TRADE_IDS.len() as u64;
        let want = Counts {
            deliveries: [1 + QUOTES, 1 + BOOKS + 1, 1 + trades],
            snapshots: 3,
            missed: 4,
            seq_errors: 1,
            trade_gaps: 3,
            ts_engine: QUOTES,
            ts_recv: trades,
            ts_none: BOOKS + 1,
            errors: 2,
            other: 1,
            bytes: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while clients.counts().iter().any(|c| c.errors < want.errors) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let want = Counts {
            bytes: SENT_PER_CONN.load(Relaxed),
            ..want
        };
        assert!(want.bytes > 0);
        for c in clients.counts() {
            assert_eq!(c, want);
        }
        let h = clients.latency.take();
        assert_eq!(h.len(), n as u64 * (QUOTES + trades));
        // Each latency is at least the server's stamp offset; quotes 5 ms, trades 7 ms.
        assert!(h.min() >= 5_000, "min {}", h.min());
        let at_least_7ms = h
            .iter_recorded()
            .filter(|v| v.value_iterated_to() >= 7_000)
            .map(|v| v.count_at_value())
            .sum::<u64>();
        assert!(at_least_7ms >= n as u64 * trades, "{at_least_7ms}");
        assert_eq!((clients.closed(), clients.still_open()), (0, n));
        clients.close().await;
    }

    /// No connection subscribes before every one is upgraded: the server counts an
    /// upgrade when it accepts the request (before its 101 goes out, so before that
    /// client can know it is upgraded) and holds the last connection's upgrade back
    /// 300 ms; every subscribe must find all N counted. A client subscribing as soon
    /// as it is upgraded sends N-1 subscribes inside those 300 ms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_connection_is_upgraded_before_any_subscribes() {
        use std::sync::atomic::AtomicUsize;
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        let n = 6;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upgraded = Arc::new(AtomicUsize::new(0));
        // Per subscribe received: how many connections were upgraded then.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (up, sn) = (Arc::clone(&upgraded), Arc::clone(&seen));
        tokio::spawn(async move {
            for i in 0.. {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (up, sn) = (Arc::clone(&up), Arc::clone(&sn));
                tokio::spawn(async move {
                    if i == n - 1 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    // The callback's type (an `ErrorResponse` error) is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let count = |_: &Request, r: Response| {
                        up.fetch_add(1, Relaxed);
                        Ok(r)
                    };
                    let mut ws = tokio_tungstenite::accept_hdr_async(tcp, count).await.unwrap();
                    let Some(Ok(Message::Text(sub))) = ws.next().await else {
                        return;
                    };
                    assert!(sub.as_str().contains("\"op\":\"subscribe\""), "{sub}");
                    sn.lock().unwrap().push(up.load(Relaxed));
                    ws.send(Message::text(r#"{"type":"subscribed","id":"bench"}"#))
                        .await
                        .unwrap();
                    while let Some(Ok(_)) = ws.next().await {}
                });
            }
        });
        let clients = Clients::open(&format!("ws://{addr}/"), "X", n, Duration::from_secs(30)).await;
        assert_eq!(clients.subscribed(), n);
        assert_eq!(*seen.lock().unwrap(), vec![n; n]);
        assert_eq!(upgraded.load(Relaxed), n);
        assert!(clients.upgrade_secs >= 0.3, "{}", clients.upgrade_secs);
        assert!(clients.connect_secs >= clients.upgrade_secs);
        clients.close().await;
    }

    /// Connections the server ends are counted per close code: a close frame's code,
    /// or 1006 when the connection just ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closes_are_counted_by_code() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for i in 0.. {
                let Ok((tcp, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                    let _ = ws.next().await;
                    ws.send(Message::text(r#"{"type":"subscribed","id":"bench"}"#))
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match i % 3 {
                        0 => {
                            let frame = CloseFrame {
                                code: CloseCode::from(4009),
                                reason: "slow consumer".into(),
                            };
                            let _ = ws.close(Some(frame)).await;
                        }
                        1 => drop(ws),
                        // Stays open until the client leaves.
                        _ => while let Some(Ok(_)) = ws.next().await {},
                    }
                });
            }
        });
        let clients = Clients::open(&format!("ws://{addr}/"), "X", 9, Duration::from_secs(30)).await;
        assert_eq!(clients.subscribed(), 9);
        let deadline = Instant::now() + Duration::from_secs(60);
        while clients.closed() < 6 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(clients.close_codes(), vec![(CLOSE_ABNORMAL, 3), (4009, 3)]);
        assert_eq!((clients.closed(), clients.still_open()), (6, 3));
        clients.close().await;
    }

    /// A response stream written in pieces split at every byte position: content
    /// length, chunked (several chunks and an extension) and a bodiless 204, back to
    /// back on one keep-alive connection, are each read whole, in order.
    #[tokio::test]
    async fn responses_are_read_whole_wherever_the_bytes_split() {
        let responses: [(&str, u16, bool); 4] = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncontent-type: application/json\r\n\r\n{\"bid\":\"1\"}", 200, false),
            ("HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n", 429, false),
            ("HTTP/1.1 204 No Content\r\n\r\n", 204, false),
            ("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno", 503, true),
        ];
        let all: Vec<u8> = responses.iter().flat_map(|r| r.0.bytes()).collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for split in 0..=all.len() {
            let (a, b) = all.split_at(split);
            let (a, b) = (a.to_vec(), b.to_vec());
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            let server = tokio::spawn({
                async move {
                    s.set_nodelay(true).unwrap();
                    s.write_all(&a).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    s.write_all(&b).await.unwrap();
                    s.flush().await.unwrap();
                    // Keep it open until the client is done.
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest).await;
                }
            });
            let mut buf = Vec::new();
            for (_, status, close) in responses {
                let got = read_response(&mut client, &mut buf).await.unwrap();
                assert_eq!(got, (status, close), "split at {split}");
            }
            assert!(buf.is_empty(), "split at {split}: {} bytes left", buf.len());
            drop(client);
            server.await.unwrap();
        }
    }

    /// A stream that ends inside a response is an error at every position, never a
    /// response.
    #[tokio::test]
    async fn a_truncated_response_is_an_error_wherever_it_ends() {
        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for end in 0..full.len() {
            let part = full[..end].to_vec();
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            let server = tokio::spawn(async move {
                s.write_all(&part).await.unwrap();
                s.shutdown().await.unwrap();
            });
            let mut buf = Vec::new();
            assert!(read_response(&mut client, &mut buf).await.is_err(), "ended at {end}");
            server.await.unwrap();
        }
    }

    /// The HTTP load client counts 2xx and other statuses apart, against a tiny server
    /// that answers every third request 429.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_http_client_counts_statuses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicU64::new(0));
        tokio::spawn({
            let answered = Arc::clone(&answered);
            async move {
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        return;
                    };
                    let answered = Arc::clone(&answered);
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        loop {
                            while find(&buf, b"\r\n\r\n").is_none() {
                                if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                                    return;
                                }
                            }
                            let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
                            assert!(buf.starts_with(b"GET /q HTTP/1.1\r\n"));
                            buf.drain(..end);
                            let n = answered.fetch_add(1, Relaxed);
                            let r: &[u8] = if n % 3 == 2 {
                                b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
                            };
                            if s.write_all(r).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        let r = http_round(
            addr,
            "/q",
            4,
            false,
            Duration::from_millis(100),
            Duration::from_millis(500),
            Some(std::process::id()),
        )
        .await;
        assert_eq!(r.errors, 0);
        // The server here is this process: its CPU over the window is measured.
        assert!(r.server_cpu_secs.is_some() && r.client_cpu_secs.is_some());
        assert!(r.ok > 0 && r.not_ok > 0, "ok {} not ok {}", r.ok, r.not_ok);
        // Four connections, each sees every third of its own answers refused at most
        // one off per connection at the window's edges... the server's counter is
        // global, so only the proportion is known: about a third.
        let share = r.not_ok as f64 / (r.ok + r.not_ok) as f64;
        assert!((0.2..0.45).contains(&share), "429 share {share}");
        assert_eq!(r.latency.len(), r.ok + r.not_ok);
        assert!(answered.load(Relaxed) >= r.ok + r.not_ok);
    }

    #[test]
    fn proc_readers_see_this_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|k| k > 0));
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        assert!(cpu_ticks(pid).is_some());
        assert!(cpu_ticks(u32::MAX).is_none());
    }
}
