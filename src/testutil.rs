//! Fixtures shared by the unit tests.

use std::sync::Arc;

use serde_json::Map;

use crate::identity::{Identity, PrincipalKind};
use crate::policy::{CompileOptions, PolicyErrors, PolicySet, PolicySource, compile};

/// The tenant the fixtures belong to.
pub(crate) const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";

/// A verified Entra v2 user of [`TENANT`] with no roles, groups or scopes; tests override the
/// fields they are about with struct update syntax.
pub(crate) fn identity() -> Identity {
    Identity {
        provider: Arc::from("entra"),
        issuer: format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        tenant: Some(TENANT.to_owned()),
        object_id: Some("5a1c8e2f-9d47-4b63-8f0a-2e6c4d9b7a35".to_owned()),
        subject: "subject".to_owned(),
        app_id: None,
        kind: PrincipalKind::User,
        roles: Vec::new(),
        groups: Vec::new(),
        scopes: Vec::new(),
        guest: false,
        display_name: None,
        expires_at: 0,
        token_id: None,
        claims: Map::new(),
    }
}

/// Compiles `text` as the one policy file `p.yaml`, with the options the policy tests share:
/// account `SYS` forbidden, no account keys, a one-hour default `max_ttl`, no providers.
pub(crate) fn compile_policy(text: &str) -> Result<PolicySet, PolicyErrors> {
    let opts = CompileOptions {
        forbidden_accounts: vec!["SYS".into()],
        accounts: Vec::new(),
        default_max_ttl: std::time::Duration::from_secs(3600),
        providers: Vec::new(),
    };
    let source = PolicySource {
        name: "p.yaml".into(),
        text: text.into(),
    };
    compile(&[source], &opts)
}
