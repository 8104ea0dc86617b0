//! Evaluation: identity → [`Grant`] or [`PolicyDeny`]. Pure, no I/O, deny by default.
//!
//! Every binding whose tenant and conditions hold is merged into one grant: allows and denies
//! are unioned (so a deny of one binding also narrows the others: deny wins), response
//! permissions take the most generous limits, and the lifetime takes the strictest cap. If any
//! matched binding cannot be rendered safely, the whole evaluation is refused rather than that
//! binding dropped: dropping it would also drop its deny entries and could widen the rest.
//!
//! [`PolicySet::explain`] runs the same checks over every binding and says why each one did or
//! did not match; it is for the offline tools, not the hot path.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::compile::{Binding, ClaimMatch, Conditions, PolicySet, Templates, Tenant};
use super::connection::{ConnectionType, ConnectionTypes};
use super::ident::{Field, canonical, matches};
use super::subject::{UnsafeClaim, covers, overlaps};
use crate::deny::DenyReason;
use crate::identity::{Identity, PrincipalKind};

/// What an identity is allowed to do: always explicit allow lists, never "everything".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Target NATS account (its name in config mode).
    pub account: String,
    /// Publish permissions; `allow` may be empty (the callout then denies `>`).
    pub publish: Permissions,
    /// Subscribe permissions; entries may be `"subject queue"`.
    pub subscribe: Permissions,
    /// Permission to reply to received requests, if any role grants it.
    pub responses: Option<Responses>,
    /// When the minted credential must expire (unix seconds).
    pub expires_at: u64,
    /// Names of the bindings that matched, in load order.
    pub matched: Vec<Arc<str>>,
    /// The user JWT's `allowed_connection_types` (`WEBSOCKET`, ...): what every matched
    /// binding's `connection_types` admits; empty when none restricts it.
    pub connection_types: Vec<String>,
}

/// Allowed and denied subjects for one direction, placeholders filled in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects allowed.
    pub allow: Vec<String>,
    /// Subjects denied; deny wins over allow.
    pub deny: Vec<String>,
}

/// Response permission (`allow_responses`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Responses {
    /// How many replies per received request.
    pub max: i64,
    /// How long after the request replies are allowed.
    pub ttl: Duration,
}

/// A refusal from policy evaluation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct PolicyDeny {
    reason: DenyReason,
    detail: String,
}

/// Why one binding did or did not match, for [`PolicySet::explain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingCheck {
    /// The binding.
    pub name: Arc<str>,
    /// Its description, if the policy has one.
    pub description: Option<String>,
    /// Its tenant.
    pub tenant: Arc<str>,
    /// Its project, if any.
    pub project: Option<Arc<str>>,
    /// The roles it grants.
    pub roles: Vec<Arc<str>>,
    /// `Ok` when it matched, else why not (may quote claim values: explain output is for the
    /// operator holding the token).
    pub outcome: Result<(), String>,
    /// Its roles' JetStream grants and the subjects they became.
    pub jetstream: Vec<super::JetStreamGrant>,
}

/// Everything [`PolicySet::explain`] found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// Every binding, in load order.
    pub bindings: Vec<BindingCheck>,
    /// The decision, exactly as [`PolicySet::evaluate`] makes it.
    pub decision: Result<Grant, PolicyDeny>,
}

/// The first condition of a binding that does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mismatch {
    Tenant,
    Kind,
    AppRoles,
    Groups,
    Scopes,
    AppIds,
    ObjectIds,
    Guest,
    Claim(usize),
    /// `connection_types` does not admit how the client connects (`None`: not known).
    Connection(Option<ConnectionType>),
}

impl PolicyDeny {
    fn new(reason: DenyReason, detail: String) -> Self {
        Self { reason, detail }
    }

    /// The stable reason code.
    pub fn reason(&self) -> DenyReason {
        self.reason
    }

    /// A human explanation for the service log (never for the client). It names bindings and
    /// placeholders but never includes claim values.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl Permissions {
    /// Whether a client holding these permissions may use `subject`, which may be a wildcard
    /// subject and, for subscriptions, may carry a queue group after a space
    /// (`"jobs.> workers"`). A wildcard subject is allowed only when every subject it matches
    /// is: one allow entry must cover it and no deny entry may overlap it.
    pub fn allows(&self, subject: &str) -> bool {
        let (subject, queue) = split_queue(subject);
        let allowed = self.allow.iter().any(|entry| {
            let (s, q) = split_queue(entry);
            covers(s, subject)
                && match q {
                    None => true,
                    Some(q) => queue.is_some_and(|queue| covers(q, queue)),
                }
        });
        let denied = self.deny.iter().any(|entry| {
            let (s, q) = split_queue(entry);
            overlaps(s, subject)
                && match q {
                    None => true,
                    Some(q) => queue.is_none_or(|queue| overlaps(q, queue)),
                }
        });
        allowed && !denied
    }
}

fn split_queue(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once(' ') {
        Some((s, q)) => (s, Some(q)),
        None => (entry, None),
    }
}

impl PolicySet {
    /// Decide what `id` may do, with `now` in unix seconds, when it is not known how it
    /// connects: bindings restricted by `connection_types` do not match.
    pub fn evaluate(&self, id: &Identity, now: u64) -> Result<Grant, PolicyDeny> {
        self.evaluate_on(id, None, now)
    }

    /// Decide what `id` may do when it connects as `connection` (from the request's
    /// `client_info`).
    pub fn evaluate_on(
        &self,
        id: &Identity,
        connection: Option<ConnectionType>,
        now: u64,
    ) -> Result<Grant, PolicyDeny> {
        let mut candidates = Vec::new();
        for t in self.tenants_of(id) {
            if let Some(bucket) = self.index.buckets.get(t) {
                for role in &id.roles {
                    if let Some(b) = bucket.by_role.get(&*canonical(Field::AppRole, role)) {
                        candidates.extend_from_slice(b);
                    }
                }
                for group in &id.groups {
                    if let Some(b) = bucket.by_group.get(&*canonical(Field::Group, group)) {
                        candidates.extend_from_slice(b);
                    }
                }
                candidates.extend_from_slice(&bucket.rest);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let matched: Vec<&Binding> = candidates
            .into_iter()
            .filter_map(|i| self.bindings.get(i))
            .filter(|b| b.when.mismatch(id).is_none())
            .filter(|b| b.when.connection_types.admits(connection))
            .collect();
        self.grant(&matched, id, now)
    }

    /// Evaluate `id` and say, for every binding, why it did or did not match. The decision is
    /// made from exactly the bindings reported as matching, by the code [`Self::evaluate`] ends
    /// in, so the two cannot disagree; [`Self::evaluate`] only narrows the candidates first
    /// through the index (a property test holds the two equal).
    pub fn explain(&self, id: &Identity, now: u64) -> Explanation {
        self.explain_on(id, None, now)
    }

    /// [`Self::explain`] for a client connecting as `connection`.
    pub fn explain_on(
        &self,
        id: &Identity,
        connection: Option<ConnectionType>,
        now: u64,
    ) -> Explanation {
        let mut bindings = Vec::with_capacity(self.bindings.len());
        let mut matched = Vec::new();
        for b in &self.bindings {
            let tenant = self.tenants.get(b.tenant);
            let mismatch = match tenant {
                Some(t) if t.matches(id) => b.when.mismatch(id).or_else(|| {
                    (!b.when.connection_types.admits(connection))
                        .then_some(Mismatch::Connection(connection))
                }),
                _ => Some(Mismatch::Tenant),
            };
            if mismatch.is_none() {
                matched.push(b);
            }
            bindings.push(BindingCheck {
                name: Arc::clone(&b.name),
                description: b.description.clone(),
                tenant: tenant.map_or_else(|| Arc::from(""), |t| Arc::clone(&t.name)),
                project: b
                    .project
                    .and_then(|p| tenant?.projects.get(p))
                    .map(|p| Arc::clone(&p.name)),
                roles: b.roles.clone(),
                jetstream: b.jetstream.clone(),
                outcome: match mismatch {
                    None => Ok(()),
                    Some(m) => Err(describe(m, b, tenant, id)),
                },
            });
        }
        let decision = self.grant(&matched, id, now);
        Explanation { bindings, decision }
    }

    /// Indices of the tenants `id` belongs to.
    fn tenants_of<'a>(&'a self, id: &'a Identity) -> impl Iterator<Item = usize> + 'a {
        let by_tid = id
            .tenant
            .as_ref()
            .and_then(|t| self.index.by_tid.get(&*canonical(Field::TenantId, t)))
            .map_or(&[][..], Vec::as_slice);
        let by_provider = self
            .index
            .by_provider
            .get(&*id.provider)
            .map_or(&[][..], Vec::as_slice);
        by_tid
            .iter()
            .chain(by_provider)
            .copied()
            .filter(|&t| self.tenants.get(t).is_some_and(|t| t.matches(id)))
    }

    fn grant(&self, matched: &[&Binding], id: &Identity, now: u64) -> Result<Grant, PolicyDeny> {
        let Some(first) = matched.first() else {
            return Err(PolicyDeny::new(
                DenyReason::NoMatchingPolicy,
                "no binding matches this identity".to_owned(),
            ));
        };
        let account_of = |b: &Binding| self.tenants.get(b.tenant).map(|t| &t.account);
        let account = account_of(first).ok_or_else(internal)?;
        if let Some(other) = matched
            .iter()
            .find(|b| account_of(b).is_none_or(|a| a != account))
        {
            return Err(PolicyDeny::new(
                DenyReason::AccountConflict,
                format!(
                    "bindings `{}` and `{}` place the client in different accounts",
                    first.name, other.name
                ),
            ));
        }

        let mut publish = Permissions::default();
        let mut subscribe = Permissions::default();
        let mut responses: Option<Responses> = None;
        let mut ttl = self.default_max_ttl;
        let mut connection_types = ConnectionTypes::ANY;
        for binding in matched {
            connection_types = connection_types.intersect(binding.when.connection_types);
            let unsafe_claim = |e: UnsafeClaim| {
                PolicyDeny::new(
                    DenyReason::UnsafeClaimValue,
                    format!(
                        "binding `{}` uses {}, but the token's value {}",
                        binding.name, e.placeholder, e.problem
                    ),
                )
            };
            add(&mut publish, &binding.publish, id).map_err(unsafe_claim)?;
            add(&mut subscribe, &binding.subscribe, id).map_err(unsafe_claim)?;
            responses = super::compile::merge_responses(responses, binding.responses);
            if let Some(cap) = binding.max_ttl {
                ttl = ttl.min(cap);
            }
        }
        if connection_types.is_empty() {
            // Every matched binding admits the client's own connection type, so the
            // intersection holds at least that one; an empty list would mean "any" in the JWT.
            return Err(PolicyDeny::new(
                DenyReason::Internal,
                "the matching bindings admit no common connection type".to_owned(),
            ));
        }
        if publish.allow.is_empty() && subscribe.allow.is_empty() {
            // Compilation rejects roles without allows, so this only guards future changes: an
            // empty grant must never turn into an unrestricted user.
            return Err(PolicyDeny::new(
                DenyReason::NoMatchingPolicy,
                "matching bindings allow no subject in either direction".to_owned(),
            ));
        }
        Ok(Grant {
            account: account.to_string(),
            publish,
            subscribe,
            responses,
            expires_at: id.expires_at.min(now.saturating_add(ttl.as_secs())),
            matched: matched.iter().map(|b| Arc::clone(&b.name)).collect(),
            connection_types: connection_types.nats_values(),
        })
    }
}

fn internal() -> PolicyDeny {
    PolicyDeny::new(
        DenyReason::Internal,
        "a binding refers to a missing tenant".to_owned(),
    )
}

/// Render `templates` into `out`, skipping subjects already present.
fn add(out: &mut Permissions, templates: &Templates, id: &Identity) -> Result<(), UnsafeClaim> {
    for (list, target) in [
        (&templates.allow, &mut out.allow),
        (&templates.deny, &mut out.deny),
    ] {
        for t in list {
            let s = t.render(id)?;
            if !target.contains(&s) {
                target.push(s);
            }
        }
    }
    Ok(())
}

impl Tenant {
    pub(super) fn matches(&self, id: &Identity) -> bool {
        let tid_ok = self.tids.is_empty()
            || id
                .tenant
                .as_ref()
                .is_some_and(|t| self.tids.iter().any(|x| matches(Field::TenantId, x, t)));
        let provider_ok =
            self.providers.is_empty() || self.providers.iter().any(|p| **p == *id.provider);
        tid_ok && provider_ok
    }
}

impl Conditions {
    /// The first condition that does not hold, or `None` when the binding matches.
    fn mismatch(&self, id: &Identity) -> Option<Mismatch> {
        if self.everyone {
            return None;
        }
        // Policy values are canonical (compiled through `ident`); token values become so here.
        let any = |field: Field, want: &[String], have: &[String]| {
            want.is_empty()
                || want
                    .iter()
                    .any(|w| have.iter().any(|h| matches(field, w, h)))
        };
        let one = |field: Field, want: &[String], have: Option<&String>| {
            want.is_empty() || have.is_some_and(|h| want.iter().any(|w| matches(field, w, h)))
        };
        if self.kind.is_some_and(|k| k != id.kind) {
            return Some(Mismatch::Kind);
        }
        if !any(Field::AppRole, &self.app_roles, &id.roles) {
            return Some(Mismatch::AppRoles);
        }
        if !any(Field::Group, &self.groups, &id.groups) {
            return Some(Mismatch::Groups);
        }
        if !any(Field::Scope, &self.scopes, &id.scopes) {
            return Some(Mismatch::Scopes);
        }
        if !one(Field::AppId, &self.app_ids, id.app_id.as_ref()) {
            return Some(Mismatch::AppIds);
        }
        if !one(Field::ObjectId, &self.object_ids, id.object_id.as_ref()) {
            return Some(Mismatch::ObjectIds);
        }
        if self.guest.is_some_and(|g| g != id.guest) {
            return Some(Mismatch::Guest);
        }
        for (i, (claim, m)) in self.claims.iter().enumerate() {
            if !claim_matches(m, id.claims.get(claim)) {
                return Some(Mismatch::Claim(i));
            }
        }
        None
    }
}

fn claim_matches(m: &ClaimMatch, value: Option<&Value>) -> bool {
    let one = |v: &Value| match m {
        ClaimMatch::Equals(want) => v == want,
        ClaimMatch::Glob(pattern) => v.as_str().is_some_and(|s| glob(pattern, s)),
    };
    match value {
        None => false,
        Some(Value::Array(items)) => items.iter().any(one),
        Some(v) => one(v),
    }
}

/// `*` matches any run of characters, `?` one character; everything else is literal.
pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` and the text position it was tried at, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

fn describe(m: Mismatch, b: &Binding, tenant: Option<&Tenant>, id: &Identity) -> String {
    let list = |v: &[String]| v.join(", ");
    let opt = |v: Option<&String>| v.map_or_else(|| "none".to_owned(), Clone::clone);
    let w = &b.when;
    match m {
        Mismatch::Tenant => {
            let Some(t) = tenant else {
                return "its tenant is missing".to_owned();
            };
            let mut out = format!("token is not in tenant `{}`:", t.name);
            if !t.tids.is_empty() {
                let _ = write!(
                    out,
                    " it needs tid {} and the token has {}",
                    list(&t.tids),
                    opt(id.tenant.as_ref())
                );
            }
            if !t.providers.is_empty() {
                let _ = write!(
                    out,
                    "{} it needs provider {} and the token is from {}",
                    if t.tids.is_empty() { "" } else { ";" },
                    list(&t.providers),
                    id.provider
                );
            }
            out
        }
        Mismatch::Kind => format!(
            "needs kind `{}`; the token is of kind `{}`",
            w.kind.map_or("", PrincipalKind::as_str),
            id.kind.as_str()
        ),
        Mismatch::AppRoles => format!(
            "needs one of the app roles [{}]; the token has [{}]",
            list(&w.app_roles),
            list(&id.roles)
        ),
        Mismatch::Groups => format!(
            "needs one of the groups [{}]; the token has [{}]",
            list(&w.groups),
            list(&id.groups)
        ),
        Mismatch::Scopes => format!(
            "needs one of the scopes [{}]; the token has [{}]",
            list(&w.scopes),
            list(&id.scopes)
        ),
        Mismatch::AppIds => format!(
            "needs one of the app ids [{}]; the token's app id is {}",
            list(&w.app_ids),
            opt(id.app_id.as_ref())
        ),
        Mismatch::ObjectIds => format!(
            "needs one of the object ids [{}]; the token's object id is {}",
            list(&w.object_ids),
            opt(id.object_id.as_ref())
        ),
        Mismatch::Guest => format!(
            "needs guest: {}; the token's holder is {}a guest",
            w.guest.unwrap_or_default(),
            if id.guest { "" } else { "not " }
        ),
        Mismatch::Connection(connection) => format!(
            "needs a connection of type [{}]; the client connects {}",
            w.connection_types,
            connection.map_or_else(
                || "in a way that is not known here".to_owned(),
                |t| format!("as {t}")
            )
        ),
        Mismatch::Claim(i) => {
            let Some((claim, m)) = w.claims.get(i) else {
                return "a claim condition does not hold".to_owned();
            };
            let have = id
                .claims
                .get(claim)
                .map_or_else(|| "absent".to_owned(), Value::to_string);
            match m {
                ClaimMatch::Equals(v) => {
                    format!("needs claim `{claim}` equal to {v}; the token has {have}")
                }
                ClaimMatch::Glob(g) => {
                    format!("needs claim `{claim}` matching `{g}`; the token has {have}")
                }
            }
        }
    }
}

impl fmt::Display for Responses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "max {} within {}s", self.max, self.ttl.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testutil;

    const OTHER_TID: &str = "0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07";
    const GROUP: &str = "c3d9e1a7-5b2f-4d8e-9a61-0f4b7c2e8d15";
    const NOW: u64 = 1_000_000;

    const POLICY: &str = "
version: 1
tenants:
  - name: acme
    entra_tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41]
    account: APP
    projects: [{ name: ml }, { name: web }]
  - name: globex
    entra_tenants: [0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07]
    account: APP
  - name: initech
    providers: [okta]
    account: OTHER
roles:
  - name: producer
    publish: { allow: [\"events.>\"], deny: [\"events.admin.>\"] }
    max_ttl: 10m
  - name: reader
    subscribe: { allow: [\"events.>\"] }
    allow_responses: true
  - name: mailbox
    publish: { allow: [\"mail.u-{oid}.out.>\"] }
    subscribe: { allow: [\"mail.u-{oid}.in.>\"] }
    allow_responses: { max: 5, ttl: 1s }
  - name: inbox
    absolute: true
    subscribe: { allow: [\"_INBOX.{oid}.>\"] }
bindings:
  - name: ml-producers
    tenant: acme
    project: ml
    roles: [producer]
    when: { kind: application, app_roles: [Ml.Producer] }
  - name: ml-readers
    tenant: acme
    project: ml
    roles: [reader, inbox]
    when: { groups: [c3d9e1a7-5b2f-4d8e-9a61-0f4b7c2e8d15] }
  - name: acme-mailboxes
    tenant: acme
    roles: [mailbox]
    when: { kind: user, scopes: [Nats.Connect], guest: false }
  - name: globex-producers
    tenant: globex
    roles: [producer]
    when: { app_roles: [Ml.Producer] }
  - name: initech-contractors
    tenant: initech
    roles: [reader]
    when: { claims: { email: { glob: \"*@initech.example\" }, ver: { equals: \"2.0\" } } }
";

    fn set(text: &str) -> PolicySet {
        match crate::testutil::compile_policy(text) {
            Ok(set) => set,
            Err(e) => panic!("{e}"),
        }
    }

    fn user() -> Identity {
        Identity {
            object_id: Some("5f1d2c3b-0000-4000-8000-000000000001".into()),
            subject: "AAAAsubject".into(),
            app_id: Some("app1".into()),
            expires_at: NOW + 86_400,
            ..testutil::identity()
        }
    }

    fn app(roles: &[&str]) -> Identity {
        let mut id = user();
        id.kind = PrincipalKind::Application;
        id.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        id
    }

    #[test]
    fn a_binding_grants_its_roles_under_the_project_prefix() {
        let grant = set(POLICY).evaluate(&app(&["Ml.Producer"]), NOW).unwrap();
        assert_eq!(grant.account, "APP");
        assert_eq!(grant.publish.allow, ["acme.ml.events.>"]);
        assert_eq!(grant.publish.deny, ["acme.ml.events.admin.>"]);
        assert!(grant.subscribe.allow.is_empty());
        assert_eq!(grant.matched, [Arc::from("ml-producers")]);
        assert_eq!(grant.expires_at, NOW + 600, "the role's max_ttl caps it");
    }

    #[test]
    fn the_same_role_in_another_tenant_gets_that_tenants_prefix() {
        let mut id = app(&["Ml.Producer"]);
        id.tenant = Some(OTHER_TID.into());
        let grant = set(POLICY).evaluate(&id, NOW).unwrap();
        assert_eq!(grant.publish.allow, ["globex.events.>"]);
        assert_eq!(grant.matched, [Arc::from("globex-producers")]);
        assert!(!grant.publish.allows("acme.ml.events.x"));
    }

    #[test]
    fn conditions_must_all_hold() {
        let policies = set(POLICY);
        // A user with the app role is not an application.
        let mut id = user();
        id.roles = vec!["Ml.Producer".into()];
        assert_eq!(
            policies.evaluate(&id, NOW).unwrap_err().reason(),
            DenyReason::NoMatchingPolicy
        );
        // The mailbox binding needs the scope, and no guests.
        id.scopes = vec!["Nats.Connect".into()];
        let grant = policies.evaluate(&id, NOW).unwrap();
        assert_eq!(grant.matched, [Arc::from("acme-mailboxes")]);
        assert_eq!(
            grant.subscribe.allow,
            ["acme.mail.u-5f1d2c3b-0000-4000-8000-000000000001.in.>"]
        );
        id.guest = true;
        assert_eq!(refusal(&policies, &id), DenyReason::NoMatchingPolicy);
        // App roles are case-sensitive.
        assert_eq!(
            refusal(&policies, &app(&["ml.producer"])),
            DenyReason::NoMatchingPolicy
        );
    }

    /// Why `id` is refused; fails the test when it is admitted.
    fn refusal(policies: &PolicySet, id: &Identity) -> DenyReason {
        match policies.evaluate(id, NOW) {
            Ok(grant) => panic!("admitted with {:?}", grant.matched),
            Err(deny) => deny.reason(),
        }
    }

    #[test]
    fn group_match_with_an_absolute_inbox() {
        let mut id = user();
        id.groups = vec!["other".into(), GROUP.to_uppercase()];
        let grant = set(POLICY).evaluate(&id, NOW).unwrap();
        assert_eq!(grant.matched, [Arc::from("ml-readers")]);
        assert_eq!(
            grant.subscribe.allow,
            [
                "acme.ml.events.>",
                "_INBOX.5f1d2c3b-0000-4000-8000-000000000001.>"
            ]
        );
        assert_eq!(
            grant.responses,
            Some(Responses {
                max: 1,
                ttl: Duration::from_secs(120)
            })
        );
    }

    #[test]
    fn tenants_by_provider_and_raw_claims() {
        let policies = set(POLICY);
        let mut id = user();
        id.provider = Arc::from("okta");
        id.tenant = None;
        id.claims
            .insert("email".into(), json!("kim@initech.example"));
        id.claims.insert("ver".into(), json!("2.0"));
        let grant = policies.evaluate(&id, NOW).unwrap();
        assert_eq!(grant.account, "OTHER");
        assert_eq!(grant.subscribe.allow, ["initech.events.>"]);
        id.claims
            .insert("email".into(), json!("kim@initech.example.evil"));
        assert_eq!(refusal(&policies, &id), DenyReason::NoMatchingPolicy);
        id.claims
            .insert("email".into(), json!(["x@y", "kim@initech.example"]));
        assert!(
            policies.evaluate(&id, NOW).is_ok(),
            "any element of an array"
        );
        id.provider = Arc::from("entra");
        assert_eq!(
            refusal(&policies, &id),
            DenyReason::NoMatchingPolicy,
            "wrong provider"
        );
    }

    #[test]
    fn matching_bindings_merge() {
        let mut id = app(&["Ml.Producer"]);
        id.groups = vec![GROUP.into()];
        let grant = set(POLICY).evaluate(&id, NOW).unwrap();
        assert_eq!(
            grant.matched,
            [Arc::from("ml-producers"), Arc::from("ml-readers")]
        );
        assert_eq!(grant.publish.allow, ["acme.ml.events.>"]);
        assert_eq!(grant.subscribe.allow.len(), 2);
        assert_eq!(grant.expires_at, NOW + 600, "strictest lifetime wins");
    }

    #[test]
    fn account_conflict_is_denied() {
        let policies = set(&POLICY.replace(
            "    providers: [okta]\n",
            "    entra_tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41]\n",
        ));
        let mut id = user();
        id.groups = vec![GROUP.into()];
        id.claims
            .insert("email".into(), json!("kim@initech.example"));
        id.claims.insert("ver".into(), json!("2.0"));
        let deny = policies.evaluate(&id, NOW).unwrap_err();
        assert_eq!(deny.reason(), DenyReason::AccountConflict);
        assert!(
            deny.detail()
                .contains("`ml-readers` and `initech-contractors`"),
            "{}",
            deny.detail()
        );
    }

    #[test]
    fn expiry_never_outlives_the_token_or_the_default_cap() {
        let policies = set(POLICY);
        let mut id = app(&["Ml.Producer"]);
        id.expires_at = NOW + 60;
        assert_eq!(policies.evaluate(&id, NOW).unwrap().expires_at, NOW + 60);
        let mut reader = user();
        reader.groups = vec![GROUP.into()];
        assert_eq!(
            policies.evaluate(&reader, NOW).unwrap().expires_at,
            NOW + 3600
        );
    }

    #[test]
    fn unsafe_claim_values_refuse_the_whole_grant() {
        let policies = set(POLICY);
        for bad in ["a.b", "*", ">", "a b", "\n", "", "é"] {
            let mut id = user();
            id.scopes = vec!["Nats.Connect".into()];
            id.object_id = Some(bad.into());
            let deny = policies.evaluate(&id, NOW).unwrap_err();
            assert_eq!(deny.reason(), DenyReason::UnsafeClaimValue, "value {bad:?}");
            // The detail names the placeholder, never its (attacker-controlled) value.
            assert!(deny.detail().contains("{oid}"), "{}", deny.detail());
            assert!(!deny.detail().contains("a.b") && !deny.detail().contains('é'));
        }
    }

    #[test]
    fn explain_says_why_each_binding_did_not_match() {
        let policies = set(POLICY);
        let x = policies.explain(&app(&["Ml.Producer"]), NOW);
        assert!(x.decision.is_ok());
        let outcome = |name: &str| {
            x.bindings
                .iter()
                .find(|b| &*b.name == name)
                .unwrap()
                .outcome
                .clone()
        };
        assert_eq!(outcome("ml-producers"), Ok(()));
        assert_eq!(
            outcome("ml-readers").unwrap_err(),
            format!("needs one of the groups [{GROUP}]; the token has []")
        );
        assert_eq!(
            outcome("acme-mailboxes").unwrap_err(),
            "needs kind `user`; the token is of kind `application`"
        );
        assert!(
            outcome("globex-producers")
                .unwrap_err()
                .starts_with("token is not in tenant `globex`: it needs tid"),
        );
        assert!(
            outcome("initech-contractors")
                .unwrap_err()
                .contains("needs provider okta")
        );
    }

    #[test]
    fn permissions_follow_nats_semantics_with_deny_winning() {
        let p = Permissions {
            allow: vec!["a.>".into(), "q.* workers".into()],
            deny: vec!["a.secret.>".into(), "a.*.x".into()],
        };
        assert!(p.allows("a.b"));
        assert!(p.allows("a.b.c"));
        assert!(!p.allows("a.secret.k"));
        assert!(!p.allows("a.b.x"));
        assert!(!p.allows("a.>"), "partly denied");
        assert!(!p.allows("b"));
        assert!(p.allows("q.1 workers"));
        assert!(!p.allows("q.1"));
        assert!(!p.allows("q.1 other"));
        assert!(p.allows("a.b workers"), "a plain allow covers any queue");
        let queue_deny = Permissions {
            allow: vec![">".into()],
            deny: vec!["j.* bad".into()],
        };
        assert!(queue_deny.allows("j.1 good"));
        assert!(!queue_deny.allows("j.1 bad"));
        assert!(
            !queue_deny.allows("j.1"),
            "a plain subscription would join the queue subjects"
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*@initech.example", "kim@initech.example"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b", "a"));
        assert!(!glob("*@initech.example", "kim@initech.example.evil"));
    }
}
