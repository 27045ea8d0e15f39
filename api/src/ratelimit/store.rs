//! Where buckets live: a bounded map in this process, or Redis (one key per caller,
//! updated atomically by a Lua script on Redis's own clock), so every API node
//! shares one bucket per caller.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::gcra::{self, Decision, Rate};
use super::InlineStr;
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

/// A bucket's key as the table is asked for it: an address's (an integer, see
/// [`AddrKey`]) or text (an account's, or any key of the tests). An address's bucket is
/// the one its text key ([`AddrKey::text`]) named: only how it is found changed.
#[derive(Debug, Clone, Copy)]
pub enum KeyRef<'a> {
    Addr(AddrKey),
    Text(&'a str),
}

impl<'a> From<&'a str> for KeyRef<'a> {
    fn from(s: &'a str) -> Self {
        KeyRef::Text(s)
    }
}

impl<'a> From<&'a String> for KeyRef<'a> {
    fn from(s: &'a String) -> Self {
        KeyRef::Text(s)
    }
}

impl From<AddrKey> for KeyRef<'_> {
    fn from(a: AddrKey) -> Self {
        KeyRef::Addr(a)
    }
}

impl KeyRef<'_> {
    /// The key's text: what the table held it under before addresses had integer keys
    /// (Redis keys, eviction order, tests).
    pub fn text(&self) -> InlineStr {
        match self {
            KeyRef::Addr(a) => a.text(),
            KeyRef::Text(t) => InlineStr::concat(&[t]),
        }
    }
}

/// An anonymous caller's bucket as an integer: an IPv4 address (also IPv4-mapped), or
/// an IPv6 address's /64, in the anonymous tier or the development loopback tier
/// (`public:`). Found without formatting or hashing text per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey {
    /// The IPv4 address, or the IPv6 /64 prefix.
    net: u64,
    /// Bit 0: IPv6; bit 1: the loopback tier's bucket (`public:`).
    kind: u8,
}

const V6: u8 = 1;
const PUBLIC: u8 = 2;

impl AddrKey {
    /// The bucket of `ip` (an IPv6 caller per /64), in the loopback tier when `public`.
    pub fn of(ip: IpAddr, public: bool) -> Self {
        let public = if public { PUBLIC } else { 0 };
        match ip {
            IpAddr::V4(v4) => AddrKey {
                net: u64::from(u32::from(v4)),
                kind: public,
            },
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey {
                    net: u64::from(u32::from(v4)),
                    kind: public,
                },
                None => AddrKey {
                    net: (u128::from(v6) >> 64) as u64,
                    kind: public | V6,
                },
            },
        }
    }

    /// The text key this bucket had: `ip:192.0.2.1`, `ip:2001:db8:1:2::/64`, with
    /// `public:` in front for the loopback tier.
    pub fn text(&self) -> InlineStr {
        let ip = if self.kind & V6 == 0 {
            IpAddr::V4(Ipv4Addr::from(self.net as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(u128::from(self.net) << 64))
        };
        let addr = super::address_bucket(ip);
        if self.kind & PUBLIC == 0 {
            addr
        } else {
            InlineStr::concat(&["public:", addr.as_str()])
        }
    }

    /// Its shard: the integer mixed (Fibonacci hashing; the high bits mix best).
    fn shard(&self) -> usize {
        let x = (self.net ^ (u64::from(self.kind) << 62)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((x >> 58) as usize) & (SHARDS - 1)
    }
}

/// A bounded table of buckets. When it is full, a newcomer first sweeps buckets that
/// are full again (idle: the same as no entry); if none are, the least-used eighth of
/// the anonymous buckets goes (closest to full, so the least credit is handed back).
/// An account newcomer may also evict the least-used account when no anonymous bucket
/// is left; an anonymous newcomer never does, and is refused instead.
///
/// The table is [`SHARDS`] maps, a key's shard chosen by a hash of the borrowed key, so
/// callers with different keys do not wait for each other; `max_keys` bounds all of them
/// together (one atomic count, a newcomer reserves its place in it). Only a newcomer that
/// finds the whole table full takes every shard's lock, in order, and makes room across
/// the whole table exactly as one map would.
pub struct LocalBuckets {
    shards: Box<[Mutex<Shard>]>,
    /// Buckets held in all shards (a newcomer reserves its place before inserting).
    held: AtomicUsize,
    /// After a sweep found no room for an anonymous newcomer: refuse the next ones
    /// without sweeping again until then (a flood must not cost a full scan each).
    no_room_until_us: AtomicI64,
    max_keys: usize,
}

/// Shards of the local table (a power of two).
pub const SHARDS: usize = 64;

/// One shard of the local table: bucket key -> bucket (addresses by their integer key,
/// the rest by text; both maps SipHash, keyed per process: callers choose their keys).
#[derive(Default)]
pub(crate) struct Shard {
    addrs: HashMap<AddrKey, Slot>,
    texts: HashMap<Box<str>, Slot>,
}

impl Shard {
    fn get(&self, key: KeyRef<'_>) -> Option<&Slot> {
        match key {
            KeyRef::Addr(a) => self.addrs.get(&a),
            KeyRef::Text(t) => self.texts.get(t),
        }
    }

    fn get_mut(&mut self, key: KeyRef<'_>) -> Option<&mut Slot> {
        match key {
            KeyRef::Addr(a) => self.addrs.get_mut(&a),
            KeyRef::Text(t) => self.texts.get_mut(t),
        }
    }

    fn insert(&mut self, key: KeyRef<'_>, slot: Slot) {
        match key {
            KeyRef::Addr(a) => {
                self.addrs.insert(a, slot);
            }
            KeyRef::Text(t) => {
                self.texts.insert(t.into(), slot);
            }
        }
    }

    fn len(&self) -> usize {
        self.addrs.len() + self.texts.len()
    }

    fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) {
        self.addrs.retain(|_, s| keep(s));
        self.texts.retain(|_, s| keep(s));
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.addrs.values().chain(self.texts.values())
    }

    /// Every bucket with its key.
    fn entries(&self) -> impl Iterator<Item = (KeyRef<'_>, &Slot)> {
        let addrs = self.addrs.iter().map(|(a, s)| (KeyRef::Addr(*a), s));
        addrs.chain(self.texts.iter().map(|(t, s)| (KeyRef::Text(t), s)))
    }

    fn remove(&mut self, key: &Owned) {
        match key {
            Owned::Addr(a) => {
                self.addrs.remove(a);
            }
            Owned::Text(t) => {
                self.texts.remove(t);
            }
        }
    }
}

/// A key copied out of the table (eviction candidates).
enum Owned {
    Addr(AddrKey),
    Text(Box<str>),
}

/// How long a table found full of live account buckets refuses addresses unswept.
const NO_ROOM_US: i64 = 100_000;

/// Buckets evicted at once when the table is full of live ones: one sweep pays for
/// this many newcomers.
const EVICT_DIVISOR: usize = 8;

/// The shard of `key`: FNV-1a over its bytes (no allocation, no per-process seed
/// needed: a caller cannot choose which keys it shares a shard with beyond its own).
fn shard_of(key: KeyRef<'_>) -> usize {
    let key = match key {
        KeyRef::Addr(a) => return a.shard(),
        KeyRef::Text(t) => t,
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The high bits mix best.
    ((h >> 32) as usize) & (SHARDS - 1)
}

impl LocalBuckets {
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            held: AtomicUsize::new(0),
            no_room_until_us: AtomicI64::new(i64::MIN),
            max_keys: max_keys.max(1),
        }
    }

    /// `None`: the table is full of live account buckets and the newcomer is anonymous
    /// (refuse it).
    pub fn check<'k>(&self, key: impl Into<KeyRef<'k>>, class: Class, rate: Rate, now_us: i64) -> Option<Decision> {
        let key = key.into();
        let Some(shard) = self.shards.get(shard_of(key)) else {
            return self.check_full(key, class, rate, now_us);
        };
        let mut map = shard.lock();
        if let Some(slot) = map.get_mut(key) {
            let (d, new_tat) = gcra::check(rate, Some(slot.tat), now_us);
            if let Some(t) = new_tat {
                *slot = Slot { tat: t, class };
            }
            return Some(d);
        }
        // A newcomer: reserve its place in the table, or make room across all shards.
        let reserved = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            drop(map);
            return self.check_full(key, class, rate, now_us);
        }
        let (d, new_tat) = gcra::check(rate, None, now_us);
        match new_tat {
            Some(t) => {
                map.insert(key, Slot { tat: t, class });
            }
            None => {
                self.held.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Some(d)
    }

    /// A newcomer found the table full: with every shard locked (in order), the same
    /// steps as one map (the key may have arrived meanwhile).
    fn check_full(&self, key: KeyRef<'_>, class: Class, rate: Rate, now_us: i64) -> Option<Decision> {
        let mut all: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let home = shard_of(key);
        let tat = all.get(home).and_then(|m| m.get(key)).map(|s| s.tat);
        let held: usize = all.iter().map(|m| m.len()).sum();
        if tat.is_none() && held >= self.max_keys {
            if class == Class::Anonymous && now_us < self.no_room_until_us.load(Ordering::Acquire) {
                return None;
            }
            let room = make_room(&mut all, self.max_keys, class, now_us);
            self.held.store(all.iter().map(|m| m.len()).sum(), Ordering::Release);
            if !room {
                self.no_room_until_us
                    .store(now_us.saturating_add(NO_ROOM_US), Ordering::Release);
                return None;
            }
        }
        let (d, new_tat) = gcra::check(rate, tat, now_us);
        if let (Some(t), Some(map)) = (new_tat, all.get_mut(home)) {
            if let Some(slot) = map.get_mut(key) {
                *slot = Slot { tat: t, class };
            } else {
                map.insert(key, Slot { tat: t, class });
                self.held.fetch_add(1, Ordering::AcqRel);
            }
        }
        Some(d)
    }

    /// Without spending: seconds until `key` may spend again (0: it may now).
    pub fn wait_secs<'k>(&self, key: impl Into<KeyRef<'k>>, rate: Rate, now_us: i64) -> u64 {
        let key = key.into();
        let Some(tat) = self
            .shards
            .get(shard_of(key))
            .and_then(|m| m.lock().get(key).map(|s| s.tat))
        else {
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
        self.held.load(Ordering::Acquire)
    }

    /// Buckets held, by class (anonymous, account).
    pub fn len(&self) -> (usize, usize) {
        let (mut anon, mut all) = (0, 0);
        for shard in self.shards.iter() {
            let map = shard.lock();
            anon += map.slots().filter(|s| s.class == Class::Anonymous).count();
            all += map.len();
        }
        (anon, all - anon)
    }

    /// Every bucket held: (key, TAT, class), sorted by key (tests compare tables).
    #[cfg(test)]
    fn contents(&self) -> Vec<(String, i64, Class)> {
        let mut v: Vec<_> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .entries()
                    .map(|(k, s)| (k.text().to_string(), s.tat, s.class))
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Frees at least one slot for a `class` newcomer across all shards; false if it may
/// not have one. Victims among equally used buckets go in key order (deterministic).
fn make_room(shards: &mut [MutexGuard<'_, Shard>], max_keys: usize, class: Class, now_us: i64) -> bool {
    // A bucket whose TAT has passed is full: the same as no entry.
    for m in shards.iter_mut() {
        m.retain(|s| s.tat > now_us);
    }
    let held = |shards: &[MutexGuard<'_, Shard>]| shards.iter().map(|m| m.len()).sum::<usize>();
    if held(shards) < max_keys {
        return true;
    }
    let any_anon = shards.iter().any(|m| m.slots().any(|s| s.class == Class::Anonymous));
    let victims = if any_anon {
        Class::Anonymous
    } else if class == Class::Account {
        Class::Account
    } else {
        return false;
    };
    // In the order of the keys' text (an address's bucket as it was named before it had
    // an integer key), so the same buckets go as always.
    let mut candidates: Vec<(i64, Box<str>, usize, Owned)> = shards
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            m.entries().filter(|(_, s)| s.class == victims).map(move |(k, s)| {
                let owned = match k {
                    KeyRef::Addr(a) => Owned::Addr(a),
                    KeyRef::Text(t) => Owned::Text(t.into()),
                };
                (s.tat, Box::<str>::from(k.text().as_str()), i, owned)
            })
        })
        .collect();
    // Addresses go an eighth at a time (one sweep pays for many newcomers); accounts
    // (few: configured ones) one at a time, so a full table hands back little credit.
    let n = match victims {
        Class::Anonymous => candidates.len().div_ceil(EVICT_DIVISOR).max(1),
        Class::Account => 1,
    };
    let n = n.min(candidates.len());
    if n > 0 {
        candidates.select_nth_unstable_by(n - 1, |a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    }
    for (_, _, i, k) in candidates.iter().take(n) {
        if let Some(m) = shards.get_mut(*i) {
            m.remove(k);
        }
    }
    held(shards) < max_keys
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

    /// The table as one map under one lock: the behaviour the shards must keep.
    struct OneMap {
        map: std::collections::BTreeMap<String, Slot>,
        no_room_until_us: i64,
        max_keys: usize,
    }

    impl OneMap {
        fn new(max_keys: usize) -> Self {
            Self {
                map: Default::default(),
                no_room_until_us: i64::MIN,
                max_keys: max_keys.max(1),
            }
        }

        fn check(&mut self, key: &str, class: Class, rate: Rate, now_us: i64) -> Option<Decision> {
            let tat = self.map.get(key).map(|s| s.tat);
            if tat.is_none() && self.map.len() >= self.max_keys {
                if class == Class::Anonymous && now_us < self.no_room_until_us {
                    return None;
                }
                if !self.make_room(class, now_us) {
                    self.no_room_until_us = now_us.saturating_add(NO_ROOM_US);
                    return None;
                }
            }
            let (d, new_tat) = gcra::check(rate, tat, now_us);
            if let Some(t) = new_tat {
                self.map.insert(key.to_owned(), Slot { tat: t, class });
            }
            Some(d)
        }

        fn make_room(&mut self, class: Class, now_us: i64) -> bool {
            self.map.retain(|_, s| s.tat > now_us);
            if self.map.len() < self.max_keys {
                return true;
            }
            let victims = if self.map.values().any(|s| s.class == Class::Anonymous) {
                Class::Anonymous
            } else if class == Class::Account {
                Class::Account
            } else {
                return false;
            };
            let mut c: Vec<(i64, String)> = self
                .map
                .iter()
                .filter(|(_, s)| s.class == victims)
                .map(|(k, s)| (s.tat, k.clone()))
                .collect();
            c.sort();
            let n = match victims {
                Class::Anonymous => c.len().div_ceil(EVICT_DIVISOR).max(1),
                Class::Account => 1,
            };
            for (_, k) in c.iter().take(n) {
                self.map.remove(k);
            }
            self.map.len() < self.max_keys
        }

        fn contents(&self) -> Vec<(String, i64, Class)> {
            self.map.iter().map(|(k, s)| (k.clone(), s.tat, s.class)).collect()
        }
    }

    fn key_of(account: bool, id: u16) -> (Class, String) {
        if account {
            (Class::Account, format!("acct:{}", id % 8))
        } else {
            (Class::Anonymous, format!("ip:{id}"))
        }
    }

    proptest! {
        /// Any sequence of calls (callers, classes, times, table sizes, rates): the
        /// sharded table answers every call exactly as one map under one lock would,
        /// holds the same buckets afterwards, and its constant-time count is exact.
        #[test]
        fn shards_answer_exactly_as_one_map(
            max_keys in 1usize..48,
            limit in 1u64..20,
            calls in proptest::collection::vec((any::<bool>(), 0u16..120, 0i64..3_000_000), 1..500),
        ) {
            let sharded = LocalBuckets::new(max_keys);
            let mut one = OneMap::new(max_keys);
            let rate = Rate { limit };
            let mut now = 0i64;
            for (account, id, gap) in calls {
                now += gap;
                let (class, key) = key_of(account, id);
                prop_assert_eq!(sharded.check(&key, class, rate, now), one.check(&key, class, rate, now), "{} at {}", key, now);
                prop_assert_eq!(sharded.wait_secs(&key, rate, now), {
                    let tat = one.map.get(&key).map(|s| s.tat);
                    tat.map_or(0, |tat| {
                        let allow_at = tat.max(now) + rate.interval_us() - rate.capacity_us();
                        if now < allow_at { ((allow_at - now) as u64).div_ceil(1_000_000).max(1) } else { 0 }
                    })
                });
                prop_assert_eq!(sharded.contents(), one.contents());
                prop_assert_eq!(sharded.held(), one.map.len());
            }
        }

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
                let (class, key) = key_of(account, id);
                let before = b.contents();
                let had_anon = before.iter().any(|(_, tat, c)| *c == Class::Anonymous && *tat > now);
                let d = b.check(&key, class, rate, now);
                let after = b.contents();
                prop_assert!(after.len() <= max_keys, "{} > {max_keys}", after.len());
                if class == Class::Account {
                    prop_assert!(d.is_some(), "an account newcomer was refused");
                }
                for (k, tat, c) in &before {
                    let evicted = !after.iter().any(|(a, _, _)| a == k) && *tat > now;
                    if evicted && *c == Class::Account {
                        prop_assert!(class == Class::Account && !had_anon,
                            "account {k} evicted by {key} while anonymous buckets existed");
                    }
                }
            }
        }
    }

    proptest! {
        /// Any requests from any addresses (IPv4, the same IPv4-mapped, IPv6 in a few
        /// /64s; anonymous or loopback tier) and accounts, over any table size: the
        /// table keyed by the addresses' integers answers every request, holds the same
        /// buckets and evicts the same ones as the table keyed by their text did (the
        /// limit stays per address, an IPv6 caller's per /64).
        #[test]
        fn address_keys_are_the_text_keys(
            max_keys in 1usize..24,
            limit in 1u64..10,
            calls in proptest::collection::vec((0u8..4, 0u16..40, any::<bool>(), 0i64..3_000_000), 1..300),
        ) {
            let by_int = LocalBuckets::new(max_keys);
            let by_text = LocalBuckets::new(max_keys);
            let rate = Rate { limit };
            let mut now = 0i64;
            for (family, id, public, gap) in calls {
                now += gap;
                let [hi, lo] = id.to_be_bytes();
                let v4 = Ipv4Addr::new(10, 0, hi, lo);
                let ip = match family {
                    0 => IpAddr::V4(v4),
                    1 => IpAddr::V6(v4.to_ipv6_mapped()),
                    2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, id % 8, 0, 0, id, 1)),
                    _ => {
                        let key = format!("acct:{}", id % 5);
                        prop_assert_eq!(
                            by_int.check(&key, Class::Account, rate, now),
                            by_text.check(&key, Class::Account, rate, now)
                        );
                        continue;
                    }
                };
                let old = if public {
                    format!("public:{}", crate::ratelimit::address_key(ip))
                } else {
                    crate::ratelimit::address_key(ip)
                };
                let key = AddrKey::of(ip, public);
                prop_assert_eq!(key.text().to_string(), old.clone());
                prop_assert_eq!(
                    by_int.check(key, Class::Anonymous, rate, now),
                    by_text.check(&old, Class::Anonymous, rate, now),
                    "{} at {}", old, now
                );
                prop_assert_eq!(by_int.wait_secs(key, rate, now), by_text.wait_secs(&old, rate, now));
                prop_assert_eq!(by_int.contents(), by_text.contents());
                prop_assert_eq!(by_int.held(), by_text.held());
            }
        }
    }

    /// Threads spending from their own and shared buckets at once: every bucket allows
    /// exactly its limit (no request lost or double-counted between shards), and the
    /// table's count matches what it holds, also when newcomers race for a full table.
    #[test]
    fn concurrent_callers_spend_exactly_their_limits() {
        let rate = Rate { limit: 25 };
        for max_keys in [10_000usize, 40] {
            let b = Arc::new(LocalBuckets::new(max_keys));
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let b = Arc::clone(&b);
                    std::thread::spawn(move || {
                        let mut allowed = std::collections::HashMap::<String, u64>::new();
                        for _ in 0..60 {
                            for id in 0..30 {
                                // Half the keys shared by all threads, half this thread's.
                                let key = if id % 2 == 0 {
                                    format!("ip:shared{id}")
                                } else {
                                    format!("ip:t{t}-{id}")
                                };
                                if b.check(&key, Class::Anonymous, rate, 0).is_some_and(|d| d.allowed) {
                                    *allowed.entry(key).or_default() += 1;
                                }
                            }
                        }
                        allowed
                    })
                })
                .collect();
            let mut total = std::collections::HashMap::<String, u64>::new();
            for t in threads {
                for (k, n) in t.join().expect("thread") {
                    *total.entry(k).or_default() += n;
                }
            }
            let held = b.contents();
            assert_eq!(b.held(), held.len(), "the count is what the shards hold");
            assert!(held.len() <= max_keys);
            if max_keys == 10_000 {
                // Room for all 15 shared + 60 own keys: each spent exactly its limit.
                assert_eq!(total.len(), 75);
                for (k, n) in &total {
                    assert_eq!(*n, rate.limit, "{k}");
                }
            }
        }
    }

    /// Spending from a bucket the table holds allocates nothing (the key is borrowed;
    /// only a newcomer's key is copied into the table).
    #[test]
    fn spending_from_a_held_bucket_does_not_allocate() {
        let b = LocalBuckets::new(1_000);
        let rate = Rate { limit: 1_000_000 };
        for i in 0..100 {
            b.check(&format!("ip:{i}"), Class::Anonymous, rate, 0);
        }
        let key = "ip:42";
        let addr = AddrKey::of(IpAddr::V6("2001:db8::1".parse().expect("ip")), true);
        b.check(addr, Class::Anonymous, rate, 0);
        let (_, n) = stocksblitz_testkit::alloc::count_allocations(|| {
            for t in 0..1_000 {
                std::hint::black_box(b.check(key, Class::Anonymous, rate, t));
                std::hint::black_box(b.wait_secs(key, rate, t));
                std::hint::black_box(b.check(addr, Class::Anonymous, rate, t));
                std::hint::black_box(b.wait_secs(addr, rate, t));
            }
        });
        assert_eq!(n, 0, "allocations in 1,000 checks of a held bucket");
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
        let keys: Vec<String> = b.contents().into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(keys, ["acct:a", "acct:b", "ip:2", "ip:3"]);
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
