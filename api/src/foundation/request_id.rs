//! Request ids: every response carries `X-Request-ID`, the caller's own when it sent a
//! sane one (1-64 chars of `[A-Za-z0-9._:-]`), otherwise a fresh `req-<16 hex>`. Here in
//! the foundation because errors, audit records and logs all quote the same id.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderName, HeaderValue};

pub const HEADER: &str = "x-request-id";
/// [`HEADER`] as a header name (a `&str` key is parsed again on every use).
pub const HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);

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
    hex_id(z ^ (z >> 31))
}

/// `req-` and `v` in 16 lower-case hex digits (`format!("req-{v:016x}")` without the
/// formatting machinery: one per request).
fn hex_id(v: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(20);
    s.push_str("req-");
    for shift in (0..16).rev() {
        s.push(char::from(DIGITS[((v >> (shift * 4)) & 0xf) as usize]));
    }
    s
}

/// The caller's id when it is one we may echo, else `None`.
pub fn acceptable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    ok.then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any value: the id is the text `format!` made of it.
        #[test]
        fn ids_are_the_formatted_ones(v in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(hex_id(v), format!("req-{v:016x}"));
        }
    }

    #[test]
    fn fresh_ids_have_the_shape_and_differ() {
        let (a, b) = (fresh(), fresh());
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 20);
            assert!(id.starts_with("req-"));
            assert!(HeaderValue::from_str(&id).ok().as_ref().and_then(acceptable).is_some());
        }
    }
}
