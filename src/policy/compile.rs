//! Compilation: policy text → validated, indexed [`PolicySet`].
//!
//! Compilation is pure and reports every problem at once. serde stops at the first error in
//! a document, so when a file fails to deserialize, each rule is deserialized again on its own
//! (the rest of the file blanked out, positions kept) to find the errors in later rules too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::{DefaultMessageFormatter, Location, MessageFormatter, Spanned};

use super::eval::Responses;
use super::model::{Document, Outline, RawKind, RawPermissions, RawResponses, RawRule, RawWhen};
use super::subject::{Direction, SubjectTemplate};
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
    pub(super) rules: Vec<Rule>,
    pub(super) index: Index,
    pub(super) default_max_ttl: Duration,
}

impl PolicySet {
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules (every identity is denied).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule names in load order.
    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| &*r.name).collect()
    }
}

/// One compiled rule.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) name: Arc<str>,
    /// Lowercase tenant GUID.
    pub(super) tenant: Option<String>,
    pub(super) roles: Vec<String>,
    pub(super) groups: Vec<String>,
    pub(super) kind: Option<PrincipalKind>,
    pub(super) account: String,
    pub(super) publish: Templates,
    pub(super) subscribe: Templates,
    pub(super) responses: Option<Responses>,
    pub(super) max_ttl: Option<Duration>,
}

/// Allow and deny templates for one direction.
#[derive(Debug, Default)]
pub(super) struct Templates {
    pub(super) allow: Vec<SubjectTemplate>,
    pub(super) deny: Vec<SubjectTemplate>,
}

/// Rules by tenant, then by the role or group that must be present, so evaluation only looks
/// at rules that can match.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) by_tenant: HashMap<String, Bucket>,
    pub(super) any_tenant: Bucket,
}

/// Rule indices (into `PolicySet::rules`) for one tenant key.
#[derive(Debug, Default)]
pub(super) struct Bucket {
    /// Rules with `roles`, under each role.
    pub(super) by_role: HashMap<String, Vec<usize>>,
    /// Rules with `groups` but no `roles`, under each group.
    pub(super) by_group: HashMap<String, Vec<usize>>,
    /// Rules with neither (`kind` or `any`).
    pub(super) rest: Vec<usize>,
}

impl Index {
    fn build(rules: &[Rule]) -> Self {
        let mut index = Self::default();
        for (i, rule) in rules.iter().enumerate() {
            let bucket = match &rule.tenant {
                Some(t) => index.by_tenant.entry(t.clone()).or_default(),
                None => &mut index.any_tenant,
            };
            // A rule must satisfy all of its conditions, so indexing it under one of them
            // (roles first) is enough to find it.
            if !rule.roles.is_empty() {
                for role in &rule.roles {
                    bucket.by_role.entry(role.clone()).or_default().push(i);
                }
            } else if !rule.groups.is_empty() {
                for group in &rule.groups {
                    bucket.by_group.entry(group.clone()).or_default().push(i);
                }
            } else {
                bucket.rest.push(i);
            }
        }
        index
    }
}

/// Compile policy sources into one [`PolicySet`], or report every problem found.
pub fn compile(sources: &[PolicySource], opts: &CompileOptions) -> Result<PolicySet, PolicyErrors> {
    let mut errors: Vec<(usize, Diagnostic)> = Vec::new();
    let mut rules = Vec::new();
    // name → (source index, error position) of the first definition.
    let mut seen: HashMap<String, (usize, Location)> = HashMap::new();

    for (si, source) in sources.iter().enumerate() {
        let mut file_errors = Vec::new();
        let raw_rules = parse_source(source, &mut file_errors);
        for raw in raw_rules {
            let name = raw.name.value.clone();
            let here = raw.name.referenced;
            match seen.get(&name) {
                Some(&(first_si, first)) => {
                    let first_file = sources.get(first_si).map_or("", |s| s.name.as_str());
                    file_errors.push(error_at(
                        source,
                        here,
                        format!(
                            "duplicate rule name `{}`; also defined at {first_file}:{}:{}",
                            escape(&name),
                            first.line(),
                            first.column()
                        ),
                    ));
                    let mut err = error_at(
                        source,
                        first,
                        format!(
                            "rule name `{}` is defined again at {}:{}:{}",
                            escape(&name),
                            source.name,
                            here.line(),
                            here.column()
                        ),
                    );
                    err.file = first_file.to_owned();
                    errors.push((first_si, err));
                }
                None => {
                    seen.insert(name, (si, here));
                }
            }
            let mut checker = RuleChecker {
                source,
                opts,
                errors: &mut file_errors,
            };
            if let Some(rule) = checker.check(raw) {
                rules.push(rule);
            }
        }
        errors.extend(file_errors.into_iter().map(|e| (si, e)));
    }

    if !errors.is_empty() {
        errors.sort_by_key(|(si, e)| (*si, e.line, e.column));
        return Err(PolicyErrors(errors.into_iter().map(|(_, e)| e).collect()));
    }
    let index = Index::build(&rules);
    Ok(PolicySet {
        rules,
        index,
        default_max_ttl: opts.default_max_ttl,
    })
}

/// Deserialize one file into raw rules, collecting syntax, shape and version errors.
fn parse_source(source: &PolicySource, errors: &mut Vec<Diagnostic>) -> Vec<RawRule> {
    let first = match serde_saphyr::from_str::<Document>(&source.text) {
        Ok(doc) => {
            check_version(source, doc.version.as_ref(), errors);
            return doc.rules;
        }
        Err(e) => yaml_error(source, &e),
    };

    // The document is broken somewhere. If its top level is sound, deserialize each rule on
    // its own so that problems in later rules are reported too.
    let Ok(outline) = serde_saphyr::from_str::<Outline>(&source.text) else {
        errors.push(first);
        return Vec::new();
    };
    check_version(source, outline.version.as_ref(), errors);

    let mut rules = Vec::new();
    let mut extra = Vec::new();
    for range in rule_ranges(&source.text, &outline) {
        let Some(range) = range else { continue };
        match serde_saphyr::from_str::<RawRule>(&blank_outside(&source.text, Some(range))) {
            Ok(rule) => rules.push(rule),
            Err(e) => extra.push(yaml_error(source, &e)),
        }
    }
    // serde stopped at `first`, so anything isolation finds before it is an artefact of the
    // blanking (for example an alias whose anchor was blanked out), not a real problem.
    let first_pos = (first.line, first.column);
    extra.retain(|e| (e.line, e.column) > first_pos);
    errors.push(first);
    errors.extend(extra);
    rules
}

fn check_version(
    source: &PolicySource,
    version: Option<&Spanned<serde_json::Value>>,
    errors: &mut Vec<Diagnostic>,
) {
    match version {
        None => errors.push(Diagnostic {
            file: source.name.clone(),
            line: 1,
            column: 1,
            message: format!("missing `version`; this build reads version {SUPPORTED_VERSION}"),
        }),
        Some(v) if v.value.as_u64() == Some(SUPPORTED_VERSION) => {}
        Some(v) => errors.push(error_at(
            source,
            v.referenced,
            format!(
                "unsupported version {}; this build reads version {SUPPORTED_VERSION}",
                escape(&v.value.to_string())
            ),
        )),
    }
}

/// Byte ranges of each block-style rule in the `rules` sequence; `None` for rules written in
/// flow style (`{ ... }`), whose extent is not worth guessing.
fn rule_ranges(text: &str, outline: &Outline) -> Vec<Option<(usize, usize)>> {
    let starts: Vec<Option<usize>> = outline
        .rules
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
                // The next rule starts on a later line; end where that line begins, which
                // drops its `- ` marker.
                Some(Some(next)) => {
                    let line_start = text.get(..*next)?.rfind('\n').map_or(0, |p| p + 1);
                    (line_start > start).then_some(line_start)?
                }
                Some(None) => return None,
                None => end_of_last_rule(text, start),
            };
            Some((start, end))
        });
        ranges.push(range);
    }
    ranges
}

/// The last rule runs until the next line that starts at column 1 with something other than
/// a comment: a top-level key or a document marker.
fn end_of_last_rule(text: &str, start: usize) -> usize {
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
fn blank_outside(text: &str, keep: Option<(usize, usize)>) -> String {
    let (from, to) = keep.unwrap_or((0, 0));
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

fn error_at(source: &PolicySource, at: Location, message: String) -> Diagnostic {
    Diagnostic {
        file: source.name.clone(),
        line: at.line(),
        column: at.column(),
        message,
    }
}

/// Make a value from the file safe to print on one line.
fn escape(s: &str) -> String {
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

/// Semantic checks of one rule; pushes errors and returns the rule only if it is sound.
struct RuleChecker<'a> {
    source: &'a PolicySource,
    opts: &'a CompileOptions,
    errors: &'a mut Vec<Diagnostic>,
}

impl RuleChecker<'_> {
    fn err(&mut self, at: Location, message: String) {
        self.errors.push(error_at(self.source, at, message));
    }

    fn check(&mut self, raw: RawRule) -> Option<Rule> {
        let before = self.errors.len();
        let name = raw.name.value.as_str();
        let name_at = raw.name.referenced;
        self.check_name(&raw.name);

        let tenant = raw.tenant.as_ref().and_then(|t| {
            if is_guid(&t.value) {
                Some(t.value.to_ascii_lowercase())
            } else {
                self.err(
                    t.referenced,
                    format!("tenant `{}` is not a guid", escape(&t.value)),
                );
                None
            }
        });

        let (roles, groups, kind) = match &raw.when {
            None => {
                self.err(
                    name_at,
                    format!(
                        "rule `{}` has no `when`; to match every token write `when: {{ any: true }}`",
                        escape(name)
                    ),
                );
                (Vec::new(), Vec::new(), None)
            }
            Some(when) => self.check_when(name, when, raw.tenant.is_some()),
        };

        let account = &raw.account;
        if account.value.is_empty()
            || account
                .value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            self.err(
                account.referenced,
                format!(
                    "account `{}` is empty or contains whitespace",
                    escape(&account.value)
                ),
            );
        } else if self.opts.forbidden_accounts.contains(&account.value) {
            self.err(
                account.referenced,
                format!(
                    "account `{}` is the system or callout account; rules may not grant it",
                    escape(&account.value)
                ),
            );
        }

        let publish = self.check_permissions(raw.publish.as_ref(), Direction::Publish);
        let subscribe = self.check_permissions(raw.subscribe.as_ref(), Direction::Subscribe);
        let allows = |p: &Option<RawPermissions>| p.as_ref().map_or(0, |p| p.allow.len());
        if allows(&raw.publish) == 0 && allows(&raw.subscribe) == 0 {
            self.err(
                name_at,
                format!(
                    "rule `{}` allows nothing: neither `publish.allow` nor `subscribe.allow` has a subject",
                    escape(name)
                ),
            );
        }

        let responses = raw
            .allow_responses
            .as_ref()
            .and_then(|r| self.check_responses(r));

        let max_ttl = raw
            .max_ttl
            .as_ref()
            .and_then(|t| match parse_duration(&t.value) {
                Ok(d) if d >= Duration::from_secs(1) => Some(d),
                Ok(_) => {
                    self.err(t.referenced, "max_ttl must be at least 1s".to_owned());
                    None
                }
                Err(e) => {
                    self.err(t.referenced, format!("bad max_ttl: {e}"));
                    None
                }
            });

        if self.errors.len() > before {
            return None;
        }
        Some(Rule {
            name: Arc::from(name),
            tenant,
            roles,
            groups,
            kind,
            account: raw.account.value,
            publish,
            subscribe,
            responses,
            max_ttl,
        })
    }

    fn check_name(&mut self, name: &Spanned<String>) {
        let ok = !name.value.is_empty()
            && name.value.len() <= 128
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
        if !ok {
            self.err(
                name.referenced,
                format!(
                    "rule name `{}` must be 1 to 128 ascii letters, digits, `-`, `_`, `.`, `:` or `/`",
                    escape(&name.value)
                ),
            );
        }
    }

    fn check_when(
        &mut self,
        name: &str,
        when: &Spanned<RawWhen>,
        has_tenant: bool,
    ) -> (Vec<String>, Vec<String>, Option<PrincipalKind>) {
        let w = &when.value;
        if w.roles.is_none() && w.groups.is_none() && w.kind.is_none() && w.any.is_none() {
            self.err(
                when.referenced,
                format!(
                    "rule `{}` has an empty `when`, which would match every token; write `when: {{ any: true }}` if that is meant",
                    escape(name)
                ),
            );
        }
        let roles = self.check_values("roles", w.roles.as_ref(), false);
        let groups = self.check_values("groups", w.groups.as_ref(), true);
        let kind = w.kind.as_ref().map(|k| match k.value {
            RawKind::User => PrincipalKind::User,
            RawKind::Application => PrincipalKind::Application,
        });
        if let Some(any) = &w.any {
            if !any.value {
                self.err(any.referenced, "`any` may only be `true`".to_owned());
            } else if w.roles.is_some() || w.groups.is_some() {
                self.err(
                    any.referenced,
                    "`any: true` cannot be combined with `roles` or `groups`".to_owned(),
                );
            }
        }
        if let Some(k) = &w.kind
            && w.roles.is_none()
            && w.groups.is_none()
            && w.any.is_none()
            && !has_tenant
        {
            self.err(
                k.referenced,
                "`when` with only `kind` matches that kind of token from every tenant; set `tenant`, or add `any: true` if that is meant".to_owned(),
            );
        }
        (roles, groups, kind)
    }

    fn check_values(
        &mut self,
        field: &str,
        list: Option<&Spanned<Vec<Spanned<String>>>>,
        lowercase_guids: bool,
    ) -> Vec<String> {
        let Some(list) = list else {
            return Vec::new();
        };
        if list.value.is_empty() {
            self.err(
                list.referenced,
                format!("`{field}` is empty and can never match; remove it or list values"),
            );
        }
        let mut out = Vec::with_capacity(list.value.len());
        for v in &list.value {
            if v.value.is_empty() || v.value.chars().any(char::is_control) {
                self.err(
                    v.referenced,
                    format!(
                        "`{field}` value `{}` is empty or has control characters",
                        escape(&v.value)
                    ),
                );
            } else if lowercase_guids && is_guid(&v.value) {
                // Entra writes group object ids in lowercase.
                out.push(v.value.to_ascii_lowercase());
            } else {
                out.push(v.value.clone());
            }
        }
        out
    }

    fn check_permissions(
        &mut self,
        raw: Option<&RawPermissions>,
        direction: Direction,
    ) -> Templates {
        let mut out = Templates::default();
        let Some(raw) = raw else {
            return out;
        };
        let dir = match direction {
            Direction::Publish => "publish",
            Direction::Subscribe => "subscribe",
        };
        for (list, target, what) in [
            (&raw.allow, &mut out.allow, "allow"),
            (&raw.deny, &mut out.deny, "deny"),
        ] {
            for subject in list {
                match SubjectTemplate::parse(&subject.value, direction) {
                    Ok(t) => target.push(t),
                    Err(e) => self.errors.push(error_at(
                        self.source,
                        subject.referenced,
                        format!("{dir} {what} subject `{}` {e}", escape(&subject.value)),
                    )),
                }
            }
        }
        out
    }

    fn check_responses(&mut self, raw: &Spanned<RawResponses>) -> Option<Responses> {
        match &raw.value {
            RawResponses::Flag(false) => None,
            RawResponses::Flag(true) => Some(DEFAULT_RESPONSES),
            RawResponses::Limits(limits) => {
                let mut out = DEFAULT_RESPONSES;
                if let Some(max) = &limits.max {
                    if max.value < 1 {
                        self.err(
                            max.referenced,
                            "allow_responses max must be at least 1".to_owned(),
                        );
                    }
                    out.max = max.value;
                }
                if let Some(ttl) = &limits.ttl {
                    match parse_duration(&ttl.value) {
                        Ok(d) if d.is_zero() => {
                            self.err(
                                ttl.referenced,
                                "allow_responses ttl must be greater than zero".to_owned(),
                            );
                        }
                        Ok(d) => out.ttl = d,
                        Err(e) => self.err(ttl.referenced, format!("bad allow_responses ttl: {e}")),
                    }
                }
                Some(out)
            }
        }
    }
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CompileOptions {
        CompileOptions {
            forbidden_accounts: vec!["SYS".into(), "AUTH".into()],
            default_max_ttl: Duration::from_secs(3600),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        let src = PolicySource {
            name: "p.yaml".into(),
            text: text.into(),
        };
        match compile(&[src], &opts()) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
                    .collect()
            }
        }
    }

    /// A valid rule with `extra` lines appended to its mapping, at line 3.
    fn rule(extra: &str) -> String {
        format!("version: 1\nrules:\n  - name: r\n{extra}")
    }

    const BODY: &str = "    when: { roles: [A] }\n    account: APP\n";

    fn assert_one(errs: &[String], expected: &str) {
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let e = errs.first().unwrap();
        assert!(e.starts_with(expected), "expected `{expected}`, got `{e}`");
    }

    #[test]
    fn valid_rule_compiles() {
        let errs = errors(&rule(&format!(
            "{BODY}    publish: {{ allow: [\"a.>\"] }}\n"
        )));
        assert!(errs.is_empty(), "{errs:#?}");
    }

    #[test]
    fn unknown_field_is_located() {
        let errs = errors(&rule(&format!(
            "{BODY}    acount: X\n    publish: {{ allow: [a] }}\n"
        )));
        assert_one(&errs, "6:5: unknown field `acount`");
    }

    #[test]
    fn wrong_type_is_located() {
        let errs = errors(&rule(
            "    when: { roles: A }\n    account: APP\n    publish: { allow: [a] }\n",
        ));
        assert_one(&errs, "4:20: ");
    }

    #[test]
    fn syntax_error_is_located() {
        let errs = errors("version: 1\nrules: [\n");
        assert_one(&errs, "2:8: ");
    }

    #[test]
    fn version_must_be_one() {
        let errs = errors("version: 2\nrules: []\n");
        assert_one(&errs, "1:10: unsupported version 2");
        let errs = errors("rules: []\n");
        assert_one(&errs, "1:1: missing `version`");
        let errs = errors("version: \"1\"\n");
        assert_one(&errs, "1:10: unsupported version \"1\"");
    }

    #[test]
    fn duplicate_names_report_both_places() {
        let text = "version: 1\nrules:\n  - name: r\n    when: { roles: [A] }\n    account: APP\n    publish: { allow: [a] }\n  - name: r\n    when: { roles: [B] }\n    account: APP\n    publish: { allow: [b] }\n";
        let errs = errors(text);
        assert_eq!(
            errs,
            [
                "3:11: rule name `r` is defined again at p.yaml:7:11",
                "7:11: duplicate rule name `r`; also defined at p.yaml:3:11",
            ]
        );
    }

    #[test]
    fn bad_subjects_are_located() {
        let cases = [
            ("a..b", "has an empty token"),
            (".a", "starts with `.`"),
            ("a.", "ends with `.`"),
            ("a.>.b", "has `>` before the last token"),
            ("a*", "has a wildcard inside the token `a*`"),
            ("a.{tenant}", "uses unknown placeholder `{tenant}`"),
            ("a.{t.id}", "has a placeholder that spans across `.`"),
            (
                "a b",
                "has a queue group; queue groups are allowed in subscribe only",
            ),
            ("a  b", "contains whitespace"),
            ("", "is empty"),
        ];
        for (subject, msg) in cases {
            let errs = errors(&rule(&format!(
                "{BODY}    subscribe: {{ allow: [x] }}\n    publish: {{ allow: [ok, \"{subject}\"] }}\n"
            )));
            assert_one(
                &errs,
                &format!("7:28: publish allow subject `{subject}` {msg}"),
            );
        }
        let errs = errors(&rule(&format!(
            "{BODY}    subscribe: {{ allow: [\"a b\", \"a  b\"] }}\n"
        )));
        assert_one(
            &errs,
            "6:33: subscribe allow subject `a  b` contains whitespace",
        );
        let errs = errors(&rule(&format!(
            "{BODY}    subscribe: {{ allow: [x], deny: [\"a.*b\"] }}\n"
        )));
        assert_one(&errs, "6:37: subscribe deny subject `a.*b` has a wildcard");
    }

    #[test]
    fn forbidden_account_is_refused() {
        let errs = errors(&rule(
            "    when: { roles: [A] }\n    account: SYS\n    publish: { allow: [a] }\n",
        ));
        assert_one(
            &errs,
            "5:14: account `SYS` is the system or callout account",
        );
    }

    #[test]
    fn when_must_say_something() {
        let errs = errors(&rule(
            "    when: {}\n    account: APP\n    publish: { allow: [a] }\n",
        ));
        assert_one(&errs, "4:11: rule `r` has an empty `when`");
        let errs = errors(&rule("    account: APP\n    publish: { allow: [a] }\n"));
        assert_one(&errs, "3:11: rule `r` has no `when`");
        let errs = errors(&rule(
            "    when: { kind: user }\n    account: APP\n    publish: { allow: [a] }\n",
        ));
        assert_one(&errs, "4:19: `when` with only `kind`");
        let errs = errors(&rule(
            "    when: { roles: [] }\n    account: APP\n    publish: { allow: [a] }\n",
        ));
        assert_one(&errs, "4:20: `roles` is empty");
        let errs = errors(&rule(
            "    when: { any: false }\n    account: APP\n    publish: { allow: [a] }\n",
        ));
        assert_one(&errs, "4:18: `any` may only be `true`");
        let errs = errors(&rule(
            "    when: { any: true, roles: [A] }\n    account: APP\n    publish: { allow: [a] }\n",
        ));
        assert_one(&errs, "4:18: `any: true` cannot be combined");
        let errs = errors(&rule(
            "    when: { kind: robot }\n    account: APP\n    publish: { allow: [a] }\n",
        ));
        assert_one(&errs, "4:19: unknown variant `robot`");
        assert!(errors(&rule("    when: { any: true, kind: user }\n    account: APP\n    publish: { allow: [a] }\n")).is_empty());
        assert!(errors(&rule("    tenant: 72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41\n    when: { kind: user }\n    account: APP\n    publish: { allow: [a] }\n")).is_empty());
    }

    #[test]
    fn tenant_must_be_a_guid() {
        let errs = errors(&rule(&format!(
            "    tenant: contoso\n{BODY}    publish: {{ allow: [a] }}\n"
        )));
        assert_one(&errs, "4:13: tenant `contoso` is not a guid");
    }

    #[test]
    fn durations_are_checked() {
        let errs = errors(&rule(&format!(
            "{BODY}    publish: {{ allow: [a] }}\n    max_ttl: 1 hour\n"
        )));
        assert_one(&errs, "7:14: bad max_ttl: duration `1 hour`");
        let errs = errors(&rule(&format!(
            "{BODY}    publish: {{ allow: [a] }}\n    max_ttl: 500ms\n"
        )));
        assert_one(&errs, "7:14: max_ttl must be at least 1s");
        let errs = errors(&rule(&format!(
            "{BODY}    publish: {{ allow: [a] }}\n    allow_responses: {{ max: 1, ttl: 5 }}\n"
        )));
        assert_one(&errs, "7:37: bad allow_responses ttl");
        let errs = errors(&rule(&format!(
            "{BODY}    publish: {{ allow: [a] }}\n    allow_responses: {{ max: 0 }}\n"
        )));
        assert_one(&errs, "7:29: allow_responses max must be at least 1");
        let errs = errors(&rule(&format!(
            "{BODY}    publish: {{ allow: [a] }}\n    allow_responses: {{ maximum: 1 }}\n"
        )));
        assert_one(&errs, "7:24: unknown field `maximum`");
    }

    #[test]
    fn rule_must_allow_something() {
        let errs = errors(&rule(&format!("{BODY}    publish: {{ deny: [a] }}\n")));
        assert_one(&errs, "3:11: rule `r` allows nothing");
    }

    #[test]
    fn every_problem_in_a_file_is_reported() {
        let text = "\
version: 3
rules:
  - name: one
    when: { roles: [A] }
    acount: APP
    publish: { allow: [a] }
  - name: two
    when: { roles: [A] }
    account: SYS
    publish: { allow: [a] }
  - name: three
    when:
      roles: A
    account: APP
    publish: { allow: [a] }
  - name: four
    when: { roles: [A] }
    account: APP
    publish: { allow: [\"a b\"] }
";
        let errs = errors(text);
        assert_eq!(errs.len(), 5, "{errs:#?}");
        let starts = [
            "1:10: unsupported version",
            "5:5: unknown field `acount`",
            "9:14: account `SYS`",
            "13:14: ",
            "19:24: publish allow subject `a b`",
        ];
        for (e, start) in errs.iter().zip(starts) {
            assert!(e.starts_with(start), "expected `{start}`, got `{e}`");
        }
    }

    #[test]
    fn isolation_handles_a_trailing_top_level_key_and_flow_rules() {
        let text = "\
rules:
- name: one
  when: { roles: [A] }
  acount: APP
- {name: two, when: {roles: [A]}, account: APP, publish: {allow: [a]}}
- name: three
  when: { roles: [A] }
  account: APP
  publish: { allow: [a], denny: [b] }
version: 1
";
        let errs = errors(text);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs.first()
                .unwrap()
                .starts_with("4:3: unknown field `acount`")
        );
        assert!(
            errs.get(1)
                .unwrap()
                .starts_with("9:26: unknown field `denny`")
        );
    }

    #[test]
    fn messages_escape_control_characters() {
        let errs = errors(&rule(&format!(
            "{BODY}    publish: {{ allow: [\"a\\u0007b\"] }}\n"
        )));
        assert_one(
            &errs,
            "6:24: publish allow subject `a\\u{7}b` contains a control character",
        );
        assert!(!errs.concat().contains('\u{7}'));
    }

    #[test]
    fn groups_guids_are_lowercased_and_indexed() {
        let text = rule(
            "    when: { groups: [C3D9E1A7-5B2F-4D8E-9A61-0F4B7C2E8D15, admins] }\n    account: APP\n    publish: { allow: [a] }\n",
        );
        let set = compile(
            &[PolicySource {
                name: "p".into(),
                text,
            }],
            &opts(),
        )
        .unwrap();
        let groups: Vec<&String> = set.index.any_tenant.by_group.keys().collect();
        assert!(groups.contains(&&"c3d9e1a7-5b2f-4d8e-9a61-0f4b7c2e8d15".to_owned()));
        assert!(groups.contains(&&"admins".to_owned()));
    }
}
