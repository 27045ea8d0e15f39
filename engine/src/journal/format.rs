//! The journal's on-disk format: segment files of framed, checksummed, hash-chained
//! records.
//!
//! ```text
//! segment := header record*
//! header  := "SBZJRNL1" first_seq:u64le prev_hash:[u8;32] crc32(preceding 48 bytes):u32le
//! record  := len:u32le crc32(body):u32le body
//! body    := seq:u64le hash:[u8;32] payload        (len = 40 + payload length)
//! hash    := SHA-256(previous record's hash || seq:u64le || payload)
//! ```
//!
//! The CRC tells a torn or damaged record from a good one; the hash chain makes the
//! whole file tamper-evident (changing any record changes every later hash, and the
//! head hash is logged at every start and shown by `stocksblitz journal verify`).
//! Segment headers carry the hash they continue from, so segments chain too.

use super::error::JournalError;
use std::path::Path;

pub type Hash = [u8; 32];

pub const MAGIC: &[u8; 8] = b"SBZJRNL1";
pub const SEGMENT_HEADER: usize = 8 + 8 + 32 + 4;
const FRAME: usize = 8;
const BODY_FIXED: usize = 8 + 32;
/// Largest record accepted (a step holds at most the engine's event buffer).
pub const MAX_RECORD: usize = 64 << 20;
pub const SEGMENT_SUFFIX: &str = ".sbzj";

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

/// Frames `payload` (already serialized at `out[start + 48..]`, where `start` is where
/// [`begin_record`] left room) in place and returns the record's hash.
pub fn begin_record(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + FRAME + BODY_FIXED, 0);
    start
}

pub fn finish_record(out: &mut [u8], start: usize, seq: u64, prev: &Hash) -> Result<Hash, JournalError> {
    let body_len = out.len() - start - FRAME;
    if body_len > MAX_RECORD {
        return Err(JournalError::Encode {
            seq,
            what: format!("record of {body_len} bytes exceeds the {MAX_RECORD}-byte limit"),
        });
    }
    let payload_at = start + FRAME + BODY_FIXED;
    let hash = chain(prev, seq, &out[payload_at..]);
    out[start + FRAME..start + FRAME + 8].copy_from_slice(&seq.to_le_bytes());
    out[start + FRAME + 8..payload_at].copy_from_slice(&hash);
    let crc = crc32fast::hash(&out[start + FRAME..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(hash)
}

/// One record read back.
#[derive(Debug)]
pub struct RawRecord<'a> {
    pub seq: u64,
    pub hash: Hash,
    pub payload: &'a [u8],
    /// Bytes the record occupies.
    pub len: usize,
}

/// Why a record at some offset could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the record needs: a torn write, if at the end.
    Truncated,
    /// Length out of range or checksum mismatch.
    Damaged(&'static str),
}

/// Reads the record at the start of `buf` (checksum only; the caller checks the chain).
pub fn read_record(buf: &[u8]) -> Result<RawRecord<'_>, FrameError> {
    let Some(frame) = buf.get(..FRAME) else {
        return Err(FrameError::Truncated);
    };
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if !(BODY_FIXED..=MAX_RECORD).contains(&len) {
        return Err(FrameError::Damaged("record length out of range"));
    }
    let Some(body) = buf.get(FRAME..FRAME + len) else {
        return Err(FrameError::Truncated);
    };
    if crc32fast::hash(body) != crc {
        return Err(FrameError::Damaged("record checksum mismatch"));
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&body[..8]);
    let mut hash = [0; 32];
    hash.copy_from_slice(&body[8..40]);
    Ok(RawRecord {
        seq: u64::from_le_bytes(seq),
        hash,
        payload: &body[BODY_FIXED..],
        len: FRAME + len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(seq: u64, prev: &Hash, payload: &[u8]) -> (Vec<u8>, Hash) {
        let mut out = Vec::new();
        let start = begin_record(&mut out);
        out.extend_from_slice(payload);
        let h = finish_record(&mut out, start, seq, prev).unwrap();
        (out, h)
    }

    #[test]
    fn a_record_round_trips_and_chains() {
        let (buf, h) = framed(7, &GENESIS, b"hello");
        let r = read_record(&buf).unwrap();
        assert_eq!((r.seq, r.hash, r.payload, r.len), (7, h, &b"hello"[..], buf.len()));
        assert_eq!(h, chain(&GENESIS, 7, b"hello"));
        assert_ne!(h, chain(&GENESIS, 8, b"hello"));
    }

    #[test]
    fn truncation_and_damage_are_told_apart() {
        let (buf, _) = framed(1, &GENESIS, b"payload");
        for cut in 0..buf.len() {
            assert_eq!(
                read_record(&buf[..cut]).unwrap_err(),
                FrameError::Truncated,
                "cut at {cut}"
            );
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(read_record(&bad).is_err(), "flipped byte {i}");
        }
        assert!(matches!(read_record(&[0; 64]), Err(FrameError::Damaged(_))));
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let p = Path::new("x");
        let h = encode_header(42, &[9; 32]);
        assert_eq!(decode_header(p, &h).unwrap(), (42, [9; 32]));
        let mut bad = h;
        bad[20] ^= 1;
        assert!(decode_header(p, &bad).is_err());
        assert!(decode_header(p, &h[..10]).is_err());
        assert!(decode_header(p, &[0; SEGMENT_HEADER]).is_err());
    }
}
