//! The one rule for comparing identifiers that policies and tokens share.
//!
//! A binding condition matches when the policy's value and the token's value are equal *after*
//! both went through [`canonical`] for their field. Compilation stores the canonical form of
//! every policy value (and indexes by it); evaluation, `explain` and the index look-up pass the
//! token's values through the same function. There is no other comparison of these fields, so
//! no two paths can disagree about whether `Contractors` is `contractors`.
//!
//! What each field's issuers define, and so what equality means here:
//!
//! | field | Entra | generic OIDC | rule |
//! |---|---|---|---|
//! | tenant id (`tid`) | GUID | — | GUIDs case-insensitive |
//! | object id (`oid`) | GUID | provider-defined | GUIDs case-insensitive, other text exact |
//! | app id (`azp`/`appid`) | GUID | `client_id`, case-sensitive (RFC 6749 §2.2 leaves it to the server; Keycloak, Okta and Auth0 compare it exactly) | GUIDs case-insensitive, other text exact |
//! | group | object-id GUID, or an on-premises name (`sAMAccountName`, `NetBIOSDomain\sAMAccountName`, `dnsDomain\sAMAccountName`) or cloud display name, which Active Directory and Entra compare case-insensitively | provider-defined names | case-insensitive (Unicode lowercase) |
//! | app role (`roles`) | the app role's `value`, matched exactly by Microsoft's own libraries (`ClaimsPrincipal.IsInRole`, ordinal) | provider-defined | exact |
//! | scope (`scp`/`scope`) | exact (RFC 6749 §3.3: scope tokens are case-sensitive) | exact | exact |
//!
//! Groups are the one case-insensitive name: a group a binding *denies* must not slip past
//! because the directory wrote it with another case than the policy author did (an allow that
//! never matches fails closed; a deny that never matches does not). An OIDC provider whose
//! group names differ only in case cannot be told apart by a policy, which the README says.

use std::borrow::Cow;

/// An identifier field that policies compare with token claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    /// `tid`.
    TenantId,
    /// `oid`.
    ObjectId,
    /// `azp` / `appid` / `client_id`.
    AppId,
    /// `groups` (or the provider's groups claim).
    Group,
    /// `roles` (or the provider's roles claim).
    AppRole,
    /// `scp` / `scope`.
    Scope,
}

/// The form in which `value` of `field` is stored and compared. Borrows when `value` is
/// already canonical, which is the common case on the request path (Entra writes GUIDs in
/// lowercase).
pub(crate) fn canonical(field: Field, value: &str) -> Cow<'_, str> {
    match field {
        Field::AppRole | Field::Scope => Cow::Borrowed(value),
        Field::TenantId | Field::ObjectId | Field::AppId => {
            if is_guid(value) && value.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(value.to_ascii_lowercase())
            } else {
                Cow::Borrowed(value)
            }
        }
        Field::Group => lowercase(value),
    }
}

/// Whether a token's `value` equals a policy's `wanted`, which is already canonical.
pub(crate) fn matches(field: Field, wanted: &str, value: &str) -> bool {
    canonical(field, value) == wanted
}

/// Unicode lowercase, borrowing when nothing changes.
fn lowercase(value: &str) -> Cow<'_, str> {
    let unchanged = if value.is_ascii() {
        !value.bytes().any(|b| b.is_ascii_uppercase())
    } else {
        value.chars().all(|c| {
            let mut lower = c.to_lowercase();
            lower.next() == Some(c) && lower.next().is_none()
        })
    };
    if unchanged {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(value.to_lowercase())
    }
}

/// `8-4-4-4-12` hexadecimal digits, in any case: the one GUID shape, shared with settings and
/// token checks.
pub(crate) use crate::guid::is_guid;

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43";

    #[test]
    fn guids_compare_in_any_case_in_every_guid_field() {
        for field in [Field::TenantId, Field::ObjectId, Field::AppId, Field::Group] {
            assert_eq!(canonical(field, &GUID.to_uppercase()), GUID, "{field:?}");
            assert!(
                matches!(canonical(field, GUID), Cow::Borrowed(_)),
                "{field:?}"
            );
        }
    }

    #[test]
    fn group_names_compare_case_insensitively_and_other_names_exactly() {
        assert_eq!(canonical(Field::Group, "Contractors"), "contractors");
        assert_eq!(
            canonical(Field::Group, "CONTOSO\\Contractors"),
            "contoso\\contractors"
        );
        assert_eq!(canonical(Field::Group, "Équipe-Données"), "équipe-données");
        assert!(matches!(
            canonical(Field::Group, "équipe"),
            Cow::Borrowed(_)
        ));
        assert_eq!(canonical(Field::AppRole, "Nats.Admin"), "Nats.Admin");
        assert_eq!(canonical(Field::Scope, "Nats.Connect"), "Nats.Connect");
        // A client id of a generic provider is not a GUID and is compared exactly.
        assert_eq!(canonical(Field::AppId, "Nats-CLI"), "Nats-CLI");
        assert_eq!(canonical(Field::ObjectId, "User-7"), "User-7");
    }
}
