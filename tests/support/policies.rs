//! Policy files the integration tests share.

use crate::support::issuer::TENANT;

/// Tenants and roles shared by every policy file the tests write; bindings are added per test.
pub const ML_BASE: &str = r#"version: 1
tenants:
  - name: ml
    entra_tenants: [TENANT]
    account: APP
    prefix: ml.TENANT
roles:
  - name: publisher
    publish: { allow: [">"] }
    subscribe: { allow: [">"] }
  - name: reader
    subscribe: { allow: [">"] }
  - name: inbox
    absolute: true
    subscribe: { allow: ["_INBOX.>"] }
bindings:
"#;

pub const ML_READERS: &str = r#"
  - name: ml-readers
    tenant: ml
    roles: [reader, inbox]
    when: { app_roles: [Nats.Reader] }
"#;

pub const ML_PUBLISHERS: &str = r#"
  - name: ml-publishers
    tenant: ml
    roles: [publisher, inbox]
    when: { app_roles: [Nats.Publisher] }
"#;

/// The ML tenant's policy for the test tenant with `bindings` (e.g. [`ML_PUBLISHERS`]).
pub fn ml(bindings: &[&str]) -> String {
    format!("{ML_BASE}{}", bindings.concat()).replace("TENANT", TENANT)
}
