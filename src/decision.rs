//! The decision cache: what a token was found to be and to get, so a reconnect storm does not
//! re-verify and re-evaluate every token.
//!
//! Entries are keyed by the SHA-256 of the token (the token itself is never stored) and hold
//! only what depends on the token: the verified [`Identity`] and the policy [`Grant`]. The
//! minted user JWT is never cached, because every connection brings a fresh user nkey. Each
//! entry expires no later than its token and its grant, the cache is bounded in entries, and a
//! cache belongs to one policy set: replacing the policies starts an empty cache.
//!
//! # Memory
//! An entry keeps the identity only as far as minting and auditing read it: the raw claims,
//! roles, groups and scopes, which only policy evaluation reads, are dropped
//! ([`Decision::new`]). That took an entry from about 4.6 KB to about 1 KB plus moka's own
//! per-entry bookkeeping (BENCHMARKS.md). `callout.decision_cache_size` bounds the total.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use serde_json::Map;
use sha2::{Digest, Sha256};

use crate::identity::Identity;
use crate::policy::Grant;

/// Default number of cached decisions.
pub const DEFAULT_DECISION_CACHE_SIZE: u64 = 100_000;

/// The SHA-256 of a token: the cache key.
pub type TokenKey = [u8; 32];

/// A cached admission: who the token's holder is and what they get.
#[derive(Debug)]
pub struct Decision {
    /// The verified identity, without what only policy evaluation reads (see [`Decision::new`]).
    pub identity: Identity,
    /// What the policies grant it.
    pub grant: Grant,
}

impl Decision {
    /// The decision to admit `identity` with `grant`. The identity's raw claims, roles, groups
    /// and scopes are dropped: they were inputs of the evaluation that produced `grant`, nothing
    /// after it reads them, and they are most of an identity's size (a user may bring hundreds of
    /// group ids).
    pub fn new(mut identity: Identity, grant: Grant) -> Self {
        identity.claims = Map::new();
        identity.roles = Vec::new();
        identity.groups = Vec::new();
        identity.scopes = Vec::new();
        Self { identity, grant }
    }

    /// The last second (unix) at which this decision may be used.
    pub fn valid_until(&self) -> u64 {
        self.identity.expires_at.min(self.grant.expires_at)
    }
}

/// A bounded cache of admissions, keyed by token hash; capacity 0 disables it.
#[derive(Clone)]
pub struct DecisionCache {
    inner: Option<Cache<TokenKey, Entry>>,
}

#[derive(Clone)]
struct Entry {
    decision: Arc<Decision>,
    ttl: Duration,
}

/// Each entry lives for the `ttl` computed from the caller's clock when it was inserted.
struct EntryExpiry;

impl Expiry<TokenKey, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The cache key of `token`.
pub fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

impl DecisionCache {
    /// A cache of at most `capacity` decisions.
    pub fn new(capacity: u64) -> Self {
        let inner = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(EntryExpiry)
                .build()
        });
        Self { inner }
    }

    /// The decision cached for `key`, if any is still valid at `now` (unix seconds).
    pub async fn get(&self, key: &TokenKey, now: u64) -> Option<Arc<Decision>> {
        let entry = self.inner.as_ref()?.get(key).await?;
        // moka's clock and ours may drift apart; the token's own lifetime has the last word.
        (entry.decision.valid_until() > now).then_some(entry.decision)
    }

    /// Caches `decision` until it stops being valid; one that already expired is not cached.
    pub async fn insert(&self, key: TokenKey, decision: Arc<Decision>, now: u64) {
        let Some(cache) = &self.inner else { return };
        let remaining = decision.valid_until().saturating_sub(now);
        if remaining == 0 {
            return;
        }
        let ttl = Duration::from_secs(remaining);
        cache.insert(key, Entry { decision, ttl }).await;
    }

    /// Number of cached decisions (approximate until pending maintenance has run).
    pub fn entry_count(&self) -> u64 {
        self.inner.as_ref().map_or(0, Cache::entry_count)
    }

    /// Runs moka's pending maintenance, so `entry_count` is exact (tests).
    pub async fn sync(&self) {
        if let Some(cache) = &self.inner {
            cache.run_pending_tasks().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::identity::PrincipalKind;
    use crate::policy::Permissions;

    fn decision(token_exp: u64, grant_exp: u64) -> Arc<Decision> {
        Arc::new(Decision {
            identity: Identity {
                provider: Arc::from("p"),
                issuer: "i".into(),
                tenant: None,
                object_id: None,
                subject: "s".into(),
                app_id: None,
                kind: PrincipalKind::Application,
                roles: vec![],
                groups: vec![],
                scopes: vec![],
                guest: false,
                display_name: None,
                expires_at: token_exp,
                token_id: None,
                claims: Map::new(),
            },
            grant: Grant {
                account: "APP".into(),
                publish: Permissions {
                    allow: vec!["a".into()],
                    deny: vec![],
                },
                subscribe: Permissions::default(),
                responses: None,
                expires_at: grant_exp,
                matched: vec![],
            },
        })
    }

    #[tokio::test]
    async fn entries_are_used_only_while_valid() {
        let cache = DecisionCache::new(10);
        let key = token_key("token-a");
        cache.insert(key, decision(1_100, 1_050), 1_000).await;
        assert!(cache.get(&key, 1_000).await.is_some());
        assert!(cache.get(&key, 1_049).await.is_some());
        // The grant's expiry is earlier than the token's and wins.
        assert!(cache.get(&key, 1_050).await.is_none());
        assert!(cache.get(&token_key("token-b"), 1_000).await.is_none());
    }

    #[tokio::test]
    async fn expired_decisions_are_not_cached() {
        let cache = DecisionCache::new(10);
        cache
            .insert(token_key("t"), decision(1_000, 1_000), 1_000)
            .await;
        cache.sync().await;
        assert_eq!(cache.entry_count(), 0);
    }

    #[tokio::test]
    async fn capacity_zero_disables_the_cache() {
        let cache = DecisionCache::new(0);
        let key = token_key("t");
        cache.insert(key, decision(2_000, 2_000), 1_000).await;
        assert!(cache.get(&key, 1_000).await.is_none());
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let cache = DecisionCache::new(50);
        for i in 0..500 {
            cache
                .insert(token_key(&format!("t{i}")), decision(2_000, 2_000), 1_000)
                .await;
        }
        cache.sync().await;
        assert!(cache.entry_count() <= 50, "{}", cache.entry_count());
    }

    #[test]
    fn decisions_keep_only_what_minting_and_auditing_read() {
        let full = decision(2_000, 2_000);
        let mut identity = full.identity.clone();
        identity.object_id = Some("oid".into());
        identity.roles = vec!["R".into()];
        identity.groups = vec!["G".into(); 200];
        identity.scopes = vec!["S".into()];
        identity.claims.insert("tid".into(), "t".into());
        let kept = Decision::new(identity, full.grant.clone());
        assert!(kept.identity.roles.is_empty() && kept.identity.groups.is_empty());
        assert!(kept.identity.scopes.is_empty() && kept.identity.claims.is_empty());
        assert_eq!(kept.identity.object_id.as_deref(), Some("oid"));
        assert_eq!(kept.identity.expires_at, 2_000);
        assert_eq!(kept.grant, full.grant);
    }

    #[test]
    fn keys_are_sha256_of_the_token() {
        assert_eq!(token_key("abc"), token_key("abc"));
        assert_ne!(token_key("abc"), token_key("abd"));
        assert_eq!(
            data_encoding::HEXLOWER.encode(&token_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
