//! Signals in Redis, shared by every relay of the cluster: one hash per login (login as hash
//! tag) holds its state ([`super::codec`]) and a version. A message reads it, updates it in
//! this process with the one rule [`super::book::LoginState`] keeps, and writes it back only
//! if no other relay wrote in between (a compare-and-set script), else reads again: two round
//! trips, one logic for memory and cluster. Messages of one login on one relay take turns
//! (a lock per shard of logins), so only relays race each other, and a relay that lost the
//! race goes on from the state that won. Every key has a TTL. When Redis
//! cannot be reached the host keeps signals in memory.

use super::book::{LoginState, MemoryBook, Observation, SignalBook};
use super::{Rules, Signals, codec};
use crate::BoxFuture;
use crate::limits::store::RedisStore;
use std::sync::Arc;

/// Writes the state when its version is still `ARGV[1]`; else returns the version and state
/// that are there now.
const CAS: &str = r"
local current = redis.call('HGET', KEYS[1], 'v') or ''
if current ~= ARGV[1] then
  return {0, current, redis.call('HGET', KEYS[1], 's') or ''}
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {1, '', ''}
";

/// How many times a message tries when other relays write the same login meanwhile: every
/// round one writer wins, so this many relays can race and every message still counts.
const TRIES: u32 = 8;

/// Locks that make one relay's messages of a login take turns (a login maps to a shard).
const SHARDS: usize = 64;

/// Signals in Redis, with this host's memory as the fallback.
pub struct RedisBook {
    store: Arc<RedisStore>,
    cas: redis::Script,
    fallback: MemoryBook,
    turns: Vec<tokio::sync::Mutex<()>>,
}

impl RedisBook {
    /// A book in `store`.
    pub fn new(store: Arc<RedisStore>) -> Self {
        RedisBook {
            store,
            cas: redis::Script::new(CAS),
            fallback: MemoryBook::default(),
            turns: (0..SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    fn key(login: &str) -> String {
        format!("abuse:{{{login}}}:state")
    }

    /// The stored version and state (empty when there is none or it does not decode).
    async fn read(&self, login: &str) -> Result<(String, LoginState), String> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.store.key(&Self::key(login))).arg("v").arg("s");
        let (version, bytes): (Option<String>, Option<Vec<u8>>) = self.store.command(&cmd).await?;
        let state = bytes.as_deref().and_then(codec::decode).unwrap_or_default();
        Ok((version.unwrap_or_default(), state))
    }

    async fn observe_shared(
        &self,
        login: &str,
        seen: &Observation,
        now_ms: i64,
        rules: &Rules,
    ) -> Result<Signals, String> {
        let shard = login.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        let _turn = self.turns[shard % SHARDS].lock().await;
        let (mut version, mut state) = self.read(login).await?;
        let ttl =
            (i64::from(rules.new_recipient_days.max(rules.baseline_days)) * 2 * 86_400).to_string();
        for _ in 0..TRIES {
            let mut next = state.clone();
            let signals = next.observe(seen, now_ms, rules);
            let new_version = format!("{now_ms}-{}", rand_u32());
            let args: Vec<Vec<u8>> = vec![
                version.clone().into_bytes(),
                new_version.clone().into_bytes(),
                codec::encode(&next),
                ttl.clone().into_bytes(),
            ];
            let (written, current, bytes): (i64, String, Vec<u8>) = self
                .store
                .script(&self.cas, &[Self::key(login)], &args)
                .await?;
            if written == 1 {
                return Ok(signals);
            }
            version = current;
            state = codec::decode(&bytes).unwrap_or_default();
        }
        Err(format!(
            "{login}: the signal state kept changing under this relay"
        ))
    }
}

/// A few random bits for a version tag.
fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b)
}

impl SignalBook for RedisBook {
    fn observe<'a>(
        &'a self,
        login: &'a str,
        seen: &'a Observation,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>> {
        Box::pin(async move {
            match self.observe_shared(login, seen, now_ms, rules).await {
                Ok(s) => Ok(s),
                // The breaker has logged it; this host keeps watching on its own.
                Err(_) => Ok(self.fallback.observe_now(login, seen, now_ms, rules)),
            }
        })
    }

    fn peek<'a>(
        &'a self,
        login: &'a str,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>> {
        Box::pin(async move {
            let (_, mut state) = self.read(login).await?;
            Ok(state.peek(now_ms, rules))
        })
    }
}
