//! `[senders.ldap]`: the directory as an ownership source, through Postfix's ldap_table file
//! or inline ldap_table keys, and relayguard's own cache and pool settings.

use crate::ldap::table::{Origin, Pair, Settings, Tuning};
use crate::policy::senders::LoginRules;
use crate::tomlfile::{FileError, Place, line_of};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

// The documented range of each number (docs/configuration.md, relayguard.toml(5)); values outside are
// errors, so no setting can overflow arithmetic or a runtime structure.
const LDAP_TTL_SECS: RangeInclusive<u64> = 0..=86_400;
const LDAP_MAX_STALE_SECS: RangeInclusive<u64> = 0..=604_800;
const LDAP_CACHE_SIZE: RangeInclusive<u64> = 1..=10_000_000;
const LDAP_POOL_SIZE: RangeInclusive<u64> = 1..=32;

/// Where the directory's ldap_table settings are.
#[derive(Debug, Clone)]
pub enum LdapTable {
    /// A Postfix ldap_table(5) file (`postfix_table`) and the line naming it; the runtime
    /// reads it.
    File(PathBuf, usize),
    /// The ldap_table keys written in `[senders.ldap]`, validated.
    Inline(Box<crate::ldap::table::Settings>),
}

/// `[senders.ldap]`.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// The ldap_table settings.
    pub table: LdapTable,
    /// relayguard's own directory settings (cache, pool, robots).
    pub tuning: crate::ldap::table::Tuning,
}

/// `[senders.ldap]`: relayguard's own directory settings, and either `postfix_table` (a
/// Postfix ldap_table file) or the same ldap_table keys inline.
pub(super) fn ldap(
    table: &Spanned<std::collections::BTreeMap<String, Spanned<toml::Value>>>,
    p: Place,
    base: &Path,
    logins: &LoginRules,
    delimiter: Option<char>,
) -> Result<LdapConfig, FileError> {
    let mut tuning = Tuning::default();
    let mut postfix_table = None;
    let mut pairs = Vec::new();
    for (name, value) in table.get_ref() {
        match read_key(name, value, p, base, &mut tuning)? {
            Key::PostfixTable(file, line) => postfix_table = Some((file, line)),
            Key::Tuning => {}
            Key::Pair(pair) => pairs.push(pair),
        }
    }
    let table = match (postfix_table, pairs.first()) {
        (Some((file, line)), None) => LdapTable::File(file, line),
        (Some(_), Some(pair)) => {
            return Err(FileError::Invalid {
                path: p.path.to_path_buf(),
                line: pair.line,
                key: key(&pair.key),
                reason: "set either postfix_table or the ldap_table keys inline, not both".into(),
            });
        }
        (None, _) => {
            let origin = Origin {
                path: p.path.to_path_buf(),
                prefix: "senders.ldap.",
            };
            if pairs.is_empty() {
                return Err(p.invalid(
                    table.span(),
                    "senders.ldap",
                    "needs postfix_table or the ldap_table keys (server_host, search_base, query_filter, result_attribute, ...)".into(),
                ));
            }
            LdapTable::Inline(Box::new(Settings::from_pairs(
                &origin,
                &pairs,
                logins.clone(),
                delimiter,
                tuning.clone(),
            )?))
        }
    };
    Ok(LdapConfig { table, tuning })
}

/// The full name of a key of `[senders.ldap]`.
fn key(k: &str) -> String {
    format!("senders.ldap.{k}")
}

/// What one key of `[senders.ldap]` is.
enum Key {
    /// `postfix_table`: the file, and the line naming it.
    PostfixTable(PathBuf, usize),
    /// One of relayguard's own settings, now in the tuning.
    Tuning,
    /// An ldap_table(5) key, for ldap_table's own checks.
    Pair(Pair),
}

/// Reads one key: relayguard's own (into `tuning`), `postfix_table`, or an ldap_table key.
fn read_key(
    name: &str,
    value: &Spanned<toml::Value>,
    p: Place,
    base: &Path,
    tuning: &mut Tuning,
) -> Result<Key, FileError> {
    let span = value.span();
    let number = |range: std::ops::RangeInclusive<u64>| -> Result<u64, FileError> {
        let n = value
            .get_ref()
            .as_integer()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| p.invalid(span.clone(), &key(name), "must be a whole number".into()))?;
        p.number(&Some(Spanned::new(span.clone(), n)), &key(name), range)
            .map(|n| n.expect("given"))
    };
    let string = || -> Result<String, FileError> {
        value
            .get_ref()
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| p.invalid(span.clone(), &key(name), "must be a string".into()))
    };
    let secs = Duration::from_secs;
    match name {
        "postfix_table" => {
            return Ok(Key::PostfixTable(
                base.join(string()?),
                line_of(p.text, span.start),
            ));
        }
        "robot_filter" => {
            let filter = string()?;
            crate::ldap::query::check_template(&filter)
                .map_err(|why| p.invalid(span.clone(), &key(name), why))?;
            tuning.robot_filter = Some(filter);
        }
        "positive_ttl_secs" => tuning.positive_ttl = secs(number(LDAP_TTL_SECS)?),
        "negative_ttl_secs" => tuning.negative_ttl = secs(number(LDAP_TTL_SECS)?),
        "max_stale_secs" => tuning.max_stale = secs(number(LDAP_MAX_STALE_SECS)?),
        "cache_size" => tuning.cache_size = number(LDAP_CACHE_SIZE)? as usize,
        "pool_size" => tuning.pool_size = number(LDAP_POOL_SIZE)? as usize,
        _ => return ldap_table_pair(name, value, p).map(Key::Pair),
    }
    Ok(Key::Tuning)
}

/// An ldap_table key as ldap_table(5) writes it: text, numbers, yes/no, lists joined.
fn ldap_table_pair(name: &str, value: &Spanned<toml::Value>, p: Place) -> Result<Pair, FileError> {
    let text = |v: &toml::Value| -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(n) => Some(n.to_string()),
            toml::Value::Boolean(b) => Some(if *b { "yes" } else { "no" }.into()),
            _ => None,
        }
    };
    let joined = match value.get_ref() {
        toml::Value::Array(items) => items
            .iter()
            .map(text)
            .collect::<Option<Vec<String>>>()
            .map(|items| items.join(", ")),
        v => text(v),
    }
    .ok_or_else(|| {
        p.invalid(
            value.span(),
            &key(name),
            "must be a string, number, yes/no or a list of strings".into(),
        )
    })?;
    Ok(Pair {
        key: name.to_string(),
        value: joined,
        line: line_of(p.text, value.span().start),
    })
}
