//! The directory's settings: Postfix's ldap_table(5) file format (or the same keys inline in
//! `relayguard.toml`), validated into [`Settings`]. Pure: the caller hands in the text.
//!
//! Every ldap_table key relayguard does not implement is an error naming the file, the
//! line and the key: a Postfix file that means something relayguard would not do is never
//! half-read.

use crate::policy::senders::LoginRules;
use crate::tomlfile::FileError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One `key = value` setting and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The key as written.
    pub key: String,
    /// The value (continuation lines joined with a space).
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// Where settings come from, for error messages: a Postfix file names bare keys, inline
/// settings name `senders.ldap.KEY` in `relayguard.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub path: PathBuf,
    /// Prefix of every key name in errors (`""` or `"senders.ldap."`).
    pub prefix: &'static str,
}

impl Origin {
    fn error(&self, line: usize, key: &str, reason: String) -> FileError {
        FileError::Invalid {
            path: self.path.clone(),
            line,
            key: format!("{}{key}", self.prefix),
            reason,
        }
    }
}

/// Reads a Postfix dictionary configuration file: `key = value` lines, `#` comments and
/// blank lines, lines starting with white space continue the previous value.
pub fn parse_postfix_file(path: &Path, text: &str) -> Result<Vec<Pair>, FileError> {
    let syntax = |line: usize, message: String| FileError::Syntax {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut pairs: Vec<Pair> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            match pairs.last_mut() {
                Some(pair) => {
                    pair.value.push(' ');
                    pair.value.push_str(trimmed);
                    continue;
                }
                None => return Err(syntax(line, "continuation line without a setting".into())),
            }
        }
        let (key, value) = trimmed
            .split_once('=')
            .ok_or_else(|| syntax(line, format!("`{trimmed}` is not `name = value`")))?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(syntax(line, format!("`{key}` is not a parameter name")));
        }
        if let Some(first) = pairs.iter().find(|p| p.key == key) {
            return Err(syntax(
                line,
                format!("duplicate key `{key}` (first at line {})", first.line),
            ));
        }
        pairs.push(Pair {
            key: key.to_string(),
            value: value.trim().to_string(),
            line,
        });
    }
    if pairs.is_empty() {
        return Err(syntax(
            1,
            "the file has no settings (empty or truncated); refusing to query a directory on defaults".into(),
        ));
    }
    Ok(pairs)
}

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

/// ldap_table keys that Postfix knows and relayguard deliberately does not implement.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "result_format",
        "only the default `%s` is supported (the answer must be logins)",
    ),
    (
        "sasl",
        "SASL binds are not supported; use bind = yes with bind_dn and bind_pw",
    ),
    ("sasl_mechs", "SASL binds are not supported"),
    ("sasl_realm", "SASL binds are not supported"),
    ("sasl_authz_id", "SASL binds are not supported"),
    ("sasl_minssf", "SASL binds are not supported"),
    (
        "tls_ca_cert_dir",
        "not supported; name one PEM bundle in tls_ca_cert_file",
    ),
    ("tls_cert", "client certificates are not supported"),
    ("tls_key", "client certificates are not supported"),
    ("tls_random_file", "not needed and not supported"),
    (
        "tls_cipher_suite",
        "not supported; relayguard uses rustls' safe defaults",
    ),
    (
        "chase_referrals",
        "referrals are not followed; name every server in server_host",
    ),
    (
        "cache",
        "obsolete in Postfix; relayguard caches with positive_ttl_secs and negative_ttl_secs",
    ),
    (
        "cache_expiry",
        "obsolete in Postfix; relayguard caches with positive_ttl_secs and negative_ttl_secs",
    ),
    (
        "cache_size",
        "obsolete in Postfix; set [senders.ldap] cache_size in relayguard.toml",
    ),
    ("query", "obsolete spelling; use query_filter"),
];

/// Every key [`Settings::from_pairs`] reads.
const KNOWN: &[&str] = &[
    "server_host",
    "server_port",
    "search_base",
    "scope",
    "query_filter",
    "result_attribute",
    "special_result_attribute",
    "leaf_result_attribute",
    "terminal_result_attribute",
    "bind",
    "bind_dn",
    "bind_pw",
    "version",
    "start_tls",
    "tls_ca_cert_file",
    "tls_require_cert",
    "timeout",
    "domain",
    "size_limit",
    "expansion_limit",
    "recursion_limit",
    "dereference",
    "debuglevel",
];

fn list(value: &str) -> Vec<String> {
    value
        .split([',', ' ', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
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
        for pair in pairs {
            if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == pair.key) {
                return Err(origin.error(pair.line, &pair.key, format!("unsupported: {why}")));
            }
            if !KNOWN.contains(&pair.key.as_str()) {
                return Err(origin.error(
                    pair.line,
                    &pair.key,
                    "not an ldap_table(5) parameter relayguard supports".into(),
                ));
            }
        }
        let get = |key: &str| pairs.iter().find(|p| p.key == key);
        let err = |p: &Pair, reason: String| origin.error(p.line, &p.key, reason);
        let boolean = |key: &str, default: bool| -> Result<bool, FileError> {
            match get(key) {
                None => Ok(default),
                Some(p) => match p.value.to_ascii_lowercase().as_str() {
                    "yes" | "true" | "on" | "1" => Ok(true),
                    "no" | "false" | "off" | "0" => Ok(false),
                    _ => Err(err(p, format!("`{}` is not yes or no", p.value))),
                },
            }
        };
        let number = |key: &str, default: u64, max: u64| -> Result<u64, FileError> {
            match get(key) {
                None => Ok(default),
                Some(p) => p
                    .value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| err(p, format!("`{}` is not a number in 0..={max}", p.value))),
            }
        };
        if let Some(p) = get("debuglevel")
            && p.value != "0"
        {
            return Err(err(
                p,
                "only 0 is supported; relayguard logs lookups through its own log (RUST_LOG=relayguard::ldap=debug)".into(),
            ));
        }
        if let Some(p) = get("version")
            && p.value != "3"
        {
            return Err(err(
                p,
                format!(
                    "`{}`: relayguard speaks LDAPv3 only; set version = 3 (Postfix and slapd both accept it)",
                    p.value
                ),
            ));
        }
        let default_port = number("server_port", 389, 65_535)? as u16;
        let hosts = get("server_host")
            .map(|p| (list(&p.value), Some(p)))
            .unwrap_or_else(|| (vec!["localhost".into()], None));
        let mut servers = Vec::new();
        for host in &hosts.0 {
            let server = parse_server(host, default_port).map_err(|why| match hosts.1 {
                Some(p) => err(p, why),
                None => origin.error(1, "server_host", why),
            })?;
            servers.push(server);
        }
        if servers.is_empty()
            && let Some(p) = hosts.1
        {
            return Err(err(p, "names no server".into()));
        }
        let search_base = match get("search_base") {
            Some(p) => p.value.clone(),
            None => {
                return Err(origin.error(
                    pairs.first().map_or(1, |p| p.line),
                    "search_base",
                    "missing: ldap_table(5) has no default search base".into(),
                ));
            }
        };
        let scope = match get("scope") {
            None => Scope::Sub,
            Some(p) => match p.value.as_str() {
                "sub" => Scope::Sub,
                "one" => Scope::One,
                "base" => Scope::Base,
                other => return Err(err(p, format!("`{other}` is not sub, one or base"))),
            },
        };
        let query_filter = get("query_filter")
            .map(|p| p.value.clone())
            .unwrap_or_else(|| "(mailacceptinggeneralid=%s)".into());
        if let Err(why) = super::query::check_template(&query_filter) {
            let place = get("query_filter").expect("the default is valid");
            return Err(err(place, why));
        }
        let attributes = |key: &str, default: &[&str]| -> Vec<String> {
            get(key)
                .map(|p| list(&p.value))
                .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
        };
        let result_attributes = attributes("result_attribute", &["maildrop"]);
        if result_attributes.is_empty() {
            return Err(err(
                get("result_attribute").expect("the default is not empty"),
                "names no attribute".into(),
            ));
        }
        let bind = if boolean("bind", true)? {
            let dn = get("bind_dn").map(|p| p.value.clone()).unwrap_or_default();
            let pw = get("bind_pw").map(|p| p.value.clone()).unwrap_or_default();
            (!dn.is_empty()).then_some((dn, pw))
        } else {
            None
        };
        if let Some(p) = get("bind")
            && p.value.eq_ignore_ascii_case("sasl")
        {
            return Err(err(p, "SASL binds are not supported".into()));
        }
        let domains = match get("domain") {
            None => Vec::new(),
            Some(p) => {
                let mut domains = Vec::new();
                for d in list(&p.value) {
                    if d.contains(':') || d.starts_with('/') {
                        return Err(err(
                            p,
                            format!(
                                "`{d}`: only a list of domain names is supported, not files or tables"
                            ),
                        ));
                    }
                    domains.push(
                        crate::policy::domains::normalise_domain(&d)
                            .map_err(|e| err(p, format!("`{d}`: {e}")))?,
                    );
                }
                domains
            }
        };
        let dereference = number("dereference", 0, 3)? as u8;
        let timeout = Duration::from_secs(number("timeout", 1, 60)?.max(1));
        let tls_ca_cert_file = get("tls_ca_cert_file").map(|p| {
            let file = PathBuf::from(&p.value);
            if file.is_relative() {
                origin.path.parent().unwrap_or(Path::new(".")).join(file)
            } else {
                file
            }
        });
        Ok(Settings {
            origin: origin.path.clone(),
            servers,
            search_base,
            scope,
            query_filter,
            result_attributes,
            special_result_attributes: attributes("special_result_attribute", &[]),
            leaf_result_attributes: attributes("leaf_result_attribute", &[]),
            terminal_result_attributes: attributes("terminal_result_attribute", &[]),
            bind,
            start_tls: boolean("start_tls", false)?,
            tls_ca_cert_file,
            tls_require_cert: boolean("tls_require_cert", true)?,
            timeout,
            domains,
            size_limit: number("size_limit", 0, i32::MAX as u64)? as i32,
            expansion_limit: number("expansion_limit", 0, 1_000_000)? as usize,
            recursion_limit: number("recursion_limit", 1000, 1000)? as u32,
            dereference,
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

/// `ldap://host[:port]`, `ldaps://host[:port]`, or `host[:port]`.
fn parse_server(text: &str, default_port: u16) -> Result<Server, String> {
    let (scheme, rest) = if let Some(rest) = text.strip_prefix("ldaps://") {
        ("ldaps", rest)
    } else if let Some(rest) = text.strip_prefix("ldap://") {
        ("ldap", rest)
    } else if text.contains("://") {
        return Err(format!(
            "`{text}`: only ldap:// and ldaps:// servers are supported"
        ));
    } else {
        ("ldap", text)
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('?') {
        return Err(format!("`{text}`: a server URL names only host and port"));
    }
    let default_port = if scheme == "ldaps" && default_port == 389 {
        636
    } else {
        default_port
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{text}`: unclosed ["))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("`{text}` is not host[:port]")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{text}` names no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{text}`: `{p}` is not a port"))?,
        None => default_port,
    };
    Ok(Server {
        scheme,
        host: host.to_string(),
        port,
    })
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
