//! Spill files: rows that do not fit in memory while the server is slow or down,
//! written in arrival order and drained oldest first when it is back.
//!
//! A file is a sequence of postcard-encoded rows, `spill-<n>.rows`, at most
//! [`FILE_ROWS`] rows. A file being drained is deleted only after all its rows were
//! stored, so a crash re-sends them (the tables' DEDUP keys make that harmless) rather
//! than losing them. Files left by an earlier run are drained first. Written, not
//! fsynced: a process crash loses nothing, a power cut can lose the OS's unwritten
//! pages.
//!
//! Rows are encoded into a buffer written to the file in chunks. A chunk the disk will
//! not take (full, failing) is cut off the file again, so the file stays a sequence of
//! whole rows, and its rows are reported lost ([`SpillError`]): the only way the sink
//! loses a row.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::row::SinkRow;

/// Rows per spill file.
pub const FILE_ROWS: usize = 100_000;
/// Bytes buffered before they are written to the file.
const CHUNK: usize = 1 << 20;

/// Rows that could not be written to a spill file (they are gone).
#[derive(Debug, thiserror::Error)]
#[error("{lost} rows could not be written to spill file {file}: {source}")]
pub struct SpillError {
    pub lost: u64,
    pub file: PathBuf,
    #[source]
    pub source: std::io::Error,
}

struct Writer {
    path: PathBuf,
    file: File,
    /// Bytes of whole rows in the file.
    len: u64,
    /// Rows in the file and in `chunk`.
    rows: usize,
    chunk: Vec<u8>,
    chunk_rows: u64,
}

pub struct Spill {
    dir: PathBuf,
    /// Closed files and their row counts, oldest first.
    files: VecDeque<(PathBuf, u64)>,
    writer: Option<Writer>,
    next: u64,
    bytes: u64,
    rows: u64,
    scratch: Vec<u8>,
}

fn number(p: &Path) -> Option<u64> {
    p.file_name()?
        .to_str()?
        .strip_prefix("spill-")?
        .strip_suffix(".rows")?
        .parse()
        .ok()
}

/// Decodes a file's rows (a row cut short by a crash ends it).
fn decode(path: &Path, bytes: &[u8], mut each: impl FnMut(SinkRow)) {
    let mut rest = bytes;
    while !rest.is_empty() {
        match postcard::take_from_bytes::<SinkRow>(rest) {
            Ok((row, tail)) => {
                each(row);
                rest = tail;
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), bytes = rest.len(), error = %e, "spill file ends in a partial row");
                break;
            }
        }
    }
}

impl Spill {
    /// Opens the spill directory, picking up (and counting the rows of) files an
    /// earlier run left.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found: Vec<(u64, PathBuf, u64)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if let Some(n) = number(&path) {
                found.push((n, path, entry.metadata()?.len()));
            }
        }
        found.sort_by_key(|f| f.0);
        let mut files = VecDeque::new();
        let mut rows = 0;
        for (_, path, _) in &found {
            let mut n = 0u64;
            decode(path, &std::fs::read(path)?, |_| n += 1);
            rows += n;
            files.push_back((path.clone(), n));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            next: found.last().map_or(0, |f| f.0 + 1),
            bytes: found.iter().map(|f| f.2).sum(),
            rows,
            files,
            writer: None,
            scratch: Vec::with_capacity(256),
        })
    }

    /// Rows are being spilled (or wait in files): new rows must go here too, to stay
    /// in order.
    pub fn is_active(&self) -> bool {
        !self.files.is_empty() || self.writer.is_some()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Rows in spill files (and the write buffer), not yet loaded back.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The files, oldest first (for tests and diagnostics).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.0.as_path())
    }

    pub fn append(&mut self, row: &SinkRow) -> Result<(), SpillError> {
        if self.writer.is_none() {
            let path = self.dir.join(format!("spill-{:020}.rows", self.next));
            self.next += 1;
            match OpenOptions::new().create_new(true).append(true).open(&path) {
                Ok(file) => {
                    self.writer = Some(Writer {
                        path,
                        file,
                        len: 0,
                        rows: 0,
                        chunk: Vec::with_capacity(CHUNK + 256),
                        chunk_rows: 0,
                    })
                }
                Err(source) => {
                    return Err(SpillError {
                        lost: 1,
                        file: path,
                        source,
                    })
                }
            }
        }
        self.scratch.clear();
        if let Err(e) = postcard::to_io(row, &mut self.scratch) {
            let file = self.writer.as_ref().map(|w| w.path.clone()).unwrap_or_default();
            return Err(SpillError {
                lost: 1,
                file,
                source: std::io::Error::other(e),
            });
        }
        let full = match self.writer.as_mut() {
            Some(w) => {
                w.chunk.extend_from_slice(&self.scratch);
                w.chunk_rows += 1;
                w.rows += 1;
                self.rows += 1;
                self.bytes += self.scratch.len() as u64;
                (w.chunk.len() >= CHUNK, w.rows >= FILE_ROWS)
            }
            None => (false, false),
        };
        match full {
            (_, true) => self.close_writer(),
            (true, false) => self.flush(),
            _ => Ok(()),
        }
    }

    /// Writes the buffered rows to the file. If the disk refuses them, the file is cut
    /// back to its whole rows and they are reported lost.
    pub fn flush(&mut self) -> Result<(), SpillError> {
        let Some(w) = self.writer.as_mut() else { return Ok(()) };
        if w.chunk.is_empty() {
            return Ok(());
        }
        let written = w.file.write_all(&w.chunk);
        let lost = w.chunk_rows;
        let chunk_bytes = w.chunk.len() as u64;
        w.chunk.clear();
        w.chunk_rows = 0;
        match written {
            Ok(()) => {
                w.len += chunk_bytes;
                Ok(())
            }
            Err(source) => {
                let _ = w.file.set_len(w.len);
                w.rows = w.rows.saturating_sub(lost as usize);
                self.rows = self.rows.saturating_sub(lost);
                self.bytes = self.bytes.saturating_sub(chunk_bytes);
                let file = w.path.clone();
                // A new file next time: this one may be damaged past its whole rows.
                if let Some(w) = self.writer.take() {
                    if w.rows > 0 {
                        self.files.push_back((w.path, w.rows as u64));
                    } else {
                        let _ = std::fs::remove_file(&w.path);
                    }
                }
                Err(SpillError { lost, file, source })
            }
        }
    }

    fn close_writer(&mut self) -> Result<(), SpillError> {
        self.flush()?;
        if let Some(w) = self.writer.take() {
            if w.rows > 0 {
                self.files.push_back((w.path, w.rows as u64));
            } else {
                let _ = std::fs::remove_file(&w.path);
            }
        }
        Ok(())
    }

    /// Reads the oldest file's rows into `into` (the file stays until [`done`]).
    /// Returns the file, or `None` when nothing is loaded. Rows that cannot be had (a
    /// failed final write of the file being written, a file that cannot be read, rows
    /// missing from it) are reported to `on_lost`; an unreadable file stays on disk for
    /// a later run.
    ///
    /// [`done`]: Self::done
    pub fn load_oldest(
        &mut self,
        into: &mut VecDeque<SinkRow>,
        mut on_lost: impl FnMut(SpillError),
    ) -> Option<PathBuf> {
        if self.files.is_empty() {
            if let Err(e) = self.close_writer() {
                on_lost(e);
            }
        }
        let (path, count) = self.files.pop_front()?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(source) => {
                // Left on disk (a later run tries it again), but not retried forever here.
                self.rows = self.rows.saturating_sub(count);
                on_lost(SpillError {
                    lost: count,
                    file: path.clone(),
                    source,
                });
                return None;
            }
        };
        let before = into.len();
        decode(&path, &bytes, |row| into.push_back(row));
        let loaded = (into.len() - before) as u64;
        self.rows = self.rows.saturating_sub(count);
        if loaded < count {
            on_lost(SpillError {
                lost: count - loaded,
                file: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "rows missing from the file"),
            });
        }
        Some(path)
    }

    /// A loaded file's rows are all stored: delete it.
    pub fn done(&mut self, path: &Path) -> std::io::Result<()> {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(path)?;
        self.bytes = self.bytes.saturating_sub(len);
        Ok(())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "questdb sink: rows lost: cannot write a spill file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::{InstrumentId, Price, Qty};

    fn row(n: i64) -> SinkRow {
        SinkRow::Quote {
            ts: n,
            seq: n as u64,
            instrument: InstrumentId(0),
            bid: Price(n),
            bid_qty: Qty(1),
            ask: Price(n + 1),
            ask_qty: Qty(1),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sbz-spill-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn rows_come_back_in_order_across_files_and_runs() {
        let d = dir("order");
        let mut s = Spill::open(&d).unwrap();
        assert!(!s.is_active());
        for n in 0..(FILE_ROWS as i64 + 10) {
            s.append(&row(n)).unwrap();
        }
        assert!(s.is_active());
        s.flush().unwrap();
        // A new run finds the files and drains them oldest first.
        drop(s);
        let mut s = Spill::open(&d).unwrap();
        let mut got = VecDeque::new();
        let first = s.load_oldest(&mut got, |e| panic!("{e}")).unwrap();
        assert_eq!(got.len(), FILE_ROWS);
        assert_eq!(got.front(), Some(&row(0)));
        s.done(&first).unwrap();
        got.clear();
        let second = s.load_oldest(&mut got, |e| panic!("{e}")).unwrap();
        assert_eq!(
            got.iter().copied().collect::<Vec<_>>(),
            (FILE_ROWS as i64..FILE_ROWS as i64 + 10).map(row).collect::<Vec<_>>()
        );
        s.done(&second).unwrap();
        assert!(!s.is_active());
        assert_eq!(s.bytes(), 0);
        assert!(s.load_oldest(&mut got, |e| panic!("{e}")).is_none());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_row_cut_short_by_a_crash_is_skipped_and_the_rest_kept() {
        let d = dir("torn");
        let mut s = Spill::open(&d).unwrap();
        for n in 0..10 {
            s.append(&row(n)).unwrap();
        }
        s.flush().unwrap();
        drop(s);
        let file = std::fs::read_dir(&d).unwrap().next().unwrap().unwrap().path();
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut s = Spill::open(&d).unwrap();
        let mut got = VecDeque::new();
        s.load_oldest(&mut got, |e| panic!("{e}")).unwrap();
        assert_eq!(got.len(), 9, "the nine complete rows");
        assert_eq!(got.back(), Some(&row(8)));
        let _ = std::fs::remove_dir_all(d);
    }

    /// A tmpfs of `size` mounted at a fresh directory, unmounted when dropped.
    struct SmallDisk(PathBuf);

    impl SmallDisk {
        /// `None` when this process may not mount (not root): the full-disk test needs
        /// a real full file system (CI runs as root).
        fn mount(name: &str, size: &str) -> Option<Self> {
            let d = dir(name);
            std::fs::create_dir_all(&d).unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&d)
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(Self(d))
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_full_disk_loses_only_the_rows_it_refused_counted_and_the_files_stay_whole() {
        let Some(disk) = SmallDisk::mount("full", "4m") else {
            eprintln!("SKIPPED: mounting a small tmpfs needs root");
            return;
        };
        let mut s = Spill::open(&disk.0).unwrap();
        let total = 400_000u64;
        let mut lost = 0u64;
        for n in 0..total {
            if let Err(e) = s.append(&row(n as i64)) {
                lost += e.lost;
            }
        }
        if let Err(e) = s.flush() {
            lost += e.lost;
        }
        assert!(lost > 0, "the disk filled up");
        assert!(s.rows() > 0, "rows before it are kept");
        assert_eq!(s.rows() + lost, total, "every row is spilled or counted lost");
        let kept = s.rows();
        drop(s);
        // The files hold whole rows only, in order: a new run reads all of them back.
        let mut s = Spill::open(&disk.0).unwrap();
        assert_eq!(s.rows(), kept);
        let mut got = VecDeque::new();
        while let Some(path) = s.load_oldest(&mut got, |e| panic!("{e}")) {
            s.done(&path).unwrap();
        }
        assert_eq!(got.len() as u64, kept);
        let ts: Vec<i64> = got.iter().map(SinkRow::ts).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "in order, nothing damaged");
        assert!(!s.is_active());
    }
}
