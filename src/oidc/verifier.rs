//! The [`Verifier`]: routes a token to its provider and key source by `iss`, gets that source's
//! keys from a cache (fetching them when needed) and hands both to the pure core.
//!
//! Routing never tries providers in turn. Fixed issuers (generic OIDC, listed Entra tenants) are
//! looked up in an exact map; Entra `tenants: any` providers are matched by the issuer shape of
//! their cloud (`https://{login_host}/{tid}/v2.0`, `https://{sts_host}/{tid}/`). Either way the
//! tenant rules (`tid` a GUID, equal to the issuer's tenant, allowed) run before any fetch, so a
//! token can never make us fetch metadata for a tenant we do not accept.
//!
//! Key sources are known up front: one per (tenant, version) of a listed Entra provider, as
//! Microsoft recommends (per-tenant discovery), one per version of an `any` provider (the
//! tenant-independent `common` metadata whose issuer is the `{tenantid}` template; per-tenant
//! discovery there would let anyone trigger fetches with made-up tenants), and one per generic
//! issuer. An Entra provider with `signing_keys_app_id` reads every one of its sources from the
//! app-specific metadata (`?appid=`) instead, since such an app's tokens are signed with keys the
//! tenant's set does not list. Keys are cached per source in moka, so concurrent lookups on a
//! cold cache coalesce into one fetch. The last good key set is kept for when a fetch fails, and
//! an unknown `kid` triggers at most one refetch per source per `unknown_kid_refetch_interval`,
//! so random kids cannot make us hammer the identity provider.
//!
//! Tokens that passed are remembered by SHA-256 in the verified-token cache (`verified`), so
//! a token seen again skips the signature check, and nothing else.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use moka::Expiry;
use moka::future::Cache;

use super::TokenError;
use super::graph::{GraphClient, GraphError};
use super::keys::{FetchTarget, Fetcher, KeySet, KeysError};
use super::settings::{GroupsOverage, ProviderKind, ProviderSettings, Tenants, TokenVersion};
use super::verified::{DEFAULT_TOKEN_CACHE_SIZE, TokenDigest, VerifiedTokens, token_digest};
use super::verify::{
    ParsedToken, Signature, Verified, check_algorithm, check_entra_tenant, verify_parsed,
};
use crate::identity::Identity;
use crate::metrics;

/// After a failed fetch the last good keys are served for this long before the next attempt.
const FAILED_FETCH_RETRY: Duration = Duration::from_secs(30);
/// "No unknown-kid refetch yet".
const NEVER: u64 = u64::MAX;

/// Verifies access tokens of the configured providers.
pub struct Verifier {
    providers: Vec<Provider>,
    sources: Vec<Source>,
    /// Exact `iss` to its provider and key source.
    by_issuer: HashMap<String, Route>,
    /// Issuer shapes of every Entra provider and version: routes `any` tenants, and names the
    /// precise refusal for tenants and versions a provider does not accept.
    shapes: Vec<Shape>,
    /// Largest `max_token_bytes` of any provider: the limit before the provider is known.
    max_token_bytes: usize,
    fetcher: Fetcher,
    /// Current key set per source index.
    keys: Cache<usize, CachedKeys>,
    /// Tokens whose signatures were verified, by SHA-256.
    verified: VerifiedTokens,
}

/// A verified token's identity, and whether its signature check was answered from the
/// verified-token cache.
#[derive(Debug)]
pub struct Verification {
    /// Who the token's holder is.
    pub identity: Identity,
    /// True when the token's signature had been verified before (a cache hit).
    pub cached: bool,
}

/// Why a [`Verifier`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierError {
    /// No provider is configured.
    #[error("no identity provider is configured")]
    NoProviders,
    /// Two providers share a name.
    #[error("provider name `{0}` is used twice")]
    DuplicateName(Arc<str>),
    /// Two providers accept the same issuer, so routing would be ambiguous.
    #[error("providers `{first}` and `{second}` accept the same issuer")]
    DuplicateIssuer {
        /// The provider configured first.
        first: Arc<str>,
        /// The provider configured second.
        second: Arc<str>,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The Graph client could not be built.
    #[error(transparent)]
    Graph(#[from] GraphError),
}

struct Provider {
    settings: ProviderSettings,
    /// Present when the provider resolves groups overage.
    graph: Option<GraphClient>,
}

#[derive(Clone, Copy)]
struct Route {
    provider: usize,
    source: usize,
}

struct Shape {
    provider: usize,
    prefix: String,
    suffix: &'static str,
    /// The `common` key source, when the provider accepts any tenant with this version.
    source: Option<usize>,
}

/// Where one set of keys comes from, and what is remembered about it.
struct Source {
    provider: usize,
    /// `provider/tenant/version`, for logs.
    label: String,
    discovery_url: String,
    expected_issuer: String,
    tenant: Option<String>,
    /// The newest key set fetched successfully, served when a later fetch fails.
    last_good: ArcSwapOption<KeySet>,
    /// When (token-clock seconds) an unknown `kid` last caused a refetch; [`NEVER`] if never.
    last_unknown_kid_refetch: AtomicU64,
}

#[derive(Clone)]
struct CachedKeys {
    keys: Arc<KeySet>,
    ttl: Duration,
}

/// Expires each entry after its own TTL: long after a good fetch, short after a failure.
struct KeysExpiry;

impl Verifier {
    /// Builds a verifier for `providers`; no network is touched until [`Verifier::warm`] or the
    /// first token.
    pub fn new(providers: Vec<ProviderSettings>) -> Result<Self, VerifierError> {
        if providers.is_empty() {
            return Err(VerifierError::NoProviders);
        }
        let mut names: HashMap<Arc<str>, usize> = HashMap::new();
        let mut sources = Vec::new();
        let mut by_issuer: HashMap<String, Route> = HashMap::new();
        let mut shapes: Vec<Shape> = Vec::new();
        let name_of = |index: usize| -> Arc<str> {
            providers
                .get(index)
                .map_or_else(|| Arc::from(""), |p| p.name().clone())
        };
        for (index, settings) in providers.iter().enumerate() {
            if names.insert(settings.name().clone(), index).is_some() {
                return Err(VerifierError::DuplicateName(settings.name().clone()));
            }
            let mut fixed = |issuer: String, source: Source| {
                let route = Route {
                    provider: index,
                    source: sources.len(),
                };
                if let Some(first) = by_issuer.insert(issuer, route) {
                    return Err(VerifierError::DuplicateIssuer {
                        first: name_of(first.provider),
                        second: settings.name().clone(),
                    });
                }
                sources.push(source);
                Ok(())
            };
            match settings.kind() {
                ProviderKind::Oidc(oidc) => {
                    let source = Source::new(
                        index,
                        format!("{}", settings.name()),
                        oidc.discovery_url().to_owned(),
                        oidc.issuer().to_owned(),
                        None,
                    );
                    fixed(oidc.issuer().to_owned(), source)?;
                }
                ProviderKind::Entra(entra) => {
                    let authority = entra.authority();
                    let app_id = entra.signing_keys_app_id();
                    // Sources of an app's own keys say so, to tell them from the tenant's.
                    let app_label = app_id.map(|id| format!("?appid={id}")).unwrap_or_default();
                    let tenants: &[String] = match entra.tenants() {
                        Tenants::One(tenant) => std::slice::from_ref(tenant),
                        Tenants::List(list) => list,
                        Tenants::Any => &[],
                    };
                    for tenant in tenants {
                        for version in entra.versions().iter() {
                            let issuer = entra.issuer(version, tenant);
                            let source = Source::new(
                                index,
                                format!(
                                    "{}/{tenant}/{}{app_label}",
                                    settings.name(),
                                    version.as_str()
                                ),
                                discovery_url(&authority, tenant, version, app_id),
                                issuer.clone(),
                                Some(tenant.clone()),
                            );
                            fixed(issuer, source)?;
                        }
                    }
                    for version in [TokenVersion::V1, TokenVersion::V2] {
                        let (prefix, suffix) = entra.issuer_shape(version);
                        let any =
                            *entra.tenants() == Tenants::Any && entra.versions().contains(version);
                        let source = any.then(|| {
                            sources.push(Source::new(
                                index,
                                format!(
                                    "{}/common/{}{app_label}",
                                    settings.name(),
                                    version.as_str()
                                ),
                                discovery_url(&authority, "common", version, app_id),
                                entra.issuer(version, super::keys::TENANT_PLACEHOLDER),
                                None,
                            ));
                            sources.len() - 1
                        });
                        if let Some(other) = shapes.iter().find(|s| {
                            source.is_some()
                                && s.source.is_some()
                                && s.prefix == prefix
                                && s.suffix == suffix
                        }) {
                            return Err(VerifierError::DuplicateIssuer {
                                first: name_of(other.provider),
                                second: settings.name().clone(),
                            });
                        }
                        shapes.push(Shape {
                            provider: index,
                            prefix,
                            suffix,
                            source,
                        });
                    }
                }
            }
        }
        let max_token_bytes = providers
            .iter()
            .map(ProviderSettings::max_token_bytes)
            .max()
            .unwrap_or(super::DEFAULT_MAX_TOKEN_BYTES);
        // One entry per source, all known up front, so no capacity bound is needed (and none
        // can evict a source's keys through moka's admission policy).
        let keys = Cache::builder().expire_after(KeysExpiry).build();
        let providers = providers
            .into_iter()
            .map(|settings| {
                let graph = match settings.as_entra() {
                    Some(entra) => match entra.groups_overage() {
                        GroupsOverage::Resolve(graph) => {
                            Some(GraphClient::new(graph, &entra.authority())?)
                        }
                        GroupsOverage::Deny => None,
                    },
                    None => None,
                };
                Ok(Provider { settings, graph })
            })
            .collect::<Result<Vec<_>, GraphError>>()?;
        Ok(Self {
            providers,
            sources,
            by_issuer,
            shapes,
            max_token_bytes,
            fetcher: Fetcher::new()?,
            keys,
            verified: VerifiedTokens::new(DEFAULT_TOKEN_CACHE_SIZE),
        })
    }

    /// Keeps at most `capacity` verified tokens (0 turns the cache off), starting empty.
    #[must_use]
    pub fn with_token_cache(mut self, capacity: u64) -> Self {
        self.verified = VerifiedTokens::new(capacity);
        self
    }

    /// Number of tokens in the verified-token cache.
    pub async fn cached_tokens(&self) -> u64 {
        self.verified.len().await
    }

    /// Verifies `token` at time `now` (unix seconds).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        self.verify_digested(token, &token_digest(token), now)
            .await
            .map(|verification| verification.identity)
    }

    /// Verifies `token`, whose SHA-256 the caller has already computed as `digest`, at time
    /// `now` (unix seconds).
    pub async fn verify_digested(
        &self,
        token: &str,
        digest: &TokenDigest,
        now: u64,
    ) -> Result<Verification, TokenError> {
        let parsed = ParsedToken::parse(token, self.max_token_bytes)?;
        // Routing reads unverified claims; everything it selects is re-checked after the
        // signature. Unknown issuers and refused tenants stop here, before any network traffic.
        let route = self.route(&parsed)?;
        let provider = self.provider(route.provider)?;
        let settings = &provider.settings;
        check_algorithm(parsed.alg(), settings)?;
        // Keys are looked up on a hit too: a token stays valid only while its source still
        // serves its `kid`, so a withdrawn key ends its cached tokens with it.
        let keys = self.keys_for_kid(route.source, parsed.kid(), now).await?;
        let cached = self.verified.contains(digest, route.source, now).await;
        if self.verified.enabled() {
            metrics::record_cache_lookup(cached);
        }
        let signature = if cached {
            Signature::Verified
        } else {
            Signature::Check
        };
        let Verified {
            mut identity,
            groups_overage,
        } = verify_parsed(parsed, token, settings, &keys, signature, now)?;
        if groups_overage {
            let Some(graph) = &provider.graph else {
                return Err(TokenError::GroupsOverage);
            };
            let groups = graph
                .member_groups(
                    identity.tenant.as_deref().unwrap_or_default(),
                    identity.object_id.as_deref().unwrap_or_default(),
                    identity.kind,
                    identity.expires_at,
                    now,
                )
                .await
                .map_err(|source| {
                    tracing::warn!(
                        provider = %provider.settings.name(),
                        error = %error_chain(&*source),
                        "groups overage could not be resolved"
                    );
                    TokenError::GroupsUnresolved {
                        provider: provider.settings.name().clone(),
                        source,
                    }
                })?;
            identity.groups = groups.to_vec();
        }
        // Remembered only once accepted, so no refusal ever lands in the cache.
        if !cached {
            let until = identity.expires_at.saturating_add(settings.leeway_secs());
            self.verified
                .insert(*digest, route.source, until, now)
                .await;
        }
        Ok(Verification { identity, cached })
    }

    /// Loads every key source; the service calls this at start. Tries all sources and returns
    /// the first failure.
    pub async fn warm(&self) -> Result<(), TokenError> {
        let mut first_error = None;
        for index in 0..self.sources.len() {
            if let Err(error) = self.refresh(index).await
                && first_error.is_none()
            {
                first_error = Some(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// True once every key source has had a good key set (a later failed refresh keeps it).
    /// Cheap and lock-free: meant for a readiness probe.
    pub fn keys_loaded(&self) -> bool {
        self.sources
            .iter()
            .all(|source| source.last_good.load().is_some())
    }

    /// Refreshes keys in the background, each source a little before its provider's
    /// `key_refresh_interval` runs out, until `shutdown` completes or the verifier is dropped.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::downgrade(self);
        let periods: Vec<Duration> = self
            .sources
            .iter()
            .map(|source| {
                let interval = self
                    .providers
                    .get(source.provider)
                    .map_or(super::DEFAULT_KEY_REFRESH_INTERVAL, |p| {
                        p.settings.key_refresh_interval()
                    });
                // Refreshing at 90 % keeps cached entries from ever expiring while this runs.
                interval.mul_f64(0.9)
            })
            .collect();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut due: Vec<tokio::time::Instant> = periods.iter().map(|p| start + *p).collect();
            tokio::pin!(shutdown);
            loop {
                let Some(next) = due.iter().min().copied() else {
                    return;
                };
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep_until(next) => {}
                }
                let Some(verifier) = verifier.upgrade() else {
                    return;
                };
                let now = tokio::time::Instant::now();
                for (index, (due, period)) in due.iter_mut().zip(&periods).enumerate() {
                    if *due <= now {
                        // Failures are logged in `refresh`; the last good keys stay in use.
                        let _ = verifier.refresh(index).await;
                        *due = tokio::time::Instant::now() + *period;
                    }
                }
            }
        })
    }

    /// Names of the configured providers, in configuration order.
    pub fn provider_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.providers.iter().map(|p| p.settings.name())
    }

    /// The provider and key source for the token's `iss`, after the tenant rules.
    fn route(&self, parsed: &ParsedToken) -> Result<Route, TokenError> {
        let issuer = parsed.issuer().ok_or(TokenError::MissingClaim("iss"))?;
        if let Some(route) = self.by_issuer.get(issuer) {
            let settings = &self.provider(route.provider)?.settings;
            if let Some(entra) = settings.as_entra() {
                check_entra_tenant(settings, entra, issuer, parsed.claims())?;
            }
            return Ok(*route);
        }
        let mut refusal = None;
        for shape in &self.shapes {
            let matches = issuer
                .strip_prefix(shape.prefix.as_str())
                .and_then(|rest| rest.strip_suffix(shape.suffix))
                .is_some_and(|segment| !segment.is_empty() && !segment.contains('/'));
            if !matches {
                continue;
            }
            let settings = &self.provider(shape.provider)?.settings;
            let Some(entra) = settings.as_entra() else {
                continue;
            };
            let checked = check_entra_tenant(settings, entra, issuer, parsed.claims());
            match (shape.source, checked) {
                (Some(source), Ok(_)) => {
                    return Ok(Route {
                        provider: shape.provider,
                        source,
                    });
                }
                (Some(_), Err(error)) => return Err(error),
                // A listed provider's cloud, but not one of its exact issuers: say why. A provider
                // that lists the tenant knows better (wrong version, mismatched tid) than one
                // that merely does not list it.
                (None, Err(error)) => {
                    let weaker = refusal
                        .as_ref()
                        .is_none_or(|r| matches!(r, TokenError::TenantNotAllowed { .. }));
                    if weaker {
                        refusal = Some(error);
                    }
                }
                (None, Ok(_)) => {
                    refusal.get_or_insert(TokenError::IssuerUnknown);
                }
            }
        }
        Err(refusal.unwrap_or(TokenError::IssuerUnknown))
    }

    fn provider(&self, index: usize) -> Result<&Provider, TokenError> {
        // Routes only hold indices of `providers`; this cannot fail.
        self.providers.get(index).ok_or(TokenError::IssuerUnknown)
    }

    fn source(&self, index: usize) -> Result<&Source, TokenError> {
        self.sources.get(index).ok_or(TokenError::IssuerUnknown)
    }

    fn provider_of(&self, source: &Source) -> Result<&ProviderSettings, TokenError> {
        Ok(&self.provider(source.provider)?.settings)
    }

    /// The keys to check a token with `kid` against, refetched once if `kid` is unknown and the
    /// throttle allows.
    async fn keys_for_kid(
        &self,
        index: usize,
        kid: &str,
        now: u64,
    ) -> Result<Arc<KeySet>, TokenError> {
        let keys = self.current_keys(index).await?;
        if keys.contains(kid) {
            return Ok(keys);
        }
        let source = self.source(index)?;
        let interval = self
            .provider_of(source)?
            .unknown_kid_refetch_interval()
            .as_secs();
        if source.claim_unknown_kid_refetch(now, interval) {
            tracing::debug!(source = %source.label, "unknown kid; refetching keys");
            self.keys.invalidate(&index).await;
        }
        // After our own invalidation this fetches; if another caller's refetch is in flight it
        // waits for it (coalesced); otherwise it returns the cached set without a fetch.
        self.current_keys(index).await
    }

    async fn current_keys(&self, index: usize) -> Result<Arc<KeySet>, TokenError> {
        let source = self.source(index)?;
        let settings = self.provider_of(source)?;
        self.keys
            .try_get_with(index, self.load(source, settings))
            .await
            .map(|cached| cached.keys)
            .map_err(|error| TokenError::KeysUnavailable {
                provider: settings.name().clone(),
                source: error,
            })
    }

    /// The cache loader: a fresh fetch, or the last good keys for a short while if it fails.
    async fn load(
        &self,
        source: &Source,
        settings: &ProviderSettings,
    ) -> Result<CachedKeys, KeysError> {
        let fetched = self.fetcher.fetch(&source.target()).await;
        crate::metrics::record_key_refresh(settings.name(), fetched.is_ok());
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                source.last_good.store(Some(keys.clone()));
                Ok(CachedKeys {
                    keys,
                    ttl: settings.key_refresh_interval(),
                })
            }
            Err(error) => match source.last_good.load_full() {
                Some(keys) => {
                    tracing::warn!(
                        source = %source.label,
                        error = %error_chain(&error),
                        "key fetch failed; keeping the last good keys"
                    );
                    Ok(CachedKeys {
                        keys,
                        ttl: FAILED_FETCH_RETRY.min(settings.key_refresh_interval()),
                    })
                }
                None => {
                    tracing::warn!(
                        source = %source.label,
                        error = %error_chain(&error),
                        "key fetch failed and no keys are cached"
                    );
                    Err(error)
                }
            },
        }
    }

    /// Fetches and installs keys now; on failure the cache is left as it is.
    async fn refresh(&self, index: usize) -> Result<(), TokenError> {
        let source = self.source(index)?;
        let settings = self.provider_of(source)?;
        let fetched = self.fetcher.fetch(&source.target()).await;
        crate::metrics::record_key_refresh(settings.name(), fetched.is_ok());
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                source.last_good.store(Some(keys.clone()));
                let ttl = settings.key_refresh_interval();
                self.keys.insert(index, CachedKeys { keys, ttl }).await;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    source = %source.label,
                    error = %error_chain(&error),
                    "key refresh failed"
                );
                Err(TokenError::KeysUnavailable {
                    provider: settings.name().clone(),
                    source: Arc::new(error),
                })
            }
        }
    }
}

impl Source {
    fn new(
        provider: usize,
        label: String,
        discovery_url: String,
        expected_issuer: String,
        tenant: Option<String>,
    ) -> Self {
        Self {
            provider,
            label,
            discovery_url,
            expected_issuer,
            tenant,
            last_good: ArcSwapOption::empty(),
            last_unknown_kid_refetch: AtomicU64::new(NEVER),
        }
    }

    fn target(&self) -> FetchTarget<'_> {
        FetchTarget {
            label: &self.label,
            discovery_url: &self.discovery_url,
            expected_issuer: &self.expected_issuer,
            tenant: self.tenant.as_deref(),
        }
    }

    /// True (and the slot taken) when an unknown `kid` may trigger a refetch at `now`.
    fn claim_unknown_kid_refetch(&self, now: u64, interval: u64) -> bool {
        let previous = self.last_unknown_kid_refetch.load(Ordering::Acquire);
        let allowed = previous == NEVER
            // A clock that went backwards must not block refetches until it catches up.
            || now < previous
            || now - previous >= interval;
        // Of racing callers, exactly one wins the slot.
        allowed
            && self
                .last_unknown_kid_refetch
                .compare_exchange(previous, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// Where an Entra tenant's (or `common`'s) metadata lives; with `app_id`, the metadata of that
/// app's own signing keys, whose `jwks_uri` Entra gives the same `?appid=` query.
fn discovery_url(
    authority: &str,
    tenant: &str,
    version: TokenVersion,
    app_id: Option<&str>,
) -> String {
    let path = match version {
        TokenVersion::V1 => format!("{authority}/{tenant}/.well-known/openid-configuration"),
        TokenVersion::V2 => format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"),
    };
    match app_id {
        // A lowercase GUID (checked in settings), so it needs no percent-encoding.
        Some(app_id) => format!("{path}?appid={app_id}"),
        None => path,
    }
}

impl Expiry<usize, CachedKeys> for KeysExpiry {
    fn expire_after_create(
        &self,
        _key: &usize,
        value: &CachedKeys,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &usize,
        value: &CachedKeys,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// `error: cause: cause`, for one-line logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_carry_the_app_id_only_when_set() {
        let app = Some("6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11");
        assert_eq!(
            discovery_url("https://login.example", "common", TokenVersion::V2, None),
            "https://login.example/common/v2.0/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://login.example", "t", TokenVersion::V1, app),
            "https://login.example/t/.well-known/openid-configuration\
             ?appid=6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11"
        );
        assert_eq!(
            discovery_url("https://login.example", "t", TokenVersion::V2, app),
            "https://login.example/t/v2.0/.well-known/openid-configuration\
             ?appid=6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11"
        );
    }
}
