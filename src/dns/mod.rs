//! DNS at the edge: the TXT lookups that check selectors' records (a narrow trait, so that
//! the checks run against anything), through hickory's resolver; [`update`] puts records
//! into a zone (RFC 2136 with TSIG).

pub mod update;

use crate::BoxFuture;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use std::net::SocketAddr;
use std::time::Duration;

/// TXT records at a name: each record's strings joined; `None` when the name has none
/// (NXDOMAIN or no TXT); an error when no server answered.
pub trait TxtLookup: Send + Sync {
    /// Looks `name` up.
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<String>>, String>>;
}

/// hickory's resolver without a cache (a check must see a record the moment it appears).
pub struct Resolver {
    inner: hickory_resolver::TokioResolver,
}

impl Resolver {
    /// Asks `nameservers` (UDP, then TCP), or the system's resolvers when empty; a lookup
    /// gives up after `timeout`.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, String> {
        let mut builder = if nameservers.is_empty() {
            hickory_resolver::TokioResolver::builder_tokio().map_err(|e| e.to_string())?
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let connection = |mut c: ConnectionConfig| {
                        c.port = addr.port();
                        c
                    };
                    NameServerConfig::new(
                        addr.ip(),
                        true,
                        vec![
                            connection(ConnectionConfig::udp()),
                            connection(ConnectionConfig::tcp()),
                        ],
                    )
                })
                .collect();
            hickory_resolver::TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                Default::default(),
            )
        };
        let options = builder.options_mut();
        options.cache_size = 0;
        options.timeout = timeout;
        options.attempts = 1;
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(Resolver { inner })
    }
}

impl TxtLookup for Resolver {
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Vec<String>>, String>> {
        Box::pin(async move {
            let fqdn = format!("{}.", name.trim_end_matches('.'));
            match self.inner.txt_lookup(fqdn).await {
                Ok(lookup) => Ok(Some(
                    lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::TXT(txt) => Some(
                                txt.txt_data
                                    .iter()
                                    .map(|s| String::from_utf8_lossy(s).into_owned())
                                    .collect::<String>(),
                            ),
                            _ => None,
                        })
                        .collect(),
                )),
                Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
