//! Faults against real processes on loopback: the identity provider goes away, hangs, trickles
//! or fails (with its keys held, and at cold start), nats-server restarts, a replica is
//! SIGKILLed during a connect storm, an invalid policy set is swapped in during traffic, hostile
//! requests arrive on the callout subject, and a token of a megabyte arrives. Nobody may be let
//! in where they do not belong, and nobody who belongs may be locked out for longer than the
//! fault itself. Every wait is bounded; every binary's log is scanned for secrets at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use entra_callout::admin::NotReady;
use entra_callout::callout::{Authorizer, Handled};
use entra_callout::config::{Config, ProcessEnv};
use entra_callout::nats_jwt::{self, AuthorizationRequest, Claims};
use entra_callout::oidc::Verifier;

use crate::support::binary::{Binary, ServiceDir, Settings, assert_no_secrets, providers};
use crate::support::client::{self, Case, Outcome, Tally};
use crate::support::eventually;
use crate::support::issuer::{KID_1, KID_3, OTHER_TENANT, TENANT, TestIssuer};
use crate::support::nats::{NatsCluster, NatsServer, free_port};
use crate::support::proxy::Proxy;
use crate::support::service::Replica;

fn settings<'a>(nats: &'a str, providers: Vec<(&'a str, &'a TestIssuer, String)>) -> Settings<'a> {
    Settings {
        nats,
        providers,
        callout: "",
        log_format: "json",
        log_level: "info",
    }
}

fn alpha(issuer: &TestIssuer, kid: &str) -> Case {
    let mut bytes = [0u8; 9];
    getrandom::getrandom(&mut bytes).unwrap();
    let claims = crate::support::issuer::merge(
        issuer.app_claims(),
        json!({ "roles": ["Alpha"], "uti": data_encoding::HEXLOWER.encode(&bytes) }),
    );
    Case {
        who: "contoso/alpha",
        token: issuer.sign(kid, &claims),
        as_password: false,
        expect: Some(("contoso.alpha.data", "contoso.beta.data")),
    }
}

/// Every token the test used, the service's seeds and its NATS password.
fn secrets(service: &ServiceDir, cases: &[Case]) -> Vec<String> {
    let mut secrets = service.seeds();
    secrets.push(service.password.clone());
    secrets.extend(cases.iter().map(|c| c.token.clone()));
    secrets
}

/// Stops `binary` with SIGTERM, asserts that it exited cleanly, and returns its log: how every
/// test here ends, before it scans the log (for secrets at least, with [`secrets`]).
async fn stop_cleanly(binary: Binary) -> String {
    let (status, log) = binary.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    log
}

/// The contoso issuer with its keys served through a [`Proxy`], so a test can make the identity
/// provider fail in the ways a network does while the issuer itself stays up.
async fn issuer_behind_proxy() -> (TestIssuer, Proxy) {
    let contoso = TestIssuer::start_for(TENANT).await;
    let proxy = Proxy::start(
        contoso
            .authority()
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
    )
    .await;
    contoso.serve_keys_via(&proxy.url());
    (contoso, proxy)
}

/// `verify_request_signature: true`: the binary verifies every request against the key
/// nats-server signed it with (generated at the server's start, named in the request), and
/// decides as it does by default — what turning the check on changes is its cost.
#[tokio::test]
async fn with_request_signatures_verified_real_requests_are_decided_as_by_default() {
    let contoso = TestIssuer::start_for(TENANT).await;
    let service = ServiceDir::new();
    let server = NatsServer::start(&service.server_config(2));
    let url = server.url();
    let settings = Settings {
        callout: "  verify_request_signature: true\n",
        ..settings(&url, vec![("contoso", &contoso, contoso.authority())])
    };
    let (config, admin) = service.write_config(&settings);
    let binary = Binary::start_ready(&config, &admin).await;

    let admitted = alpha(&contoso, KID_1);
    assert_eq!(client::attempt(&url, &admitted).await, Outcome::Admitted);
    let unbound = Case {
        who: "contoso, no role a policy binds",
        token: contoso.sign(
            KID_1,
            &crate::support::issuer::merge(contoso.app_claims(), json!({ "roles": ["Nobody"] })),
        ),
        as_password: false,
        expect: None,
    };
    assert_eq!(client::attempt(&url, &unbound).await, Outcome::Refused);

    let log = stop_cleanly(binary).await;
    assert!(
        log.contains("\"outcome\":\"allow\"") && log.contains("\"reason\":\"no_matching_policy\""),
        "{log}"
    );
    assert!(!log.contains("\"outcome\":\"dropped\""), "{log}");
    assert_no_secrets(&log, &secrets(&service, &[admitted, unbound]));
}

#[tokio::test]
async fn an_unreachable_identity_provider_keeps_known_keys_working_and_recovers() {
    let (contoso, proxy) = issuer_behind_proxy().await;
    let service = ServiceDir::new();
    let server = NatsServer::start(&service.server_config(2));
    let url = server.url();
    let (config, admin) =
        service.write_config(&settings(&url, vec![("contoso", &contoso, proxy.url())]));
    let binary = Binary::start_ready(&config, &admin).await;
    let mut used = Vec::new();

    let known = alpha(&contoso, KID_1);
    assert_eq!(client::attempt(&url, &known).await, Outcome::Admitted);
    used.push(known);

    proxy.cut();
    contoso.publish(KID_3);
    // Fresh tokens (not in the verified-token cache) signed with a key fetched before the outage still
    // verify: the last good key set stays in use.
    for _ in 0..5 {
        let case = alpha(&contoso, KID_1);
        assert_eq!(client::attempt(&url, &case).await, Outcome::Admitted);
        used.push(case);
    }
    // A key published during the outage cannot be fetched: refused, with the reason.
    let rotated = alpha(&contoso, KID_3);
    assert_eq!(client::attempt(&url, &rotated).await, Outcome::Refused);
    let denied = "entra_callout_requests_total{outcome=\"deny\",reason=\"key_unknown\"}";
    assert_eq!(binary.metric(denied).await, Some(1.0));
    assert!(
        server
            .wait_for_log("Auth callout service returned an error: key_unknown")
            .await,
        "{}",
        server.log()
    );
    used.push(rotated);

    proxy.restore();
    // The unknown kid triggers a refetch (at most one a second, none within 2 s of the failed
    // one) that now succeeds.
    let mut recovered = None;
    eventually("the rotated key to be accepted", 20, async || {
        let case = alpha(&contoso, KID_3);
        let outcome = client::attempt(&url, &case).await;
        used.push(case.clone());
        if outcome == Outcome::Admitted {
            recovered = Some(case);
        }
        recovered.is_some()
    })
    .await;
    let case = alpha(&contoso, KID_1);
    assert_eq!(client::attempt(&url, &case).await, Outcome::Admitted);
    used.push(case);

    let log = stop_cleanly(binary).await;
    assert!(
        log.contains("key fetch failed; keeping the last good keys"),
        "the outage is logged:\n{log}"
    );
    assert_no_secrets(&log, &secrets(&service, &used));
}

#[tokio::test]
async fn a_restarted_nats_server_is_answered_again_within_two_seconds() {
    let contoso = TestIssuer::start_for(TENANT).await;
    let fabrikam = TestIssuer::start_for(OTHER_TENANT).await;
    let service = ServiceDir::new();
    let mut server = NatsServer::start(&service.server_config(2));
    let url = server.url();
    // Text logs here; the other tests scan JSON logs.
    let (config, admin) = service.write_config(&Settings {
        log_format: "text",
        ..settings(&url, providers(&contoso, &fabrikam))
    });
    let binary = Binary::start_ready(&config, &admin).await;
    let cases = client::cases(&contoso, &fabrikam, false);
    assert_eq!(client::attempt(&url, &cases[0]).await, Outcome::Admitted);

    server.stop();
    eventually("not ready while NATS is down", 20, async || {
        binary.get("/readyz").await.0 == 503
    })
    .await;
    // Stay down long enough for the client's reconnect backoff to reach its cap (async-nats'
    // default of 4 s would miss the bound below).
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.restart();
    let back = Instant::now();
    eventually("ready again", 20, async || {
        binary.get("/readyz").await.0 == 200
    })
    .await;
    let mut tally = Tally::default();
    for case in &cases {
        tally.record(case, client::attempt(&url, case).await, false);
    }
    // The bound the issue asks for: reconnect delay (≤ 750 ms) plus a handshake. Measured from
    // the moment nats-server logged "Server is ready" to the last answered client.
    let elapsed = back.elapsed();
    assert!(tally.wrong.is_empty(), "{tally:?}");
    assert_eq!((tally.admitted, tally.refused), (3, 4));
    assert!(
        elapsed < Duration::from_secs(2),
        "the service answered again only after {elapsed:?}"
    );

    let log = stop_cleanly(binary).await;
    assert!(
        log.contains("disconnected from NATS; reconnecting"),
        "{log}"
    );
    assert_no_secrets(&log, &secrets(&service, &cases));
}

#[tokio::test]
async fn serve_started_before_nats_server_stays_up_not_ready_and_then_answers() {
    let contoso = TestIssuer::start_for(TENANT).await;
    let service = ServiceDir::new();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let (config, admin) = service.write_config(&settings(
        &url,
        vec![("contoso", &contoso, contoso.authority())],
    ));
    let mut binary = Binary::start(&config, &admin);
    let attempt = "NATS not reachable yet; retrying";
    eventually("three failed connection attempts", 20, async || {
        binary.stderr().matches(attempt).count() >= 3
    })
    .await;
    assert!(binary.running(), "serve exited:\n{}", binary.stderr());
    assert_eq!(
        binary.get("/readyz").await,
        (
            503,
            "not ready: nats disconnected, not subscribed\n".to_owned()
        )
    );
    let log = binary.stderr();
    let attempts: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| line.contains(attempt))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // One line per attempt, and the attempts back off.
    let waits: Vec<&str> = attempts
        .iter()
        .take(3)
        .map(|a| a["retry_in"].as_str().unwrap())
        .collect();
    assert_eq!(waits, ["250ms", "500ms", "1s"], "{log}");
    let error = attempts[0]["error"].as_str().unwrap();
    let prefix = format!("cannot connect to NATS at nats://127.0.0.1:{port}: ");
    assert!(error.starts_with(&prefix), "{error}");
    let causes: Vec<&str> = error.split(": ").collect();
    let distinct: std::collections::HashSet<&&str> = causes.iter().collect();
    assert_eq!(distinct.len(), causes.len(), "a cause is repeated: {error}");

    let server = NatsServer::start_on(port, &service.server_config(2));
    binary.wait_ready().await;
    let case = alpha(&contoso, KID_1);
    assert_eq!(
        client::attempt(&server.url(), &case).await,
        Outcome::Admitted
    );

    let log = stop_cleanly(binary).await;
    assert_no_secrets(&log, &secrets(&service, &[case]));
}

#[tokio::test]
async fn serve_waiting_for_nats_server_stops_cleanly_on_sigterm() {
    let contoso = TestIssuer::start_for(TENANT).await;
    let service = ServiceDir::new();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let (config, admin) = service.write_config(&settings(
        &url,
        vec![("contoso", &contoso, contoso.authority())],
    ));
    let binary = Binary::start(&config, &admin);
    eventually("a failed connection attempt", 20, async || {
        binary.stderr().contains("NATS not reachable yet")
    })
    .await;
    let log = stop_cleanly(binary).await;
    assert!(log.contains("stopped before NATS was reachable"), "{log}");
    assert_no_secrets(&log, &secrets(&service, &[]));
}

#[tokio::test]
async fn a_replica_killed_during_a_connect_storm_locks_nobody_out() {
    const CONNECTS: usize = 600;
    let contoso = TestIssuer::start_for(TENANT).await;
    let fabrikam = TestIssuer::start_for(OTHER_TENANT).await;
    let service = ServiceDir::new();
    let base = service.server_config(2);
    let cluster = NatsCluster::start(3, |i| {
        base.replace(
            "server_name: callout-test",
            &format!("server_name: node-{i}"),
        )
    });
    let urls: Vec<String> = cluster.nodes.iter().map(NatsServer::url).collect();
    let (config_a, admin_a) = service.write_config_as(
        "a.yaml",
        &settings(&urls[0], providers(&contoso, &fabrikam)),
    );
    let (config_b, admin_b) = service.write_config_as(
        "b.yaml",
        &settings(&urls[1], providers(&contoso, &fabrikam)),
    );
    let mut a = Binary::start_ready(&config_a, &admin_a).await;
    let b = Binary::start_ready(&config_b, &admin_b).await;
    let cases = client::cases(&contoso, &fabrikam, true);
    // Routes and queue interest propagate asynchronously; wait until every node routes.
    for url in &urls {
        eventually("the cluster to route requests", 30, async || {
            client::attempt(url, &cases[0]).await == Outcome::Admitted
        })
        .await;
    }

    let storm = tokio::spawn({
        let (urls, cases) = (urls.clone(), cases.clone());
        async move { client::storm(&urls, &cases, CONNECTS, 16, true).await }
    });
    let allowed = "entra_callout_requests_total{outcome=\"allow\",reason=\"\"}";
    eventually("both replicas answering the storm", 60, async || {
        a.metric(allowed).await.unwrap_or(0.0) >= 20.0
            && b.metric(allowed).await.unwrap_or(0.0) >= 20.0
    })
    .await;
    a.kill();
    let tally = tokio::time::timeout(Duration::from_secs(240), storm)
        .await
        .expect("the storm finishes within 4 minutes")
        .unwrap();

    assert!(tally.wrong.is_empty(), "wrong answers: {:?}", tally.wrong);
    assert_eq!(tally.admitted + tally.refused, CONNECTS as u64);
    // Only requests in flight at the killed replica are lost: at most one per worker.
    assert!(tally.retried <= 16, "{tally:?}");
    // The survivor answers every node alone.
    for url in &urls {
        assert_eq!(client::attempt(url, &cases[2]).await, Outcome::Admitted);
    }
    let log = stop_cleanly(b).await;
    assert_no_secrets(&format!("{log}{}", a.stderr()), &secrets(&service, &cases));
}

#[tokio::test]
async fn an_invalid_policy_set_swapped_in_during_traffic_fails_no_authorization() {
    let contoso = TestIssuer::start_for(TENANT).await;
    let fabrikam = TestIssuer::start_for(OTHER_TENANT).await;
    let service = ServiceDir::new();
    let server = NatsServer::start(&service.server_config(5));
    let url = server.url();
    let (config, admin) = service.write_config(&settings(&url, providers(&contoso, &fabrikam)));
    let binary = Binary::start_ready(&config, &admin).await;
    let cases = client::cases(&contoso, &fabrikam, true);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = (0..8)
        .map(|worker| {
            let (url, cases, stop) = (url.clone(), cases.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut n = worker;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let case = &cases[n % cases.len()];
                    tally.record(case, client::attempt(&url, case).await, false);
                    n += 1;
                }
                tally
            })
        })
        .collect();
    let reloads = "entra_callout_policy_reloads_total{result=\"error\"}";
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A ConfigMap update that breaks every file: an unknown field, a tenant without an account
    // and a binding naming a role that does not exist.
    service.publish_policies(
        2,
        &[(
            "policies.yaml",
            "version: 1\ntenants:\n  - name: x\n    acount: APP\nbindings:\n  - { name: b, tenant: x, roles: [nope] }\n",
        )],
    );
    eventually("the invalid set to be rejected", 20, async || {
        binary.metric(reloads).await == Some(1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut tally = Tally::default();
    for worker in traffic {
        tally.merge(
            tokio::time::timeout(Duration::from_secs(60), worker)
                .await
                .expect("traffic stops")
                .unwrap(),
        );
    }
    assert!(tally.wrong.is_empty(), "wrong answers: {:?}", tally.wrong);
    assert!(tally.admitted >= 8 && tally.refused >= 8, "{tally:?}");

    // A valid set after the broken one is taken: contoso/beta loses its binding.
    let without_beta = crate::support::binary::policy().replace(
        "  - { name: contoso-beta, tenant: contoso, project: beta, roles: [member], when: { app_roles: [Beta] } }\n",
        "",
    );
    service.publish_policies(3, &[("policies.yaml", &without_beta)]);
    let ok = "entra_callout_policy_reloads_total{result=\"ok\"}";
    eventually("the valid set to be applied", 20, async || {
        binary.metric(ok).await == Some(1.0)
    })
    .await;
    let fresh = client::cases(&contoso, &fabrikam, true);
    assert_eq!(client::attempt(&url, &fresh[1]).await, Outcome::Refused);
    assert_eq!(client::attempt(&url, &fresh[0]).await, Outcome::Admitted);

    let log = stop_cleanly(binary).await;
    assert!(log.contains("policy reload rejected"), "{log}");
    let mut all = cases.clone();
    all.extend(fresh);
    assert_no_secrets(&log, &secrets(&service, &all));
}

#[tokio::test]
async fn hostile_requests_cannot_be_injected_and_are_never_answered_with_a_grant() {
    let contoso = TestIssuer::start_for(TENANT).await;
    let fabrikam = TestIssuer::start_for(OTHER_TENANT).await;
    let service = ServiceDir::new();
    let server = NatsServer::start(&service.server_config(2));
    let url = server.url();
    let (config, admin) = service.write_config(&settings(&url, providers(&contoso, &fabrikam)));
    let binary = Binary::start_ready(&config, &admin).await;

    // Not even the service's own user may publish on the request subject: nats-server keeps
    // it for itself, so forged requests cannot reach the service through NATS.
    let (tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let insider =
        async_nats::ConnectOptions::with_user_and_password("auth".into(), service.password.clone())
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(error) = event {
                        let _ = tx.send(error.to_string().to_lowercase());
                    }
                }
            })
            .connect(&url)
            .await
            .unwrap();
    insider
        .publish_with_reply(nats_jwt::AUTH_REQUEST_SUBJECT, "_INBOX.x", "forged".into())
        .await
        .unwrap();
    insider.flush().await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("a server error within 5 s")
        .unwrap();
    assert!(
        error.contains("permissions violation for publish") && error.contains("$sys.req.user.auth"),
        "{error}"
    );

    // Behind that wall, the decision path itself refuses every hostile request it could be
    // handed: the same configuration, the same code the binary runs.
    let loaded = Config::load(&config, &ProcessEnv).unwrap();
    let verifier = Arc::new(Verifier::new(loaded.providers.clone()).unwrap());
    verifier.warm().await.unwrap();
    let authorizer = Authorizer::from_config(&loaded.callout, loaded.policies, verifier);
    let token = contoso.app_token(json!({ "roles": ["Alpha"] }));
    let now = crate::support::issuer::now();
    // A request naming `server` as its origin, signed by `signer` (the encoder sets `iss`).
    let request = |server: &nkeys::KeyPair, signer: &nkeys::KeyPair, exp: u64| {
        let mut nats = AuthorizationRequest::default();
        nats.server_id.id = server.public_key();
        nats.server_id.name = "forger".into();
        nats.server_id.xkey = SENDER.public_key();
        nats.user_nkey = nkeys::KeyPair::new_user().public_key();
        nats.connect_opts.auth_token = token.clone();
        let mut claims = Claims::with_subject(service.account.public_key(), nats);
        claims.base.aud = nats_jwt::REQUEST_AUDIENCE.into();
        claims.base.exp = exp;
        let signer = nats_jwt::Signer::new(signer.clone()).unwrap();
        nats_jwt::encode(&mut claims, &signer, now).unwrap()
    };
    static SENDER: std::sync::LazyLock<nkeys::XKey> = std::sync::LazyLock::new(nkeys::XKey::new);
    let service_public = nkeys::XKey::from_public_key(&service.xkey.public_key()).unwrap();
    let seal = |jwt: &[u8]| SENDER.seal(jwt, &service_public).unwrap();
    let server_key = nkeys::KeyPair::new_server();
    let genuine = request(&server_key, &server_key, now + 30);
    // The genuine request with one character of the client's token changed, under the
    // original signature.
    let tampered = {
        let b64 = data_encoding::BASE64URL_NOPAD;
        let (signed, signature) = genuine.rsplit_once('.').unwrap();
        let (head, payload) = signed.split_once('.').unwrap();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(payload.as_bytes()).unwrap()).unwrap();
        let mut token = claims["nats"]["connect_opts"]["auth_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let at = token.len() - 10;
        let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
        token.replace_range(at..=at, flipped);
        claims["nats"]["connect_opts"]["auth_token"] = token.into();
        let payload = b64.encode(claims.to_string().as_bytes());
        format!("{head}.{payload}.{signature}").into_bytes()
    };
    let header = SENDER.public_key();
    // The genuine request's bytes under a well-formed signature of another request: only the
    // signature check tells them apart.
    let other = request(&server_key, &server_key, now + 31);
    let resigned = format!(
        "{}.{}",
        genuine.rsplit_once('.').unwrap().0,
        other.rsplit_once('.').unwrap().1
    );
    let hostile: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("empty", Vec::new(), Some(&header)),
        ("garbage", b"\x00\xffnot a jwt".to_vec(), Some(&header)),
        (
            "plaintext to a sealed service",
            genuine.clone().into_bytes(),
            Some(&header),
        ),
        (
            "truncated",
            seal(&genuine.as_bytes()[..genuine.len() / 2]),
            Some(&header),
        ),
        ("oversized", vec![b'e'; 1 << 19], Some(&header)),
        ("tampered", seal(&tampered), Some(&header)),
        (
            "a signature over other bytes",
            seal(resigned.as_bytes()),
            Some(&header),
        ),
        (
            "signed by a key that is not the server's",
            seal(request(&server_key, &nkeys::KeyPair::new_server(), now + 30).as_bytes()),
            Some(&header),
        ),
        (
            "expired",
            seal(request(&server_key, &server_key, now - 60).as_bytes()),
            Some(&header),
        ),
        ("without the xkey header", seal(genuine.as_bytes()), None),
        (
            "sealed by another sender than the header names",
            nkeys::XKey::new()
                .seal(genuine.as_bytes(), &service_public)
                .unwrap(),
            Some(&header),
        ),
    ];
    // With `verify_request_signature: true` (read from a configuration file, as the binary
    // does) every one is dropped unanswered. By default the
    // signature is not verified (SECURITY.md): a tampered request is then decided like any
    // other, on the token it carries: refused, its token's signature broken.
    let strict_settings = Settings {
        callout: "  verify_request_signature: true\n",
        ..settings(&url, providers(&contoso, &fabrikam))
    };
    let (strict_config, _) = service.write_config_as("strict.yaml", &strict_settings);
    let strict = Config::load(&strict_config, &ProcessEnv).unwrap();
    let verifier = Arc::new(Verifier::new(strict.providers.clone()).unwrap());
    verifier.warm().await.unwrap();
    let verifying = Authorizer::from_config(&strict.callout, strict.policies, verifier);
    for (what, payload, header) in &hostile {
        match verifying.handle(payload, *header, now).await {
            Handled::Drop(_) => {}
            Handled::Respond { allowed, .. } => panic!("{what}: answered (allowed: {allowed})"),
        }
        match (authorizer.handle(payload, *header, now).await, *what) {
            (Handled::Drop(_), what) if what != "tampered" => {}
            (Handled::Respond { allowed: false, .. }, "tampered") => {}
            // What the shape check gives up: the request is decided on its token.
            (Handled::Respond { allowed: true, .. }, "a signature over other bytes") => {}
            (Handled::Drop(error), what) => panic!("{what}: dropped ({error})"),
            (Handled::Respond { allowed, .. }, what) => {
                panic!("{what}: answered (allowed: {allowed})")
            }
        }
    }

    // A replay of a well-formed request is answered again, but only with what the token grants,
    // for the request's own user key (whose seed only the server that made it holds; the JWT is
    // never a bearer token) and sealed to the requester's xkey.
    let user_nkey = nats_jwt::decode::<AuthorizationRequest>(&genuine)
        .unwrap()
        .nats
        .user_nkey;
    for _ in 0..2 {
        let Handled::Respond {
            body,
            allowed: true,
            ..
        } = authorizer
            .handle(&seal(genuine.as_bytes()), Some(&header), now)
            .await
        else {
            panic!("the well-formed request is answered");
        };
        let opened = SENDER.open(&body, &service_public).unwrap();
        let response: Claims<nats_jwt::AuthorizationResponse> =
            nats_jwt::decode(std::str::from_utf8(&opened).unwrap()).unwrap();
        assert_eq!(response.base.sub, user_nkey);
        assert_eq!(response.base.aud, server_key.public_key());
        let user: Claims<nats_jwt::User> = nats_jwt::decode(&response.nats.jwt).unwrap();
        assert_eq!(user.base.sub, user_nkey);
        assert!(
            !user.nats.bearer_token,
            "a minted JWT is never a bearer token"
        );
        assert_eq!(user.nats.publish.allow, vec!["contoso.alpha.>".to_owned()]);
        assert!(user.base.exp <= now + 3600, "never outlives the token");
    }

    // The binary was never reached and still answers ordinary clients.
    let cases = client::cases(&contoso, &fabrikam, false);
    assert_eq!(client::attempt(&url, &cases[0]).await, Outcome::Admitted);
    let dropped = "entra_callout_requests_total{outcome=\"drop\",reason=\"\"}";
    assert_eq!(binary.metric(dropped).await, Some(0.0));
    let log = stop_cleanly(binary).await;
    let mut secrets = secrets(&service, &cases);
    secrets.push(token);
    assert_no_secrets(&log, &secrets);
}

/// nats-server's callout timeout in these tests (`server_config(2)`), and the service's default.
const CALLOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// A token with the provider's own issuer and tenant, signed by a held key, but naming a `kid`
/// the provider never published: what an attacker sends to force a key refetch.
fn random_kid(issuer: &TestIssuer) -> Case {
    let mut bytes = [0u8; 12];
    getrandom::getrandom(&mut bytes).unwrap();
    let kid = data_encoding::BASE64URL_NOPAD.encode(&bytes);
    let claims = crate::support::issuer::merge(issuer.app_claims(), json!({ "roles": ["Alpha"] }));
    Case {
        who: "attacker",
        token: issuer.sign_with(KID_1, json!({ "kid": kid }), &claims),
        as_password: false,
        expect: None,
    }
}

/// How the identity provider fails once the service holds its keys.
#[derive(Clone, Copy, Debug)]
enum ProviderFault {
    /// Accepts connections and never answers.
    Hangs,
    /// Answers one byte a second.
    Trickles,
    /// Refuses connections.
    RefusesConnections,
    /// Answers 5xx.
    FailsWith5xx,
}

/// Holds the provider's keys, then makes it fail with `fault` and sends, at once, a token with
/// a random `kid` (forcing a refetch that fails as `fault` says) and 24 valid clients whose key
/// is held, a third of them verified-token cache hits; then 24 more while the refetch still
/// runs. Every valid client is admitted; the attacker is refused with `key_unknown` well before
/// nats-server's callout timeout. Returns how long the attacker waited for its refusal.
async fn held_keys_decide_while_the_provider(fault: ProviderFault) -> Duration {
    let (contoso, proxy) = issuer_behind_proxy().await;
    let service = ServiceDir::new();
    let server = NatsServer::start(&service.server_config(CALLOUT_TIMEOUT.as_secs()));
    let url = server.url();
    let (config, admin) =
        service.write_config(&settings(&url, vec![("contoso", &contoso, proxy.url())]));
    let binary = Binary::start_ready(&config, &admin).await;
    let mut used = Vec::new();
    // Verified once now, so connecting with it again is a verified-token cache hit.
    let cached = alpha(&contoso, KID_1);
    assert_eq!(client::attempt(&url, &cached).await, Outcome::Admitted);
    used.push(cached.clone());

    let (accepted, discovered) = (proxy.accepted(), contoso.discovery_hits());
    match fault {
        ProviderFault::Hangs => proxy.hang(),
        ProviderFault::Trickles => proxy.trickle(),
        ProviderFault::RefusesConnections => proxy.cut(),
        ProviderFault::FailsWith5xx => {
            contoso.fail_discovery(true);
            contoso.fail_jwks(true);
        }
    }
    let attacker = random_kid(&contoso);
    used.push(attacker.clone());
    let attack = tokio::spawn({
        let (url, attacker) = (url.clone(), attacker.clone());
        async move {
            let started = Instant::now();
            let outcome = client::attempt(&url, &attacker).await;
            (outcome, started.elapsed())
        }
    });
    // The valid clients come while the attacker's refetch is under way (where the fault lets
    // the test see it arrive).
    match fault {
        ProviderFault::Hangs | ProviderFault::Trickles => {
            eventually("the refetch to reach the provider", 10, async || {
                proxy.accepted() > accepted
            })
            .await;
        }
        ProviderFault::FailsWith5xx => {
            eventually("the refetch to reach the provider", 10, async || {
                contoso.discovery_hits() > discovered
            })
            .await;
        }
        ProviderFault::RefusesConnections => {}
    }
    let wave = |used: &mut Vec<Case>| {
        let cases: Vec<Case> = (0..24)
            .map(|i| {
                if i % 3 == 0 {
                    cached.clone()
                } else {
                    alpha(&contoso, KID_1)
                }
            })
            .collect();
        used.extend(cases.iter().cloned());
        cases
    };
    let first = wave(&mut used);
    let outcomes =
        futures_util::future::join_all(first.iter().map(|case| client::attempt(&url, case))).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Admitted),
        "{fault:?}: {outcomes:?}"
    );
    let (outcome, waited) = attack.await.unwrap();
    assert_eq!(outcome, Outcome::Refused, "{fault:?}");
    assert!(
        server
            .wait_for_log("Auth callout service returned an error: key_unknown")
            .await,
        "{fault:?}: {}",
        server.log()
    );
    // Answered, not timed out: the refusal came well before nats-server would give up.
    assert!(
        waited < CALLOUT_TIMEOUT * 3 / 4,
        "{fault:?}: the unknown kid was refused only after {waited:?}"
    );
    // The refetch may still be stuck: held keys keep deciding.
    let second = wave(&mut used);
    let outcomes =
        futures_util::future::join_all(second.iter().map(|case| client::attempt(&url, case))).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Admitted),
        "{fault:?}: {outcomes:?}"
    );
    let denied = "entra_callout_requests_total{outcome=\"deny\",reason=\"key_unknown\"}";
    assert_eq!(binary.metric(denied).await, Some(1.0), "{fault:?}");

    // The refetch ends within the 10 s fetch deadline (here a hang and a trickle are cut by
    // the 5 s read timeout before), and says so.
    eventually("the refetch to fail", 20, async || {
        binary
            .stderr()
            .contains("key fetch failed; keeping the last good keys")
    })
    .await;
    let log = stop_cleanly(binary).await;
    assert_no_secrets(&log, &secrets(&service, &used));
    waited
}

#[tokio::test]
async fn a_hanging_identity_provider_refuses_no_client_whose_key_is_held() {
    let waited = held_keys_decide_while_the_provider(ProviderFault::Hangs).await;
    eprintln!("hang: the unknown kid was refused after {waited:?}");
}

#[tokio::test]
async fn a_trickling_identity_provider_refuses_no_client_whose_key_is_held() {
    let waited = held_keys_decide_while_the_provider(ProviderFault::Trickles).await;
    eprintln!("trickle: the unknown kid was refused after {waited:?}");
}

#[tokio::test]
async fn a_refusing_or_failing_identity_provider_refuses_no_client_whose_key_is_held() {
    for fault in [
        ProviderFault::RefusesConnections,
        ProviderFault::FailsWith5xx,
    ] {
        let waited = held_keys_decide_while_the_provider(fault).await;
        eprintln!("{fault:?}: the unknown kid was refused after {waited:?}");
    }
}

#[tokio::test]
async fn a_provider_down_at_cold_start_is_asked_once_per_pause_not_once_per_client() {
    const CONNECTS: usize = 50;
    let contoso = TestIssuer::start_for(TENANT).await;
    contoso.fail_discovery(true);
    let service = ServiceDir::new();
    let server = NatsServer::start(&service.server_config(CALLOUT_TIMEOUT.as_secs()));
    let url = server.url();
    let (config, _) = service.write_config(&settings(
        &url,
        vec![("contoso", &contoso, contoso.authority())],
    ));
    // In process, started as `serve` starts it: its start-up key load fails, so the storm's
    // requests are the first to need keys.
    let config = Config::load(&config, &ProcessEnv).unwrap();
    let replica = Replica::start_allowing(config, &[NotReady::KeysNotLoaded]).await;

    let storm: Vec<Case> = (0..CONNECTS).map(|_| alpha(&contoso, KID_1)).collect();
    let started = Instant::now();
    let outcomes =
        futures_util::future::join_all(storm.iter().map(|case| client::attempt(&url, case))).await;
    let took = started.elapsed();
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Refused),
        "{outcomes:?}"
    );
    let refusals = "Auth callout service returned an error: keys_unavailable";
    eventually("every refusal in nats-server's log", 10, async || {
        server.log().matches(refusals).count() == CONNECTS
    })
    .await;
    // One fetch of the tokens' (v2) key source — the service's own at start-up, or the storm's
    // first — and one more per pause after a failure (2 s, then doubling) the storm outlasted.
    let fetches = contoso.discovery_hits_for(TENANT, "v2");
    let pauses = usize::try_from(took.as_secs() / 2).unwrap();
    eprintln!("{CONNECTS} connects in {took:?} caused {fetches} discovery fetches");
    assert!(
        (1..=1 + pauses).contains(&fetches),
        "{CONNECTS} connects in {took:?} caused {fetches} fetches"
    );

    // Once the provider is back, the next fetch after the pause loads the keys.
    contoso.fail_discovery(false);
    eventually(
        "a client admitted once the provider is back",
        20,
        async || client::attempt(&url, &alpha(&contoso, KID_1)).await == Outcome::Admitted,
    )
    .await;
    replica.stop().await;
}

#[tokio::test]
async fn a_token_of_a_megabyte_is_refused_as_too_large_not_left_to_time_out() {
    let contoso = TestIssuer::start_for(TENANT).await;
    let fabrikam = TestIssuer::start_for(OTHER_TENANT).await;
    let service = ServiceDir::new();
    // A server that lets CONNECT lines far beyond any real token through to the callout.
    let server = NatsServer::start(
        &service
            .server_config(CALLOUT_TIMEOUT.as_secs())
            .replace("max_control_line: 32KB", "max_control_line: 4MB"),
    );
    let url = server.url();
    let (config, admin) = service.write_config(&settings(&url, providers(&contoso, &fabrikam)));
    let binary = Binary::start_ready(&config, &admin).await;

    let claims = crate::support::issuer::merge(
        contoso.app_claims(),
        json!({ "roles": ["Alpha"], "pad": "x".repeat(1 << 20) }),
    );
    let huge = Case {
        who: "oversized",
        token: contoso.sign(KID_1, &claims),
        as_password: false,
        expect: None,
    };
    let started = Instant::now();
    assert_eq!(client::attempt(&url, &huge).await, Outcome::Refused);
    let waited = started.elapsed();
    eprintln!(
        "a {} byte token was refused after {waited:?}",
        huge.token.len()
    );
    assert!(
        server
            .wait_for_log("Auth callout service returned an error: token_too_large")
            .await,
        "{}",
        server.log()
    );
    assert!(
        waited < CALLOUT_TIMEOUT * 3 / 4,
        "refused only after {waited:?}"
    );
    eventually("the refusal in the audit trail", 10, async || {
        binary.stderr().lines().any(|line| {
            line.contains("client refused") && line.contains("\"reason\":\"token_too_large\"")
        })
    })
    .await;
    // A normal client right after is unaffected.
    let normal = alpha(&contoso, KID_1);
    assert_eq!(client::attempt(&url, &normal).await, Outcome::Admitted);

    let log = stop_cleanly(binary).await;
    assert_no_secrets(&log, &secrets(&service, &[huge, normal]));
}
