use std::collections::HashMap;

use super::*;

impl Env for HashMap<&'static str, &'static str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| (*v).to_owned())
    }
}

const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";

fn write_policy(dir: &Path) {
    std::fs::write(dir.join("policy.yaml"), policy_for("APP")).unwrap();
}

/// A policy whose one tenant uses `account` (line 5).
fn policy_for(account: &str) -> String {
    format!(
        "version: 1\ntenants:\n  - name: t\n    entra_tenants: [{TENANT}]\n    \
             account: \"{account}\"\nroles:\n  - name: r\n    publish: {{ allow: [\"a.>\"] }}\n\
             bindings:\n  - name: b\n    tenant: t\n    roles: [r]\n    when: {{ app_roles: [R] }}\n"
    )
}

fn env() -> HashMap<&'static str, &'static str> {
    let issuer = "SAAGNJOZTRPYYXG2NJX3ZNGXYUSDYX2BWO447W3SHG6XQ7U66RWHQ3JUXM";
    HashMap::from([("ISSUER_SEED", issuer), ("NATS_PASSWORD", "pwd")])
}

fn load(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path, &env())
}

const GOOD: &str = "nats:\n  user: auth\n  password_env: NATS_PASSWORD\n\
        callout:\n  issuer_seed_env: ISSUER_SEED\n  max_ttl: 30m\n\
        providers:\n  - name: contoso\n    kind: entra\n    tenant: TENANT\n    audiences: [api://nats]\n\
        policies: policy.yaml\n";

#[test]
fn a_good_config_loads_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let config = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap();
    assert_eq!(config.callout.max_ttl, Duration::from_secs(1800));
    assert_eq!(config.callout.max_concurrency, 256);
    assert_eq!(config.callout.token_cache_size, 100_000);
    assert_eq!(config.nats.queue_group, DEFAULT_QUEUE_GROUP);
    assert_eq!(config.providers.len(), 1);
    assert_eq!(
        config.providers[0].issuers(),
        [
            format!("https://sts.windows.net/{TENANT}/"),
            format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        ]
    );
    assert!(matches!(config.nats.auth, NatsAuth::UserPassword { .. }));
    // Secrets never reach Debug output.
    let debug = format!("{config:?}");
    assert!(!debug.contains("pwd") && !debug.contains("SAAG"), "{debug}");
}

#[test]
fn every_problem_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let text = "nats:\n  user: auth\n  password_env: MISSING\n\
            callout:\n  issuer_seed_env: ISSUER_SEED\n  max_ttl: soon\n\
            providers:\n  - name: contoso\n    kind: keycloak\n    audiences: [x]\n\
            \x20 - name: other\n    kind: entra\n    tenant: not-a-guid\n    audiences: [x]\n    cloud: mars\n\
            policies: policy.yaml\n";
    let err = load(dir.path(), text).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let at: Vec<(u64, u64)> = problems.iter().map(|p| (p.line, p.column)).collect();
    let text = err.to_string();
    assert!(
        text.contains("config.yaml:3:17: password: environment variable MISSING is not set"),
        "{text}"
    );
    assert!(
        text.contains("config.yaml:6:12: invalid duration \"soon\""),
        "{text}"
    );
    assert!(
        text.contains("config.yaml:9:11: unknown provider kind \"keycloak\""),
        "{text}"
    );
    assert!(
        text.contains("config.yaml:13:13: provider `other`: tenant is not a GUID"),
        "{text}"
    );
    assert_eq!(at.len(), 4, "{text}");
}

/// The three provider examples of the README, verbatim in spirit.
const PROVIDERS: &str = "providers:
  - name: contoso
    kind: entra
    tenant: 72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41
    audiences: [\"6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11\", \"api://nats-auth\"]
  - name: partners
    kind: entra
    tenants: [0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07, 9f1c2a7d-4e58-4b06-8e41-b7c95a3fd2e0]
    versions: [v2]
    audiences: [\"6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11\"]
    cloud: usgov
    groups_overage: resolve
    graph:
      client_id: 3c6a9f0e-2d7b-4b18-8e54-a1f0c9d2e7b3
      client_secret_env: NATS_PASSWORD
  - name: keycloak
    kind: oidc
    issuer: https://sso.example.com/realms/nats
    audiences: [nats]
    algorithms: [RS256, ES256]
    roles_claim: realm_access.roles
    principal: auto
";

#[test]
fn entra_and_oidc_providers_load() {
    use crate::oidc::{GroupsOverage, Tenants};

    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let text = GOOD.replace("TENANT", TENANT);
    let (head, tail) = text.split_once("providers:").unwrap();
    let tail = tail.split_once("policies:").unwrap().1;
    let config = load(dir.path(), &format!("{head}{PROVIDERS}policies:{tail}")).unwrap();
    assert_eq!(config.providers.len(), 3);
    let partners = config.providers[1].as_entra().unwrap();
    assert!(matches!(partners.tenants(), Tenants::List(list) if list.len() == 2));
    assert_eq!(partners.login_host(), "login.microsoftonline.us");
    assert!(!partners.versions().v1);
    let GroupsOverage::Resolve(graph) = partners.groups_overage() else {
        panic!("resolve expected")
    };
    assert_eq!(graph.graph_url(), "https://graph.microsoft.us");
    let debug = format!("{:?}", config.providers);
    assert!(!debug.contains("pwd"), "{debug}");
    let keycloak = config.providers[2].as_oidc().unwrap();
    assert_eq!(keycloak.roles_claim().as_str(), "realm_access.roles");
    assert_eq!(config.providers[2].algorithms().len(), 2);
}

#[test]
fn the_readme_provider_examples_load() {
    let readme = include_str!("../../README.md");
    let examples: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split_once("```").map(|(yaml, _)| yaml))
        .filter(|yaml| yaml.starts_with("providers:"))
        .collect();
    assert_eq!(examples.len(), 3, "three provider examples in the README");
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let text = GOOD.replace("TENANT", TENANT);
    let (head, tail) = text.split_once("providers:").unwrap();
    let tail = tail.split_once("policies:").unwrap().1;
    for example in examples {
        let config = load(dir.path(), &format!("{head}{example}policies:{tail}"))
            .unwrap_or_else(|e| panic!("{e}\n{example}"));
        assert_eq!(config.providers.len(), 1);
    }
}

#[test]
fn provider_problems_are_located() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let text = "callout:\n  issuer_seed_env: ISSUER_SEED\n\
            providers:\n\
            \x20 - name: a\n    kind: entra\n    tenants: all\n    audiences: [x]\n\
            \x20 - name: b\n    kind: entra\n    tenants: any\n    audiences: [x]\n    algorithms: [RS256, HS256]\n\
            \x20 - name: c\n    kind: entra\n    tenant: 72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41\n    audiences: [x]\n    groups_overage: resolve\n\
            \x20 - name: d\n    kind: oidc\n    issuer: https://idp.example\n    tenant: x\n    audiences: [x]\n\
            \x20 - name: e\n    kind: oidc\n    issuer: http://idp.example\n    audiences: [x]\n\
            \x20 - name: f\n    kind: entra\n    tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41, nope]\n    audiences: [x]\n    versions: [v3]\n\
            policies: policy.yaml\n";
    let err = load(dir.path(), text).unwrap_err();
    let text = err.to_string();
    for expected in [
        "config.yaml:6:14: tenants must be a list of tenant ids or the word any, not \"all\"",
        "config.yaml:12:17: provider `b`: algorithm `HS256` is not allowed",
        "config.yaml:17:21: groups_overage: resolve needs a graph section",
        "config.yaml:21:13: `tenant` does not apply to `kind: oidc` providers",
        "config.yaml:25:13: provider `e`: issuer must be https",
        "config.yaml:29:14: provider `f`: tenant is not a GUID",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn signing_keys_app_id_is_read_and_its_problems_located() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let app = "6E3F1D0C-8B5A-4C2E-9F41-2D7A9B0C5E11";
    let text = GOOD.replace("TENANT", TENANT).replace(
        "audiences: [api://nats]\n",
        &format!("audiences: [api://nats]\n    signing_keys_app_id: {app}\n"),
    );
    let config = load(dir.path(), &text).unwrap();
    let entra = config.providers[0].as_entra().unwrap();
    assert_eq!(
        entra.signing_keys_app_id(),
        Some(app.to_ascii_lowercase().as_str())
    );

    let text = "callout:\n  issuer_seed_env: ISSUER_SEED\n\
            providers:\n\
            \x20 - name: a\n    kind: entra\n    tenant: 72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41\n    audiences: [x]\n    signing_keys_app_id: api://nats\n\
            \x20 - name: b\n    kind: oidc\n    issuer: https://idp.example\n    audiences: [x]\n    signing_keys_app_id: 6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11\n\
            policies: policy.yaml\n";
    let text = load(dir.path(), text).unwrap_err().to_string();
    for expected in [
        "config.yaml:8:26: provider `a`: signing keys app id is not a GUID",
        "config.yaml:13:26: `signing_keys_app_id` does not apply to `kind: oidc` providers; point \
             discovery_url at the metadata that lists the signing keys instead",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn unknown_fields_and_policy_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(dir.path(), "callout:\n  isuer_seed_env: X\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{}:2:3: unknown field `isuer_seed_env`",
            dir.path().join("config.yaml").display()
        )),
        "{text}"
    );

    std::fs::write(
        dir.path().join("policy.yaml"),
        policy_for("APP").replace("a.>", "a..b"),
    )
    .unwrap();
    let err = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("policy.yaml:8:24: "), "{text}");
    // Tenants may only name configured providers.
    std::fs::write(
        dir.path().join("policy.yaml"),
        policy_for("APP").replace("    account:", "    providers: [fabrikam]\n    account:"),
    )
    .unwrap();
    let err = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap_err();
    assert!(
        err.to_string()
            .contains("provider `fabrikam` is not configured"),
        "{err}"
    );
}

/// An operator-mode configuration in `dir`: a creds file, the callout account seed, and
/// APP with a signing key; returns (APP public key, callout public key).
fn operator_files(dir: &Path) -> (String, String) {
    let callout = nkeys::KeyPair::new_account();
    let app = nkeys::KeyPair::new_account();
    let signing = nkeys::KeyPair::new_account();
    std::fs::write(dir.join("auth.nk"), callout.seed().unwrap()).unwrap();
    std::fs::write(dir.join("app-signing.nk"), signing.seed().unwrap()).unwrap();
    let creds = crate::nats_jwt::format_credentials("eyJ.x.y", "SUXXX");
    std::fs::write(dir.join("service.creds"), creds).unwrap();
    (app.public_key(), callout.public_key())
}

fn operator_config(app: &str, accounts_extra: &str) -> String {
    format!(
        "nats:\n  credentials_file: service.creds\n\
             callout:\n  mode: operator\n  issuer_seed_file: auth.nk\n\
             accounts:\n  APP:\n    public_key: {app}\n    signing_key_seed_file: app-signing.nk\n{accounts_extra}\
             providers:\n  - name: contoso\n    kind: entra\n    tenant: {TENANT}\n    audiences: [api://nats]\n\
             policies: policy.yaml\n"
    )
}

#[test]
fn operator_mode_maps_policy_accounts_to_their_signing_keys() {
    use crate::accounts::Mode;

    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let (app, callout) = operator_files(dir.path());
    let config = load(dir.path(), &operator_config(&app, "")).unwrap();
    let signers = &config.callout.signers;
    assert_eq!(signers.mode(), Mode::Operator);
    assert_eq!(signers.response().account(), callout);
    let issuer = signers.user_issuer("APP").unwrap();
    assert_eq!(issuer.audience, app);
    assert_eq!(issuer.issuer_account, Some(app.as_str()));
    assert!(matches!(config.nats.auth, NatsAuth::Credentials(_)));

    // A policy account the service holds no key for is a located policy error.
    std::fs::write(dir.path().join("policy.yaml"), policy_for("OTHER")).unwrap();
    let text = load(dir.path(), &operator_config(&app, ""))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains(
            "policy.yaml:5:14: account `OTHER` is not one of the configured accounts (APP)"
        ),
        "{text}"
    );
}

#[test]
fn operator_mode_problems_are_located() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let (app, callout) = operator_files(dir.path());
    let extra = format!(
        "  AUTHZ:\n    public_key: {callout}\n    signing_key_seed_file: auth.nk\n\
             \x20 HALF:\n    public_key: {app}\n"
    );
    let text = load(dir.path(), &operator_config(&app, &extra))
        .unwrap_err()
        .to_string();
    for expected in [
        "config.yaml:11:17: account `AUTHZ` is the callout account",
        "config.yaml:14:5: account `HALF` needs public_key and signing_key_seed_file",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    let text = load(
        dir.path(),
        &operator_config(&app, "").replace("mode: operator", "mode: decentral"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        text.contains("config.yaml:4:9: unknown callout mode \"decentral\""),
        "{text}"
    );

    // Operator mode connects with creds; config mode cannot use them.
    let password = operator_config(&app, "").replace(
        "credentials_file: service.creds",
        "user: auth\n  password_env: NATS_PASSWORD",
    );
    let text = load(dir.path(), &password).unwrap_err().to_string();
    assert!(
        text.contains(
            "config.yaml:5:9: operator mode: the service connects with nats.credentials_file"
        ),
        "{text}"
    );
    let config_mode = GOOD.replace("TENANT", TENANT).replace(
        "  user: auth\n  password_env: NATS_PASSWORD\n",
        "  credentials_file: service.creds\n",
    );
    let text = load(dir.path(), &config_mode).unwrap_err().to_string();
    assert!(
        text.contains("nats.credentials_file needs callout.mode: operator"),
        "{text}"
    );
    // In config mode, `accounts` only lists names; keys are refused.
    let keyed = format!(
        "{}accounts:\n  APP:\n    public_key: {app}\n",
        GOOD.replace("TENANT", TENANT)
    );
    let text = load(dir.path(), &keyed).unwrap_err().to_string();
    assert!(text.contains("keys apply to operator mode only"), "{text}");
    let listed = format!("{}accounts:\n  APP: {{}}\n", GOOD.replace("TENANT", TENANT));
    load(dir.path(), &listed).unwrap();
    let listed = format!(
        "{}accounts:\n  OTHER: {{}}\n",
        GOOD.replace("TENANT", TENANT)
    );
    let text = load(dir.path(), &listed).unwrap_err().to_string();
    assert!(
        text.contains("account `APP` is not one of the configured accounts"),
        "{text}"
    );
}

#[test]
fn operations_settings_have_defaults_and_located_problems() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let good = GOOD.replace("TENANT", TENANT);
    let config = load(dir.path(), &good).unwrap();
    assert_eq!(config.admin.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.audit.subject, None);
    assert!(config.policy_reload.watch);
    assert_eq!(config.policy_reload.debounce, DEFAULT_RELOAD_DEBOUNCE);
    assert_eq!(config.callout.max_queued, DEFAULT_MAX_QUEUED);
    assert_eq!(config.callout.queue_timeout, DEFAULT_QUEUE_TIMEOUT);
    assert_eq!(config.callout.server_timeout, DEFAULT_SERVER_TIMEOUT);
    assert_eq!(config.callout.key_wait, crate::oidc::DEFAULT_KEY_WAIT);
    assert_eq!(
        config.policy_options.default_max_ttl,
        config.callout.max_ttl
    );

    let set = format!(
        "{good}admin:\n  listen: 0.0.0.0:9090\naudit:\n  subject: entra-callout.audit\n\
             policy_reload:\n  watch: false\n  debounce: 2s\n"
    )
    .replace(
        "max_ttl: 30m",
        "max_ttl: 30m\n  max_queued: 10\n  queue_timeout: 100ms",
    );
    let config = load(dir.path(), &set).unwrap();
    assert_eq!(config.admin.listen, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(config.audit.subject.as_deref(), Some("entra-callout.audit"));
    assert!(!config.policy_reload.watch);
    assert_eq!(config.policy_reload.debounce, Duration::from_secs(2));
    assert_eq!(config.callout.max_queued, 10);
    assert_eq!(config.callout.queue_timeout, Duration::from_millis(100));

    let bad = format!(
        "{good}admin:\n  listen: localhost\naudit:\n  subject: audit.>\n\
             policy_reload:\n  debounce: later\n"
    );
    let text = load(dir.path(), &bad).unwrap_err().to_string();
    assert!(
        text.contains("config.yaml:14:11: admin.listen \"localhost\" is not an address"),
        "{text}"
    );
    assert!(
        text.contains("config.yaml:16:12: audit.subject \"audit.>\" is not a NATS subject"),
        "{text}"
    );
    assert!(
        text.contains("config.yaml:18:13: invalid duration \"later\""),
        "{text}"
    );
}

#[test]
fn the_key_wait_follows_the_server_timeout_and_stays_below_it() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let good = GOOD.replace("TENANT", TENANT);
    let with = |callout: &str| good.replace("max_ttl: 30m", &format!("max_ttl: 30m\n{callout}"));

    let config = load(dir.path(), &with("  server_timeout: 4s")).unwrap();
    assert_eq!(config.callout.server_timeout, Duration::from_secs(4));
    assert_eq!(config.callout.key_wait, Duration::from_millis(1500));
    let config = load(dir.path(), &with("  key_wait: 300ms")).unwrap();
    assert_eq!(config.callout.key_wait, Duration::from_millis(300));

    let text = load(dir.path(), &with("  key_wait: 2s"))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains(
            "key_wait must be longer than zero and shorter than callout.server_timeout \
                 (2000 ms)"
        ),
        "{text}"
    );
    let text = load(dir.path(), &with("  server_timeout: 0s"))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("callout.server_timeout must be longer than zero"),
        "{text}"
    );
}

#[test]
fn the_request_signature_is_checked_for_shape_unless_verification_is_asked_for() {
    use crate::nats_jwt::SignatureCheck;
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let good = GOOD.replace("TENANT", TENANT);
    let with = |callout: &str| good.replace("max_ttl: 30m", &format!("max_ttl: 30m\n{callout}"));

    let config = load(dir.path(), &good).unwrap();
    assert_eq!(config.callout.request_signature, SignatureCheck::Shape);
    let config = load(dir.path(), &with("  verify_request_signature: true")).unwrap();
    assert_eq!(config.callout.request_signature, SignatureCheck::Verify);
    let config = load(dir.path(), &with("  verify_request_signature: false")).unwrap();
    assert_eq!(config.callout.request_signature, SignatureCheck::Shape);

    let text = load(dir.path(), &with("  verify_request_signature: sometimes"))
        .unwrap_err()
        .to_string();
    assert!(text.contains("config.yaml:7:29: invalid boolean"), "{text}");
}

#[test]
fn publish_subjects_are_literal() {
    for ok in ["audit", "entra-callout.audit", "a.b_c.D-1"] {
        assert!(is_publish_subject(ok), "{ok}");
    }
    for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "a\tb"] {
        assert!(!is_publish_subject(bad), "{bad:?}");
    }
}

#[test]
fn users_are_never_placed_in_the_system_or_callout_account() {
    let dir = tempfile::tempdir().unwrap();
    for account in ["SYS", "AUTH", "$SYS"] {
        std::fs::write(dir.path().join("policy.yaml"), policy_for(account)).unwrap();
        let err = load(dir.path(), &GOOD.replace("TENANT", TENANT)).unwrap_err();
        assert!(
            err.to_string().contains("policy.yaml:5:"),
            "{account}: {err}"
        );
    }
}
#[cfg(unix)]
#[test]
fn secret_files_open_to_others_are_warned_about_not_refused() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let seed = env()["ISSUER_SEED"];
    let (issuer, password) = (dir.path().join("issuer.nk"), dir.path().join("pass"));
    std::fs::write(&issuer, seed).unwrap();
    std::fs::write(&password, "pwd").unwrap();
    let text = GOOD
        .replace("TENANT", TENANT)
        .replace("password_env: NATS_PASSWORD", "password_file: pass")
        .replace(
            "issuer_seed_env: ISSUER_SEED",
            "issuer_seed_file: issuer.nk",
        );
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };

    set(&issuer, 0o600);
    set(&password, 0o400);
    assert_eq!(load(dir.path(), &text).unwrap().warnings, vec![]);

    set(&issuer, 0o644);
    set(&password, 0o620);
    let warnings: Vec<String> = load(dir.path(), &text)
        .expect("a warning does not stop the service")
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    let config = dir.path().join("config.yaml").display().to_string();
    assert_eq!(
        warnings,
        vec![
            format!(
                "{config}:3:18: password file {} has mode 0620, open to group or others; \
                     restrict it to 0600",
                password.display()
            ),
            format!(
                "{config}:5:21: issuer seed file {} has mode 0644, open to group or \
                     others; restrict it to 0600",
                issuer.display()
            ),
        ]
    );
    assert!(
        !warnings.concat().contains(seed),
        "the seed itself is never shown"
    );
}
