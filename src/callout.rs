//! The callout decision: one authorization request in, one signed answer out.
//!
//! [`Authorizer::handle`] opens and checks the server's request, takes the client's token,
//! verifies it, evaluates the policies and mints a user JWT scoped to exactly what they grant —
//! or answers with an error. It does no NATS I/O (the service loop does), and reads no clock:
//! `now` is a parameter. Every outcome is logged once as an audit event on target `audit`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde::Serialize;
use tracing::{info, warn};

use crate::accounts::{Signers, UserIssuer};
use crate::config::CalloutSettings;
use crate::deny::DenyReason;
use crate::identity::Identity;
use crate::nats_jwt::{self, Claims, JwtError, Permission, Request, ResponsePermission, User};
use crate::oidc::{TokenDigest, Verification, Verifier, token_digest};
use crate::policy::{ConnectionType, Grant, PolicySet};

/// The longest user name we put into a minted JWT; longer display names are cut.
const MAX_NAME_LEN: usize = 256;

/// Everything a decision needs, shared by all request tasks.
pub struct Authorizer {
    signers: Signers,
    xkey: Option<nkeys::XKey>,
    verifier: Arc<Verifier>,
    /// Swapped as a whole on reload; every request evaluates the set current when it started.
    policies: ArcSwap<PolicySet>,
    request_leeway_secs: u64,
    counts: Counts,
}

/// How many requests this authorizer answered, by outcome.
#[derive(Debug, Default)]
struct Counts {
    allowed: AtomicU64,
    denied: AtomicU64,
    dropped: AtomicU64,
    cache_hits: AtomicU64,
}

/// A snapshot of [`Authorizer`] counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Clients admitted.
    pub allowed: u64,
    /// Clients refused with a signed error response.
    pub denied: u64,
    /// Requests not answered because the request itself was unacceptable.
    pub dropped: u64,
    /// Tokens whose signature check was answered from the verified-token cache.
    pub cache_hits: u64,
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
        /// The decision's audit event (already logged).
        audit: Box<AuditEvent>,
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
    /// The authorization request's `jti`.
    pub request_id: String,
    /// The id of the nats-server that asked.
    pub server_id: String,
    /// The name of the nats-server that asked.
    pub server_name: String,
    /// The client's address as the server saw it.
    pub client_host: String,
    /// The client's connection id on that server.
    pub client_id: u64,
    /// The user key the server generated for this connection; the minted JWT's subject and
    /// what an operator revokes in operator mode.
    pub user_nkey: String,
    /// `allow` or `deny`.
    pub outcome: &'static str,
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
            signers: Signers::config(issuer),
            xkey,
            verifier,
            policies: ArcSwap::from_pointee(policies),
            request_leeway_secs,
            counts: Counts::default(),
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
    }

    /// Signs with `signers` instead: operator mode, or config mode with another issuer.
    #[must_use]
    pub fn with_signers(mut self, signers: Signers) -> Self {
        self.signers = signers;
        self
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        Stats {
            allowed: self.counts.allowed.load(Ordering::Relaxed),
            denied: self.counts.denied.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
            cache_hits: self.counts.cache_hits.load(Ordering::Relaxed),
        }
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
        let request = match self.open(payload, xkey_header, now) {
            Ok(request) => request,
            Err(dropped) => return dropped,
        };
        let decision = self.decide(&request, now).await;
        self.answer(&request, decision, now)
    }

    /// Refuses one request message with `reason` without looking at the client's token: the
    /// answer for requests the service cannot take on now. The request is still checked, so
    /// nothing is signed for a forged one.
    pub fn refuse(
        &self,
        payload: &[u8],
        xkey_header: Option<&str>,
        reason: DenyReason,
        now: u64,
    ) -> Handled {
        let request = match self.open(payload, xkey_header, now) {
            Ok(request) => request,
            Err(dropped) => return dropped,
        };
        let denial = Denial::new(reason, "refused before the token was looked at");
        self.answer(&request, Err(denial), now)
    }

    fn open(
        &self,
        payload: &[u8],
        xkey_header: Option<&str>,
        now: u64,
    ) -> Result<Request, Handled> {
        nats_jwt::open_request(
            payload,
            xkey_header,
            self.xkey.as_ref(),
            now,
            self.request_leeway_secs,
        )
        .map_err(|err| {
            warn!(target: "audit", outcome = "dropped", error = %err, "authorization request refused");
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            Handled::Drop(err)
        })
    }

    fn answer(&self, request: &Request, decision: Result<Minted, Denial>, now: u64) -> Handled {
        let (outcome, allowed) = match &decision {
            Ok(minted) => (Ok(minted.jwt.as_str()), true),
            // The error text reaches only the server log and the AUTH.ERR advisory in the callout
            // account, never the client; the stable code helps operators correlate.
            Err(denial) => (Err(denial.reason.code()), false),
        };
        let audit = audit(request, &decision, now);
        let signer = self.signers.response();
        match nats_jwt::encode_response_as(
            request,
            outcome,
            signer.key(),
            signer.issuer_account(),
            self.xkey.as_ref(),
            now,
        ) {
            Ok(body) => {
                let counter = if allowed {
                    &self.counts.allowed
                } else {
                    &self.counts.denied
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Handled::Respond {
                    body,
                    allowed,
                    audit: Box::new(audit),
                }
            }
            Err(err) => {
                warn!(error = %err, "could not encode the authorization response");
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                Handled::Drop(err)
            }
        }
    }

    async fn decide(&self, request: &Request, now: u64) -> Result<Minted, Denial> {
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
            .map_err(|err| Denial {
                reason: err.reason(),
                detail: err.to_string(),
                token_hash: Some(token_hash.clone()),
                identity: None,
            })?;
        if cached {
            self.counts.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
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
                });
            }
        };
        // Config validation makes sure every policy account has a key; a miss here means a
        // policy changed under us, and refusing is the only safe answer.
        let issuer = match self.signers.user_issuer(&grant.account) {
            Ok(issuer) => issuer,
            Err(err) => {
                return Err(Denial {
                    reason: DenyReason::Internal,
                    detail: err.to_string(),
                    token_hash: Some(token_hash),
                    identity: Some(identity),
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
}

impl Denial {
    fn new(reason: DenyReason, detail: &str) -> Self {
        Self {
            reason,
            detail: detail.to_owned(),
            token_hash: None,
            identity: None,
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

/// Builds the decision's audit event and logs it on target `audit`.
fn audit(request: &Request, decision: &Result<Minted, Denial>, now: u64) -> AuditEvent {
    let server = &request.claims.nats.server_id;
    let client = &request.claims.nats.client_info;
    let identity = match decision {
        Ok(m) => Some(&m.identity),
        Err(d) => d.identity.as_ref(),
    };
    let mut event = AuditEvent {
        time: now,
        request_id: request.claims.base.jti.clone(),
        server_id: server.id.clone(),
        server_name: server.name.clone(),
        client_host: client.host.clone(),
        client_id: client.id,
        user_nkey: request.claims.nats.user_nkey.clone(),
        outcome: if decision.is_ok() { "allow" } else { "deny" },
        reason: None,
        detail: None,
        provider: identity.map(|i| i.provider.to_string()),
        tenant: identity.and_then(|i| i.tenant.clone()),
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
    log_audit(&event);
    event
}

fn or_empty(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or_default()
}

fn log_audit(e: &AuditEvent) {
    match e.reason {
        None => info!(
            target: "audit",
            outcome = e.outcome,
            request_id = %e.request_id,
            server_id = %e.server_id,
            client_host = %e.client_host,
            client_id = e.client_id,
            // The minted user's key: what an operator revokes in the account JWT.
            user_nkey = %e.user_nkey,
            provider = or_empty(&e.provider),
            tenant = or_empty(&e.tenant),
            object_id = or_empty(&e.object_id),
            app_id = or_empty(&e.app_id),
            kind = e.kind.unwrap_or_default(),
            name = or_empty(&e.name),
            token = or_empty(&e.token),
            rules = ?e.rules,
            cached = e.cached,
            account = or_empty(&e.account),
            publish = ?e.publish,
            subscribe = ?e.subscribe,
            expires_at = e.expires_at.unwrap_or_default(),
            "client admitted"
        ),
        Some(reason) => info!(
            target: "audit",
            outcome = e.outcome,
            reason = reason.code(),
            detail = or_empty(&e.detail),
            request_id = %e.request_id,
            server_id = %e.server_id,
            client_host = %e.client_host,
            client_id = e.client_id,
            provider = or_empty(&e.provider),
            tenant = or_empty(&e.tenant),
            object_id = or_empty(&e.object_id),
            app_id = or_empty(&e.app_id),
            token = or_empty(&e.token),
            "client refused"
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
        let part = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &data_encoding::BASE64URL_NOPAD
                .decode(part.as_bytes())
                .unwrap(),
        )
        .unwrap()
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

    #[test]
    fn the_token_hash_is_short_and_stable() {
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
        assert_eq!(token_hash("abc").len(), 16);
    }
}
