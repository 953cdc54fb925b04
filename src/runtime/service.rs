//! The running service: the shared environment of every session, and the one reload path
//! (SIGHUP and a file change both go through [`Service::reload`]).

use super::assemble::{self, LoadError, Loaded, Shape};
use super::reload::fingerprint;
use crate::audit::writer::{AuditLog, AuditSink};
use crate::clock::Clock;
use crate::config::DnsSettings;
use crate::config::MilterConfig;
use crate::dkim::record::DnsState;
use crate::dns::TxtLookup;
use crate::ldap::Directories;
use crate::limits::store::{StoreMetrics, StoreSettings, Stores};
use crate::metrics::{
    DnsStateLabels, DomainLabels, FallbackLabels, KeyLabels, Metrics, ResultLabels, SigningLabels,
};
use crate::session::flight::Flight;
use crate::session::{Env, Pipeline, Snapshot};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
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
            host: config
                .host_name
                .clone()
                .unwrap_or_else(crate::audit::host_name),
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

    /// The metrics in Prometheus text format, with gauges refreshed from the snapshot.
    pub fn metrics_text(&self) -> String {
        let snapshot = self.snapshot();
        let now = self.now();
        let metrics = &self.env.metrics;
        let dns = |e: &crate::dkim::signer::SignerEntry| self.env.dns.state(e);
        let checked = self.resolver.lock().expect("resolver lock").is_some();
        metrics.domain_keys.clear();
        metrics.key_age.clear();
        metrics.key_coverage.clear();
        metrics.key_expiry.clear();
        metrics.dns_state.clear();
        metrics.signing_fallback.clear();
        metrics.signing.clear();
        if let Some(keys) = &snapshot.keys {
            let required =
                crate::dkim::tooling::required_domains(keys, snapshot.policy.protected.apexes());
            for domain in required {
                let labels = DomainLabels {
                    domain: domain.clone(),
                };
                metrics
                    .domain_keys
                    .get_or_create(&labels)
                    .set(keys.signers(&domain, now, &dns).entries.len() as i64);
                let coverage = match keys.schedule.first_gap(&domain, now) {
                    Some(gap) => (gap - now) as f64,
                    None => f64::INFINITY,
                };
                metrics.key_coverage.get_or_create(&labels).set(coverage);
            }
            let key_labels = |entry: &crate::dkim::signer::SignerEntry| KeyLabels {
                domain: entry.selector.domain.clone(),
                selector: entry.selector.name.clone(),
                algorithm: entry.selector.algorithm.tag().into(),
            };
            for domain in keys.schedule.domains() {
                let signers = keys.signers(domain, now, &dns);
                for entry in &signers.entries {
                    metrics
                        .signing
                        .get_or_create(&SigningLabels {
                            domain: entry.selector.domain.clone(),
                            selector: entry.selector.name.clone(),
                            algorithm: entry.selector.algorithm.tag().into(),
                            fingerprint: entry.fingerprint.clone(),
                        })
                        .set(1);
                    metrics
                        .key_age
                        .get_or_create(&key_labels(entry))
                        .set((now - entry.selector.active_from) as f64);
                }
                for note in &signers.notes {
                    let (selector, reason) = match note {
                        crate::dkim::signer::Note::Waiting { selector, .. } => {
                            (selector, "waiting_for_dns")
                        }
                        crate::dkim::signer::Note::PastRetire { selector } => {
                            (selector, "past_retire_at")
                        }
                    };
                    metrics
                        .signing_fallback
                        .get_or_create(&FallbackLabels {
                            domain: domain.to_string(),
                            selector: selector.clone(),
                            reason: reason.into(),
                        })
                        .set(1);
                }
            }
            for entry in keys.entries() {
                if let Some(retire) = entry.selector.retire_at.filter(|&r| r > now) {
                    metrics
                        .key_expiry
                        .get_or_create(&key_labels(entry))
                        .set((retire - now) as f64);
                }
                if checked {
                    metrics
                        .dns_state
                        .get_or_create(&DnsStateLabels {
                            domain: entry.selector.domain.clone(),
                            selector: entry.selector.name.clone(),
                            state: self.env.dns.get(entry).name().into(),
                        })
                        .set(1);
                }
            }
        }
        metrics.in_flight.set(self.messages_in_flight() as i64);
        metrics.encode()
    }

    /// Healthy while every required signing domain has a key that signs (its record
    /// published, when activation waits for DNS) and every selector the schedule makes
    /// active has the record DNS was last seen to serve for it published. The reasons
    /// otherwise.
    pub fn health(&self) -> Result<(), Vec<String>> {
        let snapshot = self.snapshot();
        let Some(keys) = &snapshot.keys else {
            return Ok(());
        };
        let now = self.now();
        let dns = |e: &crate::dkim::signer::SignerEntry| self.env.dns.state(e);
        let mut problems: Vec<String> =
            crate::dkim::tooling::required_domains(keys, snapshot.policy.protected.apexes())
                .into_iter()
                .filter(|d| keys.signers(d, now, &dns).entries.is_empty())
                .map(|d| format!("{d}: no valid active DKIM key"))
                .collect();
        // A record gone bad under a selector DNS once served is a fault; a selector whose
        // record was never there only waits (the previous one signs), which is no fault.
        for domain in keys.schedule.domains() {
            for entry in keys.active(domain, now) {
                let seen = self.env.dns.get(&entry);
                if let Some(state) = seen.state
                    && state != DnsState::Published
                    && seen.ever_published
                {
                    problems.push(format!(
                        "{domain}: the DNS record of active selector {} is {state}",
                        entry.selector.name
                    ));
                }
            }
        }
        problems.extend(self.lag.lock().expect("lag lock").iter().cloned());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
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
        super::systemd(&[
            sd_notify::NotifyState::Reloading,
            sd_notify::NotifyState::MonotonicUsec(super::monotonic_usec()),
        ]);
        let outcome = self.load_and_swap();
        super::systemd(&[sd_notify::NotifyState::Ready]);
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

    /// Checks the DNS record of every loaded DKIM key now, when checks are configured;
    /// returns when the next check is due (a selector waiting for its record is looked at
    /// again within a minute, the next scheduled activation is checked when it comes).
    pub async fn check_dns(&self) -> Option<std::time::Duration> {
        let (settings, resolver) = self.resolver.lock().expect("resolver lock").clone()?;
        let snapshot = self.snapshot();
        let keys = snapshot.keys.as_ref()?;
        let now = self.now();
        crate::dkim::dns::check(keys, resolver.as_ref(), &self.env.dns, now).await;
        self.note_activations(keys, now);
        self.compare_with_peers(keys, settings.recheck).await;
        let mut next = settings.recheck.as_secs() as i64;
        let waiting = keys.schedule.domains().iter().any(|d| {
            keys.signers(d, now, &|e| self.env.dns.state(e))
                .notes
                .iter()
                .any(|n| matches!(n, crate::dkim::signer::Note::Waiting { .. }))
        });
        if waiting {
            next = next.min(60);
        }
        if let Some(activation) = keys
            .schedule
            .selectors
            .iter()
            .map(|s| s.active_from - now)
            .filter(|&t| t > 0)
            .min()
        {
            next = next.min(activation);
        }
        Some(std::time::Duration::from_secs(next.max(1) as u64))
    }

    /// What this host signs with now, per domain and algorithm.
    fn signing_now(
        &self,
        keys: &crate::dkim::signer::KeySet,
        now: i64,
    ) -> Vec<crate::dkim::cluster::Signing> {
        let dns = |e: &crate::dkim::signer::SignerEntry| self.env.dns.state(e);
        keys.schedule
            .domains()
            .into_iter()
            .flat_map(|d| keys.signers(d, now, &dns).entries)
            .map(|e| crate::dkim::cluster::Signing {
                domain: e.selector.domain.clone(),
                algorithm: e.selector.algorithm.tag().into(),
                selector: e.selector.name.clone(),
                active_from: e.selector.active_from,
                fingerprint: e.fingerprint.clone(),
            })
            .collect()
    }

    /// Tells the peers what this host signs with and finds whether it lags them (when the
    /// store is shared); a store that cannot answer leaves the last finding.
    async fn compare_with_peers(
        &self,
        keys: &crate::dkim::signer::KeySet,
        recheck: std::time::Duration,
    ) {
        let Some(peers) = &self.peers else {
            return;
        };
        let _one_at_a_time = self.comparing.lock().await;
        // The time as the comparison runs, not as the check began: a check that waited
        // must not announce what this host signed a while ago.
        let now = self.now();
        let ours = self.signing_now(keys, now);
        let host = &self.env.host;
        let ttl = 3 * recheck.as_secs().max(60);
        let found = async {
            peers.announce(host, &ours, ttl).await?;
            peers.peers().await
        };
        match found.await {
            Ok(all) => {
                let why = crate::dkim::cluster::lagging(host, &ours, &all);
                for reason in &why {
                    warn!(%reason, "this host lags its peers in DKIM rotation");
                }
                self.env.metrics.lagging.set(why.len() as i64);
                *self.lag.lock().expect("lag lock") = why;
            }
            Err(e) => warn!(error = %e, "cannot compare DKIM signing with the cluster's hosts"),
        }
    }

    /// Logs and audits every key that signs now and did not at the previous check.
    fn note_activations(&self, keys: &crate::dkim::signer::KeySet, now: i64) {
        let dns = |e: &crate::dkim::signer::SignerEntry| self.env.dns.state(e);
        let mut now_signing = std::collections::BTreeSet::new();
        let mut fresh = Vec::new();
        for domain in keys.schedule.domains() {
            for entry in keys.signers(domain, now, &dns).entries {
                now_signing.insert(entry.id());
                fresh.push(entry);
            }
        }
        let mut signing = self.signing.lock().expect("signing lock");
        let first = signing.is_empty();
        for entry in fresh {
            if !first && !signing.contains(&entry.id()) {
                self.record_event(&crate::dkim::rotation::KeyEvent {
                    event: "key_activated",
                    domain: entry.selector.domain.clone(),
                    selector: entry.selector.name.clone(),
                    detail: format!("signs now (key {})", entry.fingerprint),
                });
            }
        }
        *signing = now_signing;
    }

    /// Reopens the audit log (after logrotate moved it), sealing the old file with a
    /// checkpoint first when checkpoints are configured.
    pub fn reopen_audit(&self) {
        if let Some(audit) = &self.audit_log {
            let time = crate::clock::rfc3339_ms(self.env.now_ms());
            if let Err(e) = audit.reopen(&time, &self.env.host) {
                error!("cannot reopen the audit log: {e}");
            }
        }
    }

    /// Seals the audit records written since the last checkpoint (when a checkpoint key is
    /// configured); `true` when a checkpoint was written.
    pub fn audit_checkpoint(&self) -> bool {
        let Some(audit) = &self.audit_log else {
            return false;
        };
        let time = crate::clock::rfc3339_ms(self.env.now_ms());
        match audit.checkpoint(&time, &self.env.host) {
            Ok(written) => {
                if written {
                    self.env.metrics.audit_checkpoints.inc();
                }
                written
            }
            Err(e) => {
                error!(error = %e, "cannot write an audit checkpoint");
                false
            }
        }
    }

    /// Deletes rotated audit files past `retention_days`, each deletion recorded in the live
    /// file.
    pub fn audit_retention(&self) -> Vec<crate::audit::retention::Deleted> {
        let Some(audit) = &self.audit_log else {
            return Vec::new();
        };
        let (crate::audit::writer::Destination::File(live), Some(days)) =
            (&audit.config().destination, audit.config().retention_days)
        else {
            return Vec::new();
        };
        let now_ms = self.env.now_ms();
        let time = crate::clock::rfc3339_ms(now_ms);
        let deleted = crate::audit::retention::prune(
            audit,
            live,
            now_ms.div_euclid(1000),
            days,
            &time,
            &self.env.host,
        );
        self.env
            .metrics
            .audit_files_deleted
            .inc_by(deleted.len() as u64);
        deleted
    }

    /// Writes what the audit writer found at start (a partial record it cut off).
    pub fn audit_started(&self) {
        if let Some(audit) = &self.audit_log {
            let time = crate::clock::rfc3339_ms(self.env.now_ms());
            audit.flush_notes(&time, &self.env.host);
        }
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

    /// Logs a key event and writes it to the audit log.
    fn record_event(&self, event: &crate::dkim::rotation::KeyEvent) {
        info!(
            event = event.event,
            domain = %event.domain,
            selector = %event.selector,
            detail = %event.detail,
            "DKIM key rotation"
        );
        if let Some(audit) = &self.audit_log {
            let time = crate::clock::rfc3339_ms(self.env.now_ms());
            let _ = audit.event(event, &time, &self.env.host);
        }
    }

    /// One rotation pass, when this host rotates (`Service::rotates`; else nothing): the
    /// zone made to match
    /// the schedule ([dkim.publish]; records of long-retired selectors go first, while
    /// their stanzas still name them), the successor keys, retirements and removals that
    /// are due written to the schedule (then reloaded), the zone matched again for the
    /// new keys, the records checked. Events are logged and audited.
    pub async fn rotate(&self) -> Result<Vec<crate::dkim::rotation::KeyEvent>, String> {
        let _one_at_a_time = self.rotating.lock().await;
        if !self.rotates().await {
            return Ok(Vec::new());
        }
        let Some(dkim) = self.dkim.lock().expect("dkim lock").clone() else {
            return Ok(Vec::new());
        };
        let now = self.now();
        let mut events = self.publish_pass(&dkim, now).await?;
        if let Some(rotation) = &dkim.rotation {
            let snapshot = self.snapshot();
            if let Some(keys) = &snapshot.keys {
                let remove_after = dkim.publish.as_ref().map_or(7 * 86_400, |p| p.remove_after);
                let steps = crate::dkim::rotation::plan(
                    &keys.schedule,
                    rotation,
                    dkim.min_publish_lead,
                    remove_after,
                    now,
                );
                if !steps.is_empty() {
                    let (selectors, keys_dir) = (dkim.selectors.clone(), dkim.keys_dir.clone());
                    let bits = rotation.key_bits;
                    let applied = tokio::task::spawn_blocking(move || {
                        crate::dkim::rotation::apply(&steps, &selectors, &keys_dir, bits, now)
                    })
                    .await
                    .map_err(|e| e.to_string())??;
                    events.extend(applied);
                    self.reload().map_err(|e| e.to_string())?;
                    events.extend(self.publish_pass(&dkim, now).await?);
                }
            }
        }
        for event in &events {
            self.record_event(event);
        }
        self.check_dns().await;
        Ok(events)
    }

    /// The zone made to match the current schedule, when [dkim.publish] is configured.
    async fn publish_pass(
        &self,
        dkim: &crate::config::DkimSettings,
        now: i64,
    ) -> Result<Vec<crate::dkim::rotation::KeyEvent>, String> {
        let Some(publish) = &dkim.publish else {
            return Ok(Vec::new());
        };
        let resolver = self.resolver.lock().expect("resolver lock").clone();
        let Some((settings, resolver)) = resolver else {
            return Err("[dkim.publish] needs record checks (require_dns or [dkim.dns])".into());
        };
        let snapshot = self.snapshot();
        let Some(keys) = &snapshot.keys else {
            return Ok(Vec::new());
        };
        let zones = snapshot.policy.protected.apexes().to_vec();
        let updater = crate::dkim::rotation::updater(publish, &zones, settings.timeout)?;
        crate::dkim::rotation::publish(
            keys,
            resolver.as_ref(),
            &updater,
            publish.remove_after,
            now,
            false,
        )
        .await
    }

    /// Whether this service rotates and publishes by itself now: `[dkim.publish] automatic`,
    /// or `[dkim.rotation] leader` and (with a shared store) holding the leader lease, so
    /// that exactly one host of a cluster rotates even when all are configured alike.
    async fn rotates(&self) -> bool {
        let (leader, automatic, recheck) = {
            let dkim = self.dkim.lock().expect("dkim lock");
            let Some(d) = dkim.as_ref() else {
                return false;
            };
            (
                d.rotation.as_ref().is_some_and(|r| r.leader),
                d.publish.as_ref().is_some_and(|p| p.automatic),
                d.dns.recheck,
            )
        };
        if !leader {
            return automatic;
        }
        match &self.peers {
            None => true,
            Some(peers) => match peers
                .lease(&self.env.host, 3 * recheck.as_secs().max(60))
                .await
            {
                Ok(holds) => holds,
                Err(e) => {
                    warn!(error = %e, "cannot take the rotation leader lease; not rotating now");
                    false
                }
            },
        }
    }

    /// Runs [`Service::check_dns`] (and, as the leader, [`Service::rotate`]) until the task
    /// is dropped: at start, when due, and after every reload.
    pub async fn dns_checker(self: Arc<Self>) {
        loop {
            if let Err(e) = self.rotate().await {
                error!(error = %e, "DKIM key rotation failed; retrying at the next check");
            }
            let next = self
                .check_dns()
                .await
                .unwrap_or(std::time::Duration::from_secs(600));
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = self.dns_wake.notified() => {}
            }
        }
    }

    /// Forgets every directory answer (SIGHUP), so a directory change is seen at once.
    pub fn clear_directory_caches(&self) {
        self.directories.clear_caches();
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

    /// Number of messages in flight.
    pub fn messages_in_flight(&self) -> usize {
        self.env.flight.count()
    }
}

/// The resolver for `settings`, when records are to be checked (a resolver that cannot be
/// set up is logged; checks then wait for a reload that fixes it).
fn resolver_for(settings: &DnsSettings) -> Option<(DnsSettings, Arc<dyn TxtLookup>)> {
    if !settings.check {
        return None;
    }
    match crate::dns::Resolver::new(&settings.nameservers, settings.timeout) {
        Ok(resolver) => Some((settings.clone(), Arc::new(resolver) as Arc<dyn TxtLookup>)),
        Err(e) => {
            error!(error = %e, "cannot set up the DNS resolver: selector records are not checked");
            None
        }
    }
}
