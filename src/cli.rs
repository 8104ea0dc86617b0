//! Command line: `serve` runs the service; `check`, `explain` and `test` work offline.
//!
//! This is the binary's edge, so errors are `anyhow` here and typed everywhere below.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::warn;

use crate::app;
use crate::config::{Config, ConfigError, ProcessEnv};
use crate::keys;
use crate::service;
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
        /// How the client would connect: standard, websocket, mqtt or leafnode. Without it,
        /// bindings restricted by `connection_types` do not match.
        #[arg(long, value_parser = parse_connection_type)]
        connection_type: Option<crate::policy::ConnectionType>,
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
    #[cfg(feature = "dev")]
    Dev(crate::dev::DevArgs),
    /// Print the nats-server configuration matching the keys of `keys init`: max_control_line,
    /// the callout wiring with the service's own user as the only auth user, and in operator
    /// mode the signed operator and account JWTs as a resolver preload. Prints no secret.
    NatsConfig {
        /// How nats-server is set up.
        #[arg(long, value_enum)]
        mode: ModeArg,
        /// The key directory written by `keys init`.
        #[arg(long, default_value = "keys")]
        keys: PathBuf,
        /// Config mode: a target account (repeatable).
        #[arg(long = "account", default_values_t = [String::from("APP")])]
        accounts: Vec<String>,
        /// Config mode: the service's user name.
        #[arg(long, default_value = "auth")]
        user: String,
        /// Operator mode: where the server keeps account JWTs.
        #[arg(long, value_enum, default_value_t = ResolverArg::Memory)]
        resolver: ResolverArg,
        /// Operator mode, `--resolver full`: the JWT directory.
        #[arg(long, default_value = "./jwt")]
        resolver_dir: String,
        /// Add a TLS WebSocket listener for browsers on this address, e.g. 0.0.0.0:443.
        #[arg(long, value_name = "HOST:PORT")]
        websocket: Option<String>,
    },
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the key material for a new deployment. Config mode: issuer seed, curve seed and
    /// NATS password. Operator mode: operator, system, callout and target account seeds, the
    /// service's and the sentinel's creds, a system user's creds, and the curve seed. Secret
    /// files are written with mode 0600 and never printed; existing files are kept.
    Init {
        /// Directory to write the keys into.
        dir: PathBuf,
        /// How nats-server is set up.
        #[arg(long, value_enum, default_value_t = ModeArg::Config)]
        mode: ModeArg,
        /// Operator mode: a target account to create (repeatable).
        #[arg(long = "account", default_values_t = [String::from("APP")])]
        accounts: Vec<String>,
    },
}

/// `--mode` of `keys init` and `nats-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// `auth_callout` in the server configuration.
    Config,
    /// Decentralized JWT auth; the callout is in the callout account's JWT.
    Operator,
}

/// `--resolver` of `nats-config --mode operator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolverArg {
    /// `resolver: MEM`: the preloaded JWTs, updates last until restart.
    Memory,
    /// The NATS-based `full` resolver: updates (revocations) persist in a directory.
    Full,
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
            connection_type,
            json,
        } => explain(
            &config,
            token.as_deref(),
            claims.as_deref(),
            now,
            connection_type,
            json,
        ),
        Command::Test { config, tests } => test(&config, &tests),
        #[cfg(feature = "dev")]
        Command::Dev(args) => Ok(crate::dev::run(args)?),
        Command::Keys(KeysCommand::Init {
            dir,
            mode: ModeArg::Config,
            ..
        }) => {
            let created = keys::init(&dir)?;
            println!("wrote keys to {}", dir.display());
            println!("issuer (auth_callout.issuer): {}", created.issuer);
            println!("xkey   (auth_callout.xkey):   {}", created.xkey);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Init {
            dir,
            mode: ModeArg::Operator,
            accounts,
        }) => {
            let created = keys::init_operator(&dir, &accounts, telemetry::unix_now())?;
            print!("{}", operator_summary(&dir, &created));
            Ok(ExitCode::SUCCESS)
        }
        Command::NatsConfig {
            mode,
            keys: dir,
            accounts,
            user,
            resolver,
            resolver_dir,
            websocket,
        } => {
            print!(
                "{}",
                nats_config(mode, &dir, &accounts, &user, resolver, resolver_dir)?
            );
            if let Some(listen) = websocket {
                print!("{}", crate::nats_config::websocket_block(&listen));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Public keys and the service configuration that uses them; no seed.
fn operator_summary(dir: &Path, created: &keys::OperatorKeys) -> String {
    use std::fmt::Write;

    let path = |name: &str| dir.join(name).display().to_string();
    let mut out = String::new();
    let _ = writeln!(out, "wrote operator-mode keys to {}", dir.display());
    let _ = writeln!(out, "operator:        {}", created.operator.public_key());
    let _ = writeln!(out, "system account:  {}", created.system.public_key());
    let _ = writeln!(out, "callout account: {}", created.callout.public_key());
    let _ = writeln!(
        out,
        "service user:    {} (the callout account's only auth user)",
        created.service_user
    );
    let _ = writeln!(out, "xkey:            {}", created.xkey);
    for (name, target) in &created.accounts {
        let _ = writeln!(
            out,
            "account {name}: {} (signing key {})",
            target.account.public_key(),
            target.signing.public_key()
        );
    }
    let _ = writeln!(
        out,
        "\nnext: entra-callout nats-config --mode operator --keys {} > nats-server.conf",
        dir.display()
    );
    let _ = writeln!(
        out,
        "clients present {} (or nothing: it is the server's default_sentinel) and their token",
        path(keys::SENTINEL_CREDS)
    );
    let _ = writeln!(out, "\nservice configuration:");
    let _ = writeln!(
        out,
        "nats:\n  credentials_file: {}",
        path(keys::SERVICE_CREDS)
    );
    let _ = writeln!(
        out,
        "callout:\n  mode: operator\n  issuer_seed_file: {}\n  xkey_seed_file: {}",
        path(keys::CALLOUT_SEED),
        path(keys::XKEY_SEED)
    );
    let _ = writeln!(out, "accounts:");
    for (name, target) in &created.accounts {
        let _ = writeln!(
            out,
            "  {name}:\n    public_key: {}\n    signing_key_seed_file: {}",
            target.account.public_key(),
            path(&keys::signing_key_file(name)),
        );
    }
    out
}

fn nats_config(
    mode: ModeArg,
    dir: &Path,
    accounts: &[String],
    user: &str,
    resolver: ResolverArg,
    resolver_dir: String,
) -> anyhow::Result<String> {
    match mode {
        ModeArg::Config => {
            let seed = std::fs::read_to_string(dir.join(keys::ISSUER_SEED)).with_context(|| {
                format!("cannot read {}", dir.join(keys::ISSUER_SEED).display())
            })?;
            let issuer = nkeys::KeyPair::from_seed(seed.trim())
                .ok()
                .filter(|kp| kp.key_pair_type() == nkeys::KeyPairType::Account)
                .with_context(|| {
                    format!(
                        "{} is not an account seed (SA...)",
                        dir.join(keys::ISSUER_SEED).display()
                    )
                })?;
            let xkey = match std::fs::read_to_string(dir.join(keys::XKEY_SEED)) {
                Ok(seed) => Some(
                    nkeys::XKey::from_seed(seed.trim())
                        .ok()
                        .with_context(|| {
                            format!(
                                "{} is not a curve seed (SX...)",
                                dir.join(keys::XKEY_SEED).display()
                            )
                        })?
                        .public_key(),
                ),
                Err(_) => None,
            };
            Ok(crate::nats_config::config_mode(
                &crate::nats_config::ConfigMode {
                    issuer: &issuer.public_key(),
                    xkey: xkey.as_deref(),
                    user,
                    callout_account: crate::config::DEFAULT_CALLOUT_ACCOUNT,
                    accounts,
                },
            ))
        }
        ModeArg::Operator => {
            let keys = keys::load_operator(dir)?;
            let resolver = match resolver {
                ResolverArg::Memory => crate::nats_config::Resolver::Memory,
                ResolverArg::Full => crate::nats_config::Resolver::Full { dir: resolver_dir },
            };
            Ok(crate::nats_config::operator_mode(
                &keys,
                &resolver,
                telemetry::unix_now(),
            )?)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path, &ProcessEnv) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
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

fn parse_connection_type(value: &str) -> Result<crate::policy::ConnectionType, String> {
    crate::policy::ConnectionType::parse(value)
        .ok_or_else(|| "expected standard, websocket, mqtt or leafnode".to_owned())
}

fn explain(
    path: &Path,
    token: Option<&str>,
    claims: Option<&Path>,
    now: Option<u64>,
    connection: Option<crate::policy::ConnectionType>,
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
        connection,
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
    let _log = telemetry::init(&config.log);
    for warning in &config.warnings {
        warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_async(config))?;
    Ok(ExitCode::SUCCESS)
}

/// `serve`: the composition root does everything; this only waits for SIGTERM/SIGINT.
async fn serve_async(config: Config) -> anyhow::Result<()> {
    let running = app::start(config, service::shutdown_signal())?;
    running.wait().await?;
    Ok(())
}
