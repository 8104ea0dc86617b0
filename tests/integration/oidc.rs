//! Token verification against the in-process Entra-like issuer, over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use entra_callout::deny::DenyReason;
use entra_callout::identity::PrincipalKind;
use entra_callout::oidc::{TokenError, Verifier};
use serde_json::json;

use crate::support::issuer::{
    APP_OID, AUDIENCE, DAEMON_CLIENT, GROUP, KID_1, KID_2, KID_3, OTHER_TENANT, SPA_CLIENT, TENANT,
    TestIssuer, USER_OID, now, unsigned_token,
};

async fn setup() -> (TestIssuer, Verifier) {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::new(vec![issuer.settings()]).unwrap();
    (issuer, verifier)
}

async fn warm_setup() -> (TestIssuer, Verifier) {
    let (issuer, verifier) = setup().await;
    verifier.warm().await.unwrap();
    assert_eq!(issuer.jwks_hits(), 1);
    (issuer, verifier)
}

async fn reason(verifier: &Verifier, token: &str) -> DenyReason {
    verifier.verify(token, now()).await.unwrap_err().reason()
}

#[tokio::test]
async fn accepts_a_v2_user_token() {
    let (issuer, verifier) = setup().await;
    let identity = verifier
        .verify(&issuer.token(json!({})), now())
        .await
        .unwrap();
    assert_eq!(identity.kind, PrincipalKind::User);
    assert_eq!(identity.issuer, issuer.issuer());
    assert_eq!(identity.tenant.as_deref(), Some(TENANT));
    assert_eq!(identity.object_id.as_deref(), Some(USER_OID));
    assert_eq!(identity.app_id.as_deref(), Some(SPA_CLIENT));
    assert_eq!(identity.scopes, ["Nats.Connect"]);
    assert_eq!(identity.roles, ["Nats.Publisher", "Nats.Subscriber"]);
    assert!(identity.groups.iter().any(|g| g == GROUP));
    assert_eq!(identity.claims.get("aud"), Some(&json!(AUDIENCE)));
    // A cold cache was filled by one discovery and one JWKS fetch.
    assert_eq!((issuer.discovery_hits(), issuer.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn accepts_an_app_only_token() {
    let (issuer, verifier) = warm_setup().await;
    let identity = verifier
        .verify(&issuer.app_token(json!({})), now())
        .await
        .unwrap();
    assert_eq!(identity.kind, PrincipalKind::Application);
    assert_eq!(identity.object_id.as_deref(), Some(APP_OID));
    assert_eq!(identity.app_id.as_deref(), Some(DAEMON_CLIENT));
    assert_eq!(identity.roles, ["Nats.Service.Orders"]);
    assert!(identity.scopes.is_empty());
}

#[tokio::test]
async fn refuses_a_signature_by_an_unpublished_key() {
    let (issuer, verifier) = warm_setup().await;
    let forged = issuer.sign_with(KID_3, json!({"kid": KID_1}), &issuer.user_claims());
    assert_eq!(
        reason(&verifier, &forged).await,
        DenyReason::SignatureInvalid
    );
}

#[tokio::test]
async fn refuses_expired_and_not_yet_valid_tokens() {
    let (issuer, verifier) = warm_setup().await;
    let expired = issuer.token(json!({"exp": now() - 3600, "nbf": now() - 7200}));
    assert_eq!(reason(&verifier, &expired).await, DenyReason::TokenExpired);
    let early = issuer.token(json!({"nbf": now() + 600}));
    assert_eq!(
        reason(&verifier, &early).await,
        DenyReason::TokenNotYetValid
    );
}

#[tokio::test]
async fn refuses_another_audience() {
    let (issuer, verifier) = warm_setup().await;
    let graph = issuer.token(json!({"aud": "00000003-0000-0000-c000-000000000000"}));
    assert_eq!(
        reason(&verifier, &graph).await,
        DenyReason::AudienceMismatch
    );
}

#[tokio::test]
async fn refuses_other_tenants() {
    let (issuer, verifier) = setup().await;
    // Another tenant's issuer is refused without touching the network.
    let other_iss = format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0");
    let foreign = issuer.token(json!({"iss": other_iss, "tid": OTHER_TENANT}));
    assert_eq!(
        reason(&verifier, &foreign).await,
        DenyReason::TenantNotAllowed
    );
    let elsewhere = issuer.token(json!({"iss": "https://idp.example/"}));
    assert_eq!(
        reason(&verifier, &elsewhere).await,
        DenyReason::IssuerUnknown
    );
    assert_eq!((issuer.discovery_hits(), issuer.jwks_hits()), (0, 0));

    // Our issuer but another `tid`.
    let mixed = issuer.token(json!({"tid": OTHER_TENANT}));
    assert_eq!(reason(&verifier, &mixed).await, DenyReason::TenantMismatch);
    assert_eq!((issuer.discovery_hits(), issuer.jwks_hits()), (0, 0));
}

#[tokio::test]
async fn refuses_algorithm_confusion_without_network() {
    let (issuer, verifier) = setup().await;
    let none = unsigned_token(&issuer.user_claims());
    assert_eq!(
        reason(&verifier, &none).await,
        DenyReason::AlgorithmNotAllowed
    );
    let hs256 = issuer.hs256_with_public_key(KID_1, &issuer.user_claims());
    assert_eq!(
        reason(&verifier, &hs256).await,
        DenyReason::AlgorithmNotAllowed
    );
    let rs512 = issuer.sign_with(KID_1, json!({"alg": "RS512"}), &issuer.user_claims());
    assert_eq!(
        reason(&verifier, &rs512).await,
        DenyReason::AlgorithmNotAllowed
    );
    assert_eq!(issuer.jwks_hits(), 0);
}

#[tokio::test]
async fn refuses_a_token_without_kid() {
    let (issuer, verifier) = setup().await;
    let token = issuer.sign_with(KID_1, json!({"kid": null}), &issuer.user_claims());
    assert_eq!(reason(&verifier, &token).await, DenyReason::KeyIdMissing);
    assert_eq!(issuer.jwks_hits(), 0);
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_interval() {
    let (issuer, verifier) = warm_setup().await;
    let now = now();
    let unpublished = issuer.sign(KID_3, &issuer.user_claims());
    let error = verifier.verify(&unpublished, now).await.unwrap_err();
    assert_eq!(error.reason(), DenyReason::KeyUnknown);
    assert_eq!(issuer.jwks_hits(), 2);

    // Another unknown kid within the interval: no fetch.
    let invented = issuer.sign_with(KID_1, json!({"kid": "invented"}), &issuer.user_claims());
    assert_eq!(
        verifier
            .verify(&invented, now + 10)
            .await
            .unwrap_err()
            .reason(),
        DenyReason::KeyUnknown
    );
    assert_eq!(issuer.jwks_hits(), 2);

    // Once the interval (5 min by default) has passed, one more refetch is allowed.
    assert_eq!(
        verifier
            .verify(&invented, now + 301)
            .await
            .unwrap_err()
            .reason(),
        DenyReason::KeyUnknown
    );
    assert_eq!(issuer.jwks_hits(), 3);
}

#[tokio::test]
async fn picks_up_a_rotated_key_after_one_refetch() {
    let (issuer, verifier) = warm_setup().await;
    issuer.publish(KID_3);
    let rotated = issuer.sign(KID_3, &issuer.user_claims());
    verifier.verify(&rotated, now()).await.unwrap();
    assert_eq!(issuer.jwks_hits(), 2);
    verifier.verify(&rotated, now()).await.unwrap();
    verifier
        .verify(&issuer.token(json!({})), now())
        .await
        .unwrap();
    assert_eq!(issuer.jwks_hits(), 2);
}

#[tokio::test]
async fn drops_a_retired_key_after_a_successful_refetch() {
    let (issuer, verifier) = warm_setup().await;
    let old = issuer.sign(KID_2, &issuer.user_claims());
    verifier.verify(&old, now()).await.unwrap();

    issuer.retire(KID_2);
    issuer.publish(KID_3);
    verifier
        .verify(&issuer.sign(KID_3, &issuer.user_claims()), now())
        .await
        .unwrap();
    assert_eq!(reason(&verifier, &old).await, DenyReason::KeyUnknown);
}

#[tokio::test]
async fn keeps_the_last_good_keys_when_jwks_fails() {
    let (issuer, verifier) = warm_setup().await;
    issuer.fail_jwks(true);
    // An unknown kid forces a refetch, which fails.
    let unknown = issuer.sign(KID_3, &issuer.user_claims());
    assert_eq!(reason(&verifier, &unknown).await, DenyReason::KeyUnknown);
    assert_eq!(issuer.jwks_hits(), 2);

    verifier
        .verify(&issuer.token(json!({})), now())
        .await
        .unwrap();
    let error = verifier.warm().await.unwrap_err();
    assert_eq!(error.reason(), DenyReason::KeysUnavailable);
}

#[tokio::test]
async fn reports_keys_unavailable_on_a_cold_cache() {
    let (issuer, verifier) = setup().await;
    issuer.fail_jwks(true);
    assert_eq!(
        reason(&verifier, &issuer.token(json!({}))).await,
        DenyReason::KeysUnavailable
    );
    let error = verifier.warm().await.unwrap_err();
    assert!(matches!(error, TokenError::KeysUnavailable { .. }));

    issuer.fail_jwks(false);
    verifier.warm().await.unwrap();
    verifier
        .verify(&issuer.token(json!({})), now())
        .await
        .unwrap();
}

/// Verifies `token` and fails the test if that waits on a key fetch (1 s is far more than a
/// decision with held keys takes, far less than the held-up fetch would).
async fn verify_without_waiting(verifier: &Verifier, token: &str) -> Result<(), TokenError> {
    tokio::time::timeout(Duration::from_secs(1), verifier.verify(token, now()))
        .await
        .expect("decided without waiting for a key fetch")
        .map(|_| ())
}

#[tokio::test]
async fn a_stale_key_set_is_served_while_its_refresh_is_held_up() {
    let issuer = TestIssuer::start().await;
    let settings = issuer
        .settings()
        .with_key_refresh_interval(Duration::from_millis(100))
        .unwrap();
    let verifier = Verifier::new(vec![settings]).unwrap();
    verifier.warm().await.unwrap();
    issuer.pause_jwks(true);
    let cached = issuer.token(json!({}));
    verify_without_waiting(&verifier, &cached).await.unwrap();
    // Once the set is stale a request starts its refresh, which the issuer holds up; no
    // request, before or after, waits for it.
    for _ in 0..100 {
        if issuer.jwks_hits() == 2 {
            break;
        }
        verify_without_waiting(&verifier, &issuer.token(json!({})))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(issuer.jwks_hits(), 2, "the stale set is refreshed");
    for _ in 0..10 {
        verify_without_waiting(&verifier, &issuer.token(json!({})))
            .await
            .unwrap();
        verify_without_waiting(&verifier, &cached).await.unwrap();
    }
    // One refresh in flight, however many requests found the set stale.
    assert_eq!(issuer.jwks_hits(), 2);
    issuer.pause_jwks(false);
}

#[tokio::test]
async fn an_unknown_kid_gives_up_on_a_held_up_refetch_whose_keys_later_requests_get() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::new(vec![issuer.settings()])
        .unwrap()
        .with_key_wait(Duration::from_millis(200));
    verifier.warm().await.unwrap();
    issuer.publish(KID_3);
    issuer.pause_jwks(true);
    let rotated = issuer.sign(KID_3, &issuer.user_claims());
    // The refetch is held up: the request gives up after the key wait.
    assert_eq!(reason(&verifier, &rotated).await, DenyReason::KeyUnknown);
    assert_eq!(issuer.jwks_hits(), 2);
    // Meanwhile tokens with held keys are decided at once, and the unknown kid joins the same
    // refetch instead of starting another.
    for _ in 0..10 {
        verify_without_waiting(&verifier, &issuer.token(json!({})))
            .await
            .unwrap();
    }
    assert_eq!(reason(&verifier, &rotated).await, DenyReason::KeyUnknown);
    assert_eq!(issuer.jwks_hits(), 2);

    // Nobody waits for the refetch any more; it ends anyway, and later requests get its keys.
    issuer.pause_jwks(false);
    let mut admitted = false;
    for _ in 0..100 {
        if verify_without_waiting(&verifier, &rotated).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "the refetched key was never used");
    assert_eq!(issuer.jwks_hits(), 2);
}

#[tokio::test]
async fn refuses_metadata_for_another_issuer() {
    let (issuer, verifier) = setup().await;
    let other = format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0");
    issuer.set_discovery_issuer(Some(other));
    let error = verifier.warm().await.unwrap_err();
    assert_eq!(error.reason(), DenyReason::KeysUnavailable);
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert!(source.contains("metadata issuer mismatch"), "{source}");
    assert_eq!(issuer.jwks_hits(), 0);

    // Entra's multi-tenant template is accepted once the tenant is substituted.
    let template = "https://login.microsoftonline.com/{tenantid}/v2.0".to_owned();
    issuer.set_discovery_issuer(Some(template));
    verifier.warm().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifies_on_a_cold_cache_fetch_once() {
    let (issuer, verifier) = setup().await;
    let verifier = Arc::new(verifier);
    let token = issuer.token(json!({}));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let verifier = verifier.clone();
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&token, now()).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(issuer.jwks_hits(), 1);
}

#[tokio::test]
async fn routes_each_issuer_to_its_own_provider() {
    let contoso = TestIssuer::start().await;
    let fabrikam = TestIssuer::start_for(OTHER_TENANT).await;
    let verifier = Verifier::new(vec![
        contoso.settings_named("contoso"),
        fabrikam.settings_named("fabrikam"),
    ])
    .unwrap();
    let identity = verifier
        .verify(&fabrikam.token(json!({})), now())
        .await
        .unwrap();
    assert_eq!(&*identity.provider, "fabrikam");
    assert_eq!(identity.tenant.as_deref(), Some(OTHER_TENANT));
    assert_eq!((contoso.jwks_hits(), fabrikam.jwks_hits()), (0, 1));

    let identity = verifier
        .verify(&contoso.app_token(json!({})), now())
        .await
        .unwrap();
    assert_eq!(&*identity.provider, "contoso");
    assert_eq!((contoso.jwks_hits(), fabrikam.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn refuses_groups_overage_and_id_tokens() {
    let (issuer, verifier) = warm_setup().await;
    let overage = issuer.token(json!({"groups": null, "_claim_names": {"groups": "src1"}}));
    assert_eq!(reason(&verifier, &overage).await, DenyReason::GroupsOverage);
    let id_token = issuer.token(json!({"nonce": "n-0S6_WzA2Mj"}));
    assert_eq!(
        reason(&verifier, &id_token).await,
        DenyReason::NotAnAccessToken
    );
    let roles_string = issuer.token(json!({"roles": "Nats.Publisher"}));
    assert_eq!(
        reason(&verifier, &roles_string).await,
        DenyReason::ClaimInvalid
    );
}

#[tokio::test]
async fn background_refresh_refetches_and_stops_on_shutdown() {
    let issuer = TestIssuer::start().await;
    let settings = issuer
        .settings()
        .with_key_refresh_interval(Duration::from_secs(1))
        .unwrap();
    let verifier = Arc::new(Verifier::new(vec![settings]).unwrap());
    verifier.warm().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = verifier.spawn_refresh(async move {
        let _ = stopped.await;
    });
    issuer.publish(KID_3);
    // Wait (bounded) for the background refresh; 0.9 s of real time is expected.
    for _ in 0..200 {
        if issuer.jwks_hits() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(issuer.jwks_hits() >= 2, "background refresh never fetched");
    stop.send(()).unwrap();
    task.await.unwrap();

    // The refresh already installed KID_3, so this needs no unknown-kid refetch.
    let hits = issuer.jwks_hits();
    verifier
        .verify(&issuer.sign(KID_3, &issuer.user_claims()), now())
        .await
        .unwrap();
    assert_eq!(issuer.jwks_hits(), hits);
}
