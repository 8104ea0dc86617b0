//! The key NATS JWTs are signed with: an nkey and its seed, loaded once into aws-lc-rs.
//!
//! Every authorization request costs two signatures (the user JWT and the response), so the
//! signing primitive is on the hot path. aws-lc-rs signs a 1.5 KB message in about 14.5 µs
//! where ed25519-dalek, which nkeys uses, takes about 23 µs. Ed25519 is deterministic, so the
//! signatures are byte-identical to nkeys' own. Verification stays with nkeys, which is the
//! faster of the two there.

use std::fmt;

use aws_lc_rs::signature::Ed25519KeyPair;
use nkeys::{KeyPair, KeyPairType};
use zeroize::Zeroizing;

use super::JwtError;

/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An nkey with its seed, ready to sign JWTs with [`encode`](super::encode).
///
/// Built once when keys are loaded: the seed is decoded and the public key encoded here, not
/// per token. `Debug` shows the public key only; there is no way to read the seed back.
#[derive(Clone)]
pub struct Signer {
    kind: KeyPairType,
    public_key: String,
    ed25519: Ed25519KeyPair,
}

impl Signer {
    /// Takes `key` for signing. Fails with [`JwtError::Sign`] when it is public only, and with
    /// [`JwtError::InvalidSeed`] when aws-lc-rs derives another public key from its seed.
    pub fn new(key: KeyPair) -> Result<Self, JwtError> {
        let public_key = key.public_key();
        let (_, public_raw) =
            nkeys::from_public_key(&public_key).map_err(|_| JwtError::InvalidSeed)?;
        // Both copies of the secret are wiped when this function returns, on error too.
        let seed = Zeroizing::new(key.seed().map_err(|_| JwtError::Sign)?);
        let raw = Zeroizing::new(
            nkeys::decode_seed(&seed)
                .map_err(|_| JwtError::InvalidSeed)?
                .1,
        );
        let ed25519 = Ed25519KeyPair::from_seed_and_public_key(raw.as_slice(), &public_raw)
            .map_err(|_| JwtError::InvalidSeed)?;
        // `key` (and the seed copy nkeys keeps in it) is dropped here: aws-lc-rs's is the only
        // copy of the secret a signer holds.
        Ok(Self {
            kind: key.key_pair_type(),
            public_key,
            ed25519,
        })
    }

    /// Parses an encoded nkey seed (`S...`) of any kind. The error never contains the seed.
    pub fn from_seed(seed: &str) -> Result<Self, JwtError> {
        Self::new(KeyPair::from_seed(seed).map_err(|_| JwtError::InvalidSeed)?)
    }

    /// The encoded public key (`A...`, `O...`, ...), which becomes a token's `iss`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The kind of key: account, operator, server, ...
    pub fn kind(&self) -> KeyPairType {
        self.kind.clone()
    }

    /// The ed25519 signature of `message`, identical to what `KeyPair::sign` returns.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; SIGNATURE_LEN], JwtError> {
        let signature = self
            .ed25519
            .try_sign(message)
            .map_err(|_| JwtError::SignFailed)?;
        signature
            .as_ref()
            .try_into()
            .map_err(|_| JwtError::SignFailed)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use data_encoding::BASE64URL_NOPAD;

    use super::*;
    use crate::nats_jwt::{Claims, User, decode, encode};

    fn messages() -> Vec<Vec<u8>> {
        vec![
            Vec::new(),
            b"eyJ0eXAiOiJKV1QifQ.e30".to_vec(),
            (0..1536_u32).map(|i| (i % 251) as u8).collect(),
        ]
    }

    #[test]
    fn signatures_are_byte_identical_to_nkeys() {
        for key in [
            KeyPair::new_account(),
            KeyPair::new_operator(),
            KeyPair::new_server(),
            KeyPair::new_user(),
        ] {
            let signer = Signer::new(key.clone()).unwrap();
            for message in messages() {
                assert_eq!(
                    signer.sign(&message).unwrap().to_vec(),
                    key.sign(&message).unwrap(),
                    "{:?} key, {} byte message",
                    key.key_pair_type(),
                    message.len()
                );
            }
        }
    }

    #[test]
    fn public_key_and_kind_come_from_the_nkey() {
        let key = KeyPair::new_operator();
        let signer = Signer::from_seed(&key.seed().unwrap()).unwrap();
        assert_eq!(signer.public_key(), key.public_key());
        assert_eq!(signer.kind(), KeyPairType::Operator);
    }

    #[test]
    fn a_token_it_signs_decodes_and_carries_the_nkeys_signature() {
        let key = KeyPair::new_account();
        let signer = Signer::new(key.clone()).unwrap();
        let user = KeyPair::new_user().public_key();
        let mut claims = Claims::<User>::new(&user, "APP", "alice", 60);
        let token = encode(&mut claims, &signer, 1_000).unwrap();

        let decoded = decode::<User>(&token).unwrap();
        assert_eq!(decoded.base.iss, key.public_key());
        assert_eq!(decoded.base.sub, user);
        let (signed, signature) = token.rsplit_once('.').unwrap();
        assert_eq!(
            BASE64URL_NOPAD.decode(signature.as_bytes()).unwrap(),
            key.sign(signed.as_bytes()).unwrap()
        );
    }

    #[test]
    fn a_public_only_key_cannot_sign() {
        let public_only = KeyPair::from_public_key(&KeyPair::new_account().public_key()).unwrap();
        assert_eq!(Signer::new(public_only).unwrap_err(), JwtError::Sign);
    }

    #[test]
    fn what_is_not_a_seed_is_refused_without_being_echoed() {
        let public = KeyPair::new_account().public_key();
        let seed = KeyPair::new_account().seed().unwrap();
        // One character changed in the middle: the checksum no longer matches.
        let flipped = if seed.as_bytes()[10] == b'A' {
            "B"
        } else {
            "A"
        };
        let damaged = format!("{}{flipped}{}", &seed[..10], &seed[11..]);
        for input in [public.as_str(), damaged.as_str(), "", "SAnot-a-seed"] {
            let err = Signer::from_seed(input).unwrap_err();
            assert_eq!(err, JwtError::InvalidSeed, "{input:?}");
            if !input.is_empty() {
                assert!(!err.to_string().contains(input), "{err}");
            }
        }
    }

    #[test]
    fn debug_shows_the_public_key_and_never_the_seed() {
        let key = KeyPair::new_account();
        let seed = key.seed().unwrap();
        let signer = Signer::new(key.clone()).unwrap();
        for text in [format!("{signer:?}"), format!("{signer:#?}")] {
            assert!(text.contains(&key.public_key()), "{text}");
            assert!(!text.contains(&seed), "{text}");
            // Nor any long stretch of it (the seed's first characters are only its prefix).
            assert!(!text.contains(&seed[2..20]), "{text}");
        }
    }
}
