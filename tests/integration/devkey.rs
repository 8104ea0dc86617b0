//! `serve` never trusts the DEV-ONLY signing key of `entra-callout dev`: the key is public (it is
//! in the repository), so a production service that accepted anything it signed would admit
//! anyone. The dev environment's issuer publishes it; nothing else does, and the service only
//! knows keys its configured providers publish. (Production images are also built without the
//! `dev` feature, which leaves the key out of the binary.)

use jsonwebtoken::{Algorithm, Header};
use serde_json::json;

use entra_callout::dev::token::{DEV_KID, signing_key};

use crate::support::binary::{Binary, ServiceDir, Settings};
use crate::support::client::{self, Case, Outcome};
use crate::support::eventually;
use crate::support::issuer::{KID_1, TENANT, TestIssuer, merge};
use crate::support::nats::NatsServer;

fn case(token: String) -> Case {
    Case {
        who: "dev-key",
        token,
        as_password: false,
        expect: Some(("contoso.alpha.data", "contoso.beta.data")),
    }
}

#[tokio::test]
async fn serve_refuses_tokens_signed_with_the_dev_only_key() {
    let contoso = TestIssuer::start_for(TENANT).await;
    let service = ServiceDir::new();
    let server = NatsServer::start(&service.server_config(2));
    let url = server.url();
    let (config, admin) = service.write_config(&Settings {
        nats: &url,
        providers: vec![("contoso", &contoso, contoso.authority())],
        callout: "",
        log_format: "json",
        log_level: "info",
    });
    let binary = Binary::start_ready(&config, &admin).await;
    let claims = merge(contoso.app_claims(), json!({ "roles": ["Alpha"] }));

    // The control: the provider's own key is trusted.
    let genuine = case(contoso.sign(KID_1, &claims));
    assert_eq!(client::attempt(&url, &genuine).await, Outcome::Admitted);

    // The same claims signed with the dev key, under its own kid and under the provider's.
    let dev_key = signing_key().unwrap();
    let sign = |kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &dev_key).unwrap()
    };
    for (kid, reason) in [(DEV_KID, "key_unknown"), (KID_1, "signature_invalid")] {
        let forged = case(sign(kid));
        assert_eq!(
            client::attempt(&url, &forged).await,
            Outcome::Refused,
            "{kid}"
        );
        let metric =
            format!("entra_callout_requests_total{{outcome=\"deny\",reason=\"{reason}\"}}");
        eventually(&metric, 5, async || {
            binary.metric(&metric).await == Some(1.0)
        })
        .await;
    }
    let (status, log) = binary.terminate().await;
    assert!(status.success(), "{status}\n{log}");
}
