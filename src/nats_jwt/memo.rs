//! A process-wide memo of values derived from public keys: lock-free to read, bounded.
//!
//! The peers of a callout service — nats-servers — keep their keys for their whole life, so what
//! is derived from a peer's key (a decoded point, an X25519 shared key) is derived once and read
//! on every later request without a lock. Writes copy the table, which is fine for something
//! written once per peer. Beyond `max` entries (many server restarts over a long life) the table
//! starts afresh rather than grow. Callers insert only what a real signature or box proved, so
//! garbage from the network cannot fill it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

/// Values by public key (as encoded, e.g. `N...` or `X...`).
pub(super) struct Memo<V> {
    table: OnceLock<ArcSwap<HashMap<String, Arc<V>>>>,
    max: usize,
}

impl<V> Memo<V> {
    /// An empty memo of at most `max` entries.
    pub(super) const fn new(max: usize) -> Self {
        Self {
            table: OnceLock::new(),
            max,
        }
    }

    /// The value kept for `key`, if any.
    pub(super) fn get(&self, key: &str) -> Option<Arc<V>> {
        self.table().load().get(key).map(Arc::clone)
    }

    /// Keeps `value` for `key`, replacing what was there.
    pub(super) fn remember(&self, key: &str, value: &Arc<V>) {
        self.table().rcu(|current| {
            let mut next = if current.len() >= self.max {
                HashMap::new()
            } else {
                (**current).clone()
            };
            next.insert(key.to_owned(), Arc::clone(value));
            next
        });
    }

    /// Number of entries.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table().load().len()
    }

    fn table(&self) -> &ArcSwap<HashMap<String, Arc<V>>> {
        self.table.get_or_init(ArcSwap::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_replaced_and_bounded() {
        let memo: Memo<u32> = Memo::new(3);
        assert!(memo.get("a").is_none());
        memo.remember("a", &Arc::new(1));
        memo.remember("a", &Arc::new(2));
        assert_eq!(memo.get("a").as_deref(), Some(&2));
        for key in ["b", "c", "d", "e"] {
            memo.remember(key, &Arc::new(0));
        }
        assert!(memo.len() <= 3, "{}", memo.len());
        assert_eq!(memo.get("e").as_deref(), Some(&0), "the newest is kept");
    }
}
