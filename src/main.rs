//! The `entra-callout` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

use entra_callout::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            // Each cause once: `{err:#}` repeats causes that messages already carry.
            eprintln!(
                "entra-callout: {}",
                entra_callout::diagnostic::chain(err.as_ref())
            );
            ExitCode::from(2)
        }
    }
}
