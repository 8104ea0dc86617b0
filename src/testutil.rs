//! Fixtures shared by the unit tests.

use std::sync::Arc;

use serde_json::Map;

use crate::identity::{Identity, PrincipalKind};

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
