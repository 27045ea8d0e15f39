//! The load client's WebSocket connection: the handshake, and frames read in place.
//!
//! The fan-out bench's client runs on the same 2 cores as the server it measures, so
//! its cost per message is taken from the server (and a client that cannot read what
//! it is sent makes the server's latency look like seconds: the data waits in the
//! client's kernel buffers). A general WebSocket library hands over each message as
//! an owned buffer through a stream that is polled once per message; a client that
//! only counts can read whatever the socket holds in one system call (up to
//! [`READ_CHUNK`]) and walk the frames in that buffer, each text message a borrowed
//! slice. That is what this does: client side of RFC 6455 only (masked frames out,
//! unmasked in), fragmented messages reassembled, no extensions. The handshake
//! checks the `101` status, not `Sec-WebSocket-Accept`: the bench knows its servers.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes asked of the socket per read (a buffer per connection).
pub const READ_CHUNK: usize = 64 * 1024;
/// Largest message accepted.
pub const MAX_MESSAGE: usize = 16 << 20;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One thing the server sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole text message (not yet checked as UTF-8).
    Text(&'a [u8]),
    Binary,
    Ping(&'a [u8]),
    Pong,
    /// A close frame and its code, if it had one.
    Close(Option<u16>),
}

/// The server broke the protocol (or sent a message over [`MAX_MESSAGE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

/// Bytes read from the socket and not yet consumed, and a fragmented message being
/// put together.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the next frame needs in the buffer (to grow it for a large frame).
    need: usize,
    frag: Vec<u8>,
    /// The opcode of the fragmented message in progress.
    frag_op: Option<u8>,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::with_capacity(READ_CHUNK)
    }
}

impl FrameReader {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: vec![0; n.max(16)],
            start: 0,
            end: 0,
            need: 0,
            frag: Vec::new(),
            frag_op: None,
        }
    }

    /// Where the next read goes: room after the unconsumed bytes (moved to the front
    /// first, and the buffer grown when a frame needs more than it holds).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let room = self.buf.len() - self.end;
        if self.start > 0 && (room < self.buf.len() / 4 || self.start + self.need > self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.need > self.buf.len() || self.end == self.buf.len() {
            let n = self.need.max(self.buf.len() * 2);
            self.buf.resize(n, 0);
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`FrameReader::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes read and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Consumes `n` bytes of [`FrameReader::pending`] (the handshake's response head).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// The next whole message or control frame in the buffer; `None` until more is
    /// read.
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, ProtocolError> {
        loop {
            let avail = &self.buf[self.start..self.end];
            let [b0, b1, ..] = *avail else {
                return Ok(None);
            };
            let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
            if b0 & 0x70 != 0 {
                return Err(ProtocolError("reserved bits set"));
            }
            if b1 & 0x80 != 0 {
                return Err(ProtocolError("a server frame is masked"));
            }
            let (head, len) = match b1 & 0x7f {
                126 => match avail.get(2..4) {
                    Some(l) => (4, u64::from(u16::from_be_bytes([l[0], l[1]]))),
                    None => return Ok(None),
                },
                127 => match avail.get(2..10).and_then(|l| <[u8; 8]>::try_from(l).ok()) {
                    Some(l) => (10, u64::from_be_bytes(l)),
                    None => return Ok(None),
                },
                n => (2, u64::from(n)),
            };
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_MESSAGE)
                .ok_or(ProtocolError("frame too large"))?;
            if avail.len() < head + len {
                self.need = head + len;
                return Ok(None);
            }
            self.need = 0;
            let payload = self.start + head..self.start + head + len;
            self.start += head + len;
            if opcode >= OP_CLOSE && (!fin || len > 125) {
                return Err(ProtocolError("bad control frame"));
            }
            match opcode {
                OP_TEXT | OP_BINARY if self.frag_op.is_some() => {
                    return Err(ProtocolError("a new message inside a fragmented one"));
                }
                OP_TEXT | OP_BINARY if !fin => {
                    self.frag_op = Some(opcode);
                    self.frag.clear();
                    self.frag.extend_from_slice(&self.buf[payload]);
                }
                OP_TEXT => return Ok(Some(Event::Text(&self.buf[payload]))),
                OP_BINARY => return Ok(Some(Event::Binary)),
                OP_CONTINUATION => {
                    let Some(op) = self.frag_op else {
                        return Err(ProtocolError("a continuation with no message"));
                    };
                    if self.frag.len() + len > MAX_MESSAGE {
                        return Err(ProtocolError("message too large"));
                    }
                    self.frag.extend_from_slice(&self.buf[payload]);
                    if fin {
                        self.frag_op = None;
                        return Ok(Some(if op == OP_TEXT {
                            Event::Text(&self.frag)
                        } else {
                            Event::Binary
                        }));
                    }
                }
                OP_CLOSE => {
                    let code = self.buf.get(payload.start..payload.start + 2);
                    let code = code.filter(|_| len >= 2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    return Ok(Some(Event::Close(code)));
                }
                OP_PING => return Ok(Some(Event::Ping(&self.buf[payload]))),
                OP_PONG => return Ok(Some(Event::Pong)),
                _ => return Err(ProtocolError("unknown opcode")),
            }
        }
    }
}

/// The masking key of the client's frames (RFC 6455 wants them unpredictable against
/// proxies' caches; on loopback to a known server a constant does).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x8e];

/// Appends one masked client frame.
pub fn client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
}

fn bad(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Connects to `url` (`ws://host:port/path`) and completes the upgrade; what the server
/// sent after its response head stays in the reader.
pub async fn connect(url: &str) -> io::Result<(TcpStream, FrameReader)> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| bad("only ws:// URLs"))?;
    let (host, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let mut stream = TcpStream::connect(host).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reader = FrameReader::default();
    let head_end = loop {
        if let Some(p) = reader.pending().windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if reader.pending().len() > 16 * 1024 {
            return Err(bad("response head too long"));
        }
        let n = stream.read(reader.spare()).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        reader.filled(n);
    };
    let status = reader.pending().split(|b| *b == b' ').nth(1).unwrap_or_default();
    if status != b"101" {
        return Err(bad("the upgrade was refused"));
    }
    reader.consume(head_end);
    Ok((stream, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A server frame (unmasked) with the shortest length encoding, or a longer one.
    fn server_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], long: bool) {
        out.push(if fin { 0x80 } else { 0 } | opcode);
        let n = payload.len();
        if n < 126 && !long {
            out.push(n as u8);
        } else if n <= 0xffff && !(long && n < 126) {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
    }

    #[derive(Debug, Clone)]
    enum Msg {
        Text(String, usize),
        Ping(Vec<u8>),
        Close(Option<u16>),
    }

    fn msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            6 => ("[a-z{}\":,0-9é]{0,300}", 1usize..4).prop_map(|(s, parts)| Msg::Text(s, parts)),
            1 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Msg::Ping),
            1 => proptest::option::of(1000u16..5000).prop_map(Msg::Close),
        ]
    }

    /// Encodes the messages (texts fragmented into `parts` frames, pings between
    /// fragments), and what the reader must return.
    fn encode(msgs: &[Msg], long: bool) -> (Vec<u8>, Vec<Msg>) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for m in msgs {
            match m {
                Msg::Text(s, parts) => {
                    let b = s.as_bytes();
                    let size = b.len().div_ceil(*parts).max(1);
                    let chunks: Vec<&[u8]> = if b.is_empty() {
                        vec![b]
                    } else {
                        b.chunks(size).collect()
                    };
                    for (i, c) in chunks.iter().enumerate() {
                        let op = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
                        server_frame(&mut wire, i + 1 == chunks.len(), op, c, long);
                        if i == 0 && chunks.len() > 1 {
                            // A control frame may come between a message's fragments.
                            server_frame(&mut wire, true, OP_PING, b"mid", long);
                            want.push(Msg::Ping(b"mid".to_vec()));
                        }
                    }
                    want.push(m.clone());
                }
                Msg::Ping(p) => {
                    server_frame(&mut wire, true, OP_PING, p, long);
                    want.push(m.clone());
                }
                Msg::Close(code) => {
                    let p = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                    server_frame(&mut wire, true, OP_CLOSE, &p, long);
                    want.push(m.clone());
                }
            }
        }
        (wire, want)
    }

    fn own(e: Event<'_>) -> Msg {
        match e {
            Event::Text(t) => Msg::Text(String::from_utf8(t.to_vec()).unwrap(), 0),
            Event::Ping(p) => Msg::Ping(p.to_vec()),
            Event::Close(c) => Msg::Close(c),
            e => panic!("unexpected {e:?}"),
        }
    }

    fn same(a: &[Msg], b: &[Msg]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (Msg::Text(s, _), Msg::Text(t, _)) => s == t,
                (Msg::Ping(p), Msg::Ping(q)) => p == q,
                (Msg::Close(c), Msg::Close(d)) => c == d,
                _ => false,
            })
    }

    proptest! {
        /// Whatever the reads' sizes (a small buffer that must grow, frames split
        /// anywhere), every message and control frame comes out whole and in order.
        #[test]
        fn frames_come_out_whole_however_the_bytes_arrive(
            msgs in proptest::collection::vec(msg(), 0..20),
            reads in proptest::collection::vec(1usize..700, 1..50),
            long: bool,
        ) {
            let (wire, want) = encode(&msgs, long);
            let mut r = FrameReader::with_capacity(64);
            let mut got = Vec::new();
            let mut at = 0;
            let mut k = 0;
            while at < wire.len() {
                let spare = r.spare();
                let n = reads[k % reads.len()].min(spare.len()).min(wire.len() - at);
                spare[..n].copy_from_slice(&wire[at..at + n]);
                r.filled(n);
                at += n;
                k += 1;
                while let Some(e) = r.next_event().unwrap() {
                    got.push(own(e));
                }
            }
            prop_assert!(same(&got, &want), "{got:?} != {want:?}");
            prop_assert!(r.pending().is_empty());
        }
    }

    #[test]
    fn protocol_errors_are_refused() {
        let cases: [&[u8]; 5] = [
            &[0x81 | 0x40, 0],         // reserved bit
            &[0x81, 0x80, 0, 0, 0, 0], // masked
            &[0x80, 0],                // continuation with nothing before
            &[0x09, 0],                // fragmented ping
            &[0x83, 0],                // unknown opcode
        ];
        for c in cases {
            let mut r = FrameReader::with_capacity(64);
            r.spare()[..c.len()].copy_from_slice(c);
            r.filled(c.len());
            assert!(r.next_event().is_err(), "{c:?}");
        }
        let mut r = FrameReader::with_capacity(64);
        let huge = [0x81u8, 127, 0xff, 0, 0, 0, 0, 0, 0, 0];
        r.spare()[..10].copy_from_slice(&huge);
        r.filled(10);
        assert_eq!(r.next_event(), Err(ProtocolError("frame too large")));
    }

    #[test]
    fn client_frames_are_masked_and_sized() {
        for n in [0usize, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut out = Vec::new();
            client_frame(&mut out, OP_TEXT, &payload);
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0, "masked");
            let (head, len) = match out[1] & 0x7f {
                126 => (4, u16::from_be_bytes([out[2], out[3]]) as usize),
                127 => (10, u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize),
                l => (2, l as usize),
            };
            assert_eq!(len, n);
            let mask = &out[head..head + 4];
            let unmasked: Vec<u8> = out[head + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmasked, payload);
        }
    }
}
