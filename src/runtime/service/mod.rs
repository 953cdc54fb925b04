//! The running service: the shared environment of every session and what it is made of.
//! What it does while running lives beside it: `reload` (the one reload path: SIGHUP and a
//! file change both go through [`Service::reload`]), `health` (metrics text, `/healthz`),
//! `keys` (DNS checks, activations, peers, rotation) and `audit` (logrotate, checkpoints,
//! retention).

use super::assemble::{Loaded, Shape};
use super::reload::fingerprint;
use crate::audit::writer::{AuditLog, AuditSink};
use crate::clock::Clock;
use crate::config::DnsSettings;
use crate::config::MilterConfig;
use crate::dns::TxtLookup;
use crate::ldap::Directories;
use crate::limits::store::{StoreMetrics, StoreSettings, Stores};
use crate::metrics::Metrics;
use crate::session::flight::Flight;
use crate::session::{Env, Pipeline, Snapshot};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::error;

mod audit;
mod health;
mod keys;
mod reload;

use keys::resolver_for;

/// The outcome of the latest reload attempt, published for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Number of reload attempts so far.
    pub attempts: u64,
    /// Number of successful reloads so far.
    pub applied: u64,
    /// The error of the latest attempt, if it failed.
    pub last_error: Option<String>,
    /// File events that changed nothing a reload reads (a touch, a rewrite with the same
    /// content): no reload was attempted.
    pub unchanged: u64,
}

/// What the running configuration reads and what a reload may not take away from it.
struct Watched {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// Digest of the files as the latest load read them.
    fingerprint: [u8; 32],
    shape: Shape,
}

/// The running service.
pub struct Service {
    config_path: PathBuf,
    startup: MilterConfig,
    startup_store: Option<StoreSettings>,
    metrics_listen: Option<SocketAddr>,
    env: Arc<Env>,
    pipeline: Arc<Pipeline>,
    audit_log: Option<Arc<AuditLog>>,
    directories: Arc<Directories>,
    /// The resolver selectors' records are checked with, and the settings it was made from.
    resolver: Mutex<Option<(DnsSettings, Arc<dyn TxtLookup>)>>,
    /// Wakes the DNS checker (after a reload).
    dns_wake: tokio::sync::Notify,
    /// `[dkim]` as the latest load gave it (rotation, publishing, file names).
    dkim: Mutex<Option<crate::config::DkimSettings>>,
    /// The keys that signed at the latest DNS check (to log and audit activations).
    signing: Mutex<std::collections::BTreeSet<String>>,
    /// The cluster's word on signing, when the store is shared.
    peers: Option<Arc<dyn crate::dkim::cluster::Peers>>,
    /// Why this host lags its peers, as the latest check found.
    lag: Mutex<Vec<String>>,
    /// One comparison with the peers at a time: a slower, older one must not overwrite a
    /// newer finding (the checker task and an asked-for check can run together).
    comparing: tokio::sync::Mutex<()>,
    /// One rotation pass at a time (the checker's and one asked for by hand).
    rotating: tokio::sync::Mutex<()>,
    watched: Mutex<Watched>,
    reloads: watch::Sender<ReloadStatus>,
}

impl Service {
    /// Builds the service from a loaded configuration, on `clock`, counting into `metrics`;
    /// `directories` made the loaded directory and serves reloads.
    pub fn new(
        loaded: Loaded,
        clock: Clock,
        metrics: Arc<Metrics>,
        directories: Arc<Directories>,
    ) -> Arc<Self> {
        let (reloads, _) = watch::channel(ReloadStatus::default());
        let shape = Shape::of(&loaded);
        let Loaded {
            config, snapshot, ..
        } = loaded;
        let (files, dirs) = (config.watched_files(), config.watched_dirs());
        let resolver = config.dkim.as_ref().and_then(|d| resolver_for(&d.dns));
        let stores = config.limit_store.as_ref().and_then(|settings| {
            let store_metrics = StoreMetrics {
                errors: metrics.redis_errors.clone(),
                unavailable: metrics.redis_unavailable.clone(),
            };
            match Stores::open(settings, store_metrics) {
                Ok(stores) => Some(stores),
                Err(e) => {
                    error!("sending limits disabled: cannot set up the counter store: {e}");
                    None
                }
            }
        });
        let audit_log = config.audit.clone().map(|a| Arc::new(AuditLog::open(a)));
        let env = Env {
            snapshot: ArcSwap::from_pointee(snapshot),
            counters: stores.as_ref().map(|s| s.counters.clone()),
            locks: stores.as_ref().map(|s| s.locks.clone()),
            audit: audit_log.clone().map(|a| a as Arc<dyn AuditSink>),
            metrics,
            clock,
            host: config.host(),
            flight: Flight::default(),
            dns: Default::default(),
            signals: config.abuse.as_ref().map(|_| {
                match stores.as_ref().and_then(|s| s.redis.clone()) {
                    Some(redis) => Arc::new(crate::abuse::redis::RedisBook::new(redis))
                        as Arc<dyn crate::abuse::book::SignalBook>,
                    None => Arc::new(crate::abuse::book::MemoryBook::default()),
                }
            }),
        };
        let service = Service {
            config_path: config.path.clone(),
            startup: config.milter.clone(),
            startup_store: config.limit_store.clone(),
            metrics_listen: config.metrics_listen,
            env: Arc::new(env),
            pipeline: Arc::new(Pipeline::standard()),
            audit_log,
            directories,
            resolver: Mutex::new(resolver),
            dns_wake: tokio::sync::Notify::new(),
            dkim: Mutex::new(config.dkim.clone()),
            signing: Mutex::default(),
            peers: stores.as_ref().and_then(|s| s.peers.clone()),
            lag: Mutex::default(),
            comparing: tokio::sync::Mutex::new(()),
            rotating: tokio::sync::Mutex::new(()),
            watched: Mutex::new(Watched {
                fingerprint: fingerprint(&files, &dirs),
                shape,
                files,
                dirs,
            }),
            reloads,
        };
        Arc::new(service)
    }

    /// What every session shares.
    pub fn env(&self) -> &Arc<Env> {
        &self.env
    }

    /// The checks every message goes through.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The audit log, when configured (reopened on SIGHUP/SIGUSR1, synced periodically).
    pub fn audit_log(&self) -> Option<&Arc<AuditLog>> {
        self.audit_log.as_ref()
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.env.metrics
    }

    /// The current time from the service's clock, Unix seconds.
    pub fn now(&self) -> i64 {
        self.env.now()
    }

    /// The configuration file this service reloads from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The socket settings the service started with.
    pub fn milter_config(&self) -> &MilterConfig {
        &self.startup
    }

    /// Where the metrics endpoint listens, when configured (start only).
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.metrics_listen
    }

    /// The current snapshot; a message keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.env.snapshot()
    }

    /// The files whose change triggers a reload, and the directories where any change does.
    pub fn watched(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let watched = self.watched.lock().expect("watched files lock");
        (watched.files.clone(), watched.dirs.clone())
    }

    /// The stolen-account signals of `login` now, described (`accounts why`).
    pub async fn signals_of(&self, login: &str) -> Result<String, String> {
        let snapshot = self.env.snapshot();
        let (Some(rules), Some(book)) = (snapshot.abuse.as_ref(), self.env.signals.as_ref()) else {
            return Err("no [abuse] section: stolen-account signals are not kept".into());
        };
        let login = snapshot.policy.logins.normalise(login);
        let signals = book.peek(&login, self.env.now_ms(), rules).await?;
        let mut out = crate::abuse::describe(&login, &signals, rules);
        if let Some(locks) = &self.env.locks
            && let Ok(Some(lock)) = locks.get(&login).await
        {
            out.push_str(&format!("  locked since {}: {}\n", lock.since, lock.reason));
        }
        Ok(out)
    }

    /// Forgets every directory answer (SIGHUP), so a directory change is seen at once.
    pub fn clear_directory_caches(&self) {
        self.directories.clear_caches();
    }

    /// Number of messages in flight.
    pub fn messages_in_flight(&self) -> usize {
        self.env.flight.count()
    }
}
