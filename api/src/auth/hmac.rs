//! The HMAC request-signing scheme for algo services (docs/AUTH.md has a worked
//! example). A service signs
//!
//! ```text
//! {X-Request-Timestamp}\n{METHOD}\n{path with query}\n{hex SHA-256 of the body}
//! ```
//!
//! with HMAC-SHA256 under its secret and sends the lowercase hex result in
//! `X-Request-Signature`. Binding the method, the exact path and query, and the body
//! hash means a captured signature is good for that one request only; the timestamp
//! window and the nonce store (see [`super::nonce`]) stop it being sent twice.

use ring::{digest, hmac};

pub const IDENTITY: &str = "x-service-identity";
pub const KEY_ID: &str = "x-internal-api-key";
pub const TIMESTAMP: &str = "x-request-timestamp";
pub const SIGNATURE: &str = "x-request-signature";

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// The exact text that is signed.
pub fn canonical(timestamp_ms: &str, method: &str, path_and_query: &str, body: &[u8]) -> String {
    let body_hash = hex(digest::digest(&digest::SHA256, body).as_ref());
    format!("{timestamp_ms}\n{method}\n{path_and_query}\n{body_hash}")
}

/// The `X-Request-Signature` value for a request.
pub fn sign(secret: &[u8], timestamp_ms: &str, method: &str, path_and_query: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hex(hmac::sign(&key, canonical(timestamp_ms, method, path_and_query, body).as_bytes()).as_ref())
}

/// Checks a signature in constant time.
pub fn verify(
    secret: &[u8],
    signature_hex: &str,
    timestamp_ms: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> bool {
    let Some(tag) = unhex(signature_hex).filter(|t| t.len() == 32) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(
        &key,
        canonical(timestamp_ms, method, path_and_query, body).as_bytes(),
        &tag,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector in docs/AUTH.md.
    #[test]
    fn documented_test_vector() {
        let secret = b"sbz-test-secret-0123456789abcdef";
        let body = br#"{"symbol":"BTCUSDT","side":"buy","type":"limit","qty":"0.01","price":"65000.00"}"#;
        let c = canonical("1767225600000", "POST", "/api/v1/orders", body);
        assert_eq!(
            c,
            "1767225600000\nPOST\n/api/v1/orders\n2a4f521c19a2ff54da74579e206a2bf323394d391f66a2414403d44d79e98018"
        );
        // Computed independently (Python's hmac module), as in the docs.
        assert_eq!(
            sign(secret, "1767225600000", "POST", "/api/v1/orders", body),
            "858b71cbee1b7494890787c49503354b6643514420c000329545ddd0f9a9adb7"
        );
        let sig = sign(secret, "1767225600000", "POST", "/api/v1/orders", body);
        assert!(verify(secret, &sig, "1767225600000", "POST", "/api/v1/orders", body));
        assert!(verify(
            secret,
            &sig.to_uppercase(),
            "1767225600000",
            "POST",
            "/api/v1/orders",
            body
        ));
        // Any change breaks it.
        assert!(!verify(secret, &sig, "1767225600001", "POST", "/api/v1/orders", body));
        assert!(!verify(secret, &sig, "1767225600000", "PUT", "/api/v1/orders", body));
        assert!(!verify(
            secret,
            &sig,
            "1767225600000",
            "POST",
            "/api/v1/orders?x=1",
            body
        ));
        assert!(!verify(secret, &sig, "1767225600000", "POST", "/api/v1/orders", b"{}"));
        assert!(!verify(
            b"another secret",
            &sig,
            "1767225600000",
            "POST",
            "/api/v1/orders",
            body
        ));
        assert!(!verify(secret, "zz", "1767225600000", "POST", "/api/v1/orders", body));
        assert!(!verify(
            secret,
            &sig[..62],
            "1767225600000",
            "POST",
            "/api/v1/orders",
            body
        ));
    }
}
