//! Start-up: rebuild the order manager and the read model from the journal.
//!
//! The newest snapshot that checks out (checksum, shapes, state hash, and its place
//! in the journal's hash chain) is loaded, and only the records after it are
//! replayed; a snapshot that does not check out is skipped with a warning, down to a
//! full replay. A journal whose older segments retention removed cannot be replayed
//! in full: with no snapshot that fits it, start-up stops with
//! [`JournalError::Trimmed`], saying what to restore. Every step is replayed through
//! the same manager code, with the market it saw, and must produce exactly the events
//! that were journaled with it; the first difference stops start-up (the state would
//! no longer be the one traders were told about). Start records apply the configured
//! limits the way the run did when it started ([`OrderManager::start_run`]): where the
//! configuration had changed.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::orders::store::OrderStore;
use crate::orders::{AccountId, OrderEvent, OrderManager, RiskLimits};

use super::error::JournalError;
use super::reader::{scan_from, Tail};
use super::record::{decode, Record, FORMAT_VERSION};
use super::snapshot;

/// What recovery found.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub tail: Tail,
    /// Steps and events replayed (after the snapshot, if one was used).
    pub steps: u64,
    pub events: u64,
    /// Start records seen while replaying.
    pub runs: u64,
    /// The record the snapshot used was taken at.
    pub snapshot: Option<u64>,
    /// Snapshots passed over, and why.
    pub skipped: Vec<String>,
    /// Every account's limits as recovered (before this run's configuration applies).
    pub limits: Vec<RiskLimits>,
    /// Time spent reading, restoring and checking snapshots (the skipped ones too).
    pub load_time: Duration,
    /// Time spent replaying the records after the snapshot.
    pub replay_time: Duration,
    /// Accounts whose configured limits changed since the last run and so replaced
    /// the recovered ones (set by [`super::open`]; empty after [`recover`]).
    pub reconfigured: Vec<AccountId>,
}

/// Counts while replaying.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Replayed {
    pub steps: u64,
    pub events: u64,
    pub runs: u64,
}

/// Applies one journal record to the manager and the read model, checking that a
/// step's replay reproduces its journaled events.
pub(crate) fn apply_record(
    manager: &mut OrderManager,
    store: &mut OrderStore,
    seq: u64,
    payload: &[u8],
    counts: &mut Replayed,
) -> Result<(), JournalError> {
    let record = decode(payload).map_err(|e| JournalError::Undecodable {
        seq,
        what: e.to_string(),
    })?;
    match record {
        Record::Start(start) => {
            if start.format > FORMAT_VERSION {
                return Err(JournalError::Undecodable {
                    seq,
                    what: format!(
                        "written in journal format {} by engine {}; this engine reads format {FORMAT_VERSION}",
                        start.format, start.engine
                    ),
                });
            }
            manager.start_run(&start.limits);
            counts.runs += 1;
        }
        Record::Owned(owned) => manager.set_owned(owned.as_deref()),
        Record::Step {
            step,
            events: journaled,
        } => {
            // A journal of another shard would diverge at its first id: say why.
            crate::orders::shard::check_events(&journaled, manager.shard())
                .map_err(|source| JournalError::Shard { seq, source })?;
            manager.replay(&step);
            if let Some(what) = first_difference(manager.events(), &journaled) {
                return Err(JournalError::Diverged { seq, what });
            }
            store.apply_step(&step, &journaled);
            counts.steps += 1;
            counts.events += journaled.len() as u64;
            manager.clear();
        }
    }
    Ok(())
}

/// Recovers `manager` and `store` (both as configured, with nothing recovered yet)
/// from the journal in `dir`. History replays with the instruments it owned: the
/// manager starts owning all, as a journal does, and the journal's
/// [`Record::Owned`] records (and snapshots) say what changed.
pub fn recover(dir: &Path, manager: &mut OrderManager, store: &mut OrderStore) -> Result<Recovered, JournalError> {
    manager.clear();
    manager.set_owned(None);
    let started = Instant::now();
    let pristine = (manager.clone(), store.clone());
    let mut skipped = Vec::new();
    for (_, path) in snapshot::list(dir)? {
        match from_snapshot(dir, &path, manager, store, started) {
            Ok((mut r, seq)) => {
                r.snapshot = Some(seq);
                r.skipped = skipped;
                return Ok(r);
            }
            Err(e) if is_snapshot_problem(&e) => {
                tracing::warn!(snapshot = %path.display(), error = %e, "snapshot skipped: recovering from an older one");
                skipped.push(format!("{}: {e}", path.display()));
                (*manager, *store) = pristine.clone();
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(first) = super::reader::segments(dir)?.first().filter(|s| s.first_seq > 1) {
        let tried = if skipped.is_empty() {
            "there is no snapshot".to_owned()
        } else {
            format!("no snapshot fits it ({})", skipped.join("; "))
        };
        return Err(JournalError::Trimmed {
            dir: dir.to_path_buf(),
            first_seq: first.first_seq,
            what: format!(
                "A full replay needs every record from 1, and {tried}. Restore into {} a snapshot taken at record \
                 {} or later (snapshot-*.sbzs from a backup of this journal), or the removed segments (from its \
                 {}/ subdirectory if retention archived them, or from a backup)",
                dir.display(),
                first.first_seq - 1,
                super::retention::ARCHIVE_DIR,
            ),
        });
    }
    let mut r = replay(dir, None, manager, store, started.elapsed())?;
    r.skipped = skipped;
    Ok(r)
}

/// Errors that condemn a snapshot rather than the journal: recovery tries the next.
fn is_snapshot_problem(e: &JournalError) -> bool {
    matches!(
        e,
        JournalError::SnapshotMismatch(_) | JournalError::Diverged { .. } | JournalError::Snapshot(_)
    )
}

fn from_snapshot(
    dir: &Path,
    path: &Path,
    manager: &mut OrderManager,
    store: &mut OrderStore,
    started: Instant,
) -> Result<(Recovered, u64), JournalError> {
    let bad = |what: String| JournalError::Snapshot(format!("{}: {what}", path.display()));
    let snap = snapshot::read(path).map_err(|e| bad(e.to_string()))?;
    manager.restore_image(snap.image()).map_err(|e| bad(e.to_string()))?;
    if manager.state_hash() != snap.state {
        return Err(bad("the restored state does not match the snapshot's state hash".into()));
    }
    // A sound snapshot of another shard: every older one and the journal are too.
    manager
        .check_shard()
        .map_err(|source| JournalError::Shard { seq: snap.seq, source })?;
    let restored: OrderStore = postcard::from_bytes(snap.store()).map_err(|e| bad(format!("read model: {e}")))?;
    if !restored.fits(store) {
        return Err(bad("the read model was taken with a different account count".into()));
    }
    *store = restored;
    let r = replay(dir, Some((snap.seq, snap.chain)), manager, store, started.elapsed())?;
    Ok((r, snap.seq))
}

fn replay(
    dir: &Path,
    after: Option<(u64, super::format::Hash)>,
    manager: &mut OrderManager,
    store: &mut OrderStore,
    load_time: Duration,
) -> Result<Recovered, JournalError> {
    let started = Instant::now();
    let mut counts = Replayed::default();
    let tail = scan_from(dir, after, |seq, payload| {
        apply_record(manager, store, seq, payload, &mut counts)
    })?;
    Ok(Recovered {
        tail,
        steps: counts.steps,
        events: counts.events,
        runs: counts.runs,
        snapshot: None,
        skipped: Vec::new(),
        limits: manager.limits(),
        load_time,
        replay_time: started.elapsed(),
        reconfigured: Vec::new(),
    })
}

fn first_difference(replayed: &[OrderEvent], journaled: &[OrderEvent]) -> Option<String> {
    for (i, (r, j)) in replayed.iter().zip(journaled).enumerate() {
        if r != j {
            return Some(format!("event {i} of the step: journaled {j:?}, replay produced {r:?}"));
        }
    }
    (replayed.len() != journaled.len()).then(|| {
        format!(
            "the step journaled {} events, replay produced {}",
            journaled.len(),
            replayed.len()
        )
    })
}
