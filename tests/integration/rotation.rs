//! Credential rotation under steady connect traffic, against a real nats-server: the
//! procedures the README's "Rotating credentials" section gives, step by step, while a client
//! opens a fresh connection every ~20 ms and counts the connects refused during each step.
//!
//! The service's seeds and password live in a Kubernetes-style Secret mount (`name ->
//! ..data/name`, `..data -> ..<generation>`), updated the way the kubelet does: a new directory,
//! a new `..data_tmp` symlink renamed over `..data`. nats-server's side changes by config reload
//! (config mode) or by an account JWT pushed to its resolver (operator mode).
//!
//! Each test prints its figures (`rotation ...: N connects, M refused`); the README quotes them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use entra_callout::keys::{self, OperatorKeys, SYSTEM_CREDS};
use entra_callout::nats_config::{self, Resolver};

use crate::support::eventually;
use crate::support::issuer::{AUDIENCE, TENANT, TestIssuer};
use crate::support::nats::{NatsCluster, NatsServer, config_mode};
use crate::support::operator;
use crate::support::policies;
use crate::support::service::Replica;

/// Pause between the end of one connect attempt and the start of the next.
const PACE: Duration = Duration::from_millis(20);
/// Traffic kept up after a procedure's last step, so refusals it causes late are counted;
/// longer than nats-server's callout timeout (2 s), which a request nobody answers waits out.
const SETTLE: Duration = Duration::from_millis(2_500);

/// A Secret volume as the kubelet lays it out and updates it.
struct SecretMount {
    dir: PathBuf,
    files: BTreeMap<String, String>,
    generation: u32,
}

impl SecretMount {
    fn new(dir: PathBuf, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let mount = Self {
            dir,
            files: files
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            generation: 0,
        };
        mount.publish();
        for name in mount.files.keys() {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.dir.join(name)).unwrap();
        }
        mount
    }

    /// Sets one key of the Secret and swaps the whole volume, as a Secret update does.
    fn set(&mut self, name: &str, value: &str) {
        self.files.insert(name.to_owned(), value.to_owned());
        let old = self.generation_dir();
        self.generation += 1;
        self.publish();
        std::fs::remove_dir_all(old).unwrap();
    }

    fn generation_dir(&self) -> PathBuf {
        self.dir.join(format!("..2026_11_25_{}", self.generation))
    }

    fn publish(&self) {
        let target = self.generation_dir();
        std::fs::create_dir(&target).unwrap();
        for (name, value) in &self.files {
            std::fs::write(target.join(name), value).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(target.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

/// One connect attempt's outcome.
#[derive(Clone, Debug)]
struct Attempt {
    /// Why it failed; `None` when admitted.
    error: Option<String>,
    elapsed: Duration,
}

/// What a procedure's window saw.
#[derive(Clone, Debug, Default)]
struct Counts {
    attempts: u64,
    refused: u64,
    errors: Vec<String>,
    /// The longest connect (admitted or refused).
    slowest: Duration,
}

/// Started attempts, by sequence number, and the outcomes of those that ended.
#[derive(Default)]
struct Attempts {
    started: usize,
    ended: BTreeMap<usize, Attempt>,
}

/// A fresh client connection every [`PACE`], whether or not earlier ones have finished (a
/// connect waiting on the callout does not slow the traffic down), until dropped.
struct Traffic {
    attempts: Arc<Mutex<Attempts>>,
    stop: Arc<AtomicBool>,
}

impl Traffic {
    fn start(urls: Vec<String>, token: String) -> Self {
        let attempts = Arc::new(Mutex::new(Attempts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        tokio::spawn({
            let (attempts, stop) = (Arc::clone(&attempts), Arc::clone(&stop));
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let seq = {
                        let mut attempts = attempts.lock().unwrap();
                        attempts.started += 1;
                        attempts.started - 1
                    };
                    tokio::spawn({
                        let (attempts, urls, token) =
                            (Arc::clone(&attempts), urls.clone(), token.clone());
                        async move {
                            let attempt = connect_once(&urls, token).await;
                            attempts.lock().unwrap().ended.insert(seq, attempt);
                        }
                    });
                    tokio::time::sleep(PACE).await;
                }
            }
        });
        Self { attempts, stop }
    }

    fn started(&self) -> usize {
        self.attempts.lock().unwrap().started
    }

    /// Runs `procedure` with the traffic going, then [`SETTLE`]s; returns what the connects
    /// started meanwhile saw, once they all ended, and prints it.
    async fn during(&self, name: &str, procedure: impl AsyncFnOnce()) -> Counts {
        let from = self.started();
        procedure().await;
        tokio::time::sleep(SETTLE).await;
        let to = self.started();
        eventually(&format!("{name}: every connect to end"), 15, async || {
            let attempts = self.attempts.lock().unwrap();
            (from..to).all(|seq| attempts.ended.contains_key(&seq))
        })
        .await;
        let attempts = self.attempts.lock().unwrap();
        let mut seen = Counts::default();
        for attempt in (from..to).map(|seq| &attempts.ended[&seq]) {
            seen.attempts += 1;
            seen.slowest = seen.slowest.max(attempt.elapsed);
            if let Some(error) = &attempt.error {
                seen.refused += 1;
                seen.errors.push(error.clone());
            }
        }
        println!(
            "rotation {name}: {} connects, {} refused, slowest {} ms {:?}",
            seen.attempts,
            seen.refused,
            seen.slowest.as_millis(),
            seen.errors
        );
        seen
    }
}

/// One client connection attempt; an admitted client is closed at once.
async fn connect_once(urls: &[String], token: String) -> Attempt {
    let started = std::time::Instant::now();
    let connect = async_nats::ConnectOptions::with_token(token)
        .connection_timeout(Duration::from_secs(5))
        .connect(addrs(urls));
    let error = match tokio::time::timeout(Duration::from_secs(6), connect).await {
        Ok(Ok(client)) => {
            let elapsed = started.elapsed();
            let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
            return Attempt {
                error: None,
                elapsed,
            };
        }
        Ok(Err(err)) => err.to_string(),
        Err(_) => "no answer within 6 s".to_owned(),
    };
    Attempt {
        error: Some(error),
        elapsed: started.elapsed(),
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `entra_callout_credential_reloads_total{credential, result}` of `replica`.
fn reloads(replica: &Replica, credential: &str, result: &str) -> u64 {
    let text = replica.ops().metrics.render();
    let prefix = format!(
        "entra_callout_credential_reloads_total{{credential=\"{credential}\",result=\"{result}\"}} "
    );
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until `replica` has put `count` new `credential`s in use.
async fn rotated(replica: &Replica, credential: &str, count: u64) {
    eventually(&format!("{credential} rotation #{count}"), 10, async || {
        reloads(replica, credential, "ok") == count
    })
    .await;
}

/// nats-server's configuration with the service's password `password` (config mode).
fn server_config(issuer: &str, xkey: &str, password: &str) -> String {
    config_mode(issuer, Some(xkey), "").replace(
        "{ user: auth, password: pwd }",
        &format!("{{ user: auth, password: \"{password}\" }}"),
    )
}

/// A config-mode service whose seeds and password are in a Secret mount in `dir`, talking to
/// the servers at `urls`.
struct ConfigStack {
    issuer: TestIssuer,
    secrets: SecretMount,
    config_path: PathBuf,
    issuer_key: nkeys::KeyPair,
    xkey: nkeys::XKey,
}

impl ConfigStack {
    async fn new(dir: &std::path::Path) -> Self {
        let issuer = TestIssuer::start().await;
        let issuer_key = nkeys::KeyPair::new_account();
        let xkey = nkeys::XKey::new();
        let secrets = SecretMount::new(
            dir.join("secrets"),
            &[
                ("issuer.nk", &issuer_key.seed().unwrap()),
                ("xkey.nk", &xkey.seed().unwrap()),
                ("nats-password", "pwd"),
            ],
        );
        std::fs::write(
            dir.join("policies.yaml"),
            policies::ml(&[policies::ML_PUBLISHERS, policies::ML_READERS]),
        )
        .unwrap();
        Self {
            issuer,
            secrets,
            config_path: dir.join("entra-callout.yaml"),
            issuer_key,
            xkey,
        }
    }

    /// nats-server's configuration for the keys in use and the service password `password`.
    fn server_config(&self, password: &str) -> String {
        server_config(
            &self.issuer_key.public_key(),
            &self.xkey.public_key(),
            password,
        )
    }

    /// Writes the service's configuration for the servers at `urls` and starts a replica.
    async fn replica(&self, urls: &[String]) -> Replica {
        let config = format!(
            "nats:\n  url: {url}\n  user: auth\n  password_file: secrets/nats-password\n\
             callout:\n  issuer_seed_file: secrets/issuer.nk\n  xkey_seed_file: secrets/xkey.nk\n  \
             max_ttl: 15m\n  drain_timeout: 5s\n\
             providers:\n  - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    \
             audiences: [\"{AUDIENCE}\"]\n    authority: {authority}\n\
             policies: policies.yaml\nadmin:\n  listen: 127.0.0.1:0\n",
            url = urls.join(","),
            authority = self.issuer.authority(),
        );
        std::fs::write(&self.config_path, config).unwrap();
        Replica::start(&self.config_path).await
    }

    fn token(&self) -> String {
        self.issuer.token(json!({ "roles": ["Nats.Publisher"] }))
    }

    /// New issuer and xkey seeds, in one Secret update; the service picks them up.
    async fn rotate_keys(&mut self, replica: &Replica, generation: u64) {
        self.issuer_key = nkeys::KeyPair::new_account();
        self.xkey = nkeys::XKey::new();
        self.secrets
            .set("issuer.nk", &self.issuer_key.seed().unwrap());
        self.secrets.set("xkey.nk", &self.xkey.seed().unwrap());
        rotated(replica, "issuer", generation).await;
        rotated(replica, "xkey", generation).await;
    }
}

/// A client connected through the callout that counts its disconnections.
async fn long_lived(urls: &[String], token: &str) -> (async_nats::Client, Arc<AtomicU64>) {
    let disconnects = Arc::new(AtomicU64::new(0));
    let client = async_nats::ConnectOptions::with_token(token.to_owned())
        .event_callback({
            let disconnects = Arc::clone(&disconnects);
            move |event| {
                let disconnects = Arc::clone(&disconnects);
                async move {
                    if matches!(event, async_nats::Event::Disconnected) {
                        disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .connect(addrs(urls))
        .await
        .expect("admitted before any rotation");
    (client, disconnects)
}

fn addrs(urls: &[String]) -> Vec<async_nats::ServerAddr> {
    urls.iter().map(|url| url.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mode_password_rotates_by_reload_and_keys_by_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = ConfigStack::new(dir.path()).await;
    let mut server = NatsServer::start(&stack.server_config("pwd"));
    let urls = vec![server.url()];
    let replica = stack.replica(&urls).await;
    let token = stack.token();
    // nats-server authorizes its connected clients again on every config reload.
    let (client, disconnects) = long_lived(&urls, &token).await;
    let traffic = Traffic::start(urls.clone(), token);

    // The service's NATS password: the service first (its connection stays up), then a
    // config reload, which closes the service's connection; it reconnects at once with the
    // new password.
    let password = "second-password-7Qx";
    let password_step = traffic
        .during("nats_password (service first, then reload)", async || {
            stack.secrets.set("nats-password", password);
            rotated(&replica, "nats_password", 1).await;
            server.reload(&stack.server_config(password)).await;
        })
        .await;
    let password_stall = reload_stall(&server.log());
    let password_disconnects = disconnects.load(Ordering::Relaxed);
    println!(
        "rotation nats_password: the connected client was disconnected {password_disconnects} \
         times; the reload took {} ms",
        password_stall.as_millis()
    );

    // Unusable material is refused, counted once, and the keys in use stay.
    let bad_step = traffic
        .during("issuer (unusable file)", async || {
            stack.secrets.set("issuer.nk", "SAnot-a-seed");
            eventually("the refusal counted", 10, async || {
                reloads(&replica, "issuer", "error") == 1
            })
            .await;
            // The fix (the key in use) changes nothing.
            let seed = stack.issuer_key.seed().unwrap();
            stack.secrets.set("issuer.nk", &seed);
        })
        .await;
    assert_eq!(
        reloads(&replica, "issuer", "ok"),
        0,
        "same key: nothing to do"
    );
    assert_eq!(reloads(&replica, "issuer", "error"), 1);

    // Issuer and xkey: nats-server cannot reload `auth_callout`, so a lone server restarts.
    // The service first: it answers the old server's last requests with the old keys and the
    // restarted server's with the new ones; what clients see is the restart itself.
    let restart_step = traffic
        .during(
            "issuer + xkey (service first, single server restart)",
            async || {
                stack.rotate_keys(&replica, 1).await;
                let config = stack.server_config(password);
                tokio::task::block_in_place(|| server.restart_with(|_| config));
            },
        )
        .await;

    assert_eq!(bad_step.refused, 0, "{bad_step:?}");
    // A reload that stalled on a client's authorization (see `reload_stall`) held every
    // connect for its length; those are nats-server's, the bound is the service's.
    let password_bound = PASSWORD_BOUND + stalled_connects(password_stall);
    assert!(
        password_step.refused <= password_bound,
        "only connects during the service's reconnect (and a reload stalled {password_stall:?}) \
         go unanswered: {password_step:?}"
    );
    assert!(
        restart_step.refused <= SINGLE_RESTART_BOUND,
        "a restart refuses connects only while the server is down: {restart_step:?}"
    );
    drop(client);
    drop(traffic);
    replica.stop().await;
}

/// How long nats-server's last config reload took, from its `Reloaded: authorization users`
/// to its `Reloaded server configuration` line. Normally microseconds. But the reload closes
/// the service's connection (its password changed) and then authorizes the connected clients
/// again; a client whose CONNECT is waiting on the callout at that moment has lost the
/// connection its answer would come on, and the reload waits out the callout timeout (2 s)
/// for it — accepting no connection meanwhile (seen with `-D`: `Authorization callout response
/// not received in time`, `Readloop processing time: 2.0s`, then a burst of `Client connection
/// created`). The traffic makes that likely in some runs: a connect every 20 ms.
fn reload_stall(log: &str) -> Duration {
    let at = |needle: &str| {
        let line = log.lines().rev().find(|line| line.contains(needle))?;
        // `[pid] 2026/11/26 01:21:06.234565 [INF] ...`
        let time = line.split_whitespace().nth(2)?;
        let mut parts = time.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        let seconds = h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0;
        Some(seconds + s.parse::<f64>().ok()?)
    };
    match (
        at("Reloaded: authorization users"),
        at("Reloaded server configuration"),
    ) {
        (Some(start), Some(end)) if end >= start => Duration::from_secs_f64(end - start),
        _ => panic!("no complete config reload in the server log:\n{log}"),
    }
}

/// Connects a reload stall of `stall` can cost: those started during it, and those started
/// within one callout timeout before it ended (their requests went out before the service had
/// subscribed again). None when the reload did not stall.
fn stalled_connects(stall: Duration) -> u64 {
    if stall < Duration::from_millis(500) {
        return 0;
    }
    let window = stall + Duration::from_secs(2) + Duration::from_millis(500);
    u64::try_from(window.as_millis() / PACE.as_millis()).unwrap_or(u64::MAX)
}

/// At most this many connects (one every ~20 ms) go unanswered while the service reconnects
/// with its new password: the reload closes its connection, and a request sent before it has
/// subscribed again reaches nobody and times out (the README's figures: 0 or 1).
const PASSWORD_BOUND: u64 = 2;
/// At most this many connects are refused while a lone nats-server restarts (the README: 0 or 1).
const SINGLE_RESTART_BOUND: u64 = 10;
/// At most this many connects are refused during a rolling restart with two replicas: a request
/// routed to the replica behind the node going down, before the route withdrew its interest,
/// reaches nobody (the README: 0 or 1).
const ROLLING_BOUND: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mode_issuer_and_xkey_rotate_by_rolling_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = ConfigStack::new(dir.path()).await;
    let base = stack.server_config("pwd");
    let mut cluster = NatsCluster::start(2, |i| {
        base.replace(
            "server_name: callout-test",
            &format!("server_name: node-{i}"),
        )
    });
    let urls: Vec<String> = cluster.nodes.iter().map(NatsServer::url).collect();
    // Two replicas, as the chart runs them: a node's restart takes one replica's subscription
    // with it for a moment, the other answers meanwhile.
    let replica = stack.replica(&urls).await;
    let second = Replica::start(&stack.config_path).await;
    let token = stack.token();
    // Routes and queue interest propagate asynchronously: wait until each node admits.
    for url in &urls {
        routed(url, &token).await;
    }
    let (client, disconnects) = long_lived(&urls, &token).await;
    let traffic = Traffic::start(urls.clone(), token.clone());

    let rolling = async |cluster: &mut NatsCluster, stack: &ConfigStack| {
        for node in &mut cluster.nodes {
            let (issuer, xkey) = (stack.issuer_key.public_key(), stack.xkey.public_key());
            tokio::task::block_in_place(|| {
                node.restart_with(|config| with_keys(config, &issuer, &xkey));
            });
            routed(&node.url(), &token).await;
        }
    };

    // The service first, then one node after the other: the service answers each node with
    // the keys that node has, and clients fail over to the other node meanwhile.
    let rolling_step = traffic
        .during(
            "issuer + xkey (service first, rolling restart of 2 nodes)",
            async || {
                stack.rotate_keys(&replica, 1).await;
                rotated(&second, "issuer", 1).await;
                rotated(&second, "xkey", 1).await;
                rolling(&mut cluster, &stack).await;
            },
        )
        .await;
    println!(
        "rotation rolling restart: the connected client was disconnected {} times",
        disconnects.load(Ordering::Relaxed)
    );

    // The other order, for the figure: the nodes restarted with keys the service does not hold
    // until its Secret catches up (here 500 ms later) refuse every client meanwhile.
    let server_first = traffic
        .during(
            "issuer + xkey (servers first, 500 ms before the service)",
            async || {
                stack.issuer_key = nkeys::KeyPair::new_account();
                stack.xkey = nkeys::XKey::new();
                let (issuer, xkey) = (stack.issuer_key.public_key(), stack.xkey.public_key());
                for node in &mut cluster.nodes {
                    tokio::task::block_in_place(|| {
                        node.restart_with(|config| with_keys(config, &issuer, &xkey));
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                stack
                    .secrets
                    .set("issuer.nk", &stack.issuer_key.seed().unwrap());
                stack.secrets.set("xkey.nk", &stack.xkey.seed().unwrap());
                for replica in [&replica, &second] {
                    rotated(replica, "issuer", 2).await;
                    rotated(replica, "xkey", 2).await;
                }
            },
        )
        .await;

    assert!(rolling_step.refused <= ROLLING_BOUND, "{rolling_step:?}");
    assert!(
        server_first.refused > 0,
        "the wrong order refuses clients: {server_first:?}"
    );
    drop(client);
    drop(traffic);
    replica.stop().await;
    second.stop().await;
}

/// `config` (a config-mode server's) with `auth_callout`'s issuer and xkey replaced.
fn with_keys(config: &str, issuer: &str, xkey: &str) -> String {
    config
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("issuer: ") {
                format!("    issuer: {issuer}")
            } else if trimmed.starts_with("xkey: ") {
                format!("    xkey: {xkey}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until a client connecting to `url` alone is admitted.
async fn routed(url: &str, token: &str) {
    eventually(&format!("{url} to admit clients"), 30, async || {
        async_nats::ConnectOptions::with_token(token.to_owned())
            .connect(url)
            .await
            .is_ok()
    })
    .await;
}

/// An operator-mode deployment with the `full` resolver, so account JWTs can be pushed.
struct OperatorStack {
    server: NatsServer,
    keys: OperatorKeys,
    dir: tempfile::TempDir,
    issuer: TestIssuer,
    config_path: PathBuf,
}

impl OperatorStack {
    async fn start() -> Self {
        let issuer = TestIssuer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let keys = operator::init(&dir.path().join("keys"), &["APP"]);
        let resolver = Resolver::Full {
            dir: dir.path().join("jwt").display().to_string(),
        };
        let server = NatsServer::start(&operator::server_config(&keys, &resolver, |_| {}));
        std::fs::write(
            dir.path().join("policies.yaml"),
            format!(
                "version: 1\ntenants:\n  - name: contoso\n    entra_tenants: [{TENANT}]\n    \
                 account: APP\nroles:\n  - name: member\n    publish: {{ allow: [\"a.>\"] }}\n\
                 bindings:\n  - {{ name: members, tenant: contoso, roles: [member], \
                 when: {{ app_roles: [Member] }} }}\n"
            ),
        )
        .unwrap();
        let providers = format!(
            "providers:\n  - name: entra\n    kind: entra\n    tenant: {TENANT}\n    \
             audiences: [\"{AUDIENCE}\"]\n    authority: {}\n",
            issuer.authority()
        );
        let config_path = dir.path().join("entra-callout.yaml");
        std::fs::write(
            &config_path,
            operator::service_config(&keys, &server.url(), &providers),
        )
        .unwrap();
        Self {
            server,
            keys,
            dir,
            issuer,
            config_path,
        }
    }

    /// Replaces a key file the way `mv` into place does (one rename).
    fn replace_key(&self, name: &str, seed: &str) {
        let path = operator::key_file(self.dir.path(), name);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, seed).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// Pushes `jwt` for `account` as the system user and checks the resolver took it.
    async fn push(&self, account: &str, jwt: String) {
        let system = async_nats::ConnectOptions::with_credentials_file(operator::key_file(
            self.dir.path(),
            SYSTEM_CREDS,
        ))
        .await
        .unwrap()
        .connect(self.server.url())
        .await
        .expect("system user connects");
        let reply = system
            .request(
                format!("$SYS.REQ.ACCOUNT.{account}.CLAIMS.UPDATE"),
                jwt.into(),
            )
            .await
            .expect("the resolver answers");
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["data"]["code"], 200, "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mode_signing_keys_and_xkey_rotate_without_a_refused_connect() {
    let stack = OperatorStack::start().await;
    let replica = Replica::start(&stack.config_path).await;
    let token = stack.issuer.token(json!({ "roles": ["Member"] }));
    let traffic = Traffic::start(vec![stack.server.url()], token);
    let app = stack.keys.accounts["APP"].account.public_key();
    let callout = stack.keys.callout.public_key();

    // APP's signing key: added to APP's JWT, the service switches, the old key is removed.
    let old_signing = stack.keys.accounts["APP"].signing.public_key();
    let new_signing = nkeys::KeyPair::new_account();
    let app_claims = |signing_keys: Vec<String>| {
        let mut claims = nats_config::target_claims(&stack.keys, "APP").unwrap();
        claims.nats.signing_keys = signing_keys;
        operator::signed(&stack.keys, &mut claims)
    };
    let account_step = traffic
        .during("account signing key (operator mode)", async || {
            let both = vec![old_signing.clone(), new_signing.public_key()];
            stack.push(&app, app_claims(both)).await;
            stack.replace_key(&keys::signing_key_file("APP"), &new_signing.seed().unwrap());
            rotated(&replica, "account:APP", 1).await;
            stack
                .push(&app, app_claims(vec![new_signing.public_key()]))
                .await;
        })
        .await;

    // The callout account's response key: a signing key added to AUTH's JWT, the service
    // switches to it, and (with nothing else signed by the account key) nothing to remove.
    let response_signing = nkeys::KeyPair::new_account();
    let auth_claims = |signing_keys: Vec<String>, xkey: &str| {
        let mut claims = nats_config::callout_claims(&stack.keys);
        claims.nats.signing_keys = signing_keys;
        claims.nats.authorization.xkey = xkey.to_owned();
        operator::signed(&stack.keys, &mut claims)
    };
    let response_step = traffic
        .during("callout account signing key (operator mode)", async || {
            let claims = auth_claims(vec![response_signing.public_key()], &stack.keys.xkey);
            stack.push(&callout, claims).await;
            stack.replace_key(keys::CALLOUT_SEED, &response_signing.seed().unwrap());
            rotated(&replica, "issuer", 1).await;
        })
        .await;

    // The xkey: the service first (it still opens requests sealed to the old key), then the
    // callout account's JWT names the new one.
    let new_xkey = nkeys::XKey::new();
    let xkey_step = traffic
        .during("xkey (operator mode)", async || {
            stack.replace_key(keys::XKEY_SEED, &new_xkey.seed().unwrap());
            rotated(&replica, "xkey", 1).await;
            let claims = auth_claims(vec![response_signing.public_key()], &new_xkey.public_key());
            stack.push(&callout, claims).await;
        })
        .await;

    for (name, step) in [
        ("account signing key", &account_step),
        ("callout account signing key", &response_step),
        ("xkey", &xkey_step),
    ] {
        assert_eq!(step.refused, 0, "{name}: {step:?}");
    }
    drop(traffic);
    replica.stop().await;
}
