//! Made-up Entra access tokens for the local environment, signed with the DEV-ONLY key.
//!
//! The tokens have the shape of real Entra access tokens for the example API (entra-id.md
//! §1.3): v2 by default (`iss = https://login.microsoftonline.com/{tid}/v2.0`, `aud` the API's
//! client id), v1 on request (`iss = https://sts.windows.net/{tid}/`, `aud` the App ID URI).
//! App-only tokens carry `idtyp: app`, `roles` and `sub == oid`; delegated (user) tokens carry
//! `scp`, `groups` and a pairwise `sub`. Minting is pure apart from the random ids, which the
//! caller passes in.

use data_encoding::{BASE64, BASE64URL_NOPAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value, json};

use crate::dev::DevError;
use crate::duration::{DurationError, parse_duration};

/// The DEV-ONLY signing key (PKCS#1 PEM with an explanatory preamble). It is public.
const DEV_KEY_PEM: &str = include_str!("dev-only-signing-key.pem");

/// Key id the dev issuer publishes its key under.
pub const DEV_KID: &str = "entra-callout-dev-only-key";

/// Contoso: the first tenant of the example policies.
pub const CONTOSO: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";
/// Fabrikam: the second tenant of the example policies.
pub const FABRIKAM: &str = "0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07";
/// The example NATS API's client id: the `aud` of v2 tokens.
pub const API_CLIENT_ID: &str = "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11";
/// The example NATS API's App ID URI: the `aud` of v1 tokens.
pub const API_APP_ID_URI: &str = "api://nats-auth";
/// The delegated scope the example API exposes, which dashboard users sign in with.
pub const API_SCOPE: &str = "Nats.Connect";
/// The client (`azp`) that made-up user tokens are issued to.
pub const DEV_SPA_CLIENT: &str = "b9c2a7e5-1f34-4d8b-a0c6-7e2d9f4b3a18";
/// The client (`azp`) that made-up app-only tokens are issued to.
pub const DEV_DAEMON_CLIENT: &str = "0d4e7b2a-6c1f-4e83-9a5d-3b8c2f1e7d64";
/// The made-up user's object id, unless another is asked for.
pub const DEV_USER_OID: &str = "5a1c8e2f-9d47-4b63-8f0a-2e6c4d9b7a35";

/// The named tenants `--tenant` accepts besides GUIDs.
pub const DEV_TENANTS: [(&str, &str); 2] = [("contoso", CONTOSO), ("fabrikam", FABRIKAM)];

/// What a made-up token says about its holder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRequest {
    /// Tenant GUID, or a name from [`DEV_TENANTS`].
    pub tenant: String,
    /// App roles (`roles`).
    pub roles: Vec<String>,
    /// Group object ids (`groups`); asking for one makes a user token.
    pub groups: Vec<String>,
    /// An app-only token for the service principal with this object id.
    pub app: Option<String>,
    /// A user token for the user with this object id.
    pub user: Option<String>,
    /// Delegated scopes of a user token; [`API_SCOPE`] when empty.
    pub scopes: Vec<String>,
    /// Marks the user as a guest (`acct: 1`).
    pub guest: bool,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    /// A v1 token instead of v2.
    pub v1: bool,
    /// Another `aud` than the example NATS API's, for tokens meant for other resources (the
    /// deploy trigger's Azure DevOps token in the examples).
    pub audience: Option<String>,
}

/// Random values a token needs, drawn by the caller so that minting stays pure.
#[derive(Clone, Copy, Debug)]
pub struct Randomness {
    /// Becomes the object id of an app-only token that names none.
    pub oid: [u8; 16],
    /// Becomes the token id (`uti`).
    pub uti: [u8; 16],
}

impl Randomness {
    /// Fresh random values from the operating system.
    pub fn from_os() -> Result<Self, DevError> {
        let (mut oid, mut uti) = ([0u8; 16], [0u8; 16]);
        getrandom::getrandom(&mut oid).map_err(|e| DevError::Random(e.to_string()))?;
        getrandom::getrandom(&mut uti).map_err(|e| DevError::Random(e.to_string()))?;
        Ok(Self { oid, uti })
    }
}

/// The tenant GUID for a dev tenant name or a GUID (lowercased).
pub fn resolve_tenant(tenant: &str) -> Result<String, DevError> {
    if let Some((_, tid)) = DEV_TENANTS.iter().find(|(name, _)| *name == tenant) {
        return Ok((*tid).to_owned());
    }
    let tid = tenant.to_ascii_lowercase();
    if is_guid(&tid) {
        Ok(tid)
    } else {
        Err(DevError::Tenant(tenant.to_owned()))
    }
}

/// Why `dev token --ttl` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// Zero or under a second: token lifetimes are whole seconds, so the token would be
    /// expired when printed.
    #[error("--ttl {0:?}: ttl must be at least 1s")]
    TooShort(String),
    /// Neither whole seconds nor a duration.
    #[error("--ttl {input:?} is not a duration such as 90 (seconds), 15m or 1h30m: {source}")]
    Invalid {
        /// What was typed.
        input: String,
        /// Why the duration grammar refused it.
        source: DurationError,
    },
}

/// `dev token --ttl` as users type it, in whole seconds: a duration of the configuration
/// grammar (`15m`, `1h30m`, `90s`) or bare seconds (`90`, which configuration files refuse
/// because there a missing unit is more likely a mistake than on a command line).
pub fn parse_ttl(input: &str) -> Result<u64, TtlError> {
    let secs = if !input.is_empty() && input.bytes().all(|b| b.is_ascii_digit()) {
        parse_duration(&format!("{input}s"))
    } else {
        parse_duration(input)
    }
    .map_err(|source| TtlError::Invalid {
        input: input.to_owned(),
        source,
    })?
    .as_secs();
    if secs == 0 {
        return Err(TtlError::TooShort(input.to_owned()));
    }
    Ok(secs)
}

/// Signs a made-up access token for `request`, valid from `now` for `request.ttl_secs`.
pub fn mint(request: &TokenRequest, now: u64, random: Randomness) -> Result<String, DevError> {
    let claims = claims(request, now, random)?;
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": DEV_KID});
    let message = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &signing_key()?, Algorithm::RS256)
            .map_err(|e| DevError::Key(e.to_string()))?;
    Ok(format!("{message}.{signature}"))
}

/// The claims [`mint`] signs.
pub fn claims(request: &TokenRequest, now: u64, random: Randomness) -> Result<Value, DevError> {
    let tid = resolve_tenant(&request.tenant)?;
    let user_flags = !request.groups.is_empty()
        || request.user.is_some()
        || request.guest
        || !request.scopes.is_empty();
    let app_only = match (&request.app, user_flags) {
        (Some(_), true) => return Err(DevError::MixedIdentity),
        (Some(_), false) => true,
        // `--role` alone means a workload holding that app role.
        (None, false) => !request.roles.is_empty(),
        (None, true) => false,
    };
    for id in request
        .app
        .iter()
        .chain(&request.user)
        .chain(&request.groups)
    {
        if !is_guid(id) {
            return Err(DevError::NotGuid(id.clone()));
        }
    }
    let uti = BASE64URL_NOPAD.encode(&random.uti);
    let exp = now.saturating_add(request.ttl_secs);
    let mut claims = Map::new();
    let mut set = |name: &str, value: Value| {
        claims.insert(name.to_owned(), value);
    };
    if request.v1 {
        set("iss", json!(format!("https://sts.windows.net/{tid}/")));
        set("aud", json!(API_APP_ID_URI));
        set("ver", json!("1.0"));
    } else {
        set(
            "iss",
            json!(format!("https://login.microsoftonline.com/{tid}/v2.0")),
        );
        set("aud", json!(API_CLIENT_ID));
        set("ver", json!("2.0"));
    }
    if let Some(audience) = &request.audience {
        set("aud", json!(audience));
    }
    set("iat", json!(now));
    set("nbf", json!(now));
    set("exp", json!(exp));
    set("tid", json!(tid));
    set("uti", json!(uti));
    set("rh", json!("0.dev-only."));
    let client_claim = if request.v1 { "appid" } else { "azp" };
    let acr_claim = if request.v1 { "appidacr" } else { "azpacr" };
    if app_only {
        let oid = request
            .app
            .clone()
            .unwrap_or_else(|| guid(&random.oid))
            .to_ascii_lowercase();
        set(client_claim, json!(DEV_DAEMON_CLIENT));
        set(acr_claim, json!("1"));
        set("idtyp", json!("app"));
        set("oid", json!(oid));
        set("sub", json!(oid));
    } else {
        let oid = request
            .user
            .as_deref()
            .unwrap_or(DEV_USER_OID)
            .to_ascii_lowercase();
        let scopes = if request.scopes.is_empty() {
            API_SCOPE.to_owned()
        } else {
            request.scopes.join(" ")
        };
        set(client_claim, json!(DEV_SPA_CLIENT));
        set(acr_claim, json!("0"));
        set("idtyp", json!("user"));
        set("oid", json!(oid));
        // Entra's `sub` for users is pairwise per application, never the object id.
        set("sub", json!(format!("dev-user-{}", &oid)));
        set("scp", json!(scopes));
        set("name", json!("Dev User"));
        set("preferred_username", json!("dev.user@example.com"));
        if !request.groups.is_empty() {
            set("groups", json!(request.groups));
        }
        if request.guest {
            set("acct", json!(1));
        }
    }
    if !request.roles.is_empty() {
        set("roles", json!(request.roles));
    }
    Ok(Value::Object(claims))
}

/// The dev key, ready to sign with.
pub fn signing_key() -> Result<EncodingKey, DevError> {
    Ok(EncodingKey::from_rsa_der(&pem_body(DEV_KEY_PEM)?))
}

/// The dev key's public JWK as Entra publishes keys: `kty`, `n`, `e`, `kid`, `use`.
pub fn public_jwk() -> Result<Value, DevError> {
    let jwk = Jwk::from_encoding_key(&signing_key()?, Algorithm::RS256)
        .map_err(|e| DevError::Key(e.to_string()))?;
    let full = serde_json::to_value(jwk).map_err(|e| DevError::Key(e.to_string()))?;
    Ok(json!({
        "kty": "RSA",
        "use": "sig",
        "kid": DEV_KID,
        "n": full.get("n"),
        "e": full.get("e"),
    }))
}

/// The DER bytes between the BEGIN and END lines of the first PEM block in `text`.
fn pem_body(text: &str) -> Result<Vec<u8>, DevError> {
    let body: String = text
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN RSA PRIVATE KEY-----"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    BASE64
        .decode(body.as_bytes())
        .map_err(|e| DevError::Key(e.to_string()))
}

/// Formats 16 bytes as a version-4 style GUID.
fn guid(bytes: &[u8; 16]) -> String {
    let mut b = *bytes;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = data_encoding::HEXLOWER.encode(&b);
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default().to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

/// True for a GUID in 8-4-4-4-12 hex form.
pub use crate::guid::is_guid;

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const RANDOM: Randomness = Randomness {
        oid: [7; 16],
        uti: [9; 16],
    };

    #[test]
    fn ttl_accepts_what_users_type_and_names_what_it_refuses() {
        for (input, secs) in [
            ("90", 90),
            ("90s", 90),
            ("15m", 900),
            ("1h30m", 5400),
            ("1h", 3600),
        ] {
            assert_eq!(parse_ttl(input), Ok(secs), "{input}");
        }
        for input in ["0s", "0", "500ms"] {
            let err = parse_ttl(input).unwrap_err();
            assert_eq!(err, TtlError::TooShort(input.into()));
            assert_eq!(
                err.to_string(),
                format!("--ttl {input:?}: ttl must be at least 1s")
            );
        }
        assert_eq!(
            parse_ttl("1 hour").unwrap_err().to_string(),
            "--ttl \"1 hour\" is not a duration such as 90 (seconds), 15m or 1h30m: \
             duration `1 hour` contains an unexpected character"
        );
        assert!(matches!(parse_ttl(""), Err(TtlError::Invalid { .. })));
    }

    fn request() -> TokenRequest {
        TokenRequest {
            tenant: "contoso".into(),
            ttl_secs: 3600,
            ..TokenRequest::default()
        }
    }

    #[test]
    fn another_audience_replaces_the_apis() {
        let ado = "499b84ac-1321-427f-aa17-267ca6975798";
        for v1 in [false, true] {
            let c = claims(
                &TokenRequest {
                    audience: Some(ado.into()),
                    v1,
                    ..request()
                },
                NOW,
                RANDOM,
            )
            .unwrap();
            assert_eq!(c["aud"], ado);
        }
    }

    #[test]
    fn a_role_alone_makes_an_app_only_token_of_a_made_up_service_principal() {
        let c = claims(
            &TokenRequest {
                roles: vec!["Ml.Vision.Producer".into()],
                ..request()
            },
            NOW,
            RANDOM,
        )
        .unwrap();
        assert_eq!(c["idtyp"], "app");
        assert_eq!(c["oid"], c["sub"]);
        assert_eq!(c["oid"], "07070707-0707-4707-8707-070707070707");
        assert_eq!(c["roles"], json!(["Ml.Vision.Producer"]));
        assert_eq!(
            c["iss"],
            format!("https://login.microsoftonline.com/{CONTOSO}/v2.0")
        );
        assert_eq!(c["aud"], API_CLIENT_ID);
        assert_eq!(c["exp"], NOW + 3600);
        assert!(c.get("scp").is_none());
    }

    #[test]
    fn a_group_makes_a_user_token_with_the_api_scope() {
        let c = claims(
            &TokenRequest {
                tenant: "FABRIKAM".to_lowercase(),
                groups: vec!["c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43".into()],
                guest: true,
                ..request()
            },
            NOW,
            RANDOM,
        )
        .unwrap();
        assert_eq!(c["idtyp"], "user");
        assert_eq!(c["tid"], FABRIKAM);
        assert_eq!(c["oid"], DEV_USER_OID);
        assert_ne!(c["sub"], c["oid"]);
        assert_eq!(c["scp"], API_SCOPE);
        assert_eq!(c["acct"], 1);
    }

    #[test]
    fn v1_tokens_use_the_sts_issuer_and_the_app_id_uri() {
        let c = claims(
            &TokenRequest {
                app: Some("8F2B6C1D-4E9A-4A7B-B3C5-1D0E8F7A6B92".into()),
                v1: true,
                ..request()
            },
            NOW,
            RANDOM,
        )
        .unwrap();
        assert_eq!(c["iss"], format!("https://sts.windows.net/{CONTOSO}/"));
        assert_eq!(c["aud"], API_APP_ID_URI);
        assert_eq!(c["appid"], DEV_DAEMON_CLIENT);
        assert_eq!(c["oid"], "8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92");
    }

    #[test]
    fn bad_requests_are_refused_with_the_value_at_fault() {
        let mixed = TokenRequest {
            app: Some(DEV_USER_OID.into()),
            groups: vec![DEV_USER_OID.into()],
            ..request()
        };
        assert!(matches!(
            claims(&mixed, NOW, RANDOM),
            Err(DevError::MixedIdentity)
        ));
        let tenant = TokenRequest {
            tenant: "northwind".into(),
            ..request()
        };
        let err = claims(&tenant, NOW, RANDOM).unwrap_err().to_string();
        assert!(err.contains("northwind"), "{err}");
        let group = TokenRequest {
            groups: vec!["analysts".into()],
            ..request()
        };
        let err = claims(&group, NOW, RANDOM).unwrap_err().to_string();
        assert!(err.contains("analysts"), "{err}");
    }

    #[test]
    fn minted_tokens_verify_against_the_published_key() {
        let token = mint(
            &TokenRequest {
                roles: vec!["R".into()],
                ..request()
            },
            NOW,
            RANDOM,
        )
        .unwrap();
        let jwk: Jwk = serde_json::from_value(public_jwk().unwrap()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let (message, signature) = token.rsplit_once('.').unwrap();
        assert!(
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::RS256)
                .unwrap()
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(DEV_KID));
    }
}
