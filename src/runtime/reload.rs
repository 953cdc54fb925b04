//! Reload triggers: a debounced watch on the directories of the configuration files, and the
//! fingerprint that tells a real change from a touch.
//!
//! Directories, not files, are watched: editors and deploy tools replace files by rename,
//! and Kubernetes swaps a `..data` symlink; a file watch would die after the first swap.
//! Only events that can change what a reload reads count (create, write, rename, remove,
//! close after writing, permission changes); opens and reads do not, so the reload's own
//! reads cannot trigger another one. A change event reloads only when the files' content,
//! mode or owner differ from what the last reload read.

use super::service::Service;
use notify::RecursiveMode;
use notify::event::{AccessKind, AccessMode, EventKind};
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
                    let paths: Vec<PathBuf> = events
                        .into_iter()
                        .filter(|e| may_change_content(&e.event.kind))
                        .flat_map(|e| e.event.paths)
                        .collect();
                    if !paths.is_empty() {
                        let _ = tx.send(paths);
                    }
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
                let _ = tokio::task::spawn_blocking(move || reloading.reload_if_changed()).await;
                relevant = update_watches(&mut debouncer, &service, &mut watched);
            }
        }
    }))
}

/// Whether a file event can change what a reload reads. Opens and reads cannot (and the
/// reload itself opens every file); a touch can look like a write, which the fingerprint
/// then tells apart.
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Any | EventKind::Other => true,
    }
}

/// A digest of everything a reload reads: each watched file's and each watched directory's
/// entries' content, mode and owner (not their times, so `touch` changes nothing). A
/// missing or unreadable file counts as such, so its return is a change.
pub fn fingerprint(files: &[PathBuf], dirs: &[PathBuf]) -> [u8; 32] {
    use std::os::unix::fs::MetadataExt;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut add = |path: &Path| {
        digest.update(path.as_os_str().as_encoded_bytes());
        digest.update(b"\0");
        match std::fs::metadata(path) {
            Ok(meta) => {
                digest.update(&meta.mode().to_le_bytes());
                digest.update(&meta.uid().to_le_bytes());
                digest.update(&meta.gid().to_le_bytes());
                if meta.is_file() {
                    match std::fs::read(path) {
                        Ok(bytes) => {
                            digest.update(&(bytes.len() as u64).to_le_bytes());
                            digest.update(&bytes);
                        }
                        Err(e) => digest.update(format!("unreadable {:?}", e.kind()).as_bytes()),
                    }
                }
            }
            Err(e) => digest.update(format!("missing {:?}", e.kind()).as_bytes()),
        }
        digest.update(b"\0");
    };
    for file in files {
        add(file);
    }
    for dir in dirs {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        add(dir);
        for entry in &entries {
            add(entry);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.finish().as_ref());
    out
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
