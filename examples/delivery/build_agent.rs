//! Build agent: the build's service principal (app-only) publishes a versioned "image-ready"
//! event under its own object id into the JetStream stream `image-ready`, with `Nats-Msg-Id` =
//! the image digest, waits for the stream's acknowledgement, then exits. A repeated publish of
//! the same digest (within the stream's duplicate window) is reported as a duplicate: stored
//! once, it triggers nothing.
//!
//! ```sh
//! NATS_TOKEN_COMMAND="entra-callout dev token --app 8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92" \
//!   cargo run --example build-agent -- 1.4.2 [sha256:<64 hex>]
//! ```
//!
//! The digest defaults to the example's (`sha256:4f4f…`); give another to publish a new image.

#[path = "../common/mod.rs"]
mod common;
#[path = "scenario.rs"]
mod scenario;

use std::future::IntoFuture;

use scenario::PREFIX;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tag = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "1.0.0".to_owned());
    let tokens = common::TokenSource::from_env()?;
    // The policy lets it publish only under its own object id, which its token carries; the
    // stream's acknowledgement comes to its private inbox `_INBOX.<oid>`.
    let token = tokens.fetch().await.map_err(anyhow::Error::msg)?;
    let sender = common::claim(&token, "oid").ok_or_else(|| anyhow::anyhow!("token has no oid"))?;
    let mut connection = common::connect(
        &common::nats_url(),
        "build-agent",
        &tokens,
        Some(format!("_INBOX.{sender}")),
    )
    .await?;
    let js = async_nats::jetstream::new(connection.client.clone());
    let mut event = scenario::example_event(&tag);
    if let Some(digest) = std::env::args().nth(2) {
        event.digest = digest;
    }
    scenario::validate(&serde_json::to_vec(&event)?)?;
    let subject = scenario::subject(PREFIX, &sender);
    let ack = scenario::publish_durable(&js, PREFIX, &sender, &event)
        .await?
        .into_future();
    tokio::pin!(ack);
    // A refused publish is never acknowledged: the server's refusal is the answer.
    let ack = tokio::select! {
        ack = &mut ack => ack,
        refused = connection.refusals(std::slice::from_ref(&subject)) => {
            if let Some(error) = refused?.first() {
                anyhow::bail!("refused by the server: {error}");
            }
            ack.await
        }
    }
    .map_err(|e| anyhow::anyhow!("{subject}: no acknowledgement from the stream: {e}"))?;
    if ack.duplicate {
        println!(
            "duplicate: {} is already in stream {} (sequence {}); nothing new to deploy",
            event.digest, ack.stream, ack.sequence
        );
    } else {
        println!("published {subject} for {}:{}", event.image, event.tag);
    }
    connection.client.drain().await?;
    Ok(())
}
