//! The service loop: subscribe to `$SYS.REQ.USER.AUTH`, answer requests concurrently, drain.
//!
//! Replicas share the subject through a queue group, so each request is answered once. Each
//! request runs in its own task holding a semaphore permit, which bounds concurrency without
//! serialising the connect path. On shutdown the subscription is drained — requests nats-server
//! already delivered to us are still answered — and in-flight tasks get a grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::callout::{Authorizer, Handled};
use crate::config::{NatsAuth, NatsSettings};
use crate::nats_jwt::{AUTH_REQUEST_SUBJECT, XKEY_HEADER};
use crate::telemetry::unix_now;

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The first connection to NATS failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// The credentials file could not be read or parsed.
    #[error("cannot load the NATS credentials file: {0}")]
    Credentials(std::io::Error),
    /// The subscription could not be made.
    #[error("cannot subscribe to {AUTH_REQUEST_SUBJECT}: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The subscription could not be confirmed with the server.
    #[error("cannot confirm the subscription with the server: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct LoopSettings {
    /// Queue group shared by all replicas.
    pub queue_group: String,
    /// Requests handled at once.
    pub max_concurrency: usize,
    /// Grace period for in-flight requests after shutdown begins.
    pub drain_timeout: Duration,
}

/// Connects to NATS with the service's own credentials, reconnecting forever once connected.
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, ServiceError> {
    let options = match &settings.auth {
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(
                user.clone(),
                password.expose().to_owned(),
            )
        }
        NatsAuth::Nkey(seed) => async_nats::ConnectOptions::with_nkey(seed.expose().to_owned()),
        NatsAuth::Credentials(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(ServiceError::Credentials)?,
        NatsAuth::None => async_nats::ConnectOptions::new(),
    };
    let client = options
        .name("entra-callout")
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("connected to NATS"),
                async_nats::Event::Disconnected => warn!("disconnected from NATS; reconnecting"),
                other => debug!(event = %other, "NATS connection event"),
            }
        })
        .connect(settings.urls.clone())
        .await?;
    Ok(client)
}

/// Subscribes to the request subject in `queue_group` and waits until the server has the
/// subscription, so requests are routed to this replica from the moment this returns.
pub async fn subscribe(
    client: &async_nats::Client,
    queue_group: &str,
) -> Result<async_nats::Subscriber, ServiceError> {
    let requests = client
        .queue_subscribe(AUTH_REQUEST_SUBJECT, queue_group.to_owned())
        .await?;
    client.flush().await?;
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
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(settings.max_concurrency));
    tokio::pin!(shutdown);
    let mut draining = false;

    loop {
        let message = tokio::select! {
            () = &mut shutdown, if !draining => {
                info!("shutting down: draining the request subscription");
                draining = true;
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
        // Waiting here is the backpressure: nats-server keeps further requests buffered.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let authorizer = Arc::clone(&authorizer);
        tokio::spawn(async move {
            let _permit = permit;
            let Some(reply) = message.reply else {
                debug!("authorization request without a reply subject ignored");
                return;
            };
            let xkey = message
                .headers
                .as_ref()
                .and_then(|h| h.get(XKEY_HEADER))
                .map(|v| v.as_str());
            let handled = authorizer.handle(&message.payload, xkey, unix_now()).await;
            if let Handled::Respond { body, .. } = handled
                && let Err(err) = client.publish(reply, body.into()).await
            {
                warn!(error = %err, "could not send the authorization response");
            }
        });
    }

    let total = u32::try_from(settings.max_concurrency).unwrap_or(u32::MAX);
    match tokio::time::timeout(settings.drain_timeout, permits.acquire_many(total)).await {
        Ok(_) => info!("all in-flight requests answered"),
        Err(_) => {
            warn!(grace = ?settings.drain_timeout, "in-flight requests did not finish in time")
        }
    }
    if let Err(err) = client.flush().await {
        warn!(error = %err, "could not flush the NATS connection");
    }
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
