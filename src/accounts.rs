//! Who signs what: the callout's mode and the keys that mint users into each target account.
//!
//! In **config mode** one issuer account key signs every response and every user JWT, and the
//! target account is named by the user JWT's `aud`. In **operator mode** each target account
//! signs its own users — with its account key or one of its plain signing keys, then with
//! `issuer_account` set, which nats-server requires — and the callout account (or one of its
//! signing keys) signs the responses. Policies name accounts; this module maps the names.
//! Pure: no files, no clock.

use std::collections::BTreeMap;
use std::fmt;

use nkeys::{KeyPair, KeyPairType};

use crate::nats_jwt::Signer;

/// How nats-server is configured for the callout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `authorization { auth_callout { ... } }` in the server configuration; accounts by name.
    #[default]
    Config,
    /// Decentralized JWT auth: the callout is in the callout account's JWT.
    Operator,
}

/// Why a key cannot sign for an account, or an account has no key.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountsError {
    /// The public key given for an account is not an account public key.
    #[error("{key:?} is not an account public key (A...)")]
    NotAnAccount {
        /// The offending value (public by nature).
        key: String,
    },
    /// The signing key is not an account key.
    #[error("the signing key for account {account} is not an account seed (SA...)")]
    NotAnAccountSeed {
        /// The account's public key.
        account: String,
    },
    /// A policy targets an account the service holds no key for.
    #[error("no signing key is configured for account `{name}`")]
    UnknownAccount {
        /// The account name used by the policy.
        name: String,
    },
}

/// One account's public key and a key that may sign for it: its own seed or a plain signing
/// key listed in its JWT's `signing_keys`.
#[derive(Clone)]
pub struct AccountKey {
    account: String,
    key: Signer,
}

/// Everything the callout signs with.
#[derive(Clone, Debug)]
pub struct Signers {
    mode: Mode,
    response: AccountKey,
    /// Operator mode: target accounts by the name policies use.
    targets: BTreeMap<String, AccountKey>,
}

/// How to mint one user JWT: the signing key, the `aud`, and `issuer_account` if any.
#[derive(Clone, Copy, Debug)]
pub struct UserIssuer<'a> {
    /// Signs the user JWT.
    pub key: &'a Signer,
    /// The user JWT's `aud`: the account name in config mode, its public key in operator mode
    /// (where the server ignores it).
    pub audience: &'a str,
    /// Set when `key` is a signing key rather than the account key.
    pub issuer_account: Option<&'a str>,
}

impl AccountKey {
    /// `key` signs for `account` (a public account key). `key` must be an account key: the
    /// account's own, or one of its plain signing keys.
    pub fn new(account: &str, key: Signer) -> Result<Self, AccountsError> {
        let is_account = KeyPair::from_public_key(account)
            .is_ok_and(|kp| kp.key_pair_type() == KeyPairType::Account);
        if !is_account {
            return Err(AccountsError::NotAnAccount {
                key: account.chars().take(64).collect(),
            });
        }
        if key.kind() != KeyPairType::Account {
            return Err(AccountsError::NotAnAccountSeed {
                account: account.to_owned(),
            });
        }
        Ok(Self {
            account: account.to_owned(),
            key,
        })
    }

    /// The account's own seed: it signs for itself.
    pub fn own(key: Signer) -> Result<Self, AccountsError> {
        let account = key.public_key().to_owned();
        Self::new(&account, key)
    }

    /// The account's public key.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The key that signs.
    pub fn key(&self) -> &Signer {
        &self.key
    }

    /// The account's public key when the key is a signing key, for `issuer_account`.
    pub fn issuer_account(&self) -> Option<&str> {
        (self.key.public_key() != self.account).then_some(self.account.as_str())
    }
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountKey")
            .field("account", &self.account)
            .field("signer", &self.key.public_key())
            .finish()
    }
}

impl Signers {
    /// Config mode: `issuer` signs responses and users, into any account named by policy.
    /// The key's kind is checked where it is loaded; a wrong one fails at signing time.
    pub fn config(issuer: Signer) -> Self {
        Self {
            mode: Mode::Config,
            response: AccountKey {
                account: issuer.public_key().to_owned(),
                key: issuer,
            },
            targets: BTreeMap::new(),
        }
    }

    /// Operator mode: `callout` signs responses; users are minted only into `targets`.
    pub fn operator(
        callout: AccountKey,
        targets: impl IntoIterator<Item = (String, AccountKey)>,
    ) -> Self {
        Self {
            mode: Mode::Operator,
            response: callout,
            targets: targets.into_iter().collect(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The key that signs responses (config mode: the issuer; operator mode: the callout
    /// account or one of its signing keys).
    pub fn response(&self) -> &AccountKey {
        &self.response
    }

    /// Operator mode's target accounts by name; empty in config mode.
    pub fn targets(&self) -> &BTreeMap<String, AccountKey> {
        &self.targets
    }

    /// The same signers with `key` signing responses for the same callout account (operator
    /// mode: a rotated signing key of the callout account).
    pub fn with_response_key(&self, key: Signer) -> Result<Self, AccountsError> {
        Ok(Self {
            response: AccountKey::new(&self.response.account, key)?,
            ..self.clone()
        })
    }

    /// The same signers with `key` minting users into the target account policies call
    /// `name` (operator mode: a rotated signing key of that account).
    pub fn with_target_key(&self, name: &str, key: Signer) -> Result<Self, AccountsError> {
        let current = self
            .targets
            .get(name)
            .ok_or_else(|| AccountsError::UnknownAccount {
                name: name.to_owned(),
            })?;
        let mut targets = self.targets.clone();
        targets.insert(name.to_owned(), AccountKey::new(&current.account, key)?);
        Ok(Self {
            targets,
            ..self.clone()
        })
    }

    /// How to mint a user into the account policies call `name`.
    pub fn user_issuer<'a>(&'a self, name: &'a str) -> Result<UserIssuer<'a>, AccountsError> {
        match self.mode {
            Mode::Config => Ok(UserIssuer {
                key: self.response.key(),
                audience: name,
                issuer_account: None,
            }),
            Mode::Operator => {
                let target =
                    self.targets
                        .get(name)
                        .ok_or_else(|| AccountsError::UnknownAccount {
                            name: name.to_owned(),
                        })?;
                Ok(UserIssuer {
                    key: target.key(),
                    audience: target.account(),
                    issuer_account: target.issuer_account(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats_jwt::JwtError;

    fn signer(key: &KeyPair) -> Signer {
        Signer::new(key.clone()).unwrap()
    }

    #[test]
    fn config_mode_signs_everything_with_the_issuer_and_names_the_account() {
        let issuer = KeyPair::new_account();
        let public = issuer.public_key();
        let signers = Signers::config(signer(&issuer));
        assert_eq!(signers.mode(), Mode::Config);
        assert_eq!(signers.response().issuer_account(), None);
        let user = signers.user_issuer("APP").unwrap();
        assert_eq!(user.key.public_key(), public);
        assert_eq!(user.audience, "APP");
        assert_eq!(user.issuer_account, None);
    }

    #[test]
    fn operator_mode_uses_each_account_key_and_sets_issuer_account_for_signing_keys() {
        let app = KeyPair::new_account();
        let app_signing = KeyPair::new_account();
        let other = KeyPair::new_account();
        let callout = KeyPair::new_account();
        let signers = Signers::operator(
            AccountKey::own(signer(&callout)).unwrap(),
            [
                (
                    "APP".to_owned(),
                    AccountKey::new(&app.public_key(), signer(&app_signing)).unwrap(),
                ),
                (
                    "OTHER".to_owned(),
                    AccountKey::own(Signer::from_seed(&other.seed().unwrap()).unwrap()).unwrap(),
                ),
            ],
        );
        let user = signers.user_issuer("APP").unwrap();
        assert_eq!(user.key.public_key(), app_signing.public_key());
        assert_eq!(user.audience, app.public_key());
        assert_eq!(user.issuer_account, Some(app.public_key().as_str()));
        let user = signers.user_issuer("OTHER").unwrap();
        assert_eq!(user.key.public_key(), other.public_key());
        assert_eq!(user.issuer_account, None);
        assert_eq!(
            signers.user_issuer("NOPE").unwrap_err(),
            AccountsError::UnknownAccount {
                name: "NOPE".to_owned()
            }
        );
    }

    #[test]
    fn keys_of_the_wrong_kind_are_refused_and_debug_shows_no_seed() {
        let user = KeyPair::new_user();
        assert!(matches!(
            AccountKey::new(&user.public_key(), signer(&KeyPair::new_account())),
            Err(AccountsError::NotAnAccount { .. })
        ));
        let account = KeyPair::new_account().public_key();
        assert!(matches!(
            AccountKey::new(&account, signer(&KeyPair::new_user())),
            Err(AccountsError::NotAnAccountSeed { .. })
        ));
        // A public-only key never becomes a signer, so it never reaches an AccountKey.
        let public_only = KeyPair::from_public_key(&account).unwrap();
        // It has no seed to sign with.
        assert_eq!(Signer::new(public_only).err(), Some(JwtError::Sign));
        let key = KeyPair::new_account();
        let seed = key.seed().unwrap();
        let debug = format!("{:?}", AccountKey::own(signer(&key)).unwrap());
        assert!(!debug.contains(&seed), "{debug}");
    }
}
