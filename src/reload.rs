//! Reload triggers: a debounced watch on the directories of the configuration files.
//!
//! Directories, not files, are watched: editors and deploy tools replace files by rename,
//! and Kubernetes swaps a `..data` symlink; a file watch would die after the first swap.

use crate::service::Service;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// How long file events are gathered before one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Starts watching the configuration's directories; changes reload the service.
///
/// The watches are in place when this returns; the returned task runs until aborted.
pub fn watch_files(service: Arc<Service>) -> notify::Result<JoinHandle<()>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut debouncer =
        new_debouncer(
            DEBOUNCE,
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let paths = events.into_iter().flat_map(|e| e.event.paths).collect();
                    let _ = tx.send(paths);
                }
                Err(errors) => warn!(?errors, "file watch error"),
            },
        )?;
    let mut watched = BTreeSet::new();
    let mut relevant = update_watches(&mut debouncer, &service, &mut watched);
    Ok(tokio::spawn(async move {
        while let Some(paths) = rx.recv().await {
            if paths.iter().any(|p| relevant.matches(p)) {
                debug!(?paths, "configuration files changed");
                let reloading = service.clone();
                let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
                relevant = update_watches(&mut debouncer, &service, &mut watched);
            }
        }
    }))
}

/// Which changed paths trigger a reload.
struct Relevant {
    names: BTreeSet<OsString>,
    dirs: Vec<PathBuf>,
}

impl Relevant {
    fn matches(&self, path: &Path) -> bool {
        let in_key_dir = path
            .parent()
            .is_some_and(|p| self.dirs.iter().any(|d| d == p));
        let known = path
            .file_name()
            .is_some_and(|n| self.names.contains(n) || n.to_string_lossy().starts_with(".."));
        in_key_dir || known
    }
}

/// Watches the directories of the service's current files and its key directories.
fn update_watches(
    debouncer: &mut Watcher,
    service: &Service,
    watched: &mut BTreeSet<PathBuf>,
) -> Relevant {
    let (files, any_change_dirs) = service.watched();
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .chain(any_change_dirs.iter().cloned())
        .collect();
    for dir in dirs.difference(watched) {
        if let Err(e) = debouncer.watch(dir, RecursiveMode::NonRecursive) {
            warn!(dir = %dir.display(), error = %e, "cannot watch directory; reload with SIGHUP");
        }
    }
    for dir in watched.difference(&dirs) {
        let _ = debouncer.unwatch(dir);
    }
    *watched = dirs;
    Relevant {
        names: files
            .iter()
            .filter_map(|f| f.file_name().map(OsString::from))
            .collect(),
        dirs: any_change_dirs,
    }
}
