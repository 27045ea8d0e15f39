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
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - capacity
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, now + capacity - new_tat, new_tat - now}
";

pub struct LocalBuckets {
    map: Mutex<HashMap<String, i64>>,
    max_keys: usize,
}

impl LocalBuckets {
    pub fn new(max_keys: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max_keys,
        }
    }

    /// `None`: the map is full of live buckets (refuse the newcomer).
    pub fn check(&self, key: &str, rate: Rate, now_us: i64) -> Option<Decision> {
        let mut map = self.map.lock();
        let tat = map.get(key).copied();
        if tat.is_none() && map.len() >= self.max_keys {
            // A bucket whose TAT has passed is full: the same as no entry.
            map.retain(|_, t| *t > now_us);
            if map.len() >= self.max_keys {
                return None;
            }
        }
        let (d, new_tat) = gcra::check(rate, tat, now_us);
        if let Some(t) = new_tat {
            map.insert(key.to_owned(), t);
        }
        Some(d)
    }
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
