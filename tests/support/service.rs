//! The service running inside the test process, built from a real configuration file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use entra_callout::callout::Authorizer;
use entra_callout::config::{Config, ProcessEnv};
use entra_callout::service::{self, LoopSettings, Ops};

/// One replica of the service: keys loaded, subscribed, answering until stopped.
pub struct Replica {
    pub authorizer: Arc<Authorizer>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Replica {
    /// Loads the configuration at `path` exactly as `entra-callout serve` does and starts a
    /// replica; returns once its subscription is in place.
    pub async fn start(path: &Path) -> Self {
        let config = Config::load(path, &ProcessEnv).expect("valid test config");
        Self::from_config(config).await
    }

    /// Starts a replica from an already loaded configuration.
    pub async fn from_config(config: Config) -> Self {
        Self::with_ops(config, Ops::new().unwrap(), true).await
    }

    /// Starts a replica that reports to `ops` (readiness, metrics) as `serve` does. With
    /// `warm`, keys are loaded (and reported) before it subscribes; without, the first token
    /// fetches them.
    pub async fn with_ops(config: Config, ops: Ops, warm: bool) -> Self {
        let verifier = Arc::new(config.verifier().unwrap());
        if warm {
            verifier.warm().await.expect("test issuer keys load");
            ops.readiness.set_keys_loaded();
        }
        let settings = LoopSettings::from_config(&config);
        let authorizer = Arc::new(Authorizer::from_config(
            &config.callout,
            config.policies,
            verifier,
        ));
        ops.readiness.set_policies_loaded();
        let client = service::connect(&config.nats)
            .await
            .expect("service connects");
        let requests = service::subscribe(&client, &settings.queue_group)
            .await
            .expect("subscribe");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let authorizer = Arc::clone(&authorizer);
            async move {
                service::run(client, requests, authorizer, settings, ops, async {
                    let _ = stopped.await;
                })
                .await;
            }
        });
        Self {
            authorizer,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the replica (drain included) and waits, bounded, for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("replica stops within 15 s")
            .expect("replica task");
    }
}
