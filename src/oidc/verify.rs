//! The pure verification core: a compact JWT, one provider's settings, its keys and the current
//! time in, an [`Identity`] or a [`TokenError`] out. No I/O, no clock.
//!
//! The header and payload are parsed here, strictly (base64url without padding, JSON objects
//! without duplicate members), so routing and verification read the same bytes the same way.
//! jsonwebtoken only checks the signature; every claim check is done here against `now`.

use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::KeySet;
use super::settings::{ProviderSettings, is_lowercase_guid};
use super::TokenError;
use crate::identity::{Identity, PrincipalKind};

/// Longest `alg` or `kid` quoted in an error; longer values are replaced by a placeholder.
const MAX_QUOTED_HEADER_CHARS: usize = 64;

/// Claims whose presence marks an ID token, which must never pass as an access token.
const ID_TOKEN_MARKERS: [&str; 3] = ["nonce", "at_hash", "c_hash"];

/// A token whose structure has been checked but whose signature has not.
pub(crate) struct ParsedToken {
    kid: String,
    claims: Map<String, Value>,
}

/// A JSON object that refuses duplicate members (serde_json would silently keep the last one,
/// letting two parsers disagree about what a token says).
struct StrictObject(Map<String, Value>);

/// Verifies `token` with `keys` as a token of the provider `settings`, at time `now` (unix
/// seconds), and maps its claims to an [`Identity`].
pub fn verify_with_keys(
    token: &str,
    settings: &ProviderSettings,
    keys: &KeySet,
    now: u64,
) -> Result<Identity, TokenError> {
    let parsed = ParsedToken::parse(token, settings.max_token_bytes())?;
    verify_parsed(parsed, token, settings, keys, now)
}

/// The checks after parsing: key, signature, then claims.
pub(crate) fn verify_parsed(
    parsed: ParsedToken,
    token: &str,
    settings: &ProviderSettings,
    keys: &KeySet,
    now: u64,
) -> Result<Identity, TokenError> {
    let provider = settings.name();
    if token.len() > settings.max_token_bytes() {
        return Err(TokenError::TooLarge {
            len: token.len(),
            limit: settings.max_token_bytes(),
        });
    }
    let key = keys.get(&parsed.kid).ok_or_else(|| TokenError::KeyUnknown {
        provider: provider.clone(),
        kid: quote_header_value(&parsed.kid),
    })?;
    check_signature(token, &key.decoding, settings)?;

    let claims = parsed.claims;
    let issuer = required_str(&claims, "iss")?;
    if issuer != settings.issuer() {
        return Err(TokenError::IssuerMismatch {
            provider: provider.clone(),
            detail: "iss is not the provider's issuer",
        });
    }
    let tenant = required_str(&claims, "tid")?;
    if !is_lowercase_guid(tenant) {
        return Err(TokenError::InvalidClaim {
            claim: "tid",
            expected: "a lowercase GUID",
        });
    }
    if tenant != settings.tenant() {
        return Err(TokenError::TenantNotAllowed {
            provider: provider.clone(),
        });
    }
    if issuer_tenant_segment(issuer) != Some(tenant) {
        return Err(TokenError::IssuerMismatch {
            provider: provider.clone(),
            detail: "iss names another tenant than tid",
        });
    }
    if let Some(template) = key.issuer()
        && template.replace("{tenantid}", tenant) != issuer
    {
        return Err(TokenError::IssuerMismatch {
            provider: provider.clone(),
            detail: "the signing key belongs to another issuer",
        });
    }
    check_audience(&claims, settings)?;
    let expires_at = check_lifetime(&claims, settings.leeway_secs(), now)?;
    let subject = required_str(&claims, "sub")?;

    if let Some(marker) = ID_TOKEN_MARKERS.iter().find(|m| claims.contains_key(**m)) {
        tracing::debug!(provider = %provider, claim = marker, "id-token marker in token");
        return Err(TokenError::NotAnAccessToken(
            "it carries an id-token claim (nonce, at_hash or c_hash)",
        ));
    }
    check_groups_overage(&claims)?;

    let scopes = optional_str(&claims, "scp")?.map(|scp| {
        scp.split(' ')
            .filter(|scope| !scope.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
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
    let app_id = first_str(&claims, &["azp", "appid"])?;
    let guest = match claims.get("acct") {
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
    let display_name = first_str(&claims, &["preferred_username", "upn", "name"])?;
    let token_id = first_str(&claims, &["uti", "jti"])?;

    Ok(Identity {
        provider: provider.clone(),
        issuer: issuer.to_owned(),
        tenant: Some(tenant.to_owned()),
        object_id: object_id.map(str::to_owned),
        subject: subject.to_owned(),
        app_id,
        kind,
        roles,
        groups,
        scopes: scopes.unwrap_or_default(),
        guest,
        display_name,
        expires_at,
        token_id,
        claims,
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
        if signature.is_empty() {
            return Err(TokenError::Malformed("empty signature"));
        }
        let header = decode_object(header).ok_or(TokenError::Malformed(
            "header is not base64url-encoded JSON object",
        ))?;
        match header.get("alg") {
            Some(Value::String(alg)) if alg == "RS256" => {}
            Some(Value::String(alg)) => {
                return Err(TokenError::AlgorithmNotAllowed {
                    alg: quote_header_value(alg),
                });
            }
            Some(_) => return Err(TokenError::Malformed("header alg is not a string")),
            None => {
                return Err(TokenError::AlgorithmNotAllowed {
                    alg: "(none)".to_owned(),
                });
            }
        }
        // No critical extension is understood here, so RFC 7515 requires refusing any.
        if header.contains_key("crit") {
            return Err(TokenError::Malformed("header has critical extensions"));
        }
        let kid = match header.get("kid") {
            Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
            Some(Value::String(_)) | None => return Err(TokenError::KeyIdMissing),
            Some(_) => return Err(TokenError::Malformed("header kid is not a string")),
        };
        let claims = decode_object(payload).ok_or(TokenError::Malformed(
            "payload is not base64url-encoded JSON object",
        ))?;
        Ok(Self { kid, claims })
    }

    /// The unverified `iss`, for routing only.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The header's `kid`.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
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

        deserializer.deserialize_map(StrictVisitor).map(StrictObject)
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
    key: &jsonwebtoken::DecodingKey,
    settings: &ProviderSettings,
) -> Result<(), TokenError> {
    // Only the signature is jsonwebtoken's job: time is our parameter, not its clock, and the
    // claim checks above need Entra-specific rules anyway.
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    match jsonwebtoken::decode::<IgnoredAny>(token, key, &validation) {
        Ok(_) => Ok(()),
        Err(error) => Err(match error.kind() {
            ErrorKind::InvalidSignature => TokenError::SignatureInvalid {
                provider: settings.name().clone(),
            },
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
    let accepted = |audience: &str| settings.audiences().iter().any(|a| a == audience);
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
fn check_lifetime(
    claims: &Map<String, Value>,
    leeway: u64,
    now: u64,
) -> Result<u64, TokenError> {
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
fn check_groups_overage(claims: &Map<String, Value>) -> Result<(), TokenError> {
    match claims.get("_claim_names") {
        None => {}
        Some(Value::Object(names)) if names.contains_key("groups") => {
            return Err(TokenError::GroupsOverage);
        }
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(TokenError::InvalidClaim {
                claim: "_claim_names",
                expected: "an object",
            });
        }
    }
    match claims.get("hasgroups") {
        None | Some(Value::Bool(false)) => Ok(()),
        Some(_) => Err(TokenError::GroupsOverage),
    }
}

/// The tenant segment of `https://{host}/{tenant}/...`.
fn issuer_tenant_segment(issuer: &str) -> Option<&str> {
    let rest = issuer.strip_prefix("https://")?;
    let mut segments = rest.split('/');
    let _host = segments.next()?;
    segments.next()
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
    let invalid = TokenError::InvalidClaim {
        claim,
        expected: "an array of strings",
    };
    match claims.get(claim) {
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
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
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
