//! Credential rotation: the service's seed and password files are watched, and new material is
//! put in use without a restart.
//!
//! Watched, when given as files: the issuer seed, the xkey seed, the NATS password and (operator
//! mode) each account's signing key seed. Secrets and Key Vault CSI mounts update like
//! ConfigMaps — a new `..data` symlink is renamed over the old — so, as for policies
//! ([`crate::reload`]), the directories are watched, not the files; SIGHUP checks every file too.
//!
//! A changed file is read and parsed; only valid material is swapped in, as a whole:
//!
//! - keys go into the [`Authorizer`], where every request answers with the keys current when it
//!   arrived. The issuer (config mode) and the xkey the rotation replaced are kept, because
//!   nats-server keeps sending requests for them until its own configuration is reloaded: those
//!   are still opened and answered with the old keys ([`crate::callout::Keys`]).
//! - the password goes into the [`SharedSecret`] the NATS connection reads at every (re)connect;
//!   the connection that is up stays up.
//!
//! A file whose new content is unusable is refused: the previous material stays in use, the
//! error is logged (never the content) and counted in `entra_callout_credential_reloads_total`.
//! Content equal to what is in use (a Secret update rewrites every key in it) changes nothing
//! and is not counted. Environment variables cannot change under a running process and are not
//! watched.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::accounts::AccountsError;
use crate::callout::Authorizer;
use crate::metrics::Metrics;
use crate::nats_jwt::Signer;
use crate::reload::{Watched, hangup, watch_dir, watch_target};
use crate::secret::{Secret, SharedSecret};

/// Quiet time after the last change before the files are read: one Secret update is several
/// events (new directory, new symlink, rename, removal).
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The credential files the configuration named; environment variables are not listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialFiles {
    /// `nats.password_file`.
    pub nats_password: Option<PathBuf>,
    /// `callout.issuer_seed_file`.
    pub issuer: Option<PathBuf>,
    /// `callout.xkey_seed_file`.
    pub xkey: Option<PathBuf>,
    /// Operator mode: `accounts.NAME.signing_key_seed_file`, by account name.
    pub accounts: BTreeMap<String, PathBuf>,
}

impl CredentialFiles {
    /// Every file with the credential it holds.
    pub fn entries(&self) -> Vec<(Credential, PathBuf)> {
        let single = [
            (Credential::NatsPassword, &self.nats_password),
            (Credential::Issuer, &self.issuer),
            (Credential::Xkey, &self.xkey),
        ];
        let single = single
            .into_iter()
            .filter_map(|(credential, path)| path.clone().map(|path| (credential, path)));
        let accounts = self
            .accounts
            .iter()
            .map(|(name, path)| (Credential::Account(name.clone()), path.clone()));
        single.chain(accounts).collect()
    }
}

/// One rotatable credential.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Credential {
    /// The service's own NATS password.
    NatsPassword,
    /// The issuer (config mode) or callout account (operator mode) seed.
    Issuer,
    /// The curve seed requests are sealed to.
    Xkey,
    /// Operator mode: the signing key of the account policies call by this name.
    Account(String),
}

impl Credential {
    /// The `credential` label of `entra_callout_credential_reloads_total`.
    pub fn label(&self) -> String {
        match self {
            Self::NatsPassword => "nats_password".to_owned(),
            Self::Issuer => "issuer".to_owned(),
            Self::Xkey => "xkey".to_owned(),
            Self::Account(name) => format!("account:{name}"),
        }
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NatsPassword => f.write_str("NATS password"),
            Self::Issuer => f.write_str("issuer seed"),
            Self::Xkey => f.write_str("xkey seed"),
            Self::Account(name) => write!(f, "account `{name}` signing key seed"),
        }
    }
}

/// Why new material was refused. Never holds the material.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read the {credential} file {}: {source}", path.display())]
    Read {
        /// Which credential.
        credential: Credential,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is empty (or whitespace).
    #[error("the {credential} file {} is empty", path.display())]
    Empty {
        /// Which credential.
        credential: Credential,
        /// The file.
        path: PathBuf,
    },
    /// The file does not hold a seed of the kind the credential needs.
    #[error("the {credential} file {} does not hold {expected}", path.display())]
    NotASeed {
        /// Which credential.
        credential: Credential,
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
    },
    /// The seed cannot sign for its account.
    #[error("the {credential} file {}: {source}", path.display())]
    Account {
        /// Which credential.
        credential: Credential,
        /// The file.
        path: PathBuf,
        /// Why.
        source: AccountsError,
    },
}

/// Why watching could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// A directory holding a credential file could not be watched.
    #[error("cannot watch {dir} for credential changes: {source}")]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: notify::Error,
    },
    /// The SIGHUP handler could not be installed.
    #[error(transparent)]
    Signal(#[from] crate::reload::ReloadError),
}

/// What a check of one file did.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// The file holds what is in use (or the same refused content as last time).
    Unchanged,
    /// New material is in use; its public key (none for a password).
    Rotated(Option<String>),
}

/// Puts new credential material in use when the files change.
pub struct Rotator {
    files: Vec<(Credential, PathBuf)>,
    authorizer: Arc<Authorizer>,
    /// The password the NATS connection reads, when the service connects with one.
    password: Option<SharedSecret>,
    metrics: Arc<Metrics>,
    /// The content last refused per credential, so one bad file is logged and counted once,
    /// not at every event in its directory.
    refused: Mutex<BTreeMap<Credential, Secret>>,
}

impl Rotator {
    /// A rotator for `files` that swaps keys into `authorizer` and passwords into `password`.
    pub fn new(
        files: &CredentialFiles,
        authorizer: Arc<Authorizer>,
        password: Option<SharedSecret>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let files: Vec<_> = files
            .entries()
            .into_iter()
            .filter(|(credential, _)| *credential != Credential::NatsPassword || password.is_some())
            .collect();
        let labels: Vec<String> = files
            .iter()
            .map(|(credential, _)| credential.label())
            .collect();
        metrics.register_credentials(labels.iter().map(String::as_str));
        Self {
            files,
            authorizer,
            password,
            metrics,
            refused: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether any file is watched.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Reads every file and puts what changed in use. Blocks on file I/O.
    pub fn check_all(&self) {
        for (credential, path) in &self.files {
            self.check(credential, path);
        }
    }

    /// Reads one file and puts its content in use if it changed and is valid; logs and counts
    /// the outcome. `None` when the content was refused.
    pub fn check(&self, credential: &Credential, path: &Path) -> Option<Checked> {
        let label = credential.label();
        match self.apply(credential, path) {
            Ok(Checked::Rotated(public)) => {
                self.metrics.record_credential_reload(&label, true);
                info!(
                    credential = %label,
                    path = %path.display(),
                    public_key = public.as_deref().unwrap_or_default(),
                    "credential rotated: the new one is in use"
                );
                Some(Checked::Rotated(public))
            }
            Ok(Checked::Unchanged) | Err(None) => Some(Checked::Unchanged),
            Err(Some(err)) => {
                self.metrics.record_credential_reload(&label, false);
                error!(
                    credential = %label,
                    error = %err,
                    "credential not reloaded; the previous one stays in use"
                );
                None
            }
        }
    }

    /// `Err(None)`: refused, but the same content was refused (and logged) before.
    fn apply(
        &self,
        credential: &Credential,
        path: &Path,
    ) -> Result<Checked, Option<CredentialError>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => Secret::new(text.trim().to_owned()),
            Err(source) => {
                // Secret and CSI volumes swap atomically, so a file is never missing mid-update:
                // an unreadable one is an operator's problem, reported at every change.
                return Err(Some(CredentialError::Read {
                    credential: credential.clone(),
                    path: path.to_path_buf(),
                    source,
                }));
            }
        };
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused
            .get(credential)
            .is_some_and(|old| old.expose() == text.expose())
        {
            return Err(None);
        }
        match self.put_in_use(credential, path, &text) {
            Ok(checked) => {
                refused.remove(credential);
                Ok(checked)
            }
            Err(err) => {
                refused.insert(credential.clone(), text);
                Err(Some(err))
            }
        }
    }

    fn put_in_use(
        &self,
        credential: &Credential,
        path: &Path,
        text: &Secret,
    ) -> Result<Checked, CredentialError> {
        let value = text.expose();
        if value.is_empty() {
            return Err(CredentialError::Empty {
                credential: credential.clone(),
                path: path.to_path_buf(),
            });
        }
        let not_a_seed = |expected| CredentialError::NotASeed {
            credential: credential.clone(),
            path: path.to_path_buf(),
            expected,
        };
        let account_error = |source| CredentialError::Account {
            credential: credential.clone(),
            path: path.to_path_buf(),
            source,
        };
        let keys = self.authorizer.keys();
        let signers = keys.signers();
        match credential {
            Credential::NatsPassword => {
                let Some(password) = &self.password else {
                    return Ok(Checked::Unchanged);
                };
                if password.current().expose() == value {
                    return Ok(Checked::Unchanged);
                }
                password.replace(text.clone());
                Ok(Checked::Rotated(None))
            }
            Credential::Xkey => {
                let xkey = nkeys::XKey::from_seed(value)
                    .map_err(|_| not_a_seed("a curve seed (SX...)"))?;
                let public = xkey.public_key();
                if keys.xkey_public().as_deref() == Some(public.as_str()) {
                    return Ok(Checked::Unchanged);
                }
                self.authorizer.rotate_xkey(xkey);
                Ok(Checked::Rotated(Some(public)))
            }
            Credential::Issuer => {
                let signer =
                    account_seed(value).ok_or_else(|| not_a_seed("an account seed (SA...)"))?;
                let public = signer.public_key().to_owned();
                if signers.response().key().public_key() == public {
                    return Ok(Checked::Unchanged);
                }
                self.authorizer
                    .rotate_issuer(signer)
                    .map_err(account_error)?;
                Ok(Checked::Rotated(Some(public)))
            }
            Credential::Account(name) => {
                let signer =
                    account_seed(value).ok_or_else(|| not_a_seed("an account seed (SA...)"))?;
                let public = signer.public_key().to_owned();
                if signers
                    .targets()
                    .get(name)
                    .is_some_and(|current| current.key().public_key() == public)
                {
                    return Ok(Checked::Unchanged);
                }
                self.authorizer
                    .rotate_account_key(name, signer)
                    .map_err(account_error)?;
                Ok(Checked::Rotated(Some(public)))
            }
        }
    }

    /// Checks the files on SIGHUP and when their directories change, until `shutdown`.
    pub fn spawn(
        self: Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<JoinHandle<()>, RotateError> {
        let (changed_tx, mut changed) = mpsc::channel::<()>(1);
        let watchers = self.watch(&changed_tx)?;
        drop(changed_tx);
        let mut hangup = hangup()?;
        Ok(tokio::spawn(async move {
            // The watchers stop when dropped; they live as long as this task.
            let _watchers = watchers;
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = hangup.recv() => info!("received SIGHUP; checking credential files"),
                    change = changed.recv() => {
                        if change.is_none() {
                            return;
                        }
                        loop {
                            tokio::select! {
                                () = &mut shutdown => return,
                                () = tokio::time::sleep(DEBOUNCE) => break,
                                more = changed.recv() => if more.is_none() { break },
                            }
                        }
                    }
                }
                let rotator = Arc::clone(&self);
                if let Err(err) = tokio::task::spawn_blocking(move || rotator.check_all()).await {
                    error!(error = %err, "credential check did not finish");
                }
            }
        }))
    }

    /// One watcher per directory holding a credential file.
    fn watch(
        &self,
        changed: &mpsc::Sender<()>,
    ) -> Result<Vec<notify::RecommendedWatcher>, RotateError> {
        let mut dirs: BTreeMap<PathBuf, Vec<Watched>> = BTreeMap::new();
        for (_, path) in &self.files {
            let (dir, watched) = watch_target(path);
            dirs.entry(dir).or_default().push(watched);
        }
        let mut watchers = Vec::new();
        for (dir, watched) in dirs {
            let watcher = watch_dir(
                &dir,
                watched,
                changed.clone(),
                "credential file watch error",
            )
            .map_err(|source| RotateError::Watch {
                dir: dir.clone(),
                source,
            })?;
            info!(dir = %dir.display(), "watching credential files for changes");
            watchers.push(watcher);
        }
        Ok(watchers)
    }
}

/// `value` as an account seed (`SA...`), or `None`.
fn account_seed(value: &str) -> Option<Signer> {
    let signer = Signer::from_seed(value).ok()?;
    (signer.kind() == nkeys::KeyPairType::Account).then_some(signer)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::oidc::{ProviderSettings, Verifier};
    use crate::policy::{CompileOptions, PolicySet};
    use crate::testutil::TENANT;

    /// A config-mode authorizer with `issuer` and `xkey`, and one policy.
    fn authorizer(dir: &Path, issuer: &nkeys::KeyPair, xkey: &nkeys::XKey) -> Arc<Authorizer> {
        let provider =
            ProviderSettings::new("entra", TENANT, vec!["api://nats".to_owned()]).unwrap();
        let verifier = Arc::new(Verifier::new(vec![provider]).unwrap());
        let policy = dir.join("policies.yaml");
        std::fs::write(
            &policy,
            format!(
                "version: 1\ntenants:\n  - name: t\n    entra_tenants: [{TENANT}]\n    account: APP\n\
                 roles:\n  - name: r\n    publish: {{ allow: [\"a.>\"] }}\n\
                 bindings:\n  - name: b\n    tenant: t\n    roles: [r]\n    when: {{ app_roles: [R] }}\n"
            ),
        )
        .unwrap();
        let options = CompileOptions {
            forbidden_accounts: vec!["SYS".into(), "AUTH".into()],
            default_max_ttl: Duration::from_secs(3600),
            providers: Vec::new(),
            accounts: Vec::new(),
        };
        let policies = PolicySet::load(&policy, &options).unwrap();
        let seed = xkey.seed().unwrap();
        Arc::new(Authorizer::new(
            Signer::new(issuer.clone()).unwrap(),
            Some(nkeys::XKey::from_seed(&seed).unwrap()),
            verifier,
            policies,
            2,
        ))
    }

    fn count(metrics: &Metrics, credential: &str, result: &str) -> String {
        let text = metrics.render();
        let prefix = format!(
            "entra_callout_credential_reloads_total{{credential=\"{credential}\",result=\"{result}\"}} "
        );
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("{prefix} not in\n{text}"))
    }

    #[test]
    fn changed_files_are_put_in_use_and_unusable_ones_keep_the_old_material() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, xkey) = (nkeys::KeyPair::new_account(), nkeys::XKey::new());
        let files = CredentialFiles {
            nats_password: Some(dir.path().join("password")),
            issuer: Some(dir.path().join("issuer.nk")),
            xkey: Some(dir.path().join("xkey.nk")),
            accounts: BTreeMap::new(),
        };
        std::fs::write(dir.path().join("password"), "old\n").unwrap();
        std::fs::write(dir.path().join("issuer.nk"), issuer.seed().unwrap()).unwrap();
        std::fs::write(dir.path().join("xkey.nk"), xkey.seed().unwrap()).unwrap();
        let authorizer = authorizer(dir.path(), &issuer, &xkey);
        let password = SharedSecret::new(Secret::new("old".to_owned()));
        let metrics = Arc::new(Metrics::new().unwrap());
        let rotator = Rotator::new(
            &files,
            Arc::clone(&authorizer),
            Some(password.clone()),
            Arc::clone(&metrics),
        );

        // What is in use already changes nothing and counts nothing.
        rotator.check_all();
        for credential in ["nats_password", "issuer", "xkey"] {
            assert_eq!(count(&metrics, credential, "ok"), "0", "{credential}");
            assert_eq!(count(&metrics, credential, "error"), "0", "{credential}");
        }

        let (new_issuer, new_xkey) = (nkeys::KeyPair::new_account(), nkeys::XKey::new());
        std::fs::write(dir.path().join("password"), "new").unwrap();
        std::fs::write(dir.path().join("issuer.nk"), new_issuer.seed().unwrap()).unwrap();
        std::fs::write(dir.path().join("xkey.nk"), new_xkey.seed().unwrap()).unwrap();
        rotator.check_all();
        assert_eq!(password.current().expose(), "new");
        let keys = authorizer.keys();
        assert_eq!(
            keys.signers().response().key().public_key(),
            new_issuer.public_key()
        );
        assert_eq!(keys.xkey_public(), Some(new_xkey.public_key()));
        for credential in ["nats_password", "issuer", "xkey"] {
            assert_eq!(count(&metrics, credential, "ok"), "1", "{credential}");
        }

        // An unusable seed is refused with a message that names the file, never its content,
        // and is counted once however often its directory changes.
        let issuer_path = dir.path().join("issuer.nk");
        std::fs::write(&issuer_path, "SAsecret-garbage").unwrap();
        let err = rotator
            .apply(&Credential::Issuer, &issuer_path)
            .unwrap_err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "the issuer seed file {} does not hold an account seed (SA...)",
                issuer_path.display()
            )
        );
        assert!(matches!(
            rotator.apply(&Credential::Issuer, &issuer_path),
            Err(None)
        ));
        std::fs::write(&issuer_path, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
        assert_eq!(rotator.check(&Credential::Issuer, &issuer_path), None);
        std::fs::write(dir.path().join("xkey.nk"), "").unwrap();
        assert_eq!(
            rotator.check(&Credential::Xkey, &dir.path().join("xkey.nk")),
            None
        );
        assert_eq!(
            authorizer.keys().signers().response().key().public_key(),
            new_issuer.public_key(),
            "the last good issuer stays"
        );
        assert_eq!(authorizer.keys().xkey_public(), Some(new_xkey.public_key()));
        assert_eq!(count(&metrics, "issuer", "error"), "1");
        assert_eq!(count(&metrics, "xkey", "error"), "1");
    }

    /// Kubernetes updates a Secret volume by renaming a new `..data` symlink over the old.
    #[tokio::test]
    async fn a_secret_volume_swap_is_picked_up() {
        use std::os::unix::fs::symlink;

        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("secret");
        std::fs::create_dir_all(mount.join("..1")).unwrap();
        let (issuer, xkey) = (nkeys::KeyPair::new_account(), nkeys::XKey::new());
        std::fs::write(mount.join("..1/issuer.nk"), issuer.seed().unwrap()).unwrap();
        symlink("..1", mount.join("..data")).unwrap();
        symlink("..data/issuer.nk", mount.join("issuer.nk")).unwrap();
        let files = CredentialFiles {
            issuer: Some(mount.join("issuer.nk")),
            ..CredentialFiles::default()
        };
        let authorizer = authorizer(dir.path(), &issuer, &xkey);
        let metrics = Arc::new(Metrics::new().unwrap());
        let rotator = Arc::new(Rotator::new(&files, Arc::clone(&authorizer), None, metrics));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rotator
            .spawn(async {
                let _ = stopped.await;
            })
            .unwrap();

        let rotated = nkeys::KeyPair::new_account();
        std::fs::create_dir(mount.join("..2")).unwrap();
        std::fs::write(mount.join("..2/issuer.nk"), rotated.seed().unwrap()).unwrap();
        symlink("..2", mount.join("..data_tmp")).unwrap();
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
        std::fs::remove_dir_all(mount.join("..1")).unwrap();

        for _ in 0..100 {
            if authorizer.keys().signers().response().key().public_key() == rotated.public_key() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            authorizer.keys().signers().response().key().public_key(),
            rotated.public_key()
        );
        let _ = stop.send(());
        task.await.unwrap();
    }
}
