//! Hot reload of policies: on a file change (debounced) or SIGHUP, compile the policy files
//! again and swap the new set in only if it compiles cleanly.
//!
//! The directory holding the policies is watched rather than the files, because Kubernetes
//! updates a mounted ConfigMap by swapping its `..data` symlink: the files' own paths never see
//! an event, the directory does. Events are debounced, since one save produces several
//! (create, modify, close) and a ConfigMap update several more. Credential rotation
//! ([`crate::rotate`]) watches its files' directories with the same `watch_dir`.
//!
//! A set that fails to compile is rejected as a whole: every problem is logged with its
//! `file:line:column`, the failure is counted, and the set in use stays. Compilation runs on
//! the blocking pool, so reading and compiling files never stalls request tasks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::policy::{CompileOptions, PolicyErrors, PolicySet};

/// Recompiles policies and hands valid sets to the authorizer.
pub struct Reloader {
    path: PathBuf,
    options: CompileOptions,
    metrics: Arc<Metrics>,
    apply: Box<dyn Fn(PolicySet) + Send + Sync>,
}

/// When reloads happen besides SIGHUP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Watch the policy files for changes.
    pub watch: bool,
    /// Quiet time after the last change before reloading.
    pub debounce: Duration,
}

/// Why reloading could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The policy directory could not be watched.
    #[error("cannot watch {dir} for policy changes: {source}")]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: notify::Error,
    },
    /// The SIGHUP handler could not be installed.
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(#[source] std::io::Error),
}

/// What in a watched directory concerns the policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Watched {
    /// Every `*.yaml`/`*.yml` file of the directory.
    Directory,
    /// One file of the directory, by name.
    File(std::ffi::OsString),
}

impl Reloader {
    /// A reloader for the policies at `path` (file or directory) that passes each valid set to
    /// `apply`.
    pub fn new(
        path: PathBuf,
        options: CompileOptions,
        metrics: Arc<Metrics>,
        apply: impl Fn(PolicySet) + Send + Sync + 'static,
    ) -> Self {
        Self {
            path,
            options,
            metrics,
            apply: Box::new(apply),
        }
    }

    /// Loads and compiles the policies now and applies them if they are valid; returns the
    /// number of rules applied, or every problem found. Blocks on file I/O.
    pub fn reload(&self) -> Result<usize, PolicyErrors> {
        match PolicySet::load(&self.path, &self.options) {
            Ok(set) => {
                let rules = set.len();
                (self.apply)(set);
                self.metrics.record_reload(rules);
                info!(path = %self.path.display(), rules, "policies reloaded");
                Ok(rules)
            }
            Err(errors) => {
                for problem in &errors.0 {
                    error!(%problem, "policy reload rejected");
                }
                self.metrics.record_reload_failure();
                warn!(
                    path = %self.path.display(),
                    problems = errors.0.len(),
                    "policies not reloaded; the previous policies stay in use"
                );
                Err(errors)
            }
        }
    }

    /// Reloads on SIGHUP and, with `settings.watch`, on changes in the policy directory, until
    /// `shutdown` completes.
    pub fn spawn(
        self: Arc<Self>,
        settings: ReloadSettings,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<JoinHandle<()>, ReloadError> {
        let (changed_tx, changed) = mpsc::channel::<()>(1);
        let watcher = if settings.watch {
            Some(self.watch(changed_tx)?)
        } else {
            drop(changed_tx);
            None
        };
        let hangup = hangup()?;
        Ok(tokio::spawn(async move {
            // The watcher stops when dropped; it lives as long as this task.
            let _watcher = watcher;
            self.run(changed, hangup, settings.debounce, shutdown).await;
        }))
    }

    async fn run(
        self: Arc<Self>,
        mut changed: mpsc::Receiver<()>,
        mut hangup: Hangup,
        debounce: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut watching = true;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = hangup.recv() => info!("received SIGHUP; reloading policies"),
                change = changed.recv(), if watching => {
                    if change.is_none() {
                        watching = false;
                        continue;
                    }
                    // Wait until the directory has been quiet for `debounce`.
                    loop {
                        tokio::select! {
                            () = &mut shutdown => return,
                            () = tokio::time::sleep(debounce) => break,
                            more = changed.recv() => if more.is_none() { break },
                        }
                    }
                    info!("policy files changed; reloading policies");
                }
            }
            let reloader = Arc::clone(&self);
            if let Err(err) = tokio::task::spawn_blocking(move || reloader.reload()).await {
                error!(error = %err, "policy reload did not finish");
                self.metrics.record_reload_failure();
            }
        }
    }

    fn watch(&self, changed: mpsc::Sender<()>) -> Result<notify::RecommendedWatcher, ReloadError> {
        let (dir, watched) = watch_target(&self.path);
        let watcher = watch_dir(&dir, vec![watched], changed, "policy file watch error").map_err(
            |source| ReloadError::Watch {
                dir: dir.clone(),
                source,
            },
        )?;
        info!(dir = %dir.display(), "watching policies for changes");
        Ok(watcher)
    }
}

/// Watches `dir`, not recursively, and signals `changed` on every event that [`concerns`] one of
/// `watched`; a watch error is logged as `error_message`. One watcher for policy reload and
/// credential rotation, which watch directories for the same reason (`..data` swaps) and
/// coalesce events alike.
pub(crate) fn watch_dir(
    dir: &Path,
    watched: Vec<Watched>,
    changed: mpsc::Sender<()>,
    error_message: &'static str,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let on_event = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if watched.iter().any(|w| concerns(w, &event)) => {
            // A full channel already holds a pending change; nothing is lost.
            let _ = changed.try_send(());
        }
        Ok(_) => {}
        Err(err) => warn!(error = %err, "{error_message}"),
    };
    let mut watcher = notify::recommended_watcher(on_event)?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// The directory to watch for `path`, and what in it matters.
pub(crate) fn watch_target(path: &Path) -> (PathBuf, Watched) {
    if path.is_dir() {
        return (path.to_path_buf(), Watched::Directory);
    }
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().unwrap_or_default().to_owned();
    (dir, Watched::File(name))
}

/// True when `event` may have changed the policies. Reads are ignored (the reload itself opens
/// the files); Kubernetes' `..data` swaps always count.
pub(crate) fn concerns(watched: &Watched, event: &notify::Event) -> bool {
    if let EventKind::Access(kind) = event.kind
        && kind != AccessKind::Close(AccessMode::Write)
    {
        return false;
    }
    event.paths.iter().any(|path| {
        let Some(name) = path.file_name() else {
            return false;
        };
        let text = name.to_string_lossy();
        if text.starts_with("..") {
            return true;
        }
        match watched {
            Watched::File(file) => name == file.as_os_str(),
            Watched::Directory => {
                !text.starts_with('.') && (text.ends_with(".yaml") || text.ends_with(".yml"))
            }
        }
    })
}

/// SIGHUP, where there is such a thing.
pub(crate) struct Hangup {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

pub(crate) fn hangup() -> Result<Hangup, ReloadError> {
    #[cfg(unix)]
    {
        let kind = tokio::signal::unix::SignalKind::hangup();
        let signal = tokio::signal::unix::signal(kind).map_err(ReloadError::Signal)?;
        Ok(Hangup { signal })
    }
    #[cfg(not(unix))]
    Ok(Hangup {})
}

impl Hangup {
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        if self.signal.recv().await.is_some() {
            return;
        }
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use notify::event::{CreateKind, ModifyKind, RenameMode};
    use tokio::sync::mpsc::UnboundedReceiver;

    use super::*;

    const TENANT: &str = "72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41";

    fn policy(rule: &str) -> String {
        format!(
            "version: 1\ntenants:\n  - name: t\n    entra_tenants: [{TENANT}]\n    account: APP\n\
             roles:\n  - name: r\n    publish: {{ allow: [\"a.>\"] }}\n\
             bindings:\n  - name: {rule}\n    tenant: t\n    roles: [r]\n    when: {{ app_roles: [R] }}\n"
        )
    }

    fn options() -> CompileOptions {
        CompileOptions {
            forbidden_accounts: vec!["SYS".into(), "AUTH".into()],
            default_max_ttl: Duration::from_secs(3600),
            providers: Vec::new(),
            accounts: Vec::new(),
        }
    }

    /// A reloader whose applied sets arrive, as rule-name lists, on the returned channel.
    fn reloader(path: &Path) -> (Arc<Reloader>, UnboundedReceiver<Vec<String>>, Arc<Metrics>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::new().unwrap());
        let reloader = Reloader::new(path.to_path_buf(), options(), Arc::clone(&metrics), {
            let tx = Mutex::new(tx);
            move |set: PolicySet| {
                let names = set
                    .binding_names()
                    .iter()
                    .map(|n| (*n).to_owned())
                    .collect();
                let _ = tx.lock().unwrap().send(names);
            }
        });
        (Arc::new(reloader), rx, metrics)
    }

    async fn next_set(rx: &mut UnboundedReceiver<Vec<String>>) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a reload within 10 s")
            .expect("reloader alive")
    }

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn a_valid_set_is_applied_and_an_invalid_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policies.yaml");
        std::fs::write(&file, policy("first")).unwrap();
        let (reloader, mut applied, metrics) = reloader(&file);

        assert_eq!(reloader.reload().unwrap(), 1);
        assert_eq!(applied.try_recv().unwrap(), ["first"]);

        std::fs::write(
            &file,
            policy("second").replace("account: APP", "account: SYS"),
        )
        .unwrap();
        let errors = reloader.reload().unwrap_err();
        assert!(errors.to_string().contains("policies.yaml:5:"), "{errors}");
        assert_eq!(
            applied.try_recv(),
            Err(mpsc::error::TryRecvError::Empty),
            "an invalid set is never applied"
        );

        let text = metrics.render();
        assert!(
            text.contains("entra_callout_policy_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("entra_callout_policy_reloads_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(text.contains("entra_callout_policy_rules 1"), "{text}");
    }

    #[test]
    fn only_policy_files_and_kubernetes_swaps_concern_a_directory() {
        let dir = Watched::Directory;
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(concerns(&dir, &event(modify, "/p/a.yaml")));
        assert!(concerns(&dir, &event(modify, "/p/b.yml")));
        assert!(concerns(
            &dir,
            &event(EventKind::Create(CreateKind::Any), "/p/..data")
        ));
        assert!(concerns(&dir, &event(modify, "/p/..data_tmp")));
        assert!(!concerns(&dir, &event(modify, "/p/.a.yaml.swp")));
        assert!(!concerns(&dir, &event(modify, "/p/notes.txt")));
        assert!(!concerns(&dir, &event(modify, "/p/a.yaml~")));
        // Our own reads must not trigger another reload.
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!concerns(&dir, &event(open, "/p/a.yaml")));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(concerns(&dir, &event(written, "/p/a.yaml")));
    }

    #[test]
    fn only_the_file_itself_and_kubernetes_swaps_concern_a_file() {
        let file = Watched::File("policies.yaml".into());
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(concerns(&file, &event(renamed, "/etc/x/policies.yaml")));
        assert!(concerns(&file, &event(renamed, "/etc/x/..data")));
        assert!(!concerns(&file, &event(renamed, "/etc/x/config.yaml")));
    }

    #[test]
    fn a_file_is_watched_through_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policies.yaml");
        assert_eq!(
            watch_target(&file),
            (
                dir.path().to_path_buf(),
                Watched::File("policies.yaml".into())
            )
        );
        assert_eq!(
            watch_target(dir.path()),
            (dir.path().to_path_buf(), Watched::Directory)
        );
        assert_eq!(
            watch_target(Path::new("policies.yaml")),
            (PathBuf::from("."), Watched::File("policies.yaml".into()))
        );
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_after_the_debounce() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), policy("first")).unwrap();
        let (reloader, mut applied, _) = reloader(dir.path());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let settings = ReloadSettings {
            watch: true,
            debounce: Duration::from_millis(100),
        };
        let task = reloader
            .spawn(settings, async {
                let _ = stopped.await;
            })
            .unwrap();

        std::fs::write(dir.path().join("a.yaml"), policy("second")).unwrap();
        assert_eq!(next_set(&mut applied).await, ["second"]);

        // A broken edit is rejected; fixing it is picked up again.
        std::fs::write(dir.path().join("a.yaml"), "version: 1\nrules: [").unwrap();
        std::fs::write(dir.path().join("a.yaml"), policy("third")).unwrap();
        assert_eq!(next_set(&mut applied).await, ["third"]);

        let _ = stop.send(());
        task.await.unwrap();
    }

    /// Kubernetes mounts a ConfigMap as `name -> ..data/name` and `..data -> ..<timestamp>/`, and
    /// updates it by pointing a new `..data_tmp` at a new directory and renaming it over `..data`.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_configmap_symlink_swap_is_seen() {
        use std::os::unix::fs::symlink;

        let mount = tempfile::tempdir().unwrap();
        let m = mount.path();
        std::fs::create_dir(m.join("..2026_01_01")).unwrap();
        std::fs::write(m.join("..2026_01_01/policies.yaml"), policy("old")).unwrap();
        symlink("..2026_01_01", m.join("..data")).unwrap();
        symlink("..data/policies.yaml", m.join("policies.yaml")).unwrap();

        let file = m.join("policies.yaml");
        let (reloader, mut applied, _) = reloader(&file);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let settings = ReloadSettings {
            watch: true,
            debounce: Duration::from_millis(100),
        };
        let task = reloader
            .spawn(settings, async {
                let _ = stopped.await;
            })
            .unwrap();

        std::fs::create_dir(m.join("..2026_01_02")).unwrap();
        std::fs::write(m.join("..2026_01_02/policies.yaml"), policy("new")).unwrap();
        symlink("..2026_01_02", m.join("..data_tmp")).unwrap();
        std::fs::rename(m.join("..data_tmp"), m.join("..data")).unwrap();
        std::fs::remove_dir_all(m.join("..2026_01_01")).unwrap();

        assert_eq!(next_set(&mut applied).await, ["new"]);
        let _ = stop.send(());
        task.await.unwrap();
    }
}
