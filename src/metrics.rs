//! Prometheus metrics and the health endpoint, served on a loopback HTTP socket.

use crate::runtime::service::Service;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
    pub ldap: crate::ldap::LdapMetrics,
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
        registry.register(
            "messages",
            "Decisions by verdict and reason",
            m.messages.clone(),
        );
        registry.register(
            "signatures",
            "DKIM signatures by domain, selector and algorithm",
            m.signatures.clone(),
        );
        registry.register(
            "decision_seconds",
            "Time spent in policy decisions",
            m.decision_seconds.clone(),
        );
        registry.register(
            "signing_seconds",
            "Time spent finishing DKIM signatures",
            m.signing_seconds.clone(),
        );
        registry.register(
            "reloads",
            "Configuration and key reloads by result",
            m.reloads.clone(),
        );
        registry.register(
            "key_age_seconds",
            "Seconds since each active key started signing",
            m.key_age.clone(),
        );
        registry.register(
            "dkim_domain_keys",
            "Keys that can sign each required signing domain now (0: its mail is not signed)",
            m.domain_keys.clone(),
        );
        registry.register(
            "dkim_coverage_seconds",
            "Seconds until a required signing domain first has no active selector, as the schedule stands",
            m.key_coverage.clone(),
        );
        registry.register(
            "dkim_key_expiry_seconds",
            "Seconds until each selector's retire_at",
            m.key_expiry.clone(),
        );
        registry.register(
            "dkim_dns_state",
            "Each selector's DNS state: 1 for the state it is in (published, missing, mismatch, revoked, unreachable, unchecked)",
            m.dns_state.clone(),
        );
        registry.register(
            "dkim_signing_fallback",
            "1 for a selector that signs or waits other than the schedule says: waiting_for_dns, past_retire_at",
            m.signing_fallback.clone(),
        );
        registry.register(
            "dkim_signing",
            "1 for each selector this host signs with, and its key's fingerprint",
            m.signing.clone(),
        );
        registry.register(
            "dkim_lagging",
            "Domains and algorithms this host signs with an older selector than a peer (its key has not reached it)",
            m.lagging.clone(),
        );
        registry.register(
            "account_locks",
            "Accounts locked for abuse (ownership refusals or limit hits)",
            m.account_locks.clone(),
        );
        registry.register(
            "limit_hits",
            "Sending limit hits by limit",
            m.limit_hits.clone(),
        );
        registry.register("redis_errors", "Failed Redis calls", m.redis_errors.clone());
        registry.register(
            "redis_unavailable",
            "1 while Redis is considered down and calls skip it (the failure policy applies)",
            m.redis_unavailable.clone(),
        );
        registry.register(
            "messages_in_flight",
            "Messages between MAIL and their verdict",
            m.in_flight.clone(),
        );
        registry.register(
            "audit_failures",
            "Audit records that could not be written",
            m.audit_failures.clone(),
        );
        registry.register(
            "abuse_signals",
            "Stolen-account signals above their threshold, by signal",
            m.abuse_signals.clone(),
        );
        registry.register(
            "abuse_actions",
            "Actions taken on stolen-account signals (log, tempfail, lock)",
            m.abuse_actions.clone(),
        );
        registry.register(
            "audit_checkpoints",
            "Signed checkpoints written to the audit log",
            m.audit_checkpoints.clone(),
        );
        registry.register(
            "audit_files_deleted",
            "Rotated audit files deleted by retention_days",
            m.audit_files_deleted.clone(),
        );
        registry.register(
            "would_refuse",
            "Refusals recorded but not sent (monitor mode), by reason",
            m.would_refuse.clone(),
        );
        registry.register(
            "masqueraded",
            "Robot messages whose automatic sender was masqueraded",
            m.masqueraded.clone(),
        );
        registry.register(
            "milter_connections",
            "Open MTA connections",
            m.connections.clone(),
        );
        registry.register(
            "connection_slots_full",
            "Times every milter connection slot was taken (the connection longest outside a message gives way)",
            m.slots_full.clone(),
        );
        registry.register(
            "milter_connections_closed",
            "MTA connections relayguard closed: idle (no command), message_deadline, slot_needed",
            m.connections_closed.clone(),
        );
        m.ldap.register(&mut registry);
        m.initialise();
        Metrics { registry, ..m }
    }
}

impl Metrics {
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

/// Serves `GET /metrics`, `GET /healthz` and, to this host only, `GET /signals/LOGIN` until
/// the task is aborted.
pub async fn serve(listener: TcpListener, service: Arc<Service>) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            // prometheus-client writes OpenMetrics (`_total` samples under the family name,
            // `# EOF`): said so, Prometheus keeps each family's type and help.
            const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            const TEXT: &str = "text/plain; charset=utf-8";
            // One login's signals, for `relayguard accounts why`: personal data, so only to
            // this host.
            if let Some(login) = path.strip_prefix("/signals/") {
                let (status, body) = if !peer.ip().is_loopback() {
                    ("403 Forbidden", "only from this host\n".to_string())
                } else {
                    match service.signals_of(login).await {
                        Ok(text) => ("200 OK", text),
                        Err(e) => ("404 Not Found", format!("{e}\n")),
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {TEXT}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                return;
            }
            let (status, kind, body) = match path {
                "/metrics" => ("200 OK", OPENMETRICS, service.metrics_text()),
                "/healthz" => match service.health() {
                    Ok(()) => ("200 OK", TEXT, "ok\n".to_string()),
                    Err(problems) => (
                        "503 Service Unavailable",
                        TEXT,
                        format!("unhealthy\n{}\n", problems.join("\n")),
                    ),
                },
                _ => ("404 Not Found", TEXT, "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
