//! Operator-mode deployments built with the service's own tooling: `keys::init_operator`
//! writes the key directory and `nats_config::operator_mode` the nats-server configuration
//! (operator JWT, SYS/AUTH/target account JWTs preloaded, bearer `default_sentinel`), so the
//! tests exercise exactly what `keys init` and `nats-config` give operators.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use entra_callout::keys::{self, OperatorKeys};
use entra_callout::nats_config::{self, Resolver};
use entra_callout::nats_jwt::{self, Account, Claims, Signer};

/// Writes operator-mode keys with target `accounts` into `dir`.
pub fn init(dir: &Path, accounts: &[&str]) -> OperatorKeys {
    let names: Vec<String> = accounts.iter().map(|a| (*a).to_owned()).collect();
    keys::init_operator(dir, &names, now()).expect("operator keys")
}

/// The nats-server configuration `nats-config --mode operator` prints, with the callout
/// account's claims passed through `edit` (a no-op keeps the rendered text as is).
pub fn server_config(
    keys: &OperatorKeys,
    resolver: &Resolver,
    edit: impl FnOnce(&mut Claims<Account>),
) -> String {
    let now = now();
    let text = nats_config::operator_mode(keys, resolver, now).expect("server configuration");
    // Signing is deterministic, so the rendered AUTH JWT can be found and swapped.
    let (_, jwts) = nats_config::operator_jwts(keys, now).unwrap();
    let original = jwts.iter().find(|a| a.name == "AUTH").unwrap();
    let mut claims = nats_config::callout_claims(keys);
    edit(&mut claims);
    let replaced = nats_jwt::encode(&mut claims, &operator(keys), now).unwrap();
    assert!(text.contains(&original.jwt));
    text.replace(&original.jwt, &replaced)
}

/// Target account `name`'s JWT revoking `revocations` (user key → revoked before), signed by
/// the operator: what `$SYS.REQ.CLAIMS.UPDATE` takes.
pub fn revoking(keys: &OperatorKeys, name: &str, revocations: &[(&str, u64)]) -> String {
    let mut claims = nats_config::target_claims(keys, name).expect("known account");
    claims.nats.revocations = revocations
        .iter()
        .map(|(key, at)| ((*key).to_owned(), *at))
        .collect::<BTreeMap<_, _>>();
    nats_jwt::encode(&mut claims, &operator(keys), now()).unwrap()
}

/// `claims` signed by the operator: an account JWT `$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE` takes.
pub fn signed(keys: &OperatorKeys, claims: &mut Claims<Account>) -> String {
    nats_jwt::encode(claims, &operator(keys), now()).unwrap()
}

/// The entra-callout configuration for `keys` in `dir`'s `keys/` subdirectory.
pub fn service_config(keys: &OperatorKeys, url: &str, providers: &str) -> String {
    let mut accounts = String::new();
    for (name, target) in &keys.accounts {
        accounts.push_str(&format!(
            "  {name}:\n    public_key: {}\n    signing_key_seed_file: keys/{}\n",
            target.account.public_key(),
            keys::signing_key_file(name),
        ));
    }
    format!(
        "nats:\n  url: {url}\n  credentials_file: keys/{creds}\n\
         callout:\n  mode: operator\n  issuer_seed_file: keys/{seed}\n  xkey_seed_file: keys/{xkey}\n  \
         max_ttl: 15m\n  drain_timeout: 5s\n\
         accounts:\n{accounts}\
         {providers}\
         policies: policies.yaml\nadmin:\n  listen: 127.0.0.1:0\nlog:\n  format: json\n",
        creds = keys::SERVICE_CREDS,
        seed = keys::CALLOUT_SEED,
        xkey = keys::XKEY_SEED,
    )
}

/// Path of a file in the key directory under `dir`.
pub fn key_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("keys").join(name)
}

fn now() -> u64 {
    entra_callout::telemetry::unix_now()
}

fn operator(keys: &OperatorKeys) -> Signer {
    Signer::new(keys.operator.clone()).unwrap()
}
