//! Account locks: in Redis when Redis is used, else in a local JSON file; they survive
//! restarts and are managed with `relayguard accounts`.

use super::store::RedisStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Why and since when a login is locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// RFC 3339 time of the lock.
    pub since: String,
    /// What triggered it.
    pub reason: String,
}

/// Where locks live.
pub enum LockStore {
    /// A JSON file `{login: Lock}`; re-read when it changes, written atomically.
    File {
        /// The file.
        path: PathBuf,
        /// Cached content and the modification time it was read at.
        cache: Mutex<(Option<SystemTime>, BTreeMap<String, Lock>)>,
    },
    /// A Redis hash `<prefix>locks`.
    Redis,
}

const LOCK_TTL_SECS: i64 = 400 * 86_400;

impl LockStore {
    /// Locks in a file.
    pub fn file(path: PathBuf) -> Self {
        LockStore::File {
            path,
            cache: Mutex::new((None, BTreeMap::new())),
        }
    }

    fn read_file(
        path: &Path,
        cache: &Mutex<(Option<SystemTime>, BTreeMap<String, Lock>)>,
    ) -> Result<BTreeMap<String, Lock>, String> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut guard = cache.lock().expect("lock cache");
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

    fn write_file(path: &Path, locks: &BTreeMap<String, Lock>) -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(locks).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The lock of `login`, if any.
    pub async fn get(
        &self,
        redis: Option<&RedisStore>,
        login: &str,
    ) -> Result<Option<Lock>, String> {
        match (self, redis) {
            (LockStore::File { path, cache }, _) => {
                Ok(Self::read_file(path, cache)?.get(login).cloned())
            }
            (LockStore::Redis, Some(r)) => {
                let value: Option<String> = r
                    .command(redis::cmd("HGET").arg(r.key("locks")).arg(login))
                    .await?;
                Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
            }
            (LockStore::Redis, None) => Err("Redis is not configured".into()),
        }
    }

    /// Every lock.
    pub async fn list(&self, redis: Option<&RedisStore>) -> Result<BTreeMap<String, Lock>, String> {
        match (self, redis) {
            (LockStore::File { path, cache }, _) => Self::read_file(path, cache),
            (LockStore::Redis, Some(r)) => {
                let all: BTreeMap<String, String> =
                    r.command(redis::cmd("HGETALL").arg(r.key("locks"))).await?;
                Ok(all
                    .into_iter()
                    .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|l| (k, l)))
                    .collect())
            }
            (LockStore::Redis, None) => Err("Redis is not configured".into()),
        }
    }

    /// Locks `login`.
    pub async fn lock(
        &self,
        redis: Option<&RedisStore>,
        login: &str,
        reason: &str,
    ) -> Result<(), String> {
        let lock = Lock {
            since: jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            reason: reason.to_string(),
        };
        match (self, redis) {
            (LockStore::File { path, cache }, _) => {
                let mut locks = Self::read_file(path, cache)?;
                locks.insert(login.to_string(), lock);
                Self::write_file(path, &locks)
            }
            (LockStore::Redis, Some(r)) => {
                let value = serde_json::to_string(&lock).map_err(|e| e.to_string())?;
                let _: i64 = r
                    .command(redis::cmd("HSET").arg(r.key("locks")).arg(login).arg(value))
                    .await?;
                let _: i64 = r
                    .command(redis::cmd("EXPIRE").arg(r.key("locks")).arg(LOCK_TTL_SECS))
                    .await?;
                Ok(())
            }
            (LockStore::Redis, None) => Err("Redis is not configured".into()),
        }
    }

    /// Unlocks `login`; returns whether it was locked.
    pub async fn unlock(&self, redis: Option<&RedisStore>, login: &str) -> Result<bool, String> {
        match (self, redis) {
            (LockStore::File { path, cache }, _) => {
                let mut locks = Self::read_file(path, cache)?;
                let was = locks.remove(login).is_some();
                Self::write_file(path, &locks)?;
                Ok(was)
            }
            (LockStore::Redis, Some(r)) => {
                let n: i64 = r
                    .command(redis::cmd("HDEL").arg(r.key("locks")).arg(login))
                    .await?;
                Ok(n > 0)
            }
            (LockStore::Redis, None) => Err("Redis is not configured".into()),
        }
    }
}
