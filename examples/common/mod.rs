//! Shared by the examples: access tokens from a command, and a NATS connection that presents a
//! fresh token on every connect and reconnect.
//!
//! The callout admits a client for as long as its access token lives: nats-server disconnects
//! it when the minted credentials expire. async-nats then reconnects and calls the auth
//! callback again, which fetches a new token — so a long-running client never holds a stale
//! one. The token comes from a command (`NATS_TOKEN_COMMAND`), the same way for the local
//! environment (`entra-callout dev token ...`) and for Entra (`az account get-access-token ...`).

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::{Auth, AuthError, ConnectOptions, Event, ServerError};
use data_encoding::BASE64URL_NOPAD;
use tokio::sync::mpsc;

/// A token being fetched.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send + Sync>>;

/// Where access tokens come from; cheap to clone.
#[derive(Clone)]
pub struct TokenSource {
    fetch: Arc<dyn Fn() -> TokenFuture + Send + Sync>,
    fetches: Arc<AtomicUsize>,
}

impl TokenSource {
    /// Tokens from a function.
    pub fn new(fetch: impl Fn() -> TokenFuture + Send + Sync + 'static) -> Self {
        Self {
            fetch: Arc::new(fetch),
            fetches: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Tokens printed by a shell command, run anew for every token.
    pub fn command(command: String) -> Self {
        Self::new(move || {
            let command = command.clone();
            Box::pin(async move {
                let output = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("sh")
                        .arg("-c")
                        .arg(&command)
                        .stderr(std::process::Stdio::inherit())
                        .output()
                })
                .await
                .map_err(|e| format!("token command did not finish: {e}"))?
                .map_err(|e| format!("cannot run the token command: {e}"))?;
                if !output.status.success() {
                    return Err(format!("the token command failed ({})", output.status));
                }
                let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                if token.is_empty() {
                    return Err("the token command printed nothing".to_owned());
                }
                Ok(token)
            })
        })
    }

    /// Tokens from the command in `NATS_TOKEN_COMMAND`.
    pub fn from_env() -> anyhow::Result<Self> {
        let command = std::env::var("NATS_TOKEN_COMMAND").map_err(|_| {
            anyhow::anyhow!(
                "set NATS_TOKEN_COMMAND to a command that prints an access token, e.g. \
                 \"entra-callout dev token --role Ml.Vision.Producer\" or \
                 \"az account get-access-token --resource api://nats-auth --query accessToken -o tsv\""
            )
        })?;
        Ok(Self::command(command))
    }

    /// Fetches one token.
    pub async fn fetch(&self) -> Result<String, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        (self.fetch)().await
    }

    /// How many tokens were fetched so far.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A connected client and the errors the server sent it (permission violations, expiry).
pub struct Connection {
    /// The client.
    pub client: async_nats::Client,
    /// Server errors, lowercased.
    pub errors: mpsc::UnboundedReceiver<String>,
}

/// How long [`Connection::refusals`] listens for the server to refuse a publish. async-nats'
/// `flush` only writes to the socket and nats-server answers an allowed publish with silence:
/// a refusal (`-ERR 'Permissions Violation for Publish to "…"'`) is the only answer there is,
/// and it arrives within a round trip, well inside this on any working network.
pub const REFUSAL_WAIT: Duration = Duration::from_secs(1);

impl Connection {
    /// Flushes what was published, then listens up to [`REFUSAL_WAIT`] for the server to refuse
    /// publishing to any of `subjects`; returns each refusal (empty: none refused). Other
    /// server errors are printed as they arrive.
    pub async fn refusals(&mut self, subjects: &[String]) -> anyhow::Result<Vec<String>> {
        self.client.flush().await?;
        let wanted: Vec<String> = subjects
            .iter()
            .map(|s| {
                format!(
                    "permissions violation for publish to \"{}\"",
                    s.to_lowercase()
                )
            })
            .collect();
        let mut refused = Vec::new();
        let deadline = tokio::time::Instant::now() + REFUSAL_WAIT;
        while refused.len() < subjects.len() {
            match tokio::time::timeout_at(deadline, self.errors.recv()).await {
                Ok(Some(error)) if wanted.iter().any(|w| error.contains(w.as_str())) => {
                    refused.push(error);
                }
                Ok(Some(error)) => eprintln!("server: {error}"),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(refused)
    }
}

/// Connects to `url`, presenting a token from `tokens` on every connect and reconnect.
/// `inbox_prefix` sets where replies arrive (`_INBOX.<oid>` for a private inbox).
pub async fn connect(
    url: &str,
    name: &str,
    tokens: &TokenSource,
    inbox_prefix: Option<String>,
) -> Result<Connection, async_nats::ConnectError> {
    let tokens = tokens.clone();
    let (tx, errors) = mpsc::unbounded_channel();
    let mut options = ConnectOptions::with_auth_callback(move |_nonce| {
        let tokens = tokens.clone();
        async move {
            let token = tokens.fetch().await.map_err(AuthError::new)?;
            let mut auth = Auth::new();
            auth.token = Some(token);
            Ok(auth)
        }
    })
    .name(name)
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let Event::ServerError(ServerError::Other(text)) = event {
                let _ = tx.send(text.to_lowercase());
            }
        }
    });
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    let client = options.connect(url).await?;
    Ok(Connection { client, errors })
}

/// A string claim of a token, read WITHOUT verifying it: only for the holder's own token (to
/// learn its object id), never to make a decision about someone else's.
pub fn claim(token: &str, name: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = BASE64URL_NOPAD.decode(payload.as_bytes()).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

/// `NATS_URL`, or the local environment's default.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Prints the server's errors for this client as they arrive.
pub fn print_errors(mut errors: mpsc::UnboundedReceiver<String>) {
    tokio::spawn(async move {
        while let Some(error) = errors.recv().await {
            eprintln!("server: {error}");
        }
    });
}
