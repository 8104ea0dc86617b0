//! Service configuration: the YAML file, read in two stages.
//!
//! [`RawConfig`] mirrors the file and does no I/O beyond parsing. [`Config::load`] turns it into
//! validated values — key pairs, provider settings, compiled policies — and reports every problem
//! it finds at once, each with `file:line:column`, so an operator fixes a file in one pass.
//! Secrets (seeds, passwords) come from files or environment variables; their values never
//! appear in errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::accounts::{AccountKey, Mode, Signers};
use crate::admin::AdminSettings;
use crate::callout::CalloutSettings;
use crate::diagnostic::{Diagnostic, yaml_problem};
use crate::duration::parse_duration;
use crate::oidc::{
    GraphCredential, GraphSettings, GroupsOverage, PrincipalRule, ProviderSettings, SettingsError,
    Tenants, Verifier, VerifierError, Versions,
};
use crate::policy::{CompileOptions, PolicyErrors, PolicySet};
use crate::reload::ReloadSettings;
use crate::rotate::CredentialFiles;
use crate::secret::{Secret, SharedSecret};
use crate::service::{AuditSettings, NatsAuth, NatsSettings};
use crate::telemetry::{LogFormat, LogSettings};

/// Default NATS URL: a local nats-server.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default queue group shared by all replicas.
pub const DEFAULT_QUEUE_GROUP: &str = "entra-callout";
/// Default name of the account the callout requests arrive in.
pub const DEFAULT_CALLOUT_ACCOUNT: &str = "AUTH";
/// Default name of the server's system account.
pub const DEFAULT_SYSTEM_ACCOUNT: &str = "SYS";
/// Default number of requests that may wait for a slot. Sized for reconnect storms: a few
/// thousand clients reconnecting at once are queued for a moment rather than refused.
pub const DEFAULT_MAX_QUEUED: usize = 4096;
/// Default longest wait for a slot; well inside nats-server's default 2 s callout timeout.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_millis(500);
/// nats-server's default `authorization.timeout`: how long it waits for the callout's answer.
pub const DEFAULT_SERVER_TIMEOUT: Duration = Duration::from_secs(2);
/// Default quiet time after a policy file change before reloading.
pub const DEFAULT_RELOAD_DEBOUNCE: Duration = Duration::from_millis(500);
/// Default admin listener: loopback only; the Helm chart listens on all interfaces.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8080";

/// A validated configuration, ready to run.
#[derive(Debug)]
pub struct Config {
    /// Where the configuration was read from.
    pub path: PathBuf,
    /// How the service connects to NATS.
    pub nats: NatsSettings,
    /// Keys and limits of the callout itself.
    pub callout: CalloutSettings,
    /// Identity providers, in file order.
    pub providers: Vec<ProviderSettings>,
    /// The compiled policies.
    pub policies: PolicySet,
    /// Where the policies were loaded from (file or directory).
    pub policies_path: PathBuf,
    /// How the policies were compiled; reloads compile with the same options.
    pub policy_options: CompileOptions,
    /// When policies are reloaded.
    pub policy_reload: ReloadSettings,
    /// The seed and password files, watched for rotation.
    pub credential_files: CredentialFiles,
    /// Logging.
    pub log: LogSettings,
    /// The admin HTTP listener.
    pub admin: AdminSettings,
    /// Where audit events go besides the log.
    pub audit: AuditSettings,
    /// Problems that do not stop the service, such as secret files others can read; `check`
    /// prints them and `serve` logs them.
    pub warnings: Vec<Diagnostic>,
}

/// Everything wrong with a configuration, in file order.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration and/or the policies have problems.
    #[error("{}", display_problems(.problems, .policies.as_ref()))]
    Invalid {
        /// Problems in the configuration file.
        problems: Vec<Diagnostic>,
        /// Problems in the policy files, when they could be loaded at all.
        policies: Option<PolicyErrors>,
    },
}

fn display_problems(problems: &[Diagnostic], policies: Option<&PolicyErrors>) -> String {
    let mut lines: Vec<String> = problems.iter().map(Diagnostic::to_string).collect();
    if let Some(policies) = policies {
        lines.push(policies.to_string());
    }
    lines.join("\n")
}

// === raw configuration (stage one) ===

/// The configuration file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// NATS connection.
    #[serde(default)]
    pub nats: RawNats,
    /// Callout keys and limits.
    pub callout: Spanned<RawCallout>,
    /// Identity providers.
    pub providers: Spanned<Vec<RawProvider>>,
    /// Policy file or directory, relative to the configuration file.
    pub policies: Spanned<String>,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// Admin listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Audit trail.
    #[serde(default)]
    pub audit: RawAudit,
    /// Policy reloading.
    #[serde(default)]
    pub policy_reload: RawPolicyReload,
    /// Target accounts by the name policies use; keys in operator mode.
    pub accounts: Option<Spanned<BTreeMap<String, Spanned<RawAccount>>>>,
}

/// One entry of `accounts:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    /// Operator mode: the account's public key (`A...`).
    pub public_key: Option<Spanned<String>>,
    /// Operator mode: file holding the account's seed or a plain signing key seed (`SA...`).
    pub signing_key_seed_file: Option<Spanned<String>>,
    /// Operator mode: environment variable holding that seed.
    pub signing_key_seed_env: Option<Spanned<String>>,
}

/// `nats:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNats {
    /// Comma-separated server URLs.
    pub url: Option<Spanned<String>>,
    /// User name for user/password authentication.
    pub user: Option<Spanned<String>>,
    /// File holding the password.
    pub password_file: Option<Spanned<String>>,
    /// Environment variable holding the password.
    pub password_env: Option<Spanned<String>>,
    /// File holding an nkey seed (`SU...`).
    pub nkey_seed_file: Option<Spanned<String>>,
    /// Environment variable holding an nkey seed.
    pub nkey_seed_env: Option<Spanned<String>>,
    /// A `.creds` file (operator mode).
    pub credentials_file: Option<Spanned<String>>,
    /// Queue group name.
    pub queue_group: Option<Spanned<String>>,
    /// Account the requests arrive in.
    pub callout_account: Option<Spanned<String>>,
    /// The server's system account.
    pub system_account: Option<Spanned<String>>,
}

/// `callout:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallout {
    /// `config` (default) or `operator`.
    pub mode: Option<Spanned<String>>,
    /// Operator mode: the callout account's public key, when the issuer seed is one of its
    /// signing keys.
    pub issuer_account: Option<Spanned<String>>,
    /// File holding the issuer account seed (`SA...`).
    pub issuer_seed_file: Option<Spanned<String>>,
    /// Environment variable holding the issuer account seed.
    pub issuer_seed_env: Option<Spanned<String>>,
    /// File holding the curve seed (`SX...`).
    pub xkey_seed_file: Option<Spanned<String>>,
    /// Environment variable holding the curve seed.
    pub xkey_seed_env: Option<Spanned<String>>,
    /// Longest lifetime of a minted user JWT, e.g. `1h`.
    pub max_ttl: Option<Spanned<String>>,
    /// Requests handled at once.
    pub max_concurrency: Option<Spanned<u64>>,
    /// Requests that may wait for a slot beyond `max_concurrency`.
    pub max_queued: Option<Spanned<u64>>,
    /// Longest wait for a slot, e.g. `500ms`.
    pub queue_timeout: Option<Spanned<String>>,
    /// Clock skew tolerated on request `exp`, e.g. `2s`.
    pub request_leeway: Option<Spanned<String>>,
    /// Grace period for in-flight requests on shutdown, e.g. `10s`.
    pub drain_timeout: Option<Spanned<String>>,
    /// Verified tokens remembered by SHA-256; 0 disables the cache.
    pub token_cache_size: Option<Spanned<u64>>,
    /// nats-server's `authorization.timeout`, e.g. `2s`.
    pub server_timeout: Option<Spanned<String>>,
    /// Longest wait of a request for a key fetch, e.g. `750ms`.
    pub key_wait: Option<Spanned<String>>,
}

/// One entry of `providers:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// Unique name, used in logs and policies.
    pub name: Spanned<String>,
    /// Provider kind: `entra` or `oidc`.
    pub kind: Spanned<String>,
    /// Entra: the one tenant id (GUID).
    pub tenant: Option<Spanned<String>>,
    /// Entra: a list of tenant ids, or the word `any`.
    pub tenants: Option<Spanned<RawTenants>>,
    /// Entra: accepted token versions, `[v1, v2]` by default.
    pub versions: Option<Spanned<Vec<String>>>,
    /// Accepted `aud` values.
    pub audiences: Spanned<Vec<String>>,
    /// Entra: `global`, `usgov` or `china`.
    pub cloud: Option<Spanned<String>>,
    /// Entra: v2 issuer host override, for clouds not in the table.
    pub login_host: Option<Spanned<String>>,
    /// Entra: v1 issuer host override.
    pub sts_host: Option<Spanned<String>>,
    /// Entra: where metadata is fetched from; defaults to `https://{login_host}`.
    pub authority: Option<Spanned<String>>,
    /// Accepted signature algorithms, `[RS256]` by default.
    pub algorithms: Option<Spanned<Vec<String>>>,
    /// Entra: `deny` (default) or `resolve`.
    pub groups_overage: Option<Spanned<String>>,
    /// Entra: Microsoft Graph access for `groups_overage: resolve`.
    pub graph: Option<Spanned<RawGraph>>,
    /// Entra: the API's client id, whose app-specific signing keys (`?appid=`) replace the
    /// tenant's.
    pub signing_keys_app_id: Option<Spanned<String>>,
    /// Generic OIDC: the exact `iss`.
    pub issuer: Option<Spanned<String>>,
    /// Generic OIDC: discovery document URL, when not `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Option<Spanned<String>>,
    /// Generic OIDC: where roles are, e.g. `realm_access.roles`.
    pub roles_claim: Option<Spanned<String>>,
    /// Generic OIDC: where groups are.
    pub groups_claim: Option<Spanned<String>>,
    /// Generic OIDC: `auto` (default), `user` or `application`.
    pub principal: Option<Spanned<String>>,
    /// Generic OIDC: accept only tokens whose header says `typ: at+jwt` (RFC 9068).
    pub require_access_token_type: Option<Spanned<bool>>,
    /// Clock skew tolerated on `exp`/`nbf`, e.g. `60s`.
    pub leeway: Option<Spanned<String>>,
    /// How often keys are refreshed in the background, e.g. `1h`.
    pub key_refresh_interval: Option<Spanned<String>>,
    /// Minimum time between refetches triggered by an unknown `kid`, e.g. `5m`.
    pub unknown_kid_refetch_interval: Option<Spanned<String>>,
}

/// `tenants:` as written: a list of GUIDs, or a keyword (only `any` is valid).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTenants {
    /// A keyword.
    Keyword(String),
    /// Tenant ids.
    List(Vec<String>),
}

/// `graph:` of a provider as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGraph {
    /// The service's own app registration (client id).
    pub client_id: Spanned<String>,
    /// File holding the client secret.
    pub client_secret_file: Option<Spanned<String>>,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<Spanned<String>>,
    /// Federated token file (workload identity), e.g. `$AZURE_FEDERATED_TOKEN_FILE`'s path.
    pub federated_token_file: Option<Spanned<String>>,
    /// Token endpoint base; defaults to the provider's authority.
    pub authority: Option<Spanned<String>>,
    /// Graph base URL; defaults to the cloud's Graph.
    pub graph_url: Option<Spanned<String>>,
}

/// `log:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: Option<Spanned<String>>,
    /// Filter directive.
    pub level: Option<String>,
}

/// `admin:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `host:port` to listen on.
    pub listen: Option<Spanned<String>>,
}

/// `audit:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// NATS subject for audit events.
    pub subject: Option<Spanned<String>>,
}

/// `policy_reload:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyReload {
    /// Watch the policy files for changes (default true).
    pub watch: Option<bool>,
    /// Quiet time after a change before reloading, e.g. `500ms`.
    pub debounce: Option<Spanned<String>>,
}

// === validation (stage two) ===

/// Reads environment variables; a seam so tests need not touch the process environment.
pub trait Env {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Config {
    /// The token verifier this configuration describes: its providers and the size of the
    /// verified-token cache. No network is touched until the verifier is warmed or used.
    pub fn verifier(&self) -> Result<Verifier, VerifierError> {
        Ok(Verifier::new(self.providers.clone())?
            .with_token_cache(self.callout.token_cache_size)
            .with_key_wait(self.callout.key_wait))
    }

    /// Reads, parses and validates the configuration at `path`, then loads its policies.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str_at(&text, path, env)
    }

    /// Parses and validates configuration `text` that was read from `path`.
    ///
    /// Relative paths inside it are resolved against the directory of `path`.
    pub fn from_str_at(text: &str, path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig = match serde_saphyr::from_str(text) {
            Ok(raw) => raw,
            Err(err) => {
                return Err(ConfigError::Invalid {
                    problems: vec![yaml_problem(&file, &err)],
                    policies: None,
                });
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut v = Validator {
            file,
            base,
            env,
            problems: Vec::new(),
            warnings: Vec::new(),
            policy_errors: None,
            credential_files: CredentialFiles::default(),
        };
        let built = v.build(raw, path);
        match built {
            Some(mut config) if v.problems.is_empty() => {
                config.warnings = v.warnings;
                Ok(config)
            }
            _ => Err(ConfigError::Invalid {
                problems: v.problems,
                policies: v.policy_errors,
            }),
        }
    }
}

struct Validator<'a> {
    file: String,
    base: &'a Path,
    env: &'a dyn Env,
    problems: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    policy_errors: Option<PolicyErrors>,
    credential_files: CredentialFiles,
}

impl Validator<'_> {
    fn problem<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.problems.push(Diagnostic {
            file: self.file.clone(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            message: message.into(),
        });
    }

    fn problem_at(&mut self, at: Loc, message: impl Into<String>) {
        self.problems.push(Diagnostic {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            message: message.into(),
        });
    }

    fn build(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
        let mode = raw.callout.value.mode.clone();
        let issuer_account = raw.callout.value.issuer_account.clone();
        let callout_at = Loc::of(&raw.callout);
        let nats = self.nats(raw.nats);
        let callout = self.callout(raw.callout);
        let providers = self.providers(raw.providers);
        let log = self.log(raw.log);
        let provider_names = providers
            .iter()
            .flatten()
            .map(|p| p.name().to_string())
            .collect();
        let admin = self.admin(raw.admin);
        let audit = self.audit(raw.audit);
        let policy_reload = self.policy_reload(raw.policy_reload);
        let policies_path = self.base.join(&raw.policies.value);
        let (nats, mut callout) = (nats?, callout?);
        let accounts = self.accounts(
            AccountsInput {
                mode,
                issuer_account,
                callout_at,
                raw: raw.accounts,
            },
            &nats,
            &mut callout,
        );
        let forbidden = vec![
            nats.system_account.clone(),
            nats.callout_account.clone(),
            "$SYS".to_owned(),
        ];
        let opts = CompileOptions {
            forbidden_accounts: forbidden,
            accounts,
            default_max_ttl: callout.max_ttl,
            providers: provider_names,
        };
        let policies = match PolicySet::load(&policies_path, &opts) {
            Ok(policies) => Some(policies),
            Err(errors) => {
                self.policy_errors = Some(errors);
                None
            }
        };
        Some(Config {
            path: path.to_path_buf(),
            nats,
            callout,
            providers: providers?,
            policies: policies?,
            policies_path,
            policy_options: opts,
            policy_reload,
            credential_files: std::mem::take(&mut self.credential_files),
            log: log?,
            admin: admin?,
            audit: audit?,
            warnings: Vec::new(),
        })
    }

    fn nats(&mut self, raw: RawNats) -> Option<NatsSettings> {
        let urls_text = raw
            .url
            .as_ref()
            .map_or(DEFAULT_NATS_URL, |u| u.value.as_str());
        let mut urls = Vec::new();
        for part in urls_text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match async_nats::ServerAddr::from_str(part) {
                Ok(addr) => urls.push(addr),
                Err(err) => {
                    let at = raw.url.as_ref().map_or(Loc::default(), Loc::of);
                    self.problem_at(at, format!("invalid NATS url {part:?}: {err}"));
                }
            }
        }
        if let (true, Some(at)) = (urls.is_empty(), &raw.url) {
            self.problem(at, "no NATS url given");
        }
        let password_given = raw.password_file.is_some() || raw.password_env.is_some();
        self.credential_files.nats_password = self.file_path(raw.password_file.as_ref());
        let password = self.secret("password", raw.password_file, raw.password_env);
        let seed = self.secret("nkey seed", raw.nkey_seed_file, raw.nkey_seed_env);
        let others_given = raw.user.is_some() || password_given || seed.is_some();
        let credentials = raw
            .credentials_file
            .map(|creds| self.credentials(&creds, others_given));
        let auth = match (raw.user, password, seed) {
            (Some(user), Some((password, _)), None) => NatsAuth::UserPassword {
                user: user.value,
                password: SharedSecret::new(password),
            },
            (None, None, Some((seed, at))) => {
                if nkeys::KeyPair::from_seed(seed.expose()).is_err() {
                    self.problem_at(at, "nats nkey seed is not a valid nkey seed");
                }
                NatsAuth::Nkey(seed)
            }
            (None, None, None) => NatsAuth::None,
            (Some(user), None, None) => {
                // A given but unreadable password was already reported.
                if !password_given {
                    self.problem(&user, "nats.user needs password_file or password_env");
                }
                NatsAuth::None
            }
            (None, Some((_, at)), None) => {
                self.problem_at(at, "a nats password is set but nats.user is not");
                NatsAuth::None
            }
            (_, _, Some((_, at))) => {
                self.problem_at(
                    at,
                    "nats: give either user and password or an nkey seed, not both",
                );
                NatsAuth::None
            }
        };
        let auth = credentials.unwrap_or(auth);
        let name = |v: Option<Spanned<String>>, default: &str| {
            v.map_or_else(|| default.to_owned(), |s| s.value)
        };
        Some(NatsSettings {
            urls,
            auth,
            queue_group: name(raw.queue_group, DEFAULT_QUEUE_GROUP),
            callout_account: name(raw.callout_account, DEFAULT_CALLOUT_ACCOUNT),
            system_account: name(raw.system_account, DEFAULT_SYSTEM_ACCOUNT),
        })
    }

    fn callout(&mut self, raw_at: Spanned<RawCallout>) -> Option<CalloutSettings> {
        let raw = &raw_at.value;
        let (issuer_file, issuer_env) = (raw.issuer_seed_file.clone(), raw.issuer_seed_env.clone());
        let (xkey_file, xkey_env) = (raw.xkey_seed_file.clone(), raw.xkey_seed_env.clone());
        let (max_ttl, request_leeway) = (raw.max_ttl.clone(), raw.request_leeway.clone());
        let (drain_timeout, max_concurrency) =
            (raw.drain_timeout.clone(), raw.max_concurrency.clone());
        let (max_queued, queue_timeout) = (raw.max_queued.clone(), raw.queue_timeout.clone());
        self.credential_files.issuer = self.file_path(issuer_file.as_ref());
        self.credential_files.xkey = self.file_path(xkey_file.as_ref());
        let issuer_seed = self.secret("issuer seed", issuer_file, issuer_env);
        let xkey_seed = self.secret("xkey seed", xkey_file, xkey_env);
        let issuer = match issuer_seed {
            None => {
                self.problem(&raw_at, "callout needs issuer_seed_file or issuer_seed_env");
                None
            }
            Some((seed, at)) => match crate::nats_jwt::Signer::from_seed(seed.expose()) {
                Ok(kp) if seed.expose().starts_with("SA") => Some(kp),
                Ok(_) => {
                    self.problem_at(at, "callout issuer seed must be an account seed (SA...)");
                    None
                }
                Err(_) => {
                    self.problem_at(at, "callout issuer seed is not a valid nkey seed");
                    None
                }
            },
        };
        let xkey = match xkey_seed {
            None => None,
            Some((seed, at)) => match nkeys::XKey::from_seed(seed.expose()) {
                Ok(xkey) => Some(xkey),
                Err(_) => {
                    self.problem_at(at, "callout xkey seed is not a valid curve seed (SX...)");
                    None
                }
            },
        };
        let max_ttl_at = max_ttl.clone();
        let max_ttl = self.duration(max_ttl, Duration::from_secs(3600));
        let request_leeway = self.duration(request_leeway, Duration::from_secs(2));
        let drain_timeout = self.duration(drain_timeout, Duration::from_secs(10));
        let max_concurrency = match max_concurrency {
            None => 256,
            Some(n) if n.value == 0 || n.value > 65_536 => {
                self.problem(&n, "max_concurrency must be between 1 and 65536");
                256
            }
            Some(n) => usize::try_from(n.value).unwrap_or(256),
        };
        let token_cache_size = match &raw.token_cache_size {
            None => crate::oidc::DEFAULT_TOKEN_CACHE_SIZE,
            Some(n) if n.value > 10_000_000 => {
                self.problem(n, "token_cache_size must be at most 10000000");
                crate::oidc::DEFAULT_TOKEN_CACHE_SIZE
            }
            Some(n) => n.value,
        };
        if let (true, Some(at)) = (max_ttl.is_zero(), &max_ttl_at) {
            self.problem(at, "callout.max_ttl must be longer than zero");
        }
        let max_queued = match max_queued {
            None => DEFAULT_MAX_QUEUED,
            Some(n) if n.value > 1_048_576 => {
                self.problem(&n, "max_queued must be at most 1048576");
                DEFAULT_MAX_QUEUED
            }
            Some(n) => usize::try_from(n.value).unwrap_or(DEFAULT_MAX_QUEUED),
        };
        let queue_timeout = self.duration(queue_timeout, DEFAULT_QUEUE_TIMEOUT);
        let (server_timeout, key_wait) = self.key_wait(raw);
        let issuer = issuer?;
        Some(CalloutSettings {
            signers: Signers::config(issuer.clone()),
            issuer,
            xkey,
            max_ttl,
            max_concurrency,
            max_queued,
            queue_timeout,
            request_leeway,
            drain_timeout,
            token_cache_size,
            server_timeout,
            key_wait,
        })
    }

    /// `callout.server_timeout` and `callout.key_wait`: by default the key wait is 3/8 of the
    /// server's timeout (750 ms of the default 2 s), and it must stay below the timeout, or a
    /// client refused for want of keys would only learn it from the server's timeout.
    fn key_wait(&mut self, raw: &RawCallout) -> (Duration, Duration) {
        let server_at = raw.server_timeout.clone();
        let server_timeout = self.duration(server_at.clone(), DEFAULT_SERVER_TIMEOUT);
        let server_timeout = match &server_at {
            Some(at) if server_timeout.is_zero() => {
                self.problem(at, "callout.server_timeout must be longer than zero");
                DEFAULT_SERVER_TIMEOUT
            }
            _ => server_timeout,
        };
        let derived = server_timeout.mul_f64(0.375);
        let key_wait = self.duration(raw.key_wait.clone(), derived);
        match &raw.key_wait {
            Some(at) if key_wait.is_zero() || key_wait >= server_timeout => {
                self.problem(
                    at,
                    format!(
                        "callout.key_wait must be longer than zero and shorter than \
                         callout.server_timeout ({} ms)",
                        server_timeout.as_millis()
                    ),
                );
                (server_timeout, derived)
            }
            _ => (server_timeout, key_wait),
        }
    }

    fn providers(&mut self, raw: Spanned<Vec<RawProvider>>) -> Option<Vec<ProviderSettings>> {
        if raw.value.is_empty() {
            self.problem(&raw, "at least one identity provider is needed");
            return None;
        }
        let mut out = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for p in raw.value {
            if seen.contains(&p.name.value) {
                self.problem(
                    &p.name,
                    format!("provider {:?} is defined twice", p.name.value),
                );
            }
            seen.push(p.name.value.clone());
            if let Some(settings) = self.provider(p) {
                out.push(settings);
            }
        }
        Some(out)
    }

    fn provider(&mut self, p: RawProvider) -> Option<ProviderSettings> {
        let settings = match p.kind.value.as_str() {
            "entra" => self.entra_provider(&p)?,
            "oidc" => self.oidc_provider(&p)?,
            kind => {
                self.problem(
                    &p.kind,
                    format!("unknown provider kind {kind:?}; expected entra or oidc"),
                );
                return None;
            }
        };
        let mut settings = settings;
        if let Some(algorithms) = &p.algorithms {
            let names: Vec<&str> = algorithms.value.iter().map(String::as_str).collect();
            settings = self.step(settings.with_algorithms(&names), Loc::of(algorithms))?;
        }
        let leeway = self.duration(p.leeway.clone(), Duration::from_secs(60));
        let refresh = self.duration(p.key_refresh_interval.clone(), Duration::from_secs(3600));
        let refetch = self.duration(
            p.unknown_kid_refetch_interval.clone(),
            Duration::from_secs(300),
        );
        let leeway_at = p.leeway.as_ref().map_or(Loc::of(&p.name), Loc::of);
        settings = self.step(settings.with_leeway_secs(leeway.as_secs()), leeway_at)?;
        let refresh_at = p
            .key_refresh_interval
            .as_ref()
            .map_or(Loc::of(&p.name), Loc::of);
        settings = self.step(settings.with_key_refresh_interval(refresh), refresh_at)?;
        Some(settings.with_unknown_kid_refetch_interval(refetch))
    }

    /// Reports every given setting that does not apply to the provider's kind.
    fn not_for_kind(&mut self, kind: &str, settings: &[(&str, Option<Loc>)]) -> bool {
        let mut clean = true;
        for (name, at) in settings {
            if let Some(at) = at {
                self.problem_at(
                    *at,
                    format!("`{name}` does not apply to `kind: {kind}` providers"),
                );
                clean = false;
            }
        }
        clean
    }

    fn entra_provider(&mut self, p: &RawProvider) -> Option<ProviderSettings> {
        let clean = self.not_for_kind(
            "entra",
            &[
                ("issuer", p.issuer.as_ref().map(Loc::of)),
                ("discovery_url", p.discovery_url.as_ref().map(Loc::of)),
                ("roles_claim", p.roles_claim.as_ref().map(Loc::of)),
                ("groups_claim", p.groups_claim.as_ref().map(Loc::of)),
                ("principal", p.principal.as_ref().map(Loc::of)),
                (
                    "require_access_token_type",
                    p.require_access_token_type.as_ref().map(Loc::of),
                ),
            ],
        );
        let (tenants, tenants_at) = match (&p.tenant, &p.tenants) {
            (Some(_), Some(list)) => {
                self.problem(list, "give either tenant or tenants, not both");
                return None;
            }
            (Some(one), None) => (Tenants::One(one.value.clone()), Loc::of(one)),
            (None, Some(list)) => match &list.value {
                RawTenants::Keyword(word) if word == "any" => (Tenants::Any, Loc::of(list)),
                RawTenants::Keyword(word) => {
                    self.problem(
                        list,
                        format!(
                            "tenants must be a list of tenant ids or the word any, not {word:?}"
                        ),
                    );
                    return None;
                }
                RawTenants::List(ids) => (Tenants::List(ids.clone()), Loc::of(list)),
            },
            (None, None) => {
                self.problem(
                    &p.name,
                    "an entra provider needs tenant (GUID), tenants (list of GUIDs) or tenants: any",
                );
                return None;
            }
        };
        // Each builder step validates one setting; its error is reported at that setting.
        let mut settings =
            match ProviderSettings::entra(&p.name.value, tenants, p.audiences.value.clone()) {
                Ok(settings) => settings,
                Err(err) => {
                    let at = match err {
                        SettingsError::TenantNotGuid { .. }
                        | SettingsError::TenantsEmpty { .. }
                        | SettingsError::TenantDuplicate { .. } => tenants_at,
                        SettingsError::NameEmpty => Loc::of(&p.name),
                        _ => Loc::of(&p.audiences),
                    };
                    self.problem_at(at, err.to_string());
                    return None;
                }
            };
        if !clean {
            return None;
        }
        let mut graph_url = crate::oidc::DEFAULT_GRAPH_URL;
        match (&p.cloud, &p.login_host) {
            (Some(cloud), Some(_)) => {
                self.problem(cloud, "give either cloud or login_host, not both");
                return None;
            }
            (Some(cloud), None) => {
                let Some((login, sts, graph)) = cloud_hosts(&cloud.value) else {
                    let name = &cloud.value;
                    self.problem(
                        cloud,
                        format!("unknown cloud {name:?}; expected global, usgov or china"),
                    );
                    return None;
                };
                graph_url = graph;
                settings = self.step(settings.with_login_host(login), Loc::of(cloud))?;
                settings = self.step(settings.with_sts_host(sts), Loc::of(cloud))?;
            }
            (None, Some(host)) => {
                settings = self.step(settings.with_login_host(&host.value), Loc::of(host))?;
            }
            (None, None) => {}
        }
        if let Some(host) = &p.sts_host {
            settings = self.step(settings.with_sts_host(&host.value), Loc::of(host))?;
        }
        if let Some(authority) = &p.authority {
            settings = self.step(
                settings.with_authority(&authority.value),
                Loc::of(authority),
            )?;
        }
        if let Some(versions) = &p.versions {
            let mut chosen = Versions {
                v1: false,
                v2: false,
            };
            for version in &versions.value {
                match version.as_str() {
                    "v1" => chosen.v1 = true,
                    "v2" => chosen.v2 = true,
                    other => {
                        self.problem(
                            versions,
                            format!("unknown token version {other:?}; expected v1 or v2"),
                        );
                        return None;
                    }
                }
            }
            settings = self.step(settings.with_versions(chosen), Loc::of(versions))?;
        }
        if let Some(app_id) = &p.signing_keys_app_id {
            settings = self.step(
                settings.with_signing_keys_app_id(&app_id.value),
                Loc::of(app_id),
            )?;
        }
        let overage = match p.groups_overage.as_ref().map(|o| o.value.as_str()) {
            None | Some("deny") => {
                if let Some(graph) = &p.graph {
                    self.problem(graph, "graph is only used with groups_overage: resolve");
                    return None;
                }
                GroupsOverage::Deny
            }
            Some("resolve") => {
                let Some(graph) = &p.graph else {
                    let at = p.groups_overage.as_ref().map_or(Loc::of(&p.name), Loc::of);
                    self.problem_at(at, "groups_overage: resolve needs a graph section");
                    return None;
                };
                GroupsOverage::Resolve(self.graph(graph, graph_url)?)
            }
            Some(other) => {
                let at = p.groups_overage.as_ref().map_or(Loc::of(&p.name), Loc::of);
                self.problem_at(
                    at,
                    format!("unknown groups_overage {other:?}; expected deny or resolve"),
                );
                return None;
            }
        };
        let at = p.graph.as_ref().map_or_else(|| Loc::of(&p.name), Loc::of);
        self.step(settings.with_groups_overage(overage), at)
    }

    fn graph(&mut self, raw_at: &Spanned<RawGraph>, graph_url: &str) -> Option<GraphSettings> {
        let raw = &raw_at.value;
        let secret = self.secret(
            "graph client secret",
            raw.client_secret_file.clone(),
            raw.client_secret_env.clone(),
        );
        let credential = match (secret, &raw.federated_token_file) {
            (Some((_, at)), Some(_)) => {
                self.problem_at(
                    at,
                    "graph: give a client secret or a federated token file, not both",
                );
                return None;
            }
            (Some((secret, _)), None) => GraphCredential::ClientSecret(secret),
            (None, Some(file)) => {
                // Read when a token is requested (it rotates); relative to the config file.
                GraphCredential::FederatedTokenFile(self.base.join(&file.value))
            }
            (None, None) => {
                // A given but unreadable secret was already reported.
                if raw.client_secret_file.is_none() && raw.client_secret_env.is_none() {
                    self.problem(
                        raw_at,
                        "graph needs client_secret_file, client_secret_env or federated_token_file",
                    );
                }
                return None;
            }
        };
        let mut graph = GraphSettings::new(&raw.client_id.value, credential).with_graph_url(
            raw.graph_url
                .as_ref()
                .map_or(graph_url, |u| u.value.as_str()),
        );
        if let Some(authority) = &raw.authority {
            graph = graph.with_token_authority(&authority.value);
        }
        Some(graph)
    }

    fn oidc_provider(&mut self, p: &RawProvider) -> Option<ProviderSettings> {
        let clean = self.not_for_kind(
            "oidc",
            &[
                ("tenant", p.tenant.as_ref().map(Loc::of)),
                ("tenants", p.tenants.as_ref().map(Loc::of)),
                ("versions", p.versions.as_ref().map(Loc::of)),
                ("cloud", p.cloud.as_ref().map(Loc::of)),
                ("login_host", p.login_host.as_ref().map(Loc::of)),
                ("sts_host", p.sts_host.as_ref().map(Loc::of)),
                ("authority", p.authority.as_ref().map(Loc::of)),
                ("groups_overage", p.groups_overage.as_ref().map(Loc::of)),
                ("graph", p.graph.as_ref().map(Loc::of)),
            ],
        );
        // Said apart from the list above: it is the one Entra setting with a generic stand-in.
        if let Some(app_id) = &p.signing_keys_app_id {
            self.problem(
                app_id,
                "`signing_keys_app_id` does not apply to `kind: oidc` providers; \
                 point discovery_url at the metadata that lists the signing keys instead",
            );
        }
        let clean = clean && p.signing_keys_app_id.is_none();
        let Some(issuer) = &p.issuer else {
            self.problem(&p.name, "an oidc provider needs an issuer (URL)");
            return None;
        };
        let mut settings =
            match ProviderSettings::oidc(&p.name.value, &issuer.value, p.audiences.value.clone()) {
                Ok(settings) => settings,
                Err(err) => {
                    let at = match err {
                        SettingsError::AudiencesEmpty { .. }
                        | SettingsError::AudienceBlank { .. } => Loc::of(&p.audiences),
                        SettingsError::NameEmpty => Loc::of(&p.name),
                        _ => Loc::of(issuer),
                    };
                    self.problem_at(at, err.to_string());
                    return None;
                }
            };
        if !clean {
            return None;
        }
        if let Some(url) = &p.discovery_url {
            settings = self.step(settings.with_discovery_url(&url.value), Loc::of(url))?;
        }
        for (path, roles) in [(&p.roles_claim, true), (&p.groups_claim, false)] {
            if let Some(path) = path {
                let value = Some(path.value.as_str());
                let (r, g) = if roles { (value, None) } else { (None, value) };
                settings = self.step(settings.with_claim_paths(r, g), Loc::of(path))?;
            }
        }
        if let Some(principal) = &p.principal {
            let rule = match principal.value.as_str() {
                "auto" => PrincipalRule::Auto,
                "user" => PrincipalRule::User,
                "application" => PrincipalRule::Application,
                other => {
                    self.problem(
                        principal,
                        format!("unknown principal {other:?}; expected auto, user or application"),
                    );
                    return None;
                }
            };
            settings = self.step(settings.with_principal(rule), Loc::of(principal))?;
        }
        if let Some(required) = &p.require_access_token_type {
            settings = self.step(
                settings.with_required_access_token_type(required.value),
                Loc::of(required),
            )?;
        }
        Some(settings)
    }

    fn step<T>(&mut self, result: Result<T, SettingsError>, at: Loc) -> Option<T> {
        result
            .map_err(|err| self.problem_at(at, err.to_string()))
            .ok()
    }

    fn log(&mut self, raw: RawLog) -> Option<LogSettings> {
        let format = match raw.format {
            None => LogFormat::Text,
            Some(f) => match f.value.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.problem(
                        &f,
                        format!("unknown log format {other:?}; expected text or json"),
                    );
                    LogFormat::Text
                }
            },
        };
        Some(LogSettings {
            format,
            level: raw.level.unwrap_or_else(|| "info".to_owned()),
        })
    }

    fn admin(&mut self, raw: RawAdmin) -> Option<AdminSettings> {
        let Some(listen) = raw.listen else {
            let listen = DEFAULT_ADMIN_LISTEN.parse().ok()?;
            return Some(AdminSettings { listen });
        };
        match listen.value.parse() {
            Ok(listen) => Some(AdminSettings { listen }),
            Err(_) => {
                let text = &listen.value;
                self.problem(
                    &listen,
                    format!("admin.listen {text:?} is not an address like 127.0.0.1:8080"),
                );
                None
            }
        }
    }

    fn audit(&mut self, raw: RawAudit) -> Option<AuditSettings> {
        let Some(subject) = raw.subject else {
            return Some(AuditSettings::default());
        };
        if !is_publish_subject(&subject.value) {
            let text = &subject.value;
            self.problem(
                &subject,
                format!("audit.subject {text:?} is not a NATS subject one can publish to"),
            );
            return None;
        }
        Some(AuditSettings {
            subject: Some(subject.value),
        })
    }

    fn policy_reload(&mut self, raw: RawPolicyReload) -> ReloadSettings {
        ReloadSettings {
            watch: raw.watch.unwrap_or(true),
            debounce: self.duration(raw.debounce, DEFAULT_RELOAD_DEBOUNCE),
        }
    }

    fn duration(&mut self, raw: Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match parse_duration(&raw.value) {
            Ok(d) => d,
            Err(err) => {
                self.problem(&raw, format!("invalid duration {:?}: {err}", raw.value));
                default
            }
        }
    }

    /// Where a secret file named in the configuration is.
    fn file_path(&self, file: Option<&Spanned<String>>) -> Option<PathBuf> {
        file.map(|f| self.base.join(&f.value))
    }

    /// Reads a secret from a file or an environment variable; exactly one may be given.
    fn secret(
        &mut self,
        what: &str,
        file: Option<Spanned<String>>,
        env: Option<Spanned<String>>,
    ) -> Option<(Secret, Loc)> {
        match (file, env) {
            (Some(f), Some(_)) => {
                self.problem(
                    &f,
                    format!("{what}: give a file or an environment variable, not both"),
                );
                None
            }
            (Some(f), None) => {
                let path = self.base.join(&f.value);
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        self.warn_if_shared(&f, &path, what);
                        Some((Secret::new(text.trim().to_owned()), Loc::of(&f)))
                    }
                    Err(err) => {
                        self.problem(&f, format!("{what} file {}: {err}", path.display()));
                        None
                    }
                }
            }
            (None, Some(e)) => match self.env.var(&e.value) {
                Some(value) if !value.trim().is_empty() => {
                    Some((Secret::new(value.trim().to_owned()), Loc::of(&e)))
                }
                _ => {
                    self.problem(
                        &e,
                        format!("{what}: environment variable {} is not set", e.value),
                    );
                    None
                }
            },
            (None, None) => None,
        }
    }
}

/// What [`Validator::accounts`] needs from the rest of the file.
struct AccountsInput {
    mode: Option<Spanned<String>>,
    issuer_account: Option<Spanned<String>>,
    callout_at: Loc,
    raw: Option<Spanned<BTreeMap<String, Spanned<RawAccount>>>>,
}

impl Validator<'_> {
    /// Settles the mode and the target accounts: sets `callout.signers` and returns the account
    /// names policies may use (empty = any name, config mode without an `accounts` list).
    fn accounts(
        &mut self,
        input: AccountsInput,
        nats: &NatsSettings,
        callout: &mut CalloutSettings,
    ) -> Vec<String> {
        let mode = match &input.mode {
            None => Mode::Config,
            Some(m) => match m.value.as_str() {
                "config" => Mode::Config,
                "operator" => Mode::Operator,
                other => {
                    self.problem(
                        m,
                        format!("unknown callout mode {other:?}; expected config or operator"),
                    );
                    return Vec::new();
                }
            },
        };
        let mode_at = input.mode.as_ref().map_or(input.callout_at, Loc::of);
        let entries = input.raw.map(|r| r.value).unwrap_or_default();
        let names: Vec<String> = entries.keys().cloned().collect();
        if mode == Mode::Config {
            if let Some(at) = &input.issuer_account {
                self.problem(at, "callout.issuer_account applies to operator mode only");
            }
            if let NatsAuth::Credentials(_) = nats.auth {
                self.problem_at(
                    mode_at,
                    "nats.credentials_file needs callout.mode: operator; config-mode servers \
                     do not accept user JWTs",
                );
            }
            for (name, entry) in &entries {
                let e = &entry.value;
                let keyed = [
                    &e.public_key,
                    &e.signing_key_seed_file,
                    &e.signing_key_seed_env,
                ];
                if keyed.iter().any(|k| k.is_some()) {
                    self.problem(
                        entry,
                        format!(
                            "account `{name}`: keys apply to operator mode only; in config mode \
                             the callout issuer signs for every account"
                        ),
                    );
                }
            }
            return names;
        }

        if !matches!(nats.auth, NatsAuth::Credentials(_)) {
            self.problem_at(
                mode_at,
                "operator mode: the service connects with nats.credentials_file (a user of the \
                 callout account listed in its auth_users)",
            );
        }
        let response = match &input.issuer_account {
            None => AccountKey::own(callout.issuer.clone()),
            Some(at) => AccountKey::new(&at.value, callout.issuer.clone()),
        };
        let response = match response {
            Ok(key) => key,
            Err(err) => {
                let at = input.issuer_account.as_ref().map_or(mode_at, Loc::of);
                self.problem_at(at, format!("callout.issuer_account: {err}"));
                return names;
            }
        };
        if entries.is_empty() {
            self.problem_at(
                mode_at,
                "operator mode needs `accounts:` with a public_key and signing key seed for \
                 every account the policies use",
            );
        }
        let mut targets = Vec::new();
        for (name, entry) in entries {
            let at = Loc::of(&entry);
            let e = entry.value;
            if let Some(path) = self.file_path(e.signing_key_seed_file.as_ref()) {
                self.credential_files.accounts.insert(name.clone(), path);
            }
            let seed = self.secret(
                &format!("account `{name}` signing key seed"),
                e.signing_key_seed_file,
                e.signing_key_seed_env,
            );
            let (Some(public), Some((seed, seed_at))) = (e.public_key, seed) else {
                self.problem_at(
                    at,
                    format!(
                        "account `{name}` needs public_key and signing_key_seed_file or \
                         signing_key_seed_env"
                    ),
                );
                continue;
            };
            if public.value == response.account() {
                self.problem(
                    &public,
                    format!(
                        "account `{name}` is the callout account; users are never placed there"
                    ),
                );
                continue;
            }
            let Ok(key) = crate::nats_jwt::Signer::from_seed(seed.expose()) else {
                self.problem_at(seed_at, format!("account `{name}`: not a valid nkey seed"));
                continue;
            };
            match AccountKey::new(&public.value, key) {
                Ok(key) => targets.push((name, key)),
                Err(err) => self.problem(&public, format!("account `{name}`: {err}")),
            }
        }
        callout.signers = Signers::operator(response, targets);
        names
    }
}

impl Validator<'_> {
    /// `nats.credentials_file`: resolved and checked to be a `.creds` file.
    fn credentials(&mut self, creds: &Spanned<String>, others_given: bool) -> NatsAuth {
        if others_given {
            self.problem(
                creds,
                "nats: give credentials_file alone, without user, password or nkey seed",
            );
        }
        let path = self.base.join(&creds.value);
        match std::fs::read_to_string(&path) {
            Ok(text) if is_credentials(&text) => self.warn_if_shared(creds, &path, "credentials"),
            Ok(_) => self.problem(
                creds,
                format!(
                    "{} is not a NATS credentials file (user JWT and seed)",
                    path.display()
                ),
            ),
            Err(err) => self.problem(creds, format!("credentials file {}: {err}", path.display())),
        }
        NatsAuth::Credentials(path)
    }
}

impl Validator<'_> {
    /// Warns when the secret file at `path` grants any access beyond its owner (wider than
    /// 0600): a seed others can read is a key others can sign with. A warning, not a failure,
    /// because some mounts (Kubernetes `fsGroup`) add group bits the operator cannot remove.
    #[cfg(unix)]
    fn warn_if_shared(&mut self, at: &Spanned<String>, path: &Path, what: &str) {
        use std::os::unix::fs::PermissionsExt;

        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            self.warnings.push(Diagnostic {
                file: self.file.clone(),
                line: at.referenced.line(),
                column: at.referenced.column(),
                message: format!(
                    "{what} file {} has mode {mode:04o}, open to group or others; \
                     restrict it to 0600",
                    path.display()
                ),
            });
        }
    }

    #[cfg(not(unix))]
    fn warn_if_shared(&mut self, _at: &Spanned<String>, _path: &Path, _what: &str) {}
}

/// Whether `text` looks like a `.creds` file: an armoured user JWT and an armoured seed.
fn is_credentials(text: &str) -> bool {
    text.contains("BEGIN NATS USER JWT") && text.contains("BEGIN USER NKEY SEED")
}

/// A position in the configuration file.
#[derive(Clone, Copy, Debug, Default)]
struct Loc {
    line: u64,
    column: u64,
}

impl Loc {
    fn of<T>(s: &Spanned<T>) -> Self {
        Self {
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }
}

/// True for a literal subject: dot-separated non-empty tokens, no wildcards, no whitespace.
fn is_publish_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

/// The Entra v2 login host, v1 issuer host and Graph URL of a national cloud.
fn cloud_hosts(cloud: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match cloud {
        "global" => Some((
            "login.microsoftonline.com",
            "sts.windows.net",
            "https://graph.microsoft.com",
        )),
        "usgov" => Some((
            "login.microsoftonline.us",
            "sts.windows.net",
            "https://graph.microsoft.us",
        )),
        "china" => Some((
            "login.partner.microsoftonline.cn",
            "sts.chinacloudapi.cn",
            "https://microsoftgraph.chinacloudapi.cn",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    impl Env for HashMap<&'static str, &'static str> {
        fn var(&self, name: &str) -> Option<String> {
            self.get(name).map(|v| (*v).to_owned())
        }
    }

    const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";

    fn write_policy(dir: &Path) {
        std::fs::write(dir.join("policy.yaml"), policy_for("APP")).unwrap();
    }

    /// A policy whose one tenant uses `account` (line 5).
    fn policy_for(account: &str) -> String {
        format!(
            "version: 1\ntenants:\n  - name: t\n    entra_tenants: [{TENANT}]\n    \
             account: \"{account}\"\nroles:\n  - name: r\n    publish: {{ allow: [\"a.>\"] }}\n\
             bindings:\n  - name: b\n    tenant: t\n    roles: [r]\n    when: {{ app_roles: [R] }}\n"
        )
    }

    fn env() -> HashMap<&'static str, &'static str> {
        let issuer = "SAAGNJOZTRPYYXG2NJX3ZNGXYUSDYX2BWO447W3SHG6XQ7U66RWHQ3JUXM";
        HashMap::from([("ISSUER_SEED", issuer), ("NATS_PASSWORD", "pwd")])
    }

    fn load(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, &env())
    }

    const GOOD: &str = "nats:\n  user: auth\n  password_env: NATS_PASSWORD\n\
        callout:\n  issuer_seed_env: ISSUER_SEED\n  max_ttl: 30m\n\
        providers:\n  - name: contoso\n    kind: entra\n    tenant: TENANT\n    audiences: [api://nats]\n\
        policies: policy.yaml\n";

    #[test]
    fn a_good_config_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let config = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap();
        assert_eq!(config.callout.max_ttl, Duration::from_secs(1800));
        assert_eq!(config.callout.max_concurrency, 256);
        assert_eq!(config.callout.token_cache_size, 100_000);
        assert_eq!(config.nats.queue_group, DEFAULT_QUEUE_GROUP);
        assert_eq!(config.providers.len(), 1);
        assert_eq!(
            config.providers[0].issuers(),
            [
                format!("https://sts.windows.net/{TENANT}/"),
                format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            ]
        );
        assert!(matches!(config.nats.auth, NatsAuth::UserPassword { .. }));
        // Secrets never reach Debug output.
        let debug = format!("{config:?}");
        assert!(!debug.contains("pwd") && !debug.contains("SAAG"), "{debug}");
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let text = "nats:\n  user: auth\n  password_env: MISSING\n\
            callout:\n  issuer_seed_env: ISSUER_SEED\n  max_ttl: soon\n\
            providers:\n  - name: contoso\n    kind: keycloak\n    audiences: [x]\n\
            \x20 - name: other\n    kind: entra\n    tenant: not-a-guid\n    audiences: [x]\n    cloud: mars\n\
            policies: policy.yaml\n";
        let err = load(dir.path(), text).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let at: Vec<(u64, u64)> = problems.iter().map(|p| (p.line, p.column)).collect();
        let text = err.to_string();
        assert!(
            text.contains("config.yaml:3:17: password: environment variable MISSING is not set"),
            "{text}"
        );
        assert!(
            text.contains("config.yaml:6:12: invalid duration \"soon\""),
            "{text}"
        );
        assert!(
            text.contains("config.yaml:9:11: unknown provider kind \"keycloak\""),
            "{text}"
        );
        assert!(
            text.contains("config.yaml:13:13: provider `other`: tenant is not a GUID"),
            "{text}"
        );
        assert_eq!(at.len(), 4, "{text}");
    }

    /// The three provider examples of the README, verbatim in spirit.
    const PROVIDERS: &str = "providers:
  - name: contoso
    kind: entra
    tenant: 72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41
    audiences: [\"6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11\", \"api://nats-auth\"]
  - name: partners
    kind: entra
    tenants: [0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07, 9f1c2a7d-4e58-4b06-8e41-b7c95a3fd2e0]
    versions: [v2]
    audiences: [\"6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11\"]
    cloud: usgov
    groups_overage: resolve
    graph:
      client_id: 3c6a9f0e-2d7b-4b18-8e54-a1f0c9d2e7b3
      client_secret_env: NATS_PASSWORD
  - name: keycloak
    kind: oidc
    issuer: https://sso.example.com/realms/nats
    audiences: [nats]
    algorithms: [RS256, ES256]
    roles_claim: realm_access.roles
    principal: auto
";

    #[test]
    fn entra_and_oidc_providers_load() {
        use crate::oidc::{GroupsOverage, Tenants};

        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let text = GOOD.replace("TENANT", TENANT);
        let (head, tail) = text.split_once("providers:").unwrap();
        let tail = tail.split_once("policies:").unwrap().1;
        let config = load(dir.path(), &format!("{head}{PROVIDERS}policies:{tail}")).unwrap();
        assert_eq!(config.providers.len(), 3);
        let partners = config.providers[1].as_entra().unwrap();
        assert!(matches!(partners.tenants(), Tenants::List(list) if list.len() == 2));
        assert_eq!(partners.login_host(), "login.microsoftonline.us");
        assert!(!partners.versions().v1);
        let GroupsOverage::Resolve(graph) = partners.groups_overage() else {
            panic!("resolve expected")
        };
        assert_eq!(graph.graph_url(), "https://graph.microsoft.us");
        let debug = format!("{:?}", config.providers);
        assert!(!debug.contains("pwd"), "{debug}");
        let keycloak = config.providers[2].as_oidc().unwrap();
        assert_eq!(keycloak.roles_claim().as_str(), "realm_access.roles");
        assert_eq!(config.providers[2].algorithms().len(), 2);
    }

    #[test]
    fn the_readme_provider_examples_load() {
        let readme = include_str!("../README.md");
        let examples: Vec<&str> = readme
            .split("```yaml\n")
            .skip(1)
            .filter_map(|block| block.split_once("```").map(|(yaml, _)| yaml))
            .filter(|yaml| yaml.starts_with("providers:"))
            .collect();
        assert_eq!(examples.len(), 3, "three provider examples in the README");
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let text = GOOD.replace("TENANT", TENANT);
        let (head, tail) = text.split_once("providers:").unwrap();
        let tail = tail.split_once("policies:").unwrap().1;
        for example in examples {
            let config = load(dir.path(), &format!("{head}{example}policies:{tail}"))
                .unwrap_or_else(|e| panic!("{e}\n{example}"));
            assert_eq!(config.providers.len(), 1);
        }
    }

    #[test]
    fn provider_problems_are_located() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let text = "callout:\n  issuer_seed_env: ISSUER_SEED\n\
            providers:\n\
            \x20 - name: a\n    kind: entra\n    tenants: all\n    audiences: [x]\n\
            \x20 - name: b\n    kind: entra\n    tenants: any\n    audiences: [x]\n    algorithms: [RS256, HS256]\n\
            \x20 - name: c\n    kind: entra\n    tenant: 72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41\n    audiences: [x]\n    groups_overage: resolve\n\
            \x20 - name: d\n    kind: oidc\n    issuer: https://idp.example\n    tenant: x\n    audiences: [x]\n\
            \x20 - name: e\n    kind: oidc\n    issuer: http://idp.example\n    audiences: [x]\n\
            \x20 - name: f\n    kind: entra\n    tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41, nope]\n    audiences: [x]\n    versions: [v3]\n\
            policies: policy.yaml\n";
        let err = load(dir.path(), text).unwrap_err();
        let text = err.to_string();
        for expected in [
            "config.yaml:6:14: tenants must be a list of tenant ids or the word any, not \"all\"",
            "config.yaml:12:17: provider `b`: algorithm `HS256` is not allowed",
            "config.yaml:17:21: groups_overage: resolve needs a graph section",
            "config.yaml:21:13: `tenant` does not apply to `kind: oidc` providers",
            "config.yaml:25:13: provider `e`: issuer must be https",
            "config.yaml:29:14: provider `f`: tenant is not a GUID",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn signing_keys_app_id_is_read_and_its_problems_located() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let app = "6E3F1D0C-8B5A-4C2E-9F41-2D7A9B0C5E11";
        let text = GOOD.replace("TENANT", TENANT).replace(
            "audiences: [api://nats]\n",
            &format!("audiences: [api://nats]\n    signing_keys_app_id: {app}\n"),
        );
        let config = load(dir.path(), &text).unwrap();
        let entra = config.providers[0].as_entra().unwrap();
        assert_eq!(
            entra.signing_keys_app_id(),
            Some(app.to_ascii_lowercase().as_str())
        );

        let text = "callout:\n  issuer_seed_env: ISSUER_SEED\n\
            providers:\n\
            \x20 - name: a\n    kind: entra\n    tenant: 72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41\n    audiences: [x]\n    signing_keys_app_id: api://nats\n\
            \x20 - name: b\n    kind: oidc\n    issuer: https://idp.example\n    audiences: [x]\n    signing_keys_app_id: 6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11\n\
            policies: policy.yaml\n";
        let text = load(dir.path(), text).unwrap_err().to_string();
        for expected in [
            "config.yaml:8:26: provider `a`: signing keys app id is not a GUID",
            "config.yaml:13:26: `signing_keys_app_id` does not apply to `kind: oidc` providers; point \
             discovery_url at the metadata that lists the signing keys instead",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn unknown_fields_and_policy_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), "callout:\n  isuer_seed_env: X\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "{}:2:3: unknown field `isuer_seed_env`",
                dir.path().join("config.yaml").display()
            )),
            "{text}"
        );

        std::fs::write(
            dir.path().join("policy.yaml"),
            policy_for("APP").replace("a.>", "a..b"),
        )
        .unwrap();
        let err = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("policy.yaml:8:24: "), "{text}");
        // Tenants may only name configured providers.
        std::fs::write(
            dir.path().join("policy.yaml"),
            policy_for("APP").replace("    account:", "    providers: [fabrikam]\n    account:"),
        )
        .unwrap();
        let err = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap_err();
        assert!(
            err.to_string()
                .contains("provider `fabrikam` is not configured"),
            "{err}"
        );
    }

    /// An operator-mode configuration in `dir`: a creds file, the callout account seed, and
    /// APP with a signing key; returns (APP public key, callout public key).
    fn operator_files(dir: &Path) -> (String, String) {
        let callout = nkeys::KeyPair::new_account();
        let app = nkeys::KeyPair::new_account();
        let signing = nkeys::KeyPair::new_account();
        std::fs::write(dir.join("auth.nk"), callout.seed().unwrap()).unwrap();
        std::fs::write(dir.join("app-signing.nk"), signing.seed().unwrap()).unwrap();
        let creds = crate::nats_jwt::format_credentials("eyJ.x.y", "SUXXX");
        std::fs::write(dir.join("service.creds"), creds).unwrap();
        (app.public_key(), callout.public_key())
    }

    fn operator_config(app: &str, accounts_extra: &str) -> String {
        format!(
            "nats:\n  credentials_file: service.creds\n\
             callout:\n  mode: operator\n  issuer_seed_file: auth.nk\n\
             accounts:\n  APP:\n    public_key: {app}\n    signing_key_seed_file: app-signing.nk\n{accounts_extra}\
             providers:\n  - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    audiences: [api://nats]\n\
             policies: policy.yaml\n"
        )
    }

    #[test]
    fn operator_mode_maps_policy_accounts_to_their_signing_keys() {
        use crate::accounts::Mode;

        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let (app, callout) = operator_files(dir.path());
        let config = load(dir.path(), &operator_config(&app, "")).unwrap();
        let signers = &config.callout.signers;
        assert_eq!(signers.mode(), Mode::Operator);
        assert_eq!(signers.response().account(), callout);
        let issuer = signers.user_issuer("APP").unwrap();
        assert_eq!(issuer.audience, app);
        assert_eq!(issuer.issuer_account, Some(app.as_str()));
        assert!(matches!(config.nats.auth, NatsAuth::Credentials(_)));

        // A policy account the service holds no key for is a located policy error.
        std::fs::write(dir.path().join("policy.yaml"), policy_for("OTHER")).unwrap();
        let text = load(dir.path(), &operator_config(&app, ""))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(
                "policy.yaml:5:14: account `OTHER` is not one of the configured accounts (APP)"
            ),
            "{text}"
        );
    }

    #[test]
    fn operator_mode_problems_are_located() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let (app, callout) = operator_files(dir.path());
        let extra = format!(
            "  AUTHZ:\n    public_key: {callout}\n    signing_key_seed_file: auth.nk\n\
             \x20 HALF:\n    public_key: {app}\n"
        );
        let text = load(dir.path(), &operator_config(&app, &extra))
            .unwrap_err()
            .to_string();
        for expected in [
            "config.yaml:11:17: account `AUTHZ` is the callout account",
            "config.yaml:14:5: account `HALF` needs public_key and signing_key_seed_file",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }

        let text = load(
            dir.path(),
            &operator_config(&app, "").replace("mode: operator", "mode: decentral"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            text.contains("config.yaml:4:9: unknown callout mode \"decentral\""),
            "{text}"
        );

        // Operator mode connects with creds; config mode cannot use them.
        let password = operator_config(&app, "").replace(
            "credentials_file: service.creds",
            "user: auth\n  password_env: NATS_PASSWORD",
        );
        let text = load(dir.path(), &password).unwrap_err().to_string();
        assert!(
            text.contains(
                "config.yaml:5:9: operator mode: the service connects with nats.credentials_file"
            ),
            "{text}"
        );
        let config_mode = GOOD.replace("TENANT", TENANT).replace(
            "  user: auth\n  password_env: NATS_PASSWORD\n",
            "  credentials_file: service.creds\n",
        );
        let text = load(dir.path(), &config_mode).unwrap_err().to_string();
        assert!(
            text.contains("nats.credentials_file needs callout.mode: operator"),
            "{text}"
        );
        // In config mode, `accounts` only lists names; keys are refused.
        let keyed = format!(
            "{}accounts:\n  APP:\n    public_key: {app}\n",
            GOOD.replace("TENANT", TENANT)
        );
        let text = load(dir.path(), &keyed).unwrap_err().to_string();
        assert!(text.contains("keys apply to operator mode only"), "{text}");
        let listed = format!("{}accounts:\n  APP: {{}}\n", GOOD.replace("TENANT", TENANT));
        load(dir.path(), &listed).unwrap();
        let listed = format!(
            "{}accounts:\n  OTHER: {{}}\n",
            GOOD.replace("TENANT", TENANT)
        );
        let text = load(dir.path(), &listed).unwrap_err().to_string();
        assert!(
            text.contains("account `APP` is not one of the configured accounts"),
            "{text}"
        );
    }

    #[test]
    fn operations_settings_have_defaults_and_located_problems() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let good = GOOD.replace("TENANT", TENANT);
        let config = load(dir.path(), &good).unwrap();
        assert_eq!(config.admin.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.audit.subject, None);
        assert!(config.policy_reload.watch);
        assert_eq!(config.policy_reload.debounce, DEFAULT_RELOAD_DEBOUNCE);
        assert_eq!(config.callout.max_queued, DEFAULT_MAX_QUEUED);
        assert_eq!(config.callout.queue_timeout, DEFAULT_QUEUE_TIMEOUT);
        assert_eq!(config.callout.server_timeout, DEFAULT_SERVER_TIMEOUT);
        assert_eq!(config.callout.key_wait, crate::oidc::DEFAULT_KEY_WAIT);
        assert_eq!(
            config.policy_options.default_max_ttl,
            config.callout.max_ttl
        );

        let set = format!(
            "{good}admin:\n  listen: 0.0.0.0:9090\naudit:\n  subject: entra-callout.audit\n\
             policy_reload:\n  watch: false\n  debounce: 2s\n"
        )
        .replace(
            "max_ttl: 30m",
            "max_ttl: 30m\n  max_queued: 10\n  queue_timeout: 100ms",
        );
        let config = load(dir.path(), &set).unwrap();
        assert_eq!(config.admin.listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.audit.subject.as_deref(), Some("entra-callout.audit"));
        assert!(!config.policy_reload.watch);
        assert_eq!(config.policy_reload.debounce, Duration::from_secs(2));
        assert_eq!(config.callout.max_queued, 10);
        assert_eq!(config.callout.queue_timeout, Duration::from_millis(100));

        let bad = format!(
            "{good}admin:\n  listen: localhost\naudit:\n  subject: audit.>\n\
             policy_reload:\n  debounce: later\n"
        );
        let text = load(dir.path(), &bad).unwrap_err().to_string();
        assert!(
            text.contains("config.yaml:14:11: admin.listen \"localhost\" is not an address"),
            "{text}"
        );
        assert!(
            text.contains("config.yaml:16:12: audit.subject \"audit.>\" is not a NATS subject"),
            "{text}"
        );
        assert!(
            text.contains("config.yaml:18:13: invalid duration \"later\""),
            "{text}"
        );
    }

    #[test]
    fn the_key_wait_follows_the_server_timeout_and_stays_below_it() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let good = GOOD.replace("TENANT", TENANT);
        let with =
            |callout: &str| good.replace("max_ttl: 30m", &format!("max_ttl: 30m\n{callout}"));

        let config = load(dir.path(), &with("  server_timeout: 4s")).unwrap();
        assert_eq!(config.callout.server_timeout, Duration::from_secs(4));
        assert_eq!(config.callout.key_wait, Duration::from_millis(1500));
        let config = load(dir.path(), &with("  key_wait: 300ms")).unwrap();
        assert_eq!(config.callout.key_wait, Duration::from_millis(300));

        let text = load(dir.path(), &with("  key_wait: 2s"))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(
                "key_wait must be longer than zero and shorter than callout.server_timeout \
                 (2000 ms)"
            ),
            "{text}"
        );
        let text = load(dir.path(), &with("  server_timeout: 0s"))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("callout.server_timeout must be longer than zero"),
            "{text}"
        );
    }

    #[test]
    fn publish_subjects_are_literal() {
        for ok in ["audit", "entra-callout.audit", "a.b_c.D-1"] {
            assert!(is_publish_subject(ok), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "a\tb"] {
            assert!(!is_publish_subject(bad), "{bad:?}");
        }
    }

    #[test]
    fn users_are_never_placed_in_the_system_or_callout_account() {
        let dir = tempfile::tempdir().unwrap();
        for account in ["SYS", "AUTH", "$SYS"] {
            std::fs::write(dir.path().join("policy.yaml"), policy_for(account)).unwrap();
            let err = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap_err();
            assert!(
                err.to_string().contains("policy.yaml:5:"),
                "{account}: {err}"
            );
        }
    }
    #[cfg(unix)]
    #[test]
    fn secret_files_open_to_others_are_warned_about_not_refused() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path());
        let seed = env()["ISSUER_SEED"];
        let (issuer, password) = (dir.path().join("issuer.nk"), dir.path().join("pass"));
        std::fs::write(&issuer, seed).unwrap();
        std::fs::write(&password, "pwd").unwrap();
        let text = GOOD
            .replace("TENANT", TENANT)
            .replace("password_env: NATS_PASSWORD", "password_file: pass")
            .replace(
                "issuer_seed_env: ISSUER_SEED",
                "issuer_seed_file: issuer.nk",
            );
        let set = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };

        set(&issuer, 0o600);
        set(&password, 0o400);
        assert_eq!(load(dir.path(), &text).unwrap().warnings, vec![]);

        set(&issuer, 0o644);
        set(&password, 0o620);
        let warnings: Vec<String> = load(dir.path(), &text)
            .expect("a warning does not stop the service")
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect();
        let config = dir.path().join("config.yaml").display().to_string();
        assert_eq!(
            warnings,
            vec![
                format!(
                    "{config}:3:18: password file {} has mode 0620, open to group or others; \
                     restrict it to 0600",
                    password.display()
                ),
                format!(
                    "{config}:5:21: issuer seed file {} has mode 0644, open to group or \
                     others; restrict it to 0600",
                    issuer.display()
                ),
            ]
        );
        assert!(
            !warnings.concat().contains(seed),
            "the seed itself is never shown"
        );
    }
}
