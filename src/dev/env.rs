//! The local environment: a nats-server wired to the callout, the dev issuer, and the service.
//!
//! [`Environment::start`] creates a private temporary directory with fresh keys
//! (`keys::init`), the service configuration (providers for the example tenants whose metadata
//! comes from the dev issuer) and a config-mode nats-server configuration; starts the issuer
//! in-process and nats-server and `entra-callout serve` as child processes; and returns once the
//! service's subscription is registered with the server. Stopping (or dropping) it kills the
//! children and removes the directory.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Config, ProcessEnv};
use crate::dev::DevError;
use crate::dev::issuer::DevIssuer;
use crate::dev::token::{API_APP_ID_URI, API_CLIENT_ID, CONTOSO, FABRIKAM};
use crate::keys;

/// Where `dev` looks for policies when none are given: the checkout's example policies,
/// read at run time (and watched by the service), so editing them needs no rebuild.
pub const DEFAULT_POLICIES: &str = "policies";

/// How long the pieces get to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// The `entra-callout` binary that runs `serve`.
    pub exe: PathBuf,
    /// The nats-server binary.
    pub nats_server: PathBuf,
    /// Client port on 127.0.0.1; 0 picks a free one.
    pub nats_port: u16,
    /// WebSocket port on 127.0.0.1 (plain `ws://`, DEV-ONLY); 0 picks a free one.
    pub websocket_port: u16,
    /// nats-server monitoring port on 127.0.0.1; 0 picks a free one.
    pub monitor_port: u16,
    /// Dev issuer port on 127.0.0.1; 0 picks a free one.
    pub issuer_port: u16,
    /// The service's admin port (/livez, /readyz, /metrics) on 127.0.0.1; 0 picks a free one.
    pub admin_port: u16,
    /// Policy file or directory; `None` uses [`DEFAULT_POLICIES`] in the current directory.
    pub policies: Option<PathBuf>,
    /// Send the children's output to files in the directory instead of this terminal.
    pub quiet: bool,
    /// Seal requests and responses with xkey, as the README recommends; `false` leaves them
    /// signed but in the clear (nats-server without `auth_callout.xkey`).
    pub xkey: bool,
}

/// A running environment.
#[derive(Debug)]
pub struct Environment {
    dir: TempDir,
    issuer: DevIssuer,
    nats: ChildGuard,
    service: ChildGuard,
    nats_port: u16,
    websocket_port: u16,
    monitor_port: u16,
    policies: PathBuf,
}

impl Environment {
    /// Starts everything and waits until the service answers authorization requests.
    pub async fn start(options: &DevOptions) -> Result<Self, DevError> {
        let dir = TempDir::new()?;
        let keys_dir = dir.path().join("keys");
        let created = keys::init(&keys_dir)?;
        let issuer =
            DevIssuer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, options.issuer_port))).await?;

        let path = options
            .policies
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICIES));
        if !path.exists() {
            return Err(DevError::PoliciesMissing(path));
        }
        let policies = std::path::absolute(&path).map_err(|source| DevError::Io {
            path: path.clone(),
            source,
        })?;

        let password = read_trimmed(&keys_dir.join(keys::NATS_PASSWORD))?;
        // The operator's password for `ops` (see [`create_streams`]): random per run, used only
        // here, never written anywhere but the server configuration in the private directory.
        let ops_password = random_hex(16)?;
        let server_conf = dir.path().join("nats-server.conf");
        write(
            &server_conf,
            &nats_server_config(
                options.nats_port,
                options.websocket_port,
                options.monitor_port,
                &password,
                &created.issuer,
                options.xkey.then_some(created.xkey.as_str()),
                Some(&Ops {
                    password: &ops_password,
                    store_dir: &dir.path().join("jetstream"),
                }),
            ),
        )?;
        let server_log = dir.path().join("nats-server.log");
        let nats = ChildGuard::spawn(
            "nats-server",
            Command::new(&options.nats_server)
                .arg("-c")
                .arg(&server_conf)
                .arg("-l")
                .arg(&server_log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let mut env_nats = nats;
        let (nats_port, websocket_port, monitor_port) =
            wait_for_server(&mut env_nats, &server_log).await?;
        create_streams(nats_port, &ops_password).await?;

        let config_path = dir.path().join("config.yaml");
        write(
            &config_path,
            &service_config(
                nats_port,
                options.admin_port,
                &issuer.authority(),
                &policies,
                options.xkey,
            ),
        )?;
        // Problems in the policies are reported here, located, before anything else runs.
        Config::load(&config_path, &ProcessEnv).map_err(|e| DevError::Config(e.to_string()))?;

        let mut command = Command::new(&options.exe);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null());
        if options.quiet {
            let log = dir.path().join("entra-callout.log");
            let file = std::fs::File::create(&log).map_err(|source| DevError::Io {
                path: log.clone(),
                source,
            })?;
            let err = file
                .try_clone()
                .map_err(|source| DevError::Io { path: log, source })?;
            command.stdout(file).stderr(err);
        }
        let service = ChildGuard::spawn("entra-callout serve", &mut command)?;
        let mut environment = Self {
            dir,
            issuer,
            nats: env_nats,
            service,
            nats_port,
            websocket_port,
            monitor_port,
            policies,
        };
        environment.wait_for_service().await?;
        Ok(environment)
    }

    /// `nats://127.0.0.1:{port}`: where clients connect.
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    /// `ws://127.0.0.1:{port}`: where browsers (nats.ws) connect. Plain WebSocket on loopback,
    /// DEV-ONLY; production listeners use TLS (`nats-config --websocket`).
    pub fn websocket_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.websocket_port)
    }

    /// nats-server's monitoring endpoint.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The dev issuer's base URL.
    pub fn issuer_url(&self) -> String {
        self.issuer.authority()
    }

    /// The private directory with keys, configurations and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The service configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// The policies the service runs with.
    pub fn policies(&self) -> &Path {
        &self.policies
    }

    /// The process id of `entra-callout serve`, for reading its memory and CPU use.
    pub fn service_pid(&self) -> u32 {
        self.service.child.id()
    }

    /// The process id of nats-server.
    pub fn nats_server_pid(&self) -> u32 {
        self.nats.child.id()
    }

    /// nats-server's log file.
    pub fn server_log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Everything nats-server logged so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }

    /// Completes when a child process exits on its own, naming it.
    pub async fn exited(&mut self) -> (String, Option<ExitStatus>) {
        loop {
            for child in [&mut self.nats, &mut self.service] {
                if let Some(status) = child.try_wait() {
                    return (child.name.to_owned(), status);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the children and removes the directory.
    pub fn stop(self) {
        drop(self);
    }

    /// Polls nats-server's monitoring endpoint until the service's subscription to the request
    /// subject is registered: from then on, client connections are answered.
    async fn wait_for_service(&mut self) -> Result<(), DevError> {
        let url = format!("{}/connz?subs=1&acc=AUTH", self.monitor_url());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| DevError::Startup(format!("cannot build an HTTP client: {e}")))?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.service.try_wait() {
                return Err(DevError::Startup(format!(
                    "entra-callout serve exited during startup ({})",
                    describe(status)
                )));
            }
            if let Ok(response) = http.get(&url).send().await
                && let Ok(body) = response.text().await
                && subscribed(&body)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(DevError::Startup(format!(
            "entra-callout serve did not subscribe to {} within {} s",
            crate::nats_jwt::AUTH_REQUEST_SUBJECT,
            STARTUP_TIMEOUT.as_secs()
        )))
    }
}

/// The streams the example policies use, as `(server name, subjects, de-duplication window in
/// seconds)`. The tenants share account `APP`, so no grant may create them (`manage` is refused
/// there): an operator creates them out of band, and so does `dev`, as user `ops`.
pub const EXAMPLE_STREAMS: &[(&str, &str, u64)] = &[
    // policies/delivery.yaml: image-ready events, de-duplicated by `Nats-Msg-Id` (the digest).
    (
        "contoso_web_image-ready",
        "contoso.web.deploy.image-ready.>",
        120,
    ),
    // policies/ml-events.yaml: model outputs a late dashboard replays.
    ("contoso_vision_outputs", "contoso.vision.ml.outputs.>", 120),
];

/// Creates [`EXAMPLE_STREAMS`] the way an operator would, out of band: as user `ops` of
/// account `APP`, which is listed in `auth_callout.auth_users` and so connects past the callout
/// (with the password generated for this run; nothing else uses that user). The JetStream API
/// is plain request-reply, so this needs no JetStream client.
async fn create_streams(nats_port: u16, ops_password: &str) -> Result<(), DevError> {
    let startup = |what: &str, e: &dyn std::fmt::Display| {
        DevError::Startup(format!("creating the example streams: {what}: {e}"))
    };
    let client = async_nats::ConnectOptions::with_user_and_password(
        "ops".to_owned(),
        ops_password.to_owned(),
    )
    .name("entra-callout dev (ops)")
    .request_timeout(Some(Duration::from_secs(5)))
    .connect(format!("nats://127.0.0.1:{nats_port}"))
    .await
    .map_err(|e| startup("connect as ops", &e))?;
    for (name, subjects, window) in EXAMPLE_STREAMS {
        let config = serde_json::json!({
            "name": name,
            "subjects": [subjects],
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "max_consumers": -1,
            "max_msgs": -1,
            "max_bytes": -1,
            "max_msg_size": -1,
            "max_msgs_per_subject": -1,
            "max_age": 0,
            "num_replicas": 1,
            "duplicate_window": window * 1_000_000_000,
            "allow_direct": true,
        });
        let reply = client
            .request(
                format!("$JS.API.STREAM.CREATE.{name}"),
                config.to_string().into(),
            )
            .await
            .map_err(|e| startup(name, &e))?;
        let answer: serde_json::Value =
            serde_json::from_slice(&reply.payload).map_err(|e| startup(name, &e))?;
        if let Some(error) = answer.get("error") {
            return Err(startup(name, &error));
        }
    }
    client.drain().await.map_err(|e| startup("drain", &e))?;
    Ok(())
}

/// True when a `/connz?subs=1` document lists a subscription to the request subject.
fn subscribed(connz: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(connz) else {
        return false;
    };
    doc.get("connections")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("subscriptions_list").and_then(|s| s.as_array()))
        .flatten()
        .any(|s| s.as_str() == Some(crate::nats_jwt::AUTH_REQUEST_SUBJECT))
}

/// Waits for "Server is ready" and reads the client, WebSocket and monitoring ports from the log.
async fn wait_for_server(nats: &mut ChildGuard, log: &Path) -> Result<(u16, u16, u16), DevError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = nats.try_wait() {
            let last = text.lines().rev().take(5).collect::<Vec<_>>();
            let last: Vec<&str> = last.into_iter().rev().collect();
            return Err(DevError::Startup(format!(
                "nats-server exited during startup ({}); its log ends with:\n{}",
                describe(status),
                last.join("\n")
            )));
        }
        if text.contains("Server is ready") {
            let client = port_after(&text, "Listening for client connections on ");
            let websocket = port_after(&text, "Listening for websocket clients on ");
            let monitor = port_after(&text, "Starting http monitor on ");
            if let (Some(client), Some(websocket), Some(monitor)) = (client, websocket, monitor) {
                return Ok((client, websocket, monitor));
            }
            return Err(DevError::Startup(format!(
                "cannot read nats-server's ports from {}",
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DevError::Startup(format!(
        "nats-server did not become ready within {} s (log: {})",
        STARTUP_TIMEOUT.as_secs(),
        log.display()
    )))
}

/// The port of the first `host:port` following `marker` in `log`.
fn port_after(log: &str, marker: &str) -> Option<u16> {
    let rest = log.split(marker).nth(1)?;
    let addr = rest.lines().next()?.trim();
    addr.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

fn describe(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string())
}

/// The operator's side of the dev server: JetStream's store and the `ops` user's password.
#[derive(Clone, Copy, Debug)]
pub struct Ops<'a> {
    /// The password of user `ops` in `APP`.
    pub password: &'a str,
    /// JetStream's store directory.
    pub store_dir: &'a Path,
}

/// nats-server in config mode with the callout wired as the README describes, and JetStream
/// for account `APP` when `ops` is given (`None`: no JetStream and no `ops` user, as the
/// benchmarks use it). Port 0 means "pick a free port" (`-1` to nats-server).
pub fn nats_server_config(
    port: u16,
    websocket_port: u16,
    monitor_port: u16,
    password: &str,
    issuer: &str,
    xkey: Option<&str>,
    ops: Option<&Ops<'_>>,
) -> String {
    let render = |p: u16| {
        if p == 0 {
            "-1".to_owned()
        } else {
            p.to_string()
        }
    };
    let mut conf = String::new();
    let _ = write!(
        conf,
        r#"# Written by `entra-callout dev`; removed when it stops.
listen: "127.0.0.1:{client}"
http: "127.0.0.1:{monitor}"
server_name: entra-callout-dev
# DEV-ONLY: plain WebSocket (no TLS) on loopback for the browser example. Production
# listeners use TLS: `entra-callout nats-config --websocket HOST:PORT`.
websocket {{
  listen: "127.0.0.1:{websocket}"
  no_tls: true
}}
# Entra access tokens with group claims often exceed the default 4 KiB control line.
max_control_line: 32KB{jetstream}
accounts {{
  AUTH {{ users: [ {{ user: auth, password: "{password}" }} ] }}
  APP {{{app}}}
  SYS {{}}
}}
system_account: SYS
authorization {{
  timeout: 2
  auth_callout {{
    issuer: {issuer}
    account: AUTH
    auth_users: [ auth{ops_user} ]{xkey}
  }}
}}
"#,
        jetstream = ops
            .map(|o| format!(
                "\njetstream {{ store_dir: {:?} }}",
                o.store_dir.display().to_string()
            ))
            .unwrap_or_default(),
        // `ops` is the operator, past the callout: `dev` creates the example streams as it at
        // start (a random password per run; nothing else uses it).
        app = ops
            .map(|o| format!(
                " jetstream: enabled, users: [ {{ user: ops, password: \"{}\" }} ] ",
                o.password
            ))
            .unwrap_or_default(),
        ops_user = if ops.is_some() { ", ops" } else { "" },
        client = render(port),
        websocket = render(websocket_port),
        monitor = render(monitor_port),
        xkey = xkey.map(|x| format!("\n    xkey: {x}")).unwrap_or_default(),
    );
    conf
}

/// The service configuration: the example tenants, their metadata from the dev issuer.
pub fn service_config(
    nats_port: u16,
    admin_port: u16,
    authority: &str,
    policies: &Path,
    xkey: bool,
) -> String {
    let policies = policies.display().to_string();
    let xkey = if xkey {
        "\n  xkey_seed_file: keys/xkey.nk"
    } else {
        ""
    };
    format!(
        r#"# Written by `entra-callout dev`; removed when it stops.
nats:
  url: nats://127.0.0.1:{nats_port}
  user: auth
  password_file: keys/nats-password
callout:
  issuer_seed_file: keys/issuer.nk{xkey}
  max_ttl: 1h
  drain_timeout: 2s
providers:
  - name: contoso
    kind: entra
    tenant: {CONTOSO}
    audiences: ["{API_CLIENT_ID}", "{API_APP_ID_URI}"]
    authority: {authority}
  - name: fabrikam
    kind: entra
    tenant: {FABRIKAM}
    audiences: ["{API_CLIENT_ID}", "{API_APP_ID_URI}"]
    authority: {authority}
policies: {policies:?}
admin:
  listen: 127.0.0.1:{admin_port}
log:
  format: text
  level: info
"#
    )
}

/// `bytes` random bytes, hex-encoded.
fn random_hex(bytes: usize) -> Result<String, DevError> {
    let mut raw = vec![0u8; bytes];
    getrandom::getrandom(&mut raw).map_err(|e| DevError::Random(e.to_string()))?;
    Ok(data_encoding::HEXLOWER.encode(&raw))
}

fn write(path: &Path, text: &str) -> Result<(), DevError> {
    std::fs::write(path, text).map_err(|source| DevError::Io {
        path: path.into(),
        source,
    })
}

fn read_trimmed(path: &Path) -> Result<String, DevError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| DevError::Io {
            path: path.into(),
            source,
        })
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
struct ChildGuard {
    name: &'static str,
    child: Child,
    exited: bool,
}

impl ChildGuard {
    fn spawn(name: &'static str, command: &mut Command) -> Result<Self, DevError> {
        let child = command.spawn().map_err(|source| DevError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self {
            name,
            child,
            exited: false,
        })
    }

    /// `Some` once the child has exited (with its status when it could be read).
    fn try_wait(&mut self) -> Option<Option<ExitStatus>> {
        if self.exited {
            return Some(None);
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = true;
                Some(Some(status))
            }
            Ok(None) => None,
            Err(_) => {
                self.exited = true;
                Some(None)
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A private (0700) directory under the system temp directory, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, DevError> {
        let mut raw = [0u8; 6];
        getrandom::getrandom(&mut raw).map_err(|e| DevError::Random(e.to_string()))?;
        let name = format!("entra-callout-dev-{}", data_encoding::HEXLOWER.encode(&raw));
        let path = std::env::temp_dir().join(name);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&path).map_err(|source| DevError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_from_the_server_log() {
        let log = "[1] [INF] Starting http monitor on 127.0.0.1:41234\n\
                   [1] [INF] Listening for websocket clients on ws://127.0.0.1:40002\n\
                   [1] [INF] Listening for client connections on 127.0.0.1:40001\n\
                   [1] [INF] Server is ready\n";
        assert_eq!(
            port_after(log, "Listening for client connections on "),
            Some(40001)
        );
        assert_eq!(port_after(log, "Starting http monitor on "), Some(41234));
        assert_eq!(
            port_after(log, "Listening for websocket clients on "),
            Some(40002)
        );
        assert_eq!(port_after(log, "nothing here"), None);
    }

    #[test]
    fn the_subscription_is_found_in_connz() {
        let listed = r#"{"connections":[{"name":"x","subscriptions_list":["_INBOX.a"]},
            {"name":"entra-callout","subscriptions_list":["$SYS.REQ.USER.AUTH"]}]}"#;
        assert!(subscribed(listed));
        assert!(!subscribed(
            r#"{"connections":[{"subscriptions_list":[]}]}"#
        ));
        assert!(!subscribed(r#"{"connections":null}"#));
        assert!(!subscribed("not json"));
    }

    #[test]
    fn the_generated_service_config_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        keys::init(&dir.path().join("keys")).unwrap();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_POLICIES);
        let path = dir.path().join("config.yaml");
        for xkey in [true, false] {
            std::fs::write(
                &path,
                service_config(4222, 8080, "http://127.0.0.1:8400", &policies, xkey),
            )
            .unwrap();
            let config = Config::load(&path, &ProcessEnv).unwrap();
            assert_eq!(config.providers.len(), 2);
            assert_eq!(config.callout.xkey.is_some(), xkey);
        }
    }

    #[test]
    fn random_ports_are_asked_of_nats_server_as_minus_one() {
        let store = Path::new("/tmp/x/jetstream");
        let ops = Ops {
            password: "opw",
            store_dir: store,
        };
        let conf = nats_server_config(0, 0, 0, "pw", "AISSUER", Some("XKEY"), Some(&ops));
        assert!(
            conf.contains("jetstream { store_dir: \"/tmp/x/jetstream\" }"),
            "{conf}"
        );
        assert!(
            conf.contains(
                "APP { jetstream: enabled, users: [ { user: ops, password: \"opw\" } ] }"
            ) && conf.contains("auth_users: [ auth, ops ]"),
            "{conf}"
        );
        assert!(conf.contains("listen: \"127.0.0.1:-1\""), "{conf}");
        assert!(conf.contains("http: \"127.0.0.1:-1\""), "{conf}");
        assert!(
            conf.contains("websocket {\n  listen: \"127.0.0.1:-1\"\n  no_tls: true\n}"),
            "{conf}"
        );
        let conf = nats_server_config(4222, 4280, 8222, "pw", "AISSUER", Some("XKEY"), Some(&ops));
        assert!(conf.contains("listen: \"127.0.0.1:4222\""), "{conf}");
        assert!(conf.contains("listen: \"127.0.0.1:4280\""), "{conf}");
        assert!(conf.contains("issuer: AISSUER") && conf.contains("\n    xkey: XKEY\n"));
        let plain = nats_server_config(0, 0, 0, "pw", "AISSUER", None, None);
        assert!(
            plain.contains("issuer: AISSUER") && !plain.contains("xkey"),
            "{plain}"
        );
        assert!(
            !plain.contains("jetstream")
                && plain.contains("APP {}\n")
                && !plain.contains("user: ops"),
            "{plain}"
        );
    }
}
