//! ldap_table(5) as written: `key = value` pairs from a Postfix file (or inline in
//! `relayguard.toml`), where they were written, which keys relayguard reads and refuses,
//! and the reader that turns each key into a value or an error naming its line.

use super::table::Server;
use crate::tomlfile::FileError;
use std::path::{Path, PathBuf};

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
    /// An error at `line` naming `key` (with the origin's prefix).
    pub(super) fn error(&self, line: usize, key: &str, reason: String) -> FileError {
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

/// ldap_table keys that Postfix knows and relayguard deliberately does not implement.
pub(super) const UNSUPPORTED: &[(&str, &str)] = &[
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

/// Every key [`super::table::Settings::from_pairs`] reads.
pub(super) const KNOWN: &[&str] = &[
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

/// A list value: items separated by commas or white space.
pub(super) fn list(value: &str) -> Vec<String> {
    value
        .split([',', ' ', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `ldap://host[:port]`, `ldaps://host[:port]`, or `host[:port]`.
pub(super) fn parse_server(text: &str, default_port: u16) -> Result<Server, String> {
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

/// The keys of one ldap_table, read one by one with the error that names their line.
pub(super) struct Keys<'a> {
    origin: &'a Origin,
    pairs: &'a [Pair],
}

impl<'a> Keys<'a> {
    /// The keys, refused when one is unsupported or unknown, or when `debuglevel` or
    /// `version` asks for what relayguard does not do.
    pub(super) fn new(origin: &'a Origin, pairs: &'a [Pair]) -> Result<Self, FileError> {
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
        let keys = Keys { origin, pairs };
        if let Some(p) = keys.get("debuglevel")
            && p.value != "0"
        {
            return Err(keys.err(
                p,
                "only 0 is supported; relayguard logs lookups through its own log (RUST_LOG=relayguard::ldap=debug)".into(),
            ));
        }
        if let Some(p) = keys.get("version")
            && p.value != "3"
        {
            return Err(keys.err(
                p,
                format!(
                    "`{}`: relayguard speaks LDAPv3 only; set version = 3 (Postfix and slapd both accept it)",
                    p.value
                ),
            ));
        }
        Ok(keys)
    }

    /// The origin's file.
    pub(super) fn path(&self) -> &Path {
        &self.origin.path
    }

    /// A key's setting, when written.
    pub(super) fn get(&self, key: &str) -> Option<&'a Pair> {
        self.pairs.iter().find(|p| p.key == key)
    }

    /// An error about a setting.
    pub(super) fn err(&self, p: &Pair, reason: String) -> FileError {
        self.origin.error(p.line, &p.key, reason)
    }

    /// An error about a key not written (at the first line, or 1).
    pub(super) fn missing(&self, key: &str, reason: String) -> FileError {
        self.origin
            .error(self.pairs.first().map_or(1, |p| p.line), key, reason)
    }

    /// A yes/no setting.
    pub(super) fn boolean(&self, key: &str, default: bool) -> Result<bool, FileError> {
        match self.get(key) {
            None => Ok(default),
            Some(p) => match p.value.to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" | "1" => Ok(true),
                "no" | "false" | "off" | "0" => Ok(false),
                _ => Err(self.err(p, format!("`{}` is not yes or no", p.value))),
            },
        }
    }

    /// A number setting up to `max`.
    pub(super) fn number(&self, key: &str, default: u64, max: u64) -> Result<u64, FileError> {
        match self.get(key) {
            None => Ok(default),
            Some(p) => p
                .value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| self.err(p, format!("`{}` is not a number in 0..={max}", p.value))),
        }
    }

    /// A list of attribute names.
    pub(super) fn attributes(&self, key: &str, default: &[&str]) -> Vec<String> {
        self.get(key)
            .map(|p| list(&p.value))
            .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
    }
}
