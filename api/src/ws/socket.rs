//! A stream connection's WebSocket: tokio-tungstenite over hyper's upgraded
//! connection, with axum's message types, sending long text messages as fragments.
//!
//! Why not axum's `WebSocket`: tungstenite formats every outgoing frame whole into its
//! write buffer, and that buffer keeps the largest capacity it ever reached for the
//! connection's life. A trades snapshot (the last 200 trades, ~30 KB) left every
//! connection that subscribed to trades holding a ~30 KiB buffer, most of a held
//! connection's memory (BENCHMARKS.md, "Memory per connection, piece by piece").
//! axum's wrapper can only send whole messages; here a text message longer than
//! [`FRAGMENT_BYTES`] goes out as fragments of at most that size (RFC 6455 section
//! 5.4: the client reassembles one message), and the write buffer goes to the socket
//! once it holds more than [`WRITE_BUFFER_BYTES`], so it stays a few KiB whatever the
//! messages' sizes. The session sees the same API as axum's: `recv`, `feed`, `flush`,
//! `send`, axum's `Message`, and errors as `axum::Error` (a tungstenite error inside).

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite as ts;
use tokio_tungstenite::WebSocketStream;
use ts::protocol::frame::coding::{CloseCode, Data, OpCode};
use ts::protocol::frame::Frame;
use ts::protocol::{Role, WebSocketConfig};

/// Longest payload of one outgoing text frame: a longer message is fragmented.
pub const FRAGMENT_BYTES: usize = 8 * 1024;
/// tungstenite writes its buffer to the socket once it holds more than this (a full
/// fragment's frame always does, so the buffer never holds two).
pub const WRITE_BUFFER_BYTES: usize = FRAGMENT_BYTES;

/// One upgraded stream connection.
pub struct WebSocket {
    inner: WebSocketStream<TokioIo<Upgraded>>,
}

impl WebSocket {
    /// The server side of an upgraded connection (`config` sets tungstenite's buffers
    /// and size limits; its write buffer size is [`WRITE_BUFFER_BYTES`]).
    pub async fn new(upgraded: Upgraded, config: WebSocketConfig) -> Self {
        let config = config.write_buffer_size(WRITE_BUFFER_BYTES);
        Self {
            inner: WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await,
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

    /// Queues a message (written once tungstenite's buffer is full, or by
    /// [`WebSocket::flush`]); a text message over [`FRAGMENT_BYTES`] in fragments.
    pub async fn feed(&mut self, message: Message) -> Result<(), axum::Error> {
        for frame in frames(message) {
            self.inner.feed(frame).await.map_err(axum::Error::new)?;
        }
        Ok(())
    }

    /// [`WebSocket::feed`] for a text message already in shared bytes (the session's
    /// own JSON, framed by [`super::reader::Framer`] or serialized by it): sent as it
    /// is, no copy and no UTF-8 check.
    pub async fn feed_text(&mut self, text: Bytes) -> Result<(), axum::Error> {
        for frame in fragments(None, text) {
            self.inner.feed(frame).await.map_err(axum::Error::new)?;
        }
        Ok(())
    }

    /// Writes everything queued to the socket.
    pub async fn flush(&mut self) -> Result<(), axum::Error> {
        self.inner.flush().await.map_err(axum::Error::new)
    }

    /// [`WebSocket::feed`] then [`WebSocket::flush`].
    pub async fn send(&mut self, message: Message) -> Result<(), axum::Error> {
        self.feed(message).await?;
        self.flush().await
    }
}

/// The tungstenite messages that carry `message`: a text message as one frame, or as
/// fragments of at most [`FRAGMENT_BYTES`] (no copy: each is a slice of the message).
fn frames(message: Message) -> impl Iterator<Item = ts::Message> {
    let (whole, text) = match message {
        Message::Text(t) => (None, Bytes::from(t)),
        other => (Some(to_tungstenite(other)), Bytes::new()),
    };
    fragments(whole, text)
}

/// `whole` as it is, or else `text` as one text frame or as fragments of at most
/// [`FRAGMENT_BYTES`], each a slice of it.
fn fragments(mut whole: Option<ts::Message>, text: Bytes) -> impl Iterator<Item = ts::Message> {
    // No allocation per message: the session feeds every delivery through here.
    let total = text.len();
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if let Some(m) = whole.take() {
            done = true;
            return Some(m);
        }
        if done {
            return None;
        }
        let end = (start + FRAGMENT_BYTES).min(total);
        let opcode = if start == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        done = end == total;
        let frame = Frame::message(text.slice(start..end), opcode, done);
        start = end;
        Some(ts::Message::Frame(frame))
    })
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

    fn payloads(message: Message) -> Vec<(bool, bool, usize)> {
        frames(message)
            .map(|m| match m {
                ts::Message::Frame(f) => (
                    f.header().opcode == OpCode::Data(Data::Text),
                    f.header().is_final,
                    f.payload().len(),
                ),
                other => panic!("a text message goes out as frames: {other:?}"),
            })
            .collect()
    }

    proptest::proptest! {
        /// A text message of any length goes out as a text frame, then continuation
        /// frames, the last one final, each at most FRAGMENT_BYTES, whose payloads are
        /// the message's bytes in order.
        #[test]
        fn a_text_message_is_fragmented_losslessly(len in 0usize..40_000, seed in 0u8..255) {
            let text: String = (0..len).map(|i| char::from(b'a' + ((i + seed as usize) % 26) as u8)).collect();
            let frames: Vec<_> = frames(Message::Text(Utf8Bytes::from(text.clone()))).collect();
            let mut joined = Vec::new();
            let n = frames.len();
            for (i, m) in frames.into_iter().enumerate() {
                let ts::Message::Frame(f) = m else { panic!("frames only") };
                proptest::prop_assert_eq!(f.header().opcode == OpCode::Data(Data::Text), i == 0);
                proptest::prop_assert_eq!(f.header().is_final, i + 1 == n);
                proptest::prop_assert!(f.payload().len() <= FRAGMENT_BYTES);
                joined.extend_from_slice(f.payload());
            }
            proptest::prop_assert_eq!(joined, text.into_bytes());
        }
    }

    #[test]
    fn control_and_binary_messages_are_not_fragmented() {
        assert_eq!(payloads(Message::Text(Utf8Bytes::from("{}"))), vec![(true, true, 2)]);
        let big = Bytes::from(vec![0u8; 3 * FRAGMENT_BYTES]);
        assert!(matches!(
            frames(Message::Binary(big)).collect::<Vec<_>>().as_slice(),
            [ts::Message::Binary(_)]
        ));
        assert!(matches!(
            frames(Message::Close(Some(CloseFrame {
                code: 4009,
                reason: Utf8Bytes::from("slow consumer")
            })))
            .collect::<Vec<_>>()
            .as_slice(),
            [ts::Message::Close(Some(c))] if u16::from(c.code) == 4009 && c.reason.as_str() == "slow consumer"
        ));
    }
}
