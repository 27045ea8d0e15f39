//! The audit log's line format and hash chain. Each line is one JSON object whose
//! last member is `"hash"`: the SHA-256 (hex) of the previous line's hash, a newline,
//! and this line's text without the hash member. Lines also carry `seq` and `prev`, so
//! a removed, reordered or edited line breaks the chain where it happened.

use std::io::BufRead;
use std::path::Path;

use ring::digest;

use crate::auth::hmac::hex;

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_SUFFIX_LEN: usize = r#","hash":""}"#.len() + 64;

fn hash(prev: &str, body: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev.as_bytes());
    ctx.update(b"\n");
    ctx.update(body.as_bytes());
    hex(ctx.finish().as_ref())
}

/// Appends the hash member to `body` (a JSON object's text); returns the line (no
/// newline) and its hash.
pub fn seal(prev: &str, body: &str) -> (String, String) {
    let h = hash(prev, body);
    let open = body.strip_suffix('}').unwrap_or(body);
    let sep = if open.ends_with('{') { "" } else { "," };
    (format!("{open}{sep}\"hash\":\"{h}\"}}"), h)
}

/// Splits a line into the body that was hashed and the hash it claims.
pub fn open(line: &str) -> Option<(String, &str)> {
    if line.len() < HASH_SUFFIX_LEN || !line.ends_with("\"}") {
        return None;
    }
    let cut = line.len() - HASH_SUFFIX_LEN;
    let (head, tail) = line.split_at(cut);
    let h = tail.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    Some((format!("{head}}}"), h))
}

/// Where the chain broke.
#[derive(Debug, thiserror::Error)]
#[error("{path} line {line}: {reason}")]
pub struct Broken {
    pub path: String,
    pub line: u64,
    pub reason: String,
}

/// What a verified file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub last_seq: u64,
    pub last_hash: String,
}

/// Checks every line of an audit log.
pub fn verify(path: &Path) -> Result<Verified, Broken> {
    let broken = |line: u64, reason: String| Broken {
        path: path.display().to_string(),
        line,
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| broken(0, e.to_string()))?;
    let mut prev = GENESIS.to_owned();
    let mut last_seq = 0;
    let mut n = 0u64;
    for line in std::io::BufReader::new(file).lines() {
        n += 1;
        let line = line.map_err(|e| broken(n, e.to_string()))?;
        let (body, claimed) = open(&line).ok_or_else(|| broken(n, "no hash member at the end".into()))?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| broken(n, format!("not JSON: {e}")))?;
        if v["prev"].as_str() != Some(prev.as_str()) {
            return Err(broken(
                n,
                "prev is not the previous line's hash (a line was removed or reordered)".into(),
            ));
        }
        let seq = v["seq"].as_u64().ok_or_else(|| broken(n, "no seq".into()))?;
        if seq != last_seq + 1 {
            return Err(broken(n, format!("seq {seq} follows {last_seq}")));
        }
        if hash(&prev, &body) != claimed {
            return Err(broken(n, "hash does not match the line (it was edited)".into()));
        }
        prev = claimed.to_owned();
        last_seq = seq;
    }
    Ok(Verified {
        entries: n,
        last_seq,
        last_hash: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip() {
        let (line, h) = seal(GENESIS, r#"{"a":1,"prev":"x"}"#);
        let (body, claimed) = open(&line).unwrap();
        assert_eq!(body, r#"{"a":1,"prev":"x"}"#);
        assert_eq!(claimed, h);
        assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok());
        assert!(open("{}").is_none());
    }
}
