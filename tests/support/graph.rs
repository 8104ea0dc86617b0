//! A local stand-in for Microsoft Graph and the Entra token endpoint, for groups overage.
//!
//! [`TestGraph::start`] serves on `127.0.0.1:0`:
//! * `POST /{tid}/oauth2/v2.0/token`: the client-credentials grant; checks the form
//!   (`grant_type`, `client_id`, `scope` and the secret or federated assertion) and answers with
//!   an opaque bearer token bound to the tenant;
//! * `POST /v1.0/{users|servicePrincipals}/{oid}/getMemberObjects`: checks the bearer token and
//!   the body, and answers with the configured group ids, `page_size` at a time, following
//!   pages through `@odata.nextLink`.
//!
//! Tests count requests and can make either endpoint fail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The service's own app registration used to call Graph.
pub const GRAPH_CLIENT_ID: &str = "3c6a9f0e-2d7b-4b18-8e54-a1f0c9d2e7b3";
/// The client secret the stand-in accepts.
pub const GRAPH_CLIENT_SECRET: &str = "s3cret~with/special=chars&more";

/// Graph and token endpoint, serving until dropped.
pub struct TestGraph {
    addr: SocketAddr,
    state: Arc<GraphState>,
    server: JoinHandle<()>,
}

struct GraphState {
    base: String,
    members: Mutex<HashMap<String, Vec<String>>>,
    page_size: AtomicUsize,
    token_hits: AtomicUsize,
    member_hits: AtomicUsize,
    fail_members: AtomicBool,
    /// The last form body posted to the token endpoint.
    last_token_form: Mutex<String>,
    /// A next link to hand out instead of ours (to test that it is refused).
    foreign_next_link: Mutex<Option<String>>,
}

impl TestGraph {
    /// Starts the stand-in.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(GraphState {
            base: format!("http://{addr}"),
            members: Mutex::new(HashMap::new()),
            page_size: AtomicUsize::new(100),
            token_hits: AtomicUsize::new(0),
            member_hits: AtomicUsize::new(0),
            fail_members: AtomicBool::new(false),
            last_token_form: Mutex::new(String::new()),
            foreign_next_link: Mutex::new(None),
        });
        let app = Router::new()
            .route("/{tid}/oauth2/v2.0/token", post(token))
            .route("/v1.0/{collection}/{oid}/getMemberObjects", post(members))
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

    /// `http://127.0.0.1:{port}`: both the token authority and the Graph base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `object_id` a transitive member of `groups`.
    pub fn set_members(&self, object_id: &str, groups: Vec<String>) {
        self.state
            .members
            .lock()
            .unwrap()
            .insert(object_id.to_owned(), groups);
    }

    /// How many ids one page holds.
    pub fn set_page_size(&self, size: usize) {
        self.state.page_size.store(size, Ordering::SeqCst);
    }

    /// Token requests so far.
    pub fn token_hits(&self) -> usize {
        self.state.token_hits.load(Ordering::SeqCst)
    }

    /// getMemberObjects requests so far (pages included).
    pub fn member_hits(&self) -> usize {
        self.state.member_hits.load(Ordering::SeqCst)
    }

    /// While `true`, getMemberObjects answers 503.
    pub fn fail_members(&self, fail: bool) {
        self.state.fail_members.store(fail, Ordering::SeqCst);
    }

    /// The last form body posted to the token endpoint.
    pub fn last_token_form(&self) -> String {
        self.state.last_token_form.lock().unwrap().clone()
    }

    /// Hands out `link` as the next page link.
    pub fn set_foreign_next_link(&self, link: &str) {
        *self.state.foreign_next_link.lock().unwrap() = Some(link.to_owned());
    }
}

impl Drop for TestGraph {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn token(
    State(state): State<Arc<GraphState>>,
    Path(tid): Path<String>,
    body: String,
) -> Response {
    state.token_hits.fetch_add(1, Ordering::SeqCst);
    body.clone_into(&mut state.last_token_form.lock().unwrap());
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), form_decode(v)))
        .collect();
    let field = |name: &str| form.get(name).map(String::as_str);
    let credential_ok = field("client_secret") == Some(GRAPH_CLIENT_SECRET)
        || (field("client_assertion_type")
            == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            && field("client_assertion").is_some_and(|a| a.starts_with("federated.")));
    let expected_scope = format!("{}/.default", state.base);
    if field("grant_type") != Some("client_credentials")
        || field("client_id") != Some(GRAPH_CLIENT_ID)
        || field("scope") != Some(expected_scope.as_str())
        || !credential_ok
    {
        return (StatusCode::UNAUTHORIZED, "invalid_client").into_response();
    }
    json_response(&json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "access_token": format!("graph-token-for-{tid}"),
    }))
}

async fn members(
    State(state): State<Arc<GraphState>>,
    Path((collection, oid)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    state.member_hits.fetch_add(1, Ordering::SeqCst);
    if state.fail_members.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !bearer.starts_with("Bearer graph-token-for-") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    if body != json!({"securityEnabledOnly": false}) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    // Apps are looked up under servicePrincipals, users under users; stored as `collection/oid`
    // or plain oid for users.
    let key = if collection == "users" {
        oid.clone()
    } else {
        format!("{collection}/{oid}")
    };
    let Some(all) = state.members.lock().unwrap().get(&key).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let skip: usize = uri
        .query()
        .and_then(|q| q.strip_prefix("$skiptoken="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let size = state.page_size.load(Ordering::SeqCst);
    let page: Vec<&String> = all.iter().skip(skip).take(size).collect();
    let mut answer = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(Edm.String)",
        "value": page,
    });
    if skip + size < all.len() {
        let next = state
            .foreign_next_link
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| {
                format!(
                    "{}/v1.0/{collection}/{oid}/getMemberObjects?$skiptoken={}",
                    state.base,
                    skip + size
                )
            });
        answer["@odata.nextLink"] = json!(next);
    }
    json_response(&answer)
}

fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn json_response(body: &Value) -> Response {
    ([(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
