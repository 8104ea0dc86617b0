//! Authorization policies: tenants, projects, roles and bindings — the YAML format, its
//! compilation, and evaluation of an identity.
//!
//! A *tenant* maps Entra tenant ids (or providers) to a NATS account and a subject prefix, and
//! has *projects* with their own prefixes below it. A *role* is a named set of permissions
//! written relative to a prefix. A *binding* gives roles to the identities matching its
//! conditions, inside one tenant or project. Every subject a binding grants is placed under its
//! prefix at load time, unless the role is marked `absolute`.
//!
//! The pipeline is model → compile → evaluate:
//! - `model` mirrors the file format with serde, keeping every value's position;
//! - [`compile`](fn@compile) turns one or more files into a [`PolicySet`], reporting every problem it finds
//!   with its `file:line:column`, and precompiles subjects into templates;
//! - [`PolicySet::evaluate`] is pure and cheap: it maps an [`Identity`](crate::identity::Identity)
//!   to a [`Grant`] or a [`PolicyDeny`], denying by default.
//!
//! Only [`PolicySet::load`] touches the filesystem.

mod compile;
mod connection;
mod eval;
mod ident;
mod jetstream;
mod model;
#[cfg(test)]
mod proptests;
mod subject;

use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use compile::{PolicySet, compile};
pub use connection::{ConnectionType, ConnectionTypes};
pub use eval::{BindingCheck, Explanation, Grant, Permissions, PolicyDeny, Responses};
pub use jetstream::{JetStreamGrant, operation_subjects as jetstream_operation_subjects};
pub use subject::{MAX_CLAIM_CHARS, USER_ONLY_CLAIMS, covers, overlaps};

pub use crate::diagnostic::Diagnostic;

/// The text of one policy file.
#[derive(Clone, Debug)]
pub struct PolicySource {
    /// Where the text came from (a file path), used in error messages.
    pub name: String,
    /// The YAML text.
    pub text: String,
}

/// Settings that come from the service configuration rather than from policy files.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Accounts no rule may target: the system account and the callout's own account. Granting
    /// either would hand clients control of the server or of the callout itself.
    pub forbidden_accounts: Vec<String>,
    /// The only accounts tenants may use (operator mode: those the service holds keys for);
    /// empty allows any name.
    pub accounts: Vec<String>,
    /// Credential lifetime cap; roles with `max_ttl` may only shorten it.
    pub default_max_ttl: Duration,
    /// Names of the configured identity providers, to check tenants' `providers` against;
    /// empty skips that check.
    pub providers: Vec<String>,
}

/// Every problem found while loading policies; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<Diagnostic>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl PolicySet {
    /// Load policies from a file, or from every `*.yaml` / `*.yml` file directly inside a
    /// directory (sorted by name, hidden files skipped), and compile them together.
    pub fn load(path: &Path, opts: &CompileOptions) -> Result<PolicySet, PolicyErrors> {
        let whole = |message: String| {
            PolicyErrors(vec![Diagnostic {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message,
            }])
        };
        let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        let files = if meta.is_dir() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| whole(format!("cannot list directory: {e}")))?;
            let mut files = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| whole(format!("cannot list directory: {e}")))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
                if name.starts_with('.') || !is_yaml {
                    continue;
                }
                let file = entry.path();
                // Follows symlinks, as Kubernetes ConfigMap mounts are symlinks to files.
                if std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
                    files.push(file);
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(whole(
                    "directory has no policy files (*.yaml or *.yml)".to_owned(),
                ));
            }
            files
        } else {
            vec![path.to_path_buf()]
        };

        let mut sources = Vec::with_capacity(files.len());
        let mut errors = Vec::new();
        for file in files {
            let name = file.display().to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => sources.push(PolicySource { name, text }),
                Err(e) => errors.push(Diagnostic {
                    file: name,
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        match compile(&sources, opts) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(PolicyErrors(errors)),
            Err(PolicyErrors(more)) => {
                errors.extend(more);
                Err(PolicyErrors(errors))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn opts() -> CompileOptions {
        CompileOptions {
            forbidden_accounts: vec!["SYS".into(), "AUTH".into()],
            accounts: Vec::new(),
            default_max_ttl: Duration::from_secs(3600),
            providers: Vec::new(),
        }
    }

    fn data(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    #[test]
    fn shipped_example_policies_compile() {
        let set = PolicySet::load(&data("policies"), &opts()).unwrap();
        assert_eq!(set.tenant_names(), ["contoso", "fabrikam"]);
        assert!(set.len() >= 8);
    }

    #[test]
    fn loads_a_directory_sorted_skipping_hidden_and_other_files() {
        let set = PolicySet::load(&data("tests/data/policies/good"), &opts()).unwrap();
        assert_eq!(set.binding_names(), ["a-publishers", "b-readers"]);
        assert_eq!(set.role_names(), ["publisher"]);
    }

    #[test]
    fn duplicate_names_across_files_are_reported_in_both() {
        let err = PolicySet::load(&data("tests/data/policies/dup"), &opts()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 2, "{text}");
        assert!(
            text.contains("one.yaml:3:11: role name `shared` is defined again at"),
            "{text}"
        );
        assert!(
            text.contains("two.yaml:3:11: duplicate role name `shared`; also defined at"),
            "{text}"
        );
    }

    #[test]
    fn broken_fixture_reports_every_problem() {
        let path = data("tests/data/policies/broken.yaml");
        let err = PolicySet::load(&path, &opts()).unwrap_err();
        let locations: Vec<String> = err
            .0
            .iter()
            .map(|e| format!("{}:{}", e.line, e.column))
            .collect();
        assert_eq!(locations, ["6:5", "9:23", "11:24", "15:13"], "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:6:5: unknown field `acount`", path.display())),
            "{text}"
        );
        assert!(text.contains("role `nope`, which is not defined"), "{text}");
    }

    #[test]
    fn missing_path_and_empty_directory_are_errors() {
        let err = PolicySet::load(&data("tests/data/policies/nope"), &opts()).unwrap_err();
        assert!(err.to_string().contains("cannot read"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let err = PolicySet::load(dir.path(), &opts()).unwrap_err();
        assert!(err.to_string().contains("no policy files"));
    }

    #[test]
    fn errors_display_one_per_line() {
        let errs = PolicyErrors(vec![
            Diagnostic {
                file: "a.yaml".into(),
                line: 2,
                column: 3,
                message: "bad".into(),
            },
            Diagnostic {
                file: "b.yaml".into(),
                line: 0,
                column: 0,
                message: "cannot read".into(),
            },
        ]);
        assert_eq!(errs.to_string(), "a.yaml:2:3: bad\nb.yaml: cannot read");
    }
}
