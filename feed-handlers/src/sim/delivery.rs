//! What a venue's clients have still to receive.
//!
//! A test compares a handler's book with the venue's true book while the venue is
//! paused, but pausing stops only the market: what was already rendered is still on its
//! way, held back by a `slow` or `lag` fault or queued behind a busy socket, and may be
//! for other instruments than the one compared. Guessing from the client's side when
//! nothing more is coming is wrong under exactly those faults, so the simulator says:
//! every broadcast batch is numbered, every session records the last batch it has
//! handed to its socket, and `GET /control/in_flight/{venue}` reports how many sessions
//! are still behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

/// One step of a venue's market, rendered, as broadcast to its sessions.
#[derive(Debug)]
pub struct Batch {
    /// 1, 2, ... in broadcast order, per venue.
    pub seq: u64,
    pub msgs: Vec<super::Outgoing>,
}

/// The numbering of a venue's batches and what each live session has delivered.
#[derive(Debug, Default)]
pub struct Delivery {
    numbered: AtomicU64,
    next_session: AtomicU64,
    sessions: Arc<Mutex<HashMap<u64, Arc<AtomicU64>>>>,
}

/// `GET /control/in_flight/{venue}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InFlight {
    /// Batches broadcast so far.
    pub batches: u64,
    /// Live sessions.
    pub sessions: usize,
    /// Live sessions that have not yet handed every batch to their socket.
    pub behind: usize,
}

impl Delivery {
    /// Numbers the next batch; called just before it is broadcast, so a session that
    /// receives a batch has always seen its number counted.
    pub fn number(&self) -> u64 {
        self.numbered.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Starts tracking a session whose receiver is already subscribed: batches numbered
    /// from now on are its to deliver; earlier ones it counts as delivered.
    pub fn track(&self) -> Tracked {
        let delivered = Arc::new(AtomicU64::new(self.numbered.load(Ordering::SeqCst)));
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().insert(id, Arc::clone(&delivered));
        Tracked {
            id,
            delivered,
            sessions: Arc::clone(&self.sessions),
        }
    }

    pub fn in_flight(&self) -> InFlight {
        let batches = self.numbered.load(Ordering::SeqCst);
        let sessions = self.sessions.lock();
        InFlight {
            batches,
            sessions: sessions.len(),
            behind: sessions.values().filter(|d| d.load(Ordering::SeqCst) < batches).count(),
        }
    }
}

/// One session's record of what it has delivered; forgotten when the session ends.
#[derive(Debug)]
pub struct Tracked {
    id: u64,
    delivered: Arc<AtomicU64>,
    sessions: Arc<Mutex<HashMap<u64, Arc<AtomicU64>>>>,
}

impl Tracked {
    /// Batch `seq` (and every one before it) has been handed to the socket or had
    /// nothing for this client.
    pub fn delivered(&self, seq: u64) {
        self.delivered.fetch_max(seq, Ordering::SeqCst);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_behind_until_it_delivers_the_last_batch_and_forgotten_when_gone() {
        let d = Delivery::default();
        d.number();
        let a = d.track();
        assert_eq!(
            d.in_flight(),
            InFlight {
                batches: 1,
                sessions: 1,
                behind: 0
            }
        );
        let (s2, s3) = (d.number(), d.number());
        let b = d.track();
        assert_eq!(
            d.in_flight(),
            InFlight {
                batches: 3,
                sessions: 2,
                behind: 1
            }
        );
        a.delivered(s2);
        assert_eq!(d.in_flight().behind, 1);
        a.delivered(s3);
        assert_eq!(d.in_flight().behind, 0);
        // Out of order cannot move it back.
        a.delivered(s2);
        assert_eq!(d.in_flight().behind, 0);
        d.number();
        drop(a);
        assert_eq!(
            d.in_flight(),
            InFlight {
                batches: 4,
                sessions: 1,
                behind: 1
            }
        );
        drop(b);
        assert_eq!(
            d.in_flight(),
            InFlight {
                batches: 4,
                sessions: 0,
                behind: 0
            }
        );
    }
}
