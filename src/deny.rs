//! Stable, machine-readable reasons for refusing a connection.
//!
//! Every refusal maps to exactly one [`DenyReason`]. Its code is used in logs and metrics and
//! never changes once released; the human detail goes to the service's own log only, and the
//! client-facing error text stays generic.

use std::fmt;

use serde::{Serialize, Serializer};

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// The client presented no token (neither `auth_token` nor a password).
    TokenMissing,
    /// The token is not a well-formed compact JWT (parts, base64url, JSON, duplicate members).
    TokenMalformed,
    /// A required claim (`iss`, `sub`, `exp`, `aud`) is absent.
    ClaimMissing,
    /// A claim has the wrong JSON type or an impossible value (e.g. `roles` as a string).
    ClaimInvalid,
    /// The token is larger than the configured limit.
    TokenTooLarge,
    /// The token's `alg` is not on the provider's allow-list (includes `none` and HS*).
    AlgorithmNotAllowed,
    /// The token header carries no `kid`.
    KeyIdMissing,
    /// No key with the token's `kid` is published by its issuer, even after a refresh.
    KeyUnknown,
    /// The issuer's keys could not be fetched and none are cached.
    KeysUnavailable,
    /// The signature does not verify with the issuer's key.
    SignatureInvalid,
    /// No configured provider issues tokens with this `iss`.
    IssuerUnknown,
    /// The `iss` does not match what the provider's metadata says it must be.
    IssuerMismatch,
    /// The token's tenant is not allowed by the provider.
    TenantNotAllowed,
    /// The token's `tid` is absent or not a canonical GUID, or `iss` names no GUID tenant.
    TenantInvalid,
    /// The token's `tid` differs from the tenant its `iss` names.
    TenantMismatch,
    /// The token's version (Entra v1 or v2) is not enabled for the provider.
    VersionNotAllowed,
    /// The signing key is published for another issuer (Entra's per-key `issuer`).
    KeyIssuerMismatch,
    /// The token was issued for another audience.
    AudienceMismatch,
    /// The token has expired.
    TokenExpired,
    /// The token is not valid yet (`nbf` in the future).
    TokenNotYetValid,
    /// The token is an ID token or otherwise not an access token.
    NotAnAccessToken,
    /// The token's group claims were replaced by an overage marker and the provider denies
    /// overage (its default).
    GroupsOverage,
    /// The provider resolves overage through Microsoft Graph, and that failed.
    GroupsUnresolved,
    /// No policy binding grants this identity anything.
    NoMatchingPolicy,
    /// Matching rules disagree about the target account.
    AccountConflict,
    /// A claim value used in a subject placeholder is not a safe subject token.
    UnsafeClaimValue,
    /// The service is at its concurrency limit.
    Overloaded,
    /// A bug or an unexpected failure inside the service.
    Internal,
}

impl DenyReason {
    /// Every reason, in declaration order (so `ALL[r.index()] == r`); metrics register one
    /// series per entry.
    pub const ALL: [Self; 28] = [
        Self::TokenMissing,
        Self::TokenMalformed,
        Self::ClaimMissing,
        Self::ClaimInvalid,
        Self::TokenTooLarge,
        Self::AlgorithmNotAllowed,
        Self::KeyIdMissing,
        Self::KeyUnknown,
        Self::KeysUnavailable,
        Self::SignatureInvalid,
        Self::IssuerUnknown,
        Self::IssuerMismatch,
        Self::TenantNotAllowed,
        Self::TenantInvalid,
        Self::TenantMismatch,
        Self::VersionNotAllowed,
        Self::KeyIssuerMismatch,
        Self::AudienceMismatch,
        Self::TokenExpired,
        Self::TokenNotYetValid,
        Self::NotAnAccessToken,
        Self::GroupsOverage,
        Self::GroupsUnresolved,
        Self::NoMatchingPolicy,
        Self::AccountConflict,
        Self::UnsafeClaimValue,
        Self::Overloaded,
        Self::Internal,
    ];

    /// Position of this reason in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stable snake_case code for logs and metric labels.
    pub fn code(self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::TokenMalformed => "token_malformed",
            Self::ClaimMissing => "claim_missing",
            Self::ClaimInvalid => "claim_invalid",
            Self::TokenTooLarge => "token_too_large",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::KeyIdMissing => "key_id_missing",
            Self::KeyUnknown => "key_unknown",
            Self::KeysUnavailable => "keys_unavailable",
            Self::SignatureInvalid => "signature_invalid",
            Self::IssuerUnknown => "issuer_unknown",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::TenantNotAllowed => "tenant_not_allowed",
            Self::TenantInvalid => "tenant_invalid",
            Self::TenantMismatch => "tenant_mismatch",
            Self::VersionNotAllowed => "version_not_allowed",
            Self::KeyIssuerMismatch => "key_issuer_mismatch",
            Self::AudienceMismatch => "audience_mismatch",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::NotAnAccessToken => "not_an_access_token",
            Self::GroupsOverage => "groups_overage",
            Self::GroupsUnresolved => "groups_unresolved",
            Self::NoMatchingPolicy => "no_matching_policy",
            Self::AccountConflict => "account_conflict",
            Self::UnsafeClaimValue => "unsafe_claim_value",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for DenyReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_once_in_declaration_order() {
        for (i, reason) in DenyReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason}");
        }
        // `Internal` is declared last: nothing can hide after it.
        assert_eq!(DenyReason::ALL.len(), DenyReason::Internal.index() + 1);
        let mut codes: Vec<&str> = DenyReason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), DenyReason::ALL.len(), "codes are unique");
    }
}
