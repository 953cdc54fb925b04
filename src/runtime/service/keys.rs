//! Keys and DNS while the service runs: selectors' records checked, activations noted, the
//! cluster's hosts compared, and rotation with publishing on the leader.

use super::Service;
use crate::config::DnsSettings;
use crate::dns::TxtLookup;
use std::sync::Arc;
use tracing::{error, info, warn};

impl Service {
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
}

/// The resolver for `settings`, when records are to be checked (a resolver that cannot be
/// set up is logged; checks then wait for a reload that fixes it).
pub(super) fn resolver_for(settings: &DnsSettings) -> Option<(DnsSettings, Arc<dyn TxtLookup>)> {
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
