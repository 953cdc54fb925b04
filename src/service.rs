//! The running service's shared state: the current policy snapshot, reloads, messages in flight.

use crate::audit::writer::AuditLog;
use crate::config::{Config, ConfigError, LimitStore, MilterConfig};
use crate::dkim::signer::KeySet;
use crate::limits::LimitsPolicy;
use crate::limits::locks::LockStore;
use crate::limits::store::{Counters, RedisStore, StoreMetrics};
use crate::metrics::{KeyLabels, Metrics, ResultLabels};
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
    /// File events that changed nothing a reload reads (a touch, a rewrite with the same
    /// content): no reload was attempted.
    pub unchanged: u64,
}

/// Everything a message is decided and signed with; one immutable snapshot per reload.
#[derive(Debug)]
pub struct Snapshot {
    /// The sender policy.
    pub policy: Policy,
    /// The DKIM keys, when signing is configured.
    pub keys: Option<KeySet>,
    /// The sending limits, when configured.
    pub limits: Option<LimitsPolicy>,
}

/// Counters and locks for the sending limits (set up at start).
pub struct Limiter {
    /// The counters.
    pub counters: Counters,
    /// The locks.
    pub locks: LockStore,
}

impl Limiter {
    /// Builds the stores described by the configuration, reporting into `metrics`.
    pub fn new(store: &LimitStore, metrics: StoreMetrics) -> Result<Self, String> {
        Ok(match &store.redis {
            Some(redis) => Limiter {
                counters: Counters::redis(RedisStore::new(redis.clone(), metrics)?),
                locks: LockStore::Redis,
            },
            None => Limiter {
                counters: Counters::memory(),
                locks: LockStore::file(store.lock_file.clone()),
            },
        })
    }
}

/// The current time in Unix milliseconds.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The clock: Unix milliseconds. Injected so that tests can pin rotation and limits.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// State shared by every milter session.
pub struct Service {
    config_path: PathBuf,
    startup: MilterConfig,
    snapshot: ArcSwap<Snapshot>,
    clock: Clock,
    watched: Mutex<Watched>,
    reloads: watch::Sender<ReloadStatus>,
    in_flight: InFlight,
    draining: std::sync::atomic::AtomicBool,
    /// Metrics.
    pub metrics: Metrics,
    /// The audit log, when configured.
    pub audit: Option<AuditLog>,
    /// Host name for audit records.
    pub host: String,
    /// Limit counters and locks, when limits are configured.
    pub limiter: Option<Limiter>,
}

/// What the running configuration reads and what a reload may not take away from it.
struct Watched {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// Digest of the files as the latest load read them.
    fingerprint: [u8; 32],
    shape: Shape,
}

/// The parts of a configuration that a reload must not silently drop: a truncated or
/// emptied file would otherwise turn signing or limits off.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    dkim: bool,
    limits: bool,
    login_map: Option<PathBuf>,
    map_entries: usize,
    protected: Vec<String>,
}

impl Shape {
    fn of(config: &Config) -> Self {
        Shape {
            dkim: config.keys.is_some(),
            limits: config.limits.is_some(),
            login_map: config.login_map.clone(),
            map_entries: config.policy.owners.map.len(),
            protected: config.policy.protected.apexes().to_vec(),
        }
    }

    /// Why a reload from `self` to `new` must be refused, if it must.
    fn dropped(&self, new: &Shape) -> Vec<String> {
        let mut why = Vec::new();
        if self.dkim && !new.dkim {
            why.push("[dkim] is missing: a reload may not turn DKIM signing off".to_string());
        }
        if self.limits && !new.limits {
            why.push("[limits] is missing: a reload may not turn the sending limits off".into());
        }
        if self.login_map.is_some() && new.login_map.is_none() {
            why.push("senders.login_map is missing: a reload may not drop the sender map".into());
        } else if self.map_entries > 0 && new.map_entries == 0 {
            why.push(format!(
                "the sender map has no entries (it had {}): a reload may not empty it",
                self.map_entries
            ));
        }
        for domain in self.protected.iter().filter(|d| !new.protected.contains(d)) {
            why.push(format!(
                "protected domain {domain} is missing: a reload may not drop a protected domain"
            ));
        }
        why
    }
}

impl Service {
    /// Builds the service from a loaded configuration, on the system clock.
    pub fn new(config: Config) -> Arc<Self> {
        Self::with_clock(config, Arc::new(unix_now_ms))
    }

    /// Builds the service with an injected clock.
    pub fn with_clock(config: Config, clock: Clock) -> Arc<Self> {
        let (reloads, _) = watch::channel(ReloadStatus::default());
        let (files, dirs) = (config.watched_files(), config.watched_dirs());
        let metrics = Metrics::default();
        let store_metrics = StoreMetrics {
            errors: metrics.redis_errors.clone(),
            unavailable: metrics.redis_unavailable.clone(),
        };
        Arc::new(Self {
            watched: Mutex::new(Watched {
                fingerprint: crate::reload::fingerprint(&files, &dirs),
                shape: Shape::of(&config),
                files,
                dirs,
            }),
            config_path: config.path,
            startup: config.milter,
            limiter: config.limit_store.as_ref().and_then(|s| {
                match Limiter::new(s, store_metrics) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::error!(
                            "sending limits disabled: cannot set up the counter store: {e}"
                        );
                        None
                    }
                }
            }),
            snapshot: ArcSwap::from_pointee(Snapshot {
                policy: config.policy,
                keys: config.keys,
                limits: config.limits,
            }),
            clock,
            reloads,
            in_flight: InFlight::default(),
            draining: Default::default(),
            metrics,
            audit: config.audit.map(AuditLog::open),
            host: crate::audit::host_name(),
        })
    }

    /// The metrics in Prometheus text format, with gauges refreshed from the snapshot.
    pub fn metrics_text(&self) -> String {
        let snapshot = self.snapshot();
        let now = self.now();
        self.metrics.key_age.clear();
        if let Some(keys) = &snapshot.keys {
            for domain in keys.schedule.domains() {
                for entry in keys.active(domain, now) {
                    let labels = KeyLabels {
                        domain: entry.selector.domain.clone(),
                        selector: entry.selector.name.clone(),
                        algorithm: entry.selector.algorithm.tag().into(),
                    };
                    self.metrics
                        .key_age
                        .get_or_create(&labels)
                        .set((now - entry.selector.active_from) as f64);
                }
            }
        }
        self.metrics.in_flight.set(self.messages_in_flight() as i64);
        self.metrics.encode()
    }

    /// Healthy while every required signing domain has a valid active key.
    pub fn health(&self) -> Result<(), Vec<String>> {
        let snapshot = self.snapshot();
        let Some(keys) = &snapshot.keys else {
            return Ok(());
        };
        let now = self.now();
        let missing: Vec<String> =
            crate::dkim::tooling::required_domains(keys, snapshot.policy.protected.apexes())
                .into_iter()
                .filter(|d| keys.active(d, now).is_empty())
                .map(|d| format!("{d}: no valid active DKIM key"))
                .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    /// The current time from the service's clock, Unix seconds.
    pub fn now(&self) -> i64 {
        (self.clock)().div_euclid(1000)
    }

    /// The current time from the service's clock, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// The configuration file this service reloads from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The socket settings the service started with.
    pub fn milter_config(&self) -> &MilterConfig {
        &self.startup
    }

    /// The current snapshot; a message keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The files whose change triggers a reload, and the directories where any change does.
    pub fn watched(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let watched = self.watched.lock().expect("watched files lock");
        (watched.files.clone(), watched.dirs.clone())
    }

    /// Reloads after a file event, unless nothing a reload reads has changed (content, mode
    /// or owner): a touch, an open or a rewrite with the same bytes reloads nothing.
    /// Returns `None` when it skipped.
    pub fn reload_if_changed(&self) -> Option<Result<(), ConfigError>> {
        let (files, dirs) = self.watched();
        let now = crate::reload::fingerprint(&files, &dirs);
        if self.watched.lock().expect("watched files lock").fingerprint == now {
            self.reloads.send_modify(|s| s.unchanged += 1);
            return None;
        }
        Some(self.reload())
    }

    /// Re-reads the configuration and the files it names (as SIGHUP asks); swaps only if all
    /// of it is valid, passes the same checks as `check-config`, and keeps what the running
    /// configuration has (signing, limits, the sender map, the protected domains).
    pub fn reload(&self) -> Result<(), ConfigError> {
        let (files, dirs) = self.watched();
        let fingerprint = crate::reload::fingerprint(&files, &dirs);
        let now = self.now();
        let result = Config::load_at(&self.config_path, now).and_then(|config| {
            let mut problems = config.check(now).errors;
            let shape = Shape::of(&config);
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
                Ok((config, shape))
            } else {
                Err(ConfigError::Refused(problems))
            }
        });
        let mut status = self.reloads.borrow().clone();
        status.attempts += 1;
        let outcome = match result {
            Ok((config, shape)) => {
                if config.milter != self.startup {
                    warn!(file = %self.config_path.display(), "[milter] settings changed; they apply at the next restart");
                }
                let (new_files, new_dirs) = (config.watched_files(), config.watched_dirs());
                // Taken before the load, so a change during the load still triggers one more.
                let fingerprint = if (&new_files, &new_dirs) == (&files, &dirs) {
                    fingerprint
                } else {
                    crate::reload::fingerprint(&new_files, &new_dirs)
                };
                *self.watched.lock().expect("watched files lock") = Watched {
                    fingerprint,
                    files: new_files,
                    dirs: new_dirs,
                    shape,
                };
                if config.limit_store.as_ref().map(|s| s.redis.is_some())
                    != self.limiter.as_ref().map(|l| l.counters.redis.is_some())
                {
                    warn!("[limits] store changed; it applies at the next restart");
                }
                self.snapshot.store(Arc::new(Snapshot {
                    policy: config.policy,
                    keys: config.keys,
                    limits: config.limits,
                }));
                status.applied += 1;
                status.last_error = None;
                self.metrics
                    .reloads
                    .get_or_create(&ResultLabels {
                        result: "ok".into(),
                    })
                    .inc();
                info!(file = %self.config_path.display(), "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                // The same files, unchanged, would fail the same way: only a change retries.
                self.watched.lock().expect("watched files lock").fingerprint = fingerprint;
                error!(error = %e, "reload failed; keeping the previous configuration");
                status.last_error = Some(e.to_string());
                self.metrics
                    .reloads
                    .get_or_create(&ResultLabels {
                        result: "failed".into(),
                    })
                    .inc();
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

    /// From now on new transactions are refused (shutdown); those in flight finish.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the service is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
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
