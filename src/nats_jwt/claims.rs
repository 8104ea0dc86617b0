//! Serde mirrors of the Go `nats-io/jwt/v2` claim types the callout exchanges with nats-server.
//!
//! Field names and order follow Go exactly. Go's `omitempty` becomes `skip_serializing_if`, and
//! every struct carries `#[serde(default)]` so requests from any server version parse even when
//! fields are missing. Empty permission lists are never written: an empty-but-present `allow`
//! list means "deny everything" to the server.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The JWT audience nats-server puts on every authorization request.
pub const REQUEST_AUDIENCE: &str = "nats-authorization-request";

/// The only claim version this module speaks; the server verifies anything else the v1 way.
pub const CLAIM_VERSION: i64 = 2;

/// `nats.type` of an authorization request.
pub const REQUEST_TYPE: &str = "authorization_request";
/// `nats.type` of an authorization response.
pub const RESPONSE_TYPE: &str = "authorization_response";
/// `nats.type` of a user JWT.
pub const USER_TYPE: &str = "user";

/// The registered JWT claims, in Go's field order (the order matters for the `jti` hash).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClaimsData {
    /// Audience: request literal, server id for responses, account name for config-mode users.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aud: String,
    /// Expiry, unix seconds; 0 = none.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub exp: u64,
    /// Hash id computed at encode time.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// Issued-at, unix seconds.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub iat: u64,
    /// Issuer public nkey; set by the encoder from the signing key.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// Display name; for users it becomes the connection's reported user name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Not-before, unix seconds; 0 = none.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub nbf: u64,
    /// Subject public nkey.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sub: String,
}

/// A complete NATS JWT body: the registered claims at top level plus the typed `nats` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Claims<T> {
    /// Registered claims (`aud`, `exp`, `jti`, `iat`, `iss`, `name`, `nbf`, `sub`).
    #[serde(flatten)]
    pub base: ClaimsData,
    /// The NATS-specific part.
    pub nats: T,
}

/// Identity of the server that sent a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerId {
    /// `server_name`, or the server public key when unnamed.
    pub name: String,
    /// Listen host from the server config.
    pub host: String,
    /// The server's public nkey; the response `aud` must equal it.
    pub id: String,
    /// Server version string.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Cluster name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// `server_tags`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The server's curve public key; present only when requests are encrypted.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub xkey: String,
}

/// What the server knows about the connecting client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientInformation {
    /// Client IP address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Connection id (cid).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub id: u64,
    /// Raw auth user: nkey, username, JWT subject, or `[REDACTED]` for a token.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// CONNECT `name`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Tags of the sentinel JWT (operator mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `name` of the sentinel JWT (operator mode).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name_tag: String,
    /// `Client`, `Leafnode`, `JetStream` or `Account`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `nats`, `websocket` or `mqtt`.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub client_type: String,
    /// MQTT client id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mqtt_id: String,
    /// The INFO nonce, present only if the client sent `sig`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nonce: String,
}

/// The credential-bearing fields of the client's CONNECT.
///
/// `Debug` is written by hand so the token, password, signature and JWT never reach a log.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectOptions {
    /// Client JWT (sentinel, or MQTT password that looks like a JWT).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwt: String,
    /// Client nkey.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nkey: String,
    /// Client signature over the INFO nonce.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sig: String,
    /// Token; where an OIDC access token normally travels.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_token: String,
    /// Username.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Password, in plaintext.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pass: String,
    /// Client name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Client library language.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub lang: String,
    /// Client library version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Protocol level; Go writes it even when 0.
    pub protocol: i64,
}

/// TLS details of the client connection, present only after a completed handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientTls {
    /// TLS version, e.g. `1.3`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Cipher suite name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cipher: String,
    /// PEM peer certificates, only when there are no verified chains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<String>,
    /// Verified chains of PEM certificates; `[0][0]` is the client leaf.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verified_chains: Vec<Vec<String>>,
    /// SNI server name, when the server reports it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server_name: String,
}

/// The `nats` object of an authorization request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorizationRequest {
    /// The requesting server.
    pub server_id: ServerId,
    /// Fresh per-callout user key; the response and user JWT `sub` must equal it.
    pub user_nkey: String,
    /// What the server knows about the client.
    pub client_info: ClientInformation,
    /// The client's CONNECT credentials.
    pub connect_opts: ConnectOptions,
    /// TLS details, when the client used TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTls>,
    /// Defined by Go but never set by the server.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub request_nonce: String,
    /// Generic tags; never set by the server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `authorization_request`.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub claim_type: String,
    /// Claim version, 2.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub version: i64,
}

/// The `nats` object of an authorization response; exactly one of `jwt` and `error` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorizationResponse {
    /// The minted user JWT, when the client is admitted.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwt: String,
    /// Why the client is refused; the server only logs it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Account of the signing key (operator mode with signing keys only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    /// `authorization_response`.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub claim_type: String,
    /// Claim version, 2.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub version: i64,
}

/// A publish or subscribe permission; empty lists are omitted, never written as `[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Permission {
    /// Subjects allowed; absent means everything not denied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Subjects denied; deny wins over allow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// `allow_responses`: permission to publish to reply subjects of received requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsePermission {
    /// Maximum replies per request; 0 means the server default of 1.
    pub max: i64,
    /// How long a reply subject stays open, in nanoseconds (Go `time.Duration`); 0 = 2 minutes.
    pub ttl: i64,
}

/// A daily connect window, `HH:MM:SS` in `times_location`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeRange {
    /// Window start.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub start: String,
    /// Window end.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub end: String,
}

/// The `nats` object of a user JWT.
///
/// [`User::new`] (and `Default`) sets `subs`/`data`/`payload` to -1 (unlimited), as Go's
/// `NewUserClaims` does; a value of 0 is omitted, which scoped signing keys require. A field
/// missing on decode reads as 0, matching Go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    /// Publish permissions.
    #[serde(rename = "pub", skip_serializing_if = "Permission::is_empty")]
    pub publish: Permission,
    /// Subscribe permissions; entries may be `"subject queue"`.
    #[serde(rename = "sub", skip_serializing_if = "Permission::is_empty")]
    pub subscribe: Permission,
    /// Response permission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
    /// Source CIDRs (not enforced for callout users).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub src: Vec<String>,
    /// Connect windows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<TimeRange>,
    /// IANA zone for `times`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub times_location: String,
    /// Max subscriptions; -1 unlimited.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub subs: i64,
    /// Max data bytes; -1 unlimited.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub data: i64,
    /// Max payload bytes; -1 unlimited.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub payload: i64,
    /// Skip the nonce check (irrelevant for callout users).
    #[serde(skip_serializing_if = "is_false")]
    pub bearer_token: bool,
    /// Must arrive through a trusted proxy.
    #[serde(skip_serializing_if = "is_false")]
    pub proxy_required: bool,
    /// `STANDARD`, `WEBSOCKET`, `LEAFNODE`, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_connection_types: Vec<String>,
    /// Account of the signing key (operator mode only; config mode rejects it).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    /// Lower-case user tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `user`.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub claim_type: String,
    /// Claim version, 2.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub version: i64,
}

/// Which kind of nkey may issue a claim kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuerKind {
    /// A server key (`N...`): authorization requests.
    Server,
    /// An account key (`A...`): responses and user JWTs.
    Account,
    /// An operator key (`O...`): operator and account JWTs.
    Operator,
}

/// A type that can be the `nats` object of a NATS JWT.
pub trait NatsClaim: Default {
    /// The `nats.type` value of this claim kind.
    const TYPE: &'static str;
    /// Which kind of key may sign it.
    const ISSUER: IssuerKind;
    /// The `nats.type` found in the claim.
    fn claim_type(&self) -> &str;
    /// The `nats.version` found in the claim.
    fn version(&self) -> i64;
    /// Sets `nats.type` and `nats.version` for encoding.
    fn stamp(&mut self);
}

/// Implements [`NatsClaim`] for a claim body with `claim_type` and `version` fields.
macro_rules! nats_claim {
    ($body:ty, $type_name:expr, $issuer:expr) => {
        impl NatsClaim for $body {
            const TYPE: &'static str = $type_name;
            const ISSUER: IssuerKind = $issuer;

            fn claim_type(&self) -> &str {
                &self.claim_type
            }

            fn version(&self) -> i64 {
                self.version
            }

            fn stamp(&mut self) {
                $type_name.clone_into(&mut self.claim_type);
                self.version = CLAIM_VERSION;
            }
        }
    };
}
pub(super) use nats_claim;

nats_claim!(AuthorizationRequest, REQUEST_TYPE, IssuerKind::Server);
nats_claim!(AuthorizationResponse, RESPONSE_TYPE, IssuerKind::Account);
nats_claim!(User, USER_TYPE, IssuerKind::Account);

impl<T> Claims<T> {
    /// Claims with the given subject and `nats` object; the encoder fills `iss`, `iat`, `jti`.
    pub fn with_subject(sub: impl Into<String>, nats: T) -> Self {
        Claims {
            base: ClaimsData {
                sub: sub.into(),
                ..ClaimsData::default()
            },
            nats,
        }
    }
}

impl Claims<User> {
    /// User claims for `sub` (the request's `user_nkey`), placed into account `aud`.
    ///
    /// `name` becomes the connection's reported user name (empty = omitted); `exp` is unix
    /// seconds (0 = no expiry, which the callout should never mint).
    pub fn new(sub: &str, aud: &str, name: &str, exp: u64) -> Self {
        Claims {
            base: ClaimsData {
                aud: aud.to_owned(),
                exp,
                name: name.to_owned(),
                sub: sub.to_owned(),
                ..ClaimsData::default()
            },
            nats: User::new(),
        }
    }
}

impl Permission {
    /// Whether both lists are empty, in which case the whole object is omitted.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

impl User {
    /// A user with no permissions (account defaults apply) and unlimited `subs`/`data`/`payload`.
    pub fn new() -> Self {
        User {
            publish: Permission::default(),
            subscribe: Permission::default(),
            resp: None,
            src: Vec::new(),
            times: Vec::new(),
            times_location: String::new(),
            subs: -1,
            data: -1,
            payload: -1,
            bearer_token: false,
            proxy_required: false,
            allowed_connection_types: Vec::new(),
            issuer_account: String::new(),
            tags: Vec::new(),
            claim_type: USER_TYPE.to_owned(),
            version: CLAIM_VERSION,
        }
    }
}

impl Default for User {
    fn default() -> Self {
        User::new()
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("jwt", &Redacted(&self.jwt))
            .field("nkey", &self.nkey)
            .field("sig", &Redacted(&self.sig))
            .field("auth_token", &Redacted(&self.auth_token))
            .field("user", &self.user)
            .field("pass", &Redacted(&self.pass))
            .field("name", &self.name)
            .field("lang", &self.lang)
            .field("version", &self.version)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// Shows whether a secret is present without showing it.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

pub(super) fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

pub(super) fn is_false(v: &bool) -> bool {
    !*v
}
