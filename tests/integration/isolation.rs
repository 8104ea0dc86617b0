//! Tenant isolation against a real nats-server: identities from several tenants and projects
//! each try to publish and subscribe to every other's subjects, and only their own work.
//! Injection attempts through claims are refused by the callout.

use std::time::Duration;

use async_nats::ConnectErrorKind;
use futures_util::StreamExt;
use serde_json::json;

use crate::support::binary;
use crate::support::client::{connect, next_error};
use crate::support::issuer::{OTHER_TENANT, TENANT, TestIssuer};
use crate::support::nats::{NatsServer, config_mode};
use crate::support::service::{Answered, Replica, write_two_tenant_config};

struct Stack {
    contoso: TestIssuer,
    fabrikam: TestIssuer,
    server: NatsServer,
    replica: Replica,
}

impl Stack {
    async fn start() -> Self {
        Self::start_with(&binary::policy()).await
    }

    async fn start_with(policy: &str) -> Self {
        let contoso = TestIssuer::start_for(TENANT).await;
        let fabrikam = TestIssuer::start_for(OTHER_TENANT).await;
        let account = nkeys::KeyPair::new_account();
        let server = NatsServer::start(&config_mode(&account.public_key(), None, ""));
        let config_path = write_two_tenant_config(
            server.dir(),
            &server.url(),
            &account,
            policy,
            &contoso,
            &fabrikam,
        );

        let replica = Replica::start(&config_path).await;
        Self {
            replica,
            contoso,
            fabrikam,
            server,
        }
    }

    async fn stop(self) {
        self.replica.stop().await;
    }
}

#[tokio::test]
async fn each_identity_reaches_only_its_own_tenant_and_project() {
    let stack = Stack::start().await;
    let url = stack.server.url();
    // (who, token, own subject)
    let identities = [
        (
            "contoso/alpha",
            stack.contoso.app_token(json!({ "roles": ["Alpha"] })),
            "contoso.alpha.data",
        ),
        (
            "contoso/beta",
            stack.contoso.app_token(json!({ "roles": ["Beta"] })),
            "contoso.beta.data",
        ),
        (
            "fabrikam/alpha",
            stack.fabrikam.app_token(json!({ "roles": ["Alpha"] })),
            "fabrikam.alpha.data",
        ),
    ];
    let mut clients = Vec::new();
    for (who, token, _) in &identities {
        clients.push(
            connect(&url, token)
                .await
                .unwrap_or_else(|e| panic!("{who}: {e}")),
        );
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let (who, _, own) = &identities[i];
        // Its own subjects work both ways: it receives what it publishes.
        let mut sub = client.nats.subscribe(own.to_string()).await.unwrap();
        client
            .nats
            .publish(own.to_string(), "mine".into())
            .await
            .unwrap();
        client.nats.flush().await.unwrap();
        let message = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{who} receives its own message"))
            .expect("subscription open");
        assert_eq!(&message.payload[..], b"mine", "{who}");

        // Every other identity's subjects are refused by the server, in both directions.
        for (j, (other, _, theirs)) in identities.iter().enumerate() {
            if i == j {
                continue;
            }
            client
                .nats
                .publish(theirs.to_string(), "intrusion".into())
                .await
                .unwrap();
            client.nats.flush().await.unwrap();
            let err = next_error(client).await;
            assert!(
                err.contains("permissions violation for publish") && err.contains(theirs),
                "{who} -> {other}: {err}"
            );
            let _sub = client.nats.subscribe(theirs.to_string()).await.unwrap();
            client.nats.flush().await.unwrap();
            let err = next_error(client).await;
            assert!(
                err.contains("permissions violation for subscription") && err.contains(theirs),
                "{who} <- {other}: {err}"
            );
        }
        // Wildcards reaching outside the prefix are refused too.
        for wide in [">", "*.alpha.data", "contoso.>", "$SYS.>"] {
            let _sub = client.nats.subscribe(wide.to_string()).await.unwrap();
            client.nats.flush().await.unwrap();
            let err = next_error(client).await;
            assert!(
                err.contains("permissions violation for subscription"),
                "{who} {wide}: {err}"
            );
        }
    }
    stack.replica.wait_answered(Answered::new(3, 0)).await;
    stack.stop().await;
}

#[tokio::test]
async fn claims_that_would_widen_a_subject_are_refused() {
    let stack = Stack::start().await;
    let url = stack.server.url();
    let good = stack.contoso.app_token(json!({ "roles": ["Mail"] }));
    let client = connect(&url, &good)
        .await
        .expect("a plain object id is admitted");
    drop(client);
    for (n, oid) in ["*", ">", "a.b", "x y", "$SYS.>"].into_iter().enumerate() {
        let token = stack
            .contoso
            .app_token(json!({ "roles": ["Mail"], "oid": oid, "sub": oid }));
        let err = connect(&url, &token)
            .await
            .err()
            .unwrap_or_else(|| panic!("oid {oid:?} admitted"));
        assert_eq!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{oid:?}"
        );
        stack
            .replica
            .wait_answered(Answered::new(1, n as u64 + 1))
            .await;
    }
    let line = "Auth callout service returned an error: unsafe_claim_value";
    assert!(
        stack.server.wait_for_log(line).await,
        "{}",
        stack.server.log()
    );
    assert_eq!(
        stack.server.wait_for_log_count(line, 5).await,
        5,
        "{}",
        stack.server.log()
    );
    stack.stop().await;
}

#[tokio::test]
async fn verified_tokens_are_cached_and_policies_apply_at_every_connect() {
    let stack = Stack::start().await;
    let url = stack.server.url();
    let token = stack.contoso.app_token(json!({ "roles": ["Alpha"] }));
    for _ in 0..3 {
        connect(&url, &token).await.expect("admitted");
    }
    stack.replica.wait_answered(Answered::new(3, 0)).await;
    assert_eq!(stack.replica.cache_hits(), 2);
    let verifier = stack.replica.authorizer().verifier();
    assert_eq!(verifier.cached_tokens().await, 1, "one token, one entry");

    // New policies without the binding: the next connect with the same (cached) token must be
    // judged by them. The cache holds only the verification, so it is kept, not flushed.
    let text = binary::policy().replace(
        "app_roles: [Alpha] } }\n  - { name: contoso-beta",
        "app_roles: [Gone] } }\n  - { name: contoso-beta",
    );
    assert!(text.contains("[Gone]"));
    let opts = entra_callout::policy::CompileOptions {
        forbidden_accounts: vec!["SYS".into(), "AUTH".into()],
        accounts: Vec::new(),
        default_max_ttl: Duration::from_secs(3600),
        providers: Vec::new(),
    };
    let policies = entra_callout::policy::compile(
        &[entra_callout::policy::PolicySource {
            name: "new.yaml".into(),
            text,
        }],
        &opts,
    )
    .unwrap();
    stack.replica.authorizer().replace_policies(policies);
    let err = connect(&url, &token)
        .await
        .err()
        .expect("refused after the policy change");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation);
    assert!(
        stack
            .server
            .wait_for_log("Auth callout service returned an error: no_matching_policy")
            .await
    );
    stack.replica.wait_answered(Answered::new(3, 1)).await;
    assert_eq!(
        stack.replica.cache_hits(),
        3,
        "the refusal came from a cached verification and the new policies"
    );
    assert_eq!(verifier.cached_tokens().await, 1);
    stack.stop().await;
}

/// The reproduction of an independent attack: a binding that denies `secret.>` to the group
/// `Contractors` must apply to a token whose group is written `Contractors` (or any other case),
/// as Entra's on-premises group names are case-insensitive. It once never matched, so its deny
/// was silently dropped while `everyone` granted `kc.>`.
#[tokio::test]
async fn a_deny_bound_to_a_mixed_case_group_name_is_enforced() {
    let policy = format!(
        r#"version: 1
tenants:
  - {{ name: kc, entra_tenants: ["{tid}"], account: APP }}
roles:
  - {{ name: reader, subscribe: {{ allow: [">"] }}, publish: {{ allow: [">"] }} }}
  - {{ name: no-secrets, subscribe: {{ allow: ["contractors.>"], deny: ["secret.>"] }} }}
bindings:
  - {{ name: everyone, tenant: kc, roles: [reader], when: {{ everyone: true }} }}
  - {{ name: contractors, tenant: kc, roles: [no-secrets], when: {{ groups: [Contractors] }} }}
"#,
        tid = TENANT.to_uppercase()
    );
    let stack = Stack::start_with(&policy).await;
    let url = stack.server.url();
    for written in ["Contractors", "CONTRACTORS", "contractors"] {
        let token = stack.contoso.token(json!({ "groups": [written] }));
        let mut client = connect(&url, &token)
            .await
            .unwrap_or_else(|e| panic!("{written}: {e}"));
        let _subscription = client.nats.subscribe("kc.secret.>").await.unwrap();
        client.nats.flush().await.unwrap();
        let error = next_error(&mut client).await;
        assert!(
            error.contains("permissions violation for subscription to \"kc.secret.>\""),
            "{written}: {error}"
        );
        // The rest of `everyone`'s grant still holds.
        let mut public = client.nats.subscribe("kc.public").await.unwrap();
        client.nats.publish("kc.public", "ok".into()).await.unwrap();
        let message = tokio::time::timeout(Duration::from_secs(5), public.next())
            .await
            .expect("kc.public delivered within 5 s")
            .expect("subscription open");
        assert_eq!(&message.payload[..], b"ok", "{written}");
    }
    // Without the group, the deny does not apply.
    let outsider = stack.contoso.token(json!({ "groups": ["Employees"] }));
    let client = connect(&url, &outsider).await.unwrap();
    let mut secret = client.nats.subscribe("kc.secret.>").await.unwrap();
    client
        .nats
        .publish("kc.secret.payroll", "p".into())
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), secret.next())
        .await
        .expect("kc.secret.payroll delivered within 5 s")
        .expect("subscription open");
    assert_eq!(message.subject.as_str(), "kc.secret.payroll");
    stack.stop().await;
}
