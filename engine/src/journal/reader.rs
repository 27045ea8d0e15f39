//! Reading a journal directory back: segments in order, every record's checksum, the
//! hash chain within and across segments, and the torn-tail rule.
//!
//! A crash can leave the last record of the last segment half-written. Such a tail
//! (exactly what [`super::format`]'s torn-tail rule allows: the file ends inside the
//! record) is reported as torn; recovery truncates it with a warning, since no one was
//! told about it. Anything else that does not check out (a damaged record with more
//! bytes after it, zeros where records were acknowledged, a damaged earlier segment,
//! a broken chain, a missing segment) is corruption and stops start-up with the
//! segment and byte offset.

use std::path::{Path, PathBuf};

use super::error::JournalError;
use super::format::{
    decode_header, encode_header, is_torn_tail, read_record, FrameError, Hash, TailContext, COMMIT_END, GENESIS,
    SEGMENT_HEADER, SEGMENT_SUFFIX,
};

/// A segment file and the first record number it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    pub first_seq: u64,
}

/// A torn record at the end of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Where the valid part ends.
    pub offset: u64,
    /// Bytes past it.
    pub bytes: u64,
}

/// Where the journal ends: what a writer continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The last segment and the length of its valid part (none: empty journal).
    pub segment: Option<(PathBuf, u64)>,
    pub next_seq: u64,
    pub last_hash: Hash,
    pub records: u64,
    pub torn: Option<TornTail>,
}

/// A directory's entries; a missing directory has none.
pub(crate) fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, JournalError> {
    match std::fs::read_dir(dir) {
        Ok(it) => it.map(|e| e.map_err(|e| JournalError::io(dir, e))).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(JournalError::io(dir, e)),
    }
}

/// The directory's segments in record order. A missing directory is an empty journal.
pub fn segments(dir: &Path) -> Result<Vec<Segment>, JournalError> {
    let mut out = Vec::new();
    for entry in entries(dir)? {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        let first_seq = stem
            .parse::<u64>()
            .map_err(|_| JournalError::corrupt(entry.path(), 0, "segment file name is not a record number"))?;
        out.push(Segment {
            path: entry.path(),
            first_seq,
        });
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Reads every record the directory holds in order, calling `visit(seq, payload)` for
/// each, and returns where the journal ends. Does not modify anything. A journal whose
/// older segments retention removed is read from its first kept segment, the chain
/// anchored at the hash that segment's header continues from.
pub fn scan(dir: &Path, visit: impl FnMut(u64, &[u8]) -> Result<(), JournalError>) -> Result<Tail, JournalError> {
    scan_impl(dir, None, true, visit)
}

/// Like [`scan`], but when `after` is `(seq, hash)` (a snapshot's position), segments
/// wholly before it are not read, records up to `seq` are checked but not visited, and
/// record `seq` must have `hash`; otherwise [`JournalError::SnapshotMismatch`]. With
/// `after` `None` every record from 1 is needed (a full replay): a journal that starts
/// later is [`JournalError::Trimmed`].
pub fn scan_from(
    dir: &Path,
    after: Option<(u64, Hash)>,
    visit: impl FnMut(u64, &[u8]) -> Result<(), JournalError>,
) -> Result<Tail, JournalError> {
    scan_impl(dir, after, false, visit)
}

fn scan_impl(
    dir: &Path,
    after: Option<(u64, Hash)>,
    trimmed_ok: bool,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), JournalError>,
) -> Result<Tail, JournalError> {
    let mut segs = segments(dir)?;
    if let Some((seq, _)) = after {
        // The first segment that holds record seq + 1 (or the last one before it).
        let skip = segs
            .iter()
            .take_while(|s| s.first_seq <= seq + 1)
            .count()
            .saturating_sub(1);
        segs.drain(..skip);
    }
    let mut tail = Tail {
        segment: None,
        next_seq: 1,
        last_hash: GENESIS,
        records: 0,
        torn: None,
    };
    // Flags of the last intact record (for the torn-tail rule).
    let mut last_flags = None;
    for (i, seg) in segs.iter().enumerate() {
        let last_segment = i + 1 == segs.len();
        let buf = std::fs::read(&seg.path).map_err(|e| JournalError::io(&seg.path, e))?;
        // What this segment's header must say, when that is known before reading it.
        let expected = match (i, after) {
            (0, Some((seq, hash))) if seg.first_seq == seq + 1 => Some((seq + 1, hash)),
            // The journal's very first segment (a crash while creating it).
            (0, None) if seg.first_seq == 1 => Some((1, GENESIS)),
            (0, _) => None,
            _ => Some((tail.next_seq, tail.last_hash)),
        };
        let (first, prev) = match decode_header(&seg.path, &buf) {
            Ok(h) => h,
            // A crash while creating the newest segment can leave its header short: it
            // is then exactly the start of the header it must have.
            Err(_)
                if last_segment
                    && buf.len() < SEGMENT_HEADER
                    && expected.is_some_and(|(n, h)| buf[..] == encode_header(n, &h)[..buf.len()]) =>
            {
                if let Some((n, h)) = expected {
                    (tail.next_seq, tail.last_hash) = (n, h);
                }
                tail.torn = Some(TornTail {
                    path: seg.path.clone(),
                    offset: 0,
                    bytes: buf.len() as u64,
                });
                tail.segment = Some((seg.path.clone(), 0));
                break;
            }
            Err(e) => return Err(e),
        };
        if let (0, None) = (i, after) {
            if seg.first_seq > 1 && first == seg.first_seq {
                if !trimmed_ok {
                    return Err(JournalError::Trimmed {
                        dir: dir.to_path_buf(),
                        first_seq: first,
                        what: "A full replay needs every record from 1.".into(),
                    });
                }
                // Anchored at the hash the first kept segment continues from.
                (tail.next_seq, tail.last_hash) = (first, prev);
            }
        }
        if let (0, Some((seq, hash))) = (i, after) {
            // The snapshot's check starts from this segment's header.
            if first > seq + 1 || (first == seq + 1 && prev != hash) {
                return Err(JournalError::SnapshotMismatch(format!(
                    "the journal's segment {} does not continue from the snapshot at record {seq}",
                    seg.path.display()
                )));
            }
            (tail.next_seq, tail.last_hash) = (first, prev);
        }
        if first != seg.first_seq || first != tail.next_seq || prev != tail.last_hash {
            return Err(JournalError::corrupt(
                &seg.path,
                0,
                format!(
                    "segment starts at record {first} after hash {}, but the journal so far ends before record {} \
                     (a segment is missing, renamed or from another journal)",
                    super::format::hex(&prev),
                    tail.next_seq
                ),
            ));
        }
        let mut at = SEGMENT_HEADER;
        // A segment starts at a commit boundary (rotation happens after a commit).
        let mut after_commit = true;
        while at < buf.len() {
            let rest = &buf[at..];
            match read_record(rest) {
                Ok(r) if r.seq == tail.next_seq => {
                    if super::format::chain(&tail.last_hash, r.seq, r.payload) != r.hash {
                        return Err(JournalError::corrupt(
                            &seg.path,
                            at as u64,
                            format!("hash chain broken at record {} (the record was altered)", r.seq),
                        ));
                    }
                    match after {
                        Some((seq, hash)) if r.seq == seq && r.hash != hash => {
                            return Err(JournalError::SnapshotMismatch(format!(
                                "record {seq} of the journal is not the one the snapshot was taken at"
                            )))
                        }
                        Some((seq, _)) if r.seq <= seq => {}
                        _ => visit(r.seq, r.payload)?,
                    }
                    tail.last_hash = r.hash;
                    tail.next_seq += 1;
                    tail.records += 1;
                    last_flags = Some(r.flags);
                    after_commit = r.flags & COMMIT_END != 0;
                    at += r.len;
                }
                Ok(r) => {
                    return Err(JournalError::corrupt(
                        &seg.path,
                        at as u64,
                        format!("record number {} where {} was expected", r.seq, tail.next_seq),
                    ));
                }
                Err(err) => {
                    let cx = TailContext {
                        offset: at as u64,
                        next_seq: tail.next_seq,
                        last_flags,
                        after_commit,
                    };
                    if last_segment && is_torn_tail(rest, &cx) {
                        tail.torn = Some(TornTail {
                            path: seg.path.clone(),
                            offset: at as u64,
                            bytes: rest.len() as u64,
                        });
                        break;
                    }
                    let what = match err {
                        FrameError::Truncated if last_segment => {
                            "the bytes here are not the start of the next record (damaged, or zeros where \
                             acknowledged records were)"
                        }
                        FrameError::Truncated => "record is truncated in a segment that is not the last",
                        FrameError::Damaged(w) => w,
                    };
                    let more = rest.len();
                    return Err(JournalError::corrupt(
                        &seg.path,
                        at as u64,
                        format!(
                            "{what} (record {} would start here; {more} bytes follow)",
                            tail.next_seq
                        ),
                    ));
                }
            }
        }
        tail.segment = Some((seg.path.clone(), at.min(buf.len()) as u64));
    }
    if let Some((seq, hash)) = after {
        let reached = tail.next_seq > seq || (tail.next_seq == seq + 1 && tail.last_hash == hash);
        if !reached {
            return Err(JournalError::SnapshotMismatch(format!(
                "the snapshot is at record {seq} but the journal ends before it"
            )));
        }
        if tail.next_seq == seq + 1 && tail.last_hash != hash {
            return Err(JournalError::SnapshotMismatch(format!(
                "record {seq} of the journal is not the one the snapshot was taken at"
            )));
        }
    }
    Ok(tail)
}
