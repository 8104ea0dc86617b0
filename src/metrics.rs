//! Prometheus metrics: the names, their labels and the handles the request path records into.
//!
//! Every label value comes from a closed set — an outcome, a [`DenyReason`] code, a result, or a
//! provider name from the configuration — so no token or client-controlled string can grow the
//! series count. Request-path handles are registered once up front and recording through them
//! neither allocates nor looks anything up.
//!
//! A [`Metrics`] owns its recorder, so several services can run side by side in one process
//! (the tests do). There is no process-wide recorder: every part of the service that records —
//! the request loop, the verifier's key fetches and token cache, the reloader — is handed the
//! same [`Metrics`] by the composition root ([`crate::app`]).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `entra_callout_requests_total` | counter | `outcome` (`allow`, `deny`, `late`, `drop`), `reason` |
//! | `entra_callout_decision_duration_seconds` | histogram | |
//! | `entra_callout_in_flight_requests` | gauge | |
//! | `entra_callout_queued_requests` | gauge | |
//! | `entra_callout_cache_lookups_total` | counter | `result` (`hit`, `miss`) |
//! | `entra_callout_key_refreshes_total` | counter | `provider`, `result` (`ok`, `error`) |
//! | `entra_callout_policy_reloads_total` | counter | `result` (`ok`, `error`) |
//! | `entra_callout_policy_rules` | gauge | |
//! | `entra_callout_credential_reloads_total` | counter | `credential` (`nats_password`, `issuer`, `xkey`, `account:NAME`), `result` (`ok`, `error`) |
//! | `entra_callout_audit_publish_failures_total` | counter | |
//! | `entra_callout_build_info` | gauge (always 1) | `version`, `features` |
//! | `process_*` (CPU seconds, resident and virtual memory, open and max file descriptors, start time, threads) | | |
//!
//! The `process_*` series are the Prometheus client libraries' standard ones, read from
//! `/proc` by the `metrics-process` crate when `/metrics` is scraped.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::deny::DenyReason;

/// Requests answered, by outcome and deny reason.
pub const REQUESTS: &str = "entra_callout_requests_total";
/// Time from receiving a request to having its answer, in seconds.
pub const DECISION_DURATION: &str = "entra_callout_decision_duration_seconds";
/// Requests being decided right now.
pub const IN_FLIGHT: &str = "entra_callout_in_flight_requests";
/// Requests admitted but waiting for a free slot.
pub const QUEUED: &str = "entra_callout_queued_requests";
/// Verified-token cache lookups, by result.
pub const CACHE_LOOKUPS: &str = "entra_callout_cache_lookups_total";
/// Signing-key fetches, by provider and result.
pub const KEY_REFRESHES: &str = "entra_callout_key_refreshes_total";
/// Policy reloads, by result.
pub const POLICY_RELOADS: &str = "entra_callout_policy_reloads_total";
/// Credential files picked up again after a change, by credential and result.
pub const CREDENTIAL_RELOADS: &str = "entra_callout_credential_reloads_total";
/// Rules in the policy set in use.
pub const POLICY_RULES: &str = "entra_callout_policy_rules";
/// Audit events that could not be handed to NATS.
pub const AUDIT_PUBLISH_FAILURES: &str = "entra_callout_audit_publish_failures_total";
/// Always 1, labelled with what was built: the convention dashboards join other series with.
pub const BUILD_INFO: &str = "entra_callout_build_info";

/// Decision latency buckets, in seconds: sub-millisecond for cached keys up to the two seconds
/// nats-server waits by default, where a slow key fetch would show.
const DECISION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The service's metrics and the recorder that renders them.
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// Reads the `process_*` series from `/proc` at each scrape.
    process: metrics_process::Collector,
    allowed: Counter,
    /// Answers sent after nats-server's deadline, whatever they decided.
    late: Counter,
    dropped: Counter,
    /// One counter per [`DenyReason`], indexed by [`DenyReason::index`].
    denied: Vec<Counter>,
    decision_duration: Histogram,
    in_flight: Gauge,
    queued: Gauge,
    reloads_ok: Counter,
    reloads_failed: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    policy_rules: Gauge,
    audit_failures: Counter,
}

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The histogram buckets were rejected by the exporter.
    #[error("cannot configure the metrics exporter: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    /// Another process-wide metrics recorder was installed first.
    #[error("a process-wide metrics recorder is already installed")]
    AlreadyInstalled,
}

/// Marks a request as in flight (or queued) until dropped.
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct GaugeGuard(Gauge);

impl Metrics {
    /// A fresh set of metrics with every series registered at zero, so dashboards and alerts see
    /// them before the first request.
    pub fn new() -> Result<Self, MetricsError> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(DECISION_DURATION.to_owned()),
                &DECISION_BUCKETS,
            )?
            .build_recorder();
        let handle = recorder.handle();
        let r: &dyn Recorder = &recorder;
        describe(r);
        let features = if cfg!(feature = "dev") { "dev" } else { "" };
        r.register_gauge(
            &Key::from_parts(
                BUILD_INFO,
                vec![
                    Label::from_static_parts("version", env!("CARGO_PKG_VERSION")),
                    Label::from_static_parts("features", features),
                ],
            ),
            &META,
        )
        .set(1.0);
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(r, || {
            process.describe();
            process.collect();
        });
        let requests = |outcome: &'static str, reason: &'static str| {
            counter(r, REQUESTS, [("outcome", outcome), ("reason", reason)])
        };
        let denied = DenyReason::ALL
            .iter()
            .map(|reason| requests("deny", reason.code()))
            .collect();
        let metrics = Self {
            allowed: requests("allow", ""),
            late: requests("late", ""),
            dropped: requests("drop", ""),
            denied,
            decision_duration: r
                .register_histogram(&Key::from_static_name(DECISION_DURATION), &META),
            in_flight: r.register_gauge(&Key::from_static_name(IN_FLIGHT), &META),
            queued: r.register_gauge(&Key::from_static_name(QUEUED), &META),
            reloads_ok: counter(r, POLICY_RELOADS, [("result", "ok")]),
            reloads_failed: counter(r, POLICY_RELOADS, [("result", "error")]),
            cache_hits: counter(r, CACHE_LOOKUPS, [("result", "hit")]),
            cache_misses: counter(r, CACHE_LOOKUPS, [("result", "miss")]),
            policy_rules: r.register_gauge(&Key::from_static_name(POLICY_RULES), &META),
            audit_failures: r
                .register_counter(&Key::from_static_name(AUDIT_PUBLISH_FAILURES), &META),
            handle,
            process,
            recorder: Arc::new(recorder),
        };
        Ok(metrics)
    }

    /// Registers the key refresh series of `providers` at zero.
    pub fn register_providers<'a>(&self, providers: impl IntoIterator<Item = &'a str>) {
        for provider in providers {
            for result in ["ok", "error"] {
                let labels = vec![
                    Label::new("provider", provider.to_owned()),
                    Label::from_static_parts("result", result),
                ];
                let _ = self
                    .recorder
                    .register_counter(&Key::from_parts(KEY_REFRESHES, labels), &META);
            }
        }
    }

    /// Registers the reload series of `credentials` (names from the configuration) at zero.
    pub fn register_credentials<'a>(&self, credentials: impl IntoIterator<Item = &'a str>) {
        for credential in credentials {
            for result in ["ok", "error"] {
                let _ = self.credential_counter(credential, result);
            }
        }
    }

    /// Records one reload of a changed credential file: `ok` when the new material is in use,
    /// not `ok` when it was refused and the previous stays.
    pub fn record_credential_reload(&self, credential: &str, ok: bool) {
        self.credential_counter(credential, if ok { "ok" } else { "error" })
            .increment(1);
    }

    fn credential_counter(&self, credential: &str, result: &'static str) -> Counter {
        let labels = vec![
            Label::new("credential", credential.to_owned()),
            Label::from_static_parts("result", result),
        ];
        self.recorder
            .register_counter(&Key::from_parts(CREDENTIAL_RELOADS, labels), &META)
    }

    /// Records one signing-key fetch of `provider` (a configured name). Allocates, but key
    /// fetches are rare.
    pub fn record_key_refresh(&self, provider: &str, ok: bool) {
        let labels = vec![
            Label::new("provider", provider.to_owned()),
            Label::from_static_parts("result", if ok { "ok" } else { "error" }),
        ];
        self.recorder
            .register_counter(&Key::from_parts(KEY_REFRESHES, labels), &META)
            .increment(1);
    }

    /// Records one verified-token cache lookup.
    pub fn record_cache_lookup(&self, hit: bool) {
        if hit {
            self.cache_hits.increment(1);
        } else {
            self.cache_misses.increment(1);
        }
    }

    /// Records one answered request: `reason` is `None` when the client was admitted.
    pub fn record_answer(&self, reason: Option<DenyReason>, elapsed: Duration) {
        match reason {
            None => self.allowed.increment(1),
            Some(reason) => self.denied_counter(reason).increment(1),
        }
        self.decision_duration.record(elapsed.as_secs_f64());
    }

    /// Records an answer sent after the request's deadline: nats-server had refused the client
    /// already, so it counts neither as admitted nor as refused by a policy.
    pub fn record_late(&self, elapsed: Duration) {
        self.late.increment(1);
        self.decision_duration.record(elapsed.as_secs_f64());
    }

    /// Records a request that got no answer because the request itself was unacceptable.
    pub fn record_drop(&self, elapsed: Duration) {
        self.dropped.increment(1);
        self.decision_duration.record(elapsed.as_secs_f64());
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(self.in_flight.clone())
    }

    /// Counts a request as queued until the guard is dropped.
    pub fn queued(&self) -> GaugeGuard {
        GaugeGuard::new(self.queued.clone())
    }

    /// Records a policy reload that put a set of `rules` rules in use.
    pub fn record_reload(&self, rules: usize) {
        self.reloads_ok.increment(1);
        self.set_policy_rules(rules);
    }

    /// Records a policy reload that was rejected; the previous set stays in use.
    pub fn record_reload_failure(&self) {
        self.reloads_failed.increment(1);
    }

    /// Sets the number of rules in use.
    pub fn set_policy_rules(&self, rules: usize) {
        self.policy_rules.set(rules as f64);
    }

    /// Records an audit event that could not be published.
    pub fn record_audit_failure(&self) {
        self.audit_failures.increment(1);
    }

    /// The Prometheus text exposition of every metric, the process ones read now.
    pub fn render(&self) -> String {
        let recorder: &dyn Recorder = &*self.recorder;
        metrics::with_local_recorder(recorder, || self.process.collect());
        self.handle.render()
    }

    /// Drains histogram samples into their buckets; call every few seconds, or histograms hold
    /// every sample until the next scrape.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    fn denied_counter(&self, reason: DenyReason) -> &Counter {
        // `denied` holds one counter per entry of DenyReason::ALL, in index order, so this
        // always finds one; the no-op fallback only keeps the request path panic-free.
        static NOOP: Counter = Counter::noop();
        self.denied.get(reason.index()).unwrap_or(&NOOP)
    }
}

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Registration metadata; the Prometheus recorder ignores it.
const META: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

fn counter<const N: usize>(
    r: &dyn Recorder,
    name: &'static str,
    labels: [(&'static str, &'static str); N],
) -> Counter {
    let labels: Vec<Label> = labels
        .into_iter()
        .map(|(k, v)| Label::from_static_parts(k, v))
        .collect();
    r.register_counter(&Key::from_parts(name, labels), &META)
}

fn describe(r: &dyn Recorder) {
    let counters = [
        (
            REQUESTS,
            "Authorization requests answered, by outcome and deny reason.",
        ),
        (CACHE_LOOKUPS, "Verified-token cache lookups, by result."),
        (
            KEY_REFRESHES,
            "Signing-key fetches from identity providers, by provider and result.",
        ),
        (
            POLICY_RELOADS,
            "Policy reloads, by result; a failed reload keeps the previous set.",
        ),
        (
            AUDIT_PUBLISH_FAILURES,
            "Audit events that could not be published to NATS.",
        ),
        (
            CREDENTIAL_RELOADS,
            "Changed credential files read again, by credential and result; a failed reload \
             keeps the previous material.",
        ),
    ];
    for (name, text) in counters {
        r.describe_counter(
            KeyName::from_const_str(name),
            None,
            SharedString::const_str(text),
        );
    }
    let gauges = [
        (IN_FLIGHT, "Authorization requests being decided now."),
        (QUEUED, "Authorization requests waiting for a free slot."),
        (POLICY_RULES, "Rules in the policy set in use."),
        (
            BUILD_INFO,
            "Always 1; the labels say which version and features were built.",
        ),
    ];
    for (name, text) in gauges {
        r.describe_gauge(
            KeyName::from_const_str(name),
            None,
            SharedString::const_str(text),
        );
    }
    r.describe_histogram(
        KeyName::from_const_str(DECISION_DURATION),
        Some(metrics::Unit::Seconds),
        SharedString::const_str("Time from receiving an authorization request to its answer."),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot() {
        for (i, reason) in DenyReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason}");
        }
    }

    #[test]
    fn series_exist_before_the_first_request() {
        let metrics = Metrics::new().unwrap();
        metrics.register_providers(["contoso"]);
        let text = metrics.render();
        for line in [
            "# TYPE entra_callout_requests_total counter",
            "entra_callout_requests_total{outcome=\"allow\",reason=\"\"} 0",
            "entra_callout_requests_total{outcome=\"late\",reason=\"\"} 0",
            "entra_callout_requests_total{outcome=\"deny\",reason=\"token_expired\"} 0",
            "entra_callout_requests_total{outcome=\"deny\",reason=\"overloaded\"} 0",
            "entra_callout_cache_lookups_total{result=\"miss\"} 0",
            "entra_callout_key_refreshes_total{provider=\"contoso\",result=\"error\"} 0",
            "entra_callout_policy_reloads_total{result=\"error\"} 0",
            "entra_callout_in_flight_requests 0",
            "# HELP entra_callout_decision_duration_seconds Time from receiving",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn answers_are_counted_by_reason_and_timed_in_explicit_buckets() {
        let metrics = Metrics::new().unwrap();
        metrics.record_answer(None, Duration::from_millis(3));
        metrics.record_answer(
            Some(DenyReason::NoMatchingPolicy),
            Duration::from_millis(30),
        );
        metrics.record_answer(
            Some(DenyReason::NoMatchingPolicy),
            Duration::from_millis(30),
        );
        metrics.record_drop(Duration::from_millis(1));
        metrics.record_late(Duration::from_millis(2_500));
        let text = metrics.render();
        for line in [
            "entra_callout_requests_total{outcome=\"allow\",reason=\"\"} 1",
            "entra_callout_requests_total{outcome=\"late\",reason=\"\"} 1",
            "entra_callout_decision_duration_seconds_bucket{le=\"2\"} 4",
            "entra_callout_decision_duration_seconds_bucket{le=\"5\"} 5",
            "entra_callout_requests_total{outcome=\"deny\",reason=\"no_matching_policy\"} 2",
            "entra_callout_requests_total{outcome=\"drop\",reason=\"\"} 1",
            "entra_callout_decision_duration_seconds_bucket{le=\"0.0025\"} 1",
            "entra_callout_decision_duration_seconds_bucket{le=\"0.005\"} 2",
            "entra_callout_decision_duration_seconds_bucket{le=\"0.05\"} 4",
            "entra_callout_decision_duration_seconds_count 5",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn guards_count_while_they_live() {
        let metrics = Metrics::new().unwrap();
        let first = metrics.in_flight();
        let _second = metrics.in_flight();
        let _queued = metrics.queued();
        assert!(
            metrics
                .render()
                .contains("entra_callout_in_flight_requests 2")
        );
        drop(first);
        let text = metrics.render();
        assert!(
            text.contains("entra_callout_in_flight_requests 1"),
            "{text}"
        );
        assert!(text.contains("entra_callout_queued_requests 1"), "{text}");
    }

    #[test]
    fn reloads_are_counted_by_result() {
        let metrics = Metrics::new().unwrap();
        metrics.record_reload(3);
        metrics.record_reload_failure();
        metrics.record_reload_failure();
        let text = metrics.render();
        assert!(
            text.contains("entra_callout_policy_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("entra_callout_policy_reloads_total{result=\"error\"} 2"),
            "{text}"
        );
        assert!(text.contains("entra_callout_policy_rules 3"), "{text}");
    }

    #[test]
    fn build_info_and_the_standard_process_series_are_exported() {
        let metrics = Metrics::new().unwrap();
        let text = metrics.render();
        let features = if cfg!(feature = "dev") { "dev" } else { "" };
        let build = format!(
            "entra_callout_build_info{{version=\"{}\",features=\"{features}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
        // CPU seconds may still be 0 in a young test process; the others cannot be.
        for (series, positive) in [
            ("process_resident_memory_bytes ", true),
            ("process_cpu_seconds_total ", false),
            ("process_open_fds ", true),
            ("process_start_time_seconds ", true),
        ] {
            let value: f64 = text
                .lines()
                .find_map(|line| line.strip_prefix(series))
                .unwrap_or_else(|| panic!("{series}missing in:\n{text}"))
                .parse()
                .unwrap();
            assert!(value > 0.0 || !positive && value == 0.0, "{series}{value}");
        }
    }

    #[test]
    fn key_refreshes_and_cache_lookups_land_in_their_own_metrics() {
        let metrics = Metrics::new().unwrap();
        let other = Metrics::new().unwrap();
        metrics.record_key_refresh("contoso", true);
        metrics.record_cache_lookup(true);
        metrics.record_cache_lookup(false);
        metrics.record_cache_lookup(false);
        assert!(
            other
                .render()
                .contains("entra_callout_cache_lookups_total{result=\"miss\"} 0"),
            "two services in one process keep their counts apart"
        );
        let text = metrics.render();
        assert!(
            text.contains(
                "entra_callout_key_refreshes_total{provider=\"contoso\",result=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("entra_callout_cache_lookups_total{result=\"hit\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("entra_callout_cache_lookups_total{result=\"miss\"} 2"),
            "{text}"
        );
    }
}
