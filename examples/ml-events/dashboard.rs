//! ML dashboard: a signed-in user in the "ML Vision Analysts" group watching outputs and
//! metrics of project `contoso.vision` live. Its inbox is private: `_INBOX.<its object id>`.
//!
//! ```sh
//! NATS_TOKEN_COMMAND="entra-callout dev token --group c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43" \
//!   cargo run --example ml-dashboard
//! ```

#[path = "../common/mod.rs"]
mod common;
#[path = "scenario.rs"]
mod scenario;

use futures_util::StreamExt;

use scenario::PREFIX;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tokens = common::TokenSource::from_env()?;
    // The policy grants replies only on the user's own inbox, named after its object id.
    let token = tokens.fetch().await.map_err(anyhow::Error::msg)?;
    let oid = common::claim(&token, "oid").ok_or_else(|| anyhow::anyhow!("token has no oid"))?;
    let inbox = Some(format!("_INBOX.{oid}"));
    let connection = common::connect(&common::nats_url(), "ml-dashboard", &tokens, inbox).await?;
    common::print_errors(connection.errors);
    let (mut outputs, mut metrics) = scenario::watch(&connection.client, PREFIX).await?;
    println!("watching {PREFIX}.ml.outputs.> and {PREFIX}.ml.metrics.>; Ctrl-C stops");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Some(message) = outputs.next() => {
                println!("output  {}  {}", message.subject, String::from_utf8_lossy(&message.payload));
            }
            Some(message) = metrics.next() => {
                println!("metric  {}  {}", message.subject, String::from_utf8_lossy(&message.payload));
            }
        }
    }
    Ok(())
}
