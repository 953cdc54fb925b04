//! Reload triggers: a debounced watch on the directories of the configuration files.
//!
//! Directories, not files, are watched: editors and deploy tools replace files by rename,
//! and Kubernetes swaps a `..data` symlink; a file watch would die after the first swap.

use crate::service::Service;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How long file events are gathered before one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the configuration's directories and reloads the service after changes, until
/// the service is dropped. Runs on the tokio runtime.
pub async fn watch_files(service: Arc<Service>) -> notify::Result<()> {
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
    let mut watched_dirs = BTreeSet::new();
    loop {
        let files = service.watched_files();
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .map(|f| {
                f.parent()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
            })
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d
                }
            })
            .collect();
        for dir in dirs.difference(&watched_dirs) {
            if let Err(e) = debouncer.watch(dir, RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), error = %e, "cannot watch directory");
            }
        }
        for dir in watched_dirs.difference(&dirs) {
            let _ = debouncer.unwatch(dir);
        }
        watched_dirs = dirs;
        let names: BTreeSet<OsString> = files
            .iter()
            .filter_map(|f| f.file_name().map(OsString::from))
            .collect();
        let Some(paths) = rx.recv().await else {
            return Ok(());
        };
        let relevant = paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| names.contains(n) || n.to_string_lossy().starts_with(".."))
        });
        if relevant {
            debug!(?paths, "configuration files changed");
            let service = service.clone();
            let _ = tokio::task::spawn_blocking(move || service.reload()).await;
        }
    }
}
