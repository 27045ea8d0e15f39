//! Appending to the journal: group commit into the current segment under the fsync
//! policy, rotation to a new segment past a size, and an exclusive lock so two
//! processes never write one journal.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::JournalError;
use super::format::{
    add_flags, begin_record, encode_header, finish_record, segment_name, Hash, COMMIT_END, SEGMENT_HEADER, SYNCED,
};
use super::reader::Tail;

/// When written records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync every commit (group commit: one fsync for everything written together).
    /// An acknowledged order survives power loss.
    Batch,
    /// fsync at most this often; acknowledged orders survive a process crash, and a
    /// power loss can lose up to the interval.
    Interval(Duration),
    /// Never fsync (the OS writes back): survives a process crash only.
    None,
}

/// What a commit did (for metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct Commit {
    pub bytes: usize,
    pub synced: bool,
}

pub struct JournalWriter {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    segment_len: u64,
    segment_bytes: u64,
    next_seq: u64,
    last_hash: Hash,
    policy: FsyncPolicy,
    buf: Vec<u8>,
    /// Where the batch's last record starts in `buf` (it gets [`COMMIT_END`]).
    last_record: Option<usize>,
    unsynced: bool,
    last_sync: Instant,
    _lock: File,
}

impl JournalWriter {
    /// Continues the journal where `tail` (from [`super::reader::scan`]) says it ends,
    /// cutting off a torn record. Fails if another process holds the journal.
    pub fn open(dir: &Path, tail: &Tail, policy: FsyncPolicy, segment_bytes: u64) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| JournalError::io(&lock_path, e))?;
        lock.try_lock().map_err(|_| {
            JournalError::io(
                &lock_path,
                std::io::Error::other("another process is using this journal (is the engine already running?)"),
            )
        })?;
        let (path, file, len) = match &tail.segment {
            Some((path, valid)) if *valid >= SEGMENT_HEADER as u64 => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(|e| JournalError::io(path, e))?;
                if let Some(torn) = &tail.torn {
                    tracing::warn!(
                        segment = %torn.path.display(),
                        offset = torn.offset,
                        bytes = torn.bytes,
                        "journal ends in a torn record (a crash mid-write, or blocks lost to a power cut under \
                         fsync = interval/none); cutting it off: under fsync = batch it was never acknowledged"
                    );
                    file.set_len(*valid).map_err(|e| JournalError::io(path, e))?;
                    file.sync_all().map_err(|e| JournalError::io(path, e))?;
                }
                (path.clone(), file, *valid)
            }
            other => {
                if let Some((path, _)) = other {
                    // A segment whose header never made it to disk.
                    std::fs::remove_file(path).map_err(|e| JournalError::io(path, e))?;
                }
                let (path, file) = create_segment(dir, tail.next_seq, &tail.last_hash)?;
                (path, file, SEGMENT_HEADER as u64)
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            file,
            segment_len: len,
            segment_bytes: segment_bytes.max(SEGMENT_HEADER as u64 + 1),
            next_seq: tail.next_seq,
            last_hash: tail.last_hash,
            policy,
            buf: Vec::with_capacity(1 << 20),
            last_record: None,
            unsynced: false,
            last_sync: Instant::now(),
            _lock: lock,
        })
    }

    /// Adds a record to the current batch (not written until [`commit`](Self::commit)).
    /// Returns its record number.
    pub fn append<T: serde::Serialize>(&mut self, record: &T) -> Result<u64, JournalError> {
        let seq = self.next_seq;
        let start = begin_record(&mut self.buf);
        if let Err(e) = postcard::to_io(record, &mut self.buf) {
            self.buf.truncate(start);
            return Err(JournalError::Encode {
                seq,
                what: e.to_string(),
            });
        }
        // The torn-tail rule reads whether this run acknowledges only fsynced records.
        let flags = if self.policy == FsyncPolicy::Batch { SYNCED } else { 0 };
        match finish_record(&mut self.buf, start, seq, &self.last_hash, flags) {
            Ok(hash) => {
                self.last_record = Some(start);
                self.last_hash = hash;
                self.next_seq += 1;
                Ok(seq)
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Bytes waiting for the next commit.
    pub fn batched(&self) -> usize {
        self.buf.len()
    }

    /// Writes the batch, syncs as the policy says, and rotates past the segment size.
    /// After an error nothing more may be acknowledged (the caller stops intake): a
    /// failed fsync can leave the kernel's copy claiming data is on disk that is not.
    pub fn commit(&mut self) -> Result<Commit, JournalError> {
        if self.buf.is_empty() {
            return Ok(Commit::default());
        }
        if let Some(last) = self.last_record.take() {
            add_flags(&mut self.buf, last, COMMIT_END);
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| JournalError::io(&self.path, e))?;
        let bytes = self.buf.len();
        self.segment_len += bytes as u64;
        self.buf.clear();
        self.unsynced = true;
        let synced = match self.policy {
            FsyncPolicy::Batch => {
                self.sync()?;
                true
            }
            FsyncPolicy::Interval(_) => self.sync_if_due()?,
            FsyncPolicy::None => false,
        };
        if self.segment_len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(Commit { bytes, synced })
    }

    /// Under the interval policy, fsyncs when the interval has passed since the last
    /// one and something is unsynced. Returns whether it synced.
    pub fn sync_if_due(&mut self) -> Result<bool, JournalError> {
        match self.policy {
            FsyncPolicy::Interval(every) if self.unsynced && self.last_sync.elapsed() >= every => {
                self.sync()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Forces everything written to disk (at shutdown, whatever the policy).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if self.unsynced {
            self.file.sync_data().map_err(|e| JournalError::io(&self.path, e))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        self.sync()?;
        let (path, file) = create_segment(&self.dir, self.next_seq, &self.last_hash)?;
        tracing::info!(segment = %path.display(), first_record = self.next_seq, "journal segment started");
        self.path = path;
        self.file = file;
        self.segment_len = SEGMENT_HEADER as u64;
        Ok(())
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn last_hash(&self) -> &Hash {
        &self.last_hash
    }

    pub fn segment(&self) -> &Path {
        &self.path
    }
}

/// Creates a segment with its header on disk, and the directory entry too.
fn create_segment(dir: &Path, first_seq: u64, prev: &Hash) -> Result<(PathBuf, File), JournalError> {
    let path = dir.join(segment_name(first_seq));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| JournalError::io(&path, e))?;
    file.write_all(&encode_header(first_seq, prev))
        .and_then(|_| file.sync_all())
        .map_err(|e| JournalError::io(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))?;
    Ok((path, file))
}
