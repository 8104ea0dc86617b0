//! Command line: `serve` runs the service; `check`, `explain` and `test` work offline.
//!
//! This is the binary's edge, so errors are `anyhow` here and typed everywhere below.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{info, warn};

use crate::admin::{self, AdminState, Readiness};
use crate::callout::Authorizer;
use crate::config::{Config, ConfigError, ProcessEnv};
use crate::keys;
use crate::oidc::Verifier;
use crate::reload::Reloader;
use crate::service::{self, LoopSettings, Ops};
use crate::telemetry;
use crate::tools;

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
    /// Show what a token would get: provider routing, every binding with why it matched or
    /// not, and the final NATS permissions and expiry. Offline; the signature is NOT verified.
    /// Exits 1 when the token would be refused.
    Explain {
        /// Configuration file.
        #[arg(long, short, env = "ENTRA_CALLOUT_CONFIG")]
        config: PathBuf,
        /// The access token (a JWT), or `-` to read it from standard input.
        #[arg(long, conflicts_with = "claims", required_unless_present = "claims")]
        token: Option<String>,
        /// A JSON file of token claims; `iss`, `aud`, `tid`, lifetime and `sub` are filled in
        /// when absent.
        #[arg(long)]
        claims: Option<PathBuf>,
        /// Evaluate at this time (unix seconds) instead of now.
        #[arg(long)]
        now: Option<u64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run policy test files (claims in, expected account and subjects out). Without TESTS,
    /// runs the `tests` directory next to the policies. Exits 1 when a test fails.
    Test {
        /// Configuration file.
        #[arg(long, short, env = "ENTRA_CALLOUT_CONFIG")]
        config: PathBuf,
        /// Test files or directories of them.
        tests: Vec<PathBuf>,
    },
    /// Manage key material.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Start a local environment (nats-server, a dev token issuer, the service with the example
    /// policies), or print a dev token with `dev token`. Needs no Azure tenant.
    Dev(crate::dev::DevArgs),
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
        Command::Explain {
            config,
            token,
            claims,
            now,
            json,
        } => explain(&config, token.as_deref(), claims.as_deref(), now, json),
        Command::Test { config, tests } => test(&config, &tests),
        Command::Dev(args) => Ok(crate::dev::run(args)?),
        Command::Keys(KeysCommand::Init { dir }) => {
            let created = keys::init(&dir)?;
            println!("wrote keys to {}", dir.display());
            println!("issuer (auth_callout.issuer): {}", created.issuer);
            println!("xkey   (auth_callout.xkey):   {}", created.xkey);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path, &ProcessEnv) {
        Ok(config) => {
            println!(
                "{}: ok ({} provider(s), {} tenant(s), {} role(s), {} binding(s))",
                path.display(),
                config.providers.len(),
                config.policies.tenant_names().len(),
                config.policies.role_names().len(),
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

fn explain(
    path: &Path,
    token: Option<&str>,
    claims: Option<&Path>,
    now: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path, &ProcessEnv) {
        Ok(config) => config,
        Err(err) => {
            report(&err);
            return Ok(ExitCode::from(2));
        }
    };
    let now = now.unwrap_or_else(telemetry::unix_now);
    let (claims, from_token) = match (token, claims) {
        (Some("-"), _) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read the token from standard input")?;
            (tools::decode_unverified(&text)?, true)
        }
        (Some(token), _) => (tools::decode_unverified(token)?, true),
        (None, Some(file)) => (tools::read_claims(file)?, false),
        (None, None) => anyhow::bail!("give --token or --claims"),
    };
    let explained = tools::explain(
        &config.providers,
        &config.policies,
        claims,
        None,
        !from_token,
        now,
    );
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&tools::render_json(&explained, from_token))?
        );
    } else {
        if from_token {
            println!(
                "{}
",
                tools::UNVERIFIED_WARNING
            );
        }
        print!("{}", tools::render_text(&explained, now));
    }
    Ok(if explained.allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn test(path: &Path, tests: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path, &ProcessEnv) {
        Ok(config) => config,
        Err(err) => {
            report(&err);
            return Ok(ExitCode::from(2));
        }
    };
    let paths = if tests.is_empty() {
        let dir = if config.policies_path.is_dir() {
            config.policies_path.join("tests")
        } else {
            config
                .policies_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("tests")
        };
        vec![dir]
    } else {
        tests.to_vec()
    };
    let files = tools::test_files(&paths)?;
    if files.is_empty() {
        anyhow::bail!("no test files found in {}", display_paths(&paths));
    }
    let now = telemetry::unix_now();
    let (mut total, mut failed) = (0, 0);
    for file in &files {
        let results = match tools::run_test_file(file, &config.providers, &config.policies, now) {
            Ok(results) => results,
            Err(err) => {
                eprintln!("{err}");
                return Ok(ExitCode::from(2));
            }
        };
        for r in results {
            total += 1;
            if r.failures.is_empty() {
                println!("ok    {}  {}", r.location, r.name);
            } else {
                failed += 1;
                println!("FAIL  {}  {}", r.location, r.name);
                for f in &r.failures {
                    println!("        {f}");
                }
            }
        }
    }
    println!(
        "
{total} test(s) in {} file(s): {} passed, {failed} failed",
        files.len(),
        total - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
    let ops = Ops::new().context("cannot set up metrics")?;
    let Ops { metrics, readiness } = ops.clone();
    if let Err(err) = metrics.install_global() {
        warn!(error = %err, "key refresh and cache metrics are not recorded");
    }
    // The admin listener comes first, so liveness answers while the rest starts.
    let admin_state = AdminState {
        readiness: Arc::clone(&readiness),
        metrics: Arc::clone(&metrics),
    };
    let admin = admin::spawn(config.admin.listen, admin_state)?;

    let verifier = Arc::new(
        Verifier::new(config.providers.clone()).context("cannot set up the identity providers")?,
    );
    metrics.register_providers(verifier.provider_names().map(|name| &**name));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Keys are fetched now so the first clients need not wait; an unreachable provider is not
    // fatal (its tokens are refused with `keys_unavailable` until it answers) but keeps the
    // service not ready until its keys load.
    let keys = load_keys(&verifier, &readiness, wait_for(stop_rx.clone())).await;
    let refresh = verifier.spawn_refresh(wait_for(stop_rx.clone()));

    let settings = LoopSettings::from_config(&config);
    metrics.set_policy_rules(config.policies.len());
    let authorizer = Arc::new(Authorizer::from_config(
        &config.callout,
        config.policies,
        verifier,
    ));
    readiness.set_policies_loaded();
    let reloader = Arc::new(Reloader::new(
        config.policies_path.clone(),
        config.policy_options.clone(),
        Arc::clone(&metrics),
        {
            let authorizer = Arc::clone(&authorizer);
            move |policies| authorizer.replace_policies(policies)
        },
    ));
    let reload = reloader
        .spawn(config.policy_reload, wait_for(stop_rx))
        .inspect_err(|err| warn!(error = %err, "policies are reloaded on SIGHUP only"))
        .ok();

    let client = service::connect(&config.nats)
        .await
        .context("cannot connect to NATS")?;
    readiness.watch_nats(client.clone());
    info!(
        issuer = %config.callout.issuer.public_key(),
        xkey = config.callout.xkey.as_ref().map(nkeys::XKey::public_key).unwrap_or_default(),
        "entra-callout started"
    );
    let requests = service::subscribe(&client, &settings.queue_group).await?;
    service::run(
        client,
        requests,
        authorizer,
        settings,
        ops,
        service::shutdown_signal(),
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = refresh.await;
    for task in [keys, reload].into_iter().flatten() {
        let _ = task.await;
    }
    admin.stop();
    info!("stopped");
    Ok(())
}

/// Loads every provider's signing keys and marks readiness once they are in. If a provider
/// does not answer, retries in the background (returned) with backoff until `stop`.
///
/// Readiness means "`warm` succeeded once"; a verifier that reports loaded keys itself can
/// replace this check.
async fn load_keys(
    verifier: &Arc<Verifier>,
    readiness: &Arc<Readiness>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    const FIRST_RETRY: Duration = Duration::from_secs(1);
    const MAX_RETRY: Duration = Duration::from_secs(60);
    match verifier.warm().await {
        Ok(()) => {
            readiness.set_keys_loaded();
            return None;
        }
        Err(err) => warn!(error = %err, "identity provider keys not loaded yet"),
    }
    let (verifier, readiness) = (Arc::clone(verifier), Arc::clone(readiness));
    Some(tokio::spawn(async move {
        tokio::pin!(stop);
        let mut delay = FIRST_RETRY;
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(delay) => {}
            }
            match verifier.warm().await {
                Ok(()) => {
                    info!("identity provider keys loaded");
                    readiness.set_keys_loaded();
                    return;
                }
                Err(err) => {
                    warn!(error = %err, retry_in = ?delay, "identity provider keys not loaded yet")
                }
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    }))
}

async fn wait_for(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
