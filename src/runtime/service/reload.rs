//! The one reload path: SIGHUP and a file change both build a whole new snapshot and swap
//! it in, or keep the old one and say why.

use super::{ReloadStatus, Service, Watched, resolver_for};
use crate::metrics::ResultLabels;
use crate::runtime::assemble::{self, LoadError, Shape};
use crate::runtime::reload::fingerprint;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{error, info, warn};

impl Service {
    /// Reloads after a file event, unless nothing a reload reads has changed (content, mode
    /// or owner): a touch, an open or a rewrite with the same bytes reloads nothing.
    /// Returns `None` when it skipped.
    pub fn reload_if_changed(&self) -> Option<Result<(), LoadError>> {
        let (files, dirs) = self.watched();
        let now = fingerprint(&files, &dirs);
        if self.watched.lock().expect("watched files lock").fingerprint == now {
            self.reloads.send_modify(|s| s.unchanged += 1);
            return None;
        }
        Some(self.reload())
    }

    /// The one reload path (SIGHUP and file changes): re-reads the configuration and the
    /// files it names; swaps only if all of it is valid, passes the same checks as
    /// `check-config`, and keeps what the running configuration has (signing, limits, the
    /// sender map, the protected domains). systemd hears RELOADING and READY around it.
    pub fn reload(&self) -> Result<(), LoadError> {
        crate::runtime::systemd(&[
            sd_notify::NotifyState::Reloading,
            sd_notify::NotifyState::MonotonicUsec(crate::runtime::monotonic_usec()),
        ]);
        let outcome = self.load_and_swap();
        crate::runtime::systemd(&[sd_notify::NotifyState::Ready]);
        outcome
    }

    fn load_and_swap(&self) -> Result<(), LoadError> {
        let (files, dirs) = self.watched();
        let before = fingerprint(&files, &dirs);
        let now = self.now();
        let result = assemble::load(&self.config_path, now, &self.directories).and_then(|loaded| {
            let mut problems = assemble::check(&loaded, now).errors;
            let shape = Shape::of(&loaded);
            problems.extend(
                self.watched
                    .lock()
                    .expect("watched files lock")
                    .shape
                    .dropped(&shape)
                    .into_iter()
                    .map(|why| format!("{}: {why}", self.config_path.display())),
            );
            if problems.is_empty() {
                Ok((loaded, shape))
            } else {
                Err(LoadError::Refused(problems))
            }
        });
        let mut status = self.reloads.borrow().clone();
        status.attempts += 1;
        let outcome = match result {
            Ok((loaded, shape)) => {
                let config = &loaded.config;
                if config.milter != self.startup {
                    warn!(file = %self.config_path.display(), "[milter] settings changed; they apply at the next restart");
                }
                if config.limit_store != self.startup_store {
                    warn!("[limits] store settings changed; they apply at the next restart");
                }
                let (new_files, new_dirs) = (config.watched_files(), config.watched_dirs());
                // Taken before the load, so a change during the load still triggers one more.
                let fingerprint = if (&new_files, &new_dirs) == (&files, &dirs) {
                    before
                } else {
                    fingerprint(&new_files, &new_dirs)
                };
                *self.watched.lock().expect("watched files lock") = Watched {
                    fingerprint,
                    files: new_files,
                    dirs: new_dirs,
                    shape,
                };
                let dns = config.dkim.as_ref().map(|d| d.dns.clone());
                let mut resolver = self.resolver.lock().expect("resolver lock");
                if resolver.as_ref().map(|(s, _)| s) != dns.as_ref() {
                    *resolver = dns.as_ref().and_then(resolver_for);
                }
                drop(resolver);
                *self.dkim.lock().expect("dkim lock") = config.dkim.clone();
                self.env.snapshot.store(Arc::new(loaded.snapshot));
                self.dns_wake.notify_one();
                status.applied += 1;
                status.last_error = None;
                self.count_reload("ok");
                info!(file = %self.config_path.display(), "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                // The same files, unchanged, would fail the same way: only a change retries.
                self.watched.lock().expect("watched files lock").fingerprint = before;
                error!(error = %e, "reload failed; keeping the previous configuration");
                status.last_error = Some(e.to_string());
                self.count_reload("failed");
                Err(e)
            }
        };
        self.reloads.send_replace(status);
        outcome
    }

    fn count_reload(&self, result: &str) {
        self.env
            .metrics
            .reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Subscribes to reload outcomes.
    pub fn reload_status(&self) -> watch::Receiver<ReloadStatus> {
        self.reloads.subscribe()
    }
}
