//! xkv1 sealed boxes with the X25519 shared key derived once per (service key, server key).
//!
//! Opening a request and sealing its response each need the X25519 shared key of the service's
//! curve key and the server's — the most expensive step of an encrypted callout (tens of µs).
//! A nats-server keeps one curve key for its whole life, so the box for a server is derived on
//! its first request and reused ([`Memo`]: lock-free reads, bounded). The byte layout is nkeys'
//! (`xkv1` ‖ 24-byte nonce ‖ NaCl box), which the fixtures captured from nats-server pin.

use std::sync::Arc;

use crypto_box::aead::Aead;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use nkeys::XKey;

use super::memo::Memo;

const VERSION: &[u8] = b"xkv1";
const NONCE_LEN: usize = 24;
/// More distinct peers than this (server restarts over a long life) start the table afresh.
const MAX_BOXES: usize = 1024;

/// By server public key: the service public key the box was derived with, and the box. A
/// service has one curve key for its life; a box for another one is a miss, then replaced.
static BOXES: Memo<(String, SalsaBox)> = Memo::new(MAX_BOXES);

/// Opens `payload` sealed by `sender` (a public curve key) to `service`.
pub(super) fn open(service: &XKey, payload: &[u8], sender: &str) -> Option<Vec<u8>> {
    let rest = payload.strip_prefix(VERSION)?;
    if rest.len() <= NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let (salsa, cached) = salsa_box(service, sender)?;
    let opened = salsa.1.decrypt(Nonce::from_slice(nonce), sealed).ok()?;
    // Only a key that opened a real box is kept, so garbage can't fill the table.
    if !cached {
        BOXES.remember(sender, &salsa);
    }
    Some(opened)
}

/// Seals `plain` from `service` to `recipient` (a public curve key) with a fresh random nonce.
pub(super) fn seal(service: &XKey, plain: &[u8], recipient: &str) -> Option<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce).ok()?;
    let (salsa, _) = salsa_box(service, recipient)?;
    let sealed = salsa.1.encrypt(Nonce::from_slice(&nonce), plain).ok()?;
    let mut out = Vec::with_capacity(VERSION.len() + NONCE_LEN + sealed.len());
    out.extend_from_slice(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Some(out)
}

/// The box for `peer`, and whether it came from the table.
fn salsa_box(service: &XKey, peer: &str) -> Option<(Arc<(String, SalsaBox)>, bool)> {
    let service_public = service.public_key();
    if let Some(found) = BOXES.get(peer).filter(|found| found.0 == service_public) {
        return Some((found, true));
    }
    let (_, secret) = nkeys::decode_seed(&service.seed().ok()?).ok()?;
    let (_, public) = nkeys::from_public_key(peer).ok()?;
    let derived = SalsaBox::new(&PublicKey::from(public), &SecretKey::from(secret));
    Some((Arc::new((service_public, derived)), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_interoperate_with_nkeys_both_ways() {
        let service = XKey::new();
        let server = XKey::new();
        let server_public = server.public_key();
        let service_public = XKey::from_public_key(&service.public_key()).unwrap();

        // The server seals with nkeys; we open with the cached box, twice (second from cache).
        for message in [b"first".as_slice(), b"second"] {
            let sealed = server.seal(message, &service_public).unwrap();
            assert_eq!(open(&service, &sealed, &server_public).unwrap(), message);
        }
        // We seal; nkeys opens.
        let sealed = seal(&service, b"answer", &server_public).unwrap();
        let me = XKey::from_public_key(&service.public_key()).unwrap();
        assert_eq!(server.open(&sealed, &me).unwrap(), b"answer");
        // Two seals never share a nonce.
        assert_ne!(
            seal(&service, b"x", &server_public),
            seal(&service, b"x", &server_public)
        );
    }

    #[test]
    fn garbage_and_foreign_boxes_do_not_open() {
        let service = XKey::new();
        let server = XKey::new();
        let other = XKey::new();
        let server_public = server.public_key();
        let to_other = server.seal(b"m", &XKey::from_public_key(&other.public_key()).unwrap());
        assert!(open(&service, &to_other.unwrap(), &server_public).is_none());
        assert!(open(&service, b"xkv1", &server_public).is_none());
        assert!(open(&service, &[b'x'; 28], &server_public).is_none());
        assert!(
            open(
                &service,
                b"xkv2aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                &server_public
            )
            .is_none()
        );
        assert!(
            open(
                &service,
                b"xkv1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "not-a-key"
            )
            .is_none()
        );
    }
}
