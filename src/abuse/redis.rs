//! Signals in Redis, shared by every relay of the cluster: per login, HyperLogLogs of the
//! client networks and recipient domains of each hour (`PFADD`/`PFCOUNT`, a few hundred bytes
//! while small), the new-recipient sketches as bit strings, and the hourly counts and baseline
//! in one hash; every key has a TTL and the login as hash tag, and one message is one Lua
//! script, one round trip. When Redis cannot be reached the host keeps signals in memory.

use super::book::{
    MemoryBook, Observation, SignalBook, generation_of, hour_of, positions, sliding,
};
use super::{Rules, Signals};
use crate::BoxFuture;
use crate::limits::store::RedisStore;
use std::sync::Arc;

/// Rolls the login's hour, records the message (when ARGV[4] is 1) and returns the signals.
const SCRIPT: &str = r"
local hour = tonumber(ARGV[1])
local half_life = tonumber(ARGV[2])
local sketch_ttl = tonumber(ARGV[3])
local observe = ARGV[4] == '1'
local b = redis.call('HMGET', KEYS[1], 'hour', 'm1', 'm0', 'r1', 'r0', 'pm', 'pd', 'fh', 'd1', 'pn')
local h = tonumber(b[1]) or hour
local m1, m0 = tonumber(b[2]) or 0, tonumber(b[3]) or 0
local r1, r0 = tonumber(b[4]) or 0, tonumber(b[5]) or 0
local pm, pd = tonumber(b[6]) or 0, tonumber(b[7]) or 0
local fh, d1, pn = tonumber(b[8]) or h, tonumber(b[9]) or 0, tonumber(b[10]) or 0
if hour > h then
  if m1 > 0 then
    local decay = 0.5 ^ (math.max(h - fh, 0) / half_life)
    pm = math.max(m1, pm * decay)
    pd = math.max(d1, pd * decay)
    pn = math.max(r1, pn * decay)
    fh = h
  end
  d1 = 0
  if hour == h + 1 then m0 = m1; r0 = r1 else m0 = 0; r0 = 0 end
  m1 = 0; r1 = 0; h = hour
end
if observe then
  local i = 5
  local net = ARGV[i]; i = i + 1
  if net ~= '' then
    redis.call('PFADD', KEYS[2], net)
    redis.call('EXPIRE', KEYS[2], 7300)
  end
  local nd = tonumber(ARGV[i]); i = i + 1
  for _ = 1, nd do
    redis.call('PFADD', KEYS[4], ARGV[i]); i = i + 1
  end
  if nd > 0 then
    redis.call('EXPIRE', KEYS[4], 7300)
    d1 = redis.call('PFCOUNT', KEYS[4])
  end
  local nr = tonumber(ARGV[i]); i = i + 1
  local new = 0
  for _ = 1, nr do
    local known = true
    local old = true
    for k = 0, 2 do
      local p = tonumber(ARGV[i + k])
      if redis.call('GETBIT', KEYS[6], p) == 0 then known = false end
      if redis.call('GETBIT', KEYS[7], p) == 0 then old = false end
    end
    if not known and not old then new = new + 1 end
    for k = 0, 2 do redis.call('SETBIT', KEYS[6], tonumber(ARGV[i + k]), 1) end
    i = i + 3
  end
  r1 = r1 + math.min(new, tonumber(ARGV[#ARGV - 1]))
  if nr > 0 then redis.call('EXPIRE', KEYS[6], sketch_ttl) end
  m1 = m1 + 1
  redis.call('HSET', KEYS[1], 'hour', h, 'm1', m1, 'm0', m0, 'r1', r1, 'r0', r0,
    'pm', tostring(pm), 'pd', tostring(pd), 'pn', tostring(pn), 'fh', fh, 'd1', d1)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[#ARGV]))
end
local now = 0.5 ^ (math.max(h - fh, 0) / half_life)
return {redis.call('PFCOUNT', KEYS[2], KEYS[3]), redis.call('PFCOUNT', KEYS[4], KEYS[5]),
        r1 + r0, m1, m0, tostring(pm * now), tostring(pd * now), tostring(pn * now)}
";

/// Signals in Redis, with this host's memory as the fallback.
pub struct RedisBook {
    store: Arc<RedisStore>,
    script: redis::Script,
    fallback: MemoryBook,
}

impl RedisBook {
    /// A book in `store`.
    pub fn new(store: Arc<RedisStore>) -> Self {
        RedisBook {
            store,
            script: redis::Script::new(SCRIPT),
            fallback: MemoryBook::default(),
        }
    }

    async fn run(
        &self,
        login: &str,
        seen: Option<&Observation>,
        now_ms: i64,
        rules: &Rules,
    ) -> Result<Signals, String> {
        let (h, g) = (hour_of(now_ms), generation_of(now_ms, rules));
        let tag = format!("abuse:{{{login}}}");
        let keys = [
            format!("{tag}:base"),
            format!("{tag}:n:{h}"),
            format!("{tag}:n:{}", h - 1),
            format!("{tag}:d:{h}"),
            format!("{tag}:d:{}", h - 1),
            format!("{tag}:s:{g}"),
            format!("{tag}:s:{}", g - 1),
        ];
        let half_days = i64::from(rules.new_recipient_days.max(2) / 2);
        let mut args = vec![
            h.to_string(),
            (f64::from(rules.baseline_days.max(1)) * 24.0).to_string(),
            (2 * half_days * 86_400 + 3_600).to_string(),
            if seen.is_some() { "1" } else { "0" }.to_string(),
        ];
        if let Some(seen) = seen {
            args.push(seen.network.clone().unwrap_or_default());
            args.push(seen.domains.len().to_string());
            args.extend(seen.domains.iter().cloned());
            args.push(seen.recipients.len().to_string());
            for r in &seen.recipients {
                args.extend(positions(r).iter().map(u64::to_string));
            }
        }
        args.push(super::book::PER_MESSAGE.to_string());
        args.push((i64::from(rules.baseline_days) * 2 * 86_400).to_string());
        type Answer = (u64, u64, u64, u64, u64, String, String, String);
        let (networks, domains, new, m1, m0, pm, pd, pn): Answer =
            self.store.script(&self.script, &keys, &args).await?;
        Ok(Signals {
            networks,
            domains,
            new_recipients: new,
            messages_hour: sliding(m1, m0, now_ms),
            baseline: pm.parse().unwrap_or(0.0),
            domains_baseline: pd.parse().unwrap_or(0.0),
            new_baseline: pn.parse().unwrap_or(0.0),
            authentications: seen.and_then(|s| s.authentications),
        })
    }
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
            match self.run(login, Some(seen), now_ms, rules).await {
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
        Box::pin(async move { self.run(login, None, now_ms, rules).await })
    }
}
