//! `[auth]`: how callers prove who they are. JWT bearer tokens (HS256 with a shared
//! secret for development; RS256 or EdDSA with a key pair for production) and
//! HMAC-signed requests from algo services (`[[auth.services]]`). Only names of
//! environment variables live here: every key and secret comes from the environment
//! or a `<VAR>_FILE` path at start-up.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::range;
use super::error::ConfigError;

/// The one signature algorithm tokens must carry (never taken from the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    EdDSA,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub algorithm: JwtAlgorithm,
    /// HS256: environment variable holding the shared secret (or `<VAR>_FILE`).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// HS256 only, development: when the secret variable is unset, a key file created
    /// with a random key (mode 0600) on first start.
    #[serde(default)]
    pub dev_key_file: Option<PathBuf>,
    /// RS256/EdDSA: environment variable holding the PEM public key that verifies
    /// tokens (or `<VAR>_FILE`, a path to the PEM file).
    #[serde(default)]
    pub public_key_env: Option<String>,
    /// RS256/EdDSA: environment variable holding the PEM private key; only
    /// `stocksblitz token` (minting) reads it, never the server.
    #[serde(default)]
    pub private_key_env: Option<String>,
    /// `iss` tokens must carry and minted tokens get.
    pub issuer: String,
    /// `aud` tokens must carry and minted tokens get.
    pub audience: String,
    /// Clock skew tolerated on `exp`/`nbf`/`iat`, seconds.
    pub leeway_secs: u64,
    /// Longest token lifetime accepted (`exp - iat`, and `exp` from now), seconds;
    /// `stocksblitz token --ttl-secs` may not exceed it either.
    pub max_token_lifetime_secs: u64,
    /// HMAC-signed requests: `X-Request-Timestamp` may be at most this far from our
    /// clock, either way, in milliseconds.
    pub signature_window_ms: u64,
    /// Algo services allowed to sign requests with HMAC-SHA256.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
}

/// What a signed request may do (checked per route and per WebSocket op).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Read orders, fills, positions, risk usage, market data; open the stream.
    Read,
    /// Place orders (and test them).
    Place,
    /// Change an order's price or quantity.
    Modify,
    /// Cancel one order.
    Cancel,
    /// Cancel many orders at once.
    MassCancel,
}

impl Operation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Place => "place",
            Operation::Modify => "modify",
            Operation::Cancel => "cancel",
            Operation::MassCancel => "mass_cancel",
        }
    }
}

/// `[[auth.services]]`: one algo service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `X-Service-Identity`.
    pub name: String,
    /// `X-Internal-API-Key`: which key signed (rotate by adding a second entry).
    pub key_id: String,
    /// Environment variable holding the HMAC secret (or `<VAR>_FILE`).
    pub secret_env: String,
    /// The account its orders belong to.
    pub account: String,
    /// What it may do; anything else is refused with 403 OPERATION_NOT_ALLOWED.
    pub operations: Vec<Operation>,
}

fn env_name(key: &str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, "an environment variable name: A-Z, 0-9, '_'"))
    }
}

/// Checks `[auth]` values (keys and secrets are loaded at start-up). `accounts` are
/// the configured account names services may act for.
pub fn check(a: &AuthConfig, accounts: &[String]) -> Result<(), ConfigError> {
    match a.algorithm {
        JwtAlgorithm::HS256 => {
            let Some(var) = &a.secret_env else {
                return Err(ConfigError::invalid(
                    "auth.secret_env",
                    "HS256 needs the name of the variable holding the secret",
                ));
            };
            env_name("auth.secret_env", var)?;
            for (key, set) in [
                ("auth.public_key_env", a.public_key_env.is_some()),
                ("auth.private_key_env", a.private_key_env.is_some()),
            ] {
                if set {
                    return Err(ConfigError::invalid(
                        key,
                        "only for RS256/EdDSA: remove it, or change auth.algorithm",
                    ));
                }
            }
        }
        JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA => {
            let Some(var) = &a.public_key_env else {
                return Err(ConfigError::invalid(
                    "auth.public_key_env",
                    "RS256/EdDSA need the name of the variable holding the PEM public key",
                ));
            };
            env_name("auth.public_key_env", var)?;
            if let Some(var) = &a.private_key_env {
                env_name("auth.private_key_env", var)?;
            }
            for (key, set) in [
                ("auth.secret_env", a.secret_env.is_some()),
                ("auth.dev_key_file", a.dev_key_file.is_some()),
            ] {
                if set {
                    return Err(ConfigError::invalid(
                        key,
                        "only for HS256: remove it, or change auth.algorithm",
                    ));
                }
            }
        }
    }
    if a.issuer.is_empty() {
        return Err(ConfigError::invalid("auth.issuer", "must not be empty"));
    }
    if a.audience.is_empty() {
        return Err(ConfigError::invalid("auth.audience", "must not be empty"));
    }
    range("auth.leeway_secs", a.leeway_secs, 0, 300)?;
    range(
        "auth.max_token_lifetime_secs",
        a.max_token_lifetime_secs,
        60,
        31_622_400,
    )?;
    range("auth.signature_window_ms", a.signature_window_ms, 100, 300_000)?;
    let mut key_ids = HashSet::new();
    for (i, s) in a.services.iter().enumerate() {
        let key = |k: &str| format!("auth.services[{i}].{k}");
        let token_ok = |v: &str| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !token_ok(&s.name) {
            return Err(ConfigError::invalid(
                key("name"),
                "1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if !token_ok(&s.key_id) {
            return Err(ConfigError::invalid(
                key("key_id"),
                "1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if !key_ids.insert(s.key_id.as_str()) {
            return Err(ConfigError::invalid(
                key("key_id"),
                format!("{:?} is used twice", s.key_id),
            ));
        }
        env_name(&key("secret_env"), &s.secret_env)?;
        if !accounts.iter().any(|acc| acc == &s.account) {
            return Err(ConfigError::invalid(
                key("account"),
                format!("{:?} is not in [[orders.accounts]]", s.account),
            ));
        }
        if s.operations.is_empty() {
            return Err(ConfigError::invalid(
                key("operations"),
                "list what it may do: read, place, modify, cancel, mass_cancel",
            ));
        }
    }
    Ok(())
}
