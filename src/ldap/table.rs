//! The directory's settings: Postfix's ldap_table(5) file format (or the same keys inline in
//! `relayguard.toml`), validated into [`Settings`]. Pure: the caller hands in the text.
//!
//! Every ldap_table key relayguard does not implement is an error naming the file, the
//! line and the key: a Postfix file that means something relayguard would not do is never
//! half-read.

pub use super::keys::{Origin, Pair, parse_postfix_file};

use super::keys::{Keys, list, parse_server};
use crate::policy::senders::LoginRules;
use crate::tomlfile::FileError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Search scope, as ldap_table's `scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `base`.
    Base,
    /// `one`.
    One,
    /// `sub` (the default).
    Sub,
}

/// One directory server to try, in the configured order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `ldap` or `ldaps`.
    pub scheme: &'static str,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Server {
    /// The URL ldap3 connects to.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            format!("{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// How relayguard itself uses the directory (settings Postfix's file does not have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Which logins are robots: a filter, with `%s` the login (or combined with the first
    /// result attribute equal to the login).
    pub robot_filter: Option<String>,
    /// How long an answer naming owners is used.
    pub positive_ttl: Duration,
    /// How long an answer naming nobody is used.
    pub negative_ttl: Duration,
    /// How long past its TTL an answer may serve while the directory cannot answer.
    pub max_stale: Duration,
    /// Cached answers at most.
    pub cache_size: usize,
    /// Connections to the directory.
    pub pool_size: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            robot_filter: None,
            positive_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(60),
            max_stale: Duration::from_secs(3600),
            cache_size: 100_000,
            pool_size: 2,
        }
    }
}

/// Validated directory settings; equal settings share one connection pool and cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where they were written (for messages).
    pub origin: PathBuf,
    /// Servers tried in order.
    pub servers: Vec<Server>,
    /// `search_base`.
    pub search_base: String,
    /// `scope`.
    pub scope: Scope,
    /// `query_filter`, with `%s %u %d %1..%9 %%` expansions.
    pub query_filter: String,
    /// `result_attribute`: attributes whose values are the owning logins.
    pub result_attributes: Vec<String>,
    /// `special_result_attribute`: attributes holding DNs expanded recursively (groups).
    pub special_result_attributes: Vec<String>,
    /// `leaf_result_attribute`: collected only from entries without special attributes.
    pub leaf_result_attributes: Vec<String>,
    /// `terminal_result_attribute`: when present in an entry, only these are collected.
    pub terminal_result_attributes: Vec<String>,
    /// `bind_dn` and `bind_pw` when `bind = yes` and a DN is given (else anonymous).
    pub bind: Option<(String, String)>,
    /// `start_tls`.
    pub start_tls: bool,
    /// `tls_ca_cert_file`.
    pub tls_ca_cert_file: Option<PathBuf>,
    /// `tls_require_cert` (relayguard's default: yes).
    pub tls_require_cert: bool,
    /// `timeout`: per connect and per request (relayguard's default: 1 s).
    pub timeout: Duration,
    /// `domain`: only addresses in these domains are looked up (and no `@domain` keys).
    pub domains: Vec<String>,
    /// `size_limit` (0: none).
    pub size_limit: i32,
    /// `expansion_limit` (0: none): more values fail the lookup.
    pub expansion_limit: usize,
    /// `recursion_limit`: deeper DN expansion fails the lookup.
    pub recursion_limit: u32,
    /// `dereference`: 0 never … 3 always.
    pub dereference: u8,
    /// Login normalisation applied to result values.
    pub logins: LoginRules,
    /// Address extension delimiter (an entry for `alice@` owns `alice+tag@`).
    pub delimiter: Option<char>,
    /// relayguard's own settings.
    pub tuning: Tuning,
}

impl Settings {
    /// Whether the settings carry a bind password (which makes their file a secret).
    pub fn has_password(&self) -> bool {
        self.bind.as_ref().is_some_and(|(_, pw)| !pw.is_empty())
    }

    /// Validates ldap_table settings. Postfix's defaults apply where a key is absent, except
    /// `timeout` (1 s: a milter must not hold a message for Postfix's 10 s) and
    /// `tls_require_cert` (yes). `search_base` is required.
    pub fn from_pairs(
        origin: &Origin,
        pairs: &[Pair],
        logins: LoginRules,
        delimiter: Option<char>,
        tuning: Tuning,
    ) -> Result<Settings, FileError> {
        let keys = Keys::new(origin, pairs)?;
        let search_base = match keys.get("search_base") {
            Some(p) => p.value.clone(),
            None => {
                return Err(keys.missing(
                    "search_base",
                    "missing: ldap_table(5) has no default search base".into(),
                ));
            }
        };
        let (query_filter, result_attributes) = query(&keys)?;
        let tls_ca_cert_file = keys.get("tls_ca_cert_file").map(|p| {
            let file = PathBuf::from(&p.value);
            if file.is_relative() {
                keys.path().parent().unwrap_or(Path::new(".")).join(file)
            } else {
                file
            }
        });
        Ok(Settings {
            origin: origin.path.clone(),
            servers: servers(&keys)?,
            search_base,
            scope: scope(&keys)?,
            query_filter,
            result_attributes,
            special_result_attributes: keys.attributes("special_result_attribute", &[]),
            leaf_result_attributes: keys.attributes("leaf_result_attribute", &[]),
            terminal_result_attributes: keys.attributes("terminal_result_attribute", &[]),
            bind: bind(&keys)?,
            start_tls: keys.boolean("start_tls", false)?,
            tls_ca_cert_file,
            tls_require_cert: keys.boolean("tls_require_cert", true)?,
            timeout: Duration::from_secs(keys.number("timeout", 1, 60)?.max(1)),
            domains: domains(&keys)?,
            size_limit: keys.number("size_limit", 0, i32::MAX as u64)? as i32,
            expansion_limit: keys.number("expansion_limit", 0, 1_000_000)? as usize,
            recursion_limit: keys.number("recursion_limit", 1000, 1000)? as u32,
            dereference: keys.number("dereference", 0, 3)? as u8,
            logins,
            delimiter,
            tuning,
        })
    }

    /// The robot query filter template (`%s` is the login), when robots come from the
    /// directory.
    pub fn robot_template(&self) -> Option<String> {
        let filter = self.tuning.robot_filter.as_ref()?;
        if filter.contains("%s") {
            Some(filter.clone())
        } else {
            Some(format!("(&({}=%s){filter})", self.result_attributes[0]))
        }
    }

    /// What `check-config` warns about: a certificate not verified, a password sent in
    /// clear to a server that is not on this host.
    pub fn advice(&self) -> Vec<String> {
        let at = self.origin.display();
        let mut advice = Vec::new();
        let tls = |s: &Server| s.scheme == "ldaps" || self.start_tls;
        if !self.tls_require_cert && self.servers.iter().any(tls) {
            advice.push(format!(
                "{at}: tls_require_cert = no: the directory's certificate is not verified"
            ));
        }
        let local = |s: &Server| {
            s.host == "localhost"
                || s.host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        if self.bind.is_some() {
            for server in self.servers.iter().filter(|s| !tls(s) && !local(s)) {
                advice.push(format!(
                    "{at}: bind_pw goes in clear to {}: use ldaps:// or start_tls = yes",
                    server.url()
                ));
            }
        }
        advice
    }

    /// Every attribute a search asks for.
    pub fn requested_attributes(&self) -> Vec<String> {
        let mut all = Vec::new();
        for a in self
            .terminal_result_attributes
            .iter()
            .chain(&self.leaf_result_attributes)
            .chain(&self.result_attributes)
            .chain(&self.special_result_attributes)
        {
            if !all.iter().any(|x: &String| x.eq_ignore_ascii_case(a)) {
                all.push(a.clone());
            }
        }
        all
    }
}

/// `server_host` (default `localhost`) with `server_port`.
fn servers(keys: &Keys) -> Result<Vec<Server>, FileError> {
    let default_port = keys.number("server_port", 389, 65_535)? as u16;
    let hosts = keys
        .get("server_host")
        .map(|p| (list(&p.value), Some(p)))
        .unwrap_or_else(|| (vec!["localhost".into()], None));
    let mut servers = Vec::new();
    for host in &hosts.0 {
        let server = parse_server(host, default_port).map_err(|why| match hosts.1 {
            Some(p) => keys.err(p, why),
            None => keys.missing("server_host", why),
        })?;
        servers.push(server);
    }
    if servers.is_empty()
        && let Some(p) = hosts.1
    {
        return Err(keys.err(p, "names no server".into()));
    }
    Ok(servers)
}

/// `scope`: sub (the default), one or base.
fn scope(keys: &Keys) -> Result<Scope, FileError> {
    match keys.get("scope") {
        None => Ok(Scope::Sub),
        Some(p) => match p.value.as_str() {
            "sub" => Ok(Scope::Sub),
            "one" => Ok(Scope::One),
            "base" => Ok(Scope::Base),
            other => Err(keys.err(p, format!("`{other}` is not sub, one or base"))),
        },
    }
}

/// `query_filter` (checked) and `result_attribute` (at least one).
fn query(keys: &Keys) -> Result<(String, Vec<String>), FileError> {
    let query_filter = keys
        .get("query_filter")
        .map(|p| p.value.clone())
        .unwrap_or_else(|| "(mailacceptinggeneralid=%s)".into());
    if let Err(why) = super::query::check_template(&query_filter) {
        let place = keys.get("query_filter").expect("the default is valid");
        return Err(keys.err(place, why));
    }
    let result_attributes = keys.attributes("result_attribute", &["maildrop"]);
    if result_attributes.is_empty() {
        return Err(keys.err(
            keys.get("result_attribute")
                .expect("the default is not empty"),
            "names no attribute".into(),
        ));
    }
    Ok((query_filter, result_attributes))
}

/// `bind`, `bind_dn`, `bind_pw`: a simple bind, or anonymous.
fn bind(keys: &Keys) -> Result<Option<(String, String)>, FileError> {
    if let Some(p) = keys.get("bind")
        && p.value.eq_ignore_ascii_case("sasl")
    {
        return Err(keys.err(p, "SASL binds are not supported".into()));
    }
    if !keys.boolean("bind", true)? {
        return Ok(None);
    }
    let dn = keys
        .get("bind_dn")
        .map(|p| p.value.clone())
        .unwrap_or_default();
    let pw = keys
        .get("bind_pw")
        .map(|p| p.value.clone())
        .unwrap_or_default();
    Ok((!dn.is_empty()).then_some((dn, pw)))
}

/// `domain`: a list of domain names (no files or tables).
fn domains(keys: &Keys) -> Result<Vec<String>, FileError> {
    let Some(p) = keys.get("domain") else {
        return Ok(Vec::new());
    };
    let mut domains = Vec::new();
    for d in list(&p.value) {
        if d.contains(':') || d.starts_with('/') {
            return Err(keys.err(
                p,
                format!("`{d}`: only a list of domain names is supported, not files or tables"),
            ));
        }
        domains.push(
            crate::policy::domains::normalise_domain(&d)
                .map_err(|e| keys.err(p, format!("`{d}`: {e}")))?,
        );
    }
    Ok(domains)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# sender login map from the directory\nserver_host = ldap://ldap1.tugraz.at:3389\n    ldaps://ldap2.tugraz.at\nsearch_base = ou=people,dc=tugraz,dc=at\nquery_filter = (|(mail=%s)(mailAlternateAddress=%s))\nresult_attribute = uid\nspecial_result_attribute = member\nbind = yes\nbind_dn = cn=milter,ou=services,dc=tugraz,dc=at\nbind_pw = secret\nversion = 3\ndomain = tugraz.at, tu-graz.ac.at\n";

    fn settings(text: &str) -> Result<Settings, FileError> {
        let path = Path::new("/etc/postfix/ldap-sender-login.cf");
        let pairs = parse_postfix_file(path, text)?;
        let origin = Origin {
            path: path.into(),
            prefix: "",
        };
        Settings::from_pairs(
            &origin,
            &pairs,
            LoginRules::new(vec![]),
            Some('+'),
            Tuning::default(),
        )
    }

    #[test]
    fn reads_a_postfix_file() {
        let s = settings(FILE).unwrap();
        assert_eq!(
            s.servers.iter().map(Server::url).collect::<Vec<_>>(),
            ["ldap://ldap1.tugraz.at:3389", "ldaps://ldap2.tugraz.at:636"]
        );
        assert_eq!(s.search_base, "ou=people,dc=tugraz,dc=at");
        assert_eq!(s.scope, Scope::Sub);
        assert_eq!(s.result_attributes, ["uid"]);
        assert_eq!(s.special_result_attributes, ["member"]);
        assert_eq!(
            s.bind,
            Some((
                "cn=milter,ou=services,dc=tugraz,dc=at".into(),
                "secret".into()
            ))
        );
        assert_eq!(s.domains, ["tugraz.at", "tu-graz.ac.at"]);
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert!(s.tls_require_cert);
        assert_eq!(
            s.requested_attributes(),
            ["uid".to_string(), "member".to_string()]
        );
    }

    #[test]
    fn unsupported_and_unknown_keys_name_file_line_and_key() {
        let e = settings("search_base = dc=x\nresult_format = %u\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/postfix/ldap-sender-login.cf:2: key `result_format`: unsupported"),
            "{e}"
        );
        let e = settings("search_base = dc=x\n\nfrobnicate = 1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/etc/postfix/ldap-sender-login.cf:3: key `frobnicate`: not an ldap_table(5) parameter relayguard supports"
        );
        let e = settings("search_base = dc=x\nversion = 2\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2: key `version`: `2`: relayguard speaks LDAPv3 only"),
            "{e}"
        );
        let e = settings("search_base = dc=x\nscope = subtree\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2: key `scope`: `subtree` is not sub"), "{e}");
        let e = settings("search_base = dc=x\nquery_filter = (mail=%x)\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2: key `query_filter`:"), "{e}");
        let e = settings("search_base = dc=x\nserver_host = ldapi:///run/slapd\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only ldap:// and ldaps://"), "{e}");
        let e = settings("search_base = dc=x\ndomain = hash:/etc/postfix/domains\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not files or tables"), "{e}");
    }

    #[test]
    fn a_truncated_file_is_not_read_as_defaults() {
        for text in ["", "# nothing\n\n"] {
            let e = settings(text).unwrap_err().to_string();
            assert!(e.contains(":1: the file has no settings"), "{e}");
        }
        let e = settings("server_host = ldap://127.0.0.1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `search_base`: missing"), "{e}");
        let e = settings("search_base = a\nsearch_base = b\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2: duplicate key `search_base` (first at line 1)"),
            "{e}"
        );
        let e = settings("  search_base = a\n").unwrap_err().to_string();
        assert!(e.contains(":1: continuation line"), "{e}");
    }

    #[test]
    fn advice_on_clear_passwords_and_unverified_certificates() {
        let s = settings(FILE).unwrap();
        assert_eq!(
            s.advice(),
            [
                "/etc/postfix/ldap-sender-login.cf: bind_pw goes in clear to ldap://ldap1.tugraz.at:3389: use ldaps:// or start_tls = yes"
            ]
        );
        let s = settings(&format!("{FILE}start_tls = yes\ntls_require_cert = no\n")).unwrap();
        assert_eq!(
            s.advice(),
            [
                "/etc/postfix/ldap-sender-login.cf: tls_require_cert = no: the directory's certificate is not verified"
            ]
        );
        let s =
            settings("server_host = ldap://127.0.0.1:3389\nsearch_base = dc=x\nbind_dn = cn=m\n")
                .unwrap();
        assert!(s.advice().is_empty(), "loopback");
    }

    #[test]
    fn servers_in_every_spelling() {
        assert_eq!(
            parse_server("127.0.0.1", 389).unwrap().url(),
            "ldap://127.0.0.1:389"
        );
        assert_eq!(
            parse_server("ldap://[::1]:3890/", 389).unwrap().url(),
            "ldap://[::1]:3890"
        );
        assert_eq!(
            parse_server("host:10389", 389).unwrap().url(),
            "ldap://host:10389"
        );
        assert!(parse_server("ldap://host:0", 389).is_err());
        assert!(parse_server("ldap://host/dc=x", 389).is_err());
    }

    #[test]
    fn bind_no_is_anonymous_and_robot_filters_combine() {
        let mut s =
            settings("search_base = dc=x\nbind = no\nbind_dn = cn=x\nresult_attribute = uid\n")
                .unwrap();
        assert_eq!(s.bind, None);
        s.tuning.robot_filter = Some("(objectClass=tugRobot)".into());
        assert_eq!(
            s.robot_template().unwrap(),
            "(&(uid=%s)(objectClass=tugRobot))"
        );
        s.tuning.robot_filter = Some("(&(uid=%s)(memberOf=cn=robots,dc=x))".into());
        assert_eq!(
            s.robot_template().unwrap(),
            "(&(uid=%s)(memberOf=cn=robots,dc=x))"
        );
    }
}
