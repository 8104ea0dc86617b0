//! The two scenarios of `examples/` against `entra-callout dev`'s environment: the real binary
//! serving the example policies, a real nats-server, tokens from the dev issuer. The example
//! logic (`examples/*/scenario.rs`, `examples/common`) runs in-process, and every
//! cross-tenant, cross-project and cross-role attempt must be refused.

use std::time::Duration;

use futures_util::StreamExt;

use entra_callout::dev::token::{self, Randomness, TokenRequest};
use entra_callout::dev::{DevOptions, Environment};

use crate::support::nats::server_bin;

#[path = "../../examples/common/mod.rs"]
mod common;
#[path = "../../examples/delivery/scenario.rs"]
mod delivery;
#[path = "../../examples/ml-events/scenario.rs"]
mod ml;

use common::{Connection, TokenSource};

const ANALYSTS: &str = "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43";
const BUILD_AGENT: &str = "8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92";
const DEPLOY_TRIGGER: &str = "2c7d9e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f";

async fn start() -> Environment {
    let options = DevOptions {
        exe: env!("CARGO_BIN_EXE_entra-callout").into(),
        nats_server: server_bin(),
        nats_port: 0,
        websocket_port: 0,
        monitor_port: 0,
        issuer_port: 0,
        admin_port: 0,
        policies: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/policies").into()),
        quiet: true,
        xkey: true,
    };
    Environment::start(&options)
        .await
        .expect("dev environment starts")
}

/// Fresh tokens for one made-up identity, as `entra-callout dev token` prints them.
fn tokens(request: TokenRequest) -> TokenSource {
    TokenSource::new(move || {
        let token = token::mint(
            &request,
            entra_callout::telemetry::unix_now(),
            Randomness::from_os().unwrap(),
        )
        .map_err(|e| e.to_string());
        Box::pin(std::future::ready(token))
    })
}

fn identity(tenant: &str) -> TokenRequest {
    TokenRequest {
        tenant: tenant.into(),
        ttl_secs: 3600,
        ..TokenRequest::default()
    }
}

fn app_role(tenant: &str, role: &str) -> TokenRequest {
    TokenRequest {
        roles: vec![role.into()],
        ..identity(tenant)
    }
}

fn app(oid: &str) -> TokenRequest {
    TokenRequest {
        app: Some(oid.into()),
        ..identity("contoso")
    }
}

fn analyst() -> TokenRequest {
    TokenRequest {
        groups: vec![ANALYSTS.into()],
        ..identity("contoso")
    }
}

async fn connect(env: &Environment, name: &str, request: TokenRequest) -> Connection {
    try_connect(env, name, request)
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}\n{}", env.server_log()))
}

async fn try_connect(
    env: &Environment,
    name: &str,
    request: TokenRequest,
) -> Result<Connection, async_nats::ConnectError> {
    let source = tokens(request);
    let token = source.fetch().await.unwrap();
    let inbox = common::claim(&token, "oid").map(|oid| format!("_INBOX.{oid}"));
    common::connect(&env.nats_url(), name, &source, inbox).await
}

/// Asserts the connection is refused by the callout.
async fn assert_refused(env: &Environment, who: &str, request: TokenRequest) {
    match try_connect(env, who, request).await {
        Ok(_) => panic!("{who} must be refused"),
        Err(err) => assert!(
            err.to_string()
                .to_lowercase()
                .contains("authorization violation"),
            "{who}: {err}"
        ),
    }
}

async fn next_error(connection: &mut Connection) -> String {
    tokio::time::timeout(Duration::from_secs(5), connection.errors.recv())
        .await
        .expect("a server error within 5 s")
        .expect("error channel open")
}

/// Waits (bounded) until the server sends `connection` the error `want`, passing over others.
async fn refused_with(connection: &mut Connection, who: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while !seen.iter().any(|e| e == want) {
        let err = tokio::time::timeout_at(deadline, connection.errors.recv())
            .await
            .unwrap_or_else(|_| panic!("{who}: no {want:?} within 5 s; got {seen:?}"))
            .expect("error channel open");
        seen.push(err);
    }
}

/// Publishing `subject` is refused by the server.
async fn assert_publish_denied(connection: &mut Connection, who: &str, subject: &str) {
    delivery::publish_raw(&connection.client, subject, b"{}".to_vec())
        .await
        .unwrap();
    let err = next_error(connection).await;
    assert!(
        err.contains("permissions violation for publish") && err.contains(&subject.to_lowercase()),
        "{who} -> {subject}: {err}"
    );
}

/// Subscribing to `subject` is refused by the server.
async fn assert_subscribe_denied(connection: &mut Connection, who: &str, subject: &str) {
    let _sub = connection
        .client
        .subscribe(subject.to_owned())
        .await
        .unwrap();
    connection.client.flush().await.unwrap();
    let err = next_error(connection).await;
    assert!(
        err.contains("permissions violation for subscription")
            && err.contains(&subject.to_lowercase()),
        "{who} <- {subject}: {err}"
    );
}

async fn receive(sub: &mut async_nats::Subscriber, what: &str) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what} within 5 s"))
        .expect("subscription open")
}

fn output(input: &str, score: f64) -> ml::ModelOutput {
    ml::ModelOutput {
        model: "resnet50".into(),
        version: "2024-06-01".into(),
        input_id: input.into(),
        label: "cat".into(),
        score,
    }
}

#[tokio::test]
async fn ml_events_flow_within_the_project_and_nothing_crosses_tenants() {
    let env = start().await;
    let dashboard = connect(&env, "dashboard", analyst()).await;
    let (mut outputs, mut metrics) = ml::watch(&dashboard.client, ml::PREFIX).await.unwrap();
    let triggers = [
        connect(&env, "trigger-1", app_role("contoso", "Ml.Vision.Trigger")).await,
        connect(&env, "trigger-2", app_role("contoso", "Ml.Vision.Trigger")).await,
    ];
    let mut feeds = Vec::new();
    for trigger in &triggers {
        feeds.push(ml::trigger_feed(&trigger.client, ml::PREFIX).await.unwrap());
    }
    let mut producer = connect(&env, "producer", app_role("contoso", "Ml.Vision.Producer")).await;

    // The job publishes; the dashboard sees outputs and metrics; one trigger acts on it.
    let sent = output("img-1", 0.93);
    ml::publish_output(&producer.client, ml::PREFIX, &sent)
        .await
        .unwrap();
    let metric = ml::Metric {
        job: "job-17".into(),
        name: "loss".into(),
        step: 1,
        value: 0.25,
    };
    ml::publish_metric(&producer.client, ml::PREFIX, &metric)
        .await
        .unwrap();
    let seen = receive(&mut outputs, "the dashboard's output").await;
    assert_eq!(
        serde_json::from_slice::<ml::ModelOutput>(&seen.payload).unwrap(),
        sent
    );
    let seen = receive(&mut metrics, "the dashboard's metric").await;
    assert_eq!(
        serde_json::from_slice::<ml::Metric>(&seen.payload).unwrap(),
        metric
    );
    let [feed_1, feed_2] = &mut feeds[..] else {
        unreachable!()
    };
    let acted = tokio::select! {
        Some(m) = feed_1.next() => m,
        Some(m) = feed_2.next() => m,
        () = tokio::time::sleep(Duration::from_secs(5)) => panic!("no trigger got the output"),
    };
    assert!(
        ml::decide(&acted.payload, 0.8)
            .unwrap()
            .unwrap()
            .contains("img-1")
    );

    // The job stays in its project and tenant; it reads nothing.
    for subject in [
        "fabrikam.vision.ml.outputs.resnet50",
        "contoso.forecast.ml.outputs.arima",
        "contoso.web.deploy.image-ready.v1.x",
        "$SYS.REQ.USER.INFO",
    ] {
        assert_publish_denied(&mut producer, "producer", subject).await;
    }
    assert_subscribe_denied(&mut producer, "producer", "contoso.vision.ml.outputs.>").await;

    // The dashboard reads only its project, not internal metrics, and cannot publish outputs.
    let mut dashboard = dashboard;
    assert_subscribe_denied(&mut dashboard, "dashboard", "fabrikam.vision.ml.outputs.>").await;
    assert_subscribe_denied(
        &mut dashboard,
        "dashboard",
        "contoso.vision.ml.metrics.internal.gpu",
    )
    .await;
    assert_subscribe_denied(&mut dashboard, "dashboard", "_INBOX.>").await;
    assert_publish_denied(
        &mut dashboard,
        "dashboard",
        "contoso.vision.ml.outputs.resnet50",
    )
    .await;

    // Fabrikam's job uses the same role in its own namespace, invisible to Contoso.
    let mut fabrikam = connect(&env, "fabrikam", app_role("fabrikam", "Ml.Vision.Producer")).await;
    ml::publish_output(&fabrikam.client, "fabrikam.vision", &output("f-1", 0.99))
        .await
        .unwrap();
    assert_publish_denied(
        &mut fabrikam,
        "fabrikam",
        "contoso.vision.ml.outputs.resnet50",
    )
    .await;
    ml::publish_output(&producer.client, ml::PREFIX, &output("img-2", 0.5))
        .await
        .unwrap();
    let next = receive(&mut outputs, "the next contoso output").await;
    assert_eq!(
        serde_json::from_slice::<ml::ModelOutput>(&next.payload)
            .unwrap()
            .input_id,
        "img-2",
        "fabrikam's output must not reach contoso's dashboard"
    );

    // Identities the policies do not admit are refused at connect.
    let user_with_role = TokenRequest {
        roles: vec!["Ml.Vision.Producer".into()],
        user: Some(token::DEV_USER_OID.into()),
        ..identity("contoso")
    };
    assert_refused(&env, "a user holding the producer role", user_with_role).await;
    let guest = TokenRequest {
        guest: true,
        ..analyst()
    };
    assert_refused(&env, "a guest analyst", guest).await;
    assert_refused(
        &env,
        "a fabrikam analyst",
        TokenRequest {
            tenant: "fabrikam".into(),
            ..analyst()
        },
    )
    .await;
    assert_refused(
        &env,
        "an unconfigured tenant",
        app_role("9188040d-6c67-4c5b-b112-36a304b66dad", "Ml.Vision.Producer"),
    )
    .await;
    env.stop();
}

#[tokio::test]
async fn a_late_dashboard_replays_the_stored_outputs_and_no_other_project_can() {
    let env = start().await;
    let producer = connect(&env, "producer", app_role("contoso", "Ml.Vision.Producer")).await;
    // The job has no JetStream grant: it publishes plainly, and the stream, whose subjects
    // capture the outputs, stores them.
    let sent: Vec<ml::ModelOutput> = [("img-1", 0.93), ("img-2", 0.41), ("img-3", 0.88)]
        .into_iter()
        .map(|(input, score)| output(input, score))
        .collect();
    for o in &sent {
        ml::publish_output(&producer.client, ml::PREFIX, o)
            .await
            .unwrap();
    }

    // A dashboard connects after the job published; once the stream holds the outputs, it
    // replays exactly those, in order.
    let dashboard = connect(&env, "late dashboard", analyst()).await;
    let js = async_nats::jetstream::new(dashboard.client.clone());
    let mut stream = js
        .get_stream(ml::outputs_stream(ml::PREFIX))
        .await
        .unwrap_or_else(|e| panic!("stream info: {e}\n{}", env.server_log()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = stream.info().await.unwrap().state.messages;
        if stored == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream holds {stored} of 3 outputs after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let consumer = ml::replay_consumer(&js, ml::PREFIX, "late-dashboard")
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", env.server_log()));
    let replayed = ml::replay(&consumer, Duration::from_secs(10))
        .await
        .unwrap();
    let got: Vec<(String, ml::ModelOutput)> = replayed
        .iter()
        .map(|m| {
            (
                m.subject.to_string(),
                serde_json::from_slice(&m.payload).unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, ml::ModelOutput)> = sent
        .iter()
        .map(|o| (ml::output_subject(ml::PREFIX, &o.model), o.clone()))
        .collect();
    assert_eq!(got, want);

    // Then it keeps reading new outputs through the same consumer.
    let live = output("img-4", 0.97);
    ml::publish_output(&producer.client, ml::PREFIX, &live)
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("the live output within 10 s")
        .expect("consumer open")
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<ml::ModelOutput>(&next.payload).unwrap(),
        live
    );

    // Fabrikam's job (same project name, other tenant), Contoso's forecast job (other
    // project) and the vision job itself (no consume grant) cannot create a consumer on the
    // stream: the server refuses the create request, which then goes unanswered.
    for (who, request) in [
        (
            "fabrikam's vision job",
            app_role("fabrikam", "Ml.Vision.Producer"),
        ),
        (
            "contoso's forecast job",
            app_role("contoso", "Ml.Forecast.Producer"),
        ),
        (
            "contoso's vision job",
            app_role("contoso", "Ml.Vision.Producer"),
        ),
    ] {
        let mut other = connect(&env, who, request).await;
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(1))
            .build(other.client.clone());
        let err = ml::replay_consumer(&js, ml::PREFIX, "intruder")
            .await
            .expect_err(who);
        let kind = err
            .downcast_ref::<async_nats::jetstream::stream::ConsumerError>()
            .map(async_nats::jetstream::stream::ConsumerError::kind);
        assert_eq!(
            kind,
            Some(async_nats::jetstream::stream::ConsumerErrorKind::TimedOut),
            "{who}: {err:#}"
        );
        // (Its reply inbox is refused too, first: these jobs subscribe to nothing.)
        refused_with(
            &mut other,
            who,
            "permissions violation for publish to \"$js.api.consumer.create.contoso_vision_outputs.intruder.contoso.vision.ml.outputs.>\"",
        )
        .await;
    }
    env.stop();
}

/// The deploy trigger of examples/delivery, in-process: its durable consumer served as the
/// example binary serves it, every triggered release sent to the returned channel.
async fn start_deploy_trigger(
    env: &Environment,
) -> (
    Connection,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    tokio::sync::mpsc::UnboundedReceiver<delivery::Release>,
) {
    let trigger = connect(env, "deploy-trigger", app(DEPLOY_TRIGGER)).await;
    let js = async_nats::jetstream::new(trigger.client.clone());
    let consumer = delivery::deployer(&js, delivery::PREFIX)
        .await
        .unwrap_or_else(|e| panic!("the durable consumer: {e:#}\n{}", env.server_log()));
    let (tx, triggered) = tokio::sync::mpsc::unbounded_channel();
    let serving = tokio::spawn(async move {
        delivery::serve(
            consumer,
            delivery::PREFIX,
            move |release| {
                let tx = tx.clone();
                async move {
                    tx.send(release)?;
                    Ok(())
                }
            },
            |_, _| {},
        )
        .await
    });
    (trigger, serving, triggered)
}

/// The next release the trigger started.
async fn triggered(
    releases: &mut tokio::sync::mpsc::UnboundedReceiver<delivery::Release>,
) -> delivery::Release {
    tokio::time::timeout(Duration::from_secs(10), releases.recv())
        .await
        .expect("a release triggered within 10 s")
        .expect("the trigger is serving")
}

/// No release is started for a while.
async fn none_triggered(releases: &mut tokio::sync::mpsc::UnboundedReceiver<delivery::Release>) {
    if let Ok(release) = tokio::time::timeout(Duration::from_secs(2), releases.recv()).await {
        panic!("no release expected, got {release:?}");
    }
}

/// The durable consumer's state: (pending, awaiting an ack).
async fn deployer_backlog(env: &Environment) -> (u64, usize) {
    let info = deployer_info(env).await;
    (info.num_pending, info.num_ack_pending)
}

async fn deployer_info(env: &Environment) -> async_nats::jetstream::consumer::Info {
    let ops = connect(env, "deploy-trigger-info", app(DEPLOY_TRIGGER)).await;
    let js = async_nats::jetstream::new(ops.client.clone());
    let mut consumer = delivery::deployer(&js, delivery::PREFIX).await.unwrap();
    consumer.info().await.unwrap().clone()
}

/// Waits until the durable consumer holds no pull request of a stopped trigger. Until
/// nats-server has seen the trigger's inbox go, it may hand the next event to that dead
/// inbox, and the event comes back only after the ack wait (30 s): what a crashed
/// trigger costs in production, but not what this test is about.
async fn deployer_without_waiting_pulls(env: &Environment) {
    let mut waiting = 0;
    for _ in 0..200 {
        waiting = deployer_info(env).await.num_waiting;
        if waiting == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stopped trigger's {waiting} pull requests are still waiting after 10 s");
}

#[tokio::test]
async fn only_the_build_agent_publishes_releases_and_every_event_names_its_sender() {
    let env = start().await;
    let (trigger, serving, mut releases) = start_deploy_trigger(&env).await;
    let mut agent = connect(&env, "build-agent", app(BUILD_AGENT)).await;
    let js = async_nats::jetstream::new(agent.client.clone());
    let publish = async |event: &delivery::ImageReady| {
        delivery::publish_durable(&js, delivery::PREFIX, BUILD_AGENT, event)
            .await
            .unwrap()
            .await
            .unwrap_or_else(|e| panic!("the stream acknowledges: {e}\n{}", env.server_log()))
    };

    // Published into the stream (de-duplicated by the digest): the release is triggered once.
    let event = delivery::example_event("1.4.2");
    let ack = publish(&event).await;
    assert_eq!(ack.stream, "contoso_web_image-ready");
    assert!(!ack.duplicate);
    let release = triggered(&mut releases).await;
    assert_eq!(release.sender, BUILD_AGENT);
    assert_eq!(
        release.reference,
        format!("{}@{}", event.image, event.digest)
    );

    // The same digest again (a retried build step): a duplicate, nothing triggered.
    let again = publish(&event).await;
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.sequence, ack.sequence);
    none_triggered(&mut releases).await;

    // A payload that fails validation reaches the trigger but starts nothing; it is
    // terminated, so nothing stays pending.
    let mut bad = event.clone();
    bad.digest = "sha256:latest".into();
    assert!(!publish(&bad).await.duplicate);
    none_triggered(&mut releases).await;
    assert_eq!(deployer_backlog(&env).await, (0, 0));

    // The trigger stops; an image is built meanwhile; the restarted trigger resumes with it
    // (and only it: the first one was acknowledged).
    serving.abort();
    let _ = serving.await;
    trigger.client.drain().await.unwrap();
    drop(releases);
    deployer_without_waiting_pulls(&env).await;
    let mut next = delivery::example_event("1.4.3");
    next.digest = format!("sha256:{}", "5a".repeat(32));
    assert!(!publish(&next).await.duplicate);
    let (trigger, serving, mut releases) = start_deploy_trigger(&env).await;
    let release = triggered(&mut releases).await;
    assert_eq!(
        (release.reference, release.tag.as_str()),
        (format!("{}@{}", next.image, next.digest), "1.4.3")
    );
    none_triggered(&mut releases).await;
    assert_eq!(deployer_backlog(&env).await, (0, 0));
    serving.abort();

    // The agent publishes only v1 and only in its own name, and reads nothing.
    for subject in [
        delivery::subject(delivery::PREFIX, DEPLOY_TRIGGER),
        format!("{}.deploy.image-ready.v2.{BUILD_AGENT}", delivery::PREFIX),
        format!("fabrikam.web.deploy.image-ready.v1.{BUILD_AGENT}"),
    ] {
        assert_publish_denied(&mut agent, "build agent", &subject).await;
    }
    assert_subscribe_denied(&mut agent, "build agent", "contoso.web.deploy.>").await;

    // The trigger cannot publish releases, in its own name or the agent's.
    let mut trigger = trigger;
    for sender in [DEPLOY_TRIGGER, BUILD_AGENT] {
        let subject = delivery::subject(delivery::PREFIX, sender);
        assert_publish_denied(&mut trigger, "deploy trigger", &subject).await;
    }
    // ... nor subscribe to the events at all: it reads them only through its durable consumer,
    // not even in the queue group an earlier policy granted.
    let events = "contoso.web.deploy.image-ready.v1.*";
    assert_subscribe_denied(&mut trigger, "deploy trigger", events).await;
    let _queued = trigger
        .client
        .queue_subscribe(events, "deployer-web".to_owned())
        .await
        .unwrap();
    trigger.client.flush().await.unwrap();
    let err = next_error(&mut trigger).await;
    assert_eq!(
        err,
        format!(
            "permissions violation for subscription to \"{events}\" using queue \"deployer-web\""
        ),
        "deploy trigger <- {events} deployer-web"
    );

    // Other principals are refused: another service principal, a user carrying the agent's
    // object id, and the agent's object id in another tenant.
    assert_refused(
        &env,
        "another service principal",
        app_role("contoso", "Deploy.Publisher"),
    )
    .await;
    let user = TokenRequest {
        user: Some(BUILD_AGENT.into()),
        ..identity("contoso")
    };
    assert_refused(&env, "a user with the agent's object id", user).await;
    let elsewhere = TokenRequest {
        tenant: "fabrikam".into(),
        ..app(BUILD_AGENT)
    };
    assert_refused(&env, "the agent's object id in fabrikam", elsewhere).await;
    env.stop();
}

#[tokio::test]
async fn a_client_reconnects_with_a_fresh_token_when_its_credentials_expire() {
    let env = start().await;
    let dashboard = connect(&env, "dashboard", analyst()).await;
    let (mut outputs, _metrics) = ml::watch(&dashboard.client, ml::PREFIX).await.unwrap();
    // Tokens that live 3 s: nats-server disconnects the client when the minted credentials
    // expire, and the client reconnects with a new token from its source.
    let source = tokens(TokenRequest {
        ttl_secs: 3,
        ..app_role("contoso", "Ml.Vision.Producer")
    });
    let producer = common::connect(&env.nats_url(), "short-lived", &source, None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while source.fetches() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect with a fresh token within 30 s ({} fetches)",
            source.fetches()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still publishing, on credentials minted from a later token.
    ml::publish_output(&producer.client, ml::PREFIX, &output("after-refresh", 0.9))
        .await
        .unwrap();
    let seen = receive(&mut outputs, "an output after the refresh").await;
    assert_eq!(
        serde_json::from_slice::<ml::ModelOutput>(&seen.payload)
            .unwrap()
            .input_id,
        "after-refresh"
    );
    env.stop();
}
