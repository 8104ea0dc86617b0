//! Issuer public keys decoded once: the nkey of every nats-server that sends us requests.
//!
//! Checking a JWT's signature needs its `iss` as a curve point, and decoding one (base32, CRC,
//! then the point's decompression, a field square root) costs about 4 µs. A nats-server signs
//! every request with the same server key for its whole life, so the point is decoded on its
//! first request and reused ([`Memo`]: lock-free reads, bounded). Only a key that verified a
//! real signature is kept, so garbage cannot fill the table.

use std::sync::Arc;

use nkeys::KeyPair;

use super::memo::Memo;

/// More distinct issuers than this (server restarts over a long life) start the table afresh.
const MAX_KEYS: usize = 1024;

static KEYS: Memo<KeyPair> = Memo::new(MAX_KEYS);

/// The public key `iss`, decoded, and whether it came from the table. `None` when `iss` is not
/// an encoded public key.
pub(super) fn lookup(iss: &str) -> Option<(Arc<KeyPair>, bool)> {
    lookup_in(&KEYS, iss)
}

/// Keeps `key` for `iss`; call only after it verified a signature.
pub(super) fn remember(iss: &str, key: &Arc<KeyPair>) {
    KEYS.remember(iss, key);
}

/// [`lookup`] in `table`: tests use tables of their own, since every test that decodes a
/// request writes to the process-wide one and filling it starts it afresh.
fn lookup_in(table: &Memo<KeyPair>, iss: &str) -> Option<(Arc<KeyPair>, bool)> {
    if let Some(found) = table.get(iss) {
        return Some((found, true));
    }
    let decoded = KeyPair::from_public_key(iss).ok()?;
    Some((Arc::new(decoded), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_once_and_only_kept_when_asked() {
        let table = Memo::new(MAX_KEYS);
        let server = KeyPair::new_server();
        let iss = server.public_key();
        let (key, cached) = lookup_in(&table, &iss).unwrap();
        assert!(!cached);
        assert_eq!(key.public_key(), iss);
        assert!(
            !lookup_in(&table, &iss).unwrap().1,
            "not kept before a verified signature"
        );
        table.remember(&iss, &key);
        let (again, cached) = lookup_in(&table, &iss).unwrap();
        assert!(cached && Arc::ptr_eq(&key, &again));
    }

    #[test]
    fn the_process_wide_table_keeps_what_it_is_given() {
        let server = KeyPair::new_server();
        let iss = server.public_key();
        let (key, cached) = lookup(&iss).unwrap();
        assert!(!cached);
        remember(&iss, &key);
        // Other tests fill the same table concurrently and may start it afresh in between; a
        // miss is then a fresh decode of the same key, never another key.
        let (again, _) = lookup(&iss).unwrap();
        assert_eq!(again.public_key(), iss);
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(lookup("").is_none());
        assert!(lookup("NOT-A-KEY").is_none());
        let mut iss = KeyPair::new_server().public_key();
        iss.replace_range(10..11, if &iss[10..11] == "A" { "B" } else { "A" });
        assert!(lookup(&iss).is_none(), "a changed character breaks the CRC");
    }

    #[test]
    fn the_table_is_bounded() {
        let table = Memo::new(MAX_KEYS);
        for _ in 0..MAX_KEYS + 10 {
            let iss = KeyPair::new_server().public_key();
            let (key, _) = lookup_in(&table, &iss).unwrap();
            table.remember(&iss, &key);
        }
        let len = table.len();
        assert!(len <= MAX_KEYS, "{len}");
    }
}
