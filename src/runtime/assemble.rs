//! Assembly: reads `relayguard.toml` and every file it names (the sender map, the selector
//! schedule, the keys), builds the snapshot a message is decided with, and checks the whole.
//!
//! The one place that knows which file feeds which part: `config` parses settings, `policy`
//! and `dkim` parse their own formats, and this room puts them together. `check-config`,
//! the start and every reload go through [`load`] and [`check`].

use crate::config::{Config, DkimSettings, LdapConfig, LdapTable, SourceKind};
use crate::dkim::keys::KeyError;
use crate::dkim::schedule::Schedule;
use crate::dkim::signer::KeySet;
use crate::dkim::tooling;
use crate::ldap::table::{self, Origin, Settings};
use crate::ldap::{Directories, Directory};
use crate::policy::Policy;
use crate::policy::senders::{MapSource, SenderMap, SenderMapError, Source, Sources};
use crate::session::Snapshot;
use crate::tomlfile::{self, FileError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a configuration could not be loaded (each names its file).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `relayguard.toml` or `selectors.toml`: unreadable, syntax, or a bad value.
    #[error(transparent)]
    File(#[from] FileError),
    /// The sender-login map is broken.
    #[error(transparent)]
    SenderMap(#[from] SenderMapError),
    /// One or more DKIM keys are unusable (each is listed).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Keys(Vec<KeyError>),
    /// Everything loads but fails its checks (each problem names its file).
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
}

/// A configuration and the snapshot built from the files it names.
pub struct Loaded {
    /// The settings (including those that apply at start only).
    pub config: Config,
    /// What messages are decided and signed with.
    pub snapshot: Snapshot,
    /// The directory, when ownership comes from one (also inside the snapshot's sources).
    pub directory: Option<Arc<Directory>>,
}

/// Reads `path` and every file it names; `now` (Unix seconds) decides which keys are
/// retired and need not load. A bad file refuses the whole, so nothing half-read is used.
/// A directory comes from `directories` (the one in use, while its settings are the same).
pub fn load(path: &Path, now: i64, directories: &Directories) -> Result<Loaded, LoadError> {
    let text = tomlfile::read(path)?;
    let config = Config::parse(path, &text)?;
    let (snapshot, directory) = build(&config, now, directories)?;
    Ok(Loaded {
        config,
        snapshot,
        directory,
    })
}

/// Builds the snapshot from a parsed configuration: reads the sender map, the directory's
/// ldap_table file and the keys. Also returns the directory, when there is one.
pub fn build(
    config: &Config,
    now: i64,
    directories: &Directories,
) -> Result<(Snapshot, Option<Arc<Directory>>), LoadError> {
    let mut policy = config.policy.clone();
    if let Some((file, line)) = &config.login_map {
        let text = read_named(config, file, *line, "senders.login_map")?;
        policy.owners.map = Arc::new(SenderMap::parse(file, &text, &policy.logins)?);
    }
    let directory = directory(config, &policy, directories)?;
    let ownership = Arc::new(ownership(config, &policy, directory.clone()));
    let keys = config
        .dkim
        .as_ref()
        .map(|dkim| load_keys(dkim, now))
        .transpose()?;
    let snapshot = Snapshot {
        policy,
        ownership,
        keys,
        limits: config.limits.clone(),
        rollout: config.rollout.clone(),
        abuse: config.abuse.clone().map(Arc::new),
    };
    Ok((snapshot, directory))
}

/// The directory `[senders.ldap]` names, when `ldap` is a source: the one in use from
/// `directories` while its settings are the same.
pub fn directory(
    config: &Config,
    policy: &Policy,
    directories: &Directories,
) -> Result<Option<Arc<Directory>>, LoadError> {
    match &config.ldap {
        Some(ldap) if config.sources.contains(&SourceKind::Ldap) => Ok(Some(
            directories.directory(ldap_settings(config, ldap, policy)?),
        )),
        _ => Ok(None),
    }
}

/// The ownership sources in the configured order; `policy` has the sender map read.
pub fn ownership(config: &Config, policy: &Policy, directory: Option<Arc<Directory>>) -> Sources {
    let mut sources = Vec::new();
    for kind in &config.sources {
        sources.push(match kind {
            SourceKind::Map => Source::Entries(Arc::new(MapSource::new(
                policy.owners.map.clone(),
                policy.owners.delimiter,
            ))),
            SourceKind::OwnLocalPart => Source::OwnLocalPart,
            SourceKind::Ldap => Source::Entries(
                directory
                    .clone()
                    .expect("config checks [senders.ldap] when ldap is a source"),
            ),
        });
    }
    Sources::new(
        sources,
        policy.owners.robots.clone(),
        policy.protected.clone(),
        policy.owners.delimiter,
    )
}

/// Reads a file that `relayguard.toml` names with `key` at `line`; an error names both.
fn read_named(config: &Config, file: &Path, line: usize, key: &str) -> Result<String, FileError> {
    std::fs::read_to_string(file).map_err(|e| FileError::Invalid {
        path: config.path.clone(),
        line,
        key: key.into(),
        reason: format!("cannot read {}: {e}", file.display()),
    })
}

/// The directory's settings: inline, or read from the Postfix ldap_table file.
fn ldap_settings(
    config: &Config,
    ldap: &LdapConfig,
    policy: &Policy,
) -> Result<Settings, LoadError> {
    match &ldap.table {
        LdapTable::Inline(settings) => Ok((**settings).clone()),
        LdapTable::File(file, line) => {
            let text = read_named(config, file, *line, "senders.ldap.postfix_table")?;
            let pairs = table::parse_postfix_file(file, &text)?;
            let origin = Origin {
                path: file.clone(),
                prefix: "",
            };
            Ok(Settings::from_pairs(
                &origin,
                &pairs,
                policy.logins.clone(),
                policy.owners.delimiter,
                ldap.tuning.clone(),
            )?)
        }
    }
}

/// The schedule and every key it still needs at `now`.
fn load_keys(dkim: &DkimSettings, now: i64) -> Result<KeySet, LoadError> {
    let text = tomlfile::read(&dkim.selectors)?;
    let schedule = Schedule::parse(&dkim.selectors, &text, &dkim.keys_dir)?;
    KeySet::load(schedule, dkim.signing.clone(), now).map_err(LoadError::Keys)
}

/// What [`check`] finds beyond loading. Errors make `check-config` fail and a reload keep
/// the previous configuration; warnings are printed or logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Problems that refuse the configuration.
    pub errors: Vec<String>,
    /// Advice.
    pub warnings: Vec<String>,
}

/// The checks a loaded configuration must pass: `check-config` and every reload run exactly
/// these. Only root and the service may change the files that decide policy (and read
/// those holding secrets), socket owner and group exist, the Redis URL is usable, each robot owns the address
/// its automatic mail is masqueraded as, every signing domain has an active key now and
/// later (a schedule gap is an error), and each selector's DNS lead time (a warning).
pub fn check(loaded: &Loaded, now: i64) -> Findings {
    check_as(loaded, now, &super::permissions::Service::current())
}

/// As [`check`], judging file permissions for the service running as `service`
/// (`check-config` run by root for a service user).
pub fn check_as(loaded: &Loaded, now: i64, service: &super::permissions::Service) -> Findings {
    let mut found = Findings::default();
    let config = &loaded.config;
    let here = config.path.display();
    found
        .errors
        .extend(super::permissions::problems(loaded, service));
    if let Some(owner) = &config.milter.socket_owner
        && super::listen::user_id(owner).is_none()
    {
        found.errors.push(format!(
            "{here}: key `milter.socket_owner`: user `{owner}` does not exist"
        ));
    }
    if let Some(group) = &config.milter.socket_group
        && super::listen::group_id(group).is_none()
    {
        found.errors.push(format!(
            "{here}: key `milter.socket_group`: group `{group}` does not exist"
        ));
    }
    if let Some(audit) = &config.audit {
        if let Some(Err(e)) = audit.checkpoints.as_ref().map(|c| c.load_key()) {
            found
                .errors
                .push(format!("{here}: key `audit.checkpoint_key`: {e}"));
        }
        if audit.retention_days.is_some()
            && audit.destination == crate::audit::writer::Destination::Stdout
        {
            found.errors.push(format!(
                "{here}: key `audit.retention_days`: needs `audit.file` (there are no rotated files of standard output to delete)"
            ));
        }
    }
    if let Some(redis) = config.limit_store.as_ref().and_then(|s| s.redis.as_ref())
        && let Err(e) = redis::Client::open(redis.url.as_str())
    {
        found
            .errors
            .push(format!("{here}: key `limits.redis.url`: {e}"));
    }
    let policy = &loaded.snapshot.policy;
    let directory = config.sources.contains(&SourceKind::Ldap);
    for (login, rule) in policy.masquerades.rules() {
        if !policy
            .owners
            .ownership(login, &rule.address, &policy.protected)
            .is_owned()
        {
            let problem = format!(
                "{here}: key `senders.masquerade.{login}.address`: robot {login} does not own <{}>",
                rule.address
            );
            if directory {
                // The directory may assign it; it is asked per message, not here.
                found.warnings.push(format!(
                    "{problem} by the sender map; the directory must assign it"
                ));
            } else {
                found
                    .errors
                    .push(format!("{problem}: its automatic mail would be refused"));
            }
        }
    }
    if let Some(directory) = &loaded.directory {
        found.warnings.extend(directory.settings().advice());
    }
    if let (Some(keys), Some(dkim)) = (&loaded.snapshot.keys, &config.dkim) {
        let required = tooling::required_domains(keys, config.policy.protected.apexes());
        let (errors, warnings) =
            tooling::check_schedule(keys, &required, dkim.min_publish_lead, now);
        let at = dkim.selectors.display();
        found
            .errors
            .extend(errors.into_iter().map(|e| format!("{at}: {e}")));
        found
            .warnings
            .extend(warnings.into_iter().map(|w| format!("{at}: {w}")));
    }
    found
}

/// The parts of a configuration that a reload must not silently drop: a truncated or
/// emptied file would otherwise turn signing, limits or an ownership source off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    dkim: bool,
    limits: bool,
    login_map: Option<PathBuf>,
    map_entries: usize,
    protected: Vec<String>,
    sources: Vec<SourceKind>,
}

impl Shape {
    /// The shape of a loaded configuration.
    pub fn of(loaded: &Loaded) -> Self {
        Shape {
            dkim: loaded.snapshot.keys.is_some(),
            limits: loaded.snapshot.limits.is_some(),
            login_map: loaded.config.login_map.as_ref().map(|(f, _)| f.clone()),
            map_entries: loaded.snapshot.policy.owners.map.len(),
            protected: loaded.snapshot.policy.protected.apexes().to_vec(),
            sources: loaded.config.sources.clone(),
        }
    }

    /// Why a reload from `self` to `new` must be refused, if it must.
    pub fn dropped(&self, new: &Shape) -> Vec<String> {
        let mut why = Vec::new();
        if self.dkim && !new.dkim {
            why.push("[dkim] is missing: a reload may not turn DKIM signing off".to_string());
        }
        if self.limits && !new.limits {
            why.push("[limits] is missing: a reload may not turn the sending limits off".into());
        }
        if self.login_map.is_some() && new.login_map.is_none() {
            why.push("senders.login_map is missing: a reload may not drop the sender map".into());
        } else if self.map_entries > 0 && new.map_entries == 0 {
            why.push(format!(
                "the sender map has no entries (it had {}): a reload may not empty it",
                self.map_entries
            ));
        }
        for source in self.sources.iter().filter(|s| !new.sources.contains(s)) {
            why.push(format!(
                "ownership source `{}` is missing from senders.sources: a reload may not drop a source (restart to change them)",
                source.name()
            ));
        }
        for domain in self.protected.iter().filter(|d| !new.protected.contains(d)) {
            why.push(format!(
                "protected domain {domain} is missing: a reload may not drop a protected domain"
            ));
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_sender_map_names_the_key_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayguard.toml");
        std::fs::write(&path, "[senders]\nlogin_map = \"does-not-exist\"\n").unwrap();
        let e = load(&path, 0, &Directories::standalone())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&format!(
                "relayguard.toml:2: key `senders.login_map`: cannot read {}",
                dir.path().join("does-not-exist").display()
            )),
            "{e}"
        );
    }
}
