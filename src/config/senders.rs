//! `[domains]` and `[senders]`: the protected domains, who owns which sender (map, directory,
//! own local part) and robots' masquerading; with `[clients]`, the sender policy.

use super::RawConfig;
use super::clients::{internal_networks, servers};
use super::ldap::{LdapConfig, ldap};
use super::values::domains;
use crate::policy::Policy;
use crate::policy::address::Address;
use crate::policy::domains::ProtectedDomains;
use crate::policy::masquerade::{Masquerades, Rule, RuleError};
use crate::policy::senders::{LoginRules, Owners};
use crate::tomlfile::{FileError, Place, line_of};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// `[domains]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomains {
    pub(super) protected: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[senders]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSenders {
    pub(super) login_map: Option<Spanned<String>>,
    pub(super) own_local_part: Option<bool>,
    pub(super) robots: Option<Vec<String>>,
    pub(super) realms: Option<Vec<Spanned<String>>>,
    pub(super) allow_foreign: Option<bool>,
    pub(super) recipient_delimiter: Option<Spanned<String>>,
    pub(super) original_header: Option<Spanned<String>>,
    pub(super) masquerade: Option<std::collections::BTreeMap<String, Spanned<RawMasquerade>>>,
    pub(super) sources: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[senders.ldap]`: relayguard's own keys and ldap_table(5) keys, read by hand so that
    /// an unsupported ldap_table key gets ldap_table's error, not serde's.
    pub(super) ldap: Option<Spanned<std::collections::BTreeMap<String, Spanned<toml::Value>>>>,
}

/// One `[senders.masquerade.ROBOT]` as written (serde; unknown keys are errors).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMasquerade {
    pub(super) address: Spanned<String>,
    pub(super) from: Spanned<Vec<String>>,
    pub(super) display_name: Option<Spanned<String>>,
}

/// One element of `[senders] sources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The sender map (`senders.login_map`).
    Map,
    /// The directory (`[senders.ldap]`).
    Ldap,
    /// Login `x` owns `x@` each protected apex.
    OwnLocalPart,
}

impl SourceKind {
    /// The name as written in `sources`.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Map => "map",
            SourceKind::Ldap => "ldap",
            SourceKind::OwnLocalPart => "own_local_part",
        }
    }
}

/// What `[senders]` names beyond the policy: the files and sources the runtime reads.
pub(super) struct SenderSources {
    pub(super) login_map: Option<(PathBuf, usize)>,
    pub(super) sources: Vec<SourceKind>,
    pub(super) ldap: Option<LdapConfig>,
}

/// `[domains]`, `[senders]` and `[clients]`: the sender policy (its map empty: the runtime
/// reads the file), the sender map's file and the line naming it, and the sources.
pub(super) fn policy(
    raw: &RawConfig,
    p: Place,
    base: &Path,
) -> Result<(Policy, SenderSources), FileError> {
    let protected = match &raw.domains.protected {
        Some(list) if list.get_ref().is_empty() => {
            return Err(p.invalid(
                list.span(),
                "domains.protected",
                "at least one protected domain is needed".into(),
            ));
        }
        Some(list) => domains(list.get_ref(), "domains.protected", p)?,
        None => vec!["tugraz.at".into(), "tu-graz.ac.at".into()],
    };
    let senders = &raw.senders;
    let realms = match &senders.realms {
        Some(list) => domains(list, "senders.realms", p)?,
        None => protected.clone(),
    };
    let logins = LoginRules::new(realms);
    let delimiter = match &senders.recipient_delimiter {
        Some(d) => {
            let mut chars = d.get_ref().chars();
            match (chars.next(), chars.next()) {
                (None, _) => None,
                (Some(c), None) if c.is_ascii_punctuation() && !"@\"\\()<>,;:[]".contains(c) => {
                    Some(c)
                }
                _ => {
                    return Err(p.invalid(
                        d.span(),
                        "senders.recipient_delimiter",
                        format!(
                            "{:?} is not one ASCII punctuation character (such as + - = _); control characters, letters and address syntax are refused",
                            d.get_ref()
                        ),
                    ));
                }
            }
        }
        None => Some('+'),
    };
    let login_map = senders
        .login_map
        .as_ref()
        .map(|m| (base.join(m.get_ref()), line_of(p.text, m.span().start)));
    let ldap = senders
        .ldap
        .as_ref()
        .map(|table| ldap(table, p, base, &logins, delimiter))
        .transpose()?;
    let sources = sources(senders, p, login_map.is_some(), ldap.is_some())?;
    let owners = Owners {
        map: Default::default(),
        own_local_part: sources.contains(&SourceKind::OwnLocalPart),
        robots: senders
            .robots
            .iter()
            .flatten()
            .map(|r| logins.normalise(r))
            .collect(),
        delimiter,
    };
    let directory_robots = ldap
        .as_ref()
        .is_some_and(|l| l.tuning.robot_filter.is_some());
    let masquerades = masquerades(
        senders,
        p,
        &logins,
        &owners.robots,
        directory_robots,
        &protected,
    )?;
    let policy = Policy {
        masquerades,
        servers: servers(&raw.clients, p)?,
        protected: ProtectedDomains::new(protected),
        internal_networks: internal_networks(&raw.clients, p)?,
        owners,
        logins,
        allow_foreign_senders: senders.allow_foreign.unwrap_or(false),
    };
    Ok((
        policy,
        SenderSources {
            login_map,
            sources,
            ldap,
        },
    ))
}

/// `senders.sources` (default: `map`, then `ldap` when `[senders.ldap]` is set, then
/// `own_local_part` unless `own_local_part = false`).
pub(super) fn sources(
    senders: &RawSenders,
    p: Place,
    has_map: bool,
    has_ldap: bool,
) -> Result<Vec<SourceKind>, FileError> {
    let Some(list) = &senders.sources else {
        let mut sources = vec![SourceKind::Map];
        if has_ldap {
            sources.push(SourceKind::Ldap);
        }
        if senders.own_local_part.unwrap_or(true) {
            sources.push(SourceKind::OwnLocalPart);
        }
        return Ok(sources);
    };
    let key = "senders.sources";
    if senders.own_local_part.is_some() {
        return Err(p.invalid(
            list.span(),
            key,
            "set either sources or own_local_part, not both (list \"own_local_part\" in sources to use the rule)".into(),
        ));
    }
    if list.get_ref().is_empty() {
        return Err(p.invalid(list.span(), key, "needs at least one source".into()));
    }
    let mut sources = Vec::new();
    for name in list.get_ref() {
        let kind = p.choose(
            Some(name),
            key,
            &[
                ("map", SourceKind::Map),
                ("ldap", SourceKind::Ldap),
                ("own_local_part", SourceKind::OwnLocalPart),
            ],
        )?;
        if sources.contains(&kind) {
            return Err(p.invalid(
                name.span(),
                key,
                format!("`{}` is listed twice", kind.name()),
            ));
        }
        if kind == SourceKind::Map && !has_map {
            return Err(p.invalid(
                name.span(),
                key,
                "`map` is listed but senders.login_map is not set".into(),
            ));
        }
        if kind == SourceKind::Ldap && !has_ldap {
            return Err(p.invalid(
                name.span(),
                key,
                "`ldap` is listed but [senders.ldap] is not configured".into(),
            ));
        }
        sources.push(kind);
    }
    if has_ldap && !sources.contains(&SourceKind::Ldap) {
        return Err(p.invalid(
            list.span(),
            key,
            "[senders.ldap] is configured but `ldap` is not listed: it would never be asked".into(),
        ));
    }
    Ok(sources)
}

/// `[senders.masquerade."LOGIN"]` and `senders.original_header`.
pub(super) fn masquerades(
    senders: &RawSenders,
    p: Place,
    logins: &LoginRules,
    robots: &[String],
    directory_robots: bool,
    protected: &[String],
) -> Result<Masquerades, FileError> {
    let original_header = match &senders.original_header {
        None => Some("X-Original-From".to_string()),
        Some(h) if h.get_ref().is_empty() => None,
        Some(h) => {
            let name = h.get_ref();
            let valid = name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !valid {
                return Err(p.invalid(
                    h.span(),
                    "senders.original_header",
                    format!("`{name}` is not a header field name (or \"\" for none)"),
                ));
            }
            Some(name.clone())
        }
    };
    let mut rules = HashMap::new();
    for (login, entry) in senders.masquerade.iter().flatten() {
        let key = format!("senders.masquerade.{login}");
        let at =
            |span, what: &str, reason: String| p.invalid(span, &format!("{key}.{what}"), reason);
        let normalised = logins.normalise(login);
        if !robots.contains(&normalised) && !directory_robots {
            return Err(p.invalid(
                entry.span(),
                &key,
                format!("`{login}` is not in senders.robots: only robot accounts are masqueraded"),
            ));
        }
        let m = entry.get_ref();
        let address = Address::parse_addr_spec(m.address.get_ref())
            .ok()
            .filter(|a| {
                a.domain().is_some_and(|d| {
                    protected
                        .iter()
                        .any(|apex| d == apex || d.ends_with(&format!(".{apex}")))
                })
            })
            .ok_or_else(|| {
                at(
                    m.address.span(),
                    "address",
                    format!(
                        "`{}` is not an address in the protected domains",
                        m.address.get_ref()
                    ),
                )
            })?;
        let rule = Rule::new(
            address,
            m.from.get_ref(),
            m.display_name.as_ref().map(|d| d.get_ref().clone()),
        )
        .map_err(|e| match e {
            RuleError::DisplayName => at(
                m.display_name.as_ref().map_or(0..0, |d| d.span()),
                "display_name",
                e.to_string(),
            ),
            RuleError::Pattern(_) => at(m.from.span(), "from", e.to_string()),
        })?;
        rules.insert(normalised, rule);
    }
    Ok(Masquerades::new(rules, original_header))
}
