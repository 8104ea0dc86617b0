//! The [`Verifier`]: assembles the parts of token verification and runs a token through them.
//!
//! Each part can be read and tested alone: [`Routes`] (`routing`) picks the provider and key
//! source from `iss` and refuses unknown issuers and tenants before any fetch; [`KeySources`]
//! (`sources`) holds each source's last good keys, its single fetch in flight and its pause
//! after failures; `verified` remembers tokens that passed; `graph` resolves groups overage;
//! the pure core (`verify`) checks the signature and claims. This module only wires them.
//!
//! Tokens that passed are remembered by SHA-256 in the verified-token cache (`verified`), so
//! a token seen again skips the signature check, and nothing else.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::TokenError;
use super::graph::{GraphClient, GraphError};
use super::keys::KeysError;
use super::routing::{Routes, RoutesError};
use super::settings::{GroupsOverage, ProviderSettings};
use super::sources::KeySources;
use super::verified::{DEFAULT_TOKEN_CACHE_SIZE, TokenDigest, VerifiedTokens, token_digest};
use super::verify::{ParsedToken, Signature, Verified, check_algorithm, verify_parsed};
use crate::identity::Identity;
use crate::metrics::Metrics;

/// Verifies access tokens of the configured providers.
pub struct Verifier {
    /// The providers, and which one (and which key source) a token goes to.
    routes: Routes,
    /// The keys of every source `routes` names.
    keys: KeySources,
    /// Per provider (same index as `routes.providers()`), its Graph client when it resolves
    /// groups overage.
    graphs: Vec<Option<GraphClient>>,
    /// Largest `max_token_bytes` of any provider: the limit before the provider is known.
    max_token_bytes: usize,
    /// Tokens whose signatures were verified, by SHA-256.
    verified: VerifiedTokens,
    /// Where verified-token cache lookups are counted, if anywhere.
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

/// A refused token: why, and the configured provider its issuer routed to, when routing got
/// that far (so the audit trail names the provider for every refusal after routing, expired
/// and malformed-claim tokens included).
#[derive(Debug)]
pub struct Refused {
    /// Why the token was refused.
    pub error: TokenError,
    /// The provider the token's `iss` routed to, if it did.
    pub provider: Option<Arc<str>>,
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

impl From<RoutesError> for VerifierError {
    fn from(error: RoutesError) -> Self {
        match error {
            RoutesError::NoProviders => Self::NoProviders,
            RoutesError::DuplicateName(name) => Self::DuplicateName(name),
            RoutesError::DuplicateIssuer { first, second } => {
                Self::DuplicateIssuer { first, second }
            }
        }
    }
}

impl Verifier {
    /// Builds a verifier for `providers`; no network is touched until [`Verifier::warm`] or the
    /// first token.
    pub fn new(providers: Vec<ProviderSettings>) -> Result<Self, VerifierError> {
        let routes = Routes::new(providers)?;
        let keys = KeySources::new(routes.sources(), routes.providers())?;
        let graphs = routes
            .providers()
            .iter()
            .map(graph_client)
            .collect::<Result<_, _>>()?;
        let max_token_bytes = routes
            .providers()
            .iter()
            .map(ProviderSettings::max_token_bytes)
            .max()
            .unwrap_or(super::DEFAULT_MAX_TOKEN_BYTES);
        Ok(Self {
            routes,
            keys,
            graphs,
            max_token_bytes,
            verified: VerifiedTokens::new(DEFAULT_TOKEN_CACHE_SIZE),
            metrics: None,
        })
    }

    /// Counts key fetches and verified-token cache lookups in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.keys.set_metrics(Arc::clone(&metrics));
        self.metrics = Some(metrics);
        self
    }

    /// Lets a request wait at most `wait` for a key fetch it needs (an unknown `kid`, or no
    /// keys yet) before it is refused; keep it well below nats-server's callout timeout.
    #[must_use]
    pub fn with_key_wait(mut self, wait: Duration) -> Self {
        self.keys.set_key_wait(wait);
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
            .map_err(|refused| refused.error)
    }

    /// Verifies `token`, whose SHA-256 the caller has already computed as `digest`, at time
    /// `now` (unix seconds).
    pub async fn verify_digested(
        &self,
        token: &str,
        digest: &TokenDigest,
        now: u64,
    ) -> Result<Verification, Refused> {
        let mut routed = None;
        self.verify_routed(token, digest, now, &mut routed)
            .await
            .map_err(|error| Refused {
                provider: error.provider().cloned().or(routed),
                error,
            })
    }

    /// [`Self::verify_digested`], noting in `routed` the provider the token routed to.
    async fn verify_routed(
        &self,
        token: &str,
        digest: &TokenDigest,
        now: u64,
        routed: &mut Option<Arc<str>>,
    ) -> Result<Verification, TokenError> {
        let parsed = ParsedToken::parse(token, self.max_token_bytes)?;
        // Routing reads unverified claims; everything it selects is re-checked after the
        // signature. Unknown issuers and refused tenants stop here, before any network traffic.
        let issuer = parsed.issuer().ok_or(TokenError::MissingClaim("iss"))?;
        let route = self.routes.route(issuer, parsed.claims())?;
        let settings = self.routes.provider(route.provider)?;
        *routed = Some(settings.name().clone());
        check_algorithm(parsed.alg(), settings)?;
        // Keys are looked up on a hit too: a token stays valid only while its source still
        // serves its `kid`, so a withdrawn key ends its cached tokens with it.
        let keys = self
            .keys
            .keys_for_kid(route.source, parsed.kid(), now)
            .await?;
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
            let Some(graph) = self.graphs.get(route.provider).and_then(Option::as_ref) else {
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
                        provider = %settings.name(),
                        error = %super::error_chain(&*source),
                        "groups overage could not be resolved"
                    );
                    TokenError::GroupsUnresolved {
                        provider: settings.name().clone(),
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
        self.keys.load(true).await
    }

    /// Fetches the keys of every source that has none yet, unless the pause after its last
    /// failed fetch is still running (then its last error is returned), and waits for them. A
    /// start-up loader retries with this, so it adds nothing to the negative caching requests
    /// observe.
    pub async fn load_missing(&self) -> Result<(), TokenError> {
        self.keys.load(false).await
    }

    /// True once every key source has had a good key set (a later failed refresh keeps it).
    /// Cheap and lock-free: meant for a readiness probe.
    pub fn keys_loaded(&self) -> bool {
        self.keys.all_loaded()
    }

    /// Refreshes keys in the background, each source a little before its provider's
    /// `key_refresh_interval` runs out, until `shutdown` completes or the verifier is dropped.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        KeySources::spawn_refresh(Arc::downgrade(self), |verifier| &verifier.keys, shutdown)
    }

    /// Names of the configured providers, in configuration order.
    pub fn provider_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.routes.providers().iter().map(ProviderSettings::name)
    }
}

/// The Graph client of `settings`, when it resolves groups overage.
fn graph_client(settings: &ProviderSettings) -> Result<Option<GraphClient>, GraphError> {
    match settings
        .as_entra()
        .map(|entra| (entra, entra.groups_overage()))
    {
        Some((entra, GroupsOverage::Resolve(graph))) => {
            Ok(Some(GraphClient::new(graph, &entra.authority())?))
        }
        Some((_, GroupsOverage::Deny)) | None => Ok(None),
    }
}
