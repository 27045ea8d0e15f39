//! The connection loop shared by every venue (see the module docs of `live`). It
//! names no venue: URLs, subscriptions and REST book requests come from the venue's
//! [`crate::venue::Protocol`].

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use stocksblitz_engine::tick_ring::TickProducer;
use stocksblitz_engine::{FeedStatus, InstrumentId, InstrumentRegistry, Tick, UnixNanos};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::backoff::{Backoff, BackoffConfig};
use crate::capture::{Frame, Recorder};
use crate::normalize::{status, Action, FrameRef};
use crate::runner::FeedHandle;
use crate::stats::{FeedState, FeedStats};
use crate::venue::{Venue, VenueNormalizer};

/// The venue connection's WebSocket settings. tungstenite zero-fills its whole read
/// buffer before every read: at the default 128 KiB that is a 128 KiB memset per
/// read system call, which on a quiet stream is one per venue message, dwarfing the
/// parse. Venue messages are small; a bigger one still arrives whole (the buffer
/// reserves a frame's full length once its header is read).
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES)
}

/// See [`ws_config`].
const READ_BUFFER_BYTES: usize = 16 * 1024;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// At a make-before-break switch, how long the old connection may take to reach the
/// new one's first frame.
const CATCH_UP: Duration = Duration::from_secs(2);
/// Frames kept from the old connection while its replacement opens (and, without
/// switch markers, read from it at the switch).
const OVERLAP_FRAMES: usize = 4096;

/// A data frame (text or binary), not a control frame.
fn is_data(m: &Message) -> bool {
    matches!(m, Message::Text(_) | Message::Binary(_))
}
type Fetch = Pin<Box<dyn std::future::Future<Output = (InstrumentId, Result<String, String>)> + Send>>;

/// A replacement connection being opened while the current one is still read: the new
/// socket and its first data frame, or `None` when it failed (the old one stays).
/// A replacement connection that delivered data: its data frames up to and including
/// the venue's first switch marker (or its first data frame, for a venue without).
type Replacement = Pin<Box<dyn std::future::Future<Output = Option<(Ws, Vec<Message>)>> + Send>>;

/// `[feeds.live]`: where and how a venue feed connects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// WebSocket base URL (Binance: `wss://stream.binance.com:9443`). `{simulator}`
    /// stands for the address of the in-process feed simulator
    /// (`ws://{simulator}/binance`).
    pub ws_url: String,
    /// REST base URL for book snapshots (Binance: `https://api.binance.com`;
    /// `{simulator}` as in `ws_url`).
    #[serde(default)]
    pub rest_url: Option<String>,
    /// Levels requested in a REST depth snapshot.
    #[serde(default = "default_depth_limit")]
    pub depth_limit: u32,
    /// No frame for this long: instruments turn STALE.
    pub stale_after_ms: u64,
    /// No frame for this long: the connection is replaced.
    pub dead_after_ms: u64,
    pub connect_timeout_ms: u64,
    /// Make-before-break reconnect after this long (Binance cuts at 24 h).
    pub max_connection_age_secs: u64,
    #[serde(default)]
    pub reconnect: BackoffConfig,
    /// Coinbase: compare the local book with the REST book this often (level2 has no
    /// sequence numbers); 0 turns audits off. Needs `rest_url`.
    #[serde(default)]
    pub audit_interval_secs: u64,
    /// Record every received frame to this capture file.
    #[serde(default)]
    pub capture: Option<PathBuf>,
    /// Query parameters whose values are secrets, as `param = "ENV_VAR"`: the value is
    /// read from that environment variable (or the file named by `ENV_VAR_FILE`) at
    /// start-up. Kite: `{ api_key = "KITE_API_KEY", access_token = "KITE_ACCESS_TOKEN" }`.
    #[serde(default)]
    pub auth_query: std::collections::BTreeMap<String, String>,
}

fn default_depth_limit() -> u32 {
    1000
}

/// Placeholder for the in-process simulator's address in URLs.
pub const SIMULATOR_PLACEHOLDER: &str = "{simulator}";

impl LiveConfig {
    /// Whether a URL names the in-process simulator.
    pub fn uses_simulator(&self) -> bool {
        self.ws_url.contains(SIMULATOR_PLACEHOLDER)
            || self
                .rest_url
                .as_ref()
                .is_some_and(|r| r.contains(SIMULATOR_PLACEHOLDER))
    }

    /// Replaces `{simulator}` with the simulator's bound address.
    pub fn resolve_simulator(&mut self, addr: std::net::SocketAddr) {
        let a = addr.to_string();
        self.ws_url = self.ws_url.replace(SIMULATOR_PLACEHOLDER, &a);
        if let Some(r) = &mut self.rest_url {
            *r = r.replace(SIMULATOR_PLACEHOLDER, &a);
        }
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.ws_url.starts_with("ws://") || self.ws_url.starts_with("wss://")) {
            return Err(("ws_url", format!("{:?} must start with ws:// or wss://", self.ws_url)));
        }
        if let Some(r) = &self.rest_url {
            if !(r.starts_with("http://") || r.starts_with("https://")) {
                return Err(("rest_url", format!("{r:?} must start with http:// or https://")));
            }
        }
        if self.stale_after_ms == 0 {
            return Err(("stale_after_ms", "must be at least 1".into()));
        }
        if self.dead_after_ms <= self.stale_after_ms {
            return Err(("dead_after_ms", "must be longer than stale_after_ms".into()));
        }
        if self.connect_timeout_ms == 0 {
            return Err(("connect_timeout_ms", "must be at least 1".into()));
        }
        if self.max_connection_age_secs < 60 {
            return Err(("max_connection_age_secs", "must be at least 60".into()));
        }
        if !(1..=5000).contains(&self.depth_limit) {
            return Err(("depth_limit", "must be between 1 and 5000".into()));
        }
        self.reconnect.validate().map_err(|(k, m)| (k, m.to_owned()))
    }
}

/// Everything the loop needs about the venue and its instruments.
struct VenueInfo {
    venue: Venue,
    /// Venue symbol per instrument id (REST snapshot requests).
    symbols: Vec<Option<String>>,
    ids: Vec<InstrumentId>,
}

impl VenueInfo {
    /// The feed's venue symbols, in instrument id order.
    fn venue_symbols(&self) -> Vec<&str> {
        self.symbols.iter().flatten().map(String::as_str).collect()
    }
}

struct Ctx {
    name: String,
    cfg: LiveConfig,
    v: VenueInfo,
    normalizer: VenueNormalizer,
    ring: TickProducer,
    stats: Arc<FeedStats>,
    stop: Arc<AtomicBool>,
    recorder: Option<Recorder>,
    http: reqwest::Client,
    /// Resolved `auth_query` pairs (secrets).
    auth: Vec<(String, String)>,
    /// When a frame last produced ticks (staleness); any frame keeps a connection alive.
    last_data: Instant,
    /// Parse errors since the last log line (logged at most every 10 s).
    unlogged_errors: u64,
    /// The last error re-reading a credential (logged once until it changes).
    auth_error: Option<String>,
    last_error_log: Instant,
}

enum End {
    Stopped,
    Closed,
    Dead,
}

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnectError {
    /// The venue refused the credentials (HTTP 401 or 403): the reason says what to fix.
    Refused(String),
    /// Anything else (network, timeout, other HTTP status).
    Failed(String),
}

/// Whether an HTTP status on the WebSocket upgrade means the credentials were refused.
fn is_auth_refusal(status: u16) -> bool {
    status == 401 || status == 403
}

/// The reason shown for a refused connection: the status, the venue's own words (with
/// any secret scrubbed) and where fresh credentials go.
fn refusal_reason(status: u16, body: &str, auth_vars: &[&str]) -> String {
    let body: String = body.trim().chars().take(200).collect();
    let said = if body.is_empty() {
        String::new()
    } else {
        format!(" ({body})")
    };
    let fix = if auth_vars.is_empty() {
        "; the venue does not accept this client or address".to_owned()
    } else {
        let vars: Vec<String> = auth_vars
            .iter()
            .map(|v| format!("{v} (or the file {v}_FILE names)"))
            .collect();
        format!(
            ": the credentials are invalid or expired (Kite access tokens expire daily); put fresh ones in {}, \
             they are re-read before every reconnect",
            vars.join(", ")
        )
    };
    format!("the venue refused the connection with HTTP {status}{said}{fix}")
}

impl Ctx {
    fn push(ring: &mut TickProducer, stats: &FeedStats, t: Tick) {
        stats.ticks.inc();
        ring.push(t);
    }

    /// The connection URL, credentials included (never log it).
    fn url(&self) -> String {
        crate::secrets::with_query(&self.public_url(), &self.auth)
    }

    /// The connection URL without credentials.
    fn public_url(&self) -> String {
        let base = self.cfg.ws_url.trim_end_matches('/');
        self.v.venue.protocol().stream_url(base, &self.v.venue_symbols())
    }

    async fn connect(&self) -> Result<Ws, ConnectError> {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let url = self.url();
        let timeout = Duration::from_millis(self.cfg.connect_timeout_ms);
        match tokio::time::timeout(
            timeout,
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), false),
        )
        .await
        {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(WsError::Http(resp))) if is_auth_refusal(resp.status().as_u16()) => {
                let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let vars: Vec<&str> = self.cfg.auth_query.values().map(String::as_str).collect();
                let reason = refusal_reason(resp.status().as_u16(), &body, &vars);
                Err(ConnectError::Refused(crate::secrets::scrub(&reason, &self.auth)))
            }
            Ok(Err(e)) => Err(ConnectError::Failed(crate::secrets::scrub(&e.to_string(), &self.auth))),
            Err(_) => Err(ConnectError::Failed(format!(
                "no answer within {} ms",
                self.cfg.connect_timeout_ms
            ))),
        }
    }

    /// Re-reads the credentials (`auth_query`) from the environment or their files, so
    /// a rotated token (Kite's expire daily) is used from the next connection on. A
    /// credential that cannot be read keeps its previous value.
    fn reload_auth(&mut self) {
        let mut failed = None;
        for (param, var) in &self.cfg.auth_query {
            match crate::secrets::from_env(var) {
                Ok(v) => {
                    if let Some(slot) = self.auth.iter_mut().find(|(k, _)| k == param) {
                        if slot.1 != v {
                            slot.1 = v;
                            tracing::info!(feed = %self.name, param = %param, source = %var, "credential changed; the next connection uses it");
                        }
                    }
                }
                Err(e) => {
                    if self.auth_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(feed = %self.name, param = %param, error = %e, "credential could not be re-read; keeping the previous one");
                    }
                    failed = Some(e);
                }
            }
        }
        self.auth_error = failed;
    }

    /// Records a connection state change, logging each transition once (a reason that
    /// changes within the state is logged again; repeats are debug only).
    fn note_state(&self, state: FeedState, reason: Option<String>) {
        let previous = self.stats.reason();
        let changed = self.stats.set_state(state, reason.clone(), UnixNanos::now());
        let reason = reason.unwrap_or_default();
        if changed || previous.as_deref().unwrap_or("") != reason {
            match state {
                FeedState::Connected => {}
                FeedState::Unauthorized => {
                    tracing::error!(feed = %self.name, state = state.as_str(), reason = %reason, "feed refused by the venue")
                }
                _ => tracing::warn!(feed = %self.name, state = state.as_str(), reason = %reason, "feed not connected"),
            }
        } else {
            tracing::debug!(feed = %self.name, state = state.as_str(), reason = %reason, "feed still not connected");
        }
    }

    /// The venue's REST book request for `id` (a snapshot to sync from, or a book to
    /// audit against), returned wrapped as the frame the normalizer expects.
    fn fetch(&self, id: InstrumentId, delay: Duration) -> Option<Fetch> {
        let rest = self.cfg.rest_url.as_deref()?;
        let venue_symbol = self.v.symbols.get(id.index())?.as_deref()?;
        let base = rest.trim_end_matches('/');
        let req = self.v.venue.protocol().book_request(base, venue_symbol, &self.cfg)?;
        let http = self.http.clone();
        Some(Box::pin(async move {
            tokio::time::sleep(delay).await;
            let r = async {
                let requested = UnixNanos::now();
                let resp = http.get(&req.url).send().await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.text().await.map_err(|e| e.to_string())?;
                if status.is_success() {
                    if !req.settle.is_zero() {
                        // Updates the venue sent before answering may still be in
                        // flight on the WebSocket: let them arrive first.
                        tokio::time::sleep(req.settle).await;
                    }
                    Ok((req.wrap)(&req.symbol, requested, &body))
                } else {
                    Err(format!("HTTP {status}: {}", body.chars().take(200).collect::<String>()))
                }
            }
            .await;
            (id, r)
        }))
    }

    fn note_error(&mut self, e: &dyn std::fmt::Display) {
        self.stats.parse_errors.inc();
        self.unlogged_errors += 1;
        if self.last_error_log.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(feed = %self.name, error = %e, count = self.unlogged_errors, "bad frames skipped");
            self.unlogged_errors = 0;
            self.last_error_log = Instant::now();
        }
    }

    /// Normalizes one frame; returns what the venue asked for.
    fn frame(&mut self, frame: FrameRef<'_>, recv: UnixNanos, fetches: &mut FuturesUnordered<Fetch>) -> Action {
        self.stats.messages.inc();
        self.stats.bytes.add(frame.len() as u64);
        if let Some(r) = &self.recorder {
            let f = match frame {
                FrameRef::Text(t) => Frame::Text(String::from_utf8_lossy(t).into_owned()),
                FrameRef::Binary(b) => Frame::Binary(b.to_vec()),
            };
            r.record(recv, f);
        }
        let (ring, stats) = (&mut self.ring, &self.stats);
        let mut produced = false;
        let result = self.normalizer.on_frame(frame, recv, stats, &mut |t| {
            produced = true;
            Self::push(ring, stats, t)
        });
        ring.wake_consumer();
        if produced {
            // Only market data counts against staleness: venue heartbeats do not.
            self.last_data = Instant::now();
        }
        match result {
            Ok(Action::Snapshot(id)) => {
                if let Some(f) = self.fetch(id, Duration::ZERO) {
                    fetches.push(f);
                }
                Action::Snapshot(id)
            }
            Ok(a) => a,
            Err(e) => {
                self.note_error(&e);
                // A rejected book update took a book out of LIVE: resync it.
                let then = e.then();
                if let Action::Snapshot(id) = then {
                    if let Some(f) = self.fetch(id, Duration::ZERO) {
                        fetches.push(f);
                    }
                }
                then
            }
        }
    }

    async fn subscribe(&self, ws: &mut Ws) -> Result<(), String> {
        send_all(ws, self.subscribe_messages()).await
    }

    /// What to send on a new connection to get this feed's channels.
    fn subscribe_messages(&self) -> Vec<String> {
        self.v.venue.protocol().subscribe(&self.v.venue_symbols())
    }

    /// Starts opening a replacement connection (make-before-break). It owns what it
    /// needs, so the current connection keeps being read while it connects: nothing
    /// the old socket delivers in the meantime is left unread, and the new stream's
    /// first messages overlap what was applied (old ones are ignored by update id).
    fn start_replacement(&self) -> Replacement {
        let url = self.url();
        let auth = self.auth.clone();
        let name = self.name.clone();
        let msgs = self.subscribe_messages();
        let connect_timeout = Duration::from_millis(self.cfg.connect_timeout_ms);
        let first_data = Duration::from_millis(self.cfg.stale_after_ms);
        let marker = self.v.venue.protocol().switch_marker();
        Box::pin(async move {
            let mut ws = match tokio::time::timeout(
                connect_timeout,
                tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), false),
            )
            .await
            {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => {
                    let error = crate::secrets::scrub(&e.to_string(), &auth);
                    tracing::warn!(feed = %name, error = %error, "replacement connection failed; keeping the old one");
                    return None;
                }
                Err(_) => {
                    tracing::warn!(feed = %name, "replacement connection did not open in time; keeping the old one");
                    return None;
                }
            };
            if send_all(&mut ws, msgs).await.is_err() {
                return None;
            }
            let deadline = tokio::time::Instant::now() + first_data;
            let mut prefix = Vec::new();
            loop {
                match tokio::time::timeout_at(deadline, ws.next()).await {
                    Ok(Some(Ok(m))) if is_data(&m) => {
                        let done = marker.is_none_or(|is| is(&m.clone().into_data())) || prefix.len() >= OVERLAP_FRAMES;
                        prefix.push(m);
                        if done {
                            return Some((ws, prefix));
                        }
                    }
                    Ok(Some(Ok(_))) => continue,
                    // Data but no marker in time: switch without lining up.
                    _ if !prefix.is_empty() => return Some((ws, prefix)),
                    _ => {
                        tracing::warn!(feed = %name, "replacement connection sent no data; keeping the old one");
                        return None;
                    }
                }
            }
        })
    }

    /// Reads one connection until it ends; returns why.
    async fn session(&mut self, mut ws: Ws) -> End {
        let mut fetches: FuturesUnordered<Fetch> = FuturesUnordered::new();
        let now = UnixNanos::now();
        let mut need = Vec::new();
        {
            let (ring, stats) = (&mut self.ring, &self.stats);
            self.normalizer
                .on_connected(now, &mut |t| Self::push(ring, stats, t), |id| need.push(id));
            ring.wake_consumer();
        }
        for id in need {
            if let Some(f) = self.fetch(id, Duration::ZERO) {
                fetches.push(f);
            }
        }
        if let Err(e) = self.subscribe(&mut ws).await {
            tracing::warn!(feed = %self.name, error = %e, "subscribe failed");
            return End::Closed;
        }
        let mut opened = Instant::now();
        let mut pending: Option<Replacement> = None;
        // Data frames the old socket delivered while the replacement opened.
        let mut overlap: Vec<Message> = Vec::new();
        // After a failed replacement at the age limit, when to try again.
        let mut next_try = Instant::now();
        let max_age = Duration::from_secs(self.cfg.max_connection_age_secs);
        let stale = Duration::from_millis(self.cfg.stale_after_ms);
        let dead = Duration::from_millis(self.cfg.dead_after_ms);
        let mut last_frame = Instant::now();
        self.last_data = Instant::now();
        let mut stale_reported = false;
        let mut replace = false;
        let mut check = tokio::time::interval(Duration::from_millis(100));
        let audit_every = Duration::from_secs(self.cfg.audit_interval_secs.max(1));
        let audits = self.v.venue.protocol().audits(&self.cfg);
        let mut audit = tokio::time::interval_at(tokio::time::Instant::now() + audit_every, audit_every);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let _ = ws.close(None).await;
                return End::Stopped;
            }
            if pending.is_none() && (replace || (opened.elapsed() >= max_age && Instant::now() >= next_try)) {
                pending = Some(self.start_replacement());
                replace = false;
            }
            tokio::select! {
                r = async {
                    match pending.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if pending.is_some() => {
                    pending = None;
                    match r {
                        Some((new_ws, prefix)) => {
                            self.stats.reconnects.inc();
                            let aligned = self.catch_up(&mut ws, &prefix, &overlap, &mut fetches, &mut replace).await;
                            tracing::info!(feed = %self.name, aligned, "switched to a verified new connection (make-before-break)");
                            overlap.clear();
                            let _ = ws.close(None).await;
                            ws = new_ws;
                            last_frame = Instant::now();
                            opened = Instant::now();
                            // The new connection's own first frames (its snapshot, then
                            // the marker the old one reached: repeats are dropped by id).
                            for m in prefix {
                                if self.handle_message(m, &mut ws, &mut fetches).await == Action::Reconnect {
                                    replace = true;
                                }
                            }
                        }
                        None => {
                            overlap.clear();
                            next_try = Instant::now() + Duration::from_secs(5);
                        }
                    }
                }
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else { return End::Closed };
                    last_frame = Instant::now();
                    // While a replacement opens, what the old socket delivers is kept
                    // (a reference count, not a copy) to find where the new one starts.
                    if pending.is_some() && overlap.len() < OVERLAP_FRAMES && is_data(&msg) {
                        overlap.push(msg.clone());
                    }
                    if self.handle_message(msg, &mut ws, &mut fetches).await == Action::Reconnect {
                        replace = true;
                    }
                }
                Some((id, r)) = fetches.next(), if !fetches.is_empty() => match r {
                    Ok(frame) => {
                        let recv = UnixNanos::now();
                        // An audit that found the book wrong asks for a fresh subscription.
                        if self.frame(FrameRef::Text(frame.as_bytes()), recv, &mut fetches) == Action::Reconnect {
                            replace = true;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(feed = %self.name, instrument = id.0, error = %e, "book snapshot failed; retrying in 1 s");
                        if let Some(f) = self.fetch(id, Duration::from_secs(1)) {
                            fetches.push(f);
                        }
                    }
                },
                _ = audit.tick(), if audits => {
                    for i in 0..self.v.ids.len() {
                        if let Some(f) = self.v.ids.get(i).and_then(|&id| self.fetch(id, Duration::ZERO)) {
                            fetches.push(f);
                        }
                    }
                }
                _ = check.tick() => {
                    let silent = last_frame.elapsed();
                    if silent >= dead {
                        tracing::warn!(feed = %self.name, silent_ms = silent.as_millis() as u64, "connection silent too long; reconnecting");
                        return End::Dead;
                    }
                    let no_data = self.last_data.elapsed();
                    if no_data < stale {
                        stale_reported = false;
                    } else if !stale_reported {
                        stale_reported = true;
                        let recv = UnixNanos::now();
                        for &id in &self.v.ids {
                            Self::push(&mut self.ring, &self.stats, status(id, FeedStatus::Stale, 0, recv));
                        }
                        self.ring.wake_consumer();
                    }
                }
            }
        }
    }

    /// Make-before-break, the switch. The new connection's `prefix` ends with its
    /// first switch marker: a message the venue sent after everything before it on the
    /// old connection, but the old socket may still be behind (a slower path). Reads
    /// the old socket (applying what it delivers) until it delivers that marker too,
    /// so everything before it arrives once, from the old connection, and everything
    /// after it from the new one. Returns whether the two lined up: not when the old
    /// socket does not reach the marker within [`CATCH_UP`] (a dead old socket) or the
    /// venue has no markers; then it applies only what the old socket already holds,
    /// and ids resolve any overlap (a gap, if any, is resynced as always).
    async fn catch_up(
        &mut self,
        ws: &mut Ws,
        prefix: &[Message],
        overlap: &[Message],
        fetches: &mut FuturesUnordered<Fetch>,
        replace: &mut bool,
    ) -> bool {
        let is_marker = self.v.venue.protocol().switch_marker();
        let Some(marker) = prefix
            .last()
            .filter(|m| is_marker.is_some_and(|is| is(&(*m).clone().into_data())))
        else {
            // What the old socket already holds comes before the new stream: apply it.
            for _ in 0..OVERLAP_FRAMES {
                match futures_util::FutureExt::now_or_never(ws.next()) {
                    Some(Some(Ok(m))) => {
                        if self.handle_message(m, ws, fetches).await == Action::Reconnect {
                            *replace = true;
                        }
                    }
                    _ => break,
                }
            }
            return false;
        };
        if overlap.contains(marker) {
            return true;
        }
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await else {
                tracing::warn!(feed = %self.name, "the old connection did not reach the new one's first message; switching anyway");
                return false;
            };
            let reached = m == *marker;
            if self.handle_message(m, ws, fetches).await == Action::Reconnect {
                *replace = true;
            }
            if reached {
                return true;
            }
        }
    }

    /// Handles one WebSocket message on the current connection.
    async fn handle_message(&mut self, msg: Message, ws: &mut Ws, fetches: &mut FuturesUnordered<Fetch>) -> Action {
        let recv = UnixNanos::now();
        match msg {
            Message::Text(t) => self.frame(FrameRef::Text(t.as_bytes()), recv, fetches),
            Message::Binary(b) => self.frame(FrameRef::Binary(&b), recv, fetches),
            Message::Ping(_) => {
                // tungstenite queued the pong (same payload); send it now.
                let _ = ws.flush().await;
                Action::None
            }
            Message::Close(_) => Action::None,
            Message::Pong(_) | Message::Frame(_) => Action::None,
        }
    }

    async fn run(mut self) {
        let mut backoff = Backoff::new(self.cfg.reconnect, UnixNanos::now().0 as u64);
        let mut first = true;
        while !self.stop.load(Ordering::Relaxed) {
            if !first {
                self.stats.reconnects.inc();
            }
            first = false;
            let started = Instant::now();
            self.reload_auth();
            match self.connect().await {
                Ok(ws) => {
                    tracing::info!(feed = %self.name, venue = self.v.venue.as_str(), "connected");
                    self.note_state(FeedState::Connected, None);
                    let end = self.session(ws).await;
                    match end {
                        End::Stopped => break,
                        End::Closed | End::Dead => {
                            let recv = UnixNanos::now();
                            for &id in &self.v.ids {
                                Self::push(&mut self.ring, &self.stats, status(id, FeedStatus::Syncing, 0, recv));
                            }
                            self.ring.wake_consumer();
                            let why = if matches!(end, End::Dead) {
                                format!(
                                    "the connection was silent for {} ms and was dropped",
                                    self.cfg.dead_after_ms
                                )
                            } else {
                                "the venue closed the connection".to_owned()
                            };
                            self.note_state(FeedState::Disconnected, Some(format!("{why}; reconnecting")));
                        }
                    }
                }
                Err(ConnectError::Refused(reason)) => {
                    self.stats.auth_failures.inc();
                    self.note_state(FeedState::Unauthorized, Some(reason));
                }
                Err(ConnectError::Failed(e)) => {
                    self.note_state(FeedState::Disconnected, Some(format!("connect failed: {e}")));
                }
            }
            backoff.connection_ended(started.elapsed());
            let delay = backoff.next_delay();
            let until = Instant::now() + delay;
            while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
            }
        }
        if let Some(r) = self.recorder.take() {
            if let Err(e) = r.finish() {
                tracing::error!(feed = %self.name, error = %e, "capture file incomplete");
            }
        }
    }
}

/// Starts a live venue feed on its own (optionally pinned) thread.
#[allow(clippy::too_many_arguments)]
pub fn spawn_live(
    name: String,
    venue: Venue,
    core: Option<usize>,
    cfg: LiveConfig,
    registry: &InstrumentRegistry,
    symbols: &[String],
    ring: TickProducer,
    stop: Arc<AtomicBool>,
) -> Result<FeedHandle, String> {
    let normalizer = VenueNormalizer::build(venue, registry, symbols).map_err(|e| e.to_string())?;
    let mut venue_symbols: Vec<Option<String>> = vec![None; registry.len()];
    let mut ids = Vec::new();
    for s in symbols {
        let inst = registry
            .by_symbol(s)
            .ok_or_else(|| format!("{s:?} is not an instrument"))?;
        if let Some(slot) = venue_symbols.get_mut(inst.id.index()) {
            *slot = Some(inst.venue_symbol.clone());
        }
        ids.push(inst.id);
    }
    let recorder = match &cfg.capture {
        Some(p) => Some(Recorder::create(p, 65_536).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut auth = Vec::new();
    for (param, var) in &cfg.auth_query {
        auth.push((param.clone(), crate::secrets::from_env(var)?));
    }
    let stop_flag = Arc::clone(&stop);
    let stats = Arc::new(FeedStats::default());
    stats.set_state(FeedState::Starting, None, UnixNanos::now());
    let ring_stats = Arc::clone(ring.stats());
    let ctx = Ctx {
        name: name.clone(),
        cfg,
        v: VenueInfo {
            venue,
            symbols: venue_symbols,
            ids,
        },
        normalizer,
        ring,
        stats: Arc::clone(&stats),
        stop,
        recorder,
        http: reqwest::Client::new(),
        auth,
        last_data: Instant::now(),
        unlogged_errors: 0,
        auth_error: None,
        last_error_log: Instant::now() - Duration::from_secs(60),
    };
    let thread_stats = Arc::clone(&stats);
    let log_name = name.clone();
    let join = stocksblitz_engine::agent::spawn_thread(format!("feed-{name}"), core, move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(feed = %log_name, error = %e, "could not start the feed runtime");
                return;
            }
        };
        thread_stats.running.set(1);
        rt.block_on(ctx.run());
        thread_stats.running.set(0);
        thread_stats.set_state(FeedState::Stopped, None, UnixNanos::now());
        tracing::info!(feed = %log_name, "feed stopped");
    })
    .map_err(|e| e.to_string())?
    .with_stop(&stop_flag);
    Ok(FeedHandle::new(name, venue.as_str(), stats, ring_stats, join))
}

/// Sends text messages in order.
async fn send_all(ws: &mut Ws, msgs: Vec<String>) -> Result<(), String> {
    for m in msgs {
        ws.send(Message::Text(m.into())).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real venues are `wss://` and `https://`: TLS must be compiled in (rustls with
    /// ring, webpki roots), so a failed TLS connection fails on the network, not on a
    /// missing feature.
    #[tokio::test]
    async fn tls_urls_are_supported() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let err = tokio_tungstenite::connect_async(format!("wss://127.0.0.1:{closed}/stream"))
            .await
            .err();
        let text = format!("{err:?}");
        assert!(!text.contains("TlsFeatureNotEnabled"), "{text}");
        let r = reqwest::Client::new()
            .get(format!("https://127.0.0.1:{closed}/"))
            .send()
            .await;
        assert!(r.is_err_and(|e| e.is_connect()));
    }

    /// A refusal is a 401 or 403 and nothing else; its reason names the status, the
    /// venue's words and every variable the credentials come from.
    #[test]
    fn refusals_say_what_to_fix() {
        for status in 100u16..600 {
            assert_eq!(is_auth_refusal(status), status == 401 || status == 403, "{status}");
        }
        let r = refusal_reason(
            403,
            " TokenException: bad token \n",
            &["KITE_API_KEY", "KITE_ACCESS_TOKEN"],
        );
        assert!(r.contains("HTTP 403 (TokenException: bad token)"), "{r}");
        assert!(
            r.contains("KITE_ACCESS_TOKEN (or the file KITE_ACCESS_TOKEN_FILE names)"),
            "{r}"
        );
        assert!(r.contains("KITE_API_KEY"), "{r}");
        let r = refusal_reason(401, &"x".repeat(5000), &[]);
        assert!(r.len() < 400, "the venue's body is cut short");
        assert!(r.contains("does not accept this client"), "{r}");
    }

    #[test]
    fn simulator_placeholder_resolves() {
        let mut c = LiveConfig {
            ws_url: "ws://{simulator}/binance".into(),
            rest_url: Some("http://{simulator}/binance".into()),
            depth_limit: 1000,
            stale_after_ms: 1000,
            dead_after_ms: 2000,
            connect_timeout_ms: 1000,
            max_connection_age_secs: 3600,
            reconnect: BackoffConfig::default(),
            audit_interval_secs: 0,
            capture: None,
            auth_query: Default::default(),
        };
        assert!(c.uses_simulator());
        assert!(c.validate().is_ok());
        c.resolve_simulator("127.0.0.1:9100".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(c.ws_url, "ws://127.0.0.1:9100/binance");
        assert_eq!(c.rest_url.as_deref(), Some("http://127.0.0.1:9100/binance"));
        assert!(!c.uses_simulator());
        c.ws_url = "tcp://x".into();
        assert_eq!(c.validate().map_err(|e| e.0), Err("ws_url"));
    }
}
