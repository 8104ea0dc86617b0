//! [`Secret`]: the one type for passwords, seeds, client secrets and access tokens the service
//! holds. Its value never reaches `Debug` or `Display` (so never a log line, an error or a
//! panic message) and is zeroed when dropped.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use zeroize::Zeroizing;

/// A secret string.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value. Call only where it is handed to the library or request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret that may be replaced while it is in use (a rotated password): readers take the
/// value current when they ask, writers swap it as a whole. Clones share the value.
#[derive(Clone)]
pub struct SharedSecret(Arc<ArcSwap<Secret>>);

impl SharedSecret {
    /// Starts with `secret`.
    pub fn new(secret: Secret) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(secret)))
    }

    /// The current value.
    pub fn current(&self) -> Arc<Secret> {
        self.0.load_full()
    }

    /// Replaces the value for every clone.
    pub fn replace(&self, secret: Secret) {
        self.0.store(Arc::new(secret));
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_never_reaches_debug_output() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn a_shared_secret_is_replaced_for_every_clone() {
        let shared = SharedSecret::new(Secret::new("old".to_owned()));
        let clone = shared.clone();
        shared.replace(Secret::new("new".to_owned()));
        assert_eq!(clone.current().expose(), "new");
        assert_eq!(format!("{clone:?}"), "<redacted>");
    }
}
