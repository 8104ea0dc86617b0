//! Command line: `serve` runs the service, `check` validates a configuration offline.
//!
//! This is the binary's edge, so errors are `anyhow` here and typed everywhere below.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{info, warn};

use crate::callout::Authorizer;
use crate::config::{Config, ConfigError, ProcessEnv};
use crate::keys;
use crate::oidc::Verifier;
use crate::service::{self, LoopSettings};
use crate::telemetry;

/// A NATS authorization callout for Microsoft Entra ID and OIDC access tokens.
#[derive(Debug, Parser)]
#[command(name = "entra-callout", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer nats-server authorization callouts.
    Serve {
        /// Configuration file.
        #[arg(long, short, env = "ENTRA_CALLOUT_CONFIG")]
        config: PathBuf,
    },
    /// Validate the configuration and its policies without touching the network.
    Check {
        /// Configuration file.
        #[arg(long, short, env = "ENTRA_CALLOUT_CONFIG")]
        config: PathBuf,
    },
    /// Manage key material.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the issuer seed, curve seed and NATS password for a new config-mode deployment.
    /// Seed files are written with mode 0600 and never printed; existing files are kept.
    Init {
        /// Directory to write the keys into.
        dir: PathBuf,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => Ok(check(&config)),
        Command::Serve { config } => serve(&config),
        Command::Keys(KeysCommand::Init { dir }) => {
            let created = keys::init(&dir)?;
            println!("wrote keys to {}", dir.display());
            println!("issuer (auth_callout.issuer): {}", created.issuer);
            println!("xkey   (auth_callout.xkey):   {}", created.xkey);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path, &ProcessEnv) {
        Ok(config) => {
            println!(
                "{}: ok ({} provider(s), {} policy rule(s))",
                path.display(),
                config.providers.len(),
                config.policies.len()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

fn report(err: &ConfigError) {
    eprintln!("{err}");
}

fn serve(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path, &ProcessEnv) {
        Ok(config) => config,
        Err(err) => {
            report(&err);
            return Ok(ExitCode::FAILURE);
        }
    };
    telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_async(config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_async(config: Config) -> anyhow::Result<()> {
    let verifier = Arc::new(
        Verifier::new(config.providers.clone()).context("cannot set up the identity providers")?,
    );
    // Keys are fetched now so the first clients need not wait; an unreachable provider is not
    // fatal (its tokens are refused with `keys_unavailable` until it answers).
    if let Err(err) = verifier.warm().await {
        warn!(error = %err, "identity provider keys not loaded yet");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let refresh = verifier.spawn_refresh(wait_for(stop_rx));

    let authorizer = Arc::new(Authorizer::new(
        config.callout.issuer.clone(),
        config.callout.xkey.clone(),
        verifier,
        config.policies,
        config.callout.request_leeway.as_secs(),
    ));
    let client = service::connect(&config.nats)
        .await
        .context("cannot connect to NATS")?;
    info!(
        issuer = %config.callout.issuer.public_key(),
        xkey = config.callout.xkey.as_ref().map(nkeys::XKey::public_key).unwrap_or_default(),
        "entra-callout started"
    );
    let settings = LoopSettings {
        queue_group: config.nats.queue_group.clone(),
        max_concurrency: config.callout.max_concurrency,
        drain_timeout: config.callout.drain_timeout,
    };
    let requests = service::subscribe(&client, &settings.queue_group).await?;
    service::run(
        client,
        requests,
        authorizer,
        settings,
        service::shutdown_signal(),
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = refresh.await;
    info!("stopped");
    Ok(())
}

async fn wait_for(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
