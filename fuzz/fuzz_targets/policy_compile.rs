//! The policy compiler on arbitrary YAML, then evaluation of whatever compiles: located errors
//! or a policy set, never a panic; a grant never lands in a forbidden account.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

use entra_callout::identity::{Identity, PrincipalKind};
use entra_callout::policy::{CompileOptions, PolicySource, compile};

fuzz_target!(|data: &[u8]| {
    let opts = CompileOptions {
        forbidden_accounts: vec!["SYS".into(), "AUTH".into(), "$SYS".into()],
        accounts: Vec::new(),
        default_max_ttl: Duration::from_secs(3600),
        providers: Vec::new(),
    };
    let source = PolicySource {
        name: "fuzz.yaml".into(),
        text: String::from_utf8_lossy(data).into_owned(),
    };
    let Ok(set) = compile(&[source], &opts) else {
        return;
    };
    let identity = Identity {
        provider: Arc::from("entra"),
        issuer: "https://login.microsoftonline.com/t/v2.0".into(),
        tenant: Some("72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41".into()),
        object_id: Some("a.*>".into()),
        subject: "s".into(),
        app_id: None,
        kind: PrincipalKind::Application,
        roles: vec!["Alpha".into(), "*".into()],
        groups: vec![],
        scopes: vec![],
        guest: false,
        display_name: None,
        expires_at: 2_000,
        token_id: None,
        claims: serde_json::Map::new(),
    };
    if let Ok(grant) = set.evaluate(&identity, 1_000) {
        assert!(!["SYS", "AUTH", "$SYS"].contains(&grant.account.as_str()));
        assert!(grant.expires_at <= 2_000);
    }
});
