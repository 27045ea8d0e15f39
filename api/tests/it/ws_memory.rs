//! What a held WebSocket connection keeps (issue 19: 10,000 connections under 50 KiB
//! each): the stream's socket (`api/src/ws/socket.rs`) frames text itself into one
//! buffer per write, dropped once written, a long message as fragments, so no
//! per-connection buffer keeps a whole trades snapshot's size (~30 KB).
//! RSS per connection is measured against the real server by the `fanout` bench's
//! held-connections rows (BENCHMARKS.md, "Memory per connection, piece by piece").

use std::net::SocketAddr;

use crate::raw_ws;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Message;
use axum::routing::get;
use futures_util::StreamExt;
use stocksblitz_api::ws::socket::FRAGMENT_BYTES;
use stocksblitz_api::ws::upgrade::Upgrade;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const WAIT: Duration = Duration::from_secs(10);

/// A text message of `len` bytes: valid JSON, multi-byte characters included (so
/// some fragment boundaries fall inside a character).
fn message(len: usize) -> String {
    let mut s = String::from("{\"data\":\"");
    while s.len() + 4 < len {
        s.push(if s.len() % 7 == 0 { 'é' } else { 'x' });
    }
    while s.len() + 2 < len {
        s.push('x');
    }
    s.push_str("\"}");
    s
}

/// A server whose every connection gets `messages`, each sent through the stream's
/// socket, then a close.
async fn serve(messages: Vec<String>) -> SocketAddr {
    let router = axum::Router::new().route(
        "/ws",
        get(move |ws: Upgrade| {
            let messages = messages.clone();
            async move {
                ws.on_upgrade(WebSocketConfig::default(), move |mut socket| async move {
                    let mut texts: Vec<Bytes> = messages.into_iter().map(Bytes::from).collect();
                    if socket.write_texts(&mut texts, None).await.is_err() {
                        return;
                    }
                    let _ = socket.send(Message::Close(None)).await;
                    while let Some(Ok(_)) = socket.recv().await {}
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The server's frames as (opcode, fin, payload) until its close frame.
async fn raw_frames(addr: SocketAddr) -> Vec<(u8, bool, Vec<u8>)> {
    let (mut s, head) = raw_ws::upgrade(addr, "/ws", None).await;
    assert!(
        head.to_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "RFC 6455's example key gets its example answer: {head}"
    );
    let mut frames = Vec::new();
    while let Some((op, fin, payload)) = raw_ws::read_frame_fin(&mut s).await {
        if op == 8 {
            return frames;
        }
        frames.push((op, fin, payload));
    }
    panic!("the connection ended before the server's close frame");
}

/// Messages longer than a fragment go out as a text frame and continuation frames of
/// at most FRAGMENT_BYTES each; shorter ones as one frame. A client library gets
/// every message whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_messages_go_out_in_fragments_and_arrive_whole() {
    let sizes = [
        2,
        100,
        FRAGMENT_BYTES,
        FRAGMENT_BYTES + 1,
        29_404,
        3 * FRAGMENT_BYTES,
        100_000,
    ];
    let messages: Vec<String> = sizes.iter().map(|&n| message(n)).collect();
    let addr = serve(messages.clone()).await;

    let frames = tokio::time::timeout(WAIT, raw_frames(addr))
        .await
        .expect("frames in time");
    let mut rebuilt = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for (op, fin, payload) in frames {
        assert!(payload.len() <= FRAGMENT_BYTES, "a frame of {} bytes", payload.len());
        match (op, current.as_mut()) {
            (1, None) => current = Some(payload),
            (0, Some(c)) => c.extend_from_slice(&payload),
            other => panic!("a text frame starts a message, continuations follow it: {other:?}"),
        }
        if fin {
            rebuilt.push(String::from_utf8(current.take().expect("a message")).expect("UTF-8"));
        }
    }
    assert!(current.is_none(), "the last message was finished");
    assert_eq!(rebuilt, messages);

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    let mut got = Vec::new();
    while let Some(Ok(m)) = tokio::time::timeout(WAIT, ws.next()).await.expect("in time") {
        match m {
            tokio_tungstenite::tungstenite::Message::Text(t) => got.push(t.as_str().to_owned()),
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(got.len(), messages.len());
    for (g, m) in got.iter().zip(&messages) {
        assert_eq!(g, m);
        serde_json::from_str::<serde_json::Value>(g).expect("valid JSON");
    }
}

/// A request that is not a valid upgrade gets axum's answer, as before the stream took
/// the connection over itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upgrade_request_is_refused() {
    let addr = serve(Vec::new()).await;
    let status = |req: &'static [u8]| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(req).await.expect("request");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.expect("status line");
        String::from_utf8_lossy(&head[9..12]).into_owned()
    };
    // No Upgrade header.
    assert_eq!(
        status(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n\r\n").await,
        "400"
    );
    // No key.
    assert_eq!(
        status(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n").await,
        "400"
    );
    // Wrong version.
    assert_eq!(
        status(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n").await,
        "400"
    );
}

/// What a connection's session task holds inline (its future: the session state, the
/// socket, and the largest state any of its awaits needs), printed for
/// BENCHMARKS.md and bounded so that a change that makes it much bigger is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_future_stays_small() {
    let app = crate::common::start().await;
    let state = app.state.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<(usize, usize)>();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let router = axum::Router::new().route(
        "/ws",
        get(move |ws: Upgrade| {
            let (state, tx) = (state.clone(), tx.lock().expect("lock").take());
            async move {
                ws.on_upgrade(WebSocketConfig::default(), move |socket| async move {
                    let socket_size = std::mem::size_of_val(&socket);
                    let peer = std::net::IpAddr::from([127, 0, 0, 1]);
                    let session = stocksblitz_api::ws::session::run(socket, state, None, peer, None);
                    if let Some(tx) = tx {
                        let _ = tx.send((std::mem::size_of_val(&session), socket_size));
                    }
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    let _client = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    let (session, socket) = tokio::time::timeout(WAIT, rx).await.expect("in time").expect("sizes");
    println!("session future: {session} bytes, of which the socket {socket} bytes");
    assert!(session < 4 * 1024, "session future {session} bytes");
    app.shutdown().await.expect("clean shutdown");
}
