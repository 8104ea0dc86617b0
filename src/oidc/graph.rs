//! Groups overage resolution through Microsoft Graph.
//!
//! When Entra replaces a token's `groups` by an overage marker and the provider says `resolve`,
//! [`GraphClient`] asks Graph for the caller's transitive group ids
//! (`POST {graph}/v1.0/{users|servicePrincipals}/{oid}/getMemberObjects`) with an app-only token
//! the service gets for itself through the client-credentials grant in the caller's tenant.
//! Answers are cached per `(tid, oid)` until the caller's token expires; app tokens per tenant
//! until shortly before theirs do. Concurrent lookups for one key coalesce into one request.
//!
//! The bearer token is only ever sent to the configured Graph base URL: a `@odata.nextLink`
//! pointing anywhere else is refused. Secrets and tokens never appear in errors or logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use super::keys::read_capped;
use super::settings::{GraphCredential, GraphSettings, Secret};
use crate::guid::is_canonical;
use crate::identity::PrincipalKind;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A user in 10 000 groups answers with about 400 KiB per page.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
const MAX_PAGES: usize = 50;
/// App tokens are renewed this long before they expire.
const APP_TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Bounds on the caches, so a flood of distinct callers cannot grow them without limit.
const MAX_CACHED_CALLERS: u64 = 100_000;
const MAX_CACHED_TENANTS: u64 = 10_000;
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Resolves group overage for one provider.
pub(crate) struct GraphClient {
    settings: GraphSettings,
    /// Base of `{base}/{tenant}/oauth2/v2.0/token`.
    token_base: String,
    http: reqwest::Client,
    app_tokens: Cache<String, Expiring<Arc<Secret>>>,
    groups: Cache<(String, String), Expiring<Arc<Vec<String>>>>,
}

/// Why group overage could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The HTTP client could not be built (TLS setup).
    #[error("could not build the http client for microsoft graph")]
    Client(#[source] reqwest::Error),
    /// The token has no usable `oid`, so there is nobody to look up.
    #[error("token has no oid that is a GUID")]
    ObjectIdInvalid,
    /// The federated token file could not be read.
    #[error("federated token file {path} could not be read")]
    Credential {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request failed (connection, timeout, TLS).
    #[error("request to {url} failed")]
    Request {
        /// The URL requested.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{url} answered with status {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: StatusCode,
    },
    /// The response was too large or not the JSON expected.
    #[error("response from {url} is not a valid {document}")]
    Document {
        /// The URL requested.
        url: String,
        /// Which document was expected.
        document: &'static str,
    },
    /// Graph pointed the next page outside the configured Graph base URL.
    #[error("graph returned a next page link outside {base}; refusing to send the token there")]
    NextLinkRefused {
        /// The configured Graph base.
        base: String,
    },
    /// Graph kept paging beyond the limit.
    #[error("graph returned more than {0} pages of groups")]
    TooManyPages(usize),
}

#[derive(Clone)]
struct Expiring<T> {
    value: T,
    ttl: Duration,
}

/// Expires each entry after its own TTL.
struct ByTtl;

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct MemberObjects {
    value: Vec<Value>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

impl GraphClient {
    /// A client for `settings`; `authority` is the provider's, used for the token endpoint
    /// unless the settings override it.
    pub(crate) fn new(settings: &GraphSettings, authority: &str) -> Result<Self, GraphError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(GraphError::Client)?;
        let token_base = settings
            .token_authority()
            .unwrap_or(authority)
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            settings: settings.clone(),
            token_base,
            http,
            app_tokens: Cache::builder()
                .max_capacity(MAX_CACHED_TENANTS)
                .expire_after(ByTtl)
                .build(),
            groups: Cache::builder()
                .max_capacity(MAX_CACHED_CALLERS)
                .expire_after(ByTtl)
                .build(),
        })
    }

    /// The transitive group ids of `object_id` in `tenant`, cached until `expires_at`.
    pub(crate) async fn member_groups(
        &self,
        tenant: &str,
        object_id: &str,
        kind: PrincipalKind,
        expires_at: u64,
        now: u64,
    ) -> Result<Arc<Vec<String>>, Arc<GraphError>> {
        // The oid goes into a URL path; only a GUID can never change the request's meaning.
        if !is_canonical(tenant) || !is_canonical(object_id) {
            return Err(Arc::new(GraphError::ObjectIdInvalid));
        }
        let ttl = Duration::from_secs(expires_at.saturating_sub(now).max(1));
        let key = (tenant.to_owned(), object_id.to_owned());
        self.groups
            .try_get_with(key, async {
                let groups = self.fetch_groups(tenant, object_id, kind).await?;
                Ok(Expiring {
                    value: Arc::new(groups),
                    ttl,
                })
            })
            .await
            .map(|entry| entry.value)
            .map_err(|shared| Arc::clone(&*shared))
    }

    async fn fetch_groups(
        &self,
        tenant: &str,
        object_id: &str,
        kind: PrincipalKind,
    ) -> Result<Vec<String>, Arc<GraphError>> {
        let token = self
            .app_tokens
            .try_get_with(tenant.to_owned(), self.app_token(tenant))
            .await?
            .value;
        let base = self.settings.graph_url();
        let collection = match kind {
            PrincipalKind::User => "users",
            PrincipalKind::Application => "servicePrincipals",
        };
        let mut url = format!("{base}/v1.0/{collection}/{object_id}/getMemberObjects");
        let mut groups = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: MemberObjects = self
                .post_json(&url, &token, r#"{"securityEnabledOnly":false}"#)
                .await?;
            for id in page.value {
                match id {
                    Value::String(id) => groups.push(id),
                    _ => {
                        return Err(Arc::new(GraphError::Document {
                            url,
                            document: "member objects list",
                        }));
                    }
                }
            }
            match page.next_link {
                None => return Ok(groups),
                Some(next) if next.starts_with(&format!("{base}/")) => url = next,
                Some(_) => {
                    return Err(Arc::new(GraphError::NextLinkRefused {
                        base: base.to_owned(),
                    }));
                }
            }
        }
        Err(Arc::new(GraphError::TooManyPages(MAX_PAGES)))
    }

    /// The client-credentials grant in `tenant` for Graph's `.default` scope.
    async fn app_token(&self, tenant: &str) -> Result<Expiring<Arc<Secret>>, GraphError> {
        let url = format!("{}/{tenant}/oauth2/v2.0/token", self.token_base);
        let scope = format!("{}/.default", self.settings.graph_url());
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.settings.client_id().to_owned()),
            ("scope", scope),
        ];
        match self.settings.credential() {
            GraphCredential::ClientSecret(secret) => {
                form.push(("client_secret", secret.expose().to_owned()));
            }
            GraphCredential::FederatedTokenFile(path) => {
                // Re-read every time: the platform rotates the file.
                let assertion = tokio::fs::read_to_string(path).await.map_err(|source| {
                    GraphError::Credential {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", assertion.trim().to_owned()));
            }
        }
        let body = form
            .iter()
            .map(|(name, value)| format!("{name}={}", form_encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|source| GraphError::Request {
                url: url.clone(),
                source,
            })?;
        let token: TokenResponse = self.json_body(&url, response, "token response").await?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        Ok(Expiring {
            value: Arc::new(Secret::new(token.access_token)),
            ttl: lifetime
                .saturating_sub(APP_TOKEN_MARGIN)
                .max(Duration::from_secs(1)),
        })
    }

    async fn post_json<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        token: &Secret,
        body: &'static str,
    ) -> Result<T, Arc<GraphError>> {
        self.post_json_inner(url, token, body)
            .await
            .map_err(Arc::new)
    }

    async fn post_json_inner<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        token: &Secret,
        body: &'static str,
    ) -> Result<T, GraphError> {
        let parsed = Url::parse(url).map_err(|_| GraphError::Document {
            url: url.to_owned(),
            document: "url",
        })?;
        let response = self
            .http
            .post(parsed)
            .bearer_auth(token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|source| GraphError::Request {
                url: url.to_owned(),
                source,
            })?;
        self.json_body(url, response, "member objects list").await
    }

    async fn json_body<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        response: reqwest::Response,
        document: &'static str,
    ) -> Result<T, GraphError> {
        if response.status() != StatusCode::OK {
            return Err(GraphError::Status {
                url: url.to_owned(),
                status: response.status(),
            });
        }
        let invalid = || GraphError::Document {
            url: url.to_owned(),
            document,
        };
        let body =
            read_capped(response, MAX_RESPONSE_BYTES)
                .await
                .map_err(|error| match error {
                    Some(source) => GraphError::Request {
                        url: url.to_owned(),
                        source,
                    },
                    None => invalid(),
                })?;
        serde_json::from_slice(&body).map_err(|_| invalid())
    }
}

impl<K, T> Expiry<K, Expiring<T>> for ByTtl {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &Expiring<T>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b+c/d=e&f~"), "a+b%2Bc%2Fd%3De%26f%7E");
        assert_eq!(
            form_encode("https://graph.microsoft.com/.default"),
            "https%3A%2F%2Fgraph.microsoft.com%2F.default"
        );
    }
}
