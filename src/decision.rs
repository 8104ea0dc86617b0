//! The decision cache: what a token was found to be and to get, so a reconnect storm does not
//! re-verify and re-evaluate every token.
//!
//! Entries are keyed by the SHA-256 of the token (the token itself is never stored) and hold
//! only what depends on the token: the verified [`Identity`] and the policy [`Grant`]. The
//! minted user JWT is never cached, because every connection brings a fresh user nkey. Each
//! entry is used no later than its token and its grant expire, the cache is bounded in entries,
//! and a cache belongs to one policy set: replacing the policies starts an empty cache.
//!
//! # Memory
//! A full cache must stay small (BENCHMARKS.md: 100,000 identities), so an entry keeps the
//! identity only as far as minting and auditing read it — the raw claims, roles, groups and
//! scopes, which only policy evaluation reads, are dropped ([`Decision::new`]) — and the cache
//! itself adds no per-entry bookkeeping beyond its hash table: two generations of at most half
//! the capacity each. Inserts go to the young generation; when it is full it becomes the old one
//! and the previous old one is dropped whole; a hit in the old generation moves the entry back to
//! the young one. That is LRU-like eviction at the cost of a 32-byte key and a pointer per entry
//! (a general-purpose cache with per-entry timers and frequency sketches cost about 400 bytes
//! per entry here). Expiry is checked on every lookup against the caller's clock, and expired
//! entries leave with their generation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

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

/// A bounded cache of admissions, keyed by token hash; capacity 0 disables it. Clones share
/// the entries.
#[derive(Clone)]
pub struct DecisionCache {
    inner: Option<Arc<Mutex<Generations>>>,
}

/// The two generations; each holds at most `limit` entries.
struct Generations {
    young: HashMap<TokenKey, Arc<Decision>>,
    old: HashMap<TokenKey, Arc<Decision>>,
    limit: usize,
}

/// The cache key of `token`.
pub fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

impl DecisionCache {
    /// A cache of at most `capacity` decisions (rounded up to an even number).
    pub fn new(capacity: u64) -> Self {
        let inner = (capacity > 0).then(|| {
            let limit = usize::try_from(capacity.div_ceil(2)).unwrap_or(usize::MAX / 2);
            Arc::new(Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
                limit,
            }))
        });
        Self { inner }
    }

    /// The decision cached for `key`, if any is still valid at `now` (unix seconds).
    pub async fn get(&self, key: &TokenKey, now: u64) -> Option<Arc<Decision>> {
        let mut generations = self.lock()?;
        if let Some(decision) = generations.young.get(key) {
            if decision.valid_until() > now {
                return Some(Arc::clone(decision));
            }
            generations.young.remove(key);
            return None;
        }
        let decision = generations.old.remove(key)?;
        if decision.valid_until() <= now {
            return None;
        }
        let dropped = generations.insert(*key, Arc::clone(&decision));
        drop(generations);
        drop(dropped);
        Some(decision)
    }

    /// Caches `decision` until it stops being valid; one that already expired is not cached.
    pub async fn insert(&self, key: TokenKey, decision: Arc<Decision>, now: u64) {
        if decision.valid_until() <= now {
            return;
        }
        let Some(mut generations) = self.lock() else {
            return;
        };
        let dropped = generations.insert(key, decision);
        // Freeing a whole generation takes a while; not while others wait for the lock.
        drop(generations);
        drop(dropped);
    }

    /// Number of cached decisions, including expired ones not yet dropped.
    pub fn entry_count(&self) -> u64 {
        self.lock().map_or(0, |g| {
            u64::try_from(g.young.len() + g.old.len()).unwrap_or(u64::MAX)
        })
    }

    /// Kept for callers that wait for pending maintenance; this cache has none, so
    /// [`Self::entry_count`] is always exact.
    pub async fn sync(&self) {}

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Generations>> {
        // Nothing panics while the lock is held, and the maps stay consistent even if it did.
        self.inner
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Generations {
    /// Inserts into the young generation; returns the old generation it pushed out, if any.
    fn insert(
        &mut self,
        key: TokenKey,
        decision: Arc<Decision>,
    ) -> Option<HashMap<TokenKey, Arc<Decision>>> {
        self.old.remove(&key);
        self.young.insert(key, decision);
        (self.young.len() >= self.limit)
            .then(|| std::mem::replace(&mut self.old, std::mem::take(&mut self.young)))
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

    #[tokio::test]
    async fn a_hit_in_the_old_generation_survives_the_next_rotation() {
        // Two generations of two entries each.
        let cache = DecisionCache::new(4);
        let key = |name: &str| token_key(name);
        for name in ["a", "b"] {
            cache.insert(key(name), decision(2_000, 2_000), 1_000).await;
        }
        // a and b are now the old generation; using a brings it back to the young one.
        assert!(cache.get(&key("a"), 1_000).await.is_some());
        cache.insert(key("c"), decision(2_000, 2_000), 1_000).await;
        // That rotation dropped the old generation, b with it, and kept a and c.
        assert!(cache.get(&key("b"), 1_000).await.is_none());
        assert!(cache.get(&key("a"), 1_000).await.is_some());
        assert!(cache.get(&key("c"), 1_000).await.is_some());
        assert!(cache.entry_count() <= 4);
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
