//! The snapshot thread: follows the journal's durable records into a shadow copy of
//! the order manager and the read model, and writes a snapshot every
//! `snapshot_every_records` records.
//!
//! It reads the segment files (the page cache, in practice) rather than being fed by
//! the journal thread, so snapshots never delay an acknowledgement and the engine
//! never waits for them. Replaying each step also re-checks, continuously, that the
//! journal reproduces the engine's events. A failed snapshot is logged and counted;
//! it costs replay time at the next start, never data.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::orders::store::OrderStore;
use crate::orders::OrderManager;

use super::error::JournalError;
use super::format::{decode_header, read_record, segment_name, FrameError, Hash, SEGMENT_HEADER};
use super::reader::Tail;
use super::recovery::{apply_record, Replayed};
use super::snapshot;
use super::stats::JournalStats;

pub struct Snapshotter {
    dir: PathBuf,
    manager: OrderManager,
    store: OrderStore,
    path: PathBuf,
    offset: u64,
    next_seq: u64,
    last_hash: Hash,
    buf: Vec<u8>,
    every: u64,
    keep: usize,
    last_snapshot: u64,
    stats: Arc<JournalStats>,
}

impl Snapshotter {
    /// Follows the journal from `tail` (where recovery ended) with copies of the
    /// recovered state.
    pub fn new(
        dir: &Path,
        tail: &Tail,
        manager: OrderManager,
        store: OrderStore,
        every: u64,
        keep: usize,
        stats: Arc<JournalStats>,
    ) -> Self {
        let (path, offset) = match &tail.segment {
            Some((p, valid)) if *valid >= SEGMENT_HEADER as u64 => (p.clone(), *valid),
            _ => (dir.join(segment_name(tail.next_seq)), SEGMENT_HEADER as u64),
        };
        Self {
            dir: dir.to_path_buf(),
            manager,
            store,
            path,
            offset,
            next_seq: tail.next_seq,
            last_hash: tail.last_hash,
            buf: Vec::new(),
            every: every.max(1),
            keep,
            last_snapshot: tail.next_seq.saturating_sub(1),
            stats,
        }
    }

    /// Applies the records up to `upto` (the durable head). Returns how many.
    pub fn catch_up(&mut self, upto: u64) -> Result<u64, JournalError> {
        let mut counts = Replayed::default();
        let mut n = 0;
        while self.next_seq <= upto {
            let read = self.read_segment(upto, &mut counts)?;
            n += read;
            if self.next_seq > upto {
                break;
            }
            // The rest is in the next segment, once it exists.
            let next = self.dir.join(segment_name(self.next_seq));
            if next == self.path {
                break;
            }
            let Ok(header) = std::fs::read(&next).map(|b| b.get(..SEGMENT_HEADER).map(<[u8]>::to_vec)) else {
                break;
            };
            let Some(header) = header else { break };
            let (first, prev) = decode_header(&next, &header)?;
            if first != self.next_seq || prev != self.last_hash {
                return Err(JournalError::corrupt(&next, 0, "segment does not continue the journal"));
            }
            self.path = next;
            self.offset = SEGMENT_HEADER as u64;
        }
        Ok(n)
    }

    /// Reads complete records from the current segment, from where it left off.
    fn read_segment(&mut self, upto: u64, counts: &mut Replayed) -> Result<u64, JournalError> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(JournalError::io(&self.path, e)),
        };
        self.buf.clear();
        f.seek(SeekFrom::Start(self.offset))
            .and_then(|_| f.read_to_end(&mut self.buf))
            .map_err(|e| JournalError::io(&self.path, e))?;
        let mut at = 0;
        let mut n = 0;
        while self.next_seq <= upto {
            let r = match read_record(self.buf.get(at..).unwrap_or(&[])) {
                Ok(r) => r,
                // Not written completely yet.
                Err(FrameError::Truncated) => break,
                Err(FrameError::Damaged(what)) => {
                    return Err(JournalError::corrupt(&self.path, self.offset + at as u64, what))
                }
            };
            if r.seq != self.next_seq || super::format::chain(&self.last_hash, r.seq, r.payload) != r.hash {
                return Err(JournalError::corrupt(
                    &self.path,
                    self.offset + at as u64,
                    "record out of sequence or off the hash chain",
                ));
            }
            apply_record(&mut self.manager, &mut self.store, r.seq, r.payload, counts)?;
            self.last_hash = r.hash;
            self.next_seq += 1;
            at += r.len;
            n += 1;
        }
        self.offset += at as u64;
        Ok(n)
    }

    /// Writes a snapshot when enough records have passed since the last one.
    pub fn snapshot_if_due(&mut self) -> Result<Option<PathBuf>, JournalError> {
        let at = self.next_seq.saturating_sub(1);
        if at < self.last_snapshot + self.every {
            return Ok(None);
        }
        let path = snapshot::write(&self.dir, at, &self.last_hash, &self.manager, &self.store, self.keep)?;
        self.last_snapshot = at;
        self.stats.snapshots.inc();
        self.stats.snapshot_record.set(at);
        Ok(Some(path))
    }

    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("journal-snapshot".into())
            .spawn(move || {
                let mut failed = false;
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(100));
                    if failed {
                        continue;
                    }
                    let step = self
                        .catch_up(self.stats.head.get())
                        .and_then(|_| self.snapshot_if_due());
                    match step {
                        Ok(Some(path)) => tracing::info!(snapshot = %path.display(), "journal snapshot written"),
                        Ok(None) => {}
                        Err(e) => {
                            // Following the journal is broken: stop taking snapshots (start-up
                            // replays more), say so loudly.
                            self.stats.snapshot_errors.inc();
                            tracing::error!(error = %e, "journal snapshots stopped");
                            failed = true;
                        }
                    }
                }
            })
    }
}
