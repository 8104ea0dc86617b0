//! The `entra-callout` binary's offline commands.

use std::process::Command;

use crate::support::issuer::{AUDIENCE, TENANT};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_entra-callout"))
}

/// Writes keys and a configuration into `dir`, returning the configuration's path.
fn write_config(dir: &std::path::Path, policy: &str) -> std::path::PathBuf {
    let status = bin()
        .args(["keys", "init"])
        .arg(dir.join("keys"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
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
        "version: 1\nrules:\n  - name: readers\n    tenant: {TENANT}\n    when: {{ roles: [Nats.Reader] }}\n    \
         account: APP\n    subscribe: {{ allow: [\"ml.{{tid}}.>\"] }}\n"
    );
    let config = write_config(dir.path(), &policy);
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok (1 provider(s), 1 policy rule(s))"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_policy_problem_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "version: 1\nrules:\n  - name: a\n    when: { roles: [R] }\n    account: APP\n    \
                  publish: { allow: [\"orders..new\"] }\n  - name: b\n    when: { roles: [R] }\n    \
                  account: SYS\n    subscribe: { allow: [\"x.{nope}\"] }\n";
    let config = write_config(dir.path(), policy);
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("policy.yaml").display().to_string();
    for at in [":6:24: ", ":9:14: ", ":10:26: "] {
        assert!(
            stderr.contains(&format!("{file}{at}")),
            "missing {at} in:\n{stderr}"
        );
    }
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
