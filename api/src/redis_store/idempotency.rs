//! `Idempotency-Key` in Redis, shared by every API node: the first request claims
//! `idem:{account}:{key}` with `SET NX PX` (state "in flight" plus the body's
//! fingerprint) for about as long as a request can take; its answer then replaces the
//! value for `idempotency_ttl_secs`, or the key is deleted when the outcome was not
//! final (busy, unknown) so the client can retry. A node that dies mid-request
//! leaves its claim to expire within seconds, not the whole TTL: the retry then finds
//! the journaled answer (or sends the command again under the same tag, which the
//! engine applies at most once).
//! The same key with the same body returns the original answer, another body 422,
//! a key still in flight 409.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{RedisDown, RedisStore};
use stocksblitz_engine::orders::IdemTag;

use crate::orders::idempotency::Claim;

/// The body's SHA-256 (truncated), the same on every node and version.
fn body_fingerprint(idem_key: &str, body: &[u8]) -> String {
    IdemTag::new(idem_key, body)
        .body
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key(account: &str, key: &str) -> String {
    format!("idem:{account}:{key}")
}

impl RedisStore {
    /// Claims the key for `in_flight` (the longest a request can take).
    pub async fn claim(
        &self,
        account: &str,
        idem_key: &str,
        body: &[u8],
        in_flight: std::time::Duration,
    ) -> Result<Claim, RedisDown> {
        let k = key(account, idem_key);
        let fp = body_fingerprint(idem_key, body);
        let claimed: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(&k)
                    .arg(json!({ "fp": fp, "state": "in_flight" }).to_string())
                    .arg("NX")
                    .arg("PX")
                    .arg(in_flight.as_millis().max(1) as u64)
                    .to_owned(),
            )
            .await?;
        if claimed.is_some() {
            return Ok(Claim::Proceed);
        }
        let existing: Option<String> = self.query(redis::cmd("GET").arg(&k).to_owned()).await?;
        let Some(v) = existing.and_then(|s| serde_json::from_str::<Value>(&s).ok()) else {
            // Expired between the two commands: claim again next time.
            return Ok(Claim::InFlight);
        };
        if v["fp"].as_str() != Some(fp.as_str()) {
            return Ok(Claim::Mismatch);
        }
        if v["state"] == "done" {
            let status = v["status"]
                .as_u64()
                .and_then(|s| StatusCode::from_u16(s as u16).ok())
                .unwrap_or(StatusCode::OK);
            return Ok(Claim::Replay {
                status,
                body: v["body"].clone(),
            });
        }
        Ok(Claim::InFlight)
    }

    pub async fn finish(
        &self,
        account: &str,
        idem_key: &str,
        body_bytes: &[u8],
        status: StatusCode,
        answer: &Value,
        final_outcome: bool,
    ) -> Result<(), RedisDown> {
        let k = key(account, idem_key);
        if !final_outcome {
            return self
                .query::<i64>(redis::cmd("DEL").arg(&k).to_owned())
                .await
                .map(|_| ());
        }
        let fp = body_fingerprint(idem_key, body_bytes);
        let v = json!({ "fp": fp, "state": "done", "status": status.as_u16(), "body": answer });
        self.query::<Option<String>>(
            redis::cmd("SET")
                .arg(&k)
                .arg(v.to_string())
                .arg("XX")
                .arg("EX")
                .arg(self.setup.idempotency_ttl_secs)
                .to_owned(),
        )
        .await
        .map(|_| ())
    }
}
