//! entra-callout: a NATS authorization callout that admits clients with Microsoft Entra ID /
//! OIDC access tokens and scopes them with YAML policies.
//!
//! # Layout
//! * `nats_jwt`: the callout wire format — authorization request/response and user claims,
//!   ed25519-nkey JWT encode/decode, xkey sealing. Pure.
//! * `oidc`: access-token verification. `verify_with_keys` is pure; `Verifier` adds discovery,
//!   JWKS fetching and caching, and the cache of verified tokens (by SHA-256).
//! * `identity`: what a verified token says about its holder.
//! * `guid`: the one GUID shape, and `Guid`, a tenant, object or app id proven to have it.
//! * `policy`: YAML policies (tenants, projects, roles, bindings), model → compile → pure
//!   evaluation into a `Grant`.
//! * `tools`: the offline `explain` and `test` commands over policies.
//! * `accounts`: config vs operator mode, and which key signs users into which account.
//! * `callout`: one request in, one signed answer out (`Authorizer::handle`).
//! * `service`: the NATS loop — connection with retry, queue subscription, bounded
//!   concurrency, drain.
//! * `app`: the composition root — `app::start` assembles the service from a `Config`; `serve`
//!   and the in-process tests use it.
//! * `admin`, `metrics`, `reload`, `rotate`: operations — the health and metrics endpoints,
//!   Prometheus metrics, hot reload of policies, and rotation of seed and password files.
//! * `config`, `cli`, `keys`, `telemetry`: the edges — configuration files (parsed and
//!   validated into the settings types the modules above own), commands, key material, logging
//!   and the wall clock.
//! * `dev`: `entra-callout dev`, the local environment with a built-in Entra-shaped issuer.
//! * `nats_config`: the nats-server configuration (and operator-mode JWTs) matching the keys.
//! * `deny`, `diagnostic`, `duration`, `secret`: small shared vocabularies.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::todo,
    clippy::unimplemented,
    clippy::await_holding_lock
)]

pub mod accounts;
pub mod admin;
pub mod app;
pub mod callout;
pub mod cli;
pub mod config;
pub mod deny;
#[cfg(feature = "dev")]
pub mod dev;
pub mod diagnostic;
pub mod duration;
pub mod guid;
pub mod identity;
pub mod keys;
pub mod metrics;
pub mod nats_config;
pub mod nats_jwt;
pub mod oidc;
pub mod policy;
pub mod reload;
pub mod rotate;
pub mod secret;
pub mod service;
pub mod telemetry;
pub mod tools;

#[cfg(test)]
mod testutil;
