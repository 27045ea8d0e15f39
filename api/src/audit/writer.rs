//! The audit writer thread: takes entries off a bounded queue, numbers and chains
//! them, appends them as lines and flushes (and fsyncs, if configured) each batch.
//! On start it continues the chain from the file's last line, cutting a torn last line
//! (a crash mid-write) with a warning. A path that is not a regular file (a pipe or a
//! device such as `/dev/stdout`) starts a new chain: there is no tail to read. A failed
//! write (a full disk) is reported in the stats, so health and metrics say why, and
//! retried until it succeeds (a partly written batch is cut off first).

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

/// Where the lines go: the log file, or in tests a writer that fails on demand.
pub trait Sink: Write {
    /// Makes written lines durable (fsync).
    fn sync(&mut self) -> std::io::Result<()>;
    /// The length to cut back to after a failed write (None: not a regular file).
    fn len(&self) -> Option<u64>;
    /// Cuts a partly written batch off.
    fn cut(&mut self, len: u64) -> std::io::Result<()>;
}

impl Sink for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }

    fn len(&self) -> Option<u64> {
        self.metadata().ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    fn cut(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
}

fn write_batch<S: Sink>(file: &mut S, buf: &str, fsync: bool) -> std::io::Result<()> {
    file.write_all(buf.as_bytes())?;
    file.flush()?;
    if fsync {
        file.sync()?;
    }
    Ok(())
}

/// Writes batches until every sender is gone. A failed write (a full disk) marks the
/// log failed (audited actions are refused, health and metrics say why) and is retried
/// every `retry` with the same lines, a partly written batch cut off first; when it
/// succeeds the log is healthy again and nothing was lost.
pub fn run<S: Sink>(
    mut file: S,
    mut tail: Tail,
    fsync: bool,
    mut rx: mpsc::Receiver<Entry>,
    stats: Arc<AuditStats>,
    retry: std::time::Duration,
) {
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
        let good_len = file.len();
        let mut failures = 0u64;
        loop {
            match write_batch(&mut file, &buf, fsync) {
                Ok(()) => break,
                Err(e) => {
                    if failures == 0 {
                        tracing::error!(error = %e, "audit log: write failed; audited actions are refused (503 AUDIT_UNAVAILABLE) until it can be written (retrying)");
                    }
                    failures += 1;
                    *stats.error.lock() = Some(e.to_string());
                    stats.failed.store(true, Ordering::Release);
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    if rx.is_closed() {
                        // Shutting down: nobody will be answered any more.
                        stats.lost.fetch_add(n, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(retry);
                    if let Some(len) = good_len {
                        // A torn batch would break the chain: cut it, write it again.
                        let _ = file.cut(len);
                    }
                }
            }
        }
        if failures > 0 {
            tracing::warn!(failures, "audit log: writable again; audited actions are accepted");
            *stats.error.lock() = None;
            stats.failed.store(false, Ordering::Release);
        }
        tail = Tail { seq, hash };
        stats.written.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// A "disk" that, while full, takes `room` more bytes of a write and then fails
    /// with ENOSPC.
    struct Disk {
        data: Arc<parking_lot::Mutex<Vec<u8>>>,
        full: Arc<AtomicBool>,
        room: usize,
        writes_failed: Arc<AtomicUsize>,
    }

    impl Write for Disk {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.full.load(Ordering::Acquire) {
                if self.room == 0 {
                    self.writes_failed.fetch_add(1, Ordering::Relaxed);
                    return Err(std::io::Error::from_raw_os_error(28));
                }
                let n = b.len().min(self.room);
                self.room -= n;
                self.data.lock().extend_from_slice(&b[..n]);
                return Ok(n);
            }
            self.data.lock().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Disk {
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        fn len(&self) -> Option<u64> {
            Some(self.data.lock().len() as u64)
        }

        fn cut(&mut self, len: u64) -> std::io::Result<()> {
            self.data.lock().truncate(len as usize);
            Ok(())
        }
    }

    fn entry(i: u64) -> Entry {
        Entry {
            action: "order.place",
            actor: super::super::Actor {
                kind: "account",
                name: Some(format!("acc{i}")),
            },
            request_id: format!("req-{i}"),
            outcome: "ok".into(),
            status: 201,
            details: serde_json::json!({}),
            at_ns: 1_700_000_000_000_000_000 + i as i64,
        }
    }

    /// The disk fills at every position of a batch (a torn line anywhere): the log
    /// turns failed with the error, recovers when space returns, and the file holds
    /// every entry once with an unbroken chain.
    #[test]
    fn a_full_disk_at_any_byte_then_space_again_loses_nothing() {
        let line_len = {
            let body = entry(1).body(1, GENESIS);
            chain::seal(GENESIS, &body).0.len() + 1
        };
        for room in (0..3 * line_len).step_by(7) {
            let data = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let full = Arc::new(AtomicBool::new(false));
            let writes_failed = Arc::new(AtomicUsize::new(0));
            let disk = Disk {
                data: Arc::clone(&data),
                full: Arc::clone(&full),
                room,
                writes_failed: Arc::clone(&writes_failed),
            };
            let stats = Arc::new(AuditStats::default());
            let (tx, rx) = mpsc::channel(64);
            let s = Arc::clone(&stats);
            let tail = Tail {
                seq: 0,
                hash: GENESIS.to_owned(),
            };
            let t = std::thread::spawn(move || run(disk, tail, true, rx, s, std::time::Duration::from_millis(5)));
            tx.blocking_send(entry(1)).unwrap();
            while stats.written.load(Ordering::Acquire) < 1 {
                std::thread::yield_now();
            }
            full.store(true, Ordering::Release);
            for i in 2..=4 {
                tx.blocking_send(entry(i)).unwrap();
            }
            while !stats.failed.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            assert!(
                stats.error().unwrap_or_default().contains("No space left"),
                "room {room}"
            );
            full.store(false, Ordering::Release);
            for i in 5..=6 {
                tx.blocking_send(entry(i)).unwrap();
            }
            drop(tx);
            t.join().unwrap();
            assert!(!stats.failed.load(Ordering::Acquire), "room {room}: recovered");
            assert_eq!(stats.written.load(Ordering::Acquire), 6, "room {room}");
            assert_eq!(stats.lost.load(Ordering::Acquire), 0);
            let path = std::env::temp_dir().join(format!("sbz-audit-disk-{}-{room}", std::process::id()));
            std::fs::write(&path, &*data.lock()).unwrap();
            let v = chain::verify(&path).unwrap_or_else(|e| panic!("room {room}: {e}"));
            let _ = std::fs::remove_file(&path);
            assert_eq!((v.entries, v.last_seq), (6, 6), "room {room}");
        }
    }
}
