//! What the service tells Prometheus and the load balancer: the metrics text (with the
//! gauges refreshed as it is read) and `/healthz`.

use super::Service;
use crate::dkim::record::DnsState;
use crate::metrics::{DnsStateLabels, DomainLabels, FallbackLabels, KeyLabels, SigningLabels};

impl Service {
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
}
