//! The `entra-callout` binary's offline commands.

use std::process::Command;

use crate::support::issuer::{AUDIENCE, OTHER_TENANT, TENANT};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_entra-callout"))
}

/// Runs `entra-callout check --config config`.
fn check(config: &std::path::Path) -> std::process::Output {
    bin()
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// Asserts that a command succeeded, showing its stderr if not: what tells a failed setup step
/// from a failed assertion.
#[track_caller]
fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `entra-callout keys init dir`, which every configuration here needs first.
fn keys_init(dir: &std::path::Path) {
    assert_success(&bin().args(["keys", "init"]).arg(dir).output().unwrap());
}

/// Runs `entra-callout test --config config [tests]`; the output and all it printed.
fn policy_tests(
    config: &std::path::Path,
    tests: Option<&std::path::Path>,
) -> (std::process::Output, String) {
    let out = bin()
        .args(["test", "--config"])
        .arg(config)
        .args(tests)
        .output()
        .unwrap();
    let printed = text(&out);
    (out, printed)
}

/// Asserts that `stderr` names every problem in `problems` at its place in `file`
/// (`file:line:column: ...`): checks report every problem located, not just the first.
#[track_caller]
fn assert_located(stderr: &str, file: &str, problems: &[&str]) {
    for problem in problems {
        assert!(
            stderr.contains(&format!("{file}{problem}")),
            "missing {problem} in:\n{stderr}"
        );
    }
}

/// Writes keys and a configuration into `dir`, returning the configuration's path.
fn write_config(dir: &std::path::Path, policy: &str) -> std::path::PathBuf {
    keys_init(&dir.join("keys"));
    std::fs::write(dir.join("policy.yaml"), policy).unwrap();
    let config = format!(
        "nats:\n  user: auth\n  password_file: keys/nats-password\n\
         callout:\n  issuer_seed_file: keys/issuer.nk\n  xkey_seed_file: keys/xkey.nk\n\
         providers:\n  - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    audiences: [\"{AUDIENCE}\"]\n\
         policies: policy.yaml\n"
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn check_accepts_a_good_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "version: 1\ntenants:\n  - name: ml\n    entra_tenants: [{TENANT}]\n    account: APP\n\
         roles:\n  - name: reader\n    subscribe: {{ allow: [\"events.>\"] }}\n\
         bindings:\n  - name: readers\n    tenant: ml\n    roles: [reader]\n    when: {{ app_roles: [Nats.Reader] }}\n"
    );
    let config = write_config(dir.path(), &policy);
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok (1 provider(s), 1 tenant(s), 1 role(s), 1 binding(s))"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_policy_problem_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "version: 1\ntenants:\n  - name: t\n    entra_tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41]\n\
                  \x20   account: SYS\nroles:\n  - name: a\n    publish: { allow: [\"orders..new\"] }\n\
                  \x20 - name: b\n    subscribe: { allow: [\"x.{nope}\"] }\n\
                  bindings:\n  - name: c\n    tenant: t\n    roles: [a, ghost]\n    when: { everyone: true }\n";
    let config = write_config(dir.path(), policy);
    let out = check(&config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("policy.yaml").display().to_string();
    assert_located(
        &stderr,
        &file,
        &[":5:14: ", ":8:24: ", ":10:26: ", ":14:16: "],
    );
}

#[test]
fn check_locates_signing_keys_app_id_problems() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "version: 1\n");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("    audiences: [\"{AUDIENCE}\"]\n"),
        &format!(
            "    audiences: [\"{AUDIENCE}\"]\n    signing_keys_app_id: api://nats-auth\n\
             \x20 - name: keycloak\n    kind: oidc\n    issuer: https://idp.example\n\
             \x20   audiences: [nats]\n    signing_keys_app_id: {AUDIENCE}\n"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let out = check(&config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = config.display().to_string();
    assert_located(
        &stderr,
        &file,
        &[
            ":12:26: provider `contoso`: signing keys app id is not a GUID",
            ":17:26: `signing_keys_app_id` does not apply to `kind: oidc` providers",
        ],
    );
}

#[test]
fn keys_init_never_prints_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["keys", "init"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seed = std::fs::read_to_string(dir.path().join("issuer.nk")).unwrap();
    let xseed = std::fs::read_to_string(dir.path().join("xkey.nk")).unwrap();
    assert!(
        !printed.contains(seed.trim()) && !printed.contains(xseed.trim()),
        "{printed}"
    );
    let public = std::fs::read_to_string(dir.path().join("issuer.pub")).unwrap();
    assert!(
        printed.contains(public.trim()),
        "the public key is shown: {printed}"
    );
    let again = bin()
        .args(["keys", "init"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "existing keys are never overwritten"
    );
}

/// A configuration with the two tenants of the shipped example policies, pointing at
/// `policies` (a file or directory).
fn write_example_config(dir: &std::path::Path, policies: &std::path::Path) -> std::path::PathBuf {
    keys_init(&dir.join("keys"));
    let config = format!(
        "nats:\n  user: auth\n  password_file: keys/nats-password\n\
         callout:\n  issuer_seed_file: keys/issuer.nk\n\
         providers:\n  - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    audiences: [\"{AUDIENCE}\"]\n\
         \x20 - name: fabrikam\n    kind: entra\n    tenant: {OTHER_TENANT}\n    audiences: [\"{AUDIENCE}\"]\n\
         policies: {}\n",
        policies.display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

fn repo(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The shipped example policies pass their own test files (`policies/tests/`), through the
/// binary exactly as an operator runs them. A failing policy test fails CI here.
#[test]
fn the_shipped_example_policies_pass_their_tests() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_example_config(dir.path(), &repo("policies"));
    let (out, printed) = policy_tests(&config, None);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains(" 0 failed"), "{printed}");
    assert!(!printed.contains("FAIL"), "{printed}");
}

/// `connection_types`: explain says how a wallboard user may connect, and a test file naming an
/// unknown connection type is a located problem.
#[test]
fn explain_and_test_take_the_connection_type() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_example_config(dir.path(), &repo("policies"));
    let claims = dir.path().join("wallboard.json");
    std::fs::write(
        &claims,
        r#"{"iss": "https://login.microsoftonline.com/72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41/v2.0",
            "scp": "Nats.Connect", "oid": "5a1c8e2f-9d47-4b63-8f0a-2e6c4d9b7a35",
            "groups": ["7e4b1f2a-9c3d-4e5f-8a6b-1c2d3e4f5a6b"]}"#,
    )
    .unwrap();
    let explain = |extra: &[&str]| {
        let out = bin()
            .args(["explain", "--config"])
            .arg(&config)
            .arg("--claims")
            .arg(&claims)
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), text(&out))
    };
    let (code, printed) = explain(&["--connection-type", "websocket"]);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("MATCH  vision-browser-dashboards"),
        "{printed}"
    );
    assert!(printed.contains("  connects   WEBSOCKET\n"), "{printed}");
    let (code, printed) = explain(&["--connection-type", "standard"]);
    assert_eq!(code, Some(1), "{printed}");
    assert!(
        printed.contains(
            "vision-browser-dashboards (contoso/vision): needs a connection of type [websocket]; the client connects as standard"
        ),
        "{printed}"
    );

    let tests = dir.path().join("types.yaml");
    std::fs::write(
        &tests,
        "version: 1\nprovider: contoso\ntests:\n  - name: over tcp\n    claims: { scp: Nats.Connect }\n    \
         connection_type: tcp\n    expect: { allow: false }\n",
    )
    .unwrap();
    let (out, printed) = policy_tests(&config, Some(&tests));
    assert_ne!(out.status.code(), Some(0), "{printed}");
    assert!(
        printed.contains(
            "types.yaml:6:22: `connection_type` \"tcp\" is not one of standard, websocket, mqtt, leafnode"
        ),
        "{printed}"
    );
}

#[test]
fn a_failing_policy_test_fails_the_command_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_example_config(dir.path(), &repo("policies"));
    let tests = dir.path().join("wrong.yaml");
    std::fs::write(
        &tests,
        "version: 1\nprovider: contoso\ntests:\n  - name: a dashboard user publishes outputs\n    claims:\n      \
         scp: Nats.Connect\n      oid: 5a1c8e2f-9d47-4b63-8f0a-2e6c4d9b7a35\n      groups: [c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43]\n    expect:\n      allow: true\n      \
         publish: { allowed: [contoso.vision.ml.outputs.x] }\n  - name: passes\n    claims: { scp: Nats.Connect }\n    \
         expect: { allow: false, reason: no_matching_policy }\n",
    )
    .unwrap();
    let (out, printed) = policy_tests(&config, Some(&tests));
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed
            .contains("publish `contoso.vision.ml.outputs.x`: expected allowed, but it is denied"),
        "{printed}"
    );
    assert!(
        printed.contains("wrong.yaml:4  a dashboard user"),
        "{printed}"
    );
    assert!(printed.contains("ok    "), "{printed}");
    assert!(printed.contains("1 passed, 1 failed"), "{printed}");
}

#[test]
fn explain_shows_routing_bindings_and_permissions_and_warns_about_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_example_config(dir.path(), &repo("policies"));
    // A token from the other tenant, with a garbage signature: explain never verifies it.
    let now = crate::support::issuer::now();
    let claims = serde_json::json!({
        "iss": format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"),
        "aud": AUDIENCE, "tid": OTHER_TENANT, "ver": "2.0",
        "iat": now, "nbf": now, "exp": now + 600,
        "idtyp": "app", "oid": "3f4e5d6c-7b8a-4c9d-8e0f-1a2b3c4d5e6f",
        "sub": "3f4e5d6c-7b8a-4c9d-8e0f-1a2b3c4d5e6f",
        "azp": "0d4e7b2a-6c1f-4e83-9a5d-3b8c2f1e7d64",
        "roles": ["Ml.Vision.Producer"],
    });
    let encode =
        |v: &serde_json::Value| data_encoding::BASE64URL_NOPAD.encode(v.to_string().as_bytes());
    let token = format!(
        "{}.{}.bm90LWEtc2lnbmF0dXJl",
        encode(&serde_json::json!({"alg": "RS256", "kid": "k"})),
        encode(&claims)
    );
    let out = bin()
        .args(["explain", "--config"])
        .arg(&config)
        .args(["--token", &token])
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.starts_with("WARNING: the token's signature was NOT verified"),
        "{printed}"
    );
    assert!(
        printed.contains("is an issuer of provider `fabrikam`"),
        "{printed}"
    );
    assert!(
        printed
            .contains("MATCH  fabrikam-vision-training-jobs (fabrikam/vision; roles ml-producer)"),
        "{printed}"
    );
    assert!(
        printed.contains(
            "no     vision-training-jobs (contoso/vision): token is not in tenant `contoso`"
        ),
        "{printed}"
    );
    assert!(printed.contains("Decision: ALLOW"), "{printed}");
    assert!(
        printed.contains(
            "publish    allow fabrikam.vision.ml.outputs.>, fabrikam.vision.ml.metrics.>"
        ),
        "{printed}"
    );
    assert!(
        printed.contains("subscribe  nothing (minted as deny \">\")"),
        "{printed}"
    );

    // JSON, and a refusal exits 1.
    let claims_file = dir.path().join("claims.json");
    std::fs::write(
        &claims_file,
        format!(r#"{{"tid": "{TENANT}", "scp": "Nats.Connect", "roles": ["Ml.Vision.Producer"]}}"#),
    )
    .unwrap();
    let out = bin()
        .args(["explain", "--json", "--config"])
        .arg(&config)
        .arg("--claims")
        .arg(&claims_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["decision"]["allow"], false);
    assert_eq!(json["decision"]["reason"], "no_matching_policy");
    assert_eq!(json["signature_verified"], false);
    assert_eq!(json["provider"]["name"], "contoso");
    let vision = json["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "vision-training-jobs")
        .unwrap();
    assert_eq!(vision["matched"], false);
    assert_eq!(
        vision["why_not"],
        "needs kind `application`; the token is of kind `user`"
    );
}

#[test]
fn operator_keys_print_a_service_configuration_that_checks_and_no_seed() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "keys",
            "init",
            "keys",
            "--mode",
            "operator",
            "--account",
            "APP",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let keys = dir.path().join("keys");
    for entry in std::fs::read_dir(&keys).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| l.starts_with('S')) {
            assert!(!stdout.contains(line), "a seed was printed:\n{stdout}");
        }
    }

    // The printed service configuration, completed with providers and policies, checks.
    let service = stdout.split("service configuration:\n").nth(1).unwrap();
    let policy = format!(
        "version: 1\ntenants:\n  - name: ml\n    entra_tenants: [{TENANT}]\n    account: ACCOUNT\n\
         roles:\n  - name: reader\n    subscribe: {{ allow: [\"events.>\"] }}\n\
         bindings:\n  - name: readers\n    tenant: ml\n    roles: [reader]\n    when: {{ app_roles: [Nats.Reader] }}\n"
    );
    let config = format!(
        "{service}providers:\n  - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    \
         audiences: [\"{AUDIENCE}\"]\npolicies: policy.yaml\n"
    );
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let check = |account: &str| {
        std::fs::write(
            dir.path().join("policy.yaml"),
            policy.replace("ACCOUNT", account),
        )
        .unwrap();
        bin()
            .args(["check", "--config"])
            .arg(dir.path().join("config.yaml"))
            .output()
            .unwrap()
    };
    assert_success(&check("APP"));
    // A tenant whose account the service holds no key for fails the check, located.
    let missing = check("OTHER");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains(
            "policy.yaml:5:14: account `OTHER` is not one of the configured accounts (APP)"
        ),
        "{stderr}"
    );

    // nats-config renders the matching server configuration without secrets, and nats-server
    // accepts it.
    let out = bin()
        .args(["nats-config", "--mode", "operator", "--keys"])
        .arg(&keys)
        .output()
        .unwrap();
    assert_success(&out);
    let server_config = String::from_utf8(out.stdout).unwrap();
    assert!(server_config.contains("max_control_line: 32KB"));
    assert!(server_config.contains("resolver: MEM"));
    for entry in std::fs::read_dir(&keys).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| l.starts_with('S')) {
            assert!(!server_config.contains(line), "a seed was rendered");
        }
    }
    let server = crate::support::nats::NatsServer::start(&server_config);
    assert!(
        server.log().contains("Trusted Operators"),
        "{}",
        server.log()
    );
}

#[test]
fn nats_config_for_config_mode_names_only_the_service_as_auth_user() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    keys_init(&keys);
    let out = bin()
        .args([
            "nats-config",
            "--mode",
            "config",
            "--account",
            "APP",
            "--account",
            "OTHER",
            "--keys",
        ])
        .arg(&keys)
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let issuer = std::fs::read_to_string(keys.join("issuer.pub")).unwrap();
    let xkey = std::fs::read_to_string(keys.join("xkey.pub")).unwrap();
    let password = std::fs::read_to_string(keys.join("nats-password")).unwrap();
    assert!(
        text.contains(&format!("issuer: {}", issuer.trim())),
        "{text}"
    );
    assert!(text.contains(&format!("xkey: {}", xkey.trim())), "{text}");
    assert!(text.contains("auth_users: [ auth ]"), "{text}");
    assert!(text.contains("max_control_line: 32KB"), "{text}");
    assert!(text.contains("  APP {}\n  OTHER {}\n"), "{text}");
    assert!(
        !text.contains(password.trim()),
        "the password is never printed"
    );
}

#[test]
fn dev_token_ttl_takes_what_users_type_and_names_what_it_refuses() {
    let lifetime = |ttl: &str| -> u64 {
        let out = bin().args(["dev", "token", "--ttl", ttl]).output().unwrap();
        assert!(out.status.success(), "{ttl}: {}", text(&out));
        let token = String::from_utf8(out.stdout).unwrap();
        let payload = token.trim().split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &data_encoding::BASE64URL_NOPAD
                .decode(payload.as_bytes())
                .unwrap(),
        )
        .unwrap();
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap()
    };
    assert_eq!(lifetime("90"), 90);
    assert_eq!(lifetime("15m"), 900);
    assert_eq!(lifetime("1h30m"), 5400);
    for (ttl, message) in [
        ("0s", "--ttl \"0s\": ttl must be at least 1s"),
        ("0", "--ttl \"0\": ttl must be at least 1s"),
        (
            "soon",
            "--ttl \"soon\" is not a duration such as 90 (seconds), 15m or 1h30m",
        ),
    ] {
        let out = bin().args(["dev", "token", "--ttl", ttl]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{ttl}: {}", text(&out));
        assert!(text(&out).contains(message), "{ttl}: {}", text(&out));
    }
}
