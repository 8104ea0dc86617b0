//! Generated passwords against nats-server's real parser: `keys init`'s password reaches
//! nats-server through `password: $ENTRA_CALLOUT_NATS_PASSWORD`, and nats-server parses a
//! variable's value as a configuration value, not as a plain string.

use entra_callout::keys::generate_password;

use crate::support::nats::test_config;

/// Passwords per run: the base64url generator this replaced failed about 2 % of the time, so
/// 500 draws would have caught it with probability 1 - 0.98^500 > 0.9999.
const DRAWS: usize = 500;

/// One configuration with a user per password, each read from its own variable: one
/// `nats-server -t` run checks them all.
fn check(passwords: &[String]) -> Result<(), String> {
    let users: Vec<String> = (0..passwords.len())
        .map(|i| format!("    {{ user: u{i}, password: $PW_{i} }}"))
        .collect();
    let config = format!(
        "authorization {{\n  users: [\n{}\n  ]\n}}\n",
        users.join("\n")
    );
    let env: Vec<(String, String)> = passwords
        .iter()
        .enumerate()
        .map(|(i, password)| (format!("PW_{i}"), password.clone()))
        .collect();
    test_config(&config, &env)
}

#[test]
fn nats_server_parses_every_generated_password_as_a_string() {
    let passwords: Vec<String> = (0..DRAWS)
        .map(|_| generate_password().expect("generate"))
        .collect();
    if let Err(complaint) = check(&passwords) {
        panic!("nats-server refused a generated password: {complaint}\npasswords: {passwords:?}");
    }
}

#[test]
fn the_check_catches_the_shapes_base64url_produced() {
    // Shapes the previous generator wrote, with what nats-server says about each: the test
    // above would notice them.
    for (password, complaint) in [
        ("-bc4Xy_9", "Expected a digit but got 'b'"),
        ("12-ab4Xy", "All ISO8601 dates must be in full Zulu form"),
        ("12345678", "interface {} is int64, not string"),
    ] {
        let err = check(&[password.to_owned()]).expect_err(password);
        assert!(err.contains(complaint), "{password}: {err}");
    }
}
