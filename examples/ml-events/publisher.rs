//! ML publisher: a training job / inference endpoint (an app-only identity) that publishes model
//! outputs and training metrics for project `contoso.vision`.
//!
//! ```sh
//! NATS_TOKEN_COMMAND="entra-callout dev token --role Ml.Vision.Producer" \
//!   cargo run --example ml-publisher
//! ```

#[path = "../common/mod.rs"]
mod common;
#[path = "scenario.rs"]
mod scenario;

use std::time::Duration;

use scenario::{Metric, ModelOutput, PREFIX};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tokens = common::TokenSource::from_env()?;
    let mut connection =
        common::connect(&common::nats_url(), "ml-publisher", &tokens, None).await?;
    let client = connection.client.clone();
    println!(
        "publishing to {PREFIX}.ml.outputs.resnet50 and {PREFIX}.ml.metrics.job-17.loss; Ctrl-C stops"
    );
    let mut step = 0u64;
    loop {
        step += 1;
        let output = ModelOutput {
            model: "resnet50".into(),
            version: "2024-06-01".into(),
            input_id: format!("img-{step:05}"),
            label: if step.is_multiple_of(3) { "cat" } else { "dog" }.into(),
            score: 0.5 + (step % 5) as f64 / 10.0,
        };
        let metric = Metric {
            job: "job-17".into(),
            name: "loss".into(),
            step,
            value: 1.0 / step as f64,
        };
        scenario::publish_output(&client, PREFIX, &output).await?;
        scenario::publish_metric(&client, PREFIX, &metric).await?;
        let subjects = [
            scenario::output_subject(PREFIX, &output.model),
            scenario::metric_subject(PREFIX, &metric.job, &metric.name),
        ];
        // The server answers an allowed publish with nothing and a refused one with an error.
        let refused = connection.refusals(&subjects).await?;
        if refused.is_empty() {
            println!(
                "published {} (score {:.2}) and loss {:.4}",
                output.input_id, output.score, metric.value
            );
        }
        for error in refused {
            println!("refused: {error}");
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    client.drain().await?;
    Ok(())
}
