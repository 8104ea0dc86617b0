//! Access-token parsing and verification on arbitrary input with a fixed key set: every
//! outcome is a refusal (nothing here is signed by the test key) and none may panic.
#![no_main]

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

use entra_callout::oidc::{KeySet, ProviderSettings, verify_with_keys};

const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";
const AUDIENCE: &str = "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11";
const KEY: &str = include_str!("../../tests/data/keys/test-key-1.pem");

fuzz_target!(|data: &[u8]| {
    let settings = ProviderSettings::new("entra", TENANT, vec![AUDIENCE.to_owned()]).unwrap();
    let key = EncodingKey::from_rsa_pem(KEY.as_bytes()).unwrap();
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap())
        .unwrap();
    jwk["kid"] = json!("k1");
    jwk["issuer"] = json!("https://login.microsoftonline.com/{tenantid}/v2.0");
    let keys = KeySet::from_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap();
    let token = String::from_utf8_lossy(data);
    assert!(verify_with_keys(&token, &settings, &keys, 1_767_225_700).is_err());
});
