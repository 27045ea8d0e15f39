//! HS256 JWT bearer tokens: verification pinned to HS256 (no `none`, no algorithm
//! taken from the token), `exp` required, issuer and audience checked, small leeway.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Trader,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "trader" => Some(Role::Trader),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Trader => "trader",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The account name.
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// Why a token was refused (the message never echoes the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing bearer token: send Authorization: Bearer <token>")]
    Missing,
    #[error("malformed Authorization header: expected \"Bearer <token>\"")]
    Malformed,
    #[error("token expired: get a new one")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl Tokens {
    pub fn new(secret: &[u8], issuer: &str, audience: &str, leeway_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = leeway_secs;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// A token for `account` with `role`, valid for `ttl_secs` from `now_secs`.
    pub fn mint(&self, account: &str, role: Role, now_secs: u64, ttl_secs: u64) -> Result<String, TokenError> {
        let claims = Claims {
            sub: account.to_owned(),
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now_secs,
            exp: now_secs + ttl_secs,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|_| TokenError::Invalid("cannot sign"))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature"),
                ErrorKind::InvalidAlgorithm => TokenError::Invalid("algorithm not allowed"),
                ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer"),
                ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience"),
                ErrorKind::MissingRequiredClaim(_) => TokenError::Invalid("a required claim is missing"),
                ErrorKind::ImmatureSignature => TokenError::Invalid("not valid yet"),
                _ => TokenError::Invalid("malformed"),
            })
    }

    /// Verifies the value of an `Authorization` header.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Claims, TokenError> {
        let h = header.ok_or(TokenError::Missing)?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .filter(|t| !t.trim().is_empty())
            .ok_or(TokenError::Malformed)?;
        self.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    #[test]
    fn mint_verify_and_forgeries() {
        let t = Tokens::new(KEY, "iss", "aud", 5);
        let tok = t.mint("ACC1", Role::Trader, now(), 60).unwrap();
        let c = t.verify(&tok).unwrap();
        assert_eq!((c.sub.as_str(), c.role), ("ACC1", Role::Trader));
        assert_eq!(t.verify_header(Some(&format!("Bearer {tok}"))).unwrap().sub, "ACC1");
        assert_eq!(t.verify_header(None).unwrap_err(), TokenError::Missing);
        assert_eq!(t.verify_header(Some("Basic abc")).unwrap_err(), TokenError::Malformed);

        let expired = t.mint("ACC1", Role::Trader, now() - 3_600, 60).unwrap();
        assert_eq!(t.verify(&expired).unwrap_err(), TokenError::Expired);
        let other_key = Tokens::new(b"another key another key another k", "iss", "aud", 5);
        assert_eq!(
            t.verify(&other_key.mint("ACC1", Role::Admin, now(), 60).unwrap())
                .unwrap_err(),
            TokenError::Invalid("bad signature")
        );
        let wrong_aud = Tokens::new(KEY, "iss", "other", 5)
            .mint("ACC1", Role::Admin, now(), 60)
            .unwrap();
        assert_eq!(t.verify(&wrong_aud).unwrap_err(), TokenError::Invalid("wrong audience"));
        let wrong_iss = Tokens::new(KEY, "x", "aud", 5)
            .mint("ACC1", Role::Admin, now(), 60)
            .unwrap();
        assert_eq!(t.verify(&wrong_iss).unwrap_err(), TokenError::Invalid("wrong issuer"));

        // alg "none": header swapped, signature dropped.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = tok.split('.').nth(1).unwrap();
        let none = format!("{}.{payload}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#));
        assert!(t.verify(&none).is_err());
        // Tampered payload with the original signature.
        let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
        claims["role"] = "admin".into();
        let parts: Vec<&str> = tok.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
        assert_eq!(t.verify(&forged).unwrap_err(), TokenError::Invalid("bad signature"));
        // No exp at all.
        let no_exp = serde_json::json!({"sub":"ACC1","role":"trader","iss":"iss","aud":"aud","iat":now()});
        let tok = encode(&Header::new(Algorithm::HS256), &no_exp, &EncodingKey::from_secret(KEY)).unwrap();
        assert!(t.verify(&tok).is_err());
        assert!(t.verify("not.a.jwt").is_err());
    }
}
