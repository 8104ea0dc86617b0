//! The policy file format as written: serde types that mirror the YAML one to one.
//!
//! Every value that a later check may complain about is `Spanned`, so errors can point at its
//! line and column. Unknown fields are rejected everywhere: a typo such as `acount:` must not
//! silently drop a restriction. Semantic checks live in `compile`; this module only shapes data.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A list whose own position is known (for "is empty" errors), as are its items'.
pub(crate) type SpannedList = Spanned<Vec<Spanned<String>>>;

/// One policy file. Every section is optional, so tenants, roles and bindings may live in
/// separate files of one directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    /// Format version; any YAML value so that a wrong one is reported as unsupported, not as a
    /// type error.
    pub(crate) version: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    pub(crate) tenants: Vec<RawTenant>,
    #[serde(default)]
    pub(crate) roles: Vec<RawRole>,
    #[serde(default)]
    pub(crate) bindings: Vec<RawBinding>,
}

/// The top level of a policy file with its entries left unparsed; used to find every entry's
/// position when the file as a whole fails to deserialize.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Outline {
    pub(crate) version: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    pub(crate) tenants: Vec<Spanned<de::IgnoredAny>>,
    #[serde(default)]
    pub(crate) roles: Vec<Spanned<de::IgnoredAny>>,
    #[serde(default)]
    pub(crate) bindings: Vec<Spanned<de::IgnoredAny>>,
}

/// A tenant: who it is in Entra, where its clients land, and its subject namespace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted so policy files can document themselves; nothing reads it"
    )]
    pub(crate) description: Option<String>,
    /// Entra tenant ids (`tid`) whose tokens belong to this tenant.
    pub(crate) entra_tenants: Option<SpannedList>,
    /// Names of configured identity providers whose tokens may belong to this tenant.
    pub(crate) providers: Option<SpannedList>,
    pub(crate) account: Spanned<String>,
    /// Subject prefix; defaults to the name.
    pub(crate) prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) projects: Vec<RawProject>,
}

/// A project inside a tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProject {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted so policy files can document themselves; nothing reads it"
    )]
    pub(crate) description: Option<String>,
    /// Prefix below the tenant prefix; defaults to the name.
    pub(crate) prefix: Option<Spanned<String>>,
}

/// A named set of permissions, written relative to the prefix it is bound under.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted so policy files can document themselves; nothing reads it"
    )]
    pub(crate) description: Option<String>,
    /// Subjects are written in full rather than under the tenant or project prefix.
    pub(crate) absolute: Option<Spanned<bool>>,
    pub(crate) publish: Option<RawPermissions>,
    pub(crate) subscribe: Option<RawPermissions>,
    pub(crate) allow_responses: Option<Spanned<RawResponses>>,
    pub(crate) max_ttl: Option<Spanned<String>>,
    /// Streams, consumers and buckets (see `jetstream`).
    pub(crate) jetstream: Option<Spanned<super::jetstream::RawJetStream>>,
}

/// `publish:` or `subscribe:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPermissions {
    #[serde(default)]
    pub(crate) allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) deny: Vec<Spanned<String>>,
    /// Queue-group subscriptions (subscribe only).
    pub(crate) queues: Option<Spanned<Vec<RawQueue>>>,
}

/// One allowed queue-group subscription.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    pub(crate) subject: Spanned<String>,
    pub(crate) group: Spanned<String>,
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

/// Which identities get which roles, in which tenant and project.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBinding {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    pub(crate) tenant: Spanned<String>,
    pub(crate) project: Option<Spanned<String>>,
    pub(crate) roles: SpannedList,
    pub(crate) when: Option<Spanned<RawWhen>>,
}

/// The `when` block: conditions on the token, all of which must hold; a list holds when the
/// token has any of its values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWhen {
    pub(crate) everyone: Option<Spanned<bool>>,
    pub(crate) kind: Option<Spanned<RawKind>>,
    pub(crate) app_roles: Option<SpannedList>,
    pub(crate) groups: Option<SpannedList>,
    pub(crate) scopes: Option<SpannedList>,
    pub(crate) app_ids: Option<SpannedList>,
    pub(crate) object_ids: Option<SpannedList>,
    pub(crate) guest: Option<Spanned<bool>>,
    pub(crate) claims: Option<BTreeMap<String, Spanned<RawClaimMatch>>>,
    /// How the client connects (`standard`, `websocket`, `mqtt`, `leafnode`); a restriction,
    /// not an identity condition, so it combines with `everyone: true`.
    pub(crate) connection_types: Option<SpannedList>,
}

/// `kind:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawKind {
    User,
    Application,
}

/// A condition on one raw claim.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaimMatch {
    pub(crate) equals: Option<Spanned<serde_json::Value>>,
    pub(crate) glob: Option<Spanned<String>>,
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
