//! ML trigger: an app-only identity that reacts to new model outputs. Replicas share the queue
//! group `triggers`, so each output starts one downstream job however many replicas run.
//!
//! ```sh
//! NATS_TOKEN_COMMAND="entra-callout dev token --role Ml.Vision.Trigger" \
//!   cargo run --example ml-trigger
//! ```

#[path = "../common/mod.rs"]
mod common;
#[path = "scenario.rs"]
mod scenario;

use futures_util::StreamExt;

use scenario::PREFIX;

/// Outputs below this confidence start nothing.
const MIN_SCORE: f64 = 0.8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tokens = common::TokenSource::from_env()?;
    let connection = common::connect(&common::nats_url(), "ml-trigger", &tokens, None).await?;
    common::print_errors(connection.errors);
    let mut feed = scenario::trigger_feed(&connection.client, PREFIX).await?;
    println!(
        "triggering on {PREFIX}.ml.outputs.> (queue group {}); Ctrl-C stops",
        scenario::TRIGGER_GROUP
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Some(message) = feed.next() => match scenario::decide(&message.payload, MIN_SCORE) {
                Ok(Some(action)) => println!("{action}"),
                Ok(None) => println!("{}: below {MIN_SCORE}, nothing to do", message.subject),
                Err(err) => eprintln!("{}: ignored: {err:#}", message.subject),
            },
        }
    }
    Ok(())
}
