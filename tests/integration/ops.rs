//! Operations end to end: readiness, metrics, overload, hot reload, audit events, NATS restarts
//! and a replicated service on a nats-server cluster.
//!
//! HTTP checks go through the real admin listener. Waits are bounded polls on observable state
//! (readiness, metric values, server logs), never fixed sleeps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::ConnectErrorKind;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use entra_callout::admin::NotReady;
use entra_callout::config::{Config, ProcessEnv};

use crate::support::binary::Binary;
use crate::support::issuer::{AUDIENCE, TENANT, TestIssuer};
use crate::support::nats::{NatsCluster, NatsServer, config_mode, free_port};
use crate::support::policies;
use crate::support::service::{Replica, answered_in};

/// The service's files: keys, policies and configuration, in a directory of their own.
struct ServiceFiles {
    dir: tempfile::TempDir,
    account: nkeys::KeyPair,
    config: PathBuf,
}

impl ServiceFiles {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            account: nkeys::KeyPair::new_account(),
            config: PathBuf::new(),
        }
    }

    /// nats-server's configuration for this service's issuer key.
    fn server_config(&self) -> String {
        config_mode(&self.account.public_key(), None, "")
    }

    fn policies(&self) -> PathBuf {
        self.dir.path().join("policies.yaml")
    }

    fn write_policies(&self, bindings: &[&str]) {
        let text = policies::ml(bindings);
        std::fs::write(self.policies(), text).unwrap();
    }

    /// Writes keys, policies (readers and publishers) and the configuration; `extra` is appended
    /// to the configuration and `callout_extra` to its `callout:` section.
    fn write(&mut self, url: &str, issuer: &TestIssuer, callout_extra: &str, extra: &str) {
        let dir = self.dir.path();
        std::fs::write(dir.join("issuer.nk"), self.account.seed().unwrap()).unwrap();
        std::fs::write(dir.join("nats-password"), "pwd").unwrap();
        self.write_policies(&[policies::ML_PUBLISHERS, policies::ML_READERS]);
        let config = format!(
            "nats:\n  url: {url}\n  user: auth\n  password_file: nats-password\n\
             callout:\n  issuer_seed_file: issuer.nk\n  max_ttl: 15m\n  drain_timeout: 5s\n\
             {callout_extra}\
             providers:\n  - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    \
             audiences: [\"{AUDIENCE}\"]\n    authority: {authority}\n\
             policies: policies.yaml\n{extra}",
            authority = issuer.authority(),
        );
        self.config = dir.join("entra-callout.yaml");
        std::fs::write(&self.config, config).unwrap();
    }

    /// Starts a replica connected to `url` (or the configured URL), through the service's own
    /// composition root, admin listener included. With `warm`, it is ready (keys loaded) when
    /// this returns; without, it may still be waiting for keys.
    async fn replica(&self, url: Option<&str>, warm: bool) -> Replica {
        let mut config = Config::load(&self.config, &ProcessEnv).expect("valid test config");
        if let Some(url) = url {
            config.nats.urls = vec![url.parse().unwrap()];
        }
        let allowed: &[NotReady] = if warm {
            &[]
        } else {
            &[NotReady::KeysNotLoaded]
        };
        Replica::start_allowing(config, allowed).await
    }
}

async fn get(replica: &Replica, path: &str) -> (u16, String) {
    http_get(&format!("{}{path}", replica.admin_url())).await
}

async fn metrics(replica: &Replica) -> String {
    get(replica, "/metrics").await.1
}

async fn http_get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// Polls `check` until it holds, for at most 20 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn connect(url: &str, token: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::with_token(token.to_owned())
        .connect(url)
        .await
}

fn publisher(issuer: &TestIssuer) -> String {
    issuer.token(json!({ "roles": ["Nats.Publisher"] }))
}

fn reader(issuer: &TestIssuer) -> String {
    issuer.token(json!({ "roles": ["Nats.Reader"] }))
}

/// The value of the series `series` (name and labels exactly as rendered), if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn readiness_follows_nats_and_the_subscription_survives_a_server_restart() {
    let issuer = TestIssuer::start().await;
    let mut files = ServiceFiles::new();
    let mut server = NatsServer::start(&files.server_config());
    files.write(&server.url(), &issuer, "", "");
    let replica = files.replica(None, true).await;

    eventually("ready", async || {
        get(&replica, "/readyz").await == (200, "ready\n".into())
    })
    .await;
    assert_eq!(get(&replica, "/livez").await, (200, "ok\n".to_owned()));
    connect(&server.url(), &publisher(&issuer))
        .await
        .expect("admitted before the restart");

    server.stop();
    eventually("not ready while NATS is down", async || {
        get(&replica, "/readyz").await == (503, "not ready: nats disconnected\n".into())
    })
    .await;
    assert_eq!(
        get(&replica, "/livez").await.0,
        200,
        "liveness ignores NATS"
    );

    server.restart();
    eventually("ready again after reconnecting", async || {
        get(&replica, "/readyz").await.0 == 200
    })
    .await;
    // The subscription is restored by the client: requests reach the replica again.
    let (url, token) = (server.url(), publisher(&issuer));
    eventually("a client admitted after the restart", async || {
        connect(&url, &token).await.is_ok()
    })
    .await;

    let text = metrics(&replica).await;
    let allowed = metric(
        &text,
        "entra_callout_requests_total{outcome=\"allow\",reason=\"\"}",
    );
    assert_eq!(allowed, Some(2.0), "{text}");
    replica.stop().await;
}

#[tokio::test]
async fn requests_beyond_the_bound_are_refused_as_overloaded_while_a_burst_waits() {
    let issuer = TestIssuer::start().await;
    let mut files = ServiceFiles::new();
    let server = NatsServer::start(&files.server_config());
    // The first request waits for a held-up key fetch while the test fills the queue: it may
    // wait for keys nearly as long as nats-server waits for it.
    let limits =
        "  max_concurrency: 1\n  max_queued: 1\n  queue_timeout: 10s\n  key_wait: 1900ms\n";
    files.write(&server.url(), &issuer, limits, "");
    // Keys are not loaded up front and the JWKS endpoint holds its answer, so the first
    // request stays in flight until the test lets it go.
    issuer.pause_jwks(true);
    let replica = files.replica(None, false).await;
    let url = server.url();

    let first = tokio::spawn(connect_owned(url.clone(), publisher(&issuer)));
    eventually("one request in flight", async || {
        metric(&metrics(&replica).await, "entra_callout_in_flight_requests") == Some(1.0)
    })
    .await;
    let second = tokio::spawn(connect_owned(url.clone(), reader(&issuer)));
    eventually("one request queued", async || {
        metric(&metrics(&replica).await, "entra_callout_queued_requests") == Some(1.0)
    })
    .await;

    // Slot and queue are full: the third client is refused at once, with the reason.
    let err = connect(&url, &publisher(&issuer))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation);
    assert!(
        server
            .wait_for_log("Auth callout service returned an error: overloaded")
            .await,
        "{}",
        server.log()
    );

    issuer.pause_jwks(false);
    first
        .await
        .unwrap()
        .expect("the request in flight is admitted");
    second
        .await
        .unwrap()
        .expect("the queued request is admitted");

    let text = metrics(&replica).await;
    for (series, value) in [
        (
            "entra_callout_requests_total{outcome=\"allow\",reason=\"\"}",
            2.0,
        ),
        (
            "entra_callout_requests_total{outcome=\"deny\",reason=\"overloaded\"}",
            1.0,
        ),
        ("entra_callout_in_flight_requests", 0.0),
        ("entra_callout_queued_requests", 0.0),
        ("entra_callout_decision_duration_seconds_count", 3.0),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series} in:\n{text}");
    }
    replica.stop().await;
}

async fn connect_owned(url: String, token: String) -> Result<(), async_nats::ConnectError> {
    connect(&url, &token).await.map(|_| ())
}

#[tokio::test]
async fn the_binary_serves_health_and_metrics_publishes_audit_events_and_reloads_policies() {
    let issuer = TestIssuer::start().await;
    let mut files = ServiceFiles::new();
    let server = NatsServer::start(&files.server_config());
    let admin = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "admin:\n  listen: {admin}\naudit:\n  subject: entra-callout.audit\n\
         policy_reload:\n  debounce: 100ms\nlog:\n  format: json\n"
    );
    files.write(&server.url(), &issuer, "", &extra);
    // The audit trail, read as the service's own user in the callout account.
    let auditor = async_nats::ConnectOptions::with_user_and_password("auth".into(), "pwd".into())
        .connect(server.url())
        .await
        .unwrap();
    let mut audit = auditor.subscribe("entra-callout.audit").await.unwrap();
    auditor.flush().await.unwrap();
    let mut next_event = async || -> Value {
        let message = tokio::time::timeout(Duration::from_secs(5), audit.next())
            .await
            .expect("an audit event within 5 s")
            .unwrap();
        serde_json::from_slice(&message.payload).unwrap()
    };

    let binary = Binary::start(&files.config, &admin);
    let base = format!("http://{admin}");
    let get = async |path: &str| http_get(&format!("{base}{path}")).await;
    eventually("the binary is ready", async || {
        get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(get("/livez").await, (200, "ok\n".to_owned()));

    let url = server.url();
    let reader_token = reader(&issuer);
    connect(&url, &reader_token).await.expect("reader admitted");
    let event = next_event().await;
    assert_eq!(event["outcome"], "allow");
    assert_eq!(event["rules"], json!(["ml-readers"]));
    assert_eq!(event["account"], "APP");
    assert_eq!(event["tenant"], TENANT);
    assert_eq!(event["provider"], "contoso");
    assert_eq!(event["kind"], "user");
    assert_eq!(
        event["subscribe"],
        json!([format!("ml.{TENANT}.>"), "_INBOX.>"])
    );
    assert!(event["publish"].is_null(), "{event}");
    assert!(event["expires_at"].as_u64().unwrap() > event["time"].as_u64().unwrap());
    assert!(!event["request_id"].as_str().unwrap().is_empty());
    assert_eq!(event["token"].as_str().unwrap().len(), 16);
    let signature = reader_token.rsplit('.').next().unwrap();
    assert!(
        !event.to_string().contains(signature),
        "the token reached the audit event"
    );

    // Dropping the readers' rule from the file takes effect without a restart.
    files.write_policies(&[policies::ML_PUBLISHERS]);
    eventually("a successful reload", async || {
        metric(
            &get("/metrics").await.1,
            "entra_callout_policy_reloads_total{result=\"ok\"}",
        ) == Some(1.0)
    })
    .await;
    let err = connect(&url, &reader(&issuer))
        .await
        .expect_err("reader refused");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation);
    let event = next_event().await;
    assert_eq!(event["outcome"], "deny");
    assert_eq!(event["reason"], "no_matching_policy");

    // A broken file is rejected and the policies in use stay.
    std::fs::write(
        files.policies(),
        "version: 1\ntenants:\n  - name: x\n    acount: APP\n",
    )
    .unwrap();
    eventually("a rejected reload", async || {
        metric(
            &get("/metrics").await.1,
            "entra_callout_policy_reloads_total{result=\"error\"}",
        ) == Some(1.0)
    })
    .await;
    connect(&url, &publisher(&issuer))
        .await
        .expect("the previous policies still admit publishers");
    let err = connect(&url, &reader(&issuer))
        .await
        .expect_err("reader still refused");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation);

    // SIGHUP reloads too (the file is still broken).
    binary.signal("HUP");
    eventually("a second rejected reload", async || {
        metric(
            &get("/metrics").await.1,
            "entra_callout_policy_reloads_total{result=\"error\"}",
        ) == Some(2.0)
    })
    .await;

    let text = get("/metrics").await.1;
    for (series, value) in [
        (
            "entra_callout_requests_total{outcome=\"allow\",reason=\"\"}",
            2.0,
        ),
        (
            "entra_callout_requests_total{outcome=\"deny\",reason=\"no_matching_policy\"}",
            2.0,
        ),
        ("entra_callout_policy_rules", 1.0),
        ("entra_callout_decision_duration_seconds_count", 4.0),
        ("entra_callout_audit_publish_failures_total", 0.0),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series} in:\n{text}");
    }
    let refreshes = metric(
        &text,
        "entra_callout_key_refreshes_total{provider=\"contoso\",result=\"ok\"}",
    );
    assert!(refreshes >= Some(1.0), "{text}");

    let (status, stderr) = binary.terminate().await;
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("policy reload rejected") && stderr.contains("policies.yaml:4:5"),
        "every reload problem is logged with its position:\n{stderr}"
    );
    assert!(
        stderr.contains("all in-flight requests answered"),
        "{stderr}"
    );
    let audit_line = stderr
        .lines()
        .find(|line| line.contains("client admitted"))
        .expect("an audit log line");
    let logged: Value = serde_json::from_str(audit_line).expect("json log lines");
    assert_eq!(logged["target"], "audit");
    // Lists are JSON arrays in the JSON log, as in the published event.
    assert_eq!(logged["rules"], json!(["ml-readers"]));
    assert_eq!(
        logged["subscribe"],
        json!([format!("ml.{TENANT}.>"), "_INBOX.>"])
    );
}

#[tokio::test]
async fn replicas_on_a_cluster_answer_every_node_and_one_can_leave() {
    const CLIENTS_PER_NODE: usize = 4;
    const CONNECTS_PER_CLIENT: usize = 10;
    let issuer = TestIssuer::start().await;
    let mut files = ServiceFiles::new();
    let base = files.server_config();
    // A generous callout timeout, so only a lost request fails a connect, not a slow machine.
    let base = base.replace("timeout: 2", "timeout: 10");
    let cluster = NatsCluster::start(3, |i| {
        base.replace(
            "server_name: callout-test",
            &format!("server_name: node-{i}"),
        )
    });
    let urls: Vec<String> = cluster.nodes.iter().map(NatsServer::url).collect();
    files.write(&urls.join(","), &issuer, "", "");
    let first = files.replica(Some(&urls[0]), true).await;
    let second = files.replica(Some(&urls[1]), true).await;
    let token = reader(&issuer);

    // Routes and queue interest propagate asynchronously; wait until every node routes.
    let mut warm_up = 0;
    for url in &urls {
        eventually("the cluster routes requests", async || {
            let admitted = connect(url, &token).await.is_ok();
            warm_up += u64::from(admitted);
            admitted
        })
        .await;
    }

    for url in &urls {
        for _ in 0..5 {
            connect(url, &token)
                .await
                .expect("admitted through every node");
        }
    }
    // Each request answered once.
    let counts = Replica::wait_admitted_by(&[&first, &second], warm_up + 15).await;
    let (a, b) = (counts[0], counts[1]);
    assert!(
        a.allowed > 0 && b.allowed > 0,
        "both replicas answer: {a:?} {b:?}"
    );

    // Clients keep connecting through every node while the first replica stops. Like real
    // clients, each retries a refused connect once. NATS delivers at most once: a request a
    // server routes to the leaving replica just as it unsubscribes is lost, so each client
    // may lose the one request it has in flight, but no more, and its retry must succeed.
    let before = warm_up + 15;
    let clients: Vec<JoinHandle<u64>> = urls
        .iter()
        .cycle()
        .take(urls.len() * CLIENTS_PER_NODE)
        .map(|url| {
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move {
                let mut lost = 0;
                for _ in 0..CONNECTS_PER_CLIENT {
                    if connect(&url, &token).await.is_err() {
                        lost += 1;
                        connect(&url, &token).await.expect("admitted on retry");
                    }
                }
                lost
            })
        })
        .collect();
    eventually("clients connecting", async || {
        first.answered().allowed + second.answered().allowed >= before + 12
    })
    .await;
    // The leaving replica's metrics stay readable after it stopped.
    let leaving = Arc::clone(&first.ops().metrics);
    first.stop().await;
    let mut lost = Vec::new();
    for client in clients {
        lost.push(client.await.unwrap());
    }
    assert!(
        lost.iter().all(|l| *l <= 1),
        "a client lost more than one request: {lost:?}"
    );
    // No request was answered twice, and at most one per client — the one it had in flight as
    // the replica left — went unanswered. (A lost request does not always show as a failed
    // connect: async-nats takes any first server message for success.) An answer is counted
    // just after it is sent, so the count is waited for.
    let connects = (urls.len() * CLIENTS_PER_NODE * CONNECTS_PER_CLIENT) as u64;
    let retries: u64 = lost.iter().sum();
    let in_flight_bound = lost.len() as u64;
    let answered = || answered_in(&leaving.render()).allowed + second.answered().allowed - before;
    eventually("every answer counted", async || {
        answered() + in_flight_bound >= connects
    })
    .await;
    let answered = answered();
    assert!(
        answered <= connects + retries && answered + in_flight_bound >= connects,
        "{answered} answers for {connects} connects and {retries} retries"
    );

    // Afterwards the remaining replica answers every node alone.
    let remaining = second.settled().await.allowed;
    for url in &urls {
        connect(url, &token)
            .await
            .expect("admitted by the remaining replica");
    }
    Replica::wait_admitted_by(&[&second], remaining + 3).await;
    second.stop().await;
}
