//! Reload triggers: a debounced watch on the directories of the configuration files.
//!
//! Directories, not files, are watched: editors and deploy tools replace files by rename,
//! and Kubernetes swaps a `..data` symlink; a file watch would die after the first swap.

use crate::service::Service;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
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
    let mut names = update_watches(&mut debouncer, &service, &mut watched);
    Ok(tokio::spawn(async move {
        while let Some(paths) = rx.recv().await {
            let relevant = paths.iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| names.contains(n) || n.to_string_lossy().starts_with(".."))
            });
            if relevant {
                debug!(?paths, "configuration files changed");
                let reloading = service.clone();
                let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
                names = update_watches(&mut debouncer, &service, &mut watched);
            }
        }
    }))
}

/// Watches the directories of the service's current files; returns their file names.
fn update_watches(
    debouncer: &mut Watcher,
    service: &Service,
    watched: &mut BTreeSet<PathBuf>,
) -> BTreeSet<OsString> {
    let files = service.watched_files();
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
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
    files
        .iter()
        .filter_map(|f| f.file_name().map(OsString::from))
        .collect()
}
