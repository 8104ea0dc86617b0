//! The dev environment's Entra-shaped token issuer: discovery and key documents on loopback.
//!
//! It serves Entra's per-tenant metadata paths for every tenant GUID — v2
//! (`/{tid}/v2.0/.well-known/openid-configuration`, keys `/{tid}/discovery/v2.0/keys`) and v1
//! (`/{tid}/.well-known/openid-configuration`, keys `/{tid}/discovery/keys`) — plus the
//! tenant-independent `common` and `organizations` documents. Issuer strings are Entra's real
//! ones, so the service checks dev tokens exactly as it checks real ones; only the metadata
//! host differs (a provider's `authority`). The one key it publishes is the DEV-ONLY key of
//! [`crate::dev::token`]. Tokens themselves are minted offline by `entra-callout dev token`,
//! or, for the browser example only, by `GET /dev-only/token` (see `dev_token`).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::dev::DevError;
use crate::dev::token::{self, is_guid};

/// A running dev issuer; stops when dropped.
#[derive(Debug)]
pub struct DevIssuer {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct IssuerState {
    /// `http://127.0.0.1:{port}`, where `jwks_uri` points.
    base: String,
    /// The published key, with Entra's v2 `issuer` template member.
    jwk: Value,
}

impl DevIssuer {
    /// Serves on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr) -> Result<Self, DevError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DevError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DevError::Bind { addr, source })?;
        let state = IssuerState {
            base: format!("http://{addr}"),
            jwk: token::public_jwk()?,
        };
        let app = Router::new()
            .route(
                "/{tid}/v2.0/.well-known/openid-configuration",
                get(discovery_v2),
            )
            .route("/{tid}/.well-known/openid-configuration", get(discovery_v1))
            .route("/{tid}/discovery/v2.0/keys", get(keys_v2))
            .route("/{tid}/discovery/keys", get(keys_v1))
            .route("/dev-only/token", get(dev_token))
            .with_state(state);
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(error = %err, "dev issuer stopped");
            }
        });
        Ok(Self { addr, server })
    }

    /// Base URL to fetch metadata from (a provider's `authority`): `http://127.0.0.1:{port}`.
    pub fn authority(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Tenant path segments it answers for: GUIDs, and the tenant-independent names.
fn served(tid: &str) -> Option<&str> {
    match tid {
        "common" | "organizations" => Some("{tenantid}"),
        _ if is_guid(tid) => Some(tid),
        _ => None,
    }
}

async fn discovery_v2(State(state): State<IssuerState>, Path(tid): Path<String>) -> Response {
    discovery(&state, &tid, true)
}

async fn discovery_v1(State(state): State<IssuerState>, Path(tid): Path<String>) -> Response {
    discovery(&state, &tid, false)
}

fn discovery(state: &IssuerState, tid: &str, v2: bool) -> Response {
    let Some(segment) = served(tid) else {
        // What Entra answers for a tenant that does not exist.
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (issuer, jwks_uri) = if v2 {
        (
            format!("https://login.microsoftonline.com/{segment}/v2.0"),
            format!("{}/{tid}/discovery/v2.0/keys", state.base),
        )
    } else {
        (
            format!("https://sts.windows.net/{segment}/"),
            format!("{}/{tid}/discovery/keys", state.base),
        )
    };
    json_response(&json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "token_endpoint": format!("https://login.microsoftonline.com/{tid}/oauth2/v2.0/token"),
        "authorization_endpoint":
            format!("https://login.microsoftonline.com/{tid}/oauth2/v2.0/authorize"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "ver", "oid"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    }))
}

async fn keys_v2(State(state): State<IssuerState>, Path(tid): Path<String>) -> Response {
    key_set(&state, &tid, true)
}

async fn keys_v1(State(state): State<IssuerState>, Path(tid): Path<String>) -> Response {
    key_set(&state, &tid, false)
}

/// v2 keys carry Entra's `issuer` template; v1 keys carry an `x5t` equal to the kid instead.
fn key_set(state: &IssuerState, tid: &str, v2: bool) -> Response {
    if served(tid).is_none() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let mut jwk = state.jwk.clone();
    if let Some(members) = jwk.as_object_mut() {
        if v2 {
            members.insert(
                "issuer".into(),
                json!("https://login.microsoftonline.com/{tenantid}/v2.0"),
            );
        } else {
            members.insert("x5t".into(), json!(token::DEV_KID));
        }
    }
    json_response(&json!({ "keys": [jwk] }))
}

/// DEV-ONLY: `GET /dev-only/token?group=G&tenant=T&role=R&ttl=5m...` answers with a made-up token,
/// exactly what `entra-callout dev token --group G --tenant T --role R --ttl 5m` prints, for the
/// browser example, which cannot run a command. Parameters: `tenant`, `role`, `group`, `app`,
/// `user`, `scope`, `ttl`, `audience`, `guest=true`, `v1=true`.
///
/// Anyone who can reach the loopback port gets a token for any made-up identity, and any page
/// in the developer's browser may ask (the answer allows every origin so that the example page
/// can be served from anywhere): harmless only because these tokens are signed with the public
/// DEV-ONLY key that nothing but `entra-callout dev` trusts.
async fn dev_token(uri: Uri) -> Response {
    let mut request = token::TokenRequest {
        tenant: "contoso".to_owned(),
        ttl_secs: 3600,
        ..token::TokenRequest::default()
    };
    for pair in uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(value) = percent_decode(raw) else {
            return bad_request(format!("{key}: not a percent-encoded UTF-8 value"));
        };
        match key {
            "tenant" => request.tenant = value,
            "role" => request.roles.push(value),
            "group" => request.groups.push(value),
            "scope" => request.scopes.push(value),
            "app" => request.app = Some(value),
            "user" => request.user = Some(value),
            "guest" => request.guest = value == "true",
            "v1" => request.v1 = value == "true",
            "audience" => request.audience = Some(value),
            "ttl" => match crate::duration::parse_duration(&value) {
                Ok(ttl) if !ttl.is_zero() => request.ttl_secs = ttl.as_secs(),
                _ => return bad_request(format!("ttl {value:?} is not a duration such as 10m")),
            },
            _ => return bad_request(format!("unknown parameter {key:?}")),
        }
    }
    let minted = token::Randomness::from_os()
        .and_then(|random| token::mint(&request, crate::telemetry::unix_now(), random));
    match minted {
        Ok(jwt) => (
            [
                (CONTENT_TYPE, "text/plain"),
                (CACHE_CONTROL, "no-store"),
                (ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            jwt,
        )
            .into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        format!("{message}\n"),
    )
        .into_response()
}

/// `%XX` escapes and `+` for space, as browsers' URLSearchParams writes them.
fn percent_decode(raw: &str) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b'+' => out.push(b' '),
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// axum is built without its `json` feature; this is all the JSON it needs.
fn json_response(body: &Value) -> Response {
    ([(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn claims(jwt: &str) -> Value {
        Value::Object(crate::tools::decode_unverified(jwt).unwrap())
    }

    #[tokio::test]
    async fn the_token_endpoint_mints_what_dev_token_would() {
        let uri: Uri =
            "/dev-only/token?group=c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43&ttl=5m&tenant=fabrikam"
                .parse()
                .unwrap();
        let (status, jwt) = body(dev_token(uri).await).await;
        assert_eq!(status, StatusCode::OK);
        let c = claims(&jwt);
        assert_eq!(c["groups"], json!(["c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43"]));
        assert_eq!(c["tid"], json!(token::FABRIKAM));
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);
    }

    #[tokio::test]
    async fn the_token_endpoint_names_what_it_cannot_use() {
        for (query, message) in [
            ("bogus=1", "unknown parameter \"bogus\"\n"),
            ("ttl=soon", "ttl \"soon\" is not a duration such as 10m\n"),
            ("role=%zz", "role: not a percent-encoded UTF-8 value\n"),
            (
                "tenant=northwind",
                "tenant \"northwind\" is neither contoso, fabrikam nor a tenant GUID\n",
            ),
        ] {
            let uri: Uri = format!("/dev-only/token?{query}").parse().unwrap();
            assert_eq!(
                body(dev_token(uri).await).await,
                (StatusCode::BAD_REQUEST, message.to_owned())
            );
        }
        assert_eq!(
            percent_decode("Ml.Vision%2EProducer+x").as_deref(),
            Some("Ml.Vision.Producer x")
        );
    }
}
