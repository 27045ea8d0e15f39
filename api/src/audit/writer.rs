//! The audit writer thread: takes entries off a bounded queue, numbers and chains
//! them, appends them as lines and flushes (and fsyncs, if configured) each batch.
//! On start it continues the chain from the file's last line, cutting a torn last line
//! (a crash mid-write) with a warning. A path that is not a regular file (a pipe or a
//! device such as `/dev/stdout`) starts a new chain: there is no tail to read. A failed
//! write (a full disk) is reported in the stats, so health and metrics say why.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::chain::{self, GENESIS};
use super::{AuditStats, Entry};

/// Most entries written per flush.
const BATCH: usize = 256;

pub struct Tail {
    pub seq: u64,
    pub hash: String,
}

/// Opens (or creates) the log and finds where the chain continues.
pub fn open(path: &Path) -> Result<(File, Tail), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Ok((
            file,
            Tail {
                seq: 0,
                hash: GENESIS.to_owned(),
            },
        ));
    }
    let len = meta.len();
    // The last complete line is within the last 64 KiB (entries are small).
    let start = len.saturating_sub(64 * 1024);
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_to_end(&mut tail))
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < tail.len() {
        let keep = start + complete as u64;
        tracing::warn!(path = %path.display(), cut_bytes = len - keep, "audit log: cutting a torn last line");
        file.set_len(keep)
            .map_err(|e| format!("truncating {}: {e}", path.display()))?;
    }
    let text = String::from_utf8_lossy(&tail[..complete]);
    let Some(last) = text.lines().next_back() else {
        return Ok((
            file,
            Tail {
                seq: 0,
                hash: GENESIS.to_owned(),
            },
        ));
    };
    let (body, hash) = chain::open(last).ok_or_else(|| format!("{}: the last line has no hash", path.display()))?;
    let seq = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .ok_or_else(|| format!("{}: the last line has no seq", path.display()))?;
    Ok((
        file,
        Tail {
            seq,
            hash: hash.to_owned(),
        },
    ))
}

pub fn run(mut file: File, mut tail: Tail, fsync: bool, mut rx: mpsc::Receiver<Entry>, stats: Arc<AuditStats>) {
    let mut buf = String::with_capacity(64 * 1024);
    while let Some(first) = rx.blocking_recv() {
        buf.clear();
        let mut next = Some(first);
        let mut n = 0u64;
        let mut seq = tail.seq;
        let mut hash = tail.hash.clone();
        while let Some(e) = next.take() {
            seq += 1;
            let body = e.body(seq, &hash);
            let (line, h) = chain::seal(&hash, &body);
            buf.push_str(&line);
            buf.push('\n');
            hash = h;
            n += 1;
            if n < BATCH as u64 {
                next = rx.try_recv().ok();
            }
        }
        let written = file.write_all(buf.as_bytes()).and_then(|_| file.flush()).and_then(|_| {
            if fsync {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                tail = Tail { seq, hash };
                stats.written.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                // Nothing more is acknowledged: actions that need the log are refused.
                *stats.error.lock() = Some(e.to_string());
                stats.failed.store(true, Ordering::Release);
                stats.lost.fetch_add(n, Ordering::Relaxed);
                tracing::error!(error = %e, "audit log: write failed; audited actions are refused (503 AUDIT_UNAVAILABLE) until the server is restarted with a writable log");
                return;
            }
        }
    }
}
