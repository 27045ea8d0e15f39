//! Replay protection for signed requests: each signature is accepted once. A signature
//! is remembered for twice the timestamp window (after that the timestamp check alone
//! refuses it). With `[redis]` the store is shared by every API node (`SET NX PX` on
//! `nonce:{key_id}:{signature}`); without it, a bounded map in this process.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::redis_store::{RedisDown, RedisStore};

/// Signatures remembered in process at most; past it, new signed requests are refused
/// (503) until old ones expire, rather than forgetting one that could be replayed.
const LOCAL_CAPACITY: usize = 1 << 20;

pub enum NonceStore {
    Local(Mutex<HashMap<String, i64>>),
    Redis(Arc<RedisStore>),
}

/// Whether a signature is new.
#[derive(Debug, PartialEq, Eq)]
pub enum Nonce {
    Fresh,
    Replayed,
}

#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    #[error("replay protection store unavailable: {0}")]
    Down(String),
    #[error("too many signed requests in the replay window: retry shortly")]
    Full,
}

impl From<RedisDown> for NonceError {
    fn from(e: RedisDown) -> Self {
        NonceError::Down(e.0)
    }
}

impl NonceStore {
    pub fn local() -> Self {
        NonceStore::Local(Mutex::new(HashMap::new()))
    }

    /// Records `signature` from `key_id` for `ttl_ms`; `Replayed` when it was seen.
    pub async fn check(&self, key_id: &str, signature: &str, now_ms: i64, ttl_ms: i64) -> Result<Nonce, NonceError> {
        let key = format!("nonce:{key_id}:{}", signature.to_ascii_lowercase());
        match self {
            NonceStore::Local(map) => {
                let mut map = map.lock();
                if let Some(&expiry) = map.get(&key) {
                    if expiry > now_ms {
                        return Ok(Nonce::Replayed);
                    }
                }
                if map.len() >= LOCAL_CAPACITY {
                    map.retain(|_, expiry| *expiry > now_ms);
                    if map.len() >= LOCAL_CAPACITY {
                        return Err(NonceError::Full);
                    }
                }
                map.insert(key, now_ms + ttl_ms);
                Ok(Nonce::Fresh)
            }
            NonceStore::Redis(redis) => {
                let set: Option<String> = redis
                    .query(
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(1)
                            .arg("NX")
                            .arg("PX")
                            .arg(ttl_ms)
                            .to_owned(),
                    )
                    .await?;
                Ok(if set.is_some() { Nonce::Fresh } else { Nonce::Replayed })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn once_then_replayed_until_it_expires() {
        let s = NonceStore::local();
        assert_eq!(s.check("k", "ab", 1_000, 10_000).await.unwrap(), Nonce::Fresh);
        assert_eq!(s.check("k", "AB", 5_000, 10_000).await.unwrap(), Nonce::Replayed);
        assert_eq!(s.check("other", "ab", 5_000, 10_000).await.unwrap(), Nonce::Fresh);
        assert_eq!(s.check("k", "ab", 11_001, 10_000).await.unwrap(), Nonce::Fresh);
    }
}
