//! Start-up: rebuild the order manager from the journal.
//!
//! Every step is replayed through the same manager code, with the market it saw, and
//! must produce exactly the events that were journaled with it; the first difference
//! stops start-up (the state would no longer be the one traders were told about).
//! Each replayed event is also handed to `on_event`, so the API's read model is
//! rebuilt from the same stream.

use std::path::Path;

use crate::orders::{OrderEvent, OrderManager};

use super::error::JournalError;
use super::reader::{scan, Tail};
use super::record::{decode, Record, FORMAT_VERSION};

/// What recovery found.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub tail: Tail,
    pub steps: u64,
    pub events: u64,
    /// Engine runs recorded (start records).
    pub runs: u64,
}

pub fn recover(
    dir: &Path,
    manager: &mut OrderManager,
    mut on_event: impl FnMut(&OrderEvent),
) -> Result<Recovered, JournalError> {
    let (mut steps, mut events, mut runs) = (0u64, 0u64, 0u64);
    manager.clear();
    let tail = scan(dir, |seq, payload| {
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
                runs += 1;
            }
            Record::Step {
                step,
                events: journaled,
            } => {
                manager.replay(&step);
                if let Some(what) = first_difference(manager.events(), &journaled) {
                    return Err(JournalError::Diverged { seq, what });
                }
                for e in &journaled {
                    on_event(e);
                }
                steps += 1;
                events += journaled.len() as u64;
                manager.clear();
            }
        }
        Ok(())
    })?;
    Ok(Recovered {
        tail,
        steps,
        events,
        runs,
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
