//! Where buckets live: a bounded map in this process, or Redis (one key per caller,
//! updated atomically by a Lua script on Redis's own clock), so every API node
//! shares one bucket per caller.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::gcra::{self, Decision, Rate};
use crate::redis_store::{RedisDown, RedisStore};

/// The GCRA step inside Redis: KEYS[1] the bucket, ARGV[1] interval, ARGV[2] capacity
/// (both microseconds). Returns {allowed, spare-or-wait, lead}.
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local clamped = false
if tat > now + capacity then tat = now + capacity; clamped = true end
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - capacity
if now < allow_at then
  if clamped then redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1) end
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, now + capacity - new_tat, new_tat - now}
";

/// Who owns a bucket, for eviction: anonymous buckets (keyed by address) never push
/// out an account's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Anonymous,
    Account,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    tat: i64,
    class: Class,
}

/// A bounded table of buckets. When it is full, a newcomer first sweeps buckets that
/// are full again (idle: the same as no entry); if none are, the least-used eighth of
/// the anonymous buckets goes (closest to full, so the least credit is handed back).
/// An account newcomer may also evict the least-used account when no anonymous bucket
/// is left; an anonymous newcomer never does, and is refused instead.
pub struct LocalBuckets {
    map: Mutex<HashMap<String, Slot>>,
    /// After a sweep found no room for an anonymous newcomer: refuse the next ones
    /// without sweeping again until then (a flood must not cost a full scan each).
    no_room_until_us: Mutex<i64>,
    max_keys: usize,
}

/// How long a table found full of live account buckets refuses addresses unswept.
const NO_ROOM_US: i64 = 100_000;

/// Buckets evicted at once when the table is full of live ones: one sweep pays for
/// this many newcomers.
const EVICT_DIVISOR: usize = 8;

impl LocalBuckets {
    pub fn new(max_keys: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            no_room_until_us: Mutex::new(i64::MIN),
            max_keys: max_keys.max(1),
        }
    }

    /// `None`: the table is full of live account buckets and the newcomer is anonymous
    /// (refuse it).
    pub fn check(&self, key: &str, class: Class, rate: Rate, now_us: i64) -> Option<Decision> {
        let mut map = self.map.lock();
        let tat = map.get(key).map(|s| s.tat);
        if tat.is_none() && map.len() >= self.max_keys {
            let mut no_room_until = self.no_room_until_us.lock();
            if class == Class::Anonymous && now_us < *no_room_until {
                return None;
            }
            if !make_room(&mut map, self.max_keys, class, now_us) {
                *no_room_until = now_us.saturating_add(NO_ROOM_US);
                return None;
            }
        }
        let (d, new_tat) = gcra::check(rate, tat, now_us);
        if let Some(t) = new_tat {
            map.insert(key.to_owned(), Slot { tat: t, class });
        }
        Some(d)
    }

    /// Without spending: seconds until `key` may spend again (0: it may now).
    pub fn wait_secs(&self, key: &str, rate: Rate, now_us: i64) -> u64 {
        let map = self.map.lock();
        let Some(tat) = map.get(key).map(|s| s.tat) else {
            return 0;
        };
        let allow_at = tat.max(now_us) + rate.interval_us() - rate.capacity_us();
        if now_us < allow_at {
            ((allow_at - now_us) as u64).div_ceil(1_000_000).max(1)
        } else {
            0
        }
    }

    /// How many buckets the table holds at most.
    pub fn capacity(&self) -> usize {
        self.max_keys
    }

    /// Buckets held (constant time, unlike [`Self::len`]).
    pub fn held(&self) -> usize {
        self.map.lock().len()
    }

    /// Buckets held, by class (anonymous, account).
    pub fn len(&self) -> (usize, usize) {
        let map = self.map.lock();
        let anon = map.values().filter(|s| s.class == Class::Anonymous).count();
        (anon, map.len() - anon)
    }
}

/// Frees at least one slot for a `class` newcomer; false if it may not have one.
fn make_room(map: &mut HashMap<String, Slot>, max_keys: usize, class: Class, now_us: i64) -> bool {
    // A bucket whose TAT has passed is full: the same as no entry.
    map.retain(|_, s| s.tat > now_us);
    if map.len() < max_keys {
        return true;
    }
    let victims = if map.values().any(|s| s.class == Class::Anonymous) {
        Class::Anonymous
    } else if class == Class::Account {
        Class::Account
    } else {
        return false;
    };
    let mut tats: Vec<i64> = map.values().filter(|s| s.class == victims).map(|s| s.tat).collect();
    // Addresses go an eighth at a time (one sweep pays for many newcomers); accounts
    // (few: configured ones) one at a time, so a full table hands back little credit.
    let n = match victims {
        Class::Anonymous => tats.len().div_ceil(EVICT_DIVISOR).max(1),
        Class::Account => 1,
    };
    let (_, cut, _) = tats.select_nth_unstable(n - 1);
    let cut = *cut;
    let mut left = n;
    map.retain(|_, s| {
        if left > 0 && s.class == victims && s.tat <= cut {
            left -= 1;
            false
        } else {
            true
        }
    });
    map.len() < max_keys
}

pub struct RedisBuckets {
    redis: Arc<RedisStore>,
    script: redis::Script,
}

impl RedisBuckets {
    pub fn new(redis: Arc<RedisStore>) -> Self {
        Self {
            redis,
            script: redis::Script::new(SCRIPT),
        }
    }

    pub async fn check(&self, key: &str, rate: Rate) -> Result<Decision, RedisDown> {
        let mut inv = self.script.key(format!("rl:{key}"));
        inv.arg(rate.interval_us()).arg(rate.capacity_us());
        let (allowed, a, b): (i64, i64, i64) = self.redis.invoke(&inv).await?;
        Ok(gcra::decision(rate, allowed == 1, a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any mix of anonymous and account callers over any table size: the table never
        /// grows past its bound, an account newcomer is always admitted, an account's
        /// bucket is never evicted while anonymous ones exist, and an anonymous newcomer
        /// never evicts an account.
        #[test]
        fn a_full_table_never_locks_out_accounts(
            max_keys in 1usize..40,
            calls in proptest::collection::vec((any::<bool>(), 0u16..200, 0i64..2_000_000), 1..600),
        ) {
            let b = LocalBuckets::new(max_keys);
            let rate = Rate { limit: 10 };
            let mut now = 0i64;
            for (account, id, gap) in calls {
                now += gap;
                let (class, key) = if account {
                    (Class::Account, format!("acct:{}", id % 8))
                } else {
                    (Class::Anonymous, format!("ip:{id}"))
                };
                let before: Vec<(String, Slot)> = b.map.lock().iter().map(|(k, s)| (k.clone(), *s)).collect();
                let had_anon = before.iter().any(|(_, s)| s.class == Class::Anonymous && s.tat > now);
                let d = b.check(&key, class, rate, now);
                let after = b.map.lock();
                prop_assert!(after.len() <= max_keys, "{} > {max_keys}", after.len());
                if class == Class::Account {
                    prop_assert!(d.is_some(), "an account newcomer was refused");
                }
                for (k, s) in &before {
                    let evicted = !after.contains_key(k) && s.tat > now;
                    if evicted && s.class == Class::Account {
                        prop_assert!(class == Class::Account && !had_anon,
                            "account {k} evicted by {key} while anonymous buckets existed");
                    }
                }
            }
        }
    }

    #[test]
    fn idle_buckets_go_first_then_the_least_used_anonymous() {
        let b = LocalBuckets::new(4);
        let rate = Rate { limit: 10 };
        // Two accounts and two addresses, all live at t=0.
        for (k, c) in [
            ("acct:a", Class::Account),
            ("acct:b", Class::Account),
            ("ip:1", Class::Anonymous),
            ("ip:2", Class::Anonymous),
        ] {
            assert!(b.check(k, c, rate, 0).is_some());
        }
        // ip:2 spends more: its TAT is further out.
        for _ in 0..5 {
            b.check("ip:2", Class::Anonymous, rate, 0);
        }
        // A new address evicts the least-used anonymous bucket (ip:1), not an account.
        assert!(b.check("ip:3", Class::Anonymous, rate, 0).is_some());
        let m = b.map.lock();
        assert!(m.contains_key("acct:a") && m.contains_key("acct:b") && m.contains_key("ip:2"));
        assert!(!m.contains_key("ip:1"));
        drop(m);
        // A table full of accounts refuses an anonymous newcomer, admits an account.
        let b = LocalBuckets::new(2);
        b.check("acct:a", Class::Account, rate, 0);
        b.check("acct:b", Class::Account, rate, 0);
        assert!(b.check("ip:1", Class::Anonymous, rate, 0).is_none());
        assert!(b.check("acct:c", Class::Account, rate, 0).is_some());
        // Once a bucket is idle (full again), it makes room for anyone.
        assert!(b.check("ip:1", Class::Anonymous, rate, 120_000_000).is_some());
    }
}
