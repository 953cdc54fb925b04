//! Counter stores: in memory (one host) or Redis (a cluster), with the failure policy.
//!
//! Every Redis update is one Lua script (atomic), every key has a TTL and the configured
//! prefix, calls have a millisecond timeout, and the connection is a multiplexed,
//! self-reconnecting manager shared by all sessions.

use super::rate::{Gcra, Rate, gcra};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// What happens when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Count locally on this host (logged and counted); the default.
    FailOpen,
    /// Tempfail mail (`451 4.3.0`) until Redis is back.
    FailClosed,
}

/// Redis settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key.
    pub prefix: String,
    /// Per-call timeout.
    pub timeout: Duration,
    /// Failure policy.
    pub on_failure: OnFailure,
}

/// Redis is down and the policy is fail-closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("counter store unavailable: {0}")]
pub struct StoreDown(pub String);

/// In-memory counters with expiry.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<String, (i64, i64)>>,
}

impl MemoryStore {
    fn with<R>(&self, now: i64, f: impl FnOnce(&mut HashMap<String, (i64, i64)>) -> R) -> R {
        let mut map = self.map.lock().expect("counter lock");
        if map.len() > 100_000 {
            map.retain(|_, (_, expires)| *expires > now);
        }
        f(&mut map)
    }

    /// One GCRA step.
    pub fn gcra(&self, key: &str, now: i64, rate: Rate) -> Gcra {
        self.with(now, |map| {
            let stored = map
                .get(key)
                .filter(|(_, exp)| *exp > now)
                .map(|(tat, _)| *tat);
            let g = gcra(stored, now, rate);
            if g.allowed {
                map.insert(key.to_string(), (g.tat, g.tat + 1000));
            }
            g
        })
    }

    /// Increments a counter that expires `ttl_ms` after its first increment.
    pub fn incr(&self, key: &str, now: i64, ttl_ms: i64) -> u64 {
        self.with(now, |map| {
            let entry = map.entry(key.to_string()).or_insert((0, now + ttl_ms));
            if entry.1 <= now {
                *entry = (0, now + ttl_ms);
            }
            entry.0 += 1;
            entry.0 as u64
        })
    }

    /// Reads a counter.
    pub fn get(&self, key: &str, now: i64) -> Option<i64> {
        self.with(now, |map| {
            map.get(key).filter(|(_, exp)| *exp > now).map(|(v, _)| *v)
        })
    }
}

const GCRA_SCRIPT: &str = r"
local tat = tonumber(redis.call('GET', KEYS[1]))
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
if tat == nil or tat < now then tat = now end
if tat - now > tolerance then return {0, tat - now - tolerance, tat} end
local new = tat + interval
redis.call('SET', KEYS[1], new, 'PX', new - now + 1000)
return {1, 0, new}
";

const INCR_SCRIPT: &str = r"
local v = redis.call('INCR', KEYS[1])
if v == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return v
";

/// Redis-backed counters.
pub struct RedisStore {
    config: RedisConfig,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    /// When the last connection attempt failed: no new attempt for a second, so that an
    /// unreachable Redis costs each message no more than a lock check.
    failed_at: std::sync::Mutex<Option<std::time::Instant>>,
    gcra: redis::Script,
    incr: redis::Script,
}

impl RedisStore {
    /// Prepares the store; the connection is made on first use and re-made after failures.
    pub fn new(config: RedisConfig) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| e.to_string())?;
        Ok(RedisStore {
            config,
            client,
            conn: tokio::sync::Mutex::new(None),
            failed_at: std::sync::Mutex::new(None),
            gcra: redis::Script::new(GCRA_SCRIPT),
            incr: redis::Script::new(INCR_SCRIPT),
        })
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// A key with the prefix.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.config.prefix)
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        if self
            .failed_at
            .lock()
            .expect("backoff lock")
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Err("not connected (retrying every second)".into());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.config.timeout)
            .set_response_timeout(self.config.timeout)
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            self.config.timeout * 4,
            redis::aio::ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
        *guard = Some(made.clone());
        Ok(made)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.config.timeout, invocation.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                self.config.timeout.as_millis()
            )),
        }
    }

    /// One GCRA step, atomically in Redis.
    pub async fn gcra(&self, key: &str, now: i64, rate: Rate) -> Result<Gcra, String> {
        let mut inv = self.gcra.prepare_invoke();
        inv.key(self.key(key))
            .arg(now)
            .arg(rate.interval())
            .arg(rate.tolerance());
        let (allowed, retry, tat): (i64, i64, i64) = self.run(inv).await?;
        let interval = rate.interval();
        Ok(Gcra {
            allowed: allowed == 1,
            tat,
            retry_after_ms: retry,
            used: if allowed == 1 {
                ((tat - now + interval - 1) / interval) as u64
            } else {
                rate.count
            },
        })
    }

    /// Increments a counter with a TTL, atomically in Redis.
    pub async fn incr(&self, key: &str, ttl_ms: i64) -> Result<u64, String> {
        let mut inv = self.incr.prepare_invoke();
        inv.key(self.key(key)).arg(ttl_ms);
        self.run(inv).await
    }

    /// Runs a plain command (locks).
    pub async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.config.timeout, cmd.query_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                self.config.timeout.as_millis()
            )),
        }
    }
}

/// The counters the limiter uses: Redis when configured, memory otherwise or as fallback.
pub struct Counters {
    /// Local counters (the store, or the fail-open fallback).
    pub memory: MemoryStore,
    /// Redis, when configured.
    pub redis: Option<RedisStore>,
    /// Redis failures so far.
    pub failures: std::sync::atomic::AtomicU64,
}

impl Counters {
    /// Counters in memory only.
    pub fn memory() -> Self {
        Counters {
            memory: MemoryStore::default(),
            redis: None,
            failures: Default::default(),
        }
    }

    /// Counters in Redis.
    pub fn redis(store: RedisStore) -> Self {
        Counters {
            memory: MemoryStore::default(),
            redis: Some(store),
            failures: Default::default(),
        }
    }

    fn failed(&self, redis: &RedisStore, error: String) -> Result<(), StoreDown> {
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match redis.config.on_failure {
            OnFailure::FailOpen => {
                tracing::warn!(%error, "Redis unavailable: counting locally (fail_open)");
                Ok(())
            }
            OnFailure::FailClosed => {
                tracing::error!(%error, "Redis unavailable: tempfailing (fail_closed)");
                Err(StoreDown(error))
            }
        }
    }

    /// One GCRA step in the configured store.
    pub async fn gcra(&self, key: &str, now: i64, rate: Rate) -> Result<Gcra, StoreDown> {
        if let Some(redis) = &self.redis {
            match redis.gcra(key, now, rate).await {
                Ok(g) => return Ok(g),
                Err(e) => self.failed(redis, e)?,
            }
        }
        Ok(self.memory.gcra(key, now, rate))
    }

    /// Increments a TTL counter in the configured store.
    pub async fn incr(&self, key: &str, now: i64, ttl_ms: i64) -> Result<u64, StoreDown> {
        if let Some(redis) = &self.redis {
            match redis.incr(key, ttl_ms).await {
                Ok(v) => return Ok(v),
                Err(e) => self.failed(redis, e)?,
            }
        }
        Ok(self.memory.incr(key, now, ttl_ms))
    }
}
