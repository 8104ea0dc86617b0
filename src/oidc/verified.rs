//! The verified-token cache: which tokens' signatures have already been checked, so a reconnect
//! storm does not pay for an RSA verification per connection.
//!
//! An entry is the SHA-256 of a token that was accepted with a key of one key source, kept
//! until the token expires (plus the provider's leeway). A hit skips only the signature check:
//! the key set must still serve the token's `kid` (a withdrawn key ends its cached tokens with
//! it), the claims are parsed and checked against `now` and the source's issuers again, and the
//! callout evaluates the current policies, so a policy change applies from the next connection
//! and a reload needs no flush (no cold storm after every policy edit). Nothing about the
//! identity or its grant is stored: an entry costs moka's bookkeeping plus 64 bytes, about 420
//! bytes in all, against ~1.4 KB for a cached decision (BENCHMARKS.md).
//!
//! What a hit trusts: the bytes are the same (SHA-256), so the signature is the one that was
//! checked, with the key then under the same `kid`. Entra's `kid` is the certificate's
//! thumbprint, so a `kid` cannot name other key material later; an issuer that reuses a `kid`
//! for a new key is misconfigured (the key cache assumes the same).

use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest, Sha256};

/// Default number of cached tokens.
pub const DEFAULT_TOKEN_CACHE_SIZE: u64 = 100_000;

/// The SHA-256 of a token: the cache key, and (shortened) the token's name in audit events.
pub type TokenDigest = [u8; 32];

/// The cache key of `token`.
pub fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// A bounded set of verified tokens; capacity 0 disables it.
pub(crate) struct VerifiedTokens {
    inner: Option<Cache<TokenDigest, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    /// The key source whose key verified the token.
    source: usize,
    /// When (unix seconds) the token stops being accepted, leeway included.
    until: u64,
    /// How long moka keeps the entry, from the caller's clock at insertion.
    ttl: Duration,
}

struct EntryExpiry;

impl Expiry<TokenDigest, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenDigest,
        value: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl VerifiedTokens {
    /// A cache of at most `capacity` tokens.
    pub(crate) fn new(capacity: u64) -> Self {
        let inner = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(EntryExpiry)
                .build()
        });
        Self { inner }
    }

    /// Whether the cache is on.
    pub(crate) fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// True when `digest` was verified with a key of `source` and may still be used at `now`.
    pub(crate) async fn contains(&self, digest: &TokenDigest, source: usize, now: u64) -> bool {
        let Some(cache) = &self.inner else {
            return false;
        };
        // moka's clock and ours may drift apart; the token's own lifetime has the last word. The
        // source must match too: routing is a function of the token, so it always does, but a
        // hit must never lend one source's verification to another.
        cache
            .get(digest)
            .await
            .is_some_and(|entry| entry.source == source && entry.until > now)
    }

    /// Remembers that `digest` was verified with a key of `source`, until `until` (unix
    /// seconds, exclusive). A token already past it is not cached.
    pub(crate) async fn insert(&self, digest: TokenDigest, source: usize, until: u64, now: u64) {
        let Some(cache) = &self.inner else { return };
        if until <= now {
            return;
        }
        let ttl = Duration::from_secs(until - now);
        cache.insert(digest, Entry { source, until, ttl }).await;
    }

    /// Number of cached tokens, after running moka's pending maintenance so it is exact.
    pub(crate) async fn len(&self) -> u64 {
        match &self.inner {
            Some(cache) => {
                cache.run_pending_tasks().await;
                cache.entry_count()
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_used_only_while_valid_and_for_their_source() {
        let cache = VerifiedTokens::new(10);
        let digest = token_digest("token-a");
        cache.insert(digest, 3, 1_050, 1_000).await;
        assert!(cache.contains(&digest, 3, 1_000).await);
        assert!(cache.contains(&digest, 3, 1_049).await);
        assert!(!cache.contains(&digest, 3, 1_050).await);
        assert!(!cache.contains(&digest, 4, 1_000).await);
        assert!(!cache.contains(&token_digest("token-b"), 3, 1_000).await);
    }

    #[tokio::test]
    async fn expired_tokens_are_not_cached() {
        let cache = VerifiedTokens::new(10);
        cache.insert(token_digest("t"), 0, 1_000, 1_000).await;
        assert_eq!(cache.len().await, 0);
        cache.insert(token_digest("t"), 0, 1_001, 1_000).await;
        assert_eq!(cache.len().await, 1);
    }

    #[tokio::test]
    async fn capacity_zero_disables_the_cache() {
        let cache = VerifiedTokens::new(0);
        assert!(!cache.enabled());
        let digest = token_digest("t");
        cache.insert(digest, 0, 2_000, 1_000).await;
        assert!(!cache.contains(&digest, 0, 1_000).await);
        assert_eq!(cache.len().await, 0);
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let cache = VerifiedTokens::new(50);
        for i in 0..500 {
            cache
                .insert(token_digest(&format!("t{i}")), 0, 2_000, 1_000)
                .await;
        }
        let len = cache.len().await;
        assert!(len <= 50, "{len}");
    }

    #[test]
    fn digests_are_sha256_of_the_token() {
        assert_eq!(token_digest("abc"), token_digest("abc"));
        assert_ne!(token_digest("abc"), token_digest("abd"));
        assert_eq!(
            data_encoding::HEXLOWER.encode(&token_digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
