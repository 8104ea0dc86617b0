//! Operator and account claims (`nats-io/jwt/v2` `OperatorClaims`, `AccountClaims`) and the
//! `.creds` file format: what an operator-mode deployment needs to be set up.
//!
//! The service itself never reads these at runtime; `keys init`, `nats-config` and the tests
//! generate them. Only what a callout deployment uses is modelled — plain signing keys, the
//! external `authorization` block, limits and revocations — with Go's field names and
//! `omitempty` behaviour.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::claims::{
    CLAIM_VERSION, IssuerKind, NatsClaim, Permission, is_false, is_zero_i64, nats_claim,
};

/// `nats.type` of an operator JWT.
pub const OPERATOR_TYPE: &str = "operator";
/// `nats.type` of an account JWT.
pub const ACCOUNT_TYPE: &str = "account";

/// The `nats` object of an operator JWT (self-signed by the operator key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Operator {
    /// Operator signing keys that may issue account JWTs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    /// Public key of the system account.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system_account: String,
    /// Whether account JWTs must be issued by a signing key rather than the operator key.
    #[serde(skip_serializing_if = "is_false")]
    pub strict_signing_key_usage: bool,
    /// `operator`.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub claim_type: String,
    /// Claim version, 2.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub version: i64,
}

/// The `nats` object of an account JWT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    /// Account limits; [`Account::new`] makes everything unlimited (-1) as Go's
    /// `NewAccountClaims` does, JetStream disabled.
    pub limits: AccountLimits,
    /// Plain (unscoped) signing keys: they may issue user JWTs with `issuer_account` set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    /// Revoked user keys and the time (unix seconds) before which their JWTs are revoked;
    /// the key `*` revokes every user.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub revocations: BTreeMap<String, u64>,
    /// Permissions of users that carry none.
    #[serde(skip_serializing_if = "DefaultPermissions::is_empty")]
    pub default_permissions: DefaultPermissions,
    /// The auth callout configuration, on the callout account only.
    #[serde(skip_serializing_if = "ExternalAuthorization::is_empty")]
    pub authorization: ExternalAuthorization,
    /// Free text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `account`.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub claim_type: String,
    /// Claim version, 2.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub version: i64,
}

/// Account limits (`OperatorLimits`): -1 means unlimited, 0 (omitted) means none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountLimits {
    /// Max subscriptions.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub subs: i64,
    /// Max data bytes.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub data: i64,
    /// Max message payload.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub payload: i64,
    /// Max imports.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub imports: i64,
    /// Max exports.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub exports: i64,
    /// Whether exports may contain wildcards.
    #[serde(skip_serializing_if = "is_false")]
    pub wildcards: bool,
    /// Whether bearer user JWTs are refused (not checked for callout users).
    #[serde(skip_serializing_if = "is_false")]
    pub disallow_bearer: bool,
    /// Max client connections.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub conn: i64,
    /// Max leafnode connections.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub leaf: i64,
}

/// `default_permissions` of an account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefaultPermissions {
    /// Publish.
    #[serde(rename = "pub", skip_serializing_if = "Permission::is_empty")]
    pub publish: Permission,
    /// Subscribe.
    #[serde(rename = "sub", skip_serializing_if = "Permission::is_empty")]
    pub subscribe: Permission,
}

/// The `authorization` block that turns an account into a callout account.
///
/// The callout is on iff `auth_users` is non-empty; `allowed_accounts` are the *target*
/// accounts users may be minted into (public keys, or the single entry `*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExternalAuthorization {
    /// User public keys that bypass the callout: the service's own users.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auth_users: Vec<String>,
    /// Target account public keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_accounts: Vec<String>,
    /// The service's curve public key; requests are encrypted when set.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub xkey: String,
}

impl Operator {
    /// An operator with no signing keys.
    pub fn new() -> Self {
        Operator {
            signing_keys: Vec::new(),
            system_account: String::new(),
            strict_signing_key_usage: false,
            claim_type: OPERATOR_TYPE.to_owned(),
            version: CLAIM_VERSION,
        }
    }
}

impl Default for Operator {
    fn default() -> Self {
        Operator::new()
    }
}

impl Account {
    /// An account with unlimited limits, no signing keys and no callout.
    pub fn new() -> Self {
        Account {
            limits: AccountLimits {
                subs: -1,
                data: -1,
                payload: -1,
                imports: -1,
                exports: -1,
                wildcards: true,
                disallow_bearer: false,
                conn: -1,
                leaf: -1,
            },
            signing_keys: Vec::new(),
            revocations: BTreeMap::new(),
            default_permissions: DefaultPermissions::default(),
            authorization: ExternalAuthorization::default(),
            description: String::new(),
            claim_type: ACCOUNT_TYPE.to_owned(),
            version: CLAIM_VERSION,
        }
    }
}

impl Default for Account {
    fn default() -> Self {
        Account::new()
    }
}

impl DefaultPermissions {
    /// Whether neither direction has entries.
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty()
    }
}

impl ExternalAuthorization {
    /// Whether nothing is set, in which case the block is omitted.
    pub fn is_empty(&self) -> bool {
        self.auth_users.is_empty() && self.allowed_accounts.is_empty() && self.xkey.is_empty()
    }
}

/// A `.creds` file: a user JWT and the user's seed, in the armoured format NATS clients read
/// (`nats --creds`, `ConnectOptions::with_credentials_file`). The result contains a secret.
pub fn format_credentials(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

nats_claim!(Operator, OPERATOR_TYPE, IssuerKind::Operator);
nats_claim!(Account, ACCOUNT_TYPE, IssuerKind::Operator);
