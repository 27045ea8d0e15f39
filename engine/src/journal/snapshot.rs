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
//!
//! The read model grows with the history it keeps, so it is streamed to the file
//! (length and checksum patched into the header at the end) rather than built in
//! memory first, and a snapshot read back is sliced, not copied: a whole-snapshot
//! buffer, grown by doubling, and two copies of it on reading were transient peaks of
//! several times the snapshot's size in the server's memory.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
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
    /// The whole file; `image` and `store` are ranges of it.
    buf: Vec<u8>,
    image: Range<usize>,
    store: Range<usize>,
}

impl Snapshot {
    /// The order manager's image.
    pub fn image(&self) -> &[u8] {
        &self.buf[self.image.clone()]
    }

    /// The read model, postcard-encoded.
    pub fn store(&self) -> &[u8] {
        &self.buf[self.store.clone()]
    }
}

/// Passes bytes on while counting and checksumming them; keeps a write's error for
/// the caller (postcard reports any as a full buffer).
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
    error: Option<std::io::Error>,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b).map_err(|e| {
            let kept = std::io::Error::new(e.kind(), e.to_string());
            self.error = Some(e);
            kept
        })?;
        self.crc.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
    let mut image = Vec::with_capacity(1 << 20);
    manager.encode_image(&mut image).map_err(|e| encode_err(seq, e))?;
    let tmp = dir.join(format!("{}{TMP}", name(seq)));
    if let Err(e) = write_file(&tmp, seq, chain, manager, &image, store, &path, dir) {
        // A partial file (a full disk, say) would hold its space until someone noticed.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    for (_, old) in list(dir)?.into_iter().skip(keep.max(1)) {
        std::fs::remove_file(&old).map_err(|e| JournalError::io(&old, e))?;
    }
    Ok(path)
}

fn encode_err(seq: u64, e: postcard::Error) -> JournalError {
    JournalError::Encode {
        seq,
        what: format!("snapshot: {e}"),
    }
}

/// Streams the snapshot to `tmp` (the header's length and checksum patched in at the
/// end), syncs it, and renames it to `path`.
#[allow(clippy::too_many_arguments)]
fn write_file(
    tmp: &Path,
    seq: u64,
    chain: &Hash,
    manager: &OrderManager,
    image: &[u8],
    store: &OrderStore,
    path: &Path,
    dir: &Path,
) -> Result<(), JournalError> {
    let io = |e| JournalError::io(tmp, e);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(tmp)
        .map_err(io)?;
    f.write_all(MAGIC)
        .and_then(|_| f.write_all(&[0; HEADER - 8]))
        .map_err(io)?;
    let mut body = BufWriter::with_capacity(
        1 << 16,
        Summing {
            inner: f,
            crc: crc32fast::Hasher::new(),
            len: 0,
            error: None,
        },
    );
    body.write_all(&seq.to_le_bytes())
        .and_then(|_| body.write_all(chain))
        .and_then(|_| body.write_all(&manager.state_hash()))
        .and_then(|_| body.write_all(&(image.len() as u64).to_le_bytes()))
        .and_then(|_| body.write_all(image))
        .map_err(io)?;
    let streamed = postcard::to_io(store, &mut body);
    if let Err(e) = streamed {
        // postcard reports a failed write as a full buffer: the file's error is kept.
        return Err(match body.get_mut().error.take() {
            Some(w) => io(w),
            None => encode_err(seq, e),
        });
    }
    let Summing {
        inner: mut f, crc, len, ..
    } = body.into_inner().map_err(|e| io(e.into_error()))?;
    f.seek(SeekFrom::Start(8))
        .and_then(|_| f.write_all(&len.to_le_bytes()))
        .and_then(|_| f.write_all(&crc.finalize().to_le_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(io)?;
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
    let image = HEADER + FIXED..(HEADER + FIXED).saturating_add(image_len);
    let store = image.end..HEADER + len;
    if image.end > store.end {
        return Err(bad("image is truncated"));
    }
    Ok(Snapshot {
        path: path.to_path_buf(),
        seq: u64::from_le_bytes(seq),
        chain,
        state,
        buf,
        image,
        store,
    })
}
