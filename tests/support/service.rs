//! The service running inside the test process, started the way `entra-callout serve` starts
//! it: a configuration file loaded by `Config::load`, assembled by `app::start`. The only change
//! to the configuration is the admin listener's port (0), so replicas run side by side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use entra_callout::admin::{NotReady, Ops};
use entra_callout::app::{self, Running};
use entra_callout::callout::Authorizer;
use entra_callout::config::{Config, ProcessEnv};

use crate::support::issuer::{AUDIENCE, OTHER_TENANT, TENANT, TestIssuer};

/// How long a replica may take to become ready (or subscribed) before a test fails.
const START_LIMIT: Duration = Duration::from_secs(15);

/// Writes into `dir` (a nats-server's own directory) the files of a service answering for both
/// test tenants: the callout issuer seed of `account`, the password `pwd` that
/// [`crate::support::nats::config_mode`] gives the user `auth`, `policy` as one file, and
/// `entra-callout.yaml`; returns the configuration's path. For the stacks with two tenants on
/// one server that want neither the xkey nor the ConfigMap-style policies of
/// [`crate::support::binary::ServiceDir`].
pub fn write_two_tenant_config(
    dir: &Path,
    url: &str,
    account: &nkeys::KeyPair,
    policy: &str,
    contoso: &TestIssuer,
    fabrikam: &TestIssuer,
) -> PathBuf {
    std::fs::write(dir.join("issuer.nk"), account.seed().unwrap()).unwrap();
    std::fs::write(dir.join("nats-password"), "pwd").unwrap();
    std::fs::write(dir.join("policies.yaml"), policy).unwrap();
    let config = format!(
        "nats:\n  url: {url}\n  user: auth\n  password_file: nats-password\n\
         callout:\n  issuer_seed_file: issuer.nk\n  drain_timeout: 5s\n\
         providers:\n\
         \x20 - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    audiences: [\"{AUDIENCE}\"]\n    authority: {a}\n\
         \x20 - name: fabrikam\n    kind: entra\n    tenant: {OTHER_TENANT}\n    audiences: [\"{AUDIENCE}\"]\n    authority: {b}\n\
         policies: policies.yaml\n",
        a = contoso.authority(),
        b = fabrikam.authority(),
    );
    let config_path = dir.join("entra-callout.yaml");
    std::fs::write(&config_path, config).unwrap();
    config_path
}

/// One replica of the service, answering until stopped.
pub struct Replica {
    running: Running,
}

/// Requests a replica answered, from its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answered {
    /// Clients admitted.
    pub allowed: u64,
    /// Clients refused.
    pub denied: u64,
    /// Answers sent after nats-server's deadline.
    pub late: u64,
    /// Requests dropped unanswered (the request itself was unacceptable).
    pub dropped: u64,
}

impl Answered {
    /// `allowed` admitted and `denied` refused, none late or dropped.
    pub fn new(allowed: u64, denied: u64) -> Self {
        Self {
            allowed,
            denied,
            ..Self::default()
        }
    }
}

impl Replica {
    /// Loads the configuration at `path` exactly as `entra-callout serve` does and starts a
    /// replica; returns once it is ready (NATS connected, keys loaded, subscribed).
    pub async fn start(path: &Path) -> Self {
        let config = Config::load(path, &ProcessEnv).expect("valid test config");
        Self::from_config(config).await
    }

    /// Starts a replica from an already loaded configuration; returns once it is ready.
    pub async fn from_config(config: Config) -> Self {
        Self::start_allowing(config, &[]).await
    }

    /// Starts a replica and returns once every readiness condition but those in `allowed` is
    /// met: `&[NotReady::KeysNotLoaded]` for a replica whose identity provider is down.
    pub async fn start_allowing(mut config: Config, allowed: &[NotReady]) -> Self {
        config.admin.listen.set_port(0);
        let running = app::start(config, std::future::pending()).expect("the service starts");
        let unmet = running.wait_until(allowed, START_LIMIT).await;
        assert!(unmet.is_empty(), "replica not ready: {unmet:?}");
        Self { running }
    }

    /// The authorizer answering requests (its verifier, its policies).
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        self.running.authorizer()
    }

    /// Metrics and readiness, as `/metrics` and `/readyz` report them.
    pub fn ops(&self) -> &Ops {
        self.running.ops()
    }

    /// The admin listener's address.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.running.admin_addr())
    }

    /// Requests answered so far, by outcome, read from the replica's metrics.
    pub fn answered(&self) -> Answered {
        answered_in(&self.running.ops().metrics.render())
    }

    /// What the replica answered once its count has stopped changing for 200 ms (at most 5 s):
    /// for a baseline taken while answers may still be being counted.
    pub async fn settled(&self) -> Answered {
        let mut last = self.answered();
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.answered();
            if now == last {
                return now;
            }
            last = now;
        }
        panic!("the replica's answer count kept changing: {last:?}");
    }

    /// Tokens whose signature check the verified-token cache answered, from the metrics.
    pub fn cache_hits(&self) -> u64 {
        let text = self.running.ops().metrics.render();
        text.lines()
            .find_map(|line| {
                line.strip_prefix("entra_callout_cache_lookups_total{result=\"hit\"} ")?
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0, |v| v as u64)
    }

    /// Waits, at most 5 s, until the replica has answered exactly `expected`; the answer is
    /// counted after it is sent, so a client may see it a moment before the metric does.
    pub async fn wait_answered(&self, expected: Answered) {
        let mut seen = self.answered();
        for _ in 0..100 {
            if seen == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = self.answered();
        }
        assert_eq!(seen, expected, "answers counted by the replica's metrics");
    }

    /// Waits, at most 5 s, until `replicas` together admitted exactly `allowed` clients, and
    /// returns what each answered.
    pub async fn wait_admitted_by(replicas: &[&Replica], allowed: u64) -> Vec<Answered> {
        let answered = || replicas.iter().map(|r| r.answered()).collect::<Vec<_>>();
        let mut seen = answered();
        for _ in 0..100 {
            if seen.iter().map(|a| a.allowed).sum::<u64>() == allowed {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = answered();
        }
        panic!("replicas admitted {seen:?}, expected {allowed} in all");
    }

    /// Stops the replica (drain included) and waits, bounded, for it to finish.
    pub async fn stop(self) {
        self.running.stop();
        tokio::time::timeout(Duration::from_secs(15), self.running.wait())
            .await
            .expect("replica stops within 15 s")
            .expect("replica ended cleanly");
    }
}

/// Requests answered, by outcome, in a Prometheus text exposition of the service's metrics.
pub fn answered_in(text: &str) -> Answered {
    let mut answered = Answered::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("entra_callout_requests_total{") else {
            continue;
        };
        let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        // Counters are whole numbers well below 2^53.
        let value = value as u64;
        for (outcome, count) in [
            ("allow", &mut answered.allowed),
            ("deny", &mut answered.denied),
            ("late", &mut answered.late),
            ("drop", &mut answered.dropped),
        ] {
            if rest.starts_with(&format!("outcome=\"{outcome}\"")) {
                *count += value;
            }
        }
    }
    answered
}
