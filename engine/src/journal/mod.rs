//! The order journal: durability for everything the order path does (SPEC section 5).
//!
//! The engine hands each order-manager step (a command, or a quote, trade or timer
//! tick that changed something) and its events to the journal thread over an SPSC
//! ring. The thread appends them as checksummed, hash-chained records to segment
//! files, commits in groups under the fsync policy, and only then forwards the events
//! to the API, which acknowledges orders from them. Start-up replays the journal
//! through the same manager code to rebuild orders, books, positions and risk usage.
//!
//! - [`format`]: bytes on disk; [`record`]: what a record holds;
//! - [`reader`]: scanning, verification and the torn-tail rule;
//! - [`writer`]: appends, group commit, fsync policy, rotation;
//! - [`thread`]: the journal thread; [`recovery`]: replay at start-up.

pub mod error;
pub mod format;
pub mod reader;
pub mod record;
pub mod recovery;
pub mod stats;
pub mod thread;
pub mod writer;

use std::path::Path;

pub use error::JournalError;
pub use reader::{scan, Tail, TornTail};
pub use record::{Record, RecordRef, RunStart, FORMAT_VERSION};
pub use recovery::{recover, Recovered};
pub use stats::JournalStats;
pub use thread::JournalThread;
pub use writer::{FsyncPolicy, JournalWriter};

use crate::orders::{OrderEvent, OrderManager};

/// Recovers `manager` from the journal in `dir` (creating an empty one if there is
/// none), then opens it for appending and records the start of this run.
pub fn open(
    dir: &Path,
    policy: FsyncPolicy,
    segment_bytes: u64,
    manager: &mut OrderManager,
    run: &RunStart,
    on_event: impl FnMut(&OrderEvent),
) -> Result<(JournalWriter, Recovered), JournalError> {
    let recovered = recover(dir, manager, on_event)?;
    let mut writer = JournalWriter::open(dir, &recovered.tail, policy, segment_bytes)?;
    writer.append(&RecordRef::Start(run))?;
    writer.commit()?;
    writer.sync()?;
    Ok((writer, recovered))
}
