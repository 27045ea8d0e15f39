//! A minimal WebSocket client over a raw socket, for what a library client will not
//! do: send frames of any size and shape, never read, or show the server's frames as
//! they are on the wire (opcodes, FIN bits, fragments).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to the stream (with a small receive buffer when given) and completes the
/// upgrade.
pub async fn connect(addr: SocketAddr, rcvbuf: Option<u32>) -> TcpStream {
    upgrade(addr, "/api/v1/stream", rcvbuf).await.0
}

/// Connects, sends an upgrade request for `path` with RFC 6455's example key, and
/// reads the 101 answer; returns the socket and the answer's head.
pub async fn upgrade(addr: SocketAddr, path: &str, rcvbuf: Option<u32>) -> (TcpStream, String) {
    let sock = TcpSocket::new_v4().expect("socket");
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    let mut s = sock.connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.expect("upgrade request");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.expect("upgrade response"),
            1,
            "closed during upgrade"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (s, head)
}

/// A masked client frame.
pub fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The next server frame (opcode, payload); None when the connection ends.
pub async fn read_frame<R: AsyncReadExt + Unpin>(s: &mut R) -> Option<(u8, Vec<u8>)> {
    read_frame_fin(s).await.map(|(op, _, p)| (op, p))
}

/// The next server frame (opcode, FIN bit, payload); None when the connection ends.
pub async fn read_frame_fin<R: AsyncReadExt + Unpin>(s: &mut R) -> Option<(u8, bool, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.ok()?;
    let mut n = u64::from(h[1] & 0x7F);
    if n == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await.ok()?;
        n = u64::from(u16::from_be_bytes(b));
    } else if n == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await.ok()?;
        n = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; n as usize];
    s.read_exact(&mut payload).await.ok()?;
    Some((h[0] & 0x0F, h[0] & 0x80 != 0, payload))
}

/// Reads frames until a close frame; its code, or None if the socket ended first.
pub async fn close_code<R: AsyncReadExt + Unpin>(s: &mut R) -> Option<u16> {
    loop {
        let (op, p) = read_frame(s).await?;
        if op == 8 {
            return p.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
}
