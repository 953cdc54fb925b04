//! Account locks: in Redis when Redis is used, else in a local JSON file; they survive
//! restarts and are managed with `relayguard accounts`.

use super::store::RedisStore;
use crate::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Why and since when a login is locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// RFC 3339 time of the lock.
    pub since: String,
    /// What triggered it.
    pub reason: String,
}

impl Lock {
    /// A lock taken at `now_ms` for `reason`.
    pub fn new(reason: &str, now_ms: i64) -> Self {
        Lock {
            since: jiff::Timestamp::from_millisecond(now_ms)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default(),
            reason: reason.to_string(),
        }
    }
}

/// Where account locks live: the seam between the lock check, `relayguard accounts` and
/// their storage (a file, Redis, or a fake in tests). Errors are text for the log.
pub trait LockStore: Send + Sync {
    /// The lock of `login`, if any.
    fn get<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<Option<Lock>, String>>;
    /// Every lock.
    fn list(&self) -> BoxFuture<'_, Result<BTreeMap<String, Lock>, String>>;
    /// Locks `login`.
    fn lock<'a>(&'a self, login: &'a str, lock: Lock) -> BoxFuture<'a, Result<(), String>>;
    /// Unlocks `login`; whether it was locked.
    fn unlock<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<bool, String>>;
}

/// Locks in a JSON file `{login: Lock}`: re-read when it changes, written atomically.
pub struct FileLocks {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, BTreeMap<String, Lock>)>,
}

impl FileLocks {
    /// Locks kept in `path`.
    pub fn new(path: PathBuf) -> Self {
        FileLocks {
            path,
            cache: Mutex::new((None, BTreeMap::new())),
        }
    }

    fn read(&self) -> Result<BTreeMap<String, Lock>, String> {
        let path = &self.path;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut guard = self.cache.lock().expect("lock cache");
        if modified.is_some() && guard.0 == modified {
            return Ok(guard.1.clone());
        }
        let locks = match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => BTreeMap::new(),
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        *guard = (modified, locks.clone());
        Ok(locks)
    }

    fn write(path: &Path, locks: &BTreeMap<String, Lock>) -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(locks).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl LockStore for FileLocks {
    fn get<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<Option<Lock>, String>> {
        let found = self.read().map(|locks| locks.get(login).cloned());
        Box::pin(std::future::ready(found))
    }

    fn list(&self) -> BoxFuture<'_, Result<BTreeMap<String, Lock>, String>> {
        Box::pin(std::future::ready(self.read()))
    }

    fn lock<'a>(&'a self, login: &'a str, lock: Lock) -> BoxFuture<'a, Result<(), String>> {
        let done = self.read().and_then(|mut locks| {
            locks.insert(login.to_string(), lock);
            Self::write(&self.path, &locks)
        });
        Box::pin(std::future::ready(done))
    }

    fn unlock<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        let done = self.read().and_then(|mut locks| {
            let was = locks.remove(login).is_some();
            Self::write(&self.path, &locks).map(|()| was)
        });
        Box::pin(std::future::ready(done))
    }
}

/// Locks in the Redis hash `<prefix>locks`, shared by every relay host.
pub struct RedisLocks(pub Arc<RedisStore>);

const LOCK_TTL_SECS: i64 = 400 * 86_400;

impl LockStore for RedisLocks {
    fn get<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<Option<Lock>, String>> {
        Box::pin(async move {
            let r = &self.0;
            let value: Option<String> = r
                .command(redis::cmd("HGET").arg(r.key("locks")).arg(login))
                .await?;
            Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<BTreeMap<String, Lock>, String>> {
        Box::pin(async move {
            let r = &self.0;
            let all: BTreeMap<String, String> =
                r.command(redis::cmd("HGETALL").arg(r.key("locks"))).await?;
            Ok(all
                .into_iter()
                .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|l| (k, l)))
                .collect())
        })
    }

    fn lock<'a>(&'a self, login: &'a str, lock: Lock) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let r = &self.0;
            let value = serde_json::to_string(&lock).map_err(|e| e.to_string())?;
            let _: i64 = r
                .command(redis::cmd("HSET").arg(r.key("locks")).arg(login).arg(value))
                .await?;
            let _: i64 = r
                .command(redis::cmd("EXPIRE").arg(r.key("locks")).arg(LOCK_TTL_SECS))
                .await?;
            Ok(())
        })
    }

    fn unlock<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let r = &self.0;
            let n: i64 = r
                .command(redis::cmd("HDEL").arg(r.key("locks")).arg(login))
                .await?;
            Ok(n > 0)
        })
    }
}
