//! Snapshot files: the order manager's and the read model's state as of one journal
//! record, so that start-up replays only the records after it.
//!
//! ```text
//! file := "SBZSNAP2" body_len:u64le crc32(body):u32le body
//! body := seq:u64le chain_hash:[u8;32] state_hash:[u8;32] image_len:u64le image store
//! ```
//!
//! `chain_hash` is the journal's hash at record `seq` (a snapshot only fits the
//! journal it came from); `state_hash` is [`OrderManager::state_hash`] of the image,
//! checked after loading. Written to a temporary file, fsynced and renamed, so a
//! crash never leaves a half-written snapshot under a snapshot's name.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::orders::store::OrderStore;
use crate::orders::OrderManager;

use super::error::JournalError;
use super::format::Hash;

const MAGIC: &[u8; 8] = b"SBZSNAP2";
const HEADER: usize = 8 + 8 + 4;
const FIXED: usize = 8 + 32 + 32 + 8;
pub const SUFFIX: &str = ".sbzs";
/// A snapshot being written; renamed to its name once complete and synced.
const TMP: &str = ".tmp";

/// A snapshot read back and checked (checksum only; the caller restores and compares
/// the state hash).
#[derive(Debug)]
pub struct Snapshot {
    pub path: PathBuf,
    pub seq: u64,
    pub chain: Hash,
    pub state: Hash,
    pub image: Vec<u8>,
    pub store: Vec<u8>,
}

pub fn name(seq: u64) -> String {
    format!("snapshot-{seq:020}{SUFFIX}")
}

/// Snapshot files in `dir`, newest (highest record) first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    for entry in super::reader::entries(dir)? {
        let name = entry.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_prefix("snapshot-"))
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, entry.path()));
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(out)
}

/// Writes a snapshot of `manager` and `store` taken at record `seq` (journal hash
/// `chain`), then deletes all but the newest `keep` snapshots.
pub fn write(
    dir: &Path,
    seq: u64,
    chain: &Hash,
    manager: &OrderManager,
    store: &OrderStore,
    keep: usize,
) -> Result<PathBuf, JournalError> {
    let path = dir.join(name(seq));
    let encode_err = |e: postcard::Error| JournalError::Encode {
        seq,
        what: format!("snapshot: {e}"),
    };
    let mut body = Vec::with_capacity(1 << 20);
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(chain);
    body.extend_from_slice(&manager.state_hash());
    body.extend_from_slice(&[0; 8]);
    manager.encode_image(&mut body).map_err(encode_err)?;
    let image_len = (body.len() - FIXED) as u64;
    body[FIXED - 8..FIXED].copy_from_slice(&image_len.to_le_bytes());
    postcard::to_io(store, &mut body).map_err(encode_err)?;

    let tmp = dir.join(format!("{}{TMP}", name(seq)));
    if let Err(e) = write_file(&tmp, &body, &path, dir) {
        // A partial file (a full disk, say) would hold its space until someone noticed.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    for (_, old) in list(dir)?.into_iter().skip(keep.max(1)) {
        std::fs::remove_file(&old).map_err(|e| JournalError::io(&old, e))?;
    }
    Ok(path)
}

/// Writes `body` (with header) to `tmp`, syncs it, and renames it to `path`.
fn write_file(tmp: &Path, body: &[u8], path: &Path, dir: &Path) -> Result<(), JournalError> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(tmp)
        .map_err(|e| JournalError::io(tmp, e))?;
    f.write_all(MAGIC)
        .and_then(|_| f.write_all(&(body.len() as u64).to_le_bytes()))
        .and_then(|_| f.write_all(&crc32fast::hash(body).to_le_bytes()))
        .and_then(|_| f.write_all(body))
        .and_then(|_| f.sync_all())
        .map_err(|e| JournalError::io(tmp, e))?;
    drop(f);
    std::fs::rename(tmp, path).map_err(|e| JournalError::io(path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))
}

/// Deletes snapshots a crash left half-written (`snapshot-*.sbzs.tmp`): they are never
/// read, and each holds disk space the journal needs. Returns how many.
pub fn remove_partial(dir: &Path) -> Result<usize, JournalError> {
    let mut n = 0;
    for entry in super::reader::entries(dir)? {
        let name = entry.file_name();
        let partial = name
            .to_str()
            .is_some_and(|n| n.starts_with("snapshot-") && n.strip_suffix(TMP).is_some_and(|n| n.ends_with(SUFFIX)));
        if partial {
            std::fs::remove_file(entry.path()).map_err(|e| JournalError::io(entry.path(), e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Reads and checksums a snapshot file.
pub fn read(path: &Path) -> Result<Snapshot, JournalError> {
    let buf = std::fs::read(path).map_err(|e| JournalError::io(path, e))?;
    let bad = |what: &str| JournalError::corrupt(path, 0, format!("snapshot {what}"));
    let header = buf.get(..HEADER).ok_or_else(|| bad("is truncated"))?;
    if &header[..8] == b"SBZSNAP1" {
        return Err(bad(
            "was written by an older engine (snapshot format 1); it is not used",
        ));
    }
    if &header[..8] != MAGIC {
        return Err(bad("has a bad magic number"));
    }
    let mut n = [0; 8];
    n.copy_from_slice(&header[8..16]);
    let len = usize::try_from(u64::from_le_bytes(n)).map_err(|_| bad("length is out of range"))?;
    let crc = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    let body = buf
        .get(HEADER..HEADER.saturating_add(len))
        .ok_or_else(|| bad("is truncated"))?;
    if crc32fast::hash(body) != crc || body.len() < FIXED {
        return Err(bad("checksum mismatch"));
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&body[..8]);
    let mut chain = [0; 32];
    chain.copy_from_slice(&body[8..40]);
    let mut state = [0; 32];
    state.copy_from_slice(&body[40..72]);
    n.copy_from_slice(&body[72..80]);
    let image_len = usize::try_from(u64::from_le_bytes(n)).map_err(|_| bad("image length is out of range"))?;
    let image = body
        .get(FIXED..FIXED.saturating_add(image_len))
        .ok_or_else(|| bad("image is truncated"))?;
    Ok(Snapshot {
        path: path.to_path_buf(),
        seq: u64::from_le_bytes(seq),
        chain,
        state,
        image: image.to_vec(),
        store: body[FIXED + image_len..].to_vec(),
    })
}
