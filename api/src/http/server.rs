//! The API's accept loop and per-connection limits (`[api.connections]`).
//!
//! Clients reach this code before any token is checked, so it alone bounds what an
//! unauthenticated client can hold: a cap on open connections in total (a semaphore)
//! and per client address (a counter map), a deadline for each request head (hyper's
//! header read timeout, which also ends idle keep-alive connections), a deadline for
//! any byte to move (a request body that stalls, a client that never reads its
//! responses), and a limit on the head's size (431). A refused connection gets a short
//! 503 `TOO_MANY_CONNECTIONS` and is closed at once; nothing waits in the backlog.
//! Every refusal and forced close is counted ([`ConnStats`], in `/metrics`).
//!
//! The slot a connection holds travels with its socket: a connection upgraded to a
//! WebSocket keeps counting against both caps until the socket is dropped. With
//! `[api.tls]` the same loop serves TLS (handshake under the header deadline).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use super::conn::{Activity, ConnLink, ConnStats};
use super::tls::TlsFiles;
use crate::config::ApiConfig;
use crate::state::AppState;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Total,
    PerAddress,
}

/// The two caps: a semaphore for the total, a counter per client address.
struct Admission {
    total: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    per_address_max: usize,
    stats: Arc<ConnStats>,
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut map = self.per_address.lock();
        let n = map.get(&ip).copied().unwrap_or(0);
        if n >= self.per_address_max {
            return Err(Refusal::PerAddress);
        }
        let permit = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| Refusal::Total)?;
        map.insert(ip, n + 1);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            _permit: permit,
            admission: Arc::clone(self),
            ip,
        })
    }
}

/// A connection's place under both caps, released when the socket is dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.admission.per_address.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        self.admission.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TCP socket with its slot and activity clock.
struct Guarded {
    stream: TcpStream,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.activity.reset.load(Ordering::Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl Guarded {
    /// Applies a send buffer size the connection's session asked for (once).
    fn apply_send_buffer(&self) {
        if self.activity.send_buffer.load(Ordering::Relaxed) == 0 {
            return;
        }
        let bytes = self.activity.send_buffer.swap(0, Ordering::Relaxed);
        if let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(&self.stream, bytes) {
            tracing::warn!(error = %e, bytes, "could not set a WebSocket's send buffer");
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.apply_send_buffer();
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.apply_send_buffer();
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Shutdown phases sent to connection tasks.
const RUNNING: u8 = 0;
const DRAIN: u8 = 1;
const FORCE: u8 = 2;

/// What every connection task shares.
struct Ctx {
    router: Router,
    http1: hyper::server::conn::http1::Builder,
    tls: Option<Arc<TlsFiles>>,
    header_timeout: Duration,
    idle_timeout: Duration,
    stats: Arc<ConnStats>,
}

/// hyper's HTTP/1 settings from `[api.connections]`.
fn http1(cfg: &ApiConfig) -> hyper::server::conn::http1::Builder {
    let c = &cfg.connections;
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(Some(Duration::from_millis(c.header_read_timeout_ms)))
        .max_header_size(c.max_header_bytes)
        // The read buffer holds at most one head (hyper's floor is 8 KiB): a head that
        // never completes cannot grow it further.
        .max_buf_size(c.max_header_bytes.max(8_192))
        .keep_alive(true);
    b
}

/// The accept loop's task and the sender that stops it gracefully.
pub type Serving = (tokio::task::JoinHandle<io::Result<()>>, oneshot::Sender<()>);

/// Serves `state`'s routes on `listener` (TLS when `tls` is given) until the returned
/// sender fires or is dropped: then it stops accepting, lets requests in flight finish
/// (up to `request_timeout_ms`), and closes what is left.
pub fn serve(listener: TcpListener, state: &AppState, tls: Option<Arc<TlsFiles>>) -> Serving {
    let cfg = &state.config;
    let stats = Arc::clone(&state.http.connections);
    let admission = Arc::new(Admission {
        total: Arc::new(Semaphore::new(cfg.connections.max_connections)),
        per_address: Mutex::new(HashMap::new()),
        per_address_max: cfg.connections.max_connections_per_address,
        stats: Arc::clone(&stats),
    });
    let ctx = Arc::new(Ctx {
        router: super::router::router(state.clone()),
        http1: http1(cfg),
        tls,
        header_timeout: Duration::from_millis(cfg.connections.header_read_timeout_ms),
        idle_timeout: Duration::from_secs(cfg.connections.idle_timeout_secs),
        stats,
    });
    let grace = Duration::from_millis(cfg.request_timeout_ms) + Duration::from_millis(500);
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (phase_tx, phase_rx) = watch::channel(RUNNING);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let mut last_warned: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = &mut rx => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    ctx.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                    ) {
                        // Out of descriptors or memory: back off instead of spinning.
                        if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(error = %e, "accept failed; backing off (see stocksblitz_accept_errors_total)");
                            last_warned = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            };
            ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let slot = match admission.admit(peer.ip().to_canonical()) {
                Ok(s) => s,
                Err(why) => {
                    refuse(stream, why, ctx.tls.is_none(), &ctx.stats);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let io = Guarded {
                stream,
                activity: Arc::new(Activity::new()),
                _slot: slot,
            };
            let (ctx, phase, done) = (Arc::clone(&ctx), phase_rx.clone(), done_tx.clone());
            tokio::spawn(async move {
                connection(io, peer, ctx, phase).await;
                drop(done);
            });
        }
        drop(listener);
        let _ = phase_tx.send(DRAIN);
        drop(done_tx);
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            let _ = phase_tx.send(FORCE);
            let _ = tokio::time::timeout(Duration::from_secs(2), done_rx.recv()).await;
        }
        Ok(())
    });
    (task, tx)
}

/// Answers a refused connection with a short 503 (plain HTTP only: a TLS client could
/// not read it) and closes it.
fn refuse(stream: TcpStream, why: Refusal, plain: bool, stats: &ConnStats) {
    let (counter, limit, message) = match why {
        Refusal::Total => (
            &stats.refused_total,
            "api.connections.max_connections",
            "the server holds as many connections as it allows: retry shortly",
        ),
        Refusal::PerAddress => (
            &stats.refused_per_address,
            "api.connections.max_connections_per_address",
            "too many connections from your address: close idle ones or reuse them (keep-alive)",
        ),
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if !plain {
        return;
    }
    // Whatever already arrived is read first, so the close is orderly where it can be.
    let mut scratch = [0u8; 4_096];
    for _ in 0..4 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let id = crate::foundation::request_id::fresh();
    let body = serde_json::json!({ "error": {
        "code": "TOO_MANY_CONNECTIONS",
        "message": message,
        "details": { "limit": limit },
        "request_id": id,
    }})
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\nx-request-id: {id}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// One accepted connection: the TLS handshake when configured, then HTTP.
async fn connection(io: Guarded, peer: SocketAddr, ctx: Arc<Ctx>, phase: watch::Receiver<u8>) {
    let activity = Arc::clone(&io.activity);
    match &ctx.tls {
        None => http(io, peer, activity, &ctx, phase).await,
        Some(tls) => match tokio::time::timeout(ctx.header_timeout, tls.acceptor().accept(io)).await {
            Ok(Ok(io)) => http(io, peer, activity, &ctx, phase).await,
            Ok(Err(_)) | Err(_) => {
                ctx.stats.tls_handshake_failed.fetch_add(1, Ordering::Relaxed);
            }
        },
    }
}

/// Serves HTTP/1.1 (and upgrades) on `io` until the client or a limit ends it.
async fn http<I>(io: I, peer: SocketAddr, activity: Arc<Activity>, ctx: &Ctx, mut phase: watch::Receiver<u8>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let link = ConnLink(Arc::clone(&activity));
    let router = ctx.router.clone();
    let service = tower::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(link.clone());
        router.clone().oneshot(req)
    });
    let conn = ctx
        .http1
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    let result = loop {
        let idle_at = activity.idle_at(ctx.idle_timeout);
        tokio::select! {
            r = conn.as_mut() => break r,
            changed = phase.changed() => {
                let now = *phase.borrow_and_update();
                if changed.is_err() || now == FORCE {
                    return;
                }
                if now == DRAIN && !draining {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(idle_at) => {
                if activity.idle_at(ctx.idle_timeout) <= tokio::time::Instant::now() {
                    ctx.stats.idle_timeout.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            ctx.stats.header_timeout.fetch_add(1, Ordering::Relaxed);
        } else if e.is_parse_too_large() {
            ctx.stats.header_too_large.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Raises this process's open-file soft limit to its hard limit (connections, feeds,
/// journal and sink files all need descriptors). Returns (before, after).
#[cfg(unix)]
pub fn raise_open_file_limit() -> io::Result<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // `None` is "unlimited".
    let lim = getrlimit(Resource::Nofile);
    let before = lim.current.unwrap_or(u64::MAX);
    let max = lim.maximum.unwrap_or(u64::MAX);
    if before >= max {
        return Ok((before, before));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    )?;
    Ok((before, max))
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> io::Result<(u64, u64)> {
    Ok((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_address: usize) -> Arc<Admission> {
        Arc::new(Admission {
            total: Arc::new(Semaphore::new(total)),
            per_address: Mutex::new(HashMap::new()),
            per_address_max: per_address,
            stats: Arc::new(ConnStats::default()),
        })
    }

    /// A send buffer a session asks for through its link is set on the socket by the
    /// next write, once.
    #[tokio::test]
    async fn the_send_buffer_a_session_asks_for_is_applied_on_the_next_write() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let slot = admission(4, 4)
            .admit(peer.ip())
            .map_err(|_| "refused")
            .expect("admitted");
        let mut io = Guarded {
            stream,
            activity: Arc::new(Activity::new()),
            _slot: slot,
        };
        let size = || rustix::net::sockopt::socket_send_buffer_size(&io.stream).expect("getsockopt");
        let before = size();
        ConnLink(Arc::clone(&io.activity)).limit_send_buffer(8_192);
        assert_eq!(size(), before, "nothing changes before a write");
        io.write_all(b"x").await.expect("write");
        // Linux doubles what it is given (bookkeeping overhead).
        let after = rustix::net::sockopt::socket_send_buffer_size(&io.stream).expect("getsockopt");
        assert_eq!(after, 16_384);
        assert_ne!(after, before);
        assert_eq!(io.activity.send_buffer.load(Ordering::Relaxed), 0, "applied once");
        drop(client);
    }

    proptest::proptest! {
        /// Any sequence of opens and closes over a few addresses: an open is admitted
        /// exactly when both caps have room, the per-address map never keeps an empty
        /// entry, and the open gauge matches what is held.
        #[test]
        fn caps_hold_for_any_open_close_sequence(
            total in 1usize..12,
            per in 1usize..6,
            ops in proptest::collection::vec((0u8..4, proptest::bool::ANY), 1..200),
        ) {
            let per = per.min(total);
            let a = admission(total, per);
            let mut held: Vec<(u8, Slot)> = Vec::new();
            for (addr, open) in ops {
                let ip = IpAddr::from([127, 0, 0, addr + 1]);
                if open {
                    let mine = held.iter().filter(|(x, _)| *x == addr).count();
                    let room = held.len() < total && mine < per;
                    match a.admit(ip) {
                        Ok(s) => { proptest::prop_assert!(room); held.push((addr, s)); }
                        Err(Refusal::PerAddress) => proptest::prop_assert!(mine >= per),
                        Err(Refusal::Total) => proptest::prop_assert!(mine < per && held.len() >= total),
                    }
                } else if let Some(i) = held.iter().position(|(x, _)| *x == addr) {
                    held.swap_remove(i);
                }
                proptest::prop_assert_eq!(a.stats.open.load(Ordering::Relaxed), held.len() as u64);
                let map = a.per_address.lock();
                proptest::prop_assert!(map.values().all(|n| *n > 0));
                proptest::prop_assert_eq!(map.values().sum::<usize>(), held.len());
            }
        }
    }
}
