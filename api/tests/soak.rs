//! The whole-system soak: the real `stocksblitz` binary on the embedded default, with a
//! real Redis and a real ILP server, driven for a while by algo clients (REST with a
//! token, REST signed with HMAC, WebSocket order entry), trader UI clients (reading,
//! reading slowly, stalling, reconnecting) and a fault schedule drawn from a seed:
//! every simulator fault on every venue, kill -9 and restart of the server, Redis
//! restarts, ILP server pauses (SIGSTOP/SIGCONT) and restarts, and disk-full spells on
//! the journal's own small tmpfs.
//!
//! Each part of the suite checks one part against itself; this checks the invariants of
//! the whole (SPEC section 8) while everything fails around it, after FoundationDB's and
//! TigerBeetle's simulation testing and Jepsen's history checks:
//! - a book the engine reports LIVE equals the simulator's true book (compared with the
//!   venue paused, so both are at the same update id);
//! - every acknowledged order, replace and cancel is in the final state as acknowledged;
//!   an idempotent retry answers with the same order; fills are unique and sum to each
//!   order's filled quantity; positions equal the fills; internal-venue positions net
//!   to zero; risk usage counts exactly the open orders;
//! - every WebSocket channel is gapless per connection, or the connection ends with a
//!   documented close code (or the server died);
//! - the store holds every row the sink was handed once it drains; `journal verify`
//!   and `audit verify` pass; the readiness probe never says ready while an in-session
//!   instrument's data is untrustworthy; memory stays bounded; nothing panics.
//!
//! `SOAK_SECONDS` (default 60) sets the length of each run and `SOAK_SEED` a seed to
//! replay; without it the test runs a fixed seed and then a random one, printing both.
//! A failure names the seed and the first violating event with the faults before it.
//! `scripts/soak.sh --minutes 60` runs the long soak in release mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ilp::Victoria;
use common::process::free_port;
use common::redis_server::RedisServer;
use common::rng::Rng;
use common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------
// Seeded randomness and the run's record.

/// What a client was last told about an order.
#[derive(Debug, Clone)]
struct Acked {
    account: String,
    status: String,
    filled: String,
    price: String,
    qty: String,
    side: String,
    symbol: String,
    /// Seconds into the run.
    at: f64,
}

/// Everything the run saw: the fault timeline, acknowledgements, counts, violations.
struct Record {
    seed: u64,
    start: Instant,
    inner: Mutex<RecordInner>,
}

#[derive(Default)]
struct RecordInner {
    timeline: Vec<(f64, String)>,
    violations: Vec<(f64, String)>,
    acks: HashMap<String, Acked>,
    /// Idempotency key -> the order id its first answer named.
    keyed: HashMap<String, String>,
    counts: BTreeMap<String, u64>,
    /// Fill ids each private `fills` subscription received, per account.
    fill_streams: Vec<(String, Vec<u64>)>,
    /// Per venue: until when a `silence` fault withholds its messages.
    silent_until: HashMap<String, Instant>,
}

impl Record {
    fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            seed,
            start: Instant::now(),
            inner: Mutex::new(RecordInner::default()),
        })
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn event(&self, what: impl Into<String>) {
        let t = self.t();
        let what = what.into();
        self.lock().timeline.push((t, what));
    }

    fn violate(&self, what: impl Into<String>) {
        let t = self.t();
        let what = what.into();
        eprintln!("soak seed {}: VIOLATION at {t:.2}s: {what}", self.seed);
        self.lock().violations.push((t, what));
    }

    fn count(&self, what: impl Into<String>) {
        *self.lock().counts.entry(what.into()).or_default() += 1;
    }

    fn ack(&self, order: &Value, account: &str) {
        let Some(id) = order["order_id"].as_str() else { return };
        let s = |k: &str| order[k].as_str().unwrap_or("").to_owned();
        let a = Acked {
            account: account.to_owned(),
            status: s("status"),
            filled: s("filled_qty"),
            price: s("price"),
            qty: s("qty"),
            side: s("side"),
            symbol: s("symbol"),
            at: self.t(),
        };
        self.lock().acks.insert(id.to_owned(), a);
    }

    /// Remembers a keyed answer; a second answer for the key must name the same order.
    fn keyed(&self, key: &str, order_id: &str) {
        let prev = self.lock().keyed.insert(key.to_owned(), order_id.to_owned());
        if let Some(p) = prev {
            if p != order_id {
                self.violate(format!(
                    "idempotency key {key}: first answered order {p}, a retry answered order {order_id}"
                ));
            }
        }
    }

    /// The failure report: the seed, the first violation and the faults before it.
    fn report(&self) -> Option<String> {
        let inner = self.lock();
        let (t, first) = inner.violations.first()?;
        let before: Vec<String> = inner
            .timeline
            .iter()
            .filter(|(at, _)| at <= t)
            .rev()
            .take(15)
            .map(|(at, e)| format!("  {at:8.2}s {e}"))
            .collect();
        Some(format!(
            "soak seed {seed} (replay with SOAK_SEED={seed}): {n} violation(s); the first at {t:.2}s:\n  {first}\n\
             the events before it (newest first):\n{}\nall violations:\n{}",
            before.join("\n"),
            inner
                .violations
                .iter()
                .take(20)
                .map(|(t, v)| format!("  {t:8.2}s {v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            seed = self.seed,
            n = inner.violations.len(),
        ))
    }
}

// ---------------------------------------------------------------------------------
// The processes: the server, Redis, the ILP server, the journal's small disk.

const ACCOUNTS: [&str; 3] = ["algo1", "algo2", "algo3"];
const SVC_ENV: &str = "SBZ_SOAK_SVC_SECRET";
const SVC_SECRET: &str = "soak-service-secret-0123456789abcdef";

/// The real binary on a fixed port (clients keep their address across restarts).
struct Server {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    pid: Arc<AtomicU32>,
    clock: Option<Clock>,
    /// The longest a start took until `/health/live` answered (recovery included).
    slowest_start: Duration,
}

/// The server's wall clock, jumped for real: libfaketime (Debian's `faketime`) preloaded
/// into the server reads its offset from a file, so every wall-clock read in the process
/// jumps at once, as an NTP step would; monotonic time is left alone.
struct Clock {
    lib: PathBuf,
    file: PathBuf,
}

impl Clock {
    fn find(dir: &Path) -> Option<Self> {
        let lib = PathBuf::from("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1");
        if !lib.exists() {
            return None;
        }
        let c = Self {
            lib,
            file: dir.join("clock-offset"),
        };
        c.set(0);
        Some(c)
    }

    /// Sets the server's clock `secs` seconds off the real time.
    fn set(&self, secs: i64) {
        let _ = std::fs::write(&self.file, format!("{secs:+}\n"));
    }
}

impl Server {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) -> bool {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stocksblitz"));
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env("STOCKSBLITZ_API_LISTEN", format!("127.0.0.1:{}", self.port))
            .env(SVC_ENV, SVC_SECRET)
            .env_remove("SBZ_JWT_SECRET")
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        if let Some(c) = &self.clock {
            cmd.env("LD_PRELOAD", &c.lib)
                .env("FAKETIME_TIMESTAMP_FILE", &c.file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd.spawn().expect("server starts");
        self.pid.store(child.id(), Ordering::Relaxed);
        self.child = Some(child);
        let http = reqwest::Client::new();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        while Instant::now() < deadline {
            // A server that accepts but does not answer must not hold the deadline.
            let live = http
                .get(format!("{}/health/live", self.base()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if live.is_ok_and(|r| r.status().is_success()) {
                self.slowest_start = self.slowest_start.max(started.elapsed());
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return false;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn kill(&mut self) {
        self.pid.store(0, Ordering::Relaxed);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A clean stop (SIGTERM), waiting for the process to exit.
    fn stop(&mut self) {
        self.pid.store(0, Ordering::Relaxed);
        if let Some(c) = self.child.take() {
            common::process::terminate(c, Duration::from_secs(30));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The journal's directory on a tmpfs of its own, so a disk-full spell is real ENOSPC
/// for the journal and nothing else; a plain directory (and no disk-full spells) where
/// mounting is not allowed.
struct JournalDisk {
    dir: PathBuf,
    mounted: bool,
}

impl JournalDisk {
    /// `size_mib`: the segments retention keeps plus the snapshots (two kept and one
    /// being written), which grow with the run (the soak keeps every order's history).
    fn new(dir: PathBuf, size_mib: u64) -> Self {
        std::fs::create_dir_all(&dir).expect("journal dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        Self { dir, mounted }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("soak-filler")
    }

    /// Fills the disk to the last byte.
    fn fill(&self) -> bool {
        let Ok(mut f) = std::fs::File::create(self.filler()) else {
            return false;
        };
        use std::io::Write;
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        // Top off the last partial megabyte.
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        true
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for JournalDisk {
    fn drop(&mut self) {
        self.free();
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// The pid of the ILP server listening on `addr` (for SIGSTOP/SIGCONT).
fn pid_listening(addr: &str) -> Option<u32> {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(format!("httpListenAddr={addr}"))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next()?.trim().parse().ok()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn soak_config(journal: &Path, sim_port: u16, redis_url: &str, ilp_addr: &str, spill: &Path) -> String {
    test_config(|d| {
        d["orders"]["journal"]["dir"] = toml::Value::String(journal.display().to_string());
        d["orders"]["journal"]["segment_bytes"] = toml::Value::Integer(4 << 20);
        d["orders"]["journal"]["snapshot_every_records"] = toml::Value::Integer(5_000);
        // Retention under every fault: the journal keeps only what a kept snapshot needs.
        d["orders"]["journal"]["retention"] = toml::Value::String("delete".into());
        d["orders"]["journal"]["retention_margin_records"] = toml::Value::Integer(100_000);
        d["orders"]["history_per_account"] = toml::Value::Integer(1_000_000);
        d["orders"]["max_orders"] = toml::Value::Integer(262_144);
        d["simulator"]["listen"] = toml::Value::String(format!("127.0.0.1:{sim_port}"));
        lift_order_limits(d);
        let accounts = d["orders"]["accounts"].as_array_mut().expect("accounts");
        for a in ACCOUNTS {
            let mut t = toml::Table::new();
            t.insert("name".into(), toml::Value::String(a.into()));
            accounts.push(toml::Value::Table(t));
        }
        add_service(d, "soak-svc", SVC_ENV, "algo2", &["read", "place", "modify", "cancel"]);
        d.insert("redis".into(), redis_section(redis_url));
        let questdb: toml::Table = toml::from_str(&format!(
            r#"
            url = "http://{ilp_addr}"
            protocol_version = 1
            create_tables = false
            batch_rows = 5000
            flush_interval_ms = 200
            memory_rows = 20000
            spill_dir = "{spill}"
            retry_initial_ms = 100
            retry_max_ms = 2000
            request_timeout_ms = 5000
            orders = true
            "#,
            spill = spill.display()
        ))
        .expect("questdb toml");
        d.insert("questdb".into(), toml::Value::Table(questdb));
        // Surveillance on, with order-flow limits an algo soak does not trip all the time.
        let mut s = surveillance_section();
        if let Some(t) = s.as_table_mut() {
            for (k, v) in [
                ("max_orders_per_min", 1_000_000),
                ("max_cancels_per_min", 1_000_000),
                ("max_symbols_per_day", 100),
                ("max_orders_per_fill", 1_000_000),
                ("layering_cancels", 1_000_000),
            ] {
                t.insert(k.into(), toml::Value::Integer(v));
            }
        }
        d.insert("surveillance".into(), s);
    })
}

// ---------------------------------------------------------------------------------
// Algo clients.

#[derive(Clone, Copy, Debug)]
enum Transport {
    Token,
    Signed,
    WebSocket,
}

struct Algo {
    account: &'static str,
    transport: Transport,
    base: String,
    http: reqwest::Client,
    token: String,
    rec: Arc<Record>,
    rng: Rng,
    open: Vec<String>,
    ws: Option<Ws>,
    next_id: u64,
}

/// What came back for a request: an HTTP-like status and body, or nothing (timeout or
/// a dead connection: the outcome is unknown).
type Answer = Option<(u16, Value)>;

impl Algo {
    async fn http(&mut self, method: Method, path: &str, body: Option<&Value>, key: Option<&str>) -> Answer {
        let pq = format!("/api/v1{path}");
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut req = self
            .http
            .request(method.clone(), format!("{}{pq}", self.base))
            .timeout(Duration::from_secs(5));
        if body.is_some() {
            req = req.header("content-type", "application/json").body(bytes.clone());
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        req = match self.transport {
            Transport::Signed => {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
                    .to_string();
                let sig = stocksblitz_api::auth::hmac::sign(SVC_SECRET.as_bytes(), &ts, method.as_str(), &pq, &bytes);
                req.header("x-service-identity", "soak-svc")
                    .header("x-internal-api-key", "soak-svc-k1")
                    .header("x-request-timestamp", ts)
                    .header("x-request-signature", sig)
            }
            _ => req.bearer_auth(&self.token),
        };
        let r = req.send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn ws_request(&mut self, mut msg: Value) -> Answer {
        if self.ws.is_none() {
            let url = format!("{}/api/v1/stream", self.base.replace("http://", "ws://"));
            let (mut ws, _) = tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(url))
                .await
                .ok()?
                .ok()?;
            send(&mut ws, json!({"op": "auth", "token": self.token, "id": "auth"})).await;
            let ok = recv_until(&mut ws, Duration::from_secs(3), |v| v["id"] == "auth").await?;
            if ok["type"] != "authenticated" {
                self.rec
                    .violate(format!("{}: WebSocket auth refused: {ok}", self.account));
                return None;
            }
            self.ws = Some(ws);
        }
        self.next_id += 1;
        let id = format!("w{}", self.next_id);
        msg["id"] = json!(id);
        let ws = self.ws.as_mut()?;
        if ws.send(Message::Text(msg.to_string().into())).await.is_err() {
            self.ws = None;
            return None;
        }
        match recv_until(ws, Duration::from_secs(5), |v| v["id"] == id.as_str()).await {
            Some(v) if v["type"] == "order.ack" => Some((200, v["data"].clone())),
            Some(v) if v["type"] == "error" => {
                let code = v["error"]["code"].clone();
                Some((400, json!({ "error": { "code": code } })))
            }
            Some(v) => {
                self.rec
                    .violate(format!("{}: unexpected WebSocket answer {v}", self.account));
                None
            }
            None => {
                self.ws = None;
                None
            }
        }
    }

    /// Counts the answer; returns the body when it acknowledged something.
    fn judge(&mut self, what: &str, a: &Answer) -> Option<Value> {
        match a {
            None => {
                self.rec.count(format!("{what}: no answer"));
                None
            }
            Some((s, v)) if (200..300).contains(s) => {
                self.rec.count(format!("{what}: ok"));
                Some(v.clone())
            }
            Some((s, v)) => {
                let code = v["error"]["code"].as_str().unwrap_or("?").to_owned();
                self.rec.count(format!("{what}: {s} {code}"));
                match (*s, code.as_str()) {
                    (500, _) => self.rec.violate(format!("{} {what}: 500 {v}", self.account)),
                    // An order without a client id can never be a duplicate.
                    (_, "DUPLICATE_CLIENT_ORDER_ID") if what == "new (generated client id)" => self
                        .rec
                        .violate(format!("{} {what}: generated client id collided: {v}", self.account)),
                    _ => {}
                }
                None
            }
        }
    }

    fn note(&mut self, body: &Value) {
        let order = &body["order"];
        if !order.is_object() {
            return;
        }
        self.rec.ack(order, self.account);
        let (Some(id), Some(status)) = (order["order_id"].as_str(), order["status"].as_str()) else {
            return;
        };
        let id = id.to_owned();
        let open = matches!(status, "new" | "open" | "accepted" | "partially_filled");
        self.open.retain(|o| o != &id);
        if open {
            self.open.push(id);
        }
        for c in body["cancelled"].as_array().into_iter().flatten() {
            if let Some(cid) = c["order_id"].as_str() {
                self.open.retain(|o| o != cid);
            }
        }
    }

    async fn quote_mid(&mut self, symbol: &str) -> Option<(f64, f64)> {
        let r = self
            .http
            .get(format!("{}/api/v1/quotes/{symbol}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let bid: f64 = v["bid"].as_str()?.parse().ok()?;
        let ask: f64 = v["ask"].as_str()?.parse().ok()?;
        Some((bid, ask))
    }

    async fn new_order(&mut self, seq: u64) {
        let paper = self.rng.chance(30);
        let side = if self.rng.chance(50) { "buy" } else { "sell" };
        let mut body = if paper {
            let Some((bid, ask)) = self.quote_mid("BTCUSDT").await else {
                self.rec.count("new: no BTCUSDT quote");
                return;
            };
            let market = self.rng.chance(15);
            let qty = format!("0.{:05}", self.rng.range(10, 300));
            if market {
                json!({"symbol": "BTCUSDT", "side": side, "type": "market", "qty": qty, "time_in_force": "ioc"})
            } else {
                // Near the touch: some rest, some cross.
                let off = self.rng.range(0, 40) as f64 * 0.5;
                let px = if side == "buy" {
                    bid - 5.0 + off
                } else {
                    ask + 5.0 - off
                };
                json!({"symbol": "BTCUSDT", "side": side, "type": "limit", "price": format!("{px:.2}"), "qty": qty})
            }
        } else {
            let market = self.rng.chance(10);
            let qty = self.rng.range(1, 20).to_string();
            if market {
                json!({"symbol": "SBZ", "side": side, "type": "market", "qty": qty, "time_in_force": "ioc"})
            } else {
                let ticks = self.rng.range(0, 20) as i64 - 10;
                let px = 10_000 + ticks * 5;
                json!({"symbol": "SBZ", "side": side, "type": "limit",
                       "price": format!("{}.{:02}", px / 100, px % 100), "qty": qty})
            }
        };
        let what = if self.rng.chance(20) {
            body["client_order_id"] = json!(format!("{}-c{seq}-{}", self.account, self.rec.seed));
            "new"
        } else {
            "new (generated client id)"
        };
        match self.transport {
            Transport::WebSocket => {
                // Keyed orders are sent again with their key on a new connection when
                // the answer was lost (a dead socket, a restart): at most one order.
                let key = self
                    .rng
                    .chance(80)
                    .then(|| format!("{}-k{seq}-{}", self.account, self.rec.seed));
                let mut msg = json!({"op": "order.new", "order": body});
                if let Some(k) = &key {
                    msg["idempotency_key"] = json!(k);
                }
                for tries in 1..=40 {
                    let a = self.ws_request(msg.clone()).await;
                    let lost = a.is_none();
                    if let Some(v) = self.judge(what, &a) {
                        if let (Some(k), Some(id)) = (&key, v["order"]["order_id"].as_str()) {
                            self.rec.keyed(k, id);
                        }
                        self.note(&v);
                    }
                    if key.is_none() || !lost || tries == 40 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            _ => {
                // Keyed orders are retried with their key until the server answers
                // (it may be restarting); unkeyed ones are sent once.
                let keyed = self.rng.chance(80);
                let key = keyed.then(|| format!("{}-k{seq}-{}", self.account, self.rec.seed));
                let mut tries = 0;
                loop {
                    tries += 1;
                    let a = self.http(Method::POST, "/orders", Some(&body), key.as_deref()).await;
                    let retry = match &a {
                        None => true,
                        Some((503, v)) => v["error"]["code"] != "JOURNAL_UNAVAILABLE" || tries < 3,
                        _ => false,
                    };
                    if let Some(v) = self.judge(what, &a) {
                        if let (Some(k), Some(id)) = (&key, v["order"]["order_id"].as_str()) {
                            self.rec.keyed(k, id);
                        }
                        self.note(&v);
                        // Now and then, the retry a client whose answer got lost would send.
                        if let (Some(k), true) = (&key, self.rng.chance(10)) {
                            let again = self.http(Method::POST, "/orders", Some(&body), Some(k)).await;
                            if let Some((s, v)) = &again {
                                if (200..300).contains(s) {
                                    if let Some(id) = v["order"]["order_id"].as_str() {
                                        self.rec.keyed(k, id);
                                    }
                                }
                            }
                        }
                    }
                    if key.is_none() || !retry || tries > 40 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    async fn replace_or_cancel(&mut self, cancel: bool) {
        if self.open.is_empty() {
            return;
        }
        let i = self.rng.below(self.open.len() as u64) as usize;
        let id = self.open[i].clone();
        let what = if cancel { "cancel" } else { "replace" };
        let a = match (self.transport, cancel) {
            (Transport::WebSocket, true) => self.ws_request(json!({"op": "order.cancel", "order_id": id})).await,
            (Transport::WebSocket, false) => {
                let qty = self.rng.range(1, 20).to_string();
                self.ws_request(json!({"op": "order.replace", "order_id": id, "qty": qty}))
                    .await
            }
            (_, true) => self.http(Method::DELETE, &format!("/orders/{id}"), None, None).await,
            (_, false) => {
                let qty = self.rng.range(1, 20).to_string();
                self.http(
                    Method::PATCH,
                    &format!("/orders/{id}"),
                    Some(&json!({ "qty": qty })),
                    None,
                )
                .await
            }
        };
        match self.judge(what, &a) {
            Some(v) => self.note(&v),
            None => {
                if let Some((_, v)) = &a {
                    // Not open any more (filled, cancelled, expired): forget it.
                    if matches!(
                        v["error"]["code"].as_str(),
                        Some("ORDER_NOT_OPEN" | "ORDER_NOT_FOUND" | "INVALID_QUANTITY")
                    ) {
                        self.open.retain(|o| o != &id);
                    }
                }
            }
        }
    }

    async fn run(mut self, stop: Arc<AtomicBool>) {
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            match self.rng.below(100) {
                0..=54 => self.new_order(seq).await,
                55..=74 => self.replace_or_cancel(false).await,
                _ => self.replace_or_cancel(true).await,
            }
            tokio::time::sleep(Duration::from_millis(self.rng.range(5, 25))).await;
        }
    }
}

// ---------------------------------------------------------------------------------
// Trader UI clients.

#[derive(Clone, Copy, Debug)]
enum Reader {
    /// Reads everything as it comes.
    Prompt,
    /// Sleeps between messages.
    Slow,
    /// Stops reading for seconds at a time.
    Stalling,
    /// Closes and reconnects every few seconds.
    Reconnecting,
}

/// Close codes the stream protocol documents.
fn documented_close(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 1008 | 1009 | 1011 | 4008) || (4000..4100).contains(&code)
}

async fn ui_client(
    base: String,
    account: Option<&'static str>,
    how: Reader,
    rec: Arc<Record>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) {
    let url = format!("{}/api/v1/stream", base.replace("http://", "ws://"));
    let name = format!("ui[{:?} {}]", how, account.unwrap_or("anonymous"));
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(&url)).await
        else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        rec.count(format!("{name}: connections"));
        let mut channels = vec![
            "quotes.BTCUSDT",
            "book.BTCUSDT",
            "trades.BTCUSDT",
            "quotes.SBZ",
            "book.SBZ",
            "trades.SBZ",
            "quotes.BTC-USD",
        ];
        if let Some(acc) = account {
            send(&mut ws, json!({"op": "auth", "token": token(acc, "trader"), "id": "a"})).await;
            channels.extend(["orders", "fills", "positions"]);
        }
        send(&mut ws, json!({"op": "subscribe", "channels": channels, "id": "s"})).await;
        let mut seqs: HashMap<String, u64> = HashMap::new();
        let mut fill_ids: Vec<u64> = Vec::new();
        let life = Instant::now() + Duration::from_secs(rng.range(3, 12));
        let mut next_stall = Instant::now() + Duration::from_secs(rng.range(2, 6));
        loop {
            if stop.load(Ordering::Relaxed) {
                let _ = ws.close(None).await;
                if let Some(acc) = account {
                    rec.lock()
                        .fill_streams
                        .push((acc.to_owned(), std::mem::take(&mut fill_ids)));
                }
                return;
            }
            if matches!(how, Reader::Reconnecting) && Instant::now() > life {
                let _ = ws.close(None).await;
                break;
            }
            if matches!(how, Reader::Stalling) && Instant::now() > next_stall {
                tokio::time::sleep(Duration::from_secs(rng.range(3, 15))).await;
                next_stall = Instant::now() + Duration::from_secs(rng.range(2, 6));
            }
            let msg = match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
                Err(_) => continue,
                Ok(None) | Ok(Some(Err(_))) => {
                    rec.count(format!("{name}: dropped (server gone or reset)"));
                    break;
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        rec.violate(format!("{name}: a frame that is not JSON: {}", t.as_str()));
                        break;
                    };
                    rec.count(format!("{name}: messages"));
                    if let (Some(ch), Some(seq)) = (v["channel"].as_str(), v["seq"].as_u64()) {
                        let prev = seqs.insert(ch.to_owned(), seq);
                        if let Some(p) = prev {
                            if seq != p + 1 {
                                rec.violate(format!("{name}: channel {ch} jumped from seq {p} to {seq}: {v}"));
                            }
                        } else if v["type"] == "update" && seq != 1 {
                            // The first message after subscribing is the snapshot.
                            rec.violate(format!("{name}: channel {ch} started at an update with seq {seq}"));
                        }
                    }
                    if v["channel"] == "fills" && v["type"] == "update" {
                        if let Some(id) = v["data"]["fill_id"].as_str().and_then(|s| s.parse().ok()) {
                            fill_ids.push(id);
                        }
                    }
                    if v["type"] == "error" && v["id"] == "s" {
                        rec.violate(format!("{name}: subscribe refused: {v}"));
                    }
                    if matches!(how, Reader::Slow) {
                        tokio::time::sleep(Duration::from_millis(rng.range(5, 40))).await;
                    }
                }
                Message::Close(frame) => {
                    let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
                    rec.count(format!("{name}: closed {code}"));
                    if frame.as_ref().is_some_and(|f| f.code != CloseCode::Normal) && !documented_close(code) {
                        rec.violate(format!("{name}: closed with an undocumented code {code}"));
                    }
                    break;
                }
                _ => {}
            }
        }
        if let Some(acc) = account {
            rec.lock()
                .fill_streams
                .push((acc.to_owned(), std::mem::take(&mut fill_ids)));
        }
        tokio::time::sleep(Duration::from_millis(rng.range(50, 500))).await;
    }
}

// ---------------------------------------------------------------------------------
// Checks that need the venue at rest.

/// A JSON GET with a short timeout; `None` when the server does not answer with JSON.
async fn get_json(http: &reqwest::Client, url: String) -> Option<Value> {
    http.get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json::<Value>()
        .await
        .ok()
}

/// The server's memory, bounded by what its configuration says to keep: a fixed part
/// for the soak's capacities (262,144 order slots, 65,536-item rings, the simulator;
/// about 400 MiB at start), and per order the read model holds (the soak keeps every
/// order's history, so its checks can find them): the read model's tested bound per
/// order (`engine/tests/it/order_store.rs`, `memory::MAX_BYTES_PER_ORDER`, 1,536 B),
/// twice (the API's copy and the snapshot thread's), and half again for the allocator.
/// `SOAK_MAX_RSS_MB` overrides the limit.
const RSS_BASE_MB: u64 = 1_024;
const RSS_PER_ORDER_BYTES: u64 = 1_536 * 2 * 3 / 2;

/// How long a paused venue may still be delivering: a `slow` fault holds up to 50
/// frames for up to 200 ms each in the simulator's connection (10 s), plus slack.
const IN_FLIGHT_MAX: Duration = Duration::from_secs(15);

/// How long the handler and the engine may take to apply what the venue has handed to
/// its sockets (a debug build on a loaded machine).
const SETTLE: Duration = Duration::from_secs(5);

/// Pauses a venue, waits until the simulator has handed every rendered message to its
/// sockets (a slow or lag fault can hold them for seconds, and what is held may be for
/// other instruments than this one), gives the engine [`SETTLE`] to apply them, and
/// then compares a LIVE book with the true one: a LIVE book that still differs is a
/// violation.
async fn check_book(sim: &str, base: &str, venue: &str, venue_symbol: &str, symbol: &str, rec: &Record) {
    let http = reqwest::Client::new();
    let pause = |p: bool| {
        http.post(format!("http://{sim}/control/pause/{venue}"))
            .json(&json!({ "paused": p }))
            .timeout(Duration::from_secs(2))
            .send()
    };
    // A silence withholds the venue's messages while its book keeps moving: ours is
    // behind, not wrong, and nothing tells the feed until the next message shows the
    // gap or the stale timer runs out. The book is compared at the same venue update
    // id, which the API does not expose, so a venue silenced within the last two
    // seconds is not compared.
    let silent = rec
        .lock()
        .silent_until
        .get(venue)
        .is_some_and(|&t| Instant::now() < t + Duration::from_secs(2));
    if silent {
        rec.count(format!("book check {symbol}: skipped, the venue was silenced"));
        return;
    }
    if pause(true).await.is_err() {
        return;
    }
    let verdict = compare_when_delivered(&http, sim, base, venue, venue_symbol, symbol).await;
    let _ = pause(false).await;
    match verdict {
        Some(v) if v.starts_with("LIVE but differs") => rec.violate(format!(
            "{symbol}: the book the engine reports LIVE is not the venue's: {v}"
        )),
        Some(v) if v == "equal" => rec.count(format!("book check {symbol}: equal")),
        Some(v) => rec.count(format!("book check {symbol}: {v}")),
        None => rec.count(format!("book check {symbol}: server unreachable")),
    }
}

/// The book check's verdict once the paused venue has delivered everything; `None`
/// when the server or the simulator did not answer.
async fn compare_when_delivered(
    http: &reqwest::Client,
    sim: &str,
    base: &str,
    venue: &str,
    venue_symbol: &str,
    symbol: &str,
) -> Option<String> {
    let deadline = Instant::now() + IN_FLIGHT_MAX;
    loop {
        let in_flight = get_json(http, format!("http://{sim}/control/in_flight/{venue}")).await?;
        if in_flight["behind"] == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Some("still delivering at the deadline".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let top = |v: &Value| -> Value {
        let side = |k: &str| {
            Value::Array(
                v[k].as_array()
                    .map(|a| a.iter().take(10).cloned().collect())
                    .unwrap_or_default(),
            )
        };
        json!({ "bids": side("bids"), "asks": side("asks") })
    };
    let settled = Instant::now() + SETTLE;
    loop {
        let truth = get_json(http, format!("http://{sim}/control/book/{venue}/{venue_symbol}"));
        let ours = get_json(http, format!("{base}/api/v1/book/{symbol}?depth=10"));
        let (truth, ours) = (truth.await?, ours.await?);
        let verdict = if ours["quality"] != "LIVE" {
            format!("not LIVE ({})", ours["quality"])
        } else if top(&truth) == top(&ours) {
            return Some("equal".into());
        } else {
            format!("LIVE but differs: ours {} truth {}", top(&ours), top(&truth))
        };
        if Instant::now() > settled {
            return Some(verdict);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the readiness sampler has seen so far.
#[derive(Default)]
struct HealthTrack {
    /// Instrument -> when it was first seen, in this stretch, in a state readiness
    /// counts (SYNCING, STALE, GAPPED: the embedded `[health]` rule).
    untrusted_since: HashMap<String, Instant>,
    /// Since when the probe has said not ready while every instrument was trusted.
    unready_while_trusted: Option<Instant>,
}

/// How long the `[health]` rule lets an instrument be untrusted before readiness
/// drops (the default `instrument_grace_ms`), plus sampling slack.
const HEALTH_GRACE: Duration = Duration::from_secs(10 + 5);

/// Readiness against the data, sampled: ready must never hold while an in-session
/// instrument with a feed has been untrusted past the grace, and not-ready must not
/// hold for long while every such instrument is LIVE.
async fn sample_health(base: &str, rec: &Record, track: &mut HealthTrack) {
    let http = reqwest::Client::new();
    let Ok(r) = http
        .get(format!("{base}/api/v1/market-status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        *track = HealthTrack::default();
        return;
    };
    let Ok(v) = r.json::<Value>().await else { return };
    let mut untrusted = HashSet::new();
    let mut all_live = true;
    for i in v["instruments"].as_array().into_iter().flatten() {
        let (Some(sym), Some(q)) = (i["symbol"].as_str(), i["quality"].as_str()) else {
            continue;
        };
        if sym == "SBZ" || q == "CLOSED" {
            continue;
        }
        all_live &= q == "LIVE";
        if matches!(q, "SYNCING" | "STALE" | "GAPPED") {
            untrusted.insert(sym.to_owned());
        }
    }
    let now = Instant::now();
    track.untrusted_since.retain(|s, _| untrusted.contains(s));
    for s in &untrusted {
        track.untrusted_since.entry(s.clone()).or_insert(now);
    }
    let Ok(r) = http
        .get(format!("{base}/health/ready"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        return;
    };
    let ready = r.status() == StatusCode::OK;
    let body = r.text().await.unwrap_or_default();
    rec.count(format!("health samples: {}", if ready { "ready" } else { "not ready" }));
    let long: Vec<&String> = track
        .untrusted_since
        .iter()
        .filter(|(_, t)| now.duration_since(**t) > HEALTH_GRACE)
        .map(|(s, _)| s)
        .collect();
    if ready && !long.is_empty() {
        rec.violate(format!(
            "/health/ready said ready while {long:?} had been untrusted for more than {HEALTH_GRACE:?}"
        ));
    }
    if !ready && all_live {
        let since = *track.unready_while_trusted.get_or_insert(now);
        if now.duration_since(since) > Duration::from_secs(30) && !body.contains("journal") {
            rec.violate(format!(
                "/health/ready said not ready for 30 s while every instrument was LIVE: {body}"
            ));
            track.unready_while_trusted = None;
        }
    } else {
        track.unready_while_trusted = None;
    }
}

/// Every row the sink was handed in the final run is in the store exactly once: with
/// the market paused and the sink drained, the rows the engine handed the sink (its
/// recorder ring; none missed upstream) per table equal
/// the rows stored, nothing is pending or lost, and the ILP server holds exactly as
/// many distinct trades (symbol, engine sequence: unique within one run) as the sink
/// was handed (it holds only this run's rows).
async fn check_store(base: &str, sim: &str, ilp: &Victoria, rec: &Record) -> u64 {
    let http = reqwest::Client::new();
    pause_market(sim, true).await;
    let metric = |m: &str, name: &str| -> Option<u64> {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    let mut m = String::new();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        m = match http.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => continue,
        };
        if metric(&m, "stocksblitz_questdb_pending_rows ") == Some(0)
            && metric(&m, "stocksblitz_questdb_catching_up ") == Some(0)
        {
            break;
        }
    }
    for name in [
        "stocksblitz_questdb_pending_rows ",
        "stocksblitz_questdb_lost_rows_total ",
        "stocksblitz_questdb_upstream_missed_events_total ",
    ] {
        if metric(&m, name) != Some(0) {
            rec.violate(format!(
                "the store did not drain cleanly: {name}= {:?}",
                metric(&m, name)
            ));
        }
    }
    // Rows an earlier run left in spill files are stored by this one on top of its own.
    let recovered = metric(&m, "stocksblitz_questdb_recovered_rows_total ").unwrap_or(0);
    let rejected = metric(&m, "stocksblitz_questdb_rejected_rows_total ").unwrap_or(0);
    let (mut emitted_all, mut stored_all) = (0, 0);
    for table in ["trades", "quotes", "bars", "order_events", "fills", "anomalies"] {
        let e = metric(
            &m,
            &format!("stocksblitz_questdb_emitted_rows_total{{table=\"{table}\"}}"),
        )
        .unwrap_or(0);
        let s = metric(
            &m,
            &format!("stocksblitz_questdb_stored_rows_total{{table=\"{table}\"}}"),
        )
        .unwrap_or(0);
        if recovered == 0 && rejected == 0 && e != s {
            rec.violate(format!("{table}: the sink was handed {e} rows but stored {s}"));
        }
        emitted_all += e;
        stored_all += s;
    }
    if emitted_all + recovered != stored_all + rejected {
        rec.violate(format!(
            "the sink was handed {emitted_all} rows (+{recovered} from spill files) but stored {stored_all} \
             (+{rejected} refused by the server)"
        ));
    }
    rec.count(format!(
        "store: rows recovered from earlier runs' spill files: {recovered}"
    ));
    let emitted = metric(&m, "stocksblitz_questdb_emitted_rows_total{table=\"trades\"}").unwrap_or(0);
    // The server acknowledges rows before they are searchable: poll until they are.
    let mut distinct: HashSet<(String, i64)> = HashSet::new();
    for _ in 0..40 {
        let vm = Victoria::attach(&ilp.addr);
        distinct = tokio::task::spawn_blocking(move || vm.samples("trades_seq"))
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.labels.get("symbol").cloned().unwrap_or_default(), s.value as i64))
            .collect();
        if distinct.len() as u64 >= emitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if distinct.len() as u64 != emitted {
        let mut per: BTreeMap<String, (usize, i64, i64)> = BTreeMap::new();
        for (sym, seq) in &distinct {
            let e = per.entry(sym.clone()).or_insert((0, i64::MAX, i64::MIN));
            *e = (e.0 + 1, e.1.min(*seq), e.2.max(*seq));
        }
        rec.violate(format!(
            "the ILP server holds {} distinct trades of the final run, the sink was handed {emitted} \
             (per symbol: count, lowest and highest seq: {per:?})",
            distinct.len()
        ));
    }
    emitted
}

// ---------------------------------------------------------------------------------
// The run.

/// Every item of a paged list (`orders` or `fills`) of the account, newest first.
async fn all_pages(base: &str, account: &str, list: &str, query: &str) -> Vec<Value> {
    let c = Client::at(format!("{base}/api/v1"), account, "trader");
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/{list}?{query}limit=500&cursor={c}"),
            None => format!("/{list}?{query}limit=500"),
        };
        let (s, v) = c.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        out.extend(v[list].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// Decimal string to an integer at 8 places (every soak instrument fits).
fn units(s: &str) -> i128 {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let neg = int.starts_with('-');
    let i: i128 = int.trim_start_matches('-').parse().unwrap_or(0);
    let mut f = frac.to_owned();
    f.truncate(8);
    while f.len() < 8 {
        f.push('0');
    }
    let v = i * 100_000_000 + f.parse::<i128>().unwrap_or(0);
    if neg {
        -v
    } else {
        v
    }
}

/// The final state against everything the clients were told.
async fn check_orders(base: &str, rec: &Record) -> usize {
    let acks = rec.lock().acks.clone();
    let mut recovered: HashMap<String, Value> = HashMap::new();
    let mut sbz_net = 0i128;
    for account in ACCOUNTS {
        let orders = all_pages(base, account, "orders", "status=all&").await;
        let fills = all_pages(base, account, "fills", "").await;
        let c = Client::at(format!("{base}/api/v1"), account, "trader");
        let mut ids = HashSet::new();
        let mut by_order: HashMap<String, i128> = HashMap::new();
        let mut by_symbol: HashMap<String, i128> = HashMap::new();
        for f in &fills {
            let id = f["fill_id"].as_str().unwrap_or("").to_owned();
            if !ids.insert(id.clone()) {
                rec.violate(format!("{account}: fill {id} is listed twice"));
            }
            let q = units(f["qty"].as_str().unwrap_or("0"));
            *by_order
                .entry(f["order_id"].as_str().unwrap_or("").to_owned())
                .or_default() += q;
            let signed = if f["side"] == "buy" { q } else { -q };
            *by_symbol
                .entry(f["symbol"].as_str().unwrap_or("").to_owned())
                .or_default() += signed;
        }
        // Private channels are gapless: between the first and the last fill a
        // subscription received, it received every fill of the account.
        let streams: Vec<Vec<u64>> = rec
            .lock()
            .fill_streams
            .iter()
            .filter(|(a, _)| a == account)
            .map(|(_, ids)| ids.clone())
            .collect();
        let all_ids: Vec<u64> = fills
            .iter()
            .filter_map(|f| f["fill_id"].as_str()?.parse().ok())
            .collect();
        for got in streams.iter().filter(|g| g.len() > 1) {
            let (lo, hi) = (
                got.iter().min().copied().unwrap_or(0),
                got.iter().max().copied().unwrap_or(0),
            );
            let got: HashSet<u64> = got.iter().copied().collect();
            if let Some(missing) = all_ids.iter().find(|id| (lo..=hi).contains(*id) && !got.contains(*id)) {
                rec.violate(format!(
                    "{account}: a fills subscription received fills {lo}..={hi} but not fill {missing}"
                ));
            }
            rec.count(format!("fill stream checks: {account}"));
        }
        let mut open = 0u64;
        for o in &orders {
            let id = o["order_id"].as_str().unwrap_or("").to_owned();
            let filled = units(o["filled_qty"].as_str().unwrap_or("0"));
            let from_fills = by_order.get(&id).copied().unwrap_or(0);
            if filled != from_fills {
                rec.violate(format!(
                    "{account}: order {id} says filled {filled} but its fills sum to {from_fills}: {o}"
                ));
            }
            if matches!(
                o["status"].as_str(),
                Some("new" | "open" | "accepted" | "partially_filled")
            ) {
                open += 1;
            }
            recovered.insert(id, o.clone());
        }
        let (_, positions) = c.get("/positions").await;
        for p in positions["positions"].as_array().into_iter().flatten() {
            let sym = p["symbol"].as_str().unwrap_or("").to_owned();
            let q = units(p["qty"].as_str().unwrap_or("0"));
            let want = by_symbol.get(&sym).copied().unwrap_or(0);
            if q != want {
                rec.violate(format!("{account}: position {sym} is {q} but its fills net to {want}"));
            }
            if sym == "SBZ" {
                sbz_net += q;
            }
        }
        let (_, risk) = c.get("/accounts/me/risk").await;
        if risk["usage"]["open_orders"].as_u64() != Some(open) {
            rec.violate(format!(
                "{account}: risk usage counts {} open orders, the order list {open}",
                risk["usage"]["open_orders"]
            ));
        }
    }
    if sbz_net != 0 {
        rec.violate(format!(
            "SBZ positions net to {sbz_net}, not zero: a fill without a counterparty"
        ));
    }
    for (id, a) in &acks {
        let Some(o) = recovered.get(id) else {
            rec.violate(format!(
                "{}'s order {id}, acknowledged at {:.2}s ({a:?}), is missing from the final state",
                a.account, a.at
            ));
            continue;
        };
        let same = |k: &str, want: &str| o[k].as_str().unwrap_or("") == want;
        if !same("side", &a.side) || !same("symbol", &a.symbol) || (!a.price.is_empty() && !same("price", &a.price)) {
            rec.violate(format!("order {id} changed: acknowledged {a:?}, final {o}"));
        }
        if units(o["filled_qty"].as_str().unwrap_or("0")) < units(&a.filled) {
            rec.violate(format!("order {id} lost fills: acknowledged {a:?}, final {o}"));
        }
        if matches!(a.status.as_str(), "filled" | "cancelled" | "rejected" | "expired")
            && (o["status"] != a.status.as_str() || o["filled_qty"] != a.filled.as_str() || o["qty"] != a.qty.as_str())
        {
            rec.violate(format!("order {id} was final when acknowledged ({a:?}) but is now {o}"));
        }
    }
    acks.len()
}

fn verify_tool(args: &[&str], path: &Path, rec: &Record) {
    let out = Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(args)
        .arg(path)
        .output()
        .expect("stocksblitz runs");
    if !out.status.success() {
        rec.violate(format!(
            "`stocksblitz {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
}

async fn soak(seed: u64, seconds: u64) {
    let rec = Record::new(seed);
    let mut rng = Rng(seed);
    eprintln!("soak: seed {seed}, {seconds} s (replay with SOAK_SEED={seed})");
    let root = fresh_dir("soak");
    std::fs::create_dir_all(&root).expect("root");
    // Snapshots hold every order of the run: up to ~100 MiB each after an hour.
    let disk = JournalDisk::new(root.join("journal"), (256 + seconds / 600 * 128).min(1024));
    if !disk.mounted {
        eprintln!("soak: cannot mount a tmpfs here; no disk-full spells");
    }
    let mut redis = RedisServer::start(&root.join("redis"));
    let mut ilp = Victoria::start_raw(&root.join("ilp"));
    let sim_port = free_port();
    let sim = format!("127.0.0.1:{sim_port}");
    let config = root.join("config.toml");
    let audit = root.join("audit").join("audit.log");
    let text = soak_config(&disk.dir, sim_port, &redis.url(), &ilp.addr, &root.join("spill"));
    std::fs::write(&config, &text).expect("config");
    let audit_path: PathBuf = toml::from_str::<toml::Table>(&text).expect("toml")["audit"]["path"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or(audit);
    let mut server = Server {
        child: None,
        port: free_port(),
        config: config.clone(),
        log: root.join("server.log"),
        pid: Arc::new(AtomicU32::new(0)),
        clock: Clock::find(&root),
        slowest_start: Duration::ZERO,
    };
    if server.clock.is_none() {
        eprintln!("soak: libfaketime not found (Debian package faketime); no clock jumps");
    }
    assert!(
        server.start().await,
        "server starts: {}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    let base = server.base();
    wait_live_at(&base, "BTCUSDT").await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (k, (account, transport)) in [
        ("algo1", Transport::Token),
        ("algo2", Transport::Signed),
        ("algo3", Transport::WebSocket),
    ]
    .into_iter()
    .enumerate()
    {
        let algo = Algo {
            account,
            transport,
            base: base.clone(),
            http: reqwest::Client::new(),
            token: token(account, "trader"),
            rec: Arc::clone(&rec),
            rng: rng.fork(k as u64 + 1),
            open: Vec::new(),
            ws: None,
            next_id: 0,
        };
        tasks.push(tokio::spawn(algo.run(Arc::clone(&stop))));
    }
    for (k, (account, how)) in [
        (Some("algo1"), Reader::Prompt),
        (Some("algo2"), Reader::Slow),
        (Some("algo3"), Reader::Stalling),
        (None, Reader::Reconnecting),
        (None, Reader::Stalling),
    ]
    .into_iter()
    .enumerate()
    {
        tasks.push(tokio::spawn(ui_client(
            base.clone(),
            account,
            how,
            Arc::clone(&rec),
            rng.fork(100 + k as u64),
            Arc::clone(&stop),
        )));
    }
    // Memory and readiness, sampled.
    let max_rss = Arc::new(AtomicU32::new(0));
    {
        let (pid, max_rss, stop, rec, base) = (
            Arc::clone(&server.pid),
            Arc::clone(&max_rss),
            Arc::clone(&stop),
            Arc::clone(&rec),
            base.clone(),
        );
        // `SOAK_RSS_TRACE=<file>`: every sample as `<seconds> <pid> <RSS MiB>`, to see
        // what memory follows.
        let mut trace = std::env::var_os("SOAK_RSS_TRACE").and_then(|p| std::fs::File::create(p).ok());
        let started = Instant::now();
        tasks.push(tokio::spawn(async move {
            let mut track = HealthTrack::default();
            while !stop.load(Ordering::Relaxed) {
                let p = pid.load(Ordering::Relaxed);
                if p != 0 {
                    if let Some(kib) = rss_kib(p) {
                        max_rss.fetch_max(u32::try_from(kib / 1024).unwrap_or(u32::MAX), Ordering::Relaxed);
                        if let Some(f) = trace.as_mut() {
                            use std::io::Write;
                            let _ = writeln!(f, "{:.1} {p} {}", started.elapsed().as_secs_f64(), kib / 1024);
                        }
                    }
                    sample_health(&base, &rec, &mut track).await;
                } else {
                    track = HealthTrack::default();
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        }));
    }

    // The fault schedule.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut faults = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.range(1_000, 4_000))).await;
        faults += 1;
        match rng.below(100) {
            0..=39 => {
                let venue = ["binance", "coinbase", "kite"][rng.below(3) as usize];
                let kinds = [
                    "drop",
                    "duplicate",
                    "reorder",
                    "malformed",
                    "disconnect",
                    "silence",
                    "slow",
                    "lag",
                    "shutdown",
                ];
                let kind = kinds[rng.below(kinds.len() as u64) as usize];
                let (count, ms) = match kind {
                    "silence" => (1, rng.range(500, 6_000)),
                    "slow" => (rng.range(5, 50), rng.range(10, 200)),
                    "lag" => (1, rng.range(20, 1_000)),
                    "shutdown" => (1, rng.range(100, 2_000)),
                    _ => (rng.range(1, 5), 0),
                };
                rec.event(format!("sim fault {venue} {kind} count={count} ms={ms}"));
                rec.count(format!("fault: sim {kind}"));
                if kind == "silence" {
                    let until = Instant::now() + Duration::from_millis(ms);
                    rec.lock().silent_until.insert(venue.to_owned(), until);
                }
                let _ = http
                    .post(format!("http://{sim}/control/faults/{venue}"))
                    .json(&json!({"kind": kind, "count": count, "ms": ms}))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
            }
            40..=54 => {
                let (venue, vs, sym) = if rng.chance(50) {
                    ("binance", "btcusdt", "BTCUSDT")
                } else {
                    ("coinbase", "BTC-USD", "BTC-USD")
                };
                rec.event(format!("book check {sym}"));
                check_book(&sim, &base, venue, vs, sym, &rec).await;
            }
            55..=64 => {
                rec.event("kill -9 server");
                rec.count("fault: kill -9");
                server.kill();
                tokio::time::sleep(Duration::from_millis(rng.range(0, 1_000))).await;
                if !server.start().await {
                    rec.violate(format!(
                        "the server did not come back after kill -9: {}",
                        tail(&server.log)
                    ));
                    break;
                }
                rec.event("server restarted");
            }
            65..=74 => {
                rec.event("redis restart");
                rec.count("fault: redis restart");
                redis.stop();
                tokio::time::sleep(Duration::from_millis(rng.range(200, 3_000))).await;
                redis.restart();
            }
            75..=84 => {
                let ms = rng.range(1_000, 8_000);
                rec.event(format!("ILP server paused {ms} ms"));
                rec.count("fault: ILP pause");
                if let Some(pid) = pid_listening(&ilp.addr) {
                    signal(pid, "STOP");
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    signal(pid, "CONT");
                }
            }
            85..=89 => {
                rec.event("ILP server restart");
                rec.count("fault: ILP restart");
                ilp.stop();
                tokio::time::sleep(Duration::from_millis(rng.range(200, 2_000))).await;
                ilp.restart();
            }
            90..=94 => {
                if let Some(c) = &server.clock {
                    let secs = rng.range(1, 20) as i64 * if rng.chance(50) { 1 } else { -1 };
                    let ms = rng.range(1_000, 5_000);
                    rec.event(format!("server clock jumps {secs:+} s for {ms} ms"));
                    rec.count("fault: clock jump");
                    c.set(secs);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    c.set(0);
                    rec.event("server clock back");
                }
            }
            _ => {
                if disk.mounted {
                    let ms = rng.range(500, 3_000);
                    rec.event(format!("journal disk full for {ms} ms"));
                    rec.count("fault: disk full");
                    disk.fill();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    disk.free();
                    rec.event("journal disk freed");
                    // A journal that hit ENOSPC stops intake until restarted (an
                    // operator's restart; the acknowledged state must survive it).
                    let ready = http.get(format!("{base}/health/ready")).send().await;
                    let body = match ready {
                        Ok(r) => r.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    if body.contains("journal") {
                        rec.event("journal unavailable after the spell: restart");
                        server.kill();
                        if !server.start().await {
                            rec.violate(format!(
                                "the server did not come back after a full disk: {}",
                                tail(&server.log)
                            ));
                            break;
                        }
                    }
                }
            }
        }
    }

    // Drain: stop the clients and faults, recover once more, let the stores catch up.
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    // The store's last check counts the final run's rows in an ILP server that holds
    // nothing else: let the sink drain (no spill files left for the next run to bring
    // back), then kill, and start the ILP server again on empty storage.
    pause_market(&sim, true).await;
    wait_drained(&base).await;
    rec.event("clients stopped; final kill -9 and restart");
    server.kill();
    ilp.stop();
    let _ = std::fs::remove_dir_all(root.join("ilp"));
    ilp.restart();
    assert!(
        server.start().await,
        "server restarts for the final check: {}",
        tail(&server.log)
    );
    wait_live_at(&base, "BTCUSDT").await;
    let checked = check_orders(&base, &rec).await;
    check_book(&sim, &base, "binance", "btcusdt", "BTCUSDT", &rec).await;
    check_book(&sim, &base, "coinbase", "BTC-USD", "BTC-USD", &rec).await;
    let rows = check_store(&base, &sim, &ilp, &rec).await;
    let metrics = http.get(format!("{base}/metrics")).send().await.ok().map(|r| r.text());
    let metrics = match metrics {
        Some(f) => f.await.unwrap_or_default(),
        None => String::new(),
    };
    server.stop();
    verify_tool(&["journal", "verify"], &disk.dir, &rec);
    verify_tool(&["audit", "verify"], &audit_path, &rec);
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    if let Some(l) = log.lines().find(|l| l.contains("panicked")) {
        rec.violate(format!("a thread panicked: {l}"));
    }
    let rss = u64::from(max_rss.load(Ordering::Relaxed));
    let held_orders = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stocksblitz_orders_store_orders "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let rss_limit = std::env::var("SOAK_MAX_RSS_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RSS_BASE_MB + held_orders * RSS_PER_ORDER_BYTES / (1 << 20));
    if rss > rss_limit {
        rec.violate(format!(
            "server RSS reached {rss} MiB (limit {rss_limit} MiB for {held_orders} orders held)"
        ));
    }

    let counts = rec.lock().counts.clone();
    eprintln!(
        "soak seed {seed}: {seconds} s, {faults} faults, {checked} acknowledged orders checked, \
         {rows} trades of the final run found once in the store, max RSS {rss} MiB \
         (limit {rss_limit} MiB for {held_orders} orders held), slowest start (recovery included) {:.1} s",
        server.slowest_start.as_secs_f64()
    );
    for (k, v) in &counts {
        eprintln!("  {k}: {v}");
    }
    // The store's counters, and how the final run's rings fared (a conflated reader
    // that fell behind shows as drops and suppressed events: no violation, but worth
    // knowing).
    for l in metrics.lines().filter(|l| {
        (l.starts_with("stocksblitz_questdb") && !l.contains('{'))
            || l.starts_with("stocksblitz_ring_dropped_total")
            || l.starts_with("stocksblitz_output_suppressed_total")
    }) {
        eprintln!("  {l}");
    }
    if let Some(report) = rec.report() {
        panic!("{report}");
    }
    assert!(
        checked > 50,
        "the clients got work done ({checked} acknowledged orders)"
    );
    drop(disk);
    let _ = std::fs::remove_dir_all(&root);
}

/// Pauses (or resumes) every simulated venue's market.
async fn pause_market(sim: &str, paused: bool) {
    let http = reqwest::Client::new();
    for venue in ["binance", "coinbase", "kite"] {
        let _ = http
            .post(format!("http://{sim}/control/pause/{venue}"))
            .json(&json!({ "paused": paused }))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
    }
}

/// Waits (up to a minute) until the sink has nothing pending.
async fn wait_drained(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/metrics")).send().await {
            let m = r.text().await.unwrap_or_default();
            if m.lines().any(|l| l == "stocksblitz_questdb_pending_rows 0") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn wait_live_at(base: &str, symbol: &str) {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{base}/api/v1/quotes/{symbol}")).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if v["quality"] == "LIVE" {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{symbol} never became LIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_system_soak_under_faults() {
    let seconds = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seeds: Vec<u64> = match std::env::var("SOAK_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(s) => vec![s],
        None => {
            let random = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                ^ u64::from(std::process::id());
            vec![1, random]
        }
    };
    for seed in seeds {
        soak(seed, seconds).await;
    }
}
