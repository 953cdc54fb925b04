//! What DNS said about each selector's key, kept between checks: the last definite answer
//! (published, missing, mismatch, revoked) and whether the latest check reached a resolver.
//! An unreachable resolver changes nothing but that flag, so states do not flap.

use super::record::DnsState;
use super::signer::SignerEntry;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The latest word on one key's record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// The last definite answer (`None`: never had one).
    pub state: Option<DnsState>,
    /// When the last definite answer came (Unix seconds).
    pub checked_at: Option<i64>,
    /// Why the latest check had no answer, when it had none.
    pub unreachable: Option<String>,
    /// Whether DNS ever served this key (a record that goes bad afterwards is a fault; one
    /// that was never there only makes the selector wait).
    pub ever_published: bool,
}

impl Observation {
    /// The state as status output and metrics name it.
    pub fn name(&self) -> &'static str {
        match (&self.state, &self.unreachable) {
            (Some(state), _) => state.name(),
            (None, Some(_)) => "unreachable",
            (None, None) => "unchecked",
        }
    }
}

/// A change worth logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Before (`None`: never known).
    pub before: Option<DnsState>,
    /// After.
    pub after: DnsState,
}

/// Every key's observation, shared by the checker (writes, rarely) and every message
/// (reads, lock-free). Keyed by domain, selector and key fingerprint, so that a key file
/// replaced under the same selector name is checked afresh.
#[derive(Default)]
pub struct DnsBook {
    seen: ArcSwap<HashMap<String, Observation>>,
    write: Mutex<()>,
}

impl DnsBook {
    /// The observation of an entry's key.
    pub fn get(&self, entry: &SignerEntry) -> Observation {
        self.seen
            .load()
            .get(&entry.id())
            .cloned()
            .unwrap_or_default()
    }

    /// The last definite state of an entry's key.
    pub fn state(&self, entry: &SignerEntry) -> Option<DnsState> {
        self.seen
            .load()
            .get(&entry.id())
            .and_then(|o| o.state.clone())
    }

    /// Records a check of an entry's key at `now`: an answer, or why there was none (the
    /// last answer then stands). Returns the change of state, if any.
    pub fn record(
        &self,
        entry: &SignerEntry,
        answer: Result<DnsState, String>,
        now: i64,
    ) -> Option<Change> {
        let _writer = self.write.lock().expect("dns book lock");
        let mut seen = HashMap::clone(&self.seen.load());
        let observation = seen.entry(entry.id()).or_default();
        let change = match answer {
            Ok(state) => {
                let change = (observation.state.as_ref() != Some(&state)).then(|| Change {
                    before: observation.state.clone(),
                    after: state.clone(),
                });
                observation.ever_published |= state == DnsState::Published;
                observation.state = Some(state);
                observation.checked_at = Some(now);
                observation.unreachable = None;
                change
            }
            Err(why) => {
                observation.unreachable = Some(why);
                None
            }
        };
        self.seen.store(Arc::new(seen));
        change
    }
}

/// Checks the record of every loaded key (active, coming, and a retired one that may sign
/// on) and writes the answers into `book`; logs every change of state.
pub async fn check(
    keys: &super::signer::KeySet,
    lookup: &dyn crate::dns::TxtLookup,
    book: &DnsBook,
    now: i64,
) {
    for entry in keys.entries() {
        let s = &entry.selector;
        let name = super::record::record_name(&s.name, &s.domain);
        let answer = lookup.txt(&name).await.map(|records| {
            super::record::judge(records.as_deref(), s.algorithm, &entry.public_key)
        });
        if let Err(why) = &answer {
            tracing::warn!(record = %name, error = %why, "DNS unreachable: selector states stay as they were");
        }
        let signs = s.is_active(now);
        match book.record(entry, answer, now) {
            Some(Change {
                after: DnsState::Published,
                before,
            }) => {
                tracing::info!(record = %name, was = before.as_ref().map_or("unchecked", |b| b.name()), "DKIM record published")
            }
            Some(Change { after, before }) if signs && before == Some(DnsState::Published) => {
                tracing::error!(record = %name, state = %after, "DKIM record of a signing selector is no longer valid: falling back")
            }
            Some(Change { after, .. }) => {
                tracing::warn!(record = %name, state = %after, "DKIM record not usable")
            }
            None => {}
        }
    }
}
