//! The journal's on-disk format: segment files of framed, checksummed, hash-chained
//! records, framed so that a torn write can be told from damage.
//!
//! ```text
//! segment := header record*
//! header  := "SBZJRNL2" first_seq:u64le prev_hash:[u8;32] crc32(preceding 48 bytes):u32le
//! record  := rheader payload
//! rheader := marker:[u8;4] flags:u32le len:u32le crc32(payload):u32le seq:u64le hash:[u8;32]
//!            crc32(preceding 56 bytes):u32le                      (60 bytes)
//! hash    := SHA-256(previous record's hash || seq:u64le || payload)
//! flags   := SYNCED (1: the run that wrote it fsyncs every commit before acknowledging)
//!          | COMMIT_END (2: the last record of a group commit)
//! ```
//!
//! Each record's header has its own checksum, separate from the payload's, and starts
//! with a fixed marker (as LevelDB's and TigerBeetle's logs do): a header that checks
//! out says how long its record is and which record it is, whatever happened to the
//! payload. The hash chain makes the whole journal tamper-evident (changing any record
//! changes every later hash; the head hash is logged at every start and shown by
//! `stocksblitz journal verify`). Segment headers carry the hash they continue from, so
//! segments chain too.
//!
//! # The torn-tail rule
//!
//! Writes only ever append. A crash can therefore leave, at the end of the **last**
//! segment, the beginning of what was being appended and nothing else: a process
//! crash (kill -9) or a crash under `fsync = "batch"` on a file system that persists
//! appends in order leaves a prefix of the bytes written. Reading stops at the first
//! offset `P` of the last segment where no valid record starts, and the bytes from `P`
//! to the end of the file are a *torn tail* (cut off at the next start, with a
//! warning: they were never acknowledged) only when they are a **partial record**:
//!
//! 1. fewer bytes than a record header, and those bytes are the start of the record
//!    marker; or
//! 2. a header that checks out (marker, header checksum, the next record number)
//!    whose record runs past the end of the file: the file ends inside the record.
//!
//! Under `fsync = "interval"` or `"none"` (the `SYNCED` flag is clear on the last
//! intact record) acknowledged records may legitimately be lost to a power cut, and
//! a file system may then show the file's unwritten end as zeros. For such runs a
//! tail is also torn when it is a partial record (as above) followed only by zero
//! bytes, the zeros starting at a 512-byte boundary of the file (file systems lose
//! whole blocks) or right after a group commit (`COMMIT_END`: the size grew but none
//! of the next commit reached the disk).
//!
//! Anything else is damage and stops start-up with the segment and byte offset: a
//! header that fails its checksum with a full header's worth of bytes after its
//! start, a record that is complete in the file but fails its payload checksum (even
//! the last one: a crash leaves a file ending inside a record, not a whole record with
//! other bytes), a header that checks out but has the wrong number, bytes after the
//! last record that are not the start of a record, zeros under `batch` (an fsynced,
//! acknowledged record cannot turn into zeros), any problem in a segment that is not
//! the last, a damaged or foreign segment header, a broken chain or a missing segment.
//! A segment header that is itself cut short is torn only in the newest segment and
//! only if its bytes are exactly the start of the header that segment must have (a
//! crash while creating it). When it is unknown how the tail was written (recovery
//! from a snapshot whose first replayed segment is damaged at its first record), the
//! stricter `batch` reading applies.
//!
//! Under `batch`, a power cut on a file system that exposes unwritten blocks as zeros
//! can leave the last, unacknowledged group commit with zeroed blocks. Those zeros
//! look exactly like acknowledged records that were wiped, so start-up refuses rather
//! than guess; the message names the segment and offset, where an operator who has
//! established that nothing after it was acknowledged can cut the file by hand.
//!
//! Truncating a file at a record boundary, or inside its last record, cannot be told
//! from a crash by looking at the file; the rule guarantees that no record that is
//! intact in the file is ever dropped, and that only the final, incomplete one is.
//! Journals of format 1 (`SBZJRNL1`) are refused with a message saying so.

use super::error::JournalError;
use std::path::Path;

pub type Hash = [u8; 32];

pub const MAGIC: &[u8; 8] = b"SBZJRNL2";
/// Segment magics of older formats, recognised only to refuse them clearly.
const OLD_MAGICS: [(&[u8; 8], u32); 1] = [(b"SBZJRNL1", 1)];
pub const SEGMENT_HEADER: usize = 8 + 8 + 32 + 4;
/// The bytes every record starts with.
pub const RECORD_MARKER: [u8; 4] = [0xA7, 0x5B, 0x4A, 0x52];
/// Bytes of a record's header.
pub const RECORD_HEADER: usize = 4 + 4 + 4 + 4 + 8 + 32 + 4;
const HEADER_CRC_AT: usize = RECORD_HEADER - 4;
/// Largest payload accepted (a step holds at most the engine's event buffer).
pub const MAX_RECORD: usize = 64 << 20;
pub const SEGMENT_SUFFIX: &str = ".sbzj";
/// Zeros a file system leaves for lost writes start on a boundary of this many bytes.
pub const BLOCK: u64 = 512;

/// Record flag: written by a run that fsyncs every commit before acknowledging it.
pub const SYNCED: u32 = 1;
/// Record flag: the last record of a group commit.
pub const COMMIT_END: u32 = 2;
const KNOWN_FLAGS: u32 = SYNCED | COMMIT_END;

/// Hash of the record before the first one.
pub const GENESIS: Hash = [0; 32];

pub fn chain(prev: &Hash, seq: u64, payload: &[u8]) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev);
    ctx.update(&seq.to_le_bytes());
    ctx.update(payload);
    let mut h = [0; 32];
    h.copy_from_slice(ctx.finish().as_ref());
    h
}

pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

pub fn encode_header(first_seq: u64, prev: &Hash) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h[16..48].copy_from_slice(prev);
    let crc = crc32fast::hash(&h[..48]);
    h[48..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A segment's first record number and the hash it continues from.
pub fn decode_header(path: &Path, buf: &[u8]) -> Result<(u64, Hash), JournalError> {
    if let Some((_, version)) = OLD_MAGICS.iter().find(|(m, _)| buf.get(..8) == Some(&m[..])) {
        return Err(JournalError::corrupt(
            path,
            0,
            format!(
                "this segment is in journal format {version}, written by an older engine; this engine reads \
                 format 2 only. Replay it with the engine version that wrote it, or move the journal directory \
                 aside to start a new one"
            ),
        ));
    }
    let h = buf
        .get(..SEGMENT_HEADER)
        .ok_or_else(|| JournalError::corrupt(path, 0, "segment header is truncated"))?;
    if &h[..8] != MAGIC {
        return Err(JournalError::corrupt(
            path,
            0,
            "not a StocksBlitz journal segment (bad magic)",
        ));
    }
    if crc32fast::hash(&h[..48]).to_le_bytes() != h[48..52] {
        return Err(JournalError::corrupt(path, 0, "segment header checksum mismatch"));
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&h[8..16]);
    let mut prev = [0; 32];
    prev.copy_from_slice(&h[16..48]);
    Ok((u64::from_le_bytes(seq), prev))
}

/// Leaves room for a record's header at the end of `out` and returns where the record
/// starts; the caller then serializes the payload after it and calls
/// [`finish_record`].
pub fn begin_record(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + RECORD_HEADER, 0);
    start
}

/// Fills in the header of the record that starts at `start` (payload: the rest of
/// `out`) and returns the record's hash.
pub fn finish_record(out: &mut [u8], start: usize, seq: u64, prev: &Hash, flags: u32) -> Result<Hash, JournalError> {
    let payload_at = start + RECORD_HEADER;
    let len = out.len().saturating_sub(payload_at);
    if len > MAX_RECORD {
        return Err(JournalError::Encode {
            seq,
            what: format!("record of {len} bytes exceeds the {MAX_RECORD}-byte limit"),
        });
    }
    let hash = chain(prev, seq, &out[payload_at..]);
    let crc = crc32fast::hash(&out[payload_at..]);
    let h = &mut out[start..payload_at];
    h[..4].copy_from_slice(&RECORD_MARKER);
    h[4..8].copy_from_slice(&flags.to_le_bytes());
    h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..56].copy_from_slice(&hash);
    seal_header(h);
    Ok(hash)
}

/// Adds `flags` to the header of the record at `start` (e.g. [`COMMIT_END`] once the
/// commit's last record is known).
pub fn add_flags(out: &mut [u8], start: usize, flags: u32) {
    if let Some(h) = out.get_mut(start..start + RECORD_HEADER) {
        let old = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        h[4..8].copy_from_slice(&(old | flags).to_le_bytes());
        seal_header(h);
    }
}

fn seal_header(h: &mut [u8]) {
    let crc = crc32fast::hash(&h[..HEADER_CRC_AT]);
    h[HEADER_CRC_AT..RECORD_HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// A record header that checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub flags: u32,
    /// Payload bytes.
    pub len: usize,
    pub payload_crc: u32,
    pub seq: u64,
    pub hash: Hash,
}

impl RecordHeader {
    /// Bytes the whole record occupies.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER + self.len
    }
}

/// One record read back.
#[derive(Debug)]
pub struct RawRecord<'a> {
    pub seq: u64,
    pub hash: Hash,
    pub flags: u32,
    pub payload: &'a [u8],
    /// Bytes the record occupies.
    pub len: usize,
}

/// Why a record at some offset could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end before the record does (its header, if complete, checked out):
    /// a torn write, if at the end of the journal; not written completely yet, to a
    /// reader following the journal.
    Truncated,
    /// The header or the payload fails its checksum.
    Damaged(&'static str),
}

/// Reads and checks the record header at the start of `buf`.
pub fn read_header(buf: &[u8]) -> Result<RecordHeader, FrameError> {
    let Some(h) = buf.get(..RECORD_HEADER) else {
        return Err(FrameError::Truncated);
    };
    if h[..4] != RECORD_MARKER {
        return Err(FrameError::Damaged("no record starts here (record marker missing)"));
    }
    let crc = u32::from_le_bytes([h[56], h[57], h[58], h[59]]);
    if crc32fast::hash(&h[..HEADER_CRC_AT]) != crc {
        return Err(FrameError::Damaged("record header checksum mismatch"));
    }
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let flags = u32_at(4);
    let len = u32_at(8) as usize;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FrameError::Damaged("record header has unknown flags"));
    }
    if len > MAX_RECORD {
        return Err(FrameError::Damaged("record length out of range"));
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&h[16..24]);
    let mut hash = [0; 32];
    hash.copy_from_slice(&h[24..56]);
    Ok(RecordHeader {
        flags,
        len,
        payload_crc: u32_at(12),
        seq: u64::from_le_bytes(seq),
        hash,
    })
}

/// Reads the record at the start of `buf` (checksums only; the caller checks the
/// number and the chain).
pub fn read_record(buf: &[u8]) -> Result<RawRecord<'_>, FrameError> {
    let h = read_header(buf)?;
    let Some(payload) = buf.get(RECORD_HEADER..h.record_len()) else {
        return Err(FrameError::Truncated);
    };
    if crc32fast::hash(payload) != h.payload_crc {
        return Err(FrameError::Damaged("record payload checksum mismatch"));
    }
    Ok(RawRecord {
        seq: h.seq,
        hash: h.hash,
        flags: h.flags,
        payload,
        len: h.record_len(),
    })
}

/// What the journal looked like just before a bad spot in its last segment: what the
/// torn-tail rule needs to judge the bytes from there on.
#[derive(Debug, Clone, Copy)]
pub struct TailContext {
    /// File offset of the bad spot.
    pub offset: u64,
    /// The record number that should start there.
    pub next_seq: u64,
    /// Flags of the last intact record (none: the journal has no record yet).
    pub last_flags: Option<u32>,
    /// Whether the bad spot is right after a group commit (or at the segment's start).
    pub after_commit: bool,
}

/// Whether `rest` (everything from a bad spot to the end of the last segment) is a
/// torn tail under the rule in the module documentation.
pub fn is_torn_tail(rest: &[u8], cx: &TailContext) -> bool {
    if is_partial_record(rest, cx.next_seq) {
        return true;
    }
    // A run that does not fsync every commit: lost blocks may read as zeros.
    let synced = cx.last_flags.is_none_or(|f| f & SYNCED != 0);
    if synced {
        return false;
    }
    let zeros_from = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if zeros_from == rest.len() {
        return false;
    }
    if zeros_from == 0 && cx.after_commit {
        return true;
    }
    // The first block boundary at or after the zeros start; before it, a partial record.
    let abs = cx.offset + zeros_from as u64;
    let boundary = abs.div_ceil(BLOCK) * BLOCK;
    let Ok(cut) = usize::try_from(boundary - cx.offset) else {
        return false;
    };
    cut < rest.len() && is_partial_record(&rest[..cut], cx.next_seq)
}

/// `bytes` are the beginning of record `next_seq` and end before it does.
fn is_partial_record(bytes: &[u8], next_seq: u64) -> bool {
    if bytes.len() < RECORD_HEADER {
        let n = bytes.len().min(RECORD_MARKER.len());
        return bytes[..n] == RECORD_MARKER[..n];
    }
    read_header(bytes).is_ok_and(|h| h.seq == next_seq && h.record_len() > bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(seq: u64, prev: &Hash, payload: &[u8], flags: u32) -> (Vec<u8>, Hash) {
        let mut out = Vec::new();
        let start = begin_record(&mut out);
        out.extend_from_slice(payload);
        let h = finish_record(&mut out, start, seq, prev, flags).unwrap();
        (out, h)
    }

    fn cx(next_seq: u64, flags: u32) -> TailContext {
        TailContext {
            offset: SEGMENT_HEADER as u64,
            next_seq,
            last_flags: Some(flags),
            after_commit: true,
        }
    }

    #[test]
    fn a_record_round_trips_and_chains() {
        let (buf, h) = framed(7, &GENESIS, b"hello", SYNCED);
        let r = read_record(&buf).unwrap();
        assert_eq!(
            (r.seq, r.hash, r.payload, r.len, r.flags),
            (7, h, &b"hello"[..], buf.len(), SYNCED)
        );
        assert_eq!(h, chain(&GENESIS, 7, b"hello"));
        assert_ne!(h, chain(&GENESIS, 8, b"hello"));
        let mut marked = buf.clone();
        add_flags(&mut marked, 0, COMMIT_END);
        assert_eq!(read_record(&marked).unwrap().flags, SYNCED | COMMIT_END);
    }

    #[test]
    fn every_cut_is_a_partial_record_and_every_changed_byte_is_damage() {
        let (buf, _) = framed(1, &GENESIS, b"payload bytes", SYNCED);
        for cut in 0..buf.len() {
            assert_eq!(
                read_record(&buf[..cut]).unwrap_err(),
                FrameError::Truncated,
                "cut at {cut}"
            );
            assert!(is_torn_tail(&buf[..cut], &cx(1, SYNCED)), "cut at {cut}");
        }
        for i in 0..buf.len() {
            for bad in [buf[i] ^ 0x40, buf[i].wrapping_add(1), 0] {
                if bad == buf[i] {
                    continue;
                }
                let mut b = buf.clone();
                b[i] = bad;
                assert!(matches!(read_record(&b), Err(FrameError::Damaged(_))), "byte {i}");
                assert!(!is_torn_tail(&b, &cx(1, SYNCED)), "byte {i} is not a torn tail");
            }
        }
        // The right header with the wrong number is not this journal's next record.
        assert!(!is_torn_tail(&buf[..buf.len() - 1], &cx(2, SYNCED)));
        // Garbage or zeros where a record should start.
        assert!(!is_torn_tail(&[0x11], &cx(1, SYNCED)));
        assert!(!is_torn_tail(&[0; 100], &cx(1, SYNCED)));
        assert!(matches!(read_record(&[0; 64]), Err(FrameError::Damaged(_))));
    }

    #[test]
    fn zeros_are_a_torn_tail_only_where_a_power_cut_can_leave_them() {
        let (rec, _) = framed(5, &GENESIS, &[9; 2000], 0);
        // Under batch: never.
        assert!(!is_torn_tail(&[0; 600], &cx(5, SYNCED)));
        // Without fsync per commit: right after a commit, or from a block boundary.
        assert!(is_torn_tail(&[0; 600], &cx(5, 0)));
        assert!(!is_torn_tail(&[0; 600], &cx(5, 0).with_after_commit(false)));
        let base = cx(5, 0).with_after_commit(false);
        let first_boundary = (BLOCK - base.offset % BLOCK) as usize;
        let mut lost = rec.clone();
        lost[first_boundary..].fill(0);
        assert!(
            is_torn_tail(&lost, &base),
            "header persisted, the rest of the record's blocks lost"
        );
        let mut lost = rec.clone();
        lost[first_boundary + 1..].fill(0);
        assert!(
            is_torn_tail(&lost, &base),
            "zeros inside the payload's block are its data"
        );
        // A single damaged byte at the end is not a lost block.
        let mut one = rec.clone();
        let n = one.len();
        one[n - 1] = 0;
        assert!(!is_torn_tail(&one, &base));
        // Zeros right after a record that did not end a commit, not on a block
        // boundary: the block holding the start of the next record reached the disk.
        assert!(!is_torn_tail(&[0; 100], &base));
    }

    impl TailContext {
        fn with_after_commit(mut self, after_commit: bool) -> Self {
            self.after_commit = after_commit;
            self
        }
    }

    #[test]
    fn headers_round_trip_and_reject_damage_and_old_formats() {
        let p = Path::new("x");
        let h = encode_header(42, &[9; 32]);
        assert_eq!(decode_header(p, &h).unwrap(), (42, [9; 32]));
        let mut bad = h;
        bad[20] ^= 1;
        assert!(decode_header(p, &bad).is_err());
        assert!(decode_header(p, &h[..10]).is_err());
        assert!(decode_header(p, &[0; SEGMENT_HEADER]).is_err());
        let mut old = h;
        old[..8].copy_from_slice(b"SBZJRNL1");
        let err = decode_header(p, &old).unwrap_err().to_string();
        assert!(err.contains("format 1") && err.contains("older engine"), "{err}");
    }
}
