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
            subscribe
                .add(&rule.subscribe, &values)
                .map_err(unsafe_claim)?;
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

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::identity::PrincipalKind;
    use crate::policy::{CompileOptions, PolicySource, compile};

    const TID: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";
    const OTHER_TID: &str = "0d9a1f3e-8c2b-4b7a-a5e6-3f1c9d8b7e20";
    const NOW: u64 = 1_000_000;

    fn set(rules: &str) -> PolicySet {
        let text = format!("version: 1\nrules:\n{rules}");
        let opts = CompileOptions {
            forbidden_accounts: vec!["SYS".into()],
            default_max_ttl: Duration::from_secs(3600),
        };
        match compile(
            &[PolicySource {
                name: "t.yaml".into(),
                text,
            }],
            &opts,
        ) {
            Ok(set) => set,
            Err(e) => panic!("{e}"),
        }
    }

    fn user() -> Identity {
        Identity {
            provider: Arc::from("entra"),
            issuer: format!("https://login.microsoftonline.com/{TID}/v2.0"),
            tenant: Some(TID.into()),
            object_id: Some("5f1d2c3b-0000-4000-8000-000000000001".into()),
            subject: "AAAAsubject".into(),
            app_id: Some("app1".into()),
            kind: PrincipalKind::User,
            roles: vec![],
            groups: vec![],
            scopes: vec![],
            guest: false,
            display_name: None,
            expires_at: NOW + 86_400,
            token_id: None,
            claims: Map::new(),
        }
    }

    fn with_roles(roles: &[&str]) -> Identity {
        let mut id = user();
        id.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        id
    }

    const RULES: &str = "
  - name: publishers
    tenant: 72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41
    when: { roles: [Nats.Publisher] }
    account: APP
    publish: { allow: [\"ml.{tid}.>\"], deny: [\"ml.{tid}.admin.>\"] }
    max_ttl: 10m
  - name: readers
    when: { groups: [c3d9e1a7-5b2f-4d8e-9a61-0f4b7c2e8d15] }
    account: APP
    subscribe: { allow: [\"_INBOX.>\", \"ml.>\"] }
    allow_responses: true
  - name: apps
    tenant: 72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41
    when: { kind: application }
    account: APP
    publish: { allow: [\"apps.{app_id}.>\"] }
    allow_responses: { max: 5, ttl: 1s }
";

    #[test]
    fn role_match_substitutes_placeholders() {
        let grant = set(RULES)
            .evaluate(&with_roles(&["Nats.Publisher"]), NOW)
            .unwrap();
        assert_eq!(grant.account, "APP");
        assert_eq!(grant.publish.allow, [format!("ml.{TID}.>")]);
        assert_eq!(grant.publish.deny, [format!("ml.{TID}.admin.>")]);
        assert!(grant.subscribe.allow.is_empty());
        assert_eq!(grant.responses, None);
        assert_eq!(grant.matched, [Arc::from("publishers")]);
    }

    #[test]
    fn group_match() {
        let mut id = user();
        id.groups = vec![
            "other".into(),
            "c3d9e1a7-5b2f-4d8e-9a61-0f4b7c2e8d15".into(),
        ];
        let grant = set(RULES).evaluate(&id, NOW).unwrap();
        assert_eq!(grant.matched, [Arc::from("readers")]);
        assert_eq!(grant.subscribe.allow, ["_INBOX.>", "ml.>"]);
        assert!(grant.publish.allow.is_empty());
        assert_eq!(
            grant.responses,
            Some(Responses {
                max: 1,
                ttl: Duration::from_secs(120)
            })
        );
    }

    #[test]
    fn no_match_is_denied() {
        let deny = set(RULES)
            .evaluate(&with_roles(&["Other"]), NOW)
            .unwrap_err();
        assert_eq!(deny.reason(), DenyReason::NoMatchingPolicy);
        // Role names are case-sensitive.
        let deny = set(RULES)
            .evaluate(&with_roles(&["nats.publisher"]), NOW)
            .unwrap_err();
        assert_eq!(deny.reason(), DenyReason::NoMatchingPolicy);
    }

    #[test]
    fn tenant_mismatch_is_denied() {
        let mut id = with_roles(&["Nats.Publisher"]);
        id.tenant = Some(OTHER_TID.into());
        let deny = set(RULES).evaluate(&id, NOW).unwrap_err();
        assert_eq!(deny.reason(), DenyReason::NoMatchingPolicy);
        id.tenant = None;
        let deny = set(RULES).evaluate(&id, NOW).unwrap_err();
        assert_eq!(deny.reason(), DenyReason::NoMatchingPolicy);
    }

    #[test]
    fn kind_filter() {
        let policies = set(RULES);
        assert_eq!(
            policies.evaluate(&user(), NOW).unwrap_err().reason(),
            DenyReason::NoMatchingPolicy
        );
        let mut app = user();
        app.kind = PrincipalKind::Application;
        let grant = policies.evaluate(&app, NOW).unwrap();
        assert_eq!(grant.matched, [Arc::from("apps")]);
        assert_eq!(grant.publish.allow, ["apps.app1.>"]);
    }

    #[test]
    fn matching_rules_merge() {
        let mut id = with_roles(&["Nats.Publisher"]);
        id.kind = PrincipalKind::Application;
        id.groups = vec!["c3d9e1a7-5b2f-4d8e-9a61-0f4b7c2e8d15".into()];
        let grant = set(RULES).evaluate(&id, NOW).unwrap();
        assert_eq!(
            grant.matched,
            [
                Arc::from("publishers"),
                Arc::from("readers"),
                Arc::from("apps")
            ]
        );
        assert_eq!(
            grant.publish.allow,
            [format!("ml.{TID}.>"), "apps.app1.>".to_owned()]
        );
        assert_eq!(grant.subscribe.allow, ["_INBOX.>", "ml.>"]);
        // Most generous of {1, 2m} and {5, 1s}.
        assert_eq!(
            grant.responses,
            Some(Responses {
                max: 5,
                ttl: Duration::from_secs(120)
            })
        );
        // Strictest lifetime: publishers caps at 10m.
        assert_eq!(grant.expires_at, NOW + 600);
    }

    #[test]
    fn account_conflict_is_denied() {
        let policies = set("
  - name: a
    when: { roles: [A] }
    account: ONE
    publish: { allow: [a] }
  - name: b
    when: { roles: [B] }
    account: TWO
    publish: { allow: [b] }
");
        assert!(policies.evaluate(&with_roles(&["A"]), NOW).is_ok());
        let deny = policies
            .evaluate(&with_roles(&["A", "B"]), NOW)
            .unwrap_err();
        assert_eq!(deny.reason(), DenyReason::AccountConflict);
        assert!(deny.detail().contains("`a` and `b`"), "{}", deny.detail());
    }

    #[test]
    fn expiry_is_capped() {
        let policies = set(RULES);
        let mut id = with_roles(&["Nats.Publisher"]);
        // Rule cap (10m) below token expiry.
        assert_eq!(policies.evaluate(&id, NOW).unwrap().expires_at, NOW + 600);
        // Token expiry below the rule cap.
        id.expires_at = NOW + 60;
        assert_eq!(policies.evaluate(&id, NOW).unwrap().expires_at, NOW + 60);
        // Default cap (1h) for a rule without max_ttl.
        let mut reader = user();
        reader.groups = vec!["c3d9e1a7-5b2f-4d8e-9a61-0f4b7c2e8d15".into()];
        assert_eq!(
            policies.evaluate(&reader, NOW).unwrap().expires_at,
            NOW + 3600
        );
    }

    #[test]
    fn unsafe_claim_values_are_refused() {
        let policies = set("
  - name: mailbox
    when: { any: true }
    account: APP
    subscribe: { allow: [\"mail.u-{oid}.>\"] }
");
        for bad in ["a.b", "*", ">", "a b", "\n", "", "é"] {
            let mut id = user();
            id.object_id = Some(bad.into());
            let deny = policies.evaluate(&id, NOW).unwrap_err();
            assert_eq!(deny.reason(), DenyReason::UnsafeClaimValue, "value {bad:?}");
            // The detail names the claim, never its (attacker-controlled) value.
            assert!(deny.detail().contains("{oid}"), "{}", deny.detail());
            assert!(!deny.detail().contains("a.b") && !deny.detail().contains('é'));
        }
        let mut id = user();
        id.object_id = None;
        assert_eq!(
            policies.evaluate(&id, NOW).unwrap_err().reason(),
            DenyReason::UnsafeClaimValue
        );
        id.object_id = Some("abc".into());
        assert_eq!(
            policies.evaluate(&id, NOW).unwrap().subscribe.allow,
            ["mail.u-abc.>"]
        );
    }

    #[test]
    fn an_unsafe_rule_refuses_the_whole_grant() {
        // Dropping only the unsafe rule would drop its deny and leave `a.>` fully open.
        let policies = set("
  - name: broad
    when: { roles: [A] }
    account: APP
    publish: { allow: [\"a.>\"] }
  - name: narrowing
    when: { roles: [A] }
    account: APP
    publish: { allow: [x], deny: [\"a.{oid}.secret\"] }
");
        let mut id = with_roles(&["A"]);
        id.object_id = Some("*".into());
        assert_eq!(
            policies.evaluate(&id, NOW).unwrap_err().reason(),
            DenyReason::UnsafeClaimValue
        );
    }

    #[test]
    fn rendered_subjects_never_gain_tokens() {
        // Property-style sweep: whatever the claim, a grant keeps the template's token count
        // and never contains a wildcard the policy did not write.
        let policies = set("
  - name: own
    when: { any: true }
    account: APP
    publish: { allow: [\"u.{sub}.x\"] }
");
        let alphabet = [
            'a', 'Z', '0', '-', '_', '.', '*', '>', ' ', '\t', '\u{0}', 'é', '{', '}', '$',
        ];
        for a in alphabet {
            for b in alphabet {
                let mut id = user();
                id.subject = format!("{a}{b}");
                if let Ok(grant) = policies.evaluate(&id, NOW) {
                    let s = grant.publish.allow.first().unwrap();
                    assert_eq!(s.split('.').count(), 3, "{s:?}");
                    assert!(!s.contains(['*', '>', ' ']), "{s:?}");
                }
            }
        }
    }
}
