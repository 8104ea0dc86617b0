//! Tests against requests captured from nats-server 2.15.1 (`scripts/capture-nats-fixtures.py`)
//! plus forged and tampered variants built with throwaway keys.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::{KeyPair, XKey};
use serde_json::Value;
use sha2::{Digest, Sha512_256};

use super::*;

const PLAIN_TOKEN: &[u8] = include_bytes!("../../tests/data/nats/request-plain-token.jwt");
const PLAIN_USERPASS: &[u8] = include_bytes!("../../tests/data/nats/request-plain-userpass.jwt");
const SEALED_TOKEN: &[u8] = include_bytes!("../../tests/data/nats/request-sealed-token.bin");
const SEALED_HEADER: &str = include_str!("../../tests/data/nats/request-sealed-token.xkey-header");
const TEST_KEYS: &str = include_str!("../../tests/data/nats/test-keys.json");

const TEST_TOKEN: &str = "test-token-not-a-secret";
const TEST_PASS: &str = "test-password-not-a-secret";
const LEEWAY: u64 = 5;

struct TestKeys {
    issuer: Signer,
    issuer_public: String,
    xkey: XKey,
    xkey_public: String,
}

fn keys() -> TestKeys {
    let v: Value = serde_json::from_str(TEST_KEYS).unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    TestKeys {
        issuer: Signer::from_seed(&s("issuer_account_seed")).unwrap(),
        issuer_public: s("issuer_account_public"),
        xkey: XKey::from_seed(&s("service_xkey_seed")).unwrap(),
        xkey_public: s("service_xkey_public"),
    }
}

/// Decodes a fixture without time checks getting in the way: `now` is its own `iat`.
fn iat_of(token: &[u8]) -> u64 {
    decode::<AuthorizationRequest>(std::str::from_utf8(token).unwrap())
        .unwrap()
        .base
        .iat
}

fn open_plain(payload: &[u8]) -> Result<Request, JwtError> {
    open_request(payload, None, None, iat_of(PLAIN_TOKEN), LEEWAY)
}

fn plain_claims() -> Claims<AuthorizationRequest> {
    open_plain(PLAIN_TOKEN).unwrap().claims
}

/// Re-signs request claims as a fresh server whose id matches, after `mutate` ran.
fn forge(mutate: impl FnOnce(&mut Claims<AuthorizationRequest>, &KeyPair)) -> (String, u64) {
    let server = KeyPair::new_server();
    let mut claims = plain_claims();
    claims.nats.server_id.id = server.public_key();
    let now = claims.base.iat;
    mutate(&mut claims, &server);
    (
        encode(&mut claims, &Signer::new(server).unwrap(), now).unwrap(),
        now,
    )
}

#[test]
fn a_request_carrying_a_token_larger_than_any_jwt_cap_still_opens() {
    // The request of a 1 MiB access token is ~1.4 MiB, more than MAX_TOKEN_SIZE: it must still
    // open, so the service can refuse the token with a reason instead of dropping the request.
    let token = "t".repeat(MAX_TOKEN_SIZE);
    let (request, now) = forge(|claims, _| claims.nats.connect_opts.auth_token = token.clone());
    assert!(request.len() > MAX_TOKEN_SIZE, "{}", request.len());
    let opened = open_request(request.as_bytes(), None, None, now, LEEWAY).unwrap();
    assert_eq!(
        opened.claims.nats.connect_opts.auth_token.len(),
        MAX_TOKEN_SIZE
    );
}

/// Signs arbitrary header/payload JSON the v2 way, for claims `encode` would refuse to write.
fn sign_raw(header: &str, payload: &str, kp: &KeyPair) -> String {
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.as_bytes()),
        BASE64URL_NOPAD.encode(payload.as_bytes())
    );
    let sig = kp.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&sig))
}

fn payload_json(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap()).unwrap()
}

#[test]
fn committed_test_keys_are_consistent() {
    let k = keys();
    assert_eq!(k.issuer.public_key(), k.issuer_public);
    assert_eq!(k.xkey.public_key(), k.xkey_public);
}

#[test]
fn plain_token_request_decodes_with_all_fields() {
    let k = keys();
    let req = open_plain(PLAIN_TOKEN).unwrap();
    let c = &req.claims;
    assert_eq!(req.server_xkey, None);
    assert_eq!(c.base.aud, REQUEST_AUDIENCE);
    assert_eq!(c.base.sub, k.issuer_public);
    assert_eq!(c.base.iss, c.nats.server_id.id);
    assert!(c.base.iss.starts_with('N'));
    assert!(c.base.exp > c.base.iat);
    assert_eq!(c.base.jti.len(), 52);
    assert_eq!(c.nats.server_id.name, "capture");
    assert_eq!(c.nats.server_id.version, "2.15.1");
    assert!(c.nats.server_id.xkey.is_empty());
    assert!(c.nats.user_nkey.starts_with('U'));
    assert_eq!(c.nats.client_info.user, "[REDACTED]");
    assert_eq!(c.nats.client_info.kind, "Client");
    assert_eq!(c.nats.client_info.client_type, "nats");
    assert_eq!(c.nats.connect_opts.auth_token, TEST_TOKEN);
    assert_eq!(c.nats.connect_opts.protocol, 1);
    assert!(c.nats.connect_opts.user.is_empty());
    assert_eq!(c.nats.client_tls, None);
    assert_eq!(c.nats.claim_type, REQUEST_TYPE);
    assert_eq!(c.nats.version, 2);
}

#[test]
fn plain_userpass_request_carries_the_password() {
    let now = iat_of(PLAIN_USERPASS);
    let req = open_request(PLAIN_USERPASS, None, None, now, LEEWAY).unwrap();
    let opts = &req.claims.nats.connect_opts;
    assert_eq!(opts.user, "alice");
    assert_eq!(opts.pass, TEST_PASS);
    assert!(opts.auth_token.is_empty());
    assert_eq!(req.claims.nats.client_info.user, "alice");
}

#[test]
fn sealed_request_opens_with_the_service_xkey() {
    let k = keys();
    let opened = k
        .xkey
        .open(SEALED_TOKEN, &XKey::from_public_key(SEALED_HEADER).unwrap())
        .unwrap();
    let now = iat_of(&opened);
    let req = open_request(
        SEALED_TOKEN,
        Some(SEALED_HEADER),
        Some(&k.xkey),
        now,
        LEEWAY,
    )
    .unwrap();
    assert_eq!(req.server_xkey.as_deref(), Some(SEALED_HEADER));
    assert_eq!(req.claims.nats.server_id.xkey, SEALED_HEADER);
    assert_eq!(req.claims.nats.connect_opts.auth_token, TEST_TOKEN);
}

#[test]
fn jti_matches_go_on_every_captured_request() {
    let k = keys();
    let sender = XKey::from_public_key(SEALED_HEADER).unwrap();
    let sealed = k.xkey.open(SEALED_TOKEN, &sender).unwrap();
    for raw in [PLAIN_TOKEN, PLAIN_USERPASS, sealed.as_slice()] {
        let claims = decode::<AuthorizationRequest>(std::str::from_utf8(raw).unwrap()).unwrap();
        let mut base = claims.base.clone();
        base.jti.clear();
        assert_eq!(hash_id(&base).unwrap(), claims.base.jti);
    }
}

#[test]
fn jti_escapes_html_characters_like_go() {
    let base = ClaimsData {
        name: "a<b>&c\u{2028}".to_owned(),
        sub: "x".to_owned(),
        ..Default::default()
    };
    let go = r#"{"name":"a\u003cb\u003e\u0026c\u2028","sub":"x"}"#;
    assert_eq!(
        hash_id(&base).unwrap(),
        BASE32_NOPAD.encode(&Sha512_256::digest(go.as_bytes()))
    );
}

#[test]
fn tampered_payload_fails_the_signature() {
    let token = std::str::from_utf8(PLAIN_TOKEN).unwrap();
    let mut json = payload_json(token);
    json["nats"]["connect_opts"]["auth_token"] = Value::from("another-token");
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        BASE64URL_NOPAD.encode(json.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(open_plain(forged.as_bytes()), Err(JwtError::Signature));
}

#[test]
fn flipped_signature_byte_fails_the_signature() {
    let mut bytes = PLAIN_TOKEN.to_vec();
    let sig_start = bytes.iter().rposition(|&b| b == b'.').unwrap() + 1;
    let i = sig_start + 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(open_plain(&bytes), Err(JwtError::Signature));
}

fn open_shape(payload: &[u8]) -> Result<Request, JwtError> {
    open_request_with(
        payload,
        None,
        None,
        iat_of(PLAIN_TOKEN),
        LEEWAY,
        SignatureCheck::Shape,
    )
}

#[test]
fn without_the_signature_check_a_re_signable_change_passes_and_everything_else_is_checked() {
    // What the shape check gives up: bytes changed after signing. Whoever changed them could
    // have signed them with a server key of their own, which the request names.
    let token = std::str::from_utf8(PLAIN_TOKEN).unwrap();
    let mut json = payload_json(token);
    json["nats"]["connect_opts"]["auth_token"] = Value::from("another-token");
    let parts: Vec<&str> = token.split('.').collect();
    let changed = format!(
        "{}.{}.{}",
        parts[0],
        BASE64URL_NOPAD.encode(json.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(open_plain(changed.as_bytes()), Err(JwtError::Signature));
    let opened = open_shape(changed.as_bytes()).unwrap();
    assert_eq!(opened.claims.nats.connect_opts.auth_token, "another-token");

    // The signature must still be 64 bytes of base64url.
    let short = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]);
    assert_eq!(open_shape(short.as_bytes()), Err(JwtError::Signature));
    let garbled = format!("{}.{}.{}!", parts[0], parts[1], &parts[2][1..]);
    assert_eq!(
        open_shape(garbled.as_bytes()),
        Err(JwtError::Base64 { part: "signature" })
    );

    // The issuer must still be a server key, with a valid checksum, naming the server.
    let account = KeyPair::new_account();
    let mut json = payload_json(token);
    json["iss"] = Value::from(account.public_key());
    json["nats"]["server_id"]["id"] = Value::from(account.public_key());
    let by_account = sign_raw(HEADER_JSON, &json.to_string(), &account);
    assert_eq!(
        open_shape(by_account.as_bytes()),
        Err(JwtError::IssuerKind {
            expected: "server",
            iss: account.public_key(),
        })
    );
    let mut iss = payload_json(token)["iss"].as_str().unwrap().to_owned();
    iss.replace_range(10..11, if &iss[10..11] == "A" { "B" } else { "A" });
    let mut json = payload_json(token);
    json["iss"] = Value::from(iss.as_str());
    json["nats"]["server_id"]["id"] = Value::from(iss.as_str());
    let bad_crc = format!(
        "{}.{}.{}",
        parts[0],
        BASE64URL_NOPAD.encode(json.to_string().as_bytes()),
        parts[2]
    );
    assert!(matches!(
        open_shape(bad_crc.as_bytes()),
        Err(JwtError::IssuerKind {
            expected: "server",
            ..
        })
    ));
    let (other_server, now) =
        forge(|c, _| c.nats.server_id.id = KeyPair::new_server().public_key());
    assert!(matches!(
        open_request_with(
            other_server.as_bytes(),
            None,
            None,
            now,
            LEEWAY,
            SignatureCheck::Shape
        ),
        Err(JwtError::IssuerNotServer { .. })
    ));
    let (account_nkey, now) = forge(|c, _| c.nats.user_nkey = KeyPair::new_account().public_key());
    assert!(matches!(
        open_request_with(
            account_nkey.as_bytes(),
            None,
            None,
            now,
            LEEWAY,
            SignatureCheck::Shape
        ),
        Err(JwtError::UserNkey { .. })
    ));
    let (stale, iat) = forge(|_, _| {});
    assert!(matches!(
        open_request_with(
            stale.as_bytes(),
            None,
            None,
            iat + 3600,
            LEEWAY,
            SignatureCheck::Shape
        ),
        Err(JwtError::Expired { .. })
    ));
}

#[test]
fn flipped_sealed_byte_fails_to_open() {
    let k = keys();
    let mut bytes = SEALED_TOKEN.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let err = open_request(&bytes, Some(SEALED_HEADER), Some(&k.xkey), 0, LEEWAY);
    assert_eq!(err, Err(JwtError::Open));
}

#[test]
fn wrong_service_key_or_sender_fails_to_open() {
    let k = keys();
    let other = XKey::new();
    let err = open_request(SEALED_TOKEN, Some(SEALED_HEADER), Some(&other), 0, LEEWAY);
    assert_eq!(err, Err(JwtError::Open));
    let wrong_sender = XKey::new().public_key();
    let err = open_request(SEALED_TOKEN, Some(&wrong_sender), Some(&k.xkey), 0, LEEWAY);
    assert_eq!(err, Err(JwtError::Open));
}

#[test]
fn encryption_mismatches_are_distinct_errors() {
    let k = keys();
    assert_eq!(
        open_request(SEALED_TOKEN, Some(SEALED_HEADER), None, 0, LEEWAY),
        Err(JwtError::SealedButNoServiceXkey)
    );
    assert_eq!(
        open_request(PLAIN_TOKEN, None, Some(&k.xkey), 0, LEEWAY),
        Err(JwtError::PlaintextButServiceXkey)
    );
    assert_eq!(
        open_request(PLAIN_TOKEN, Some(SEALED_HEADER), Some(&k.xkey), 0, LEEWAY),
        Err(JwtError::PlaintextButServiceXkey)
    );
    assert_eq!(
        open_request(SEALED_TOKEN, None, Some(&k.xkey), 0, LEEWAY),
        Err(JwtError::MissingXkeyHeader)
    );
    assert!(matches!(
        open_request(SEALED_TOKEN, Some("XNOTAKEY"), Some(&k.xkey), 0, LEEWAY),
        Err(JwtError::InvalidXkeyHeader { .. })
    ));
    // Sealed bytes without any key configured are just not JWT text.
    assert_eq!(
        open_request(SEALED_TOKEN, None, None, 0, LEEWAY),
        Err(JwtError::NotUtf8)
    );
}

#[test]
fn signed_xkey_must_match_the_header() {
    let k = keys();
    let server_xkey = XKey::new();
    let (token, now) = forge(|c, _| c.nats.server_id.xkey = XKey::new().public_key());
    let sealed = server_xkey.seal(token.as_bytes(), &k.xkey).unwrap();
    let header = server_xkey.public_key();
    let err = open_request(&sealed, Some(&header), Some(&k.xkey), now, LEEWAY);
    assert!(matches!(err, Err(JwtError::XkeyMismatch { .. })), "{err:?}");
}

#[test]
fn expiry_is_enforced_with_leeway() {
    let exp = plain_claims().base.exp;
    assert!(open_request(PLAIN_TOKEN, None, None, exp + LEEWAY, LEEWAY).is_ok());
    assert_eq!(
        open_request(PLAIN_TOKEN, None, None, exp + LEEWAY + 1, LEEWAY),
        Err(JwtError::Expired {
            exp,
            now: exp + LEEWAY + 1,
            leeway: LEEWAY
        })
    );
    let (token, now) = forge(|c, _| c.base.exp = 0);
    assert_eq!(
        open_request(token.as_bytes(), None, None, now, LEEWAY),
        Err(JwtError::MissingExpiry)
    );
    let (token, now) = forge(|c, _| c.base.nbf = c.base.iat + LEEWAY + 1);
    assert!(matches!(
        open_request(token.as_bytes(), None, None, now, LEEWAY),
        Err(JwtError::NotYetValid { .. })
    ));
}

#[test]
fn forged_request_with_each_bad_field_is_refused() {
    let (token, now) = forge(|_, _| {});
    assert!(
        open_request(token.as_bytes(), None, None, now, LEEWAY).is_ok(),
        "control case"
    );

    let (token, now) = forge(|c, _| c.base.aud = "APP".to_owned());
    assert_eq!(
        open_request(token.as_bytes(), None, None, now, LEEWAY),
        Err(JwtError::Audience {
            found: "APP".to_owned()
        })
    );
    let (token, now) = forge(|c, _| c.nats.server_id.id = KeyPair::new_server().public_key());
    assert!(matches!(
        open_request(token.as_bytes(), None, None, now, LEEWAY),
        Err(JwtError::IssuerNotServer { .. })
    ));
    let (token, now) = forge(|c, _| c.nats.user_nkey = KeyPair::new_account().public_key());
    assert!(matches!(
        open_request(token.as_bytes(), None, None, now, LEEWAY),
        Err(JwtError::UserNkey { .. })
    ));
}

#[test]
fn request_signed_by_an_account_is_refused() {
    let account = KeyPair::new_account();
    let mut json = payload_json(std::str::from_utf8(PLAIN_TOKEN).unwrap());
    json["iss"] = Value::from(account.public_key());
    let token = sign_raw(HEADER_JSON, &json.to_string(), &account);
    assert!(matches!(
        open_plain(token.as_bytes()),
        Err(JwtError::IssuerKind { .. })
    ));
}

#[test]
fn wrong_type_or_version_is_refused() {
    let server = KeyPair::new_server();
    let mut json = payload_json(std::str::from_utf8(PLAIN_TOKEN).unwrap());
    json["iss"] = Value::from(server.public_key());
    json["nats"]["type"] = Value::from("user");
    let token = sign_raw(HEADER_JSON, &json.to_string(), &server);
    assert_eq!(
        open_plain(token.as_bytes()),
        Err(JwtError::ClaimType {
            expected: REQUEST_TYPE,
            found: "user".to_owned()
        })
    );
    json["nats"]["type"] = Value::from(REQUEST_TYPE);
    json["nats"]["version"] = Value::from(1);
    let token = sign_raw(HEADER_JSON, &json.to_string(), &server);
    assert_eq!(
        open_plain(token.as_bytes()),
        Err(JwtError::Version { found: 1 })
    );
}

#[test]
fn header_is_checked_case_insensitively() {
    let server = KeyPair::new_server();
    let mut json = payload_json(std::str::from_utf8(PLAIN_TOKEN).unwrap());
    json["iss"] = Value::from(server.public_key());
    json["nats"]["server_id"]["id"] = Value::from(server.public_key());
    let now = json["iat"].as_u64().unwrap();
    let accepted = sign_raw(
        r#"{"typ":"jwt","alg":"ED25519-NKEY"}"#,
        &json.to_string(),
        &server,
    );
    assert!(open_request(accepted.as_bytes(), None, None, now, LEEWAY).is_ok());
    let bad_alg = sign_raw(r#"{"typ":"JWT","alg":"RS256"}"#, &json.to_string(), &server);
    assert!(matches!(
        open_plain(bad_alg.as_bytes()),
        Err(JwtError::HeaderAlgorithm { .. })
    ));
    let bad_typ = sign_raw(
        r#"{"typ":"JWS","alg":"ed25519-nkey"}"#,
        &json.to_string(),
        &server,
    );
    assert!(matches!(
        open_plain(bad_typ.as_bytes()),
        Err(JwtError::HeaderType { .. })
    ));
}

#[test]
fn garbage_is_refused_without_panicking() {
    assert_eq!(open_plain(b""), Err(JwtError::Chunks));
    assert_eq!(open_plain(b"a.b"), Err(JwtError::Chunks));
    assert_eq!(open_plain(b"a.b.c.d"), Err(JwtError::Chunks));
    assert_eq!(
        open_plain(b"!!.e30.AA"),
        Err(JwtError::Base64 { part: "header" })
    );
    assert!(matches!(
        open_plain(b"e30.e30.AA"),
        Err(JwtError::HeaderType { .. })
    ));
    assert!(matches!(
        open_plain(b"bm90IGpzb24.e30.AA"),
        Err(JwtError::Json { part: "header", .. })
    ));
    assert_eq!(open_plain(&[0xff, b'.', b'.']), Err(JwtError::NotUtf8));
    let huge = vec![b'a'; MAX_REQUEST_SIZE + 100];
    assert!(matches!(open_plain(&huge), Err(JwtError::TooLarge { .. })));
    // Cut before the signature, a token lacks one of its three parts; cut inside it, the
    // signature is not base64 or does not verify.
    let signature_at = PLAIN_TOKEN.iter().rposition(|&b| b == b'.').unwrap() + 1;
    for cut in 0..PLAIN_TOKEN.len() {
        let err = open_plain(&PLAIN_TOKEN[..cut]).unwrap_err();
        if cut < signature_at {
            assert_eq!(err, JwtError::Chunks, "truncated at {cut}");
        } else {
            assert!(
                matches!(
                    err,
                    JwtError::Base64 { part: "signature" } | JwtError::Signature
                ),
                "truncated at {cut}: {err:?}"
            );
        }
    }
    let k = keys();
    for cut in 0..SEALED_TOKEN.len() {
        let r = open_request(
            &SEALED_TOKEN[..cut],
            Some(SEALED_HEADER),
            Some(&k.xkey),
            0,
            LEEWAY,
        );
        assert_eq!(r.unwrap_err(), JwtError::Open, "truncated at {cut}");
    }
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let k = keys();
    let req = open_plain(PLAIN_TOKEN).unwrap();
    let debug = format!("{req:?}");
    assert!(!debug.contains(TEST_TOKEN));
    assert!(debug.contains("auth_token: <redacted>"));
    let now = iat_of(PLAIN_USERPASS);
    let req = open_request(PLAIN_USERPASS, None, None, now, LEEWAY).unwrap();
    assert!(!format!("{req:?}").contains(TEST_PASS));
    let err = open_request(PLAIN_TOKEN, None, Some(&k.xkey), 0, LEEWAY).unwrap_err();
    assert!(!err.to_string().contains(TEST_TOKEN));
}

fn sample_user(sub: &str) -> Claims<User> {
    let mut user = Claims::<User>::new(sub, "APP", "alice@example.com", 1_900_000_000);
    user.nats.publish.allow = vec!["app.>".to_owned()];
    user.nats.subscribe.allow = vec!["_INBOX.>".to_owned(), "work.* workers".to_owned()];
    user.nats.subscribe.deny = vec!["app.admin.>".to_owned()];
    user.nats.resp = Some(ResponsePermission {
        max: 1,
        ttl: 5_000_000_000,
    });
    user.nats.tags = vec!["dept:eng".to_owned()];
    user
}

#[test]
fn user_round_trips_and_omits_empty_lists() {
    let k = keys();
    let req = open_plain(PLAIN_TOKEN).unwrap();
    let now = req.claims.base.iat;
    let mut user = sample_user(&req.claims.nats.user_nkey);
    let token = encode(&mut user, &k.issuer, now).unwrap();
    assert!(token.starts_with("eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ."));

    let decoded = decode::<User>(&token).unwrap();
    assert_eq!(decoded, user);
    assert_eq!(decoded.base.iss, k.issuer_public);
    assert_eq!(decoded.base.iat, now);
    let mut base = decoded.base.clone();
    base.jti.clear();
    assert_eq!(decoded.base.jti, hash_id(&base).unwrap());

    let json = payload_json(&token);
    let text = json.to_string();
    assert!(!text.contains("[]"), "{text}");
    assert!(json["nats"]["pub"].get("deny").is_none());
    assert_eq!(json["nats"]["version"], 2);
    assert_eq!(json["nats"]["type"], "user");
    assert_eq!(json["nats"]["subs"], -1);
    assert_eq!(json["nats"]["data"], -1);
    assert_eq!(json["nats"]["payload"], -1);
    assert_eq!(json["nats"]["resp"]["ttl"], 5_000_000_000_i64);
    assert!(json["nats"].get("issuer_account").is_none());
    assert!(json["nats"].get("bearer_token").is_none());
}

#[test]
fn user_without_permissions_omits_pub_and_sub_entirely() {
    let k = keys();
    let mut user = Claims::<User>::new(&KeyPair::new_user().public_key(), "APP", "", 10);
    user.nats.publish.allow = Vec::new();
    let token = encode(&mut user, &k.issuer, 1).unwrap();
    let json = payload_json(&token);
    assert!(json["nats"].get("pub").is_none());
    assert!(json["nats"].get("sub").is_none());
    assert!(json.get("name").is_none());
    // Deny-only permission: "allow" must be absent, an empty list would deny everything.
    user.nats.publish.deny = vec![">".to_owned()];
    let text = payload_json(&encode(&mut user, &k.issuer, 1).unwrap()).to_string();
    assert!(!text.contains("\"allow\""), "{text}");
}

#[test]
fn plain_response_admits_with_user_jwt() {
    let k = keys();
    let req = open_plain(PLAIN_TOKEN).unwrap();
    let now = req.claims.base.iat;
    let user_jwt = encode(&mut sample_user(&req.claims.nats.user_nkey), &k.issuer, now).unwrap();
    let bytes = encode_response(&req, Ok(&user_jwt), &k.issuer, None, now).unwrap();
    let resp = decode::<AuthorizationResponse>(std::str::from_utf8(&bytes).unwrap()).unwrap();
    assert_eq!(resp.base.sub, req.claims.nats.user_nkey);
    assert_eq!(resp.base.aud, req.claims.nats.server_id.id);
    assert_eq!(resp.base.iss, k.issuer_public);
    assert_eq!(resp.nats.jwt, user_jwt);
    assert!(resp.nats.error.is_empty());
    assert_eq!(resp.nats.version, 2);
    assert!(
        payload_json(std::str::from_utf8(&bytes).unwrap())["nats"]
            .get("error")
            .is_none()
    );
}

#[test]
fn plain_response_refuses_with_error_text() {
    let k = keys();
    let req = open_plain(PLAIN_TOKEN).unwrap();
    let bytes = encode_response(&req, Err("token expired"), &k.issuer, None, 1).unwrap();
    let resp = decode::<AuthorizationResponse>(std::str::from_utf8(&bytes).unwrap()).unwrap();
    assert_eq!(resp.nats.error, "token expired");
    assert!(resp.nats.jwt.is_empty());
    assert_eq!(
        encode_response(&req, Ok(""), &k.issuer, None, 1),
        Err(JwtError::EmptyOutcome)
    );
    assert_eq!(
        encode_response(&req, Err(""), &k.issuer, None, 1),
        Err(JwtError::EmptyOutcome)
    );
}

#[test]
fn response_to_sealed_request_is_sealed_to_the_server() {
    let k = keys();
    let server_xkey = XKey::new();
    let (token, now) = forge(|c, _| c.nats.server_id.xkey = server_xkey.public_key());
    let sealed = server_xkey.seal(token.as_bytes(), &k.xkey).unwrap();
    let header = server_xkey.public_key();
    let req = open_request(&sealed, Some(&header), Some(&k.xkey), now, LEEWAY).unwrap();

    let bytes = encode_response(&req, Err("no"), &k.issuer, Some(&k.xkey), now).unwrap();
    assert!(bytes.starts_with(b"xkv1"));
    let opened = server_xkey
        .open(&bytes, &XKey::from_public_key(&k.xkey_public).unwrap())
        .unwrap();
    let resp = decode::<AuthorizationResponse>(std::str::from_utf8(&opened).unwrap()).unwrap();
    assert_eq!(resp.base.sub, req.claims.nats.user_nkey);
    assert_eq!(resp.nats.error, "no");
    assert_eq!(
        encode_response(&req, Err("no"), &k.issuer, None, now),
        Err(JwtError::ResponseNeedsServiceXkey)
    );
}

#[test]
fn signer_must_be_an_account_seed() {
    let req = open_plain(PLAIN_TOKEN).unwrap();
    let user_key = Signer::new(KeyPair::new_user()).unwrap();
    assert_eq!(
        encode_response(&req, Err("x"), &user_key, None, 1),
        Err(JwtError::SignerKind {
            expected: "account"
        })
    );
    let public_only = KeyPair::from_public_key(&keys().issuer_public).unwrap();
    assert_eq!(Signer::new(public_only).unwrap_err(), JwtError::Sign);
}
