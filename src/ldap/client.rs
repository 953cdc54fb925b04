//! Talking to the directory: a small pool of connections to the configured servers (tried
//! in order), reconnects, per-request timeouts, and ldap_table's expansion of an answer
//! (group members through `special_result_attribute`, leaf and terminal attributes).

use super::cache::Owner;
use super::table::{Scope, Server, Settings};
use ldap3::{
    DerefAliases, Ldap, LdapConnAsync, LdapConnSettings, SearchEntry, SearchOptions, StdStream,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// After every server refused a connection, lookups fail at once for this long (the
/// directory is not hammered and cached answers serve meanwhile).
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// noSuchObject: a search base (or a group member's DN) that does not exist.
const NO_SUCH_OBJECT: u32 = 32;

/// The connections to one directory.
pub struct Pool {
    settings: Arc<Settings>,
    slots: Vec<tokio::sync::Mutex<Option<Ldap>>>,
    next: AtomicUsize,
    down_until: Mutex<Option<Instant>>,
}

/// Why the directory gave no answer.
#[derive(Debug, Clone)]
pub struct Failure(pub String);

impl Pool {
    /// A pool for `settings`; nothing connects until the first lookup.
    pub fn new(settings: Arc<Settings>) -> Self {
        let slots = (0..settings.tuning.pool_size.max(1))
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        Pool {
            settings,
            slots,
            next: AtomicUsize::new(0),
            down_until: Mutex::new(None),
        }
    }

    /// Runs the search `filter` under the search base and expands the entries found into
    /// the logins they name. One retry on a fresh connection when a kept one fails.
    pub async fn lookup(&self, filter: &str) -> Result<Vec<Owner>, Failure> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let deadline = self.settings.timeout;
        for attempt in 0..2 {
            let (mut ldap, fresh) = self.connection(slot).await?;
            match tokio::time::timeout(deadline, self.search_and_expand(&mut ldap, filter)).await {
                Ok(Ok(owners)) => return Ok(owners),
                Ok(Err(Failure(why))) if !fresh && attempt == 0 => {
                    debug!(%why, "kept directory connection failed; reconnecting");
                    self.drop_connection(slot).await;
                }
                Ok(Err(failure)) => {
                    self.drop_connection(slot).await;
                    return Err(failure);
                }
                Err(_) => {
                    self.drop_connection(slot).await;
                    // A directory that does not answer (frozen, overloaded) is not asked
                    // again at once: the message's other lookups fail fast instead of
                    // each waiting out the timeout.
                    self.mark_down(deadline.max(RETRY_AFTER), "no answer");
                    return Err(Failure(format!(
                        "directory did not answer within {} ms",
                        deadline.as_millis()
                    )));
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Connects (and binds) on a connection of its own and reads the search base entry;
    /// returns the server that answered.
    pub async fn probe(&self) -> Result<String, Failure> {
        let s = &self.settings;
        let mut ldap = self.connect().await?;
        let base = &s.search_base;
        let found = tokio::time::timeout(
            s.timeout,
            self.search(&mut ldap, base, ldap3::Scope::Base, "(objectClass=*)"),
        )
        .await
        .map_err(|_| Failure(format!("no answer within {} ms", s.timeout.as_millis())))??;
        let _ = ldap.unbind().await;
        if found.is_empty() {
            return Err(Failure(format!(
                "search_base `{base}` does not exist or the bind DN may not read it"
            )));
        }
        Ok(format!("search base `{base}` readable"))
    }

    /// Forgets the slot's connection; its unbind goes off the message path (a frozen
    /// server would hold it), bounded by the timeout.
    async fn drop_connection(&self, slot: usize) {
        if let Some(mut ldap) = self.slots[slot].lock().await.take() {
            let timeout = self.settings.timeout;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(timeout, ldap.unbind()).await;
            });
        }
    }

    /// Lookups fail at once for `for_how_long` (logged once per outage).
    fn mark_down(&self, for_how_long: Duration, why: &str) {
        let mut down = self.down_until.lock().expect("down lock");
        if down.is_none() {
            warn!(
                error = why,
                "cannot reach the directory; cached answers serve, others tempfail"
            );
        }
        *down = Some(Instant::now() + for_how_long);
    }

    /// The slot's connection, connecting if it has none; `true` when just made.
    async fn connection(&self, slot: usize) -> Result<(Ldap, bool), Failure> {
        if let Some(until) = *self.down_until.lock().expect("down lock")
            && Instant::now() < until
        {
            return Err(Failure("directory unreachable (retrying shortly)".into()));
        }
        let mut held = self.slots[slot].lock().await;
        if let Some(ldap) = held.as_mut()
            && !ldap.is_closed()
        {
            return Ok((ldap.clone(), false));
        }
        match self.connect().await {
            Ok(ldap) => {
                *held = Some(ldap.clone());
                if self.down_until.lock().expect("down lock").take().is_some() {
                    info!("directory reachable again");
                }
                Ok((ldap, true))
            }
            Err(failure) => {
                *held = None;
                self.mark_down(RETRY_AFTER, &failure.0);
                Err(failure)
            }
        }
    }

    /// Connects (and binds) to the first server that answers, in the configured order.
    async fn connect(&self) -> Result<Ldap, Failure> {
        let s = &self.settings;
        let mut why = Vec::new();
        for server in &s.servers {
            let url = server.url();
            match tokio::time::timeout(s.timeout, self.connect_one(server)).await {
                Ok(Ok(ldap)) => return Ok(ldap),
                Ok(Err(e)) => why.push(format!("{url}: {e}")),
                Err(_) => why.push(format!(
                    "{url}: no answer within {} ms",
                    s.timeout.as_millis()
                )),
            }
        }
        Err(Failure(why.join("; ")))
    }

    async fn connect_one(&self, server: &Server) -> Result<Ldap, String> {
        let s = &self.settings;
        // Requests are small and many share a connection: without TCP_NODELAY, Nagle's
        // algorithm holds each behind the previous one's acknowledgement.
        let tcp = tokio::net::TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let tcp = tcp.into_std().map_err(|e| e.to_string())?;
        let mut conn_settings = LdapConnSettings::new()
            .set_conn_timeout(s.timeout)
            .set_std_stream(StdStream::Tcp(tcp))
            .set_starttls(s.start_tls && server.scheme == "ldap");
        if s.start_tls || server.scheme == "ldaps" {
            if !s.tls_require_cert {
                conn_settings = conn_settings.set_no_tls_verify(true);
            } else if let Some(ca) = &s.tls_ca_cert_file {
                conn_settings = conn_settings.set_config(tls_config(ca)?);
            }
        }
        let url = server.url();
        let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, &url)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                debug!(error = %e, "directory connection ended");
            }
        });
        if let Some((dn, pw)) = &s.bind {
            ldap.simple_bind(dn, pw)
                .await
                .and_then(|r| r.success())
                .map_err(|e| format!("bind as {dn}: {e}"))?;
        }
        Ok(ldap)
    }

    async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        scope: ldap3::Scope,
        filter: &str,
    ) -> Result<Vec<SearchEntry>, Failure> {
        let s = &self.settings;
        let deref = match s.dereference {
            0 => DerefAliases::Never,
            1 => DerefAliases::Searching,
            2 => DerefAliases::Finding,
            _ => DerefAliases::Always,
        };
        let options = SearchOptions::new().deref(deref).sizelimit(s.size_limit);
        let attrs = s.requested_attributes();
        let result = ldap
            .with_search_options(options)
            .with_timeout(s.timeout)
            .search(base, scope, filter, attrs)
            .await
            .map_err(|e| Failure(e.to_string()))?;
        if result.1.rc == NO_SUCH_OBJECT {
            return Ok(Vec::new());
        }
        let (entries, _) = result
            .success()
            .map_err(|e| Failure(format!("search {filter} under {base}: {e}")))?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect())
    }

    async fn search_and_expand(
        &self,
        ldap: &mut Ldap,
        filter: &str,
    ) -> Result<Vec<Owner>, Failure> {
        let s = &self.settings;
        let scope = match s.scope {
            Scope::Base => ldap3::Scope::Base,
            Scope::One => ldap3::Scope::OneLevel,
            Scope::Sub => ldap3::Scope::Subtree,
        };
        let entries = self.search(ldap, &s.search_base, scope, filter).await?;
        let mut owners = Vec::new();
        let mut seen = HashSet::new();
        let mut level: Vec<SearchEntry> = entries;
        let mut depth = 0u32;
        // Breadth first: each round collects the values of one level and fetches the DNs
        // its special attributes name.
        while !level.is_empty() {
            let mut referenced = Vec::new();
            for entry in &level {
                seen.insert(entry.dn.to_ascii_lowercase());
                referenced.extend(self.collect(entry, &mut owners)?);
            }
            if let Some(limit) = (s.expansion_limit > 0).then_some(s.expansion_limit)
                && owners.len() > limit
            {
                return Err(Failure(format!(
                    "the answer for {filter} exceeds expansion_limit {limit}"
                )));
            }
            let mut next = Vec::new();
            for dn in referenced {
                if !seen.insert(dn.to_ascii_lowercase()) {
                    continue;
                }
                if depth + 1 > s.recursion_limit {
                    return Err(Failure(format!(
                        "expanding {filter} exceeds recursion_limit {}",
                        s.recursion_limit
                    )));
                }
                next.extend(
                    self.search(ldap, &dn, ldap3::Scope::Base, "(objectClass=*)")
                        .await?,
                );
            }
            depth += 1;
            level = next;
        }
        Ok(owners)
    }

    /// Collects one entry's logins into `owners`; returns the DNs its special attributes
    /// name (to expand), as Postfix's dict_ldap does.
    fn collect(
        &self,
        entry: &SearchEntry,
        owners: &mut Vec<Owner>,
    ) -> Result<Vec<String>, Failure> {
        let s = &self.settings;
        let values = |names: &[String]| -> Vec<&String> {
            entry
                .attrs
                .iter()
                .filter(|(name, _)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
                .flat_map(|(_, values)| values)
                .collect()
        };
        let mut add = |value: &String| {
            let login = s.logins.normalise(value);
            if !login.is_empty() && !owners.iter().any(|o| o.login == login) {
                owners.push(Owner {
                    login,
                    entry: entry.dn.clone(),
                });
            }
        };
        let terminal = values(&s.terminal_result_attributes);
        if !terminal.is_empty() {
            terminal.into_iter().for_each(&mut add);
            return Ok(Vec::new());
        }
        let special = values(&s.special_result_attributes);
        values(&s.result_attributes).into_iter().for_each(&mut add);
        if special.is_empty() {
            values(&s.leaf_result_attributes)
                .into_iter()
                .for_each(&mut add);
        }
        let mut dns = Vec::new();
        for value in special {
            if value.contains("://") {
                return Err(Failure(format!(
                    "{}: LDAP URL values of special_result_attribute are not supported",
                    entry.dn
                )));
            }
            dns.push(value.clone());
        }
        Ok(dns)
    }
}

/// A TLS client configuration trusting the CA certificates in `file` (PEM).
fn tls_config(file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("tls_ca_cert_file {}: {e}", file.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("tls_ca_cert_file {}: {e}", file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("tls_ca_cert_file {}: {e}", file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
