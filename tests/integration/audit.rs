//! The audit trail against nats-server's own log: every decision the service logs is found in
//! nats-server's log for the same connection (`cid`) with the same outcome — admitted, refused
//! with the logged reason, or, for an answer sent after the server's deadline, timed out.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::binary::{Binary, ServiceDir, Settings, assert_no_secrets};
use crate::support::client::{self, Case, Outcome};
use crate::support::eventually;
use crate::support::issuer::{self, KID_1, KID_3, TENANT, TestIssuer};
use crate::support::nats::NatsServer;

fn case(who: &'static str, token: String, admitted: bool) -> Case {
    Case {
        who,
        token,
        as_password: false,
        expect: admitted.then_some(("contoso.alpha.data", "contoso.beta.data")),
    }
}

/// The audit events in the binary's JSON log.
fn audit_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "audit" && line.get("id").is_some())
        .collect()
}

/// nats-server's log lines about connection `cid`: from its creation to its close, and the
/// server-level lines right after it, before the next connection. nats-server logs a callout's
/// error and timeout without the `cid`; clients here connect one after another, so those
/// lines fall inside the window of the connection they are about.
fn connection_lines(log: &str, cid: u64) -> Vec<&str> {
    let tag = format!(" - cid:{cid} - ");
    let lines: Vec<&str> = log.lines().collect();
    let Some(first) = lines.iter().position(|l| l.contains(&tag)) else {
        return Vec::new();
    };
    let last = lines
        .iter()
        .rposition(|l| l.contains(&tag))
        .unwrap_or(first);
    let untagged_after = lines[last + 1..]
        .iter()
        .take_while(|l| !l.contains(" - cid:"))
        .count();
    lines[first..=last + untagged_after]
        .iter()
        .copied()
        .filter(|l| l.contains(&tag) || !l.contains(" - cid:"))
        .collect()
}

#[tokio::test]
async fn every_audit_event_is_found_in_the_nats_server_log_with_its_outcome() {
    let contoso = TestIssuer::start_for(TENANT).await;
    let service = ServiceDir::new();
    // Debug logging for the server's view of each connection; its default 2 s deadline.
    let server = NatsServer::start(&format!("{}\ndebug: true\n", service.server_config(2)));
    let url = server.url();
    // The service is told nats-server waits 10 s, so a request may wait 5 s for keys; the
    // server really waits 2 s. That mismatch (an operator's, or a server under load) is what
    // makes an answer late below.
    let (config, admin) = service.write_config(&Settings {
        nats: &url,
        providers: vec![("contoso", &contoso, contoso.authority())],
        callout: "  server_timeout: 10s\n  key_wait: 5s\n",
        log_format: "json",
        log_level: "info",
    });
    let binary = Binary::start_ready(&config, &admin).await;
    let now = issuer::now();
    let claims = |extra: Value| issuer::merge(contoso.app_claims(), extra);

    let admitted = case(
        "admitted",
        contoso.sign(KID_1, &claims(json!({ "roles": ["Alpha"] }))),
        true,
    );
    let no_policy = case(
        "no binding",
        contoso.sign(KID_1, &claims(json!({ "roles": ["Nothing"] }))),
        false,
    );
    // Expired 5 s ago: inside the provider's 60 s leeway, so the token verifies, but a user JWT
    // for it would be expired already.
    let in_leeway = case(
        "expired within the leeway",
        contoso.sign(
            KID_1,
            &claims(json!({ "roles": ["Alpha"], "exp": now - 5, "iat": now - 3600 })),
        ),
        false,
    );
    // One character changed inside the signature (not its last, whose spare bits would make
    // it malformed base64 rather than a wrong signature).
    let mut forged = contoso.sign(KID_1, &claims(json!({ "roles": ["Alpha"] })));
    let at = forged.len() - 10;
    let flipped = if &forged[at..=at] == "A" { "B" } else { "A" };
    forged.replace_range(at..=at, flipped);
    let forged = case("bad signature", forged, false);
    let returned = "Auth callout service returned an error: ";
    let mut refusals = 0;
    for (case, expected) in [
        (&admitted, Outcome::Admitted),
        (&no_policy, Outcome::Refused),
        (&in_leeway, Outcome::Refused),
        (&forged, Outcome::Refused),
    ] {
        assert_eq!(client::attempt(&url, case).await, expected, "{}", case.who);
        // nats-server logs the returned error after the client has its answer; the next
        // client connects once it is written, so each line lies in its connection's window.
        if expected == Outcome::Refused {
            refusals += 1;
            assert_eq!(
                server.wait_for_log_count(returned, refusals).await,
                refusals,
                "{}",
                server.log()
            );
        }
    }

    // A decision that takes longer than the server waits: the key of its token is published
    // while key fetches hang, the request waits for the fetch (up to the 5 s key wait), and the
    // fetch is let go only once nats-server has given up.
    contoso.publish(KID_3);
    contoso.pause_jwks(true);
    let late = case(
        "answered late",
        contoso.sign(KID_3, &claims(json!({ "roles": ["Alpha"] }))),
        true,
    );
    let attempt = tokio::spawn({
        let (url, late) = (url.clone(), late.clone());
        async move { client::attempt(&url, &late).await }
    });
    let timed_out = "Authorization callout response not received in time";
    assert!(server.wait_for_log(timed_out).await, "{}", server.log());
    contoso.pause_jwks(false);
    assert_eq!(
        attempt.await.unwrap(),
        Outcome::Refused,
        "nats-server refused"
    );
    let late_series = "entra_callout_requests_total{outcome=\"late\",reason=\"\"}";
    eventually("the late answer to be counted", 10, async || {
        binary.metric(late_series).await == Some(1.0)
    })
    .await;
    let allowed = "entra_callout_requests_total{outcome=\"allow\",reason=\"\"}";
    assert_eq!(
        binary.metric(allowed).await,
        Some(1.0),
        "only the first client"
    );

    let (status, log) = binary.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    let events = audit_events(&log);
    let by_outcome = |outcome: &str| -> Vec<&Value> {
        events.iter().filter(|e| e["outcome"] == outcome).collect()
    };
    assert_eq!(by_outcome("allow").len(), 1, "{log}");
    assert_eq!(by_outcome("deny").len(), 3, "{log}");
    assert_eq!(by_outcome("late").len(), 1, "{log}");
    assert_eq!(events.len(), 5, "{log}");

    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "decision ids are unique: {log}");
    let server_log = server.log();
    for event in &events {
        let id = event["id"].as_str().unwrap();
        let user_nkey = event["user_nkey"].as_str().unwrap();
        assert_eq!(
            id,
            format!("{}.{user_nkey}", event["request_id"].as_str().unwrap())
        );
        assert_eq!(event["server_name"], "callout-test");
        let cid = event["client_id"].as_u64().unwrap();
        let lines = connection_lines(&server_log, cid);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("Client connection created")),
            "cid {cid} of {event} is not in nats-server's log:\n{server_log}"
        );
        let refused = lines.iter().any(|l| l.contains("authentication error"));
        let reported = |text: &str| lines.iter().any(|l| l.contains(text));
        match event["outcome"].as_str().unwrap() {
            "allow" => {
                // nats-server names the connection by the minted user's account and name.
                let user = format!(
                    "\"{}/user:{}\"",
                    event["account"].as_str().unwrap(),
                    event["object_id"].as_str().unwrap()
                );
                assert!(!refused && reported(&user), "{event}\n{}", lines.join("\n"));
            }
            "deny" => {
                let reason = event["reason"].as_str().unwrap();
                assert!(
                    refused && reported(&format!("{returned}{reason}")),
                    "{event}\n{}",
                    lines.join("\n")
                );
            }
            "late" => assert!(
                refused && reported(timed_out),
                "{event}\n{}",
                lines.join("\n")
            ),
            other => panic!("outcome {other}"),
        }
    }

    let admitted_event = by_outcome("allow")[0];
    assert_eq!(admitted_event["rules"], json!(["contoso-alpha"]));
    assert_eq!(admitted_event["publish"], json!(["contoso.alpha.>"]));
    assert_eq!(admitted_event["subscribe"], json!(["contoso.alpha.>"]));
    assert!(admitted_event["expires_at"].as_u64().unwrap() > now);
    let reason = |r: &str| -> &Value {
        by_outcome("deny")
            .into_iter()
            .find(|e| e["reason"] == r)
            .unwrap_or_else(|| panic!("no {r} refusal in\n{log}"))
    };
    // Refusals name the provider, and the identity's `sub` once the token verified.
    let subject = contoso.app_claims()["sub"].clone();
    for code in ["no_matching_policy", "token_expired"] {
        let event = reason(code);
        assert_eq!(event["provider"], "contoso", "{event}");
        assert_eq!(event["subject"], subject, "{event}");
    }
    assert_eq!(reason("signature_invalid")["provider"], "contoso");
    // The token in its leeway was not minted into a JWT nats-server refuses as expired.
    assert!(!server_log.contains("claim is expired"), "{server_log}");
    let late_event = by_outcome("late")[0];
    assert!(late_event["late_ms"].as_u64().unwrap() > 0, "{late_event}");
    assert_eq!(late_event["rules"], json!(["contoso-alpha"]));

    let mut secrets = service.seeds();
    secrets.push(service.password.clone());
    secrets.extend(
        [admitted, no_policy, in_leeway, forged, late]
            .into_iter()
            .map(|c| c.token),
    );
    assert_no_secrets(&log, &secrets);
}
