//! The `ed25519-nkey` JWT wire format: encoding with Go-identical `jti`, and strict decoding.
//!
//! Everything here is pure and never panics on input: sizes are capped, every chunk is checked,
//! and the signature is verified against the `iss` key after its kind has been checked.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPairType;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha512_256};

use super::claims::{CLAIM_VERSION, Claims, ClaimsData, IssuerKind, NatsClaim};
use super::signer::{SIGNATURE_LEN, Signer};
use super::{JwtError, issuers};

/// The header every NATS v2 JWT carries, byte for byte.
pub const HEADER_JSON: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Largest token accepted, as Go's `MaxTokenSize`.
pub const MAX_TOKEN_SIZE: usize = 1024 * 1024;

/// Largest authorization request accepted. A request carries the client's whole CONNECT (its
/// access token base64-encoded inside), so [`MAX_TOKEN_SIZE`] would drop, unanswered, the request
/// of any token above ~780 KB that the server's `max_control_line` lets through; the client would
/// wait out the callout timeout instead of being refused as `token_too_large`. nats-server never
/// delivers a message larger than a subscriber's `max_pending` (64 MiB by default), so this is
/// the largest request it can send; only nats-server can publish requests, and the message is
/// in memory before it is decoded, so the cap bounds only the decoder's copies.
pub const MAX_REQUEST_SIZE: usize = 64 * 1024 * 1024;

/// Longest untrusted string echoed back in an error message.
const ECHO_LIMIT: usize = 64;

#[derive(serde::Deserialize)]
struct Header {
    #[serde(default)]
    typ: String,
    #[serde(default)]
    alg: String,
}

/// Signs `claims` with `signer` and returns the compact JWT.
///
/// Sets `iss` to the signer's public key, `iat` to `now`, `jti` to Go's hash id, and
/// `nats.type`/`nats.version` for the claim kind. The signer must be of the kind that may
/// issue this claim (an account key for users and responses).
pub fn encode<T: NatsClaim + Serialize>(
    claims: &mut Claims<T>,
    signer: &Signer,
    now: u64,
) -> Result<String, JwtError> {
    if !kind_matches(T::ISSUER, &signer.kind()) {
        return Err(JwtError::SignerKind {
            expected: kind_name(T::ISSUER),
        });
    }
    signer.public_key().clone_into(&mut claims.base.iss);
    claims.base.iat = now;
    claims.base.jti = String::new();
    claims.base.jti = hash_id(&claims.base)?;
    claims.nats.stamp();

    let payload = serde_json::to_vec(claims).map_err(|_| JwtError::Serialize)?;
    let mut token = BASE64URL_NOPAD.encode(HEADER_JSON.as_bytes());
    token.push('.');
    token.push_str(&BASE64URL_NOPAD.encode(&payload));
    let signature = signer.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&BASE64URL_NOPAD.encode(&signature));
    Ok(token)
}

/// Whether decoding checks the ed25519 signature over `header.payload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Verify it against the `iss` key.
    Verify,
    /// Check only that it is 64 bytes of base64url: for authorization requests, whose signer
    /// is an ephemeral key the request itself names (see [`super::open_request_with`]).
    Shape,
}

/// Decodes and verifies a token of claim kind `T`.
///
/// Checks, in order: size, three chunks, header `typ`/`alg`, base64url payload and JSON,
/// `nats.version == 2`, `nats.type`, the issuer key kind, then the ed25519 signature over
/// `header.payload` with the `iss` key. Time claims are left to the caller.
pub fn decode<T: NatsClaim + DeserializeOwned>(token: &str) -> Result<Claims<T>, JwtError> {
    decode_at_most(token, MAX_TOKEN_SIZE, SignatureCheck::Verify)
}

/// [`decode`] with a size cap of `max` bytes instead of [`MAX_TOKEN_SIZE`], checking the
/// signature as `check` says.
pub(crate) fn decode_at_most<T: NatsClaim + DeserializeOwned>(
    token: &str,
    max: usize,
    check: SignatureCheck,
) -> Result<Claims<T>, JwtError> {
    if token.len() > max {
        return Err(JwtError::TooLarge {
            len: token.len(),
            max,
        });
    }
    let mut chunks = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (chunks.next(), chunks.next(), chunks.next(), chunks.next())
    else {
        return Err(JwtError::Chunks);
    };

    let header_bytes = decode_b64(header, "header")?;
    let parsed: Header = serde_json::from_slice(&header_bytes).map_err(|e| JwtError::Json {
        part: "header",
        line: e.line(),
        column: e.column(),
    })?;
    if !parsed.typ.eq_ignore_ascii_case("jwt") {
        return Err(JwtError::HeaderType {
            typ: echo(&parsed.typ),
        });
    }
    let alg = parsed.alg.to_ascii_lowercase();
    // Go accepts the v1 name too; the version check below still demands a v2 claim.
    if alg != "ed25519-nkey" && alg != "ed25519" {
        return Err(JwtError::HeaderAlgorithm {
            alg: echo(&parsed.alg),
        });
    }

    let payload_bytes = decode_b64(payload, "payload")?;
    let claims: Claims<T> = serde_json::from_slice(&payload_bytes).map_err(|e| JwtError::Json {
        part: "payload",
        line: e.line(),
        column: e.column(),
    })?;
    if claims.nats.version() != CLAIM_VERSION {
        return Err(JwtError::Version {
            found: claims.nats.version(),
        });
    }
    if claims.nats.claim_type() != T::TYPE {
        return Err(JwtError::ClaimType {
            expected: T::TYPE,
            found: echo(claims.nats.claim_type()),
        });
    }

    let issuer_kind = || JwtError::IssuerKind {
        expected: kind_name(T::ISSUER),
        iss: echo(&claims.base.iss),
    };
    let signature = decode_b64(signature, "signature")?;
    if check == SignatureCheck::Shape {
        if !public_key_kind(&claims.base.iss).is_some_and(|kind| kind_matches(T::ISSUER, &kind)) {
            return Err(issuer_kind());
        }
        if signature.len() != SIGNATURE_LEN {
            return Err(JwtError::Signature);
        }
        return Ok(claims);
    }
    let (issuer, known) = issuers::lookup(&claims.base.iss)
        .filter(|(kp, _)| kind_matches(T::ISSUER, &kp.key_pair_type()))
        .ok_or_else(issuer_kind)?;
    let signed_len = header.len() + 1 + payload.len();
    let signed = token.get(..signed_len).ok_or(JwtError::Chunks)?;
    issuer
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| JwtError::Signature)?;
    if !known {
        issuers::remember(&claims.base.iss, &issuer);
    }
    Ok(claims)
}

/// Go's `ClaimsData.hash`: base32 (std, no padding) of SHA-512/256 over the claims JSON.
///
/// Go's `json.Marshal` escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings where
/// serde_json does not; those characters can only occur inside strings, so rewriting them
/// in the serialized text yields Go's exact bytes.
pub fn hash_id(base: &ClaimsData) -> Result<String, JwtError> {
    let json = serde_json::to_vec(base).map_err(|_| JwtError::Serialize)?;
    // Almost no claims hold one of those characters: hash the bytes as they are, and rewrite
    // only when there is something to rewrite. U+2028/U+2029 are E2 80 A8/A9 in UTF-8.
    let plain = !json.iter().any(|&b| matches!(b, b'<' | b'>' | b'&' | 0xE2));
    if plain {
        return Ok(BASE32_NOPAD.encode(&Sha512_256::digest(&json)));
    }
    let json = String::from_utf8(json).map_err(|_| JwtError::Serialize)?;
    let mut go = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => go.push_str("\\u003c"),
            '>' => go.push_str("\\u003e"),
            '&' => go.push_str("\\u0026"),
            '\u{2028}' => go.push_str("\\u2028"),
            '\u{2029}' => go.push_str("\\u2029"),
            c => go.push(c),
        }
    }
    Ok(BASE32_NOPAD.encode(&Sha512_256::digest(go.as_bytes())))
}

/// Whether `key` is a public nkey of the given type (checksum and prefix both verified).
pub(super) fn is_public_key_of(key: &str, kind: &KeyPairType) -> bool {
    public_key_kind(key).is_some_and(|found| found == *kind)
}

/// The type of the public nkey `key`, after its length, base32, checksum and prefix: what Go's
/// `nkeys.IsValidPublicKey` checks. Not whether the bytes are a curve point — decompressing one
/// costs ~4 µs and only a signature check needs it.
fn public_key_kind(key: &str) -> Option<KeyPairType> {
    nkeys::from_public_key(key)
        .ok()
        .map(|(prefix, _)| KeyPairType::from(prefix))
}

fn decode_b64(chunk: &str, part: &'static str) -> Result<Vec<u8>, JwtError> {
    BASE64URL_NOPAD
        .decode(chunk.as_bytes())
        .map_err(|_| JwtError::Base64 { part })
}

fn kind_matches(expected: IssuerKind, kind: &KeyPairType) -> bool {
    match expected {
        IssuerKind::Server => *kind == KeyPairType::Server,
        IssuerKind::Account => *kind == KeyPairType::Account,
        IssuerKind::Operator => *kind == KeyPairType::Operator,
    }
}

fn kind_name(kind: IssuerKind) -> &'static str {
    match kind {
        IssuerKind::Server => "server",
        IssuerKind::Account => "account",
        IssuerKind::Operator => "operator",
    }
}

/// Caps an untrusted string before it goes into an error message.
pub(super) fn echo(s: &str) -> String {
    s.chars().take(ECHO_LIMIT).collect()
}
