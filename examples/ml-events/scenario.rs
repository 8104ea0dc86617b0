//! The ML events scenario (policies/ml-events.yaml), as functions the example binaries and the
//! integration test share.
//!
//! Training jobs and inference endpoints publish model outputs and metrics; dashboards, APIs and
//! triggers consume them in real time. Every subject lives under the project's prefix
//! (`contoso.vision`): the callout grants nothing outside it, so tenants and projects cannot
//! see each other's events.
//!
//! Outputs are also kept in the JetStream stream `outputs` (`contoso_vision_outputs` on the
//! server, created by the operator): a dashboard that connects late replays them through a
//! consumer of its own naming, then keeps reading new ones from it.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// The project the examples work in: tenant `contoso`, project `vision`.
pub const PREFIX: &str = "contoso.vision";
/// The queue group triggers share, so that each output starts one downstream job.
pub const TRIGGER_GROUP: &str = "triggers";
/// The outputs stream's local name (policies/ml-events.yaml); on the server, [`outputs_stream`].
pub const OUTPUTS_STREAM: &str = "outputs";
/// How long a replay consumer outlives its dashboard: nats-server removes it after this long
/// without a pull, so dashboards that come and go leave nothing behind.
pub const REPLAY_IDLE: Duration = Duration::from_secs(30);
/// How long one fetch of a replay waits for stored outputs before asking again.
const REPLAY_FETCH_WAIT: Duration = Duration::from_secs(2);

/// One prediction of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelOutput {
    /// Model name; the last subject token.
    pub model: String,
    /// Model version.
    pub version: String,
    /// What was scored.
    pub input_id: String,
    /// Predicted label.
    pub label: String,
    /// Confidence, 0..1.
    pub score: f64,
}

/// One training metric sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Training job id.
    pub job: String,
    /// Metric name, e.g. `loss`.
    pub name: String,
    /// Training step.
    pub step: u64,
    /// Value.
    pub value: f64,
}

/// `{prefix}.ml.outputs.{model}`.
pub fn output_subject(prefix: &str, model: &str) -> String {
    format!("{prefix}.ml.outputs.{model}")
}

/// The outputs stream's server name under `prefix`: the prefix with `.` as `_`, then `_outputs`.
pub fn outputs_stream(prefix: &str) -> String {
    format!("{}_{OUTPUTS_STREAM}", prefix.replace('.', "_"))
}

/// `{prefix}.ml.metrics.{job}.{name}`.
pub fn metric_subject(prefix: &str, job: &str, name: &str) -> String {
    format!("{prefix}.ml.metrics.{job}.{name}")
}

/// Publishes a model output and flushes it to the socket (async-nats' flush does not wait
/// for the server: see common::Connection::refusals for whether it was refused).
pub async fn publish_output(
    client: &async_nats::Client,
    prefix: &str,
    output: &ModelOutput,
) -> anyhow::Result<()> {
    let subject = output_subject(prefix, &output.model);
    client
        .publish(subject.clone(), serde_json::to_vec(output)?.into())
        .await
        .with_context(|| format!("publish to {subject}"))?;
    client.flush().await.context("flush")?;
    Ok(())
}

/// Publishes a training metric and flushes it to the socket (async-nats' flush does not wait
/// for the server: see common::Connection::refusals for whether it was refused).
pub async fn publish_metric(
    client: &async_nats::Client,
    prefix: &str,
    metric: &Metric,
) -> anyhow::Result<()> {
    let subject = metric_subject(prefix, &metric.job, &metric.name);
    client
        .publish(subject.clone(), serde_json::to_vec(metric)?.into())
        .await
        .with_context(|| format!("publish to {subject}"))?;
    client.flush().await.context("flush")?;
    Ok(())
}

/// A dashboard's view: every output and every metric of the project.
pub async fn watch(
    client: &async_nats::Client,
    prefix: &str,
) -> anyhow::Result<(async_nats::Subscriber, async_nats::Subscriber)> {
    let outputs = client.subscribe(format!("{prefix}.ml.outputs.>")).await?;
    let metrics = client.subscribe(format!("{prefix}.ml.metrics.>")).await?;
    client.flush().await?;
    Ok((outputs, metrics))
}

/// A trigger's feed: outputs, shared with the other replicas in [`TRIGGER_GROUP`].
pub async fn trigger_feed(
    client: &async_nats::Client,
    prefix: &str,
) -> anyhow::Result<async_nats::Subscriber> {
    let feed = client
        .queue_subscribe(format!("{prefix}.ml.outputs.>"), TRIGGER_GROUP.to_owned())
        .await?;
    client.flush().await?;
    Ok(feed)
}

/// What a trigger does with an output: start a downstream job when the model is confident.
pub fn decide(payload: &[u8], min_score: f64) -> anyhow::Result<Option<String>> {
    let output: ModelOutput = serde_json::from_slice(payload).context("not a model output")?;
    Ok((output.score >= min_score).then(|| {
        format!(
            "start post-processing of {} with {}@{} (label {}, score {:.2})",
            output.input_id, output.model, output.version, output.label, output.score
        )
    }))
}

/// A dashboard's replay consumer `name` on the outputs stream: every stored output from the
/// first, then each new one, in stream order. The policy grants consumers of any name
/// (`ephemeral`) but only with a filter inside `<prefix>.ml.outputs.>` (this one is all of it),
/// and only on the subject that carries name and filter,
/// `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`, which async-nats sends for a named
/// consumer with one filter subject. Nothing is acknowledged: a dashboard only looks. The client must use the inbox prefix `_INBOX.<oid>`.
pub async fn replay_consumer(
    js: &jetstream::Context,
    prefix: &str,
    name: &str,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = outputs_stream(prefix);
    js.create_consumer_on_stream(
        consumer::pull::Config {
            name: Some(name.to_owned()),
            filter_subject: format!("{prefix}.ml.outputs.>"),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: REPLAY_IDLE,
            ..Default::default()
        },
        stream.as_str(),
    )
    .await
    .with_context(|| format!("replay consumer {name} on {stream}"))
}

/// The outputs `consumer` held when it was created, oldest first; what is published later is
/// left for [`consumer::PullConsumer::messages`]. Fails when they do not all arrive within
/// `timeout`.
pub async fn replay(
    consumer: &consumer::PullConsumer,
    timeout: Duration,
) -> anyhow::Result<Vec<jetstream::Message>> {
    let stored = usize::try_from(consumer.cached_info().num_pending)?;
    let mut replayed = Vec::with_capacity(stored);
    let deadline = tokio::time::Instant::now() + timeout;
    while replayed.len() < stored {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "replayed {} of {stored} stored outputs within {timeout:?}",
            replayed.len()
        );
        let mut batch = consumer
            .fetch()
            .max_messages(stored - replayed.len())
            .expires(REPLAY_FETCH_WAIT)
            .messages()
            .await
            .context("fetch stored outputs")?;
        while let Some(message) = batch.next().await {
            replayed.push(message.map_err(|e| anyhow::anyhow!("stored output: {e}"))?);
        }
    }
    Ok(replayed)
}
