//! NATS JWTs for the authorization callout: claim types, encoding and signing, decoding and
//! verification, request intake (including xkey sealing) and response building.
//!
//! The service calls [`open_request`] on every message received on [`AUTH_REQUEST_SUBJECT`]
//! and answers with [`encode_response`]. Both are pure: time arrives as `now` (unix seconds).
//! The wire format follows `nats-io/jwt/v2` exactly, checked against captures from
//! nats-server 2.15.1 in `tests/data/nats/`.

mod account;
mod boxes;
mod claims;
mod codec;
mod issuers;
mod memo;
mod signer;

use std::borrow::Cow;

use nkeys::{KeyPairType, XKey};
use thiserror::Error;

pub use account::{
    ACCOUNT_TYPE, Account, AccountLimits, DefaultPermissions, ExternalAuthorization, OPERATOR_TYPE,
    Operator, format_credentials,
};
pub use claims::{
    AuthorizationRequest, AuthorizationResponse, CLAIM_VERSION, Claims, ClaimsData,
    ClientInformation, ClientTls, ConnectOptions, IssuerKind, NatsClaim, Permission,
    REQUEST_AUDIENCE, REQUEST_TYPE, RESPONSE_TYPE, ResponsePermission, ServerId, TimeRange,
    USER_TYPE, User,
};
pub use codec::{
    HEADER_JSON, MAX_REQUEST_SIZE, MAX_TOKEN_SIZE, SignatureCheck, decode, encode, hash_id,
};
pub use signer::{SIGNATURE_LEN, Signer};

/// The subject nats-server publishes authorization requests on.
pub const AUTH_REQUEST_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// The message header carrying the server's curve public key on sealed requests.
pub const XKEY_HEADER: &str = "Nats-Server-Xkey";

/// Size of the xkv1 envelope around a sealed payload: version tag, nonce and Poly1305 tag.
const SEAL_OVERHEAD: usize = 4 + 24 + 16;

/// Length of every encoded nkey public key.
const PUBLIC_KEY_LEN: usize = 56;

/// Why a NATS JWT could not be encoded, decoded, or accepted as a request.
///
/// Messages never contain secrets; untrusted strings are echoed only capped and only where
/// they are public by nature (keys, types, audiences).
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    /// The token or sealed payload exceeds the size cap.
    #[error("jwt is {len} bytes, larger than the {max} byte limit")]
    TooLarge { len: usize, max: usize },
    /// The token is not three dot-separated chunks.
    #[error("jwt does not have exactly 3 chunks")]
    Chunks,
    /// A chunk is not base64url without padding.
    #[error("jwt {part} is not base64url without padding")]
    Base64 { part: &'static str },
    /// A chunk is not the expected JSON; only the position is kept, never the content.
    #[error("jwt {part} is not valid json (line {line}, column {column})")]
    Json {
        part: &'static str,
        line: usize,
        column: usize,
    },
    /// The header `typ` is not `JWT`.
    #[error("jwt header type {typ:?} is not \"JWT\"")]
    HeaderType { typ: String },
    /// The header `alg` is not `ed25519-nkey`.
    #[error("jwt header algorithm {alg:?} is not \"ed25519-nkey\"")]
    HeaderAlgorithm { alg: String },
    /// `nats.version` is not 2.
    #[error("jwt nats.version is {found}, expected 2")]
    Version { found: i64 },
    /// `nats.type` is not the expected claim kind.
    #[error("jwt nats.type is {found:?}, expected {expected:?}")]
    ClaimType {
        expected: &'static str,
        found: String,
    },
    /// `iss` is not a public key of the kind allowed to issue this claim.
    #[error("jwt issuer {iss:?} is not a {expected} public key")]
    IssuerKind { expected: &'static str, iss: String },
    /// The ed25519 signature does not verify against `iss`.
    #[error("jwt signature does not verify against its issuer")]
    Signature,
    /// The signing key is of the wrong kind for this claim.
    #[error("signing key is not an {expected} key with a seed")]
    SignerKind { expected: &'static str },
    /// The signing key is public only: it has no seed to sign with.
    #[error("signing key has no seed")]
    Sign,
    /// The signing key is not a valid nkey seed, or its seed and public key disagree.
    #[error("signing key is not a valid nkey seed")]
    InvalidSeed,
    /// The ed25519 backend failed to sign.
    #[error("ed25519 signing failed")]
    SignFailed,
    /// The claims could not be serialized.
    #[error("claims could not be serialized to json")]
    Serialize,
    /// The request carries the xkey header but this service has no xkey configured.
    #[error(
        "request is sealed (Nats-Server-Xkey header present) but no service xkey is configured"
    )]
    SealedButNoServiceXkey,
    /// A service xkey is configured but the request arrived as a plaintext JWT.
    #[error("request is plaintext but a service xkey is configured")]
    PlaintextButServiceXkey,
    /// A service xkey is configured, the payload is not a JWT, and the header is missing.
    #[error("request is not a plaintext jwt and has no Nats-Server-Xkey header")]
    MissingXkeyHeader,
    /// The header value is not a curve public key.
    #[error("Nats-Server-Xkey header {value:?} is not a curve public key")]
    InvalidXkeyHeader { value: String },
    /// The sealed payload could not be opened with the service xkey and the header's sender key.
    #[error("sealed request could not be opened with the service xkey")]
    Open,
    /// The (opened) payload is not UTF-8 text.
    #[error("request payload is not utf-8 text")]
    NotUtf8,
    /// The request `aud` is not `nats-authorization-request`.
    #[error("request audience {found:?} is not \"nats-authorization-request\"")]
    Audience { found: String },
    /// The request has no `exp`; nats-server always sets one.
    #[error("request has no expiry")]
    MissingExpiry,
    /// The request `exp` has passed (beyond the leeway).
    #[error("request expired at {exp}, now is {now} (leeway {leeway}s)")]
    Expired { exp: u64, now: u64, leeway: u64 },
    /// The request `nbf` is in the future (beyond the leeway).
    #[error("request is not valid before {nbf}, now is {now} (leeway {leeway}s)")]
    NotYetValid { nbf: u64, now: u64, leeway: u64 },
    /// The request issuer is not the server id it claims to come from.
    #[error("request issuer {iss:?} is not its server_id.id {server_id:?}")]
    IssuerNotServer { iss: String, server_id: String },
    /// The request `user_nkey` is not a user public key.
    #[error("request user_nkey {found:?} is not a user public key")]
    UserNkey { found: String },
    /// The signed `server_id.xkey` differs from the unsigned header it was sealed with.
    #[error(
        "request server_id.xkey {signed:?} does not match the Nats-Server-Xkey header {header:?}"
    )]
    XkeyMismatch { signed: String, header: String },
    /// A response carries neither a user JWT nor an error text.
    #[error("response has neither a user jwt nor an error")]
    EmptyOutcome,
    /// The request was sealed but no service xkey was given to seal the response.
    #[error("request was sealed but no service xkey was given to seal the response")]
    ResponseNeedsServiceXkey,
    /// Sealing the response failed.
    #[error("response could not be sealed to the server xkey")]
    Seal,
}

/// An authorization request that passed every check in [`open_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The verified request claims.
    pub claims: Claims<AuthorizationRequest>,
    /// The server's curve public key when the request was sealed; the response is sealed to it.
    pub server_xkey: Option<String>,
}

/// Opens, decodes and validates one message received on [`AUTH_REQUEST_SUBJECT`].
///
/// `xkey_header` is the [`XKEY_HEADER`] value; `service_xkey` the service's curve seed when
/// encryption is configured. A mismatch between the two is refused rather than guessed at.
/// Beyond the JWT checks of [`decode`] it requires `aud == REQUEST_AUDIENCE`, an `exp` not
/// passed by more than `leeway_secs`, `iss == server_id.id`, a user `user_nkey`, and for a
/// sealed request `server_id.xkey` equal to the header.
pub fn open_request(
    payload: &[u8],
    xkey_header: Option<&str>,
    service_xkey: Option<&XKey>,
    now: u64,
    leeway_secs: u64,
) -> Result<Request, JwtError> {
    open_request_with(
        payload,
        xkey_header,
        service_xkey,
        now,
        leeway_secs,
        SignatureCheck::Verify,
    )
}

/// [`open_request`], checking the request's signature as `check` says.
///
/// [`SignatureCheck::Shape`] runs every check but the ed25519 verification (~30 µs of the
/// ~60 µs a request costs the service). What that verification proves is weak: nats-server
/// signs requests with a server key generated at every start and named by the request itself,
/// so anyone able to publish a request could sign it with a key of their own. What keeps
/// forged requests out is that nobody may publish on [`AUTH_REQUEST_SUBJECT`] (nats-server
/// denies it to every user of the callout account); SECURITY.md has the whole argument.
pub fn open_request_with(
    payload: &[u8],
    xkey_header: Option<&str>,
    service_xkey: Option<&XKey>,
    now: u64,
    leeway_secs: u64,
    check: SignatureCheck,
) -> Result<Request, JwtError> {
    let max = MAX_REQUEST_SIZE + SEAL_OVERHEAD;
    if payload.len() > max {
        return Err(JwtError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    // Go's callout library uses the same test: every plaintext request starts with the header.
    let plaintext = payload.starts_with(b"eyJ");
    // A plaintext request is decoded where it lies; only an opened one needs its own buffer.
    let (token_bytes, server_xkey): (Cow<'_, [u8]>, _) = match (service_xkey, xkey_header) {
        (None, Some(_)) => return Err(JwtError::SealedButNoServiceXkey),
        (None, None) => (Cow::Borrowed(payload), None),
        (Some(_), _) if plaintext => return Err(JwtError::PlaintextButServiceXkey),
        (Some(_), None) => return Err(JwtError::MissingXkeyHeader),
        (Some(service), Some(header)) => {
            let invalid = || JwtError::InvalidXkeyHeader {
                value: codec::echo(header),
            };
            // Every encoded public key is 56 characters; anything else is not worth decoding.
            if header.len() != PUBLIC_KEY_LEN {
                return Err(invalid());
            }
            XKey::from_public_key(header).map_err(|_| invalid())?;
            let opened = boxes::open(service, payload, header).ok_or(JwtError::Open)?;
            (Cow::Owned(opened), Some(header.to_owned()))
        }
    };
    let token = std::str::from_utf8(&token_bytes).map_err(|_| JwtError::NotUtf8)?;
    let claims = codec::decode_at_most::<AuthorizationRequest>(token, MAX_REQUEST_SIZE, check)?;

    let base = &claims.base;
    if base.aud != REQUEST_AUDIENCE {
        return Err(JwtError::Audience {
            found: codec::echo(&base.aud),
        });
    }
    if base.exp == 0 {
        return Err(JwtError::MissingExpiry);
    }
    if now > base.exp.saturating_add(leeway_secs) {
        return Err(JwtError::Expired {
            exp: base.exp,
            now,
            leeway: leeway_secs,
        });
    }
    if base.nbf != 0 && base.nbf > now.saturating_add(leeway_secs) {
        return Err(JwtError::NotYetValid {
            nbf: base.nbf,
            now,
            leeway: leeway_secs,
        });
    }
    let server = &claims.nats.server_id;
    if base.iss != server.id {
        return Err(JwtError::IssuerNotServer {
            iss: base.iss.clone(),
            server_id: codec::echo(&server.id),
        });
    }
    if !codec::is_public_key_of(&claims.nats.user_nkey, &KeyPairType::User) {
        return Err(JwtError::UserNkey {
            found: codec::echo(&claims.nats.user_nkey),
        });
    }
    if let Some(header) = &server_xkey
        && server.xkey != *header
    {
        return Err(JwtError::XkeyMismatch {
            signed: codec::echo(&server.xkey),
            header: codec::echo(header),
        });
    }
    Ok(Request {
        claims,
        server_xkey,
    })
}

/// Builds the signed response to `req`: `Ok(user_jwt)` admits, `Err(reason)` refuses.
///
/// `sub` is the request's `user_nkey` and `aud` its server id. The JWT is sealed to the
/// server's xkey with `service_xkey` when the request was sealed, else returned as plain bytes.
pub fn encode_response(
    req: &Request,
    outcome: Result<&str, &str>,
    signer: &Signer,
    service_xkey: Option<&XKey>,
    now: u64,
) -> Result<Vec<u8>, JwtError> {
    encode_response_as(req, outcome, signer, None, service_xkey, now)
}

/// [`encode_response`] with `nats.issuer_account` set: the callout account's public key when
/// `signer` is one of its signing keys (operator mode).
pub fn encode_response_as(
    req: &Request,
    outcome: Result<&str, &str>,
    signer: &Signer,
    issuer_account: Option<&str>,
    service_xkey: Option<&XKey>,
    now: u64,
) -> Result<Vec<u8>, JwtError> {
    let mut nats = AuthorizationResponse::default();
    if let Some(account) = issuer_account {
        account.clone_into(&mut nats.issuer_account);
    }
    match outcome {
        Ok(jwt) if !jwt.is_empty() => jwt.clone_into(&mut nats.jwt),
        Err(error) if !error.is_empty() => error.clone_into(&mut nats.error),
        _ => return Err(JwtError::EmptyOutcome),
    }
    let mut claims = Claims::with_subject(req.claims.nats.user_nkey.clone(), nats);
    req.claims
        .nats
        .server_id
        .id
        .clone_into(&mut claims.base.aud);
    let token = encode(&mut claims, signer, now)?;

    let Some(server_xkey) = &req.server_xkey else {
        return Ok(token.into_bytes());
    };
    let service = service_xkey.ok_or(JwtError::ResponseNeedsServiceXkey)?;
    XKey::from_public_key(server_xkey).map_err(|_| JwtError::InvalidXkeyHeader {
        value: codec::echo(server_xkey),
    })?;
    boxes::seal(service, token.as_bytes(), server_xkey).ok_or(JwtError::Seal)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
