//! End-to-end: clients connect through a real nats-server to the callout service.
//!
//! Each test builds a [`Stack`]: the in-process Entra-like issuer, a config-mode nats-server
//! whose `auth_callout` points at our issuer key, and one or more service replicas loaded from
//! a real configuration file through `Config::load`, exactly as `entra-callout serve` does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::ConnectErrorKind;
use futures_util::StreamExt;
use serde_json::json;

use crate::support::client::{connect, next_error};
use crate::support::issuer::{AUDIENCE, KID_1, KID_3, TENANT, TestIssuer, merge};
use crate::support::nats::{NatsServer, config_mode};
use crate::support::policies;
use crate::support::service::{Answered, Replica};

/// Issuer, nats-server and the service's configuration file.
struct Stack {
    issuer: TestIssuer,
    server: NatsServer,
    config_path: std::path::PathBuf,
}

impl Stack {
    async fn start(xkey: bool, extra_server_config: &str) -> Self {
        let issuer = TestIssuer::start().await;
        let account = nkeys::KeyPair::new_account();
        let curve = nkeys::XKey::new();
        let xkey_public = curve.public_key();
        let server_config = config_mode(
            &account.public_key(),
            xkey.then_some(xkey_public.as_str()),
            extra_server_config,
        );
        let server = NatsServer::start(&server_config);
        let dir = server.dir().to_path_buf();
        std::fs::write(dir.join("issuer.nk"), account.seed().unwrap()).unwrap();
        std::fs::write(dir.join("xkey.nk"), curve.seed().unwrap()).unwrap();
        std::fs::write(dir.join("nats-password"), "pwd").unwrap();
        std::fs::write(
            dir.join("policies.yaml"),
            policies::ml(&[policies::ML_PUBLISHERS, policies::ML_READERS]),
        )
        .unwrap();
        let xkey_line = if xkey {
            "  xkey_seed_file: xkey.nk\n"
        } else {
            ""
        };
        let config = format!(
            "nats:\n  url: {url}\n  user: auth\n  password_file: nats-password\n\
             callout:\n  issuer_seed_file: issuer.nk\n{xkey_line}  max_ttl: 15m\n  drain_timeout: 5s\n\
             providers:\n  - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    \
             audiences: [\"{AUDIENCE}\"]\n    authority: {authority}\n\
             policies: policies.yaml\nadmin:\n  listen: 127.0.0.1:0\n",
            url = server.url(),
            authority = issuer.authority(),
        );
        let config_path = dir.join("entra-callout.yaml");
        std::fs::write(&config_path, config).unwrap();
        Self {
            issuer,
            server,
            config_path,
        }
    }

    /// Starts a service replica from the configuration file; returns once it is subscribed.
    async fn replica(&self) -> Replica {
        Replica::start(&self.config_path).await
    }

    fn publisher_token(&self) -> String {
        self.issuer.token(json!({ "roles": ["Nats.Publisher"] }))
    }

    fn reader_token(&self) -> String {
        self.issuer.token(json!({ "roles": ["Nats.Reader"] }))
    }
}

async fn refused(url: &str, token: &str) -> bool {
    match connect(url, token).await {
        Ok(_) => false,
        Err(err) => err.kind() == ConnectErrorKind::AuthorizationViolation,
    }
}

fn subject(rest: &str) -> String {
    format!("ml.{TENANT}.{rest}")
}

#[tokio::test]
async fn allowed_publish_is_delivered_and_denials_are_enforced_by_the_server() {
    let stack = Stack::start(false, "").await;
    let replica = stack.replica().await;
    let url = stack.server.url();

    let mut reader = connect(&url, &stack.reader_token())
        .await
        .expect("reader admitted");
    let mut sub = reader.nats.subscribe(subject("outputs")).await.unwrap();
    reader.nats.flush().await.unwrap();
    let mut publisher = connect(&url, &stack.publisher_token())
        .await
        .expect("publisher admitted");
    publisher
        .nats
        .publish(subject("outputs"), "model-v1 accuracy=0.93".into())
        .await
        .unwrap();
    publisher.nats.flush().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("message within 5 s")
        .expect("subscription open");
    assert_eq!(&message.payload[..], b"model-v1 accuracy=0.93");

    // The reader may not publish at all: the server refuses and tells the client.
    reader
        .nats
        .publish(subject("outputs"), "forged".into())
        .await
        .unwrap();
    reader.nats.flush().await.unwrap();
    let err = next_error(&mut reader).await;
    assert!(err.contains("permissions violation for publish"), "{err}");

    // The publisher may not subscribe outside its tenant's prefix.
    let _outside = publisher
        .nats
        .subscribe("ml.another-tenant.>")
        .await
        .unwrap();
    publisher.nats.flush().await.unwrap();
    let err = next_error(&mut publisher).await;
    assert!(
        err.contains("permissions violation for subscription"),
        "{err}"
    );

    // Nothing outside the grant was delivered to the reader.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err()
    );

    replica.wait_answered(Answered::new(2, 0)).await;
    replica.stop().await;
}

/// The deny reason `entra-callout explain --json` gives `token` under the configuration at
/// `config`.
fn explained_reason(config: &std::path::Path, token: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entra-callout"))
        .args(["explain", "--json", "--config"])
        .arg(config)
        .args(["--token", token])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["decision"]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason in {json}"))
        .to_owned()
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason_in_the_server_log() {
    let stack = Stack::start(false, "").await;
    let replica = stack.replica().await;
    let url = stack.server.url();
    let now = entra_callout::telemetry::unix_now();
    let publisher = merge(
        stack.issuer.user_claims(),
        json!({ "roles": ["Nats.Publisher"] }),
    );

    let cases: Vec<(&str, String)> = vec![
        ("token_missing", String::new()),
        // Signed with the unpublished key 3 while claiming to be key 1.
        ("signature_invalid", stack.issuer.sign_with(KID_3, json!({ "kid": KID_1 }), &publisher)),
        ("token_expired", stack.issuer.token(json!({ "roles": ["Nats.Publisher"], "exp": now - 600, "nbf": now - 4000, "iat": now - 4000 }))),
        ("audience_mismatch", stack.issuer.token(json!({ "roles": ["Nats.Publisher"], "aud": "00000003-0000-0000-c000-000000000000" }))),
        ("tenant_not_allowed", stack.issuer.token(json!({ "roles": ["Nats.Publisher"], "iss": "https://login.microsoftonline.com/0f0e0d0c-0b0a-0908-0706-050403020100/v2.0", "tid": "0f0e0d0c-0b0a-0908-0706-050403020100" }))),
        ("no_matching_policy", stack.issuer.token(json!({ "roles": ["Nats.Admin"] }))),
    ];
    for (reason, token) in &cases {
        let result = if token.is_empty() {
            async_nats::connect(&url).await.map(|_| ())
        } else {
            connect(&url, token).await.map(|_| ())
        };
        let err = result.expect_err(reason);
        assert_eq!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{reason}"
        );
        let line = format!("Auth callout service returned an error: {reason}");
        assert!(
            stack.server.wait_for_log(&line).await,
            "{reason} not in server log:\n{}",
            stack.server.log()
        );
        // `explain` never checks a signature, so it can only agree on the reasons that the
        // claims alone decide; on those it must give the service's reason.
        if !["token_missing", "signature_invalid"].contains(reason) {
            assert_eq!(explained_reason(&stack.config_path, token), *reason);
        }
    }
    replica
        .wait_answered(Answered::new(0, cases.len() as u64))
        .await;
    replica.stop().await;
}

#[tokio::test]
async fn encrypted_requests_are_answered_with_sealed_responses() {
    let stack = Stack::start(true, "").await;
    let replica = stack.replica().await;
    let url = stack.server.url();
    let client = connect(&url, &stack.publisher_token())
        .await
        .expect("admitted over xkey");
    client
        .nats
        .publish(subject("metrics"), "loss=0.1".into())
        .await
        .unwrap();
    client.nats.flush().await.unwrap();
    assert!(refused(&url, &stack.reader_token().replace('.', "!")).await);
    replica.wait_answered(Answered::new(1, 1)).await;
    replica.stop().await;
}

#[tokio::test]
async fn two_replicas_share_the_queue_group_and_one_can_leave() {
    let stack = Stack::start(false, "").await;
    let first = stack.replica().await;
    let second = stack.replica().await;
    let url = stack.server.url();
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(
            connect(&url, &stack.reader_token())
                .await
                .expect("admitted"),
        );
    }
    // Each request answered exactly once.
    let counts = Replica::wait_admitted_by(&[&first, &second], 40).await;
    let (a, b) = (counts[0], counts[1]);
    assert!(
        a.allowed > 0 && b.allowed > 0,
        "both replicas answered: {a:?} {b:?}"
    );

    first.stop().await;
    for _ in 0..5 {
        connect(&url, &stack.reader_token())
            .await
            .expect("the remaining replica answers");
    }
    second.wait_answered(Answered::new(b.allowed + 5, 0)).await;
    second.stop().await;
}

#[tokio::test]
async fn tokens_larger_than_4_kib_work_with_a_raised_max_control_line() {
    // config_mode sets max_control_line: 32KB, as the README tells operators to.
    let stack = Stack::start(false, "").await;
    let replica = stack.replica().await;
    let groups: Vec<String> = (0..120)
        .map(|i| format!("{i:08}-0000-4000-8000-000000000000"))
        .collect();
    let token = stack
        .issuer
        .token(json!({ "roles": ["Nats.Publisher"], "groups": groups }));
    assert!(token.len() > 4096, "token is {} bytes", token.len());
    connect(&stack.server.url(), &token)
        .await
        .expect("large token admitted");
    replica.wait_answered(Answered::new(1, 0)).await;
    replica.stop().await;
}

#[tokio::test]
async fn the_binary_serves_and_drains_on_sigterm() {
    let stack = Stack::start(true, "").await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_entra-callout"))
        .args(["serve", "--config"])
        .arg(&stack.config_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its stderr is read as it comes, so the test can wait for the subscription to be in place:
    // a client connecting before that has its request sent to nobody.
    let log = Arc::new(Mutex::new(String::new()));
    let reader = std::thread::spawn({
        let (log, stderr) = (Arc::clone(&log), child.stderr.take().unwrap());
        move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    let logged = |what: &str| log.lock().unwrap().contains(what);
    for _ in 0..100 {
        if logged("answering authorization requests") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logged("answering authorization requests"),
        "the binary subscribed within 10 s: {}",
        log.lock().unwrap()
    );
    let url = stack.server.url();
    let token = stack.publisher_token();
    connect(&url, &token)
        .await
        .expect("the service binary admitted a client");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("entra-callout did not exit within 10 s of SIGTERM")
    });
    reader.join().unwrap();
    let stderr = log.lock().unwrap().clone();
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(stderr.contains("received SIGTERM"), "{stderr}");
    assert!(
        stderr.contains("client admitted"),
        "the audit event is logged: {stderr}"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(!stderr.contains(signature), "a token reached the log");
}

#[tokio::test]
async fn the_token_may_arrive_as_a_password_with_any_user_name() {
    let stack = Stack::start(false, "").await;
    let replica = stack.replica().await;
    let client = async_nats::ConnectOptions::with_user_and_password(
        "any-user".to_owned(),
        stack.publisher_token(),
    )
    .connect(stack.server.url())
    .await
    .expect("a token in the password field is accepted");
    client.publish(subject("x"), "ok".into()).await.unwrap();
    client.flush().await.unwrap();
    let wrong = async_nats::ConnectOptions::with_user_and_password(
        "any-user".to_owned(),
        "not-a-token".to_owned(),
    )
    .connect(stack.server.url())
    .await
    .expect_err("a password that is not a token is refused");
    assert_eq!(wrong.kind(), ConnectErrorKind::AuthorizationViolation);
    assert!(
        stack
            .server
            .wait_for_log("Auth callout service returned an error: token_malformed")
            .await
    );
    replica.wait_answered(Answered::new(1, 1)).await;
    replica.stop().await;
}
