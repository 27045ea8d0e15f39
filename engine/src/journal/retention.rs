//! Journal retention: segments every kept snapshot has left behind are archived or
//! deleted, so the journal's directory does not grow without bound.
//!
//! Recovery loads the newest snapshot that checks out and falls back to older ones
//! (`snapshots_kept` of them, at least two with retention on), each needing the
//! records after it. So nothing goes until two snapshots exist (one damaged snapshot
//! always leaves something to recover from), the floor is the **oldest** kept
//! snapshot's record minus a configured margin, and only segments whose every record
//! is at or below it go: the segment holding the record after the floor,
//! and every later one, stay (the newest segment always stays). Run by the snapshot
//! thread right after it wrote (and pruned) snapshots, never by the engine thread.
//!
//! Once segments are gone a full replay is impossible: recovery then needs a snapshot
//! at or after the first kept record minus one and says so
//! ([`super::JournalError::Trimmed`]). The hash chain stays verifiable from the first
//! kept segment: its header carries the hash of the record before it (covered by the
//! header's checksum), the anchor `stocksblitz journal verify` checks the rest from and
//! reports; every kept snapshot's chain hash is checked against the same chain.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::JournalError;
use super::reader::segments;
use super::snapshot;

/// What happens to segments no kept snapshot needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetentionAction {
    /// Never remove a segment (the default).
    #[default]
    Keep,
    /// Move them to `<dir>/archive/` (same file system: a rename), for an operator or
    /// a backup to take away.
    Archive,
    /// Delete them.
    Delete,
}

/// `[orders.journal] retention` and `retention_margin_records`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub action: RetentionAction,
    /// Records kept before the oldest kept snapshot, on top of what it needs.
    pub margin_records: u64,
}

/// The archive directory inside a journal directory.
pub const ARCHIVE_DIR: &str = "archive";

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Segments archived or deleted, oldest first.
    pub removed: Vec<PathBuf>,
    /// The first record the journal's directory still holds (1 when untrimmed, or with
    /// no segment).
    pub first_kept: u64,
}

/// The record below which no kept snapshot (nor the margin) needs anything: segments
/// whose last record is at or below it may go. `None`: keep everything, which is the
/// case while fewer than two snapshots exist (a damaged newest snapshot must always
/// leave an older one, or a full replay, to recover from).
pub fn floor(dir: &Path, margin_records: u64) -> Result<Option<u64>, JournalError> {
    let snapshots = snapshot::list(dir)?;
    if snapshots.len() < 2 {
        return Ok(None);
    }
    let oldest = snapshots.last().map(|(seq, _)| *seq);
    Ok(oldest.map(|seq| seq.saturating_sub(margin_records)))
}

/// Archives or deletes every segment wholly at or below [`floor`]; never the newest
/// segment. Syncs the directories so a crash cannot bring a removed segment back
/// half-way (a removed segment reappearing whole is harmless).
/// `hold`: the first record a consumer of the journal (the QuestDB sink's order
/// export) has not yet taken; nothing from it on goes (`u64::MAX`: no consumer).
pub fn apply(dir: &Path, retention: &Retention, hold: u64) -> Result<Trimmed, JournalError> {
    let segs = segments(dir)?;
    let mut out = Trimmed {
        removed: Vec::new(),
        first_kept: segs.first().map_or(1, |s| s.first_seq),
    };
    if retention.action == RetentionAction::Keep {
        return Ok(out);
    }
    let Some(floor) = floor(dir, retention.margin_records)? else {
        return Ok(out);
    };
    let floor = floor.min(hold.saturating_sub(1));
    // Segment i holds records first_seq(i) ..= first_seq(i + 1) - 1.
    let removable = segs
        .windows(2)
        .take_while(|w| w[1].first_seq <= floor.saturating_add(1))
        .count();
    if removable == 0 {
        return Ok(out);
    }
    let archive = dir.join(ARCHIVE_DIR);
    if retention.action == RetentionAction::Archive {
        std::fs::create_dir_all(&archive).map_err(|e| JournalError::io(&archive, e))?;
    }
    for seg in &segs[..removable] {
        match retention.action {
            RetentionAction::Archive => {
                let Some(name) = seg.path.file_name() else {
                    continue;
                };
                let to = archive.join(name);
                std::fs::rename(&seg.path, &to).map_err(|e| JournalError::io(&to, e))?;
            }
            RetentionAction::Delete => {
                std::fs::remove_file(&seg.path).map_err(|e| JournalError::io(&seg.path, e))?;
            }
            RetentionAction::Keep => {}
        }
        out.removed.push(seg.path.clone());
    }
    out.first_kept = segs[removable].first_seq;
    if retention.action == RetentionAction::Archive {
        sync_dir(&archive)?;
    }
    sync_dir(dir)?;
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))
}
