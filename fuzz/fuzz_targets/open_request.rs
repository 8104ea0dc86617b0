//! The callout request decoder on arbitrary bytes, plaintext and sealed: `open_request` must
//! refuse garbage without panicking, and never accept what a server did not sign; checked for
//! shape only (the service's default), it must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nkeys::XKey;

use entra_callout::nats_jwt::{SignatureCheck, open_request, open_request_with};

const TEST_KEYS: &str = include_str!("../../tests/data/nats/test-keys.json");
const SEALED_HEADER: &str = include_str!("../../tests/data/nats/request-sealed-token.xkey-header");

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let keys: serde_json::Value = serde_json::from_str(TEST_KEYS).unwrap();
    let xkey = XKey::from_seed(keys["service_xkey_seed"].as_str().unwrap()).unwrap();
    let now = 1_767_225_700;
    let _ = match mode % 4 {
        0 => open_request(payload, None, None, now, 5),
        1 => open_request(payload, Some(SEALED_HEADER.trim()), Some(&xkey), now, 5),
        2 => open_request_with(payload, None, None, now, 5, SignatureCheck::Shape),
        // The header itself is attacker-controlled too: take it from the input.
        _ => {
            let (header, rest) = payload.split_at(payload.len().min(56));
            let header = String::from_utf8_lossy(header);
            open_request(rest, Some(&header), Some(&xkey), now, 5)
        }
    };
});
