//! Sender ownership: the Postfix `smtpd_sender_login_maps` table, the login rules, the
//! seam every ownership source (the map, the directory) answers through, and the chain that
//! asks them in the configured order.

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

/// What one ownership source says about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The source has an entry for the address itself: its word is final.
    Exact(Ownership),
    /// The source has only a domain-wide entry (`@domain`): it decides unless a later
    /// source has an entry for the address or the own-local-part rule applies.
    Domain(Ownership),
    /// The source knows nothing of the address.
    Silent,
}

/// Where ownership lives: the seam between the sender checks and a sender map, a
/// directory, or anything else. Implement it and name it in `runtime::assemble` to add one.
pub trait OwnershipSource: Send + Sync {
    /// What the source says about `login` (normalised) using the protected `address`.
    fn answer<'a>(
        &'a self,
        login: &'a str,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<Lookup, SourceDown>>;

    /// Whether the source marks `login` as a robot (which owns only what it is assigned).
    fn is_robot<'a>(&'a self, _login: &'a str) -> BoxFuture<'a, Result<bool, SourceDown>> {
        Box::pin(std::future::ready(Ok(false)))
    }

    /// The entry (its key, as `explain` shows it) that gives `address` to any login, or
    /// `None` when the source gives it to nobody. An unauthenticated server may never send
    /// as such an address, even one in its own domain.
    fn claim<'a>(
        &'a self,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<Option<String>, SourceDown>>;
}

/// One element of `[senders] sources`, in the configured order.
#[derive(Clone)]
pub enum Source {
    /// A source with entries (the sender map, the directory).
    Entries(Arc<dyn OwnershipSource>),
    /// The rule that login `x` owns `x@` each protected apex, unless it is a robot.
    OwnLocalPart,
}

/// The configured ownership sources, asked in order: the first entry for the address
/// itself decides; else the own-local-part rule where it stands; else the first
/// domain-wide entry; else not owned. With `["map", "own_local_part"]` this is Postfix's
/// order for `smtpd_sender_login_maps` plus the local-part rule.
#[derive(Clone)]
pub struct Sources {
    sources: Vec<Source>,
    robots: Vec<String>,
    protected: ProtectedDomains,
    delimiter: Option<char>,
}

impl Sources {
    /// The chain; `robots` are the configured robot logins (sources may add more).
    pub fn new(
        sources: Vec<Source>,
        robots: Vec<String>,
        protected: ProtectedDomains,
        delimiter: Option<char>,
    ) -> Self {
        Sources {
            sources,
            robots,
            protected,
            delimiter,
        }
    }

    /// The chain of one source alone.
    pub fn only(source: Arc<dyn OwnershipSource>, protected: ProtectedDomains) -> Self {
        Sources::new(vec![Source::Entries(source)], Vec::new(), protected, None)
    }

    /// Whether `login` (normalised) owns the protected `address`, and why.
    pub async fn ownership(&self, login: &str, address: &Address) -> Result<Ownership, SourceDown> {
        let mut domain_wide = None;
        for source in &self.sources {
            match source {
                Source::Entries(source) => match source.answer(login, address).await? {
                    Lookup::Exact(ownership) => return Ok(ownership),
                    Lookup::Domain(ownership) => {
                        domain_wide.get_or_insert(ownership);
                    }
                    Lookup::Silent => {}
                },
                Source::OwnLocalPart => {
                    if owns_local_part(login, address, &self.protected, self.delimiter)
                        && !self.is_robot(login).await?
                    {
                        return Ok(Ownership::OwnLocalPart);
                    }
                }
            }
        }
        Ok(domain_wide.unwrap_or(Ownership::NotOwned(None)))
    }

    /// The first source's entry that gives `address` to any login (see
    /// [`OwnershipSource::claim`]). The own-local-part rule gives only apex addresses, which
    /// no server may use, so it is not asked.
    pub async fn claim(&self, address: &Address) -> Result<Option<String>, SourceDown> {
        for source in &self.sources {
            if let Source::Entries(source) = source
                && let Some(key) = source.claim(address).await?
            {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Whether `login` is a robot: configured as one, or marked by a source.
    pub async fn is_robot(&self, login: &str) -> Result<bool, SourceDown> {
        if self.robots.iter().any(|r| r == login) {
            return Ok(true);
        }
        for source in &self.sources {
            if let Source::Entries(source) = source
                && source.is_robot(login).await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The own-local-part rule alone: `login` is the local part (without extension) of an
/// address at a protected apex.
pub fn owns_local_part(
    login: &str,
    address: &Address,
    protected: &ProtectedDomains,
    delimiter: Option<char>,
) -> bool {
    let local = address.local();
    let base = delimiter
        .and_then(|d| local.split_once(d).map(|(b, _)| b))
        .unwrap_or(local);
    let is_apex = address
        .domain()
        .is_some_and(|d| protected.apexes().iter().any(|a| a == d));
    is_apex && base == login
}

/// The sender map as an ownership source.
#[derive(Debug, Clone)]
pub struct MapSource {
    map: Arc<SenderMap>,
    delimiter: Option<char>,
}

impl MapSource {
    /// The source answering from `map`; `alice+tag@` is looked up as `alice@` too.
    pub fn new(map: Arc<SenderMap>, delimiter: Option<char>) -> Self {
        MapSource { map, delimiter }
    }
}

impl OwnershipSource for MapSource {
    fn answer<'a>(
        &'a self,
        login: &'a str,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<Lookup, SourceDown>> {
        Box::pin(std::future::ready(Ok(self.map.answer(
            login,
            address,
            self.delimiter,
        ))))
    }

    fn claim<'a>(
        &'a self,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<Option<String>, SourceDown>> {
        Box::pin(std::future::ready(Ok(self
            .map
            .claim(address, self.delimiter))))
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
    /// A directory entry names the login as an owner.
    Directory {
        /// The lookup key that found it (`alice@tugraz.at`, `@tugraz.at`).
        key: String,
        /// The DN of the entry naming the login.
        entry: String,
    },
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

    /// The entry that gives `address` to some login: its address entry (then without its
    /// extension), else its `@domain` entry; as written in the key column, canonical.
    pub fn claim(&self, address: &Address, delimiter: Option<char>) -> Option<String> {
        if let Some((key, _)) = self.address_entry(address, delimiter) {
            return Some(key);
        }
        let domain = address.domain()?;
        self.domains
            .contains_key(domain)
            .then(|| format!("@{domain}"))
    }

    /// What the map says about `login` using `address`, Postfix-style: the exact address
    /// entry (then without its extension), else the `@domain` entry.
    pub fn answer(&self, login: &str, address: &Address, delimiter: Option<char>) -> Lookup {
        let judge = |key: String, owners: &Vec<String>| {
            if owners.iter().any(|o| o == login) {
                Ownership::MapEntry(key)
            } else {
                Ownership::NotOwned(Some(key))
            }
        };
        if let Some((key, owners)) = self.address_entry(address, delimiter) {
            return Lookup::Exact(judge(key, owners));
        }
        match address
            .domain()
            .and_then(|d| Some((d, self.domains.get(d)?)))
        {
            Some((domain, owners)) => Lookup::Domain(judge(format!("@{domain}"), owners)),
            None => Lookup::Silent,
        }
    }
}

/// Everything needed to decide from the sender map and the login rules alone whether a
/// login owns an address (cheap to clone: the map is shared).
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
    /// Decides whether `login` (normalised) owns `address` with the sources
    /// `["map", "own_local_part"]`: the exact address entry (then without its extension)
    /// decides; else the own-local-part rule; else `@domain`.
    pub fn ownership(
        &self,
        login: &str,
        address: &Address,
        protected: &ProtectedDomains,
    ) -> Ownership {
        let domain_wide = match self.map.answer(login, address, self.delimiter) {
            Lookup::Exact(ownership) => return ownership,
            Lookup::Domain(ownership) => Some(ownership),
            Lookup::Silent => None,
        };
        if self.own_local_part
            && !self.robots.iter().any(|r| r == login)
            && owns_local_part(login, address, protected, self.delimiter)
        {
            return Ownership::OwnLocalPart;
        }
        domain_wide.unwrap_or(Ownership::NotOwned(None))
    }

    /// The map entry that gives `address` to some login, if any.
    pub fn claim(&self, address: &Address) -> Option<String> {
        self.map.claim(address, self.delimiter)
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
