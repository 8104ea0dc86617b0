//! The callout decision: one authorization request in, one signed answer out.
//!
//! [`Authorizer::handle`] opens and checks the server's request, takes the client's token,
//! verifies it, evaluates the policies and mints a user JWT scoped to exactly what they grant —
//! or answers with an error. It does no NATS I/O (the service loop does), and reads no clock:
//! `now` is a parameter. Each answer carries its [`AuditEvent`], which the service logs
//! ([`AuditEvent::log`]) once it has sent the answer and knows whether that was in time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tracing::{info, warn};

use crate::accounts::{AccountsError, Mode, Signers, UserIssuer};
use crate::deny::DenyReason;
use crate::identity::Identity;
use crate::nats_jwt::{
    self, Claims, JwtError, Permission, Request, ResponsePermission, SignatureCheck, User,
};
use crate::oidc::{TokenDigest, Verification, Verifier, token_digest};
use crate::policy::{ConnectionType, Grant, PolicySet};

/// Keys and limits of the callout.
pub struct CalloutSettings {
    /// The issuer account key pair (`SA...`): signs responses, and in config mode user JWTs.
    pub issuer: crate::nats_jwt::Signer,
    /// The mode and every signing key, for `Authorizer::with_signers`.
    pub signers: Signers,
    /// The service's curve key (`SX...`), when the server encrypts requests.
    pub xkey: Option<nkeys::XKey>,
    /// Upper bound on the lifetime of a minted user JWT.
    pub max_ttl: Duration,
    /// How many requests are handled at once.
    pub max_concurrency: usize,
    /// How many more may wait for a slot before requests are refused as `overloaded`.
    pub max_queued: usize,
    /// How long a request may wait for a slot before it is refused as `overloaded`.
    pub queue_timeout: Duration,
    /// Clock skew tolerated on the request's `exp`.
    pub request_leeway: Duration,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How many verified tokens are remembered by SHA-256 (0 disables the cache).
    pub token_cache_size: u64,
    /// nats-server's `authorization.timeout`, as the operator configured it.
    pub server_timeout: Duration,
    /// How long a request waits for a key fetch it needs; below `server_timeout`.
    pub key_wait: Duration,
    /// Whether each request's ed25519 signature is verified (`callout.verify_request_signature`).
    pub request_signature: SignatureCheck,
}

impl fmt::Debug for CalloutSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalloutSettings")
            .field("issuer", &self.issuer.public_key())
            .field("signers", &self.signers)
            .field("xkey", &self.xkey.as_ref().map(nkeys::XKey::public_key))
            .field("max_ttl", &self.max_ttl)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_queued", &self.max_queued)
            .field("queue_timeout", &self.queue_timeout)
            .field("request_leeway", &self.request_leeway)
            .field("drain_timeout", &self.drain_timeout)
            .field("token_cache_size", &self.token_cache_size)
            .field("server_timeout", &self.server_timeout)
            .field("key_wait", &self.key_wait)
            .field("request_signature", &self.request_signature)
            .finish()
    }
}

/// The longest user name we put into a minted JWT; longer display names are cut.
const MAX_NAME_LEN: usize = 256;

/// Everything a decision needs, shared by all request tasks.
pub struct Authorizer {
    /// Swapped as a whole when a credential file changes ([`crate::rotate`]); every request
    /// answers with the keys current when it arrived.
    keys: ArcSwap<Keys>,
    verifier: Arc<Verifier>,
    /// Swapped as a whole on reload; every request evaluates the set current when it started.
    policies: ArcSwap<PolicySet>,
    request_leeway_secs: u64,
    request_signature: SignatureCheck,
}

/// The keys requests are opened and answered with, and the ones the last rotation replaced.
///
/// nats-server reads its `auth_callout` settings once per request, so a request that arrives
/// while the server still has the old key must be answered with the old key. The service can
/// tell which: the request is sealed to one curve key (only that key opens it, and the server
/// opens the answer with the same key), and in config mode its `sub` names the issuer the
/// server checks the answer against.
#[derive(Clone)]
pub struct Keys {
    signers: Signers,
    /// Config mode: the issuer the last rotation replaced.
    previous_issuer: Option<Signers>,
    xkey: Option<nkeys::XKey>,
    /// The curve key the last rotation replaced.
    previous_xkey: Option<nkeys::XKey>,
}

impl Keys {
    /// The signers in use.
    pub fn signers(&self) -> &Signers {
        &self.signers
    }

    /// The public curve key in use, if requests are sealed.
    pub fn xkey_public(&self) -> Option<String> {
        self.xkey.as_ref().map(nkeys::XKey::public_key)
    }

    /// The signers for `request`: in config mode, the previous issuer when the request names it
    /// (its server has not been reloaded yet); otherwise the current ones.
    fn signers_for(&self, request: &Request) -> &Signers {
        let sub = request.claims.base.sub.as_str();
        match &self.previous_issuer {
            Some(previous)
                if self.signers.mode() == Mode::Config
                    && self.signers.response().key().public_key() != sub
                    && previous.response().key().public_key() == sub =>
            {
                previous
            }
            _ => &self.signers,
        }
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let public = |x: &Option<nkeys::XKey>| x.as_ref().map(nkeys::XKey::public_key);
        f.debug_struct("Keys")
            .field("signers", &self.signers)
            .field("previous_issuer", &self.previous_issuer)
            .field("xkey", &public(&self.xkey))
            .field("previous_xkey", &public(&self.previous_xkey))
            .finish()
    }
}

/// What [`Authorizer::handle`] decided.
#[derive(Debug)]
pub enum Handled {
    /// Send `body` to the request's reply subject.
    Respond {
        /// The (possibly sealed) response JWT.
        body: Vec<u8>,
        /// Whether the client was admitted.
        allowed: bool,
        /// The decision's audit event, not logged yet: see [`AuditEvent::log`].
        audit: Box<AuditEvent>,
        /// How long after the request arrived nats-server waits for the answer
        /// ([`answer_within`]); an answer sent later reaches nobody.
        deadline: Duration,
    },
    /// Send nothing: the request itself is not acceptable (garbage, forged, expired). The server
    /// times the client out; answering would mean signing for a request we cannot trust.
    Drop(JwtError),
}

/// One decision, as logged on target `audit` and, when configured, published to NATS as JSON.
///
/// Holds no token: `token` is a short one-way fingerprint for correlating events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// When the decision was made (unix seconds).
    pub time: u64,
    /// Unique per decision: `{request_id}.{user_nkey}`. The `jti` alone is not: nats-server
    /// hashes only the request's standard claims (times, issuer, audience) into it, so every
    /// request one server sends in the same second shares it; the user key is fresh per
    /// connection attempt.
    pub id: String,
    /// The authorization request's `jti`; shared by the requests of one server and second.
    pub request_id: String,
    /// The id of the nats-server that asked.
    pub server_id: String,
    /// The name of the nats-server that asked.
    pub server_name: String,
    /// The client's address as the server saw it.
    pub client_host: String,
    /// The client's connection id on that server: nats-server's `cid`, which prefixes its log
    /// lines about the connection (`cid:7`).
    pub client_id: u64,
    /// The user key the server generated for this connection; the minted JWT's subject and
    /// what an operator revokes in operator mode.
    pub user_nkey: String,
    /// `allow`, `deny`, or `late`: the answer was sent after nats-server's deadline, so the
    /// server had already refused the client whatever was decided (`reason` is still set when
    /// the decision was a refusal).
    pub outcome: &'static str,
    /// How far past nats-server's deadline the answer was sent, in milliseconds; `late` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_ms: Option<u64>,
    /// Why the client was refused; absent when admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
    /// Details of the refusal, for operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The identity provider that verified the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Tenant id (`tid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The identity's `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Object id (`oid`) of the user or service principal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// Client application id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// `user` or `application`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Display name from the token; informational only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Fingerprint of the token (first 8 bytes of its SHA-256, hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Names of the policy rules that matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// The account the client was placed in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Subjects the client may publish to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Subjects the client may not publish to despite `publish`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish_deny: Vec<String>,
    /// Subjects the client may subscribe to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    /// Subjects the client may not subscribe to despite `subscribe`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscribe_deny: Vec<String>,
    /// When the minted credentials expire (unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Whether the token's signature check was answered from the verified-token cache.
    #[serde(skip_serializing_if = "is_false")]
    pub cached: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Outcomes of [`AuditEvent::outcome`].
const ALLOW: &str = "allow";
const DENY: &str = "deny";
const LATE: &str = "late";

/// The list fields of an audit log line. Logged as JSON arrays in text (`JsonList`); the
/// JSON log format turns them into arrays (`telemetry`).
pub const AUDIT_LIST_FIELDS: [&str; 5] = [
    "rules",
    "publish",
    "publish_deny",
    "subscribe",
    "subscribe_deny",
];

impl AuditEvent {
    /// Marks the answer as sent `by` past nats-server's deadline: the server refused the client
    /// on its own, whatever this decision said.
    pub fn mark_late(&mut self, by: Duration) {
        self.outcome = LATE;
        self.late_ms = Some(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
    }

    /// Whether the answer was sent too late to count.
    pub fn is_late(&self) -> bool {
        self.outcome == LATE
    }

    /// Logs the event once on target `audit`: `client admitted`, `client refused`, or, for an
    /// answer past the deadline, a warning that nats-server refused the client.
    pub fn log(&self) {
        log_audit(self);
    }
}

/// How long after a request's arrival nats-server waits for its answer.
///
/// Taken from the request's own claims, not from configuration: nats-server stamps `iat` with
/// the time it asks and `exp` with that time plus its `authorization.timeout` (its callout
/// deadline), both in whole seconds on its own clock. `exp - iat` is therefore its timeout
/// whatever the skew between its clock and ours, and is counted from the arrival here (which
/// trails the stamp by the transit time). Every request has an `exp` ([`nats_jwt::open_request`]
/// refuses one without); a request without `iat` is given the time left until `exp` on our
/// clock. A sub-second timeout truncates to 0 s and is taken as 1 s, the bound it rounds to.
pub fn answer_within(request: &Request, now: u64) -> Duration {
    let base = &request.claims.base;
    let start = if base.iat == 0 { now } else { base.iat };
    Duration::from_secs(base.exp.saturating_sub(start).max(1))
}

impl Authorizer {
    /// Builds a config-mode authorizer. `issuer` signs user JWTs and responses; `xkey` opens
    /// sealed requests. [`Authorizer::with_signers`] switches to other keys (operator mode).
    pub fn new(
        issuer: nats_jwt::Signer,
        xkey: Option<nkeys::XKey>,
        verifier: Arc<Verifier>,
        policies: PolicySet,
        request_leeway_secs: u64,
    ) -> Self {
        Self {
            keys: ArcSwap::from_pointee(Keys {
                signers: Signers::config(issuer),
                previous_issuer: None,
                xkey,
                previous_xkey: None,
            }),
            verifier,
            policies: ArcSwap::from_pointee(policies),
            request_leeway_secs,
            request_signature: SignatureCheck::Shape,
        }
    }

    /// Builds the authorizer a configuration describes. The verifier's token cache is the
    /// caller's: see [`Verifier::with_token_cache`].
    pub fn from_config(
        callout: &CalloutSettings,
        policies: PolicySet,
        verifier: Arc<Verifier>,
    ) -> Self {
        Self::new(
            callout.issuer.clone(),
            callout.xkey.clone(),
            verifier,
            policies,
            callout.request_leeway.as_secs(),
        )
        .with_signers(callout.signers.clone())
        .with_request_signature(callout.request_signature)
    }

    /// Checks each request's signature as `check` says; [`Authorizer::new`] checks its shape
    /// only, as `callout.verify_request_signature` does by default.
    #[must_use]
    pub fn with_request_signature(mut self, check: SignatureCheck) -> Self {
        self.request_signature = check;
        self
    }

    /// Signs with `signers` instead: operator mode, or config mode with another issuer.
    #[must_use]
    pub fn with_signers(self, signers: Signers) -> Self {
        self.keys.rcu(|keys| Keys {
            signers: signers.clone(),
            ..Keys::clone(keys)
        });
        self
    }

    /// The keys in use.
    pub fn keys(&self) -> Arc<Keys> {
        self.keys.load_full()
    }

    /// Signs responses (and, in config mode, user JWTs) with `issuer` from now on. In config
    /// mode the replaced issuer is kept for requests that still name it. In operator mode
    /// `issuer` must be the callout account's key or a signing key of it.
    pub fn rotate_issuer(&self, issuer: nats_jwt::Signer) -> Result<(), AccountsError> {
        let current = self.keys.load_full();
        let keys = match current.signers.mode() {
            Mode::Config => {
                if issuer.kind() != nkeys::KeyPairType::Account {
                    return Err(AccountsError::NotAnAccountSeed {
                        account: "the callout issuer".to_owned(),
                    });
                }
                Keys {
                    signers: Signers::config(issuer),
                    previous_issuer: Some(current.signers.clone()),
                    ..Keys::clone(&current)
                }
            }
            Mode::Operator => Keys {
                signers: current.signers.with_response_key(issuer)?,
                ..Keys::clone(&current)
            },
        };
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Opens and seals with `xkey` from now on; requests sealed to the replaced key are still
    /// opened and answered with it.
    pub fn rotate_xkey(&self, xkey: nkeys::XKey) {
        self.keys.rcu(|keys| Keys {
            xkey: Some(xkey.clone()),
            previous_xkey: keys.xkey.clone(),
            ..Keys::clone(keys)
        });
    }

    /// Operator mode: mints users into the account policies call `account` with `key` from now
    /// on. The new key must already be in the account's JWT.
    pub fn rotate_account_key(
        &self,
        account: &str,
        key: nats_jwt::Signer,
    ) -> Result<(), AccountsError> {
        let current = self.keys.load_full();
        let keys = Keys {
            signers: current.signers.with_target_key(account, key)?,
            ..Keys::clone(&current)
        };
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// The token verifier, for warming keys and background refresh.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Replaces the policies; requests already being evaluated finish with the old set. Nothing
    /// else needs resetting: only token verifications are cached, never what policies granted.
    pub fn replace_policies(&self, policies: PolicySet) {
        self.policies.store(Arc::new(policies));
    }

    /// Handles one request message. `xkey_header` is the `Nats-Server-Xkey` header, if any.
    pub async fn handle(&self, payload: &[u8], xkey_header: Option<&str>, now: u64) -> Handled {
        let keys = self.keys.load_full();
        let (request, xkey) = match self.open(&keys, payload, xkey_header, now) {
            Ok(opened) => opened,
            Err(dropped) => return dropped,
        };
        let signers = keys.signers_for(&request);
        let decision = self.decide(signers, &request, now).await;
        Self::answer(signers, xkey, &request, decision, now)
    }

    /// Refuses one request message with `reason` without looking at the client's token: the
    /// answer for requests the service cannot take on now. The request is still opened and
    /// checked, so nothing is signed for bytes that are not a request.
    pub fn refuse(
        &self,
        payload: &[u8],
        xkey_header: Option<&str>,
        reason: DenyReason,
        now: u64,
    ) -> Handled {
        let keys = self.keys.load_full();
        let (request, xkey) = match self.open(&keys, payload, xkey_header, now) {
            Ok(opened) => opened,
            Err(dropped) => return dropped,
        };
        let denial = Denial::new(reason, "refused before the token was looked at");
        Self::answer(keys.signers_for(&request), xkey, &request, Err(denial), now)
    }

    /// Opens the request with the current curve key or, when it was sealed to the one the last
    /// rotation replaced, with that; returns the key that opened it, which seals the answer.
    fn open<'k>(
        &self,
        keys: &'k Keys,
        payload: &[u8],
        xkey_header: Option<&str>,
        now: u64,
    ) -> Result<(Request, Option<&'k nkeys::XKey>), Handled> {
        let open = |xkey: Option<&'k nkeys::XKey>| {
            nats_jwt::open_request_with(
                payload,
                xkey_header,
                xkey,
                now,
                self.request_leeway_secs,
                self.request_signature,
            )
            .map(|request| (request, xkey))
        };
        let opened = match (open(keys.xkey.as_ref()), &keys.previous_xkey) {
            (Err(JwtError::Open), Some(previous)) => open(Some(previous)),
            (opened, _) => opened,
        };
        opened.map_err(|err| {
            warn!(target: "audit", outcome = "dropped", error = %err, "authorization request refused");
            Handled::Drop(err)
        })
    }

    fn answer(
        signers: &Signers,
        xkey: Option<&nkeys::XKey>,
        request: &Request,
        decision: Result<Minted, Denial>,
        now: u64,
    ) -> Handled {
        let (outcome, allowed) = match &decision {
            Ok(minted) => (Ok(minted.jwt.as_str()), true),
            // The error text reaches only the server log and the AUTH.ERR advisory in the callout
            // account, never the client; the stable code helps operators correlate.
            Err(denial) => (Err(denial.reason.code()), false),
        };
        let audit = audit(request, &decision, now);
        let deadline = answer_within(request, now);
        let signer = signers.response();
        match nats_jwt::encode_response_as(
            request,
            outcome,
            signer.key(),
            signer.issuer_account(),
            xkey,
            now,
        ) {
            Ok(body) => Handled::Respond {
                body,
                allowed,
                audit: Box::new(audit),
                deadline,
            },
            Err(err) => {
                warn!(error = %err, "could not encode the authorization response");
                Handled::Drop(err)
            }
        }
    }

    async fn decide(
        &self,
        signers: &Signers,
        request: &Request,
        now: u64,
    ) -> Result<Minted, Denial> {
        let opts = &request.claims.nats.connect_opts;
        let token = [opts.auth_token.as_str(), opts.pass.as_str()]
            .into_iter()
            .find(|t| !t.is_empty())
            .ok_or_else(|| Denial::new(DenyReason::TokenMissing, "no auth_token or password"))?;
        let digest = token_digest(token);
        let token_hash = short_hash(&digest);
        let Verification { identity, cached } = self
            .verifier
            .verify_digested(token, &digest, now)
            .await
            .map_err(|refused| Denial {
                reason: refused.error.reason(),
                detail: refused.error.to_string(),
                token_hash: Some(token_hash.clone()),
                identity: None,
                provider: refused.provider,
            })?;
        let client = &request.claims.nats.client_info;
        let connection = ConnectionType::from_client_info(&client.kind, &client.client_type);
        let grant = match self.policies.load().evaluate_on(&identity, connection, now) {
            Ok(grant) => grant,
            Err(err) => {
                return Err(Denial {
                    reason: err.reason(),
                    detail: err.detail().to_owned(),
                    token_hash: Some(token_hash),
                    identity: Some(identity),
                    provider: None,
                });
            }
        };
        // The verifier accepts a token up to its leeway past `exp`, and the grant expires with
        // the token: minting now would give nats-server a user JWT it refuses as expired while
        // the audit trail said admitted. Refused here, where the JWT would be minted.
        if grant.expires_at <= now {
            return Err(Denial {
                reason: DenyReason::TokenExpired,
                detail: format!(
                    "token expired at {} (now {now}); credentials would expire at {}",
                    identity.expires_at, grant.expires_at
                ),
                token_hash: Some(token_hash),
                identity: Some(identity),
                provider: None,
            });
        }
        // Config validation makes sure every policy account has a key; a miss here means a
        // policy changed under us, and refusing is the only safe answer.
        let issuer = match signers.user_issuer(&grant.account) {
            Ok(issuer) => issuer,
            Err(err) => {
                return Err(Denial {
                    reason: DenyReason::Internal,
                    detail: err.to_string(),
                    token_hash: Some(token_hash),
                    identity: Some(identity),
                    provider: None,
                });
            }
        };
        match mint_user(
            &issuer,
            &request.claims.nats.user_nkey,
            &identity,
            &grant,
            now,
        ) {
            Ok(jwt) => Ok(Minted {
                jwt,
                identity,
                grant,
                cached,
                token_hash,
            }),
            Err(err) => Err(Denial {
                reason: DenyReason::Internal,
                detail: format!("could not mint the user JWT: {err}"),
                token_hash: Some(token_hash),
                identity: Some(identity),
                provider: None,
            }),
        }
    }
}

/// An admitted client.
struct Minted {
    jwt: String,
    identity: Identity,
    grant: Grant,
    /// Whether the token's signature check came from the verified-token cache.
    cached: bool,
    token_hash: String,
}

/// A refused client, with everything the audit log needs.
struct Denial {
    reason: DenyReason,
    detail: String,
    token_hash: Option<String>,
    identity: Option<Identity>,
    /// The provider the token was routed to, when no identity came out of it.
    provider: Option<Arc<str>>,
}

impl Denial {
    fn new(reason: DenyReason, detail: &str) -> Self {
        Self {
            reason,
            detail: detail.to_owned(),
            token_hash: None,
            identity: None,
            provider: None,
        }
    }
}

/// Builds and signs the user JWT for `grant` with `issuer` (see [`Signers::user_issuer`]).
///
/// A direction without allows gets `deny: [">"]`: a user JWT without explicit permissions would
/// get the whole account, so nothing is ever left open by omission.
pub fn mint_user(
    issuer: &UserIssuer<'_>,
    user_nkey: &str,
    identity: &Identity,
    grant: &Grant,
    now: u64,
) -> Result<String, MintError> {
    if grant.publish.allow.is_empty() && grant.subscribe.allow.is_empty() {
        return Err(MintError::NoPermissions);
    }
    let direction = |allow: &[String], deny: &[String]| {
        if allow.is_empty() {
            Permission {
                allow: Vec::new(),
                deny: vec![">".to_owned()],
            }
        } else {
            Permission {
                allow: allow.to_vec(),
                deny: deny.to_vec(),
            }
        }
    };
    let name = user_name(identity);
    let mut claims = Claims::<User>::new(user_nkey, issuer.audience, &name, grant.expires_at);
    if let Some(account) = issuer.issuer_account {
        account.clone_into(&mut claims.nats.issuer_account);
    }
    claims.nats.publish = direction(&grant.publish.allow, &grant.publish.deny);
    claims.nats.subscribe = direction(&grant.subscribe.allow, &grant.subscribe.deny);
    // Not enforced by nats-server for callout users (evaluation already refused other types);
    // declared so the JWT says what the policies allow.
    claims
        .nats
        .allowed_connection_types
        .clone_from(&grant.connection_types);
    claims.nats.resp = grant.responses.as_ref().map(|r| ResponsePermission {
        max: r.max,
        ttl: i64::try_from(r.ttl.as_nanos()).unwrap_or(i64::MAX),
    });
    Ok(nats_jwt::encode(&mut claims, issuer.key, now)?)
}

/// Why a user JWT could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The grant allows nothing in either direction; such a JWT would get the whole account.
    #[error("the grant allows neither publish nor subscribe")]
    NoPermissions,
    /// Encoding or signing failed.
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// The connection's user name as the server reports it: a display name, else the object id.
fn user_name(identity: &Identity) -> String {
    let name = identity
        .display_name
        .as_deref()
        .or(identity.object_id.as_deref())
        .unwrap_or(&identity.subject);
    name.chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_LEN)
        .collect()
}

/// A short, non-reversible fingerprint of a token for correlating log lines.
pub fn token_hash(token: &str) -> String {
    short_hash(&token_digest(token))
}

/// [`token_hash`] from an already computed [`token_digest`].
fn short_hash(digest: &TokenDigest) -> String {
    data_encoding::HEXLOWER.encode(digest.get(..8).unwrap_or_default())
}

/// Builds the decision's audit event.
fn audit(request: &Request, decision: &Result<Minted, Denial>, now: u64) -> AuditEvent {
    let server = &request.claims.nats.server_id;
    let client = &request.claims.nats.client_info;
    let user_nkey = &request.claims.nats.user_nkey;
    let (identity, provider) = match decision {
        Ok(m) => (Some(&m.identity), None),
        Err(d) => (d.identity.as_ref(), d.provider.as_ref()),
    };
    let mut event = AuditEvent {
        time: now,
        id: format!("{}.{user_nkey}", request.claims.base.jti),
        request_id: request.claims.base.jti.clone(),
        server_id: server.id.clone(),
        server_name: server.name.clone(),
        client_host: client.host.clone(),
        client_id: client.id,
        user_nkey: user_nkey.clone(),
        outcome: if decision.is_ok() { ALLOW } else { DENY },
        late_ms: None,
        reason: None,
        detail: None,
        provider: identity
            .map(|i| &i.provider)
            .or(provider)
            .map(|p| p.to_string()),
        tenant: identity.and_then(|i| i.tenant.clone()),
        subject: identity
            .map(|i| i.subject.clone())
            .filter(|s| !s.is_empty()),
        object_id: identity.and_then(|i| i.object_id.clone()),
        app_id: identity.and_then(|i| i.app_id.clone()),
        kind: identity.map(|i| i.kind.as_str()),
        name: identity.and_then(|i| i.display_name.clone()),
        token: None,
        rules: Vec::new(),
        account: None,
        publish: Vec::new(),
        publish_deny: Vec::new(),
        subscribe: Vec::new(),
        subscribe_deny: Vec::new(),
        expires_at: None,
        cached: false,
    };
    match decision {
        Ok(m) => {
            let grant = &m.grant;
            event.cached = m.cached;
            event.token = Some(m.token_hash.clone());
            event.rules = grant.matched.iter().map(|r| r.to_string()).collect();
            event.account = Some(grant.account.clone());
            event.publish.clone_from(&grant.publish.allow);
            event.publish_deny.clone_from(&grant.publish.deny);
            event.subscribe.clone_from(&grant.subscribe.allow);
            event.subscribe_deny.clone_from(&grant.subscribe.deny);
            event.expires_at = Some(grant.expires_at);
        }
        Err(d) => {
            event.reason = Some(d.reason);
            event.detail = Some(d.detail.clone());
            event.token.clone_from(&d.token_hash);
        }
    }
    event
}

fn or_empty(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or_default()
}

/// A list logged as a JSON array, in text and JSON logs alike.
struct JsonList<'a>(&'a [String]);

impl fmt::Display for JsonList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Serialising strings into a string cannot fail; `[]` keeps the field well-formed.
        let json = serde_json::to_string(self.0).unwrap_or_else(|_| "[]".to_owned());
        f.write_str(&json)
    }
}

/// One audit line: `outcome`, the fields `$head` that explain it, the fields of the request and
/// the identity every audit line carries (in this order), then `$tail`. A macro because tracing
/// fixes a line's field names where it is logged: shared fields cannot be passed as a value.
macro_rules! audit {
    ($level:ident, $e:ident, [$($head:tt)*], [$($tail:tt)*], $message:literal) => {
        $level!(
            target: "audit",
            outcome = $e.outcome,
            $($head)*
            id = %$e.id,
            request_id = %$e.request_id,
            server_id = %$e.server_id,
            server_name = %$e.server_name,
            client_host = %$e.client_host,
            client_id = $e.client_id,
            // For an admitted client, the minted user's key: what an operator revokes in the
            // account JWT.
            user_nkey = %$e.user_nkey,
            provider = or_empty(&$e.provider),
            tenant = or_empty(&$e.tenant),
            subject = or_empty(&$e.subject),
            object_id = or_empty(&$e.object_id),
            app_id = or_empty(&$e.app_id),
            $($tail)*
            $message
        )
    };
}

fn log_audit(e: &AuditEvent) {
    match (e.is_late(), e.reason) {
        (false, None) => audit!(
            info,
            e,
            [],
            [
                kind = e.kind.unwrap_or_default(),
                name = or_empty(&e.name),
                token = or_empty(&e.token),
                rules = %JsonList(&e.rules),
                cached = e.cached,
                account = or_empty(&e.account),
                publish = %JsonList(&e.publish),
                publish_deny = %JsonList(&e.publish_deny),
                subscribe = %JsonList(&e.subscribe),
                subscribe_deny = %JsonList(&e.subscribe_deny),
                expires_at = e.expires_at.unwrap_or_default(),
            ],
            "client admitted"
        ),
        (false, Some(reason)) => audit!(
            info,
            e,
            [reason = reason.code(), detail = or_empty(&e.detail),],
            [token = or_empty(&e.token),],
            "client refused"
        ),
        (true, reason) => audit!(
            warn,
            e,
            [
                late_ms = e.late_ms.unwrap_or_default(),
                // What the decision was; nats-server refused the client either way.
                decision = if reason.is_some() { DENY } else { ALLOW },
                reason = reason.map(DenyReason::code).unwrap_or_default(),
                detail = or_empty(&e.detail),
            ],
            [token = or_empty(&e.token), rules = %JsonList(&e.rules),],
            "answer sent after the deadline: nats-server refused the client"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::testutil;

    use crate::policy::{Permissions, Responses};

    fn identity() -> Identity {
        Identity {
            provider: Arc::from("contoso"),
            display_name: Some("alex\nw@contoso.com".to_owned()),
            expires_at: 2_000,
            ..testutil::identity()
        }
    }

    fn grant(publish: &[&str], subscribe: &[&str]) -> Grant {
        let list = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Grant {
            account: "APP".to_owned(),
            publish: Permissions {
                allow: list(publish),
                deny: list(&["a.secret"]),
            },
            subscribe: Permissions {
                allow: list(subscribe),
                deny: vec![],
            },
            responses: Some(Responses {
                max: 1,
                ttl: Duration::from_secs(5),
            }),
            expires_at: 1_500,
            matched: vec![Arc::from("r")],
            connection_types: vec![],
        }
    }

    fn payload(jwt: &str) -> Value {
        Value::Object(crate::tools::decode_unverified(jwt).unwrap())
    }

    fn config_issuer(key: &nats_jwt::Signer) -> UserIssuer<'_> {
        UserIssuer {
            key,
            audience: "APP",
            issuer_account: None,
        }
    }

    #[test]
    fn a_direction_without_allows_is_denied_explicitly() {
        let issuer = nats_jwt::Signer::new(nkeys::KeyPair::new_account()).unwrap();
        let user = nkeys::KeyPair::new_user().public_key();
        let jwt = mint_user(
            &config_issuer(&issuer),
            &user,
            &identity(),
            &grant(&[], &["a.>"]),
            1_000,
        )
        .unwrap();
        let claims = payload(&jwt);
        assert_eq!(claims["sub"], user.as_str());
        assert_eq!(claims["aud"], "APP");
        assert_eq!(claims["iss"], issuer.public_key());
        assert_eq!(claims["exp"], 1_500);
        assert_eq!(
            claims["name"], "alexw@contoso.com",
            "control characters are dropped"
        );
        let nats = &claims["nats"];
        assert_eq!(nats["pub"], serde_json::json!({ "deny": [">"] }));
        assert_eq!(nats["sub"], serde_json::json!({ "allow": ["a.>"] }));
        assert_eq!(
            nats["resp"],
            serde_json::json!({ "max": 1, "ttl": 5_000_000_000_i64 })
        );
        assert_eq!(nats["version"], 2);
        // The signature verifies with the issuer key.
        let decoded = nats_jwt::decode::<User>(&jwt).unwrap();
        assert_eq!(decoded.base.sub, user);
    }

    #[test]
    fn a_grant_without_any_allow_is_never_minted() {
        let issuer = nats_jwt::Signer::new(nkeys::KeyPair::new_account()).unwrap();
        let user = nkeys::KeyPair::new_user().public_key();
        let err = mint_user(
            &config_issuer(&issuer),
            &user,
            &identity(),
            &grant(&[], &[]),
            1_000,
        )
        .unwrap_err();
        assert!(matches!(err, MintError::NoPermissions));
    }

    #[test]
    fn operator_mode_users_carry_the_account_key_and_issuer_account() {
        use crate::accounts::{AccountKey, Signers};

        let app = nkeys::KeyPair::new_account();
        let signing = nkeys::KeyPair::new_account();
        let signer = |key: &nkeys::KeyPair| nats_jwt::Signer::new(key.clone()).unwrap();
        let signers = Signers::operator(
            AccountKey::own(signer(&nkeys::KeyPair::new_account())).unwrap(),
            [(
                "APP".to_owned(),
                AccountKey::new(&app.public_key(), signer(&signing)).unwrap(),
            )],
        );
        let user = nkeys::KeyPair::new_user().public_key();
        let issuer = signers.user_issuer("APP").unwrap();
        let jwt = mint_user(&issuer, &user, &identity(), &grant(&["a.>"], &[]), 1_000).unwrap();
        let claims = payload(&jwt);
        assert_eq!(claims["iss"], signing.public_key().as_str());
        assert_eq!(claims["aud"], app.public_key().as_str());
        assert_eq!(claims["nats"]["issuer_account"], app.public_key().as_str());
    }

    fn request(iat: u64, exp: u64) -> Request {
        let mut claims = Claims::with_subject("A", nats_jwt::AuthorizationRequest::default());
        claims.base.iat = iat;
        claims.base.exp = exp;
        claims.base.jti = "J".to_owned();
        claims.nats.user_nkey = "U1".to_owned();
        claims.nats.client_info.id = 7;
        Request {
            claims,
            server_xkey: None,
        }
    }

    #[test]
    fn the_deadline_is_the_servers_timeout_from_the_requests_own_claims() {
        // exp - iat is nats-server's timeout, whatever our clock (`now`) says.
        assert_eq!(
            answer_within(&request(1_000, 1_002), 5_000),
            Duration::from_secs(2)
        );
        assert_eq!(
            answer_within(&request(1_000, 1_010), 0),
            Duration::from_secs(10)
        );
        // A sub-second timeout truncated to 0 s counts as the second it rounds to.
        assert_eq!(
            answer_within(&request(1_000, 1_000), 1_000),
            Duration::from_secs(1)
        );
        // Without `iat`: the time left to `exp` on our clock.
        assert_eq!(
            answer_within(&request(0, 1_003), 1_000),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn an_audit_event_has_a_unique_id_names_the_identity_and_can_be_marked_late() {
        let minted = Minted {
            jwt: String::new(),
            identity: identity(),
            grant: grant(&["a.>", "b"], &[]),
            cached: false,
            token_hash: "0011223344556677".to_owned(),
        };
        let mut event = audit(&request(1_000, 1_002), &Ok(minted), 1_001);
        assert_eq!(event.id, "J.U1");
        assert_eq!(event.request_id, "J");
        assert_eq!(event.client_id, 7);
        assert_eq!(event.outcome, "allow");
        assert_eq!(event.subject.as_deref(), Some(identity().subject.as_str()));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["publish"], serde_json::json!(["a.>", "b"]));
        assert_eq!(json["rules"], serde_json::json!(["r"]));
        assert!(json.get("late_ms").is_none(), "{json}");

        event.mark_late(Duration::from_millis(1_250));
        assert!(event.is_late());
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["outcome"], "late");
        assert_eq!(json["late_ms"], 1_250);
        assert_eq!(json["expires_at"], 1_500, "what was decided is kept");
    }

    #[test]
    fn a_refusal_names_the_provider_the_token_was_routed_to() {
        let denial = Denial {
            provider: Some(Arc::from("contoso")),
            ..Denial::new(DenyReason::SignatureInvalid, "bad signature")
        };
        let event = audit(&request(1_000, 1_002), &Err(denial), 1_001);
        assert_eq!(event.outcome, "deny");
        assert_eq!(event.reason, Some(DenyReason::SignatureInvalid));
        assert_eq!(event.provider.as_deref(), Some("contoso"));
        assert_eq!(event.subject, None);
    }

    #[test]
    fn a_request_naming_the_replaced_issuer_is_answered_with_it() {
        let signer = |key: &nkeys::KeyPair| nats_jwt::Signer::new(key.clone()).unwrap();
        let (old, new) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_account());
        let keys = Keys {
            signers: Signers::config(signer(&new)),
            previous_issuer: Some(Signers::config(signer(&old))),
            xkey: None,
            previous_xkey: None,
        };
        let naming = |sub: &str| {
            let mut request = request(1_000, 1_002);
            request.claims.base.sub = sub.to_owned();
            keys.signers_for(&request)
                .response()
                .key()
                .public_key()
                .to_owned()
        };
        // nats-server puts its `auth_callout.issuer` in the request's `sub` (config mode).
        assert_eq!(naming(&old.public_key()), old.public_key());
        assert_eq!(naming(&new.public_key()), new.public_key());
        assert_eq!(
            naming("AUNKNOWN"),
            new.public_key(),
            "otherwise the current"
        );
    }

    #[test]
    fn the_token_hash_is_short_and_stable() {
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
        assert_eq!(token_hash("abc").len(), 16);
    }
}
