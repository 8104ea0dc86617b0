//! JetStream grants: streams, consumers and key-value buckets written in a role relative to the
//! tenant or project prefix, compiled into exactly the `$JS.API.…`, `$JS.ACK.…`, `$JS.FC.…`,
//! `$KV.…` and inbox subjects each operation needs, and nothing wider.
//!
//! Names. A stream, consumer or bucket name written in a role is a *local* name. The name on
//! the server is the binding's subject prefix with `.` replaced by `_`, then `_`, then the
//! local name: stream `image-ready` in project `contoso.web` is `contoso_web_image-ready`, and
//! bucket `config` there is `contoso_web_config` (stream `KV_contoso_web_config`). Local names
//! and the values of placeholders in them hold only ascii letters, digits and `-`, and a prefix
//! that JetStream grants are bound under may not contain `_`, so `_` appears only as the
//! separator: a derived name reads back to exactly one prefix, and two tenants (whose prefixes
//! never overlap in one account) can never name the same stream.
//!
//! Subjects. Every request that names a stream or consumer carries the name in its subject, so
//! a grant names them; the request *payload* is invisible to permissions. That is why consumer
//! creation is granted only on `$JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>`, where
//! nats-server (2.10+) refuses a payload whose filter differs from the subject's, and never on
//! the legacy `$JS.API.CONSUMER.CREATE.<stream>` and `$JS.API.CONSUMER.DURABLE.CREATE.…` forms,
//! whose filter is only in the payload. For the same reason stream creation (`manage`) is
//! refused in an account shared by several tenants: the stream's subjects are in the payload,
//! and a stream could capture another tenant's subjects.
//!
//! Replies (API responses, fetched messages, publish acknowledgements) come to the client's
//! inbox, which JetStream grants make private: `_INBOX.{oid}.>`. Clients set their inbox
//! prefix to `_INBOX.<their object id>`.

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::model::SpannedList;
use super::subject::{Kind, Placeholder, RoleTemplate, SubjectTemplate, covers};

/// The private inbox every JetStream grant subscribes to: API responses, fetched messages and
/// acknowledgements of publishes arrive there.
const INBOX: &str = "_INBOX.{oid}.>";

/// `jetstream:` in a role.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJetStream {
    #[serde(default)]
    pub(crate) streams: Vec<RawStream>,
    #[serde(default)]
    pub(crate) kv: Vec<RawBucket>,
}

/// One stream grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStream {
    /// Local name; the server name is derived from the prefix.
    pub(crate) name: Spanned<String>,
    /// The stream's subjects, relative to the prefix.
    pub(crate) subjects: Option<SpannedList>,
    pub(crate) read: Option<Spanned<bool>>,
    pub(crate) publish: Option<Spanned<bool>>,
    pub(crate) consume: Option<Spanned<RawConsume>>,
    pub(crate) manage: Option<Spanned<bool>>,
}

/// How a stream may be consumed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsume {
    /// Local names of durable consumers.
    pub(crate) durable: Option<SpannedList>,
    /// Consumers of any name (ephemeral ones, ordered ones).
    pub(crate) ephemeral: Option<Spanned<bool>>,
    /// Filter subjects, relative to the prefix; default: the stream's subjects.
    pub(crate) filter: Option<SpannedList>,
}

/// One key-value bucket grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBucket {
    pub(crate) bucket: Spanned<String>,
    pub(crate) get: Option<Spanned<bool>>,
    pub(crate) put: Option<Spanned<bool>>,
    pub(crate) delete: Option<Spanned<bool>>,
    pub(crate) watch: Option<Spanned<bool>>,
    pub(crate) history: Option<Spanned<bool>>,
    pub(crate) manage: Option<Spanned<bool>>,
}

/// The compiled JetStream grants of one role.
#[derive(Debug, Default)]
pub(super) struct RoleJetStream {
    streams: Vec<StreamGrant>,
    buckets: Vec<BucketGrant>,
    /// Whether any grant is `manage` (refused in shared accounts).
    pub(super) manages: bool,
}

#[derive(Debug)]
struct StreamGrant {
    name: RoleTemplate,
    subjects: Vec<RoleTemplate>,
    read: bool,
    publish: bool,
    durable: Vec<RoleTemplate>,
    ephemeral: bool,
    filters: Vec<RoleTemplate>,
    manage: bool,
}

#[derive(Debug)]
struct BucketGrant {
    name: RoleTemplate,
    get: bool,
    write: bool,
    watch: bool,
    manage: bool,
}

/// One JetStream grant of a binding and the subjects it became (placeholders unfilled), for
/// `explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JetStreamGrant {
    /// What was granted, e.g. `stream contoso_web_image-ready: read, consume durable [deployer]`.
    pub what: String,
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// A problem with a JetStream grant, located in its file.
pub(super) type Problem = (Location, String);

/// A consumer a binding may create, fetch from and ack through (`*`: any, for `ephemeral`),
/// with the filters it may give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ConsumerUse {
    pub(super) stream: String,
    pub(super) consumer: String,
    pub(super) filters: Vec<String>,
}

impl ConsumerUse {
    /// Whether two bindings' grants reach one consumer with different filters. Fetching and
    /// acking go through the consumer whatever filter it was created with, so the binding with
    /// the narrower grant could read past it (or ack the other's messages); `*` reaches every
    /// consumer of the stream.
    pub(super) fn conflicts_with(&self, other: &ConsumerUse) -> bool {
        self.stream == other.stream
            && (self.consumer == other.consumer || self.consumer == "*" || other.consumer == "*")
            && self.filters != other.filters
    }
}

/// What a role's JetStream grants became under one binding.
pub(super) struct Instance {
    pub(super) publish: Vec<SubjectTemplate>,
    pub(super) subscribe: Vec<SubjectTemplate>,
    pub(super) views: Vec<JetStreamGrant>,
    pub(super) consumers: Vec<ConsumerUse>,
}

impl RoleJetStream {
    /// Every placeholder used, for the checks a binding makes.
    pub(super) fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        let streams = self.streams.iter().flat_map(|s| {
            std::iter::once(&s.name)
                .chain(&s.subjects)
                .chain(&s.durable)
                .chain(&s.filters)
        });
        let buckets = self.buckets.iter().map(|b| &b.name);
        streams.chain(buckets).flat_map(RoleTemplate::placeholders)
    }

    /// True when the role grants nothing through JetStream.
    pub(super) fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.buckets.is_empty()
    }
}

fn flag(f: Option<&Spanned<bool>>) -> bool {
    f.is_some_and(|f| f.value)
}

fn name(raw: &Spanned<String>, what: &str, problems: &mut Vec<Problem>) -> Option<RoleTemplate> {
    match RoleTemplate::parse_name(&raw.value) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push((
                raw.referenced,
                format!("{what} `{}` {e}", super::compile::escape(&raw.value)),
            ));
            None
        }
    }
}

/// `field` (`subjects` or `filter`) of a stream grant; `what` names its subjects in errors.
fn subjects(
    list: &SpannedList,
    field: &str,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Vec<RoleTemplate> {
    if list.value.is_empty() {
        problems.push((
            list.referenced,
            format!("`{field}` is empty and would allow nothing; list subjects"),
        ));
    }
    let mut out = Vec::new();
    for s in &list.value {
        match RoleTemplate::parse(&s.value, Kind::Relative) {
            Ok(t) => out.push(t),
            Err(e) => problems.push((
                s.referenced,
                format!("{what} subject `{}` {e}", super::compile::escape(&s.value)),
            )),
        }
    }
    out
}

/// Checks the `jetstream:` block of a role; `absolute` roles may not have one.
pub(super) fn compile_role(
    raw: &Spanned<RawJetStream>,
    absolute: bool,
) -> Result<RoleJetStream, Vec<Problem>> {
    let mut problems = Vec::new();
    if absolute {
        problems.push((
            raw.referenced,
            "JetStream grants are written relative to the prefix the role is bound under; a role marked `absolute` cannot hold them".to_owned(),
        ));
    }
    let mut out = RoleJetStream::default();
    for s in &raw.value.streams {
        let stream_name = name(&s.name, "stream name", &mut problems);
        let Some(list) = &s.subjects else {
            problems.push((
                s.name.referenced,
                format!(
                    "stream `{}` needs `subjects`: the subjects it holds, relative to the prefix",
                    super::compile::escape(&s.name.value)
                ),
            ));
            continue;
        };
        let stream_subjects = subjects(list, "subjects", "stream", &mut problems);
        let (mut durable, mut ephemeral, mut filters) = (Vec::new(), false, Vec::new());
        if let Some(c) = &s.consume {
            if let Some(list) = &c.value.durable {
                for d in &list.value {
                    durable.extend(name(d, "durable consumer name", &mut problems));
                }
            }
            ephemeral = flag(c.value.ephemeral.as_ref());
            if durable.is_empty() && !ephemeral {
                problems.push((
                    c.referenced,
                    "`consume` names no `durable` consumer and is not `ephemeral`; it would allow nothing".to_owned(),
                ));
            }
            match &c.value.filter {
                Some(list) => {
                    let parsed = subjects(list, "filter", "filter", &mut problems);
                    for (f, raw_f) in parsed.iter().zip(&list.value) {
                        let inside = stream_subjects
                            .iter()
                            .any(|s| covers(&s.to_string(), &f.to_string()));
                        if !inside {
                            problems.push((
                                raw_f.referenced,
                                format!(
                                    "filter `{}` is not inside the subjects of stream `{}`",
                                    super::compile::escape(&raw_f.value),
                                    super::compile::escape(&s.name.value)
                                ),
                            ));
                        }
                    }
                    filters = parsed;
                }
                None => filters.clone_from(&stream_subjects),
            }
        }
        let grant = StreamGrant {
            name: match stream_name {
                Some(n) => n,
                None => continue,
            },
            subjects: stream_subjects,
            read: flag(s.read.as_ref()),
            publish: flag(s.publish.as_ref()),
            durable,
            ephemeral,
            filters,
            manage: flag(s.manage.as_ref()),
        };
        if !(grant.read || grant.publish || grant.manage || s.consume.is_some()) {
            problems.push((
                s.name.referenced,
                format!(
                    "stream `{}` allows nothing: say `read`, `publish`, `consume` or `manage`",
                    super::compile::escape(&s.name.value)
                ),
            ));
        }
        out.manages |= grant.manage;
        out.streams.push(grant);
    }
    for b in &raw.value.kv {
        let bucket_name = name(&b.bucket, "bucket name", &mut problems);
        // Put, delete and purge are all publishes to `$KV.<bucket>.<key>` (the operation is a
        // header), and a watch's delivery policy (last or all revisions) is in the payload: each
        // pair is one subject set, so saying one without the other would be a promise nothing
        // enforces.
        let mut pair = |a: &Option<Spanned<bool>>,
                        an: &str,
                        b: &Option<Spanned<bool>>,
                        bn: &str| {
            if let (Some(x), Some(y)) = (a, b)
                && x.value != y.value
            {
                problems.push((
                    y.referenced,
                    format!(
                        "`{an}: {}` with `{bn}: {}` cannot be enforced: both are the same subjects on the server; say both or neither",
                        x.value, y.value
                    ),
                ));
            }
            flag(a.as_ref()) || flag(b.as_ref())
        };
        let write = pair(&b.put, "put", &b.delete, "delete");
        let watch = pair(&b.watch, "watch", &b.history, "history");
        let grant = BucketGrant {
            name: match bucket_name {
                Some(n) => n,
                None => continue,
            },
            get: flag(b.get.as_ref()),
            write,
            watch,
            manage: flag(b.manage.as_ref()),
        };
        if !(grant.get || grant.write || grant.watch || grant.manage) {
            problems.push((
                b.bucket.referenced,
                format!(
                    "bucket `{}` allows nothing: say `get`, `put`, `delete`, `watch`, `history` or `manage`",
                    super::compile::escape(&b.bucket.value)
                ),
            ));
        }
        out.manages |= grant.manage;
        out.buckets.push(grant);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Why binding `binding` cannot grant JetStream role `role` under `prefix`: a prefix must
/// derive unambiguous names, and `manage` needs an account of the tenant's own, since a
/// stream's subjects are in the create request's payload. `sharing`: the other tenants in
/// `account`.
pub(super) fn binding_problems(
    js: &RoleJetStream,
    binding: &str,
    role: &str,
    prefix: &str,
    (account, sharing): (&str, &[&str]),
) -> Vec<String> {
    let role = super::compile::escape(role);
    let mut out = Vec::new();
    if prefix.contains('_') {
        out.push(format!(
            "binding `{binding}` grants JetStream role `{role}`, but its prefix `{prefix}` contains `_`, which separates the prefix in JetStream names; JetStream grants need a prefix without `_`"
        ));
    }
    if js.manages && !sharing.is_empty() {
        out.push(format!(
            "binding `{binding}` grants role `{role}`, which may `manage` streams or buckets, but account `{account}` is shared with tenant {}: a stream's subjects are in the create request's payload, which permissions cannot see, so a manager could capture another tenant's subjects; create them out of band, or give the tenant an account of its own",
            sharing.join(", ")
        ));
    }
    out
}

/// The JetStream consumers granted so far in one compilation: account, consumer, binding and
/// where it was bound (`file:line:column`).
#[derive(Debug, Default)]
pub(super) struct Consumers(Vec<(String, ConsumerUse, String, String)>);

impl Consumers {
    /// Records that `binding` (bound at `place`) may use `c` in `account`, or says why it may
    /// not: another binding reaches the same consumer with other filters.
    pub(super) fn claim(
        &mut self,
        account: &str,
        binding: &str,
        place: String,
        c: ConsumerUse,
    ) -> Result<(), String> {
        let clash = self
            .0
            .iter()
            .find(|(a, other, b, _)| a == account && b != binding && c.conflicts_with(other));
        if let Some((_, other, b, other_place)) = clash {
            let theirs = if other.consumer == "*" {
                "any consumer".to_owned()
            } else {
                format!("consumer `{}`", other.consumer)
            };
            return Err(format!(
                "binding `{binding}` may use consumer `{}` of stream `{}` with filters [{}], but binding `{b}` ({other_place}) may use {theirs} with filters [{}]: a consumer is shared by everyone who may fetch from or ack through it, so give both the same filters or distinct consumer names (`ephemeral` reaches every consumer of the stream)",
                c.consumer,
                c.stream,
                c.filters.join(", "),
                other.filters.join(", ")
            ));
        }
        self.0
            .push((account.to_owned(), c, binding.to_owned(), place));
        Ok(())
    }
}

/// The server name of local `name` under `prefix`.
fn derived(prefix: &str, name: &SubjectTemplate) -> SubjectTemplate {
    SubjectTemplate::literal(&prefix.replace('.', "_"))
        .then_str("_")
        .then(name)
}

/// Subjects of one grant: publish, subscribe.
#[derive(Default)]
struct Subjects {
    publish: Vec<SubjectTemplate>,
    subscribe: Vec<SubjectTemplate>,
}

impl Subjects {
    fn publish(&mut self, t: SubjectTemplate) {
        if !self.publish.contains(&t) {
            self.publish.push(t);
        }
    }
}

fn api(verb: &str, stream: &SubjectTemplate) -> SubjectTemplate {
    SubjectTemplate::literal(&format!("$JS.API.{verb}.")).then(stream)
}

/// `read`: stream info and direct get of the last message on a subject.
fn stream_read(out: &mut Subjects, stream: &SubjectTemplate, subjects: &[SubjectTemplate]) {
    out.publish(api("STREAM.INFO", stream));
    for s in subjects {
        out.publish(api("DIRECT.GET", stream).then_str(".").then(s));
    }
}

/// One consumer (`consumer` may be `*`): create with each filter, info, fetch, ack, flow control.
fn consume(
    out: &mut Subjects,
    stream: &SubjectTemplate,
    consumer: &SubjectTemplate,
    filters: &[SubjectTemplate],
) {
    let named = |verb: &str| api(verb, stream).then_str(".").then(consumer);
    for f in filters {
        out.publish(named("CONSUMER.CREATE").then_str(".").then(f));
    }
    out.publish(named("CONSUMER.INFO"));
    out.publish(named("CONSUMER.MSG.NEXT"));
    let js = |what: &str| {
        SubjectTemplate::literal(what)
            .then(stream)
            .then_str(".")
            .then(consumer)
    };
    out.publish(js("$JS.ACK.").then_str(".>"));
    // nats-server asks push consumers for flow control on `$JS.FC.<stream>.<consumer>.<id>`.
    out.publish(js("$JS.FC.").then_str(".*"));
}

fn stream_manage(out: &mut Subjects, stream: &SubjectTemplate) {
    // Account info: clients read the account's limits before creating a bucket. It tells
    // account-wide usage, harmless here because `manage` needs an account of the tenant's own.
    out.publish(SubjectTemplate::literal("$JS.API.INFO"));
    for verb in [
        "STREAM.CREATE",
        "STREAM.UPDATE",
        "STREAM.DELETE",
        "STREAM.PURGE",
        "STREAM.INFO",
        "CONSUMER.NAMES",
        "CONSUMER.LIST",
    ] {
        out.publish(api(verb, stream));
    }
    out.publish(api("CONSUMER.DELETE", stream).then_str(".*"));
}

/// The stream and subjects of bucket `bucket` (a server name).
fn kv_parts(bucket: &SubjectTemplate) -> (SubjectTemplate, SubjectTemplate) {
    let stream = SubjectTemplate::literal("KV_").then(bucket);
    let keys = SubjectTemplate::literal("$KV.").then(bucket).then_str(".>");
    (stream, keys)
}

fn kv(out: &mut Subjects, bucket: &SubjectTemplate, get: bool, write: bool, watch: bool) {
    let (stream, keys) = kv_parts(bucket);
    // Every client binds to a bucket by reading its stream's info first.
    out.publish(api("STREAM.INFO", &stream));
    if get {
        out.publish(api("DIRECT.GET", &stream).then_str(".").then(&keys));
    }
    if write {
        out.publish(keys.clone());
    }
    if watch {
        consume(out, &stream, &SubjectTemplate::literal("*"), &[keys]);
    }
}

/// Instantiates `js` under `prefix` (tenant and project names fill `{tenant}`/`{project}`):
/// the subjects to publish and subscribe to, and what each grant became.
pub(super) fn instantiate(
    js: &RoleJetStream,
    prefix: &str,
    tenant: &str,
    project: Option<&str>,
) -> Instance {
    let inbox = RoleTemplate::parse(INBOX, Kind::Absolute)
        .map(|t| t.instantiate(None, tenant, project))
        .ok();
    let local = |t: &RoleTemplate| t.instantiate(None, tenant, project);
    let placed = |t: &RoleTemplate| t.instantiate(Some(prefix), tenant, project);
    let mut publish = Vec::new();
    let mut subscribe = Vec::new();
    let mut views = Vec::new();
    let mut consumers = Vec::new();
    let mut finish = |what: String, mut s: Subjects| {
        s.subscribe.extend(inbox.clone());
        views.push(JetStreamGrant {
            what,
            publish: s.publish.iter().map(ToString::to_string).collect(),
            subscribe: s.subscribe.iter().map(ToString::to_string).collect(),
        });
        publish.append(&mut s.publish);
        subscribe.append(&mut s.subscribe);
    };
    for g in &js.streams {
        let stream = derived(prefix, &local(&g.name));
        let subjects: Vec<SubjectTemplate> = g.subjects.iter().map(placed).collect();
        let filters: Vec<SubjectTemplate> = g.filters.iter().map(placed).collect();
        let mut s = Subjects::default();
        let mut said = Vec::new();
        if g.read {
            stream_read(&mut s, &stream, &subjects);
            said.push("read".to_owned());
        }
        if g.publish {
            for subject in &subjects {
                s.publish(subject.clone());
            }
            said.push("publish".to_owned());
        }
        let durable: Vec<SubjectTemplate> = g.durable.iter().map(local).collect();
        let mut sorted: Vec<String> = filters.iter().map(ToString::to_string).collect();
        sorted.sort();
        sorted.dedup();
        let star = SubjectTemplate::literal("*");
        for d in durable.iter().chain(g.ephemeral.then_some(&star)) {
            consumers.push(ConsumerUse {
                stream: stream.to_string(),
                consumer: d.to_string(),
                filters: sorted.clone(),
            });
        }
        for d in &durable {
            consume(&mut s, &stream, d, &filters);
        }
        if !durable.is_empty() {
            let names: Vec<String> = durable.iter().map(ToString::to_string).collect();
            said.push(format!("consume durable [{}]", names.join(", ")));
        }
        if g.ephemeral {
            consume(&mut s, &stream, &star, &filters);
            said.push("consume ephemeral".to_owned());
        }
        if !filters.is_empty() {
            let f: Vec<String> = filters.iter().map(ToString::to_string).collect();
            said.push(format!("filter [{}]", f.join(", ")));
        }
        if g.manage {
            stream_manage(&mut s, &stream);
            said.push("manage".to_owned());
        }
        finish(format!("stream {stream}: {}", said.join(", ")), s);
    }
    for b in &js.buckets {
        let bucket = derived(prefix, &local(&b.name));
        let mut s = Subjects::default();
        kv(&mut s, &bucket, b.get, b.write, b.watch);
        if b.watch {
            let (stream, keys) = kv_parts(&bucket);
            consumers.push(ConsumerUse {
                stream: stream.to_string(),
                consumer: "*".to_owned(),
                filters: vec![keys.to_string()],
            });
        }
        if b.manage {
            stream_manage(&mut s, &kv_parts(&bucket).0);
        }
        let said: Vec<&str> = [
            (b.get, "get"),
            (b.write, "put+delete"),
            (b.watch, "watch+history"),
            (b.manage, "manage"),
        ]
        .into_iter()
        .filter_map(|(on, what)| on.then_some(what))
        .collect();
        finish(format!("kv bucket {bucket}: {}", said.join(", ")), s);
    }
    Instance {
        publish,
        subscribe,
        views,
        consumers,
    }
}

/// The subjects a policy test's JetStream operation publishes to, from server names:
/// `read STREAM SUBJECT`, `consume STREAM CONSUMER FILTER`, `manage STREAM`, `kv-get BUCKET`,
/// `kv-put BUCKET`, `kv-watch BUCKET` or `kv-manage BUCKET`. The inbox is asserted with the
/// ordinary subscribe expectations.
pub fn operation_subjects(op: &str) -> Result<Vec<String>, String> {
    let words: Vec<&str> = op.split_whitespace().collect();
    let lit = |s: &str| SubjectTemplate::literal(s);
    let mut s = Subjects::default();
    match words.as_slice() {
        ["read", stream, subject] => stream_read(&mut s, &lit(stream), &[lit(subject)]),
        ["consume", stream, consumer, filter] => {
            consume(&mut s, &lit(stream), &lit(consumer), &[lit(filter)]);
        }
        ["manage", stream] => stream_manage(&mut s, &lit(stream)),
        ["kv-get", bucket] => kv(&mut s, &lit(bucket), true, false, false),
        ["kv-put", bucket] => kv(&mut s, &lit(bucket), false, true, false),
        ["kv-watch", bucket] => kv(&mut s, &lit(bucket), false, false, true),
        ["kv-manage", bucket] => stream_manage(&mut s, &kv_parts(&lit(bucket)).0),
        _ => {
            return Err(format!(
                "unknown JetStream operation `{op}`; write `read STREAM SUBJECT`, `consume STREAM CONSUMER FILTER`, `manage STREAM`, `kv-get BUCKET`, `kv-put BUCKET`, `kv-watch BUCKET` or `kv-manage BUCKET`"
            ));
        }
    }
    Ok(s.publish.iter().map(ToString::to_string).collect())
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use crate::policy::PolicySet;
    use crate::testutil;

    const POLICY: &str = "
version: 1
tenants:
  - name: acme
    entra_tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41]
    account: APP
    projects: [{ name: web }]
  - name: globex
    entra_tenants: [0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07]
    account: APP
roles:
  - name: deployer
    jetstream:
      streams:
        - name: image-ready
          subjects: [\"deploy.image-ready.>\"]
          read: true
          publish: true
          consume: { durable: [deployer], filter: [\"deploy.image-ready.v1.>\"] }
      kv:
        - { bucket: config, get: true, watch: true }
  - name: mine
    jetstream:
      kv:
        - { bucket: \"prefs-{oid}\", get: true, put: true }
bindings:
  - { name: web-deployers, tenant: acme, project: web, roles: [deployer], when: { everyone: true } }
  - { name: own-prefs, tenant: globex, roles: [mine], when: { everyone: true } }
";

    fn compile_text(text: &str) -> Result<PolicySet, Vec<String>> {
        crate::testutil::compile_policy(text)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    fn errors(roles: &str, tenants_share: bool) -> Vec<String> {
        let account = if tenants_share { "APP" } else { "OWN" };
        let text = format!(
            "version: 1
tenants:
  - {{ name: acme, entra_tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41], account: APP, projects: [{{ name: web }}, {{ name: under, prefix: a_b }}] }}
  - {{ name: globex, entra_tenants: [0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07], account: {account} }}
roles:
{roles}
bindings:
  - {{ name: b, tenant: acme, project: web, roles: [r], when: {{ everyone: true }} }}
"
        );
        compile_text(&text).err().unwrap_or_default()
    }

    #[test]
    fn a_stream_and_a_bucket_become_exactly_their_subjects() {
        let set = compile_text(POLICY).unwrap();
        let id = testutil::identity();
        let g = set.evaluate(&id, 0).unwrap();
        assert_eq!(
            g.publish.allow,
            [
                "$JS.API.STREAM.INFO.acme_web_image-ready",
                "$JS.API.DIRECT.GET.acme_web_image-ready.acme.web.deploy.image-ready.>",
                "acme.web.deploy.image-ready.>",
                "$JS.API.CONSUMER.CREATE.acme_web_image-ready.deployer.acme.web.deploy.image-ready.v1.>",
                "$JS.API.CONSUMER.INFO.acme_web_image-ready.deployer",
                "$JS.API.CONSUMER.MSG.NEXT.acme_web_image-ready.deployer",
                "$JS.ACK.acme_web_image-ready.deployer.>",
                "$JS.FC.acme_web_image-ready.deployer.*",
                "$JS.API.STREAM.INFO.KV_acme_web_config",
                "$JS.API.DIRECT.GET.KV_acme_web_config.$KV.acme_web_config.>",
                "$JS.API.CONSUMER.CREATE.KV_acme_web_config.*.$KV.acme_web_config.>",
                "$JS.API.CONSUMER.INFO.KV_acme_web_config.*",
                "$JS.API.CONSUMER.MSG.NEXT.KV_acme_web_config.*",
                "$JS.ACK.KV_acme_web_config.*.>",
                "$JS.FC.KV_acme_web_config.*.*",
            ]
        );
        assert_eq!(
            g.subscribe.allow,
            ["_INBOX.5a1c8e2f-9d47-4b63-8f0a-2e6c4d9b7a35.>"]
        );
        // Never the whole API, never the legacy create forms.
        for s in &g.publish.allow {
            assert!(!s.starts_with("$JS.API.>") && !s.contains("DURABLE"), "{s}");
        }
        assert!(
            !g.publish
                .allows("$JS.API.CONSUMER.CREATE.acme_web_image-ready")
        );
        assert!(
            !g.publish
                .allows("$JS.API.CONSUMER.CREATE.acme_web_image-ready.deployer.acme.web.deploy.>")
        );
    }

    #[test]
    fn explain_shows_each_grant_and_its_subjects() {
        let set = compile_text(POLICY).unwrap();
        let x = set.explain(&testutil::identity(), 0);
        let b = x.bindings.first().unwrap();
        let what: Vec<&str> = b.jetstream.iter().map(|j| j.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "stream acme_web_image-ready: read, publish, consume durable [deployer], filter [acme.web.deploy.image-ready.v1.>]",
                "kv bucket acme_web_config: get, watch+history",
            ]
        );
        assert_eq!(b.jetstream[0].subscribe, ["_INBOX.{oid}.>"]);
    }

    #[test]
    fn names_with_placeholders_refuse_values_that_could_read_as_another_prefix() {
        let set = compile_text(POLICY).unwrap();
        let globex = |oid: &str| crate::identity::Identity {
            tenant: Some("0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07".to_owned()),
            object_id: Some(oid.to_owned()),
            ..testutil::identity()
        };
        let g = set.evaluate(&globex("u-1"), 0).unwrap();
        assert!(
            g.publish
                .allow
                .contains(&"$KV.globex_prefs-u-1.>".to_owned())
        );
        for bad in ["x_web_config", "a.b", "*"] {
            let mut id = globex(bad);
            id.claims.insert("oid".into(), json!(bad));
            let e = set.evaluate(&id, 0).unwrap_err();
            assert_eq!(
                e.reason(),
                crate::deny::DenyReason::UnsafeClaimValue,
                "{bad}"
            );
            assert!(e.detail().contains("binding `own-prefs` uses {oid}"), "{e}");
        }
    }

    #[test]
    fn problems_are_located_and_named() {
        let one = |roles: &str, share: bool| {
            let e = errors(roles, share);
            assert_eq!(e.len(), 1, "{e:?}");
            e.into_iter().next().unwrap_or_default()
        };
        let e = one(
            "  - { name: r, jetstream: { streams: [{ name: s, subjects: [a.>], consume: { durable: [c], filter: [b.>] } }] } }",
            true,
        );
        assert!(
            e.starts_with("p.yaml:6:")
                && e.contains("filter `b.>` is not inside the subjects of stream `s`"),
            "{e}"
        );
        let e = one(
            "  - { name: r, jetstream: { streams: [{ name: my_stream, subjects: [a], read: true }] } }",
            true,
        );
        assert!(
            e.contains("stream name `my_stream` has the character '_'"),
            "{e}"
        );
        let e = one(
            "  - { name: r, jetstream: { streams: [{ name: \"{project}-s\", subjects: [a], read: true }] } }",
            true,
        );
        assert!(e.contains("uses {tenant} or {project}"), "{e}");
        let e = one(
            "  - { name: r, jetstream: { kv: [{ bucket: b, put: true, delete: false }] } }",
            true,
        );
        assert!(
            e.contains("`put: true` with `delete: false` cannot be enforced"),
            "{e}"
        );
        let e = one(
            "  - { name: r, jetstream: { kv: [{ bucket: b, watch: true, history: false }] } }",
            true,
        );
        assert!(
            e.contains("`watch: true` with `history: false` cannot be enforced"),
            "{e}"
        );
        let e = one(
            "  - { name: r, jetstream: { streams: [{ name: s, subjects: [a], manage: true }] } }",
            true,
        );
        assert!(
            e.contains(
                "may `manage` streams or buckets, but account `APP` is shared with tenant globex"
            ),
            "{e}"
        );
        assert!(errors(
            "  - { name: r, jetstream: { streams: [{ name: s, subjects: [a], manage: true }] } }",
            false
        )
        .is_empty());
        let e = one(
            "  - { name: r, absolute: true, jetstream: { streams: [{ name: s, subjects: [a], read: true }] } }",
            true,
        );
        assert!(
            e.contains("a role marked `absolute` cannot hold them"),
            "{e}"
        );
        let e = one(
            "  - { name: r, jetstream: { streams: [{ name: s, subjects: [a] }] } }",
            true,
        );
        assert!(e.contains("stream `s` allows nothing"), "{e}");
        let e = one(
            "  - { name: r, jetstream: { streams: [{ name: s, read: true }] } }",
            true,
        );
        assert!(e.contains("stream `s` needs `subjects`"), "{e}");
    }

    #[test]
    fn bindings_sharing_a_consumer_must_give_it_the_same_filters() {
        let doc = |a: &str, b: &str| {
            format!(
                "version: 1
tenants:
  - {{ name: acme, entra_tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41], account: APP, projects: [{{ name: web }}] }}
roles:
  - {{ name: a, jetstream: {{ streams: [{{ name: s, subjects: [x.>], consume: {a} }}] }} }}
  - {{ name: b, jetstream: {{ streams: [{{ name: s, subjects: [x.>], consume: {b} }}] }} }}
bindings:
  - {{ name: one, tenant: acme, project: web, roles: [a], when: {{ app_roles: [A] }} }}
  - {{ name: two, tenant: acme, project: web, roles: [b], when: {{ app_roles: [B] }} }}
"
            )
        };
        let narrow = "{ durable: [c], filter: [x.narrow.>] }";
        // The same consumer with other filters, or any consumer next to a narrower one.
        for (a, b, other) in [
            (narrow, "{ durable: [c] }", "consumer `c`"),
            (narrow, "{ ephemeral: true }", "consumer `c`"),
            (
                "{ ephemeral: true, filter: [x.narrow.>] }",
                "{ durable: [d] }",
                "any consumer",
            ),
        ] {
            let e = compile_text(&doc(a, b)).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(
                e[0].starts_with("p.yaml:9:54: binding `two` may use consumer")
                    && e[0].contains("but binding `one` (p.yaml:8:54)")
                    && e[0].contains(&format!(
                        "may use {other} with filters [acme.web.x.narrow.>]"
                    )),
                "{a} / {b}: {e:?}"
            );
        }
        // The same filters, or distinct consumers: fine.
        for (a, b) in [
            (narrow, narrow),
            (narrow, "{ durable: [d] }"),
            ("{ ephemeral: true }", "{ ephemeral: true }"),
        ] {
            assert!(compile_text(&doc(a, b)).is_ok(), "{a} / {b}");
        }
    }

    #[test]
    fn a_prefix_with_an_underscore_cannot_hold_jetstream_grants() {
        let text = POLICY.replace(
            "projects: [{ name: web }]",
            "projects: [{ name: web, prefix: w_b }]",
        );
        let e = compile_text(&text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("binding `web-deployers` grants JetStream role `deployer`, but its prefix `acme.w_b` contains `_`"),
            "{e:?}"
        );
    }

    const TWO_TENANTS: &str = "
version: 1
tenants:
  - { name: ta, entra_tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41], account: APP, projects: [{ name: p1 }] }
  - { name: tb, entra_tenants: [0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07], account: APP, projects: [{ name: p1 }] }
roles:
  - name: js
    jetstream:
      streams:
        - name: \"s-{oid}\"
          subjects: [\"u.{oid}.>\", \"t.{claim:team}.*\"]
          read: true
          publish: true
          consume: { durable: [\"c-{claim:team}\"], ephemeral: true }
      kv:
        - { bucket: \"kv-{claim:team}\", get: true, put: true, watch: true }
bindings:
  - { name: a, tenant: ta, project: p1, roles: [js], when: { everyone: true } }
  - { name: b, tenant: tb, roles: [js], when: { everyone: true } }
";

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Whatever the token's values, every JetStream subject minted names only the token's
        /// own tenant's streams and buckets, and every filter lies under its own prefix.
        #[test]
        fn minted_jetstream_subjects_name_only_the_own_tenants_streams(
            b_tenant in proptest::bool::ANY,
            oid in "[a-zA-Z0-9_.*> -]{0,10}",
            team in "[a-zA-Z0-9_.*> -]{0,10}",
        ) {
            let set = compile_text(TWO_TENANTS).unwrap();
            let mut id = testutil::identity();
            if b_tenant {
                id.tenant = Some("0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07".to_owned());
            }
            id.object_id = Some(oid.clone());
            id.claims.insert("team".into(), json!(team));
            let Ok(g) = set.evaluate(&id, 0) else { return Ok(()) };
            let (names, subjects) = if b_tenant { ("tb_", "tb.") } else { ("ta_p1_", "ta.p1.") };
            for s in &g.publish.allow {
                let rest = s
                    .strip_prefix("$JS.API.STREAM.INFO.")
                    .or_else(|| s.strip_prefix("$JS.API.DIRECT.GET."))
                    .or_else(|| s.strip_prefix("$JS.API.CONSUMER.CREATE."))
                    .or_else(|| s.strip_prefix("$JS.API.CONSUMER.INFO."))
                    .or_else(|| s.strip_prefix("$JS.API.CONSUMER.MSG.NEXT."))
                    .or_else(|| s.strip_prefix("$JS.ACK."))
                    .or_else(|| s.strip_prefix("$JS.FC."))
                    .or_else(|| s.strip_prefix("$KV."));
                match rest {
                    Some(rest) => {
                        let rest = rest.strip_prefix("KV_").unwrap_or(rest);
                        proptest::prop_assert!(rest.starts_with(names), "{s}");
                        let mut tokens = rest.split('.');
                        let stream = tokens.next().unwrap_or_default();
                        // The name holds the separator only where the prefix put it.
                        proptest::prop_assert_eq!(stream.matches('_').count(), names.matches('_').count(), "{}", s);
                        if s.starts_with("$JS.API.CONSUMER.CREATE.") || s.starts_with("$JS.API.DIRECT.GET.") {
                            let filter: Vec<&str> = tokens.skip(usize::from(s.contains("CREATE"))).collect();
                            let filter = filter.join(".");
                            proptest::prop_assert!(
                                filter.starts_with(subjects) || filter.starts_with(&format!("$KV.{names}")),
                                "{s}"
                            );
                        }
                    }
                    None => proptest::prop_assert!(s.starts_with(subjects), "{s}"),
                }
            }
            proptest::prop_assert_eq!(&g.subscribe.allow, &vec![format!("_INBOX.{oid}.>")]);
        }
    }

    #[test]
    fn policy_test_operations_are_the_compiled_subjects() {
        assert_eq!(
            super::operation_subjects("consume S c f.>").unwrap(),
            [
                "$JS.API.CONSUMER.CREATE.S.c.f.>",
                "$JS.API.CONSUMER.INFO.S.c",
                "$JS.API.CONSUMER.MSG.NEXT.S.c",
                "$JS.ACK.S.c.>",
                "$JS.FC.S.c.*",
            ]
        );
        assert!(
            super::operation_subjects("eat S")
                .unwrap_err()
                .contains("unknown JetStream operation `eat S`")
        );
    }
}
