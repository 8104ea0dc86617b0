//! Build agent: the build's service principal (app-only) publishes a versioned "image-ready"
//! event under its own object id, then exits.
//!
//! ```sh
//! NATS_TOKEN_COMMAND="entra-callout dev token --app 8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92" \
//!   cargo run --example build-agent -- 1.4.2
//! ```

#[path = "../common/mod.rs"]
mod common;
#[path = "scenario.rs"]
mod scenario;

use scenario::PREFIX;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tag = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "1.0.0".to_owned());
    let tokens = common::TokenSource::from_env()?;
    // The policy lets it publish only under its own object id, which its token carries.
    let token = tokens.fetch().await.map_err(anyhow::Error::msg)?;
    let sender = common::claim(&token, "oid").ok_or_else(|| anyhow::anyhow!("token has no oid"))?;
    let mut connection = common::connect(&common::nats_url(), "build-agent", &tokens, None).await?;
    let event = scenario::example_event(&tag);
    scenario::validate(&serde_json::to_vec(&event)?)?;
    let subject = scenario::subject(PREFIX, &sender);
    scenario::publish(&connection.client, PREFIX, &sender, &event).await?;
    // The server answers an allowed publish with nothing and a refused one with an error.
    if let Some(error) = connection
        .refusals(std::slice::from_ref(&subject))
        .await?
        .first()
    {
        anyhow::bail!("refused by the server: {error}");
    }
    println!("published {subject} for {}:{}", event.image, event.tag);
    connection.client.drain().await?;
    Ok(())
}
