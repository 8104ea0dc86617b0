//! The [`Verifier`]: routes a token to its provider by `iss`, gets that provider's keys from a
//! cache (fetching them when needed) and hands both to the pure core.
//!
//! Keys are cached per provider in moka, so concurrent lookups on a cold cache coalesce into one
//! fetch. The last good key set is kept for when a fetch fails, and an unknown `kid` triggers at
//! most one refetch per provider per `unknown_kid_refetch_interval`, so random kids cannot make
//! us hammer the identity provider.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use moka::Expiry;
use moka::future::Cache;

use super::TokenError;
use super::keys::{Fetcher, KeySet, KeysError};
use super::settings::ProviderSettings;
use super::verify::{ParsedToken, verify_parsed};
use crate::identity::Identity;

/// After a failed fetch the last good keys are served for this long before the next attempt.
const FAILED_FETCH_RETRY: Duration = Duration::from_secs(30);

/// Verifies access tokens of the configured providers.
pub struct Verifier {
    providers: Vec<Provider>,
    /// Exact `iss` to index in `providers`; known from the settings, so routing never guesses.
    by_issuer: HashMap<String, usize>,
    /// Largest `max_token_bytes` of any provider: the limit before the provider is known.
    max_token_bytes: usize,
    fetcher: Fetcher,
    /// Current key set per provider index.
    keys: Cache<usize, CachedKeys>,
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
}

struct Provider {
    settings: ProviderSettings,
    /// The newest key set fetched successfully, served when a later fetch fails.
    last_good: ArcSwapOption<KeySet>,
    /// When (token-clock seconds) an unknown `kid` last caused a refetch.
    last_unknown_kid_refetch: Mutex<Option<u64>>,
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
        let mut by_issuer = HashMap::new();
        let mut names = HashMap::new();
        for (index, settings) in providers.iter().enumerate() {
            if names.insert(settings.name().clone(), index).is_some() {
                return Err(VerifierError::DuplicateName(settings.name().clone()));
            }
            if let Some(first) = by_issuer.insert(settings.issuer().to_owned(), index) {
                let first = providers
                    .get(first)
                    .map(|p| p.name().clone())
                    .unwrap_or_else(|| settings.name().clone());
                return Err(VerifierError::DuplicateIssuer {
                    first,
                    second: settings.name().clone(),
                });
            }
        }
        let max_token_bytes = providers
            .iter()
            .map(ProviderSettings::max_token_bytes)
            .max()
            .unwrap_or(super::DEFAULT_MAX_TOKEN_BYTES);
        // One entry per provider index, so no capacity bound is needed (and none can evict a
        // provider's keys through moka's admission policy).
        let keys = Cache::builder().expire_after(KeysExpiry).build();
        let providers = providers
            .into_iter()
            .map(|settings| Provider {
                settings,
                last_good: ArcSwapOption::empty(),
                last_unknown_kid_refetch: Mutex::new(None),
            })
            .collect();
        Ok(Self {
            providers,
            by_issuer,
            max_token_bytes,
            fetcher: Fetcher::new()?,
            keys,
        })
    }

    /// Verifies `token` at time `now` (unix seconds).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        let parsed = ParsedToken::parse(token, self.max_token_bytes)?;
        // Routing reads the unverified `iss`; everything it selects is re-checked after the
        // signature. An unknown issuer is refused before any network traffic.
        let index = parsed
            .issuer()
            .and_then(|issuer| self.by_issuer.get(issuer))
            .copied()
            .ok_or(TokenError::IssuerUnknown)?;
        let provider = self.provider(index)?;
        let keys = self
            .keys_for_kid(index, provider, parsed.kid(), now)
            .await?;
        verify_parsed(parsed, token, &provider.settings, &keys, now)
    }

    /// Loads every provider's keys; the service calls this at start and is ready only once it
    /// succeeds. Tries all providers and returns the first failure.
    pub async fn warm(&self) -> Result<(), TokenError> {
        let mut first_error = None;
        for index in 0..self.providers.len() {
            if let Err(error) = self.refresh(index).await
                && first_error.is_none()
            {
                first_error = Some(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Refreshes keys in the background, each provider a little before its
    /// `key_refresh_interval` runs out, until `shutdown` completes or the verifier is dropped.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::downgrade(self);
        let periods: Vec<Duration> = self
            .providers
            .iter()
            // Refreshing at 90 % keeps cached entries from ever expiring while this runs.
            .map(|p| p.settings.key_refresh_interval().mul_f64(0.9))
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

    fn provider(&self, index: usize) -> Result<&Provider, TokenError> {
        // `by_issuer` only holds indices of `providers`; this cannot fail.
        self.providers.get(index).ok_or(TokenError::IssuerUnknown)
    }

    /// The keys to check a token with `kid` against, refetched once if `kid` is unknown and the
    /// throttle allows.
    async fn keys_for_kid(
        &self,
        index: usize,
        provider: &Provider,
        kid: &str,
        now: u64,
    ) -> Result<Arc<KeySet>, TokenError> {
        let keys = self.current_keys(index, provider).await?;
        if keys.contains(kid) {
            return Ok(keys);
        }
        if provider.claim_unknown_kid_refetch(now) {
            tracing::debug!(provider = %provider.settings.name(), "unknown kid; refetching keys");
            self.keys.invalidate(&index).await;
        }
        // After our own invalidation this fetches; if another caller's refetch is in flight it
        // waits for it (coalesced); otherwise it returns the cached set without a fetch.
        self.current_keys(index, provider).await
    }

    async fn current_keys(
        &self,
        index: usize,
        provider: &Provider,
    ) -> Result<Arc<KeySet>, TokenError> {
        self.keys
            .try_get_with(index, self.load(provider))
            .await
            .map(|cached| cached.keys)
            .map_err(|source| TokenError::KeysUnavailable {
                provider: provider.settings.name().clone(),
                source,
            })
    }

    /// The cache loader: a fresh fetch, or the last good keys for a short while if it fails.
    async fn load(&self, provider: &Provider) -> Result<CachedKeys, KeysError> {
        let settings = &provider.settings;
        let fetched = self.fetcher.fetch(settings).await;
        crate::metrics::record_key_refresh(settings.name(), fetched.is_ok());
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                provider.last_good.store(Some(keys.clone()));
                Ok(CachedKeys {
                    keys,
                    ttl: settings.key_refresh_interval(),
                })
            }
            Err(error) => match provider.last_good.load_full() {
                Some(keys) => {
                    tracing::warn!(
                        provider = %settings.name(),
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
                        provider = %settings.name(),
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
        let provider = self.provider(index)?;
        let settings = &provider.settings;
        let fetched = self.fetcher.fetch(settings).await;
        crate::metrics::record_key_refresh(settings.name(), fetched.is_ok());
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                provider.last_good.store(Some(keys.clone()));
                let ttl = settings.key_refresh_interval();
                self.keys.insert(index, CachedKeys { keys, ttl }).await;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    provider = %settings.name(),
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

impl Provider {
    /// True (and the slot taken) when an unknown `kid` may trigger a refetch at `now`.
    fn claim_unknown_kid_refetch(&self, now: u64) -> bool {
        let interval = self.settings.unknown_kid_refetch_interval().as_secs();
        // A poisoned lock only means another thread panicked between two plain assignments;
        // the value is still a valid timestamp.
        let mut last = self
            .last_unknown_kid_refetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let allowed = match *last {
            None => true,
            // A clock that went backwards must not block refetches until it catches up.
            Some(previous) => now < previous || now - previous >= interval,
        };
        if allowed {
            *last = Some(now);
        }
        allowed
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
