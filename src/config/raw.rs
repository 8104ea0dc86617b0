//! Stage one: the configuration file as written, positions kept for error messages.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

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
    /// Verify the ed25519 signature of every request (off by default: SECURITY.md).
    pub verify_request_signature: Option<Spanned<bool>>,
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
