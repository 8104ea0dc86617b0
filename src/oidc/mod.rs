//! Entra ID access-token validation: from a compact JWT to a verified [`Identity`].
//!
//! Layout:
//! * `settings`: validated [`ProviderSettings`] of one provider (tenant, audiences, hosts, limits).
//! * `verify`: the pure core, [`verify_with_keys`]; no I/O, time is a parameter.
//! * `keys`: [`KeySet`] parsing and the HTTP fetch of discovery + JWKS.
//! * `verifier`: [`Verifier`], which routes a token to its provider by `iss`, caches keys per
//!   provider and refreshes them.
//!
//! No error or log line produced here contains the token.
//!
//! [`Identity`]: crate::identity::Identity

mod keys;
mod settings;
mod verifier;
mod verify;

use std::sync::Arc;

use crate::deny::DenyReason;

pub use keys::{KeySet, KeysError, SigningKey};
pub use settings::{
    DEFAULT_KEY_REFRESH_INTERVAL, DEFAULT_LEEWAY_SECS, DEFAULT_LOGIN_HOST, DEFAULT_MAX_TOKEN_BYTES,
    DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL, ProviderSettings, SettingsError,
};
pub use verifier::{Verifier, VerifierError};
pub use verify::verify_with_keys;

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
    verify::identity_from_claims(claims, settings, None, now)
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
    /// The header's `alg` is not RS256.
    #[error("token algorithm `{alg}` is not allowed; only RS256 is")]
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
    /// The token's `tid` is not the provider's tenant.
    #[error("token tenant is not the tenant of provider `{provider}`")]
    TenantNotAllowed {
        /// The provider whose tenant was expected.
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
}

impl TokenError {
    /// The stable deny reason for logs, metrics and the callout's answer.
    pub fn reason(&self) -> DenyReason {
        match self {
            Self::TooLarge { .. } => DenyReason::TokenTooLarge,
            Self::Malformed(_) | Self::MissingClaim(_) | Self::InvalidClaim { .. } => {
                DenyReason::TokenMalformed
            }
            Self::AlgorithmNotAllowed { .. } => DenyReason::AlgorithmNotAllowed,
            Self::KeyIdMissing => DenyReason::KeyIdMissing,
            Self::KeyUnknown { .. } => DenyReason::KeyUnknown,
            Self::KeysUnavailable { .. } => DenyReason::KeysUnavailable,
            Self::SignatureInvalid { .. } => DenyReason::SignatureInvalid,
            Self::IssuerUnknown => DenyReason::IssuerUnknown,
            Self::IssuerMismatch { .. } => DenyReason::IssuerMismatch,
            Self::TenantNotAllowed { .. } => DenyReason::TenantNotAllowed,
            Self::AudienceMismatch { .. } => DenyReason::AudienceMismatch,
            Self::Expired { .. } => DenyReason::TokenExpired,
            Self::NotYetValid { .. } => DenyReason::TokenNotYetValid,
            Self::NotAnAccessToken(_) => DenyReason::NotAnAccessToken,
            Self::GroupsOverage => DenyReason::GroupsOverage,
        }
    }
}
