//! Signing keys: the parsed key set ([`KeySet`]) and fetching it over HTTP (discovery, then JWKS).
//!
//! Parsing is pure and skips keys the verifier could never use (not RSA, not for signatures, an
//! `alg` other than RS256, shorter than 2048 bits), so one odd key never breaks a whole set.
//! Fetching enforces https (plain http only to loopback), timeouts, no redirects and a size cap.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::DecodingKey;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use super::settings::{ProviderSettings, is_allowed_transport};

/// Cap on discovery and JWKS response bodies.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request bound, so a server trickling bytes cannot hold a fetch forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// RSA keys shorter than this are refused (and aws-lc would refuse them for RS256 anyway).
const MIN_RSA_BITS: usize = 2048;
/// Error messages quote values read from the network; this keeps them short.
const MAX_QUOTED_CHARS: usize = 200;

/// The usable signing keys of one provider, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, SigningKey>,
}

/// One RS256 public key from a JWKS.
#[derive(Clone)]
pub struct SigningKey {
    pub(crate) decoding: DecodingKey,
    /// Entra's per-key `issuer` (a template with `{tenantid}`), checked against `iss` when present.
    pub(crate) issuer: Option<String>,
}

/// Why signing keys could not be obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// The HTTP client could not be built (TLS setup).
    #[error("could not build the http client for key discovery")]
    Client(#[source] reqwest::Error),
    /// The request failed (connection, timeout, TLS).
    #[error("request to {url} failed")]
    Request {
        /// The URL requested.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status other than 200.
    #[error("{url} answered with status {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: StatusCode,
    },
    /// The response body exceeded the size cap.
    #[error("response from {url} is larger than {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// The response is not the JSON document expected.
    #[error("response from {url} is not a valid {document}")]
    Document {
        /// The URL requested.
        url: String,
        /// Which document was expected.
        document: &'static str,
    },
    /// The discovery document names another issuer than the provider expects.
    #[error("metadata issuer mismatch: expected `{expected}`, metadata says `{found}`")]
    IssuerMismatch {
        /// The issuer derived from the settings.
        expected: String,
        /// The metadata's issuer with `{tenantid}` substituted (shortened).
        found: String,
    },
    /// The discovery document's `jwks_uri` is not an acceptable URL.
    #[error("jwks_uri `{url}` is not an https url (plain http is allowed only for loopback)")]
    JwksUriRefused {
        /// The refused URL (shortened).
        url: String,
    },
    /// The JWKS contains no key the verifier could use.
    #[error("key set from {url} has no usable RS256 signing key")]
    NoUsableKeys {
        /// The JWKS URL.
        url: String,
    },
}

/// Fetches discovery documents and key sets.
pub(crate) struct Fetcher {
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`), keeping only keys usable for RS256.
    /// Returns `None` when the document is not a JSON object with a `keys` array.
    pub fn from_jwks(document: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(document).ok()?;
        let entries = value.get("keys")?.as_array()?;
        let mut keys = HashMap::new();
        for entry in entries {
            let Some((kid, key)) = usable_key(entry) else {
                tracing::debug!(kid = ?entry.get("kid"), "skipping unusable key in key set");
                continue;
            };
            // A duplicate kid makes the key ambiguous; the first one wins, like most libraries.
            keys.entry(kid).or_insert(key);
        }
        Some(Self { keys })
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.get(kid)
    }

    /// True when a key with this `kid` is present.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the usable keys, in no particular order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

impl SigningKey {
    /// The key's `issuer` member, if the JWKS has one.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    pub(crate) fn new() -> Result<Self, KeysError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // Metadata never redirects; following one could lead anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(KeysError::Client)?;
        Ok(Self { client })
    }

    /// Discovery, issuer check, then the JWKS it points to.
    pub(crate) async fn fetch(&self, settings: &ProviderSettings) -> Result<KeySet, KeysError> {
        let discovery = format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            settings.authority(),
            settings.tenant()
        );
        let discovery_url = Url::parse(&discovery).map_err(|_| KeysError::Document {
            url: discovery.clone(),
            document: "discovery url",
        })?;
        let body = self.get(&discovery_url).await?;
        let metadata: Metadata =
            serde_json::from_slice(&body).map_err(|_| KeysError::Document {
                url: discovery.clone(),
                document: "discovery document",
            })?;

        // Entra's multi-tenant documents carry the `{tenantid}` template; per-tenant ones the
        // concrete issuer. Either way, after substitution it must be exactly what we expect.
        let found = metadata.issuer.replace("{tenantid}", settings.tenant());
        if found != settings.issuer() {
            return Err(KeysError::IssuerMismatch {
                expected: settings.issuer().to_owned(),
                found: shorten(&found),
            });
        }

        let jwks_url = match Url::parse(&metadata.jwks_uri) {
            Ok(url) if is_allowed_transport(&url) => url,
            _ => {
                return Err(KeysError::JwksUriRefused {
                    url: shorten(&metadata.jwks_uri),
                });
            }
        };
        let body = self.get(&jwks_url).await?;
        let keys = KeySet::from_jwks(&body).ok_or_else(|| KeysError::Document {
            url: jwks_url.to_string(),
            document: "key set",
        })?;
        if keys.is_empty() {
            return Err(KeysError::NoUsableKeys {
                url: jwks_url.to_string(),
            });
        }
        tracing::debug!(
            provider = %settings.name(),
            keys = keys.len(),
            "fetched signing keys"
        );
        Ok(keys)
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, KeysError> {
        let request_error = |source| KeysError::Request {
            url: url.to_string(),
            source,
        };
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(request_error)?;
        if response.status() != StatusCode::OK {
            return Err(KeysError::Status {
                url: url.to_string(),
                status: response.status(),
            });
        }
        let too_large = || KeysError::TooLarge {
            url: url.to_string(),
            limit: MAX_RESPONSE_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The `kid` and key of a JWK the verifier can use, or `None`.
fn usable_key(entry: &Value) -> Option<(String, SigningKey)> {
    let kid = entry.get("kid")?.as_str()?;
    if kid.is_empty() || entry.get("kty")?.as_str()? != "RSA" {
        return None;
    }
    if let Some(usage) = entry.get("use")
        && usage.as_str() != Some("sig")
    {
        return None;
    }
    if let Some(alg) = entry.get("alg")
        && alg.as_str() != Some("RS256")
    {
        return None;
    }
    let modulus = BASE64URL_NOPAD
        .decode(entry.get("n")?.as_str()?.as_bytes())
        .ok()?;
    let exponent = BASE64URL_NOPAD
        .decode(entry.get("e")?.as_str()?.as_bytes())
        .ok()?;
    let significant = modulus.iter().skip_while(|byte| **byte == 0).count();
    if significant.saturating_mul(8) < MIN_RSA_BITS || exponent.is_empty() {
        return None;
    }
    let issuer = match entry.get("issuer") {
        None => None,
        Some(Value::String(issuer)) => Some(issuer.clone()),
        Some(_) => return None,
    };
    let key = SigningKey {
        decoding: DecodingKey::from_rsa_raw_components(&modulus, &exponent),
        issuer,
    };
    Some((kid.to_owned(), key))
}

fn shorten(value: &str) -> String {
    value.chars().take(MAX_QUOTED_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rsa_jwk(kid: &str) -> Value {
        let n = BASE64URL_NOPAD.encode(&[0xc5; 256]);
        json!({"kid": kid, "kty": "RSA", "use": "sig", "n": n, "e": "AQAB"})
    }

    fn parse(keys: Vec<Value>) -> KeySet {
        KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn keeps_rsa_signing_keys_by_kid() {
        let mut with_issuer = rsa_jwk("b");
        with_issuer["issuer"] = json!("https://login.microsoftonline.com/{tenantid}/v2.0");
        let set = parse(vec![rsa_jwk("a"), with_issuer]);
        assert_eq!(set.len(), 2);
        assert!(set.get("a").unwrap().issuer().is_none());
        assert_eq!(
            set.get("b").unwrap().issuer(),
            Some("https://login.microsoftonline.com/{tenantid}/v2.0")
        );
    }

    #[test]
    fn skips_keys_it_cannot_use() {
        let mut enc = rsa_jwk("enc");
        enc["use"] = json!("enc");
        let mut ps256 = rsa_jwk("ps");
        ps256["alg"] = json!("PS256");
        let mut oct = rsa_jwk("oct");
        oct["kty"] = json!("oct");
        let mut short = rsa_jwk("short");
        short["n"] = json!(BASE64URL_NOPAD.encode(&[0xc5; 128]));
        let mut no_kid = rsa_jwk("x");
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut bad_n = rsa_jwk("bad-n");
        bad_n["n"] = json!("!!!");
        let mut rs256 = rsa_jwk("rs");
        rs256["alg"] = json!("RS256");
        let set = parse(vec![
            enc,
            ps256,
            oct,
            short,
            no_kid,
            bad_n,
            rs256,
            json!("junk"),
        ]);
        assert_eq!(set.kids().collect::<Vec<_>>(), vec!["rs"]);
    }

    #[test]
    fn rejects_documents_without_a_keys_array() {
        assert!(KeySet::from_jwks(b"not json").is_none());
        assert!(KeySet::from_jwks(b"{\"keys\": {}}").is_none());
        assert!(KeySet::from_jwks(b"[]").is_none());
        assert!(KeySet::from_jwks(b"{\"keys\": []}").unwrap().is_empty());
    }
}
