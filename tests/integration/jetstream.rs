//! JetStream grants against a real JetStream-enabled nats-server (config mode), driven through
//! async-nats' own JetStream API: each grant works with exactly the subjects the policy
//! compiler emits, and a tenant sharing the account with another can reach none of the other's
//! streams, consumers or buckets. The README's JetStream subject table is what these prove.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{Event, HeaderMap, ServerError};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::issuer::{AUDIENCE, OTHER_TENANT, TENANT, TestIssuer};
use crate::support::nats::{NatsServer, config_mode_jetstream};
use crate::support::service::{Replica, write_two_tenant_config};

/// Two tenants in one account, the same project name, the same role.
const POLICY: &str = r#"
version: 1
tenants:
  - { name: contoso, entra_tenants: [CONTOSO_TID], account: APP, projects: [{ name: web }] }
  - { name: fabrikam, entra_tenants: [FABRIKAM_TID], account: APP, projects: [{ name: web }] }
roles:
  - name: deployer
    jetstream:
      streams:
        - name: image-ready
          subjects: ["deploy.image-ready.>"]
          read: true
          publish: true
          consume: { durable: [deployer], filter: ["deploy.image-ready.v1.>"] }
        - name: outputs
          subjects: ["ml.outputs.>"]
          consume: { ephemeral: true }
      kv:
        - { bucket: config, get: true, put: true, delete: true, watch: true }
bindings:
  - { name: contoso-deployers, tenant: contoso, project: web, roles: [deployer], when: { app_roles: [Deployer] } }
  - { name: fabrikam-deployers, tenant: fabrikam, project: web, roles: [deployer], when: { app_roles: [Deployer] } }
"#;

/// One tenant with an account of its own, whose admin may create its streams and buckets.
const MANAGE_POLICY: &str = r#"
version: 1
tenants:
  - { name: contoso, entra_tenants: [CONTOSO_TID], account: OTHER, projects: [{ name: web }] }
roles:
  - name: admin
    jetstream:
      streams: [{ name: image-ready, subjects: ["deploy.image-ready.>"], manage: true }]
      kv: [{ bucket: config, manage: true }]
bindings:
  - { name: contoso-admins, tenant: contoso, project: web, roles: [admin], when: { app_roles: [Admin] } }
"#;

const CONTOSO_STREAM: &str = "contoso_web_image-ready";
const FABRIKAM_STREAM: &str = "fabrikam_web_image-ready";
const CONTOSO_OID: &str = "3d1c0b2a-0000-4000-8000-00000000c0c0";
const FABRIKAM_OID: &str = "7e6f5a4b-0000-4000-8000-00000000fafa";

struct Stack {
    contoso: TestIssuer,
    fabrikam: TestIssuer,
    server: NatsServer,
    replica: Replica,
    _store: tempfile::TempDir,
}

impl Stack {
    async fn start(policy: &str) -> Self {
        let contoso = TestIssuer::start_for(TENANT).await;
        let fabrikam = TestIssuer::start_for(OTHER_TENANT).await;
        let account = nkeys::KeyPair::new_account();
        let store = tempfile::tempdir().unwrap();
        let server = NatsServer::start(&config_mode_jetstream(&account.public_key(), store.path()));
        let policy = policy
            .replace("CONTOSO_TID", TENANT)
            .replace("FABRIKAM_TID", OTHER_TENANT);
        let config_path = write_two_tenant_config(
            server.dir(),
            &server.url(),
            &account,
            &policy,
            &contoso,
            &fabrikam,
        );
        let replica = Replica::start(&config_path).await;
        Self {
            contoso,
            fabrikam,
            server,
            replica,
            _store: store,
        }
    }

    /// The operator's connection (user `ops` in `APP`, past the callout).
    async fn ops(&self) -> jetstream::Context {
        let client = async_nats::ConnectOptions::with_user_and_password("ops".into(), "ops".into())
            .connect(self.server.url())
            .await
            .expect("ops connects");
        jetstream::new(client)
    }

    /// Creates both tenants' streams and buckets out of band, as the README says an operator
    /// does for tenants that share an account.
    async fn create_out_of_band(&self) {
        let ops = self.ops().await;
        for tenant in ["contoso", "fabrikam"] {
            ops.create_stream(stream::Config {
                name: format!("{tenant}_web_image-ready"),
                subjects: vec![format!("{tenant}.web.deploy.image-ready.>")],
                allow_direct: true,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .expect("ops creates the stream");
            ops.create_key_value(kv::Config {
                bucket: format!("{tenant}_web_config"),
                history: 5,
                ..Default::default()
            })
            .await
            .expect("ops creates the bucket");
            ops.create_stream(stream::Config {
                name: format!("{tenant}_web_outputs"),
                subjects: vec![format!("{tenant}.web.ml.outputs.>")],
                ..Default::default()
            })
            .await
            .expect("ops creates the outputs stream");
        }
    }

    async fn stop(self) {
        self.replica.stop().await;
    }
}

/// A client of one tenant, with the private inbox JetStream grants require, recording the
/// permission errors the server sends it.
struct Client {
    nats: async_nats::Client,
    js: jetstream::Context,
    errors: mpsc::UnboundedReceiver<String>,
}

async fn connect(url: &str, token: &str, oid: &str) -> Client {
    let (tx, errors) = mpsc::unbounded_channel();
    let nats = async_nats::ConnectOptions::with_token(token.to_owned())
        .custom_inbox_prefix(format!("_INBOX.{oid}"))
        .request_timeout(Some(Duration::from_secs(2)))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(ServerError::Other(text)) = event {
                    let _ = tx.send(text.to_lowercase());
                }
            }
        })
        .connect(url)
        .await
        .expect("a deployer is admitted");
    // Refused requests are never answered: a short timeout keeps the refusals quick.
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(nats.clone());
    Client { nats, js, errors }
}

impl Client {
    /// Waits (bounded) for the server's permission error naming `subject` for a publish.
    async fn refused(&mut self, subject: &str) {
        let want = format!(
            "permissions violation for publish to \"{}\"",
            subject.to_lowercase()
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let err = tokio::time::timeout_at(deadline, self.errors.recv())
                .await
                .unwrap_or_else(|_| panic!("no permission error for {subject} within 5 s"))
                .expect("error channel open");
            if err.contains(&want) {
                return;
            }
        }
    }

    /// Publishes a request to `subject` (which it may not) and waits for the refusal.
    async fn refused_request(&mut self, subject: &str, payload: Value) {
        let inbox = self.nats.new_inbox();
        self.nats
            .publish_with_reply(subject.to_owned(), inbox, payload.to_string().into())
            .await
            .unwrap();
        self.nats.flush().await.unwrap();
        self.refused(subject).await;
    }

    /// A raw JetStream API request; the JSON answer.
    async fn api(&self, subject: &str, payload: Value) -> Value {
        let answer = self
            .nats
            .request(subject.to_owned(), payload.to_string().into())
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
        serde_json::from_slice(&answer.payload).unwrap()
    }

    /// No permission error arrived.
    fn assert_no_errors(&mut self) {
        if let Ok(err) = self.errors.try_recv() {
            panic!("unexpected server error: {err}");
        }
    }
}

fn deployer(issuer: &TestIssuer, oid: &str) -> String {
    issuer.app_token(json!({ "roles": ["Deployer"], "oid": oid, "sub": oid }))
}

async fn contoso_client(stack: &Stack) -> Client {
    let token = deployer(&stack.contoso, CONTOSO_OID);
    connect(&stack.server.url(), &token, CONTOSO_OID).await
}

async fn fabrikam_client(stack: &Stack) -> Client {
    let token = deployer(&stack.fabrikam, FABRIKAM_OID);
    connect(&stack.server.url(), &token, FABRIKAM_OID).await
}

fn pull_config(durable: &str, filter: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(durable.to_owned()),
        filter_subject: filter.to_owned(),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    }
}

/// One message fetched from `consumer`, waiting at most 2 s: how the tests prove that a consume
/// grant lets a client pull (and that the message is the one expected).
async fn fetch_one(consumer: &consumer::PullConsumer) -> jetstream::Message {
    consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch")
        .next()
        .await
        .expect("one message")
        .expect("message")
}

#[tokio::test]
async fn each_grant_works_with_exactly_its_subjects() {
    let stack = Stack::start(POLICY).await;
    stack.create_out_of_band().await;
    let mut c = contoso_client(&stack).await;

    // read: stream info.
    let stream = c.js.get_stream(CONTOSO_STREAM).await.expect("stream info");
    assert_eq!(stream.cached_info().config.name, CONTOSO_STREAM);

    // publish, with the image digest as Nats-Msg-Id: the duplicate is recognised.
    let subject = "contoso.web.deploy.image-ready.v1.app";
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "sha256:1111");
    for expect_duplicate in [false, true] {
        let ack =
            c.js.publish_with_headers(subject, headers.clone(), "image 1".into())
                .await
                .expect("publish")
                .await
                .expect("publish acknowledged");
        assert_eq!(ack.duplicate, expect_duplicate);
        assert_eq!(ack.sequence, 1);
    }

    // read: direct get of the last message on a subject.
    let last = stream
        .direct_get_last_for_subject(subject)
        .await
        .expect("direct get");
    assert_eq!(&last.payload[..], b"image 1");

    // consume: create the durable with its filter (the 2.10+ subject carrying both), fetch, ack.
    let consumer = stream
        .create_consumer(pull_config(
            "deployer",
            "contoso.web.deploy.image-ready.v1.>",
        ))
        .await
        .expect("durable consumer created");
    let message = fetch_one(&consumer).await;
    assert_eq!(&message.payload[..], b"image 1");
    message
        .double_ack()
        .await
        .expect("ack confirmed by the server");

    // A restarted deployer finds its consumer with nothing pending.
    let mut again: consumer::PullConsumer = stream
        .get_consumer("deployer")
        .await
        .expect("consumer info");
    let info = again.info().await.expect("consumer info");
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));

    // kv: put, get, and a watch through a named ordered consumer with the key as its filter.
    let bucket =
        c.js.get_key_value("contoso_web_config")
            .await
            .expect("bucket");
    bucket.put("release", "v1".into()).await.expect("put");
    let value = bucket.get("release").await.expect("get");
    assert_eq!(value.as_deref(), Some(&b"v1"[..]));
    let kv_stream =
        c.js.get_stream("KV_contoso_web_config")
            .await
            .expect("bucket stream info");
    let watcher = kv_stream
        .create_consumer(consumer::push::OrderedConfig {
            name: Some("watch-release".to_owned()),
            deliver_subject: c.nats.new_inbox(),
            filter_subject: "$KV.contoso_web_config.release".to_owned(),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .expect("watch consumer created");
    let mut updates = watcher.messages().await.expect("watch");
    let first = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .expect("the current value within 5 s")
        .expect("watch open")
        .expect("update");
    assert_eq!(&first.payload[..], b"v1");
    bucket.put("release", "v2".into()).await.expect("put");
    let second = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .expect("the update within 5 s")
        .expect("watch open")
        .expect("update");
    assert_eq!(&second.payload[..], b"v2");
    bucket.delete("release").await.expect("delete");

    // consume ephemeral: a late reader replays a stream from the start through a consumer of
    // its own naming (the create subject still carries the name and the filter).
    let ops = stack.ops().await;
    for n in 1..=3 {
        ops.publish(format!("contoso.web.ml.outputs.m{n}"), n.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let outputs = c.js.get_stream("contoso_web_outputs").await;
    assert!(
        outputs.is_err(),
        "`consume` alone does not include stream info"
    );
    c.refused("$JS.API.STREAM.INFO.contoso_web_outputs").await;
    let replay =
        c.js.create_consumer_on_stream(
            consumer::pull::Config {
                name: Some(format!("replay-{CONTOSO_OID}")),
                filter_subject: "contoso.web.ml.outputs.>".to_owned(),
                deliver_policy: consumer::DeliverPolicy::All,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            },
            "contoso_web_outputs",
        )
        .await
        .expect("ephemeral consumer created");
    let replayed: Vec<String> = replay
        .fetch()
        .max_messages(3)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch")
        .take(3)
        .map(|m| String::from_utf8_lossy(&m.expect("message").payload).into_owned())
        .collect()
        .await;
    assert_eq!(replayed, ["1", "2", "3"]);

    c.assert_no_errors();
    stack.stop().await;
}

#[tokio::test]
async fn another_tenant_in_the_same_account_is_refused_everything() {
    let stack = Stack::start(POLICY).await;
    stack.create_out_of_band().await;
    let mut c = contoso_client(&stack).await;
    // Contoso's durable consumer and a message in its stream exist.
    let ack =
        c.js.publish("contoso.web.deploy.image-ready.v1.app", "secret".into())
            .await
            .unwrap()
            .await
            .unwrap();
    assert_eq!(ack.stream, CONTOSO_STREAM);
    let stream = c.js.get_stream(CONTOSO_STREAM).await.unwrap();
    stream
        .create_consumer(pull_config(
            "deployer",
            "contoso.web.deploy.image-ready.v1.>",
        ))
        .await
        .unwrap();
    let bucket = c.js.get_key_value("contoso_web_config").await.unwrap();
    bucket.put("release", "v1".into()).await.unwrap();
    c.assert_no_errors();

    let mut f = fabrikam_client(&stack).await;
    // Its own stream works, so the refusals below are about the names, not the grant.
    f.js.get_stream(FABRIKAM_STREAM).await.expect("own stream");

    // Stream info, through the client API.
    assert!(f.js.get_stream(CONTOSO_STREAM).await.is_err());
    f.refused(&format!("$JS.API.STREAM.INFO.{CONTOSO_STREAM}"))
        .await;

    // Consumer create on the other's stream, with any filter, and with the legacy forms.
    for filter in [
        "contoso.web.deploy.image-ready.v1.>",
        "fabrikam.web.deploy.image-ready.v1.>",
        ">",
    ] {
        let subject = format!("$JS.API.CONSUMER.CREATE.{CONTOSO_STREAM}.deployer.{filter}");
        f.refused_request(
            &subject,
            json!({ "stream_name": CONTOSO_STREAM, "config": { "durable_name": "deployer", "filter_subject": filter } }),
        )
        .await;
    }
    for subject in [
        format!("$JS.API.CONSUMER.CREATE.{CONTOSO_STREAM}"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{CONTOSO_STREAM}.deployer"),
    ] {
        f.refused_request(
            &subject,
            json!({ "stream_name": CONTOSO_STREAM, "config": {} }),
        )
        .await;
    }

    // Fetch, consumer info and ack on the other's consumer.
    f.refused_request(
        &format!("$JS.API.CONSUMER.MSG.NEXT.{CONTOSO_STREAM}.deployer"),
        json!({ "batch": 1 }),
    )
    .await;
    f.refused_request(
        &format!("$JS.API.CONSUMER.INFO.{CONTOSO_STREAM}.deployer"),
        json!({}),
    )
    .await;
    f.refused_request(
        &format!("$JS.ACK.{CONTOSO_STREAM}.deployer.1.1.1.0.0"),
        json!(null),
    )
    .await;

    // Direct get, by subject and by sequence.
    f.refused_request(
        &format!("$JS.API.DIRECT.GET.{CONTOSO_STREAM}.contoso.web.deploy.image-ready.v1.app"),
        json!(null),
    )
    .await;
    f.refused_request(
        &format!("$JS.API.DIRECT.GET.{CONTOSO_STREAM}"),
        json!({ "seq": 1 }),
    )
    .await;
    f.refused_request(
        &format!("$JS.API.STREAM.MSG.GET.{CONTOSO_STREAM}"),
        json!({ "seq": 1 }),
    )
    .await;

    // The other's bucket: bind (stream info), get, put, watch.
    assert!(f.js.get_key_value("contoso_web_config").await.is_err());
    f.refused("$JS.API.STREAM.INFO.KV_contoso_web_config").await;
    f.refused_request(
        "$JS.API.DIRECT.GET.KV_contoso_web_config.$KV.contoso_web_config.release",
        json!(null),
    )
    .await;
    f.refused_request("$KV.contoso_web_config.release", json!("overwritten"))
        .await;
    f.refused_request(
        "$JS.API.CONSUMER.CREATE.KV_contoso_web_config.w.$KV.contoso_web_config.release",
        json!({ "stream_name": "KV_contoso_web_config", "config": { "name": "w", "filter_subject": "$KV.contoso_web_config.release" } }),
    )
    .await;

    // Nothing reached contoso's data: the message is still pending for its consumer, the
    // bucket holds the value it put.
    let mut consumer: consumer::PullConsumer = stream.get_consumer("deployer").await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (1, 0));
    assert_eq!(
        bucket.get("release").await.unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    c.assert_no_errors();
    stack.stop().await;
}

#[tokio::test]
async fn a_consumer_whose_filter_leaves_the_grant_is_refused() {
    let stack = Stack::start(POLICY).await;
    stack.create_out_of_band().await;
    let mut c = contoso_client(&stack).await;
    let stream = c.js.get_stream(CONTOSO_STREAM).await.unwrap();

    // Wider than the grant's filter (still inside the stream), or no filter at all: the
    // subject carries the filter, so the server refuses the publish.
    for filter in [
        "contoso.web.deploy.image-ready.>",
        "contoso.web.deploy.image-ready.v2.>",
    ] {
        assert!(
            stream
                .create_consumer(pull_config("deployer", filter))
                .await
                .is_err(),
            "{filter}"
        );
        c.refused(&format!(
            "$JS.API.CONSUMER.CREATE.{CONTOSO_STREAM}.deployer.{filter}"
        ))
        .await;
    }
    assert!(
        stream
            .create_consumer(pull_config("deployer", ""))
            .await
            .is_err()
    );
    c.refused(&format!(
        "$JS.API.CONSUMER.CREATE.{CONTOSO_STREAM}.deployer"
    ))
    .await;
    // Another consumer name with the granted filter.
    assert!(
        stream
            .create_consumer(pull_config(
                "intruder",
                "contoso.web.deploy.image-ready.v1.>"
            ))
            .await
            .is_err()
    );
    c.refused(&format!(
        "$JS.API.CONSUMER.CREATE.{CONTOSO_STREAM}.intruder.contoso.web.deploy.image-ready.v1.>"
    ))
    .await;

    // A forged request: the granted subject, a wider filter in the payload. nats-server
    // compares the two and refuses (10131); a payload with `filter_subjects` instead is refused
    // too, so the payload cannot smuggle a filter past the subject.
    let granted = format!(
        "$JS.API.CONSUMER.CREATE.{CONTOSO_STREAM}.deployer.contoso.web.deploy.image-ready.v1.>"
    );
    for (config, code) in [
        (
            json!({ "durable_name": "deployer", "ack_policy": "explicit", "filter_subject": "contoso.web.deploy.>" }),
            10131,
        ),
        (
            json!({ "durable_name": "deployer", "ack_policy": "explicit", "filter_subjects": ["contoso.web.deploy.>"] }),
            10137,
        ),
        (
            json!({ "durable_name": "deployer", "ack_policy": "explicit" }),
            10131,
        ),
    ] {
        let answer = c
            .api(
                &granted,
                json!({ "stream_name": CONTOSO_STREAM, "config": config }),
            )
            .await;
        assert_eq!(answer["error"]["err_code"], code, "{config}: {answer}");
    }
    // The durable created by the granted subject and a matching payload works.
    let answer = c
        .api(
            &granted,
            json!({ "stream_name": CONTOSO_STREAM, "config": { "durable_name": "deployer", "ack_policy": "explicit", "filter_subject": "contoso.web.deploy.image-ready.v1.>" } }),
        )
        .await;
    assert_eq!(answer["name"], "deployer", "{answer}");
    // A durable name in the payload other than the subject's is refused by the server.
    let answer = c
        .api(
            &granted,
            json!({ "stream_name": CONTOSO_STREAM, "config": { "durable_name": "other", "ack_policy": "explicit", "filter_subject": "contoso.web.deploy.image-ready.v1.>" } }),
        )
        .await;
    assert_eq!(answer["error"]["err_code"], 10017, "{answer}");
    stack.stop().await;
}

#[tokio::test]
async fn an_ack_for_another_stream_is_refused() {
    let stack = Stack::start(POLICY).await;
    stack.create_out_of_band().await;
    // Fabrikam has a message waiting for its own consumer.
    let mut f = fabrikam_client(&stack).await;
    f.js.publish("fabrikam.web.deploy.image-ready.v1.app", "theirs".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let f_stream = f.js.get_stream(FABRIKAM_STREAM).await.unwrap();
    let f_consumer = f_stream
        .create_consumer(pull_config(
            "deployer",
            "fabrikam.web.deploy.image-ready.v1.>",
        ))
        .await
        .unwrap();
    let theirs = fetch_one(&f_consumer).await;
    let their_ack = theirs.reply.clone().expect("an ack subject").to_string();
    assert!(
        their_ack.starts_with(&format!("$JS.ACK.{FABRIKAM_STREAM}.deployer.")),
        "{their_ack}"
    );

    // Contoso, which knows fabrikam's ack subject, cannot ack (or nak, or term) it.
    let mut c = contoso_client(&stack).await;
    for body in ["+ACK", "-NAK", "+TERM"] {
        c.nats
            .publish(their_ack.clone(), body.into())
            .await
            .unwrap();
        c.nats.flush().await.unwrap();
        c.refused(&their_ack).await;
    }
    // Still unacknowledged: fabrikam acks it itself.
    let mut info_consumer: consumer::PullConsumer =
        f_stream.get_consumer("deployer").await.unwrap();
    assert_eq!(info_consumer.info().await.unwrap().num_ack_pending, 1);
    theirs
        .double_ack()
        .await
        .expect("fabrikam acks its own message");
    assert_eq!(info_consumer.info().await.unwrap().num_ack_pending, 0);
    f.assert_no_errors();
    stack.stop().await;
}

#[tokio::test]
async fn clients_kv_watch_helpers_use_the_legacy_create_form_and_are_refused() {
    // async-nats 0.51's `Store::watch` (like nats-py's `kv.watch`) creates an unnamed ordered
    // consumer on `$JS.API.CONSUMER.CREATE.KV_<bucket>`, whose filter is only in the payload.
    // That form is never granted; watchers name their consumer (see the README).
    let stack = Stack::start(POLICY).await;
    stack.create_out_of_band().await;
    let mut c = contoso_client(&stack).await;
    let bucket = c.js.get_key_value("contoso_web_config").await.unwrap();
    assert!(bucket.watch("release").await.is_err());
    c.refused("$JS.API.CONSUMER.CREATE.KV_contoso_web_config")
        .await;
    stack.stop().await;
}

#[tokio::test]
async fn an_admin_with_manage_creates_its_streams_and_buckets_and_no_one_elses() {
    let stack = Stack::start(MANAGE_POLICY).await;
    let token = stack
        .contoso
        .app_token(json!({ "roles": ["Admin"], "oid": CONTOSO_OID, "sub": CONTOSO_OID }));
    let mut admin = connect(&stack.server.url(), &token, CONTOSO_OID).await;
    admin
        .js
        .create_stream(stream::Config {
            name: CONTOSO_STREAM.to_owned(),
            subjects: vec!["contoso.web.deploy.image-ready.>".to_owned()],
            allow_direct: true,
            ..Default::default()
        })
        .await
        .expect("stream created");
    admin
        .js
        .create_key_value(kv::Config {
            bucket: "contoso_web_config".to_owned(),
            ..Default::default()
        })
        .await
        .expect("bucket created");
    admin.assert_no_errors();
    // A name outside its prefix is refused.
    assert!(
        admin
            .js
            .create_stream(stream::Config {
                name: "fabrikam_web_image-ready".to_owned(),
                subjects: vec!["fabrikam.web.>".to_owned()],
                ..Default::default()
            })
            .await
            .is_err()
    );
    admin
        .refused("$JS.API.STREAM.CREATE.fabrikam_web_image-ready")
        .await;
    admin
        .js
        .delete_stream(CONTOSO_STREAM)
        .await
        .expect("stream deleted");
    stack.stop().await;
}

#[tokio::test]
async fn a_push_consumer_answers_flow_control_on_its_granted_subject() {
    // nats-server asks a push consumer with flow control to answer on
    // `$JS.FC.<stream>.<consumer>.<id>` once about 2 MB wait undelivered-to-the-app; the grant's
    // `$JS.FC.S.C.*` must cover that reply or delivery stalls. The operator's connection watches
    // the replies go by.
    let stack = Stack::start(POLICY).await;
    stack.create_out_of_band().await;
    let ops = stack.ops().await;
    let mut replies = ops
        .client()
        .subscribe(format!("$JS.FC.{CONTOSO_STREAM}.>"))
        .await
        .unwrap();
    ops.client().flush().await.unwrap();
    let chunk = vec![b'x'; 200 * 1024];
    const COUNT: usize = 40;
    for n in 0..COUNT {
        ops.publish(
            format!("contoso.web.deploy.image-ready.v1.m{n}"),
            chunk.clone().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut c = contoso_client(&stack).await;
    let stream = c.js.get_stream(CONTOSO_STREAM).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::push::Config {
            durable_name: Some("deployer".to_owned()),
            deliver_subject: c.nats.new_inbox(),
            filter_subject: "contoso.web.deploy.image-ready.v1.>".to_owned(),
            ack_policy: consumer::AckPolicy::None,
            flow_control: true,
            idle_heartbeat: Duration::from_secs(5),
            ..Default::default()
        })
        .await
        .expect("push consumer created");
    let mut messages = consumer.messages().await.unwrap();
    for n in 0..COUNT {
        tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap_or_else(|_| panic!("message {n} within 10 s"))
            .expect("open")
            .expect("message");
    }
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .expect("a flow control reply was seen")
        .expect("open");
    let prefix = format!("$JS.FC.{CONTOSO_STREAM}.deployer.");
    let rest = reply.subject.as_str().strip_prefix(&prefix);
    assert!(
        rest.is_some_and(|id| !id.is_empty() && !id.contains('.')),
        "{}",
        reply.subject
    );
    c.assert_no_errors();
    stack.stop().await;
}

#[tokio::test]
async fn fetching_reads_what_the_consumers_filter_lets_through_not_the_grants() {
    // Why two bindings reaching one consumer must give it the same filters (a load error
    // otherwise): the grant's filter is enforced when the consumer is created, not when it is
    // fetched from. Here the operator made `deployer` wider than the deployer's grant.
    let stack = Stack::start(POLICY).await;
    stack.create_out_of_band().await;
    let ops = stack.ops().await;
    ops.create_consumer_on_stream(
        pull_config("deployer", "contoso.web.deploy.image-ready.>"),
        CONTOSO_STREAM,
    )
    .await
    .unwrap();
    ops.publish("contoso.web.deploy.image-ready.v2.app", "v2".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut c = contoso_client(&stack).await;
    let consumer: consumer::PullConsumer =
        c.js.get_stream(CONTOSO_STREAM)
            .await
            .unwrap()
            .get_consumer("deployer")
            .await
            .unwrap();
    let message = fetch_one(&consumer).await;
    assert_eq!(
        message.subject.as_str(),
        "contoso.web.deploy.image-ready.v2.app"
    );
    c.assert_no_errors();
    stack.stop().await;
}

#[tokio::test]
async fn a_push_consumers_deliver_subject_is_not_checked_a_documented_limit() {
    // The deliver subject of a push consumer is in the create payload, which permissions
    // cannot see, and nats-server does not check it against the creator's permissions: a
    // holder of `consume` can have its own stream's messages delivered onto any subject of the
    // account, another tenant's included. It reads nothing it could not read already, but it
    // can inject; the message keeps its original subject. The README says so; if a server
    // starts refusing this, this test fails and the README should change.
    let stack = Stack::start(POLICY).await;
    stack.create_out_of_band().await;
    let c = contoso_client(&stack).await;
    let ops = stack.ops().await;
    let target = "fabrikam.web.deploy.image-ready.v1.injected";
    let mut fabrikam_side = ops.client().subscribe(target).await.unwrap();
    ops.client().flush().await.unwrap();
    c.js.publish(
        "contoso.web.deploy.image-ready.v1.app",
        "from contoso".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let granted = format!(
        "$JS.API.CONSUMER.CREATE.{CONTOSO_STREAM}.deployer.contoso.web.deploy.image-ready.v1.>"
    );
    let answer = c
        .api(
            &granted,
            json!({ "stream_name": CONTOSO_STREAM, "config": { "durable_name": "deployer", "ack_policy": "explicit", "filter_subject": "contoso.web.deploy.image-ready.v1.>", "deliver_subject": target } }),
        )
        .await;
    assert_eq!(answer["config"]["deliver_subject"], target, "{answer}");
    let injected = tokio::time::timeout(Duration::from_secs(5), fabrikam_side.next())
        .await
        .expect("delivered within 5 s")
        .expect("subscription open");
    assert_eq!(
        injected.subject.as_str(),
        "contoso.web.deploy.image-ready.v1.app"
    );
    assert_eq!(&injected.payload[..], b"from contoso");
    stack.stop().await;
}

#[tokio::test]
async fn nats_py_uses_the_same_subjects() {
    // scripts/test sets it to the venv holding the Python examples' pinned nats-py.
    let python = std::env::var("ENTRA_CALLOUT_PYTHON").expect(
        "ENTRA_CALLOUT_PYTHON names a Python with nats-py (scripts/test sets it; \
         scripts/install-python-examples prints one)",
    );
    let stack = Stack::start(POLICY).await;
    stack.create_out_of_band().await;
    let token = deployer(&stack.contoso, CONTOSO_OID);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/jetstream_check.py"
    );
    let url = stack.server.url();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args([script, &url, &token, CONTOSO_OID])
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(
        got,
        json!({
            "stream_info": "ok",
            "publish": "duplicate=false,true",
            "direct_get": "py",
            "durable_by_name": "py",
            // Refused requests are never answered: nats-py times out.
            "durable_legacy": "TimeoutError",
            "kv_put_get": "py-1",
            "kv_watch_helper": "TimeoutError",
            "other_stream_info": "TimeoutError",
            "other_bucket": "TimeoutError",
            // ...because the server refused exactly these publishes (nats-py reports them lowercased).
            "errors": [
                "nats: permissions violation for publish to \"$js.api.consumer.durable.create.contoso_web_image-ready.deployer\"",
                "nats: permissions violation for publish to \"$js.api.consumer.create.kv_contoso_web_config\"",
                "nats: permissions violation for publish to \"$js.api.stream.info.fabrikam_web_image-ready\"",
                "nats: permissions violation for publish to \"$js.api.stream.info.kv_fabrikam_web_config\"",
            ],
        })
    );
    stack.stop().await;
}

#[test]
fn explain_shows_the_jetstream_grants_of_the_shipped_policies_and_their_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let bin = || std::process::Command::new(env!("CARGO_BIN_EXE_entra-callout"));
    let out = bin()
        .args(["keys", "init"])
        .arg(dir.path().join("keys"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "nats:\n  user: auth\n  password_file: keys/nats-password\n\
             callout:\n  issuer_seed_file: keys/issuer.nk\n\
             providers:\n  - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    audiences: [\"{AUDIENCE}\"]\n\
             policies: {}\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
        ),
    )
    .unwrap();
    // The delivery scenario's deployment trigger.
    let claims = dir.path().join("claims.json");
    std::fs::write(
        &claims,
        json!({ "idtyp": "app", "oid": "2c7d9e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f" }).to_string(),
    )
    .unwrap();
    let run = |json: bool| {
        let mut cmd = bin();
        cmd.args(["explain", "--config"])
            .arg(&config)
            .arg("--claims")
            .arg(&claims);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(false);
    for line in [
        "         jetstream stream contoso_web_image-ready: read, consume durable [deployer], filter [contoso.web.deploy.image-ready.v1.*]",
        "           publish   $JS.API.STREAM.INFO.contoso_web_image-ready, $JS.API.DIRECT.GET.contoso_web_image-ready.contoso.web.deploy.image-ready.v1.*, \
         $JS.API.CONSUMER.CREATE.contoso_web_image-ready.deployer.contoso.web.deploy.image-ready.v1.*, $JS.API.CONSUMER.INFO.contoso_web_image-ready.deployer, \
         $JS.API.CONSUMER.MSG.NEXT.contoso_web_image-ready.deployer, $JS.ACK.contoso_web_image-ready.deployer.>, $JS.FC.contoso_web_image-ready.deployer.*",
        "           subscribe _INBOX.{oid}.>",
        "  subscribe  allow _INBOX.2c7d9e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f.>",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let parsed: Value = serde_json::from_str(&run(true)).unwrap();
    let trigger = parsed["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "web-deploy-trigger")
        .unwrap();
    assert_eq!(
        trigger["jetstream"][0]["grant"],
        "stream contoso_web_image-ready: read, consume durable [deployer], filter [contoso.web.deploy.image-ready.v1.*]"
    );
    assert_eq!(
        trigger["jetstream"][0]["subscribe"],
        json!(["_INBOX.{oid}.>"])
    );
}

/// Operator mode: the tenants' accounts carry JetStream limits in their JWTs.
mod operator_mode {
    use async_nats::jetstream::{consumer, kv, stream};
    use serde::Serialize;
    use serde_json::{Value, json};

    use entra_callout::nats_config::{self, Resolver};
    use entra_callout::nats_jwt::{self, CLAIM_VERSION, Claims, IssuerKind, NatsClaim, Signer};

    use super::{CONTOSO_OID, connect, fetch_one, pull_config};
    use crate::support::issuer::{AUDIENCE, OTHER_TENANT, TENANT, TestIssuer};
    use crate::support::nats::NatsServer;
    use crate::support::operator;
    use crate::support::service::Replica;

    /// Each tenant in an account of its own, so each may `manage` its streams and buckets.
    const POLICY: &str = r#"
version: 1
tenants:
  - { name: contoso, entra_tenants: [CONTOSO_TID], account: APP, projects: [{ name: web }] }
  - { name: fabrikam, entra_tenants: [FABRIKAM_TID], account: OTHER, projects: [{ name: web }] }
roles:
  - name: deployer
    jetstream:
      streams:
        - name: image-ready
          subjects: ["deploy.image-ready.>"]
          read: true
          publish: true
          consume: { durable: [deployer], filter: ["deploy.image-ready.v1.>"] }
          manage: true
      kv:
        - { bucket: config, get: true, put: true, manage: true }
bindings:
  - { name: contoso-deployers, tenant: contoso, project: web, roles: [deployer], when: { app_roles: [Deployer] } }
  - { name: fabrikam-deployers, tenant: fabrikam, project: web, roles: [deployer], when: { app_roles: [Deployer] } }
"#;

    /// An account claim as JSON, so JetStream limits (which the service never writes) can be
    /// added to what `nats-config` renders.
    #[derive(Default, Serialize)]
    #[serde(transparent)]
    struct RawAccount(Value);

    impl NatsClaim for RawAccount {
        const TYPE: &'static str = nats_jwt::ACCOUNT_TYPE;
        const ISSUER: IssuerKind = IssuerKind::Operator;

        fn claim_type(&self) -> &str {
            self.0["type"].as_str().unwrap_or_default()
        }

        fn version(&self) -> i64 {
            self.0["version"].as_i64().unwrap_or_default()
        }

        fn stamp(&mut self) {
            self.0["type"] = json!(nats_jwt::ACCOUNT_TYPE);
            self.0["version"] = json!(CLAIM_VERSION);
        }
    }

    /// `nats-config --mode operator`'s server configuration with JetStream on, and the target
    /// accounts' JWTs re-signed with unlimited JetStream storage.
    fn server_config(keys: &entra_callout::keys::OperatorKeys, store: &std::path::Path) -> String {
        let now = entra_callout::telemetry::unix_now();
        let mut text = operator::server_config(keys, &Resolver::Memory, |_| {});
        let (_, jwts) = nats_config::operator_jwts(keys, now).unwrap();
        let signer = Signer::new(keys.operator.clone()).unwrap();
        for name in ["APP", "OTHER"] {
            let original = jwts.iter().find(|a| a.name == name).unwrap();
            let claims = nats_config::target_claims(keys, name).unwrap();
            let mut nats = serde_json::to_value(&claims.nats).unwrap();
            nats["limits"]["mem_storage"] = json!(-1);
            nats["limits"]["disk_storage"] = json!(-1);
            nats["limits"]["streams"] = json!(-1);
            nats["limits"]["consumer"] = json!(-1);
            let mut with_js = Claims::with_subject(claims.base.sub.clone(), RawAccount(nats));
            with_js.base.name = name.to_owned();
            let jwt = nats_jwt::encode(&mut with_js, &signer, now).unwrap();
            assert!(text.contains(&original.jwt));
            text = text.replace(&original.jwt, &jwt);
        }
        format!(
            "{text}\njetstream {{ store_dir: \"{}\" }}\n",
            store.display()
        )
    }

    #[tokio::test]
    async fn each_grant_works_in_operator_mode_and_manage_makes_the_stream() {
        let issuer = TestIssuer::start_for_tenants(&[TENANT, OTHER_TENANT]).await;
        let dir = tempfile::tempdir().unwrap();
        let keys = operator::init(&dir.path().join("keys"), &["APP", "OTHER"]);
        let server = NatsServer::start(&server_config(&keys, &dir.path().join("js")));
        let policy = POLICY
            .replace("CONTOSO_TID", TENANT)
            .replace("FABRIKAM_TID", OTHER_TENANT);
        std::fs::write(dir.path().join("policies.yaml"), policy).unwrap();
        let providers = format!(
            "providers:\n  - name: entra\n    kind: entra\n    tenants: [{TENANT}, {OTHER_TENANT}]\n    \
             audiences: [\"{AUDIENCE}\"]\n    authority: {}\n",
            issuer.authority()
        );
        let config_path = dir.path().join("entra-callout.yaml");
        std::fs::write(
            &config_path,
            operator::service_config(&keys, &server.url(), &providers),
        )
        .unwrap();
        let replica = Replica::start(&config_path).await;

        let token = issuer
            .app_token(json!({ "roles": ["Deployer"], "oid": CONTOSO_OID, "sub": CONTOSO_OID }));
        let mut c = connect(&server.url(), &token, CONTOSO_OID).await;
        // manage: the admin creates its stream and bucket.
        let created =
            c.js.create_stream(stream::Config {
                name: "contoso_web_image-ready".to_owned(),
                subjects: vec!["contoso.web.deploy.image-ready.>".to_owned()],
                allow_direct: true,
                ..Default::default()
            })
            .await
            .expect("stream created");
        let bucket =
            c.js.create_key_value(kv::Config {
                bucket: "contoso_web_config".to_owned(),
                ..Default::default()
            })
            .await
            .expect("bucket created");
        // publish, read, consume, ack; put and get.
        c.js.publish("contoso.web.deploy.image-ready.v1.app", "image".into())
            .await
            .unwrap()
            .await
            .expect("acknowledged");
        let last = created
            .direct_get_last_for_subject("contoso.web.deploy.image-ready.v1.app")
            .await
            .expect("direct get");
        assert_eq!(&last.payload[..], b"image");
        let consumer = created
            .create_consumer(pull_config(
                "deployer",
                "contoso.web.deploy.image-ready.v1.>",
            ))
            .await
            .expect("durable created");
        let message = fetch_one(&consumer).await;
        message.double_ack().await.expect("acked");
        bucket.put("release", "v1".into()).await.expect("put");
        assert_eq!(
            bucket.get("release").await.unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        // A consumer with a wider filter is refused here too.
        assert!(
            created
                .create_consumer(pull_config("deployer", "contoso.web.deploy.>"))
                .await
                .is_err()
        );
        c.refused("$JS.API.CONSUMER.CREATE.contoso_web_image-ready.deployer.contoso.web.deploy.>")
            .await;
        let mut info: consumer::PullConsumer = created.get_consumer("deployer").await.unwrap();
        assert_eq!(info.info().await.unwrap().num_ack_pending, 0);
        c.assert_no_errors();
        replica.stop().await;
    }
}
