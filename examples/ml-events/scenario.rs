//! The ML events scenario (policies/ml-events.yaml), as functions the example binaries and the
//! integration test share.
//!
//! Training jobs and inference endpoints publish model outputs and metrics; dashboards, APIs and
//! triggers consume them in real time. Every subject lives under the project's prefix
//! (`contoso.vision`): the callout grants nothing outside it, so tenants and projects cannot
//! see each other's events.

#![allow(dead_code, unreachable_pub)]

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The project the examples work in: tenant `contoso`, project `vision`.
pub const PREFIX: &str = "contoso.vision";
/// The queue group triggers share, so that each output starts one downstream job.
pub const TRIGGER_GROUP: &str = "triggers";

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
