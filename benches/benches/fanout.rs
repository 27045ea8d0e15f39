//! WebSocket fan-out and REST quote reads (issue 19): the real server against the
//! naive axum server a user would otherwise write, both as child processes, in one
//! run, with a load client in this process.
//!
//! Servers (a fresh process for every round, so each round's memory starts clean):
//! - ours: `stocksblitz serve` (`sbz-bench-serve`: the same entry point and allocator)
//!   on `configs/default.toml` cut down to one instrument (BTCUSDT) with the in-process
//!   synthetic feed (seed 1, depth 10) at the round's rate, market data only (no
//!   orders, surveillance or simulator), connection caps raised to 19,000, the
//!   loopback rate limit at its maximum, threads unpinned, logs at `warn`;
//! - naive: `sbz-naive-fanout` (`stocksblitz_benches::naive`): the same synthetic
//!   market at the same rate into a `tokio::sync::broadcast`, serde_json per event per
//!   subscriber, no conflation.
//!
//! For each feed rate (2,000 and 20,000 steps/s) and N (10, 100, 1,000, 10,000
//! connections; 10 and 100 with `BENCH_QUICK=1`), rounds alternate ours and naive
//! (which goes first alternates too); each round opens N connections subscribed to
//! BTCUSDT's quotes, book and trades, lets them run, then counts for a window.
//! Reported per row, the median over rounds: deliveries/s, per-connection quotes/s and
//! books/s (median connection, and the slowest), end-to-end latency p50/p99/p99.9
//! (engine publish, or the feed's receive time when a server does not stamp
//! `engine_ts_us`, to client receive), where the latency waits at the window's end
//! (bytes received for the client but not read yet, and how long it takes the client
//! to read them at its rate; bytes in the server's send queues; `/proc/net/tcp`), the
//! server's CPU (cores busy, CPU-seconds per
//! million deliveries), RSS and RSS per open connection (handshake done, subscribed
//! or not), conflation (quotes and books not delivered, against what the generator
//! made: the naive server's stream), `missed`, trade-id gaps seen in the window (a gap
//! spanning the window's start counts whole), how many of N subscribed and how many
//! the server closed.
//!
//! Held connections (before the fan-out rows): N = 1,000 and 10,000 connections
//! (`BENCH_FANOUT_HELD_NS`, `0` for none; none with `BENCH_QUICK=1`) opened and subscribed the same
//! way on a slow feed (`BENCH_FANOUT_HELD_RATE`, 10 steps/s), ours once its trades
//! snapshot holds its full history (80 s at 10 steps/s), held through the warm-up and
//! the window: how many subscribed, RSS per open connection, the server's cores (one
//! round each, `BENCH_FANOUT_HELD_ROUNDS`).
//! At 2,000 steps/s the client is offered millions of messages a second at N=10,000
//! and the connections it has yet to open wait behind them; these rows measure what
//! holding the connections costs the server. `BENCH_FANOUT_HELD_ONLY=1` runs only
//! them. The issue's 10,000-connection goal is checked on the N=10,000 held row.
//!
//! REST: `GET /api/v1/quotes/BTCUSDT` on ours against a bare axum handler (the naive
//! server's), 64 keep-alive connections on this process's 2 tokio workers (like
//! `wrk -t2 -c64`), spread over 64 loopback source addresses so that per-address rate
//! limiting counts but does not refuse. Requests/s and p50/p99.
//!
//! The other server is not running during a round: the machine has 2 cores, shared by
//! server and client. `BENCH_FANOUT_RATES` / `BENCH_FANOUT_NS` (comma-separated) pick
//! a subset, `BENCH_FANOUT_ROUNDS` the rounds (3; 1 with `BENCH_QUICK=1`),
//! `BENCH_FANOUT_REST_ONLY=1` runs only the REST rounds, `BENCH_FANOUT_OURS_BIN` runs
//! another build of `sbz-bench-serve` as ours (before/after), `BENCH_FANOUT_SET`
//! (`dotted.path=value,...`, integers) sets keys of ours' config. Linux only (/proc).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stocksblitz_benches::fanout::{http_round, ws_round, HttpRound, WsRound};
use stocksblitz_benches::naive::{self, SYMBOL};
use stocksblitz_benches::quick;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Ours,
    Naive,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Ours => "StocksBlitz",
            Server::Naive => "naive axum",
        }
    }
}

struct Settings {
    rates: Vec<u64>,
    ns: Vec<usize>,
    rounds: usize,
    settle: Duration,
    warmup: Duration,
    window: Duration,
    connect_timeout: Duration,
    /// Held-connections rows: N, and the (slow) feed rate they run at.
    held_ns: Vec<usize>,
    held_rate: u64,
    held_rounds: usize,
    dir: PathBuf,
}

fn list<T: std::str::FromStr + Clone>(var: &str, default: &[T]) -> Vec<T> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}: {x:?} is not a number"))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

/// The product's embedded default config cut down for the bench (see the module doc).
fn ours_config(rate: u64) -> String {
    let mut d: toml::Table = toml::from_str(stocksblitz_api::config::DEFAULT_TOML).expect("default config parses");
    let table = |d: &mut toml::Table, k: &str| -> toml::Table { d[k].as_table().cloned().expect(k) };
    let mut api = table(&mut d, "api");
    let mut conns = api["connections"].as_table().cloned().expect("api.connections");
    conns.insert("max_connections".into(), 19_000.into());
    conns.insert("max_connections_per_address".into(), 19_000.into());
    api.insert("connections".into(), conns.into());
    d.insert("api".into(), api.into());
    let mut log = table(&mut d, "log");
    log.insert("level".into(), "warn".into());
    log.insert("format".into(), "text".into());
    d.insert("log".into(), log.into());
    let mut engine = table(&mut d, "engine");
    engine.remove("core");
    d.insert("engine".into(), engine.into());
    let instruments: Vec<toml::Value> = d["instruments"]
        .as_array()
        .expect("instruments")
        .iter()
        .filter(|i| i["symbol"].as_str() == Some(SYMBOL))
        .cloned()
        .collect();
    d.insert("instruments".into(), instruments.into());
    let feed: toml::Table = toml::from_str(&format!(
        r#"
name = "synthetic"
kind = "synthetic"
instruments = ["{SYMBOL}"]
# The generator stands in for a venue connection, whose thread would wait on its
# socket: sleeping between steps instead of spinning leaves the 2 cores to the
# fan-out and the client (the naive server's generator is a 1 ms tokio timer).
[idle]
strategy = "spin-then-park"
spin_iterations = 0
yield_iterations = 0
park_micros = 50
max_park_micros = 1000
[synthetic]
seed = {seed}
rate_per_sec = {rate}
depth = {depth}
start_prices = {{ {SYMBOL} = "65000.00" }}
"#,
        seed = naive::SEED,
        depth = naive::DEPTH,
    ))
    .expect("feed table");
    d.insert("feeds".into(), vec![toml::Value::Table(feed)].into());
    for section in ["simulator", "orders", "surveillance", "auth"] {
        d.remove(section);
    }
    let mut limits = table(&mut d, "rate_limits");
    limits.insert("loopback_public_per_min".into(), 1_000_000.into());
    d.insert("rate_limits".into(), limits.into());
    // Experiments: `BENCH_FANOUT_SET=api.ws_flushes_per_sec=40000,engine.idle.spin_iterations=100`
    // sets integer keys by their dotted paths (the server rejects unknown keys).
    for kv in std::env::var("BENCH_FANOUT_SET")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let (path, v) = kv.split_once('=').expect("BENCH_FANOUT_SET: path=value pairs");
        let v: i64 = v.trim().parse().expect("BENCH_FANOUT_SET: integer values");
        let mut keys: Vec<&str> = path.trim().split('.').collect();
        let last = keys.pop().expect("a key");
        let mut t = &mut d;
        for k in keys {
            t = t
                .entry(k)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("BENCH_FANOUT_SET: a table on the path");
        }
        t.insert(last.into(), v.into());
    }
    toml::to_string(&d).expect("config serializes")
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// `GET path` on a new connection: the status, or `None` if nothing answered.
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 16];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head).ok()?.split(' ').nth(1)?.parse().ok()
}

/// A server child process; stopped with SIGTERM (SIGKILL after 10 s) when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(server: Server, rate: u64, s: &Settings) -> Proc {
    let addr = free_addr();
    let log = s.dir.join(match server {
        Server::Ours => "ours.log",
        Server::Naive => "naive.log",
    });
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let mut cmd = match server {
        Server::Ours => {
            let config = s.dir.join(format!("ours-{rate}.toml"));
            std::fs::write(&config, ours_config(rate)).expect("write config");
            // BENCH_FANOUT_OURS_BIN: another build of the server (an older commit's,
            // for before/after in alternating runs).
            let bin = std::env::var("BENCH_FANOUT_OURS_BIN")
                .ok()
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_sbz-bench-serve").to_owned());
            let mut c = Command::new(bin);
            c.arg(&config).env("STOCKSBLITZ_API_LISTEN", addr.to_string());
            c
        }
        Server::Naive => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_sbz-naive-fanout"));
            c.args([addr.to_string(), rate.to_string()]);
            c
        }
    };
    let child = cmd
        .current_dir(&s.dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .expect("server starts");
    let p = Proc { child, addr, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_status(addr, "/health/live") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "{} did not come up on {addr} within 60 s; log: {}",
            server.name(),
            p.log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The feed starts, the book syncs, the first events flow.
    std::thread::sleep(s.settle);
    p
}

/// One WebSocket round of `n` connections against the running server `p`.
fn run_ws_round(rt: &tokio::runtime::Runtime, p: &Proc, n: usize, s: &Settings) -> WsRound {
    let url = format!("ws://{}/api/v1/stream", p.addr);
    rt.block_on(ws_round(
        &url,
        SYMBOL,
        n,
        s.connect_timeout,
        s.warmup,
        s.window,
        Some(p.pid()),
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_u64(v: &[u64]) -> f64 {
    median(v.iter().map(|&x| x as f64).collect())
}

fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.1}")
    }
}

fn fmt_us(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 1e6 {
        format!("{:.2} s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} ms", v / 1e3)
    } else {
        format!("{v:.0} us")
    }
}

/// The median round of one (rate, N, server), as printed.
struct Summary {
    subscribed_min: usize,
    deliveries: f64,
    quotes_conn: (f64, f64),
    book_conn: (f64, f64),
    latency: [f64; 3],
    cores: f64,
    client_cores: f64,
    cpu_per_m: f64,
    rss_mib: f64,
    rss_per_conn_kib: f64,
    /// Quotes and books not delivered, % of what the generator made.
    undelivered_pct: f64,
    missed: f64,
    /// At the window's end: bytes received for the client and not read yet, KiB per
    /// open connection, and how long the client takes to read them at its rate.
    unread_kib_conn: f64,
    unread_ms: f64,
    /// Bytes in the server's send queues, KiB per open connection.
    unsent_kib_conn: f64,
    trade_gaps: f64,
    seq_errors: u64,
    closed_max: usize,
    /// Close codes over all rounds, "code xcount" each.
    close_codes: String,
    timed_by: String,
}

fn summarize(rounds: &[WsRound], rate: u64, mix: [f64; 3]) -> Summary {
    let per_round = |f: &dyn Fn(&WsRound) -> f64| median(rounds.iter().map(f).collect());
    let secs = |r: &WsRound| r.window.as_secs_f64().max(1e-9);
    let conn_rate = |r: &WsRound, i: usize| {
        let v = &r.per_conn[i];
        (
            median_u64(v) / secs(r),
            v.iter().min().map_or(f64::NAN, |&m| m as f64 / secs(r)),
        )
    };
    // Quotes and books a client of a server that conflates nothing gets (the naive
    // server's stream from the same generator), minus what arrived, per connection:
    // conflated away by ours, dropped by a lagging naive subscriber (also in `missed`).
    let undelivered = |r: &WsRound| {
        let mut expected_all = 0.0;
        let mut short = 0.0;
        for i in [0, 1] {
            let expected = mix[i] * rate as f64 * secs(r);
            for &got in &r.per_conn[i] {
                expected_all += expected;
                short += (expected - got as f64).max(0.0);
            }
        }
        100.0 * short / expected_all.max(1e-9)
    };
    let (engine, recv, none) = rounds.iter().fold((0, 0, 0), |(a, b, c), r| {
        (a + r.counts.ts_engine, b + r.counts.ts_recv, c + r.counts.ts_none)
    });
    let total = (engine + recv + none).max(1) as f64;
    let mut timed_by = Vec::new();
    if engine > 0 {
        timed_by.push(format!("engine_ts_us {:.0}%", 100.0 * engine as f64 / total));
    }
    if recv > 0 {
        timed_by.push(format!("recv_ts_us {:.0}%", 100.0 * recv as f64 / total));
    }
    if none > 0 {
        timed_by.push(format!("untimed {:.0}%", 100.0 * none as f64 / total));
    }
    Summary {
        subscribed_min: rounds.iter().map(|r| r.subscribed).min().unwrap_or(0),
        deliveries: per_round(&|r| r.deliveries_per_sec()),
        quotes_conn: (per_round(&|r| conn_rate(r, 0).0), per_round(&|r| conn_rate(r, 0).1)),
        book_conn: (per_round(&|r| conn_rate(r, 1).0), per_round(&|r| conn_rate(r, 1).1)),
        latency: [0.5, 0.99, 0.999].map(|q| {
            per_round(&|r| {
                if r.latency.is_empty() {
                    f64::NAN
                } else {
                    r.latency.value_at_quantile(q) as f64
                }
            })
        }),
        cores: per_round(&|r| r.cpu_secs.map_or(f64::NAN, |c| c / secs(r))),
        client_cores: per_round(&|r| r.client_cpu_secs.map_or(f64::NAN, |c| c / secs(r))),
        cpu_per_m: per_round(&|r| {
            r.cpu_secs
                .map_or(f64::NAN, |c| c / (r.counts.total_deliveries() as f64 / 1e6).max(1e-9))
        }),
        rss_mib: per_round(&|r| r.rss_after_kib.map_or(f64::NAN, |k| k as f64 / 1024.0)),
        rss_per_conn_kib: per_round(&|r| match (r.rss_before_kib, r.rss_after_kib) {
            (Some(b), Some(a)) if r.open > 0 => a.saturating_sub(b) as f64 / r.open as f64,
            _ => f64::NAN,
        }),
        undelivered_pct: per_round(&undelivered),
        missed: per_round(&|r| r.counts.missed as f64 / secs(r)),
        unread_kib_conn: per_round(&|r| match r.queues {
            Some(q) if r.open > 0 => q.client_unread as f64 / 1024.0 / r.open as f64,
            _ => f64::NAN,
        }),
        unread_ms: per_round(&|r| match r.queues {
            Some(q) if r.counts.bytes > 0 => 1e3 * q.client_unread as f64 / (r.counts.bytes as f64 / secs(r)),
            _ => f64::NAN,
        }),
        unsent_kib_conn: per_round(&|r| match r.queues {
            Some(q) if r.open > 0 => q.server_unsent as f64 / 1024.0 / r.open as f64,
            _ => f64::NAN,
        }),
        trade_gaps: per_round(&|r| r.counts.trade_gaps as f64 / secs(r)),
        seq_errors: rounds.iter().map(|r| r.counts.seq_errors).sum(),
        closed_max: rounds.iter().map(|r| r.closed).max().unwrap_or(0),
        close_codes: {
            let mut all = std::collections::BTreeMap::new();
            for (code, n) in rounds.iter().flat_map(|r| &r.close_codes) {
                *all.entry(*code).or_insert(0) += n;
            }
            all.iter()
                .map(|(c, n)| format!(" {c}x{n}"))
                .collect::<Vec<_>>()
                .join(",")
        },
        timed_by: timed_by.join(", "),
    }
}

/// Median over rounds of ours / naive deliveries per second, round by round.
fn ratio(ours: &[WsRound], naive: &[WsRound]) -> f64 {
    median(
        ours.iter()
            .zip(naive)
            .map(|(o, n)| o.deliveries_per_sec() / n.deliveries_per_sec().max(1e-9))
            .collect(),
    )
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores available")
}

struct GoalInputs {
    at_1000: Option<(Summary, f64)>,
    min_ratio: f64,
    /// Ours at N=10,000: the held-connections row if measured, else the fan-out row
    /// at the lowest rate (with its feed rate).
    held_10000: Option<(Summary, u64)>,
    rest_ratio: f64,
    /// Rows where even a server delivering everything could not reach 3x the naive
    /// one ("N=10 at 2.0k/s: 1.00x": the most possible / naive).
    bounded: Vec<String>,
}

fn main() {
    let quick = quick();
    if let Err(e) = stocksblitz_api::http::server::raise_open_file_limit() {
        eprintln!("could not raise the open-file limit: {e}");
    }
    let dir = std::env::temp_dir().join(format!("sbz-fanout-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let s = Settings {
        rates: list("BENCH_FANOUT_RATES", &[2_000, 20_000]),
        ns: list(
            "BENCH_FANOUT_NS",
            if quick { &[10, 100] } else { &[10, 100, 1_000, 10_000] },
        ),
        rounds: list("BENCH_FANOUT_ROUNDS", &[if quick { 1 } else { 3 }])
            .first()
            .copied()
            .unwrap_or(1)
            .max(1),
        settle: Duration::from_millis(if quick { 300 } else { 1_000 }),
        warmup: Duration::from_millis(if quick { 300 } else { 2_000 }),
        window: Duration::from_millis(if quick { 1_000 } else { 5_000 }),
        connect_timeout: Duration::from_secs(if quick { 10 } else { 60 }),
        // "0": none.
        held_ns: list("BENCH_FANOUT_HELD_NS", if quick { &[] } else { &[1_000, 10_000] })
            .into_iter()
            .filter(|&n| n > 0)
            .collect(),
        held_rate: list("BENCH_FANOUT_HELD_RATE", &[HELD_RATE])
            .first()
            .copied()
            .unwrap_or(HELD_RATE)
            .max(1),
        // Memory, not speed: one round unless told otherwise.
        held_rounds: list("BENCH_FANOUT_HELD_ROUNDS", &[1])
            .first()
            .copied()
            .unwrap_or(1)
            .max(1),
        dir,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mix = naive::events_per_step(100_000);
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut goals = GoalInputs {
        at_1000: None,
        min_ratio: f64::INFINITY,
        held_10000: None,
        rest_ratio: f64::NAN,
        bounded: Vec::new(),
    };
    // BENCH_FANOUT_REST_ONLY=1: only the REST rounds (at the first rate);
    // BENCH_FANOUT_HELD_ONLY=1: only the held-connections rows.
    let rest_only = std::env::var("BENCH_FANOUT_REST_ONLY").is_ok_and(|v| v == "1");
    let held_only = std::env::var("BENCH_FANOUT_HELD_ONLY").is_ok_and(|v| v == "1");
    let held = if rest_only {
        Vec::new()
    } else {
        held_rows(&rt, &s, mix, started)
    };
    if let Some(m) = held
        .iter()
        .find(|h| h.n == 10_000)
        .map(|h| summarize(&h.rounds[Server::Ours as usize], s.held_rate, mix))
    {
        goals.held_10000 = Some((m, s.held_rate));
    }
    for &rate in s.rates.iter().filter(|_| !rest_only && !held_only) {
        for &n in &s.ns {
            let mut results: [Vec<WsRound>; 2] = Default::default();
            for r in 0..s.rounds {
                let order = if r % 2 == 0 {
                    [Server::Ours, Server::Naive]
                } else {
                    [Server::Naive, Server::Ours]
                };
                for server in order {
                    let p = spawn(server, rate, &s);
                    let round = run_ws_round(&rt, &p, n, &s);
                    eprintln!(
                        "[{:>5.0} s] feed {rate}/s N={n} round {} {}: {}/{n} subscribed in {:.1} s, {} deliveries/s",
                        started.elapsed().as_secs_f64(),
                        r + 1,
                        server.name(),
                        round.subscribed,
                        round.connect_secs,
                        fmt_rate(round.deliveries_per_sec())
                    );
                    drop(p);
                    results[server as usize].push(round);
                }
            }
            let [ours, naive_rounds] = &results;
            let ratio = ratio(ours, naive_rounds);
            goals.min_ratio = goals.min_ratio.min(ratio);
            // What any server could deliver at most: every generated event to every
            // connection. Where the naive server already delivers most of it, no
            // server can be 3x faster.
            let ceiling = (mix[0] + mix[1] + mix[2]) * rate as f64 * n as f64;
            let naive_share = summarize(naive_rounds, rate, mix).deliveries / ceiling.max(1e-9);
            let best = 1.0 / naive_share.max(1e-9);
            if best < 3.0 {
                goals
                    .bounded
                    .push(format!("N={n} at {}/s: {best:.2}x", fmt_rate(rate as f64)));
            }
            ratios.push(format!(
                "| {} | {n} | {ratio:.2}x | {}/s | {:.1}% | {best:.2}x |",
                fmt_rate(rate as f64),
                fmt_rate(ceiling),
                100.0 * naive_share
            ));
            for (server, rounds) in [(Server::Ours, ours), (Server::Naive, naive_rounds)] {
                let m = summarize(rounds, rate, mix);
                rows.push(format!(
                    "| {} | {n} | {} | {}/{n} | {} | {} ({}) | {} ({}) | {} | {} | {} | {:.1} ({:.0} ms) | {:.1} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {:.1}% | {} | {} | {} / {}{} | {} |",
                    fmt_rate(rate as f64),
                    server.name(),
                    m.subscribed_min,
                    fmt_rate(m.deliveries),
                    fmt_rate(m.quotes_conn.0),
                    fmt_rate(m.quotes_conn.1),
                    fmt_rate(m.book_conn.0),
                    fmt_rate(m.book_conn.1),
                    fmt_us(m.latency[0]),
                    fmt_us(m.latency[1]),
                    fmt_us(m.latency[2]),
                    m.unread_kib_conn,
                    m.unread_ms,
                    m.unsent_kib_conn,
                    m.cores,
                    m.cpu_per_m,
                    m.client_cores,
                    m.rss_mib,
                    m.rss_per_conn_kib,
                    m.undelivered_pct,
                    fmt_rate(m.missed),
                    fmt_rate(m.trade_gaps),
                    m.seq_errors,
                    m.closed_max,
                    if m.close_codes.is_empty() {
                        String::new()
                    } else {
                        format!(" (codes{})", m.close_codes)
                    },
                    m.timed_by,
                ));
                if server == Server::Ours {
                    if n == 1_000 && rate == *s.rates.iter().max().unwrap_or(&rate) {
                        goals.at_1000 = Some((m, rate as f64));
                    } else if n == 10_000
                        && rate == *s.rates.iter().min().unwrap_or(&rate)
                        && goals.held_10000.is_none()
                    {
                        goals.held_10000 = Some((m, rate));
                    }
                }
            }
        }
    }

    // REST: GET /api/v1/quotes/BTCUSDT, ours against the bare handler, interleaved.
    let mut rest: [Vec<HttpRound>; 2] = Default::default();
    let rest_rate = s.rates.first().copied().unwrap_or(2_000);
    for r in (0..s.rounds).filter(|_| !held_only) {
        let order = if r % 2 == 0 {
            [Server::Ours, Server::Naive]
        } else {
            [Server::Naive, Server::Ours]
        };
        for server in order {
            let p = spawn(server, rest_rate, &s);
            let round = rt.block_on(http_round(
                p.addr,
                &format!("/api/v1/quotes/{SYMBOL}"),
                64,
                true,
                s.warmup,
                s.window,
                Some(p.pid()),
            ));
            eprintln!(
                "[{:>5.0} s] REST round {} {}: {} requests/s, server {:.1} us CPU a request",
                started.elapsed().as_secs_f64(),
                r + 1,
                server.name(),
                fmt_rate(round.requests_per_sec()),
                round.server_cpu_us_per_request().unwrap_or(f64::NAN),
            );
            drop(p);
            rest[server as usize].push(round);
        }
    }
    let rest_ratio = median(
        rest[0]
            .iter()
            .zip(&rest[1])
            .map(|(o, n)| o.requests_per_sec() / n.requests_per_sec().max(1e-9))
            .collect(),
    );
    goals.rest_ratio = rest_ratio;

    let title_note = if quick {
        " (BENCH_QUICK: smoke run, numbers not meaningful)"
    } else {
        ""
    };
    // Tables of what this run measured only (a held-only or REST-only run skips the
    // rest).
    if !rows.is_empty() {
        print_fanout(&rows, &ratios, &s, mix, title_note);
    }
    if !rest[0].is_empty() {
        print_rest(&rest, rest_ratio, title_note);
    }
    print_held(&held, &s, mix, title_note);
    print_goals(&goals);
    eprintln!("fanout bench done in {:.0} s", started.elapsed().as_secs_f64());
    remove_configs(&s.dir);
}

fn print_fanout(rows: &[String], ratios: &[String], s: &Settings, mix: [f64; 3], title_note: &str) {
    println!("\n## WebSocket fan-out{title_note}\n");
    println!("| machine | rounds per row (median) | warm-up, window | generator events per step |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| {} | {} | {:.1} s, {:.1} s | {:.2} quotes, {:.2} books, {:.2} trades |\n",
        machine(),
        s.rounds,
        s.warmup.as_secs_f64(),
        s.window.as_secs_f64(),
        mix[0],
        mix[1],
        mix[2]
    );
    println!(
        "| feed steps/s | N | server | subscribed | deliveries/s | quotes/s per conn (slowest) | books/s per conn (slowest) | p50 | p99 | p99.9 | client unread KiB per conn (time to read it) | server unsent KiB per conn | server cores | server CPU s per M deliveries | client cores | RSS MiB | RSS per conn KiB | quotes+books not delivered | missed/s | trade-id gaps/s | seq errors / closed (close codes, all rounds) | latency from |"
    );
    println!("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in rows {
        println!("{r}");
    }
    println!("\n| feed steps/s | N | StocksBlitz / naive deliveries/s (median of per-round ratios) | ceiling: every generated event to every connection | naive's deliveries, % of the ceiling | most any server can reach / naive |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in ratios {
        println!("{r}");
    }
}

fn print_rest(rest: &[Vec<HttpRound>; 2], rest_ratio: f64, title_note: &str) {
    println!("\n## REST GET /api/v1/quotes/{SYMBOL} (64 keep-alive connections, 2 client threads){title_note}\n");
    println!("| server | requests/s | p50 | p99 | server cores | server CPU us / request | client cores | non-2xx | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for server in [Server::Ours, Server::Naive] {
        let rounds = &rest[server as usize];
        let per = |f: &dyn Fn(&HttpRound) -> f64| median(rounds.iter().map(f).collect());
        let cores = |c: Option<f64>, r: &HttpRound| c.unwrap_or(f64::NAN) / r.window.as_secs_f64().max(1e-9);
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.2} | {} | {} |",
            server.name(),
            fmt_rate(per(&|r| r.requests_per_sec())),
            fmt_us(per(&|r| r.latency.value_at_quantile(0.5) as f64)),
            fmt_us(per(&|r| r.latency.value_at_quantile(0.99) as f64)),
            per(&|r| cores(r.server_cpu_secs, r)),
            per(&|r| r.server_cpu_us_per_request().unwrap_or(f64::NAN)),
            per(&|r| cores(r.client_cpu_secs, r)),
            rounds.iter().map(|r| r.not_ok).sum::<u64>(),
            rounds.iter().map(|r| r.errors).sum::<u64>(),
        );
    }
    println!("| StocksBlitz / bare axum | {rest_ratio:.2}x | | | | | | | |");
}

/// The held-connections rows' feed rate (steps/s) unless `BENCH_FANOUT_HELD_RATE`
/// says otherwise: slow enough that the load client reads everything it is sent at
/// N=10,000 (at 2,000 steps/s it would be offered millions of messages a second and
/// the connections it has not opened yet would wait behind them).
const HELD_RATE: u64 = 10;

/// How long the feed takes at `rate` steps/s to fill our trades snapshot
/// (`api.trades_history` trades of the default config), plus a second.
fn history_fill(rate: u64, mix: [f64; 3]) -> Duration {
    let d: toml::Table = toml::from_str(stocksblitz_api::config::DEFAULT_TOML).expect("default config parses");
    let history = d["api"]["trades_history"].as_integer().unwrap_or(200) as f64;
    Duration::from_secs_f64(history / (mix[2] * rate as f64).max(1e-3) + 1.0)
}

/// Rounds of one held-connections row, per server (indexed by `Server`).
struct Held {
    n: usize,
    rounds: [Vec<WsRound>; 2],
}

/// Held connections: N connections opened and subscribed on a slow feed, then held
/// through the warm-up and the window, against each server in alternating rounds.
/// What one connection costs the server (RSS growth over the connections open at the
/// window's end) and whether all N subscribe, without the load client saturated.
fn held_rows(rt: &tokio::runtime::Runtime, s: &Settings, mix: [f64; 3], started: Instant) -> Vec<Held> {
    let mut rows = Vec::new();
    for &n in &s.held_ns {
        let mut rounds: [Vec<WsRound>; 2] = Default::default();
        for r in 0..s.held_rounds {
            let order = if r % 2 == 0 {
                [Server::Ours, Server::Naive]
            } else {
                [Server::Naive, Server::Ours]
            };
            for server in order {
                let p = spawn(server, s.held_rate, s);
                if server == Server::Ours {
                    // Until the trades snapshot holds its full history, as on a server
                    // that has run a while (its size is part of what a subscriber costs).
                    std::thread::sleep(history_fill(s.held_rate, mix));
                }
                let round = run_ws_round(rt, &p, n, s);
                eprintln!(
                    "[{:>5.0} s] held, feed {}/s N={n} round {} {}: {}/{n} subscribed in {:.1} s, {:.1} KiB per connection",
                    started.elapsed().as_secs_f64(),
                    s.held_rate,
                    r + 1,
                    server.name(),
                    round.subscribed,
                    round.connect_secs,
                    match (round.rss_before_kib, round.rss_after_kib) {
                        (Some(b), Some(a)) if round.open > 0 => a.saturating_sub(b) as f64 / round.open as f64,
                        _ => f64::NAN,
                    }
                );
                drop(p);
                rounds[server as usize].push(round);
            }
        }
        rows.push(Held { n, rounds });
    }
    rows
}

fn print_held(held: &[Held], s: &Settings, mix: [f64; 3], title_note: &str) {
    if held.is_empty() {
        return;
    }
    println!(
        "\n## Held connections (feed {} steps/s, quotes + book + trades each){title_note}\n",
        s.held_rate
    );
    println!("| N | server | subscribed | seconds to subscribe (median) | RSS MiB | RSS per conn KiB | server cores | deliveries/s | closed (codes) |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for h in held {
        for server in [Server::Ours, Server::Naive] {
            let rounds = &h.rounds[server as usize];
            let m = summarize(rounds, s.held_rate, mix);
            println!(
                "| {} | {} | {}/{} | {:.1} | {:.0} | {:.1} | {:.3} | {} | {}{} |",
                h.n,
                server.name(),
                m.subscribed_min,
                h.n,
                median(rounds.iter().map(|r| r.connect_secs).collect()),
                m.rss_mib,
                m.rss_per_conn_kib,
                m.cores,
                fmt_rate(m.deliveries),
                m.closed_max,
                if m.close_codes.is_empty() {
                    String::new()
                } else {
                    format!(" (codes{})", m.close_codes)
                },
            );
        }
    }
}

/// Issue 19's goals against what this run measured (rows this run did not measure
/// are said to be missing, never guessed).
fn print_goals(g: &GoalInputs) {
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("\n## Issue 19 goals, this run\n");
    println!("| goal | result | measured |");
    println!("| --- | --- | --- |");
    match &g.at_1000 {
        Some((m, rate)) => {
            println!(
                "| >= 1,000,000 deliveries/s at N=1000 (feed {}/s) | {} | {}/s |",
                fmt_rate(*rate),
                mark(m.deliveries >= 1e6),
                fmt_rate(m.deliveries)
            );
            let slowest = m.quotes_conn.1.min(m.book_conn.1);
            println!(
                "| p99 < 50 ms at N=1000 with quotes and books >= 10/s on every connection | {} | p99 {}, slowest connection {:.1} quotes/s, {:.1} books/s |",
                mark(m.latency[1] < 50_000.0 && slowest >= 10.0),
                fmt_us(m.latency[1]),
                m.quotes_conn.1,
                m.book_conn.1
            );
        }
        None => println!("| N=1000 goals | not measured in this run | |"),
    }
    if g.min_ratio.is_finite() {
        println!(
            "| >= 3x the naive server at every N | {} | lowest ratio {:.2}x{} |",
            mark(g.min_ratio >= 3.0),
            g.min_ratio,
            if g.bounded.is_empty() {
                String::new()
            } else {
                format!(
                    "; out of any server's reach where the naive server already delivers over a third of every event generated to every connection (the most possible / naive: {})",
                    g.bounded.join(", ")
                )
            }
        );
    } else {
        println!("| >= 3x the naive server at every N | not measured in this run | |");
    }
    match &g.held_10000 {
        Some((m, rate)) => println!(
            "| 10,000 connections held, under 50 KiB of server memory each | {} | feed {}/s: {} subscribed, {} closed, {:.1} KiB each, {:.2} server cores |",
            mark(m.subscribed_min >= 10_000 && m.closed_max == 0 && m.rss_per_conn_kib < 50.0),
            fmt_rate(*rate as f64),
            m.subscribed_min,
            m.closed_max,
            m.rss_per_conn_kib,
            m.cores
        ),
        None => println!("| 10,000 connections | not measured in this run | |"),
    }
    if g.rest_ratio.is_finite() {
        println!(
            "| REST >= 0.8x bare axum | {} | {:.2}x |",
            mark(g.rest_ratio >= 0.8),
            g.rest_ratio
        );
    } else {
        println!("| REST >= 0.8x bare axum | not measured in this run | |");
    }
}

/// The generated configs go; the server logs stay for a look when they say anything,
/// else the whole directory goes.
fn remove_configs(dir: &Path) {
    let mut keep = false;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let _ = std::fs::remove_file(&p);
            } else if p.extension().is_some_and(|x| x == "log") {
                keep |= std::fs::metadata(&p).is_ok_and(|m| m.len() > 0);
            }
        }
    }
    if keep {
        eprintln!("server logs in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}
