//! What can go wrong with the journal, in words an operator can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "journal {path} is corrupt at byte {offset}: {what}. Nothing after it can be trusted; restore the \
         directory from a backup or move it aside (the engine will not start on a damaged journal)"
    )]
    Corrupt { path: PathBuf, offset: u64, what: String },
    #[error(
        "journal replay diverged at record {seq}: {what}. The configuration changed in a way that alters past \
         decisions (instruments, accounts, limits or max_orders), or the engine changed behaviour; start with \
         the configuration the journal was written with"
    )]
    Diverged { seq: u64, what: String },
    /// A snapshot does not fit the journal (recovery then uses an older one, or none).
    #[error("snapshot does not match the journal: {0}")]
    SnapshotMismatch(String),
    /// A snapshot file that cannot be used (damaged, other configuration).
    #[error("snapshot unusable: {0}")]
    Snapshot(String),
    /// The journal's first kept segment does not start at record 1 (retention removed
    /// the ones before it, or they were lost) and what was asked needs them.
    #[error(
        "the order journal in {dir} starts at record {first_seq}: the segments before it were removed by \
         retention ([orders.journal] retention) or lost. {what}"
    )]
    Trimmed { dir: PathBuf, first_seq: u64, what: String },
    /// The journal (or its snapshot) was written by another engine shard than
    /// `cluster.shard` says this one is.
    #[error("{source} (at journal record {seq})")]
    Shard {
        seq: u64,
        #[source]
        source: crate::orders::ShardMismatch,
    },
    #[error("journal record {seq} cannot be read: {what}")]
    Undecodable { seq: u64, what: String },
    #[error("journal record {seq} could not be encoded: {what}")]
    Encode { seq: u64, what: String },
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        JournalError::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }
}
