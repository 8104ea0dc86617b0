//! The delivery pipeline scenario (policies/delivery.yaml), as functions the example binaries
//! and the integration test share.
//!
//! A build agent publishes a versioned "image-ready" event on
//! `contoso.web.deploy.image-ready.v1.<its object id>`; a deployment trigger subscribes,
//! validates the payload and starts the release. The callout lets only the build's service
//! principal publish there, and only under its own object id — so the last subject token names
//! the identity that sent the event, and the trigger can trust it.
//!
//! The events are durable: they land in the JetStream stream `image-ready`
//! (`contoso_web_image-ready` on the server, created by the operator). The agent publishes with
//! `Nats-Msg-Id` = the image digest, so a repeated publish within the stream's duplicate window
//! is stored once; the trigger reads through the durable consumer `deployer` and acks only once
//! the release was triggered, so a restarted trigger resumes where it stopped.

#![allow(dead_code, unreachable_pub)]

use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// The project the examples work in: tenant `contoso`, project `web`.
pub const PREFIX: &str = "contoso.web";
/// The event's schema version; a breaking change gets a new subject (`v2`) next to this one.
pub const VERSION: &str = "v1";

/// The stream's local name (policies/delivery.yaml); on the server, [`stream_name`].
pub const STREAM: &str = "image-ready";
/// The deploy trigger's durable consumer.
pub const DURABLE: &str = "deployer";
/// How long a release that could not be triggered waits before it is delivered again.
pub const RETRY_DELAY: Duration = Duration::from_secs(30);

/// The stream's server name under `prefix`: the prefix with `.` as `_`, then `_image-ready`.
pub fn stream_name(prefix: &str) -> String {
    format!("{}_{STREAM}", prefix.replace('.', "_"))
}

/// `image-ready` v1: a container image was built and pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageReady {
    /// Repository, e.g. `contoso.azurecr.io/web/frontend`.
    pub image: String,
    /// Tag, e.g. `1.4.2`.
    pub tag: String,
    /// Content digest, `sha256:<64 hex>`: what is deployed, whatever the tag points at later.
    pub digest: String,
    /// Source commit, 40 hex characters.
    pub commit: String,
    /// The pipeline run that built it.
    pub pipeline_run: String,
}

/// Why an event was rejected.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON of the v1 shape.
    Shape(String),
    /// A field has a bad value.
    Field(&'static str, String),
    /// The subject is not `…image-ready.v1.<sender>`.
    Subject(String),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape(why) => write!(f, "not an image-ready v1 event: {why}"),
            Self::Field(name, why) => write!(f, "field {name}: {why}"),
            Self::Subject(subject) => write!(f, "unexpected subject {subject}"),
        }
    }
}

impl std::error::Error for Invalid {}

/// A validated release request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// `image@digest`: what to deploy.
    pub reference: String,
    /// The tag, for humans.
    pub tag: String,
    /// Object id of the service principal that published the event.
    pub sender: String,
}

/// `{prefix}.deploy.image-ready.v1.{sender}`.
pub fn subject(prefix: &str, sender: &str) -> String {
    format!("{prefix}.deploy.image-ready.{VERSION}.{sender}")
}

/// Checks a payload against the v1 schema.
pub fn validate(payload: &[u8]) -> Result<ImageReady, Invalid> {
    let event: ImageReady =
        serde_json::from_slice(payload).map_err(|e| Invalid::Shape(e.to_string()))?;
    let image_ok = !event.image.is_empty()
        && event.image.len() <= 255
        && event.image.contains('/')
        && event
            .image
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "./_-:".contains(c));
    if !image_ok {
        return Err(Invalid::Field(
            "image",
            "expected a lowercase repository like registry/name".into(),
        ));
    }
    let tag_ok = (1..=128).contains(&event.tag.len())
        && !event.tag.starts_with(['.', '-'])
        && event
            .tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !tag_ok {
        return Err(Invalid::Field(
            "tag",
            "expected [A-Za-z0-9_.-], at most 128 characters".into(),
        ));
    }
    let digest_ok = event.digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    });
    if !digest_ok {
        return Err(Invalid::Field(
            "digest",
            "expected sha256:<64 lowercase hex>".into(),
        ));
    }
    if event.commit.len() != 40 || !event.commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Invalid::Field(
            "commit",
            "expected a 40-character commit id".into(),
        ));
    }
    if event.pipeline_run.is_empty() {
        return Err(Invalid::Field("pipeline_run", "must not be empty".into()));
    }
    Ok(event)
}

/// Turns a received message into a release: the sender from the subject, the payload validated.
pub fn release(prefix: &str, subject: &str, payload: &[u8]) -> Result<Release, Invalid> {
    let head = format!("{prefix}.deploy.image-ready.{VERSION}.");
    let sender = subject
        .strip_prefix(&head)
        .filter(|s| !s.is_empty() && !s.contains('.'))
        .ok_or_else(|| Invalid::Subject(subject.to_owned()))?;
    let event = validate(payload)?;
    Ok(Release {
        reference: format!("{}@{}", event.image, event.digest),
        tag: event.tag,
        sender: sender.to_owned(),
    })
}

/// Publishes `event` as `sender` and flushes it to the socket (async-nats' flush does not wait
/// for the server: see common::Connection::refusals for whether it was refused).
pub async fn publish(
    client: &async_nats::Client,
    prefix: &str,
    sender: &str,
    event: &ImageReady,
) -> anyhow::Result<()> {
    publish_raw(client, &subject(prefix, sender), serde_json::to_vec(event)?).await
}

/// Publishes any bytes on any subject (to show what the server and the trigger refuse).
pub async fn publish_raw(
    client: &async_nats::Client,
    subject: &str,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    client
        .publish(subject.to_owned(), payload.into())
        .await
        .with_context(|| format!("publish to {subject}"))?;
    client.flush().await.context("flush")?;
    Ok(())
}

/// An example event.
pub fn example_event(tag: &str) -> ImageReady {
    ImageReady {
        image: "contoso.azurecr.io/web/frontend".into(),
        tag: tag.into(),
        digest: format!("sha256:{}", "4f".repeat(32)),
        commit: "9fceb02d0ae598e95dc970b74767f19372d61af8".into(),
        pipeline_run: "20240601.7".into(),
    }
}

/// Publishes `event` as `sender` into the stream, with `Nats-Msg-Id` = the image digest, and
/// waits for the stream's acknowledgement (`duplicate` is true when the digest was already
/// stored within the duplicate window). The client must use the inbox prefix `_INBOX.<oid>`.
pub async fn publish_durable(
    js: &jetstream::Context,
    prefix: &str,
    sender: &str,
    event: &ImageReady,
) -> anyhow::Result<jetstream::context::PublishAckFuture> {
    let subject = subject(prefix, sender);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.digest.as_str());
    let ack = js
        .publish_with_headers(subject.clone(), headers, serde_json::to_vec(event)?.into())
        .await
        .with_context(|| format!("publish to {subject}"))?;
    Ok(ack)
}

/// The deploy trigger's durable consumer `deployer` on the stream, created on first use with
/// the policy's filter (every sender's v1 events) and found again after a restart. The client
/// must use the inbox prefix `_INBOX.<oid>`.
pub async fn deployer(
    js: &jetstream::Context,
    prefix: &str,
) -> anyhow::Result<consumer::PullConsumer> {
    let name = stream_name(prefix);
    let stream = js
        .get_stream(&name)
        .await
        .with_context(|| format!("stream {name}"))?;
    let consumer = stream
        .get_or_create_consumer(
            DURABLE,
            consumer::pull::Config {
                durable_name: Some(DURABLE.to_owned()),
                filter_subject: format!("{prefix}.deploy.image-ready.{VERSION}.*"),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("durable consumer {DURABLE} on {name}"))?;
    Ok(consumer)
}

/// What became of one event.
#[derive(Debug)]
pub enum Handled {
    /// Valid and triggered, then acknowledged.
    Released(Release),
    /// Failed validation: terminated, never delivered again.
    Rejected(Invalid),
    /// Valid, but triggering failed: not acknowledged, delivered again after [`RETRY_DELAY`].
    Failed(Release, anyhow::Error),
}

/// Validates one event and triggers its release, acknowledging only after `trigger`
/// succeeded (waiting for the server to confirm the ack). An invalid payload is terminated;
/// a failed trigger is negatively acknowledged, to be delivered again. A crash between the
/// trigger and the ack delivers the event again: triggering must tolerate a repeat.
pub async fn handle<F, Fut>(
    prefix: &str,
    message: &jetstream::Message,
    trigger: F,
) -> anyhow::Result<Handled>
where
    F: FnOnce(Release) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let release = match release(prefix, &message.subject, &message.payload) {
        Ok(release) => release,
        Err(invalid) => {
            message
                .ack_with(AckKind::Term)
                .await
                .map_err(|e| anyhow::anyhow!("term: {e}"))?;
            return Ok(Handled::Rejected(invalid));
        }
    };
    match trigger(release.clone()).await {
        Ok(()) => {
            message
                .double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            Ok(Handled::Released(release))
        }
        Err(err) => {
            message
                .ack_with(AckKind::Nak(Some(RETRY_DELAY)))
                .await
                .map_err(|e| anyhow::anyhow!("nak: {e}"))?;
            Ok(Handled::Failed(release, err))
        }
    }
}

/// Consumes `consumer` until it fails, handling every event with [`handle`] and reporting
/// each outcome to `report`.
pub async fn serve<Fut>(
    consumer: consumer::PullConsumer,
    prefix: &str,
    mut trigger: impl FnMut(Release) -> Fut,
    mut report: impl FnMut(&str, Handled),
) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut messages = consumer.messages().await.context("consume")?;
    while let Some(message) = messages.next().await {
        let message = message.context("next event")?;
        let handled = handle(prefix, &message, &mut trigger).await?;
        report(&message.subject, handled);
    }
    Ok(())
}
