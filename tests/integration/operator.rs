//! Operator (decentralized JWT) mode against a real nats-server, set up by the service's own
//! `keys init --mode operator` and `nats-config --mode operator` code: a memory resolver, and
//! for revocation the NATS-based `full` resolver production uses (updates pushed by the system
//! user persist in its directory).
//!
//! Mirrors the operator cases of nats-server's `auth_callout_test.go`: the callout account's
//! JWT carries the `authorization` block (service user, allowed target accounts, xkey — so every
//! request here is encrypted); users are minted into APP or OTHER with those accounts' signing
//! keys and `issuer_account`; an account not allowed is refused; error responses refuse at once;
//! revoking one minted user disconnects only that client.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ConnectErrorKind, Event};
use futures_util::StreamExt;
use serde_json::{Value, json};

use entra_callout::keys::{OperatorKeys, SENTINEL_CREDS, SYSTEM_CREDS};
use entra_callout::nats_config::Resolver;
use entra_callout::nats_jwt::{Account, Claims};

use crate::support::issuer::{AUDIENCE, OTHER_TENANT, TENANT, TestIssuer};
use crate::support::nats::NatsServer;
use crate::support::operator;
use crate::support::service::{Answered, Replica};

/// Contoso lands in APP, Fabrikam in OTHER; both under the same prefix, so only the account
/// keeps them apart.
const POLICY: &str = r#"
version: 1
tenants:
  - name: contoso
    entra_tenants: [CONTOSO_TID]
    account: APP
    prefix: shared
  - name: fabrikam
    entra_tenants: [FABRIKAM_TID]
    account: OTHER
    prefix: shared
roles:
  - name: member
    publish: { allow: [">"] }
    subscribe: { allow: [">"] }
  - name: inbox
    absolute: true
    subscribe: { allow: ["_INBOX.>"] }
bindings:
  - { name: contoso-members, tenant: contoso, roles: [member, inbox], when: { app_roles: [Member] } }
  - { name: fabrikam-members, tenant: fabrikam, roles: [member, inbox], when: { app_roles: [Member] } }
"#;

struct Stack {
    issuer: TestIssuer,
    server: NatsServer,
    keys: OperatorKeys,
    /// Holds `keys/`, the service configuration and the policies.
    dir: tempfile::TempDir,
    config_path: PathBuf,
}

impl Stack {
    /// `allowed`: the callout account's `allowed_accounts` by name (default: every target).
    /// `response_signing_key`: the service signs responses with a signing key of the callout
    /// account instead of its account key, and requests are not encrypted. A memory resolver.
    async fn start(allowed: Option<&[&str]>, response_signing_key: bool) -> Self {
        Self::start_with(allowed, response_signing_key, false).await
    }

    /// As [`Stack::start`], with the `full` resolver storing account JWTs in the stack's
    /// directory when `full_resolver`.
    async fn start_with(
        allowed: Option<&[&str]>,
        response_signing_key: bool,
        full_resolver: bool,
    ) -> Self {
        let issuer = TestIssuer::start_for_tenants(&[TENANT, OTHER_TENANT]).await;
        let dir = tempfile::tempdir().unwrap();
        let resolver = if full_resolver {
            Resolver::Full {
                dir: dir.path().join("jwt").display().to_string(),
            }
        } else {
            Resolver::Memory
        };
        let keys = operator::init(&dir.path().join("keys"), &["APP", "OTHER"]);
        let signing = nkeys::KeyPair::new_account();
        let edit = |auth: &mut Claims<Account>| {
            if let Some(allowed) = allowed {
                auth.nats.authorization.allowed_accounts = allowed
                    .iter()
                    .map(|name| keys.accounts[*name].account.public_key())
                    .collect();
            }
            if response_signing_key {
                auth.nats.signing_keys = vec![signing.public_key()];
                // In plaintext: nats-server skips the response-signer check for sealed ones.
                auth.nats.authorization.xkey = String::new();
            }
        };
        let server = NatsServer::start(&operator::server_config(&keys, &resolver, edit));
        let policy = POLICY
            .replace("CONTOSO_TID", TENANT)
            .replace("FABRIKAM_TID", OTHER_TENANT);
        std::fs::write(dir.path().join("policies.yaml"), policy).unwrap();
        let providers = format!(
            "providers:\n  - name: entra\n    kind: entra\n    tenants: [{TENANT}, {OTHER_TENANT}]\n    \
             audiences: [\"{AUDIENCE}\"]\n    authority: {}\n",
            issuer.authority()
        );
        let mut config = operator::service_config(&keys, &server.url(), &providers);
        if response_signing_key {
            std::fs::write(
                dir.path().join("keys/auth-signing.nk"),
                signing.seed().unwrap(),
            )
            .unwrap();
            config = config.replace("  xkey_seed_file: keys/xkey.nk\n", "");
            config = config.replace(
                "issuer_seed_file: keys/auth.nk",
                &format!(
                    "issuer_seed_file: keys/auth-signing.nk\n  issuer_account: {}",
                    keys.callout.public_key()
                ),
            );
        }
        let config_path = dir.path().join("entra-callout.yaml");
        std::fs::write(&config_path, config).unwrap();
        Self {
            issuer,
            server,
            keys,
            dir,
            config_path,
        }
    }

    async fn replica(&self) -> Replica {
        Replica::start(&self.config_path).await
    }

    fn contoso_token(&self) -> String {
        self.issuer.token(json!({ "roles": ["Member"] }))
    }

    fn fabrikam_token(&self) -> String {
        self.issuer
            .token_for(OTHER_TENANT, json!({ "roles": ["Member"] }))
    }

    fn key_file(&self, name: &str) -> PathBuf {
        operator::key_file(self.dir.path(), name)
    }

    /// A client presenting only its token: the server's `default_sentinel` stands in.
    async fn connect(&self, token: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::with_token(token.to_owned())
            .connect(self.server.url())
            .await
    }

    /// A client presenting the sentinel creds and its token.
    async fn connect_with_sentinel(
        &self,
        token: &str,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::with_credentials_file(self.key_file(SENTINEL_CREDS))
            .await
            .unwrap()
            .token(token.to_owned())
            .connect(self.server.url())
            .await
    }
}

/// Whether `sub` receives nothing within a short grace period.
async fn silent(sub: &mut async_nats::Subscriber) -> bool {
    tokio::time::timeout(Duration::from_millis(300), sub.next())
        .await
        .is_err()
}

#[tokio::test]
async fn users_are_minted_into_their_tenants_account_with_its_signing_key() {
    let stack = Stack::start(None, false).await;
    let replica = stack.replica().await;

    // The service holds only the targets' signing keys, never their account seeds: every
    // admission below is a user JWT issued by a signing key with `issuer_account` set.
    let contoso_reader = stack
        .connect_with_sentinel(&stack.contoso_token())
        .await
        .expect("contoso admitted with the sentinel creds");
    let fabrikam_reader = stack
        .connect(&stack.fabrikam_token())
        .await
        .expect("fabrikam admitted through the default sentinel");
    let mut contoso_sub = contoso_reader.subscribe("shared.news").await.unwrap();
    let mut fabrikam_sub = fabrikam_reader.subscribe("shared.news").await.unwrap();
    contoso_reader.flush().await.unwrap();
    fabrikam_reader.flush().await.unwrap();

    let contoso = stack.connect(&stack.contoso_token()).await.unwrap();
    contoso
        .publish("shared.news", "from contoso".into())
        .await
        .unwrap();
    contoso.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), contoso_sub.next())
        .await
        .expect("delivered within APP")
        .unwrap();
    assert_eq!(&got.payload[..], b"from contoso");
    assert!(
        silent(&mut fabrikam_sub).await,
        "the same subject in OTHER is another account"
    );

    let fabrikam = stack.connect(&stack.fabrikam_token()).await.unwrap();
    fabrikam
        .publish("shared.news", "from fabrikam".into())
        .await
        .unwrap();
    fabrikam.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), fabrikam_sub.next())
        .await
        .expect("delivered within OTHER")
        .unwrap();
    assert_eq!(&got.payload[..], b"from fabrikam");
    assert!(silent(&mut contoso_sub).await);

    replica.wait_answered(Answered::new(4, 0)).await;
    replica.stop().await;
}

#[tokio::test]
async fn responses_may_be_signed_by_a_signing_key_of_the_callout_account() {
    let stack = Stack::start(None, true).await;
    let replica = stack.replica().await;
    stack
        .connect(&stack.contoso_token())
        .await
        .expect("admitted with a response signed by the callout account's signing key");
    let err = stack
        .connect(&stack.issuer.token(json!({ "roles": ["Stranger"] })))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation);
    assert!(
        stack
            .server
            .wait_for_log("Auth callout service returned an error: no_matching_policy")
            .await
    );
    replica.wait_answered(Answered::new(1, 1)).await;
    replica.stop().await;
}

#[tokio::test]
async fn an_account_missing_from_allowed_accounts_is_refused_by_the_server() {
    let stack = Stack::start(Some(&["APP"]), false).await;
    let replica = stack.replica().await;
    stack
        .connect(&stack.contoso_token())
        .await
        .expect("APP is allowed");
    let err = stack
        .connect(&stack.fabrikam_token())
        .await
        .expect_err("OTHER is not in allowed_accounts");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation);
    // The server names the issuer of the user JWT: OTHER's signing key.
    let other = stack.keys.accounts["OTHER"].signing.public_key();
    assert!(
        stack
            .server
            .wait_for_log(&format!("{other:?} not permitted as valid account option"))
            .await,
        "{}",
        stack.server.log()
    );
    // The service admitted both; the server is the one that refused.
    replica.wait_answered(Answered::new(2, 0)).await;
    replica.stop().await;
}

#[tokio::test]
async fn refusals_are_error_responses_the_server_acts_on_at_once() {
    let stack = Stack::start(None, false).await;
    let replica = stack.replica().await;
    let now = entra_callout::telemetry::unix_now();
    let cases = [
        ("token_missing", None),
        ("token_malformed", Some("not-a-token".to_owned())),
        (
            "token_expired",
            Some(stack.issuer.token(json!({ "roles": ["Member"], "exp": now - 600, "nbf": now - 4000, "iat": now - 4000 }))),
        ),
        (
            "no_matching_policy",
            Some(stack.issuer.token(json!({ "roles": ["Stranger"] }))),
        ),
    ];
    for (reason, token) in &cases {
        let result = match token {
            Some(token) => stack.connect(token).await,
            None => async_nats::connect(stack.server.url()).await,
        };
        let err = result.expect_err(reason);
        assert_eq!(
            err.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{reason}"
        );
        // The server read our signed error response; a timeout would log something else.
        let line = format!("Auth callout service returned an error: {reason}");
        assert!(
            stack.server.wait_for_log(&line).await,
            "{reason}:\n{}",
            stack.server.log()
        );
    }
    assert!(
        !stack.server.log().contains("not received in time"),
        "{}",
        stack.server.log()
    );
    replica
        .wait_answered(Answered::new(0, cases.len() as u64))
        .await;
    replica.stop().await;
}

#[tokio::test]
async fn revoking_a_minted_user_disconnects_only_that_client() {
    let stack = Stack::start_with(None, false, true).await;
    // The binary, so the revocation handle comes from where operators find it: the audit log.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_entra-callout"))
        .args(["serve", "--config"])
        .arg(&stack.config_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn({
        let lines = Arc::clone(&lines);
        move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        }
    });
    let admitted_keys = |lines: &Mutex<Vec<String>>| -> Vec<String> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("client admitted"))
            .filter_map(|l| l.split("\"user_nkey\":\"").nth(1))
            .map(|rest| rest.chars().take(56).collect())
            .collect()
    };

    let token = stack.contoso_token();
    let mut doomed = None;
    for _ in 0..50 {
        // A channel per attempt: attempts refused while the binary starts report their own
        // authorization errors, which must not pass for the revocation below.
        let (tx, errors) = tokio::sync::mpsc::unbounded_channel();
        let attempt = async_nats::ConnectOptions::with_token(token.clone())
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(err) = event {
                        let _ = tx.send(err.to_string().to_lowercase());
                    }
                }
            })
            .connect(stack.server.url())
            .await;
        if let Ok(client) = attempt {
            doomed = Some((client, errors));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (doomed, mut revoked) = doomed.expect("the service binary admits a client");
    let survivor = stack.connect(&token).await.expect("second client admitted");
    let mut keys = Vec::new();
    for _ in 0..50 {
        keys = admitted_keys(&lines);
        if keys.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(keys.len(), 2, "two admissions with their user_nkey logged");
    let doomed_key = keys[0].clone();
    assert!(doomed_key.starts_with('U'), "{doomed_key}");

    // An operator revokes that user key in APP's JWT and pushes it as the system user.
    let system = async_nats::ConnectOptions::with_credentials_file(stack.key_file(SYSTEM_CREDS))
        .await
        .unwrap()
        .connect(stack.server.url())
        .await
        .expect("system user connects");
    let now = entra_callout::telemetry::unix_now();
    let update = operator::revoking(&stack.keys, "APP", &[(&doomed_key, now + 1)]);
    let app = stack.keys.accounts["APP"].account.public_key();
    let reply = system
        .request(
            format!("$SYS.REQ.ACCOUNT.{app}.CLAIMS.UPDATE"),
            update.clone().into(),
        )
        .await
        .expect("the resolver answers");
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["data"]["code"], 200, "{reply}");
    // The full resolver keeps the update: a restarted server would still refuse the user.
    let stored = stack.dir.path().join("jwt").join(format!("{app}.jwt"));
    let stored =
        std::fs::read_to_string(&stored).unwrap_or_else(|e| panic!("{}: {e}", stored.display()));
    assert_eq!(stored.trim(), update);

    let err = tokio::time::timeout(Duration::from_secs(5), revoked.recv())
        .await
        .expect("the revoked client hears about it")
        .unwrap();
    assert!(err.contains("authentication revoked"), "{err}");
    // The other client of the same identity and account is untouched.
    survivor.flush().await.expect("the survivor is connected");
    survivor
        .publish("shared.still-here", "yes".into())
        .await
        .unwrap();
    survivor.flush().await.unwrap();
    assert_eq!(
        survivor.connection_state(),
        async_nats::connection::State::Connected
    );
    drop(doomed);

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}
