//! Property tests over token parsing and verification: arbitrary strings, JWT-shaped garbage,
//! every one-character edit of a valid token and validly signed tokens with hostile claim
//! values are refused without panicking, or verify to what was signed — and a verified token
//! always belongs to the configured tenant and audience.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{KeySet, ProviderSettings, verify_with_keys};

const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";
const AUDIENCE: &str = "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11";
const NOW: u64 = 1_767_225_700;
const KEY: &str = include_str!("../../tests/data/keys/test-key-1.pem");
const TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

fn settings() -> ProviderSettings {
    match ProviderSettings::new("entra", TENANT, vec![AUDIENCE.to_owned()]) {
        Ok(settings) => settings,
        Err(err) => panic!("{err}"),
    }
}

fn encoding_key() -> EncodingKey {
    match EncodingKey::from_rsa_pem(KEY.as_bytes()) {
        Ok(key) => key,
        Err(err) => panic!("{err}"),
    }
}

fn keys() -> KeySet {
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&encoding_key(), Algorithm::RS256).ok())
            .unwrap_or_default();
    jwk["kid"] = json!("k1");
    jwk["use"] = json!("sig");
    jwk["issuer"] = json!(TEMPLATE);
    KeySet::from_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap_or_default()
}

fn claims() -> Value {
    json!({
        "aud": AUDIENCE,
        "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "iat": NOW - 100, "nbf": NOW - 100, "exp": NOW + 3600,
        "azp": "0d4e7b2a-6c1f-4e83-9a5d-3b8c2f1e7d64", "azpacr": "2", "idtyp": "app",
        "oid": "8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92", "sub": "8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92",
        "roles": ["Nats.Service"], "tid": TENANT, "ver": "2.0",
    })
}

fn sign(claims: &Value) -> String {
    let header = jsonwebtoken::Header {
        kid: Some("k1".to_owned()),
        ..jsonwebtoken::Header::new(Algorithm::RS256)
    };
    jsonwebtoken::encode(&header, claims, &encoding_key()).unwrap_or_default()
}

/// JSON values an attacker might put in a claim.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z.*> $0-9{}-]{0,24}".prop_map(Value::from),
        Just(json!(TENANT)),
        Just(json!(AUDIENCE)),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_refused(token in "\\PC{0,512}") {
        prop_assert!(verify_with_keys(&token, &settings(), &keys(), NOW).is_err());
    }

    #[test]
    fn jwt_shaped_garbage_is_refused(parts in proptest::collection::vec("[A-Za-z0-9_=-]{0,96}", 0..5)) {
        let token = format!("eyJ{}", parts.join("."));
        prop_assert!(verify_with_keys(&token, &settings(), &keys(), NOW).is_err());
    }

    #[test]
    fn any_one_character_edit_of_a_valid_token_is_refused_or_harmless(
        at in any::<proptest::sample::Index>(),
        replacement in proptest::char::range('-', 'z'),
    ) {
        let token = sign(&claims());
        let original = verify_with_keys(&token, &settings(), &keys(), NOW);
        prop_assert!(original.is_ok(), "{original:?}");
        let mut chars: Vec<char> = token.chars().collect();
        let i = at.index(chars.len());
        if let Some(c) = chars.get_mut(i) {
            *c = replacement;
        }
        let edited: String = chars.into_iter().collect();
        if let (Ok(identity), Ok(original)) =
            (verify_with_keys(&edited, &settings(), &keys(), NOW), original)
        {
            // Only an edit that decodes to the same signed bytes (base64 padding bits) passes.
            prop_assert_eq!(identity.object_id, original.object_id);
            prop_assert_eq!(identity.roles, original.roles);
            prop_assert_eq!(identity.tenant, original.tenant);
        }
    }

    #[test]
    fn signed_tokens_with_hostile_claims_never_leave_the_tenant(
        name in prop_oneof![
            Just("tid"), Just("iss"), Just("aud"), Just("roles"), Just("groups"), Just("oid"),
            Just("exp"), Just("nbf"), Just("ver"), Just("idtyp"), Just("scp"), Just("wids"),
        ],
        value in hostile_value(),
    ) {
        let mut claims = claims();
        claims[name] = value;
        let token = sign(&claims);
        if let Ok(identity) = verify_with_keys(&token, &settings(), &keys(), NOW) {
            prop_assert_eq!(identity.tenant.as_deref(), Some(TENANT));
            prop_assert!(identity.expires_at > NOW);
            prop_assert_eq!(
                identity.issuer,
                format!("https://login.microsoftonline.com/{TENANT}/v2.0")
            );
        }
    }
}
