//! Subjects: validation of policy subjects at load time, placeholder rendering at evaluation
//! time, and NATS wildcard matching for the policy tools.
//!
//! A role subject such as `models.{oid}.>` is checked once, when policies compile, into a
//! [`RoleTemplate`]. Each binding that grants the role turns it into a [`SubjectTemplate`]: the
//! tenant or project prefix is put in front and the static placeholders (`{tenant}`,
//! `{project}`) are filled, so evaluation only fills token placeholders and concatenates.
//!
//! Rendering refuses any claim value that could change the shape of a subject (a `.`, `*`, `>`,
//! a brace, whitespace, a control or non-ASCII character, nothing at all, or more than
//! [`MAX_CLAIM_CHARS`] characters): a placeholder always fills exactly one token, or part of
//! one, and can never widen what a role grants.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::identity::Identity;

/// The longest claim value spliced into a subject.
pub const MAX_CLAIM_CHARS: usize = 128;

/// Claims that Entra puts only into delegated (user) tokens; a placeholder naming one of them can
/// never be filled for an app-only token.
pub const USER_ONLY_CLAIMS: [&str; 19] = [
    "scp",
    "acct",
    "wids",
    "upn",
    "unique_name",
    "preferred_username",
    "email",
    "name",
    "given_name",
    "family_name",
    "amr",
    "acr",
    "acrs",
    "xms_cc",
    "sid",
    "login_hint",
    "onprem_sid",
    "ipaddr",
    "in_corp",
];

/// A placeholder that may appear in a role subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Placeholder {
    /// `{tenant}`: the policy tenant's name (filled at load time).
    Tenant,
    /// `{project}`: the binding's project name (filled at load time).
    Project,
    /// `{tid}`: the token's tenant id.
    Tid,
    /// `{oid}`: the object id of the user or service principal.
    Oid,
    /// `{sub}`: the token's subject.
    Sub,
    /// `{app_id}`: the client application id.
    AppId,
    /// `{claim:NAME}`: a raw string or integer claim.
    Claim(Arc<str>),
}

impl Placeholder {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "tenant" => Self::Tenant,
            "project" => Self::Project,
            "tid" => Self::Tid,
            "oid" => Self::Oid,
            "sub" => Self::Sub,
            "app_id" => Self::AppId,
            _ => {
                let claim = name.strip_prefix("claim:")?;
                let ok = !claim.is_empty()
                    && claim.len() <= 64
                    && claim
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok {
                    return None;
                }
                Self::Claim(Arc::from(claim))
            }
        })
    }

    /// The claim this placeholder reads, if it reads a raw claim.
    pub(crate) fn claim_name(&self) -> Option<&str> {
        match self {
            Self::Claim(name) => Some(name),
            _ => None,
        }
    }

    /// The value for `id`; integers are rendered in decimal, any other non-string is refused.
    fn value<'a>(&self, id: &'a Identity) -> Result<Cow<'a, str>, &'static str> {
        let value = match self {
            Self::Tenant | Self::Project => return Err("is not available at evaluation"),
            Self::Tid => id.tenant.as_deref(),
            Self::Oid => id.object_id.as_deref(),
            Self::Sub => Some(id.subject.as_str()),
            Self::AppId => id.app_id.as_deref(),
            Self::Claim(name) => match id.claims.get(&**name) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(Value::Number(n)) => {
                    return n
                        .as_u64()
                        .map(|n| Cow::Owned(n.to_string()))
                        .ok_or("is not a non-negative integer");
                }
                Some(_) => return Err("is not a single string"),
            },
        };
        value.map(Cow::Borrowed).ok_or("is absent")
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tenant => f.write_str("{tenant}"),
            Self::Project => f.write_str("{project}"),
            Self::Tid => f.write_str("{tid}"),
            Self::Oid => f.write_str("{oid}"),
            Self::Sub => f.write_str("{sub}"),
            Self::AppId => f.write_str("{app_id}"),
            Self::Claim(name) => write!(f, "{{claim:{name}}}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Placeholder),
    /// A placeholder inside a JetStream stream, consumer or bucket name: its value may only
    /// hold ascii letters, digits and `-`, because `_` separates the prefix in derived names
    /// (see `jetstream`).
    Name(Placeholder),
}

/// A validated role subject (or queue group) with every placeholder still to fill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RoleTemplate {
    parts: Vec<Part>,
}

/// A subject ready for evaluation: prefix and static placeholders filled, token placeholders
/// left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SubjectTemplate {
    parts: Vec<Part>,
}

/// Where a parsed template will be used; absolute subjects may not start with a wildcard or a
/// placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A subject written relative to the tenant or project prefix.
    Relative,
    /// A subject written in full by a role marked `absolute: true`.
    Absolute,
    /// A queue group name (never prefixed).
    Queue,
}

impl RoleTemplate {
    /// Validate `raw` and precompile it.
    pub(crate) fn parse(raw: &str, kind: Kind) -> Result<Self, SubjectError> {
        if raw.is_empty() {
            return Err(SubjectError::Empty);
        }
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            return Err(SubjectError::ControlCharacter(c));
        }
        if raw.chars().any(char::is_whitespace) {
            return Err(SubjectError::Whitespace);
        }
        let mut parts = Vec::new();
        parse_subject(raw, &mut parts)?;
        if kind == Kind::Absolute {
            match parts.first() {
                Some(Part::Literal(s)) if !s.starts_with(['*', '>', '.']) => {}
                Some(Part::Var(_)) => return Err(SubjectError::AbsoluteStartsWithPlaceholder),
                _ => return Err(SubjectError::AbsoluteStartsWithWildcard),
            }
        }
        Ok(Self { parts })
    }

    /// Validate a JetStream stream, consumer or bucket name: ascii letters, digits and `-`,
    /// and token placeholders (`{tenant}` and `{project}` are already in the derived prefix).
    pub(crate) fn parse_name(raw: &str) -> Result<Self, SubjectError> {
        if raw.is_empty() {
            return Err(SubjectError::Empty);
        }
        check_braces(raw)?;
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            let (before, after) = rest.split_at(open);
            check_name_literal(before)?;
            if !before.is_empty() {
                push_literal(&mut parts, before);
            }
            let close = after.find('}').ok_or(SubjectError::UnclosedBrace)?;
            let name = after.get(1..close).unwrap_or_default();
            let placeholder = Placeholder::parse(name)
                .ok_or_else(|| SubjectError::UnknownPlaceholder(name.to_owned()))?;
            if matches!(placeholder, Placeholder::Tenant | Placeholder::Project) {
                return Err(SubjectError::StaticPlaceholderInName);
            }
            parts.push(Part::Name(placeholder));
            rest = after.get(close + 1..).unwrap_or_default();
        }
        check_name_literal(rest)?;
        if !rest.is_empty() {
            push_literal(&mut parts, rest);
        }
        Ok(Self { parts })
    }

    /// The placeholders used, in order.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) | Part::Name(v) => Some(v),
            Part::Literal(_) => None,
        })
    }

    /// Put `prefix` (if any) in front and fill `{tenant}` and `{project}`. The caller has checked
    /// that a project is given when `{project}` is used; without one it stays unfilled and the
    /// rendering fails closed.
    pub(crate) fn instantiate(
        &self,
        prefix: Option<&str>,
        tenant: &str,
        project: Option<&str>,
    ) -> SubjectTemplate {
        let mut parts = Vec::with_capacity(self.parts.len() + 1);
        if let Some(prefix) = prefix {
            push_literal(&mut parts, prefix);
            push_literal(&mut parts, ".");
        }
        for part in &self.parts {
            match part {
                Part::Literal(s) => push_literal(&mut parts, s),
                Part::Var(Placeholder::Tenant) => push_literal(&mut parts, tenant),
                Part::Var(Placeholder::Project) => match project {
                    Some(p) => push_literal(&mut parts, p),
                    None => parts.push(Part::Var(Placeholder::Project)),
                },
                Part::Var(v) => parts.push(Part::Var(v.clone())),
                Part::Name(v) => parts.push(Part::Name(v.clone())),
            }
        }
        SubjectTemplate { parts }
    }
}

impl fmt::Display for RoleTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_parts(&self.parts, f)
    }
}

impl SubjectTemplate {
    /// A template without placeholders.
    pub(crate) fn literal(s: &str) -> Self {
        Self {
            parts: vec![Part::Literal(s.to_owned())],
        }
    }

    /// This template followed by `s`.
    pub(crate) fn then_str(mut self, s: &str) -> Self {
        push_literal(&mut self.parts, s);
        self
    }

    /// This template followed by `other`.
    pub(crate) fn then(mut self, other: &SubjectTemplate) -> Self {
        for part in &other.parts {
            match part {
                Part::Literal(s) => push_literal(&mut self.parts, s),
                var => self.parts.push(var.clone()),
            }
        }
        self
    }

    /// This subject with a queue group: the `"subject group"` form of NATS permissions.
    pub(crate) fn with_queue(mut self, group: SubjectTemplate) -> SubjectTemplate {
        push_literal(&mut self.parts, " ");
        for part in group.parts {
            match part {
                Part::Literal(s) => push_literal(&mut self.parts, &s),
                var @ (Part::Var(_) | Part::Name(_)) => self.parts.push(var),
            }
        }
        self
    }

    /// Fill the token placeholders from `id` into `out`, or say which claim is unsafe.
    pub(crate) fn render_into(&self, id: &Identity, out: &mut String) -> Result<(), UnsafeClaim> {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(p) => {
                    let value = p
                        .value(id)
                        .and_then(|v| check_claim(&v).map(|()| v))
                        .map_err(|problem| UnsafeClaim {
                            placeholder: p.clone(),
                            problem,
                        })?;
                    out.push_str(&value);
                }
                Part::Name(p) => {
                    let value = p
                        .value(id)
                        .and_then(|v| check_name_value(&v).map(|()| v))
                        .map_err(|problem| UnsafeClaim {
                            placeholder: p.clone(),
                            problem,
                        })?;
                    out.push_str(&value);
                }
            }
        }
        Ok(())
    }

    /// Fill the token placeholders from `id`.
    pub(crate) fn render(&self, id: &Identity) -> Result<String, UnsafeClaim> {
        let mut out = String::new();
        self.render_into(id, &mut out)?;
        Ok(out)
    }
}

impl fmt::Display for SubjectTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_parts(&self.parts, f)
    }
}

fn write_parts(parts: &[Part], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for part in parts {
        match part {
            Part::Literal(s) => f.write_str(s)?,
            Part::Var(p) | Part::Name(p) => write!(f, "{p}")?,
        }
    }
    Ok(())
}

fn push_literal(parts: &mut Vec<Part>, s: &str) {
    if let Some(Part::Literal(last)) = parts.last_mut() {
        last.push_str(s);
    } else {
        parts.push(Part::Literal(s.to_owned()));
    }
}

/// Parse one dot-separated subject (no whitespace) into `parts`.
fn parse_subject(subject: &str, parts: &mut Vec<Part>) -> Result<(), SubjectError> {
    if subject.starts_with('.') {
        return Err(SubjectError::LeadingDot);
    }
    if subject.ends_with('.') {
        return Err(SubjectError::TrailingDot);
    }
    if subject.contains("..") {
        return Err(SubjectError::DoubleDot);
    }
    check_braces(subject)?;
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len().saturating_sub(1);
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            push_literal(parts, ".");
        }
        parse_token(token, i == last, parts)?;
    }
    Ok(())
}

/// Braces must pair up inside one token: `{tid}` may not straddle a `.`.
fn check_braces(subject: &str) -> Result<(), SubjectError> {
    let mut open = false;
    let mut crossed_dot = false;
    for c in subject.chars() {
        match c {
            '{' if open => return Err(SubjectError::NestedBrace),
            '{' => {
                open = true;
                crossed_dot = false;
            }
            '}' if !open => return Err(SubjectError::UnmatchedBrace),
            '}' if crossed_dot => return Err(SubjectError::PlaceholderSpansDot),
            '}' => open = false,
            '.' if open => crossed_dot = true,
            _ => {}
        }
    }
    if open {
        return Err(SubjectError::UnclosedBrace);
    }
    Ok(())
}

fn parse_token(token: &str, is_last: bool, parts: &mut Vec<Part>) -> Result<(), SubjectError> {
    match token {
        "*" => {
            push_literal(parts, "*");
            return Ok(());
        }
        ">" if is_last => {
            push_literal(parts, ">");
            return Ok(());
        }
        ">" => return Err(SubjectError::FullWildcardNotLast),
        _ => {}
    }
    if token.contains(['*', '>']) {
        return Err(SubjectError::WildcardInsideToken(token.to_owned()));
    }
    let mut rest = token;
    while let Some(open) = rest.find('{') {
        let (before, after) = rest.split_at(open);
        if !before.is_empty() {
            push_literal(parts, before);
        }
        // check_braces guarantees a matching `}` in this token.
        let close = after.find('}').ok_or(SubjectError::UnclosedBrace)?;
        let name = after.get(1..close).unwrap_or_default();
        let placeholder = Placeholder::parse(name)
            .ok_or_else(|| SubjectError::UnknownPlaceholder(name.to_owned()))?;
        parts.push(Part::Var(placeholder));
        rest = after.get(close + 1..).unwrap_or_default();
    }
    if !rest.is_empty() {
        push_literal(parts, rest);
    }
    Ok(())
}

/// Why a policy subject was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SubjectError {
    #[error("is empty")]
    Empty,
    #[error("starts with `.`")]
    LeadingDot,
    #[error("ends with `.`")]
    TrailingDot,
    #[error("has an empty token (`..`)")]
    DoubleDot,
    #[error("contains whitespace; write queue groups under `queues`")]
    Whitespace,
    #[error("contains a control character {0:?}")]
    ControlCharacter(char),
    #[error("has `>` before the last token")]
    FullWildcardNotLast,
    #[error("has a wildcard inside the token `{0}`; `*` and `>` must be whole tokens")]
    WildcardInsideToken(String),
    #[error(
        "uses unknown placeholder `{{{0}}}`; known placeholders are {{tenant}}, {{project}}, {{tid}}, {{oid}}, {{sub}}, {{app_id}} and {{claim:NAME}}"
    )]
    UnknownPlaceholder(String),
    #[error("has a placeholder that spans across `.`")]
    PlaceholderSpansDot,
    #[error("has `{{` without a closing `}}`")]
    UnclosedBrace,
    #[error("has `}}` without an opening `{{`")]
    UnmatchedBrace,
    #[error("has `{{` inside a placeholder")]
    NestedBrace,
    #[error(
        "starts with a wildcard; an absolute subject must write its first token out, so that system subjects ($SYS, $JS.API, ...) are never granted by accident"
    )]
    AbsoluteStartsWithWildcard,
    #[error("starts with a placeholder; an absolute subject must write its first token out")]
    AbsoluteStartsWithPlaceholder,
    #[error(
        "has the character {0:?}; JetStream names here hold only ascii letters, digits and `-` (`_` separates the prefix in derived names)"
    )]
    NameCharacter(char),
    #[error(
        "uses {{tenant}} or {{project}}; the derived name already starts with the tenant and project prefix"
    )]
    StaticPlaceholderInName,
}

fn check_name_literal(s: &str) -> Result<(), SubjectError> {
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        Some(c) => Err(SubjectError::NameCharacter(c)),
        None => Ok(()),
    }
}

/// A claim value inside a JetStream name: one more rule than [`check_claim`], because a `_`
/// could make `contoso` + `vision_x` read as project `vision`'s stream `x`.
fn check_name_value(v: &str) -> Result<(), &'static str> {
    check_claim(v)?;
    if v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(())
    } else {
        Err(
            "holds a character other than ascii letters, digits and `-`, which a JetStream name may not",
        )
    }
}

/// A placeholder whose claim value cannot be spliced into a subject safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnsafeClaim {
    /// The placeholder at fault.
    pub(crate) placeholder: Placeholder,
    /// What is wrong with the value (never the value itself).
    pub(crate) problem: &'static str,
}

fn check_claim(v: &str) -> Result<(), &'static str> {
    if v.is_empty() {
        return Err("is empty");
    }
    if v.chars().count() > MAX_CLAIM_CHARS {
        return Err("is longer than 128 characters");
    }
    for c in v.chars() {
        // `{` and `}` are harmless to NATS but would make rendered subjects ambiguous in logs.
        let problem = match c {
            '.' => "contains `.`",
            '*' | '>' => "contains a wildcard",
            '{' | '}' => "contains a brace",
            c if !c.is_ascii() => "contains a non-ascii character",
            c if c.is_ascii_whitespace() => "contains whitespace",
            c if c.is_ascii_control() => "contains a control character",
            _ => continue,
        };
        return Err(problem);
    }
    Ok(())
}

// === NATS wildcard semantics ===

/// True when every subject matched by `subject` (which may contain wildcards) is matched by
/// `pattern`, following NATS rules: `*` matches one token, `>` one or more trailing tokens.
pub fn covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(pt), Some(st)) if pt == st && pt != "*" && pt != ">" => {}
            _ => return false,
        }
    }
}

/// True when at least one concrete subject is matched by both `a` and `b`.
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(u), Some(v)) if u == v => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testutil;

    fn rel(s: &str) -> Result<RoleTemplate, SubjectError> {
        RoleTemplate::parse(s, Kind::Relative)
    }

    fn identity() -> Identity {
        Identity {
            object_id: Some("0b3c".into()),
            subject: "subj".into(),
            ..testutil::identity()
        }
    }

    #[test]
    fn accepts_valid_subjects() {
        for s in [
            "a",
            "a.b.c",
            "a.*.c",
            "a.>",
            ">",
            "*",
            "_INBOX.>",
            "ml.{tid}.>",
            "t-{tid}-x.y",
            "{oid}{sub}",
            "u.{claim:xms_mirid}",
            "{tenant}.{project}",
        ] {
            assert_eq!(rel(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_malformed_subjects() {
        assert_eq!(rel(""), Err(SubjectError::Empty));
        assert_eq!(rel(".a"), Err(SubjectError::LeadingDot));
        assert_eq!(rel("a."), Err(SubjectError::TrailingDot));
        assert_eq!(rel("a..b"), Err(SubjectError::DoubleDot));
        assert_eq!(rel("a b"), Err(SubjectError::Whitespace));
        assert_eq!(rel("a\tb"), Err(SubjectError::ControlCharacter('\t')));
        assert_eq!(rel("a.>.b"), Err(SubjectError::FullWildcardNotLast));
        assert!(matches!(
            rel("a*"),
            Err(SubjectError::WildcardInsideToken(_))
        ));
        assert!(
            matches!(rel("a.{tenantid}"), Err(SubjectError::UnknownPlaceholder(n)) if n == "tenantid")
        );
        assert!(matches!(rel("a.{}"), Err(SubjectError::UnknownPlaceholder(n)) if n.is_empty()));
        assert!(matches!(
            rel("a.{claim:}"),
            Err(SubjectError::UnknownPlaceholder(_))
        ));
        assert!(matches!(
            rel("a.{claim:a b}"),
            Err(SubjectError::Whitespace)
        ));
        assert_eq!(rel("a.{t.id}"), Err(SubjectError::PlaceholderSpansDot));
        assert_eq!(rel("a.{tid"), Err(SubjectError::UnclosedBrace));
        assert_eq!(rel("a.tid}"), Err(SubjectError::UnmatchedBrace));
        assert_eq!(rel("a.{{tid}}"), Err(SubjectError::NestedBrace));
    }

    #[test]
    fn absolute_subjects_write_their_first_token_out() {
        let abs = |s| RoleTemplate::parse(s, Kind::Absolute);
        assert!(abs("$SYS.REQ.USER.INFO").is_ok());
        assert!(abs("_INBOX.{oid}.>").is_ok());
        assert_eq!(abs(">"), Err(SubjectError::AbsoluteStartsWithWildcard));
        assert_eq!(abs("*.x"), Err(SubjectError::AbsoluteStartsWithWildcard));
        assert_eq!(
            abs("{tid}.x"),
            Err(SubjectError::AbsoluteStartsWithPlaceholder)
        );
        // Relative subjects get a literal prefix, so a leading wildcard stays inside it.
        assert!(rel(">").is_ok());
    }

    #[test]
    fn instantiation_prefixes_and_fills_static_placeholders() {
        let t = rel("{project}.x.{oid}").unwrap();
        let s = t.instantiate(Some("acme.web"), "acme", Some("web"));
        assert_eq!(s.to_string(), "acme.web.web.x.{oid}");
        assert_eq!(s.render(&identity()).unwrap(), "acme.web.web.x.0b3c");
        let s = rel(">").unwrap().instantiate(None, "acme", None);
        assert_eq!(s.to_string(), ">");
        let s = rel("{project}").unwrap().instantiate(None, "acme", None);
        assert_eq!(
            s.render(&identity()).unwrap_err().placeholder,
            Placeholder::Project
        );
    }

    #[test]
    fn renders_raw_claims() {
        let mut id = identity();
        id.claims.insert("team".into(), json!("ml-ops"));
        id.claims.insert("level".into(), json!(3));
        id.claims.insert("list".into(), json!(["a"]));
        id.claims.insert("neg".into(), json!(-1));
        let t = |s: &str| rel(s).unwrap().instantiate(None, "t", None);
        assert_eq!(t("x.{claim:team}").render(&id).unwrap(), "x.ml-ops");
        assert_eq!(t("x.l{claim:level}").render(&id).unwrap(), "x.l3");
        for bad in ["list", "neg", "missing"] {
            let err = t(&format!("x.{{claim:{bad}}}")).render(&id).unwrap_err();
            assert_eq!(err.placeholder, Placeholder::Claim(Arc::from(bad)));
        }
    }

    #[test]
    fn refuses_unsafe_claim_values() {
        let long = "a".repeat(MAX_CLAIM_CHARS + 1);
        for bad in [
            "a.b", "*", ">", "a b", "\n", "", "é", "a\u{7f}", "{x}", &long,
        ] {
            let mut id = identity();
            id.object_id = Some(bad.to_owned());
            let err = rel("u.{oid}")
                .unwrap()
                .instantiate(None, "t", None)
                .render(&id)
                .unwrap_err();
            assert_eq!(err.placeholder, Placeholder::Oid, "value {bad:?}");
        }
    }

    #[test]
    fn wildcard_semantics() {
        assert!(covers("a.>", "a.b"));
        assert!(covers("a.>", "a.b.>"));
        assert!(covers("a.>", "a.*"));
        assert!(!covers("a.>", "a"));
        assert!(covers("a.*", "a.b"));
        assert!(covers("a.*", "a.*"));
        assert!(!covers("a.*", "a.>"));
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("a.*", "a.b.c"));
        assert!(covers(">", "$SYS.x"));
        assert!(overlaps("a.*", "*.b"));
        assert!(overlaps("a.>", "a.b.c"));
        assert!(!overlaps("a.>", "a"));
        assert!(!overlaps("a.b", "a.c"));
        assert!(!overlaps("a.*", "a.b.c"));
        assert!(overlaps("a.b.c", ">"));
    }
}
