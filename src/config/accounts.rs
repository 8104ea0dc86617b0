//! Operator mode and the service's own credentials: account signing keys, `.creds` files,
//! and warnings about secret files others can read.

use super::*;

/// What [`Validator::accounts`] needs from the rest of the file.
pub(super) struct AccountsInput {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) issuer_account: Option<Spanned<String>>,
    pub(super) callout_at: Loc,
    pub(super) raw: Option<Spanned<BTreeMap<String, Spanned<RawAccount>>>>,
}

impl Validator<'_> {
    /// Settles the mode and the target accounts: sets `callout.signers` and returns the account
    /// names policies may use (empty = any name, config mode without an `accounts` list).
    pub(super) fn accounts(
        &mut self,
        input: AccountsInput,
        nats: &NatsSettings,
        callout: &mut CalloutSettings,
    ) -> Vec<String> {
        let mode = match &input.mode {
            None => Mode::Config,
            Some(m) => match m.value.as_str() {
                "config" => Mode::Config,
                "operator" => Mode::Operator,
                other => {
                    self.problem(
                        m,
                        format!("unknown callout mode {other:?}; expected config or operator"),
                    );
                    return Vec::new();
                }
            },
        };
        let mode_at = input.mode.as_ref().map_or(input.callout_at, Loc::of);
        let entries = input.raw.map(|r| r.value).unwrap_or_default();
        let names: Vec<String> = entries.keys().cloned().collect();
        if mode == Mode::Config {
            if let Some(at) = &input.issuer_account {
                self.problem(at, "callout.issuer_account applies to operator mode only");
            }
            if let NatsAuth::Credentials(_) = nats.auth {
                self.problem_at(
                    mode_at,
                    "nats.credentials_file needs callout.mode: operator; config-mode servers \
                     do not accept user JWTs",
                );
            }
            for (name, entry) in &entries {
                let e = &entry.value;
                let keyed = [
                    &e.public_key,
                    &e.signing_key_seed_file,
                    &e.signing_key_seed_env,
                ];
                if keyed.iter().any(|k| k.is_some()) {
                    self.problem(
                        entry,
                        format!(
                            "account `{name}`: keys apply to operator mode only; in config mode \
                             the callout issuer signs for every account"
                        ),
                    );
                }
            }
            return names;
        }

        if !matches!(nats.auth, NatsAuth::Credentials(_)) {
            self.problem_at(
                mode_at,
                "operator mode: the service connects with nats.credentials_file (a user of the \
                 callout account listed in its auth_users)",
            );
        }
        let response = match &input.issuer_account {
            None => AccountKey::own(callout.issuer.clone()),
            Some(at) => AccountKey::new(&at.value, callout.issuer.clone()),
        };
        let response = match response {
            Ok(key) => key,
            Err(err) => {
                let at = input.issuer_account.as_ref().map_or(mode_at, Loc::of);
                self.problem_at(at, format!("callout.issuer_account: {err}"));
                return names;
            }
        };
        if entries.is_empty() {
            self.problem_at(
                mode_at,
                "operator mode needs `accounts:` with a public_key and signing key seed for \
                 every account the policies use",
            );
        }
        let mut targets = Vec::new();
        for (name, entry) in entries {
            let at = Loc::of(&entry);
            let e = entry.value;
            if let Some(path) = self.file_path(e.signing_key_seed_file.as_ref()) {
                self.credential_files.accounts.insert(name.clone(), path);
            }
            let seed = self.secret(
                &format!("account `{name}` signing key seed"),
                e.signing_key_seed_file,
                e.signing_key_seed_env,
            );
            let (Some(public), Some((seed, seed_at))) = (e.public_key, seed) else {
                self.problem_at(
                    at,
                    format!(
                        "account `{name}` needs public_key and signing_key_seed_file or \
                         signing_key_seed_env"
                    ),
                );
                continue;
            };
            if public.value == response.account() {
                self.problem(
                    &public,
                    format!(
                        "account `{name}` is the callout account; users are never placed there"
                    ),
                );
                continue;
            }
            let Ok(key) = crate::nats_jwt::Signer::from_seed(seed.expose()) else {
                self.problem_at(seed_at, format!("account `{name}`: not a valid nkey seed"));
                continue;
            };
            match AccountKey::new(&public.value, key) {
                Ok(key) => targets.push((name, key)),
                Err(err) => self.problem(&public, format!("account `{name}`: {err}")),
            }
        }
        callout.signers = Signers::operator(response, targets);
        names
    }
}

impl Validator<'_> {
    /// `nats.credentials_file`: resolved and checked to be a `.creds` file.
    pub(super) fn credentials(&mut self, creds: &Spanned<String>, others_given: bool) -> NatsAuth {
        if others_given {
            self.problem(
                creds,
                "nats: give credentials_file alone, without user, password or nkey seed",
            );
        }
        let path = self.base.join(&creds.value);
        match std::fs::read_to_string(&path) {
            Ok(text) if is_credentials(&text) => self.warn_if_shared(creds, &path, "credentials"),
            Ok(_) => self.problem(
                creds,
                format!(
                    "{} is not a NATS credentials file (user JWT and seed)",
                    path.display()
                ),
            ),
            Err(err) => self.problem(creds, format!("credentials file {}: {err}", path.display())),
        }
        NatsAuth::Credentials(path)
    }
}

impl Validator<'_> {
    /// Warns when the secret file at `path` grants any access beyond its owner (wider than
    /// 0600): a seed others can read is a key others can sign with. A warning, not a failure,
    /// because some mounts (Kubernetes `fsGroup`) add group bits the operator cannot remove.
    #[cfg(unix)]
    pub(super) fn warn_if_shared(&mut self, at: &Spanned<String>, path: &Path, what: &str) {
        use std::os::unix::fs::PermissionsExt;

        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            self.warnings.push(Diagnostic {
                file: self.file.clone(),
                line: at.referenced.line(),
                column: at.referenced.column(),
                message: format!(
                    "{what} file {} has mode {mode:04o}, open to group or others; \
                     restrict it to 0600",
                    path.display()
                ),
            });
        }
    }

    #[cfg(not(unix))]
    pub(super) fn warn_if_shared(&mut self, _at: &Spanned<String>, _path: &Path, _what: &str) {}
}
