//! Deploy trigger: reads every sender's v1 "image-ready" events from the JetStream stream
//! `image-ready` through the durable consumer `deployer`, validates each payload and starts the
//! release, naming the service principal that sent it: with `AZURE_DEVOPS_URL` set it queues the
//! release pipeline through Azure DevOps's REST API ([`azure_devops`]), otherwise it only prints
//! the release. It acknowledges an event only after the release was triggered, so a restarted
//! trigger resumes with what it had not finished; an invalid payload is terminated (never
//! delivered again) and a failed call is delivered again later.
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

use scenario::{DURABLE, Handled, PREFIX};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let devops = azure_devops::AzureDevOps::from_env()?;
    let tokens = common::TokenSource::from_env()?;
    // JetStream's answers and the fetched events come to its private inbox `_INBOX.<oid>`.
    let token = tokens.fetch().await.map_err(anyhow::Error::msg)?;
    let oid = common::claim(&token, "oid").ok_or_else(|| anyhow::anyhow!("token has no oid"))?;
    let connection = common::connect(
        &common::nats_url(),
        "deploy-trigger",
        &tokens,
        Some(format!("_INBOX.{oid}")),
    )
    .await?;
    common::print_errors(connection.errors);
    let js = async_nats::jetstream::new(connection.client.clone());
    let consumer = scenario::deployer(&js, PREFIX).await?;
    println!(
        "waiting for {PREFIX}.deploy.image-ready.v1.* through durable consumer {DURABLE} of {}; \
         Ctrl-C stops",
        scenario::stream_name(PREFIX)
    );
    let devops = &devops;
    let trigger = |release: scenario::Release| async move {
        println!(
            "starting release of {} (tag {}), requested by service principal {}",
            release.reference, release.tag, release.sender
        );
        if let Some(devops) = devops {
            let run = devops.queue(&release).await?;
            println!(
                "queued release run {}{}",
                run.id,
                run.web.map(|w| format!(" ({w})")).unwrap_or_default()
            );
        }
        Ok(())
    };
    let report = |subject: &str, handled: Handled| match handled {
        Handled::Released(_) => {}
        Handled::Rejected(err) => eprintln!("{subject}: rejected: {err}"),
        Handled::Failed(release, err) => eprintln!(
            "could not queue the release of {}: {err:#}; delivered again in {} s",
            release.reference,
            scenario::RETRY_DELAY.as_secs()
        ),
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        served = scenario::serve(consumer, PREFIX, trigger, report) => served?,
    }
    Ok(())
}
