//! Capture files: the raw frames a feed received, with receive times, one per line.
//!
//! Format (one frame per line, `\n`-terminated):
//! - `<recv_ts_ns> t <text frame verbatim>` for a text frame;
//! - `<recv_ts_ns> b <base64 of the frame>` for a binary frame;
//! - `<recv_ts_ns> T <base64 of the frame>` for a text frame that itself contains a
//!   line break (it cannot be written verbatim on one line).
//!
//! Recording copies each frame to a writer thread over a bounded channel, so the feed
//! thread never waits on the disk; if the writer falls behind, frames are dropped from
//! the capture (counted), never from the feed. Reading is strict: a malformed line is
//! an error naming its line number.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use stocksblitz_engine::agent::{spawn_thread, ThreadHandle};
use stocksblitz_engine::UnixNanos;

/// One recorded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub recv_ts: UnixNanos,
    pub frame: Frame,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

/// Formats one record as a capture line (with the trailing newline).
pub fn format_line(recv_ts: UnixNanos, frame: &Frame) -> String {
    match frame {
        Frame::Text(t) if !t.contains(['\n', '\r']) => format!("{} t {t}\n", recv_ts.0),
        Frame::Text(t) => format!("{} T {}\n", recv_ts.0, STANDARD.encode(t)),
        Frame::Binary(b) => format!("{} b {}\n", recv_ts.0, STANDARD.encode(b)),
    }
}

/// Parses one capture line (without its newline).
pub fn parse_line(line: &str) -> Result<Record, String> {
    let (ts, rest) = line
        .split_once(' ')
        .ok_or("expected \"<recv_ts_ns> <t|b|T> <frame>\"")?;
    let recv_ts = ts
        .parse::<i64>()
        .map_err(|_| format!("bad receive time {ts:?}: expected integer nanoseconds"))?;
    let (kind, body) = match rest.split_once(' ') {
        Some(parts) => parts,
        None => (rest, ""),
    };
    let frame = match kind {
        "t" => Frame::Text(body.to_owned()),
        "b" => Frame::Binary(STANDARD.decode(body).map_err(|e| format!("bad base64: {e}"))?),
        "T" => {
            let bytes = STANDARD.decode(body).map_err(|e| format!("bad base64: {e}"))?;
            Frame::Text(String::from_utf8(bytes).map_err(|_| "text frame is not UTF-8".to_owned())?)
        }
        other => return Err(format!("unknown frame kind {other:?}: expected t, b or T")),
    };
    Ok(Record {
        recv_ts: UnixNanos(recv_ts),
        frame,
    })
}

/// The text frames of a capture's contents, in order (tests and tools that embed a
/// capture); lines that do not parse are skipped.
pub fn text_frames(capture: &str) -> Vec<Vec<u8>> {
    capture
        .lines()
        .filter_map(|l| match parse_line(l).ok()?.frame {
            Frame::Text(t) => Some(t.into_bytes()),
            Frame::Binary(_) => None,
        })
        .collect()
}

/// Reads a whole capture file.
pub fn read(path: &Path) -> Result<Vec<Record>, CaptureError> {
    let io = |source| CaptureError::Io {
        path: path.to_owned(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            continue;
        }
        out.push(parse_line(line).map_err(|message| CaptureError::Line { line: i + 1, message })?);
    }
    Ok(out)
}

/// Records frames on a background thread.
pub struct Recorder {
    tx: Option<SyncSender<(UnixNanos, Frame)>>,
    pub dropped: Arc<AtomicU64>,
    join: Option<ThreadHandle<std::io::Result<()>>>,
}

impl Recorder {
    /// Creates (truncates) `path`; `queue` frames may wait for the writer.
    pub fn create(path: &Path, queue: usize) -> Result<Self, CaptureError> {
        let file = File::create(path).map_err(|source| CaptureError::Io {
            path: path.to_owned(),
            source,
        })?;
        let (tx, rx) = sync_channel::<(UnixNanos, Frame)>(queue.max(1));
        let join = spawn_thread("capture-writer", None, move || {
            let mut w = BufWriter::with_capacity(1 << 16, file);
            for (ts, frame) in rx {
                w.write_all(format_line(ts, &frame).as_bytes())?;
            }
            w.flush()
        })
        .map_err(|e| CaptureError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        Ok(Self {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            join: Some(join),
        })
    }

    /// Queues a frame; never blocks.
    pub fn record(&self, recv_ts: UnixNanos, frame: Frame) {
        if let Some(tx) = &self.tx {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send((recv_ts, frame)) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Flushes and closes the file.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.tx.take();
        match self.join.take().map(ThreadHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(std::io::Error::other(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(j) = self.join.take() {
            j.join_logged();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_through_a_file() {
        let dir = std::env::temp_dir().join(format!("sb-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.cap");
        let rec = Recorder::create(&path, 16).unwrap();
        let frames = vec![
            (UnixNanos(1), Frame::Text(r#"{"e":"trade"}"#.into())),
            (UnixNanos(2), Frame::Binary(vec![0, 1, 0, 8, 255])),
            (UnixNanos(3), Frame::Text("{\n\"a\":1}".into())),
            (UnixNanos(4), Frame::Text(String::new())),
        ];
        for (ts, f) in &frames {
            rec.record(*ts, f.clone());
        }
        rec.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("1 t {\"e\":\"trade\"}\n2 b AAEACP8=\n3 T "), "{text}");
        let back: Vec<_> = read(&path).unwrap().into_iter().map(|r| (r.recv_ts, r.frame)).collect();
        assert_eq!(back, frames);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for (bad, want) in [
            ("x t {}", "bad receive time"),
            ("1", "expected"),
            ("1 q {}", "unknown frame kind"),
            ("1 b !!!", "bad base64"),
            ("1 T //8=", "not UTF-8"),
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let dir = std::env::temp_dir().join(format!("sb-capture-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.cap");
        std::fs::write(&path, "1 t {}\n\n2 z x\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.starts_with("line 3:"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    proptest! {
        #[test]
        fn any_frame_round_trips(ts in any::<i64>(), text in "\\PC*", bin in proptest::collection::vec(any::<u8>(), 0..64)) {
            for f in [Frame::Text(text.clone()), Frame::Binary(bin.clone())] {
                let line = format_line(UnixNanos(ts), &f);
                let line = line.strip_suffix('\n').unwrap();
                prop_assert!(!line.contains('\n'));
                prop_assert_eq!(parse_line(line), Ok(Record { recv_ts: UnixNanos(ts), frame: f }));
            }
        }

        #[test]
        fn arbitrary_lines_never_panic(s in "\\PC{0,60}") {
            let _ = parse_line(&s);
        }
    }
}
