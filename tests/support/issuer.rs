//! A local stand-in for Microsoft Entra ID: discovery, JWKS and token minting.
//!
//! [`TestIssuer::start`] serves, on `127.0.0.1:0`, Entra's per-tenant paths for v2
//! (`/{tid}/v2.0/.well-known/openid-configuration`, issuer
//! `https://login.microsoftonline.com/{tid}/v2.0`, keys `/{tid}/discovery/v2.0/keys`) and v1
//! (`/{tid}/.well-known/openid-configuration`, issuer `https://sts.windows.net/{tid}/`, keys
//! `/{tid}/discovery/keys`), plus the tenant-independent `common`/`organizations` documents whose
//! issuer is the `{tenantid}` template. Issuers are Entra's real strings while every `jwks_uri`
//! points at loopback, so nothing may assume "issuer host == metadata host". It signs realistic
//! v1 and v2 access tokens with committed test keys (`tests/data/keys/`), and lets tests rotate
//! keys, count fetches and inject failures.
//!
//! Entra's app-specific metadata is served too: discovery with `?appid={id}` answers a `jwks_uri`
//! with the same query. For [`AUDIENCE`] (the API's client id) that key set is [`APP_KID`] alone,
//! a key the tenant's set does not list; for any other app id it is empty.
//!
//! ```ignore
//! let issuer = TestIssuer::start().await;
//! let verifier = Verifier::new(vec![issuer.settings()])?;
//! let token = issuer.token(json!({"roles": ["Nats.Admin"], "scp": null}));
//! ```
//!
//! Claim overrides are merged into the defaults; a `null` value removes the claim.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use data_encoding::BASE64URL_NOPAD;
use entra_callout::oidc::{ProviderSettings, Versions};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The test tenant (Contoso in entra-id.md).
pub const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";
/// A second tenant, for cross-tenant cases.
pub const OTHER_TENANT: &str = "0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07";
/// The API's client id: the `aud` of every v2 token for it.
pub const AUDIENCE: &str = "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11";
/// The API's App ID URI: the `aud` of v1 tokens requested for that resource.
pub const APP_ID_URI: &str = "api://nats-auth";
/// A third tenant.
pub const THIRD_TENANT: &str = "9f1c2a7d-4e58-4b06-8e41-b7c95a3fd2e0";
/// The SPA that user tokens are issued to (`azp`).
pub const SPA_CLIENT: &str = "b9c2a7e5-1f34-4d8b-a0c6-7e2d9f4b3a18";
/// The daemon that app-only tokens are issued to (`azp`).
pub const DAEMON_CLIENT: &str = "0d4e7b2a-6c1f-4e83-9a5d-3b8c2f1e7d64";
/// The user's object id.
pub const USER_OID: &str = "5a1c8e2f-9d47-4b63-8f0a-2e6c4d9b7a35";
/// The user's pairwise `sub`.
pub const USER_SUB: &str = "yR1cQ2p8vWm3kX0fHjN7tLs5aB9dE4gU6oIzC1rT8eY";
/// The daemon's service-principal object id (also its `sub`).
pub const APP_OID: &str = "8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92";
/// A group the user is in.
pub const GROUP: &str = "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43";

/// Key ids of the committed test keys. KID_1 and KID_2 are published at start; KID_1 signs by
/// default; KID_3 is unpublished until [`TestIssuer::publish`].
pub const KID_1: &str = "JYhAcTPMZ_LX6DBlOWQ7Hn0NeXE";
/// See [`KID_1`].
pub const KID_2: &str = "PoVKeirIOvmTyLQ9G9BenBwos7k";
/// See [`KID_1`].
pub const KID_3: &str = "3PaK4EfyBNQu3CtjYsa3YmhQ5E0";

/// The key of [`AUDIENCE`]'s app-specific key set (a custom signing key): [`KID_3`], which the
/// tenant's standard set does not list unless a test publishes it.
pub const APP_KID: &str = KID_3;

const PEMS: [(&str, &str); 3] = [
    (KID_1, include_str!("../data/keys/test-key-1.pem")),
    (KID_2, include_str!("../data/keys/test-key-2.pem")),
    (KID_3, include_str!("../data/keys/test-key-3.pem")),
];

/// An Entra-like issuer for one tenant, serving until dropped.
pub struct TestIssuer {
    addr: SocketAddr,
    state: Arc<IssuerState>,
    server: JoinHandle<()>,
}

struct IssuerState {
    tenant: String,
    /// Tenants served besides `tenant`.
    others: Vec<String>,
    /// Discovery requests per path segment (`{tid}/v2`, `common/v1`, ...), with `?appid={id}`
    /// appended for app-specific metadata.
    hits_by_path: Mutex<HashMap<String, usize>>,
    /// JWKS requests with `?appid=`, per app id.
    app_jwks_hits: Mutex<HashMap<String, usize>>,
    base: String,
    keys: Vec<TestKey>,
    published: Mutex<Vec<&'static str>>,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
    fail_jwks: AtomicBool,
    /// While `true`, discovery answers 503 (still counted).
    fail_discovery: AtomicBool,
    /// While `true`, JWKS requests wait.
    jwks_paused: tokio::sync::watch::Sender<bool>,
    discovery_issuer: Mutex<Option<String>>,
    /// Overrides the v2 keys' `issuer` member of one kid.
    key_issuers: Mutex<HashMap<String, String>>,
    /// Where discovery says the keys are, when not at `base` (a proxy in front of the issuer).
    keys_base: Mutex<Option<String>>,
}

struct TestKey {
    kid: &'static str,
    encoding: EncodingKey,
    /// Public JWK members (`kty`, `n`, `e`) as Entra publishes them.
    public: Value,
}

impl TestIssuer {
    /// Starts an issuer for [`TENANT`].
    pub async fn start() -> Self {
        Self::start_for(TENANT).await
    }

    /// Starts an issuer for `tenant`.
    pub async fn start_for(tenant: &str) -> Self {
        Self::start_for_tenants(&[tenant]).await
    }

    /// Starts an issuer serving every tenant of `tenants`; the first is [`Self::tenant`].
    pub async fn start_for_tenants(tenants: &[&str]) -> Self {
        let tenant = tenants[0];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = PEMS
            .iter()
            .map(|(kid, pem)| {
                let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
                let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
                let full = serde_json::to_value(jwk).unwrap();
                let public = json!({"kty": "RSA", "n": full["n"], "e": full["e"]});
                TestKey {
                    kid,
                    encoding,
                    public,
                }
            })
            .collect();
        let state = Arc::new(IssuerState {
            tenant: tenant.to_owned(),
            others: tenants[1..].iter().map(|t| (*t).to_owned()).collect(),
            hits_by_path: Mutex::new(HashMap::new()),
            app_jwks_hits: Mutex::new(HashMap::new()),
            base: format!("http://{addr}"),
            keys,
            published: Mutex::new(vec![KID_1, KID_2]),
            jwks_hits: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
            fail_jwks: AtomicBool::new(false),
            fail_discovery: AtomicBool::new(false),
            jwks_paused: tokio::sync::watch::Sender::new(false),
            discovery_issuer: Mutex::new(None),
            key_issuers: Mutex::new(HashMap::new()),
            keys_base: Mutex::new(None),
        });
        let app = Router::new()
            .route(
                "/{tid}/v2.0/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/{tid}/.well-known/openid-configuration", get(discovery_v1))
            .route("/{tid}/discovery/v2.0/keys", get(jwks))
            .route("/{tid}/discovery/keys", get(jwks_v1))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            state,
            server,
        }
    }

    /// Base URL to fetch metadata from: `http://127.0.0.1:{port}`.
    pub fn authority(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The tenant GUID.
    pub fn tenant(&self) -> &str {
        &self.state.tenant
    }

    /// The `iss` of this issuer's tokens (Entra's real string, not the loopback address).
    pub fn issuer(&self) -> String {
        format!(
            "https://login.microsoftonline.com/{}/v2.0",
            self.state.tenant
        )
    }

    /// `https://sts.windows.net/{tid}/`: the `iss` of v1 tokens for `tid`.
    pub fn v1_issuer_for(tid: &str) -> String {
        format!("https://sts.windows.net/{tid}/")
    }

    /// `https://login.microsoftonline.com/{tid}/v2.0`: the `iss` of v2 tokens for `tid`.
    pub fn v2_issuer_for(tid: &str) -> String {
        format!("https://login.microsoftonline.com/{tid}/v2.0")
    }

    /// How many times discovery was requested for `segment` (a tenant, `common`,
    /// `organizations`) and version (`v1` or `v2`).
    pub fn discovery_hits_for(&self, segment: &str, version: &str) -> usize {
        let hits = self.state.hits_by_path.lock().unwrap();
        hits.get(&format!("{segment}/{version}"))
            .copied()
            .unwrap_or(0)
    }

    /// How many times the app-specific discovery of `app_id` was requested for `segment` and
    /// `version` (not counted in [`Self::discovery_hits_for`]).
    pub fn app_discovery_hits_for(&self, segment: &str, version: &str, app_id: &str) -> usize {
        self.discovery_hits_for(segment, &format!("{version}?appid={app_id}"))
    }

    /// How many times the JWKS was requested with `?appid={app_id}`.
    pub fn app_jwks_hits(&self, app_id: &str) -> usize {
        let hits = self.state.app_jwks_hits.lock().unwrap();
        hits.get(app_id).copied().unwrap_or(0)
    }

    /// Claims of a v1 user token (entra-id.md §1.3 c) for `tid`, valid from now for an hour.
    pub fn v1_user_claims_for(&self, tid: &str) -> Value {
        let now = now();
        json!({
            "aud": APP_ID_URI,
            "iss": Self::v1_issuer_for(tid),
            "iat": now, "nbf": now, "exp": now + 3600,
            "acr": "1", "aio": "E2dgYJibWt1YLns2t+Yap+dsFd12AA==", "amr": ["pwd", "mfa"],
            "appid": SPA_CLIENT, "appidacr": "0",
            "family_name": "Wilber", "given_name": "Alex",
            "groups": [GROUP],
            "ipaddr": "203.0.113.42", "name": "Alex Wilber", "oid": USER_OID,
            "roles": ["Nats.Subscriber"], "scp": "Nats.Connect",
            "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
            "tid": tid, "unique_name": "alexw@contoso.com", "upn": "alexw@contoso.com",
            "uti": "FVsGxYXI30-TuikuuUoFAA", "ver": "1.0",
        })
    }

    /// A v1 token: header with `x5t == kid`, signed with [`KID_1`]; `overrides` merged into
    /// [`Self::v1_user_claims_for`] of this issuer's tenant.
    pub fn v1_token(&self, overrides: Value) -> String {
        let claims = merge(self.v1_user_claims_for(self.tenant()), overrides);
        self.sign_with(KID_1, json!({"x5t": KID_1}), &claims)
    }

    /// A v2 user token for another served tenant `tid`, signed with [`KID_1`].
    pub fn token_for(&self, tid: &str, overrides: Value) -> String {
        let base = merge(
            self.user_claims(),
            json!({"iss": Self::v2_issuer_for(tid), "tid": tid}),
        );
        self.sign(KID_1, &merge(base, overrides))
    }

    /// Provider settings for this issuer: name `entra`, audience [`AUDIENCE`], loopback
    /// authority, v2 tokens only (one key source), and otherwise the defaults.
    pub fn settings(&self) -> ProviderSettings {
        self.settings_named("entra")
    }

    /// Like [`TestIssuer::settings`] with another provider name.
    pub fn settings_named(&self, name: &str) -> ProviderSettings {
        ProviderSettings::new(name, self.tenant(), vec![AUDIENCE.to_owned()])
            .unwrap()
            .with_authority(&self.authority())
            .unwrap()
            .with_versions(Versions {
                v1: false,
                v2: true,
            })
            .unwrap()
    }

    /// Claims of a v2 user token (entra-id.md §1.3 a), valid from now for an hour.
    pub fn user_claims(&self) -> Value {
        let now = now();
        json!({
            "aud": AUDIENCE,
            "iss": self.issuer(),
            "iat": now, "nbf": now, "exp": now + 3600,
            "aio": "AWQAm/8ZAAAAq3v0bX2c9sT1kJ4nR8fWm5yL0eP7aGdH6uZ2oXc1iVbN3sQ==",
            "azp": SPA_CLIENT,
            "azpacr": "0",
            "groups": [GROUP, "4f8a2c6e-9d1b-4e7a-b3c5-8e2f6a0d9b17"],
            "idtyp": "user",
            "name": "Alex Wilber",
            "oid": USER_OID,
            "preferred_username": "alexw@contoso.com",
            "rh": "1.AR8A1OHxclsMCk6dYluODzqcQQwdP26KiyxMn0EteaC8XhEfAGIfAA.",
            "roles": ["Nats.Publisher", "Nats.Subscriber"],
            "scp": "Nats.Connect",
            "sub": USER_SUB,
            "tid": self.tenant(),
            "uti": "kX3b9VnQ0Ee2c7T1mZpAAA",
            "ver": "2.0",
            "wids": ["b79fbf4d-3ef9-4689-8143-76b194e85509"],
        })
    }

    /// Claims of a v2 app-only token (entra-id.md §1.3 b), valid from now for an hour.
    pub fn app_claims(&self) -> Value {
        let now = now();
        json!({
            "aud": AUDIENCE,
            "iss": self.issuer(),
            "iat": now, "nbf": now, "exp": now + 3600,
            "aio": "k2BgYKj9f3v1bNmQ8sT0rW5yZ7xC4aE6dG2hJ==",
            "azp": DAEMON_CLIENT,
            "azpacr": "2",
            "idtyp": "app",
            "oid": APP_OID,
            "rh": "1.AR8A1OHxclsMCk6dYluODzqcQQwdP26KiyxMn0EteaC8XhEfAAA.",
            "roles": ["Nats.Service.Orders"],
            "sub": APP_OID,
            "tid": self.tenant(),
            "uti": "Qp7cT2zL0kWn4dA9hXyBAA",
            "ver": "2.0",
        })
    }

    /// A user token signed with [`KID_1`]; `overrides` are merged into [`Self::user_claims`].
    pub fn token(&self, overrides: Value) -> String {
        self.sign(KID_1, &merge(self.user_claims(), overrides))
    }

    /// An app-only token signed with [`KID_1`]; `overrides` are merged into
    /// [`Self::app_claims`].
    pub fn app_token(&self, overrides: Value) -> String {
        self.sign(KID_1, &merge(self.app_claims(), overrides))
    }

    /// `claims` signed RS256 with the key `kid`, header `{"typ":"JWT","alg":"RS256","kid":kid}`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        self.sign_with(kid, json!({}), claims)
    }

    /// For hostile cases: signs RS256 with the key `kid`, but the header is the default one
    /// merged with `header_overrides` (`{"kid": null}` removes the kid, `{"kid": KID_2}` lies
    /// about the key, `{"alg": "RS512"}` lies about the algorithm).
    pub fn sign_with(&self, kid: &str, header_overrides: Value, claims: &Value) -> String {
        let header = merge(
            json!({"typ": "JWT", "alg": "RS256", "kid": kid}),
            header_overrides,
        );
        let message = format!("{}.{}", encode_part(&header), encode_part(claims));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &self.key(kid).encoding,
            Algorithm::RS256,
        )
        .unwrap();
        format!("{message}.{signature}")
    }

    /// The classic algorithm-confusion forgery: HS256 keyed with the published public JWK of
    /// `kid` (what an attacker can download).
    pub fn hs256_with_public_key(&self, kid: &str, claims: &Value) -> String {
        let secret = self.public_jwk(kid).to_string();
        let header = json!({"typ": "JWT", "alg": "HS256", "kid": kid});
        let message = format!("{}.{}", encode_part(&header), encode_part(claims));
        let key = EncodingKey::from_secret(secret.as_bytes());
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    }

    /// The JWK this issuer publishes (or would publish) for `kid`.
    pub fn public_jwk(&self, kid: &str) -> Value {
        self.key(kid).jwk()
    }

    /// Adds `kid` to the published key set.
    pub fn publish(&self, kid: &str) {
        let kid = self.key(kid).kid;
        let mut published = self.state.published.lock().unwrap();
        if !published.contains(&kid) {
            published.push(kid);
        }
    }

    /// Removes `kid` from the published key set.
    pub fn retire(&self, kid: &str) {
        self.state.published.lock().unwrap().retain(|k| *k != kid);
    }

    /// How many times the JWKS was requested (failed requests included).
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// How many times the discovery document was requested.
    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    /// While `true`, the JWKS endpoint answers 500.
    pub fn fail_jwks(&self, fail: bool) {
        self.state.fail_jwks.store(fail, Ordering::SeqCst);
    }

    /// While `true`, discovery documents answer 503: an identity provider that is down but
    /// whose requests can still be counted.
    pub fn fail_discovery(&self, fail: bool) {
        self.state.fail_discovery.store(fail, Ordering::SeqCst);
    }

    /// Publishes `kid` in v2 key sets with `issuer` as its `issuer` member (a key that belongs
    /// to another tenant).
    pub fn set_key_issuer(&self, kid: &str, issuer: &str) {
        self.state
            .key_issuers
            .lock()
            .unwrap()
            .insert(kid.to_owned(), issuer.to_owned());
    }

    /// While `true`, JWKS requests are held until it is set back to `false`: a stand-in for a
    /// slow identity provider that keeps requests in flight as long as a test needs.
    pub fn pause_jwks(&self, paused: bool) {
        self.state.jwks_paused.send_replace(paused);
    }

    /// Makes discovery point `jwks_uri` at `authority` (a proxy in front of this issuer) instead
    /// of the issuer's own address, so cutting the proxy cuts key fetches too.
    pub fn serve_keys_via(&self, authority: &str) {
        *self.state.keys_base.lock().unwrap() = Some(authority.to_owned());
    }

    /// Makes discovery announce `issuer` instead of the real one (`None` restores it).
    pub fn set_discovery_issuer(&self, issuer: Option<String>) {
        *self.state.discovery_issuer.lock().unwrap() = issuer;
    }

    fn key(&self, kid: &str) -> &TestKey {
        self.state
            .keys
            .iter()
            .find(|key| key.kid == kid)
            .unwrap_or_else(|| panic!("no test key with kid {kid}"))
    }
}

impl TestKey {
    /// The key as Entra's per-tenant JWKS lists it: no `alg`, an `issuer` template.
    fn jwk(&self) -> Value {
        let mut jwk = self.public.clone();
        jwk["kid"] = json!(self.kid);
        jwk["use"] = json!("sig");
        jwk["issuer"] = json!("https://login.microsoftonline.com/{tenantid}/v2.0");
        jwk
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Current unix time in seconds, the `now` to verify the issuer's tokens with.
pub fn now() -> u64 {
    entra_callout::telemetry::unix_now()
}

/// `base` with the members of `overrides` set; a `null` override removes the member.
pub fn merge(mut base: Value, overrides: Value) -> Value {
    let object = base.as_object_mut().expect("base is a JSON object");
    for (name, value) in overrides.as_object().expect("overrides is a JSON object") {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    base
}

/// An `alg: none` token: header and claims, empty signature.
pub fn unsigned_token(claims: &Value) -> String {
    let header = json!({"typ": "JWT", "alg": "none"});
    format!("{}.{}.", encode_part(&header), encode_part(claims))
}

fn encode_part(value: &Value) -> String {
    BASE64URL_NOPAD.encode(value.to_string().as_bytes())
}

async fn discovery(
    State(state): State<Arc<IssuerState>>,
    Path(tid): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    discovery_document(&state, &tid, "v2", app_id(query.as_deref()))
}

async fn discovery_v1(
    State(state): State<Arc<IssuerState>>,
    Path(tid): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    discovery_document(&state, &tid, "v1", app_id(query.as_deref()))
}

/// The `appid` of a query such as `appid=6e3f...`; other parameters are ignored, as Entra does.
fn app_id(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("appid="))
}

impl IssuerState {
    fn serves(&self, tid: &str) -> bool {
        tid == self.tenant || self.others.iter().any(|t| t == tid)
    }

    fn tenant_independent(tid: &str) -> bool {
        tid == "common" || tid == "organizations"
    }
}

fn discovery_document(
    state: &IssuerState,
    tid: &str,
    version: &str,
    app_id: Option<&str>,
) -> Response {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let query = app_id.map(|id| format!("?appid={id}")).unwrap_or_default();
    *state
        .hits_by_path
        .lock()
        .unwrap()
        .entry(format!("{tid}/{version}{query}"))
        .or_default() += 1;
    if state.fail_discovery.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let independent = IssuerState::tenant_independent(tid);
    if !state.serves(tid) && !independent {
        // What Entra answers for a tenant that does not exist.
        return StatusCode::BAD_REQUEST.into_response();
    }
    let segment = if independent { "{tenantid}" } else { tid };
    let base = state.keys_base.lock().unwrap().clone();
    let base = base.as_deref().unwrap_or(&state.base);
    let (default_issuer, jwks_uri) = if version == "v2" {
        (
            TestIssuer::v2_issuer_for(segment),
            format!("{base}/{tid}/discovery/v2.0/keys{query}"),
        )
    } else {
        (
            TestIssuer::v1_issuer_for(segment),
            format!("{base}/{tid}/discovery/keys{query}"),
        )
    };
    let issuer = state
        .discovery_issuer
        .lock()
        .unwrap()
        .clone()
        .unwrap_or(default_issuer);
    json_response(&json!({
        "token_endpoint": format!("https://login.microsoftonline.com/{tid}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported":
            ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": jwks_uri,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint":
            format!("https://login.microsoftonline.com/{tid}/oauth2/v2.0/authorize"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "ver", "oid"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    }))
}

async fn jwks(
    State(state): State<Arc<IssuerState>>,
    Path(tid): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    key_set(&state, &tid, true, app_id(query.as_deref())).await
}

async fn jwks_v1(
    State(state): State<Arc<IssuerState>>,
    Path(tid): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    key_set(&state, &tid, false, app_id(query.as_deref())).await
}

/// v2 keys carry Entra's `issuer` template; v1 keys carry none. With `app_id`, the app-specific
/// set: [`APP_KID`] for [`AUDIENCE`], nothing for any other app.
async fn key_set(state: &IssuerState, tid: &str, v2: bool, app_id: Option<&str>) -> Response {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(app_id) = app_id {
        *state
            .app_jwks_hits
            .lock()
            .unwrap()
            .entry(app_id.to_owned())
            .or_default() += 1;
    }
    let _ = state
        .jwks_paused
        .subscribe()
        .wait_for(|paused| !paused)
        .await;
    if state.fail_jwks.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if !state.serves(tid) && !IssuerState::tenant_independent(tid) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let published = match app_id {
        None => state.published.lock().unwrap().clone(),
        Some(AUDIENCE) => vec![APP_KID],
        Some(_) => Vec::new(),
    };
    let keys: Vec<Value> = state
        .keys
        .iter()
        .filter(|key| published.contains(&key.kid))
        .map(|key| {
            let mut jwk = key.jwk();
            if v2 {
                if let Some(issuer) = state.key_issuers.lock().unwrap().get(key.kid) {
                    jwk["issuer"] = json!(issuer);
                }
            } else {
                jwk.as_object_mut().unwrap().remove("issuer");
                jwk["x5t"] = json!(key.kid);
            }
            jwk
        })
        .collect();
    json_response(&json!({ "keys": keys }))
}

/// axum is built without its `json` feature; this is all the JSON it needs.
fn json_response(body: &Value) -> Response {
    ([(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
