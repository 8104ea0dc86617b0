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

use serde_saphyr::Spanned;

use crate::accounts::{AccountKey, Mode, Signers};
use crate::admin::AdminSettings;
use crate::callout::CalloutSettings;
use crate::diagnostic::{Diagnostic, yaml_problem};
use crate::duration::parse_duration;
use crate::nats_jwt::SignatureCheck;
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

mod accounts;

use accounts::AccountsInput;
mod providers;
mod raw;

pub use raw::{
    RawAccount, RawAdmin, RawAudit, RawCallout, RawConfig, RawGraph, RawLog, RawNats,
    RawPolicyReload, RawProvider, RawTenants,
};

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
            request_signature: match raw.verify_request_signature.as_ref().map(|v| v.value) {
                Some(true) => SignatureCheck::Verify,
                Some(false) | None => SignatureCheck::Shape,
            },
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

#[cfg(test)]
mod tests;
