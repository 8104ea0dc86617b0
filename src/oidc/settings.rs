//! Validated settings of one identity provider.
//!
//! The integrator builds [`ProviderSettings`] from the YAML config; everything a verifier relies on
//! (a GUID tenant, at least one audience, an https authority) is checked here, once, so the
//! verification path never has to re-check it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

/// Where Entra's global cloud issues tokens and publishes metadata.
pub const DEFAULT_LOGIN_HOST: &str = "login.microsoftonline.com";
/// Clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
/// Largest token accepted before any parsing (Entra tokens are a few KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// How often signing keys are refreshed in the background (Microsoft's recommendation).
pub const DEFAULT_KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Minimum time between refetches caused by tokens with an unknown `kid`.
pub const DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Microsoft's default clock skew is 5 minutes; anything beyond it is a misconfiguration.
const MAX_LEEWAY_SECS: u64 = 300;
const MIN_MAX_TOKEN_BYTES: usize = 1024;
const MAX_MAX_TOKEN_BYTES: usize = 1024 * 1024;

/// Settings of one Entra ID provider: one tenant, v2 issuer, RS256.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    name: Arc<str>,
    tenant: String,
    audiences: Vec<String>,
    login_host: String,
    /// `None` means "derived from `login_host`".
    authority: Option<String>,
    /// The only `iss` this provider accepts, derived from `login_host` and `tenant`.
    issuer: String,
    leeway_secs: u64,
    max_token_bytes: usize,
    key_refresh_interval: Duration,
    unknown_kid_refetch_interval: Duration,
}

impl ProviderSettings {
    /// Settings for tenant `tenant` (a GUID, any case) accepting tokens for `audiences`, with the
    /// global cloud's login host and the documented defaults.
    pub fn new(name: &str, tenant: &str, audiences: Vec<String>) -> Result<Self, SettingsError> {
        if name.trim().is_empty() {
            return Err(SettingsError::NameEmpty);
        }
        let name: Arc<str> = Arc::from(name);
        let tenant = tenant.to_ascii_lowercase();
        if !is_lowercase_guid(&tenant) {
            return Err(SettingsError::TenantNotGuid { provider: name });
        }
        if audiences.is_empty() {
            return Err(SettingsError::AudiencesEmpty { provider: name });
        }
        if audiences.iter().any(|audience| audience.trim().is_empty()) {
            return Err(SettingsError::AudienceBlank { provider: name });
        }
        let issuer = v2_issuer(DEFAULT_LOGIN_HOST, &tenant);
        Ok(Self {
            name,
            tenant,
            audiences,
            login_host: DEFAULT_LOGIN_HOST.to_owned(),
            authority: None,
            issuer,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            key_refresh_interval: DEFAULT_KEY_REFRESH_INTERVAL,
            unknown_kid_refetch_interval: DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL,
        })
    }

    /// Use another login host (a sovereign cloud such as `login.microsoftonline.us`). It is the
    /// host of the expected `iss`, and of the authority unless one is set explicitly.
    pub fn with_login_host(mut self, host: &str) -> Result<Self, SettingsError> {
        let host = host.to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !host.starts_with(['.', '-'])
            && !host.ends_with(['.', '-']);
        if !valid {
            return Err(SettingsError::LoginHostInvalid {
                provider: self.name,
            });
        }
        self.issuer = v2_issuer(&host, &self.tenant);
        self.login_host = host;
        Ok(self)
    }

    /// Fetch metadata from `url` instead of `https://{login_host}`. Plain http is accepted only
    /// for loopback hosts (tests, a local proxy); anything else must be https.
    pub fn with_authority(mut self, url: &str) -> Result<Self, SettingsError> {
        let Ok(parsed) = Url::parse(url) else {
            return Err(SettingsError::AuthorityInvalid {
                provider: self.name,
                reason: "not a url",
            });
        };
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(SettingsError::AuthorityInvalid {
                provider: self.name,
                reason: "it has a query or fragment",
            });
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(SettingsError::AuthorityInvalid {
                provider: self.name,
                reason: "it carries credentials",
            });
        }
        if !is_allowed_transport(&parsed) {
            return Err(SettingsError::AuthorityInsecure {
                provider: self.name,
            });
        }
        self.authority = Some(parsed.as_str().trim_end_matches('/').to_owned());
        Ok(self)
    }

    /// Clock skew tolerated on `exp` and `nbf`, at most 300 seconds.
    pub fn with_leeway_secs(mut self, leeway_secs: u64) -> Result<Self, SettingsError> {
        if leeway_secs > MAX_LEEWAY_SECS {
            return Err(SettingsError::LeewayTooLarge {
                provider: self.name,
                max: MAX_LEEWAY_SECS,
            });
        }
        self.leeway_secs = leeway_secs;
        Ok(self)
    }

    /// Largest token accepted, between 1 KiB and 1 MiB.
    pub fn with_max_token_bytes(mut self, max_token_bytes: usize) -> Result<Self, SettingsError> {
        if !(MIN_MAX_TOKEN_BYTES..=MAX_MAX_TOKEN_BYTES).contains(&max_token_bytes) {
            return Err(SettingsError::MaxTokenBytesOutOfRange {
                provider: self.name,
            });
        }
        self.max_token_bytes = max_token_bytes;
        Ok(self)
    }

    /// How often keys are refreshed; must not be zero.
    pub fn with_key_refresh_interval(mut self, interval: Duration) -> Result<Self, SettingsError> {
        if interval.is_zero() {
            return Err(SettingsError::RefreshIntervalZero {
                provider: self.name,
            });
        }
        self.key_refresh_interval = interval;
        Ok(self)
    }

    /// Minimum time between refetches caused by unknown `kid`s. Zero disables the throttle,
    /// which lets any client trigger fetches; only tests should do that.
    pub fn with_unknown_kid_refetch_interval(mut self, interval: Duration) -> Self {
        self.unknown_kid_refetch_interval = interval;
        self
    }

    /// The provider's configured name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The tenant GUID, lowercase.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Accepted `aud` values.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Host of the expected issuer.
    pub fn login_host(&self) -> &str {
        &self.login_host
    }

    /// Base URL metadata is fetched from, without a trailing slash.
    pub fn authority(&self) -> String {
        match &self.authority {
            Some(authority) => authority.clone(),
            None => format!("https://{}", self.login_host),
        }
    }

    /// The exact `iss` this provider accepts: `https://{login_host}/{tenant}/v2.0`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Largest token accepted, in bytes.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// How often keys are refreshed in the background.
    pub fn key_refresh_interval(&self) -> Duration {
        self.key_refresh_interval
    }

    /// Minimum time between refetches caused by unknown `kid`s.
    pub fn unknown_kid_refetch_interval(&self) -> Duration {
        self.unknown_kid_refetch_interval
    }
}

/// Why provider settings were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The provider has no name.
    #[error("provider name is empty")]
    NameEmpty,
    /// The tenant is not a GUID.
    #[error("provider `{provider}`: tenant is not a GUID")]
    TenantNotGuid {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// No audience is configured.
    #[error("provider `{provider}`: no audiences configured")]
    AudiencesEmpty {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// An audience is empty or blank.
    #[error("provider `{provider}`: an audience is blank")]
    AudienceBlank {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// The login host is not a plain host name.
    #[error("provider `{provider}`: login host is not a host name")]
    LoginHostInvalid {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// The authority is not a usable base URL.
    #[error("provider `{provider}`: authority is invalid; {reason}")]
    AuthorityInvalid {
        /// The provider at fault.
        provider: Arc<str>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The authority is plain http on a host that is not loopback.
    #[error("provider `{provider}`: authority must be https (http only for loopback hosts)")]
    AuthorityInsecure {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// The leeway is larger than allowed.
    #[error("provider `{provider}`: leeway is larger than {max} seconds")]
    LeewayTooLarge {
        /// The provider at fault.
        provider: Arc<str>,
        /// The largest allowed leeway.
        max: u64,
    },
    /// The token size limit is outside 1 KiB..=1 MiB.
    #[error("provider `{provider}`: max token bytes must be between 1 KiB and 1 MiB")]
    MaxTokenBytesOutOfRange {
        /// The provider at fault.
        provider: Arc<str>,
    },
    /// The key refresh interval is zero.
    #[error("provider `{provider}`: key refresh interval is zero")]
    RefreshIntervalZero {
        /// The provider at fault.
        provider: Arc<str>,
    },
}

/// True for a canonical lowercase GUID (`8-4-4-4-12` hex digits), the form Entra uses in `tid`.
pub(crate) fn is_lowercase_guid(value: &str) -> bool {
    value.len() == 36
        && value.bytes().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => byte == b'-',
            _ => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
        })
}

/// True when `url` is https, or plain http to a loopback host.
pub(crate) fn is_allowed_transport(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

fn v2_issuer(login_host: &str, tenant: &str) -> String {
    format!("https://{login_host}/{tenant}/v2.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";

    fn settings() -> ProviderSettings {
        ProviderSettings::new("entra", TENANT, vec!["api".to_owned()]).unwrap()
    }

    #[test]
    fn defaults_follow_the_global_cloud() {
        let settings = settings();
        assert_eq!(
            settings.issuer(),
            "https://login.microsoftonline.com/72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41/v2.0"
        );
        assert_eq!(settings.authority(), "https://login.microsoftonline.com");
        assert_eq!(settings.leeway_secs(), 60);
        assert_eq!(settings.max_token_bytes(), 16 * 1024);
    }

    #[test]
    fn tenant_is_lowercased_and_must_be_a_guid() {
        let upper = ProviderSettings::new("e", &TENANT.to_uppercase(), vec!["a".into()]).unwrap();
        assert_eq!(upper.tenant(), TENANT);
        for bad in [
            "common",
            "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c4",
            "72f1e1d43c5b4e0a9d625b8e0f3a9c41",
        ] {
            assert!(matches!(
                ProviderSettings::new("e", bad, vec!["a".into()]),
                Err(SettingsError::TenantNotGuid { .. })
            ));
        }
    }

    #[test]
    fn audiences_are_required() {
        assert!(matches!(
            ProviderSettings::new("e", TENANT, vec![]),
            Err(SettingsError::AudiencesEmpty { .. })
        ));
        assert!(matches!(
            ProviderSettings::new("e", TENANT, vec![" ".into()]),
            Err(SettingsError::AudienceBlank { .. })
        ));
    }

    #[test]
    fn login_host_moves_the_issuer_and_default_authority() {
        let settings = settings()
            .with_login_host("login.microsoftonline.us")
            .unwrap();
        assert_eq!(
            settings.issuer(),
            format!("https://login.microsoftonline.us/{TENANT}/v2.0")
        );
        assert_eq!(settings.authority(), "https://login.microsoftonline.us");
        assert!(self::settings().with_login_host("https://x").is_err());
        assert!(self::settings().with_login_host("").is_err());
    }

    #[test]
    fn http_authority_only_for_loopback() {
        let local = settings().with_authority("http://127.0.0.1:8080/").unwrap();
        assert_eq!(local.authority(), "http://127.0.0.1:8080");
        assert!(settings().with_authority("http://[::1]:1").is_ok());
        assert!(settings().with_authority("http://localhost:1").is_ok());
        assert!(matches!(
            settings().with_authority("http://login.microsoftonline.com"),
            Err(SettingsError::AuthorityInsecure { .. })
        ));
        assert!(matches!(
            settings().with_authority("ftp://127.0.0.1"),
            Err(SettingsError::AuthorityInsecure { .. })
        ));
        assert!(
            settings()
                .with_authority("https://idp.example/?x=1")
                .is_err()
        );
        assert!(
            settings()
                .with_authority("https://u:p@idp.example")
                .is_err()
        );
        assert!(settings().with_authority("not a url").is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert!(settings().with_leeway_secs(301).is_err());
        assert!(settings().with_max_token_bytes(10).is_err());
        assert!(
            settings()
                .with_key_refresh_interval(Duration::ZERO)
                .is_err()
        );
    }
}
