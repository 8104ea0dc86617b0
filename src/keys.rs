//! Key material for a new deployment: `entra-callout keys init DIR`.
//!
//! Writes the seeds a config-mode deployment needs — the issuer account seed that signs user
//! JWTs, the curve seed that opens encrypted requests, and the service's NATS password — as
//! files readable by their owner only. Seeds are never printed; public keys are.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Errors while creating key material.
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
    let mut raw = [0u8; 24];
    getrandom::getrandom(&mut raw).map_err(|e| KeysError::Generate(e.to_string()))?;
    let password = data_encoding::BASE64URL_NOPAD.encode(&raw);

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
