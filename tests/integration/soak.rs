//! Load and soak against the real binary: rounds of connect storms through the tenant matrix,
//! with zero wrong answers, no memory growth after warm-up, no minted credential outliving its
//! token, and no secret in the (debug-level) log.
//!
//! CI runs 5 rounds of 1,000 connects at concurrency 64. `ENTRA_CALLOUT_SOAK=long` runs 30
//! rounds of 5,000 (see SECURITY.md); run it in release for realistic rates:
//! `ENTRA_CALLOUT_SOAK=long cargo test --release --test integration soak -- --nocapture`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use entra_callout::callout::token_hash;

use crate::support::binary::{Binary, ServiceDir, Settings, assert_no_secrets, providers};
use crate::support::client::{self, Case, Tally};
use crate::support::issuer::{OTHER_TENANT, TENANT, TestIssuer, now};
use crate::support::nats::NatsServer;

/// Rounds and connects per round for this run.
fn size() -> (usize, usize) {
    let custom = |v: &str| {
        let (rounds, connects) = v.split_once('x')?;
        Some((rounds.parse().ok()?, connects.parse().ok()?))
    };
    match std::env::var("ENTRA_CALLOUT_SOAK").as_deref() {
        Ok("long") => (30, 5_000),
        Ok(other) => custom(other).unwrap_or_else(|| {
            panic!("ENTRA_CALLOUT_SOAK={other}: expected `long` or ROUNDSxCONNECTS")
        }),
        Err(_) => (5, 1_000),
    }
}

/// Identities for one round: 16 sets of the storm cases with fresh tokens, so the small
/// verified-token cache keeps evicting and most connects verify a token from scratch. One set in
/// four expires in 2 minutes, well inside `max_ttl`, so credentials must be cut to the token.
fn round_cases(contoso: &TestIssuer, fabrikam: &TestIssuer) -> Vec<Case> {
    let mut cases = Vec::new();
    for set in 0..16 {
        let mut batch = client::cases(contoso, fabrikam, true);
        if set % 4 == 0 {
            let exp = now() + 120;
            let admitted = [(contoso, "Alpha"), (contoso, "Beta"), (fabrikam, "Alpha")];
            for (case, (issuer, role)) in batch.iter_mut().zip(admitted) {
                let uti = format!("short-{set}-{}", case.who);
                case.token = issuer.app_token(json!({ "roles": [role], "exp": exp, "uti": uti }));
            }
        }
        cases.extend(batch);
    }
    cases
}

#[tokio::test]
async fn connect_storms_through_the_tenant_matrix_give_no_wrong_answer_and_no_growth() {
    let (rounds, per_round) = size();
    let contoso = TestIssuer::start_for(TENANT).await;
    let fabrikam = TestIssuer::start_for(OTHER_TENANT).await;
    let service = ServiceDir::new();
    // A generous callout timeout: this test is about answers, not latency on a busy machine.
    let server = NatsServer::start(&format!(
        "{}\nmax_connections: 4096\n",
        service.server_config(10)
    ));
    let url = server.url();
    let (config, admin) = service.write_config(&Settings {
        nats: &url,
        providers: providers(&contoso, &fabrikam),
        callout: "  token_cache_size: 64\n",
        log_format: "json",
        log_level: "debug",
    });
    let binary = Binary::start_ready(&config, &admin).await;

    let mut total = Tally::default();
    let mut rss = Vec::new();
    let mut used: Vec<Case> = Vec::new();
    for round in 0..rounds {
        let cases = round_cases(&contoso, &fabrikam);
        let started = std::time::Instant::now();
        let tally = tokio::time::timeout(
            Duration::from_secs(600),
            client::storm(std::slice::from_ref(&url), &cases, per_round, 64, false),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round} finishes within 10 minutes"));
        assert!(
            tally.wrong.is_empty(),
            "round {round}: {} wrong answers, e.g. {:?}",
            tally.wrong.len(),
            &tally.wrong[..tally.wrong.len().min(5)]
        );
        assert_eq!(tally.admitted + tally.refused, per_round as u64);
        total.merge(tally);
        rss.push(binary.rss_kib());
        used.extend(cases);
        eprintln!(
            "round {round}: {per_round} connects in {:?}, rss {} KiB, log {} KiB",
            started.elapsed(),
            rss[round],
            binary.stderr().len() / 1024
        );
    }
    let connects = (rounds * per_round) as u64;
    // 3 of the 7 identities of each set are admitted.
    assert_eq!(total.admitted + total.refused, connects);
    assert!(total.admitted >= connects * 3 / 7 - 1, "{total:?}");

    // After the first round (allocator arenas, worker threads, caches filled to their bounds)
    // memory must stay flat: every cache in the service is bounded, so what remains is
    // allocator noise. 16 MiB of slack is ~4 KiB per connect over the CI rounds — far above
    // noise, far below any real per-connection leak — and ~110 bytes per connect in long mode.
    let warm = rss[0];
    let peak = *rss.iter().skip(1).max().unwrap_or(&warm);
    assert!(
        peak <= warm + 16 * 1024,
        "resident memory grew from {warm} KiB after warm-up to {peak} KiB: {rss:?}"
    );

    let (status, log) = binary.terminate().await;
    assert!(
        status.success(),
        "{status}\n{}",
        &log[log.len().saturating_sub(4000)..]
    );

    // Every admission in the audit log: credentials never outlive the token they came from.
    let expiry: HashMap<String, u64> = used
        .iter()
        .map(|case| (token_hash(&case.token), token_exp(&case.token)))
        .collect();
    let mut admissions = 0;
    for line in log.lines().filter(|l| l.contains("\"client admitted\"")) {
        let event: Value = serde_json::from_str(line).unwrap();
        let token = event["token"].as_str().unwrap();
        let exp = expiry[token];
        let minted = event["expires_at"].as_u64().unwrap();
        assert!(
            minted <= exp,
            "credentials until {minted} for a token expiring at {exp}"
        );
        admissions += 1;
    }
    assert_eq!(admissions, total.admitted, "one audit line per admission");

    let mut secrets = service.seeds();
    secrets.push(service.password.clone());
    secrets.extend(used.iter().map(|c| c.token.clone()));
    assert_no_secrets(&log, &secrets);
}

fn token_exp(token: &str) -> u64 {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .unwrap(),
    )
    .unwrap();
    claims["exp"].as_u64().unwrap()
}
