//! Who is calling: JWT bearer tokens carrying an account, a role and a tier, or
//! HMAC-signed requests from algo services. The [`caller`] middleware decides once per
//! request; the [`Principal`] extractor turns that into an account on the routes that
//! need one.

pub mod access;
pub mod caller;
pub mod caller_layer;
pub mod hmac;
pub mod jwt;
pub mod key;
pub mod nonce;
pub mod routes;
pub mod services;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use stocksblitz_engine::orders::AccountId;

use crate::audit::Actor;
use crate::config::auth::{AuthConfig, Operation};
use crate::foundation::ApiError;
use crate::orders::{Desk, OrderService};
use crate::ratelimit::{AddrKey, Bucket, InlineStr, LimitTier};
pub use access::Access;
pub use jwt::{Claims, Role, Tier, TokenError, Tokens};
use services::{Service, Services};

/// Who is calling, as the [`caller`] middleware decided.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous(IpAddr),
    Token(Arc<Claims>),
    Service(Arc<Service>),
}

impl Caller {
    pub fn actor(&self) -> Actor {
        match self {
            Caller::Anonymous(_) => Actor::anonymous(),
            Caller::Token(c) => Actor {
                kind: "account",
                name: Some(c.sub.clone()),
            },
            Caller::Service(s) => Actor {
                kind: "service",
                name: Some(s.name.clone()),
            },
        }
    }

    /// The bucket and tier, or `None` for unlimited (signed services).
    pub(crate) fn limit(&self) -> Option<(Bucket, LimitTier)> {
        match self {
            Caller::Anonymous(ip) => Some((Bucket::Address(AddrKey::of(*ip, false)), LimitTier::Anonymous)),
            Caller::Token(c) => Some((
                Bucket::Text(InlineStr::format(format_args!("acct:{}", c.sub))),
                match c.tier {
                    Tier::Standard => LimitTier::Authenticated,
                    Tier::Premium => LimitTier::Premium,
                },
            )),
            Caller::Service(_) => None,
        }
    }
}

/// Token verification and signed-request checking, from `[auth]`.
pub struct Authenticator {
    pub tokens: Tokens,
    pub services: Services,
}

impl Authenticator {
    /// Loads every key and secret `[auth]` names; any missing one stops start-up.
    pub fn load(a: &AuthConfig, redis: Option<Arc<crate::redis_store::RedisStore>>) -> anyhow::Result<Self> {
        let tokens = key::tokens(a, false).map_err(|e| anyhow::anyhow!("loading the token key ([auth]): {e}"))?;
        let nonces = match redis {
            Some(r) => nonce::NonceStore::Redis(r),
            None => nonce::NonceStore::local(),
        };
        let services = Services::load(&a.services, a.signature_window_ms, nonces)
            .map_err(|e| anyhow::anyhow!("[[auth.services]]: {e}"))?;
        Ok(Self { tokens, services })
    }
}

/// An authenticated caller acting for an account.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account: AccountId,
    pub name: String,
    pub role: Role,
    /// A signed service: what it may do. `None`: a token holder (its role decides).
    pub service: Option<Arc<Service>>,
    /// A token holder's rate-limit tier (`None`: a signed service, unlimited).
    pub tier: Option<Tier>,
    /// When the token expires (seconds since the epoch); `None` for signed services.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// Whether its token has expired (past the leeway) at `now` (seconds).
    pub fn expired(&self, now: u64, leeway_secs: u64) -> bool {
        self.expires_at.is_some_and(|exp| now > exp.saturating_add(leeway_secs))
    }

    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        let ok = match role {
            Role::Viewer => true,
            Role::Trader => matches!(self.role, Role::Trader | Role::Admin),
            Role::Admin => self.role == Role::Admin,
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!(
                    "this needs the {} role; your token has {}",
                    role.as_str(),
                    self.role.as_str()
                ),
            ))
        }
    }

    /// Who acts, for the audit log.
    pub fn actor(&self) -> crate::audit::Actor {
        match &self.service {
            Some(s) => crate::audit::Actor {
                kind: "service",
                name: Some(s.name.clone()),
            },
            None => crate::audit::Actor {
                kind: "account",
                name: Some(self.name.clone()),
            },
        }
    }

    /// For a signed service, whether its allow-list has `op` (token holders: yes).
    pub fn allow(&self, op: Operation) -> Result<(), ApiError> {
        match &self.service {
            Some(s) if !s.allows(op) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "OPERATION_NOT_ALLOWED",
                format!(
                    "service {:?} may not do {:?}: see its operations in [[auth.services]]",
                    s.name,
                    op.as_str()
                ),
            )),
            _ => Ok(()),
        }
    }
}

fn unknown_account() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "UNKNOWN_ACCOUNT",
        "the account in your token is not configured on this engine",
    )
}

/// The account a caller acts for, when order entry is on.
pub fn principal(orders: Option<&OrderService>, caller: &Caller) -> Result<Principal, ApiError> {
    let Some(orders) = orders else {
        return Err(crate::orders::disabled());
    };
    let (name, role, service, tier, expires_at) = match caller {
        Caller::Anonymous(_) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                TokenError::Missing.to_string(),
            ))
        }
        Caller::Token(c) => (c.sub.clone(), c.role, None, Some(c.tier), Some(c.exp)),
        Caller::Service(s) => (s.account.clone(), Role::Trader, Some(Arc::clone(s)), None, None),
    };
    let account = orders.accounts.id(&name).ok_or_else(unknown_account)?;
    Ok(Principal {
        account,
        name,
        role,
        service,
        tier,
        expires_at,
    })
}

/// Verifies a bearer token sent over a WebSocket (`{"op":"auth"}`) and resolves its
/// account.
pub fn authenticate(
    auth: Option<&Authenticator>,
    orders: Option<&OrderService>,
    token: &str,
) -> Result<Principal, ApiError> {
    let Some(auth) = auth else {
        return Err(crate::orders::disabled());
    };
    let claims = auth
        .tokens
        .verify(token.trim())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string()))?;
    principal(orders, &Caller::Token(Arc::new(claims)))
}

impl<S: Send + Sync> FromRequestParts<S> for Principal
where
    Desk: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        principal(Desk::from_ref(state).orders.as_deref(), &caller)
    }
}
