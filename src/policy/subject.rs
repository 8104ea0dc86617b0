//! Subject templates: validation of policy subjects at load time and placeholder rendering at
//! evaluation time.
//!
//! A template such as `ml.{tid}.>` is checked once, when policies compile, and stored as a flat
//! list of literal and placeholder parts, so evaluation only concatenates. Rendering refuses
//! any claim value that could change the shape of the subject (a `.`, `*`, `>`, whitespace,
//! control or non-ASCII character, or nothing at all): a placeholder always fills exactly one
//! token, or part of one, and can never widen what the rule grants.

use std::fmt;

use crate::identity::Identity;

/// A claim that may be spliced into a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placeholder {
    /// `{tid}`: the tenant id.
    Tenant,
    /// `{oid}`: the object id of the user or service principal.
    ObjectId,
    /// `{sub}`: the token's subject.
    Subject,
    /// `{app_id}`: the client application id.
    AppId,
}

impl Placeholder {
    const ALL: [Self; 4] = [Self::Tenant, Self::ObjectId, Self::Subject, Self::AppId];

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The name written between braces.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Tenant => "tid",
            Self::ObjectId => "oid",
            Self::Subject => "sub",
            Self::AppId => "app_id",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn value(self, id: &Identity) -> Option<&str> {
        match self {
            Self::Tenant => id.tenant.as_deref(),
            Self::ObjectId => id.object_id.as_deref(),
            Self::Subject => Some(id.subject.as_str()),
            Self::AppId => id.app_id.as_deref(),
        }
    }
}

/// Which direction a subject is used in; only subscribe accepts the `"subject queue"` form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Publish,
    Subscribe,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Placeholder),
}

/// A validated subject (optionally with a queue group) with placeholders still to fill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SubjectTemplate {
    parts: Vec<Part>,
}

impl SubjectTemplate {
    /// Validate `raw` for `direction` and precompile it.
    pub(crate) fn parse(raw: &str, direction: Direction) -> Result<Self, SubjectError> {
        if raw.is_empty() {
            return Err(SubjectError::Empty);
        }
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            return Err(SubjectError::ControlCharacter(c));
        }
        let pieces: Vec<&str> = raw.split(' ').collect();
        let mut parts = Vec::new();
        match pieces.as_slice() {
            [subject] => {
                check_no_other_whitespace(subject)?;
                parse_subject(subject, &mut parts)?;
            }
            [subject, queue] if !subject.is_empty() && !queue.is_empty() => {
                if direction == Direction::Publish {
                    return Err(SubjectError::QueueInPublish);
                }
                check_no_other_whitespace(subject)?;
                check_no_other_whitespace(queue)?;
                parse_subject(subject, &mut parts)?;
                push_literal(&mut parts, " ");
                parse_subject(queue, &mut parts).map_err(|e| SubjectError::InQueue(Box::new(e)))?;
            }
            _ => return Err(SubjectError::Whitespace),
        }
        Ok(Self { parts })
    }

    /// Fill the placeholders from `values`, which the caller has already checked are safe.
    pub(crate) fn render(&self, values: &ClaimValues<'_>) -> Result<String, UnsafeClaim> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(p) => out.push_str(values.get(*p)?),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for SubjectTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(s) => f.write_str(s)?,
                Part::Var(p) => write!(f, "{{{}}}", p.name())?,
            }
        }
        Ok(())
    }
}

fn check_no_other_whitespace(s: &str) -> Result<(), SubjectError> {
    if s.chars().any(char::is_whitespace) {
        return Err(SubjectError::Whitespace);
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

/// Parse one dot-separated subject (no spaces) into `parts`.
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
        let placeholder = Placeholder::from_name(name)
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
    #[error(
        "contains whitespace; only subscribe subjects may have one space, before a queue group"
    )]
    Whitespace,
    #[error("contains a control character {0:?}")]
    ControlCharacter(char),
    #[error("has a queue group; queue groups are allowed in subscribe only")]
    QueueInPublish,
    #[error("has `>` before the last token")]
    FullWildcardNotLast,
    #[error("has a wildcard inside the token `{0}`; `*` and `>` must be whole tokens")]
    WildcardInsideToken(String),
    #[error(
        "uses unknown placeholder `{{{0}}}`; known placeholders are {{tid}}, {{oid}}, {{sub}}, {{app_id}}"
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
    #[error("has a bad queue group: {0}")]
    InQueue(Box<SubjectError>),
}

/// A placeholder whose claim value cannot be spliced into a subject safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnsafeClaim {
    pub(crate) placeholder: Placeholder,
    pub(crate) problem: &'static str,
}

/// Claim values of one identity, checked once per evaluation.
#[derive(Debug)]
pub(crate) struct ClaimValues<'a> {
    values: [Result<&'a str, UnsafeClaim>; 4],
}

impl<'a> ClaimValues<'a> {
    pub(crate) fn new(id: &'a Identity) -> Self {
        Self {
            values: Placeholder::ALL.map(|p| check_claim(p, p.value(id))),
        }
    }

    /// The safe value for `p`, or why it is unsafe.
    pub(crate) fn get(&self, p: Placeholder) -> Result<&'a str, UnsafeClaim> {
        match self.values.get(p.index()) {
            Some(v) => *v,
            None => Err(UnsafeClaim {
                placeholder: p,
                problem: "is unavailable",
            }),
        }
    }
}

fn check_claim(placeholder: Placeholder, value: Option<&str>) -> Result<&str, UnsafeClaim> {
    let fail = |problem| UnsafeClaim {
        placeholder,
        problem,
    };
    let v = value.ok_or_else(|| fail("is absent"))?;
    if v.is_empty() {
        return Err(fail("is empty"));
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
        return Err(fail(problem));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Map;

    use super::*;
    use crate::identity::PrincipalKind;

    fn pubs(s: &str) -> Result<SubjectTemplate, SubjectError> {
        SubjectTemplate::parse(s, Direction::Publish)
    }

    fn subs(s: &str) -> Result<SubjectTemplate, SubjectError> {
        SubjectTemplate::parse(s, Direction::Subscribe)
    }

    fn identity() -> Identity {
        Identity {
            provider: Arc::from("entra"),
            issuer: "https://login.microsoftonline.com/t/v2.0".into(),
            tenant: Some("72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41".into()),
            object_id: Some("0b3c".into()),
            subject: "subj".into(),
            app_id: None,
            kind: PrincipalKind::User,
            roles: vec![],
            groups: vec![],
            scopes: vec![],
            guest: false,
            display_name: None,
            expires_at: 0,
            token_id: None,
            claims: Map::new(),
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
        ] {
            let t = pubs(s).unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert_eq!(subs("a.b q").unwrap().to_string(), "a.b q");
        assert_eq!(subs("a.* v1.*").unwrap().to_string(), "a.* v1.*");
    }

    #[test]
    fn rejects_malformed_subjects() {
        assert_eq!(pubs(""), Err(SubjectError::Empty));
        assert_eq!(pubs(".a"), Err(SubjectError::LeadingDot));
        assert_eq!(pubs("a."), Err(SubjectError::TrailingDot));
        assert_eq!(pubs("a..b"), Err(SubjectError::DoubleDot));
        assert_eq!(pubs("a b"), Err(SubjectError::QueueInPublish));
        assert_eq!(subs("a  b"), Err(SubjectError::Whitespace));
        assert_eq!(subs("a b c"), Err(SubjectError::Whitespace));
        assert_eq!(subs(" a"), Err(SubjectError::Whitespace));
        assert_eq!(subs("a\tb"), Err(SubjectError::ControlCharacter('\t')));
        assert_eq!(pubs("a.>.b"), Err(SubjectError::FullWildcardNotLast));
        assert!(matches!(
            pubs("a*"),
            Err(SubjectError::WildcardInsideToken(_))
        ));
        assert!(matches!(
            pubs("a.b>"),
            Err(SubjectError::WildcardInsideToken(_))
        ));
        assert!(
            matches!(pubs("a.{tenant}"), Err(SubjectError::UnknownPlaceholder(n)) if n == "tenant")
        );
        assert!(matches!(pubs("a.{}"), Err(SubjectError::UnknownPlaceholder(n)) if n.is_empty()));
        assert_eq!(pubs("a.{t.id}"), Err(SubjectError::PlaceholderSpansDot));
        assert_eq!(pubs("a.{tid"), Err(SubjectError::UnclosedBrace));
        assert_eq!(pubs("a.tid}"), Err(SubjectError::UnmatchedBrace));
        assert_eq!(pubs("a.{{tid}}"), Err(SubjectError::NestedBrace));
        assert!(matches!(subs("a q..x"), Err(SubjectError::InQueue(_))));
    }

    #[test]
    fn renders_placeholders() {
        let id = identity();
        let values = ClaimValues::new(&id);
        let t = pubs("ml.{tid}.u-{oid}.>").unwrap();
        assert_eq!(
            t.render(&values).unwrap(),
            "ml.72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41.u-0b3c.>"
        );
        let t = pubs("x.{app_id}").unwrap();
        assert_eq!(
            t.render(&values).unwrap_err().placeholder,
            Placeholder::AppId
        );
    }

    #[test]
    fn refuses_unsafe_claim_values() {
        for bad in ["a.b", "*", ">", "a b", "\n", "", "é", "a\u{7f}", "{x}"] {
            let mut id = identity();
            id.object_id = Some(bad.to_owned());
            let values = ClaimValues::new(&id);
            let err = pubs("u.{oid}").unwrap().render(&values).unwrap_err();
            assert_eq!(err.placeholder, Placeholder::ObjectId, "value {bad:?}");
        }
    }
}
