//! Validated settings of one identity provider: an Entra ID provider (one tenant, an allow-list or
//! an explicit "any", v1 and/or v2 issuers, sovereign clouds) or a generic OIDC issuer.
//!
//! The integrator builds [`ProviderSettings`] from the YAML config; everything a verifier relies on
//! (GUID tenants, at least one audience, https endpoints, an asymmetric algorithm allow-list) is
//! checked here, once, so the verification path never has to re-check it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use reqwest::Url;

use crate::guid::{Guid, is_guid};

pub use crate::secret::Secret;

/// Where Entra's global cloud issues v2 tokens and publishes metadata.
pub const DEFAULT_LOGIN_HOST: &str = "login.microsoftonline.com";
/// Where Entra's global cloud issues v1 tokens (`https://sts.windows.net/{tid}/`).
pub const DEFAULT_STS_HOST: &str = "sts.windows.net";
/// Microsoft Graph in the global cloud.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";
/// Clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
/// Largest token accepted before any parsing (Entra tokens are a few KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// How often signing keys are refreshed in the background (Microsoft's recommendation).
pub const DEFAULT_KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Minimum time between refetches caused by tokens with an unknown `kid`.
pub const DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Microsoft's default clock skew is 5 minutes; anything beyond it is a misconfiguration.
const MAX_LEEWAY_SECS: u64 = 300;
const MIN_MAX_TOKEN_BYTES: usize = 1024;
const MAX_MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// Algorithms a provider may allow: asymmetric only, so a published key can never be an HMAC
/// secret. `none` and HS* are not representable here at all.
const ALLOWED_ALGORITHMS: [(&str, Algorithm); 8] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
];

/// Settings of one identity provider.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    name: Arc<str>,
    kind: ProviderKind,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway_secs: u64,
    max_token_bytes: usize,
    key_refresh_interval: Duration,
    unknown_kid_refetch_interval: Duration,
}

/// What kind of issuer a provider is, with its kind-specific settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ProviderKind {
    /// Microsoft Entra ID.
    Entra(EntraSettings),
    /// Any other OpenID Connect issuer (Keycloak, Okta, Auth0, GitHub Actions, Kubernetes).
    Oidc(OidcSettings),
}

/// Entra-specific settings.
#[derive(Clone, Debug)]
pub struct EntraSettings {
    tenants: Tenants<Guid>,
    versions: Versions,
    login_host: String,
    sts_host: String,
    /// `None` means "derived from `login_host`".
    authority: Option<String>,
    groups_overage: GroupsOverage,
    /// The app whose app-specific signing keys are used instead of the tenant's (`?appid=`).
    signing_keys_app_id: Option<Guid>,
}

/// Which tenants an Entra provider accepts: tenant ids `T` are strings as configured (any case,
/// not yet checked) and [`Guid`]s once [`ProviderSettings::entra`] has parsed them, which is
/// what [`EntraSettings::tenants`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tenants<T = String> {
    /// Exactly one tenant.
    One(T),
    /// An allow-list of tenants (no duplicates once parsed).
    List(Vec<T>),
    /// Every tenant. Must be spelled out in the configuration; never implied.
    Any,
}

/// Entra access-token versions, chosen by the API's app registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenVersion {
    /// v1: `iss = https://sts.windows.net/{tid}/`, `ver = 1.0`.
    V1,
    /// v2: `iss = https://login.microsoftonline.com/{tid}/v2.0`, `ver = 2.0`.
    V2,
}

/// The token versions a provider accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    /// v1 tokens accepted.
    pub v1: bool,
    /// v2 tokens accepted.
    pub v2: bool,
}

/// What to do when Entra replaced a token's `groups` by an overage marker.
#[derive(Clone, Debug)]
pub enum GroupsOverage {
    /// Refuse the token with `groups_overage` (the default).
    Deny,
    /// Ask Microsoft Graph for the caller's transitive group ids.
    Resolve(GraphSettings),
}

/// How to reach Microsoft Graph for group overage.
#[derive(Clone, Debug)]
pub struct GraphSettings {
    client_id: String,
    credential: GraphCredential,
    /// Base of the token endpoint; `None` means the provider's authority.
    token_authority: Option<String>,
    graph_url: String,
}

/// The service's own credential for the client-credentials grant.
#[derive(Clone, Debug)]
pub enum GraphCredential {
    /// A client secret.
    ClientSecret(Secret),
    /// A file holding a federated token (workload identity), re-read on every token request
    /// because the platform rotates it.
    FederatedTokenFile(PathBuf),
}

/// Generic OIDC settings.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    issuer: String,
    discovery_url: String,
    roles_claim: ClaimPath,
    groups_claim: ClaimPath,
    principal: PrincipalRule,
    require_access_token_type: bool,
}

/// Where a claim lives: a top-level name, or a dotted path into nested objects
/// (`realm_access.roles`). A top-level claim whose name contains dots wins over the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimPath {
    raw: String,
}

/// How a generic OIDC provider tells users and applications apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalRule {
    /// `idtyp: app`, or `sub` equal to `azp`/`client_id`, means an application; else a user.
    Auto,
    /// Every token is a user (e.g. an IdP that only issues delegated tokens).
    User,
    /// Every token is an application (GitHub Actions, Kubernetes service accounts).
    Application,
}

impl ProviderSettings {
    /// An Entra provider for the single tenant `tenant` (a GUID, any case) accepting tokens for
    /// `audiences`, with the global cloud, v1 and v2 tokens, RS256 and the documented defaults.
    pub fn new(name: &str, tenant: &str, audiences: Vec<String>) -> Result<Self, SettingsError> {
        Self::entra(name, Tenants::One(tenant.to_owned()), audiences)
    }

    /// An Entra provider accepting `tenants`.
    pub fn entra(
        name: &str,
        tenants: Tenants,
        audiences: Vec<String>,
    ) -> Result<Self, SettingsError> {
        let name = checked_name(name)?;
        let tenants = match tenants {
            Tenants::One(tenant) => Tenants::One(checked_tenant(&name, &tenant)?),
            Tenants::List(list) => {
                if list.is_empty() {
                    return Err(SettingsError::TenantsEmpty { provider: name });
                }
                let mut out: Vec<Guid> = Vec::with_capacity(list.len());
                for tenant in list {
                    let tenant = checked_tenant(&name, &tenant)?;
                    if out.contains(&tenant) {
                        return Err(SettingsError::TenantDuplicate { provider: name });
                    }
                    out.push(tenant);
                }
                Tenants::List(out)
            }
            Tenants::Any => Tenants::Any,
        };
        let audiences = checked_audiences(&name, audiences)?;
        Ok(Self::with_defaults(
            name,
            ProviderKind::Entra(EntraSettings {
                tenants,
                versions: Versions { v1: true, v2: true },
                login_host: DEFAULT_LOGIN_HOST.to_owned(),
                sts_host: DEFAULT_STS_HOST.to_owned(),
                authority: None,
                groups_overage: GroupsOverage::Deny,
                signing_keys_app_id: None,
            }),
            audiences,
        ))
    }

    /// A generic OIDC provider whose tokens carry exactly `issuer` as `iss`. Discovery is read
    /// from `{issuer}/.well-known/openid-configuration` unless [`Self::with_discovery_url`].
    pub fn oidc(name: &str, issuer: &str, audiences: Vec<String>) -> Result<Self, SettingsError> {
        let name = checked_name(name)?;
        let parsed = checked_url(&name, issuer, UrlRole::Issuer)?;
        let audiences = checked_audiences(&name, audiences)?;
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            parsed.as_str().trim_end_matches('/')
        );
        Ok(Self::with_defaults(
            name,
            ProviderKind::Oidc(OidcSettings {
                // Compared exactly with `iss`, so kept as written (a trailing slash matters).
                issuer: issuer.to_owned(),
                discovery_url,
                roles_claim: ClaimPath::new("roles"),
                groups_claim: ClaimPath::new("groups"),
                principal: PrincipalRule::Auto,
                require_access_token_type: false,
            }),
            audiences,
        ))
    }

    fn with_defaults(name: Arc<str>, kind: ProviderKind, audiences: Vec<String>) -> Self {
        Self {
            name,
            kind,
            audiences,
            algorithms: vec![Algorithm::RS256],
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            key_refresh_interval: DEFAULT_KEY_REFRESH_INTERVAL,
            unknown_kid_refetch_interval: DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL,
        }
    }

    /// Entra: use another login host (a sovereign cloud such as `login.microsoftonline.us`). It
    /// is the host of the expected v2 `iss`, and of the authority unless one is set explicitly.
    pub fn with_login_host(mut self, host: &str) -> Result<Self, SettingsError> {
        let host = checked_host(&self.name, host)?;
        self.entra_mut("login_host")?.login_host = host;
        Ok(self)
    }

    /// Entra: use another v1 issuer host (`sts.chinacloudapi.cn` in the China cloud).
    pub fn with_sts_host(mut self, host: &str) -> Result<Self, SettingsError> {
        let host = checked_host(&self.name, host)?;
        self.entra_mut("sts_host")?.sts_host = host;
        Ok(self)
    }

    /// Entra: fetch metadata from `url` instead of `https://{login_host}`. Plain http is accepted
    /// only for loopback hosts (tests, a local proxy); anything else must be https.
    pub fn with_authority(mut self, url: &str) -> Result<Self, SettingsError> {
        let parsed = checked_url(&self.name, url, UrlRole::Authority)?;
        self.entra_mut("authority")?.authority =
            Some(parsed.as_str().trim_end_matches('/').to_owned());
        Ok(self)
    }

    /// Entra: the token versions accepted; at least one.
    pub fn with_versions(mut self, versions: Versions) -> Result<Self, SettingsError> {
        if !versions.v1 && !versions.v2 {
            return Err(SettingsError::VersionsEmpty {
                provider: self.name,
            });
        }
        self.entra_mut("versions")?.versions = versions;
        Ok(self)
    }

    /// Entra: what to do on a groups overage.
    pub fn with_groups_overage(mut self, overage: GroupsOverage) -> Result<Self, SettingsError> {
        if let GroupsOverage::Resolve(graph) = &overage {
            if let Some(authority) = &graph.token_authority {
                checked_url(&self.name, authority, UrlRole::Authority)?;
            }
            checked_url(&self.name, &graph.graph_url, UrlRole::Graph)?;
        }
        self.entra_mut("groups_overage")?.groups_overage = overage;
        Ok(self)
    }

    /// Entra: read keys from the app-specific metadata of `app_id` (the API's client id, a GUID
    /// in any case) instead of the tenant's. Apps with a claims-mapping policy or a custom signing
    /// key get tokens signed with keys that only `...openid-configuration?appid={app_id}` lists.
    pub fn with_signing_keys_app_id(mut self, app_id: &str) -> Result<Self, SettingsError> {
        let provider = self.name.clone();
        let entra = self.entra_mut("signing_keys_app_id")?;
        let app_id = Guid::parse(app_id).map_err(|_| SettingsError::AppIdNotGuid { provider })?;
        entra.signing_keys_app_id = Some(app_id);
        Ok(self)
    }

    /// Generic OIDC: read discovery from `url` (https, or http to loopback).
    pub fn with_discovery_url(mut self, url: &str) -> Result<Self, SettingsError> {
        let parsed = checked_url(&self.name, url, UrlRole::Discovery)?;
        self.oidc_mut("discovery_url")?.discovery_url = parsed.to_string();
        Ok(self)
    }

    /// Generic OIDC: where roles and groups are read from (defaults `roles` and `groups`).
    pub fn with_claim_paths(
        mut self,
        roles: Option<&str>,
        groups: Option<&str>,
    ) -> Result<Self, SettingsError> {
        for path in roles.iter().chain(groups.iter()) {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(SettingsError::ClaimPathInvalid {
                    provider: self.name,
                });
            }
        }
        let oidc = self.oidc_mut("claims")?;
        if let Some(roles) = roles {
            oidc.roles_claim = ClaimPath::new(roles);
        }
        if let Some(groups) = groups {
            oidc.groups_claim = ClaimPath::new(groups);
        }
        Ok(self)
    }

    /// Generic OIDC: how users and applications are told apart.
    pub fn with_principal(mut self, rule: PrincipalRule) -> Result<Self, SettingsError> {
        self.oidc_mut("principal")?.principal = rule;
        Ok(self)
    }

    /// Generic OIDC: whether only tokens typed `at+jwt` in their header (RFC 9068 §2.1) are
    /// accepted. Off by default, as many providers (Keycloak, Entra) type access tokens `JWT`;
    /// where the provider follows RFC 9068, it is the one reliable way to refuse ID tokens.
    pub fn with_required_access_token_type(
        mut self,
        required: bool,
    ) -> Result<Self, SettingsError> {
        self.oidc_mut("require_access_token_type")?
            .require_access_token_type = required;
        Ok(self)
    }

    /// The signature algorithms accepted, by JOSE name (`RS256`, `PS256`, `ES256`, ...). HS*
    /// and `none` are refused: a public key must never double as a shared secret.
    pub fn with_algorithms(mut self, names: &[&str]) -> Result<Self, SettingsError> {
        if names.is_empty() {
            return Err(SettingsError::AlgorithmsEmpty {
                provider: self.name,
            });
        }
        let mut algorithms = Vec::with_capacity(names.len());
        for name in names {
            let Some(algorithm) = algorithm_by_name(name) else {
                return Err(SettingsError::AlgorithmRefused {
                    provider: self.name,
                    algorithm: shorten(name),
                });
            };
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        self.algorithms = algorithms;
        Ok(self)
    }

    /// Clock skew tolerated on `exp` and `nbf`, at most 300 seconds.
    pub fn with_leeway_secs(mut self, leeway_secs: u64) -> Result<Self, SettingsError> {
        if leeway_secs > MAX_LEEWAY_SECS {
            return Err(SettingsError::LeewayTooLarge {
                provider: self.name,
                max: MAX_LEEWAY_SECS,
            });
        }
        self.leeway_secs = leeway_secs;
        Ok(self)
    }

    /// Largest token accepted, between 1 KiB and 1 MiB.
    pub fn with_max_token_bytes(mut self, max_token_bytes: usize) -> Result<Self, SettingsError> {
        if !(MIN_MAX_TOKEN_BYTES..=MAX_MAX_TOKEN_BYTES).contains(&max_token_bytes) {
            return Err(SettingsError::MaxTokenBytesOutOfRange {
                provider: self.name,
            });
        }
        self.max_token_bytes = max_token_bytes;
        Ok(self)
    }

    /// How often keys are refreshed; must not be zero.
    pub fn with_key_refresh_interval(mut self, interval: Duration) -> Result<Self, SettingsError> {
        if interval.is_zero() {
            return Err(SettingsError::RefreshIntervalZero {
                provider: self.name,
            });
        }
        self.key_refresh_interval = interval;
        Ok(self)
    }

    /// Minimum time between refetches caused by unknown `kid`s. Zero disables the throttle,
    /// which lets any client trigger fetches; only tests should do that.
    pub fn with_unknown_kid_refetch_interval(mut self, interval: Duration) -> Self {
        self.unknown_kid_refetch_interval = interval;
        self
    }

    /// The provider's configured name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Entra or generic OIDC, with the kind's settings.
    pub fn kind(&self) -> &ProviderKind {
        &self.kind
    }

    /// The Entra settings, if this is an Entra provider.
    pub fn as_entra(&self) -> Option<&EntraSettings> {
        match &self.kind {
            ProviderKind::Entra(entra) => Some(entra),
            ProviderKind::Oidc(_) => None,
        }
    }

    /// The generic OIDC settings, if this is a generic provider.
    pub fn as_oidc(&self) -> Option<&OidcSettings> {
        match &self.kind {
            ProviderKind::Oidc(oidc) => Some(oidc),
            ProviderKind::Entra(_) => None,
        }
    }

    /// Accepted `aud` values, as configured.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// True when `aud` is one of the audiences. Entra App ID URIs match with or without a
    /// trailing slash, and a client-id GUID audience also accepts its default App ID URI
    /// `api://{client-id}`, the `aud` of v1 tokens for the same app.
    pub fn accepts_audience(&self, aud: &str) -> bool {
        let entra = matches!(self.kind, ProviderKind::Entra(_));
        self.audiences.iter().any(|configured| {
            if configured == aud {
                return true;
            }
            if !entra {
                return false;
            }
            let (configured, aud) = (strip_one_slash(configured), strip_one_slash(aud));
            configured == aud
                || (is_guid(configured)
                    && aud
                        .strip_prefix("api://")
                        .is_some_and(|rest| rest.eq_ignore_ascii_case(configured)))
        })
    }

    /// Accepted signature algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Every exact `iss` this provider accepts; for `tenants: any` the issuer templates with
    /// a literal `{tenantid}`.
    pub fn issuers(&self) -> Vec<String> {
        match &self.kind {
            ProviderKind::Oidc(oidc) => vec![oidc.issuer.clone()],
            ProviderKind::Entra(entra) => {
                let tenants: Vec<&str> = match &entra.tenants {
                    Tenants::One(tenant) => vec![tenant.as_str()],
                    Tenants::List(list) => list.iter().map(Guid::as_str).collect(),
                    Tenants::Any => vec!["{tenantid}"],
                };
                let mut out = Vec::new();
                for tenant in tenants {
                    for version in entra.versions.iter() {
                        out.push(entra.issuer(version, tenant));
                    }
                }
                out
            }
        }
    }

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Largest token accepted, in bytes.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// How often keys are refreshed in the background.
    pub fn key_refresh_interval(&self) -> Duration {
        self.key_refresh_interval
    }

    /// Minimum time between refetches caused by unknown `kid`s.
    pub fn unknown_kid_refetch_interval(&self) -> Duration {
        self.unknown_kid_refetch_interval
    }

    fn entra_mut(&mut self, setting: &'static str) -> Result<&mut EntraSettings, SettingsError> {
        match &mut self.kind {
            ProviderKind::Entra(entra) => Ok(entra),
            ProviderKind::Oidc(_) => Err(SettingsError::NotForKind {
                provider: self.name.clone(),
                setting,
                kind: "oidc",
            }),
        }
    }

    fn oidc_mut(&mut self, setting: &'static str) -> Result<&mut OidcSettings, SettingsError> {
        match &mut self.kind {
            ProviderKind::Oidc(oidc) => Ok(oidc),
            ProviderKind::Entra(_) => Err(SettingsError::NotForKind {
                provider: self.name.clone(),
                setting,
                kind: "entra",
            }),
        }
    }
}

impl EntraSettings {
    /// The accepted tenants.
    pub fn tenants(&self) -> &Tenants<Guid> {
        &self.tenants
    }

    /// True when `tid` (a lowercase GUID) is accepted.
    pub fn allows_tenant(&self, tid: &str) -> bool {
        match &self.tenants {
            Tenants::One(tenant) => tenant == tid,
            Tenants::List(list) => list.iter().any(|t| t == tid),
            Tenants::Any => true,
        }
    }

    /// The accepted token versions.
    pub fn versions(&self) -> Versions {
        self.versions
    }

    /// Host of v2 issuers.
    pub fn login_host(&self) -> &str {
        &self.login_host
    }

    /// Host of v1 issuers.
    pub fn sts_host(&self) -> &str {
        &self.sts_host
    }

    /// Base URL metadata is fetched from, without a trailing slash.
    pub fn authority(&self) -> String {
        match &self.authority {
            Some(authority) => authority.clone(),
            None => format!("https://{}", self.login_host),
        }
    }

    /// What happens on a groups overage.
    pub fn groups_overage(&self) -> &GroupsOverage {
        &self.groups_overage
    }

    /// The app whose app-specific signing keys replace the tenant's, if any (a lowercase GUID).
    pub fn signing_keys_app_id(&self) -> Option<&str> {
        self.signing_keys_app_id.as_ref().map(Guid::as_str)
    }

    /// The issuer of `version` tokens for `tenant` (or `{tenantid}`).
    pub fn issuer(&self, version: TokenVersion, tenant: &str) -> String {
        match version {
            TokenVersion::V1 => format!("https://{}/{tenant}/", self.sts_host),
            TokenVersion::V2 => format!("https://{}/{tenant}/v2.0", self.login_host),
        }
    }

    /// The `(prefix, suffix)` around the tenant segment of `version` issuers.
    pub(crate) fn issuer_shape(&self, version: TokenVersion) -> (String, &'static str) {
        match version {
            TokenVersion::V1 => (format!("https://{}/", self.sts_host), "/"),
            TokenVersion::V2 => (format!("https://{}/", self.login_host), "/v2.0"),
        }
    }
}

impl Versions {
    /// The enabled versions, v1 first.
    pub fn iter(self) -> impl Iterator<Item = TokenVersion> {
        [(self.v1, TokenVersion::V1), (self.v2, TokenVersion::V2)]
            .into_iter()
            .filter_map(|(on, version)| on.then_some(version))
    }

    /// True when `version` is enabled.
    pub fn contains(self, version: TokenVersion) -> bool {
        match version {
            TokenVersion::V1 => self.v1,
            TokenVersion::V2 => self.v2,
        }
    }
}

impl TokenVersion {
    /// The token's `ver` claim for this version.
    pub fn claim(self) -> &'static str {
        match self {
            Self::V1 => "1.0",
            Self::V2 => "2.0",
        }
    }

    /// `v1` or `v2`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

impl GraphSettings {
    /// Graph access with the service's app registration `client_id` and `credential`, against
    /// the global Graph and the provider's authority.
    pub fn new(client_id: &str, credential: GraphCredential) -> Self {
        Self {
            client_id: client_id.to_owned(),
            credential,
            token_authority: None,
            graph_url: DEFAULT_GRAPH_URL.to_owned(),
        }
    }

    /// Request Graph tokens from `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn with_token_authority(mut self, authority: &str) -> Self {
        self.token_authority = Some(authority.trim_end_matches('/').to_owned());
        self
    }

    /// Call Graph at `url` (`https://graph.microsoft.us` in US Government, a stand-in in tests).
    pub fn with_graph_url(mut self, url: &str) -> Self {
        url.trim_end_matches('/').clone_into(&mut self.graph_url);
        self
    }

    /// The service's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The service's credential.
    pub fn credential(&self) -> &GraphCredential {
        &self.credential
    }

    /// The token endpoint base, if overridden.
    pub fn token_authority(&self) -> Option<&str> {
        self.token_authority.as_deref()
    }

    /// The Graph base URL, without a trailing slash.
    pub fn graph_url(&self) -> &str {
        &self.graph_url
    }
}

impl OidcSettings {
    /// The exact `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where discovery is read from.
    pub fn discovery_url(&self) -> &str {
        &self.discovery_url
    }

    /// Where roles are read from.
    pub fn roles_claim(&self) -> &ClaimPath {
        &self.roles_claim
    }

    /// Where groups are read from.
    pub fn groups_claim(&self) -> &ClaimPath {
        &self.groups_claim
    }

    /// How users and applications are told apart.
    pub fn principal(&self) -> PrincipalRule {
        self.principal
    }

    /// Whether the header must say `typ: at+jwt`.
    pub fn requires_access_token_type(&self) -> bool {
        self.require_access_token_type
    }
}

impl ClaimPath {
    fn new(raw: &str) -> Self {
        Self {
            raw: raw.to_owned(),
        }
    }

    /// The path as configured.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The value at this path in `claims`.
    pub fn lookup<'a>(
        &self,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'a serde_json::Value> {
        if let Some(value) = claims.get(&self.raw) {
            return Some(value);
        }
        let mut segments = self.raw.split('.');
        let mut value = claims.get(segments.next()?)?;
        for segment in segments {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }
}

/// Why provider settings were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The provider has no name.
    #[error("provider name is empty")]
    NameEmpty,
    /// A tenant is not a GUID.
    #[error("provider `{provider}`: tenant is not a GUID")]
    TenantNotGuid {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// The app id for app-specific signing keys is not a GUID.
    #[error("provider `{provider}`: signing keys app id is not a GUID")]
    AppIdNotGuid {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// The tenant allow-list is empty.
    #[error("provider `{provider}`: the tenant list is empty")]
    TenantsEmpty {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// A tenant is listed twice.
    #[error("provider `{provider}`: a tenant is listed twice")]
    TenantDuplicate {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// No audience is configured.
    #[error("provider `{provider}`: no audiences configured")]
    AudiencesEmpty {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// An audience is empty or blank.
    #[error("provider `{provider}`: an audience is blank")]
    AudienceBlank {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// A host is not a plain host name.
    #[error("provider `{provider}`: host is not a host name")]
    LoginHostInvalid {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// A URL (authority, issuer, discovery, Graph) is not usable.
    #[error("provider `{provider}`: {what} is invalid; {reason}")]
    AuthorityInvalid {
        /// The provider at fault.
        provider: Arc<str>,
        /// Which URL.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A URL is plain http on a host that is not loopback.
    #[error("provider `{provider}`: {what} must be https (http only for loopback hosts)")]
    AuthorityInsecure {
        /// The provider at fault.
        provider: Arc<str>,
        /// Which URL.
        what: &'static str,
    },
    /// No token version is enabled.
    #[error("provider `{provider}`: no token version enabled; use v1, v2 or both")]
    VersionsEmpty {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// The algorithm list is empty.
    #[error("provider `{provider}`: no algorithms allowed")]
    AlgorithmsEmpty {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// An algorithm is unknown or not asymmetric.
    #[error(
        "provider `{provider}`: algorithm `{algorithm}` is not allowed; use RS256, RS384, \
         RS512, PS256, PS384, PS512, ES256 or ES384"
    )]
    AlgorithmRefused {
        /// The provider at fault.
        provider: Arc<str>,
        /// The refused name (shortened).
        algorithm: String,
    },
    /// A claim path is empty or has an empty segment.
    #[error("provider `{provider}`: claim path is empty or has an empty segment")]
    ClaimPathInvalid {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// A setting does not apply to this provider kind.
    #[error("provider `{provider}`: `{setting}` does not apply to `kind: {kind}` providers")]
    NotForKind {
        /// The provider at fault.
        provider: Arc<str>,
        /// The setting.
        setting: &'static str,
        /// The provider's kind.
        kind: &'static str,
    },
    /// The leeway is larger than allowed.
    #[error("provider `{provider}`: leeway is larger than {max} seconds")]
    LeewayTooLarge {
        /// The provider at fault.
        provider: Arc<str>,
        /// The largest allowed leeway.
        max: u64,
    },
    /// The token size limit is outside 1 KiB..=1 MiB.
    #[error("provider `{provider}`: max token bytes must be between 1 KiB and 1 MiB")]
    MaxTokenBytesOutOfRange {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// The key refresh interval is zero.
    #[error("provider `{provider}`: key refresh interval is zero")]
    RefreshIntervalZero {
        /// The provider at fault.
        provider: Arc<str>,
    },
}

#[derive(Clone, Copy)]
enum UrlRole {
    Authority,
    Issuer,
    Discovery,
    Graph,
}

impl UrlRole {
    fn name(self) -> &'static str {
        match self {
            Self::Authority => "authority",
            Self::Issuer => "issuer",
            Self::Discovery => "discovery url",
            Self::Graph => "graph url",
        }
    }
}

/// The JOSE algorithm named `name`, if a provider may allow it.
pub(crate) fn algorithm_by_name(name: &str) -> Option<Algorithm> {
    ALLOWED_ALGORITHMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, algorithm)| *algorithm)
}

/// True when `url` is https, or plain http to a loopback host.
pub(crate) fn is_allowed_transport(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

fn checked_name(name: &str) -> Result<Arc<str>, SettingsError> {
    if name.trim().is_empty() {
        return Err(SettingsError::NameEmpty);
    }
    Ok(Arc::from(name))
}

fn checked_tenant(provider: &Arc<str>, tenant: &str) -> Result<Guid, SettingsError> {
    Guid::parse(tenant).map_err(|_| SettingsError::TenantNotGuid {
        provider: provider.clone(),
    })
}

fn checked_audiences(
    provider: &Arc<str>,
    audiences: Vec<String>,
) -> Result<Vec<String>, SettingsError> {
    if audiences.is_empty() {
        return Err(SettingsError::AudiencesEmpty {
            provider: provider.clone(),
        });
    }
    if audiences.iter().any(|audience| audience.trim().is_empty()) {
        return Err(SettingsError::AudienceBlank {
            provider: provider.clone(),
        });
    }
    Ok(audiences)
}

fn checked_host(provider: &Arc<str>, host: &str) -> Result<String, SettingsError> {
    let host = host.to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !host.starts_with(['.', '-'])
        && !host.ends_with(['.', '-']);
    if valid {
        Ok(host)
    } else {
        Err(SettingsError::LoginHostInvalid {
            provider: provider.clone(),
        })
    }
}

fn checked_url(provider: &Arc<str>, url: &str, role: UrlRole) -> Result<Url, SettingsError> {
    let invalid = |reason| SettingsError::AuthorityInvalid {
        provider: provider.clone(),
        what: role.name(),
        reason,
    };
    let Ok(parsed) = Url::parse(url) else {
        return Err(invalid("not a url"));
    };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        // Entra's `?appid=` metadata is the one legitimate query; discovery URLs may carry it.
        if !matches!(role, UrlRole::Discovery) || parsed.fragment().is_some() {
            return Err(invalid("it has a query or fragment"));
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("it carries credentials"));
    }
    if !is_allowed_transport(&parsed) {
        return Err(SettingsError::AuthorityInsecure {
            provider: provider.clone(),
            what: role.name(),
        });
    }
    Ok(parsed)
}

fn strip_one_slash(value: &str) -> &str {
    value.strip_suffix('/').unwrap_or(value)
}

fn shorten(value: &str) -> String {
    value.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";
    const OTHER: &str = "0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07";
    const CLIENT: &str = "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11";

    fn settings() -> ProviderSettings {
        ProviderSettings::new("entra", TENANT, vec!["api".to_owned()]).unwrap()
    }

    fn entra(settings: &ProviderSettings) -> &EntraSettings {
        settings.as_entra().unwrap()
    }

    #[test]
    fn defaults_follow_the_global_cloud_with_both_versions() {
        let settings = settings();
        assert_eq!(
            settings.issuers(),
            [
                format!("https://sts.windows.net/{TENANT}/"),
                format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            ]
        );
        assert_eq!(
            entra(&settings).authority(),
            "https://login.microsoftonline.com"
        );
        assert_eq!(settings.algorithms(), [Algorithm::RS256]);
        assert_eq!(settings.leeway_secs(), 60);
        assert_eq!(settings.max_token_bytes(), 16 * 1024);
        assert!(matches!(
            entra(&settings).groups_overage(),
            GroupsOverage::Deny
        ));
    }

    #[test]
    fn tenants_are_lowercased_guids_without_duplicates() {
        let upper = ProviderSettings::new("e", &TENANT.to_uppercase(), vec!["a".into()]).unwrap();
        assert_eq!(
            entra(&upper).tenants(),
            &Tenants::One(Guid::parse(TENANT).unwrap())
        );
        for bad in [
            "common",
            "organizations",
            "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c4",
            "72f1e1d43c5b4e0a9d625b8e0f3a9c41",
        ] {
            assert!(matches!(
                ProviderSettings::new("e", bad, vec!["a".into()]),
                Err(SettingsError::TenantNotGuid { .. })
            ));
        }
        let list = |tenants: Vec<&str>| {
            let tenants = tenants.into_iter().map(str::to_owned).collect();
            ProviderSettings::entra("e", Tenants::List(tenants), vec!["a".into()])
        };
        assert!(matches!(
            list(vec![]),
            Err(SettingsError::TenantsEmpty { .. })
        ));
        assert!(matches!(
            list(vec![TENANT, &TENANT.to_uppercase()]),
            Err(SettingsError::TenantDuplicate { .. })
        ));
        let two = list(vec![TENANT, OTHER]).unwrap();
        assert!(entra(&two).allows_tenant(OTHER));
        assert!(!entra(&two).allows_tenant("9188040d-6c67-4c5b-b112-36a304b66dad"));
        assert_eq!(two.issuers().len(), 4);
    }

    #[test]
    fn any_tenant_yields_issuer_templates() {
        let any = ProviderSettings::entra("e", Tenants::Any, vec!["a".into()])
            .unwrap()
            .with_versions(Versions {
                v1: false,
                v2: true,
            })
            .unwrap();
        assert_eq!(
            any.issuers(),
            ["https://login.microsoftonline.com/{tenantid}/v2.0"]
        );
        assert!(entra(&any).allows_tenant(OTHER));
        assert!(matches!(
            any.with_versions(Versions {
                v1: false,
                v2: false
            }),
            Err(SettingsError::VersionsEmpty { .. })
        ));
    }

    #[test]
    fn audiences_are_required_and_match_in_both_entra_forms() {
        assert!(matches!(
            ProviderSettings::new("e", TENANT, vec![]),
            Err(SettingsError::AudiencesEmpty { .. })
        ));
        assert!(matches!(
            ProviderSettings::new("e", TENANT, vec![" ".into()]),
            Err(SettingsError::AudienceBlank { .. })
        ));
        let settings =
            ProviderSettings::new("e", TENANT, vec![CLIENT.into(), "api://nats-auth".into()])
                .unwrap();
        for accepted in [
            CLIENT,
            "api://nats-auth",
            "api://nats-auth/",
            &format!("api://{CLIENT}"),
            &format!("api://{CLIENT}/"),
        ] {
            assert!(settings.accepts_audience(accepted), "{accepted}");
        }
        for refused in [
            "api://nats-auth//",
            "api://other",
            "00000003-0000-0000-c000-000000000000",
            "https://graph.microsoft.com",
            &format!("api://{OTHER}"),
            "",
        ] {
            assert!(!settings.accepts_audience(refused), "{refused}");
        }
        // Generic OIDC audiences are compared exactly.
        let oidc = ProviderSettings::oidc("k", "https://idp.example/realms/a", vec!["nats".into()])
            .unwrap();
        assert!(oidc.accepts_audience("nats"));
        assert!(!oidc.accepts_audience("nats/"));
    }

    #[test]
    fn sovereign_hosts_move_the_issuers_and_default_authority() {
        let settings = settings()
            .with_login_host("login.partner.microsoftonline.cn")
            .unwrap()
            .with_sts_host("sts.chinacloudapi.cn")
            .unwrap();
        assert_eq!(
            settings.issuers(),
            [
                format!("https://sts.chinacloudapi.cn/{TENANT}/"),
                format!("https://login.partner.microsoftonline.cn/{TENANT}/v2.0"),
            ]
        );
        assert_eq!(
            entra(&settings).authority(),
            "https://login.partner.microsoftonline.cn"
        );
        assert!(matches!(
            self::settings().with_login_host("https://x"),
            Err(SettingsError::LoginHostInvalid { .. })
        ));
        assert!(matches!(
            self::settings().with_sts_host(""),
            Err(SettingsError::LoginHostInvalid { .. })
        ));
    }

    #[test]
    fn http_urls_only_for_loopback() {
        let local = settings().with_authority("http://127.0.0.1:8080/").unwrap();
        assert_eq!(entra(&local).authority(), "http://127.0.0.1:8080");
        assert!(settings().with_authority("http://[::1]:1").is_ok());
        assert!(settings().with_authority("http://localhost:1").is_ok());
        assert!(matches!(
            settings().with_authority("http://login.microsoftonline.com"),
            Err(SettingsError::AuthorityInsecure { .. })
        ));
        assert!(matches!(
            settings().with_authority("ftp://127.0.0.1"),
            Err(SettingsError::AuthorityInsecure { .. })
        ));
        for (bad, why) in [
            ("https://idp.example/?x=1", "it has a query or fragment"),
            ("https://u:p@idp.example", "it carries credentials"),
            ("not a url", "not a url"),
        ] {
            assert!(
                matches!(
                    settings().with_authority(bad),
                    Err(SettingsError::AuthorityInvalid { what: "authority", reason, .. })
                        if reason == why
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            ProviderSettings::oidc("o", "http://idp.example", vec!["a".into()]),
            Err(SettingsError::AuthorityInsecure { what: "issuer", .. })
        ));
        let graph = GraphSettings::new(CLIENT, GraphCredential::FederatedTokenFile("f".into()))
            .with_graph_url("http://graph.example");
        assert!(matches!(
            settings().with_groups_overage(GroupsOverage::Resolve(graph)),
            Err(SettingsError::AuthorityInsecure { .. })
        ));
    }

    #[test]
    fn algorithms_are_asymmetric_only() {
        let settings = settings()
            .with_algorithms(&["RS256", "PS256", "RS256"])
            .unwrap();
        assert_eq!(settings.algorithms(), [Algorithm::RS256, Algorithm::PS256]);
        for bad in ["HS256", "HS512", "none", "rs256", "EdDSA", ""] {
            assert!(
                matches!(
                    self::settings().with_algorithms(&[bad]),
                    Err(SettingsError::AlgorithmRefused { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            self::settings().with_algorithms(&[]),
            Err(SettingsError::AlgorithmsEmpty { .. })
        ));
    }

    #[test]
    fn oidc_settings_derive_discovery_and_keep_the_issuer_exact() {
        let auth0 =
            ProviderSettings::oidc("auth0", "https://tenant.auth0.com/", vec!["a".into()]).unwrap();
        let oidc = auth0.as_oidc().unwrap();
        assert_eq!(oidc.issuer(), "https://tenant.auth0.com/");
        assert_eq!(
            oidc.discovery_url(),
            "https://tenant.auth0.com/.well-known/openid-configuration"
        );
        assert_eq!(auth0.issuers(), ["https://tenant.auth0.com/"]);
        assert!(matches!(
            auth0.clone().with_login_host("x.example"),
            Err(SettingsError::NotForKind { .. })
        ));
        assert!(matches!(
            settings().with_discovery_url("https://x.example/d"),
            Err(SettingsError::NotForKind { .. })
        ));
        assert!(matches!(
            auth0.clone().with_claim_paths(Some("a..b"), None),
            Err(SettingsError::ClaimPathInvalid { .. })
        ));
        let keycloak = auth0
            .with_claim_paths(Some("realm_access.roles"), None)
            .unwrap();
        let claims = serde_json::json!({"realm_access": {"roles": ["admin"]}, "a.b": 1});
        let claims = claims.as_object().unwrap();
        let roles = keycloak.as_oidc().unwrap().roles_claim().lookup(claims);
        assert_eq!(roles, Some(&serde_json::json!(["admin"])));
        assert_eq!(
            ClaimPath::new("a.b").lookup(claims),
            Some(&serde_json::json!(1))
        );
        assert_eq!(ClaimPath::new("realm_access.x").lookup(claims), None);
    }

    #[test]
    fn signing_keys_app_id_is_an_entra_guid() {
        assert_eq!(entra(&settings()).signing_keys_app_id(), None);
        let upper = settings()
            .with_signing_keys_app_id(&CLIENT.to_uppercase())
            .unwrap();
        assert_eq!(entra(&upper).signing_keys_app_id(), Some(CLIENT));
        for bad in [
            "",
            "api://nats-auth",
            "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e1",
            "6e3f1d0c8b5a4c2e9f412d7a9b0c5e11",
            "{6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11}",
            "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11&x=1",
        ] {
            assert!(
                matches!(
                    settings().with_signing_keys_app_id(bad),
                    Err(SettingsError::AppIdNotGuid { .. })
                ),
                "{bad}"
            );
        }
        let oidc = ProviderSettings::oidc("k", "https://idp.example", vec!["a".into()]).unwrap();
        let err = oidc.with_signing_keys_app_id(CLIENT).unwrap_err();
        assert!(matches!(err, SettingsError::NotForKind { .. }));
        assert_eq!(
            err.to_string(),
            "provider `k`: `signing_keys_app_id` does not apply to `kind: oidc` providers"
        );
    }

    #[test]
    fn limits_are_bounded_and_secrets_hidden() {
        assert!(matches!(
            settings().with_leeway_secs(301),
            Err(SettingsError::LeewayTooLarge { max: 300, .. })
        ));
        assert!(settings().with_leeway_secs(300).is_ok());
        assert!(matches!(
            settings().with_max_token_bytes(10),
            Err(SettingsError::MaxTokenBytesOutOfRange { .. })
        ));
        assert!(matches!(
            settings().with_key_refresh_interval(Duration::ZERO),
            Err(SettingsError::RefreshIntervalZero { .. })
        ));
        let secret = GraphCredential::ClientSecret(Secret::new("hunter2".into()));
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
