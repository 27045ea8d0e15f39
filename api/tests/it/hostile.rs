//! Hostile clients at the connection level, against a real server on loopback: thousands
//! of stalled connections of every kind (nothing sent, a partial request line, partial
//! headers, one byte at a time, an idle keep-alive, a stalled body, pipelined requests
//! never read) from many client addresses (127.0.0.0/8), the total and per-address
//! caps, request heads over the size limit, batch quotes with empty entries, and native
//! TLS with a certificate made in the test and rotated by SIGHUP.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stocksblitz_api::app::RunningApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, addr: SocketAddr, rcvbuf: Option<u32>) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    s.bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    s.connect(addr).await.expect("connect")
}

/// What a connection shows without waiting.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Nothing to read and still open.
    Open,
    /// Answered 503 TOO_MANY_CONNECTIONS, or closed.
    Refused,
    /// Some other response (an HTTP status line).
    Answered(u16),
}

fn peek(s: &TcpStream) -> Seen {
    let mut buf = [0u8; 2_048];
    match s.try_read(&mut buf) {
        Ok(0) => Seen::Refused,
        Ok(n) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("HTTP/1.1 503") {
                assert!(text.contains("TOO_MANY_CONNECTIONS"), "{text}");
                Seen::Refused
            } else {
                Seen::Answered(text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Seen::Open,
        Err(_) => Seen::Refused,
    }
}

/// Reads until the server ends the connection (EOF or reset); false on timeout.
async fn ends_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Polls `cond` on the server's connection counters until it holds.
async fn until(
    app: &RunningApp,
    wait: Duration,
    what: &str,
    cond: impl Fn(&stocksblitz_api::http::conn::ConnStats) -> bool,
) {
    let deadline = tokio::time::Instant::now() + wait;
    while !cond(&app.state.http.connections) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            app.state.http.connections
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The kinds of stalled connection, and the bytes each sends first.
const KINDS: [(&str, &[u8]); 5] = [
    ("nothing", b""),
    ("partial request line", b"GET /health/li"),
    ("partial headers", b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: "),
    ("one byte at a time", b"G"),
    ("idle keep-alive", b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"),
];
const TRICKLE: usize = 3;

/// 3,000 stalled connections from 15 addresses (200 each, 150 allowed per address),
/// plus stalled bodies and pipelined requests never read. While they are held, the API,
/// order entry, the WebSocket stream and the feeds (a forced reconnect with its REST
/// snapshot) keep working for a client at another address; then every stalled
/// connection is closed by a deadline and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_stalled_connections_do_not_stop_api_orders_or_feeds() {
    const ADDRESSES: u8 = 15;
    const PER_ADDRESS: usize = 200;
    const CAP: usize = 150;
    const SPECIAL: usize = 20;
    let limits = stocksblitz_api::http::server::raise_open_file_limit().expect("rlimit");
    let sim_port = process::free_port();
    let text = test_config(|d| {
        d["simulator"]["listen"] = toml::Value::String(format!("127.0.0.1:{sim_port}"));
        d["api"]["request_timeout_ms"] = toml::Value::Integer(2_000);
        let c = &mut d["api"]["connections"];
        c["max_connections"] = toml::Value::Integer(4_000);
        c["max_connections_per_address"] = toml::Value::Integer(CAP as i64);
        // Long enough to hold the flood while the checks run; the idle timeout (nothing
        // moving either way) is the longer one, so the heads are ended by their deadline.
        c["header_read_timeout_ms"] = toml::Value::Integer(45_000);
        c["idle_timeout_secs"] = toml::Value::Integer(60);
    });
    let app = start_with(&text).await;
    wait_live(&app, "BTCUSDT").await;
    let stats = &app.state.http.connections;

    // The stalled connections, kinds spread over every address.
    let mut held = Vec::new();
    let mut refused = 0usize;
    let mut opened = Vec::new();
    let opening: Vec<_> = (0..ADDRESSES)
        .map(|a| {
            let addr = app.addr;
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for j in 0..PER_ADDRESS {
                    let kind = j % KINDS.len();
                    let mut s = connect_from(ip(2 + a), addr, None).await;
                    let _ = s.write_all(KINDS[kind].1).await;
                    mine.push((a, kind, s));
                }
                mine
            })
        })
        .collect();
    for o in opening {
        opened.extend(o.await.expect("connections opened"));
    }
    // Stalled bodies and pipelined requests never read, from one more address.
    let alice = token("alice", "trader");
    let mut bodies = Vec::new();
    for _ in 0..SPECIAL {
        let mut s = connect_from(ip(100), app.addr, None).await;
        let head = format!(
            "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"symbol\":"
        );
        s.write_all(head.as_bytes()).await.expect("partial body");
        bodies.push(s);
    }
    let mut pipelined = Vec::new();
    let burst = "GET /api/v1/instruments HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1_000);
    for _ in 0..SPECIAL {
        let mut s = connect_from(ip(101), app.addr, Some(4_096)).await;
        s.write_all(burst.as_bytes()).await.expect("pipelined requests");
        pipelined.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut per_address = vec![0usize; usize::from(ADDRESSES)];
    for (a, kind, s) in opened {
        match peek(&s) {
            Seen::Refused => refused += 1,
            Seen::Open | Seen::Answered(200) => {
                per_address[usize::from(a)] += 1;
                held.push((kind, s));
            }
            other => panic!("unexpected answer to a stalled {} connection: {other:?}", KINDS[kind].0),
        }
    }
    assert!(
        per_address.iter().all(|n| *n == CAP),
        "each address holds exactly its cap: {per_address:?}"
    );
    assert_eq!(refused, usize::from(ADDRESSES) * (PER_ADDRESS - CAP));
    assert_eq!(stats.refused_per_address.load(Ordering::Relaxed), refused as u64);
    assert_eq!(stats.refused_total.load(Ordering::Relaxed), 0);

    // One byte at a time on the trickling ones, for as long as the test runs.
    let trickle: Vec<usize> = held
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| *k == TRICKLE)
        .map(|(i, _)| i)
        .collect();
    let trickle_count = trickle.len();
    let mut trickling = Vec::new();
    for i in trickle.into_iter().rev() {
        trickling.push(held.swap_remove(i).1);
    }
    let trickler = tokio::spawn(async move {
        let payload = b"ET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: "
            .iter()
            .chain(std::iter::repeat(&b'a'));
        // Until the server has closed every one (a write then fails), at most 10 min.
        for b in payload.take(600) {
            let mut alive = 0;
            for s in &mut trickling {
                alive += usize::from(s.write_all(&[*b]).await.is_ok());
            }
            if alive == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        trickling
    });

    // Meanwhile, from 127.0.0.1: the API, order entry, the stream and the feeds work.
    let open_during = stats.open.load(Ordering::Relaxed);
    assert!(
        open_during >= (usize::from(ADDRESSES) * CAP) as u64,
        "the stalled connections are held while the checks run: {open_during}"
    );
    let http = reqwest::Client::new();
    let live = http.get(common::http(&app, "/health/live")).send().await.expect("live");
    assert_eq!(live.status(), StatusCode::OK);
    let q = http
        .get(common::http(&app, "/api/v1/quotes?symbols=BTCUSDT,ETHUSDT"))
        .send()
        .await
        .expect("quotes");
    assert_eq!(q.status(), StatusCode::OK);
    let trader = Client::new(&app, "alice", "trader");
    let (s, v) = trader
        .post(
            "/orders",
            json!({"symbol":"SBZ","side":"buy","type":"limit","price":"99.00","qty":"1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "order entry works under the flood: {v}");
    let mut ws = ws_connect(&app).await;
    send(&mut ws, json!({"op":"subscribe","channels":["quotes.BTCUSDT"]})).await;
    recv_until(&mut ws, WAIT, |m| m["type"] == "update")
        .await
        .expect("stream updates flow");
    let reconnects = |m: &str| {
        sample(
            m,
            "stocksblitz_feed_reconnects_total{feed=\"binance\",kind=\"binance\"} ",
        )
    };
    let before = reconnects(&metrics(&app).await).expect("reconnect metric");
    let r = http
        .post(format!("http://127.0.0.1:{sim_port}/control/faults/binance"))
        .json(&json!({"kind":"disconnect"}))
        .send()
        .await
        .expect("fault");
    assert!(r.status().is_success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reconnects(&metrics(&app).await).unwrap_or(0) <= before {
        assert!(tokio::time::Instant::now() < deadline, "the feed never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_live(&app, "BTCUSDT").await;
    let ws_ok = recv_until(&mut ws, WAIT, |m| {
        m["type"] == "update" && m["data"]["quality"] == "LIVE"
    })
    .await;
    assert!(ws_ok.is_some(), "the stream carries the resynced feed");

    // Stalled bodies were answered 408 and closed; pipelined requests never read are
    // closed too (hyper stops at the full write buffer, so the next head's deadline or
    // the idle timeout ends them, whichever comes first).
    for s in &mut bodies {
        assert!(
            ends_within(s, Duration::from_secs(15)).await,
            "a stalled body was closed"
        );
    }
    for s in &mut pipelined {
        assert!(
            ends_within(s, Duration::from_secs(120)).await,
            "a non-reading client was closed"
        );
    }

    // Then every stalled head is closed by the header deadline and counted.
    let held_count = held.len() + trickle_count;
    until(
        &app,
        Duration::from_secs(120),
        "stalled heads closed by the header deadline",
        |c| c.header_timeout.load(Ordering::Relaxed) >= held_count as u64,
    )
    .await;
    let deadlines = stats.header_timeout.load(Ordering::Relaxed) + stats.idle_timeout.load(Ordering::Relaxed);
    assert!(
        deadlines >= (held_count + SPECIAL) as u64,
        "every stalled head and every non-reader was ended by a deadline: {stats:?}"
    );
    for (kind, s) in &mut held {
        assert!(
            ends_within(s, Duration::from_secs(10)).await,
            "a stalled '{}' connection was closed",
            KINDS[*kind].0
        );
    }
    let mut trickling = trickler.await.expect("trickler");
    for s in &mut trickling {
        assert!(
            ends_within(s, Duration::from_secs(10)).await,
            "a trickling connection was closed"
        );
    }
    let m = metrics(&app).await;
    println!(
        "open-file limit {limits:?}; {} stalled connections from {ADDRESSES} addresses ({} kinds): {} held, {refused} \
         refused (per address); {SPECIAL} stalled bodies, {SPECIAL} pipelined non-readers; API, order entry, stream \
         and a feed reconnect worked with {open_during} connections open; closed: header_timeout {}, idle_timeout {}",
        usize::from(ADDRESSES) * PER_ADDRESS,
        KINDS.len(),
        held_count,
        sample(&m, "stocksblitz_connections_closed_total{reason=\"header_timeout\"} ").unwrap_or(0),
        sample(&m, "stocksblitz_connections_closed_total{reason=\"idle_timeout\"} ").unwrap_or(0),
    );
    assert_eq!(
        sample(
            &m,
            "stocksblitz_connections_refused_total{limit=\"max_connections_per_address\"} "
        ),
        Some(refused as u64)
    );
    app.shutdown().await.expect("clean shutdown");
}

/// With 800 stalled connections against a total cap of 400, the rest are refused with
/// 503 TOO_MANY_CONNECTIONS (a well-behaved client too, while the cap is full); once the
/// header deadline closes the stalled ones, service resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_cap_of_400_refuses_the_rest_of_800_then_recovers() {
    const CAP: usize = 400;
    const ADDRESSES: u8 = 8;
    const PER_ADDRESS: usize = 100;
    let _ = stocksblitz_api::http::server::raise_open_file_limit();
    let app = start_with(&test_config(|d| {
        let c = &mut d["api"]["connections"];
        c["max_connections"] = toml::Value::Integer(CAP as i64);
        c["max_connections_per_address"] = toml::Value::Integer(CAP as i64);
        c["header_read_timeout_ms"] = toml::Value::Integer(15_000);
    }))
    .await;
    let mut all = Vec::new();
    let opening: Vec<_> = (0..ADDRESSES)
        .map(|a| {
            let addr = app.addr;
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..PER_ADDRESS {
                    mine.push(connect_from(ip(2 + a), addr, None).await);
                }
                mine
            })
        })
        .collect();
    for o in opening {
        all.extend(o.await.expect("connections opened"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = all.iter().filter(|s| peek(s) == Seen::Open).count();
    let tried = usize::from(ADDRESSES) * PER_ADDRESS;
    assert_eq!(open, CAP);
    let stats = &app.state.http.connections;
    assert_eq!(stats.refused_total.load(Ordering::Relaxed), (tried - CAP) as u64);
    // A client at another address is refused too while the cap is full, with the error
    // contract's body.
    let mut s = connect_from(ip(1), app.addr, None).await;
    let _ = s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut text = String::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_string(&mut text)).await;
    if !text.is_empty() {
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or("")).expect("json body");
        assert_eq!(body["error"]["code"], "TOO_MANY_CONNECTIONS");
        assert_eq!(body["error"]["details"]["limit"], "api.connections.max_connections");
        assert!(body["error"]["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("req-")));
    }
    assert_eq!(
        stats.refused_total.load(Ordering::Relaxed),
        (tried - CAP + 1) as u64,
        "the well-behaved client was refused and counted"
    );
    until(&app, Duration::from_secs(60), "the stalled connections time out", |c| {
        c.open.load(Ordering::Relaxed) == 0
    })
    .await;
    let live = reqwest::get(http(&app, "/health/live")).await.expect("live");
    assert_eq!(live.status(), StatusCode::OK, "service resumes once the cap frees");
    println!(
        "{tried} stalled connections, cap {CAP}: {open} held, {} refused (max_connections), {} closed by the header deadline",
        stats.refused_total.load(Ordering::Relaxed),
        stats.header_timeout.load(Ordering::Relaxed)
    );
    app.shutdown().await.expect("clean shutdown");
}

/// The status of one raw request (0 when the server closed without an answer).
async fn raw_status(app: &RunningApp, request: &[u8]) -> u16 {
    let mut s = connect_from(ip(1), app.addr, None).await;
    let (mut rd, mut wr) = s.split();
    let write = async {
        let _ = wr.write_all(request).await;
    };
    let read = async {
        let mut head = [0u8; 12];
        match tokio::time::timeout(WAIT, rd.read_exact(&mut head)).await {
            Ok(Ok(_)) => String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0),
            _ => 0,
        }
    };
    let ((), status) = tokio::join!(write, read);
    status
}

/// Request heads of every size from 1 KiB to 1 MiB (and exactly at the limit and one
/// byte over): served up to `max_header_bytes`, answered 431 (or closed) past it, each
/// refusal counted; too many headers are refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_the_size_limit_are_refused_at_every_size() {
    const LIMIT: usize = 16_384;
    let app = start_with(&test_config(|d| {
        d["api"]["connections"]["max_header_bytes"] = toml::Value::Integer(LIMIT as i64);
    }))
    .await;
    let head = |total: usize| {
        let fixed = "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n".len();
        format!(
            "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(total - fixed)
        )
    };
    let mut sizes: Vec<usize> = (1..=40).map(|k| k * 1_024).collect();
    sizes.extend([LIMIT - 1, LIMIT, LIMIT + 1, 100 * 1_024, 1 << 20]);
    let mut over = 0;
    for &size in &sizes {
        let request = head(size);
        assert_eq!(request.len(), size);
        let status = raw_status(&app, request.as_bytes()).await;
        if size <= LIMIT {
            assert_eq!(status, 200, "a {size}-byte head is within the limit");
        } else {
            over += 1;
            assert!(
                status == 431 || status == 0,
                "a {size}-byte head is refused, got {status}"
            );
        }
    }
    // 150 small headers (well under the byte limit): too many.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = raw_status(
        &app,
        format!("GET /health/live HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(status == 431 || status == 0, "150 headers are refused, got {status}");
    over += 1;
    let counted = app.state.http.connections.header_too_large.load(Ordering::Relaxed);
    assert_eq!(counted, over as u64, "every refused head is counted");
    println!(
        "{} head sizes tried: {} served, {over} refused with 431 (limit {LIMIT} bytes)",
        sizes.len() + 1,
        sizes.len() + 1 - over
    );
    app.shutdown().await.expect("clean shutdown");
}

/// `GET /quotes?symbols=` with any empty entry is a 400 naming the parameter, never an
/// empty 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_quotes_refuse_empty_symbol_entries() {
    let app = start().await;
    let bad = [
        ",,,,",
        ",",
        "%20",
        "BTCUSDT,",
        ",BTCUSDT",
        "BTCUSDT,,ETHUSDT",
        "%20,%20",
        "BTCUSDT,%20,ETHUSDT",
    ];
    for q in bad {
        let r = reqwest::get(http(&app, &format!("/api/v1/quotes?symbols={q}")))
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "symbols={q}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "INVALID_PARAMETER", "symbols={q}");
        assert_eq!(v["error"]["details"]["parameter"], "symbols");
    }
    let r = reqwest::get(http(&app, "/api/v1/quotes?symbols=BTCUSDT,%20ETHUSDT%20"))
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["quotes"].as_array().map(Vec::len), Some(2));
    println!("{} malformed symbol lists refused with 400", bad.len());
    app.shutdown().await.expect("clean shutdown");
}

fn openssl(args: &[&std::ffi::OsStr]) {
    let ok = std::process::Command::new("openssl")
        .args(args)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl {args:?}");
}

/// A certificate authority and a server certificate it signed for 127.0.0.1 and
/// localhost, made by openssl: (CA certificate, server chain, server key).
fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let (ca, ca_key, csr, cert, key, ext) = (p("ca.crt"), p("ca.key"), p("csr"), p("crt"), p("key"), p("ext"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )
    .expect("ext");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let ec = [
        os("-newkey"),
        os("ec"),
        os("-pkeyopt"),
        os("ec_paramgen_curve:prime256v1"),
        os("-nodes"),
    ];
    let ca_subject = format!("/CN={name} test CA");
    let mut args = vec![
        os("req"),
        os("-x509"),
        os("-days"),
        os("2"),
        os("-subj"),
        ca_subject.as_ref(),
    ];
    args.extend(ec);
    args.extend([os("-keyout"), ca_key.as_os_str(), os("-out"), ca.as_os_str()]);
    openssl(&args);
    let subject = format!("/CN={name}");
    let mut args = vec![os("req"), os("-subj"), subject.as_ref()];
    args.extend(ec);
    args.extend([os("-keyout"), key.as_os_str(), os("-out"), csr.as_os_str()]);
    openssl(&args);
    openssl(&[
        os("x509"),
        os("-req"),
        os("-days"),
        os("2"),
        os("-in"),
        csr.as_os_str(),
        os("-CA"),
        ca.as_os_str(),
        os("-CAkey"),
        ca_key.as_os_str(),
        os("-CAcreateserial"),
        os("-extfile"),
        ext.as_os_str(),
        os("-out"),
        cert.as_os_str(),
    ]);
    (ca, cert, key)
}

/// An HTTPS client that trusts only `cert`.
fn https_client(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).expect("cert");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// A rustls client configuration that trusts only `cert` (for WSS).
fn wss_config(cert: &Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).expect("pem") {
        roots.add(c.expect("cert")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The real binary serving TLS with certificate A: HTTPS and WSS work for a client
/// trusting A, plain HTTP on the TLS port is not served, a stalled handshake is closed
/// by the header deadline; after the files are replaced by certificate B and SIGHUP,
/// new connections get B (a client trusting only A fails); a broken file on the next
/// SIGHUP is refused and B stays in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_tls_serves_https_and_wss_and_rotates_on_sighup() {
    let dir = fresh_dir("tls");
    std::fs::create_dir_all(&dir).expect("dir");
    let (ca_a, cert_a, key_a) = certificate(&dir, "a");
    let (ca_b, cert_b, key_b) = certificate(&dir, "b");
    let (cert, key) = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(&cert_a, &cert).expect("copy");
    std::fs::copy(&key_a, &key).expect("copy");
    let config = dir.join("config.toml");
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    std::fs::write(
        &config,
        test_config(move |d| {
            d["api"]["connections"]["header_read_timeout_ms"] = toml::Value::Integer(2_000);
            let mut tls = toml::Table::new();
            tls.insert("cert_path".into(), toml::Value::String(c));
            tls.insert("key_path".into(), toml::Value::String(k));
            d["api"]
                .as_table_mut()
                .expect("api")
                .insert("tls".into(), toml::Value::Table(tls));
        }),
    )
    .expect("config");
    let port = process::free_port();
    let log = dir.join("server.log");
    let out = std::fs::File::create(&log).expect("log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("STOCKSBLITZ_API_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("server starts");
    let server = process::Server {
        child,
        base: format!("https://127.0.0.1:{port}/api/v1"),
    };
    let root = format!("https://127.0.0.1:{port}");
    let trusts_a = https_client(&ca_a);
    let trusts_b = https_client(&ca_b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = trusts_a.get(format!("{root}/health/live")).send().await {
            assert_eq!(r.status(), StatusCode::OK);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "TLS server did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = trusts_a
        .get(format!("{}/quotes/BTCUSDT", server.base))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        trusts_b.get(format!("{root}/health/live")).send().await.is_err(),
        "certificate A is served"
    );

    // WSS on the same port.
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://127.0.0.1:{port}/api/v1/stream"),
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(wss_config(&ca_a))),
    )
    .await
    .expect("wss connects");
    ws.send(Message::Text(
        json!({"op":"subscribe","channels":["quotes.BTCUSDT"]})
            .to_string()
            .into(),
    ))
    .await
    .expect("subscribe");
    let snapshot = recv_until(&mut ws, WAIT, |m| m["type"] == "snapshot").await;
    assert!(snapshot.is_some(), "a snapshot over WSS");

    // Plain HTTP on the TLS port is not served; a silent client is closed by the deadline.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut plain = connect_from(ip(1), addr, None).await;
    plain
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "no plain-text service on the TLS port"
    );
    let mut silent = connect_from(ip(1), addr, None).await;
    assert!(ends_within(&mut silent, WAIT).await, "a silent handshake is closed");

    // Rotation: B's files in place, SIGHUP.
    std::fs::copy(&cert_b, &cert).expect("copy");
    std::fs::copy(&key_b, &key).expect("copy");
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -HUP");
    };
    hup(server.child.id());
    let deadline = tokio::time::Instant::now() + WAIT;
    while trusts_b.get(format!("{root}/health/live")).send().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "certificate B never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        trusts_a.get(format!("{root}/health/live")).send().await.is_err(),
        "A is no longer served"
    );
    // A broken file is refused on reload: B stays.
    std::fs::write(&cert, b"not a certificate").expect("write");
    hup(server.child.id());
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics_text = loop {
        let m = trusts_b
            .get(format!("{root}/metrics"))
            .send()
            .await
            .expect("metrics over TLS with B")
            .text()
            .await
            .expect("text");
        if sample(&m, "stocksblitz_tls_reloads_total{result=\"error\"} ") == Some(1) {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken reload was never counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(&metrics_text, "stocksblitz_tls_reloads_total{result=\"ok\"} "),
        Some(1)
    );
    assert!(
        sample(
            &metrics_text,
            "stocksblitz_connections_closed_total{reason=\"tls_handshake\"} "
        )
        .unwrap_or(0)
            >= 2,
        "the plain-text and silent clients are counted as failed handshakes"
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log_text.contains("TLS reload failed"), "the failed reload is logged");
    println!("TLS: HTTPS + WSS with certificate A, plain and silent clients refused, rotated to B by SIGHUP, a broken reload kept B");
    drop(server);
}

/// Two servers, plain HTTP on loopback and TLS: the same request answered by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_tls_in_process() {
    let dir = fresh_dir("tls-inproc");
    std::fs::create_dir_all(&dir).expect("dir");
    let (ca, cert, key) = certificate(&dir, "inproc");
    let plain = start().await;
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let tls = start_with(&test_config(move |d| {
        let mut t = toml::Table::new();
        t.insert("cert_path".into(), toml::Value::String(c));
        t.insert("key_path".into(), toml::Value::String(k));
        d["api"]
            .as_table_mut()
            .expect("api")
            .insert("tls".into(), toml::Value::Table(t));
    }))
    .await;
    let r = reqwest::get(http(&plain, "/health/live")).await.expect("plain");
    assert_eq!(r.status(), StatusCode::OK);
    let r = https_client(&ca)
        .get(format!("https://{}/health/live", tls.addr))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(tls.reload_tls().expect("reload"), "the TLS server reloads its files");
    assert!(
        !plain.reload_tls().expect("no tls"),
        "the plain server has nothing to reload"
    );
    plain.shutdown().await.expect("clean shutdown");
    tls.shutdown().await.expect("clean shutdown");
}

/// With the idle timeout shorter than the header deadline, connections on which nothing
/// moves (silent, or stopped part-way through a head) are closed by it and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_by_the_idle_timeout() {
    const SILENT: usize = 40;
    let app = start_with(&test_config(|d| {
        d["api"]["request_timeout_ms"] = toml::Value::Integer(1_000);
        let c = &mut d["api"]["connections"];
        c["header_read_timeout_ms"] = toml::Value::Integer(60_000);
        c["idle_timeout_secs"] = toml::Value::Integer(2);
    }))
    .await;
    let mut conns = Vec::new();
    for i in 0..SILENT {
        let mut s = connect_from(ip(2), app.addr, None).await;
        let (_, first) = KINDS[i % 3];
        let _ = s.write_all(first).await;
        conns.push(s);
    }
    for s in &mut conns {
        assert!(
            ends_within(s, Duration::from_secs(30)).await,
            "an idle connection was closed"
        );
    }
    let stats = &app.state.http.connections;
    assert_eq!(stats.idle_timeout.load(Ordering::Relaxed), SILENT as u64, "{stats:?}");
    assert_eq!(stats.header_timeout.load(Ordering::Relaxed), 0, "{stats:?}");
    println!("{SILENT} idle connections (silent, partial line, partial headers) closed by the idle timeout");
    app.shutdown().await.expect("clean shutdown");
}

/// The real binary with an open-file limit far below its connection cap (a
/// misconfiguration it warns about at start-up): a flood of 1,000 connections runs it out
/// of descriptors; failed accepts are counted and backed off (no spin, no crash), and
/// once the flood is gone it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_accepts_back_off_and_recover() {
    const FLOOD: usize = 1_000;
    let dir = fresh_dir("nofile");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        test_config(|d| {
            let c = &mut d["api"]["connections"];
            c["max_connections"] = toml::Value::Integer(4_000);
            c["max_connections_per_address"] = toml::Value::Integer(4_000);
            c["header_read_timeout_ms"] = toml::Value::Integer(5_000);
        }),
    )
    .expect("config");
    let port = process::free_port();
    let log = dir.join("server.log");
    let out = std::fs::File::create(&log).expect("log");
    let child = std::process::Command::new("bash")
        .args(["-c", "ulimit -n 400 && exec \"$0\" serve --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_stocksblitz"))
        .arg(&config)
        .env("STOCKSBLITZ_API_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("server starts");
    let server = process::Server {
        child,
        base: format!("http://127.0.0.1:{port}/api/v1"),
    };
    let root = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while http.get(format!("{root}/health/live")).send().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("exceeds the open-file"),
        "start-up warns that max_connections does not fit: {log_text}"
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        flood.push(connect_from(ip(2), addr, None).await);
    }
    // Long enough for the accept loop to hit the limit and back off a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.child.id() > 0);
    drop(flood);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let r = loop {
        if let Ok(r) = http.get(format!("{root}/health/live")).send().await {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "the server never served again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(r.status(), StatusCode::OK);
    let m = http
        .get(format!("{root}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let errors = sample(&m, "stocksblitz_accept_errors_total ").expect("metric");
    assert!(errors > 0, "failed accepts are counted");
    let accepted = sample(&m, "stocksblitz_connections_accepted_total ").unwrap_or(0);
    println!("{FLOOD} connections against an open-file limit of 400: {errors} failed accepts counted, {accepted} accepted, service resumed");
    drop(server);
}
