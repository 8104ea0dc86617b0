//! The pure verification core: a compact JWT, one provider's settings, its keys and the current
//! time in, an [`Identity`] or a [`TokenError`] out. No I/O, no clock.
//!
//! The header and payload are parsed here, strictly (base64url without padding, JSON objects
//! without duplicate members), so routing and verification read the same bytes the same way.
//! jsonwebtoken only checks the signature; every claim check is done here against `now`.
//!
//! Entra rules (Microsoft's access-token validation guidance): the `iss` must have the v1 or v2
//! shape of the provider's cloud, name a GUID tenant equal to `tid`, that tenant must be allowed,
//! and the metadata's issuer and the signing key's `issuer` (templates with `{tenantid}`) must
//! both give back exactly `iss` once `tid` is put in.

use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::TokenError;
use super::keys::{KeySet, SigningKey, TENANT_PLACEHOLDER, normalize_template};
use super::settings::{
    ClaimPath, EntraSettings, OidcSettings, PrincipalRule, ProviderKind, ProviderSettings,
    TokenVersion, algorithm_by_name,
};
use crate::guid::is_canonical;
use crate::identity::{Identity, PrincipalKind};

/// Longest `alg` or `kid` quoted in an error; longer values are replaced by a placeholder.
const MAX_QUOTED_HEADER_CHARS: usize = 64;

/// Claims whose presence marks an Entra ID token, which must never pass as an access token.
const ENTRA_ID_TOKEN_MARKERS: [&str; 3] = ["nonce", "at_hash", "c_hash"];
/// The same for generic issuers. `nonce` is left out: Keycloak copies it into access tokens.
const OIDC_ID_TOKEN_MARKERS: [&str; 2] = ["at_hash", "c_hash"];

/// A token whose structure has been checked but whose signature has not.
pub(crate) struct ParsedToken {
    alg: Algorithm,
    kid: String,
    /// The header says `typ: at+jwt` (RFC 9068), in one of its spellings.
    typed_access_token: bool,
    claims: Map<String, Value>,
}

/// A verified token: the identity, and whether Entra replaced its groups by an overage marker
/// (then `identity.groups` is empty and means "unknown", never "none").
pub(crate) struct Verified {
    pub(crate) identity: Identity,
    pub(crate) groups_overage: bool,
}

/// A JSON object that refuses duplicate members (serde_json would silently keep the last one,
/// letting two parsers disagree about what a token says).
struct StrictObject(Map<String, Value>);

/// Verifies `token` with `keys` as a token of the provider `settings`, at time `now` (unix
/// seconds), and maps its claims to an [`Identity`]. A groups overage is refused here, since
/// resolving it needs the network; [`Verifier`](super::Verifier) can resolve it.
pub fn verify_with_keys(
    token: &str,
    settings: &ProviderSettings,
    keys: &KeySet,
    now: u64,
) -> Result<Identity, TokenError> {
    let parsed = ParsedToken::parse(token, settings.max_token_bytes())?;
    verify_parsed(parsed, token, settings, keys, Signature::Check, now)?.without_overage()
}

impl Verified {
    /// The identity, unless its groups are unknown: without the network an overage can only be
    /// refused.
    pub(crate) fn without_overage(self) -> Result<Identity, TokenError> {
        if self.groups_overage {
            return Err(TokenError::GroupsOverage);
        }
        Ok(self.identity)
    }
}

/// Whether [`verify_parsed`] checks the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signature {
    /// Check it.
    Check,
    /// These exact bytes passed every check before (the verified-token cache holds their
    /// SHA-256), and the key set still has their `kid`.
    Verified,
}

/// The checks after parsing: algorithm, key, signature (unless `signature` says it was
/// verified before), then claims.
pub(crate) fn verify_parsed(
    parsed: ParsedToken,
    token: &str,
    settings: &ProviderSettings,
    keys: &KeySet,
    signature: Signature,
    now: u64,
) -> Result<Verified, TokenError> {
    let provider = settings.name();
    if token.len() > settings.max_token_bytes() {
        return Err(TokenError::TooLarge {
            len: token.len(),
            limit: settings.max_token_bytes(),
        });
    }
    check_algorithm(parsed.alg, settings)?;
    let key = keys
        .get(&parsed.kid)
        .ok_or_else(|| TokenError::KeyUnknown {
            provider: provider.clone(),
            kid: quote_header_value(&parsed.kid),
        })?;
    if signature == Signature::Check {
        check_signature(token, key, parsed.alg, settings)?;
    }
    if let ProviderKind::Oidc(oidc) = settings.kind()
        && oidc.requires_access_token_type()
        && !parsed.typed_access_token
    {
        return Err(TokenError::NotAnAccessToken(
            "its header typ is not at+jwt, which the provider requires",
        ));
    }
    check_claims(
        parsed.claims,
        settings,
        keys.metadata_issuer(),
        key.issuer(),
        now,
    )
}

/// Every check after the signature, for claims whose signature was never checked: the offline
/// policy tools map claims to an identity with the verifier's own rules. There are no keys, so
/// the metadata's and the signing key's issuers are not compared; an overage is refused.
pub(crate) fn identity_from_claims(
    claims: Map<String, Value>,
    settings: &ProviderSettings,
    now: u64,
) -> Result<Identity, TokenError> {
    check_claims(claims, settings, None, None, now)?.without_overage()
}

/// The claim checks of the provider's kind; the issuers are compared when given.
fn check_claims(
    claims: Map<String, Value>,
    settings: &ProviderSettings,
    metadata_issuer: Option<&str>,
    key_issuer: Option<&str>,
    now: u64,
) -> Result<Verified, TokenError> {
    // Owned, so the claims can move into the identity; the identity keeps it anyway.
    let issuer = required_str(&claims, "iss")?.to_owned();
    match settings.kind() {
        ProviderKind::Entra(entra) => entra_claims(
            claims,
            issuer,
            settings,
            entra,
            metadata_issuer,
            key_issuer,
            now,
        ),
        ProviderKind::Oidc(oidc) => {
            oidc_claims(claims, issuer, settings, oidc, metadata_issuer, now)
        }
    }
}

/// Refuses an `alg` the provider does not allow, before any key is looked at.
pub(crate) fn check_algorithm(
    alg: Algorithm,
    settings: &ProviderSettings,
) -> Result<(), TokenError> {
    if settings.algorithms().contains(&alg) {
        Ok(())
    } else {
        Err(TokenError::AlgorithmNotAllowed {
            alg: format!("{alg:?}"),
        })
    }
}

/// The version and tenant segment of `iss` when it has the v1 or v2 issuer shape of the
/// provider's cloud; the segment is not checked further here.
pub(crate) fn entra_issuer_shape<'a>(
    entra: &EntraSettings,
    issuer: &'a str,
) -> Option<(TokenVersion, &'a str)> {
    // Compared piecewise rather than through `issuer_shape`, so the hot path allocates nothing.
    let rest = issuer.strip_prefix("https://")?;
    [
        (TokenVersion::V2, entra.login_host(), "/v2.0"),
        (TokenVersion::V1, entra.sts_host(), "/"),
    ]
    .into_iter()
    .find_map(|(version, host, suffix)| {
        let segment = rest
            .strip_prefix(host)?
            .strip_prefix('/')?
            .strip_suffix(suffix)?;
        (!segment.is_empty() && !segment.contains('/')).then_some((version, segment))
    })
}

/// Entra's tenant rules, on claims that may not be verified yet (routing runs them before any
/// fetch, the core again after the signature): `iss` has the provider's shape and an enabled
/// version, its tenant segment is a GUID equal to `tid`, and that tenant is allowed.
pub(crate) fn check_entra_tenant<'a>(
    settings: &ProviderSettings,
    entra: &EntraSettings,
    issuer: &str,
    claims: &'a Map<String, Value>,
) -> Result<(TokenVersion, &'a str), TokenError> {
    let provider = settings.name();
    let Some((version, segment)) = entra_issuer_shape(entra, issuer) else {
        return Err(TokenError::IssuerMismatch {
            provider: provider.clone(),
            detail: "iss is not an issuer of the provider's cloud",
        });
    };
    if !entra.versions().contains(version) {
        return Err(TokenError::VersionNotAllowed {
            provider: provider.clone(),
            version: version.as_str(),
        });
    }
    if !is_canonical(segment) {
        return Err(TokenError::TenantInvalid("the tenant in iss is not a GUID"));
    }
    let tid = match claims.get("tid") {
        None => return Err(TokenError::TenantInvalid("there is no tid claim")),
        Some(Value::String(tid)) if is_canonical(tid) => tid.as_str(),
        Some(_) => return Err(TokenError::TenantInvalid("tid is not a lowercase GUID")),
    };
    if tid != segment {
        return Err(TokenError::TenantMismatch {
            provider: provider.clone(),
        });
    }
    if !entra.allows_tenant(tid) {
        return Err(TokenError::TenantNotAllowed {
            provider: provider.clone(),
        });
    }
    Ok((version, tid))
}

fn entra_claims(
    claims: Map<String, Value>,
    issuer: String,
    settings: &ProviderSettings,
    entra: &EntraSettings,
    metadata_issuer: Option<&str>,
    key_issuer: Option<&str>,
    now: u64,
) -> Result<Verified, TokenError> {
    let provider = settings.name();
    let (version, tenant) = check_entra_tenant(settings, entra, &issuer, &claims)?;
    match claims.get("ver") {
        None => {}
        Some(Value::String(ver)) if ver == version.claim() => {}
        Some(_) => {
            return Err(TokenError::InvalidClaim {
                claim: "ver",
                expected: "the version of the token's issuer",
            });
        }
    }
    if let Some(announced) = metadata_issuer
        && announced.replace(TENANT_PLACEHOLDER, tenant) != issuer
    {
        return Err(TokenError::IssuerMismatch {
            provider: provider.clone(),
            detail: "the metadata announces another issuer",
        });
    }
    if let Some(template) = key_issuer
        && normalize_template(template).replace(TENANT_PLACEHOLDER, tenant) != issuer
    {
        return Err(TokenError::KeyIssuerMismatch {
            provider: provider.clone(),
        });
    }
    check_audience(&claims, settings)?;
    let expires_at = check_lifetime(&claims, settings.leeway_secs(), now)?;
    let subject = required_str(&claims, "sub")?;
    check_id_token_markers(&claims, &ENTRA_ID_TOKEN_MARKERS, provider)?;
    let groups_overage = groups_overage(&claims)?;

    let scopes = optional_str(&claims, "scp")?.map(split_scopes);
    let roles = string_array(&claims, "roles")?;
    let groups = string_array(&claims, "groups")?;
    let object_id = optional_str(&claims, "oid")?;
    let kind = match optional_str(&claims, "idtyp")? {
        // `idtyp` is Microsoft's "most accurate way" to tell the two apart; trust it when present.
        Some("app") => PrincipalKind::Application,
        Some(_) => PrincipalKind::User,
        // Microsoft's documented fallback: app-only tokens have `sub == oid` and never `scp`.
        None if object_id == Some(subject) && scopes.is_none() => PrincipalKind::Application,
        None => PrincipalKind::User,
    };
    // Delegated tokens always carry `scp`; a "user" token without it is an ID token or something
    // stranger. App-only tokens without roles are legal (the policy denies them).
    if kind == PrincipalKind::User && scopes.is_none() {
        return Err(TokenError::NotAnAccessToken("a user token without scp"));
    }
    // Entra access tokens always name the client they were issued to (`azp` in v2, `appid` in
    // v1); ID tokens never do. Without this an ID token of an app that is also its own API
    // (`aud` = its client id) with `sub == oid` would pass as an app-only token.
    let Some(app_id) = first_str(&claims, &["azp", "appid"])? else {
        return Err(TokenError::NotAnAccessToken(
            "it names no client application (azp or appid)",
        ));
    };
    let guest = entra_guest(&claims, entra, &issuer, tenant)?;
    let display_name = first_str(
        &claims,
        &["preferred_username", "upn", "unique_name", "name"],
    )?;
    let token_id = first_str(&claims, &["uti", "jti"])?;
    let tenant = tenant.to_owned();
    let (subject, object_id) = (subject.to_owned(), object_id.map(str::to_owned));

    Ok(Verified {
        identity: Identity {
            provider: provider.clone(),
            issuer,
            tenant: Some(tenant),
            object_id,
            subject,
            app_id: Some(app_id),
            kind,
            roles,
            groups,
            scopes: scopes.unwrap_or_default(),
            guest,
            display_name,
            expires_at,
            token_id,
            claims,
        },
        groups_overage,
    })
}

/// Whether Entra marks the holder as a guest. Three marks, none of them mandatory, so any one
/// suffices: `acct: 1` (an optional claim the API may not have configured); `idp` naming
/// another identity provider than the token's tenant (a guest's home tenant, `live.com`, a
/// social or SAML provider; for members and applications `idp` is absent or the tenant's own
/// issuer, in its v1 or v2 form); and the `#EXT#` form of a B2B guest's UPN.
fn entra_guest(
    claims: &Map<String, Value>,
    entra: &EntraSettings,
    issuer: &str,
    tenant: &str,
) -> Result<bool, TokenError> {
    let by_acct = match claims.get("acct") {
        None => false,
        Some(acct) => match acct.as_u64() {
            Some(value) => value == 1,
            None => {
                return Err(TokenError::InvalidClaim {
                    claim: "acct",
                    expected: "a non-negative integer",
                });
            }
        },
    };
    let by_idp = optional_str(claims, "idp")?.is_some_and(|idp| {
        idp != issuer && entra_issuer_shape(entra, idp).is_none_or(|(_, segment)| segment != tenant)
    });
    let mut by_upn = false;
    for claim in ["upn", "unique_name"] {
        by_upn |= optional_str(claims, claim)?.is_some_and(|upn| {
            upn.as_bytes()
                .windows(5)
                .any(|w| w.eq_ignore_ascii_case(b"#EXT#"))
        });
    }
    Ok(by_acct || by_idp || by_upn)
}

fn oidc_claims(
    claims: Map<String, Value>,
    issuer: String,
    settings: &ProviderSettings,
    oidc: &OidcSettings,
    metadata_issuer: Option<&str>,
    now: u64,
) -> Result<Verified, TokenError> {
    let provider = settings.name();
    if issuer != oidc.issuer() {
        return Err(TokenError::IssuerMismatch {
            provider: provider.clone(),
            detail: "iss is not the provider's issuer",
        });
    }
    if metadata_issuer.is_some_and(|announced| announced != issuer) {
        return Err(TokenError::IssuerMismatch {
            provider: provider.clone(),
            detail: "the metadata announces another issuer",
        });
    }
    check_audience(&claims, settings)?;
    let expires_at = check_lifetime(&claims, settings.leeway_secs(), now)?;
    let subject = required_str(&claims, "sub")?;
    check_id_token_markers(&claims, &OIDC_ID_TOKEN_MARKERS, provider)?;
    // Keycloak labels its tokens with a `typ` claim: `Bearer` for access, `ID` for ID tokens.
    if optional_str(&claims, "typ")?.is_some_and(|typ| typ.eq_ignore_ascii_case("id")) {
        return Err(TokenError::NotAnAccessToken(
            "it is labelled as an id token",
        ));
    }

    let scopes = match claims.get("scp") {
        Some(Value::Array(_)) => string_array(&claims, "scp")?,
        Some(_) => optional_str(&claims, "scp")?
            .map(split_scopes)
            .unwrap_or_default(),
        None => optional_str(&claims, "scope")?
            .map(split_scopes)
            .unwrap_or_default(),
    };
    let roles = mapped_array(&claims, oidc.roles_claim(), "roles")?;
    let groups = mapped_array(&claims, oidc.groups_claim(), "groups")?;
    let app_id = first_str(&claims, &["azp", "client_id"])?;
    let kind = match oidc.principal() {
        PrincipalRule::User => PrincipalKind::User,
        PrincipalRule::Application => PrincipalKind::Application,
        PrincipalRule::Auto => {
            let app_only = optional_str(&claims, "idtyp")? == Some("app")
                || app_id.as_deref() == Some(subject);
            if app_only {
                PrincipalKind::Application
            } else {
                PrincipalKind::User
            }
        }
    };
    let object_id = optional_str(&claims, "oid")?.map(str::to_owned);
    let display_name = first_str(&claims, &["preferred_username", "upn", "email", "name"])?;
    let token_id = first_str(&claims, &["jti", "uti"])?;
    let subject = subject.to_owned();

    Ok(Verified {
        identity: Identity {
            provider: provider.clone(),
            issuer,
            tenant: None,
            object_id,
            subject,
            app_id,
            kind,
            roles,
            groups,
            scopes,
            guest: false,
            display_name,
            expires_at,
            token_id,
            claims,
        },
        groups_overage: false,
    })
}

impl ParsedToken {
    /// Splits and decodes `token`, checking the size, the shape, `alg` and `kid`.
    pub(crate) fn parse(token: &str, max_bytes: usize) -> Result<Self, TokenError> {
        if token.len() > max_bytes {
            return Err(TokenError::TooLarge {
                len: token.len(),
                limit: max_bytes,
            });
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let header = decode_object(header).ok_or(TokenError::Malformed(
            "header is not base64url-encoded JSON object",
        ))?;
        // Only asymmetric algorithms are representable: `none` and HS* (the forgery with the
        // public key as HMAC secret) stop here, whatever any provider allows.
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => {
                algorithm_by_name(alg).ok_or_else(|| TokenError::AlgorithmNotAllowed {
                    alg: quote_header_value(alg),
                })?
            }
            Some(_) => return Err(TokenError::Malformed("header alg is not a string")),
            None => {
                return Err(TokenError::AlgorithmNotAllowed {
                    alg: "(none)".to_owned(),
                });
            }
        };
        // No critical extension is understood here, so RFC 7515 requires refusing any.
        if header.contains_key("crit") {
            return Err(TokenError::Malformed("header has critical extensions"));
        }
        let kid = match header.get("kid") {
            Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
            Some(Value::String(_)) | None => return Err(TokenError::KeyIdMissing),
            Some(_) => return Err(TokenError::Malformed("header kid is not a string")),
        };
        // Checked after `alg`, so an `alg: none` token is reported as what it is.
        if signature.is_empty() {
            return Err(TokenError::Malformed("empty signature"));
        }
        // RFC 9068 §2.1 with RFC 7515 §4.1.9: a media type, compared without regard to case,
        // whose `application/` prefix may be left out.
        let typed_access_token = match header.get("typ") {
            Some(Value::String(typ)) => {
                typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
            }
            _ => false,
        };
        let claims = decode_object(payload).ok_or(TokenError::Malformed(
            "payload is not base64url-encoded JSON object",
        ))?;
        Ok(Self {
            alg,
            kid,
            typed_access_token,
            claims,
        })
    }

    /// The unverified `iss`, for routing only.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The unverified claims, for routing only.
    pub(crate) fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The header's `kid`.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The header's `alg`.
    pub(crate) fn alg(&self) -> Algorithm {
        self.alg
    }
}

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrictVisitor;

        impl<'de> Visitor<'de> for StrictVisitor {
            type Value = Map<String, Value>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(de::Error::custom("duplicate member"));
                    }
                    let value = access.next_value::<Value>()?;
                    map.insert(key, value);
                }
                Ok(map)
            }
        }

        deserializer
            .deserialize_map(StrictVisitor)
            .map(StrictObject)
    }
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = BASE64URL_NOPAD.decode(part.as_bytes()).ok()?;
    serde_json::from_slice::<StrictObject>(&bytes)
        .ok()
        .map(|object| object.0)
}

fn check_signature(
    token: &str,
    key: &SigningKey,
    alg: Algorithm,
    settings: &ProviderSettings,
) -> Result<(), TokenError> {
    if !key.can_verify(alg) {
        return Err(TokenError::AlgorithmNotAllowed {
            alg: format!("{alg:?} (not the algorithm of the key)"),
        });
    }
    // Only the signature is jsonwebtoken's job: time is our parameter, not its clock, and the
    // claim checks need provider-specific rules anyway. `alg` is on the provider's allow-list.
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    match jsonwebtoken::decode::<IgnoredAny>(token, &key.decoding, &validation) {
        Ok(_) => Ok(()),
        Err(error) => Err(match error.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey => {
                TokenError::SignatureInvalid {
                    provider: settings.name().clone(),
                }
            }
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                TokenError::AlgorithmNotAllowed {
                    alg: "(rejected by verifier)".to_owned(),
                }
            }
            ErrorKind::Base64(_) => TokenError::Malformed("signature is not base64url"),
            _ => TokenError::Malformed("token rejected by the signature verifier"),
        }),
    }
}

fn check_audience(
    claims: &Map<String, Value>,
    settings: &ProviderSettings,
) -> Result<(), TokenError> {
    let accepted = |audience: &str| settings.accepts_audience(audience);
    let matches = match claims.get("aud") {
        None => return Err(TokenError::MissingClaim("aud")),
        Some(Value::String(audience)) => accepted(audience),
        Some(Value::Array(audiences)) => {
            let mut any = false;
            for audience in audiences {
                let audience = audience.as_str().ok_or(TokenError::InvalidClaim {
                    claim: "aud",
                    expected: "a string or an array of strings",
                })?;
                any |= accepted(audience);
            }
            any
        }
        Some(_) => {
            return Err(TokenError::InvalidClaim {
                claim: "aud",
                expected: "a string or an array of strings",
            });
        }
    };
    if matches {
        Ok(())
    } else {
        Err(TokenError::AudienceMismatch {
            provider: settings.name().clone(),
        })
    }
}

/// Checks `exp` (required) and `nbf` (optional) against `now`; returns `exp`.
fn check_lifetime(claims: &Map<String, Value>, leeway: u64, now: u64) -> Result<u64, TokenError> {
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if exp.saturating_add(leeway) <= now {
        return Err(TokenError::Expired { exp, now, leeway });
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(TokenError::NotYetValid { nbf, now, leeway });
    }
    Ok(exp)
}

/// Entra replaces `groups` by `_claim_names.groups` above 200 groups, and by `hasgroups` in the
/// implicit flow. Either means "membership unknown", which must never read as "no groups".
fn groups_overage(claims: &Map<String, Value>) -> Result<bool, TokenError> {
    let named = match claims.get("_claim_names") {
        None => false,
        Some(Value::Object(names)) => names.contains_key("groups"),
        Some(_) => {
            return Err(TokenError::InvalidClaim {
                claim: "_claim_names",
                expected: "an object",
            });
        }
    };
    let has = match claims.get("hasgroups") {
        None | Some(Value::Bool(false)) => false,
        Some(_) => true,
    };
    Ok(named || has)
}

fn check_id_token_markers(
    claims: &Map<String, Value>,
    markers: &[&'static str],
    provider: &str,
) -> Result<(), TokenError> {
    match markers.iter().find(|m| claims.contains_key(**m)) {
        None => Ok(()),
        Some(marker) => {
            tracing::debug!(provider, claim = marker, "id-token marker in token");
            Err(TokenError::NotAnAccessToken(
                "it carries an id-token claim (nonce, at_hash or c_hash)",
            ))
        }
    }
}

fn split_scopes(scp: &str) -> Vec<String> {
    scp.split(' ')
        .filter(|scope| !scope.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An array of strings at `path`; absent means empty.
fn mapped_array(
    claims: &Map<String, Value>,
    path: &ClaimPath,
    label: &'static str,
) -> Result<Vec<String>, TokenError> {
    strings(path.lookup(claims), label)
}

fn required_str<'a>(
    claims: &'a Map<String, Value>,
    claim: &'static str,
) -> Result<&'a str, TokenError> {
    optional_str(claims, claim)?.ok_or(TokenError::MissingClaim(claim))
}

fn optional_str<'a>(
    claims: &'a Map<String, Value>,
    claim: &'static str,
) -> Result<Option<&'a str>, TokenError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(TokenError::InvalidClaim {
            claim,
            expected: "a string",
        }),
    }
}

/// The first of `names` that is present, type-checked.
fn first_str(
    claims: &Map<String, Value>,
    names: &[&'static str],
) -> Result<Option<String>, TokenError> {
    for name in names {
        if let Some(value) = optional_str(claims, name)? {
            return Ok(Some(value.to_owned()));
        }
    }
    Ok(None)
}

fn string_array(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Vec<String>, TokenError> {
    strings(claims.get(claim), claim)
}

/// `value` as an array of strings; absent means empty.
fn strings(value: Option<&Value>, claim: &'static str) -> Result<Vec<String>, TokenError> {
    let invalid = TokenError::InvalidClaim {
        claim,
        expected: "an array of strings",
    };
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(values)) => values
            .iter()
            .map(|value| value.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(invalid),
        Some(_) => Err(invalid),
    }
}

/// A NumericDate: non-negative seconds; fractions are truncated (RFC 7519 allows them).
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<u64>, TokenError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    if let Some(seconds) = value.as_u64() {
        return Ok(Some(seconds));
    }
    match value.as_f64() {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a finite, non-negative value below u64::MAX; fractions of a second drop"
        )]
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 && seconds < u64::MAX as f64 => {
            Ok(Some(seconds as u64))
        }
        _ => Err(TokenError::InvalidClaim {
            claim,
            expected: "a non-negative number of seconds",
        }),
    }
}

/// `alg` and `kid` come from the attacker; quote them only when short and plain.
fn quote_header_value(value: &str) -> String {
    let plain = value.len() <= MAX_QUOTED_HEADER_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.=+/".contains(&b));
    if plain {
        value.to_owned()
    } else {
        format!("({} bytes, not shown)", value.len())
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;
    use jsonwebtoken::jwk::Jwk;
    use serde_json::json;

    use super::*;
    use crate::deny::DenyReason;
    use crate::oidc::{Tenants, Versions};

    const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";
    const OTHER_TENANT: &str = "0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07";
    const AUDIENCE: &str = "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11";
    const USER_OID: &str = "5a1c8e2f-9d47-4b63-8f0a-2e6c4d9b7a35";
    const APP_OID: &str = "8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92";
    const NOW: u64 = 1_767_225_700;
    const KEY_1: &str = include_str!("../../tests/data/keys/test-key-1.pem");
    const KEY_2: &str = include_str!("../../tests/data/keys/test-key-2.pem");
    const TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

    fn settings() -> ProviderSettings {
        settings_with(vec![AUDIENCE.to_owned()])
    }

    fn settings_with(audiences: Vec<String>) -> ProviderSettings {
        ProviderSettings::new("entra", TENANT, audiences).unwrap()
    }

    fn jwk_without_issuer(pem: &str, kid: &str) -> Value {
        let mut value = jwk(pem, kid, "");
        value.as_object_mut().unwrap().remove("issuer");
        value
    }

    fn jwk(pem: &str, kid: &str, issuer: &str) -> Value {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
        let mut value = serde_json::to_value(jwk).unwrap();
        value["kid"] = json!(kid);
        value["use"] = json!("sig");
        value["issuer"] = json!(issuer);
        // Entra's JWKs name no `alg`.
        value.as_object_mut().unwrap().remove("alg");
        value
    }

    /// k1 and k2 published with Entra's template issuer; k3 (key 2) claims another tenant.
    fn keys() -> KeySet {
        let other = format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0");
        let document = json!({"keys": [
            jwk(KEY_1, "k1", TEMPLATE), jwk(KEY_2, "k2", TEMPLATE), jwk(KEY_2, "k3", &other),
        ]});
        KeySet::from_jwks(document.to_string().as_bytes()).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        BASE64URL_NOPAD.encode(bytes)
    }

    fn sign_raw(pem: &str, header: &str, payload: &str) -> String {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::RS256);
        format!("{message}.{}", signature.unwrap())
    }

    fn sign(kid: &str, claims: &Value) -> String {
        let pem = if kid == "k1" { KEY_1 } else { KEY_2 };
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": kid});
        sign_raw(pem, &header.to_string(), &claims.to_string())
    }

    fn user_claims() -> Value {
        json!({
            "aud": AUDIENCE,
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "iat": NOW - 100, "nbf": NOW - 100, "exp": NOW + 3600,
            "azp": "b9c2a7e5-1f34-4d8b-a0c6-7e2d9f4b3a18", "azpacr": "0",
            "groups": ["c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43"],
            "idtyp": "user", "name": "Alex Wilber", "oid": USER_OID,
            "preferred_username": "alexw@contoso.com",
            "roles": ["Nats.Publisher", "Nats.Subscriber"],
            "scp": "Nats.Connect  Nats.Read",
            "sub": "yR1cQ2p8vWm3kX0fHjN7tLs5aB9dE4gU6oIzC1rT8eY",
            "tid": TENANT, "uti": "kX3b9VnQ0Ee2c7T1mZpAAA", "ver": "2.0",
        })
    }

    fn app_claims() -> Value {
        json!({
            "aud": AUDIENCE,
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "iat": NOW - 100, "nbf": NOW - 100, "exp": NOW + 3600,
            "azp": "0d4e7b2a-6c1f-4e83-9a5d-3b8c2f1e7d64", "azpacr": "2",
            "idtyp": "app", "oid": APP_OID, "roles": ["Nats.Service.Orders"],
            "sub": APP_OID, "tid": TENANT, "uti": "Qp7cT2zL0kWn4dA9hXyBAA", "ver": "2.0",
        })
    }

    fn with(mut claims: Value, overrides: Value) -> Value {
        for (name, value) in overrides.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    fn verify(token: &str) -> Result<Identity, TokenError> {
        verify_with_keys(token, &settings(), &keys(), NOW)
    }

    fn reason(token: &str) -> DenyReason {
        verify(token).unwrap_err().reason()
    }

    fn user(overrides: Value) -> DenyReason {
        reason(&sign("k1", &with(user_claims(), overrides)))
    }

    #[test]
    fn maps_a_user_token() {
        let identity = verify(&sign("k1", &user_claims())).unwrap();
        assert_eq!(identity.kind, PrincipalKind::User);
        assert_eq!(&*identity.provider, "entra");
        assert_eq!(identity.tenant.as_deref(), Some(TENANT));
        assert_eq!(identity.object_id.as_deref(), Some(USER_OID));
        assert_eq!(
            identity.subject,
            "yR1cQ2p8vWm3kX0fHjN7tLs5aB9dE4gU6oIzC1rT8eY"
        );
        assert_eq!(
            identity.app_id.as_deref(),
            Some("b9c2a7e5-1f34-4d8b-a0c6-7e2d9f4b3a18")
        );
        assert_eq!(identity.scopes, ["Nats.Connect", "Nats.Read"]);
        assert_eq!(identity.roles, ["Nats.Publisher", "Nats.Subscriber"]);
        assert_eq!(identity.groups, ["c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43"]);
        assert!(!identity.guest);
        assert_eq!(identity.display_name.as_deref(), Some("alexw@contoso.com"));
        assert_eq!(identity.expires_at, NOW + 3600);
        assert_eq!(identity.token_id.as_deref(), Some("kX3b9VnQ0Ee2c7T1mZpAAA"));
        assert_eq!(identity.claims.get("azpacr"), Some(&json!("0")));
    }

    #[test]
    fn display_name_guest_and_token_id_fall_back() {
        let claims = with(
            user_claims(),
            json!({"preferred_username": null, "upn": "alex@contoso.com", "acct": 1,
                   "uti": null, "jti": "j-1", "azp": null, "appid": "client"}),
        );
        let identity = verify(&sign("k1", &claims)).unwrap();
        assert_eq!(identity.display_name.as_deref(), Some("alex@contoso.com"));
        assert!(identity.guest);
        assert_eq!(identity.token_id.as_deref(), Some("j-1"));
        assert_eq!(identity.app_id.as_deref(), Some("client"));
    }

    #[test]
    fn maps_app_tokens() {
        let identity = verify(&sign("k2", &app_claims())).unwrap();
        assert_eq!(identity.kind, PrincipalKind::Application);
        assert_eq!(identity.roles, ["Nats.Service.Orders"]);
        assert!(identity.scopes.is_empty());

        // Without `idtyp`, Microsoft's fallback: sub == oid and no scp.
        let identity = verify(&sign("k1", &with(app_claims(), json!({"idtyp": null})))).unwrap();
        assert_eq!(identity.kind, PrincipalKind::Application);

        // App-only tokens without roles are legal; the policy denies them later.
        let identity = verify(&sign("k1", &with(app_claims(), json!({"roles": null})))).unwrap();
        assert!(identity.roles.is_empty());
    }

    #[test]
    fn refuses_user_tokens_without_scp() {
        assert_eq!(user(json!({"scp": null})), DenyReason::NotAnAccessToken);
        assert_eq!(
            user(json!({"scp": null, "roles": null})),
            DenyReason::NotAnAccessToken
        );
        assert_eq!(
            user(json!({"scp": null, "idtyp": null, "roles": null})),
            DenyReason::NotAnAccessToken
        );
    }

    #[test]
    fn guests_are_recognised_by_any_of_entras_three_marks() {
        let guest = |overrides: Value| {
            verify(&sign("k1", &with(user_claims(), overrides))).map(|i| i.guest)
        };
        let v1_own = format!("https://sts.windows.net/{TENANT}/");
        let v2_own = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
        // Members: no mark, `acct: 0`, or `idp` naming the token's own tenant in either form.
        for member in [
            json!({}),
            json!({"acct": 0}),
            json!({"idp": v1_own}),
            json!({"idp": v2_own}),
            json!({"upn": "alexw@contoso.com", "unique_name": "alexw@contoso.com"}),
        ] {
            assert!(!guest(member.clone()).unwrap(), "{member}");
        }
        // Guests: `acct: 1`, an `idp` of another tenant, a personal or social account, or the
        // B2B `#EXT#` user principal name — each alone, with `acct` absent or even 0.
        for mark in [
            json!({"acct": 1}),
            json!({"idp": format!("https://sts.windows.net/{OTHER_TENANT}/")}),
            json!({"idp": format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"), "acct": 0}),
            json!({"idp": "live.com"}),
            json!({"idp": "https://sts.windows.net/9188040d-6c67-4c5b-b112-36a304b66dad/"}),
            json!({"idp": "google.com"}),
            json!({"upn": "alex_fabrikam.com#EXT#@contoso.onmicrosoft.com"}),
            json!({"unique_name": "alex_fabrikam.com#ext#@contoso.onmicrosoft.com", "acct": 0}),
        ] {
            assert!(guest(mark.clone()).unwrap(), "{mark}");
        }
        // Application tokens carry `idp` equal to their own tenant's v1 issuer.
        let app = with(app_claims(), json!({"idp": v1_own}));
        assert!(!verify(&sign("k1", &app)).unwrap().guest);
        assert!(matches!(
            guest(json!({"idp": 7})),
            Err(TokenError::InvalidClaim { claim: "idp", .. })
        ));
    }

    #[test]
    fn id_token_shapes_are_not_access_tokens_even_with_a_configured_audience() {
        // An app that is its own API: its ID tokens have `aud` = its client id, no `nonce`
        // (not all flows send one), no `scp`, `roles`, `idtyp`, `azp` or `appid`; `sub == oid`
        // would once make them pass as app-only tokens.
        let v2 = json!({
            "aud": AUDIENCE,
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "iat": NOW - 100, "nbf": NOW - 100, "exp": NOW + 3600,
            "name": "Alex Wilber", "oid": USER_OID, "sub": USER_OID,
            "preferred_username": "alexw@contoso.com", "tid": TENANT, "ver": "2.0",
        });
        let v1 = with(
            v2.clone(),
            json!({"iss": format!("https://sts.windows.net/{TENANT}/"), "ver": "1.0",
                   "upn": "alexw@contoso.com", "preferred_username": null}),
        );
        // v1 keys come from v1 metadata, whose keys name no issuer.
        let v1_keys = KeySet::from_jwks(
            json!({"keys": [jwk_without_issuer(KEY_1, "k1")]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        for (shape, keys) in [(&v2, keys()), (&v1, v1_keys.clone())] {
            assert!(matches!(
                verify_with_keys(&sign("k1", shape), &settings(), &keys, NOW),
                Err(TokenError::NotAnAccessToken(
                    "it names no client application (azp or appid)"
                ))
            ));
        }
        // The same claims with the client named are an app-only access token (v1 `appid`).
        let with_client = with(v1, json!({"appid": "0d4e7b2a-6c1f-4e83-9a5d-3b8c2f1e7d64"}));
        let identity =
            verify_with_keys(&sign("k1", &with_client), &settings(), &v1_keys, NOW).unwrap();
        assert_eq!(identity.kind, PrincipalKind::Application);
        // App tokens without their client are refused too.
        assert!(matches!(
            verify(&sign("k1", &with(app_claims(), json!({"azp": null})))),
            Err(TokenError::NotAnAccessToken(
                "it names no client application (azp or appid)"
            ))
        ));
    }

    #[test]
    fn refuses_id_token_markers() {
        for marker in ["nonce", "at_hash", "c_hash"] {
            assert_eq!(user(json!({ marker: "x" })), DenyReason::NotAnAccessToken);
        }
    }

    #[test]
    fn refuses_groups_overage() {
        let overage = json!({"groups": null, "_claim_names": {"groups": "src1"},
            "_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/x"}}});
        assert_eq!(user(overage), DenyReason::GroupsOverage);
        assert_eq!(
            user(json!({"groups": null, "hasgroups": true})),
            DenyReason::GroupsOverage
        );
        assert!(
            verify(&sign(
                "k1",
                &with(user_claims(), json!({"hasgroups": false}))
            ))
            .is_ok()
        );
    }

    #[test]
    fn refuses_claims_of_the_wrong_type() {
        for overrides in [
            json!({"roles": "Nats.Publisher"}),
            json!({"roles": [1]}),
            json!({"groups": {"a": 1}}),
            json!({"scp": ["Nats.Connect"]}),
            json!({"acct": "1"}),
            json!({"oid": 5}),
            json!({"exp": "99999999999"}),
            json!({"nbf": -1}),
            json!({"aud": 1}),
            json!({"ver": "1.0"}),
            json!({"_claim_names": "groups"}),
        ] {
            assert_eq!(
                user(overrides.clone()),
                DenyReason::ClaimInvalid,
                "{overrides}"
            );
        }
        for missing in ["exp", "sub", "aud", "iss"] {
            assert_eq!(
                user(json!({ missing: null })),
                DenyReason::ClaimMissing,
                "{missing}"
            );
        }
    }

    #[test]
    fn checks_lifetime_with_leeway_against_now() {
        assert_eq!(user(json!({"exp": NOW - 60})), DenyReason::TokenExpired);
        assert!(verify(&sign("k1", &with(user_claims(), json!({"exp": NOW - 59})))).is_ok());
        assert_eq!(user(json!({"nbf": NOW + 61})), DenyReason::TokenNotYetValid);
        assert!(verify(&sign("k1", &with(user_claims(), json!({"nbf": NOW + 60})))).is_ok());
        assert!(verify(&sign("k1", &with(user_claims(), json!({"nbf": null})))).is_ok());
    }

    #[test]
    fn checks_audience() {
        assert_eq!(
            user(json!({"aud": "api://other"})),
            DenyReason::AudienceMismatch
        );
        assert_eq!(
            user(json!({"aud": "00000003-0000-0000-c000-000000000000"})),
            DenyReason::AudienceMismatch
        );
        let both = with(user_claims(), json!({"aud": ["api://other", AUDIENCE]}));
        assert!(verify(&sign("k1", &both)).is_ok());
    }

    #[test]
    fn checks_issuer_and_tenant() {
        let other_iss = format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0");
        // iss and tid of another tenant, consistently: not on the list.
        assert_eq!(
            user(json!({"iss": other_iss, "tid": OTHER_TENANT})),
            DenyReason::TenantNotAllowed
        );
        // Our tenant's iss but another tid, and the reverse.
        assert_eq!(
            user(json!({"tid": OTHER_TENANT})),
            DenyReason::TenantMismatch
        );
        assert_eq!(user(json!({"iss": other_iss})), DenyReason::TenantMismatch);
        for bad_tid in [
            json!(TENANT.to_uppercase()),
            json!("common"),
            json!(7),
            json!(null),
        ] {
            assert_eq!(
                user(json!({"tid": bad_tid})),
                DenyReason::TenantInvalid,
                "{bad_tid}"
            );
        }
        assert_eq!(
            user(json!({"iss": "https://login.microsoftonline.com/{tenantid}/v2.0"})),
            DenyReason::TenantInvalid
        );
        for foreign in [
            format!("https://login.microsoftonline.us/{TENANT}/v2.0"),
            format!("https://login.microsoftonline.com/{TENANT}/v2.0/"),
            format!("http://login.microsoftonline.com/{TENANT}/v2.0"),
            format!("https://login.microsoftonline.com/{TENANT}/x/v2.0"),
            format!("https://sts.windows.net/{TENANT}"),
        ] {
            assert_eq!(
                user(json!({ "iss": foreign })),
                DenyReason::IssuerMismatch,
                "{foreign}"
            );
        }
        // The key k3 is published for another tenant.
        assert_eq!(
            reason(&sign("k3", &user_claims())),
            DenyReason::KeyIssuerMismatch
        );
    }

    #[test]
    fn accepts_v1_tokens_with_uri_audiences_unless_disabled() {
        let v1 = with(
            user_claims(),
            json!({"iss": format!("https://sts.windows.net/{TENANT}/"), "ver": "1.0",
                   "aud": "api://nats-auth/", "azp": null, "azpacr": null,
                   "appid": "b9c2a7e5-1f34-4d8b-a0c6-7e2d9f4b3a18", "idtyp": null}),
        );
        // v1 keys have no `issuer` member; k2 here is published without one.
        let settings = settings_with(vec![AUDIENCE.into(), "api://nats-auth".into()]);
        let keys = KeySet::from_jwks(
            json!({"keys": [jwk_without_issuer(KEY_2, "k2")]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let identity = verify_with_keys(&sign("k2", &v1), &settings, &keys, NOW).unwrap();
        assert_eq!(identity.kind, PrincipalKind::User);
        assert_eq!(
            identity.app_id.as_deref(),
            Some("b9c2a7e5-1f34-4d8b-a0c6-7e2d9f4b3a18")
        );
        // The default App ID URI of the client-id audience is accepted too.
        let guid_uri = with(v1.clone(), json!({"aud": format!("api://{AUDIENCE}")}));
        assert!(verify_with_keys(&sign("k2", &guid_uri), &settings, &keys, NOW).is_ok());

        let v2_only = settings
            .clone()
            .with_versions(Versions {
                v1: false,
                v2: true,
            })
            .unwrap();
        let error = verify_with_keys(&sign("k2", &v1), &v2_only, &keys, NOW).unwrap_err();
        assert_eq!(error.reason(), DenyReason::VersionNotAllowed);
        let mixed = with(v1, json!({"ver": "2.0"}));
        let error = verify_with_keys(&sign("k2", &mixed), &settings, &keys, NOW).unwrap_err();
        assert_eq!(error.reason(), DenyReason::ClaimInvalid);
    }

    #[test]
    fn multi_tenant_template_is_filled_with_tid_and_the_allow_list_holds() {
        let settings = ProviderSettings::entra(
            "partners",
            Tenants::List(vec![TENANT.into(), OTHER_TENANT.into()]),
            vec![AUDIENCE.into()],
        )
        .unwrap();
        let keys = keys().with_metadata_issuer(TEMPLATE);
        let other_iss = format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0");
        let other = with(
            user_claims(),
            json!({"iss": other_iss, "tid": OTHER_TENANT}),
        );
        let identity = verify_with_keys(&sign("k1", &other), &settings, &keys, NOW).unwrap();
        assert_eq!(identity.tenant.as_deref(), Some(OTHER_TENANT));
        // k3 is published for OTHER_TENANT only: good there, refused for TENANT.
        assert!(verify_with_keys(&sign("k3", &other), &settings, &keys, NOW).is_ok());

        let third = "9188040d-6c67-4c5b-b112-36a304b66dad";
        let third = with(
            user_claims(),
            json!({"iss": format!("https://login.microsoftonline.com/{third}/v2.0"), "tid": third}),
        );
        let error = verify_with_keys(&sign("k1", &third), &settings, &keys, NOW).unwrap_err();
        assert_eq!(error.reason(), DenyReason::TenantNotAllowed);
        let any = ProviderSettings::entra("any", Tenants::Any, vec![AUDIENCE.into()]).unwrap();
        assert!(verify_with_keys(&sign("k1", &third), &any, &keys, NOW).is_ok());

        // Metadata that announces a concrete issuer for another tenant never fits.
        let wrong = keys.with_metadata_issuer(&other_iss);
        let error = verify_with_keys(&sign("k1", &user_claims()), &settings, &wrong, NOW);
        assert_eq!(error.unwrap_err().reason(), DenyReason::IssuerMismatch);
    }

    #[test]
    fn the_allow_list_of_algorithms_is_per_provider() {
        let header = json!({"alg": "PS256", "kid": "k1"}).to_string();
        let claims = user_claims().to_string();
        let key = EncodingKey::from_rsa_pem(KEY_1.as_bytes()).unwrap();
        let message = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::PS256);
        let token = format!("{message}.{}", signature.unwrap());
        assert_eq!(reason(&token), DenyReason::AlgorithmNotAllowed);
        let ps = settings().with_algorithms(&["RS256", "PS256"]).unwrap();
        assert!(verify_with_keys(&token, &ps, &keys(), NOW).is_ok());
        // A key whose JWK names RS256 never verifies PS256, whatever the provider allows.
        let mut pinned = jwk(KEY_1, "k1", TEMPLATE);
        pinned["alg"] = json!("RS256");
        let pinned = KeySet::from_jwks(json!({"keys": [pinned]}).to_string().as_bytes()).unwrap();
        let error = verify_with_keys(&token, &ps, &pinned, NOW).unwrap_err();
        assert_eq!(error.reason(), DenyReason::AlgorithmNotAllowed);
    }

    #[test]
    fn maps_generic_oidc_tokens() {
        let issuer = "https://keycloak.example/realms/nats";
        let settings = ProviderSettings::oidc("keycloak", issuer, vec!["nats".into()])
            .unwrap()
            .with_claim_paths(Some("realm_access.roles"), None)
            .unwrap();
        let claims = json!({
            "iss": issuer, "aud": ["nats", "account"], "sub": "f:1234",
            "exp": NOW + 300, "iat": NOW, "azp": "nats-cli", "typ": "Bearer",
            "scope": "openid nats", "nonce": "kept-by-keycloak",
            "realm_access": {"roles": ["publisher"]}, "groups": ["/ops"],
            "preferred_username": "alex", "jti": "j-9",
        });
        let keys = keys().with_metadata_issuer(issuer);
        let identity = verify_with_keys(&sign("k1", &claims), &settings, &keys, NOW).unwrap();
        assert_eq!(identity.tenant, None);
        assert_eq!(identity.kind, PrincipalKind::User);
        assert_eq!(identity.roles, ["publisher"]);
        assert_eq!(identity.groups, ["/ops"]);
        assert_eq!(identity.scopes, ["openid", "nats"]);
        assert_eq!(identity.app_id.as_deref(), Some("nats-cli"));
        assert_eq!(identity.display_name.as_deref(), Some("alex"));

        let service = with(claims.clone(), json!({"sub": "nats-cli"}));
        let identity = verify_with_keys(&sign("k1", &service), &settings, &keys, NOW).unwrap();
        assert_eq!(identity.kind, PrincipalKind::Application);

        let refuse = |overrides: Value| {
            let token = sign("k1", &with(claims.clone(), overrides));
            verify_with_keys(&token, &settings, &keys, NOW)
                .unwrap_err()
                .reason()
        };
        assert_eq!(refuse(json!({"typ": "ID"})), DenyReason::NotAnAccessToken);

        // RFC 9068's `typ: at+jwt`, when the provider is configured to require it.
        let typed = settings
            .clone()
            .with_required_access_token_type(true)
            .unwrap();
        let signed_as = |typ: Value| {
            let header = json!({"typ": typ, "alg": "RS256", "kid": "k1"});
            sign_raw(KEY_1, &header.to_string(), &claims.to_string())
        };
        for typ in [
            json!("at+jwt"),
            json!("AT+JWT"),
            json!("application/at+jwt"),
        ] {
            let token = signed_as(typ.clone());
            assert!(
                verify_with_keys(&token, &typed, &keys, NOW).is_ok(),
                "{typ}"
            );
        }
        for typ in [json!("JWT"), json!("at+jwt+x"), Value::Null] {
            let token = signed_as(typ.clone());
            assert!(
                matches!(
                    verify_with_keys(&token, &typed, &keys, NOW),
                    Err(TokenError::NotAnAccessToken(
                        "its header typ is not at+jwt, which the provider requires"
                    ))
                ),
                "{typ}"
            );
            // Off by default.
            assert!(
                verify_with_keys(&token, &settings, &keys, NOW).is_ok(),
                "{typ}"
            );
        }
        assert!(matches!(
            ProviderSettings::new("entra", TENANT, vec![AUDIENCE.into()])
                .unwrap()
                .with_required_access_token_type(true),
            Err(crate::oidc::SettingsError::NotForKind {
                setting: "require_access_token_type",
                kind: "entra",
                ..
            })
        ));
        assert_eq!(
            refuse(json!({"at_hash": "x"})),
            DenyReason::NotAnAccessToken
        );
        assert_eq!(
            refuse(json!({"iss": "https://keycloak.example/realms/other"})),
            DenyReason::IssuerMismatch
        );
        assert_eq!(
            refuse(json!({"aud": "account"})),
            DenyReason::AudienceMismatch
        );
        assert_eq!(
            refuse(json!({"realm_access": {"roles": "publisher"}})),
            DenyReason::ClaimInvalid
        );
    }

    #[test]
    fn checks_the_signature() {
        // Signed by key 1 but naming k2.
        let header = json!({"alg": "RS256", "kid": "k2"}).to_string();
        let forged = sign_raw(KEY_1, &header, &user_claims().to_string());
        assert_eq!(reason(&forged), DenyReason::SignatureInvalid);

        let token = sign("k1", &user_claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let elevated = b64(with(user_claims(), json!({"roles": ["Nats.Admin"]}))
            .to_string()
            .as_bytes());
        parts[1] = &elevated;
        assert_eq!(reason(&parts.join(".")), DenyReason::SignatureInvalid);
    }

    #[test]
    fn allows_only_rs256_with_a_kid() {
        let claims = b64(user_claims().to_string().as_bytes());
        for alg in ["none", "HS256", "RS512", "PS256", "ES256", "rs256"] {
            let header = b64(json!({"alg": alg, "kid": "k1"}).to_string().as_bytes());
            let token = format!("{header}.{claims}.c2lnbmF0dXJl");
            assert_eq!(reason(&token), DenyReason::AlgorithmNotAllowed, "{alg}");
        }
        let header = b64(json!({"kid": "k1"}).to_string().as_bytes());
        assert_eq!(
            reason(&format!("{header}.{claims}.c2ln")),
            DenyReason::AlgorithmNotAllowed
        );

        let no_kid = sign_raw(KEY_1, r#"{"alg":"RS256"}"#, &user_claims().to_string());
        assert_eq!(reason(&no_kid), DenyReason::KeyIdMissing);
        let unknown = sign_raw(
            KEY_1,
            r#"{"alg":"RS256","kid":"k9"}"#,
            &user_claims().to_string(),
        );
        assert_eq!(reason(&unknown), DenyReason::KeyUnknown);
    }

    #[test]
    fn refuses_malformed_tokens() {
        let token = sign("k1", &user_claims());
        let (head, _) = token.rsplit_once('.').unwrap();
        assert_eq!(reason(head), DenyReason::TokenMalformed);
        assert_eq!(reason(&format!("{head}.")), DenyReason::TokenMalformed);
        assert_eq!(reason(&format!("{token}.x")), DenyReason::TokenMalformed);
        assert_eq!(reason("a.b.c"), DenyReason::TokenMalformed);
        assert_eq!(reason(""), DenyReason::TokenMalformed);

        let header = r#"{"alg":"RS256","kid":"k1"}"#;
        let duplicate = user_claims().to_string().replacen('{', r#"{"tid":"x","#, 1);
        assert_eq!(
            reason(&sign_raw(KEY_1, header, &duplicate)),
            DenyReason::TokenMalformed
        );
        assert_eq!(
            reason(&sign_raw(KEY_1, header, "[1]")),
            DenyReason::TokenMalformed
        );
        let crit = r#"{"alg":"RS256","kid":"k1","crit":["exp"]}"#;
        let critical = sign_raw(KEY_1, crit, &user_claims().to_string());
        assert_eq!(reason(&critical), DenyReason::TokenMalformed);

        let padded = format!("{}=", token.split('.').next().unwrap());
        let rest = token.split_once('.').unwrap().1;
        assert_eq!(
            reason(&format!("{padded}.{rest}")),
            DenyReason::TokenMalformed
        );
    }

    #[test]
    fn refuses_oversized_tokens_before_parsing() {
        let padding = "x".repeat(17 * 1024);
        let token = sign("k1", &with(user_claims(), json!({ "pad": padding })));
        assert_eq!(reason(&token), DenyReason::TokenTooLarge);
    }

    #[test]
    fn errors_never_contain_the_token() {
        let token = sign("k1", &with(user_claims(), json!({"aud": "api://other"})));
        let error = verify(&token).unwrap_err();
        let signature = token.rsplit('.').next().unwrap();
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(signature));
            assert!(!text.contains(token.split('.').nth(1).unwrap()));
        }
        let long_kid = "k".repeat(500);
        let header = json!({"alg": "RS256", "kid": long_kid}).to_string();
        let error = verify(&sign_raw(KEY_1, &header, &user_claims().to_string())).unwrap_err();
        assert!(!error.to_string().contains(&long_kid));
    }
}
