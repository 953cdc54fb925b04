//! The cluster's shared word on DKIM signing (what each host signs with, the rotation
//! leader's lease) kept in the same Redis as the counters and locks.

use super::store::RedisStore;
use crate::BoxFuture;
use crate::dkim::cluster::{Hosts, Peers, Signing};
use std::sync::Arc;

/// [`Peers`] in Redis: `dkim:host:NAME` (JSON, with a TTL), the set `dkim:hosts`, and
/// `dkim:leader` (SET NX EX).
pub struct RedisPeers(pub Arc<RedisStore>);

impl Peers for RedisPeers {
    fn announce<'a>(
        &'a self,
        host: &'a str,
        signing: &'a [Signing],
        ttl_secs: u64,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let r = &self.0;
            let value = serde_json::to_string(signing).map_err(|e| e.to_string())?;
            let _: () = r
                .command(
                    redis::cmd("SET")
                        .arg(r.key(&format!("dkim:host:{host}")))
                        .arg(value)
                        .arg("EX")
                        .arg(ttl_secs),
                )
                .await?;
            let _: i64 = r
                .command(redis::cmd("SADD").arg(r.key("dkim:hosts")).arg(host))
                .await?;
            Ok(())
        })
    }

    fn peers(&self) -> BoxFuture<'_, Result<Hosts, String>> {
        Box::pin(async move {
            let r = &self.0;
            let hosts: Vec<String> = r
                .command(redis::cmd("SMEMBERS").arg(r.key("dkim:hosts")))
                .await?;
            let mut peers = Vec::new();
            for host in hosts {
                let value: Option<String> = r
                    .command(redis::cmd("GET").arg(r.key(&format!("dkim:host:{host}"))))
                    .await?;
                match value.and_then(|v| serde_json::from_str(&v).ok()) {
                    Some(signing) => peers.push((host, signing)),
                    // Gone quiet (stopped, or removed from the cluster): forget it.
                    None => {
                        let _: i64 = r
                            .command(redis::cmd("SREM").arg(r.key("dkim:hosts")).arg(&host))
                            .await?;
                    }
                }
            }
            Ok(peers)
        })
    }

    fn lease<'a>(&'a self, host: &'a str, ttl_secs: u64) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let r = &self.0;
            let key = r.key("dkim:leader");
            let taken: Option<String> = r
                .command(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(host)
                        .arg("NX")
                        .arg("EX")
                        .arg(ttl_secs),
                )
                .await?;
            if taken.is_some() {
                return Ok(true);
            }
            let holder: Option<String> = r.command(redis::cmd("GET").arg(&key)).await?;
            if holder.as_deref() == Some(host) {
                let _: i64 = r
                    .command(redis::cmd("EXPIRE").arg(&key).arg(ttl_secs))
                    .await?;
                return Ok(true);
            }
            Ok(false)
        })
    }
}
