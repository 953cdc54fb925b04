//! The directory's answers, kept for a while: bounded (least recently used goes first),
//! positive and negative TTLs, and stale answers kept for when the directory cannot answer.
//! Pure: the caller passes the time.

use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One login the directory names as an owner, and the entry that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The login (normalised).
    pub login: String,
    /// The DN of the entry whose attribute named it.
    pub entry: String,
}

/// A directory answer: the owners (empty: nobody, the key has no entry).
pub type Owners = Arc<[Owner]>;

/// What the cache holds for a key at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Within its TTL.
    Fresh(Owners),
    /// Past its TTL but within `max_stale`: usable only when the directory cannot answer.
    Stale(Owners),
    /// Nothing usable.
    Missing,
}

struct Entry {
    owners: Owners,
    at_ms: i64,
}

/// The cache.
pub struct Cache {
    entries: Mutex<LruCache<String, Entry>>,
    positive_ms: i64,
    negative_ms: i64,
    stale_ms: i64,
}

impl Cache {
    /// A cache of at most `size` answers.
    pub fn new(size: usize, positive: Duration, negative: Duration, max_stale: Duration) -> Self {
        Cache {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(size).unwrap_or(NonZeroUsize::MIN),
            )),
            positive_ms: positive.as_millis() as i64,
            negative_ms: negative.as_millis() as i64,
            stale_ms: max_stale.as_millis() as i64,
        }
    }

    /// The answer for `key` at `now_ms`.
    pub fn get(&self, key: &str, now_ms: i64) -> Cached {
        let mut entries = self.entries.lock().expect("ldap cache lock");
        let Some(entry) = entries.get(key) else {
            return Cached::Missing;
        };
        let ttl = if entry.owners.is_empty() {
            self.negative_ms
        } else {
            self.positive_ms
        };
        let age = now_ms - entry.at_ms;
        if age < ttl {
            Cached::Fresh(entry.owners.clone())
        } else if age < ttl + self.stale_ms {
            Cached::Stale(entry.owners.clone())
        } else {
            entries.pop(key);
            Cached::Missing
        }
    }

    /// Remembers the directory's answer for `key`, fetched at `now_ms`.
    pub fn put(&self, key: &str, owners: Owners, now_ms: i64) {
        self.entries.lock().expect("ldap cache lock").put(
            key.to_string(),
            Entry {
                owners,
                at_ms: now_ms,
            },
        );
    }

    /// Forgets everything (SIGHUP).
    pub fn clear(&self) {
        self.entries.lock().expect("ldap cache lock").clear();
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("ldap cache lock").len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(logins: &[&str]) -> Owners {
        logins
            .iter()
            .map(|l| Owner {
                login: l.to_string(),
                entry: format!("uid={l},dc=x"),
            })
            .collect()
    }

    #[test]
    fn ttls_stale_window_and_size() {
        let s = Duration::from_secs;
        let cache = Cache::new(2, s(300), s(60), s(3600));
        cache.put("alice@x", owners(&["alice"]), 0);
        cache.put("nobody@x", owners(&[]), 0);
        assert_eq!(
            cache.get("alice@x", 299_999),
            Cached::Fresh(owners(&["alice"]))
        );
        assert_eq!(
            cache.get("alice@x", 300_000),
            Cached::Stale(owners(&["alice"]))
        );
        assert_eq!(cache.get("nobody@x", 59_999), Cached::Fresh(owners(&[])));
        assert_eq!(cache.get("nobody@x", 60_000), Cached::Stale(owners(&[])));
        assert_eq!(cache.get("alice@x", 3_900_000), Cached::Missing);
        assert_eq!(cache.len(), 1, "an answer past its stale window is dropped");
        cache.put("a@x", owners(&["a"]), 0);
        cache.put("b@x", owners(&["b"]), 0);
        assert_eq!(cache.len(), 2, "bounded");
        assert_eq!(
            cache.get("nobody@x", 0),
            Cached::Missing,
            "least recently used went"
        );
        cache.clear();
        assert!(cache.is_empty());
    }
}
