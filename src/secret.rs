//! [`Secret`]: the one type for passwords, seeds, client secrets and access tokens the service
//! holds. Its value never reaches `Debug` or `Display` (so never a log line, an error or a
//! panic message) and is zeroed when dropped.

use std::fmt;

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
}
