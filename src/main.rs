//! The `entra-callout` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

use entra_callout::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("entra-callout: {err:#}");
            ExitCode::from(2)
        }
    }
}
