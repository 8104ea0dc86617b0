//! Key material for a new deployment: `entra-callout keys init DIR [--mode operator]`.
//!
//! Config mode: the issuer account seed that signs user JWTs, the curve seed that opens
//! encrypted requests, and the service's NATS password. Operator mode: an operator, the system,
//! callout and target accounts (each target with a plain signing key the service mints with),
//! the service's and the sentinel's `.creds`, a system user's `.creds` for pushing account
//! updates, and the curve seed. Secret files are written readable by their owner only and are
//! never overwritten; seeds are never printed, public keys are.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use nkeys::{KeyPair, KeyPairType};

use crate::nats_jwt::{self, Claims, Permission, Signer, User, format_credentials};

/// File names inside the key directory.
pub const ISSUER_SEED: &str = "issuer.nk";
/// Public issuer account key, for nats-server's `auth_callout.issuer`.
pub const ISSUER_PUBLIC: &str = "issuer.pub";
/// Curve seed for encrypted requests.
pub const XKEY_SEED: &str = "xkey.nk";
/// Public curve key, for nats-server's `auth_callout.xkey`.
pub const XKEY_PUBLIC: &str = "xkey.pub";
/// The service user's NATS password.
pub const NATS_PASSWORD: &str = "nats-password";

/// Operator mode: the operator seed (`SO...`); signs account JWTs.
pub const OPERATOR_SEED: &str = "operator.nk";
/// Operator mode: the system account seed.
pub const SYSTEM_SEED: &str = "sys.nk";
/// Operator mode: a system-account user, for pushing account JWT updates (revocations).
pub const SYSTEM_CREDS: &str = "sys-user.creds";
/// Operator mode: the callout account seed; signs responses and the service/sentinel users.
pub const CALLOUT_SEED: &str = "auth.nk";
/// Operator mode: the service's connection, a user of the callout account in `auth_users`.
pub const SERVICE_CREDS: &str = "service.creds";
/// Operator mode: the bearer sentinel (callout account, denied everything) clients present.
pub const SENTINEL_CREDS: &str = "sentinel.creds";
/// Operator mode: prefix of target account files, `account-NAME.nk` and
/// `account-NAME-signing.nk`.
pub const ACCOUNT_PREFIX: &str = "account-";
/// Operator mode: suffix of a target account's signing key file.
const SIGNING_SUFFIX: &str = "-signing.nk";

/// Errors while creating or reading key material.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A file already exists; we never overwrite keys.
    #[error("{0}: already exists; refusing to overwrite key material")]
    Exists(PathBuf),
    /// Creating the directory or a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key generator failed.
    #[error("cannot generate a key: {0}")]
    Generate(String),
    /// A key file does not hold the kind of key expected.
    #[error("{path}: not {expected}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
    },
    /// An account name that cannot be a file name or a NATS account name.
    #[error("account name {0:?} must be letters, digits, `-` or `_`")]
    AccountName(String),
    /// A JWT could not be built.
    #[error("cannot sign a jwt: {0}")]
    Jwt(#[from] nats_jwt::JwtError),
}

/// Operator-mode key material, as `keys init --mode operator` wrote it.
pub struct OperatorKeys {
    /// The operator (`SO...`).
    pub operator: KeyPair,
    /// The system account.
    pub system: KeyPair,
    /// The callout account.
    pub callout: KeyPair,
    /// Public key of the service's user (the only `auth_users` entry).
    pub service_user: String,
    /// The bearer sentinel user JWT clients connect with (or the server's `default_sentinel`).
    pub sentinel_jwt: String,
    /// Public key of the service's curve key.
    pub xkey: String,
    /// Target accounts by name: the account key and its plain signing key.
    pub accounts: BTreeMap<String, TargetKeys>,
}

/// One target account's keys.
pub struct TargetKeys {
    /// The account (its seed signs nothing at runtime; kept for the operator).
    pub account: KeyPair,
    /// The plain signing key the service mints users with.
    pub signing: KeyPair,
}

/// Public parts of freshly created keys.
#[derive(Debug)]
pub struct Created {
    /// Issuer account public key (`A...`).
    pub issuer: String,
    /// Curve public key (`X...`).
    pub xkey: String,
}

/// Creates `dir` (if needed) and writes new keys into it. Fails before writing anything when
/// any of the files already exists.
pub fn init(dir: &Path) -> Result<Created, KeysError> {
    std::fs::create_dir_all(dir).map_err(|source| KeysError::Io {
        path: dir.into(),
        source,
    })?;
    for name in [
        ISSUER_SEED,
        ISSUER_PUBLIC,
        XKEY_SEED,
        XKEY_PUBLIC,
        NATS_PASSWORD,
    ] {
        let path = dir.join(name);
        if path.exists() {
            return Err(KeysError::Exists(path));
        }
    }
    let issuer = nkeys::KeyPair::new_account();
    let issuer_seed = issuer
        .seed()
        .map_err(|e| KeysError::Generate(e.to_string()))?;
    let xkey = nkeys::XKey::new();
    let xkey_seed = xkey
        .seed()
        .map_err(|e| KeysError::Generate(e.to_string()))?;
    let password = generate_password()?;

    write_private(&dir.join(ISSUER_SEED), &issuer_seed)?;
    write_private(&dir.join(XKEY_SEED), &xkey_seed)?;
    write_private(&dir.join(NATS_PASSWORD), &password)?;
    write_public(&dir.join(ISSUER_PUBLIC), &issuer.public_key())?;
    write_public(&dir.join(XKEY_PUBLIC), &xkey.public_key())?;
    Ok(Created {
        issuer: issuer.public_key(),
        xkey: xkey.public_key(),
    })
}

/// Length of [`generate_password`]'s passwords.
pub const PASSWORD_LEN: usize = 40;
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new random password of [`PASSWORD_LEN`] ASCII letters and digits, the first a letter.
///
/// The shape is chosen for every consumer: nats-server parses the value of a `$VARIABLE` as a
/// configuration value, so text starting with a digit or `-` (base64url did in about 2 % of
/// passwords) became a number, a date or a parse error; letters and digits also need no quoting
/// in YAML, shell, URLs or Kubernetes Secrets. Entropy: log2(52) + 39 × log2(62) ≈ 237.9 bits
/// (the base64url of 24 random bytes it replaces had 192). Characters are drawn by rejection
/// sampling, so each is uniform over its alphabet.
pub fn generate_password() -> Result<String, KeysError> {
    let mut password = String::with_capacity(PASSWORD_LEN);
    let mut raw = [0u8; 64];
    while password.len() < PASSWORD_LEN {
        getrandom::getrandom(&mut raw).map_err(|e| KeysError::Generate(e.to_string()))?;
        for &byte in &raw {
            let alphabet = if password.is_empty() {
                LETTERS
            } else {
                ALPHANUMERIC
            };
            // Bytes at or above the largest multiple of the alphabet's size would favour its
            // first characters: skip them.
            let limit = 256 - 256 % alphabet.len();
            if usize::from(byte) >= limit || password.len() == PASSWORD_LEN {
                continue;
            }
            if let Some(&c) = alphabet.get(usize::from(byte) % alphabet.len()) {
                password.push(char::from(c));
            }
        }
    }
    Ok(password)
}

/// Creates `dir` (if needed) and writes operator-mode keys with target `accounts` into it.
/// Fails before writing anything when any of the files already exists. `now` stamps the user
/// JWTs in the `.creds` files.
pub fn init_operator(dir: &Path, accounts: &[String], now: u64) -> Result<OperatorKeys, KeysError> {
    for name in accounts {
        if !is_account_name(name) {
            return Err(KeysError::AccountName(name.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| KeysError::Io {
        path: dir.into(),
        source,
    })?;
    let mut files = vec![
        OPERATOR_SEED.to_owned(),
        SYSTEM_SEED.to_owned(),
        SYSTEM_CREDS.to_owned(),
        CALLOUT_SEED.to_owned(),
        SERVICE_CREDS.to_owned(),
        SENTINEL_CREDS.to_owned(),
        XKEY_SEED.to_owned(),
        XKEY_PUBLIC.to_owned(),
    ];
    for name in accounts {
        files.push(format!("{ACCOUNT_PREFIX}{name}.nk"));
        files.push(format!("{ACCOUNT_PREFIX}{name}{SIGNING_SUFFIX}"));
    }
    for name in &files {
        let path = dir.join(name);
        if path.exists() {
            return Err(KeysError::Exists(path));
        }
    }

    let operator = KeyPair::new_operator();
    let system = KeyPair::new_account();
    let callout = KeyPair::new_account();
    let xkey = nkeys::XKey::new();
    let service = KeyPair::new_user();
    let sentinel = KeyPair::new_user();
    let system_user = KeyPair::new_user();

    // The service's own user is unrestricted inside the callout account, where only the
    // sentinel (denied everything) lives besides it; the server itself denies everyone there
    // publishing to $SYS.REQ.USER.AUTH.
    let mut service_claims = Claims::<User>::with_subject(service.public_key(), User::new());
    service_claims.base.name = "entra-callout".to_owned();
    let service_jwt = nats_jwt::encode(&mut service_claims, &Signer::new(callout.clone())?, now)?;
    let sentinel_jwt = sentinel_jwt(&callout, &sentinel.public_key(), now)?;
    let mut system_claims = Claims::<User>::with_subject(system_user.public_key(), User::new());
    system_claims.base.name = "sys".to_owned();
    let system_jwt = nats_jwt::encode(&mut system_claims, &Signer::new(system.clone())?, now)?;

    write_private(&dir.join(OPERATOR_SEED), &seed_of(&operator)?)?;
    write_private(&dir.join(SYSTEM_SEED), &seed_of(&system)?)?;
    write_private(&dir.join(CALLOUT_SEED), &seed_of(&callout)?)?;
    write_private(
        &dir.join(SYSTEM_CREDS),
        &format_credentials(&system_jwt, &seed_of(&system_user)?),
    )?;
    write_private(
        &dir.join(SERVICE_CREDS),
        &format_credentials(&service_jwt, &seed_of(&service)?),
    )?;
    write_private(
        &dir.join(SENTINEL_CREDS),
        &format_credentials(&sentinel_jwt, &seed_of(&sentinel)?),
    )?;
    let xkey_seed = xkey
        .seed()
        .map_err(|e| KeysError::Generate(e.to_string()))?;
    write_private(&dir.join(XKEY_SEED), &xkey_seed)?;
    write_public(&dir.join(XKEY_PUBLIC), &xkey.public_key())?;
    let mut targets = BTreeMap::new();
    for name in accounts {
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();
        write_private(
            &dir.join(format!("{ACCOUNT_PREFIX}{name}.nk")),
            &seed_of(&account)?,
        )?;
        write_private(
            &dir.join(format!("{ACCOUNT_PREFIX}{name}{SIGNING_SUFFIX}")),
            &seed_of(&signing)?,
        )?;
        targets.insert(name.clone(), TargetKeys { account, signing });
    }
    Ok(OperatorKeys {
        operator,
        system,
        callout,
        service_user: service.public_key(),
        sentinel_jwt,
        xkey: xkey.public_key(),
        accounts: targets,
    })
}

/// Reads what [`init_operator`] wrote. Target accounts are every `account-NAME.nk` with its
/// `account-NAME-signing.nk`.
pub fn load_operator(dir: &Path) -> Result<OperatorKeys, KeysError> {
    let operator = read_seed(&dir.join(OPERATOR_SEED), KeyPairType::Operator)?;
    let system = read_seed(&dir.join(SYSTEM_SEED), KeyPairType::Account)?;
    let callout = read_seed(&dir.join(CALLOUT_SEED), KeyPairType::Account)?;
    let service_user = creds_subject(&dir.join(SERVICE_CREDS))?.0;
    let sentinel_jwt = creds_subject(&dir.join(SENTINEL_CREDS))?.1;
    let xkey_path = dir.join(XKEY_SEED);
    let xkey = nkeys::XKey::from_seed(read_trimmed(&xkey_path)?.as_str())
        .map_err(|_| KeysError::Invalid {
            path: xkey_path,
            expected: "a curve seed (SX...)",
        })?
        .public_key();
    let mut accounts = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|source| KeysError::Io {
        path: dir.into(),
        source,
    })?;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file
            .strip_prefix(ACCOUNT_PREFIX)
            .and_then(|rest| rest.strip_suffix(".nk"))
            .filter(|name| !name.ends_with("-signing"))
        else {
            continue;
        };
        let account = read_seed(&entry.path(), KeyPairType::Account)?;
        let signing = read_seed(
            &dir.join(format!("{ACCOUNT_PREFIX}{name}{SIGNING_SUFFIX}")),
            KeyPairType::Account,
        )?;
        accounts.insert(name.to_owned(), TargetKeys { account, signing });
    }
    Ok(OperatorKeys {
        operator,
        system,
        callout,
        service_user,
        sentinel_jwt,
        xkey,
        accounts,
    })
}

/// The path of target account `name`'s signing key seed inside a key directory.
pub fn signing_key_file(name: &str) -> String {
    format!("{ACCOUNT_PREFIX}{name}{SIGNING_SUFFIX}")
}

/// A bearer user JWT of the callout account that may do nothing: the sentinel. nats-server
/// requires `default_sentinel` to be bearer; a client presenting it still needs a token.
pub fn sentinel_jwt(callout: &KeyPair, user: &str, now: u64) -> Result<String, KeysError> {
    let mut claims = Claims::<User>::with_subject(user, User::new());
    claims.base.name = "sentinel".to_owned();
    let deny_all = Permission {
        allow: Vec::new(),
        deny: vec![">".to_owned()],
    };
    claims.nats.publish = deny_all.clone();
    claims.nats.subscribe = deny_all;
    claims.nats.bearer_token = true;
    Ok(nats_jwt::encode(
        &mut claims,
        &Signer::new(callout.clone())?,
        now,
    )?)
}

/// Account names double as file names: keep them to letters, digits, `-` and `_`.
pub fn is_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.ends_with("-signing")
}

fn seed_of(kp: &KeyPair) -> Result<String, KeysError> {
    kp.seed().map_err(|e| KeysError::Generate(e.to_string()))
}

fn read_trimmed(path: &Path) -> Result<String, KeysError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| KeysError::Io {
            path: path.into(),
            source,
        })
}

fn read_seed(path: &Path, kind: KeyPairType) -> Result<KeyPair, KeysError> {
    let expected = match kind {
        KeyPairType::Operator => "an operator seed (SO...)",
        _ => "an account seed (SA...)",
    };
    KeyPair::from_seed(&read_trimmed(path)?)
        .ok()
        .filter(|kp| kp.key_pair_type() == kind)
        .ok_or_else(|| KeysError::Invalid {
            path: path.into(),
            expected,
        })
}

/// The user public key and JWT of a `.creds` file.
fn creds_subject(path: &Path) -> Result<(String, String), KeysError> {
    let text = read_trimmed(path)?;
    let invalid = || KeysError::Invalid {
        path: path.into(),
        expected: "a NATS credentials file",
    };
    let jwt = text
        .split("-----BEGIN NATS USER JWT-----")
        .nth(1)
        .and_then(|rest| rest.split("------END NATS USER JWT------").next())
        .map(str::trim)
        .ok_or_else(invalid)?;
    let claims = nats_jwt::decode::<User>(jwt).map_err(|_| invalid())?;
    Ok((claims.base.sub, jwt.to_owned()))
}

fn write_private(path: &Path, contents: &str) -> Result<(), KeysError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| KeysError::Io {
        path: path.into(),
        source,
    })?;
    writeln!(file, "{contents}").map_err(|source| KeysError::Io {
        path: path.into(),
        source,
    })
}

fn write_public(path: &Path, contents: &str) -> Result<(), KeysError> {
    std::fs::write(path, format!("{contents}\n")).map_err(|source| KeysError::Io {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_init_writes_private_files_that_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["APP".to_owned(), "OTHER".to_owned()];
        let created = init_operator(dir.path(), &names, 1_000).unwrap();
        let loaded = load_operator(dir.path()).unwrap();
        assert_eq!(loaded.operator.public_key(), created.operator.public_key());
        assert_eq!(loaded.callout.public_key(), created.callout.public_key());
        assert_eq!(loaded.service_user, created.service_user);
        assert_eq!(loaded.sentinel_jwt, created.sentinel_jwt);
        assert_eq!(loaded.xkey, created.xkey);
        assert_eq!(
            loaded.accounts.keys().collect::<Vec<_>>(),
            names.iter().collect::<Vec<_>>()
        );
        let app = &loaded.accounts["APP"];
        assert_eq!(
            app.signing.public_key(),
            created.accounts["APP"].signing.public_key()
        );
        assert_ne!(app.signing.public_key(), app.account.public_key());
        let sentinel = nats_jwt::decode::<User>(&loaded.sentinel_jwt).unwrap();
        assert!(sentinel.nats.bearer_token);
        assert_eq!(sentinel.nats.publish.deny, [">"]);
        assert_eq!(sentinel.base.iss, created.callout.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
                if name.ends_with(".pub") {
                    continue;
                }
                assert_eq!(mode, 0o600, "{name}");
            }
        }
        assert!(matches!(
            init_operator(dir.path(), &names, 1_000),
            Err(KeysError::Exists(_))
        ));
        assert!(matches!(
            init_operator(dir.path(), &["../x".to_owned()], 1_000),
            Err(KeysError::AccountName(_))
        ));
    }

    #[test]
    fn passwords_are_letters_and_digits_starting_with_a_letter_over_the_whole_alphabet() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let password = generate_password().unwrap();
            assert_eq!(password.len(), PASSWORD_LEN, "{password}");
            assert!(password.as_bytes()[0].is_ascii_alphabetic(), "{password}");
            assert!(
                password.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{password}"
            );
            seen.extend(password.bytes().skip(1));
        }
        // 39,000 draws over 62 characters: every one appears unless the sampling is broken.
        assert_eq!(seen.len(), ALPHANUMERIC.len());
    }

    #[test]
    fn init_writes_owner_only_seeds_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let created = init(dir.path()).unwrap();
        assert!(created.issuer.starts_with('A'));
        assert!(created.xkey.starts_with('X'));
        let seed = std::fs::read_to_string(dir.path().join(ISSUER_SEED)).unwrap();
        let kp = nkeys::KeyPair::from_seed(seed.trim()).unwrap();
        assert_eq!(kp.public_key(), created.issuer);
        let xseed = std::fs::read_to_string(dir.path().join(XKEY_SEED)).unwrap();
        assert_eq!(
            nkeys::XKey::from_seed(xseed.trim()).unwrap().public_key(),
            created.xkey
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for name in [ISSUER_SEED, XKEY_SEED, NATS_PASSWORD] {
                let mode = std::fs::metadata(dir.path().join(name))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{name}");
            }
        }
        assert!(matches!(init(dir.path()), Err(KeysError::Exists(_))));
        // The failed second run changed nothing.
        assert_eq!(
            std::fs::read_to_string(dir.path().join(ISSUER_SEED)).unwrap(),
            seed
        );
    }
}
