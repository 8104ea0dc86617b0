//! Deploy trigger: subscribes to every sender's v1 "image-ready" events (as queue group
//! `deployer-web`), validates each payload and starts the release, naming the service principal
//! that sent it: with `AZURE_DEVOPS_URL` set it queues the release pipeline through Azure DevOps's
//! REST API ([`azure_devops`]), otherwise it only prints the release.
//!
//! ```sh
//! NATS_TOKEN_COMMAND="entra-callout dev token --app 2c7d9e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f" \
//!   cargo run --example deploy-trigger
//! ```

#[path = "azure_devops.rs"]
mod azure_devops;
#[path = "../common/mod.rs"]
mod common;
#[path = "scenario.rs"]
mod scenario;

use futures_util::StreamExt;

use scenario::PREFIX;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let devops = azure_devops::AzureDevOps::from_env()?;
    let tokens = common::TokenSource::from_env()?;
    let connection = common::connect(&common::nats_url(), "deploy-trigger", &tokens, None).await?;
    common::print_errors(connection.errors);
    let mut feed = scenario::trigger_feed(&connection.client, PREFIX).await?;
    println!("waiting for {PREFIX}.deploy.image-ready.v1.*; Ctrl-C stops");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Some(message) = feed.next() => {
                let release = match scenario::release(PREFIX, &message.subject, &message.payload) {
                    Ok(release) => release,
                    Err(err) => {
                        eprintln!("{}: rejected: {err}", message.subject);
                        continue;
                    }
                };
                println!(
                    "starting release of {} (tag {}), requested by service principal {}",
                    release.reference, release.tag, release.sender
                );
                if let Some(devops) = &devops {
                    // A failed call is reported and the trigger keeps serving; the event is not
                    // retried (core NATS: the build re-publishes if it sees no run).
                    match devops.queue(&release).await {
                        Ok(run) => println!(
                            "queued release run {}{}",
                            run.id,
                            run.web.map(|w| format!(" ({w})")).unwrap_or_default()
                        ),
                        Err(err) => eprintln!("could not queue the release: {err:#}"),
                    }
                }
            }
        }
    }
    Ok(())
}
