//! Property tests: whatever a token says, the minted permissions never exceed what the policy
//! grants, and never reach another tenant's subjects.
//!
//! Identities are generated with hostile values (dots, wildcards, spaces, `$SYS`, non-ASCII)
//! in every field a placeholder or condition reads.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, json};

use super::{Grant, PolicySet};
use crate::identity::{Identity, PrincipalKind};

const TID_A: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";
const TID_B: &str = "0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07";

const POLICY: &str = r#"
version: 1
tenants:
  - { name: ta, entra_tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41], account: APP, projects: [{ name: p1 }, { name: p2 }] }
  - { name: tb, entra_tenants: [0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07], account: APP, projects: [{ name: p1 }] }
roles:
  - name: wide
    publish: { allow: [">"], deny: ["secret.>"] }
    subscribe: { allow: ["*.events", "u-{oid}.>"] }
  - name: owned
    publish: { allow: ["own.{oid}.{app_id}", "team.{claim:team}.x-{sub}"] }
    subscribe:
      queues: [{ subject: "jobs.{claim:team}", group: "g-{oid}" }]
  - name: inbox
    absolute: true
    subscribe: { allow: ["_INBOX.{oid}.>"] }
bindings:
  - { name: a-wide, tenant: ta, project: p1, roles: [wide], when: { app_roles: [Wide] } }
  - { name: a-owned, tenant: ta, roles: [owned, inbox], when: { groups: [g1] } }
  - { name: a-p2, tenant: ta, project: p2, roles: [owned], when: { claims: { team: { glob: "*" } } } }
  - { name: b-wide, tenant: tb, project: p1, roles: [wide, inbox], when: { app_roles: [Wide] } }
  - { name: b-users, tenant: tb, roles: [owned], when: { kind: user } }
"#;

fn policies() -> PolicySet {
    match crate::testutil::compile_policy(POLICY) {
        Ok(set) => set,
        Err(e) => panic!("{e}"),
    }
}

/// Claim values an attacker might choose.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9-]{1,12}",
        1 => Just(">".to_owned()),
        1 => Just("*".to_owned()),
        1 => Just("$SYS".to_owned()),
        1 => Just("a.b".to_owned()),
        1 => Just("ta.p1".to_owned()),
        1 => Just("x y".to_owned()),
        1 => Just(String::new()),
        1 => "[a-z.*> $\u{e9}\t]{0,8}",
    ]
}

fn identity() -> impl Strategy<Value = Identity> {
    (
        prop_oneof![
            Just(Some(TID_A.to_owned())),
            Just(Some(TID_B.to_owned())),
            Just(None)
        ],
        any::<bool>(),
        proptest::sample::subsequence(vec!["Wide", "wide", "Other", "*"], 0..3),
        proptest::sample::subsequence(vec!["g1", "G1", "g2"], 0..2),
        (
            hostile(),
            hostile(),
            hostile(),
            proptest::option::of(hostile()),
        ),
    )
        .prop_map(
            |(tenant, is_app, roles, groups, (oid, sub, app_id, team))| {
                let mut claims = Map::new();
                if let Some(team) = team {
                    claims.insert("team".into(), json!(team));
                }
                Identity {
                    provider: Arc::from("entra"),
                    issuer: "https://issuer".into(),
                    tenant,
                    object_id: Some(oid),
                    subject: sub,
                    app_id: Some(app_id),
                    kind: if is_app {
                        PrincipalKind::Application
                    } else {
                        PrincipalKind::User
                    },
                    roles: roles.into_iter().map(str::to_owned).collect(),
                    groups: groups.into_iter().map(str::to_owned).collect(),
                    scopes: vec![],
                    guest: false,
                    display_name: None,
                    expires_at: 2_000_000,
                    token_id: None,
                    claims,
                }
            },
        )
}

/// The policy's own subjects with every placeholder token widened to `*`: an upper bound on
/// anything a binding can render.
fn bounds(set: &PolicySet, grant: &Grant) -> Vec<String> {
    let widen = |t: String| {
        t.split(' ')
            .map(|part| {
                part.split('.')
                    .map(|tok| if tok.contains('{') { "*" } else { tok })
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    set.bindings
        .iter()
        .filter(|b| grant.matched.contains(&b.name))
        .flat_map(|b| [&b.publish.allow, &b.subscribe.allow])
        .flatten()
        .map(|t| widen(t.to_string()))
        .collect()
}

fn covered(bound: &str, entry: &str) -> bool {
    let (bs, bq) = bound
        .split_once(' ')
        .map_or((bound, None), |(s, q)| (s, Some(q)));
    let (es, eq) = entry
        .split_once(' ')
        .map_or((entry, None), |(s, q)| (s, Some(q)));
    super::covers(bs, es)
        && match (bq, eq) {
            (None, None) => true,
            (Some(b), Some(e)) => super::covers(b, e),
            _ => false,
        }
}

/// Concrete subjects to probe with.
fn subject() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("ta"),
            Just("tb"),
            Just("p1"),
            Just("p2"),
            Just("events"),
            Just("own"),
            Just("_INBOX"),
            Just("$SYS"),
            Just("secret"),
            Just("x"),
        ],
        1..6,
    )
    .prop_map(|tokens| tokens.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn minted_permissions_never_exceed_the_policy(id in identity(), probes in proptest::collection::vec(subject(), 16)) {
        let set = policies();
        let Ok(grant) = set.evaluate(&id, 1_000_000) else { return Ok(()) };
        let bounds = bounds(&set, &grant);
        for entry in grant.publish.allow.iter().chain(&grant.subscribe.allow) {
            // Every allow entry is a policy subject with placeholders filled by single tokens.
            prop_assert!(bounds.iter().any(|b| covered(b, entry)), "{entry} exceeds {bounds:?}");
            prop_assert!(entry.len() < 512);
        }
        let own = match id.tenant.as_deref() {
            Some(TID_A) => "ta.",
            Some(TID_B) => "tb.",
            _ => return Err(TestCaseError::fail("a token without a known tenant was admitted")),
        };
        let inbox = format!("_INBOX.{}.", id.object_id.as_deref().unwrap_or_default());
        for s in &probes {
            for perms in [&grant.publish, &grant.subscribe] {
                if perms.allows(s) {
                    // Whatever is allowed lies in the token's own tenant, or its private inbox.
                    prop_assert!(s.starts_with(own) || s.starts_with(&inbox), "{s} allowed for {own}");
                    prop_assert!(!s.starts_with("$SYS"));
                }
            }
        }
        // Denies are enforced with deny winning.
        prop_assert!(!grant.publish.allows("ta.p1.secret.x") && !grant.publish.allows("tb.p1.secret.x"));
    }

    #[test]
    fn the_minted_user_jwt_carries_exactly_the_grant_and_never_outlives_the_token(
        id in identity(),
        token_lifetime in 1u64..100_000,
    ) {
        let now = 1_000_000;
        let mut id = id;
        id.expires_at = now + token_lifetime;
        let set = policies();
        let Ok(grant) = set.evaluate(&id, now) else { return Ok(()) };
        let key = crate::nats_jwt::Signer::new(nkeys::KeyPair::new_account()).unwrap();
        let issuer = crate::accounts::UserIssuer { key: &key, audience: "APP", issuer_account: None };
        let user = nkeys::KeyPair::new_user().public_key();
        let jwt = crate::callout::mint_user(&issuer, &user, &id, &grant, now)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let claims = crate::nats_jwt::decode::<crate::nats_jwt::User>(&jwt)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&claims.base.sub, &user);
        prop_assert_eq!(claims.base.aud.as_str(), "APP");
        prop_assert!(claims.base.exp > now && claims.base.exp <= id.expires_at);
        prop_assert!(!claims.nats.bearer_token);
        for (minted, granted) in [(&claims.nats.publish, &grant.publish), (&claims.nats.subscribe, &grant.subscribe)] {
            if granted.allow.is_empty() {
                // Nothing granted is written as an explicit deny-all, never as "no limits".
                prop_assert!(minted.allow.is_empty());
                prop_assert_eq!(&minted.deny, &vec![">".to_owned()]);
            } else {
                prop_assert_eq!(&minted.allow, &granted.allow);
                prop_assert_eq!(&minted.deny, &granted.deny);
            }
        }
    }
}

/// One identifier in the forms tenants write it: a GUID, a name with non-ASCII letters, a
/// down-level `DOMAIN\name`-free name with dots and dashes.
fn base_identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[A-Za-z][A-Za-z0-9._-]{0,10}",
        "[a-zA-Z\u{e9}\u{c9}\u{df}\u{3a3}\u{3c3}]{1,6}",
    ]
}

/// `value` with the case of the characters chosen by `mask` flipped.
fn recase(value: &str, mask: u64) -> String {
    value
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                if c.is_lowercase() {
                    c.to_uppercase().next().unwrap_or(c)
                } else {
                    c.to_lowercase().next().unwrap_or(c)
                }
            } else {
                c
            }
        })
        .collect()
}

/// A policy value and a token value for one field: the same identifier in another case, or
/// two unrelated identifiers.
fn pair(guid_only: bool) -> impl Strategy<Value = (String, String)> {
    let base = if guid_only {
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
            .prop_map(|s| s)
            .boxed()
    } else {
        base_identifier().boxed()
    };
    (
        base.clone(),
        base,
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(a, b, m1, m2, same)| {
            let token = if same { recase(&a, m2) } else { recase(&b, m2) };
            (recase(&a, m1), token)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every identifier field a binding can require is compiled and evaluated under one rule
    /// (`ident`): GUIDs and group names match in any case, roles, scopes and other ids only
    /// exactly. A binding that matches also applies its denies; `explain` agrees with the
    /// decision, binding for binding.
    #[test]
    fn every_identifier_field_compiles_and_evaluates_under_one_rule(
        tid_mask in any::<u64>(),
        group in pair(false),
        role in pair(false),
        scope in pair(false),
        app in pair(true),
        object in pair(true),
        client in pair(false),
    ) {
        let policy = format!(
            r#"
version: 1
tenants:
  - {{ name: t, entra_tenants: ["{tid}"], account: APP }}
roles:
  - {{ name: base, subscribe: {{ allow: ["kc.>"] }} }}
  - {{ name: fence, subscribe: {{ allow: ["fenced"], deny: ["kc.secret.>"] }} }}
bindings:
  - {{ name: everyone, tenant: t, roles: [base], when: {{ everyone: true }} }}
  - {{ name: by-group, tenant: t, roles: [fence], when: {{ groups: ["{g}"] }} }}
  - {{ name: by-role, tenant: t, roles: [fence], when: {{ app_roles: ["{r}"] }} }}
  - {{ name: by-scope, tenant: t, roles: [fence], when: {{ scopes: ["{s}"] }} }}
  - {{ name: by-app, tenant: t, roles: [fence], when: {{ app_ids: ["{a}"] }} }}
  - {{ name: by-object, tenant: t, roles: [fence], when: {{ object_ids: ["{o}"] }} }}
"#,
            tid = recase(TID_A, tid_mask),
            g = group.0,
            r = role.0,
            s = scope.0,
            a = app.0,
            o = object.0,
        );
        let set = crate::testutil::compile_policy(&policy)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The token side of a generic provider's client id, which is not a GUID, is compared
        // exactly; an Entra app id is a GUID and compared in any case.
        let app_id = if client.1.len() % 2 == 0 { app.1.clone() } else { client.1 };
        let id = Identity {
            provider: Arc::from("entra"),
            issuer: "https://issuer".into(),
            tenant: Some(TID_A.to_owned()),
            object_id: Some(object.1.clone()),
            subject: "s".into(),
            app_id: Some(app_id.clone()),
            kind: PrincipalKind::User,
            roles: vec![role.1.clone()],
            groups: vec![group.1.clone()],
            scopes: vec![scope.1.clone()],
            guest: false,
            display_name: None,
            expires_at: 2_000_000,
            token_id: None,
            claims: Map::new(),
        };
        let insensitive = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
        let expected: Vec<&str> = [
            ("everyone", true),
            ("by-group", insensitive(&group.0, &group.1)),
            ("by-role", role.0 == role.1),
            ("by-scope", scope.0 == scope.1),
            ("by-app", insensitive(&app.0, &app_id)),
            ("by-object", insensitive(&object.0, &object.1)),
        ]
        .into_iter()
        .filter_map(|(name, m)| m.then_some(name))
        .collect();

        let grant = set.evaluate(&id, 1_000_000).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let matched: Vec<&str> = grant.matched.iter().map(|n| &**n).collect();
        prop_assert_eq!(&matched, &expected);
        // A matching binding's deny is never dropped.
        prop_assert_eq!(grant.subscribe.allows("t.kc.secret.payroll"), expected.len() == 1);
        prop_assert!(grant.subscribe.allows("t.kc.public"));

        let explained = set.explain(&id, 1_000_000);
        let said: Vec<&str> = explained
            .bindings
            .iter()
            .filter(|b| b.outcome.is_ok())
            .map(|b| &*b.name)
            .collect();
        prop_assert_eq!(&said, &expected);
        prop_assert_eq!(explained.decision, Ok(grant));
    }
}
