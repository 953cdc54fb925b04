//! Sender ownership: the Postfix `smtpd_sender_login_maps` table, the login rules, and the
//! seam every ownership source (the map today, a directory tomorrow) answers through.

use super::address::Address;
use super::domains::{ProtectedDomains, normalise_domain};
use crate::BoxFuture;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An ownership source could not answer (a directory unreachable): the message tempfails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ownership source unavailable: {0}")]
pub struct SourceDown(pub String);

/// Who owns a sender address: the one seam between the sender checks and where ownership
/// lives. Implement it (and name it in `runtime::assemble`) to add a source.
pub trait OwnershipSource: Send + Sync {
    /// Whether `login` (normalised) owns the protected `address`, and why.
    fn ownership<'a>(
        &'a self,
        login: &'a str,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<Ownership, SourceDown>>;
}

/// The sender map with the own-local-part rule and robots, in memory.
#[derive(Debug, Clone)]
pub struct MapSource {
    owners: Owners,
    protected: ProtectedDomains,
}

impl MapSource {
    /// The source answering from `owners` for the `protected` domains.
    pub fn new(owners: Owners, protected: ProtectedDomains) -> Self {
        MapSource { owners, protected }
    }
}

impl OwnershipSource for MapSource {
    fn ownership<'a>(
        &'a self,
        login: &'a str,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<Ownership, SourceDown>> {
        let answer = self.owners.ownership(login, address, &self.protected);
        Box::pin(std::future::ready(Ok(answer)))
    }
}

/// A syntax error in a sender-login map, with its place.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {reason}", path.display())]
pub struct SenderMapError {
    /// The map file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Normalises SASL logins: lower case, and `login@realm` reduced to `login` for local realms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRules {
    realms: Vec<String>,
}

impl LoginRules {
    /// Rules stripping the given (normalised) realms.
    pub fn new(realms: Vec<String>) -> Self {
        Self { realms }
    }

    /// The canonical form of a login as the MTA reports it in `{auth_authen}`.
    pub fn normalise(&self, login: &str) -> String {
        let login = login.trim().to_lowercase();
        if let Some((user, realm)) = login.rsplit_once('@')
            && let Ok(realm) = normalise_domain(realm)
            && self.realms.contains(&realm)
        {
            return user.to_string();
        }
        login
    }
}

/// How an address came to be owned by a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// A map entry (its key as written) lists the login.
    MapEntry(String),
    /// The rule that login `x` owns `x@` each protected apex.
    OwnLocalPart,
    /// Not owned; the map entry consulted, if any.
    NotOwned(Option<String>),
}

impl Ownership {
    /// Whether the login owns the address.
    pub fn is_owned(&self) -> bool {
        !matches!(self, Ownership::NotOwned(_))
    }
}

/// The parsed sender-login map.
#[derive(Debug, Clone, Default)]
pub struct SenderMap {
    addresses: HashMap<String, Vec<String>>,
    domains: HashMap<String, Vec<String>>,
}

impl SenderMap {
    /// Parses map text in Postfix's table format: `key value[, value...]`, `#` comments,
    /// continuation lines starting with white space. Keys are `user@domain` or `@domain`.
    pub fn parse(path: &Path, text: &str, logins: &LoginRules) -> Result<Self, SenderMapError> {
        let err = |line: usize, reason: String| SenderMapError {
            path: path.to_path_buf(),
            line,
            reason,
        };
        // Join continuation lines into logical entries, remembering where each began.
        let mut entries: Vec<(usize, String)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                match entries.last_mut() {
                    Some((_, entry)) => {
                        entry.push(' ');
                        entry.push_str(trimmed);
                    }
                    None => return Err(err(number, "continuation line without an entry".into())),
                }
            } else {
                entries.push((number, trimmed.to_string()));
            }
        }
        let mut map = SenderMap::default();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (line, entry) in entries {
            let (key, value) = entry
                .split_once([' ', '\t'])
                .ok_or_else(|| err(line, format!("entry `{entry}` has no logins")))?;
            let owners: Vec<String> = value
                .split([',', ' ', '\t'])
                .filter(|s| !s.is_empty())
                .map(|s| logins.normalise(s))
                .collect();
            if owners.is_empty() {
                return Err(err(line, format!("entry `{key}` has no logins")));
            }
            let (canonical, table) = if let Some(domain) = key.strip_prefix('@') {
                let domain =
                    normalise_domain(domain).map_err(|e| err(line, format!("key `{key}`: {e}")))?;
                (domain, &mut map.domains)
            } else if key.contains('@') {
                let address = Address::parse_addr_spec(key)
                    .map_err(|e| err(line, format!("key `{key}`: {e}")))?;
                (address.canonical(), &mut map.addresses)
            } else {
                return Err(err(
                    line,
                    format!(
                        "key `{key}` is neither `user@domain` nor `@domain` (bare local parts depend on Postfix's myorigin; write the full address)"
                    ),
                ));
            };
            let tag = if key.starts_with('@') {
                format!("@{canonical}")
            } else {
                canonical.clone()
            };
            if let Some(first) = seen.insert(tag, line) {
                return Err(err(
                    line,
                    format!("duplicate key `{key}` (first at line {first})"),
                ));
            }
            table.insert(canonical, owners);
        }
        Ok(map)
    }

    /// Number of entries (address and domain keys).
    pub fn len(&self) -> usize {
        self.addresses.len() + self.domains.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn address_entry(
        &self,
        address: &Address,
        delimiter: Option<char>,
    ) -> Option<(String, &Vec<String>)> {
        let canonical = address.canonical();
        if let Some(owners) = self.addresses.get(&canonical) {
            return Some((canonical, owners));
        }
        let (delim, domain) = (delimiter?, address.domain()?);
        let (base, _) = address.local().split_once(delim)?;
        let key = format!("{base}@{domain}");
        self.addresses.get(&key).map(|owners| (key, owners))
    }
}

/// Everything needed to decide whether a login owns an address (cheap to clone: the map
/// is shared).
#[derive(Debug, Clone)]
pub struct Owners {
    /// The sender-login map.
    pub map: Arc<SenderMap>,
    /// Whether login `x` owns `x@` each protected apex (unless it is a robot).
    pub own_local_part: bool,
    /// Logins that own only what the map assigns them.
    pub robots: Vec<String>,
    /// Address extension delimiter (`alice+tag@` is looked up as `alice@` too).
    pub delimiter: Option<char>,
}

impl Owners {
    /// Decides whether `login` (normalised) owns `address`, Postfix-style: the exact address
    /// entry (then without its extension) decides; else the own-local-part rule; else `@domain`.
    pub fn ownership(
        &self,
        login: &str,
        address: &Address,
        protected: &ProtectedDomains,
    ) -> Ownership {
        if let Some((key, owners)) = self.map.address_entry(address, self.delimiter) {
            return if owners.iter().any(|o| o == login) {
                Ownership::MapEntry(key)
            } else {
                Ownership::NotOwned(Some(key))
            };
        }
        if self.own_local_part && !self.robots.iter().any(|r| r == login) {
            let local = address.local();
            let base = self
                .delimiter
                .and_then(|d| local.split_once(d).map(|(b, _)| b))
                .unwrap_or(local);
            let is_apex = address
                .domain()
                .is_some_and(|d| protected.apexes().iter().any(|a| a == d));
            if is_apex && base == login {
                return Ownership::OwnLocalPart;
            }
        }
        if let Some(domain) = address.domain()
            && let Some(owners) = self.map.domains.get(domain)
        {
            let key = format!("@{domain}");
            return if owners.iter().any(|o| o == login) {
                Ownership::MapEntry(key)
            } else {
                Ownership::NotOwned(Some(key))
            };
        }
        Ownership::NotOwned(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> LoginRules {
        LoginRules::new(vec!["tugraz.at".into()])
    }

    #[test]
    fn parses_postfix_format_with_continuations_and_comments() {
        let text = "# owners\nalice@tugraz.at alice\nteam@tugraz.at alice, bob\n   carol\n@iaik.tugraz.at  Dave@TUGRAZ.AT\n";
        let map = SenderMap::parse(Path::new("m"), text, &rules()).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(
            map.addresses["team@tugraz.at"],
            vec!["alice", "bob", "carol"]
        );
        assert_eq!(map.domains["iaik.tugraz.at"], vec!["dave"]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = SenderMap::parse(Path::new("/etc/m"), "a@b.at x\n\nbare alice\n", &rules())
            .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("/etc/m:3: key `bare`"), "{e}");
        let e = SenderMap::parse(Path::new("m"), "a@b.at x\nA@B.AT y\n", &rules()).unwrap_err();
        assert!(
            e.to_string()
                .contains("duplicate key `A@B.AT` (first at line 1)"),
            "{e}"
        );
        let e = SenderMap::parse(Path::new("m"), "a@b.at\n", &rules()).unwrap_err();
        assert!(e.to_string().contains("has no logins"), "{e}");
        let e = SenderMap::parse(Path::new("m"), "  x\n", &rules()).unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn login_realms_are_stripped_only_for_local_realms() {
        assert_eq!(rules().normalise("Alice@TUGraz.at"), "alice");
        assert_eq!(rules().normalise("alice@gmail.com"), "alice@gmail.com");
    }
}
