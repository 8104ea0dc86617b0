//! Entra ID rules over real HTTP: a catalogue of bad tokens (each with its own deny reason),
//! the good cases (v1 and v2 users, app-only, guest, allowed tenants, any tenant, generic OIDC),
//! tenant checks before any fetch, groups overage resolved through a Graph stand-in, readiness,
//! and a representative subset end to end through a real nats-server.
//!
//! The test issuer serves Entra's real issuer strings (`https://login.microsoftonline.com/...`,
//! `https://sts.windows.net/...`) while its metadata and keys live on loopback.

use async_nats::ConnectErrorKind;
use serde_json::{Value, json};

use entra_callout::deny::DenyReason;
use entra_callout::identity::PrincipalKind;
use entra_callout::oidc::{
    DEFAULT_LEEWAY_SECS, GraphCredential, GraphSettings, GroupsOverage, ProviderSettings, Secret,
    Tenants, TokenError, Verifier, VerifierError, Versions, token_digest,
};

use crate::support::graph::{GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, TestGraph};
use crate::support::issuer::{
    APP_ID_URI, APP_KID, APP_OID, AUDIENCE, DAEMON_CLIENT, GROUP, KID_1, KID_2, KID_3,
    OTHER_TENANT, SPA_CLIENT, TENANT, THIRD_TENANT, TestIssuer, USER_OID, merge, now,
    unsigned_token,
};
use crate::support::nats::{NatsServer, config_mode};
use crate::support::service::{Answered, Replica};

const GRAPH_GUID: &str = "00000003-0000-0000-c000-000000000000";

fn entra(
    issuer: &TestIssuer,
    name: &str,
    tenants: Tenants,
    versions: Versions,
) -> ProviderSettings {
    ProviderSettings::entra(name, tenants, vec![AUDIENCE.into(), APP_ID_URI.into()])
        .unwrap()
        .with_authority(&issuer.authority())
        .unwrap()
        .with_versions(versions)
        .unwrap()
}

const BOTH: Versions = Versions { v1: true, v2: true };
const V2: Versions = Versions {
    v1: false,
    v2: true,
};

async fn reason(verifier: &Verifier, token: &str) -> DenyReason {
    verifier.verify(token, now()).await.unwrap_err().reason()
}

/// Contoso (v1 + v2) and Fabrikam (v2 only), both served by one issuer.
async fn catalogue_setup() -> (TestIssuer, Verifier) {
    let issuer = TestIssuer::start_for_tenants(&[TENANT, OTHER_TENANT]).await;
    let contoso = entra(&issuer, "contoso", Tenants::One(TENANT.into()), BOTH);
    let fabrikam = entra(&issuer, "fabrikam", Tenants::One(OTHER_TENANT.into()), V2);
    let verifier = Verifier::new(vec![contoso, fabrikam]).unwrap();
    (issuer, verifier)
}

/// Every class of bad token, with the reason it must be refused with.
fn bad_tokens(issuer: &TestIssuer) -> Vec<(&'static str, String, DenyReason)> {
    let now = now();
    let user = issuer.user_claims();
    let tampered = {
        let token = issuer.token(json!({}));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let elevated = merge(user.clone(), json!({"roles": ["Nats.Admin"]}));
        parts[1] = data_encoding::BASE64URL_NOPAD.encode(elevated.to_string().as_bytes());
        parts.join(".")
    };
    let two_parts = issuer
        .token(json!({}))
        .rsplit_once('.')
        .unwrap()
        .0
        .to_owned();
    let v2_iss = TestIssuer::v2_issuer_for;
    use DenyReason as R;
    vec![
        ("empty", String::new(), R::TokenMalformed),
        ("two segments", two_parts, R::TokenMalformed),
        ("not base64url json", "a.b.c".into(), R::TokenMalformed),
        (
            "critical header",
            issuer.sign_with(KID_1, json!({"crit": ["exp"]}), &user),
            R::TokenMalformed,
        ),
        (
            "oversized",
            issuer.token(json!({"pad": "x".repeat(17 * 1024)})),
            R::TokenTooLarge,
        ),
        ("alg none", unsigned_token(&user), R::AlgorithmNotAllowed),
        (
            "hs256 keyed with the public key",
            issuer.hs256_with_public_key(KID_1, &user),
            R::AlgorithmNotAllowed,
        ),
        (
            "rs512 not on the allow-list",
            issuer.sign_with(KID_1, json!({"alg": "RS512"}), &user),
            R::AlgorithmNotAllowed,
        ),
        (
            "ps256 not on the allow-list",
            issuer.sign_with(KID_1, json!({"alg": "PS256"}), &user),
            R::AlgorithmNotAllowed,
        ),
        (
            "no kid",
            issuer.sign_with(KID_1, json!({"kid": null}), &user),
            R::KeyIdMissing,
        ),
        ("unpublished kid", issuer.sign(KID_3, &user), R::KeyUnknown),
        (
            "signed by another key than its kid",
            issuer.sign_with(KID_3, json!({"kid": KID_1}), &user),
            R::SignatureInvalid,
        ),
        ("tampered payload", tampered, R::SignatureInvalid),
        (
            "foreign issuer",
            issuer.token(json!({"iss": "https://idp.example/realms/x"})),
            R::IssuerUnknown,
        ),
        (
            "no iss",
            issuer.token(json!({"iss": null})),
            R::ClaimMissing,
        ),
        (
            "tenant not allowed",
            issuer.token(json!({"iss": v2_iss(THIRD_TENANT), "tid": THIRD_TENANT})),
            R::TenantNotAllowed,
        ),
        (
            "tid is not the tenant in iss",
            issuer.token(json!({"tid": OTHER_TENANT})),
            R::TenantMismatch,
        ),
        (
            "tid not lowercase",
            issuer.token(json!({"tid": TENANT.to_uppercase()})),
            R::TenantInvalid,
        ),
        (
            "unfilled {tenantid} template",
            issuer.token(json!({"iss": v2_iss("{tenantid}")})),
            R::TenantInvalid,
        ),
        (
            "key published for another tenant",
            issuer.sign(KID_2, &user),
            R::KeyIssuerMismatch,
        ),
        (
            "v1 token for a v2-only provider",
            issuer.v1_token(
                json!({"iss": TestIssuer::v1_issuer_for(OTHER_TENANT), "tid": OTHER_TENANT}),
            ),
            R::VersionNotAllowed,
        ),
        (
            "ver contradicts iss",
            issuer.token(json!({"ver": "1.0"})),
            R::ClaimInvalid,
        ),
        (
            "another api's audience",
            issuer.token(json!({"aud": "api://billing"})),
            R::AudienceMismatch,
        ),
        (
            "microsoft graph token",
            issuer.token(json!({"aud": GRAPH_GUID})),
            R::AudienceMismatch,
        ),
        (
            "expired",
            issuer.token(json!({"exp": now - 120, "nbf": now - 4000, "iat": now - 4000})),
            R::TokenExpired,
        ),
        (
            "nbf in the future",
            issuer.token(json!({"nbf": now + 600})),
            R::TokenNotYetValid,
        ),
        (
            "id token (nonce)",
            issuer.token(json!({"nonce": "n-0S6_WzA2Mj"})),
            R::NotAnAccessToken,
        ),
        (
            "id token (at_hash)",
            issuer.token(json!({"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"})),
            R::NotAnAccessToken,
        ),
        (
            "user token without scp",
            issuer.token(json!({"scp": null})),
            R::NotAnAccessToken,
        ),
        (
            // An app that is also its own API gets ID tokens with `aud` = its client id; one
            // without `nonce` and with `sub == oid` once passed as an app-only token.
            "id token shape without nonce (no azp, scp, roles, idtyp)",
            issuer.token(
                json!({"scp": null, "roles": null, "groups": null, "idtyp": null,
                "azp": null, "azpacr": null, "sub": issuer.user_claims()["oid"].clone()}),
            ),
            R::NotAnAccessToken,
        ),
        (
            "groups overage",
            issuer.token(json!({"groups": null, "_claim_names": {"groups": "src1"},
                "_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/x"}}})),
            R::GroupsOverage,
        ),
        (
            "hasgroups",
            issuer.token(json!({"groups": null, "hasgroups": true})),
            R::GroupsOverage,
        ),
        (
            "no exp",
            issuer.token(json!({"exp": null})),
            R::ClaimMissing,
        ),
        (
            "no sub",
            issuer.token(json!({"sub": null})),
            R::ClaimMissing,
        ),
        (
            "roles as a string",
            issuer.token(json!({"roles": "Nats.Publisher"})),
            R::ClaimInvalid,
        ),
    ]
}

#[tokio::test]
async fn every_bad_token_class_is_refused_with_its_own_reason() {
    let (issuer, verifier) = catalogue_setup().await;
    issuer.set_key_issuer(KID_2, &TestIssuer::v2_issuer_for(OTHER_TENANT));
    let cases = bad_tokens(&issuer);
    assert!(cases.len() >= 25, "{} classes", cases.len());
    let mut failures = Vec::new();
    for (class, token, expected) in &cases {
        let error = verifier.verify(token, now()).await.unwrap_err();
        if error.reason() != *expected {
            failures.push(format!(
                "{class}: expected {expected}, got {} ({error})",
                error.reason()
            ));
        }
        // Diagnostics never quote the token.
        if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(!error.to_string().contains(signature), "{class}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // No refusal ever caused a fetch for a tenant that is not configured.
    assert_eq!(issuer.discovery_hits_for(THIRD_TENANT, "v2"), 0);
    assert_eq!(issuer.discovery_hits_for("{tenantid}", "v2"), 0);
    // Nor was any of them remembered as verified, even those with a good signature.
    assert_eq!(verifier.cached_tokens().await, 0);
}

#[tokio::test]
async fn a_cached_token_skips_only_the_signature_check() {
    let (issuer, verifier) = catalogue_setup().await;
    let now = now();
    let token = issuer.token(json!({ "exp": now + 120 }));
    let digest = token_digest(&token);
    let first = verifier
        .verify_digested(&token, &digest, now)
        .await
        .unwrap();
    let again = verifier
        .verify_digested(&token, &digest, now)
        .await
        .unwrap();
    assert!(!first.cached && again.cached);
    assert_eq!(verifier.cached_tokens().await, 1);
    assert_eq!(
        (&again.identity.object_id, &again.identity.groups),
        (&first.identity.object_id, &first.identity.groups),
        "a hit maps the claims as a miss does"
    );

    // Time-dependent checks run again: past exp and the leeway, the cached token is refused.
    let later = now + 120 + DEFAULT_LEEWAY_SECS;
    let refused = verifier
        .verify_digested(&token, &digest, later)
        .await
        .unwrap_err();
    assert_eq!(refused.error.reason(), DenyReason::TokenExpired);
    // Expiry names no provider itself; the refusal carries the one the token routed to.
    assert_eq!(refused.provider.as_deref(), Some("contoso"));

    // Any other bytes are another token: a changed signature is checked, and refused.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    assert_eq!(
        reason(&verifier, &forged).await,
        DenyReason::SignatureInvalid
    );
    assert_eq!(verifier.cached_tokens().await, 1);

    // Turned off, nothing is remembered.
    let (issuer, verifier) = catalogue_setup().await;
    let verifier = verifier.with_token_cache(0);
    let token = issuer.token(json!({}));
    for _ in 0..2 {
        let verification = verifier
            .verify_digested(&token, &token_digest(&token), now)
            .await
            .unwrap();
        assert!(!verification.cached);
    }
}

#[tokio::test]
async fn good_entra_tokens_map_to_identities() {
    let (issuer, verifier) = catalogue_setup().await;
    verifier.warm().await.unwrap();

    // v2 user.
    let id = verifier
        .verify(&issuer.token(json!({})), now())
        .await
        .unwrap();
    assert_eq!((id.kind, &*id.provider), (PrincipalKind::User, "contoso"));
    assert_eq!(id.tenant.as_deref(), Some(TENANT));
    assert_eq!(id.object_id.as_deref(), Some(USER_OID));
    assert_eq!(id.app_id.as_deref(), Some(SPA_CLIENT));
    assert_eq!(id.scopes, ["Nats.Connect"]);
    assert!(id.groups.iter().any(|g| g == GROUP));
    assert_eq!(id.display_name.as_deref(), Some("alexw@contoso.com"));
    assert_eq!(
        id.claims
            .get("wids")
            .and_then(Value::as_array)
            .map(Vec::len),
        Some(1)
    );

    // v1 user, App ID URI audience with and without the trailing slash, and api://{client-id}.
    for aud in [
        APP_ID_URI.to_owned(),
        format!("{APP_ID_URI}/"),
        format!("api://{AUDIENCE}"),
    ] {
        let id = verifier
            .verify(&issuer.v1_token(json!({ "aud": aud })), now())
            .await
            .unwrap_or_else(|e| panic!("{aud}: {e}"));
        assert_eq!(id.issuer, TestIssuer::v1_issuer_for(TENANT));
        assert_eq!(id.app_id.as_deref(), Some(SPA_CLIENT));
        assert_eq!(id.roles, ["Nats.Subscriber"]);
    }

    // v2 app-only.
    let id = verifier
        .verify(&issuer.app_token(json!({})), now())
        .await
        .unwrap();
    assert_eq!(id.kind, PrincipalKind::Application);
    assert_eq!(id.object_id.as_deref(), Some(APP_OID));
    assert_eq!(id.app_id.as_deref(), Some(DAEMON_CLIENT));
    assert!(id.scopes.is_empty());

    // v1 managed identity: no idtyp, sub == oid, no scp.
    let mi = issuer.v1_token(
        json!({"scp": null, "idtyp": null, "oid": APP_OID, "sub": APP_OID,
        "appid": DAEMON_CLIENT, "appidacr": "2", "roles": ["Nats.Service.Telemetry"],
        "upn": null, "unique_name": null, "name": null, "family_name": null, "given_name": null}),
    );
    let id = verifier.verify(&mi, now()).await.unwrap();
    assert_eq!(id.kind, PrincipalKind::Application);
    assert_eq!(id.display_name, None);

    // Guest: acct 1, authenticated by their home tenant.
    let guest = issuer.token(json!({"acct": 1,
        "idp": TestIssuer::v1_issuer_for(THIRD_TENANT), "preferred_username": "g@fabrikam.com"}));
    let id = verifier.verify(&guest, now()).await.unwrap();
    assert!(id.guest);
    assert_eq!(id.tenant.as_deref(), Some(TENANT));

    // The second provider's tenant routes to it.
    let id = verifier
        .verify(&issuer.token_for(OTHER_TENANT, json!({})), now())
        .await
        .unwrap();
    assert_eq!(&*id.provider, "fabrikam");
}

#[tokio::test]
async fn an_allow_list_fetches_keys_per_tenant_and_never_for_others() {
    let issuer = TestIssuer::start_for_tenants(&[TENANT, OTHER_TENANT, THIRD_TENANT]).await;
    let tenants = Tenants::List(vec![TENANT.into(), OTHER_TENANT.into()]);
    let verifier = Verifier::new(vec![entra(&issuer, "partners", tenants, V2)]).unwrap();
    assert!(!verifier.keys_loaded());

    verifier
        .verify(&issuer.token(json!({})), now())
        .await
        .unwrap();
    let id = verifier
        .verify(&issuer.token_for(OTHER_TENANT, json!({})), now())
        .await
        .unwrap();
    assert_eq!(id.tenant.as_deref(), Some(OTHER_TENANT));
    assert_eq!(issuer.discovery_hits_for(TENANT, "v2"), 1);
    assert_eq!(issuer.discovery_hits_for(OTHER_TENANT, "v2"), 1);
    assert!(verifier.keys_loaded(), "both tenants' keys are loaded");

    let third = issuer.token_for(THIRD_TENANT, json!({}));
    assert_eq!(
        reason(&verifier, &third).await,
        DenyReason::TenantNotAllowed
    );
    assert_eq!(issuer.discovery_hits_for(THIRD_TENANT, "v2"), 0);
    // Right issuer, foreign tid: caught before the key lookup too.
    let mixed = issuer.token(json!({"tid": THIRD_TENANT}));
    assert_eq!(reason(&verifier, &mixed).await, DenyReason::TenantMismatch);
    assert_eq!(issuer.discovery_hits_for(THIRD_TENANT, "v2"), 0);
}

#[tokio::test]
async fn any_tenant_uses_the_common_template_and_still_checks_tid() {
    // The issuer serves only TENANT per tenant; THIRD_TENANT's tokens must validate through the
    // tenant-independent metadata whose issuer is the {tenantid} template.
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::new(vec![entra(&issuer, "anyone", Tenants::Any, V2)]).unwrap();
    verifier.warm().await.unwrap();
    assert!(verifier.keys_loaded());
    assert_eq!(issuer.discovery_hits_for("common", "v2"), 1);

    let id = verifier
        .verify(&issuer.token_for(THIRD_TENANT, json!({})), now())
        .await
        .unwrap();
    assert_eq!(id.tenant.as_deref(), Some(THIRD_TENANT));
    assert_eq!(issuer.discovery_hits_for(THIRD_TENANT, "v2"), 0);

    let mixed = issuer.token_for(THIRD_TENANT, json!({"tid": TENANT}));
    assert_eq!(reason(&verifier, &mixed).await, DenyReason::TenantMismatch);
    let template = issuer.token(json!({"iss": TestIssuer::v2_issuer_for("{tenantid}")}));
    assert_eq!(
        reason(&verifier, &template).await,
        DenyReason::TenantInvalid
    );
    let v1 = issuer.v1_token(json!({}));
    assert_eq!(reason(&verifier, &v1).await, DenyReason::VersionNotAllowed);
    // A key published for one tenant only signs for that tenant.
    issuer.set_key_issuer(KID_2, &TestIssuer::v2_issuer_for(TENANT));
    let k2 = issuer.sign(
        KID_2,
        &merge(
            issuer.user_claims(),
            json!({"iss": TestIssuer::v2_issuer_for(THIRD_TENANT), "tid": THIRD_TENANT}),
        ),
    );
    verifier.warm().await.unwrap();
    assert_eq!(reason(&verifier, &k2).await, DenyReason::KeyIssuerMismatch);
    assert_eq!(issuer.discovery_hits_for(THIRD_TENANT, "v2"), 0);
}

#[tokio::test]
async fn two_any_providers_on_one_cloud_are_ambiguous() {
    let issuer = TestIssuer::start().await;
    let a = entra(&issuer, "a", Tenants::Any, V2);
    let b = entra(&issuer, "b", Tenants::Any, BOTH);
    let duplicate = |first: &str, second: &str, result: Result<Verifier, VerifierError>| {
        matches!(
            result,
            Err(VerifierError::DuplicateIssuer { first: f, second: s })
                if &*f == first && &*s == second
        )
    };
    assert!(duplicate("a", "b", Verifier::new(vec![a, b])));
    let one = entra(&issuer, "one", Tenants::One(TENANT.into()), V2);
    let list = entra(
        &issuer,
        "list",
        Tenants::List(vec![OTHER_TENANT.into(), TENANT.into()]),
        V2,
    );
    assert!(duplicate("one", "list", Verifier::new(vec![one, list])));
}

#[tokio::test]
async fn a_generic_oidc_issuer_is_routed_by_its_exact_iss() {
    // Entra served as a plain OIDC issuer: the metadata host (loopback) differs from the issuer.
    let issuer = TestIssuer::start().await;
    let discovery = format!(
        "{}/{TENANT}/v2.0/.well-known/openid-configuration",
        issuer.authority()
    );
    let generic = ProviderSettings::oidc("generic", &issuer.issuer(), vec![AUDIENCE.into()])
        .unwrap()
        .with_discovery_url(&discovery)
        .unwrap();
    let other = entra(&issuer, "fabrikam", Tenants::One(OTHER_TENANT.into()), V2);
    let verifier = Verifier::new(vec![other, generic]).unwrap();
    let id = verifier
        .verify(&issuer.token(json!({})), now())
        .await
        .unwrap();
    assert_eq!(&*id.provider, "generic");
    assert_eq!(id.tenant, None);
    assert_eq!(id.roles, ["Nats.Publisher", "Nats.Subscriber"]);
    let expired = issuer.token(json!({"exp": now() - 600}));
    assert_eq!(reason(&verifier, &expired).await, DenyReason::TokenExpired);
}

/// `provider` reading the app-specific keys of `app_id`.
fn with_app_keys(provider: ProviderSettings, app_id: &str) -> ProviderSettings {
    provider.with_signing_keys_app_id(app_id).unwrap()
}

#[tokio::test]
async fn app_specific_keys_are_read_only_with_the_app_id() {
    let issuer = TestIssuer::start().await;
    let app_signed = issuer.sign(APP_KID, &issuer.user_claims());
    let v1_app_signed = issuer.sign_with(
        APP_KID,
        json!({"x5t": APP_KID}),
        &issuer.v1_user_claims_for(TENANT),
    );

    let tenant_keys = Verifier::new(vec![entra(
        &issuer,
        "plain",
        Tenants::One(TENANT.into()),
        V2,
    )])
    .unwrap();
    assert_eq!(
        reason(&tenant_keys, &app_signed).await,
        DenyReason::KeyUnknown
    );
    // The tenant's keys, refetched once for the unknown kid; never the app's.
    let tenant_hits = issuer.discovery_hits_for(TENANT, "v2");
    assert!(tenant_hits >= 1);
    assert_eq!(issuer.app_discovery_hits_for(TENANT, "v2", AUDIENCE), 0);

    let provider = entra(&issuer, "custom", Tenants::One(TENANT.into()), BOTH);
    let app_keys = Verifier::new(vec![with_app_keys(provider, AUDIENCE)]).unwrap();
    app_keys.warm().await.unwrap();
    // Both versions' sources read the app's metadata, and only it.
    assert_eq!(issuer.app_discovery_hits_for(TENANT, "v1", AUDIENCE), 1);
    assert_eq!(issuer.app_discovery_hits_for(TENANT, "v2", AUDIENCE), 1);
    assert_eq!(issuer.app_jwks_hits(AUDIENCE), 2);
    assert_eq!(issuer.discovery_hits_for(TENANT, "v1"), 0);
    assert_eq!(issuer.discovery_hits_for(TENANT, "v2"), tenant_hits);
    let id = app_keys.verify(&app_signed, now()).await.unwrap();
    assert_eq!(&*id.provider, "custom");
    assert_eq!(id.object_id.as_deref(), Some(USER_OID));
    app_keys.verify(&v1_app_signed, now()).await.unwrap();
    // The app's set replaces the tenant's: a tenant-key token is not this app's.
    assert_eq!(
        reason(&app_keys, &issuer.token(json!({}))).await,
        DenyReason::KeyUnknown
    );
    // Everything else still applies to app-key tokens.
    let foreign = issuer.sign(
        APP_KID,
        &merge(issuer.user_claims(), json!({"aud": DAEMON_CLIENT})),
    );
    assert_eq!(
        reason(&app_keys, &foreign).await,
        DenyReason::AudienceMismatch
    );
}

#[tokio::test]
async fn any_tenant_reads_the_app_specific_common_metadata() {
    let issuer = TestIssuer::start().await;
    let provider = entra(&issuer, "anyone", Tenants::Any, V2);
    let verifier = Verifier::new(vec![with_app_keys(provider, AUDIENCE)]).unwrap();
    let claims = merge(
        issuer.user_claims(),
        json!({"iss": TestIssuer::v2_issuer_for(THIRD_TENANT), "tid": THIRD_TENANT}),
    );
    let id = verifier
        .verify(&issuer.sign(APP_KID, &claims), now())
        .await
        .unwrap();
    assert_eq!(id.tenant.as_deref(), Some(THIRD_TENANT));
    assert_eq!(issuer.app_discovery_hits_for("common", "v2", AUDIENCE), 1);
    assert_eq!(issuer.discovery_hits_for("common", "v2"), 0);
    assert_eq!(issuer.discovery_hits_for(THIRD_TENANT, "v2"), 0);
}

#[tokio::test]
async fn an_app_id_without_keys_leaves_its_tokens_without_keys() {
    // The stand-in answers an unknown app's metadata with an empty key set.
    let issuer = TestIssuer::start().await;
    let provider = entra(&issuer, "typo", Tenants::One(TENANT.into()), V2);
    let verifier = Verifier::new(vec![with_app_keys(provider, DAEMON_CLIENT)]).unwrap();
    let error = verifier.warm().await.unwrap_err();
    assert_eq!(error.reason(), DenyReason::KeysUnavailable);
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert!(
        source.contains(&format!("/discovery/v2.0/keys?appid={DAEMON_CLIENT}")),
        "{source}"
    );
    assert!(!verifier.keys_loaded());
    for token in [
        issuer.sign(APP_KID, &issuer.user_claims()),
        issuer.token(json!({})),
    ] {
        assert_eq!(reason(&verifier, &token).await, DenyReason::KeysUnavailable);
    }
    assert!(issuer.app_jwks_hits(DAEMON_CLIENT) >= 1);
    assert_eq!(issuer.discovery_hits_for(TENANT, "v2"), 0);
}

fn resolving(issuer: &TestIssuer, graph: &TestGraph, credential: GraphCredential) -> Verifier {
    let settings = GraphSettings::new(GRAPH_CLIENT_ID, credential)
        .with_token_authority(&graph.url())
        .with_graph_url(&graph.url());
    let provider = entra(issuer, "contoso", Tenants::One(TENANT.into()), V2)
        .with_groups_overage(GroupsOverage::Resolve(settings))
        .unwrap();
    Verifier::new(vec![provider]).unwrap()
}

fn secret() -> GraphCredential {
    GraphCredential::ClientSecret(Secret::new(GRAPH_CLIENT_SECRET.into()))
}

fn overage(issuer: &TestIssuer, overrides: Value) -> String {
    let base = json!({"groups": null, "_claim_names": {"groups": "src1"},
        "_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/x"}}});
    issuer.token(merge(base, overrides))
}

fn many_groups(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{i:08}-1111-4222-8333-444444444444"))
        .collect()
}

#[tokio::test]
async fn overage_is_resolved_through_graph_with_paging_and_cached() {
    let issuer = TestIssuer::start().await;
    let graph = TestGraph::start().await;
    graph.set_members(USER_OID, many_groups(5));
    graph.set_page_size(2);
    let verifier = resolving(&issuer, &graph, secret());

    let token = overage(&issuer, json!({}));
    let id = verifier.verify(&token, now()).await.unwrap();
    assert_eq!(id.groups, many_groups(5));
    assert_eq!((graph.token_hits(), graph.member_hits()), (1, 3));
    // The secret went in the form, properly encoded.
    assert!(
        graph
            .last_token_form()
            .contains("client_secret=s3cret%7Ewith%2Fspecial%3Dchars%26more")
    );

    // Cached until the token expires: no new Graph traffic for the same caller.
    verifier.verify(&token, now()).await.unwrap();
    verifier
        .verify(&overage(&issuer, json!({"hasgroups": true})), now())
        .await
        .unwrap();
    assert_eq!((graph.token_hits(), graph.member_hits()), (1, 3));

    // Apps are looked up as service principals.
    graph.set_members(&format!("servicePrincipals/{APP_OID}"), vec![GROUP.into()]);
    let app = issuer.app_token(json!({"_claim_names": {"groups": "src1"}}));
    let id = verifier.verify(&app, now()).await.unwrap();
    assert_eq!(id.groups, [GROUP]);
    assert_eq!(graph.token_hits(), 1, "one app token per tenant");
}

#[tokio::test]
async fn graph_failures_refuse_with_groups_unresolved() {
    let issuer = TestIssuer::start().await;
    let graph = TestGraph::start().await;
    let verifier = resolving(&issuer, &graph, secret());
    graph.fail_members(true);
    let token = overage(&issuer, json!({}));
    assert_eq!(
        reason(&verifier, &token).await,
        DenyReason::GroupsUnresolved
    );
    // Failures are not cached: once Graph answers, the caller gets in.
    graph.fail_members(false);
    graph.set_members(USER_OID, vec![GROUP.into()]);
    assert_eq!(
        verifier.verify(&token, now()).await.unwrap().groups,
        [GROUP]
    );

    // The bearer token is never sent outside the configured Graph.
    let other = "5d8e3a1b-7c2f-4e9d-a6b4-0f1e2d3c4b5a";
    graph.set_members(other, many_groups(3));
    graph.set_page_size(1);
    graph.set_foreign_next_link("https://attacker.example/v1.0/steal");
    let token = overage(&issuer, json!({"oid": other}));
    assert_eq!(
        reason(&verifier, &token).await,
        DenyReason::GroupsUnresolved
    );

    // An oid that is not a GUID never reaches a URL.
    let token = overage(&issuer, json!({"oid": "../../me"}));
    assert_eq!(
        reason(&verifier, &token).await,
        DenyReason::GroupsUnresolved
    );

    // A wrong secret: the token endpoint refuses.
    let wrong = GraphCredential::ClientSecret(Secret::new("wrong".into()));
    let verifier = resolving(&issuer, &graph, wrong);
    let error = verifier
        .verify(&overage(&issuer, json!({})), now())
        .await
        .unwrap_err();
    assert_eq!(error.reason(), DenyReason::GroupsUnresolved);
    let chain = format!("{error} {:?}", std::error::Error::source(&error));
    assert!(
        !chain.contains("wrong") && !chain.contains(GRAPH_CLIENT_SECRET),
        "{chain}"
    );
}

#[tokio::test]
async fn a_federated_token_file_is_read_for_each_app_token() {
    let issuer = TestIssuer::start().await;
    let graph = TestGraph::start().await;
    graph.set_members(USER_OID, vec![GROUP.into()]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, "federated.eyJhbGciOi\n").unwrap();
    let verifier = resolving(&issuer, &graph, GraphCredential::FederatedTokenFile(file));
    let id = verifier
        .verify(&overage(&issuer, json!({})), now())
        .await
        .unwrap();
    assert_eq!(id.groups, [GROUP]);
    let form = graph.last_token_form();
    assert!(
        form.contains("client_assertion=federated.eyJhbGciOi&")
            || form.ends_with("client_assertion=federated.eyJhbGciOi"),
        "{form}"
    );
    assert!(!form.contains("client_secret"), "{form}");
}

#[tokio::test]
async fn readiness_follows_the_key_sources() {
    let issuer = TestIssuer::start_for_tenants(&[TENANT, OTHER_TENANT]).await;
    let tenants = Tenants::List(vec![TENANT.into(), OTHER_TENANT.into()]);
    let verifier = Verifier::new(vec![entra(&issuer, "p", tenants, BOTH)]).unwrap();
    assert!(!verifier.keys_loaded());
    issuer.fail_jwks(true);
    let unavailable = |result: Result<(), TokenError>| matches!(result, Err(TokenError::KeysUnavailable { provider, .. }) if &*provider == "p");
    assert!(unavailable(verifier.warm().await));
    assert!(!verifier.keys_loaded());
    issuer.fail_jwks(false);
    verifier.warm().await.unwrap();
    assert!(verifier.keys_loaded());
    // Two tenants times two versions: four key sources.
    assert_eq!(issuer.discovery_hits(), 8);
    // A failed refresh keeps the service ready on its last good keys.
    issuer.fail_jwks(true);
    assert!(unavailable(verifier.warm().await));
    assert!(verifier.keys_loaded());
    verifier
        .verify(&issuer.v1_token(json!({})), now())
        .await
        .unwrap();
}

// === end to end through nats-server ===

/// The policy for the end-to-end tests: kept minimal and in one place, because the policy
/// language may evolve independently of token validation.
const E2E_POLICY: &str = r#"
version: 1
tenants:
  - { name: ml, providers: [partners], account: APP }
roles:
  - name: reader
    subscribe: { allow: [">"] }
  - name: inbox
    absolute: true
    subscribe: { allow: ["_INBOX.>"] }
bindings:
  - { name: subscribers, tenant: ml, roles: [reader, inbox], when: { app_roles: [Nats.Subscriber] } }
  - { name: big-group, tenant: ml, roles: [reader, inbox], when: { groups: [BIG_GROUP] } }
"#;
const BIG_GROUP: &str = "7a7a7a7a-1111-4222-8333-444444444444";

/// nats-server, the issuer (two tenants), the Graph stand-in and one in-process replica.
struct EntraStack {
    issuer: TestIssuer,
    _graph: TestGraph,
    server: NatsServer,
    replica: Replica,
}

impl EntraStack {
    async fn start() -> Self {
        let issuer = TestIssuer::start_for_tenants(&[TENANT, OTHER_TENANT]).await;
        let graph = TestGraph::start().await;
        let mut groups = many_groups(3);
        groups.push(BIG_GROUP.into());
        graph.set_members(USER_OID, groups);
        let account = nkeys::KeyPair::new_account();
        let server = NatsServer::start(&config_mode(&account.public_key(), None, ""));
        let dir = server.dir().to_path_buf();
        std::fs::write(dir.join("issuer.nk"), account.seed().unwrap()).unwrap();
        std::fs::write(dir.join("nats-password"), "pwd").unwrap();
        std::fs::write(dir.join("graph-secret"), GRAPH_CLIENT_SECRET).unwrap();
        std::fs::write(
            dir.join("policies.yaml"),
            E2E_POLICY.replace("BIG_GROUP", BIG_GROUP),
        )
        .unwrap();
        let config = format!(
            "nats:\n  url: {url}\n  user: auth\n  password_file: nats-password\n\
             callout:\n  issuer_seed_file: issuer.nk\n  max_ttl: 15m\n  drain_timeout: 5s\n\
             providers:\n  - name: partners\n    kind: entra\n    tenants: [{TENANT}, {OTHER_TENANT}]\n    \
             audiences: [\"{AUDIENCE}\", \"{APP_ID_URI}\"]\n    authority: {authority}\n    \
             groups_overage: resolve\n    graph:\n      client_id: {GRAPH_CLIENT_ID}\n      \
             client_secret_file: graph-secret\n      authority: {graph}\n      graph_url: {graph}\n\
             policies: policies.yaml\n",
            url = server.url(),
            authority = issuer.authority(),
            graph = graph.url(),
        );
        let config_path = dir.join("entra-callout.yaml");
        std::fs::write(&config_path, config).unwrap();

        let replica = Replica::start(&config_path).await;
        Self {
            replica,
            issuer,
            _graph: graph,
            server,
        }
    }

    async fn stop(self) {
        self.replica.stop().await;
    }
}

#[tokio::test]
async fn entra_tokens_end_to_end_through_nats_server() {
    let stack = EntraStack::start().await;
    let url = stack.server.url();
    let issuer = &stack.issuer;
    let admitted: Vec<(&str, String)> = vec![
        ("v2 user", issuer.token(json!({}))),
        ("v1 user", issuer.v1_token(json!({}))),
        (
            "v2 app-only",
            issuer.app_token(json!({"roles": ["Nats.Subscriber"]})),
        ),
        ("guest", issuer.token(json!({"acct": 1, "idp": "live.com"}))),
        (
            "allowed second tenant",
            issuer.token_for(OTHER_TENANT, json!({})),
        ),
        (
            "overage resolved to a granted group",
            overage(issuer, json!({"roles": null})),
        ),
    ];
    for (case, token) in &admitted {
        let client = async_nats::ConnectOptions::with_token(token.clone())
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}\n{}", stack.server.log()));
        let mut sub = client.subscribe("ml.outputs").await.unwrap();
        client.publish("ml.outputs", "x".into()).await.unwrap_or(());
        client.flush().await.unwrap();
        drop(sub.unsubscribe().await);
    }

    let now = now();
    let refused: Vec<(DenyReason, String)> = vec![
        (
            DenyReason::TenantNotAllowed,
            issuer.token_for(THIRD_TENANT, json!({})),
        ),
        (
            DenyReason::TenantMismatch,
            issuer.token(json!({"tid": OTHER_TENANT})),
        ),
        (
            DenyReason::AlgorithmNotAllowed,
            issuer.hs256_with_public_key(KID_1, &issuer.user_claims()),
        ),
        (
            DenyReason::KeyIdMissing,
            issuer.sign_with(KID_1, json!({"kid": null}), &issuer.user_claims()),
        ),
        (
            DenyReason::AudienceMismatch,
            issuer.token(json!({"aud": GRAPH_GUID})),
        ),
        (
            DenyReason::NotAnAccessToken,
            issuer.token(json!({"nonce": "abc"})),
        ),
        (
            DenyReason::TokenExpired,
            issuer.token(json!({"exp": now - 600, "nbf": now - 4000})),
        ),
        (
            DenyReason::TokenNotYetValid,
            issuer.token(json!({"nbf": now + 900})),
        ),
        (
            DenyReason::ClaimInvalid,
            issuer.token(json!({"roles": "Nats.Subscriber"})),
        ),
        (
            DenyReason::NoMatchingPolicy,
            issuer.token(json!({"roles": ["Nats.Other"], "groups": []})),
        ),
    ];
    for (reason, token) in &refused {
        let err = async_nats::ConnectOptions::with_token(token.clone())
            .connect(&url)
            .await
            .expect_err(reason.code());
        assert_eq!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{reason}"
        );
        // The client sees a generic error; the code is in the server's log only.
        assert!(!err.to_string().contains(reason.code()), "{err}");
        let line = format!("Auth callout service returned an error: {}", reason.code());
        assert!(
            stack.server.wait_for_log(&line).await,
            "{reason} not in server log:\n{}",
            stack.server.log()
        );
    }
    stack
        .replica
        .wait_answered(Answered::new(admitted.len() as u64, refused.len() as u64))
        .await;
    stack.stop().await;
}
