//! Rate-limit tiers (SPEC section 6): anonymous callers per address (an IPv6 caller per
//! /64, what one host is usually given), token holders per account at their tier's
//! rate, signed algo services unlimited. In development, anonymous market-data reads
//! from loopback get a tier of their own that a person cannot exhaust by hand. Every
//! limited response carries `RateLimit-Policy` and `RateLimit` (IETF httpapi draft); a
//! refused one is 429 `RATE_LIMITED` with `Retry-After`.
//!
//! Failed authentications are limited per address too, before anything checks or
//! records them: past `auth_failures_per_min`, credentials from that address are
//! refused unchecked (429) until its bucket refills.
//!
//! With `[redis]` the buckets live in Redis and every API node shares them. If Redis
//! fails, this node keeps limiting with its own buckets (never unlimited), counts the
//! fallback and logs it; `/health/redis` shows Redis down meanwhile.

pub mod gcra;
pub(crate) mod store;

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::json;

use crate::config::limits::RateLimitsConfig;
use crate::foundation::ApiError;
use crate::redis_store::RedisStore;
use gcra::{Decision, Rate};
pub use store::{AddrKey, Class, KeyRef};
use store::{LocalBuckets, RedisBuckets};

/// Which limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitTier {
    Anonymous,
    Authenticated,
    Premium,
    /// Development only: anonymous market-data reads from a loopback address.
    LoopbackPublic,
}

impl LimitTier {
    pub const ALL: [LimitTier; 4] = [
        LimitTier::Anonymous,
        LimitTier::Authenticated,
        LimitTier::Premium,
        LimitTier::LoopbackPublic,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            LimitTier::Anonymous => "anonymous",
            LimitTier::Authenticated => "authenticated",
            LimitTier::Premium => "premium",
            LimitTier::LoopbackPublic => "loopback_public",
        }
    }

    /// Whose bucket it is, for eviction from a full table.
    pub const fn class(self) -> Class {
        match self {
            LimitTier::Anonymous | LimitTier::LoopbackPublic => Class::Anonymous,
            LimitTier::Authenticated | LimitTier::Premium => Class::Account,
        }
    }
}

/// Text formatted into a buffer on the stack when it fits (bucket keys of addresses
/// always do, an account's when its subject is short; the rate-limit headers do), on
/// the heap otherwise: a request's bucket key and headers cost no `String`.
pub struct InlineStr(InlineRepr);

enum InlineRepr {
    Stack { buf: [u8; INLINE_CAP], len: usize },
    Heap(String),
}

/// Bytes an [`InlineStr`] holds without the heap.
const INLINE_CAP: usize = 96;

struct StackWriter {
    buf: [u8; INLINE_CAP],
    len: usize,
}

impl std::fmt::Write for StackWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl InlineStr {
    /// `args` formatted (`format_args!`), on the stack when it fits.
    pub fn format(args: std::fmt::Arguments<'_>) -> Self {
        let mut w = StackWriter {
            buf: [0; INLINE_CAP],
            len: 0,
        };
        if std::fmt::write(&mut w, args).is_ok() {
            Self(InlineRepr::Stack { buf: w.buf, len: w.len })
        } else {
            Self(InlineRepr::Heap(std::fmt::format(args)))
        }
    }

    /// `parts` one after the other, on the stack when they fit (without the
    /// formatting machinery: keys are built per request).
    pub fn concat(parts: &[&str]) -> Self {
        let mut w = StackWriter {
            buf: [0; INLINE_CAP],
            len: 0,
        };
        for p in parts {
            if std::fmt::Write::write_str(&mut w, p).is_err() {
                return Self(InlineRepr::Heap(parts.concat()));
            }
        }
        Self(InlineRepr::Stack { buf: w.buf, len: w.len })
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Whole `&str`s were copied in: always UTF-8.
            InlineRepr::Stack { buf, len } => buf.get(..*len).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or(""),
            InlineRepr::Heap(s) => s,
        }
    }
}

impl std::ops::Deref for InlineStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for InlineStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for InlineStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// An IPv4 address in dotted decimal, as `Display` writes it, on the stack.
struct V4Text {
    buf: [u8; 15],
    len: usize,
}

impl V4Text {
    fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

fn v4_text(v4: std::net::Ipv4Addr) -> V4Text {
    let mut t = V4Text { buf: [0; 15], len: 0 };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        let mut put = |b: u8| {
            if let Some(slot) = t.buf.get_mut(t.len) {
                *slot = b;
                t.len += 1;
            }
        };
        if i > 0 {
            put(b'.');
        }
        if octet >= 100 {
            put(b'0' + octet / 100);
        }
        if octet >= 10 {
            put(b'0' + octet / 10 % 10);
        }
        put(b'0' + octet % 10);
    }
    t
}

/// A header value's text on the stack (the `RateLimit` value, built per request
/// without the formatting machinery).
struct HeaderText {
    buf: [u8; 64],
    len: usize,
}

impl Default for HeaderText {
    fn default() -> Self {
        HeaderText { buf: [0; 64], len: 0 }
    }
}

impl HeaderText {
    /// Appends `bytes` (what does not fit is dropped; nothing written here is that long).
    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..end), bytes.get(..end - self.len)) {
            dst.copy_from_slice(src);
        }
        self.len = end;
    }

    /// Appends `n` in decimal.
    fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The bucket key of an address: `ip:192.0.2.1`, or for IPv6 its /64
/// (`ip:2001:db8:1:2::/64`), since one host is usually given a whole /64.
pub fn address_bucket(ip: IpAddr) -> InlineStr {
    match ip {
        IpAddr::V4(v4) => InlineStr::concat(&["ip:", v4_text(v4).as_str()]),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => InlineStr::concat(&["ip:", v4_text(v4).as_str()]),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                InlineStr::format(format_args!("ip:{prefix}/64"))
            }
        },
    }
}

/// Whose bucket a request spends from, owned: an address's (an integer key) or an
/// account's (text).
pub enum Bucket {
    Address(AddrKey),
    Text(InlineStr),
}

impl Bucket {
    /// The key to look the bucket up with.
    pub fn key(&self) -> KeyRef<'_> {
        match self {
            Bucket::Address(a) => KeyRef::Addr(*a),
            Bucket::Text(t) => KeyRef::Text(t.as_str()),
        }
    }
}

/// [`address_bucket`] as a `String` (audit records).
pub fn address_key(ip: IpAddr) -> String {
    address_bucket(ip).as_str().to_owned()
}

/// Counters for /metrics.
#[derive(Default)]
pub struct LimitStats {
    pub allowed: [AtomicU64; 4],
    pub limited: [AtomicU64; 4],
    /// Requests with credentials refused unchecked: their address failed too often.
    pub auth_failures_limited: AtomicU64,
    /// Checks answered by this node's buckets because Redis failed.
    pub redis_fallbacks: AtomicU64,
}

pub struct RateLimiter {
    rates: [Rate; 4],
    local: LocalBuckets,
    /// Failed authentications per address (this node's; a flood is local anyway).
    auth_failures: LocalBuckets,
    auth_failure_rate: Rate,
    /// Whether the loopback tier is configured (`loopback_public_per_min` > 0).
    loopback_public: bool,
    /// Failed `auth` ops one WebSocket connection may make before it is closed.
    pub ws_auth_failures_per_connection: u32,
    redis: Option<RedisBuckets>,
    /// After a Redis failure, when to try it again.
    redis_retry_at_us: AtomicI64,
    pub stats: LimitStats,
}

const REDIS_RETRY_US: i64 = 1_000_000;

/// A `RateLimit` value and the (remaining, reset) it says.
type LastState = Option<((u64, u64), HeaderValue)>;

thread_local! {
    /// Per tier, the last `RateLimit` value this thread wrote.
    static LAST_STATE: std::cell::RefCell<[LastState; 4]> = const { std::cell::RefCell::new([const { None }; 4]) };
}

/// A decision and the tier it was made under.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub tier: LimitTier,
    pub limit: u64,
    pub decision: Decision,
}

fn now_us() -> i64 {
    stocksblitz_engine::UnixNanos::now().0 / 1_000
}

impl RateLimiter {
    pub fn new(c: &RateLimitsConfig, redis: Option<Arc<RedisStore>>) -> Self {
        Self {
            rates: [
                Rate {
                    limit: c.anonymous_per_min,
                },
                Rate {
                    limit: c.authenticated_per_min,
                },
                Rate {
                    limit: c.premium_per_min,
                },
                Rate {
                    limit: if c.loopback_public_per_min > 0 {
                        c.loopback_public_per_min
                    } else {
                        c.anonymous_per_min
                    },
                },
            ],
            local: LocalBuckets::new(c.max_keys as usize),
            auth_failures: LocalBuckets::new(c.max_keys as usize),
            auth_failure_rate: Rate {
                limit: c.auth_failures_per_min,
            },
            loopback_public: c.loopback_public_per_min > 0,
            ws_auth_failures_per_connection: c.ws_auth_failures_per_connection as u32,
            redis: redis.map(RedisBuckets::new),
            redis_retry_at_us: AtomicI64::new(0),
            stats: LimitStats::default(),
        }
    }

    /// Whether the development loopback tier is configured.
    pub fn loopback_public(&self) -> bool {
        self.loopback_public
    }

    /// The rate of a tier (WebSocket connections limit their messages with it).
    pub fn rate(&self, tier: LimitTier) -> Rate {
        self.rates[tier as usize]
    }

    /// Seconds until `ip` may try credentials again (0: now), without spending.
    pub fn auth_wait_secs(&self, ip: IpAddr) -> u64 {
        self.auth_failures
            .wait_secs(AddrKey::of(ip, false), self.auth_failure_rate, now_us())
    }

    /// Spends one failed authentication from `ip`'s budget.
    pub fn auth_failed(&self, ip: IpAddr) {
        let _ = self.auth_failures.check(
            AddrKey::of(ip, false),
            Class::Anonymous,
            self.auth_failure_rate,
            now_us(),
        );
    }

    /// The 429 for credentials from an address that failed too often.
    pub fn auth_refusal(&self, retry_after_secs: u64) -> ApiError {
        self.stats.auth_failures_limited.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "too many failed authentications from your address ({} per minute): retry after {retry_after_secs} s with valid credentials",
                self.auth_failure_rate.limit
            ),
        )
        .with_details(json!({
            "tier": "auth_failures",
            "limit_per_min": self.auth_failure_rate.limit,
            "retry_after_secs": retry_after_secs,
        }))
    }

    /// Buckets held in process, by class (anonymous, account).
    pub fn local_keys(&self) -> (usize, usize) {
        self.local.len()
    }

    /// Buckets held in this node's table and how many it holds at most
    /// (`rate_limits.max_keys`), in constant time (health and /metrics).
    pub fn local_fill(&self) -> (usize, usize) {
        (self.local.held(), self.local.capacity())
    }

    /// Takes one request from `key`'s bucket.
    pub async fn check(&self, tier: LimitTier, key: KeyRef<'_>) -> Checked {
        let rate = self.rates[tier as usize];
        let now = now_us();
        let redis = self
            .redis
            .as_ref()
            .filter(|_| now >= self.redis_retry_at_us.load(Ordering::Relaxed));
        let decision = match redis {
            Some(r) => match r.check(&key.text(), rate).await {
                Ok(d) => Some(d),
                Err(e) => {
                    // Do not make every request wait out Redis's timeout: local
                    // buckets for a second, then try Redis again.
                    self.redis_retry_at_us.store(now + REDIS_RETRY_US, Ordering::Relaxed);
                    if self
                        .stats
                        .redis_fallbacks
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(1_000)
                    {
                        tracing::warn!(error = %e.0, "rate limits: Redis failed; limiting with this node's buckets");
                    }
                    self.local.check(key, tier.class(), rate, now)
                }
            },
            None => {
                if self.redis.is_some() {
                    self.stats.redis_fallbacks.fetch_add(1, Ordering::Relaxed);
                }
                self.local.check(key, tier.class(), rate, now)
            }
        };
        self.decided(tier, rate, decision)
    }

    /// [`Self::check`] when it needs no await: without `[redis]` the buckets are this
    /// node's (the same decision, counted the same). `None` with `[redis]`: call
    /// [`Self::check`].
    pub fn check_local(&self, tier: LimitTier, key: KeyRef<'_>) -> Option<Checked> {
        if self.redis.is_some() {
            return None;
        }
        let rate = self.rates[tier as usize];
        Some(self.decided(tier, rate, self.local.check(key, tier.class(), rate, now_us())))
    }

    /// The decision counted, as a [`Checked`].
    fn decided(&self, tier: LimitTier, rate: Rate, decision: Option<Decision>) -> Checked {
        // A local table full of accounts refuses anonymous newcomers for a second.
        let decision = decision.unwrap_or(Decision {
            allowed: false,
            remaining: 0,
            reset_secs: 1,
            retry_after_secs: 1,
        });
        let counter = if decision.allowed {
            &self.stats.allowed
        } else {
            &self.stats.limited
        };
        counter[tier as usize].fetch_add(1, Ordering::Relaxed);
        Checked {
            tier,
            limit: rate.limit,
            decision,
        }
    }
}

impl Checked {
    /// `RateLimit-Policy: "authenticated";q=100;w=60` and
    /// `RateLimit: "authenticated";r=57;t=4`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
        const STATE: HeaderName = HeaderName::from_static("ratelimit");
        headers.insert(POLICY, self.policy());
        if let Some(v) = self.state() {
            headers.insert(STATE, v);
        }
        if !self.decision.allowed {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(self.decision.retry_after_secs),
            );
        }
    }

    /// The `RateLimit` value: the last one this thread wrote for the tier when it says
    /// the same (a caller whose bucket is full, most of them, gets the same text as the
    /// last such caller: no formatting, no allocation), else built anew and kept.
    fn state(&self) -> Option<HeaderValue> {
        let said = (self.decision.remaining, self.decision.reset_secs);
        let tier = self.tier as usize;
        let build = || {
            let mut state = HeaderText::default();
            state.push(b"\"");
            state.push(self.tier.as_str().as_bytes());
            state.push(b"\";r=");
            state.number(said.0);
            state.push(b";t=");
            state.number(said.1);
            HeaderValue::from_bytes(state.as_bytes()).ok()
        };
        LAST_STATE.with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return build();
            };
            let slot = last.get_mut(tier)?;
            if let Some((s, v)) = slot.as_ref() {
                if *s == said {
                    return Some(v.clone());
                }
            }
            let v = build()?;
            *slot = Some((said, v.clone()));
            Some(v)
        })
    }

    /// The `RateLimit-Policy` value, built once per tier (a tier's limit does not
    /// change while the process runs; another limit, as in tests, is built anew).
    fn policy(&self) -> HeaderValue {
        static BUILT: [OnceLock<(u64, HeaderValue)>; 4] = [const { OnceLock::new() }; 4];
        let build = || {
            let text = format!(
                "\"{}\";q={};w={}",
                self.tier.as_str(),
                self.limit,
                gcra::WINDOW_US / 1_000_000
            );
            HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
        };
        let (limit, value) = BUILT[self.tier as usize].get_or_init(|| (self.limit, build()));
        if *limit == self.limit {
            value.clone()
        } else {
            build()
        }
    }

    /// The 429 for a refused request.
    pub fn refusal(&self) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "rate limit of {} requests per minute ({} tier) reached: retry after {} s",
                self.limit,
                self.tier.as_str(),
                self.decision.retry_after_secs
            ),
        )
        .with_details(json!({
            "tier": self.tier.as_str(),
            "limit_per_min": self.limit,
            "retry_after_secs": self.decision.retry_after_secs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every address of one IPv6 /64 shares a bucket, any two /64s never do, and
        /// IPv4 (also when IPv4-mapped) is keyed by the whole address.
        #[test]
        fn ipv6_keyed_by_its_64_ipv4_by_address(prefix in any::<u64>(), a in any::<u64>(), b in any::<u64>(), other in any::<u64>(), v4 in any::<u32>()) {
            let ip = |p: u64, h: u64| IpAddr::V6(std::net::Ipv6Addr::from((u128::from(p) << 64) | u128::from(h)));
            prop_assume!((prefix >> 32) != 0 && (other >> 32) != 0 && prefix != other);
            prop_assert_eq!(address_key(ip(prefix, a)), address_key(ip(prefix, b)));
            prop_assert_ne!(address_key(ip(prefix, a)), address_key(ip(other, a)));
            prop_assert!(address_key(ip(prefix, a)).ends_with("/64"));
            let v4 = std::net::Ipv4Addr::from(v4);
            prop_assert_eq!(address_key(IpAddr::V4(v4)), format!("ip:{v4}"));
            prop_assert_eq!(address_key(IpAddr::V6(v4.to_ipv6_mapped())), format!("ip:{v4}"));
        }

        /// Any address: its stack-built key is the text the heap-built key was
        /// (`format!`), so every caller keeps its bucket; and any text, short or long,
        /// comes out of an `InlineStr` unchanged.
        #[test]
        fn stack_keys_are_the_heap_keys(bits in any::<u128>(), v4 in any::<u32>(), text in ".{0,200}") {
            let v6 = std::net::Ipv6Addr::from(bits);
            let s = v6.segments();
            let old = match v6.to_ipv4_mapped() {
                Some(v4) => format!("ip:{v4}"),
                None => format!("ip:{}/64", std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)),
            };
            prop_assert_eq!(address_bucket(IpAddr::V6(v6)).to_string(), old);
            let v4 = std::net::Ipv4Addr::from(v4);
            prop_assert_eq!(address_bucket(IpAddr::V4(v4)).to_string(), format!("ip:{v4}"));
            prop_assert_eq!(InlineStr::format(format_args!("acct:{text}")).to_string(), format!("acct:{text}"));
            prop_assert_eq!(InlineStr::concat(&["public:", &text, ":"]).to_string(), format!("public:{text}:"));
        }
    }

    proptest! {
        /// Any tier, limit and decision: the headers are the text `format!` made
        /// (the policy's cache and the hand-built `RateLimit` change no byte).
        #[test]
        fn headers_are_the_formatted_ones(
            tier in 0usize..4,
            limits in proptest::collection::vec(any::<u64>(), 1..4),
            remaining in any::<u64>(),
            reset in any::<u64>(),
            allowed in any::<bool>(),
        ) {
            let tier = LimitTier::ALL[tier];
            for limit in limits {
                let c = Checked {
                    tier,
                    limit,
                    decision: gcra::Decision { allowed, remaining, reset_secs: reset, retry_after_secs: 7 },
                };
                let mut h = HeaderMap::new();
                c.write_headers(&mut h);
                let name = tier.as_str();
                let (policy, state) = (format!("\"{name}\";q={limit};w=60"), format!("\"{name}\";r={remaining};t={reset}"));
                prop_assert_eq!(h["ratelimit-policy"].to_str().ok(), Some(policy.as_str()));
                prop_assert_eq!(h["ratelimit"].to_str().ok(), Some(state.as_str()));
                prop_assert_eq!(h.get("retry-after").map(|v| v.to_str().ok()), (!allowed).then_some(Some("7")));
            }
        }
    }

    /// An address's key, an account's (short subject) and the rate-limit headers are
    /// built without the heap.
    #[test]
    fn keys_and_headers_are_built_on_the_stack() {
        let ip: IpAddr = "2001:db8:ffff:ffff:1:2:3:4".parse().expect("ip");
        let checked = Checked {
            tier: LimitTier::Premium,
            limit: u64::MAX,
            decision: gcra::Decision {
                allowed: false,
                remaining: u64::MAX,
                reset_secs: u64::MAX,
                retry_after_secs: u64::MAX,
            },
        };
        let (_, n) = stocksblitz_testkit::alloc::count_allocations(|| {
            let a = address_bucket(ip);
            let p = InlineStr::format(format_args!("public:{a}"));
            let q = InlineStr::concat(&["public:", a.as_str()]);
            let k = InlineStr::format(format_args!("acct:{}", "a-typical-subject-0123456789"));
            let h = InlineStr::format(format_args!(
                "\"{}\";r={};t={}",
                checked.tier.as_str(),
                checked.decision.remaining,
                checked.decision.reset_secs
            ));
            std::hint::black_box((a, p, q, k, h));
        });
        assert_eq!(n, 0);
    }
}
