//! The admin HTTP listener: health and metrics for operators and Kubernetes.
//!
//! * `GET /livez` — 200 while the process runs; it checks nothing else, so a slow identity
//!   provider or a NATS outage never gets the pod restarted.
//! * `GET /readyz` — 200 once NATS is connected, signing keys are loaded, policies are compiled
//!   and the request subscription is active; 503 with the missing conditions otherwise. Keys,
//!   policies and the subscription latch once met; the NATS connection is checked on every call,
//!   so a disconnected replica reports not ready until it reconnects. Draining reports not ready.
//! * `GET /metrics` — the Prometheus text exposition of [`Metrics`].
//!
//! [`spawn`] serves the router on its own thread and current-thread runtime, so health checks
//! and scrapes are answered even while request tasks keep the main runtime busy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::metrics::{Metrics, MetricsError};

/// The admin HTTP listener (`/livez`, `/readyz`, `/metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What operators look at: metrics and readiness. The composition root makes one and hands
/// clones to the admin listener, the request loop and the verifier's recorder.
#[derive(Clone)]
pub struct Ops {
    /// Rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Answered by `/readyz`.
    pub readiness: Arc<Readiness>,
}

impl Ops {
    /// Fresh metrics (every series at zero) and readiness (nothing met yet).
    pub fn new() -> Result<Self, MetricsError> {
        Ok(Self {
            metrics: Arc::new(Metrics::new()?),
            readiness: Arc::new(Readiness::default()),
        })
    }
}

/// Whether this replica should receive traffic; see the module documentation.
#[derive(Default)]
pub struct Readiness {
    policies_loaded: AtomicBool,
    subscribed: AtomicBool,
    draining: AtomicBool,
    /// Reports whether NATS is connected right now; unset means not connected.
    nats_connected: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Reports whether every provider's signing keys are loaded; unset means not loaded.
    keys_loaded: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

/// A readiness condition that is not met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// The NATS connection is down (or was never made).
    NatsDisconnected,
    /// Signing keys of the identity providers are not loaded yet.
    KeysNotLoaded,
    /// Policies are not compiled yet.
    PoliciesNotLoaded,
    /// The request subscription is not active yet.
    NotSubscribed,
    /// The service is shutting down.
    Draining,
}

/// A running admin listener; stops when [`AdminServer::stop`] is called or it is dropped.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen address could not be bound.
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listener's thread or runtime could not be started.
    #[error("cannot start the admin listener: {0}")]
    Start(#[source] std::io::Error),
}

impl Readiness {
    /// Uses `probe` (the verifier's own account) to tell whether signing keys are loaded.
    /// Only the first call counts.
    pub fn set_keys_probe(&self, probe: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.keys_loaded.set(Box::new(probe));
    }

    /// Records that the policies are compiled. Latches: a failed reload keeps the old set.
    pub fn set_policies_loaded(&self) {
        self.policies_loaded.store(true, Ordering::Release);
    }

    /// Records whether the request subscription is active.
    pub fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Release);
    }

    /// Records that shutdown has begun; readiness never comes back.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Checks NATS through `client`'s connection state from now on. Only the first call counts.
    pub fn watch_nats(&self, client: async_nats::Client) {
        self.set_nats_probe(move || {
            client.connection_state() == async_nats::connection::State::Connected
        });
    }

    /// Uses `probe` to tell whether NATS is connected. Only the first call counts.
    pub fn set_nats_probe(&self, probe: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.nats_connected.set(Box::new(probe));
    }

    /// Every unmet condition, in a fixed order; empty when ready.
    pub fn check(&self) -> Vec<NotReady> {
        let nats = self.nats_connected.get().is_some_and(|probe| probe());
        let keys = self.keys_loaded.get().is_some_and(|probe| probe());
        [
            (self.draining.load(Ordering::Acquire), NotReady::Draining),
            (!nats, NotReady::NatsDisconnected),
            (!keys, NotReady::KeysNotLoaded),
            (
                !self.policies_loaded.load(Ordering::Acquire),
                NotReady::PoliciesNotLoaded,
            ),
            (
                !self.subscribed.load(Ordering::Acquire),
                NotReady::NotSubscribed,
            ),
        ]
        .into_iter()
        .filter_map(|(unmet, condition)| unmet.then_some(condition))
        .collect()
    }

    /// True when every condition is met.
    pub fn is_ready(&self) -> bool {
        self.check().is_empty()
    }
}

impl NotReady {
    /// Short lowercase text for the `/readyz` body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NatsDisconnected => "nats disconnected",
            Self::KeysNotLoaded => "signing keys not loaded",
            Self::PoliciesNotLoaded => "policies not loaded",
            Self::NotSubscribed => "not subscribed",
            Self::Draining => "draining",
        }
    }
}

impl AdminServer {
    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving; requests being answered are finished first.
    pub fn stop(mut self) {
        self.signal_stop();
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// The admin routes over `state`; serve it, or call it directly in tests.
pub fn router(state: Ops) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds `listen` now (so a taken port fails startup) and serves [`router`] on a thread of its
/// own. The same thread folds histogram samples into buckets every few seconds.
pub fn spawn(listen: SocketAddr, state: Ops) -> Result<AdminServer, AdminError> {
    let bind = |source| AdminError::Bind {
        addr: listen,
        source,
    };
    let listener = std::net::TcpListener::bind(listen).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AdminError::Start)?;
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("entra-callout-admin".to_owned())
        .spawn(move || runtime.block_on(serve(listener, state, stopped)))
        .map_err(AdminError::Start)?;
    info!(%addr, "admin listener serving /livez, /readyz and /metrics");
    Ok(AdminServer {
        addr,
        stop: Some(stop),
    })
}

async fn serve(listener: std::net::TcpListener, state: Ops, stopped: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            warn!(error = %err, "admin listener could not start");
            return;
        }
    };
    let metrics = Arc::clone(&state.metrics);
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            metrics.run_upkeep();
        }
    });
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await;
    if let Err(err) = served {
        warn!(error = %err, "admin listener failed");
    }
    upkeep.abort();
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Ops>) -> Response {
    let unmet = state.readiness.check();
    if unmet.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let reasons: Vec<&str> = unmet.iter().map(|n| n.as_str()).collect();
    let body = format!("not ready: {}\n", reasons.join(", "));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn metrics(State(state): State<Ops>) -> Response {
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], state.metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::deny::DenyReason;

    fn state() -> (Ops, Arc<AtomicBool>) {
        let connected = Arc::new(AtomicBool::new(false));
        let readiness = Arc::new(Readiness::default());
        let probe = Arc::clone(&connected);
        readiness.set_nats_probe(move || probe.load(Ordering::Relaxed));
        let state = Ops {
            readiness,
            metrics: Arc::new(Metrics::new().unwrap()),
        };
        (state, connected)
    }

    async fn get(state: &Ops, path: &str) -> (StatusCode, String, Option<String>) {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            content_type,
        )
    }

    #[tokio::test]
    async fn livez_is_always_ok() {
        let (state, _) = state();
        let (status, body, _) = get(&state, "/livez").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    }

    #[tokio::test]
    async fn readyz_follows_each_condition() {
        let (state, connected) = state();
        let (status, body, _) = get(&state, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "not ready: nats disconnected, signing keys not loaded, policies not loaded, \
             not subscribed\n"
        );

        let r = &state.readiness;
        connected.store(true, Ordering::Relaxed);
        r.set_policies_loaded();
        r.set_subscribed(true);
        let (status, body, _) = get(&state, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: signing keys not loaded\n"
            )
        );

        r.set_keys_probe(|| true);
        let (status, body, _) = get(&state, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));

        // A NATS outage takes readiness away, and reconnecting brings it back.
        connected.store(false, Ordering::Relaxed);
        let (status, body, _) = get(&state, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: nats disconnected\n");
        connected.store(true, Ordering::Relaxed);
        assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);

        // Draining is final.
        r.set_draining();
        let (status, body, _) = get(&state, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n")
        );
    }

    #[tokio::test]
    async fn without_a_nats_probe_nats_counts_as_disconnected() {
        let readiness = Readiness::default();
        readiness.set_keys_probe(|| true);
        readiness.set_policies_loaded();
        readiness.set_subscribed(true);
        assert_eq!(readiness.check(), [NotReady::NatsDisconnected]);
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_prometheus_text_format() {
        let (state, _) = state();
        state
            .metrics
            .record_answer(Some(DenyReason::TokenExpired), Duration::from_millis(2));
        let (status, body, content_type) = get(&state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(PROMETHEUS_TEXT));
        assert!(
            body.contains(
                "entra_callout_requests_total{outcome=\"deny\",reason=\"token_expired\"} 1"
            ),
            "{body}"
        );
        assert!(
            body.contains("# TYPE entra_callout_decision_duration_seconds histogram"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        let (state, _) = state();
        assert_eq!(get(&state, "/debug").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_listener_serves_over_real_http_and_stops() {
        let (state, _) = state();
        let server = spawn("127.0.0.1:0".parse().unwrap(), state).unwrap();
        let addr = server.local_addr();
        let body = reqwest::get(format!("http://{addr}/livez"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok\n");
        let taken = spawn(addr, self::state().0).err().unwrap();
        assert!(
            taken
                .to_string()
                .starts_with(&format!("cannot listen on admin address {addr}"))
        );
        server.stop();
        let mut refused = false;
        for _ in 0..100 {
            if reqwest::get(format!("http://{addr}/livez")).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "the listener stops");
    }
}
