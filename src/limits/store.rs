//! Counter stores: in memory (one host) or Redis (a cluster), with the failure policy.
//!
//! Every Redis update is one Lua script (atomic), every key has a TTL and the configured
//! prefix, calls have a millisecond timeout and pass a circuit breaker, and the connection
//! is a multiplexed, self-reconnecting manager shared by all sessions, found through Redis
//! Sentinel when configured.

use super::breaker::{Allow, Breaker, Transition};
use super::locks::{FileLocks, LockStore, RedisLocks};
use super::rate::{Gcra, Rate, gcra};
use crate::BoxFuture;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Sentinel addresses (`redis://host:port`); when given, the primary is the one they
    /// name for `master_name`, and a failover is followed.
    pub sentinels: Vec<String>,
    /// The sentinels' name of the primary.
    pub master_name: String,
}

/// Where counters and locks live (`[limits] store`, `lock_file`, `[limits.redis]`); applies
/// at start only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Redis, for a cluster; `None`: in memory, locks in `lock_file`.
    pub redis: Option<RedisConfig>,
    /// The lock file (memory store).
    pub lock_file: PathBuf,
}

/// The counter and lock stores the settings describe.
pub struct Stores {
    /// Limit counters.
    pub counters: Arc<dyn CounterStore>,
    /// Account locks.
    pub locks: Arc<dyn LockStore>,
    /// The cluster's word on DKIM signing, when the store is shared (Redis).
    pub peers: Option<Arc<dyn crate::dkim::cluster::Peers>>,
    /// Redis, when configured (the stolen-account signals keep their books there).
    pub redis: Option<Arc<RedisStore>>,
}

impl Stores {
    /// Opens the stores (a Redis connection is made on first use), reporting into `metrics`.
    pub fn open(settings: &StoreSettings, metrics: StoreMetrics) -> Result<Self, String> {
        Ok(match &settings.redis {
            Some(redis) => {
                let store = Arc::new(RedisStore::new(redis.clone(), metrics)?);
                Stores {
                    counters: Arc::new(Counters::redis(store.clone())),
                    locks: Arc::new(RedisLocks(store.clone())),
                    peers: Some(Arc::new(super::peers::RedisPeers(store.clone()))),
                    redis: Some(store),
                }
            }
            None => Stores {
                counters: Arc::new(Counters::memory()),
                locks: Arc::new(FileLocks::new(settings.lock_file.clone())),
                peers: None,
                redis: None,
            },
        })
    }
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

/// Metrics the Redis store reports into.
#[derive(Clone, Default)]
pub struct StoreMetrics {
    /// Failed Redis calls (`relayguard_redis_errors_total`).
    pub errors: prometheus_client::metrics::counter::Counter,
    /// 1 while the circuit breaker skips Redis (`relayguard_redis_unavailable`).
    pub unavailable: prometheus_client::metrics::gauge::Gauge,
}

/// Where the Redis primary is: one fixed address, or whatever the sentinels say.
enum Target {
    Fixed(redis::Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

/// Redis-backed counters, behind a circuit breaker.
pub struct RedisStore {
    config: RedisConfig,
    target: Target,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    breaker: Mutex<Breaker>,
    metrics: StoreMetrics,
    gcra: redis::Script,
    incr: redis::Script,
}

impl RedisStore {
    /// Prepares the store; the connection is made on first use and re-made after failures
    /// (through the sentinels, when configured, so a failover is followed).
    pub fn new(config: RedisConfig, metrics: StoreMetrics) -> Result<Self, String> {
        let target = if config.sentinels.is_empty() {
            Target::Fixed(redis::Client::open(config.url.as_str()).map_err(|e| e.to_string())?)
        } else {
            use redis::IntoConnectionInfo;
            let info = config
                .url
                .as_str()
                .into_connection_info()
                .map_err(|e| e.to_string())?;
            let node = redis::sentinel::SentinelNodeConnectionInfo {
                tls_mode: None,
                redis_connection_info: Some(info.redis),
            };
            let client = redis::sentinel::SentinelClient::build(
                config.sentinels.clone(),
                config.master_name.clone(),
                Some(node),
                redis::sentinel::SentinelServerType::Master,
            )
            .map_err(|e| e.to_string())?;
            Target::Sentinel(tokio::sync::Mutex::new(client))
        };
        Ok(RedisStore {
            config,
            target,
            conn: tokio::sync::Mutex::new(None),
            breaker: Mutex::new(Breaker::default()),
            metrics,
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

    /// Whether Redis is considered down (the breaker skips it).
    pub fn is_unavailable(&self) -> bool {
        self.breaker.lock().expect("breaker lock").is_open()
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let client = match &self.target {
            Target::Fixed(client) => client.clone(),
            Target::Sentinel(sentinel) => {
                let mut sentinel = sentinel.lock().await;
                tokio::time::timeout(self.config.timeout * 4, sentinel.async_get_client())
                    .await
                    .map_err(|_| "no sentinel named a primary in time".to_string())?
                    .map_err(|e| format!("sentinels: {e}"))?
            }
        };
        // One attempt: the breaker paces retries, so a probe of a dead Redis costs one
        // refused connect (or one timeout), not a backoff schedule.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.config.timeout)
            .set_response_timeout(self.config.timeout)
            .set_number_of_retries(0);
        let made = tokio::time::timeout(
            self.config.timeout * 2,
            redis::aio::ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
        *guard = Some(made.clone());
        Ok(made)
    }

    /// Runs one Redis call through the breaker: skipped at once while Redis is down, else
    /// bounded by the timeout; failures and recoveries are logged once, not per call.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(redis::aio::ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let allow = self
            .breaker
            .lock()
            .expect("breaker lock")
            .allow(Instant::now());
        if allow == Allow::Skip {
            return Err("Redis unavailable (not tried: it failed moments ago)".into());
        }
        // A probe given up half way (its message's future dropped) counts as failed, so
        // the breaker never waits for its answer for ever.
        let mut probe = (allow == Allow::Probe).then(|| Probe {
            breaker: &self.breaker,
            answered: false,
        });
        let result = match self.connection().await {
            Ok(conn) => match tokio::time::timeout(self.config.timeout, f(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "no answer within {} ms",
                    self.config.timeout.as_millis()
                )),
            },
            Err(e) => Err(e),
        };
        if let Some(probe) = probe.as_mut() {
            probe.answered = true;
        }
        let now = Instant::now();
        let transition = match &result {
            Ok(_) => self.breaker.lock().expect("breaker lock").succeeded(now),
            Err(_) => {
                self.metrics.errors.inc();
                self.breaker.lock().expect("breaker lock").failed(now)
            }
        };
        let policy = match self.config.on_failure {
            OnFailure::FailOpen => "counting locally (fail_open)",
            OnFailure::FailClosed => "tempfailing mail (fail_closed)",
        };
        match (transition, &result) {
            (Some(Transition::Opened), Err(error)) => {
                self.metrics.unavailable.set(1);
                tracing::warn!(
                    %error,
                    retry_ms = super::breaker::OPEN_FOR.as_millis() as u64,
                    "Redis unavailable: {policy}; one call probes it every retry_ms"
                );
            }
            (Some(Transition::StillDown { down_for, skipped }), Err(error)) => {
                tracing::warn!(
                    %error,
                    down_s = down_for.as_secs(),
                    skipped,
                    "Redis still unavailable: {policy}"
                );
            }
            (Some(Transition::Closed { down_for, skipped }), _) => {
                self.metrics.unavailable.set(0);
                tracing::info!(
                    down_ms = down_for.as_millis() as u64,
                    skipped,
                    "Redis answers again: counters are shared again"
                );
            }
            _ => {}
        }
        if result.is_err() && self.is_unavailable() {
            // While Redis is down every probe starts afresh (through the sentinels, when
            // configured): after a failover the primary is elsewhere, and a connection made
            // to a node that stopped being the primary would fail every probe.
            *self.conn.lock().await = None;
        }
        result
    }

    /// One GCRA step, atomically in Redis.
    pub async fn gcra(&self, key: &str, now: i64, rate: Rate) -> Result<Gcra, String> {
        let mut inv = self.gcra.prepare_invoke();
        inv.key(self.key(key))
            .arg(now)
            .arg(rate.interval())
            .arg(rate.tolerance());
        let (allowed, retry, tat): (i64, i64, i64) = self
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await?;
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
        self.call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await
    }

    /// Runs a Lua script (one round trip) with these keys (prefixed here) and arguments.
    pub async fn script<T: redis::FromRedisValue, A: redis::ToRedisArgs>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[A],
    ) -> Result<T, String> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(self.key(k));
        }
        for a in args {
            inv.arg(a);
        }
        self.call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await
    }

    /// Runs a plain command (locks, inspection).
    pub async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        self.call(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }
}

/// Where limit counters live, as the sending-limit checks see it: the one seam between the
/// limits and their storage (memory, Redis, or a fake in tests).
pub trait CounterStore: Send + Sync {
    /// One GCRA step for `key` at `now_ms`.
    fn gcra<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
        rate: Rate,
    ) -> BoxFuture<'a, Result<Gcra, StoreDown>>;

    /// Increments `key`, which expires `ttl_ms` after its first increment; the new value.
    fn incr<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64, StoreDown>>;

    /// Reads `key` without changing it (a GCRA arrival time or a count), for `explain`.
    fn peek<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreDown>>;
}

impl CounterStore for MemoryStore {
    fn gcra<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
        rate: Rate,
    ) -> BoxFuture<'a, Result<Gcra, StoreDown>> {
        let g = MemoryStore::gcra(self, key, now_ms, rate);
        Box::pin(std::future::ready(Ok(g)))
    }

    fn incr<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64, StoreDown>> {
        let n = MemoryStore::incr(self, key, now_ms, ttl_ms);
        Box::pin(std::future::ready(Ok(n)))
    }

    fn peek<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreDown>> {
        Box::pin(std::future::ready(Ok(self.get(key, now_ms))))
    }
}

/// The counters the limiter uses: Redis when configured, with memory as the fail-open
/// fallback; memory alone otherwise.
pub struct Counters {
    /// Local counters (the store, or the fail-open fallback).
    pub memory: MemoryStore,
    /// Redis, when configured (shared with the Redis lock store).
    pub redis: Option<Arc<RedisStore>>,
}

impl Counters {
    /// Counters in memory only.
    pub fn memory() -> Self {
        Counters {
            memory: MemoryStore::default(),
            redis: None,
        }
    }

    /// Counters in Redis.
    pub fn redis(store: Arc<RedisStore>) -> Self {
        Counters {
            memory: MemoryStore::default(),
            redis: Some(store),
        }
    }

    /// Applies the failure policy (the store has logged and counted the failure).
    fn failed(redis: &RedisStore, error: String) -> Result<(), StoreDown> {
        match redis.config.on_failure {
            OnFailure::FailOpen => Ok(()),
            OnFailure::FailClosed => Err(StoreDown(error)),
        }
    }
}

impl CounterStore for Counters {
    fn gcra<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
        rate: Rate,
    ) -> BoxFuture<'a, Result<Gcra, StoreDown>> {
        Box::pin(async move {
            if let Some(redis) = &self.redis {
                match redis.gcra(key, now_ms, rate).await {
                    Ok(g) => return Ok(g),
                    Err(e) => Self::failed(redis, e)?,
                }
            }
            Ok(self.memory.gcra(key, now_ms, rate))
        })
    }

    fn incr<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64, StoreDown>> {
        Box::pin(async move {
            if let Some(redis) = &self.redis {
                match redis.incr(key, ttl_ms).await {
                    Ok(v) => return Ok(v),
                    Err(e) => Self::failed(redis, e)?,
                }
            }
            Ok(self.memory.incr(key, now_ms, ttl_ms))
        })
    }

    fn peek<'a>(
        &'a self,
        key: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreDown>> {
        Box::pin(async move {
            match &self.redis {
                Some(redis) => redis
                    .command(redis::cmd("GET").arg(redis.key(key)))
                    .await
                    .map_err(StoreDown),
                None => Ok(self.memory.get(key, now_ms)),
            }
        })
    }
}

/// A probe in flight: if it is dropped before its answer, the breaker counts it as failed.
struct Probe<'a> {
    breaker: &'a Mutex<Breaker>,
    answered: bool,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if !self.answered
            && let Ok(mut breaker) = self.breaker.lock()
        {
            breaker.failed(Instant::now());
        }
    }
}
