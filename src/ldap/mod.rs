//! Ownership from the directory: an ownership source that answers as Postfix's ldap_table
//! does for `smtpd_sender_login_maps` (the same file works for both), with a cache that
//! keeps mail flowing through short directory outages.
//!
//! [`table`] reads the settings, [`query`] builds filters, [`cache`] keeps answers,
//! [`client`] talks to the servers; [`Directory`] puts them behind the ownership seam.

pub mod cache;
pub mod client;
pub mod keys;
pub mod query;
pub mod table;

use crate::BoxFuture;
use crate::clock::Clock;
use crate::metrics::LdapMetrics;
use crate::policy::address::Address;
use crate::policy::senders::{Lookup, Ownership, OwnershipSource, SourceDown};
use cache::{Cache, Cached, Owners};
use client::Pool;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use table::Settings;
use tracing::debug;

/// One directory: its settings, connections and cache, behind the ownership seam.
pub struct Directory {
    settings: Arc<Settings>,
    robot_template: Option<String>,
    pool: Pool,
    cache: Cache,
    clock: Clock,
    metrics: LdapMetrics,
}

impl Directory {
    /// A directory for `settings`; nothing connects until the first lookup.
    pub fn new(settings: Settings, clock: Clock, metrics: LdapMetrics) -> Self {
        let t = &settings.tuning;
        let cache = Cache::new(t.cache_size, t.positive_ttl, t.negative_ttl, t.max_stale);
        let robot_template = settings.robot_template();
        let settings = Arc::new(settings);
        Directory {
            pool: Pool::new(settings.clone()),
            robot_template,
            settings,
            cache,
            clock,
            metrics,
        }
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The owners the directory names for lookup key `key` (an address or `@domain`), as
    /// `postmap -q KEY ldap:FILE` shows them; a key with a control character names nobody.
    pub async fn lookup(&self, key: &str) -> Result<Owners, SourceDown> {
        self.owners("address", key, &self.settings.query_filter)
            .await
    }

    /// Connects, binds and reads the search base, as `check-config` does to show that the
    /// directory answers the way the settings say.
    pub async fn probe(&self) -> Result<String, String> {
        self.pool
            .probe()
            .await
            .map_err(|failure| format!("directory: {}", failure.0))
    }

    /// Forgets every cached answer (SIGHUP: a directory change is seen at once).
    pub fn clear_cache(&self) {
        self.cache.clear();
        self.metrics.cache_entries.set(0);
    }

    /// The logins the directory names for `key` through filter `template`: from the cache
    /// while fresh, else from the directory, else (the directory cannot answer) a stale
    /// cached answer, else the source is down.
    async fn owners(&self, kind: &str, key: &str, template: &str) -> Result<Owners, SourceDown> {
        let cache_key = format!("{kind}\0{key}");
        let stale = match self.cache.get(&cache_key, (self.clock)()) {
            Cached::Fresh(owners) => {
                self.metrics.count("hit");
                return Ok(owners);
            }
            Cached::Stale(owners) => Some(owners),
            Cached::Missing => None,
        };
        let filter = match query::expand(template, key) {
            Ok(Some(filter)) => filter,
            // Postfix would not run this query (or the key is unsafe): nobody.
            Ok(None) | Err(_) => return Ok(Owners::from([])),
        };
        let started = Instant::now();
        match self.pool.lookup(&filter).await {
            Ok(owners) => {
                self.metrics
                    .seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.count("miss");
                let owners: Owners = owners.into();
                self.cache.put(&cache_key, owners.clone(), (self.clock)());
                self.metrics.cache_entries.set(self.cache.len() as i64);
                debug!(%filter, owners = owners.len(), "directory lookup");
                Ok(owners)
            }
            Err(failure) => match stale {
                Some(owners) => {
                    self.metrics.count("stale");
                    debug!(%filter, error = %failure.0, "directory down: serving a stale answer");
                    Ok(owners)
                }
                None => {
                    self.metrics.count("error");
                    Err(SourceDown(format!("directory: {}", failure.0)))
                }
            },
        }
    }
}

fn judge(key: &str, owners: &Owners, login: &str) -> Ownership {
    match owners.iter().find(|o| o.login == login) {
        Some(owner) => Ownership::Directory {
            key: key.to_string(),
            entry: owner.entry.clone(),
        },
        None => Ownership::NotOwned(Some(format!("directory: {key}"))),
    }
}

impl OwnershipSource for Directory {
    /// As Postfix's `smtpd_sender_login_maps` asks an ldap table: the address, the address
    /// without its extension, then `@domain` (not when `domain` restricts the lookups).
    fn answer<'a>(
        &'a self,
        login: &'a str,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<Lookup, SourceDown>> {
        Box::pin(async move {
            let s = &self.settings;
            let Some(domain) = address.domain() else {
                return Ok(Lookup::Silent);
            };
            if !s.domains.is_empty() && !s.domains.iter().any(|d| d == domain) {
                return Ok(Lookup::Silent);
            }
            let canonical = address.canonical();
            if let Err(unsafe_key) = query::expand(&s.query_filter, &canonical) {
                return Ok(Lookup::Exact(Ownership::NotOwned(Some(format!(
                    "<{canonical}> {unsafe_key}"
                )))));
            }
            let mut keys = vec![canonical];
            if let Some((base, _)) = s.delimiter.and_then(|d| address.local().split_once(d)) {
                keys.push(format!("{base}@{domain}"));
            }
            for key in &keys {
                let owners = self.owners("address", key, &s.query_filter).await?;
                if !owners.is_empty() {
                    return Ok(Lookup::Exact(judge(key, &owners, login)));
                }
            }
            if s.domains.is_empty() {
                let key = format!("@{domain}");
                let owners = self.owners("address", &key, &s.query_filter).await?;
                if !owners.is_empty() {
                    return Ok(Lookup::Domain(judge(&key, &owners, login)));
                }
            }
            Ok(Lookup::Silent)
        })
    }

    /// The first of the keys [`OwnershipSource::answer`] would look up that names owners.
    fn claim<'a>(
        &'a self,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<Option<String>, SourceDown>> {
        Box::pin(async move {
            let s = &self.settings;
            let Some(domain) = address.domain() else {
                return Ok(None);
            };
            if !s.domains.is_empty() && !s.domains.iter().any(|d| d == domain) {
                return Ok(None);
            }
            let canonical = address.canonical();
            if let Err(unsafe_key) = query::expand(&s.query_filter, &canonical) {
                // A key the directory cannot be asked safely: never the server's own.
                return Ok(Some(format!("<{canonical}> {unsafe_key}")));
            }
            let mut keys = vec![canonical];
            if let Some((base, _)) = s.delimiter.and_then(|d| address.local().split_once(d)) {
                keys.push(format!("{base}@{domain}"));
            }
            if s.domains.is_empty() {
                keys.push(format!("@{domain}"));
            }
            for key in keys {
                if !self
                    .owners("address", &key, &s.query_filter)
                    .await?
                    .is_empty()
                {
                    return Ok(Some(format!("directory: {key}")));
                }
            }
            Ok(None)
        })
    }

    fn is_robot<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<bool, SourceDown>> {
        Box::pin(async move {
            match &self.robot_template {
                Some(template) => Ok(!self.owners("robot", login, template).await?.is_empty()),
                None => Ok(false),
            }
        })
    }
}

/// The directories the service uses, kept across reloads while their settings stay the
/// same (their connections and caches with them).
pub struct Directories {
    clock: Clock,
    metrics: LdapMetrics,
    open: Mutex<Vec<Arc<Directory>>>,
}

impl Directories {
    /// No directory yet; those made later run on `clock` and count into `metrics`.
    pub fn new(clock: Clock, metrics: LdapMetrics) -> Self {
        Directories {
            clock,
            metrics,
            open: Mutex::new(Vec::new()),
        }
    }

    /// Directories for a one-off command (`check-config`, `explain`): the system clock,
    /// metrics nobody reads.
    pub fn standalone() -> Self {
        Directories::new(crate::clock::system(), LdapMetrics::default())
    }

    /// The directory for `settings`: the one in use if its settings are equal, else new.
    pub fn directory(&self, settings: Settings) -> Arc<Directory> {
        let mut open = self.open.lock().expect("directories lock");
        open.retain(|d| Arc::strong_count(d) > 1);
        if let Some(same) = open.iter().find(|d| *d.settings == settings) {
            return same.clone();
        }
        let directory = Arc::new(Directory::new(
            settings,
            self.clock.clone(),
            self.metrics.clone(),
        ));
        open.push(directory.clone());
        directory
    }

    /// Forgets every cached answer of every directory.
    pub fn clear_caches(&self) {
        for directory in self.open.lock().expect("directories lock").iter() {
            directory.clear_cache();
        }
    }
}
