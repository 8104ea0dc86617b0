//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod binary;
pub mod client;
pub mod graph;
pub mod issuer;
pub mod nats;
pub mod operator;
pub mod policies;
pub mod proxy;
pub mod service;
