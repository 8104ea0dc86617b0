//! Property tests over the request decoder: arbitrary bytes, and every small mutation of a
//! request nats-server really sent, are refused without panicking — or, where a mutation does
//! not change what was signed, decode to exactly the original claims; checked for shape only,
//! a mutation passes only as a request that meets every other check.

use nkeys::XKey;
use proptest::prelude::*;
use serde_json::Value;

use super::*;

const PLAIN: &[u8] = include_bytes!("../../tests/data/nats/request-plain-token.jwt");
const SEALED: &[u8] = include_bytes!("../../tests/data/nats/request-sealed-token.bin");
const SEALED_HEADER: &str = include_str!("../../tests/data/nats/request-sealed-token.xkey-header");
const TEST_KEYS: &str = include_str!("../../tests/data/nats/test-keys.json");
const LEEWAY: u64 = 5;

fn service_xkey() -> XKey {
    let keys: Value = serde_json::from_str(TEST_KEYS).unwrap_or_default();
    match keys["service_xkey_seed"].as_str().map(XKey::from_seed) {
        Some(Ok(key)) => key,
        _ => panic!("the committed service xkey seed"),
    }
}

/// The captured request's `iat`: the `now` at which it is valid.
fn iat(token: &[u8]) -> u64 {
    std::str::from_utf8(token)
        .ok()
        .and_then(|t| decode::<AuthorizationRequest>(t).ok())
        .map_or(0, |c| c.base.iat)
}

fn original(payload: &[u8], header: Option<&str>, xkey: Option<&XKey>, now: u64) -> Request {
    match open_request(payload, header, xkey, now, LEEWAY) {
        Ok(request) => request,
        Err(err) => panic!("the captured request opens: {err}"),
    }
}

/// A byte string with one edit: flip, replace, insert, delete, or truncate.
fn mutate(bytes: &[u8]) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    let base = bytes.to_vec();
    (0..5u8, 0..len.max(1), any::<u8>(), 1..=7u8).prop_map(move |(kind, at, byte, bit)| {
        let mut out = base.clone();
        let at = at.min(out.len().saturating_sub(1));
        match kind {
            0 => {
                if let Some(b) = out.get_mut(at) {
                    *b ^= 1 << (bit % 8);
                }
            }
            1 => {
                if let Some(b) = out.get_mut(at) {
                    *b = byte;
                }
            }
            2 => out.insert(at, byte),
            3 => {
                if at < out.len() {
                    out.remove(at);
                }
            }
            _ => out.truncate(at),
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused_plain_or_sealed(
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        header in proptest::option::of("[A-Z2-7]{0,60}"),
    ) {
        let xkey = service_xkey();
        // Arbitrary bytes as a plain request fail somewhere in decoding; which check catches
        // them depends on the bytes, so only the refusal is the property.
        prop_assert!(open_request(&payload, None, None, 0, LEEWAY).is_err());
        // To a sealing service they are refused before anything is decoded.
        let plaintext = payload.starts_with(b"eyJ");
        let sealed = open_request(&payload, header.as_deref(), Some(&xkey), 0, LEEWAY);
        prop_assert!(
            matches!(
                sealed,
                Err(JwtError::PlaintextButServiceXkey
                    | JwtError::MissingXkeyHeader
                    | JwtError::InvalidXkeyHeader { .. }
                    | JwtError::Open)
            ),
            "{sealed:?}"
        );
        let expected = if plaintext { JwtError::PlaintextButServiceXkey } else { JwtError::Open };
        prop_assert_eq!(
            open_request(&payload, Some(SEALED_HEADER), Some(&xkey), 0, LEEWAY).unwrap_err(),
            expected
        );
    }

    #[test]
    fn jwt_shaped_garbage_is_refused(parts in proptest::collection::vec("[A-Za-z0-9_-]{0,64}", 0..5)) {
        let token = format!("eyJ{}", parts.join("."));
        prop_assert!(open_request(token.as_bytes(), None, None, 0, LEEWAY).is_err());
    }

    #[test]
    fn a_mutated_plain_request_is_refused_or_unchanged(payload in mutate(PLAIN)) {
        let now = iat(PLAIN);
        let genuine = original(PLAIN, None, None, now);
        if let Ok(request) = open_request(&payload, None, None, now, LEEWAY) {
            // Only edits that do not change the signed bytes can pass (none exist for a
            // canonical token, but the property does not depend on that).
            prop_assert_eq!(request, genuine);
        }
    }

    #[test]
    fn a_mutated_request_checked_for_shape_is_refused_or_still_a_request(payload in mutate(PLAIN)) {
        // The default since issue 18: the signature is not verified, so a mutation of the
        // claims can pass — but only as a request that meets every other check.
        let now = iat(PLAIN);
        if let Ok(request) = open_request_with(&payload, None, None, now, LEEWAY, SignatureCheck::Shape) {
            let claims = &request.claims;
            prop_assert_eq!(claims.base.aud.as_str(), REQUEST_AUDIENCE);
            prop_assert_eq!(&claims.base.iss, &claims.nats.server_id.id);
            prop_assert!(codec::is_public_key_of(&claims.base.iss, &KeyPairType::Server));
            prop_assert!(codec::is_public_key_of(&claims.nats.user_nkey, &KeyPairType::User));
            prop_assert!(now <= claims.base.exp + LEEWAY);
        }
    }

    #[test]
    fn a_mutated_sealed_request_is_refused_or_unchanged(payload in mutate(SEALED)) {
        let xkey = service_xkey();
        let Ok(Ok(opened)) = XKey::from_public_key(SEALED_HEADER).map(|s| xkey.open(SEALED, &s))
        else {
            panic!("the captured sealed request opens");
        };
        let now = iat(&opened);
        let genuine = original(SEALED, Some(SEALED_HEADER), Some(&xkey), now);
        if let Ok(request) = open_request(&payload, Some(SEALED_HEADER), Some(&xkey), now, LEEWAY) {
            prop_assert_eq!(request, genuine);
        }
    }

    #[test]
    fn a_captured_request_is_refused_once_expired(late in 1u64..1_000_000) {
        let genuine = original(PLAIN, None, None, iat(PLAIN));
        let now = genuine.claims.base.exp + LEEWAY + late;
        let refused = matches!(
            open_request(PLAIN, None, None, now, LEEWAY),
            Err(JwtError::Expired { .. })
        );
        prop_assert!(refused);
    }
}
