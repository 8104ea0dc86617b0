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
//! tenant's set does not list.
//!
//! A fetch never blocks a request that the keys already held can decide. Each source holds its
//! last good key set and at most one fetch in flight, a task of its own that every caller shares
//! and that runs to its end (the fetcher's total deadline) even when nobody waits for it any
//! more: a stale set is refreshed in the background while it keeps being served. Only a request
//! whose `kid` the held set lacks, or that comes before any set has loaded, waits for the fetch,
//! and for at most the key wait (well below nats-server's callout timeout); then it is refused
//! (`key_unknown`, `keys_unavailable`) and later requests get the fetch's result. A failed fetch
//! is not retried before a short, growing pause (negative caching, so a storm of connects while
//! the provider is down costs one fetch, not one each), and an unknown `kid` triggers at most one
//! refetch per source per `unknown_kid_refetch_interval`, so random kids cannot make us hammer
//! the identity provider.
//!
//! Tokens that passed are remembered by SHA-256 in the verified-token cache (`verified`), so
//! a token seen again skips the signature check, and nothing else.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::time::Instant;

use super::TokenError;
use super::graph::{GraphClient, GraphError};
use super::keys::{FETCH_DEADLINE, FetchTarget, Fetcher, KeySet, KeysError};
use super::settings::{GroupsOverage, ProviderKind, ProviderSettings, Tenants, TokenVersion};
use super::verified::{DEFAULT_TOKEN_CACHE_SIZE, TokenDigest, VerifiedTokens, token_digest};
use super::verify::{
    ParsedToken, Signature, Verified, check_algorithm, check_entra_tenant, verify_parsed,
};
use crate::guid::Guid;
use crate::identity::Identity;
use crate::metrics::Metrics;

/// Default longest wait of a request for a key fetch: 3/8 of nats-server's default 2 s callout
/// timeout, leaving the rest for verification, policy and the answer's way back.
pub const DEFAULT_KEY_WAIT: Duration = Duration::from_millis(750);
/// Pause after a first failed fetch before the next may start; it doubles with every further
/// failure up to [`MAX_RETRY`]. Short, so a provider that comes back is used again soon.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest pause between failed fetches of one source.
const MAX_RETRY: Duration = Duration::from_secs(8);
/// "No unknown-kid refetch yet".
const NEVER: u64 = u64::MAX;

/// Verifies access tokens of the configured providers.
pub struct Verifier {
    providers: Vec<Provider>,
    sources: Vec<Arc<Source>>,
    /// Exact `iss` to its provider and key source.
    by_issuer: HashMap<String, Route>,
    /// Issuer shapes of every Entra provider and version: routes `any` tenants, and names the
    /// precise refusal for tenants and versions a provider does not accept.
    shapes: Vec<Shape>,
    /// Largest `max_token_bytes` of any provider: the limit before the provider is known.
    max_token_bytes: usize,
    fetcher: Fetcher,
    /// How long a request waits for a fetch it needs.
    key_wait: Duration,
    /// Tokens whose signatures were verified, by SHA-256.
    verified: VerifiedTokens,
    /// Where key fetches and cache lookups are counted, if anywhere.
    metrics: Option<Arc<Metrics>>,
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
    /// The newest key set fetched successfully: the one in use, whatever later fetches do.
    last_good: ArcSwapOption<KeySet>,
    /// When (token-clock seconds) an unknown `kid` last caused a refetch; [`NEVER`] if never.
    last_unknown_kid_refetch: AtomicU64,
    /// The fetch in flight and what past fetches decide about the next one. Never held across
    /// an `await`.
    fetch: Mutex<FetchState>,
}

/// What a fetch ended with, as every caller waiting for it sees it.
type Fetched = Result<Arc<KeySet>, Arc<KeysError>>;
/// Resolves to `Some` once the fetch in flight ends.
type Pending = watch::Receiver<Option<Fetched>>;

/// The fetch bookkeeping of one source: pure, with the time passed in.
#[derive(Default)]
struct FetchState {
    /// The fetch in flight, if any: every caller shares it.
    in_flight: Option<Pending>,
    /// When the held key set is due for a refresh; `None` before the first good fetch.
    refresh_due: Option<Instant>,
    /// Failed fetches since the last good one.
    failures: u32,
    /// After a failure, no fetch (but a forced one) starts before this.
    retry_at: Option<Instant>,
    /// Why the last fetch failed, until one succeeds.
    last_error: Option<Arc<KeysError>>,
}

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
                    let tenants: &[Guid] = match entra.tenants() {
                        Tenants::One(tenant) => std::slice::from_ref(tenant),
                        Tenants::List(list) => list,
                        Tenants::Any => &[],
                    };
                    for tenant in tenants {
                        for version in entra.versions().iter() {
                            let issuer = entra.issuer(version, tenant.as_str());
                            let source = Source::new(
                                index,
                                format!(
                                    "{}/{tenant}/{}{app_label}",
                                    settings.name(),
                                    version.as_str()
                                ),
                                discovery_url(&authority, tenant.as_str(), version, app_id),
                                issuer.clone(),
                                Some(tenant.to_string()),
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
        let sources = sources.into_iter().map(Arc::new).collect();
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
            fetcher: Fetcher::new(FETCH_DEADLINE)?,
            key_wait: DEFAULT_KEY_WAIT,
            verified: VerifiedTokens::new(DEFAULT_TOKEN_CACHE_SIZE),
            metrics: None,
        })
    }

    /// Counts key fetches and verified-token cache lookups in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Lets a request wait at most `wait` for a key fetch it needs (an unknown `kid`, or no
    /// keys yet) before it is refused; keep it well below nats-server's callout timeout.
    #[must_use]
    pub fn with_key_wait(mut self, wait: Duration) -> Self {
        self.key_wait = wait;
        self
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
        if self.verified.enabled()
            && let Some(metrics) = &self.metrics
        {
            metrics.record_cache_lookup(cached);
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

    /// Loads every key source now, all at once, and waits for them (each within the fetch
    /// deadline); the service calls this at start. Unlike a request, it does not wait out the
    /// pause after a failed fetch. Returns the first failure.
    pub async fn warm(&self) -> Result<(), TokenError> {
        self.load(true).await
    }

    /// Fetches the keys of every source that has none yet, unless the pause after its last
    /// failed fetch is still running (then its last error is returned), and waits for them. A
    /// start-up loader retries with this, so it adds nothing to the negative caching requests
    /// observe.
    pub async fn load_missing(&self) -> Result<(), TokenError> {
        self.load(false).await
    }

    async fn load(&self, force: bool) -> Result<(), TokenError> {
        let pending: Vec<_> = (0..self.sources.len())
            .map(|index| match self.source(index) {
                Ok(source) if !force && source.last_good.load().is_some() => Ok(None),
                Ok(_) => self.start_fetch(index, force),
                Err(error) => Err(error),
            })
            .collect::<Result<_, _>>()?;
        let mut first_error = None;
        for (index, pending) in pending.into_iter().enumerate() {
            if self.source(index)?.last_good.load().is_some() && pending.is_none() {
                continue;
            }
            let outcome = match wait(pending, None).await {
                Some(Ok(_)) => Ok(()),
                Some(Err(error)) => Err(error),
                None => Err(self.source(index)?.last_error(self.key_wait)),
            };
            if let Err(error) = outcome
                && first_error.is_none()
            {
                first_error = Some(self.unavailable(index, error)?);
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
                        // Failures are logged by the fetch; the last good keys stay in use.
                        verifier.refresh(index).await;
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

    fn source(&self, index: usize) -> Result<&Arc<Source>, TokenError> {
        self.sources.get(index).ok_or(TokenError::IssuerUnknown)
    }

    fn provider_of(&self, source: &Source) -> Result<&ProviderSettings, TokenError> {
        Ok(&self.provider(source.provider)?.settings)
    }

    /// The keys to check a token with `kid` against. Keys held are answered at once (a stale
    /// set starts a refresh in the background); an unknown `kid` may start a refetch (at most
    /// one per throttle interval) and waits for the fetch in flight for at most the key wait,
    /// then gets the held set, which refuses it as `key_unknown`. Before any set has loaded, a
    /// request waits as long for the first fetch, then is refused as `keys_unavailable`.
    async fn keys_for_kid(
        &self,
        index: usize,
        kid: &str,
        now: u64,
    ) -> Result<Arc<KeySet>, TokenError> {
        let source = self.source(index)?;
        if let Some(held) = source.last_good.load_full() {
            if source.refresh_due(Instant::now()) {
                // Not awaited: this request is decided with the set it already has.
                self.start_fetch(index, false)?;
            }
            if held.contains(kid) {
                return Ok(held);
            }
            let interval = self
                .provider_of(source)?
                .unknown_kid_refetch_interval()
                .as_secs();
            let pending = if source.claim_unknown_kid_refetch(now, interval) {
                tracing::debug!(source = %source.label, "unknown kid; refetching keys");
                self.start_fetch(index, false)?
            } else {
                source.in_flight()
            };
            return Ok(match wait(pending, Some(self.key_wait)).await {
                Some(Ok(fresh)) => fresh,
                // Failed or still running: the held set decides, and lacks the kid.
                Some(Err(_)) | None => held,
            });
        }
        let pending = self.start_fetch(index, false)?;
        match wait(pending, Some(self.key_wait)).await {
            Some(Ok(keys)) => Ok(keys),
            Some(Err(error)) => Err(self.unavailable(index, error)?),
            None => Err(self.unavailable(index, source.last_error(self.key_wait))?),
        }
    }

    /// The fetch in flight for source `index`, or a new one when none is and (unless `force`)
    /// the pause after a failure is over; `None` when no fetch runs. The fetch is a task of its
    /// own: it ends, and its result is kept, whether or not anyone still waits for it.
    fn start_fetch(&self, index: usize, force: bool) -> Result<Option<Pending>, TokenError> {
        let source = self.source(index)?;
        let settings = self.provider_of(source)?;
        let (done, pending) = {
            let mut state = source.state();
            // A fetch whose task is gone without an answer (its runtime shut down) is not in
            // flight: it must not keep every later fetch from starting.
            if let Some(pending) = &state.in_flight
                && pending.has_changed().is_ok()
            {
                return Ok(Some(pending.clone()));
            }
            if !force && !state.may_start(Instant::now()) {
                return Ok(None);
            }
            let (done, pending) = watch::channel(None);
            state.in_flight = Some(pending.clone());
            (done, pending)
        };
        let source = Arc::clone(source);
        let fetcher = self.fetcher.clone();
        let provider = settings.name().clone();
        let metrics = self.metrics.clone();
        let refresh_interval = settings.key_refresh_interval();
        tokio::spawn(async move {
            let fetched = fetcher
                .fetch(&source.target())
                .await
                .map(Arc::new)
                .map_err(Arc::new);
            if let Some(metrics) = metrics {
                metrics.record_key_refresh(&provider, fetched.is_ok());
            }
            source.finish(&fetched, refresh_interval, Instant::now());
            done.send_replace(Some(fetched));
        });
        Ok(Some(pending))
    }

    /// Fetches keys of source `index` now unless a failed fetch asks for a pause, and waits
    /// for the fetch; a failure is logged by the fetch and the last good keys stay in use.
    async fn refresh(&self, index: usize) {
        if let Ok(pending) = self.start_fetch(index, false) {
            let _ = wait(pending, None).await;
        }
    }

    fn unavailable(&self, index: usize, source: Arc<KeysError>) -> Result<TokenError, TokenError> {
        Ok(TokenError::KeysUnavailable {
            provider: self.provider_of(self.source(index)?)?.name().clone(),
            source,
        })
    }
}

/// What `pending` ends with, waiting at most `limit` (`None`: until it ends); `None` without
/// a fetch, or when the limit passed first.
async fn wait(pending: Option<Pending>, limit: Option<Duration>) -> Option<Fetched> {
    let mut pending = pending?;
    let ended = async move {
        // An error means the fetch task was dropped unfinished (runtime shutdown).
        let outcome = pending.wait_for(Option::is_some).await.ok()?;
        outcome.clone()
    };
    match limit {
        Some(limit) => tokio::time::timeout(limit, ended).await.ok().flatten(),
        None => ended.await,
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
            fetch: Mutex::new(FetchState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FetchState> {
        // The state stays consistent at every point a panic could leave it.
        self.fetch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_flight(&self) -> Option<Pending> {
        self.state().in_flight.clone()
    }

    fn refresh_due(&self, now: Instant) -> bool {
        self.state().refresh_due.is_some_and(|due| now >= due)
    }

    /// Why no keys could be had: the last failure, or a first fetch still running after `waited`.
    fn last_error(&self, waited: Duration) -> Arc<KeysError> {
        self.state()
            .last_error
            .clone()
            .unwrap_or_else(|| Arc::new(KeysError::StillFetching { waited }))
    }

    /// Records the end of the fetch in flight: a good set becomes the one in use.
    fn finish(&self, fetched: &Fetched, refresh_interval: Duration, now: Instant) {
        if let Ok(keys) = fetched {
            self.last_good.store(Some(Arc::clone(keys)));
        }
        let mut state = self.state();
        state.in_flight = None;
        match fetched {
            Ok(_) => state.succeeded(now, refresh_interval),
            Err(error) => {
                let retry_in = state.failed(now, Arc::clone(error));
                drop(state);
                let message = if self.last_good.load().is_some() {
                    "key fetch failed; keeping the last good keys"
                } else {
                    "key fetch failed and no keys are cached"
                };
                tracing::warn!(
                    source = %self.label,
                    error = %error_chain(&**error),
                    retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
                    "{message}"
                );
            }
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

impl FetchState {
    /// True when a fetch that is not forced may start at `now`.
    fn may_start(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    fn succeeded(&mut self, now: Instant, refresh_interval: Duration) {
        self.refresh_due = Some(now + refresh_interval);
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
    }

    /// Records a failure; returns the pause before the next fetch may start.
    fn failed(&mut self, now: Instant, error: Arc<KeysError>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(8);
        let pause = FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
        self.retry_at = Some(now + pause);
        self.last_error = Some(error);
        pause
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

    fn failure() -> Arc<KeysError> {
        Arc::new(KeysError::StillFetching {
            waited: Duration::ZERO,
        })
    }

    #[test]
    fn a_failed_fetch_pauses_the_next_with_a_growing_bounded_backoff() {
        let start = Instant::now();
        let mut state = FetchState::default();
        assert!(state.may_start(start));
        let pauses: Vec<u64> = (0..6)
            .map(|_| state.failed(start, failure()).as_secs())
            .collect();
        assert_eq!(pauses, [2, 4, 8, 8, 8, 8]);
        assert!(!state.may_start(start + Duration::from_secs(7)));
        assert!(state.may_start(start + Duration::from_secs(8)));
        assert!(state.last_error.is_some());
    }

    #[test]
    fn a_good_fetch_clears_the_backoff_and_schedules_the_refresh() {
        let start = Instant::now();
        let mut state = FetchState::default();
        state.failed(start, failure());
        state.failed(start, failure());
        state.succeeded(start, Duration::from_secs(3600));
        assert!(state.may_start(start));
        assert!(state.last_error.is_none());
        assert_eq!(state.refresh_due, Some(start + Duration::from_secs(3600)));
        // The pause starts over from the first step.
        assert_eq!(state.failed(start, failure()), FIRST_RETRY);
    }

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
