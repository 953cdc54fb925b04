//! Prometheus metrics and the health endpoint, served on a loopback HTTP socket.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of `relayguard_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// accept, reject, tempfail, lock.
    pub verdict: String,
    /// Stable reason code.
    pub reason: String,
}

/// Labels identifying a key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// d=.
    pub domain: String,
    /// s=.
    pub selector: String,
    /// a=.
    pub algorithm: String,
}

/// Labels naming a signing domain.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainLabels {
    /// d=.
    pub domain: String,
}

/// Labels of a selector's DNS state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsStateLabels {
    /// d=.
    pub domain: String,
    /// s=.
    pub selector: String,
    /// published, missing, mismatch, revoked, unreachable (never answered), unchecked.
    pub state: String,
}

/// Labels of a selector that signs, or does not, other than the schedule says.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// d=.
    pub domain: String,
    /// s=.
    pub selector: String,
    /// waiting_for_dns (the schedule's selector does not sign yet) or past_retire_at (a
    /// retired selector signs on).
    pub reason: String,
}

/// Labels of the selector a host signs with, and its key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SigningLabels {
    /// d=.
    pub domain: String,
    /// s=.
    pub selector: String,
    /// a=.
    pub algorithm: String,
    /// The first 16 hex digits of SHA-256 over the public key.
    pub fingerprint: String,
}

/// Labels of reload counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok or failed.
    pub result: String,
}

/// Labels of counters by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The stable reason code.
    pub reason: String,
}

/// Labels of stolen-account signal counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    /// `networks`, `domains`, `new_recipients`, `volume` or `authentications`.
    pub signal: String,
}

/// Labels of stolen-account action counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `log`, `tempfail` or `lock`.
    pub action: String,
}

/// Labels of limit counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The limit's name.
    pub limit: String,
}

/// Every metric relayguard exports.
pub struct Metrics {
    /// Decisions by verdict and reason.
    pub messages: Family<VerdictLabels, Counter>,
    /// Signatures made.
    pub signatures: Family<KeyLabels, Counter>,
    /// Seconds spent deciding (policy checks per stage).
    pub decision_seconds: Histogram,
    /// Seconds spent finishing signatures.
    pub signing_seconds: Histogram,
    /// Reloads.
    pub reloads: Family<ResultLabels, Counter>,
    /// Seconds since each active key started signing.
    pub key_age: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    /// Keys that can sign each required signing domain now.
    pub domain_keys: Family<DomainLabels, Gauge>,
    /// Seconds until each required signing domain first has no active selector (+Inf:
    /// never, as the schedule stands).
    pub key_coverage: Family<DomainLabels, Gauge<f64, AtomicU64>>,
    /// Accounts locked for abuse.
    pub account_locks: Counter,
    /// Stolen-account signals that fired, by signal.
    pub abuse_signals: Family<SignalLabels, Counter>,
    /// Actions taken on stolen-account signals, by action.
    pub abuse_actions: Family<ActionLabels, Counter>,
    /// Seconds until each selector's `retire_at`.
    pub key_expiry: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    /// Each checked selector's DNS state (1 for the state it is in).
    pub dns_state: Family<DnsStateLabels, Gauge>,
    /// Selectors signing, or not, other than the schedule says (activation waits for DNS).
    pub signing_fallback: Family<FallbackLabels, Gauge>,
    /// The selectors this host signs with, and their keys' fingerprints.
    pub signing: Family<SigningLabels, Gauge>,
    /// How many (domain, algorithm) pairs this host signs with an older selector than a peer.
    pub lagging: Gauge,
    /// Limit hits.
    pub limit_hits: Family<LimitLabels, Counter>,
    /// Redis errors.
    pub redis_errors: Counter,
    /// 1 while Redis is considered down (calls skip it).
    pub redis_unavailable: Gauge,
    /// Messages in flight.
    pub in_flight: Gauge,
    /// Audit records not written.
    pub audit_failures: Counter,
    /// Signed audit checkpoints written.
    pub audit_checkpoints: Counter,
    /// Rotated audit files deleted by retention.
    pub audit_files_deleted: Counter,
    /// Refusals recorded, not sent (monitor mode), by reason.
    pub would_refuse: Family<ReasonLabels, Counter>,
    /// Robot messages masqueraded and accepted.
    pub masqueraded: Counter,
    /// Open MTA connections.
    pub connections: Gauge,
    /// Times a connection took the last free slot.
    pub slots_full: Counter,
    /// MTA connections relayguard closed, by why (idle, message_deadline, slot_needed).
    pub connections_closed: Family<ReasonLabels, Counter>,
    /// The directory's lookups, latency and cache.
    pub ldap: LdapMetrics,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("relayguard");
        let buckets = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
        ];
        let m = Metrics {
            messages: Family::default(),
            signatures: Family::default(),
            decision_seconds: Histogram::new(buckets),
            signing_seconds: Histogram::new(buckets),
            reloads: Family::default(),
            key_age: Family::default(),
            domain_keys: Family::default(),
            key_coverage: Family::default(),
            account_locks: Counter::default(),
            abuse_signals: Family::default(),
            abuse_actions: Family::default(),
            key_expiry: Family::default(),
            dns_state: Family::default(),
            signing_fallback: Family::default(),
            signing: Family::default(),
            lagging: Gauge::default(),
            limit_hits: Family::default(),
            redis_errors: Counter::default(),
            redis_unavailable: Gauge::default(),
            in_flight: Gauge::default(),
            audit_failures: Counter::default(),
            audit_checkpoints: Counter::default(),
            audit_files_deleted: Counter::default(),
            would_refuse: Family::default(),
            masqueraded: Counter::default(),
            connections: Gauge::default(),
            slots_full: Counter::default(),
            connections_closed: Family::default(),
            ldap: Default::default(),
            registry: Registry::default(),
        };
        for register in [
            Self::register_decisions,
            Self::register_signing,
            Self::register_accounts,
            Self::register_audit,
            Self::register_milter,
        ] {
            register(&m, &mut registry);
        }
        m.ldap.register(&mut registry);
        m.initialise();
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Registers the metrics of one part: decisions, their timing, monitor mode and reloads.
    fn register_decisions(&self, registry: &mut Registry) {
        registry.register(
            "messages",
            "Decisions by verdict and reason",
            self.messages.clone(),
        );
        registry.register(
            "decision_seconds",
            "Time spent in policy decisions",
            self.decision_seconds.clone(),
        );
        registry.register(
            "messages_in_flight",
            "Messages between MAIL and their verdict",
            self.in_flight.clone(),
        );
        registry.register(
            "would_refuse",
            "Refusals recorded but not sent (monitor mode), by reason",
            self.would_refuse.clone(),
        );
        registry.register(
            "masqueraded",
            "Robot messages whose automatic sender was masqueraded",
            self.masqueraded.clone(),
        );
        registry.register(
            "reloads",
            "Configuration and key reloads by result",
            self.reloads.clone(),
        );
    }

    /// Registers the metrics of one part: signatures and the keys behind them.
    fn register_signing(&self, registry: &mut Registry) {
        registry.register(
            "signatures",
            "DKIM signatures by domain, selector and algorithm",
            self.signatures.clone(),
        );
        registry.register(
            "signing_seconds",
            "Time spent finishing DKIM signatures",
            self.signing_seconds.clone(),
        );
        registry.register(
            "key_age_seconds",
            "Seconds since each active key started signing",
            self.key_age.clone(),
        );
        registry.register(
            "dkim_domain_keys",
            "Keys that can sign each required signing domain now (0: its mail is not signed)",
            self.domain_keys.clone(),
        );
        registry.register(
            "dkim_coverage_seconds",
            "Seconds until a required signing domain first has no active selector, as the schedule stands",
            self.key_coverage.clone(),
        );
        registry.register(
            "dkim_key_expiry_seconds",
            "Seconds until each selector's retire_at",
            self.key_expiry.clone(),
        );
        registry.register(
            "dkim_dns_state",
            "Each selector's DNS state: 1 for the state it is in (published, missing, mismatch, revoked, unreachable, unchecked)",
            self.dns_state.clone(),
        );
        registry.register(
            "dkim_signing_fallback",
            "1 for a selector that signs or waits other than the schedule says: waiting_for_dns, past_retire_at",
            self.signing_fallback.clone(),
        );
        registry.register(
            "dkim_signing",
            "1 for each selector this host signs with, and its key's fingerprint",
            self.signing.clone(),
        );
        registry.register(
            "dkim_lagging",
            "Domains and algorithms this host signs with an older selector than a peer (its key has not reached it)",
            self.lagging.clone(),
        );
    }

    /// Registers the metrics of one part: limits, locks, stolen-account signals and the counter store.
    fn register_accounts(&self, registry: &mut Registry) {
        registry.register(
            "account_locks",
            "Accounts locked for abuse (ownership refusals or limit hits)",
            self.account_locks.clone(),
        );
        registry.register(
            "limit_hits",
            "Sending limit hits by limit",
            self.limit_hits.clone(),
        );
        registry.register(
            "redis_errors",
            "Failed Redis calls",
            self.redis_errors.clone(),
        );
        registry.register(
            "redis_unavailable",
            "1 while Redis is considered down and calls skip it (the failure policy applies)",
            self.redis_unavailable.clone(),
        );
        registry.register(
            "abuse_signals",
            "Stolen-account signals above their threshold, by signal",
            self.abuse_signals.clone(),
        );
        registry.register(
            "abuse_actions",
            "Actions taken on stolen-account signals (log, tempfail, lock)",
            self.abuse_actions.clone(),
        );
    }

    /// Registers the metrics of one part: the audit log.
    fn register_audit(&self, registry: &mut Registry) {
        registry.register(
            "audit_failures",
            "Audit records that could not be written",
            self.audit_failures.clone(),
        );
        registry.register(
            "audit_checkpoints",
            "Signed checkpoints written to the audit log",
            self.audit_checkpoints.clone(),
        );
        registry.register(
            "audit_files_deleted",
            "Rotated audit files deleted by retention_days",
            self.audit_files_deleted.clone(),
        );
    }

    /// Registers the metrics of one part: the MTA's connections.
    fn register_milter(&self, registry: &mut Registry) {
        registry.register(
            "milter_connections",
            "Open MTA connections",
            self.connections.clone(),
        );
        registry.register(
            "connection_slots_full",
            "Times every milter connection slot was taken (the connection longest outside a message gives way)",
            self.slots_full.clone(),
        );
        registry.register(
            "milter_connections_closed",
            "MTA connections relayguard closed: idle (no command), message_deadline, slot_needed",
            self.connections_closed.clone(),
        );
    }

    /// Creates the series the alerting rules watch at zero, so that the first reload
    /// failure, limit hit or directory error is an increase Prometheus sees (a series that
    /// appears at 1 has no increase).
    fn initialise(&self) {
        for result in ["ok", "failed"] {
            let _ = self.reloads.get_or_create(&ResultLabels {
                result: result.into(),
            });
        }
        for limit in [
            "connections_per_second",
            "messages_per_connection",
            "messages_per_hour",
            "recipients_per_message",
            "authentications_per_window",
        ] {
            let _ = self.limit_hits.get_or_create(&LimitLabels {
                limit: limit.into(),
            });
        }
        for (verdict, reason) in [
            ("accept", "ok"),
            ("reject", "sender_not_owned"),
            ("tempfail", "ownership_unavailable"),
        ] {
            let _ = self.messages.get_or_create(&VerdictLabels {
                verdict: verdict.into(),
                reason: reason.into(),
            });
        }
        for why in ["idle", "message_deadline", "slot_needed"] {
            let _ = self
                .connections_closed
                .get_or_create(&ReasonLabels { reason: why.into() });
        }
        self.ldap.initialise();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String");
        out
    }
}

/// The directory's metrics.
#[derive(Clone)]
pub struct LdapMetrics {
    /// Lookups by result: hit (cache), miss (asked the directory), stale (served past its
    /// TTL while the directory could not answer), error (no answer: the message tempfails).
    pub lookups: Family<ResultLabels, Counter>,
    /// Seconds per directory round trip (misses), including group expansion.
    pub seconds: Histogram,
    /// Answers in the cache.
    pub cache_entries: Gauge,
}

impl Default for LdapMetrics {
    fn default() -> Self {
        LdapMetrics {
            lookups: Family::default(),
            seconds: Histogram::new([
                0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01,
                0.05, 0.25, 1.0,
            ]),
            cache_entries: Gauge::default(),
        }
    }
}

impl LdapMetrics {
    /// Registers the metrics as `relayguard_ldap_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ldap_lookups",
            "Directory ownership lookups by result (hit, miss, stale, error)",
            self.lookups.clone(),
        );
        registry.register(
            "ldap_lookup_seconds",
            "Directory round trips (cache misses), including group expansion",
            self.seconds.clone(),
        );
        registry.register(
            "ldap_cache_entries",
            "Directory answers in the cache",
            self.cache_entries.clone(),
        );
    }

    /// Creates every result's series at zero (see `Metrics`).
    pub fn initialise(&self) {
        for result in ["hit", "miss", "stale", "error"] {
            let _ = self.lookups.get_or_create(&ResultLabels {
                result: result.into(),
            });
        }
    }

    /// Counts one lookup with its result.
    pub fn count(&self, result: &str) {
        self.lookups
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }
}
