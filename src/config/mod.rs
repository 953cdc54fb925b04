//! Configuration: `relayguard.toml` parsed and validated, and nothing else.
//!
//! Pure: it reads no file (the runtime hands it the text) and names the other files (sender
//! map, selector schedule, keys) without opening them; `runtime::assemble` reads those.
//! Every error names the file, the line and the key. One file per table of the file, each
//! with its schema (what serde reads, unknown keys refused), the documented range of its
//! numbers and the checks that turn it into settings: a new setting is a change to one file.

mod abuse;
mod audit;
mod clients;
mod cluster;
mod dkim;
mod ldap;
mod limits;
mod metrics;
mod milter;
mod rollout;
mod senders;
#[cfg(test)]
mod tests;
mod values;

pub use dkim::{DkimSettings, DnsSettings};
pub use ldap::{LdapConfig, LdapTable};
pub use milter::{MilterConfig, SocketSpec};
pub use senders::SourceKind;

use crate::audit::writer::AuditConfig;
use crate::limits::LimitsPolicy;
use crate::limits::store::StoreSettings;
use crate::policy::Policy;
use crate::session::rollout::Rollout;
use crate::tomlfile::{self, FileError, Place};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration error: the file, the line, the key and what is wrong.
pub type ConfigError = FileError;

/// The schema of the whole file as serde reads it (each table's in its own file).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    milter: milter::RawMilter,
    #[serde(default)]
    domains: senders::RawDomains,
    #[serde(default)]
    senders: senders::RawSenders,
    #[serde(default)]
    clients: clients::RawClients,
    dkim: Option<dkim::RawDkim>,
    audit: Option<audit::RawAudit>,
    metrics: Option<metrics::RawMetrics>,
    limits: Option<limits::RawLimits>,
    #[serde(default)]
    rollout: rollout::RawRollout,
    cluster: Option<cluster::RawCluster>,
    abuse: Option<abuse::RawAbuse>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Listening socket settings.
    pub milter: MilterConfig,
    /// The sender-login map file, if any, and the line of `relayguard.toml` naming it.
    pub login_map: Option<(PathBuf, usize)>,
    /// The ownership sources, in the order they are asked.
    pub sources: Vec<SourceKind>,
    /// The directory, when `ldap` is a source.
    pub ldap: Option<LdapConfig>,
    /// The sender policy as `relayguard.toml` gives it: its sender map is empty until
    /// `runtime::assemble` reads `login_map` into it.
    pub policy: Policy,
    /// Signing, when `[dkim]` is configured.
    pub dkim: Option<DkimSettings>,
    /// The audit log settings, when auditing is configured.
    pub audit: Option<AuditConfig>,
    /// Where the metrics endpoint listens, when configured.
    pub metrics_listen: Option<SocketAddr>,
    /// The sending limits, when configured.
    pub limits: Option<LimitsPolicy>,
    /// Which refusals are enforced and which only recorded.
    pub rollout: Rollout,
    /// The stolen-account signals, when `[abuse]` is configured.
    pub abuse: Option<crate::abuse::Rules>,
    /// Where counters and locks live (applies at start only).
    pub limit_store: Option<StoreSettings>,
    /// How this relay names itself in audit records and to its peers (`[cluster]
    /// host_name`; default: the system's host name).
    pub host_name: Option<String>,
}

impl Config {
    /// How this relay names itself: `[cluster] host_name`, else the system's host name.
    pub fn host(&self) -> String {
        self.host_name
            .clone()
            .unwrap_or_else(crate::audit::host_name)
    }

    /// Validates configuration text; `path` locates errors and relative file names.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        // An empty file is what a non-atomic write leaves for a moment: never read it as
        // "all defaults", which would turn signing and limits off.
        let no_settings = text
            .lines()
            .map(str::trim)
            .all(|l| l.is_empty() || l.starts_with('#'));
        if no_settings {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line: 1,
                message: "the file has no settings (empty or truncated); refusing to run on built-in defaults".into(),
            });
        }
        let raw: RawConfig = tomlfile::parse(path, text)?;
        let p = Place { path, text };
        let base = path.parent().unwrap_or(Path::new("."));
        let (policy, senders) = senders::policy(&raw, p, base)?;
        let dkim = raw
            .dkim
            .as_ref()
            .map(|d| dkim::dkim(d, p, base))
            .transpose()?;
        let audit = raw
            .audit
            .as_ref()
            .map(|a| audit::audit(a, p, base))
            .transpose()?;
        let metrics_listen = raw
            .metrics
            .as_ref()
            .map(|m| metrics::metrics(m, p))
            .transpose()?;
        let (limits, limit_store) = match &raw.limits {
            Some(l) => {
                let (limits, store) = limits::limits(l, p, base, &policy.logins)?;
                (Some(limits), Some(store))
            }
            None => (None, None),
        };
        let rollout = rollout::rollout(&raw.rollout, p, &policy.logins)?;
        let abuse = raw
            .abuse
            .as_ref()
            .map(|a| abuse::abuse(a, p, raw.limits.is_some()))
            .transpose()?;
        let host_name = raw
            .cluster
            .as_ref()
            .map(|c| cluster::host_name(c, p))
            .transpose()?
            .flatten();
        Ok(Config {
            rollout,
            abuse,
            path: path.to_path_buf(),
            milter: milter::milter(raw.milter, p)?,
            login_map: senders.login_map,
            sources: senders.sources,
            ldap: senders.ldap,
            policy,
            dkim,
            audit,
            metrics_listen,
            limits,
            limit_store,
            host_name,
        })
    }

    /// Files whose change triggers a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::iter::once(self.path.clone())
            .chain(self.login_map.as_ref().map(|(file, _)| file.clone()))
            .collect();
        if let Some(LdapConfig {
            table: LdapTable::File(file, _),
            ..
        }) = &self.ldap
        {
            files.push(file.clone());
        }
        if let Some(d) = &self.dkim {
            files.push(d.selectors.clone());
        }
        files
    }

    /// Directories where any change triggers a reload (the keys directory).
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        self.dkim.iter().map(|d| d.keys_dir.clone()).collect()
    }
}
