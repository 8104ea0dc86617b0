//! The service as a real process: its files in a directory of their own, the `entra-callout`
//! binary started as a child with stderr captured, and the secrets it was given, so tests can
//! kill it, read its memory use and scan its logs for leaks.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nkeys::{KeyPair, XKey};

use crate::support::issuer::{AUDIENCE, OTHER_TENANT, TENANT, TestIssuer};
use crate::support::nats::{config_mode, free_port};

/// Two tenants in one account, isolated by subject prefix; contoso has two projects. The
/// subjects a binding grants are `{tenant}.{project}.>`; `mail.{oid}` renders a claim.
pub const POLICY: &str = r#"version: 1
tenants:
  - name: contoso
    entra_tenants: [CONTOSO_TID]
    account: APP
    projects: [{ name: alpha }, { name: beta }]
  - name: fabrikam
    entra_tenants: [FABRIKAM_TID]
    account: APP
    projects: [{ name: alpha }]
roles:
  - name: member
    publish: { allow: [">"] }
    subscribe: { allow: [">"] }
  - name: mailbox
    publish: { allow: ["mail.{oid}"] }
bindings:
  - { name: contoso-alpha, tenant: contoso, project: alpha, roles: [member], when: { app_roles: [Alpha] } }
  - { name: contoso-beta, tenant: contoso, project: beta, roles: [member], when: { app_roles: [Beta] } }
  - { name: fabrikam-alpha, tenant: fabrikam, project: alpha, roles: [member], when: { app_roles: [Alpha] } }
  - { name: contoso-mail, tenant: contoso, roles: [mailbox], when: { app_roles: [Mail] } }
"#;

/// [`POLICY`] for the test tenants.
pub fn policy() -> String {
    POLICY
        .replace("CONTOSO_TID", TENANT)
        .replace("FABRIKAM_TID", OTHER_TENANT)
}

/// The service's keys, password, policies and configuration.
pub struct ServiceDir {
    dir: tempfile::TempDir,
    /// The callout issuer account.
    pub account: KeyPair,
    /// The service's curve key (requests are sealed).
    pub xkey: XKey,
    /// The service's own NATS password, random per test so a log scan can look for it.
    pub password: String,
}

/// Knobs of [`ServiceDir::write_config`].
pub struct Settings<'a> {
    /// The NATS URL(s), comma-separated.
    pub nats: &'a str,
    /// `(name, issuer, authority)` per Entra provider; the authority may be a proxy.
    pub providers: Vec<(&'a str, &'a TestIssuer, String)>,
    /// Appended to the `callout:` section.
    pub callout: &'a str,
    /// `json` or `text`.
    pub log_format: &'a str,
    /// The log level.
    pub log_level: &'a str,
}

impl ServiceDir {
    /// Fresh keys and a random service password; policies written as a ConfigMap-style
    /// directory (`policies/..data` → a versioned directory).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = [0u8; 12];
        getrandom::getrandom(&mut bytes).unwrap();
        let service = Self {
            dir,
            account: KeyPair::new_account(),
            xkey: XKey::new(),
            password: format!("svc-{}", data_encoding::HEXLOWER.encode(&bytes)),
        };
        service.write_secret("issuer.nk", &service.account.seed().unwrap());
        service.write_secret("xkey.nk", &service.xkey.seed().unwrap());
        service.write_secret("nats-password", &service.password);
        std::fs::create_dir(service.policies()).unwrap();
        service.publish_policies(1, &[("policies.yaml", &policy())]);
        service
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The policy directory the service watches.
    pub fn policies(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// The seeds the service holds; none may ever be logged.
    pub fn seeds(&self) -> Vec<String> {
        vec![self.account.seed().unwrap(), self.xkey.seed().unwrap()]
    }

    /// nats-server's configuration: the callout with this issuer and xkey, the service user's
    /// password, and a callout timeout of `timeout_secs`.
    pub fn server_config(&self, timeout_secs: u64) -> String {
        config_mode(
            &self.account.public_key(),
            Some(&self.xkey.public_key()),
            "",
        )
        .replace("password: pwd", &format!("password: \"{}\"", self.password))
        .replace("timeout: 2", &format!("timeout: {timeout_secs}"))
    }

    /// Publishes `files` as policy version `version` the way Kubernetes updates a ConfigMap
    /// volume: write a new versioned directory, then atomically swap the `..data` symlink;
    /// the visible `*.yaml` names are symlinks through `..data`.
    pub fn publish_policies(&self, version: u32, files: &[(&str, &str)]) {
        let root = self.policies();
        let versioned = format!("..v{version}");
        std::fs::create_dir(root.join(&versioned)).unwrap();
        for (name, text) in files {
            std::fs::write(root.join(&versioned).join(name), text).unwrap();
        }
        let staging = root.join("..data_tmp");
        let _ = std::fs::remove_file(&staging);
        symlink(&versioned, &staging).unwrap();
        std::fs::rename(&staging, root.join("..data")).unwrap();
        for (name, _) in files {
            let link = root.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
    }

    /// Writes the configuration and returns its path and the admin address.
    pub fn write_config(&self, settings: &Settings<'_>) -> (PathBuf, String) {
        self.write_config_as("entra-callout.yaml", settings)
    }

    /// Like [`Self::write_config`], to the file `name` (one per replica).
    pub fn write_config_as(&self, name: &str, settings: &Settings<'_>) -> (PathBuf, String) {
        let admin = format!("127.0.0.1:{}", free_port());
        let mut providers = String::new();
        for (name, issuer, authority) in &settings.providers {
            providers.push_str(&format!(
                "  - name: {name}\n    kind: entra\n    tenant: {tenant}\n    \
                 audiences: [\"{AUDIENCE}\"]\n    authority: {authority}\n    \
                 unknown_kid_refetch_interval: 1s\n",
                tenant = issuer.tenant(),
            ));
        }
        let config = format!(
            "nats:\n  url: {nats}\n  user: auth\n  password_file: nats-password\n\
             callout:\n  issuer_seed_file: issuer.nk\n  xkey_seed_file: xkey.nk\n  \
             max_ttl: 15m\n  drain_timeout: 5s\n{callout}\
             providers:\n{providers}\
             policies: policies\n\
             policy_reload:\n  debounce: 100ms\n\
             admin:\n  listen: {admin}\n\
             log:\n  format: {format}\n  level: {level}\n",
            nats = settings.nats,
            callout = settings.callout,
            format = settings.log_format,
            level = settings.log_level,
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, config).unwrap();
        (path, admin)
    }

    fn write_secret(&self, name: &str, value: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Providers for the two test issuers, under the names `contoso` and `fabrikam`.
pub fn providers<'a>(
    contoso: &'a TestIssuer,
    fabrikam: &'a TestIssuer,
) -> Vec<(&'a str, &'a TestIssuer, String)> {
    assert_eq!(contoso.tenant(), TENANT);
    assert_eq!(fabrikam.tenant(), OTHER_TENANT);
    vec![
        ("contoso", contoso, contoso.authority()),
        ("fabrikam", fabrikam, fabrikam.authority()),
    ]
}

/// The running binary, killed on drop.
pub struct Binary {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Its admin listener, `127.0.0.1:PORT`.
    pub admin: String,
}

impl Binary {
    /// Runs `entra-callout serve --config config`, reading its stderr continuously.
    pub fn start(config: &Path, admin: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_entra-callout"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        // Read continuously so a full pipe never blocks the service.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            stderr,
            admin: admin.to_owned(),
        }
    }

    /// Starts the binary and waits (bounded) until `/readyz` answers 200.
    pub async fn start_ready(config: &Path, admin: &str) -> Self {
        let binary = Self::start(config, admin);
        binary.wait_ready().await;
        binary
    }

    /// Waits, for at most 20 s, until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        for _ in 0..400 {
            if self.get("/readyz").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("entra-callout not ready within 20 s:\n{}", self.stderr());
    }

    /// GETs `path` on the admin listener: status and body, `(0, "")` when unreachable.
    pub async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("http://{}{path}", self.admin)).await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    /// The value of the metric series `series` (name and labels exactly as rendered).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").await.1;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Resident memory in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL: no drain, no goodbye; waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (`TERM`, `HUP`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits (bounded) for the exit status and the complete stderr.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        for _ in 0..150 {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return (status, self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "entra-callout did not exit within 15 s of SIGTERM:\n{}",
            self.stderr()
        );
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that no secret of `secrets` — nor the signature or claims part of a JWT among them;
/// the signature alone proves possession — appears in `log`.
///
/// Every needle is compared against every run of base64url/nkey characters in the log (where a
/// logged secret would stand); for large sets a plain substring search covers the non-JWT
/// secrets and a sample of the tokens, which keeps a storm's log scan linear.
pub fn assert_no_secrets(log: &str, secrets: &[String]) {
    assert!(!log.is_empty(), "nothing was logged");
    let mut needles: Vec<&str> = Vec::new();
    for secret in secrets {
        assert!(!secret.is_empty());
        needles.push(secret);
        if secret.matches('.').count() == 2 {
            needles.extend(secret.rsplit('.').next());
            needles.extend(secret.split('.').nth(1));
        }
    }
    let runs: std::collections::HashSet<&str> = log
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|run| run.len() >= 8)
        .collect();
    let leaked = |needle: &str, at: Option<usize>| -> ! {
        let line = at.map_or(0, |at| log[..at].lines().count());
        panic!(
            "a secret ({} bytes) appears in the log (line {line})",
            needle.len()
        );
    };
    for needle in &needles {
        if runs.contains(needle) {
            leaked(needle, log.find(needle));
        }
    }
    let exhaustive = needles.len() <= 64;
    for (i, secret) in secrets.iter().enumerate() {
        let is_jwt = secret.matches('.').count() == 2;
        if exhaustive || !is_jwt || i % 97 == 0 {
            let signature = secret.rsplit('.').next().unwrap_or(secret);
            for needle in [secret.as_str(), signature] {
                if let Some(at) = log.find(needle) {
                    leaked(needle, Some(at));
                }
            }
        }
    }
}
