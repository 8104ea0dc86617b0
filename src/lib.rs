//! entra-callout: a NATS authorization callout that admits clients with Microsoft Entra ID /
//! OIDC access tokens and scopes them with YAML policies.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::todo,
    clippy::unimplemented,
    clippy::await_holding_lock
)]

pub mod callout;
pub mod cli;
pub mod config;
pub mod deny;
pub mod diagnostic;
pub mod duration;
pub mod identity;
pub mod keys;
pub mod nats_jwt;
pub mod oidc;
pub mod policy;
pub mod service;
pub mod telemetry;
