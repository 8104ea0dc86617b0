//! A located problem in a configuration or policy file (`file:line:column: message`), YAML
//! errors turned into one, and error chains printed with each cause once.

use std::fmt;

use serde_saphyr::{DefaultMessageFormatter, MessageFormatter};

/// One problem in an input file, located precisely enough for an editor to jump to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (path as given by the operator).
    pub file: String,
    /// 1-based line, or 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based column (in characters), or 0 when the problem concerns the whole file.
    pub column: u64,
    /// What is wrong, as a lowercase sentence.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for Diagnostic {}

/// Turns a serde-saphyr error into a located problem without its source snippet.
pub(crate) fn yaml_problem(file: &str, err: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message: yaml_message(err),
    }
}

/// The message of a serde-saphyr error without its location prefix and source snippet.
pub(crate) fn yaml_message(err: &serde_saphyr::Error) -> String {
    DefaultMessageFormatter
        .format_message(err.without_snippet())
        .escape_debug()
        .to_string()
}

/// `error: cause: cause` on one line, each cause once. Many errors (ours, async-nats', reqwest's)
/// already put their cause into their own message *and* return it from `source()`; walking the
/// chain naively, as anyhow's `{:#}` does, then prints it twice. A cause whose text the line
/// already holds is skipped.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot connect to NATS at nats://127.0.0.1:4222: {0}")]
        Embeds(#[source] std::io::Error),
        #[error("cannot read the policies")]
        Wraps(#[source] std::io::Error),
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused (os error 111)",
        )
    }

    #[test]
    fn each_cause_is_printed_once() {
        assert_eq!(
            chain(&Outer::Embeds(refused())),
            "cannot connect to NATS at nats://127.0.0.1:4222: connection refused (os error 111)"
        );
        assert_eq!(
            chain(&Outer::Wraps(refused())),
            "cannot read the policies: connection refused (os error 111)"
        );
        // anyhow's context over an error that embeds its cause.
        let error = anyhow::Error::new(Outer::Embeds(refused())).context("serve failed");
        assert_eq!(
            chain(error.as_ref()),
            "serve failed: cannot connect to NATS at nats://127.0.0.1:4222: connection refused (os error 111)"
        );
        assert_eq!(format!("{error:#}").matches("os error 111").count(), 2);
    }
}
