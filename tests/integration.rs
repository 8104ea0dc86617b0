//! The one integration-test binary: real nats-server, real HTTP, real signatures.
//!
//! Every test starts its own nats-server on a free loopback port and its own Entra-like issuer
//! on `127.0.0.1:0`, so tests run in parallel without sharing state.

#[path = "support/mod.rs"]
mod support;

#[path = "integration/audit.rs"]
mod audit;
#[path = "integration/callout.rs"]
mod callout;
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/devkey.rs"]
mod devkey;
#[path = "integration/entra.rs"]
mod entra;
#[path = "integration/faults.rs"]
mod faults;
#[path = "integration/isolation.rs"]
mod isolation;
#[path = "integration/jetstream.rs"]
mod jetstream;
#[path = "integration/keys.rs"]
mod keys;
#[path = "integration/oidc.rs"]
mod oidc;
#[path = "integration/operator.rs"]
mod operator;
#[path = "integration/ops.rs"]
mod ops;
#[path = "integration/rotation.rs"]
mod rotation;
#[path = "integration/scenarios.rs"]
mod scenarios;
#[path = "integration/soak.rs"]
mod soak;
