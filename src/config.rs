//! Service configuration: the YAML file, read in two stages.
//!
//! [`RawConfig`] mirrors the file and does no I/O beyond parsing. [`Config::load`] turns it into
//! validated values — key pairs, provider settings, compiled policies — and reports every problem
//! it finds at once, each with `file:line:column`, so an operator fixes a file in one pass.
//! Secrets (seeds, passwords) come from files or environment variables; their values never
//! appear in errors.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{DefaultMessageFormatter, MessageFormatter, Spanned};

use crate::diagnostic::Diagnostic;
use crate::duration::parse_duration;
use crate::oidc::{ProviderSettings, SettingsError};
use crate::policy::{CompileOptions, PolicyErrors, PolicySet};
use crate::reload::ReloadSettings;

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
    /// Logging.
    pub log: LogSettings,
    /// The admin HTTP listener.
    pub admin: AdminSettings,
    /// Where audit events go besides the log.
    pub audit: AuditSettings,
}

/// The admin HTTP listener (`/livez`, `/readyz`, `/metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
}

/// Audit trail settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditSettings {
    /// NATS subject every decision's audit event is published to, if any.
    pub subject: Option<String>,
}

/// How the service connects to nats-server.
#[derive(Debug)]
pub struct NatsSettings {
    /// Server URLs (comma-separated in the file).
    pub urls: Vec<async_nats::ServerAddr>,
    /// The service's own credentials.
    pub auth: NatsAuth,
    /// Queue group for `$SYS.REQ.USER.AUTH`, shared by all replicas.
    pub queue_group: String,
    /// The account requests arrive in; users are never placed there.
    pub callout_account: String,
    /// The server's system account; users are never placed there.
    pub system_account: String,
}

/// The service's credentials for its own NATS connection.
pub enum NatsAuth {
    /// User name and password (config mode).
    UserPassword {
        /// User name, one of the server's `auth_users`.
        user: String,
        /// The password.
        password: Secret,
    },
    /// An nkey seed (`SU...`).
    Nkey(Secret),
    /// No credentials (only for servers that need none; unusual with callouts).
    None,
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, <redacted>)"),
            Self::Nkey(_) => f.write_str("Nkey(<redacted>)"),
            Self::None => f.write_str("None"),
        }
    }
}

/// A secret string whose value never reaches `Debug` or `Display`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret value. Call only where the value is handed to the library that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Keys and limits of the callout.
pub struct CalloutSettings {
    /// The issuer account key pair (`SA...`): signs user JWTs and responses.
    pub issuer: nkeys::KeyPair,
    /// The service's curve key (`SX...`), when the server encrypts requests.
    pub xkey: Option<nkeys::XKey>,
    /// Upper bound on the lifetime of a minted user JWT.
    pub max_ttl: Duration,
    /// How many requests are handled at once.
    pub max_concurrency: usize,
    /// How many more may wait for a slot before requests are refused as `overloaded`.
    pub max_queued: usize,
    /// How long a request may wait for a slot before it is refused as `overloaded`.
    pub queue_timeout: Duration,
    /// Clock skew tolerated on the request's `exp`.
    pub request_leeway: Duration,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl fmt::Debug for CalloutSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalloutSettings")
            .field("issuer", &self.issuer.public_key())
            .field("xkey", &self.xkey.as_ref().map(nkeys::XKey::public_key))
            .field("max_ttl", &self.max_ttl)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_queued", &self.max_queued)
            .field("queue_timeout", &self.queue_timeout)
            .field("request_leeway", &self.request_leeway)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `entra_callout=debug`.
    pub level: String,
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
}

/// One entry of `providers:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// Unique name, used in logs and policies.
    pub name: Spanned<String>,
    /// Provider kind; `entra` for now.
    pub kind: Spanned<String>,
    /// Entra tenant id (GUID).
    pub tenant: Option<Spanned<String>>,
    /// Accepted `aud` values.
    pub audiences: Spanned<Vec<String>>,
    /// `global`, `usgov` or `china`.
    pub cloud: Option<Spanned<String>>,
    /// Issuer host override, for clouds not in the table.
    pub login_host: Option<Spanned<String>>,
    /// Where metadata is fetched from; defaults to `https://{login_host}`.
    pub authority: Option<Spanned<String>>,
    /// Clock skew tolerated on `exp`/`nbf`, e.g. `60s`.
    pub leeway: Option<Spanned<String>>,
    /// How often keys are refreshed in the background, e.g. `1h`.
    pub key_refresh_interval: Option<Spanned<String>>,
    /// Minimum time between refetches triggered by an unknown `kid`, e.g. `5m`.
    pub unknown_kid_refetch_interval: Option<Spanned<String>>,
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
            policy_errors: None,
        };
        let built = v.build(raw, path);
        match built {
            Some(config) if v.problems.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                problems: v.problems,
                policies: v.policy_errors,
            }),
        }
    }
}

/// Turns a serde-saphyr error into a located problem without its source snippet.
pub(crate) fn yaml_problem(file: &str, err: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message: yaml_message(err),
    }
}

/// The message of a serde-saphyr error without its location prefix and source snippet.
pub(crate) fn yaml_message(err: &serde_saphyr::Error) -> String {
    DefaultMessageFormatter
        .format_message(err.without_snippet())
        .escape_debug()
        .to_string()
}

struct Validator<'a> {
    file: String,
    base: &'a Path,
    env: &'a dyn Env,
    problems: Vec<Diagnostic>,
    policy_errors: Option<PolicyErrors>,
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
        let nats = self.nats(raw.nats);
        let callout = self.callout(raw.callout);
        let providers = self.providers(raw.providers);
        let log = self.log(raw.log);
        let admin = self.admin(raw.admin);
        let audit = self.audit(raw.audit);
        let policy_reload = self.policy_reload(raw.policy_reload);
        let policies_path = self.base.join(&raw.policies.value);
        let (nats, callout) = (nats?, callout?);
        let forbidden = vec![
            nats.system_account.clone(),
            nats.callout_account.clone(),
            "$SYS".to_owned(),
        ];
        let opts = CompileOptions {
            forbidden_accounts: forbidden,
            default_max_ttl: callout.max_ttl,
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
            log: log?,
            admin: admin?,
            audit: audit?,
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
        let password = self.secret("password", raw.password_file, raw.password_env);
        let seed = self.secret("nkey seed", raw.nkey_seed_file, raw.nkey_seed_env);
        let auth = match (raw.user, password, seed) {
            (Some(user), Some((password, _)), None) => NatsAuth::UserPassword {
                user: user.value,
                password,
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
        let issuer_seed = self.secret("issuer seed", issuer_file, issuer_env);
        let xkey_seed = self.secret("xkey seed", xkey_file, xkey_env);
        let issuer = match issuer_seed {
            None => {
                self.problem(&raw_at, "callout needs issuer_seed_file or issuer_seed_env");
                None
            }
            Some((seed, at)) => match nkeys::KeyPair::from_seed(seed.expose()) {
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
        Some(CalloutSettings {
            issuer: issuer?,
            xkey,
            max_ttl,
            max_concurrency,
            max_queued,
            queue_timeout,
            request_leeway,
            drain_timeout,
        })
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
        if p.kind.value != "entra" {
            let kind = &p.kind.value;
            self.problem(
                &p.kind,
                format!("unknown provider kind {kind:?}; expected entra"),
            );
            return None;
        }
        let Some(tenant) = &p.tenant else {
            self.problem(&p.name, "an entra provider needs a tenant (GUID)");
            return None;
        };
        let leeway = self.duration(p.leeway.clone(), Duration::from_secs(60));
        let refresh = self.duration(p.key_refresh_interval.clone(), Duration::from_secs(3600));
        let refetch = self.duration(
            p.unknown_kid_refetch_interval.clone(),
            Duration::from_secs(300),
        );
        // Each builder step validates one setting; its error is reported at that setting.
        let mut settings =
            match ProviderSettings::new(&p.name.value, &tenant.value, p.audiences.value.clone()) {
                Ok(settings) => settings,
                Err(err) => {
                    let at = match err {
                        SettingsError::TenantNotGuid { .. } => Loc::of(tenant),
                        SettingsError::NameEmpty => Loc::of(&p.name),
                        _ => Loc::of(&p.audiences),
                    };
                    self.problem_at(at, err.to_string());
                    return None;
                }
            };
        match (&p.cloud, &p.login_host) {
            (Some(cloud), Some(_)) => {
                self.problem(cloud, "give either cloud or login_host, not both");
                return None;
            }
            (Some(cloud), None) => {
                let Some(host) = cloud_login_host(&cloud.value) else {
                    let name = &cloud.value;
                    self.problem(
                        cloud,
                        format!("unknown cloud {name:?}; expected global, usgov or china"),
                    );
                    return None;
                };
                settings = self.step(settings.with_login_host(host), Loc::of(cloud))?;
            }
            (None, Some(host)) => {
                settings = self.step(settings.with_login_host(&host.value), Loc::of(host))?;
            }
            (None, None) => {}
        }
        if let Some(authority) = &p.authority {
            settings = self.step(
                settings.with_authority(&authority.value),
                Loc::of(authority),
            )?;
        }
        let leeway_at = p.leeway.as_ref().map_or(Loc::of(&p.name), Loc::of);
        settings = self.step(settings.with_leeway_secs(leeway.as_secs()), leeway_at)?;
        let refresh_at = p
            .key_refresh_interval
            .as_ref()
            .map_or(Loc::of(&p.name), Loc::of);
        settings = self.step(settings.with_key_refresh_interval(refresh), refresh_at)?;
        Some(settings.with_unknown_kid_refetch_interval(refetch))
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
                    Ok(text) => Some((Secret(text.trim().to_owned()), Loc::of(&f))),
                    Err(err) => {
                        self.problem(&f, format!("{what} file {}: {err}", path.display()));
                        None
                    }
                }
            }
            (None, Some(e)) => match self.env.var(&e.value) {
                Some(value) if !value.trim().is_empty() => {
                    Some((Secret(value.trim().to_owned()), Loc::of(&e)))
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

/// The Entra login host (issuer host) of a national cloud.
fn cloud_login_host(cloud: &str) -> Option<&'static str> {
    match cloud {
        "global" => Some("login.microsoftonline.com"),
        "usgov" => Some("login.microsoftonline.us"),
        "china" => Some("login.partner.microsoftonline.cn"),
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
        let policy = format!(
            "version: 1\nrules:\n  - name: r\n    tenant: {TENANT}\n    when: {{ roles: [R] }}\n    \
             account: APP\n    publish: {{ allow: [\"a.>\"] }}\n"
        );
        std::fs::write(dir.join("policy.yaml"), policy).unwrap();
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
        assert_eq!(config.nats.queue_group, DEFAULT_QUEUE_GROUP);
        assert_eq!(config.providers.len(), 1);
        assert_eq!(
            config.providers[0].issuer(),
            format!("https://login.microsoftonline.com/{TENANT}/v2.0")
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

        std::fs::write(dir.path().join("policy.yaml"), "version: 1\nrules:\n  - name: r\n    when: { roles: [R] }\n    account: APP\n    publish: { allow: [\"a..b\"] }\n").unwrap();
        let err = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("policy.yaml:6:"), "{text}");
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
            let policy = format!(
                "version: 1\nrules:\n  - name: r\n    tenant: {TENANT}\n    when: {{ roles: [R] }}\n    \
                 account: \"{account}\"\n    publish: {{ allow: [\"a.>\"] }}\n"
            );
            std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
            let err = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap_err();
            assert!(
                err.to_string().contains("policy.yaml:6:"),
                "{account}: {err}"
            );
        }
    }
}
