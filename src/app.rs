//! The composition root: the one place the service is assembled from a validated [`Config`].
//!
//! [`start`] wires, in this order: metrics and readiness ([`Ops`]), the admin listener (first,
//! so liveness answers while the rest starts), the verifier (recording into the same metrics;
//! readiness asks it whether keys are loaded), the key loader and background refresh, the
//! authorizer with the compiled policies, the policy reloader, the credential rotator, and the
//! NATS loop — which connects (retrying while nats-server is not up), subscribes and answers
//! until shutdown, then drains. `entra-callout serve` and every in-process test start the service through it, so
//! what the tests exercise is what production runs.
//!
//! Nothing here waits for the identity provider or for NATS: both are retried in the
//! background, and readiness says when the service can take traffic.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::{self, AdminError, AdminServer, NotReady, Ops};
use crate::callout::Authorizer;
use crate::config::Config;
use crate::metrics::MetricsError;
use crate::oidc::{Verifier, VerifierError};
use crate::reload::Reloader;
use crate::rotate::Rotator;
use crate::service::{self, LoopSettings, ServiceError};
use crate::service::{NatsAuth, NatsSettings};

/// First wait before retrying to load signing keys that did not load at start.
const FIRST_KEY_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between such retries.
const MAX_KEY_RETRY: Duration = Duration::from_secs(10);

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The admin listener could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The identity providers could not be set up.
    #[error("cannot set up the identity providers: {0}")]
    Verifier(VerifierError),
    /// The NATS side failed for good.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The service task ended abnormally (it panicked or was cancelled).
    #[error("the service task ended abnormally: {0}")]
    Task(String),
}

/// A started service: handles to what operators and tests look at, and its task.
pub struct Running {
    ops: Ops,
    admin_addr: SocketAddr,
    authorizer: Arc<Authorizer>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServiceError>>,
}

/// Starts the service `config` describes; it runs until `shutdown` completes (or
/// [`Running::stop`] is called), then drains. Must be called inside a tokio runtime.
pub fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, AppError> {
    let ops = Ops::new()?;
    let admin = admin::spawn(config.admin.listen, ops.clone())?;
    let admin_addr = admin.local_addr();

    let verifier = Arc::new(
        config
            .verifier()
            .map_err(AppError::Verifier)?
            .with_metrics(Arc::clone(&ops.metrics)),
    );
    ops.metrics
        .register_providers(verifier.provider_names().map(|name| &**name));
    ops.readiness.set_keys_probe({
        let verifier = Arc::clone(&verifier);
        move || verifier.keys_loaded()
    });

    // One stop signal for every task: the caller's shutdown, or `Running::stop`.
    let (stop, stopped) = watch::channel(false);
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            let _ = stop.send(true);
        }
    });

    let keys = tokio::spawn(load_keys(Arc::clone(&verifier), until(stopped.clone())));
    let refresh = verifier.spawn_refresh(until(stopped.clone()));

    let settings = LoopSettings {
        queue_group: config.nats.queue_group.clone(),
        max_concurrency: config.callout.max_concurrency,
        max_queued: config.callout.max_queued,
        queue_timeout: config.callout.queue_timeout,
        drain_timeout: config.callout.drain_timeout,
        audit_subject: config.audit.subject.clone(),
    };
    ops.metrics.set_policy_rules(config.policies.len());
    let authorizer = Arc::new(Authorizer::from_config(
        &config.callout,
        config.policies,
        verifier,
    ));
    ops.readiness.set_policies_loaded();
    let reloader = Arc::new(Reloader::new(
        config.policies_path.clone(),
        config.policy_options.clone(),
        Arc::clone(&ops.metrics),
        {
            let authorizer = Arc::clone(&authorizer);
            move |policies| authorizer.replace_policies(policies)
        },
    ));
    let reload = reloader
        .spawn(config.policy_reload, until(stopped.clone()))
        .inspect_err(|err| warn!(error = %err, "policies are reloaded on SIGHUP only"))
        .ok();

    let password = match &config.nats.auth {
        NatsAuth::UserPassword { password, .. } => Some(password.clone()),
        _ => None,
    };
    let rotator = Arc::new(Rotator::new(
        &config.credential_files,
        Arc::clone(&authorizer),
        password,
        Arc::clone(&ops.metrics),
    ));
    let rotate = if rotator.is_empty() {
        None
    } else {
        rotator
            .spawn(until(stopped.clone()))
            .inspect_err(|err| warn!(error = %err, "rotated credentials need a restart"))
            .ok()
    };

    let identity = Identity {
        issuer: config.callout.issuer.public_key().to_owned(),
        xkey: config
            .callout
            .xkey
            .as_ref()
            .map(nkeys::XKey::public_key)
            .unwrap_or_default(),
    };
    let task = tokio::spawn(serve(
        config.nats,
        identity,
        Arc::clone(&authorizer),
        settings,
        ops.clone(),
        stopped,
        Background {
            keys,
            refresh,
            reload,
            rotate,
            admin,
        },
    ));
    Ok(Running {
        ops,
        admin_addr,
        authorizer,
        stop,
        task,
    })
}

/// The service's public keys, for the start-up log line.
struct Identity {
    issuer: String,
    xkey: String,
}

/// The tasks that run beside the NATS loop and end with it.
struct Background {
    keys: JoinHandle<()>,
    refresh: JoinHandle<()>,
    reload: Option<JoinHandle<()>>,
    rotate: Option<JoinHandle<()>>,
    admin: AdminServer,
}

/// Connects (retrying until `stopped`), subscribes, answers until `stopped`, drains, then
/// stops the background tasks.
async fn serve(
    nats: NatsSettings,
    identity: Identity,
    authorizer: Arc<Authorizer>,
    settings: LoopSettings,
    ops: Ops,
    stopped: watch::Receiver<bool>,
    background: Background,
) -> Result<(), ServiceError> {
    let served = async {
        let Some(client) = service::connect_with_retry(&nats, until(stopped.clone())).await? else {
            info!("stopped before NATS was reachable");
            return Ok(());
        };
        info!(
            nats = %service::display_urls(&nats.urls),
            issuer = %identity.issuer,
            xkey = %identity.xkey,
            "entra-callout started"
        );
        let requests = service::subscribe(&client, &settings.queue_group).await?;
        service::run(client, requests, authorizer, settings, ops, until(stopped)).await;
        Ok(())
    }
    .await;
    // Whatever ended the loop (shutdown, or an error), the background tasks end with it.
    let Background {
        keys,
        refresh,
        reload,
        rotate,
        admin,
    } = background;
    for task in [keys, refresh].into_iter().chain(reload).chain(rotate) {
        task.abort();
        let _ = task.await;
    }
    admin.stop();
    info!("stopped");
    served
}

/// Loads every provider's signing keys, retrying until they are in or `stop`. Requests do not
/// wait for this: each waits at most the key wait for the keys it needs. Retries go through the
/// verifier's own pause after a failed fetch, so a provider that is down is not asked more
/// often than the requests themselves would ask it.
async fn load_keys(verifier: Arc<Verifier>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut delay = FIRST_KEY_RETRY;
    let mut first = true;
    loop {
        let loaded = if first {
            verifier.warm().await
        } else {
            verifier.load_missing().await
        };
        first = false;
        match loaded {
            Ok(()) => {
                info!("identity provider keys loaded");
                return;
            }
            Err(err) => {
                warn!(error = %err, retry_in = ?delay, "identity provider keys not loaded yet");
            }
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_KEY_RETRY);
    }
}

/// Completes once `stopped` says so (or its sender is gone).
async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

impl Running {
    /// Metrics and readiness, as the admin listener serves them.
    pub fn ops(&self) -> &Ops {
        &self.ops
    }

    /// Where the admin listener is bound (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The authorizer answering requests (its verifier and policies).
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// Begins shutdown: readiness drops, the subscription drains, then everything stops.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits, at most `limit`, until every readiness condition is met but those in `allowed`;
    /// returns the conditions still unmet when it gives up (empty when met).
    pub async fn wait_until(&self, allowed: &[NotReady], limit: Duration) -> Vec<NotReady> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let unmet: Vec<NotReady> = self
                .ops
                .readiness
                .check()
                .into_iter()
                .filter(|condition| !allowed.contains(condition))
                .collect();
            if unmet.is_empty() || tokio::time::Instant::now() >= deadline {
                return unmet;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the service to stop (after shutdown and drain) and says how it ended.
    pub async fn wait(self) -> Result<(), AppError> {
        match self.task.await {
            Ok(result) => Ok(result?),
            Err(err) => Err(AppError::Task(err.to_string())),
        }
    }
}
