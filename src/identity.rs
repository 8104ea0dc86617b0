//! The identity model: what a validated access token says about its holder.
//!
//! Token verification (`oidc`) produces an [`Identity`]; policy evaluation (`policy`) consumes
//! it. Nothing here is trusted more than the token it came from: every field was read from a
//! token whose signature, issuer, audience and lifetime were already checked.

use std::sync::Arc;

use serde_json::{Map, Value};

/// Whether the token was issued to a person or to an application acting as itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A delegated (user) token: a person signed in through a client application.
    User,
    /// An app-only token (client credentials, managed identity, workload identity).
    Application,
}

impl PrincipalKind {
    /// The lowercase name used in logs and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Application => "application",
        }
    }
}

/// A verified caller.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Name of the configured identity provider that verified the token.
    pub provider: Arc<str>,
    /// The token's `iss`, exactly as verified.
    pub issuer: String,
    /// Entra tenant id (`tid`), a lowercase GUID; `None` for providers without tenants.
    pub tenant: Option<String>,
    /// Immutable object id of the user or service principal (`oid`).
    pub object_id: Option<String>,
    /// The token's `sub`.
    pub subject: String,
    /// Client application id (`azp` in v2 tokens, `appid` in v1 tokens).
    pub app_id: Option<String>,
    /// User or application.
    pub kind: PrincipalKind,
    /// App roles (`roles`).
    pub roles: Vec<String>,
    /// Group object ids (`groups`).
    pub groups: Vec<String>,
    /// Delegated scopes (`scp`, split on spaces).
    pub scopes: Vec<String>,
    /// True when the token marks the holder as a guest (`acct == 1`).
    pub guest: bool,
    /// A human-readable name for logs and the NATS user name; never used for authorization.
    pub display_name: Option<String>,
    /// The token's `exp` (unix seconds). Nothing minted from this identity may outlive it.
    pub expires_at: u64,
    /// Microsoft's token id (`uti`) or the token's `jti`, for correlating logs.
    pub token_id: Option<String>,
    /// Every claim of the token, for policies that match raw claims.
    pub claims: Map<String, Value>,
}
