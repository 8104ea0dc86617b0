//! Deploy trigger: subscribes to every sender's v1 "image-ready" events (as queue group
//! `deployer-web`), validates each payload and starts the release, naming the service principal
//! that sent it.
//!
//! ```sh
//! NATS_TOKEN_COMMAND="entra-callout dev token --app 2c7d9e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f" \
//!   cargo run --example deploy-trigger
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
    let connection = common::connect(&common::nats_url(), "deploy-trigger", &tokens, None).await?;
    common::print_errors(connection.errors);
    let mut feed = scenario::trigger_feed(&connection.client, PREFIX).await?;
    println!("waiting for {PREFIX}.deploy.image-ready.v1.*; Ctrl-C stops");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Some(message) = feed.next() => {
                match scenario::release(PREFIX, &message.subject, &message.payload) {
                    Ok(release) => println!(
                        "starting release of {} (tag {}), requested by service principal {}",
                        release.reference, release.tag, release.sender
                    ),
                    Err(err) => eprintln!("{}: rejected: {err}", message.subject),
                }
            }
        }
    }
    Ok(())
}
