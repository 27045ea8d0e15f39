//! Following the journal's files as they grow: the snapshot thread and the store sinks
//! read records after they are written, without the journal thread knowing about them
//! (so they can never delay an acknowledgement).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::JournalError;
use super::format::{chain, decode_header, read_record, segment_name, FrameError, Hash, GENESIS, SEGMENT_HEADER};
use super::reader::{segments, Tail};

pub struct JournalTailer {
    dir: PathBuf,
    path: PathBuf,
    offset: u64,
    next_seq: u64,
    last_hash: Hash,
    /// Records up to this one are checked but not visited (a resumed position).
    skip_to: u64,
    skip_hash: Option<Hash>,
    buf: Vec<u8>,
}

impl JournalTailer {
    /// Continues from where recovery ended.
    pub fn at_tail(dir: &Path, tail: &Tail) -> Self {
        let (path, offset) = match &tail.segment {
            Some((p, valid)) if *valid >= SEGMENT_HEADER as u64 => (p.clone(), *valid),
            _ => (dir.join(segment_name(tail.next_seq)), SEGMENT_HEADER as u64),
        };
        Self {
            dir: dir.to_path_buf(),
            path,
            offset,
            next_seq: tail.next_seq,
            last_hash: tail.last_hash,
            skip_to: 0,
            skip_hash: None,
            buf: Vec::new(),
        }
    }

    /// Resumes after record `after.0`, whose hash must be `after.1` (checked when it
    /// is read); `None` starts at the first record the directory holds. A position
    /// before a journal's first kept record is [`JournalError::Trimmed`].
    pub fn after(dir: &Path, after: Option<(u64, Hash)>) -> Result<Self, JournalError> {
        let segs = segments(dir)?;
        let first_kept = segs.first().map_or(1, |s| s.first_seq);
        if let Some((seq, _)) = after.filter(|(seq, _)| seq.saturating_add(1) < first_kept) {
            return Err(JournalError::Trimmed {
                dir: dir.to_path_buf(),
                first_seq: first_kept,
                what: format!("A reader's saved position (record {seq}) is before it."),
            });
        }
        // From the start: the first kept segment (anchored at its header's hash).
        let want = after.map_or(first_kept, |(seq, _)| seq + 1);
        let seg = segs.iter().take_while(|s| s.first_seq <= want).last();
        let (path, first, prev) = match seg {
            Some(s) => {
                let mut header = vec![0; SEGMENT_HEADER];
                std::fs::File::open(&s.path)
                    .and_then(|mut f| f.read_exact(&mut header))
                    .map_err(|e| JournalError::io(&s.path, e))?;
                let (first, prev) = decode_header(&s.path, &header)?;
                (s.path.clone(), first, prev)
            }
            None => (dir.join(segment_name(1)), 1, GENESIS),
        };
        if let Some((seq, hash)) = after.filter(|(seq, _)| seq.saturating_add(1) == first) {
            // Record `seq` is not read: the segment's header vouches for its hash.
            if prev != hash {
                return Err(JournalError::SnapshotMismatch(format!(
                    "record {seq} is not the one this position was saved at"
                )));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            offset: SEGMENT_HEADER as u64,
            next_seq: first,
            last_hash: prev,
            skip_to: after.map_or(0, |a| a.0),
            skip_hash: after.map(|a| a.1),
            buf: Vec::new(),
        })
    }

    /// The last record read and its hash.
    pub fn position(&self) -> (u64, Hash) {
        (self.next_seq.saturating_sub(1), self.last_hash)
    }

    /// Reads the records up to `upto` that are complete on disk, calling
    /// `visit(seq, payload)` for each. Returns how many it visited.
    pub fn poll(
        &mut self,
        upto: u64,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), JournalError>,
    ) -> Result<u64, JournalError> {
        let mut n = 0;
        while self.next_seq <= upto {
            let before = self.next_seq;
            n += self.read_segment(upto, &mut visit)?;
            if self.next_seq > upto {
                break;
            }
            // The rest is in the next segment, once it exists.
            let next = self.dir.join(segment_name(self.next_seq));
            if next == self.path {
                break;
            }
            let mut header = vec![0; SEGMENT_HEADER];
            let read = std::fs::File::open(&next).and_then(|mut f| f.read_exact(&mut header));
            if read.is_err() {
                if self.next_seq == before {
                    break;
                }
                continue;
            }
            let (first, prev) = decode_header(&next, &header)?;
            if first != self.next_seq || prev != self.last_hash {
                return Err(JournalError::corrupt(&next, 0, "segment does not continue the journal"));
            }
            self.path = next;
            self.offset = SEGMENT_HEADER as u64;
        }
        Ok(n)
    }

    fn read_segment(
        &mut self,
        upto: u64,
        visit: &mut impl FnMut(u64, &[u8]) -> Result<(), JournalError>,
    ) -> Result<u64, JournalError> {
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
                // Not completely written yet.
                Err(FrameError::Truncated) => break,
                Err(FrameError::Damaged(what)) => {
                    return Err(JournalError::corrupt(&self.path, self.offset + at as u64, what))
                }
            };
            if r.seq != self.next_seq || chain(&self.last_hash, r.seq, r.payload) != r.hash {
                return Err(JournalError::corrupt(
                    &self.path,
                    self.offset + at as u64,
                    "record out of sequence or off the hash chain",
                ));
            }
            if r.seq == self.skip_to && self.skip_hash.is_some_and(|h| h != r.hash) {
                return Err(JournalError::SnapshotMismatch(format!(
                    "record {} is not the one this position was saved at",
                    r.seq
                )));
            }
            if r.seq > self.skip_to {
                visit(r.seq, r.payload)?;
                n += 1;
            }
            self.last_hash = r.hash;
            self.next_seq += 1;
            at += r.len;
        }
        self.offset += at as u64;
        Ok(n)
    }
}
