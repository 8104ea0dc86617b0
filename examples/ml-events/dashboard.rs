//! ML dashboard: a signed-in user in the "ML Vision Analysts" group watching outputs and
//! metrics of project `contoso.vision` live. Its inbox is private: `_INBOX.<its object id>`.
//!
//! With `--replay` it first replays the outputs stored in the stream `outputs`
//! (`contoso_vision_outputs`), oldest first, then reads new outputs through the same consumer,
//! so a dashboard that starts late misses none.
//!
//! ```sh
//! NATS_TOKEN_COMMAND="entra-callout dev token --group c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43" \
//!   cargo run --example ml-dashboard -- --replay
//! ```

#[path = "../common/mod.rs"]
mod common;
#[path = "scenario.rs"]
mod scenario;

use std::time::Duration;

use futures_util::StreamExt;

use scenario::PREFIX;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let replay = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--replay") => true,
        Some(other) => anyhow::bail!("unknown argument {other}; usage: ml-dashboard [--replay]"),
    };
    let tokens = common::TokenSource::from_env()?;
    // The policy grants replies only on the user's own inbox, named after its object id.
    let token = tokens.fetch().await.map_err(anyhow::Error::msg)?;
    let oid = common::claim(&token, "oid").ok_or_else(|| anyhow::anyhow!("token has no oid"))?;
    let inbox = Some(format!("_INBOX.{oid}"));
    let connection = common::connect(&common::nats_url(), "ml-dashboard", &tokens, inbox).await?;
    common::print_errors(connection.errors);
    let (core_outputs, mut metrics) = scenario::watch(&connection.client, PREFIX).await?;
    let mut outputs = if replay {
        // The replay consumer delivers new outputs too; the core subscription would repeat them.
        drop(core_outputs);
        let js = async_nats::jetstream::new(connection.client.clone());
        // Named after the user and this process, so two dashboards never share a consumer.
        let name = format!("dashboard-{oid}-{}", std::process::id());
        let consumer = scenario::replay_consumer(&js, PREFIX, &name).await?;
        let stored = scenario::replay(&consumer, Duration::from_secs(30)).await?;
        for message in &stored {
            println!(
                "stored  {}  {}",
                message.subject,
                String::from_utf8_lossy(&message.payload)
            );
        }
        println!(
            "replayed {} stored outputs of {}",
            stored.len(),
            scenario::outputs_stream(PREFIX)
        );
        consumer
            .messages()
            .await?
            .map(|m| {
                m.map(|m| (m.subject.to_string(), m.payload.clone()))
                    .map_err(|e| e.to_string())
            })
            .boxed()
    } else {
        core_outputs
            .map(|m| Ok((m.subject.to_string(), m.payload)))
            .boxed()
    };
    println!("watching {PREFIX}.ml.outputs.> and {PREFIX}.ml.metrics.>; Ctrl-C stops");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Some(output) = outputs.next() => match output {
                Ok((subject, payload)) => println!("output  {subject}  {}", String::from_utf8_lossy(&payload)),
                Err(err) => eprintln!("outputs: {err}"),
            },
            Some(message) = metrics.next() => {
                println!("metric  {}  {}", message.subject, String::from_utf8_lossy(&message.payload));
            }
        }
    }
    Ok(())
}
