//! A stream connection's WebSocket: tokio-tungstenite over hyper's upgraded
//! connection for reading and control frames, text messages framed here and written
//! straight to the connection.
//!
//! Why not axum's `WebSocket`: tungstenite formats every outgoing frame whole into its
//! write buffer, and that buffer keeps the largest capacity it ever reached for the
//! connection's life. A trades snapshot (the last 200 trades, ~30 KB) left every
//! connection that subscribed to trades holding a ~30 KiB buffer, most of a held
//! connection's memory (BENCHMARKS.md, "Memory per connection, piece by piece").
//! And at 1,000 connections a write carries tens of messages, each taken through
//! tungstenite's sink, framed and copied into that buffer one by one (~10% of the
//! workers' time at 20k steps/s, N=1000). So the session's text messages are framed
//! here into one buffer per write ([`WebSocket::write_texts`]: each message's frame
//! header and payload back to back, a text message longer than [`FRAGMENT_BYTES`] as
//! fragments, RFC 6455 section 5.4) and written to the connection directly, after
//! whatever tungstenite has queued (pongs); the buffer is dropped once written, so a
//! held connection holds none. Reading, pings, pongs and close stay tungstenite's.
//! The session sees axum's `Message` and errors as `axum::Error`.

use std::io;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite as ts;
use tokio_tungstenite::WebSocketStream;
use ts::protocol::frame::coding::{CloseCode, Data, OpCode};
use ts::protocol::frame::Frame;
use ts::protocol::{Role, WebSocketConfig};

/// Longest payload of one outgoing text frame: a longer message is fragmented.
pub const FRAGMENT_BYTES: usize = 8 * 1024;
// A fragment's length fits the 16-bit form of a frame header.
const _: () = assert!(FRAGMENT_BYTES < 65_536);
/// tungstenite's write buffer (control frames only): written once it holds more.
pub const WRITE_BUFFER_BYTES: usize = FRAGMENT_BYTES;

/// One upgraded stream connection.
pub struct WebSocket {
    inner: WebSocketStream<TokioIo<Upgraded>>,
    /// Framed text not yet written (a write cut off by its deadline): goes out before
    /// anything else, so frames never interleave.
    pending: Bytes,
}

impl WebSocket {
    /// The server side of an upgraded connection (`config` sets tungstenite's buffers
    /// and size limits; its write buffer size is [`WRITE_BUFFER_BYTES`]).
    pub async fn new(upgraded: Upgraded, config: WebSocketConfig) -> Self {
        let config = config.write_buffer_size(WRITE_BUFFER_BYTES);
        Self {
            inner: WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await,
            pending: Bytes::new(),
        }
    }

    /// The next message from the client (pings are answered by tungstenite); `None`
    /// once the connection ended.
    pub async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        loop {
            let m = match self.inner.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(axum::Error::new(e))),
            };
            if let Some(m) = from_tungstenite(m) {
                return Some(Ok(m));
            }
        }
    }

    /// Writes `texts` (each one text message, already JSON) and empties it, then a
    /// ping carrying `ping` if given: framed into one buffer, written after anything
    /// tungstenite has queued. Cancel-safe: what a cut-off write did not send goes
    /// first on the next write.
    pub async fn write_texts(&mut self, texts: &mut Vec<Bytes>, ping: Option<[u8; 8]>) -> Result<(), axum::Error> {
        self.inner.flush().await.map_err(axum::Error::new)?;
        self.write_pending().await?;
        if texts.is_empty() && ping.is_none() {
            return Ok(());
        }
        let size: usize = texts.iter().map(|t| t.len() + header_bytes(t.len())).sum::<usize>() + PING_FRAME_BYTES;
        let mut wire = Vec::with_capacity(size);
        for t in texts.drain(..) {
            frame_text(&mut wire, &t);
        }
        if let Some(p) = ping {
            wire.extend_from_slice(&[0x89, 8]);
            wire.extend_from_slice(&p);
        }
        self.pending = Bytes::from(wire);
        self.write_pending().await
    }

    /// Writes what a cut-off [`WebSocket::write_texts`] left.
    async fn write_pending(&mut self) -> Result<(), axum::Error> {
        let io = self.inner.get_mut();
        while !self.pending.is_empty() {
            match io.write(&self.pending).await {
                Ok(0) => return Err(axum::Error::new(io::Error::from(io::ErrorKind::WriteZero))),
                Ok(n) => self.pending = self.pending.slice(n..),
                Err(e) => return Err(axum::Error::new(e)),
            }
        }
        self.pending = Bytes::new();
        Ok(())
    }

    /// Sends a control message (ping, pong, close) or a binary one through
    /// tungstenite, after any framed text still pending; a text message is framed
    /// here like [`WebSocket::write_texts`]'s.
    pub async fn send(&mut self, message: Message) -> Result<(), axum::Error> {
        self.write_pending().await?;
        match message {
            Message::Text(t) => self.write_texts(&mut vec![Bytes::from(t)], None).await,
            other => self.inner.send(to_tungstenite(other)).await.map_err(axum::Error::new),
        }
    }
}

/// A ping frame with an 8-byte payload (final, opcode 9, not masked).
const PING_FRAME_BYTES: usize = 10;

/// Where each frame of a text message of `len` bytes starts and ends: one frame, or
/// fragments of at most [`FRAGMENT_BYTES`] (an empty message is one empty frame).
fn fragments(len: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..len.div_ceil(FRAGMENT_BYTES).max(1)).map(move |i| i * FRAGMENT_BYTES..((i + 1) * FRAGMENT_BYTES).min(len))
}

/// A server frame's header size for a payload of `n` bytes (never over
/// [`FRAGMENT_BYTES`], so the 16-bit length form at most; not masked).
fn header_len(n: usize) -> usize {
    if n < 126 {
        2
    } else {
        4
    }
}

/// Frame header bytes for a text message of `len` bytes, fragments included.
fn header_bytes(len: usize) -> usize {
    fragments(len).map(|r| header_len(r.len())).sum()
}

/// Appends `text` as one text frame, or as a text frame and continuation frames of at
/// most [`FRAGMENT_BYTES`] each, the last one final.
fn frame_text(wire: &mut Vec<u8>, text: &[u8]) {
    for (i, r) in fragments(text.len()).enumerate() {
        let fin = if r.end == text.len() { 0x80 } else { 0 };
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        wire.push(fin | opcode);
        let n = r.len();
        if header_len(n) == 2 {
            wire.push(n as u8);
        } else {
            wire.push(126);
            wire.extend_from_slice(&(n as u16).to_be_bytes());
        }
        wire.extend_from_slice(&text[r]);
    }
}

fn to_tungstenite(message: Message) -> ts::Message {
    match message {
        Message::Text(t) => ts::Message::Frame(Frame::message(Bytes::from(t), OpCode::Data(Data::Text), true)),
        Message::Binary(b) => ts::Message::Binary(b),
        Message::Ping(b) => ts::Message::Ping(b),
        Message::Pong(b) => ts::Message::Pong(b),
        Message::Close(c) => ts::Message::Close(c.map(|c| ts::protocol::CloseFrame {
            code: CloseCode::from(c.code),
            reason: ts::Utf8Bytes::from(c.reason.as_str()),
        })),
    }
}

/// axum's message for a received one (`None`: a raw frame, which reading never yields).
fn from_tungstenite(message: ts::Message) -> Option<Message> {
    Some(match message {
        ts::Message::Text(t) => Message::Text(Utf8Bytes::from(t.as_str())),
        ts::Message::Binary(b) => Message::Binary(b),
        ts::Message::Ping(b) => Message::Ping(b),
        ts::Message::Pong(b) => Message::Pong(b),
        ts::Message::Close(c) => Message::Close(c.map(|c| CloseFrame {
            code: c.code.into(),
            reason: Utf8Bytes::from(c.reason.as_str()),
        })),
        ts::Message::Frame(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a real client (tungstenite, client role) reads from `wire`.
    fn read_all(wire: Vec<u8>) -> Vec<String> {
        let mut ws = ts::protocol::WebSocket::from_raw_socket(io::Cursor::new(wire), Role::Client, None);
        let mut got = Vec::new();
        loop {
            match ws.read() {
                Ok(ts::Message::Text(t)) => got.push(t.as_str().to_owned()),
                Ok(other) => panic!("only text messages were framed: {other:?}"),
                Err(ts::Error::Io(e))
                    if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::UnexpectedEof =>
                {
                    return got
                }
                // The end of the buffer (a frame cut short would be missing from `got`).
                Err(ts::Error::Protocol(ts::error::ProtocolError::ResetWithoutClosingHandshake)) => return got,
                Err(e) => panic!("a client could not read the frames: {e}"),
            }
        }
    }

    /// Raw frames of `wire`: (first byte, payload length), walking the headers.
    fn frames(wire: &[u8]) -> Vec<(u8, usize)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < wire.len() {
            let b0 = wire[at];
            let (len, head) = match wire[at + 1] {
                126 => (u16::from_be_bytes([wire[at + 2], wire[at + 3]]) as usize, 4),
                127 => panic!("no frame is longer than FRAGMENT_BYTES"),
                n => (n as usize, 2),
            };
            out.push((b0, len));
            at += head + len;
        }
        out
    }

    proptest::proptest! {
        /// Messages of any length, back to back in one buffer, read by a real client as
        /// the same messages; one longer than FRAGMENT_BYTES goes out as a text frame then
        /// continuation frames, the last one final, none over FRAGMENT_BYTES; the
        /// buffer's size is what was reserved for it.
        #[test]
        fn texts_are_framed_for_any_length(lens in proptest::collection::vec(0usize..40_000, 1..5), seed in 0u8..255) {
            let texts: Vec<String> = lens
                .iter()
                .enumerate()
                .map(|(k, &len)| (0..len).map(|i| char::from(b'a' + ((i + k + seed as usize) % 26) as u8)).collect())
                .collect();
            let mut wire = Vec::new();
            let mut reserved = 0;
            for t in &texts {
                frame_text(&mut wire, t.as_bytes());
                reserved += t.len() + header_bytes(t.len());
            }
            proptest::prop_assert_eq!(wire.len(), reserved);
            let raw = frames(&wire);
            let mut k = 0;
            for t in &texts {
                let n = t.len().div_ceil(FRAGMENT_BYTES).max(1);
                for j in 0..n {
                    let (b0, len) = raw[k + j];
                    proptest::prop_assert_eq!(b0 & 0x0f, if j == 0 { 1 } else { 0 }, "text, then continuation");
                    proptest::prop_assert_eq!(b0 & 0x80 != 0, j + 1 == n, "only the last is final");
                    proptest::prop_assert!(len <= FRAGMENT_BYTES);
                }
                k += n;
            }
            proptest::prop_assert_eq!(k, raw.len());
            proptest::prop_assert_eq!(read_all(wire), texts);
        }
    }

    #[test]
    fn control_messages_go_through_tungstenite_unchanged() {
        assert!(matches!(
            to_tungstenite(Message::Ping(Bytes::from_static(b"x"))),
            ts::Message::Ping(_)
        ));
        assert!(matches!(
            to_tungstenite(Message::Close(Some(CloseFrame {
                code: 4009,
                reason: Utf8Bytes::from("slow consumer")
            }))),
            ts::Message::Close(Some(c)) if u16::from(c.code) == 4009 && c.reason.as_str() == "slow consumer"
        ));
    }
}
