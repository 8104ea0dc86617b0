//! Access-token validation for Entra ID and generic OIDC issuers: from a compact JWT to a
//! verified [`Identity`].
//!
//! Layout:
//! * `settings`: validated [`ProviderSettings`] of one provider (Entra tenants and versions, or a
//!   generic issuer; audiences, algorithms, hosts, limits).
//! * `verify`: the pure core, [`verify_with_keys`]; no I/O, time is a parameter.
//! * `keys`: [`KeySet`] parsing and the HTTP fetch of discovery + JWKS.
//! * `graph`: group-overage resolution through Microsoft Graph.
//! * `routing`: `Routes`, the pure value that picks a token's provider and key source by `iss`
//!   (never by trial) and applies the tenant rules before any fetch; `explain` uses it too.
//! * `sources`: `KeySources`, each key source's last good set, single fetch in flight and pause
//!   after failures, and the background refresh.
//! * `verified`: the cache of tokens whose signatures were verified, by SHA-256.
//! * `verifier`: [`Verifier`], which assembles those parts and runs a token through them.
//!
//! No error or log line produced here contains the token.
//!
//! [`Identity`]: crate::identity::Identity

mod graph;
mod keys;
#[cfg(test)]
mod proptests;
mod routing;
mod settings;
mod sources;
mod verified;
mod verifier;
mod verify;

use std::sync::Arc;

use crate::deny::DenyReason;

pub use graph::GraphError;
pub use keys::{KeySet, KeysError, SigningKey};
pub use settings::{
    ClaimPath, DEFAULT_GRAPH_URL, DEFAULT_KEY_REFRESH_INTERVAL, DEFAULT_LEEWAY_SECS,
    DEFAULT_LOGIN_HOST, DEFAULT_MAX_TOKEN_BYTES, DEFAULT_STS_HOST,
    DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL, EntraSettings, GraphCredential, GraphSettings,
    GroupsOverage, OidcSettings, PrincipalRule, ProviderKind, ProviderSettings, Secret,
    SettingsError, Tenants, TokenVersion, Versions,
};
pub use sources::DEFAULT_KEY_WAIT;
pub use verified::{DEFAULT_TOKEN_CACHE_SIZE, TokenDigest, token_digest};
pub use verifier::{Refused, Verification, Verifier, VerifierError};
pub use verify::verify_with_keys;

pub(crate) use routing::{Routes, Via};

/// `error: cause: cause`, for one-line logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Maps token claims to an [`Identity`] with every check the verifier makes except the
/// signature (issuer, tenant, audience, lifetime, token type). For offline tools only: the
/// claims are trusted as given.
///
/// [`Identity`]: crate::identity::Identity
pub fn identity_from_unverified_claims(
    claims: serde_json::Map<String, serde_json::Value>,
    settings: &ProviderSettings,
    now: u64,
) -> Result<crate::identity::Identity, TokenError> {
    verify::identity_from_claims(claims, settings, now)
}

/// Why a token was refused. Never carries the token; values read from it are limited to short,
/// sanitised header fields (`alg`, `kid`) and numeric dates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token exceeds the size limit.
    #[error("token is {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The token is not a well-formed compact JWT.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// A required claim is absent.
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type or an invalid value.
    #[error("token claim `{claim}` is not {expected}")]
    InvalidClaim {
        /// The claim at fault.
        claim: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
    /// The header's `alg` is not on the provider's allow-list (or is `none`/HS*).
    #[error("token algorithm `{alg}` is not allowed")]
    AlgorithmNotAllowed {
        /// The header's `alg`, sanitised.
        alg: String,
    },
    /// The header has no `kid`.
    #[error("token header has no `kid`")]
    KeyIdMissing,
    /// The provider publishes no key with the token's `kid`.
    #[error("provider `{provider}` publishes no key with kid `{kid}`")]
    KeyUnknown {
        /// The provider that was asked.
        provider: Arc<str>,
        /// The header's `kid`, sanitised.
        kid: String,
    },
    /// The provider's keys could not be fetched and none are cached.
    #[error("signing keys of provider `{provider}` are unavailable")]
    KeysUnavailable {
        /// The provider whose keys are missing.
        provider: Arc<str>,
        /// Why the fetch failed.
        #[source]
        source: Arc<KeysError>,
    },
    /// The signature does not verify.
    #[error("token signature does not verify with the key of provider `{provider}`")]
    SignatureInvalid {
        /// The provider whose key was used.
        provider: Arc<str>,
    },
    /// No configured provider issues tokens with this `iss`.
    #[error("token issuer is not a configured provider")]
    IssuerUnknown,
    /// The `iss` disagrees with the provider, the `tid` or the signing key's issuer.
    #[error("token issuer does not match provider `{provider}`: {detail}")]
    IssuerMismatch {
        /// The provider at fault.
        provider: Arc<str>,
        /// Which check failed.
        detail: &'static str,
    },
    /// The token's `tid` is not among the provider's tenants.
    #[error("token tenant is not allowed by provider `{provider}`")]
    TenantNotAllowed {
        /// The provider whose tenants were checked.
        provider: Arc<str>,
    },
    /// The token's `tid` is absent or not a canonical GUID, or `iss` names no GUID tenant.
    #[error("token tenant is invalid: {0}")]
    TenantInvalid(&'static str),
    /// The token's `tid` is not the tenant its `iss` names.
    #[error("token tid is not the tenant in iss (provider `{provider}`)")]
    TenantMismatch {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// The token's version (v1 or v2 issuer) is not enabled for the provider.
    #[error("provider `{provider}` does not accept {version} tokens")]
    VersionNotAllowed {
        /// The provider at fault.
        provider: Arc<str>,
        /// `v1` or `v2`.
        version: &'static str,
    },
    /// The signing key is published for another issuer than the token's.
    #[error("the signing key belongs to another issuer than the token's (provider `{provider}`)")]
    KeyIssuerMismatch {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// No `aud` value is a configured audience.
    #[error("token audience is not an audience of provider `{provider}`")]
    AudienceMismatch {
        /// The provider whose audiences were checked.
        provider: Arc<str>,
    },
    /// The token has expired.
    #[error("token expired at {exp} (now {now}, leeway {leeway}s)")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The time of the check.
        now: u64,
        /// The leeway applied.
        leeway: u64,
    },
    /// The token is not valid yet.
    #[error("token is not valid before {nbf} (now {now}, leeway {leeway}s)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The time of the check.
        now: u64,
        /// The leeway applied.
        leeway: u64,
    },
    /// The token is an ID token or otherwise not an access token.
    #[error("token is not an access token: {0}")]
    NotAnAccessToken(&'static str),
    /// The token's groups were replaced by an overage marker: membership is unknown.
    #[error("token replaces its groups with an overage marker; group membership is unknown")]
    GroupsOverage,
    /// The token's groups overage could not be resolved through Microsoft Graph.
    #[error("groups overage of provider `{provider}` could not be resolved")]
    GroupsUnresolved {
        /// The provider at fault.
        provider: Arc<str>,
        /// Why Graph failed.
        #[source]
        source: Arc<GraphError>,
    },
}

impl TokenError {
    /// The provider the token was routed to, when the refusal names one: the audit trail says
    /// which provider refused even when no identity came out of the token.
    pub fn provider(&self) -> Option<&Arc<str>> {
        match self {
            Self::KeyUnknown { provider, .. }
            | Self::KeysUnavailable { provider, .. }
            | Self::SignatureInvalid { provider }
            | Self::IssuerMismatch { provider, .. }
            | Self::TenantNotAllowed { provider }
            | Self::TenantMismatch { provider }
            | Self::VersionNotAllowed { provider, .. }
            | Self::KeyIssuerMismatch { provider }
            | Self::AudienceMismatch { provider }
            | Self::GroupsUnresolved { provider, .. } => Some(provider),
            Self::TooLarge { .. }
            | Self::Malformed(_)
            | Self::MissingClaim(_)
            | Self::InvalidClaim { .. }
            | Self::AlgorithmNotAllowed { .. }
            | Self::KeyIdMissing
            | Self::IssuerUnknown
            | Self::TenantInvalid(_)
            | Self::Expired { .. }
            | Self::NotYetValid { .. }
            | Self::NotAnAccessToken(_)
            | Self::GroupsOverage => None,
        }
    }

    /// The stable deny reason for logs, metrics and the callout's answer.
    pub fn reason(&self) -> DenyReason {
        match self {
            Self::TooLarge { .. } => DenyReason::TokenTooLarge,
            Self::Malformed(_) => DenyReason::TokenMalformed,
            Self::MissingClaim(_) => DenyReason::ClaimMissing,
            Self::InvalidClaim { .. } => DenyReason::ClaimInvalid,
            Self::AlgorithmNotAllowed { .. } => DenyReason::AlgorithmNotAllowed,
            Self::KeyIdMissing => DenyReason::KeyIdMissing,
            Self::KeyUnknown { .. } => DenyReason::KeyUnknown,
            Self::KeysUnavailable { .. } => DenyReason::KeysUnavailable,
            Self::SignatureInvalid { .. } => DenyReason::SignatureInvalid,
            Self::IssuerUnknown => DenyReason::IssuerUnknown,
            Self::IssuerMismatch { .. } => DenyReason::IssuerMismatch,
            Self::TenantNotAllowed { .. } => DenyReason::TenantNotAllowed,
            Self::TenantInvalid(_) => DenyReason::TenantInvalid,
            Self::TenantMismatch { .. } => DenyReason::TenantMismatch,
            Self::VersionNotAllowed { .. } => DenyReason::VersionNotAllowed,
            Self::KeyIssuerMismatch { .. } => DenyReason::KeyIssuerMismatch,
            Self::AudienceMismatch { .. } => DenyReason::AudienceMismatch,
            Self::Expired { .. } => DenyReason::TokenExpired,
            Self::NotYetValid { .. } => DenyReason::TokenNotYetValid,
            Self::NotAnAccessToken(_) => DenyReason::NotAnAccessToken,
            Self::GroupsOverage => DenyReason::GroupsOverage,
            Self::GroupsUnresolved { .. } => DenyReason::GroupsUnresolved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_provider_they_were_routed_to_when_they_know_it() {
        let provider: Arc<str> = Arc::from("contoso");
        let unknown = TokenError::KeyUnknown {
            provider: Arc::clone(&provider),
            kid: "k".to_owned(),
        };
        assert_eq!(unknown.provider(), Some(&provider));
        let audience = TokenError::AudienceMismatch {
            provider: Arc::clone(&provider),
        };
        assert_eq!(audience.provider(), Some(&provider));
        assert_eq!(TokenError::IssuerUnknown.provider(), None);
        let expired = TokenError::Expired {
            exp: 1,
            now: 2,
            leeway: 0,
        };
        assert_eq!(expired.provider(), None);
    }
}
