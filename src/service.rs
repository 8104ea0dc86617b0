//! The service loop: subscribe to `$SYS.REQ.USER.AUTH`, answer requests concurrently, drain.
//!
//! Replicas share the subject through a queue group, so each request is answered once — also
//! across a nats-server cluster, where the servers route each request to one member of the group.
//! async-nats reconnects on its own and restores the subscription; readiness follows the
//! connection state meanwhile.
//!
//! # Bounded concurrency
//! At most `max_concurrency` requests are decided at once, each in its own task holding a slot.
//! A burst beyond that — thousands of clients reconnecting after a server restart — is not
//! refused at once: up to `max_queued` more requests wait for a slot, each for at most
//! `queue_timeout`, which stays well inside nats-server's callout timeout. Requests beyond both
//! bounds, or that waited too long, are answered right away with the `overloaded` error. The
//! client sees its connection refused and retries, instead of hanging until the server times the
//! request out, and nats-server logs why. Refusing does no I/O, so the loop does it itself: when
//! even refusing cannot keep up, the loop slows down and nats-server buffers, rather than this
//! process growing without bound.
//!
//! # Drain
//! On shutdown readiness drops, the subscription is drained — requests nats-server already
//! delivered to us are still answered — and requests in flight get a grace period.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{Semaphore, TryAcquireError};
use tracing::{debug, info, warn};

use crate::admin::Ops;
use crate::callout::{AuditEvent, Authorizer, Handled};
use crate::deny::DenyReason;
use crate::nats_jwt::{AUTH_REQUEST_SUBJECT, XKEY_HEADER};
use crate::secret::{Secret, SharedSecret};
use crate::telemetry::unix_now;

/// Audit trail settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditSettings {
    /// NATS subject every decision's audit event is published to, if any.
    pub subject: Option<String>,
}

/// How the service connects to nats-server.
#[derive(Debug)]
pub struct NatsSettings {
    /// Server URLs (comma-separated in the file).
    pub urls: Vec<async_nats::ServerAddr>,
    /// The service's own credentials.
    pub auth: NatsAuth,
    /// Queue group for `$SYS.REQ.USER.AUTH`, shared by all replicas.
    pub queue_group: String,
    /// The account requests arrive in; users are never placed there.
    pub callout_account: String,
    /// The server's system account; users are never placed there.
    pub system_account: String,
}

/// The service's credentials for its own NATS connection.
pub enum NatsAuth {
    /// User name and password (config mode).
    UserPassword {
        /// User name, one of the server's `auth_users`.
        user: String,
        /// The password; replaced when its file changes, read again at every (re)connect.
        password: SharedSecret,
    },
    /// An nkey seed (`SU...`).
    Nkey(Secret),
    /// A `.creds` file: user JWT and seed (operator mode).
    Credentials(PathBuf),
    /// No credentials (only for servers that need none; unusual with callouts).
    None,
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, <redacted>)"),
            Self::Nkey(_) => f.write_str("Nkey(<redacted>)"),
            Self::Credentials(path) => write!(f, "Credentials({})", path.display()),
            Self::None => f.write_str("None"),
        }
    }
}

/// Errors that stop the service (or, for [`ServiceError::Connect`], one connection attempt).
///
/// async-nats errors print their own cause after their kind (`IO error: Connection refused`)
/// and also return it as `source()`; they are kept as message text, not as a source, so an
/// `anyhow` chain prints that cause once.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A connection attempt to NATS failed.
    #[error("cannot connect to NATS at {urls}: {cause}")]
    Connect {
        /// The servers tried, without credentials.
        urls: String,
        /// What async-nats reported.
        cause: async_nats::ConnectError,
    },
    /// The credentials file could not be read or parsed.
    #[error("cannot load the NATS credentials file {}: {cause}", path.display())]
    Credentials {
        /// The file.
        path: std::path::PathBuf,
        /// Why it could not be used.
        cause: std::io::Error,
    },
    /// The subscription could not be made.
    #[error("cannot subscribe to {AUTH_REQUEST_SUBJECT}: {0}")]
    Subscribe(async_nats::SubscribeError),
    /// The subscription could not be confirmed with the server.
    #[error("cannot confirm the subscription with the server: {0}")]
    Flush(async_nats::client::FlushError),
}

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct LoopSettings {
    /// Queue group shared by all replicas.
    pub queue_group: String,
    /// Requests decided at once.
    pub max_concurrency: usize,
    /// Requests that may wait for a slot beyond `max_concurrency`.
    pub max_queued: usize,
    /// Longest wait for a slot before a request is refused as `overloaded`.
    pub queue_timeout: Duration,
    /// Grace period for in-flight requests after shutdown begins.
    pub drain_timeout: Duration,
    /// Subject each decision's audit event is published to, if any.
    pub audit_subject: Option<String>,
}

/// Everything a request task needs.
struct Context {
    client: async_nats::Client,
    authorizer: Arc<Authorizer>,
    ops: Ops,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    audit_subject: Option<async_nats::Subject>,
}

/// Connects to NATS with the service's own credentials: one attempt at every server, then
/// reconnecting forever once connected.
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, ServiceError> {
    let options = connect_options(settings).await?;
    connect_once(settings, options).await
}

/// Connects like [`connect`], but keeps trying — with a backoff from [`FIRST_CONNECT_RETRY`]
/// doubling to [`MAX_CONNECT_RETRY`], one log line per attempt — until it succeeds or `stop`
/// completes (`Ok(None)`). nats-server starting after the service (a pod scheduled first) is
/// not an error: the service stays up and not ready meanwhile. Only an unusable credentials
/// file, which no retry fixes, is returned as an error.
pub async fn connect_with_retry(
    settings: &NatsSettings,
    stop: impl Future<Output = ()>,
) -> Result<Option<async_nats::Client>, ServiceError> {
    let options = connect_options(settings).await?;
    tokio::pin!(stop);
    for attempt in 0_u32.. {
        match connect_once(settings, options.clone()).await {
            Ok(client) => return Ok(Some(client)),
            Err(error) => {
                let retry_in = connect_retry_delay(attempt);
                warn!(%error, ?retry_in, "NATS not reachable yet; retrying");
                tokio::select! {
                    () = &mut stop => return Ok(None),
                    () = tokio::time::sleep(retry_in) => {}
                }
            }
        }
    }
    Ok(None)
}

/// First wait between initial connection attempts.
pub const FIRST_CONNECT_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between initial connection attempts: a server that is down for long gets a
/// log line every few seconds, not a flood.
pub const MAX_CONNECT_RETRY: Duration = Duration::from_secs(5);

/// The wait after failed initial attempt `attempt` (0-based): doubling, capped.
fn connect_retry_delay(attempt: u32) -> Duration {
    FIRST_CONNECT_RETRY
        .saturating_mul(2_u32.saturating_pow(attempt.min(16)))
        .min(MAX_CONNECT_RETRY)
}

async fn connect_options(
    settings: &NatsSettings,
) -> Result<async_nats::ConnectOptions, ServiceError> {
    let options = match &settings.auth {
        NatsAuth::UserPassword { user, password } => {
            // Asked at every connect and reconnect, so a rotated password is used from the
            // next connection on while the current one stays up.
            let (user, password) = (user.clone(), password.clone());
            async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
                let mut auth = async_nats::Auth::new();
                auth.username = Some(user.clone());
                auth.password = Some(password.current().expose().to_owned());
                async move { Ok(auth) }
            })
        }
        NatsAuth::Nkey(seed) => async_nats::ConnectOptions::with_nkey(seed.expose().to_owned()),
        NatsAuth::Credentials(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|cause| ServiceError::Credentials {
                path: path.clone(),
                cause,
            })?,
        NatsAuth::None => async_nats::ConnectOptions::new(),
    };
    Ok(options
        .name("entra-callout")
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("connected to NATS"),
                async_nats::Event::Disconnected => warn!("disconnected from NATS; reconnecting"),
                other => debug!(event = %other, "NATS connection event"),
            }
        }))
}

async fn connect_once(
    settings: &NatsSettings,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, ServiceError> {
    options
        .connect(settings.urls.clone())
        .await
        .map_err(|cause| ServiceError::Connect {
            urls: display_urls(&settings.urls),
            cause,
        })
}

/// The servers as `scheme://host:port`, comma-separated: a URL may carry a user and password,
/// which must not reach a log line.
pub fn display_urls(urls: &[async_nats::ServerAddr]) -> String {
    urls.iter()
        .map(|url| {
            let host = url.host();
            if host.contains(':') {
                format!("{}://[{host}]:{}", url.scheme(), url.port())
            } else {
                format!("{}://{host}:{}", url.scheme(), url.port())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The wait before reconnect attempt `attempts` (1-based): none for the first, then a short
/// fixed interval. The service must be back on the bus before its clients: a client that gets
/// back first has its authorization request sent to nobody and waits out nats-server's callout
/// timeout (`cargo bench --bench storm` measures it). Client libraries wait 100 ms or more,
/// with jitter, between attempts; one process trying every [`RECONNECT_INTERVAL`] costs
/// nothing, and async-nats restores the subscription first thing on reconnect.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        Duration::ZERO
    } else {
        RECONNECT_INTERVAL
    }
}

/// The wait between reconnect attempts after the first, so the service answers again within
/// milliseconds of nats-server coming back. Not shorter: at 2 ms the storm after a 500 ms
/// outage lost 6 clients instead of 17–20 (of 2,000), but a config reload that changes the
/// service's password stalled nats-server for its 2 s callout timeout five times as often
/// (the reload closes the service's connection, then re-authorizes the callout's clients
/// while the service reconnects): BENCHMARKS.md.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(10);

/// Subscribes to the request subject in `queue_group` and waits until the server has the
/// subscription, so requests are routed to this replica from the moment this returns.
pub async fn subscribe(
    client: &async_nats::Client,
    queue_group: &str,
) -> Result<async_nats::Subscriber, ServiceError> {
    let requests = client
        .queue_subscribe(AUTH_REQUEST_SUBJECT, queue_group.to_owned())
        .await
        .map_err(ServiceError::Subscribe)?;
    client.flush().await.map_err(ServiceError::Flush)?;
    info!(
        subject = AUTH_REQUEST_SUBJECT,
        queue_group, "answering authorization requests"
    );
    Ok(requests)
}

/// Answers `requests` until `shutdown` completes, then drains the subscription and waits up to
/// the grace period for requests in flight.
pub async fn run(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    authorizer: Arc<Authorizer>,
    settings: LoopSettings,
    ops: Ops,
    shutdown: impl Future<Output = ()>,
) {
    ops.readiness.watch_nats(client.clone());
    ops.readiness.set_subscribed(true);
    // Every request holds an admission permit from arrival to answer; it is what drain waits
    // for. Slots bound the requests being decided; the difference is the queue.
    let admitted_max = settings.max_concurrency.saturating_add(settings.max_queued);
    let admission = Arc::new(Semaphore::new(admitted_max));
    let context = Arc::new(Context {
        client,
        authorizer,
        ops,
        slots: Arc::new(Semaphore::new(settings.max_concurrency)),
        queue_timeout: settings.queue_timeout,
        audit_subject: settings.audit_subject.map(async_nats::Subject::from),
    });
    tokio::pin!(shutdown);
    let mut draining = false;

    loop {
        let message = tokio::select! {
            () = &mut shutdown, if !draining => {
                info!("shutting down: draining the request subscription");
                draining = true;
                context.ops.readiness.set_draining();
                if let Err(err) = requests.drain().await {
                    warn!(error = %err, "could not drain the subscription");
                    break;
                }
                continue;
            }
            message = requests.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let received = Instant::now();
        match Arc::clone(&admission).try_acquire_owned() {
            Ok(admitted) => {
                let context = Arc::clone(&context);
                tokio::spawn(async move {
                    let _admitted = admitted;
                    context.serve(message, received).await;
                });
            }
            Err(TryAcquireError::NoPermits) => context.refuse(message, received).await,
            Err(TryAcquireError::Closed) => break,
        }
    }
    context.ops.readiness.set_subscribed(false);

    let total = u32::try_from(admitted_max).unwrap_or(u32::MAX);
    match tokio::time::timeout(settings.drain_timeout, admission.acquire_many(total)).await {
        Ok(_) => info!("all in-flight requests answered"),
        Err(_) => {
            warn!(grace = ?settings.drain_timeout, "in-flight requests did not finish in time")
        }
    }
    if let Err(err) = context.client.flush().await {
        warn!(error = %err, "could not flush the NATS connection");
    }
}

impl Context {
    /// Decides one admitted request once a slot is free, or refuses it if none frees in time.
    async fn serve(&self, message: async_nats::Message, received: Instant) {
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let _queued = self.ops.metrics.queued();
                let wait = Arc::clone(&self.slots).acquire_owned();
                match tokio::time::timeout(self.queue_timeout, wait).await {
                    Ok(Ok(slot)) => slot,
                    _ => return self.refuse(message, received).await,
                }
            }
        };
        let _slot = slot;
        let _in_flight = self.ops.metrics.in_flight();
        let Some(reply) = message.reply.clone() else {
            debug!("authorization request without a reply subject ignored");
            return;
        };
        let handled = self
            .authorizer
            .handle(&message.payload, xkey(&message), unix_now())
            .await;
        self.finish(reply, handled, received).await;
    }

    /// Answers a request the service cannot take on now with `overloaded`.
    async fn refuse(&self, message: async_nats::Message, received: Instant) {
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let reason = DenyReason::Overloaded;
        let handled = self
            .authorizer
            .refuse(&message.payload, xkey(&message), reason, unix_now());
        self.finish(reply, handled, received).await;
    }

    /// Sends the answer, records it — as `late` when it goes out after the request's deadline,
    /// which nats-server has enforced by refusing the client — then logs and publishes the audit
    /// event: after the answer, so the audit trail never delays a client.
    async fn finish(&self, reply: async_nats::Subject, handled: Handled, received: Instant) {
        let (body, mut audit, deadline) = match handled {
            Handled::Respond {
                body,
                audit,
                deadline,
                ..
            } => (body, audit, deadline),
            Handled::Drop(_) => {
                self.ops.metrics.record_drop(received.elapsed());
                return;
            }
        };
        let elapsed = received.elapsed();
        match elapsed.checked_sub(deadline) {
            Some(late) if !late.is_zero() => {
                audit.mark_late(late);
                self.ops.metrics.record_late(elapsed);
            }
            _ => self.ops.metrics.record_answer(audit.reason, elapsed),
        }
        // Sent even when late: the deadline is known to the second only, and a server that
        // no longer waits drops the answer.
        if let Err(err) = self.client.publish(reply, body.into()).await {
            warn!(error = %err, "could not send the authorization response");
        }
        audit.log();
        self.publish_audit(&audit).await;
    }

    async fn publish_audit(&self, audit: &AuditEvent) {
        let Some(subject) = &self.audit_subject else {
            return;
        };
        let published = match serde_json::to_vec(audit) {
            Ok(json) => self
                .client
                .publish(subject.clone(), json.into())
                .await
                .map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(error) = published {
            self.ops.metrics.record_audit_failure();
            warn!(%error, %subject, "could not publish the audit event");
        }
    }
}

/// The request's `Nats-Server-Xkey` header, if any.
fn xkey(message: &async_nats::Message) -> Option<&str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(XKEY_HEADER))
        .map(|v| v.as_str())
}

/// Completes on SIGTERM (Kubernetes' graceful stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("received SIGINT"),
        () = term => info!("received SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_connect_retries_double_up_to_the_cap() {
        let delays: Vec<u64> = (0..7)
            .map(|a| connect_retry_delay(a).as_millis() as u64)
            .collect();
        assert_eq!(delays, [250, 500, 1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(connect_retry_delay(u32::MAX), MAX_CONNECT_RETRY);
    }

    #[test]
    fn urls_are_named_without_their_credentials() {
        let urls: Vec<async_nats::ServerAddr> =
            ["nats://auth:s3cret@a.example:4223", "tls://[::1]"]
                .iter()
                .map(|u| u.parse().unwrap())
                .collect();
        assert_eq!(
            display_urls(&urls),
            "nats://a.example:4223, tls://[::1]:4222"
        );
    }
}
