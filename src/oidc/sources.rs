//! [`KeySources`]: the signing keys of every key source the routes name, each with its last good
//! set, at most one fetch in flight and the pause after a failed fetch.
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
//! The bookkeeping of one source ([`FetchState`]) is pure, with the time passed in.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::time::Instant;

use super::TokenError;
use super::keys::{FETCH_DEADLINE, FetchTarget, Fetcher, KeySet, KeysError};
use super::routing::SourceSpec;
use super::settings::ProviderSettings;
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

/// The keys of every source, by the index [`Routes::sources`](super::routing::Routes::sources)
/// gives it.
pub(crate) struct KeySources {
    sources: Vec<Arc<Source>>,
    fetcher: Fetcher,
    /// How long a request waits for a fetch it needs.
    key_wait: Duration,
    /// Where key fetches are counted, if anywhere.
    metrics: Option<Arc<Metrics>>,
}

/// Where one set of keys comes from, and what is remembered about it.
struct Source {
    spec: SourceSpec,
    /// The provider's name, for errors and metrics.
    provider: Arc<str>,
    /// How long a good key set is used before it is refreshed.
    refresh_interval: Duration,
    /// Seconds between refetches an unknown `kid` may trigger.
    unknown_kid_refetch_interval: u64,
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

impl KeySources {
    /// Empty key sources for `specs`, whose providers are `providers`; nothing is fetched yet.
    pub(crate) fn new(
        specs: &[SourceSpec],
        providers: &[ProviderSettings],
    ) -> Result<Self, KeysError> {
        let sources = specs
            .iter()
            .map(|spec| {
                let provider = providers.get(spec.provider);
                Arc::new(Source {
                    spec: spec.clone(),
                    provider: provider.map_or_else(|| Arc::from(""), |p| p.name().clone()),
                    refresh_interval: provider.map_or(
                        super::DEFAULT_KEY_REFRESH_INTERVAL,
                        ProviderSettings::key_refresh_interval,
                    ),
                    unknown_kid_refetch_interval: provider
                        .map_or(super::DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL.as_secs(), |p| {
                            p.unknown_kid_refetch_interval().as_secs()
                        }),
                    last_good: ArcSwapOption::empty(),
                    last_unknown_kid_refetch: AtomicU64::new(NEVER),
                    fetch: Mutex::new(FetchState::default()),
                })
            })
            .collect();
        Ok(Self {
            sources,
            fetcher: Fetcher::new(FETCH_DEADLINE)?,
            key_wait: DEFAULT_KEY_WAIT,
            metrics: None,
        })
    }

    /// Lets a request wait at most `wait` for a fetch it needs.
    pub(crate) fn set_key_wait(&mut self, wait: Duration) {
        self.key_wait = wait;
    }

    /// Counts key fetches in `metrics`.
    pub(crate) fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.metrics = Some(metrics);
    }

    /// The keys to check a token with `kid` against. Keys held are answered at once (a stale
    /// set starts a refresh in the background); an unknown `kid` may start a refetch (at most
    /// one per throttle interval) and waits for the fetch in flight for at most the key wait,
    /// then gets the held set, which refuses it as `key_unknown`. Before any set has loaded, a
    /// request waits as long for the first fetch, then is refused as `keys_unavailable`.
    pub(crate) async fn keys_for_kid(
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
            let pending =
                if source.claim_unknown_kid_refetch(now, source.unknown_kid_refetch_interval) {
                    tracing::debug!(source = %source.spec.label, "unknown kid; refetching keys");
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

    /// Loads every source (`force`: even one that has keys, and ignoring the pause after a
    /// failure), all at once, and waits for them; returns the first failure.
    pub(crate) async fn load(&self, force: bool) -> Result<(), TokenError> {
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

    /// True once every source has had a good key set (a later failed refresh keeps it).
    /// Cheap and lock-free.
    pub(crate) fn all_loaded(&self) -> bool {
        self.sources
            .iter()
            .all(|source| source.last_good.load().is_some())
    }

    /// Refreshes keys in the background, each source a little before its provider's
    /// `key_refresh_interval` runs out, until `shutdown` completes or `owner` (which holds the
    /// key sources that `keys` reaches) is dropped.
    pub(crate) fn spawn_refresh<T: Send + Sync + 'static>(
        owner: Weak<T>,
        keys: fn(&T) -> &Self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let periods: Vec<Duration> = owner
            .upgrade()
            .map(|owner| {
                keys(&owner)
                    .sources
                    .iter()
                    // Refreshing at 90 % keeps cached entries from ever expiring while this runs.
                    .map(|source| source.refresh_interval.mul_f64(0.9))
                    .collect()
            })
            .unwrap_or_default();
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
                let Some(owner) = owner.upgrade() else {
                    return;
                };
                let now = tokio::time::Instant::now();
                for (index, (due, period)) in due.iter_mut().zip(&periods).enumerate() {
                    if *due <= now {
                        // Failures are logged by the fetch; the last good keys stay in use.
                        keys(&owner).refresh(index).await;
                        *due = tokio::time::Instant::now() + *period;
                    }
                }
            }
        })
    }

    fn source(&self, index: usize) -> Result<&Arc<Source>, TokenError> {
        // Routes only hold indices of sources; this cannot fail.
        self.sources.get(index).ok_or(TokenError::IssuerUnknown)
    }

    /// The fetch in flight for source `index`, or a new one when none is and (unless `force`)
    /// the pause after a failure is over; `None` when no fetch runs. The fetch is a task of its
    /// own: it ends, and its result is kept, whether or not anyone still waits for it.
    fn start_fetch(&self, index: usize, force: bool) -> Result<Option<Pending>, TokenError> {
        let source = self.source(index)?;
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
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let fetched = fetcher
                .fetch(&source.target())
                .await
                .map(Arc::new)
                .map_err(Arc::new);
            if let Some(metrics) = metrics {
                metrics.record_key_refresh(&source.provider, fetched.is_ok());
            }
            source.finish(&fetched, Instant::now());
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
            provider: self.source(index)?.provider.clone(),
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
    fn finish(&self, fetched: &Fetched, now: Instant) {
        if let Ok(keys) = fetched {
            self.last_good.store(Some(Arc::clone(keys)));
        }
        let mut state = self.state();
        state.in_flight = None;
        match fetched {
            Ok(_) => state.succeeded(now, self.refresh_interval),
            Err(error) => {
                let retry_in = state.failed(now, Arc::clone(error));
                drop(state);
                let message = if self.last_good.load().is_some() {
                    "key fetch failed; keeping the last good keys"
                } else {
                    "key fetch failed and no keys are cached"
                };
                tracing::warn!(
                    source = %self.spec.label,
                    error = %super::error_chain(&**error),
                    retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
                    "{message}"
                );
            }
        }
    }

    fn target(&self) -> FetchTarget<'_> {
        FetchTarget {
            label: &self.spec.label,
            discovery_url: &self.spec.discovery_url,
            expected_issuer: &self.spec.expected_issuer,
            tenant: self.spec.tenant.as_deref(),
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

    fn source(interval: u64) -> Source {
        Source {
            spec: SourceSpec {
                provider: 0,
                label: "p".to_owned(),
                discovery_url: String::new(),
                expected_issuer: String::new(),
                tenant: None,
            },
            provider: Arc::from("p"),
            refresh_interval: Duration::from_secs(3600),
            unknown_kid_refetch_interval: interval,
            last_good: ArcSwapOption::empty(),
            last_unknown_kid_refetch: AtomicU64::new(NEVER),
            fetch: Mutex::new(FetchState::default()),
        }
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let source = source(300);
        assert!(source.claim_unknown_kid_refetch(1_000, 300));
        assert!(!source.claim_unknown_kid_refetch(1_299, 300));
        assert!(source.claim_unknown_kid_refetch(1_300, 300));
        // A clock that went backwards does not block refetches.
        assert!(source.claim_unknown_kid_refetch(10, 300));
    }
}
