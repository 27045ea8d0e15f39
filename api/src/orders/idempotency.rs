//! `Idempotency-Key` for order entry, in process (the embedded default; a Redis-backed
//! store comes with the durability issue). Per account and key: the first request's
//! body fingerprint and, once answered, its response. The same key with the same body
//! returns the original response; with a different body 422; while the first is still
//! in flight 409. Entries expire after 24 hours; the table is bounded.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use parking_lot::Mutex;
use stocksblitz_engine::orders::AccountId;

const TTL: Duration = Duration::from_secs(24 * 3600);
/// The same bound as the journaled answers the read model keeps.
const MAX_ENTRIES: usize = stocksblitz_engine::orders::store::KEYED_MAX;
/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 128;

#[derive(Clone)]
enum State {
    InFlight,
    Done {
        status: StatusCode,
        body: serde_json::Value,
    },
}

struct Entry {
    fingerprint: u64,
    created: Instant,
    state: State,
}

/// What to do with a request carrying a key.
pub enum Claim {
    /// First use: go ahead, then [`Idempotency::finish`].
    Proceed,
    /// Seen with the same body: answer this.
    Replay {
        status: StatusCode,
        body: serde_json::Value,
    },
    /// Seen with another body.
    Mismatch,
    /// The first request with this key is still being processed.
    InFlight,
    /// The table is full of live keys.
    Full,
}

#[derive(Default)]
pub struct Idempotency {
    entries: Mutex<HashMap<(AccountId, String), Entry>>,
}

pub fn fingerprint(body: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

impl Idempotency {
    pub fn claim(&self, account: AccountId, key: &str, body: &[u8]) -> Claim {
        let fp = fingerprint(body);
        let now = Instant::now();
        let mut map = self.entries.lock();
        if let Some(e) = map.get(&(account, key.to_owned())) {
            if now.duration_since(e.created) < TTL {
                if e.fingerprint != fp {
                    return Claim::Mismatch;
                }
                return match &e.state {
                    State::InFlight => Claim::InFlight,
                    State::Done { status, body } => Claim::Replay {
                        status: *status,
                        body: body.clone(),
                    },
                };
            }
        }
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| now.duration_since(e.created) < TTL);
            if map.len() >= MAX_ENTRIES {
                return Claim::Full;
            }
        }
        map.insert(
            (account, key.to_owned()),
            Entry {
                fingerprint: fp,
                created: now,
                state: State::InFlight,
            },
        );
        Claim::Proceed
    }

    /// Records the response of a request that [`claim`](Self::claim)ed `key`. An
    /// outcome that is not final (unknown, engine busy) releases the key instead so the
    /// client can retry with it.
    pub fn finish(
        &self,
        account: AccountId,
        key: &str,
        status: StatusCode,
        body: &serde_json::Value,
        final_outcome: bool,
    ) {
        let mut map = self.entries.lock();
        let k = (account, key.to_owned());
        if !final_outcome {
            map.remove(&k);
            return;
        }
        if let Some(e) = map.get_mut(&k) {
            e.state = State::Done {
                status,
                body: body.clone(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_body_replays_other_body_mismatches_in_flight_conflicts() {
        let i = Idempotency::default();
        let a = AccountId(0);
        assert!(matches!(i.claim(a, "k", b"{1}"), Claim::Proceed));
        assert!(matches!(i.claim(a, "k", b"{1}"), Claim::InFlight));
        assert!(matches!(i.claim(a, "k", b"{2}"), Claim::Mismatch));
        i.finish(a, "k", StatusCode::CREATED, &serde_json::json!({"ok":1}), true);
        match i.claim(a, "k", b"{1}") {
            Claim::Replay { status, body } => {
                assert_eq!((status, body), (StatusCode::CREATED, serde_json::json!({"ok":1})))
            }
            _ => panic!("replay"),
        }
        assert!(
            matches!(i.claim(AccountId(1), "k", b"{2}"), Claim::Proceed),
            "keys are per account"
        );
        assert!(matches!(i.claim(a, "retry", b"x"), Claim::Proceed));
        i.finish(
            a,
            "retry",
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({}),
            false,
        );
        assert!(
            matches!(i.claim(a, "retry", b"x"), Claim::Proceed),
            "released after a non-final outcome"
        );
    }
}
