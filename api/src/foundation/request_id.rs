//! Request ids: every response carries `X-Request-ID`, the caller's own when it sent a
//! sane one (1-64 chars of `[A-Za-z0-9._:-]`), otherwise a fresh `req-<16 hex>`. Here in
//! the foundation because errors, audit records and logs all quote the same id.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderValue;

pub const HEADER: &str = "x-request-id";

/// The request's id, in request extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn seed() -> u64 {
    use std::sync::OnceLock;
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let t = stocksblitz_engine::UnixNanos::now().0 as u64;
        t ^ (u64::from(std::process::id()) << 32)
    })
}

/// A fresh request id (also for responses made outside the router).
pub fn fresh() -> String {
    // SplitMix64 over a per-process seed and a counter: unique, not guessable in order.
    let mut z = seed().wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("req-{:016x}", z ^ (z >> 31))
}

/// The caller's id when it is one we may echo, else `None`.
pub fn acceptable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    ok.then(|| s.to_owned())
}
