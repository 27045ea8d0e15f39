//! Spill files: rows that do not fit in memory while the server is slow or down,
//! written in arrival order and drained oldest first when it is back.
//!
//! A file is a sequence of postcard-encoded rows, `spill-<n>.rows`, at most
//! [`FILE_ROWS`] rows. A file being drained is deleted only after all its rows were
//! stored, so a crash re-sends them (the tables' DEDUP keys make that harmless) rather
//! than losing them. Files left by an earlier run are drained first. Written, not
//! fsynced: a process crash loses nothing, a power cut can lose the OS's unwritten
//! pages.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::row::SinkRow;

/// Rows per spill file.
pub const FILE_ROWS: usize = 100_000;

pub struct Spill {
    dir: PathBuf,
    /// Closed files, oldest first.
    files: VecDeque<PathBuf>,
    writer: Option<(PathBuf, BufWriter<File>, usize)>,
    next: u64,
    bytes: u64,
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

impl Spill {
    /// Opens the spill directory, picking up files an earlier run left.
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
        Ok(Self {
            dir: dir.to_path_buf(),
            next: found.last().map_or(0, |f| f.0 + 1),
            bytes: found.iter().map(|f| f.2).sum(),
            files: found.into_iter().map(|f| f.1).collect(),
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

    pub fn append(&mut self, row: &SinkRow) -> std::io::Result<()> {
        if self.writer.is_none() {
            let path = self.dir.join(format!("spill-{:020}.rows", self.next));
            self.next += 1;
            let f = OpenOptions::new().create_new(true).append(true).open(&path)?;
            self.writer = Some((path, BufWriter::with_capacity(1 << 20, f), 0));
        }
        self.scratch.clear();
        postcard::to_io(row, &mut self.scratch).map_err(std::io::Error::other)?;
        if let Some((_, w, rows)) = self.writer.as_mut() {
            w.write_all(&self.scratch)?;
            *rows += 1;
            self.bytes += self.scratch.len() as u64;
            if *rows >= FILE_ROWS {
                self.close_writer()?;
            }
        }
        Ok(())
    }

    /// Hands what is buffered to the OS.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match self.writer.as_mut() {
            Some((_, w, _)) => w.flush(),
            None => Ok(()),
        }
    }

    fn close_writer(&mut self) -> std::io::Result<()> {
        if let Some((path, mut w, _)) = self.writer.take() {
            w.flush()?;
            self.files.push_back(path);
        }
        Ok(())
    }

    /// Reads the oldest file's rows into `into` (the file stays until [`done`]).
    /// Returns the file, or `None` when nothing is spilled.
    ///
    /// [`done`]: Self::done
    pub fn load_oldest(&mut self, into: &mut VecDeque<SinkRow>) -> std::io::Result<Option<PathBuf>> {
        if self.files.is_empty() {
            self.close_writer()?;
        }
        let Some(path) = self.files.pop_front() else {
            return Ok(None);
        };
        let bytes = std::fs::read(&path)?;
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            match postcard::take_from_bytes::<SinkRow>(rest) {
                Ok((row, tail)) => {
                    into.push_back(row);
                    rest = tail;
                }
                Err(e) => {
                    // A row cut short by a crash mid-write: everything before it counts.
                    tracing::warn!(file = %path.display(), bytes = rest.len(), error = %e, "spill file ends in a partial row");
                    break;
                }
            }
        }
        Ok(Some(path))
    }

    /// A loaded file's rows are all stored: delete it.
    pub fn done(&mut self, path: &Path) -> std::io::Result<()> {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(path)?;
        self.bytes = self.bytes.saturating_sub(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::{InstrumentId, Price, Qty};

    fn row(n: i64) -> SinkRow {
        SinkRow::Quote {
            ts: n,
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
        let first = s.load_oldest(&mut got).unwrap().unwrap();
        assert_eq!(got.len(), FILE_ROWS);
        assert_eq!(got.front(), Some(&row(0)));
        s.done(&first).unwrap();
        got.clear();
        let second = s.load_oldest(&mut got).unwrap().unwrap();
        assert_eq!(
            got.iter().copied().collect::<Vec<_>>(),
            (FILE_ROWS as i64..FILE_ROWS as i64 + 10).map(row).collect::<Vec<_>>()
        );
        s.done(&second).unwrap();
        assert!(!s.is_active());
        assert_eq!(s.bytes(), 0);
        assert!(s.load_oldest(&mut got).unwrap().is_none());
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
        s.load_oldest(&mut got).unwrap().unwrap();
        assert_eq!(got.len(), 9, "the nine complete rows");
        assert_eq!(got.back(), Some(&row(8)));
        let _ = std::fs::remove_dir_all(d);
    }
}
