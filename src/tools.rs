//! Offline policy tools: `explain` (what does this token get, and why) and `test` (run the
//! policy test files operators write, in the spirit of `opa test`).
//!
//! Both map claims to an [`Identity`] with the verifier's own rules
//! ([`identity_from_unverified_claims`]) but never check a signature and never touch the
//! network: they answer "what would this token get" before anything is deployed. Reports are
//! returned as text (or JSON) so the CLI only prints them; `now` is a parameter.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use data_encoding::BASE64URL_NOPAD;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use serde_saphyr::Spanned;

use crate::diagnostic::Diagnostic;
use crate::diagnostic::yaml_problem;
use crate::guid::Guid;
use crate::identity::Identity;
use crate::oidc::{
    ProviderSettings, Routes, Tenants, TokenError, Via, identity_from_unverified_claims,
};
use crate::policy::{ConnectionType, Explanation, Grant, Permissions, PolicySet};

/// Printed first by every `explain` of a token: a forged token would be explained the same way.
pub const UNVERIFIED_WARNING: &str = "WARNING: the token's signature was NOT verified. explain decodes it offline; \
a forged token is explained exactly like a real one.";

/// How `ProviderSettings::issuers` writes the tenant of a provider that accepts any tenant.
const TENANT_TEMPLATE: &str = "{tenantid}";

/// The client application policy-test claims name when they name none (the nil GUID, which no
/// real app registration has).
pub const TEST_CLIENT_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Lifetime given to test claims without `exp`.
const TEST_TOKEN_LIFETIME: u64 = 3600;

/// Why a tool could not run at all (as opposed to a denied token or a failed test).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The token is not a compact JWT with a JSON payload.
    #[error("the token is not a JWT with a JSON object payload")]
    NotAJwt,
    /// A claims, token or test file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A claims file is not a JSON object.
    #[error("{path}: not a JSON object of claims: {detail}")]
    ClaimsFile {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        detail: String,
    },
    /// A test file has problems.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    TestFile(Vec<Diagnostic>),
}

/// Which configured provider claims are routed to, and why.
#[derive(Debug)]
pub struct Routing<'a> {
    /// The provider, when one could be chosen.
    pub provider: Option<&'a ProviderSettings>,
    /// A sentence saying how it was chosen, or why none was.
    pub note: String,
    /// The verifier's refusal when it refuses the token while routing it (a tenant a provider
    /// of the issuer's cloud does not accept), so the deny reason is the one the service gives.
    pub refusal: Option<TokenError>,
}

/// Chooses the provider for `claims`: by name when given, else by `iss` with the verifier's own
/// routing (`oidc::Routes`), else by `tid` or as the only provider when `lenient` (test files
/// may leave `iss` out).
pub fn route<'a>(
    providers: &'a [ProviderSettings],
    claims: &Map<String, Value>,
    name: Option<&str>,
    lenient: bool,
) -> Routing<'a> {
    if let Some(name) = name {
        let provider = providers.iter().find(|p| &**p.name() == name);
        let note = match provider {
            Some(_) => format!("provider `{name}` (named by the test)"),
            None => format!("no configured provider is named `{name}`"),
        };
        return Routing {
            provider,
            note,
            refusal: None,
        };
    }
    if let Some(iss) = claims.get("iss").and_then(Value::as_str) {
        return route_by_issuer(providers, claims, iss);
    }
    if lenient {
        if let Some(tid) = claims.get("tid").and_then(Value::as_str)
            && let Some(p) = providers
                .iter()
                .find(|p| p.as_entra().is_some_and(|e| e.allows_tenant(tid)))
        {
            return Routing {
                provider: Some(p),
                note: format!("tid {tid} is the tenant of provider `{}`", p.name()),
                refusal: None,
            };
        }
        if let [only] = providers {
            return Routing {
                provider: Some(only),
                note: format!("the only configured provider, `{}`", only.name()),
                refusal: None,
            };
        }
    }
    Routing {
        provider: None,
        note: "the claims have no `iss`, and no provider could be chosen".to_owned(),
        refusal: None,
    }
}

/// Routes by `iss` exactly as the verifier does, saying why.
fn route_by_issuer<'a>(
    providers: &'a [ProviderSettings],
    claims: &Map<String, Value>,
    iss: &str,
) -> Routing<'a> {
    let routes = match Routes::new(providers.to_vec()) {
        Ok(routes) => routes,
        Err(error) => {
            return Routing {
                provider: None,
                note: format!("no provider can be chosen: {error}"),
                refusal: None,
            };
        }
    };
    let routed = |index: usize, how: &str| {
        let provider = providers.get(index);
        let name = provider.map(|p| &**p.name()).unwrap_or_default();
        Routing {
            provider,
            note: format!("iss {iss} is an issuer of provider `{name}`{how}"),
            refusal: None,
        }
    };
    match routes.route(iss, claims) {
        Ok(route) => match route.via {
            Via::Issuer => routed(route.provider, ""),
            Via::AnyTenant => routed(route.provider, ", which accepts any tenant"),
        },
        // An exact issuer whose claims the tenant rules refuse: the claim checks refuse them
        // the same way, and test claims may still lack the `tid` filled in from the provider.
        Err(_) if let Some(route) = routes.exact(iss) => routed(route.provider, ""),
        Err(refusal) => {
            let known: Vec<String> = providers
                .iter()
                .map(|p| format!("`{}` ({})", p.name(), p.issuers().join(", ")))
                .collect();
            let why = match &refusal {
                TokenError::IssuerUnknown => String::new(),
                refusal => format!(" ({refusal})"),
            };
            Routing {
                provider: None,
                note: format!(
                    "iss {iss} matches no configured provider{why}; configured: {}",
                    known.join(", ")
                ),
                refusal: Some(refusal),
            }
        }
    }
}

/// The payload of a compact JWT, decoded without any check of its signature.
pub fn decode_unverified(token: &str) -> Result<Map<String, Value>, ToolError> {
    let payload = token.trim().split('.').nth(1).ok_or(ToolError::NotAJwt)?;
    let bytes = BASE64URL_NOPAD
        .decode(payload.as_bytes())
        .map_err(|_| ToolError::NotAJwt)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ToolError::NotAJwt),
    }
}

/// Reads a JSON object of claims.
pub fn read_claims(path: &Path) -> Result<Map<String, Value>, ToolError> {
    let text = std::fs::read_to_string(path).map_err(|source| ToolError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ToolError::ClaimsFile {
            path: path.to_path_buf(),
            detail: "the top level is not an object".to_owned(),
        }),
        Err(e) => Err(ToolError::ClaimsFile {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// Fills the claims a test rarely cares about from `provider`: `tid` (the provider's first
/// tenant), `iss` (its first issuer for that tenant), `aud`, `iat`/`nbf`/`exp` (valid for an
/// hour from `now`), `sub` (the `oid`, as in app-only tokens) and, for Entra, the client
/// (`azp`, or `appid` in v1 claims: every Entra access token names one) as
/// [`TEST_CLIENT_ID`]. Claims already present are kept.
pub fn fill_test_defaults(claims: &mut Map<String, Value>, provider: &ProviderSettings, now: u64) {
    if provider.as_entra().is_some() && !claims.contains_key("azp") && !claims.contains_key("appid")
    {
        let v1 = claims.get("ver").and_then(Value::as_str) == Some("1.0");
        let name = if v1 { "appid" } else { "azp" };
        claims.insert(name.to_owned(), json!(TEST_CLIENT_ID));
    }
    if let Some(entra) = provider.as_entra() {
        let first = match entra.tenants() {
            Tenants::One(t) => Some(t.as_str()),
            Tenants::List(list) => list.first().map(Guid::as_str),
            Tenants::Any => None,
        };
        if let Some(tid) = first {
            claims.entry("tid".to_owned()).or_insert_with(|| json!(tid));
        }
    }
    let tid = claims
        .get("tid")
        .and_then(Value::as_str)
        .unwrap_or(TENANT_TEMPLATE)
        .to_owned();
    let mut set = |name: &str, value: Value| {
        claims.entry(name.to_owned()).or_insert(value);
    };
    if let Some(issuer) = provider.issuers().first() {
        set("iss", json!(issuer.replace(TENANT_TEMPLATE, &tid)));
    }
    set("aud", json!(provider.audiences().first()));
    set("iat", json!(now));
    set("nbf", json!(now));
    set("exp", json!(now + TEST_TOKEN_LIFETIME));
    let sub = claims
        .get("oid")
        .cloned()
        .unwrap_or_else(|| json!("test-subject"));
    claims.entry("sub".to_owned()).or_insert(sub);
}

/// The outcome of mapping claims to an identity and evaluating it.
pub struct Explained<'a> {
    /// How the provider was chosen.
    pub routing: Routing<'a>,
    /// The identity, or why the verifier's claim checks refused the token.
    pub identity: Option<Result<Identity, TokenError>>,
    /// The policy explanation, when there is an identity.
    pub explanation: Option<Explanation>,
}

impl Explained<'_> {
    /// True when the token would be admitted.
    pub fn allowed(&self) -> bool {
        self.explanation
            .as_ref()
            .is_some_and(|e| e.decision.is_ok())
    }

    /// The grant, when admitted.
    pub fn grant(&self) -> Option<&Grant> {
        self.explanation
            .as_ref()
            .and_then(|e| e.decision.as_ref().ok())
    }

    /// The stable deny code, when refused.
    pub fn deny_code(&self) -> Option<&'static str> {
        match (&self.identity, &self.explanation) {
            (None, _) => Some(
                self.routing
                    .refusal
                    .as_ref()
                    .map_or("issuer_unknown", |e| e.reason().code()),
            ),
            (Some(Err(e)), _) => Some(e.reason().code()),
            (Some(Ok(_)), Some(x)) => x.decision.as_ref().err().map(|d| d.reason().code()),
            (Some(Ok(_)), None) => None,
        }
    }
}

/// Routes `claims`, maps them to an identity and evaluates it at `now` for a client connecting
/// as `connection` (`None`: not known, so bindings restricted by `connection_types` do not match).
pub fn explain<'a>(
    providers: &'a [ProviderSettings],
    policies: &PolicySet,
    claims: Map<String, Value>,
    provider: Option<&str>,
    lenient: bool,
    connection: Option<ConnectionType>,
    now: u64,
) -> Explained<'a> {
    let routing = route(providers, &claims, provider, lenient);
    let Some(p) = routing.provider else {
        return Explained {
            routing,
            identity: None,
            explanation: None,
        };
    };
    let mut claims = claims;
    if lenient {
        fill_test_defaults(&mut claims, p, now);
    }
    let identity = identity_from_unverified_claims(claims, p, now);
    let explanation = identity
        .as_ref()
        .ok()
        .map(|id| policies.explain_on(id, connection, now));
    Explained {
        routing,
        identity: Some(identity),
        explanation,
    }
}

/// Human-readable `explain` output.
pub fn render_text(x: &Explained<'_>, now: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Provider\n  {}", x.routing.note);
    match &x.identity {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(
                out,
                "\nIdentity\n  refused by the verifier's claim checks: {e}"
            );
        }
        Some(Ok(id)) => {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(", ")
                }
            };
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            let _ = writeln!(out, "\nIdentity");
            let _ = writeln!(out, "  kind        {}", id.kind.as_str());
            let _ = writeln!(out, "  tenant      {}", opt(&id.tenant));
            let _ = writeln!(out, "  object id   {}", opt(&id.object_id));
            let _ = writeln!(out, "  app id      {}", opt(&id.app_id));
            let _ = writeln!(out, "  app roles   {}", list(&id.roles));
            let _ = writeln!(out, "  groups      {}", list(&id.groups));
            let _ = writeln!(out, "  scopes      {}", list(&id.scopes));
            let _ = writeln!(out, "  guest       {}", if id.guest { "yes" } else { "no" });
            let _ = writeln!(out, "  token exp   {}", when(id.expires_at, now));
        }
    }
    if let Some(e) = &x.explanation {
        let _ = writeln!(out, "\nBindings");
        if e.bindings.is_empty() {
            let _ = writeln!(out, "  (the policies define no bindings)");
        }
        for b in &e.bindings {
            let scope = match &b.project {
                Some(p) => format!("{}/{p}", b.tenant),
                None => b.tenant.to_string(),
            };
            let roles: Vec<&str> = b.roles.iter().map(|r| &**r).collect();
            match &b.outcome {
                Ok(()) => {
                    let _ = writeln!(
                        out,
                        "  MATCH  {} ({scope}; roles {})",
                        b.name,
                        roles.join(", ")
                    );
                    for js in &b.jetstream {
                        let _ = writeln!(out, "         jetstream {}", js.what);
                        let _ = writeln!(out, "           publish   {}", js.publish.join(", "));
                        let _ = writeln!(out, "           subscribe {}", js.subscribe.join(", "));
                    }
                }
                Err(why) => {
                    let _ = writeln!(out, "  no     {} ({scope}): {why}", b.name);
                }
            }
        }
    }
    let _ = writeln!(out);
    match (x.grant(), x.deny_code()) {
        (Some(g), _) => {
            let _ = writeln!(out, "Decision: ALLOW");
            let _ = writeln!(out, "  account    {}", g.account);
            write_permissions(&mut out, "publish", &g.publish);
            write_permissions(&mut out, "subscribe", &g.subscribe);
            let _ = writeln!(
                out,
                "  responses  {}",
                g.responses
                    .map_or_else(|| "not allowed".to_owned(), |r| r.to_string())
            );
            let _ = writeln!(
                out,
                "  connects   {}",
                if g.connection_types.is_empty() {
                    "any way".to_owned()
                } else {
                    g.connection_types.join(", ")
                }
            );
            let _ = writeln!(out, "  expires    {}", when(g.expires_at, now));
        }
        (None, code) => {
            let detail = match (&x.identity, &x.explanation) {
                (Some(Ok(_)), Some(e)) => e
                    .decision
                    .as_ref()
                    .err()
                    .map(|d| d.detail().to_owned())
                    .unwrap_or_default(),
                (Some(Err(e)), _) => e.to_string(),
                _ => x.routing.note.clone(),
            };
            let _ = writeln!(
                out,
                "Decision: DENY ({})\n  {detail}",
                code.unwrap_or("internal")
            );
        }
    }
    out
}

fn write_permissions(out: &mut String, dir: &str, p: &Permissions) {
    if p.allow.is_empty() {
        let _ = writeln!(out, "  {dir:<10} nothing (minted as deny \">\")");
        return;
    }
    let _ = writeln!(out, "  {dir:<10} allow {}", p.allow.join(", "));
    if !p.deny.is_empty() {
        let _ = writeln!(out, "  {:<10} deny  {}", "", p.deny.join(", "));
    }
}

fn when(at: u64, now: u64) -> String {
    if at > now {
        format!("{at} (unix; in {}s)", at - now)
    } else {
        format!("{at} (unix; {}s ago)", now - at)
    }
}

/// Machine-readable `explain` output.
pub fn render_json(x: &Explained<'_>, unverified: bool) -> Value {
    let identity = match &x.identity {
        Some(Ok(id)) => json!({
            "provider": &*id.provider,
            "kind": id.kind.as_str(),
            "tenant": id.tenant,
            "object_id": id.object_id,
            "app_id": id.app_id,
            "roles": id.roles,
            "groups": id.groups,
            "scopes": id.scopes,
            "guest": id.guest,
            "expires_at": id.expires_at,
        }),
        Some(Err(e)) => json!({ "error": e.to_string(), "reason": e.reason().code() }),
        None => Value::Null,
    };
    let bindings: Vec<Value> = x
        .explanation
        .iter()
        .flat_map(|e| &e.bindings)
        .map(|b| {
            json!({
                "name": &*b.name,
                "tenant": &*b.tenant,
                "project": b.project.as_deref(),
                "roles": b.roles.iter().map(|r| &**r).collect::<Vec<_>>(),
                "matched": b.outcome.is_ok(),
                "why_not": b.outcome.as_ref().err(),
                "jetstream": b.jetstream.iter().map(|j| json!({
                    "grant": j.what,
                    "publish": j.publish,
                    "subscribe": j.subscribe,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let decision = match x.grant() {
        Some(g) => json!({
            "allow": true,
            "account": g.account,
            "publish": { "allow": g.publish.allow, "deny": g.publish.deny },
            "subscribe": { "allow": g.subscribe.allow, "deny": g.subscribe.deny },
            "responses": g.responses.map(|r| json!({ "max": r.max, "ttl_secs": r.ttl.as_secs() })),
            "expires_at": g.expires_at,
            "allowed_connection_types": g.connection_types,
            "bindings": g.matched.iter().map(|m| &**m).collect::<Vec<_>>(),
        }),
        None => json!({ "allow": false, "reason": x.deny_code() }),
    };
    json!({
        "signature_verified": false,
        "unverified_token": unverified,
        "provider": { "name": x.routing.provider.map(|p| &**p.name()), "note": x.routing.note },
        "identity": identity,
        "bindings": bindings,
        "decision": decision,
    })
}

// === policy tests ===

/// One policy test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    version: Option<Spanned<u64>>,
    /// Provider for tests that name none.
    provider: Option<String>,
    /// Claims every test starts from; a test's own claims override them.
    #[serde(default)]
    claims: Map<String, Value>,
    tests: Vec<TestCase>,
}

/// One test: claims in, expectations out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: Spanned<String>,
    /// Provider to route to; else by `iss`, `tid`, or the only provider.
    provider: Option<String>,
    /// Token claims; `iss`, `aud`, `tid`, `ver`, `iat`, `nbf`, `exp`, `sub` and (Entra) `azp`
    /// are filled in when absent.
    claims: Option<Map<String, Value>>,
    /// A file holding a JWT (relative to the test file), decoded without verification.
    token_file: Option<String>,
    /// Evaluation time (unix seconds); defaults to the time of the run.
    now: Option<u64>,
    /// How the client connects: standard, websocket, mqtt or leafnode. Without it, bindings
    /// restricted by `connection_types` do not match.
    connection_type: Option<Spanned<String>>,
    expect: Expect,
}

/// What a test expects.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    allow: bool,
    /// The deny code, when `allow` is false.
    reason: Option<String>,
    account: Option<String>,
    /// The exact set of bindings that match.
    bindings: Option<Vec<String>>,
    publish: Option<SubjectExpect>,
    subscribe: Option<SubjectExpect>,
    /// Whether replies are allowed.
    responses: Option<bool>,
    /// The longest the credential may live, in seconds from `now`.
    max_lifetime_secs: Option<u64>,
    /// JetStream operations that must be possible or not, e.g. `consume STREAM CONSUMER FILTER`
    /// (see [`crate::policy::jetstream_operation_subjects`]).
    jetstream: Option<SubjectExpect>,
}

/// Subjects that must be allowed or denied, with NATS wildcard semantics (deny wins).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectExpect {
    #[serde(default)]
    allowed: Vec<String>,
    #[serde(default)]
    denied: Vec<String>,
}

/// The result of one test.
#[derive(Debug)]
pub struct TestResult {
    /// `file:line` of the test.
    pub location: String,
    /// The test's name.
    pub name: String,
    /// What did not hold; empty when the test passed.
    pub failures: Vec<String>,
}

/// Finds test files: files as given, and `*.yaml` / `*.yml` directly inside directories.
pub fn test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ToolError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| ToolError::Read {
                path: path.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Runs every test of the file at `path`.
pub fn run_test_file(
    path: &Path,
    providers: &[ProviderSettings],
    policies: &PolicySet,
    now: u64,
) -> Result<Vec<TestResult>, ToolError> {
    let text = std::fs::read_to_string(path).map_err(|source| ToolError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = path.display().to_string();
    let parsed: TestFile = serde_saphyr::from_str(&text)
        .map_err(|e| ToolError::TestFile(vec![yaml_problem(&file, &e)]))?;
    if let Some(v) = &parsed.version
        && v.value != 1
    {
        return Err(ToolError::TestFile(vec![Diagnostic {
            file,
            line: v.referenced.line(),
            column: v.referenced.column(),
            message: format!(
                "unsupported test file version {}; this build reads version 1",
                v.value
            ),
        }]));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut results = Vec::with_capacity(parsed.tests.len());
    let mut problems = Vec::new();
    for case in parsed.tests {
        let at = case.name.referenced;
        let location = format!("{file}:{}", at.line());
        let claims = match (&case.claims, &case.token_file) {
            (Some(c), None) => {
                let mut all = parsed.claims.clone();
                all.extend(c.clone());
                all
            }
            (None, Some(t)) => {
                let token_path = base.join(t);
                let token =
                    std::fs::read_to_string(&token_path).map_err(|source| ToolError::Read {
                        path: token_path.clone(),
                        source,
                    })?;
                decode_unverified(&token)?
            }
            _ => {
                problems.push(Diagnostic {
                    file: file.clone(),
                    line: at.line(),
                    column: at.column(),
                    message: format!(
                        "test `{}` needs exactly one of `claims` or `token_file`",
                        case.name.value
                    ),
                });
                continue;
            }
        };
        let now = case.now.unwrap_or(now);
        // A test's own provider wins; the file's default applies only to claims without `iss`.
        let provider = case.provider.as_deref().or_else(|| {
            (!claims.contains_key("iss"))
                .then_some(parsed.provider.as_deref())
                .flatten()
        });
        let connection = match &case.connection_type {
            None => None,
            Some(t) => match ConnectionType::parse(&t.value) {
                Some(c) => Some(c),
                None => {
                    problems.push(Diagnostic {
                        file: file.clone(),
                        line: t.referenced.line(),
                        column: t.referenced.column(),
                        message: format!(
                            "`connection_type` {:?} is not one of standard, websocket, mqtt, leafnode",
                            t.value
                        ),
                    });
                    continue;
                }
            },
        };
        let lenient = case.claims.is_some();
        let x = explain(
            providers, policies, claims, provider, lenient, connection, now,
        );
        results.push(TestResult {
            location,
            name: case.name.value.clone(),
            failures: check(&case.expect, &x, now),
        });
    }
    if !problems.is_empty() {
        return Err(ToolError::TestFile(problems));
    }
    Ok(results)
}

fn check(expect: &Expect, x: &Explained<'_>, now: u64) -> Vec<String> {
    let mut failures = Vec::new();
    let grant = x.grant();
    match (expect.allow, grant) {
        (true, None) => {
            let why = match (&x.identity, &x.explanation) {
                (Some(Ok(_)), Some(e)) => e
                    .decision
                    .as_ref()
                    .err()
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                (Some(Err(e)), _) => format!("{}: {e}", e.reason().code()),
                _ => x.routing.note.clone(),
            };
            failures.push(format!("expected allow, but denied: {why}"));
            return failures;
        }
        (false, Some(g)) => {
            failures.push(format!(
                "expected deny, but allowed by bindings {}",
                names(&g.matched)
            ));
            return failures;
        }
        (false, None) => {
            if let Some(reason) = &expect.reason
                && x.deny_code() != Some(reason.as_str())
            {
                failures.push(format!(
                    "expected deny reason `{reason}`, got `{}`",
                    x.deny_code().unwrap_or("none")
                ));
            }
            return failures;
        }
        (true, Some(_)) => {}
    }
    let Some(g) = grant else { return failures };
    if expect.reason.is_some() {
        failures.push("`reason` only applies to `allow: false`".to_owned());
    }
    if let Some(account) = &expect.account
        && *account != g.account
    {
        failures.push(format!("expected account `{account}`, got `{}`", g.account));
    }
    if let Some(want) = &expect.bindings {
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let got: BTreeSet<&str> = g.matched.iter().map(|m| &**m).collect();
        if want != got {
            failures.push(format!(
                "expected bindings {}, got {}",
                want.into_iter().collect::<Vec<_>>().join(", "),
                got.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for (dir, want, perms) in [
        ("publish", &expect.publish, &g.publish),
        ("subscribe", &expect.subscribe, &g.subscribe),
    ] {
        let Some(want) = want else { continue };
        for s in &want.allowed {
            if !perms.allows(s) {
                failures.push(format!("{dir} `{s}`: expected allowed, but it is denied"));
            }
        }
        for s in &want.denied {
            if perms.allows(s) {
                failures.push(format!("{dir} `{s}`: expected denied, but it is allowed"));
            }
        }
    }
    if let Some(want) = &expect.jetstream {
        // An operation is possible when every subject it publishes to is allowed.
        let possible = |op: &str| {
            crate::policy::jetstream_operation_subjects(op)
                .map(|subjects| subjects.iter().all(|s| g.publish.allows(s)))
        };
        for (op, expected) in want
            .allowed
            .iter()
            .map(|o| (o, true))
            .chain(want.denied.iter().map(|o| (o, false)))
        {
            match possible(op) {
                Err(e) => failures.push(e),
                Ok(got) if got != expected => failures.push(format!(
                    "jetstream `{op}`: expected {}, but it is {}",
                    if expected { "allowed" } else { "denied" },
                    if got { "allowed" } else { "denied" }
                )),
                Ok(_) => {}
            }
        }
    }
    if let Some(want) = expect.responses
        && want != g.responses.is_some()
    {
        failures.push(format!(
            "expected responses {}, got {}",
            if want { "allowed" } else { "not allowed" },
            if want { "not allowed" } else { "allowed" }
        ));
    }
    if let Some(max) = expect.max_lifetime_secs
        && g.expires_at.saturating_sub(now) > max
    {
        failures.push(format!(
            "expected a lifetime of at most {max}s, got {}s",
            g.expires_at.saturating_sub(now)
        ));
    }
    failures
}

fn names(v: &[std::sync::Arc<str>]) -> String {
    v.iter().map(|m| &**m).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_payload_without_verifying() {
        let payload = BASE64URL_NOPAD.encode(br#"{"tid":"x","roles":["a"]}"#);
        let claims = decode_unverified(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(claims["tid"], "x");
        assert!(matches!(
            decode_unverified("not-a-jwt"),
            Err(ToolError::NotAJwt)
        ));
        let array = BASE64URL_NOPAD.encode(b"[1]");
        assert!(matches!(
            decode_unverified(&format!("e30.{array}.x")),
            Err(ToolError::NotAJwt)
        ));
    }

    #[test]
    fn routing_by_iss_follows_the_verifier_and_says_why() {
        const CONTOSO: &str = "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11";
        const STRANGER: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
        let providers = [
            ProviderSettings::new("contoso", CONTOSO, vec!["api://a".into()]).unwrap(),
            ProviderSettings::entra("anyone", Tenants::Any, vec!["api://b".into()])
                .unwrap()
                .with_login_host("login.partners.example")
                .unwrap(),
        ];
        let claims = |iss: String, tid: Option<&str>| {
            let mut claims = Map::new();
            claims.insert("iss".to_owned(), json!(iss));
            if let Some(tid) = tid {
                claims.insert("tid".to_owned(), json!(tid));
            }
            claims
        };
        let v2 = |host: &str, tid: &str| format!("https://{host}/{tid}/v2.0");
        let name = |r: &Routing<'_>| r.provider.map(|p| p.name().to_string());

        // An exact issuer routes even before test defaults fill its `tid`.
        let exact = route(
            &providers,
            &claims(v2("login.microsoftonline.com", CONTOSO), None),
            None,
            true,
        );
        assert_eq!(name(&exact).as_deref(), Some("contoso"), "{}", exact.note);
        assert!(
            exact.note.contains("is an issuer of provider `contoso`"),
            "{}",
            exact.note
        );

        // `tenants: any` by its cloud's issuer shape, when `tid` is the issuer's tenant.
        let any = route(
            &providers,
            &claims(v2("login.partners.example", STRANGER), Some(STRANGER)),
            None,
            false,
        );
        assert_eq!(name(&any).as_deref(), Some("anyone"), "{}", any.note);
        assert!(any.note.contains("accepts any tenant"), "{}", any.note);

        // A tenant the listed provider does not accept: no provider, and the verifier's reason.
        let refused = route(
            &providers,
            &claims(v2("login.microsoftonline.com", STRANGER), Some(STRANGER)),
            None,
            false,
        );
        assert_eq!(name(&refused), None);
        assert_eq!(
            refused.refusal.as_ref().map(|e| e.reason().code()),
            Some("tenant_not_allowed")
        );
        assert!(
            refused.note.contains(
                "matches no configured provider (token tenant is not allowed by provider `contoso`)"
            ),
            "{}",
            refused.note
        );
    }
}
