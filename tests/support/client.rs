//! NATS clients that check what they were given: every admitted connection proves it can use
//! its own subject and is refused by the server on another tenant's, so a storm counts wrong
//! permissions as well as wrong admissions.

use std::time::Duration;

use async_nats::{ConnectErrorKind, Event, ServerError};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::issuer::{KID_1, TestIssuer};

/// One identity in a storm and the answer it must get.
#[derive(Clone, Debug)]
pub struct Case {
    /// For messages.
    pub who: &'static str,
    /// The access token.
    pub token: String,
    /// Sent as the CONNECT password (with a user name) instead of `auth_token`.
    pub as_password: bool,
    /// `Some((own, foreign))`: must be admitted, may use `own`, must be refused `foreign`.
    /// `None`: must be refused.
    pub expect: Option<(&'static str, &'static str)>,
}

/// What happened to one connect.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted, and its permissions are exactly as expected.
    Admitted,
    /// Refused by the server with an authorization error.
    Refused,
    /// The connect failed otherwise (timeout, I/O): the service did not answer.
    Failed(String),
    /// Admitted but the permissions are not what the policy grants. Always a test failure.
    WrongPermissions(String),
}

/// A storm's identities: three tenant/project members (two of them sent as passwords) and
/// refusals — a tenant without a binding, an injected subject, an expired token, a token for
/// another audience. `fresh` adds a unique `uti`, so each token misses the verified-token cache.
pub fn cases(contoso: &TestIssuer, fabrikam: &TestIssuer, fresh: bool) -> Vec<Case> {
    let uti = || {
        if fresh {
            let mut bytes = [0u8; 9];
            getrandom::getrandom(&mut bytes).unwrap();
            json!(data_encoding::BASE64URL_NOPAD.encode(&bytes))
        } else {
            json!("storm")
        }
    };
    let now = crate::support::issuer::now();
    let admit = |who, token, as_password, own, foreign| Case {
        who,
        token,
        as_password,
        expect: Some((own, foreign)),
    };
    let refuse = |who, token| Case {
        who,
        token,
        as_password: false,
        expect: None,
    };
    vec![
        admit(
            "contoso/alpha",
            contoso.app_token(json!({ "roles": ["Alpha"], "uti": uti() })),
            false,
            "contoso.alpha.data",
            "contoso.beta.data",
        ),
        admit(
            "contoso/beta",
            contoso.app_token(json!({ "roles": ["Beta"], "uti": uti() })),
            true,
            "contoso.beta.data",
            "fabrikam.alpha.data",
        ),
        admit(
            "fabrikam/alpha",
            fabrikam.app_token(json!({ "roles": ["Alpha"], "uti": uti() })),
            true,
            "fabrikam.alpha.data",
            "contoso.alpha.data",
        ),
        refuse(
            "fabrikam/beta (no binding)",
            fabrikam.app_token(json!({ "roles": ["Beta"], "uti": uti() })),
        ),
        refuse(
            "contoso/mail with oid \">\"",
            contoso.app_token(json!({ "roles": ["Mail"], "oid": ">", "uti": uti() })),
        ),
        refuse(
            "contoso/alpha expired",
            contoso.app_token(
                json!({ "roles": ["Alpha"], "exp": now - 600, "iat": now - 4200, "nbf": now - 4200 }),
            ),
        ),
        refuse(
            "contoso/alpha for another audience",
            contoso.sign(
                KID_1,
                &crate::support::issuer::merge(
                    contoso.app_claims(),
                    json!({ "roles": ["Alpha"], "aud": "api://someone-else", "uti": uti() }),
                ),
            ),
        ),
    ]
}

/// Connects as `case` to `url`, checks the answer and, when admitted, the permissions.
pub async fn attempt(url: &str, case: &Case) -> Outcome {
    let (tx, mut errors) = mpsc::unbounded_channel();
    let options = if case.as_password {
        async_nats::ConnectOptions::with_user_and_password("client".into(), case.token.clone())
    } else {
        async_nats::ConnectOptions::with_token(case.token.clone())
    };
    let connected = options
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                match event {
                    Event::ServerError(ServerError::Other(text)) => {
                        let _ = tx.send(text.to_lowercase());
                    }
                    Event::ServerError(ServerError::AuthorizationViolation) => {
                        let _ = tx.send(REFUSED.to_owned());
                    }
                    _ => {}
                }
            }
        })
        .connection_timeout(Duration::from_secs(20))
        .connect(url)
        .await;
    let client = match connected {
        Ok(client) => client,
        Err(err) if err.kind() == ConnectErrorKind::AuthorizationViolation => {
            return Outcome::Refused;
        }
        Err(err) => return Outcome::Failed(err.to_string()),
    };
    // async-nats may report a connect as successful before the server's verdict arrives (any
    // first server message counts, and `flush` only empties the write buffer), so admission is
    // proven by a message round trip, refusal by the server's authorization error.
    let Some((own, foreign)) = case.expect else {
        let verdict = tokio::time::timeout(Duration::from_secs(10), errors.recv()).await;
        drop(client);
        return match verdict {
            Ok(Some(e)) if e == REFUSED => Outcome::Refused,
            Ok(other) => Outcome::Failed(format!("{other:?}")),
            Err(_) => Outcome::WrongPermissions(format!(
                "{} was not refused within 10 s of connecting",
                case.who
            )),
        };
    };
    match probe(&client, &mut errors, own, foreign).await {
        Ok(()) => Outcome::Admitted,
        Err(why) if why.contains(REFUSED) => Outcome::Refused,
        Err(why) => Outcome::WrongPermissions(format!("{}: {why}", case.who)),
    }
}

/// What the event callback reports for the server's authorization error.
const REFUSED: &str = "authorization violation";

/// Connects as `case`, retrying once when the service did not answer (the request was lost
/// with a replica); a refusal or wrong permissions are never retried.
pub async fn attempt_with_retry(url: &str, case: &Case) -> (Outcome, bool) {
    match attempt(url, case).await {
        Outcome::Failed(_) => (attempt(url, case).await, true),
        // A killed replica's in-flight request surfaces as an authorization timeout from the
        // server, which the client sees as a refusal; an expected admission gets one retry.
        Outcome::Refused if case.expect.is_some() => (attempt(url, case).await, true),
        outcome => (outcome, false),
    }
}

/// Own subject round-trips; the foreign one is refused by the server, both ways.
async fn probe(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<String>,
    own: &str,
    foreign: &str,
) -> Result<(), String> {
    let within = Duration::from_secs(10);
    let mut sub = client
        .subscribe(own.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish(own.to_owned(), "mine".into())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish(foreign.to_owned(), "intrusion".into())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(within, sub.next()).await {
        Ok(Some(message)) if &message.payload[..] == b"mine" => {}
        other => return Err(format!("no own message on {own}: {other:?}")),
    }
    let error = tokio::time::timeout(within, errors.recv())
        .await
        .map_err(|_| format!("publishing to {foreign} was not refused"))?
        .unwrap_or_default();
    if !(error.contains("permissions violation for publish") && error.contains(foreign)) {
        return Err(format!("unexpected server error {error:?}"));
    }
    let _foreign_sub = client
        .subscribe(foreign.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    let error = tokio::time::timeout(within, errors.recv())
        .await
        .map_err(|_| format!("subscribing to {foreign} was not refused"))?
        .unwrap_or_default();
    if !(error.contains("permissions violation for subscription") && error.contains(foreign)) {
        return Err(format!("unexpected server error {error:?}"));
    }
    Ok(())
}

/// Counts of a storm's outcomes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Admitted with the right permissions, as expected.
    pub admitted: u64,
    /// Refused, as expected.
    pub refused: u64,
    /// Connects retried once after the service did not answer.
    pub retried: u64,
    /// Every wrong answer: admitted when it should be refused, refused or unanswered when it
    /// should be admitted, or wrong permissions.
    pub wrong: Vec<String>,
}

impl Tally {
    /// Records `outcome` for `case`.
    pub fn record(&mut self, case: &Case, outcome: Outcome, retried: bool) {
        self.retried += u64::from(retried);
        match (outcome, case.expect.is_some()) {
            (Outcome::Admitted, true) => self.admitted += 1,
            (Outcome::Refused, false) => self.refused += 1,
            (outcome, _) => self.wrong.push(format!("{}: {outcome:?}", case.who)),
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: Tally) {
        self.admitted += other.admitted;
        self.refused += other.refused;
        self.retried += other.retried;
        self.wrong.extend(other.wrong);
    }
}

/// Runs `total` connects over `urls` (round robin) with `concurrency` workers, each picking
/// cases round robin; with `retry`, a lost request is retried once.
pub async fn storm(
    urls: &[String],
    cases: &[Case],
    total: usize,
    concurrency: usize,
    retry: bool,
) -> Tally {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (urls, cases, next) = (urls.to_vec(), cases.to_vec(), next.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= total {
                        return tally;
                    }
                    let (url, case) = (&urls[n % urls.len()], &cases[n % cases.len()]);
                    let (outcome, retried) = if retry {
                        attempt_with_retry(url, case).await
                    } else {
                        (attempt(url, case).await, false)
                    };
                    tally.record(case, outcome, retried);
                }
            })
        })
        .collect();
    let mut tally = Tally::default();
    for worker in workers {
        tally.merge(worker.await.unwrap());
    }
    tally
}

/// A connected client that records the server errors it is sent. Shared by the tests that
/// assert which error the server sends a client after a refused publish or subscribe.
pub struct Client {
    /// The connection.
    pub nats: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
}

/// Connects with `token` as `auth_token`, recording server errors for [`next_error`].
pub async fn connect(url: &str, token: &str) -> Result<Client, async_nats::ConnectError> {
    let (tx, errors) = mpsc::unbounded_channel();
    let nats = async_nats::ConnectOptions::with_token(token.to_owned())
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(ServerError::Other(text)) = event {
                    let _ = tx.send(text);
                }
            }
        })
        .connect(url)
        .await?;
    Ok(Client { nats, errors })
}

/// The next server error `client` was sent, lower-cased (nats-server's casing of permission
/// errors is not part of what the tests check); at most 5 s away.
pub async fn next_error(client: &mut Client) -> String {
    tokio::time::timeout(Duration::from_secs(5), client.errors.recv())
        .await
        .expect("a server error within 5 s")
        .expect("error channel open")
        .to_lowercase()
}
