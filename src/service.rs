//! The running service's shared state: the current policy snapshot, reloads, messages in flight.

use crate::config::{Config, ConfigError, MilterConfig};
use crate::policy::Policy;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

/// The outcome of the latest reload attempt, published for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Number of reload attempts so far.
    pub attempts: u64,
    /// Number of successful reloads so far.
    pub applied: u64,
    /// The error of the latest attempt, if it failed.
    pub last_error: Option<String>,
}

/// State shared by every milter session.
pub struct Service {
    config_path: PathBuf,
    startup: MilterConfig,
    policy: ArcSwap<Policy>,
    watched: Mutex<Vec<PathBuf>>,
    reloads: watch::Sender<ReloadStatus>,
    in_flight: InFlight,
}

impl Service {
    /// Builds the service from a loaded configuration.
    pub fn new(config: Config) -> Arc<Self> {
        let (reloads, _) = watch::channel(ReloadStatus::default());
        Arc::new(Self {
            watched: Mutex::new(config.watched_files()),
            config_path: config.path,
            startup: config.milter,
            policy: ArcSwap::from_pointee(config.policy),
            reloads,
            in_flight: InFlight::default(),
        })
    }

    /// The configuration file this service reloads from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The socket settings the service started with.
    pub fn milter_config(&self) -> &MilterConfig {
        &self.startup
    }

    /// The current policy; a message keeps the snapshot it started with.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The files whose change triggers a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.watched.lock().expect("watched files lock").clone()
    }

    /// Re-reads the configuration and the files it names; swaps only if all of it is valid.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let result = Config::load(&self.config_path);
        let mut status = self.reloads.borrow().clone();
        status.attempts += 1;
        let outcome = match result {
            Ok(config) => {
                if config.milter != self.startup {
                    warn!(file = %self.config_path.display(), "[milter] settings changed; they apply at the next restart");
                }
                *self.watched.lock().expect("watched files lock") = config.watched_files();
                self.policy.store(Arc::new(config.policy));
                status.applied += 1;
                status.last_error = None;
                info!(file = %self.config_path.display(), "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "reload failed; keeping the previous configuration");
                status.last_error = Some(e.to_string());
                Err(e)
            }
        };
        self.reloads.send_replace(status);
        outcome
    }

    /// Subscribes to reload outcomes.
    pub fn reload_status(&self) -> watch::Receiver<ReloadStatus> {
        self.reloads.subscribe()
    }

    /// Marks a message as in flight until the guard is dropped.
    pub fn begin_message(&self) -> InFlightGuard {
        self.in_flight.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.in_flight.clone())
    }

    /// Number of messages in flight.
    pub fn messages_in_flight(&self) -> usize {
        self.in_flight.count.load(Ordering::SeqCst)
    }

    /// Waits until no message is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.in_flight.idle.notified();
            if self.messages_in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Clone, Default)]
struct InFlight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

/// Holds one message in the in-flight count.
pub struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
