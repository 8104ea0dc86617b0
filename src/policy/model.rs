//! The policy file format as written: serde types that mirror the YAML one to one.
//!
//! Every value that a later check may complain about is `Spanned`, so errors can point at its
//! line and column. Unknown fields are rejected everywhere: a typo such as `acount:` must not
//! silently drop a restriction. Semantic checks live in `compile`; this module only shapes data.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// One policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    /// Format version; any YAML value so that a wrong one is reported as unsupported, not as a
    /// type error.
    pub(crate) version: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    pub(crate) rules: Vec<RawRule>,
}

/// The top level of a policy file with rules left unparsed; used to find every rule's
/// position when the file as a whole fails to deserialize.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Outline {
    pub(crate) version: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    pub(crate) rules: Vec<Spanned<de::IgnoredAny>>,
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) name: Spanned<String>,
    pub(crate) tenant: Option<Spanned<String>>,
    pub(crate) when: Option<Spanned<RawWhen>>,
    pub(crate) account: Spanned<String>,
    pub(crate) publish: Option<RawPermissions>,
    pub(crate) subscribe: Option<RawPermissions>,
    pub(crate) allow_responses: Option<Spanned<RawResponses>>,
    pub(crate) max_ttl: Option<Spanned<String>>,
}

/// The `when` block: conditions on the token, all of which must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWhen {
    pub(crate) roles: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) groups: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) kind: Option<Spanned<RawKind>>,
    pub(crate) any: Option<Spanned<bool>>,
}

/// `kind:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawKind {
    User,
    Application,
}

/// `publish:` or `subscribe:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPermissions {
    #[serde(default)]
    pub(crate) allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) deny: Vec<Spanned<String>>,
}

/// `allow_responses:` is either a boolean or `{ max, ttl }`.
#[derive(Debug)]
pub(crate) enum RawResponses {
    Flag(bool),
    Limits(RawResponseLimits),
}

/// The map form of `allow_responses`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResponseLimits {
    pub(crate) max: Option<Spanned<i64>>,
    pub(crate) ttl: Option<Spanned<String>>,
}

// Hand-written rather than `#[serde(untagged)]`: untagged enums buffer their input, which loses
// the spans inside and turns every mistake into "did not match any variant".
impl<'de> Deserialize<'de> for RawResponses {
    fn deserialize<D>(deserializer: D) -> Result<Self, D::Error>
    where
        D: Deserializer<'de>,
    {
        struct ResponsesVisitor;

        impl<'de> Visitor<'de> for ResponsesVisitor {
            type Value = RawResponses;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a map with `max` and `ttl`")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawResponses::Flag(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawResponseLimits::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawResponses::Limits)
            }
        }

        deserializer.deserialize_any(ResponsesVisitor)
    }
}
