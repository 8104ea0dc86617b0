//! Micro-benchmarks of the request path, piece by piece: request decode + verify (plain and
//! xkey-sealed), access-token verify, policy evaluation at 10, 1,000 and 10,000 bindings, user
//! JWT mint + sign, and the full `Authorizer::handle` uncached and with a cached token.
//!
//! Run with `cargo bench --bench request` (BENCHMARKS.md has the figures and what limits
//! them). Requests are built here the way nats-server builds them: an authorization-request JWT
//! signed by a server nkey (`N...`), sealed to the service's xkey for the xkey variants. Access
//! tokens are signed with the DEV-ONLY key of `entra_callout::dev`; the full handle verifies
//! them through a `Verifier` whose keys come from the in-process dev issuer.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nkeys::{KeyPair, XKey};
use serde_json::json;
use tokio::runtime::Runtime;

use entra_callout::accounts::UserIssuer;
use entra_callout::callout::{Authorizer, Handled, mint_user};
use entra_callout::dev::issuer::DevIssuer;
use entra_callout::dev::token::{self, API_CLIENT_ID, CONTOSO, Randomness, TokenRequest};
use entra_callout::identity::Identity;
use entra_callout::nats_jwt::{
    self, AuthorizationRequest, Claims, ClientInformation, ConnectOptions, REQUEST_AUDIENCE,
    ServerId, Signer,
};
use entra_callout::oidc::{KeySet, ProviderSettings, Verifier, verify_with_keys};
use entra_callout::policy::{CompileOptions, PolicySet, PolicySource, compile};

/// A fixed clock, so tokens and requests minted once stay valid for the whole run.
fn now() -> u64 {
    entra_callout::telemetry::unix_now()
}

/// The app role the example policies grant `contoso.vision.ml.outputs.>` for.
const ROLE: &str = "Ml.Vision.Producer";

/// A made-up app-only access token for `role`, as `entra-callout dev token --role` mints it.
fn access_token(role: &str, now: u64, seed: u8) -> String {
    let request = TokenRequest {
        tenant: "contoso".into(),
        roles: vec![role.to_owned()],
        ttl_secs: 3600,
        ..TokenRequest::default()
    };
    let random = Randomness {
        oid: [seed; 16],
        uti: [seed.wrapping_add(1); 16],
    };
    token::mint(&request, now, random).expect("dev token")
}

/// One server's keys and a way to build its authorization requests.
struct Server {
    key: Signer,
    xkey: XKey,
}

impl Server {
    fn new() -> Self {
        Self {
            key: Signer::new(KeyPair::new_server()).expect("server key"),
            xkey: XKey::new(),
        }
    }

    /// The request JWT nats-server sends for a client presenting `token`; `sealed` adds the
    /// server's xkey to `server_id` as a server with `auth_callout.xkey` does.
    fn request_jwt(&self, token: &str, sealed: bool, now: u64) -> String {
        let user = KeyPair::new_user().public_key();
        let mut claims = Claims::with_subject(
            user.clone(),
            AuthorizationRequest {
                server_id: ServerId {
                    name: "bench".into(),
                    host: "127.0.0.1".into(),
                    id: self.key.public_key().to_owned(),
                    version: "2.15.1".into(),
                    xkey: if sealed {
                        self.xkey.public_key()
                    } else {
                        String::new()
                    },
                    ..ServerId::default()
                },
                user_nkey: user,
                client_info: ClientInformation {
                    host: "127.0.0.1".into(),
                    id: 42,
                    user: "[REDACTED]".into(),
                    kind: "Client".into(),
                    client_type: "nats".into(),
                    ..ClientInformation::default()
                },
                connect_opts: ConnectOptions {
                    auth_token: token.to_owned(),
                    lang: "rust".into(),
                    version: "0.51.0".into(),
                    protocol: 1,
                    ..ConnectOptions::default()
                },
                ..AuthorizationRequest::default()
            },
        );
        REQUEST_AUDIENCE.clone_into(&mut claims.base.aud);
        claims.base.exp = now + 2;
        nats_jwt::encode(&mut claims, &self.key, now).expect("request jwt")
    }

    /// The message payload and `Nats-Server-Xkey` header for `token`, sealed to `service` when
    /// given.
    fn message(&self, token: &str, service: Option<&XKey>, now: u64) -> (Vec<u8>, Option<String>) {
        let jwt = self.request_jwt(token, service.is_some(), now);
        match service {
            None => (jwt.into_bytes(), None),
            Some(service) => {
                let recipient = XKey::from_public_key(&service.public_key()).expect("xkey");
                let sealed = self.xkey.seal(jwt.as_bytes(), &recipient).expect("seal");
                (sealed, Some(self.xkey.public_key()))
            }
        }
    }
}

fn contoso() -> ProviderSettings {
    ProviderSettings::new("contoso", CONTOSO, vec![API_CLIENT_ID.to_owned()]).expect("provider")
}

fn compile_options() -> CompileOptions {
    CompileOptions {
        forbidden_accounts: vec!["SYS".into(), "AUTH".into()],
        accounts: Vec::new(),
        default_max_ttl: Duration::from_secs(3600),
        providers: Vec::new(),
    }
}

fn example_policies() -> PolicySet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    PolicySet::load(&path, &compile_options()).expect("example policies")
}

/// `n` bindings in one tenant with ten projects: half select by app role, half by group, each
/// on its own role or group, the way a platform grows one binding per workload or team.
fn policies_with(n: usize) -> PolicySet {
    let mut text = format!(
        "version: 1\ntenants:\n  - name: contoso\n    entra_tenants: [{CONTOSO}]\n    \
         account: APP\n    projects:\n"
    );
    for p in 0..10 {
        text.push_str(&format!("      - name: p{p}\n"));
    }
    text.push_str(
        "roles:\n  - name: producer\n    publish:\n      allow: [\"ml.outputs.>\", \
         \"ml.metrics.>\"]\n  - name: reader\n    subscribe:\n      allow: [\"ml.>\"]\n      \
         deny: [\"ml.internal.>\"]\nbindings:\n",
    );
    for i in 0..n {
        let when = if i % 2 == 0 {
            format!("{{ kind: application, app_roles: [Role.{i}] }}")
        } else {
            format!("{{ groups: [{}] }}", group(i))
        };
        let role = if i % 2 == 0 { "producer" } else { "reader" };
        text.push_str(&format!(
            "  - {{ name: b{i}, tenant: contoso, project: p{}, roles: [{role}], when: {when} }}\n",
            i % 10
        ));
    }
    let source = PolicySource {
        name: format!("{n}-bindings.yaml"),
        text,
    };
    compile(&[source], &compile_options()).expect("generated policies")
}

/// The `i`-th made-up group object id.
fn group(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// An application holding three app roles, one of which a binding selects, and a user in five
/// groups, one of which a binding selects; both in the middle of the generated bindings.
fn identities(n: usize, now: u64) -> (Identity, Identity) {
    let settings = contoso();
    let keys = dev_keys();
    let verify = |role: &str| {
        verify_with_keys(&access_token(role, now, 7), &settings, &keys, now).expect("verify")
    };
    let middle = n / 2;
    let role = middle - middle % 2;
    let mut app = verify(&format!("Role.{role}"));
    app.roles
        .extend(["Other.A".to_owned(), "Other.B".to_owned()]);
    let mut user = verify("Unused");
    user.kind = entra_callout::identity::PrincipalKind::User;
    user.roles.clear();
    user.groups = (0..4)
        .map(|g| format!("11111111-0000-4000-8000-{g:012}"))
        .chain([group(role + 1)])
        .collect();
    (app, user)
}

/// The dev issuer's key set, as `KeySet` parses it from the JWKS document.
fn dev_keys() -> KeySet {
    let jwk = token::public_jwk().expect("dev jwk");
    KeySet::from_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).expect("key set")
}

fn bench_open_request(c: &mut Criterion) {
    let now = now();
    let token = access_token(ROLE, now, 1);
    let server = Server::new();
    let service = XKey::new();
    let (plain, _) = server.message(&token, None, now);
    let (sealed, header) = server.message(&token, Some(&service), now);
    let mut group = c.benchmark_group("request decode + verify");
    group.bench_function("plain", |b| {
        b.iter(|| nats_jwt::open_request(black_box(&plain), None, None, now, 2).expect("open"))
    });
    group.bench_function("xkey", |b| {
        b.iter(|| {
            nats_jwt::open_request(
                black_box(&sealed),
                header.as_deref(),
                Some(&service),
                now,
                2,
            )
            .expect("open")
        })
    });
    // The default since issue 18 (`callout.verify_request_signature: false`).
    group.bench_function("plain, signature shape only", |b| {
        b.iter(|| {
            nats_jwt::open_request_with(
                black_box(&plain),
                None,
                None,
                now,
                2,
                nats_jwt::SignatureCheck::Shape,
            )
            .expect("open")
        })
    });
    group.finish();
}

fn bench_token_verify(c: &mut Criterion) {
    let now = now();
    let token = access_token(ROLE, now, 1);
    let settings = contoso();
    let keys = dev_keys();
    c.bench_function("token verify (RS256, Entra v2)", |b| {
        b.iter(|| verify_with_keys(black_box(&token), &settings, &keys, now).expect("verify"))
    });
}

fn bench_policy(c: &mut Criterion) {
    let now = now();
    let mut group = c.benchmark_group("policy evaluation");
    for n in [10, 1_000, 10_000] {
        let set = policies_with(n);
        let (app, user) = identities(n, now);
        assert_eq!(set.evaluate(&app, now).expect("app grant").matched.len(), 1);
        assert_eq!(
            set.evaluate(&user, now).expect("user grant").matched.len(),
            1
        );
        group.bench_with_input(BenchmarkId::new("app role", n), &n, |b, _| {
            b.iter(|| set.evaluate(black_box(&app), now).expect("grant"))
        });
        group.bench_with_input(BenchmarkId::new("groups", n), &n, |b, _| {
            b.iter(|| set.evaluate(black_box(&user), now).expect("grant"))
        });
    }
    group.finish();
}

fn bench_mint(c: &mut Criterion) {
    let now = now();
    let (app, _) = identities(10, now);
    let set = example_policies();
    let mut app = app;
    app.roles = vec![ROLE.to_owned()];
    let grant = set.evaluate(&app, now).expect("grant");
    let key = Signer::new(KeyPair::new_account()).expect("issuer key");
    let issuer = UserIssuer {
        key: &key,
        audience: "APP",
        issuer_account: None,
    };
    let user = KeyPair::new_user().public_key();
    c.bench_function("user JWT mint + sign", |b| {
        b.iter(|| mint_user(&issuer, black_box(&user), &app, &grant, now).expect("mint"))
    });
}

/// The cryptography every request needs whatever the implementation: the floor under the pieces
/// above. A request is ~1.5 KB; one ed25519 verify (the request), two signs (user JWT,
/// response), and with xkey one open and one seal.
fn bench_primitives(c: &mut Criterion) {
    let message = vec![b'x'; 1500];
    let key = KeyPair::new_server();
    let signer = Signer::new(key.clone()).expect("signer");
    let signature = key.sign(&message).expect("sign");
    let public = KeyPair::from_public_key(&key.public_key()).expect("public");
    let (ours, theirs) = (XKey::new(), XKey::new());
    let theirs_public = XKey::from_public_key(&theirs.public_key()).expect("xkey");
    let ours_public = XKey::from_public_key(&ours.public_key()).expect("xkey");
    let sealed = theirs.seal(&message, &ours_public).expect("seal");
    let mut group = c.benchmark_group("primitives, 1.5 KB");
    group.bench_function("ed25519 sign", |b| b.iter(|| key.sign(black_box(&message))));
    group.bench_function("ed25519 sign, aws-lc-rs (Signer)", |b| {
        b.iter(|| signer.sign(black_box(&message)))
    });
    group.bench_function("ed25519 verify", |b| {
        b.iter(|| {
            public
                .verify(black_box(&message), &signature)
                .expect("verify")
        })
    });
    group.bench_function("ed25519 public key decode", |b| {
        b.iter(|| KeyPair::from_public_key(black_box(&key.public_key())).expect("public"))
    });
    group.bench_function("xkey open", |b| {
        b.iter(|| ours.open(black_box(&sealed), &theirs_public).expect("open"))
    });
    group.bench_function("xkey seal", |b| {
        b.iter(|| {
            ours.seal(black_box(&message), &theirs_public)
                .expect("seal")
        })
    });
    group.finish();
}

fn bench_handle(c: &mut Criterion) {
    use nats_jwt::SignatureCheck::{Shape, Verify};
    let runtime = Runtime::new().expect("runtime");
    let now = now();
    let issuer = runtime
        .block_on(DevIssuer::start(([127, 0, 0, 1], 0).into()))
        .expect("dev issuer");
    let settings = contoso()
        .with_authority(&issuer.authority())
        .expect("authority");
    let token = access_token(ROLE, now, 3);
    let server = Server::new();
    let service_xkey = XKey::new();

    let mut group = c.benchmark_group("full handle");
    let cases = [
        (false, 0, Shape),
        (false, 1_000, Shape),
        (true, 0, Shape),
        (true, 1_000, Shape),
        (false, 1_000, Verify),
        (true, 1_000, Verify),
    ];
    for (sealed, cache, check) in cases {
        let verifier = Verifier::new(vec![settings.clone()])
            .expect("verifier")
            .with_token_cache(cache);
        let verifier = Arc::new(verifier);
        runtime.block_on(verifier.warm()).expect("keys");
        let xkey = sealed.then(|| XKey::from_seed(&service_xkey.seed().expect("seed")).expect("x"));
        let authorizer = Authorizer::new(
            Signer::new(KeyPair::new_account()).expect("issuer key"),
            xkey,
            Arc::clone(&verifier),
            example_policies(),
            2,
        )
        .with_request_signature(check);
        let (payload, header) = server.message(&token, sealed.then_some(&service_xkey), now);
        let handle = || runtime.block_on(authorizer.handle(&payload, header.as_deref(), now));
        // Both must admit, and the cached variant must really answer from the cache.
        assert!(matches!(handle(), Handled::Respond { allowed: true, .. }));
        let handled = handle();
        let Handled::Respond { audit, .. } = handled else {
            panic!("not answered")
        };
        assert_eq!(audit.cached, cache > 0);
        let name = match (sealed, cache > 0, check) {
            (false, false, _) => "plain, uncached",
            (false, true, Shape) => "plain, cached token",
            (true, false, _) => "xkey, uncached",
            (true, true, Shape) => "xkey, cached token",
            (false, true, Verify) => "plain, cached token, request signature verified",
            (true, true, Verify) => "xkey, cached token, request signature verified",
        };
        group.bench_function(name, |b| b.iter(|| black_box(handle())));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_primitives, bench_open_request, bench_token_verify, bench_policy, bench_mint, bench_handle
}
criterion_main!(benches);
