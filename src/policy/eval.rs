//! Evaluation: identity → [`Grant`] or [`PolicyDeny`]. Pure, no I/O, deny by default.
//!
//! Every rule whose conditions hold is merged into one grant: allows and denies are unioned,
//! response permissions take the most generous limits, and the lifetime takes the strictest
//! cap. If any matched rule cannot be rendered safely, the whole evaluation is refused rather
//! than that rule dropped: dropping it would also drop its deny entries and could widen what
//! the remaining rules grant.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::compile::{Bucket, PolicySet, Rule, Templates};
use super::subject::{ClaimValues, UnsafeClaim};
use crate::deny::DenyReason;
use crate::identity::Identity;

/// What an identity is allowed to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Target NATS account (its name in config mode).
    pub account: String,
    /// Publish permissions; `allow` may be empty (the integrator then denies `>`).
    pub publish: Permissions,
    /// Subscribe permissions; entries may be `"subject queue"`.
    pub subscribe: Permissions,
    /// Permission to reply to received requests, if any rule grants it.
    pub responses: Option<Responses>,
    /// When the minted credential must expire (unix seconds).
    pub expires_at: u64,
    /// Names of the rules that matched, in load order.
    pub matched: Vec<Arc<str>>,
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

impl PolicyDeny {
    fn new(reason: DenyReason, detail: String) -> Self {
        Self { reason, detail }
    }

    /// The stable reason code.
    pub fn reason(&self) -> DenyReason {
        self.reason
    }

    /// A human explanation for the service log (never for the client). It names rules and
    /// claims but never includes claim values.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl PolicySet {
    /// Decide what `id` may do, with `now` in unix seconds.
    pub fn evaluate(&self, id: &Identity, now: u64) -> Result<Grant, PolicyDeny> {
        let matched = self.matching_rules(id);
        let Some(first) = matched.first() else {
            return Err(PolicyDeny::new(
                DenyReason::NoMatchingPolicy,
                "no rule matches this identity".to_owned(),
            ));
        };

        if let Some(other) = matched.iter().find(|r| r.account != first.account) {
            return Err(PolicyDeny::new(
                DenyReason::AccountConflict,
                format!(
                    "rules `{}` and `{}` grant different accounts (`{}` and `{}`)",
                    first.name, other.name, first.account, other.account
                ),
            ));
        }

        let values = ClaimValues::new(id);
        let mut publish = Merged::default();
        let mut subscribe = Merged::default();
        let mut responses: Option<Responses> = None;
        let mut ttl = Duration::MAX;
        for rule in &matched {
            let unsafe_claim = |e: UnsafeClaim| {
                PolicyDeny::new(
                    DenyReason::UnsafeClaimValue,
                    format!(
                        "rule `{}` uses {{{}}}, but the token's value {}",
                        rule.name,
                        e.placeholder.name(),
                        e.problem
                    ),
                )
            };
            publish.add(&rule.publish, &values).map_err(unsafe_claim)?;
            subscribe.add(&rule.subscribe, &values).map_err(unsafe_claim)?;
            if let Some(r) = rule.responses {
                responses = Some(match responses {
                    None => r,
                    Some(acc) => Responses {
                        max: acc.max.max(r.max),
                        ttl: acc.ttl.max(r.ttl),
                    },
                });
            }
            ttl = ttl.min(rule.max_ttl.unwrap_or(self.default_max_ttl));
        }

        let publish = publish.finish();
        let subscribe = subscribe.finish();
        if publish.allow.is_empty() && subscribe.allow.is_empty() {
            // Compilation rejects such rules, so this only guards against future changes.
            return Err(PolicyDeny::new(
                DenyReason::NoMatchingPolicy,
                "matching rules allow no subject in either direction".to_owned(),
            ));
        }

        Ok(Grant {
            account: first.account.clone(),
            publish,
            subscribe,
            responses,
            expires_at: id.expires_at.min(now.saturating_add(ttl.as_secs())),
            matched: matched.iter().map(|r| Arc::clone(&r.name)).collect(),
        })
    }

    /// Rules whose tenant and `when` conditions hold, in load order.
    fn matching_rules(&self, id: &Identity) -> Vec<&Rule> {
        let mut candidates = Vec::new();
        self.index.any_tenant.candidates(id, &mut candidates);
        if let Some(tenant) = &id.tenant {
            let bucket = match self.index.by_tenant.get(tenant) {
                Some(b) => Some(b),
                None => self.index.by_tenant.get(&tenant.to_ascii_lowercase()),
            };
            if let Some(bucket) = bucket {
                bucket.candidates(id, &mut candidates);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .filter_map(|i| self.rules.get(i))
            .filter(|r| r.matches(id))
            .collect()
    }
}

impl Bucket {
    fn candidates(&self, id: &Identity, out: &mut Vec<usize>) {
        for role in &id.roles {
            if let Some(rules) = self.by_role.get(role) {
                out.extend_from_slice(rules);
            }
        }
        for group in &id.groups {
            if let Some(rules) = self.by_group.get(group) {
                out.extend_from_slice(rules);
            }
        }
        out.extend_from_slice(&self.rest);
    }
}

impl Rule {
    /// The full check; the index only narrows the search.
    fn matches(&self, id: &Identity) -> bool {
        let tenant_ok = match (&self.tenant, &id.tenant) {
            (None, _) => true,
            (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
            (Some(_), None) => false,
        };
        tenant_ok
            && self.kind.is_none_or(|k| k == id.kind)
            && (self.roles.is_empty() || self.roles.iter().any(|r| id.roles.contains(r)))
            && (self.groups.is_empty() || self.groups.iter().any(|g| id.groups.contains(g)))
    }
}

/// Union of rendered subjects in first-seen order.
#[derive(Default)]
struct Merged {
    allow: Vec<String>,
    deny: Vec<String>,
    seen_allow: HashSet<String>,
    seen_deny: HashSet<String>,
}

impl Merged {
    fn add(&mut self, templates: &Templates, values: &ClaimValues<'_>) -> Result<(), UnsafeClaim> {
        for t in &templates.allow {
            let s = t.render(values)?;
            if self.seen_allow.insert(s.clone()) {
                self.allow.push(s);
            }
        }
        for t in &templates.deny {
            let s = t.render(values)?;
            if self.seen_deny.insert(s.clone()) {
                self.deny.push(s);
            }
        }
        Ok(())
    }

    fn finish(self) -> Permissions {
        Permissions {
            allow: self.allow,
            deny: self.deny,
        }
    }
}
