//! A relay cluster rotates as one: what each host signs with (shared through Redis when the
//! limits use it), whether this host lags its peers, and the lease that makes exactly one
//! host the rotation leader. The comparison is pure; [`Peers`] is the seam to the store.

use crate::BoxFuture;
use serde::{Deserialize, Serialize};

/// One selector a host signs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signing {
    /// d=.
    pub domain: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// s=.
    pub selector: String,
    /// When it started signing by the schedule.
    pub active_from: i64,
    /// Which key the host has (see `SignerEntry::fingerprint`).
    pub fingerprint: String,
}

/// Each host and what it said it signs with.
pub type Hosts = Vec<(String, Vec<Signing>)>;

/// Where hosts tell each other what they sign with, and hold the leader lease.
pub trait Peers: Send + Sync {
    /// Says what `host` signs with; forgotten after `ttl_secs` unless said again.
    fn announce<'a>(
        &'a self,
        host: &'a str,
        signing: &'a [Signing],
        ttl_secs: u64,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// What every host said lately.
    fn peers(&self) -> BoxFuture<'_, Result<Hosts, String>>;
    /// Takes or renews the leader lease for `host` (`ttl_secs`); whether `host` holds it.
    fn lease<'a>(&'a self, host: &'a str, ttl_secs: u64) -> BoxFuture<'a, Result<bool, String>>;
}

/// Why this host lags its peers: for each domain and algorithm a peer signs with a newer
/// selector than this host (its key has not reached this host, or DNS does not match it
/// here), in words.
pub fn lagging(host: &str, ours: &[Signing], peers: &[(String, Vec<Signing>)]) -> Vec<String> {
    let mut why = Vec::new();
    for (peer, theirs) in peers.iter().filter(|(p, _)| p != host) {
        for t in theirs {
            let mine = ours
                .iter()
                .find(|o| o.domain == t.domain && o.algorithm == t.algorithm);
            let behind = mine.is_none_or(|m| m.active_from < t.active_from);
            if behind {
                why.push(format!(
                    "{}: this host signs {} with {}; {peer} already with {} (key {}): its key has not reached this host, or DNS does not serve it as this host has it",
                    t.domain,
                    t.algorithm,
                    mine.map_or("nothing", |m| m.selector.as_str()),
                    t.selector,
                    t.fingerprint
                ));
            }
        }
    }
    why.sort();
    why.dedup();
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(selector: &str, active_from: i64) -> Signing {
        Signing {
            domain: "tugraz.at".into(),
            algorithm: "rsa-sha256".into(),
            selector: selector.into(),
            active_from,
            fingerprint: format!("fp-{selector}"),
        }
    }

    #[test]
    fn a_host_lags_when_a_peer_signs_with_a_newer_selector() {
        let peers = vec![
            ("relay1".to_string(), vec![s("new", 200)]),
            ("relay2".to_string(), vec![s("old", 100)]),
        ];
        assert!(lagging("relay1", &[s("new", 200)], &peers).is_empty());
        let why = lagging("relay2", &[s("old", 100)], &peers);
        assert_eq!(why.len(), 1);
        assert!(
            why[0].contains(
                "this host signs rsa-sha256 with old; relay1 already with new (key fp-new)"
            ),
            "{why:?}"
        );
        assert!(
            lagging(
                "relay1",
                &[s("new", 200)],
                &[("relay1".into(), vec![s("x", 900)])]
            )
            .is_empty(),
            "itself is no peer"
        );
    }
}
