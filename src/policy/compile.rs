//! Compilation: policy text → validated, indexed [`PolicySet`].
//!
//! Compilation is pure and reports every problem at once. serde stops at the first error in
//! a document, so when a file fails to deserialize, each tenant, role and binding is
//! deserialized again on its own (the rest of the file blanked out, positions kept) to find the
//! errors in later entries too. Names are global across files, so tenants, roles and bindings
//! may be split over several files of one directory.
//!
//! Isolation is decided here, once: each binding's roles are instantiated under the binding's
//! tenant or project prefix into one precompiled grant, so evaluation cannot forget a prefix.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_saphyr::{DefaultMessageFormatter, Location, MessageFormatter, Spanned};

use super::eval::Responses;
use super::ident::{Field, canonical, is_guid};
use super::jetstream::{self, JetStreamGrant, RoleJetStream};
use super::model::{
    Document, Outline, RawBinding, RawKind, RawPermissions, RawResponses, RawRole, RawTenant,
    RawWhen, SpannedList,
};
use super::subject::{Kind, Placeholder, RoleTemplate, SubjectTemplate, USER_ONLY_CLAIMS};
use super::{CompileOptions, Diagnostic, PolicyErrors, PolicySource};
use crate::duration::parse_duration;
use crate::identity::PrincipalKind;

/// The only policy format version this build reads.
const SUPPORTED_VERSION: u64 = 1;

/// `allow_responses: true` spells out the NATS server defaults (1 reply within 2 minutes).
const DEFAULT_RESPONSES: Responses = Responses {
    max: 1,
    ttl: Duration::from_secs(120),
};

/// Compiled, validated policies, ready for [`PolicySet::evaluate`].
#[derive(Debug)]
pub struct PolicySet {
    pub(super) tenants: Vec<Tenant>,
    pub(super) roles: Vec<Arc<str>>,
    pub(super) bindings: Vec<Binding>,
    pub(super) index: Index,
    pub(super) default_max_ttl: Duration,
}

impl PolicySet {
    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// True when there are no bindings (every identity is denied).
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Tenant names in load order.
    pub fn tenant_names(&self) -> Vec<&str> {
        self.tenants.iter().map(|t| &*t.name).collect()
    }

    /// Role names in load order.
    pub fn role_names(&self) -> Vec<&str> {
        self.roles.iter().map(|r| &**r).collect()
    }

    /// Binding names in load order.
    pub fn binding_names(&self) -> Vec<&str> {
        self.bindings.iter().map(|b| &*b.name).collect()
    }
}

/// One compiled tenant.
#[derive(Debug)]
pub(super) struct Tenant {
    pub(super) name: Arc<str>,
    /// Lowercase Entra tenant GUIDs; empty when the tenant is chosen by provider only.
    pub(super) tids: Vec<String>,
    /// Provider names; empty means any provider.
    pub(super) providers: Vec<String>,
    pub(super) account: Arc<str>,
    pub(super) prefix: String,
    pub(super) projects: Vec<Project>,
}

/// One compiled project.
#[derive(Debug)]
pub(super) struct Project {
    pub(super) name: Arc<str>,
    /// The full prefix: tenant prefix, then the project's own.
    pub(super) prefix: String,
}

/// One compiled binding: its conditions and the merged, prefixed grant of its roles.
#[derive(Debug)]
pub(super) struct Binding {
    pub(super) name: Arc<str>,
    pub(super) description: Option<String>,
    pub(super) tenant: usize,
    pub(super) project: Option<usize>,
    pub(super) roles: Vec<Arc<str>>,
    pub(super) when: Conditions,
    pub(super) publish: Templates,
    pub(super) subscribe: Templates,
    pub(super) responses: Option<Responses>,
    pub(super) max_ttl: Option<Duration>,
    /// The JetStream grants of its roles and the subjects they became (also in the templates).
    pub(super) jetstream: Vec<JetStreamGrant>,
}

/// Conditions on the token; all must hold, and a non-empty list holds when any value is present.
#[derive(Debug, Default)]
pub(super) struct Conditions {
    pub(super) everyone: bool,
    pub(super) kind: Option<PrincipalKind>,
    pub(super) app_roles: Vec<String>,
    pub(super) groups: Vec<String>,
    pub(super) scopes: Vec<String>,
    pub(super) app_ids: Vec<String>,
    pub(super) object_ids: Vec<String>,
    pub(super) guest: Option<bool>,
    pub(super) claims: Vec<(String, ClaimMatch)>,
    /// How the client may connect (`ANY` when the binding says nothing).
    pub(super) connection_types: super::connection::ConnectionTypes,
}

/// A condition on a raw claim; for an array claim, any element may match.
#[derive(Debug)]
pub(super) enum ClaimMatch {
    Equals(serde_json::Value),
    Glob(String),
}

/// Allow and deny templates for one direction.
#[derive(Debug, Default)]
pub(super) struct Templates {
    pub(super) allow: Vec<SubjectTemplate>,
    pub(super) deny: Vec<SubjectTemplate>,
}

/// Tenants by Entra tenant id (or by provider, for tenants without ids), then bindings by the
/// app role or group they require, so evaluation only looks at bindings that can match.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) by_tid: HashMap<String, Vec<usize>>,
    pub(super) by_provider: HashMap<String, Vec<usize>>,
    /// One bucket per tenant, by tenant index.
    pub(super) buckets: Vec<Bucket>,
}

/// Binding indices (into `PolicySet::bindings`) of one tenant.
#[derive(Debug, Default)]
pub(super) struct Bucket {
    /// Bindings with `app_roles`, under each role.
    pub(super) by_role: HashMap<String, Vec<usize>>,
    /// Bindings with `groups` but no `app_roles`, under each group.
    pub(super) by_group: HashMap<String, Vec<usize>>,
    /// Bindings with neither.
    pub(super) rest: Vec<usize>,
}

impl Index {
    fn build(tenants: &[Tenant], bindings: &[Binding]) -> Self {
        let mut index = Self {
            buckets: tenants.iter().map(|_| Bucket::default()).collect(),
            ..Self::default()
        };
        for (i, tenant) in tenants.iter().enumerate() {
            if tenant.tids.is_empty() {
                for p in &tenant.providers {
                    index.by_provider.entry(p.clone()).or_default().push(i);
                }
            }
            for tid in &tenant.tids {
                index.by_tid.entry(tid.clone()).or_default().push(i);
            }
        }
        for (i, binding) in bindings.iter().enumerate() {
            let Some(bucket) = index.buckets.get_mut(binding.tenant) else {
                continue;
            };
            // All conditions must hold, so indexing under one of them (roles first) is enough.
            if !binding.when.app_roles.is_empty() {
                for role in &binding.when.app_roles {
                    bucket.by_role.entry(role.clone()).or_default().push(i);
                }
            } else if !binding.when.groups.is_empty() {
                for group in &binding.when.groups {
                    bucket.by_group.entry(group.clone()).or_default().push(i);
                }
            } else {
                bucket.rest.push(i);
            }
        }
        index
    }
}

/// A raw entry and the index of the source it came from.
struct Entry<T> {
    source: usize,
    raw: T,
}

/// Compile policy sources into one [`PolicySet`], or report every problem found.
pub fn compile(sources: &[PolicySource], opts: &CompileOptions) -> Result<PolicySet, PolicyErrors> {
    let mut c = Compiler {
        sources,
        opts,
        broken_tenants: Vec::new(),
        broken_roles: Vec::new(),
        errors: Vec::new(),
        consumers: jetstream::Consumers::default(),
    };
    let mut raw_tenants = Vec::new();
    let mut raw_roles = Vec::new();
    let mut raw_bindings = Vec::new();
    for (si, source) in sources.iter().enumerate() {
        let doc = c.parse_source(si, source);
        raw_tenants.extend(doc.tenants.into_iter().map(|raw| Entry { source: si, raw }));
        raw_roles.extend(doc.roles.into_iter().map(|raw| Entry { source: si, raw }));
        raw_bindings.extend(
            doc.bindings
                .into_iter()
                .map(|raw| Entry { source: si, raw }),
        );
    }

    let tenant_names = c.unique_names(
        "tenant",
        raw_tenants.iter().map(|t| (t.source, &t.raw.name)),
    );
    let role_names = c.unique_names("role", raw_roles.iter().map(|r| (r.source, &r.raw.name)));
    c.unique_names(
        "binding",
        raw_bindings.iter().map(|b| (b.source, &b.raw.name)),
    );

    let tenants: Vec<Option<Tenant>> = raw_tenants.iter().map(|t| c.tenant(t)).collect();
    c.check_prefix_overlaps(&raw_tenants, &tenants);
    let roles: Vec<Option<Role>> = raw_roles.iter().map(|r| c.role(r)).collect();

    let tenant_by_name: HashMap<&str, usize> = tenant_names;
    let role_by_name: HashMap<&str, usize> = role_names;
    let mut bindings = Vec::new();
    for b in &raw_bindings {
        if let Some(binding) = c.binding(b, &tenants, &tenant_by_name, &roles, &role_by_name) {
            bindings.push(binding);
        }
    }

    if !c.errors.is_empty() {
        let mut errors = c.errors;
        errors.sort_by_key(|(si, e)| (*si, e.line, e.column));
        return Err(PolicyErrors(errors.into_iter().map(|(_, e)| e).collect()));
    }
    let tenants: Vec<Tenant> = tenants.into_iter().flatten().collect();
    let index = Index::build(&tenants, &bindings);
    Ok(PolicySet {
        tenants,
        roles: roles.into_iter().flatten().map(|r| r.name).collect(),
        bindings,
        index,
        default_max_ttl: opts.default_max_ttl,
    })
}

/// A compiled role: templates not yet placed under a prefix.
#[derive(Debug)]
struct Role {
    name: Arc<str>,
    absolute: bool,
    publish: RoleTemplates,
    subscribe: RoleTemplates,
    queues: Vec<(RoleTemplate, RoleTemplate)>,
    responses: Option<Responses>,
    max_ttl: Option<Duration>,
    jetstream: Option<RoleJetStream>,
}

#[derive(Debug, Default)]
struct RoleTemplates {
    allow: Vec<RoleTemplate>,
    deny: Vec<RoleTemplate>,
}

impl Role {
    fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        let lists = [
            &self.publish.allow,
            &self.publish.deny,
            &self.subscribe.allow,
            &self.subscribe.deny,
        ];
        lists
            .into_iter()
            .flatten()
            .chain(self.queues.iter().flat_map(|(s, g)| [s, g]))
            .flat_map(RoleTemplate::placeholders)
            .chain(self.jetstream.iter().flat_map(RoleJetStream::placeholders))
    }
}

struct Compiler<'a> {
    sources: &'a [PolicySource],
    opts: &'a CompileOptions,
    /// Names of tenants and roles that failed to deserialize: references to them are not
    /// reported again as undefined.
    broken_tenants: Vec<String>,
    broken_roles: Vec<String>,
    /// Problems with the index of the source they are in, for sorting.
    errors: Vec<(usize, Diagnostic)>,
    /// JetStream consumers granted so far, to keep bindings that share one consistent.
    consumers: jetstream::Consumers,
}

impl<'a> Compiler<'a> {
    fn file(&self, si: usize) -> &'a str {
        self.sources.get(si).map_or("", |s| s.name.as_str())
    }

    fn err(&mut self, si: usize, at: Location, message: String) {
        let file = self.file(si).to_owned();
        self.errors.push((
            si,
            Diagnostic {
                file,
                line: at.line(),
                column: at.column(),
                message,
            },
        ));
    }

    fn whole_file_err(&mut self, si: usize, message: String) {
        let file = self.file(si).to_owned();
        self.errors.push((
            si,
            Diagnostic {
                file,
                line: 1,
                column: 1,
                message,
            },
        ));
    }

    // === parsing ===

    /// Deserialize one file, collecting syntax, shape and version errors.
    fn parse_source(&mut self, si: usize, source: &PolicySource) -> Document {
        let first = match serde_saphyr::from_str::<Document>(&source.text) {
            Ok(doc) => {
                self.check_version(si, doc.version.as_ref());
                return doc;
            }
            Err(e) => yaml_error(source, &e),
        };
        let mut doc = Document {
            version: None,
            tenants: Vec::new(),
            roles: Vec::new(),
            bindings: Vec::new(),
        };

        // The document is broken somewhere. If its top level is sound, deserialize each entry
        // on its own so that problems in later entries are reported too.
        let Ok(outline) = serde_saphyr::from_str::<Outline>(&source.text) else {
            self.errors.push((si, first));
            return doc;
        };
        self.check_version(si, outline.version.as_ref());
        let mut extra = Vec::new();
        let mut broken = Vec::new();
        doc.tenants = reparse(source, &outline.tenants, &mut extra, &mut broken);
        self.broken_tenants.append(&mut broken);
        doc.roles = reparse(source, &outline.roles, &mut extra, &mut broken);
        self.broken_roles.append(&mut broken);
        doc.bindings = reparse(source, &outline.bindings, &mut extra, &mut broken);
        // serde stopped at `first`, so anything isolation finds before it is an artefact of the
        // blanking (for example an alias whose anchor was blanked out), not a real problem.
        let first_pos = (first.line, first.column);
        extra.retain(|e| (e.line, e.column) > first_pos);
        self.errors.push((si, first));
        self.errors.extend(extra.into_iter().map(|e| (si, e)));
        doc
    }

    fn check_version(&mut self, si: usize, version: Option<&Spanned<serde_json::Value>>) {
        match version {
            None => self.whole_file_err(
                si,
                format!("missing `version`; this build reads version {SUPPORTED_VERSION}"),
            ),
            Some(v) if v.value.as_u64() == Some(SUPPORTED_VERSION) => {}
            Some(v) => self.err(
                si,
                v.referenced,
                format!(
                    "unsupported version {}; this build reads version {SUPPORTED_VERSION}",
                    escape(&v.value.to_string())
                ),
            ),
        }
    }

    // === names ===

    /// Reports names defined more than once (at every definition) and returns the first
    /// definition of each name, by position in the iteration.
    fn unique_names<'n>(
        &mut self,
        what: &str,
        names: impl Iterator<Item = (usize, &'n Spanned<String>)>,
    ) -> HashMap<&'n str, usize> {
        let mut first: HashMap<&'n str, (usize, usize, Location)> = HashMap::new();
        for (i, (si, name)) in names.enumerate() {
            let here = name.referenced;
            match first.get(name.value.as_str()) {
                Some(&(_, first_si, first_at)) => {
                    let message = format!(
                        "duplicate {what} name `{}`; also defined at {}:{}:{}",
                        escape(&name.value),
                        self.file(first_si),
                        first_at.line(),
                        first_at.column()
                    );
                    self.err(si, here, message);
                    let message = format!(
                        "{what} name `{}` is defined again at {}:{}:{}",
                        escape(&name.value),
                        self.file(si),
                        here.line(),
                        here.column()
                    );
                    self.err(first_si, first_at, message);
                }
                None => {
                    first.insert(&name.value, (i, si, here));
                }
            }
        }
        first.into_iter().map(|(k, (i, _, _))| (k, i)).collect()
    }

    fn check_entry_name(&mut self, si: usize, what: &str, name: &Spanned<String>) {
        let ok = !name.value.is_empty()
            && name.value.len() <= 128
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
        if !ok {
            self.err(
                si,
                name.referenced,
                format!(
                    "{what} name `{}` must be 1 to 128 ascii letters, digits, `-`, `_`, `.`, `:` or `/`",
                    escape(&name.value)
                ),
            );
        }
    }

    // === tenants ===

    fn tenant(&mut self, from: &Entry<RawTenant>) -> Option<Tenant> {
        let (si, raw) = (from.source, &from.raw);
        let before = self.errors.len();
        if !is_token(&raw.name.value) {
            self.err(
                si,
                raw.name.referenced,
                format!(
                    "tenant name `{}` must be one subject token of 1 to 64 ascii letters, digits, `-` or `_`, because it is the default prefix and fills {{tenant}}",
                    escape(&raw.name.value)
                ),
            );
        }
        let tids = self.values(si, "entra_tenants", raw.entra_tenants.as_ref(), |v| {
            is_guid(v).then(|| canonical(Field::TenantId, v).into_owned())
        });
        let providers = self.values(si, "providers", raw.providers.as_ref(), |v| {
            (!v.is_empty() && !v.chars().any(char::is_control)).then(|| v.to_owned())
        });
        if let Some(list) = &raw.providers
            && !self.opts.providers.is_empty()
        {
            for p in &list.value {
                if !self.opts.providers.contains(&p.value) {
                    self.err(
                        si,
                        p.referenced,
                        format!(
                            "provider `{}` is not configured; configured providers are {}",
                            escape(&p.value),
                            self.opts.providers.join(", ")
                        ),
                    );
                }
            }
        }
        if raw.entra_tenants.is_none() && raw.providers.is_none() {
            self.err(
                si,
                raw.name.referenced,
                format!(
                    "tenant `{}` says neither `entra_tenants` nor `providers`; one of them decides which tokens belong to it",
                    escape(&raw.name.value)
                ),
            );
        }
        self.check_account(si, &raw.account);
        let prefix = match &raw.prefix {
            Some(p) => self.prefix(si, p).unwrap_or_default(),
            None => raw.name.value.clone(),
        };
        let mut projects: Vec<Project> = Vec::new();
        let mut seen: HashMap<&str, Location> = HashMap::new();
        for p in &raw.projects {
            if !is_token(&p.name.value) {
                self.err(
                    si,
                    p.name.referenced,
                    format!(
                        "project name `{}` must be one subject token of 1 to 64 ascii letters, digits, `-` or `_`",
                        escape(&p.name.value)
                    ),
                );
            }
            if let Some(first) = seen.insert(&p.name.value, p.name.referenced) {
                self.err(
                    si,
                    p.name.referenced,
                    format!(
                        "duplicate project `{}` in tenant `{}`; also defined at line {}",
                        escape(&p.name.value),
                        escape(&raw.name.value),
                        first.line()
                    ),
                );
            }
            let own = match &p.prefix {
                Some(pp) => self.prefix(si, pp).unwrap_or_default(),
                None => p.name.value.clone(),
            };
            let full = format!("{prefix}.{own}");
            if let Some(other) = projects.iter().find(|o| prefixes_overlap(&o.prefix, &full)) {
                self.err(
                    si,
                    p.prefix.as_ref().map_or(p.name.referenced, |x| x.referenced),
                    format!(
                        "project `{}` has prefix `{full}`, which overlaps the prefix `{}` of project `{}`; sibling projects must not share subjects",
                        escape(&p.name.value),
                        other.prefix,
                        other.name
                    ),
                );
            }
            projects.push(Project {
                name: Arc::from(p.name.value.as_str()),
                prefix: full,
            });
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Tenant {
            name: Arc::from(raw.name.value.as_str()),
            tids,
            providers,
            account: Arc::from(raw.account.value.as_str()),
            prefix,
            projects,
        })
    }

    /// Two tenants in one account must not share subjects.
    fn check_prefix_overlaps(&mut self, raw: &[Entry<RawTenant>], tenants: &[Option<Tenant>]) {
        for (i, a) in tenants.iter().enumerate() {
            let Some(a) = a else { continue };
            for (j, b) in tenants.iter().enumerate().skip(i + 1) {
                let Some(b) = b else { continue };
                if a.account == b.account && prefixes_overlap(&a.prefix, &b.prefix) {
                    let Some(at) = raw.get(j) else { continue };
                    let loc = at
                        .raw
                        .prefix
                        .as_ref()
                        .map_or(at.raw.name.referenced, |p| p.referenced);
                    self.err(
                        at.source,
                        loc,
                        format!(
                            "tenant `{}` has prefix `{}`, which overlaps the prefix `{}` of tenant `{}` in the same account `{}`; tenants in one account must not share subjects",
                            b.name, b.prefix, a.prefix, a.name, a.account
                        ),
                    );
                }
            }
        }
    }

    fn prefix(&mut self, si: usize, p: &Spanned<String>) -> Option<String> {
        let ok = !p.value.is_empty() && p.value.split('.').all(is_token);
        if ok {
            Some(p.value.clone())
        } else {
            self.err(
                si,
                p.referenced,
                format!(
                    "prefix `{}` must be literal subject tokens of ascii letters, digits, `-` or `_`, separated by `.`",
                    escape(&p.value)
                ),
            );
            None
        }
    }

    fn check_account(&mut self, si: usize, account: &Spanned<String>) {
        if account.value.is_empty()
            || account
                .value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            self.err(
                si,
                account.referenced,
                format!(
                    "account `{}` is empty or contains whitespace",
                    escape(&account.value)
                ),
            );
        } else if self.opts.forbidden_accounts.contains(&account.value) {
            self.err(
                si,
                account.referenced,
                format!(
                    "account `{}` is the system or callout account; tenants may not use it",
                    escape(&account.value)
                ),
            );
        } else if !self.opts.accounts.is_empty() && !self.opts.accounts.contains(&account.value) {
            self.err(
                si,
                account.referenced,
                format!(
                    "account `{}` is not one of the configured accounts ({})",
                    escape(&account.value),
                    self.opts.accounts.join(", ")
                ),
            );
        }
    }

    /// Checks a list of values with `convert` (which returns `None` for a bad value).
    fn values(
        &mut self,
        si: usize,
        field: &str,
        list: Option<&SpannedList>,
        convert: impl Fn(&str) -> Option<String>,
    ) -> Vec<String> {
        let Some(list) = list else {
            return Vec::new();
        };
        if list.value.is_empty() {
            self.err(
                si,
                list.referenced,
                format!("`{field}` is empty and can never match; remove it or list values"),
            );
        }
        let mut out = Vec::with_capacity(list.value.len());
        for v in &list.value {
            match convert(&v.value) {
                Some(converted) => out.push(converted),
                None => self.err(
                    si,
                    v.referenced,
                    format!("`{field}` value `{}` is not valid here", escape(&v.value)),
                ),
            }
        }
        out
    }

    // === roles ===

    fn role(&mut self, from: &Entry<RawRole>) -> Option<Role> {
        let (si, raw) = (from.source, &from.raw);
        let before = self.errors.len();
        self.check_entry_name(si, "role", &raw.name);
        let absolute = raw.absolute.as_ref().is_some_and(|a| a.value);
        let kind = if absolute {
            Kind::Absolute
        } else {
            Kind::Relative
        };
        let publish = self.permissions(si, raw.publish.as_ref(), "publish", kind);
        let subscribe = self.permissions(si, raw.subscribe.as_ref(), "subscribe", kind);
        if let Some(q) = raw.publish.as_ref().and_then(|p| p.queues.as_ref()) {
            self.err(
                si,
                q.referenced,
                "`queues` belongs under `subscribe`; publishing has no queue groups".to_owned(),
            );
        }
        let mut queues = Vec::new();
        for q in raw
            .subscribe
            .as_ref()
            .and_then(|s| s.queues.as_ref())
            .map_or(&[][..], |q| &q.value)
        {
            let subject = self.template(si, &q.subject, "subscribe queue subject", kind);
            let group = self.template(si, &q.group, "queue group", Kind::Queue);
            if let (Some(s), Some(g)) = (subject, group) {
                queues.push((s, g));
            }
        }
        let jetstream =
            raw.jetstream
                .as_ref()
                .and_then(|js| match jetstream::compile_role(js, absolute) {
                    Ok(js) => Some(js),
                    Err(problems) => {
                        for (at, message) in problems {
                            self.err(si, at, message);
                        }
                        None
                    }
                });
        let has_jetstream = jetstream.as_ref().is_some_and(|j| !j.is_empty())
            || raw
                .jetstream
                .as_ref()
                .is_some_and(|j| !(j.value.streams.is_empty() && j.value.kv.is_empty()));
        if publish.allow.is_empty()
            && subscribe.allow.is_empty()
            && queues.is_empty()
            && !has_jetstream
        {
            let nothing_written = raw.publish.as_ref().is_none_or(|p| p.allow.is_empty())
                && raw.subscribe.as_ref().is_none_or(|s| {
                    s.allow.is_empty() && s.queues.as_ref().is_none_or(|q| q.value.is_empty())
                });
            if nothing_written {
                self.err(
                    si,
                    raw.name.referenced,
                    format!(
                        "role `{}` allows nothing: neither `publish.allow`, `subscribe.allow`, `subscribe.queues` nor `jetstream` has a subject",
                        escape(&raw.name.value)
                    ),
                );
            }
        }
        let responses = raw
            .allow_responses
            .as_ref()
            .and_then(|r| self.responses(si, r));
        let max_ttl = raw
            .max_ttl
            .as_ref()
            .and_then(|t| match parse_duration(&t.value) {
                Ok(d) if d >= Duration::from_secs(1) => Some(d),
                Ok(_) => {
                    self.err(si, t.referenced, "max_ttl must be at least 1s".to_owned());
                    None
                }
                Err(e) => {
                    self.err(si, t.referenced, format!("bad max_ttl: {e}"));
                    None
                }
            });
        if self.errors.len() > before {
            return None;
        }
        Some(Role {
            name: Arc::from(raw.name.value.as_str()),
            absolute,
            publish,
            subscribe,
            queues,
            responses,
            max_ttl,
            jetstream,
        })
    }

    fn permissions(
        &mut self,
        si: usize,
        raw: Option<&RawPermissions>,
        dir: &str,
        kind: Kind,
    ) -> RoleTemplates {
        let mut out = RoleTemplates::default();
        let Some(raw) = raw else {
            return out;
        };
        for subject in &raw.allow {
            if let Some(t) = self.template(si, subject, &format!("{dir} allow subject"), kind) {
                out.allow.push(t);
            }
        }
        for subject in &raw.deny {
            if let Some(t) = self.template(si, subject, &format!("{dir} deny subject"), kind) {
                out.deny.push(t);
            }
        }
        out
    }

    fn template(
        &mut self,
        si: usize,
        raw: &Spanned<String>,
        what: &str,
        kind: Kind,
    ) -> Option<RoleTemplate> {
        match RoleTemplate::parse(&raw.value, kind) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(
                    si,
                    raw.referenced,
                    format!("{what} `{}` {e}", escape(&raw.value)),
                );
                None
            }
        }
    }

    fn responses(&mut self, si: usize, raw: &Spanned<RawResponses>) -> Option<Responses> {
        match &raw.value {
            RawResponses::Flag(false) => None,
            RawResponses::Flag(true) => Some(DEFAULT_RESPONSES),
            RawResponses::Limits(limits) => {
                let mut out = DEFAULT_RESPONSES;
                if let Some(max) = &limits.max {
                    if max.value < 1 {
                        self.err(
                            si,
                            max.referenced,
                            "allow_responses max must be at least 1".to_owned(),
                        );
                    }
                    out.max = max.value;
                }
                if let Some(ttl) = &limits.ttl {
                    match parse_duration(&ttl.value) {
                        Ok(d) if d.is_zero() => self.err(
                            si,
                            ttl.referenced,
                            "allow_responses ttl must be greater than zero".to_owned(),
                        ),
                        Ok(d) => out.ttl = d,
                        Err(e) => {
                            self.err(si, ttl.referenced, format!("bad allow_responses ttl: {e}"));
                        }
                    }
                }
                Some(out)
            }
        }
    }

    // === bindings ===

    fn binding(
        &mut self,
        from: &Entry<RawBinding>,
        tenants: &[Option<Tenant>],
        tenant_by_name: &HashMap<&str, usize>,
        roles: &[Option<Role>],
        role_by_name: &HashMap<&str, usize>,
    ) -> Option<Binding> {
        let (si, raw) = (from.source, &from.raw);
        let before = self.errors.len();
        let name = escape(&raw.name.value);
        self.check_entry_name(si, "binding", &raw.name);

        let tenant_index = tenant_by_name.get(raw.tenant.value.as_str()).copied();
        if tenant_index.is_none() && !self.broken_tenants.contains(&raw.tenant.value) {
            self.err(
                si,
                raw.tenant.referenced,
                format!(
                    "binding `{name}` names tenant `{}`, which is not defined",
                    escape(&raw.tenant.value)
                ),
            );
        }
        // A tenant with its own problems was already reported; stay quiet about it here.
        let tenant = tenant_index
            .and_then(|i| tenants.get(i))
            .and_then(Option::as_ref);
        let project = match (&raw.project, tenant) {
            (Some(p), Some(t)) => {
                let found = t.projects.iter().position(|x| *x.name == p.value);
                if found.is_none() {
                    let known: Vec<&str> = t.projects.iter().map(|x| &*x.name).collect();
                    self.err(
                        si,
                        p.referenced,
                        format!(
                            "binding `{name}` names project `{}`, which tenant `{}` does not define{}",
                            escape(&p.value),
                            t.name,
                            if known.is_empty() {
                                String::new()
                            } else {
                                format!("; its projects are {}", known.join(", "))
                            }
                        ),
                    );
                }
                found
            }
            _ => None,
        };

        let when = self.conditions(si, &raw.name, raw.when.as_ref());
        let app_only_possible = when.kind != Some(PrincipalKind::User)
            && when.scopes.is_empty()
            && when.guest != Some(true)
            && !when
                .claims
                .iter()
                .any(|(c, _)| USER_ONLY_CLAIMS.contains(&c.as_str()));

        if raw.roles.value.is_empty() {
            self.err(
                si,
                raw.roles.referenced,
                format!("binding `{name}` grants no roles; list at least one"),
            );
        }
        let mut bound: Vec<&Role> = Vec::new();
        let mut role_names = Vec::new();
        let mut role_refs = Vec::new();
        for r in &raw.roles.value {
            let Some(&ri) = role_by_name.get(r.value.as_str()) else {
                if self.broken_roles.contains(&r.value) {
                    continue;
                }
                self.err(
                    si,
                    r.referenced,
                    format!(
                        "binding `{name}` grants role `{}`, which is not defined",
                        escape(&r.value)
                    ),
                );
                continue;
            };
            let Some(role) = roles.get(ri).and_then(Option::as_ref) else {
                continue;
            };
            for p in role.placeholders() {
                if *p == Placeholder::Project && raw.project.is_none() {
                    self.err(
                        si,
                        r.referenced,
                        format!(
                            "role `{}` uses {{project}}, but binding `{name}` names no project",
                            role.name
                        ),
                    );
                }
                if let Some(claim) = p.claim_name()
                    && app_only_possible
                    && USER_ONLY_CLAIMS.contains(&claim)
                {
                    self.err(
                        si,
                        r.referenced,
                        format!(
                            "role `{}` uses {p}, which app-only tokens never carry, but binding `{name}` can match app-only tokens; add `kind: user` to its `when`",
                            role.name
                        ),
                    );
                }
            }
            if let (Some(js), Some(t)) = (&role.jetstream, tenant) {
                let prefix = project
                    .and_then(|p| t.projects.get(p))
                    .map_or(t.prefix.as_str(), |p| p.prefix.as_str());
                let sharing: Vec<&str> = (tenants.iter().flatten())
                    .filter(|o| o.account == t.account && o.name != t.name)
                    .map(|o| &*o.name)
                    .collect();
                let shared = (&*t.account, &sharing[..]);
                let problems = jetstream::binding_problems(js, &name, &r.value, prefix, shared);
                for message in problems {
                    self.err(si, r.referenced, message);
                }
            }
            bound.push(role);
            role_refs.push(r.referenced);
            role_names.push(Arc::clone(&role.name));
        }

        if self.errors.len() > before {
            return None;
        }
        let (tenant_index, tenant) = (tenant_index?, tenant?);
        let project_ref = project.and_then(|p| tenant.projects.get(p));
        let prefix = project_ref.map_or(tenant.prefix.as_str(), |p| p.prefix.as_str());
        let project_name = project_ref.map(|p| &*p.name);
        let place = |role: &Role, t: &RoleTemplate| {
            let prefix = (!role.absolute).then_some(prefix);
            t.instantiate(prefix, &tenant.name, project_name)
        };
        let mut publish = Templates::default();
        let mut subscribe = Templates::default();
        let mut responses: Option<Responses> = None;
        let mut max_ttl: Option<Duration> = None;
        let mut js_grants = Vec::new();
        for (role, at) in bound.iter().zip(&role_refs) {
            if let Some(js) = &role.jetstream {
                let i = jetstream::instantiate(js, prefix, &tenant.name, project_name);
                publish.allow.extend(i.publish);
                subscribe.allow.extend(i.subscribe);
                js_grants.extend(i.views);
                for c in i.consumers {
                    let place = format!("{}:{}:{}", self.file(si), at.line(), at.column());
                    if let Err(message) = self.consumers.claim(&tenant.account, &name, place, c) {
                        self.err(si, *at, message);
                    }
                }
            }
            publish
                .allow
                .extend(role.publish.allow.iter().map(|t| place(role, t)));
            publish
                .deny
                .extend(role.publish.deny.iter().map(|t| place(role, t)));
            subscribe
                .allow
                .extend(role.subscribe.allow.iter().map(|t| place(role, t)));
            subscribe.allow.extend(role.queues.iter().map(|(s, g)| {
                place(role, s).with_queue(g.instantiate(None, &tenant.name, project_name))
            }));
            subscribe
                .deny
                .extend(role.subscribe.deny.iter().map(|t| place(role, t)));
            responses = merge_responses(responses, role.responses);
            max_ttl = match (max_ttl, role.max_ttl) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Some(Binding {
            name: Arc::from(raw.name.value.as_str()),
            description: raw.description.clone(),
            tenant: tenant_index,
            project,
            roles: role_names,
            when,
            publish,
            subscribe,
            responses,
            max_ttl,
            jetstream: js_grants,
        })
    }

    fn conditions(
        &mut self,
        si: usize,
        name: &Spanned<String>,
        when: Option<&Spanned<RawWhen>>,
    ) -> Conditions {
        let Some(when) = when else {
            self.err(
                si,
                name.referenced,
                format!(
                    "binding `{}` has no `when`; to match every token of its tenant write `when: {{ everyone: true }}`",
                    escape(&name.value)
                ),
            );
            return Conditions::default();
        };
        let w = &when.value;
        let has_condition = w.kind.is_some()
            || w.app_roles.is_some()
            || w.groups.is_some()
            || w.scopes.is_some()
            || w.app_ids.is_some()
            || w.object_ids.is_some()
            || w.guest.is_some()
            || w.claims.as_ref().is_some_and(|c| !c.is_empty());
        let mut out = Conditions::default();
        match &w.everyone {
            None if !has_condition => self.err(
                si,
                when.referenced,
                format!(
                    "binding `{}` has an empty `when`, which would match every token of its tenant; write `when: {{ everyone: true }}` if that is meant",
                    escape(&name.value)
                ),
            ),
            None => {}
            Some(e) if !e.value => {
                self.err(si, e.referenced, "`everyone` may only be `true`".to_owned());
            }
            Some(e) if has_condition => self.err(
                si,
                e.referenced,
                "`everyone: true` cannot be combined with other conditions".to_owned(),
            ),
            Some(_) => out.everyone = true,
        }
        out.kind = w.kind.as_ref().map(|k| match k.value {
            RawKind::User => PrincipalKind::User,
            RawKind::Application => PrincipalKind::Application,
        });
        // Every identifier is stored in the one canonical form that evaluation compares with
        // (`ident`), so a condition can only match or not match, never match in one path only.
        let plain = |field: Field| {
            move |v: &str| {
                (!v.is_empty() && !v.chars().any(char::is_control))
                    .then(|| canonical(field, v).into_owned())
            }
        };
        let guid =
            |field: Field| move |v: &str| is_guid(v).then(|| canonical(field, v).into_owned());
        out.app_roles = self.values(si, "app_roles", w.app_roles.as_ref(), plain(Field::AppRole));
        out.groups = self.values(si, "groups", w.groups.as_ref(), plain(Field::Group));
        out.scopes = self.values(si, "scopes", w.scopes.as_ref(), |v| {
            (!v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c.is_control()))
                .then(|| canonical(Field::Scope, v).into_owned())
        });
        out.app_ids = self.values(si, "app_ids", w.app_ids.as_ref(), guid(Field::AppId));
        out.object_ids = self.values(
            si,
            "object_ids",
            w.object_ids.as_ref(),
            guid(Field::ObjectId),
        );
        if let (Some(k), Some(s)) = (&out.kind, &w.scopes)
            && *k == PrincipalKind::Application
        {
            self.err(
                si,
                s.referenced,
                "`scopes` can never match `kind: application`: app-only tokens have no scopes"
                    .to_owned(),
            );
        }
        out.guest = w.guest.as_ref().map(|g| g.value);
        if let Some(list) = &w.connection_types {
            use super::connection::{ConnectionType, ConnectionTypes};
            if list.value.is_empty() {
                self.err(
                    si,
                    list.referenced,
                    "`connection_types` is empty and can never match; remove it or list values"
                        .to_owned(),
                );
            }
            let mut types = Vec::with_capacity(list.value.len());
            for v in &list.value {
                match ConnectionType::parse(&v.value) {
                    Some(t) => types.push(t),
                    None => self.err(
                        si,
                        v.referenced,
                        format!(
                            "`connection_types` value `{}` is not one of standard, websocket, mqtt, leafnode",
                            escape(&v.value)
                        ),
                    ),
                }
            }
            out.connection_types = ConnectionTypes::of(types);
        }
        for (claim, m) in w.claims.iter().flatten() {
            match (&m.value.equals, &m.value.glob) {
                (Some(v), None) if v.value.is_object() || v.value.is_array() => self.err(
                    si,
                    v.referenced,
                    format!("claim `{}`: `equals` takes a single value", escape(claim)),
                ),
                (Some(v), None) => out
                    .claims
                    .push((claim.clone(), ClaimMatch::Equals(v.value.clone()))),
                (None, Some(g)) if g.value.is_empty() => self.err(
                    si,
                    g.referenced,
                    format!("claim `{}`: `glob` is empty", escape(claim)),
                ),
                (None, Some(g)) => out
                    .claims
                    .push((claim.clone(), ClaimMatch::Glob(g.value.clone()))),
                _ => self.err(
                    si,
                    m.referenced,
                    format!(
                        "claim `{}` needs exactly one of `equals` or `glob`",
                        escape(claim)
                    ),
                ),
            }
        }
        out
    }
}

/// The most generous of two response permissions.
pub(super) fn merge_responses(a: Option<Responses>, b: Option<Responses>) -> Option<Responses> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Responses {
            max: a.max.max(b.max),
            ttl: a.ttl.max(b.ttl),
        }),
        (a, b) => a.or(b),
    }
}

/// Just the name of an entry, read leniently from one that failed to deserialize.
#[derive(serde::Deserialize)]
struct NameOnly {
    name: String,
}

/// Deserialize each entry of one section on its own; entries written in flow style are skipped.
/// The names of entries that fail go to `broken`.
fn reparse<T: DeserializeOwned>(
    source: &PolicySource,
    items: &[Spanned<serde::de::IgnoredAny>],
    errors: &mut Vec<Diagnostic>,
    broken: &mut Vec<String>,
) -> Vec<T> {
    let mut out = Vec::new();
    for range in entry_ranges(&source.text, items).into_iter().flatten() {
        let text = blank_outside(&source.text, range);
        match serde_saphyr::from_str::<T>(&text) {
            Ok(entry) => out.push(entry),
            Err(e) => {
                errors.push(yaml_error(source, &e));
                if let Ok(n) = serde_saphyr::from_str::<NameOnly>(&text) {
                    broken.push(n.name);
                }
            }
        }
    }
    out
}

/// Byte ranges of each block-style entry of a sequence; `None` for entries written in flow
/// style (`{ ... }`), whose extent is not worth guessing.
fn entry_ranges(
    text: &str,
    items: &[Spanned<serde::de::IgnoredAny>],
) -> Vec<Option<(usize, usize)>> {
    let starts: Vec<Option<usize>> = items
        .iter()
        .map(|r| {
            r.referenced
                .span()
                .byte_offset()
                .and_then(|o| usize::try_from(o).ok())
        })
        .collect();
    let mut ranges = Vec::with_capacity(starts.len());
    for (i, start) in starts.iter().enumerate() {
        let range = start.and_then(|start| {
            if text.get(start..)?.starts_with('{') {
                return None;
            }
            let end = match starts.get(i + 1) {
                // The next entry starts on a later line; end where that line begins, which
                // drops its `- ` marker.
                Some(Some(next)) => {
                    let line_start = text.get(..*next)?.rfind('\n').map_or(0, |p| p + 1);
                    (line_start > start).then_some(line_start)?
                }
                Some(None) => return None,
                None => end_of_last_entry(text, start),
            };
            Some((start, end))
        });
        ranges.push(range);
    }
    ranges
}

/// The last entry runs until the next line that starts at column 1 with something other than
/// a comment: a top-level key or a document marker.
fn end_of_last_entry(text: &str, start: usize) -> usize {
    let first_break = text
        .get(start..)
        .and_then(|t| t.find('\n'))
        .map_or(text.len(), |p| start + p + 1);
    let mut offset = first_break;
    for line in text
        .get(first_break..)
        .unwrap_or_default()
        .split_inclusive('\n')
    {
        let opens_top_level = match line.chars().next() {
            None | Some(' ' | '\t' | '\r' | '\n' | '#') => false,
            Some('-') => line.starts_with("---"),
            Some(_) => true,
        };
        if opens_top_level {
            return offset;
        }
        offset += line.len();
    }
    text.len()
}

/// `text` with every character outside `keep` replaced by a space (newlines kept), so that
/// positions reported for what remains are those of the original file.
fn blank_outside(text: &str, (from, to): (usize, usize)) -> String {
    text.char_indices()
        .map(|(i, c)| {
            if (from..to).contains(&i) || c == '\n' || c == '\r' {
                c
            } else {
                ' '
            }
        })
        .collect()
}

fn yaml_error(source: &PolicySource, e: &serde_saphyr::Error) -> Diagnostic {
    let message = DefaultMessageFormatter.format_message(e.without_snippet());
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    Diagnostic {
        file: source.name.clone(),
        line,
        column,
        message: escape(&message),
    }
}

/// Make a value from the file safe to print on one line.
pub(super) fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// One literal subject token usable as a name or prefix part.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// True when one prefix equals the other or lies under it, token-wise.
fn prefixes_overlap(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    long == short || long.strip_prefix(short).is_some_and(|r| r.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";

    fn opts() -> CompileOptions {
        CompileOptions {
            forbidden_accounts: vec!["SYS".into(), "AUTH".into()],
            accounts: Vec::new(),
            default_max_ttl: Duration::from_secs(3600),
            providers: vec!["contoso".into()],
        }
    }

    fn compile_text(text: &str) -> Result<PolicySet, Vec<String>> {
        let src = PolicySource {
            name: "p.yaml".into(),
            text: text.into(),
        };
        compile(&[src], &opts()).map_err(|e| {
            e.0.iter()
                .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
                .collect()
        })
    }

    fn errors(text: &str) -> Vec<String> {
        compile_text(text).err().unwrap_or_default()
    }

    /// Lines 1-7: a tenant `acme` with project `web`. Then `roles:` and `bindings:` as given.
    fn doc(roles: &str, bindings: &str) -> String {
        format!(
            "version: 1\ntenants:\n  - name: acme\n    entra_tenants: [{TID}]\n    account: APP\n    projects:\n      - name: web\nroles:\n{roles}bindings:\n{bindings}"
        )
    }

    /// A role at lines 9-10.
    const ROLE: &str = "  - name: r\n    publish: { allow: [\"a.>\"] }\n";

    /// A binding of `r`, starting at line 12, with `when` at line 15.
    fn binding(when: &str) -> String {
        format!("  - name: b\n    tenant: acme\n    roles: [r]\n    when: {when}\n")
    }

    fn assert_one(errs: &[String], expected: &str) {
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let e = errs.first().unwrap();
        assert!(e.starts_with(expected), "expected `{expected}`, got `{e}`");
    }

    #[test]
    fn a_valid_document_compiles_and_prefixes_every_subject() {
        let set = compile_text(&doc(ROLE, &binding("{ app_roles: [A] }"))).unwrap();
        let b = set.bindings.first().unwrap();
        assert_eq!(b.publish.allow.first().unwrap().to_string(), "acme.a.>");
        let set = compile_text(&doc(
            ROLE,
            "  - name: b\n    tenant: acme\n    project: web\n    roles: [r]\n    when: { everyone: true }\n",
        ))
        .unwrap();
        let b = set.bindings.first().unwrap();
        assert_eq!(b.publish.allow.first().unwrap().to_string(), "acme.web.a.>");
    }

    #[test]
    fn unknown_field_is_located() {
        let errs = errors(&doc(
            "  - name: r\n    publish: { allow: [a] }\n    max_tl: 1h\n",
            "",
        ));
        assert_one(&errs, "11:5: unknown field `max_tl`");
    }

    #[test]
    fn syntax_error_is_located() {
        assert_one(&errors("version: 1\nroles: [\n"), "2:8: ");
    }

    #[test]
    fn version_must_be_one() {
        assert_one(
            &errors("version: 2\nroles: []\n"),
            "1:10: unsupported version 2",
        );
        assert_one(&errors("roles: []\n"), "1:1: missing `version`");
        assert_one(
            &errors("version: \"1\"\n"),
            "1:10: unsupported version \"1\"",
        );
    }

    #[test]
    fn undefined_references_are_reported() {
        let errs = errors(&doc(
            ROLE,
            "  - name: b\n    tenant: nobody\n    roles: [r]\n    when: { everyone: true }\n  - name: c\n    tenant: acme\n    project: mobile\n    roles: [r, ghost]\n    when: { everyone: true }\n",
        ));
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].starts_with("13:13: binding `b` names tenant `nobody`, which is not defined")
        );
        assert!(errs[1].starts_with("18:14: binding `c` names project `mobile`, which tenant `acme` does not define; its projects are web"));
        assert!(
            errs[2].starts_with("19:16: binding `c` grants role `ghost`, which is not defined")
        );
    }

    #[test]
    fn duplicate_names_report_both_places() {
        let errs = errors(&doc(&format!("{ROLE}{ROLE}"), ""));
        assert_eq!(
            errs,
            [
                "9:11: role name `r` is defined again at p.yaml:11:11",
                "11:11: duplicate role name `r`; also defined at p.yaml:9:11",
            ]
        );
        let text = format!(
            "version: 1\ntenants:\n  - name: t\n    entra_tenants: [{TID}]\n    account: APP\n  - name: t\n    entra_tenants: [{TID}]\n    account: B\n"
        );
        assert_eq!(errors(&text).len(), 2);
    }

    #[test]
    fn bad_subjects_are_located() {
        let cases = [
            ("a..b", "has an empty token"),
            ("a.>.b", "has `>` before the last token"),
            ("a*", "has a wildcard inside the token `a*`"),
            ("a.{tenantid}", "uses unknown placeholder `{tenantid}`"),
            ("a b", "contains whitespace"),
            ("", "is empty"),
        ];
        for (subject, msg) in cases {
            let errs = errors(&doc(
                &format!("  - name: r\n    publish: {{ allow: [ok, \"{subject}\"] }}\n"),
                "",
            ));
            assert_one(
                &errs,
                &format!("10:28: publish allow subject `{subject}` {msg}"),
            );
        }
    }

    #[test]
    fn system_subjects_need_an_explicit_absolute_role() {
        let errs = errors(&doc(
            "  - name: r\n    absolute: true\n    subscribe: { allow: [\">\"] }\n",
            "",
        ));
        assert_one(
            &errs,
            "11:26: subscribe allow subject `>` starts with a wildcard",
        );
        let set = compile_text(&doc(
            "  - name: r\n    absolute: true\n    publish: { allow: [\"$SYS.REQ.USER.INFO\"] }\n",
            &binding("{ app_roles: [A] }"),
        ))
        .unwrap();
        let b = set.bindings.first().unwrap();
        assert_eq!(
            b.publish.allow.first().unwrap().to_string(),
            "$SYS.REQ.USER.INFO"
        );
    }

    #[test]
    fn tenants_are_checked() {
        let text = "version: 1\ntenants:\n  - name: a.b\n    entra_tenants: [contoso]\n    providers: [okta]\n    account: SYS\n    prefix: \"x.*\"\n  - name: c\n    account: APP\n";
        let errs = errors(text);
        let starts = [
            "3:11: tenant name `a.b` must be one subject token",
            "4:21: `entra_tenants` value `contoso` is not valid here",
            "5:17: provider `okta` is not configured; configured providers are contoso",
            "6:14: account `SYS` is the system or callout account",
            "7:13: prefix `x.*` must be literal subject tokens",
            "8:11: tenant `c` says neither `entra_tenants` nor `providers`",
        ];
        assert_eq!(errs.len(), starts.len(), "{errs:#?}");
        for (e, start) in errs.iter().zip(starts) {
            assert!(e.starts_with(start), "expected `{start}`, got `{e}`");
        }
    }

    #[test]
    fn overlapping_prefixes_in_one_account_are_refused() {
        let text = format!(
            "version: 1\ntenants:\n  - name: a\n    entra_tenants: [{TID}]\n    account: APP\n    prefix: t.a\n  - name: b\n    entra_tenants: [{TID}]\n    account: APP\n    prefix: t.a.b\n  - name: c\n    entra_tenants: [{TID}]\n    account: OTHER\n    prefix: t.a\n  - name: d\n    entra_tenants: [{TID}]\n    account: APP\n    prefix: t.ab\n    projects:\n      - name: x\n      - name: y\n        prefix: x\n"
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with("10:13: tenant `b` has prefix `t.a.b`, which overlaps the prefix `t.a` of tenant `a`"), "{errs:#?}");
        assert!(
            errs[1].starts_with("22:17: project `y` has prefix `t.ab.x`, which overlaps"),
            "{errs:#?}"
        );
    }

    #[test]
    fn when_must_say_something() {
        assert_one(
            &errors(&doc(
                ROLE,
                "  - name: b\n    tenant: acme\n    roles: [r]\n",
            )),
            "12:11: binding `b` has no `when`",
        );
        assert_one(
            &errors(&doc(ROLE, &binding("{}"))),
            "15:11: binding `b` has an empty `when`",
        );
        assert_one(
            &errors(&doc(ROLE, &binding("{ everyone: false }"))),
            "15:23: `everyone` may only be `true`",
        );
        assert_one(
            &errors(&doc(ROLE, &binding("{ everyone: true, kind: user }"))),
            "15:23: `everyone: true` cannot be combined",
        );
        assert_one(
            &errors(&doc(ROLE, &binding("{ app_roles: [] }"))),
            "15:24: `app_roles` is empty",
        );
        assert_one(
            &errors(&doc(ROLE, &binding("{ kind: robot }"))),
            "15:19: unknown variant `robot`",
        );
        assert_one(
            &errors(&doc(ROLE, &binding("{ kind: application, scopes: [x] }"))),
            "15:40: `scopes` can never match `kind: application`",
        );
        assert_one(
            &errors(&doc(ROLE, &binding("{ object_ids: [alice] }"))),
            "15:26: `object_ids` value `alice` is not valid here",
        );
        assert_one(
            &errors(&doc(
                ROLE,
                &binding("{ claims: { ver: { equals: \"2.0\", glob: \"2*\" } } }"),
            )),
            "15:28: claim `ver` needs exactly one of `equals` or `glob`",
        );
    }

    #[test]
    fn placeholders_must_be_fillable_where_bound() {
        let role =
            "  - name: r\n    publish: { allow: [\"u.{claim:preferred_username}.{project}\"] }\n";
        let errs = errors(&doc(role, &binding("{ app_roles: [A] }")));
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[1].starts_with("14:13: role `r` uses {project}, but binding `b` names no project")
        );
        assert!(errs[0].starts_with("14:13: role `r` uses {claim:preferred_username}, which app-only tokens never carry, but binding `b` can match app-only tokens; add `kind: user`"));
        let ok = "  - name: b\n    tenant: acme\n    project: web\n    roles: [r]\n    when: { kind: user }\n";
        assert!(errors(&doc(role, ok)).is_empty());
        // A scope condition also rules out app-only tokens.
        let ok = "  - name: b\n    tenant: acme\n    project: web\n    roles: [r]\n    when: { scopes: [Nats.Connect] }\n";
        assert!(errors(&doc(role, ok)).is_empty());
    }

    #[test]
    fn roles_are_checked() {
        assert_one(
            &errors(&doc("  - name: r\n    publish: { deny: [a] }\n", "")),
            "9:11: role `r` allows nothing",
        );
        assert_one(
            &errors(&doc(
                "  - name: r\n    publish: { allow: [a] }\n    max_ttl: 500ms\n",
                "",
            )),
            "11:14: max_ttl must be at least 1s",
        );
        assert_one(
            &errors(&doc(
                "  - name: r\n    publish: { allow: [a] }\n    allow_responses: { max: 0 }\n",
                "",
            )),
            "11:29: allow_responses max must be at least 1",
        );
        assert_one(
            &errors(&doc(
                "  - name: r\n    publish: { allow: [a], queues: [] }\n",
                "",
            )),
            "10:36: `queues` belongs under `subscribe`",
        );
        let set = compile_text(&doc(
            "  - name: r\n    subscribe:\n      queues: [{ subject: \"jobs.>\", group: \"w-{project}\" }]\n",
            "  - name: b\n    tenant: acme\n    project: web\n    roles: [r]\n    when: { everyone: true }\n",
        ))
        .unwrap();
        let b = set.bindings.first().unwrap();
        assert_eq!(
            b.subscribe.allow.first().unwrap().to_string(),
            "acme.web.jobs.> w-web"
        );
    }

    #[test]
    fn every_problem_in_a_file_is_reported() {
        let text = "\
version: 3
roles:
  - name: one
    acount: APP
    publish: { allow: [a] }
  - name: two
    publish: { allow: \"a\" }
  - name: three
    publish: { allow: [\"a b\"] }
bindings:
  - name: four
    tenant: none
    roles: [one]
    when: { everyone: true }
";
        let errs = errors(text);
        let starts = [
            "1:10: unsupported version",
            "4:5: unknown field `acount`",
            "7:23: ",
            "9:24: publish allow subject `a b`",
            "12:13: binding `four` names tenant `none`",
        ];
        assert_eq!(errs.len(), starts.len(), "{errs:#?}");
        for (e, start) in errs.iter().zip(starts) {
            assert!(e.starts_with(start), "expected `{start}`, got `{e}`");
        }
    }

    #[test]
    fn messages_escape_control_characters() {
        let errs = errors(&doc(
            "  - name: r\n    publish: { allow: [\"a\\u0007b\"] }\n",
            "",
        ));
        assert_one(
            &errs,
            "10:24: publish allow subject `a\\u{7}b` contains a control character",
        );
        assert!(!errs.concat().contains('\u{7}'));
    }

    #[test]
    fn guids_are_lowercased_and_indexed() {
        let set = compile_text(&doc(
            ROLE,
            &binding("{ groups: [C3D9E1A7-5B2F-4D8E-9A61-0F4B7C2E8D15, admins] }"),
        ))
        .unwrap();
        let bucket = set.index.buckets.first().unwrap();
        assert!(
            bucket
                .by_group
                .contains_key("c3d9e1a7-5b2f-4d8e-9a61-0f4b7c2e8d15")
        );
        assert!(bucket.by_group.contains_key("admins"));
        assert_eq!(set.index.by_tid.get(TID).unwrap(), &[0]);
    }
}
