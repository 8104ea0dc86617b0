//! Logging setup, and the one place the service reads the wall clock.
//!
//! JSON logs are one object per line; audit events among them carry their lists (rules,
//! subjects) as JSON arrays, so a log pipeline reads them like the events published to NATS.

use std::fmt;
use std::io::IsTerminal;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::callout::AUDIT_LIST_FIELDS;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `entra_callout=debug`.
    pub level: String,
}

/// Keeps the log writer thread running; dropping it writes out every line still buffered.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// Installs the global `tracing` subscriber. `RUST_LOG`, when set, overrides the configured level.
///
/// Lines are formatted where they are logged and written to stderr by a thread of their own,
/// through a buffer flushed whenever that thread has caught up: a burst of audit lines (a
/// reconnect storm) costs one `write(2)` per burst instead of one per client, and no request
/// task waits on the pipe. Lines are never dropped: when the writer is `MAX_BUFFERED_LINES` lines
/// behind, loggers wait for it, as they did on a blocking stderr.
pub fn init(settings: &LogSettings) -> LogGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(MAX_BUFFERED_LINES)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(directives(&settings.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests, or `check` after `serve` in one process) is harmless; ignore it.
    let _ = match settings.format {
        LogFormat::Json => registry.with(json_layer(writer)).try_init(),
        // Colours only for a person at a terminal: in files, pipes and `kubectl logs` the escape
        // codes are noise, and formatting them is work on every audit line.
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(writer),
            )
            .try_init(),
    };
    LogGuard { _writer: guard }
}

/// How far the log writer may fall behind before loggers wait: about two seconds of audit
/// lines at the service's peak rate on two cores, at most a few MB while stderr is stuck.
const MAX_BUFFERED_LINES: usize = 4_096;

/// The filter for the configured `level`. async-nats logs every connection event at info — one
/// line per reconnect attempt, several a second while nats-server is down — where the service's
/// own lines already say it disconnected, reconnected, or is not reachable yet; its info lines
/// are dropped unless `level` names `async_nats` itself.
fn directives(level: &str) -> String {
    if level.contains("async_nats") {
        level.to_owned()
    } else {
        format!("{level},async_nats=warn")
    }
}

/// The JSON log layer, writing to `writer`.
fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .event_format(AuditArrays(
            tracing_subscriber::fmt::format().json().flatten_event(true),
        ))
        .fmt_fields(JsonFields::new())
        .with_writer(writer)
}

/// The JSON format, with the list fields of audit events turned from the strings `tracing`
/// records them as back into the JSON arrays they were logged as.
struct AuditArrays(Format<Json>);

impl<S, N> FormatEvent<S, N> for AuditArrays
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != "audit" {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&line) else {
            return writer.write_str(&line);
        };
        for field in AUDIT_LIST_FIELDS {
            let list = match object.get(field) {
                Some(Value::String(text)) => serde_json::from_str::<Value>(text).ok(),
                _ => None,
            };
            if let Some(list @ Value::Array(_)) = list {
                object.insert(field.to_owned(), list);
            }
        }
        writeln!(writer, "{}", Value::Object(object))
    }
}

/// Seconds since the Unix epoch, read once per request at the edge and passed down as `now`.
#[expect(
    clippy::disallowed_methods,
    reason = "the one place the wall clock is read; everything else takes `now`"
)]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Self;

        fn make_writer(&'w self) -> Self {
            self.clone()
        }
    }

    fn lines(log: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(json_layer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn async_nats_info_lines_are_dropped_unless_asked_for() {
        assert_eq!(directives("info"), "info,async_nats=warn");
        assert_eq!(
            directives("debug,async_nats=debug"),
            "debug,async_nats=debug"
        );
        assert!(EnvFilter::try_new(directives("entra_callout=debug")).is_ok());
    }

    #[test]
    fn audit_lists_are_json_arrays_and_other_fields_stay_as_logged() {
        let lines = lines(|| {
            tracing::info!(
                target: "audit",
                rules = r#"["a","b"]"#,
                subscribe = "[]",
                name = "[not a list]",
                "client admitted"
            );
            tracing::info!(rules = r#"["a"]"#, "not an audit event");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["rules"], serde_json::json!(["a", "b"]));
        assert_eq!(lines[0]["subscribe"], serde_json::json!([]));
        assert_eq!(lines[0]["name"], "[not a list]");
        assert_eq!(lines[0]["target"], "audit");
        assert_eq!(lines[0]["message"], "client admitted");
        assert_eq!(lines[1]["rules"], r#"["a"]"#);
    }
}
