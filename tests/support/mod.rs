//! Shared helpers for the integration tests.
#![expect(dead_code, reason = "each test uses some of the helpers")]
#![allow(
    unreachable_pub,
    reason = "helpers are `pub` for the test modules of one binary"
)]

pub mod binary;
pub mod client;
pub mod graph;
pub mod issuer;
pub mod nats;
pub mod operator;
pub mod policies;
pub mod proxy;
pub mod service;

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it holds, for at most `secs` seconds; a test waits on the
/// condition it asserts this way, never on the first sign of it.
pub async fn eventually(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}
