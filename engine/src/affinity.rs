//! Pinning threads to cores (thread-per-core).
//!
//! A pinned feed or engine thread keeps its caches warm and is never migrated mid-burst.
//! A core named in config that does not exist is a start-up error, not a silent
//! "run unpinned": the operator asked for it.
//!
//! The list of usable cores is read once, on first use (config validation, on the main
//! thread before anything is pinned): the OS reports the *calling thread's* mask, and a
//! thread spawned by a pinned thread inherits that single core.

use std::sync::OnceLock;

/// Why a thread could not be pinned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AffinityError {
    #[error("core {core} does not exist: this machine has cores 0..{available}")]
    NoSuchCore { core: usize, available: usize },
    #[error("the OS refused to pin the thread to core {0}")]
    Refused(usize),
    #[error("this platform does not report its cores")]
    Unsupported,
}

fn usable() -> Option<&'static [usize]> {
    static CORES: OnceLock<Option<Vec<usize>>> = OnceLock::new();
    CORES
        .get_or_init(|| core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect()))
        .as_deref()
}

/// Number of cores the process may use.
pub fn available_cores() -> usize {
    usable().map_or(0, <[usize]>::len)
}

/// Checks that `core` exists, without pinning anything (for config validation).
pub fn check_core(core: usize) -> Result<(), AffinityError> {
    let ids = usable().ok_or(AffinityError::Unsupported)?;
    if ids.contains(&core) {
        Ok(())
    } else {
        Err(AffinityError::NoSuchCore {
            core,
            available: ids.len(),
        })
    }
}

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> Result<(), AffinityError> {
    check_core(core)?;
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(AffinityError::Refused(core))
    }
}
