//! JWT bearer tokens. The algorithm is pinned by configuration (HS256 for development,
//! RS256 or EdDSA for production) and never taken from the token, so `alg: none` and
//! HS/RS key confusion fail; `exp`, `iss`, `aud` and `sub` are required, `nbf` is
//! honoured when present (both with a small leeway for clock skew), and a token may not
//! live longer than `[auth] max_token_lifetime_secs` (a leaked token stays dangerous
//! for at most that long).

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::auth::JwtAlgorithm;

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

/// The rate-limit tier a token buys (absent in a token: standard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Standard,
    Premium,
}

impl Tier {
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "standard" => Some(Tier::Standard),
            "premium" => Some(Tier::Premium),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The account name.
    pub sub: String,
    pub role: Role,
    #[serde(default)]
    pub tier: Tier,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    /// Not before (seconds since the epoch), when the issuer sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
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
    #[error("token not valid yet (nbf is in the future): check the issuer's and this server's clocks")]
    NotYetValid,
    #[error("token lifetime too long: tokens may live at most {0} s ([auth] max_token_lifetime_secs); get a shorter-lived one")]
    TooLong(u64),
    #[error("token issued in the future (iat): check the issuer's and this server's clocks")]
    IssuedInFuture,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("this server cannot mint tokens: set {0} to the PEM private key")]
    NoSigningKey(String),
    #[error("{0}")]
    Key(String),
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Tokens {
    algorithm: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    /// Named in the error when minting without a private key.
    private_key_env: String,
    /// Longest accepted lifetime (`exp - iat`, and `exp - now`), seconds.
    max_lifetime_secs: Option<u64>,
    leeway_secs: u64,
}

fn validation(algorithm: Algorithm, issuer: &str, audience: &str, leeway_secs: u64) -> Validation {
    let mut v = Validation::new(algorithm);
    v.algorithms = vec![algorithm];
    v.leeway = leeway_secs;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v
}

impl Tokens {
    /// HS256 with a shared secret (development).
    pub fn new(secret: &[u8], issuer: &str, audience: &str, leeway_secs: u64) -> Self {
        Self {
            algorithm: Algorithm::HS256,
            encoding: Some(EncodingKey::from_secret(secret)),
            decoding: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256, issuer, audience, leeway_secs),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            private_key_env: String::new(),
            max_lifetime_secs: None,
            leeway_secs,
        }
    }

    /// RS256 or EdDSA from PEM keys: the public key verifies; the private key, when
    /// given, mints (the server never needs it).
    pub fn from_pem(
        algorithm: JwtAlgorithm,
        public_pem: &[u8],
        private_pem: Option<&[u8]>,
        issuer: &str,
        audience: &str,
        leeway_secs: u64,
    ) -> Result<Self, TokenError> {
        let bad = |what: &str, e: jsonwebtoken::errors::Error| TokenError::Key(format!("{what}: {e}"));
        let (alg, decoding, encoding) = match algorithm {
            JwtAlgorithm::HS256 => {
                return Err(TokenError::Key("HS256 uses a shared secret, not PEM keys".into()));
            }
            JwtAlgorithm::RS256 => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(public_pem).map_err(|e| bad("public key is not an RSA PEM key", e))?,
                private_pem
                    .map(|p| EncodingKey::from_rsa_pem(p).map_err(|e| bad("private key is not an RSA PEM key", e)))
                    .transpose()?,
            ),
            JwtAlgorithm::EdDSA => (
                Algorithm::EdDSA,
                DecodingKey::from_ed_pem(public_pem).map_err(|e| bad("public key is not an Ed25519 PEM key", e))?,
                private_pem
                    .map(|p| EncodingKey::from_ed_pem(p).map_err(|e| bad("private key is not an Ed25519 PEM key", e)))
                    .transpose()?,
            ),
        };
        Ok(Self {
            algorithm: alg,
            encoding,
            decoding,
            validation: validation(alg, issuer, audience, leeway_secs),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            private_key_env: String::new(),
            max_lifetime_secs: None,
            leeway_secs,
        })
    }

    /// Refuses tokens living longer than `secs` (and minting them).
    pub fn with_max_lifetime(mut self, secs: u64) -> Self {
        self.max_lifetime_secs = Some(secs);
        self
    }

    /// The clock skew tolerated, seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Names the private key variable in "cannot mint" errors.
    pub fn with_private_key_env(mut self, var: &str) -> Self {
        self.private_key_env = var.to_owned();
        self
    }

    /// A token for `account` with `role` and `tier`, valid for `ttl_secs` from `now_secs`.
    pub fn mint(
        &self,
        account: &str,
        role: Role,
        tier: Tier,
        now_secs: u64,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        let Some(key) = &self.encoding else {
            return Err(TokenError::NoSigningKey(self.private_key_env.clone()));
        };
        if let Some(max) = self.max_lifetime_secs.filter(|m| ttl_secs > *m) {
            return Err(TokenError::TooLong(max));
        }
        let claims = Claims {
            sub: account.to_owned(),
            role,
            tier,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now_secs,
            exp: now_secs + ttl_secs,
            nbf: None,
        };
        encode(&Header::new(self.algorithm), &claims, key).map_err(|_| TokenError::Invalid("cannot sign"))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, now_secs())
    }

    /// [`verify`](Self::verify), with the lifetime checked against `now` (seconds).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let claims = self.decode(token)?;
        self.check_lifetime(&claims, now)?;
        Ok(claims)
    }

    /// The lifetime rules jsonwebtoken does not know: `iat` not in the future, and at
    /// most `max_lifetime_secs` both from `iat` and from now.
    pub fn check_lifetime(&self, c: &Claims, now: u64) -> Result<(), TokenError> {
        if c.iat > now.saturating_add(self.leeway_secs) {
            return Err(TokenError::IssuedInFuture);
        }
        if let Some(max) = self.max_lifetime_secs {
            let from_iat = c.exp.saturating_sub(c.iat);
            let from_now = c.exp.saturating_sub(now);
            if from_iat > max || from_now > max.saturating_add(self.leeway_secs) {
                return Err(TokenError::TooLong(max));
            }
        }
        Ok(())
    }

    fn decode(&self, token: &str) -> Result<Claims, TokenError> {
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
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
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
        let tok = t.mint("ACC1", Role::Trader, Tier::Standard, now(), 60).unwrap();
        let c = t.verify(&tok).unwrap();
        assert_eq!((c.sub.as_str(), c.role), ("ACC1", Role::Trader));
        assert_eq!(t.verify_header(Some(&format!("Bearer {tok}"))).unwrap().sub, "ACC1");
        assert_eq!(t.verify_header(None).unwrap_err(), TokenError::Missing);
        assert_eq!(t.verify_header(Some("Basic abc")).unwrap_err(), TokenError::Malformed);

        let expired = t.mint("ACC1", Role::Trader, Tier::Standard, now() - 3_600, 60).unwrap();
        assert_eq!(t.verify(&expired).unwrap_err(), TokenError::Expired);
        let other_key = Tokens::new(b"another key another key another k", "iss", "aud", 5);
        assert_eq!(
            t.verify(&other_key.mint("ACC1", Role::Admin, Tier::Standard, now(), 60).unwrap())
                .unwrap_err(),
            TokenError::Invalid("bad signature")
        );
        let wrong_aud = Tokens::new(KEY, "iss", "other", 5)
            .mint("ACC1", Role::Admin, Tier::Standard, now(), 60)
            .unwrap();
        assert_eq!(t.verify(&wrong_aud).unwrap_err(), TokenError::Invalid("wrong audience"));
        let wrong_iss = Tokens::new(KEY, "x", "aud", 5)
            .mint("ACC1", Role::Admin, Tier::Standard, now(), 60)
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

    fn claims_token(t: &Tokens, iat: i64, exp: i64, nbf: Option<i64>) -> String {
        let mut c = serde_json::json!({"sub":"ACC1","role":"trader","iss":"iss","aud":"aud","iat":iat,"exp":exp});
        if let Some(n) = nbf {
            c["nbf"] = n.into();
        }
        let _ = t;
        encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(KEY)).unwrap()
    }

    #[test]
    fn nbf_and_lifetime_examples() {
        let t = Tokens::new(KEY, "iss", "aud", 30).with_max_lifetime(3_600);
        let n = now() as i64;
        assert!(
            t.verify(&claims_token(&t, n, n + 600, Some(n + 10))).is_ok(),
            "nbf inside the leeway"
        );
        assert_eq!(
            t.verify(&claims_token(&t, n, n + 600, Some(n + 120))).unwrap_err(),
            TokenError::NotYetValid
        );
        // 100 years.
        let century = claims_token(&t, n, n + 100 * 365 * 86_400, None);
        assert_eq!(t.verify(&century).unwrap_err(), TokenError::TooLong(3_600));
        // Issued "in the future" to dodge the lifetime rule.
        assert_eq!(
            t.verify(&claims_token(&t, n + 86_400, n + 86_400 + 60, None))
                .unwrap_err(),
            TokenError::IssuedInFuture
        );
        // Minting is bounded too.
        assert_eq!(
            t.mint("ACC1", Role::Trader, Tier::Standard, now(), 3_601).unwrap_err(),
            TokenError::TooLong(3_600)
        );
        assert!(t.mint("ACC1", Role::Trader, Tier::Standard, now(), 3_600).is_ok());
    }

    proptest::proptest! {
        /// Any iat / exp / nbf around now: accepted exactly when exp is not past, nbf not
        /// ahead, iat not ahead (each with the leeway) and the lifetime within the bound.
        /// Cases within 5 s of a boundary are skipped (the clock moves while it runs).
        #[test]
        fn nbf_exp_iat_and_lifetime_against_an_oracle(
            iat_off in -200_000i64..200_000,
            ttl in 0i64..400_000,
            nbf_off in proptest::option::of(-200_000i64..200_000),
        ) {
            const LEEWAY: i64 = 30;
            const MAX: i64 = 86_400;
            let t = Tokens::new(KEY, "iss", "aud", LEEWAY as u64).with_max_lifetime(MAX as u64);
            let n = now() as i64;
            let (iat, exp, nbf) = (n + iat_off, n + iat_off + ttl, nbf_off.map(|o| n + o));
            let margins = [exp - (n - LEEWAY), iat - (n + LEEWAY), (exp - iat) - MAX, (exp - n) - (MAX + LEEWAY)];
            let nbf_margin = nbf.map(|v| v - (n + LEEWAY));
            proptest::prop_assume!(margins.iter().chain(nbf_margin.iter()).all(|m| m.abs() > 5));
            let ok = exp > n - LEEWAY
                && nbf.is_none_or(|v| v <= n + LEEWAY)
                && iat <= n + LEEWAY
                && exp - iat <= MAX
                && exp - n <= MAX + LEEWAY;
            let got = t.verify(&claims_token(&t, iat, exp, nbf));
            proptest::prop_assert_eq!(got.is_ok(), ok, "iat {} exp {} nbf {:?}: {:?}", iat_off, ttl, nbf_off, got);
        }
    }
}
