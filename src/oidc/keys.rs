//! Signing keys: the parsed key set ([`KeySet`]) and fetching it over HTTP (discovery, then JWKS).
//!
//! Parsing is pure and skips keys the verifier could never use (not RSA or EC P-256/P-384, not for
//! signatures, a symmetric or unknown `alg`, RSA shorter than 2048 bits), so one odd key never
//! breaks a whole set.
//! Fetching enforces https (plain http only to loopback), no redirects, a size cap, and a total
//! deadline on the whole fetch (discovery and JWKS, bodies included): a server that accepts and
//! never answers, or trickles a byte a second, is cut off by it, not only by a read timeout.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use super::settings::{algorithm_by_name, is_allowed_transport};

/// Cap on discovery and JWKS response bodies.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one whole fetch, both documents and their bodies included. No request waits for a
/// fetch this long (they wait at most the verifier's key wait); it bounds how long a source's
/// single fetch in flight can keep the next one from starting.
pub(crate) const FETCH_DEADLINE: Duration = Duration::from_secs(10);
/// RSA keys shorter than this are refused (and aws-lc would refuse them for RS256 anyway).
const MIN_RSA_BITS: usize = 2048;
/// Error messages quote values read from the network; this keeps them short.
const MAX_QUOTED_CHARS: usize = 200;

/// The usable signing keys of one key source (a provider, or one Entra tenant and version), by
/// `kid`, with the issuer its metadata announced.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, SigningKey>,
    /// The discovery document's `issuer` (Entra's may be a `{tenantid}` template); `None` for
    /// a key set that did not come from discovery.
    metadata_issuer: Option<String>,
}

/// One public signing key from a JWKS.
#[derive(Clone)]
pub struct SigningKey {
    pub(crate) decoding: DecodingKey,
    pub(crate) family: KeyFamily,
    /// The JWK's `alg`, when it names one: the key may then only verify that algorithm.
    pub(crate) algorithm: Option<Algorithm>,
    /// Entra's per-key `issuer` (a template with `{tenantid}`), checked against `iss` when present.
    pub(crate) issuer: Option<String>,
}

/// The kind of public key, which decides the algorithms it can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyFamily {
    /// RSA, for RS* and PS*.
    Rsa,
    /// EC P-256, for ES256.
    P256,
    /// EC P-384, for ES384.
    P384,
}

/// What to fetch: a discovery document, and the issuer it must announce.
pub(crate) struct FetchTarget<'a> {
    /// For logs.
    pub(crate) label: &'a str,
    /// The discovery document.
    pub(crate) discovery_url: &'a str,
    /// The issuer the metadata must announce, after putting `tenant` into a `{tenantid}`
    /// template; for tenant-independent Entra metadata, the template itself.
    pub(crate) expected_issuer: &'a str,
    /// The tenant substituted into a template issuer, for per-tenant Entra metadata.
    pub(crate) tenant: Option<&'a str>,
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
    /// The whole fetch (discovery and JWKS) did not finish within its deadline.
    #[error("fetching keys from {url} took longer than {} ms", limit.as_millis())]
    Deadline {
        /// The discovery URL the fetch started from.
        url: String,
        /// The deadline.
        limit: Duration,
    },
    /// No key set has been fetched yet, and the first fetch was still running when the request
    /// stopped waiting for it.
    #[error("no key set yet: the first fetch was still running after {} ms", waited.as_millis())]
    StillFetching {
        /// How long the request waited.
        waited: Duration,
    },
}

/// Fetches discovery documents and key sets. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    deadline: Duration,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`), keeping only usable asymmetric signing keys.
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
        Some(Self {
            keys,
            metadata_issuer: None,
        })
    }

    /// The same keys, announced by metadata whose `issuer` is `issuer`.
    pub fn with_metadata_issuer(mut self, issuer: &str) -> Self {
        self.metadata_issuer = Some(issuer.to_owned());
        self
    }

    /// The issuer the key set's metadata announced, if it came from discovery.
    pub fn metadata_issuer(&self) -> Option<&str> {
        self.metadata_issuer.as_deref()
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

    /// True when this key may verify `algorithm`: the key's family fits, and the JWK's own
    /// `alg`, if it has one, is the same.
    pub fn can_verify(&self, algorithm: Algorithm) -> bool {
        let family_fits = match self.family {
            KeyFamily::Rsa => matches!(
                algorithm,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyFamily::P256 => algorithm == Algorithm::ES256,
            KeyFamily::P384 => algorithm == Algorithm::ES384,
        };
        family_fits && self.algorithm.is_none_or(|own| own == algorithm)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("family", &self.family)
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher whose every fetch ends within `deadline`.
    pub(crate) fn new(deadline: Duration) -> Result<Self, KeysError> {
        // No per-request timeout: `fetch` bounds the whole of it, bodies included.
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // Metadata never redirects; following one could lead anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(KeysError::Client)?;
        Ok(Self { client, deadline })
    }

    /// Discovery, issuer check, then the JWKS it points to, all within the deadline.
    pub(crate) async fn fetch(&self, target: &FetchTarget<'_>) -> Result<KeySet, KeysError> {
        // reqwest's own timeout is per request; this one bounds both requests together, so
        // two slow documents cannot add up to twice the deadline.
        tokio::time::timeout(self.deadline, self.fetch_documents(target))
            .await
            .unwrap_or_else(|_| {
                Err(KeysError::Deadline {
                    url: target.discovery_url.to_owned(),
                    limit: self.deadline,
                })
            })
    }

    async fn fetch_documents(&self, target: &FetchTarget<'_>) -> Result<KeySet, KeysError> {
        let discovery = target.discovery_url;
        let discovery_url = Url::parse(discovery).map_err(|_| KeysError::Document {
            url: discovery.to_owned(),
            document: "discovery url",
        })?;
        let body = self.get(&discovery_url).await?;
        let metadata: Metadata =
            serde_json::from_slice(&body).map_err(|_| KeysError::Document {
                url: discovery.to_owned(),
                document: "discovery document",
            })?;

        // Entra's tenant-independent documents carry the `{tenantid}` template; per-tenant ones
        // the concrete issuer. Either way, after substitution it must be exactly what we expect.
        let announced = normalize_template(&metadata.issuer);
        let found = match target.tenant {
            Some(tenant) => announced.replace(TENANT_PLACEHOLDER, tenant),
            None => announced.clone(),
        };
        if found != target.expected_issuer {
            return Err(KeysError::IssuerMismatch {
                expected: target.expected_issuer.to_owned(),
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
            source = target.label,
            keys = keys.len(),
            "fetched signing keys"
        );
        Ok(keys.with_metadata_issuer(&announced))
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, KeysError> {
        let request_error = |source| KeysError::Request {
            url: url.to_string(),
            source,
        };
        let response = self
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
        read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| match error {
                Some(source) => request_error(source),
                None => too_large(),
            })
    }
}

/// Entra spells its placeholder `{tenantid}`; accept any case, so comparisons see one form.
pub(crate) const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// `issuer` with any-case `{tenantid}` spelled as [`TENANT_PLACEHOLDER`].
pub(crate) fn normalize_template(issuer: &str) -> String {
    let lower = issuer.to_ascii_lowercase();
    match lower.find(TENANT_PLACEHOLDER) {
        Some(at) => {
            let end = at + TENANT_PLACEHOLDER.len();
            let (head, tail) = (issuer.get(..at), issuer.get(end..));
            format!(
                "{}{TENANT_PLACEHOLDER}{}",
                head.unwrap_or_default(),
                tail.unwrap_or_default()
            )
        }
        None => issuer.to_owned(),
    }
}

/// Reads a response body of at most `limit` bytes; `Err(None)` when it is larger.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, Option<reqwest::Error>> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Some)? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `kid` and key of a JWK the verifier can use, or `None`.
fn usable_key(entry: &Value) -> Option<(String, SigningKey)> {
    let kid = entry.get("kid")?.as_str()?;
    if kid.is_empty() {
        return None;
    }
    if let Some(usage) = entry.get("use")
        && usage.as_str() != Some("sig")
    {
        return None;
    }
    let algorithm = match entry.get("alg") {
        None => None,
        // Symmetric or unknown algorithms are not representable, so such keys are skipped.
        Some(alg) => Some(algorithm_by_name(alg.as_str()?)?),
    };
    let (decoding, family) = match entry.get("kty")?.as_str()? {
        "RSA" => {
            let modulus = decode_member(entry, "n")?;
            let exponent = decode_member(entry, "e")?;
            let significant = modulus.iter().skip_while(|byte| **byte == 0).count();
            if significant.saturating_mul(8) < MIN_RSA_BITS || exponent.is_empty() {
                return None;
            }
            let decoding = DecodingKey::from_rsa_raw_components(&modulus, &exponent);
            (decoding, KeyFamily::Rsa)
        }
        "EC" => {
            let (family, coordinate_len) = match entry.get("crv")?.as_str()? {
                "P-256" => (KeyFamily::P256, 32),
                "P-384" => (KeyFamily::P384, 48),
                _ => return None,
            };
            let (x, y) = (decode_member(entry, "x")?, decode_member(entry, "y")?);
            if x.len() != coordinate_len || y.len() != coordinate_len {
                return None;
            }
            let decoding = DecodingKey::from_ec_components(
                entry.get("x")?.as_str()?,
                entry.get("y")?.as_str()?,
            )
            .ok()?;
            (decoding, family)
        }
        _ => return None,
    };
    let issuer = match entry.get("issuer") {
        None => None,
        Some(Value::String(issuer)) => Some(issuer.clone()),
        Some(_) => return None,
    };
    let key = SigningKey {
        decoding,
        family,
        algorithm,
        issuer,
    };
    if algorithm.is_some_and(|alg| !key.can_verify(alg)) {
        return None;
    }
    Some((kid.to_owned(), key))
}

fn decode_member(entry: &Value, member: &str) -> Option<Vec<u8>> {
    BASE64URL_NOPAD
        .decode(entry.get(member)?.as_str()?.as_bytes())
        .ok()
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

    fn ec_jwk(kid: &str, crv: &str, len: usize) -> Value {
        // Coordinates of the P-256 generator; never verified here, only parsed.
        let x = BASE64URL_NOPAD.encode(&[0x6b; 48][..len]);
        let y = BASE64URL_NOPAD.encode(&[0x4f; 48][..len]);
        json!({"kid": kid, "kty": "EC", "crv": crv, "x": x, "y": y, "use": "sig"})
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
        let mut hs256 = rsa_jwk("hs");
        hs256["alg"] = json!("HS256");
        let mut es_on_rsa = rsa_jwk("es-on-rsa");
        es_on_rsa["alg"] = json!("ES256");
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
        let mut p521 = ec_jwk("p521", "P-256", 32);
        p521["crv"] = json!("P-521");
        let short_ec = ec_jwk("short-ec", "P-384", 32);
        let set = parse(vec![
            enc,
            hs256,
            es_on_rsa,
            p521,
            short_ec,
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
    fn keys_verify_only_their_own_family_and_alg() {
        let mut ps = rsa_jwk("ps");
        ps["alg"] = json!("PS256");
        let set = parse(vec![rsa_jwk("rsa"), ps, ec_jwk("ec", "P-256", 32)]);
        let rsa = set.get("rsa").unwrap();
        assert!(rsa.can_verify(Algorithm::RS256) && rsa.can_verify(Algorithm::PS512));
        assert!(!rsa.can_verify(Algorithm::ES256) && !rsa.can_verify(Algorithm::HS256));
        let ps = set.get("ps").unwrap();
        assert!(ps.can_verify(Algorithm::PS256) && !ps.can_verify(Algorithm::RS256));
        let ec = set.get("ec").unwrap();
        assert!(ec.can_verify(Algorithm::ES256) && !ec.can_verify(Algorithm::ES384));
    }

    #[test]
    fn placeholders_are_normalized_in_any_case() {
        assert_eq!(
            normalize_template("https://login.microsoftonline.com/{TenantID}/v2.0"),
            "https://login.microsoftonline.com/{tenantid}/v2.0"
        );
        assert_eq!(normalize_template("https://a/b"), "https://a/b");
    }

    /// A loopback HTTP server that reads a request, then sends `answer` one byte per `pause`
    /// (with `answer` empty: accepts and never answers). Returns a discovery URL on it.
    async fn slow_server(answer: &'static [u8], pause: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/openid-configuration",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut request = [0u8; 4096];
                    if stream.read(&mut request).await.is_err() {
                        return;
                    }
                    for byte in answer {
                        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(pause).await;
                    }
                    // Hold the connection open, answered or not, until the client gives up.
                    let _ = stream.read(&mut request).await;
                });
            }
        });
        url
    }

    async fn fetch_from(url: &str) -> Result<KeySet, KeysError> {
        let fetcher = Fetcher::new(Duration::from_millis(400)).unwrap();
        let target = FetchTarget {
            label: "test",
            discovery_url: url,
            expected_issuer: "https://issuer.example",
            tenant: None,
        };
        fetcher.fetch(&target).await
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_cut_off_by_the_deadline() {
        let url = slow_server(b"", Duration::ZERO).await;
        let error = fetch_from(&url).await.unwrap_err();
        assert!(
            matches!(&error, KeysError::Deadline { url: at, .. } if *at == url),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_server_trickling_its_body_is_cut_off_by_the_deadline() {
        // Each byte comes well within the read timeout; only a total deadline ends this.
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
            content-length: 4096\r\n\r\n{\"issuer\": \"https://issuer.example\", \"jwks_uri\": \"\
            http://127.0.0.1:1/keys\"}                                                         ";
        let url = slow_server(ANSWER, Duration::from_millis(5)).await;
        let error = fetch_from(&url).await.unwrap_err();
        assert!(matches!(error, KeysError::Deadline { .. }), "{error:?}");
    }

    #[test]
    fn rejects_documents_without_a_keys_array() {
        assert!(KeySet::from_jwks(b"not json").is_none());
        assert!(KeySet::from_jwks(b"{\"keys\": {}}").is_none());
        assert!(KeySet::from_jwks(b"[]").is_none());
        assert!(KeySet::from_jwks(b"{\"keys\": []}").unwrap().is_empty());
    }
}
