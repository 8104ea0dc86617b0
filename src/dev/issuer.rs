//! The dev environment's Entra-shaped token issuer: discovery and key documents on loopback.
//!
//! It serves Entra's per-tenant metadata paths for every tenant GUID — v2
//! (`/{tid}/v2.0/.well-known/openid-configuration`, keys `/{tid}/discovery/v2.0/keys`) and v1
//! (`/{tid}/.well-known/openid-configuration`, keys `/{tid}/discovery/keys`) — plus the
//! tenant-independent `common` and `organizations` documents. Issuer strings are Entra's real
//! ones, so the service checks dev tokens exactly as it checks real ones; only the metadata
//! host differs (a provider's `authority`). The one key it publishes is the DEV-ONLY key of
//! [`crate::dev::token`]. Tokens themselves are minted offline by `entra-callout dev token`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
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

/// axum is built without its `json` feature; this is all the JSON it needs.
fn json_response(body: &Value) -> Response {
    ([(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
