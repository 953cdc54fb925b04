//! Configuration: `relayguard.toml` parsed, validated and turned into a [`Policy`].
//!
//! Every error names the file, the line and the key.

use crate::audit::writer::{AuditConfig, Destination, Fsync, OnError};
use crate::dkim::keys::KeyError;
use crate::dkim::schedule::Schedule;
use crate::dkim::signer::{DEFAULT_HEADERS, DEFAULT_OVERSIGNED, KeySet, SigningConfig, WithoutKey};
use crate::limits::rate::Window;
use crate::limits::store::{OnFailure, RedisConfig};
use crate::limits::{ClassLimits, ClassRule, LimitsPolicy, LockRules};
use crate::policy::Policy;
use crate::policy::domains::{ProtectedDomains, normalise_domain};
use crate::policy::hosts::{RequireName, ServerSenders};
use crate::policy::senders::{LoginRules, Owners, SenderMap, SenderMapError};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A configuration error with its place.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{}:{line}: key `{key}`: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The dotted key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The sender-login map is broken.
    #[error(transparent)]
    SenderMap(#[from] SenderMapError),
    /// One or more DKIM keys are unusable (each is listed).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Keys(Vec<KeyError>),
    /// The configuration parses but fails its checks (each problem names its file).
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
}

/// What [`Config::check`] finds beyond parsing. Errors make `check-config` fail and a reload
/// keep the previous configuration; warnings are printed or logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Problems that refuse the configuration.
    pub errors: Vec<String>,
    /// Advice.
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    milter: RawMilter,
    #[serde(default)]
    domains: RawDomains,
    #[serde(default)]
    senders: RawSenders,
    #[serde(default)]
    clients: RawClients,
    dkim: Option<RawDkim>,
    audit: Option<RawAudit>,
    metrics: Option<RawMetrics>,
    limits: Option<RawLimits>,
}

/// A numeric setting as written, with its place for errors.
type Number = Option<Spanned<u64>>;

/// The documented range of every numeric setting (README, relayguard.toml(5)); values
/// outside are errors, so no setting can overflow arithmetic or a runtime structure.
mod range {
    use std::ops::RangeInclusive;
    pub const MAX_CONNECTIONS: RangeInclusive<u64> = 1..=65_536;
    pub const SHUTDOWN_TIMEOUT_SECS: RangeInclusive<u64> = 0..=3_600;
    pub const IDLE_TIMEOUT_SECS: RangeInclusive<u64> = 1..=7_200;
    pub const EXPIRY_DAYS: RangeInclusive<u64> = 0..=3_650;
    pub const MIN_PUBLISH_LEAD_HOURS: RangeInclusive<u64> = 0..=8_760;
    pub const REDIS_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
    pub const LOCK_COUNT: RangeInclusive<u64> = 1..=1_000_000;
    pub const OWNERSHIP_WINDOW_MINUTES: RangeInclusive<u64> = 1..=10_080;
    pub const CONNECTIONS_PER_SECOND: RangeInclusive<u64> = 1..=1_000;
    pub const MESSAGES_PER_CONNECTION: RangeInclusive<u64> = 1..=1_000_000;
    pub const MESSAGES_PER_HOUR: RangeInclusive<u64> = 1..=3_600_000;
    pub const RECIPIENTS_PER_MESSAGE: RangeInclusive<u64> = 1..=100_000;
    pub const AUTHENTICATIONS_PER_WINDOW: RangeInclusive<u64> = 1..=1_000_000;
    pub const OWN_NAME_PARENTS: RangeInclusive<u64> = 0..=5;
}

/// A number within its range, or an error naming file, line, key and the range.
fn number(
    path: &Path,
    text: &str,
    value: &Number,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ConfigError> {
    match value {
        Some(v) if !range.contains(v.get_ref()) => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of(text, v.span().start),
            key: key.to_string(),
            reason: format!(
                "{} is out of range: {}..={}",
                v.get_ref(),
                range.start(),
                range.end()
            ),
        }),
        Some(v) => Ok(Some(*v.get_ref())),
        None => Ok(None),
    }
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawClassLimits {
    connections_per_second: Number,
    messages_per_connection: Number,
    messages_per_hour: Number,
    recipients_per_message: Number,
    authentications_per_window: Number,
}

impl RawClassLimits {
    /// The limits, each checked against its range; `table` names the section in errors.
    fn limits(&self, path: &Path, text: &str, table: &str) -> Result<ClassLimits, ConfigError> {
        let n = |value: &Number, key: &str, range| {
            number(path, text, value, &format!("{table}.{key}"), range)
        };
        Ok(ClassLimits {
            connections_per_second: n(
                &self.connections_per_second,
                "connections_per_second",
                range::CONNECTIONS_PER_SECOND,
            )?,
            messages_per_connection: n(
                &self.messages_per_connection,
                "messages_per_connection",
                range::MESSAGES_PER_CONNECTION,
            )?,
            messages_per_hour: n(
                &self.messages_per_hour,
                "messages_per_hour",
                range::MESSAGES_PER_HOUR,
            )?,
            recipients_per_message: n(
                &self.recipients_per_message,
                "recipients_per_message",
                range::RECIPIENTS_PER_MESSAGE,
            )?,
            authentications_per_window: n(
                &self.authentications_per_window,
                "authentications_per_window",
                range::AUTHENTICATIONS_PER_WINDOW,
            )?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClassRule {
    name: String,
    #[serde(default)]
    daemon_names: Vec<String>,
    #[serde(default)]
    logins: Vec<String>,
    connections_per_second: Number,
    messages_per_connection: Number,
    messages_per_hour: Number,
    recipients_per_message: Number,
    authentications_per_window: Number,
}

impl RawClassRule {
    fn limits(&self, path: &Path, text: &str) -> Result<ClassLimits, ConfigError> {
        RawClassLimits {
            connections_per_second: self.connections_per_second.clone(),
            messages_per_connection: self.messages_per_connection.clone(),
            messages_per_hour: self.messages_per_hour.clone(),
            recipients_per_message: self.recipients_per_message.clone(),
            authentications_per_window: self.authentications_per_window.clone(),
        }
        .limits(path, text, "limits.class")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    prefix: Option<String>,
    timeout_ms: Number,
    on_failure: Option<Spanned<String>>,
    sentinels: Option<Vec<Spanned<String>>>,
    master_name: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    ownership_refusals: Number,
    ownership_window_minutes: Number,
    limit_hits_per_day: Number,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    store: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    auth_window: Option<Spanned<String>>,
    contact: Option<String>,
    lock_file: Option<String>,
    redis: Option<RawRedis>,
    internal: Option<RawClassLimits>,
    external: Option<RawClassLimits>,
    #[serde(default)]
    class: Vec<RawClassRule>,
    #[serde(default)]
    login: std::collections::BTreeMap<String, RawClassLimits>,
    lock: Option<RawLock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    file: Option<String>,
    fsync: Option<Spanned<String>>,
    on_error: Option<Spanned<String>>,
    full_recipients: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDkim {
    selectors: Option<String>,
    keys_dir: Option<String>,
    headers: Option<Vec<String>>,
    oversign: Option<Vec<String>>,
    expiry_days: Number,
    without_key: Option<Spanned<String>>,
    allow_unsafe_key_permissions: Option<bool>,
    min_publish_lead_hours: Number,
    signing_domains: Option<std::collections::BTreeMap<String, Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMilter {
    socket: Option<Spanned<String>>,
    socket_mode: Option<Spanned<String>>,
    socket_owner: Option<String>,
    socket_group: Option<String>,
    max_connections: Number,
    shutdown_timeout_secs: Number,
    idle_timeout_secs: Number,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomains {
    protected: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSenders {
    login_map: Option<Spanned<String>>,
    own_local_part: Option<bool>,
    robots: Option<Vec<String>>,
    realms: Option<Vec<Spanned<String>>>,
    allow_foreign: Option<bool>,
    recipient_delimiter: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClients {
    internal_networks: Option<Vec<Spanned<String>>>,
    require_name: Option<Spanned<String>>,
    own_name_parents: Number,
    status_senders: Option<Vec<Spanned<String>>>,
}

/// Where the milter listens, in OpenDKIM's spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// `unix:/path` (or `local:/path`).
    Unix(PathBuf),
    /// `inet:PORT@HOST` or `inet6:PORT@HOST`.
    Inet(SocketAddr),
}

impl SocketSpec {
    /// Parses `unix:/path`, `local:/path`, `inet:PORT@HOST`, `inet:PORT` (all interfaces), `inet6:PORT@HOST`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        if let Some(path) = spec
            .strip_prefix("unix:")
            .or_else(|| spec.strip_prefix("local:"))
        {
            if !path.starts_with('/') {
                return Err(format!("unix socket path `{path}` must be absolute"));
            }
            return Ok(SocketSpec::Unix(PathBuf::from(path)));
        }
        let (v6, rest) = if let Some(rest) = spec.strip_prefix("inet6:") {
            (true, rest)
        } else if let Some(rest) = spec.strip_prefix("inet:") {
            (false, rest)
        } else {
            return Err(format!(
                "`{spec}` is not unix:/path, inet:PORT@HOST or inet6:PORT@HOST"
            ));
        };
        let (port, host) = rest
            .split_once('@')
            .unwrap_or((rest, if v6 { "::" } else { "0.0.0.0" }));
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = match host {
            "localhost" if v6 => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            _ => host
                .parse()
                .map_err(|_| format!("`{host}` is not an IP address"))?,
        };
        if v6 != ip.is_ipv6() {
            return Err(format!(
                "`{host}` does not match the {} family",
                if v6 { "inet6" } else { "inet" }
            ));
        }
        Ok(SocketSpec::Inet(SocketAddr::new(ip, port)))
    }
}

/// Settings of the listening socket; they apply at start only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterConfig {
    /// Where to listen.
    pub socket: SocketSpec,
    /// Permission bits of a unix socket.
    pub socket_mode: u32,
    /// Owner (user name) of a unix socket.
    pub socket_owner: Option<String>,
    /// Group (name) of a unix socket.
    pub socket_group: Option<String>,
    /// Maximum concurrent MTA connections.
    pub max_connections: usize,
    /// How long a shutdown waits for messages in flight.
    pub shutdown_timeout: Duration,
    /// How long a connection may wait for the MTA's next command before it is closed.
    pub idle_timeout: Duration,
}

/// DKIM file locations and checks, besides the loaded [`KeySet`].
#[derive(Debug, Clone)]
pub struct DkimFiles {
    /// selectors.toml.
    pub selectors: PathBuf,
    /// The keys directory.
    pub keys_dir: PathBuf,
    /// `check-config` warns when a selector activates sooner than this after publish.
    pub min_publish_lead: i64,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Listening socket settings.
    pub milter: MilterConfig,
    /// The sender-login map file, if any.
    pub login_map: Option<PathBuf>,
    /// The sender policy.
    pub policy: Policy,
    /// DKIM files, when signing is configured.
    pub dkim_files: Option<DkimFiles>,
    /// The loaded DKIM keys, when signing is configured.
    pub keys: Option<KeySet>,
    /// The audit log settings, when auditing is configured.
    pub audit: Option<AuditConfig>,
    /// Where the metrics endpoint listens, when configured.
    pub metrics_listen: Option<SocketAddr>,
    /// The sending limits, when configured.
    pub limits: Option<LimitsPolicy>,
    /// Where counters and locks live (applies at start only).
    pub limit_store: Option<LimitStore>,
}

/// Where limit counters and locks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStore {
    /// Redis, for a cluster; `None`: in memory, locks in `lock_file`.
    pub redis: Option<RedisConfig>,
    /// The lock file (memory store).
    pub lock_file: PathBuf,
}

fn logins_rules_normalise(policy: &Policy, login: &str) -> String {
    policy.logins.normalise(login)
}

/// Maps an optional string setting to one of its allowed values (the first is the
/// default), or an error naming the choices.
fn choose<T: Copy>(
    value: Option<&Spanned<String>>,
    options: &[(&str, T)],
    invalid: impl Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<T, ConfigError> {
    let Some(value) = value else {
        return Ok(options[0].1);
    };
    options
        .iter()
        .find(|(name, _)| *name == value.get_ref())
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            invalid(
                value.span(),
                format!("`{}` is not one of {}", value.get_ref(), names.join(", ")),
            )
        })
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Deserialises TOML text; a syntax error, unknown key or wrong type names file and line.
pub(crate) fn from_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        let message = match e.span() {
            Some(span) if e.message().trim() == "duplicate key" => duplicate(text, span),
            _ => e.message().trim().to_string(),
        };
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            message,
        }
    })
}

/// Names a duplicate key or table the TOML parser found at `span`, with its table and the
/// line where it first appeared.
fn duplicate(text: &str, span: std::ops::Range<usize>) -> String {
    let name = text
        .get(span.clone())
        .unwrap_or("")
        .trim_matches(['"', '\'']);
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let is_table = text[line_start..span.start].trim_start().starts_with('[');
    fn header(line: &str) -> Option<&str> {
        let l = line.trim();
        (l.starts_with('[') && !l.starts_with("[[")).then(|| l.trim_matches(['[', ']']).trim())
    }
    let lines: Vec<&str> = text[..line_start].lines().collect();
    if is_table {
        let first = lines.iter().position(|l| header(l) == Some(name));
        return match first {
            Some(i) => format!("duplicate table `[{name}]` (first at line {})", i + 1),
            None => format!("duplicate table `[{name}]`"),
        };
    }
    // The table the duplicate sits in, and the first line of the same key in that table.
    let table_start = lines.iter().rposition(|l| header(l).is_some());
    let table = table_start.and_then(|i| header(lines[i]));
    let from = table_start.map_or(0, |i| i + 1);
    let first = lines[from..].iter().position(|l| {
        l.trim_start()
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
    });
    let place = match table {
        Some(t) => format!(" in `[{t}]`"),
        None => String::new(),
    };
    match first {
        Some(i) => format!(
            "duplicate key `{name}`{place} (first at line {})",
            from + i + 1
        ),
        None => format!("duplicate key `{name}`{place}"),
    }
}

/// Turns a byte offset into a 1-based line number.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

impl Config {
    /// Reads and validates the configuration file and the files it names (keys included).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_at(path, unix_now())
    }

    /// As [`Config::load`], with the time that decides which keys are retired.
    pub fn load_at(path: &Path, now: i64) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_at(path, &text, now)
    }

    /// Validates configuration text; `path` locates errors and relative file names.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_at(path, text, unix_now())
    }

    /// As [`Config::parse`], at a given time.
    pub fn parse_at(path: &Path, text: &str, now: i64) -> Result<Self, ConfigError> {
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
        let raw: RawConfig = from_toml(path, text)?;
        let invalid =
            |span: std::ops::Range<usize>, key: &str, reason: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of(text, span.start),
                key: key.to_string(),
                reason,
            };
        let base = path.parent().unwrap_or(Path::new("."));

        let socket = match &raw.milter.socket {
            Some(s) => {
                SocketSpec::parse(s.get_ref()).map_err(|r| invalid(s.span(), "milter.socket", r))?
            }
            None => SocketSpec::Inet(SocketAddr::from(([127, 0, 0, 1], 8891))),
        };
        let socket_mode = match &raw.milter.socket_mode {
            Some(m) => u32::from_str_radix(m.get_ref(), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    invalid(
                        m.span(),
                        "milter.socket_mode",
                        format!("`{}` is not an octal mode such as \"0660\"", m.get_ref()),
                    )
                })?,
            None => 0o660,
        };
        let n = |value: &Number, key: &str, range| number(path, text, value, key, range);
        let milter = MilterConfig {
            socket,
            socket_mode,
            socket_owner: raw.milter.socket_owner,
            socket_group: raw.milter.socket_group,
            max_connections: n(
                &raw.milter.max_connections,
                "milter.max_connections",
                range::MAX_CONNECTIONS,
            )?
            .unwrap_or(256) as usize,
            shutdown_timeout: Duration::from_secs(
                n(
                    &raw.milter.shutdown_timeout_secs,
                    "milter.shutdown_timeout_secs",
                    range::SHUTDOWN_TIMEOUT_SECS,
                )?
                .unwrap_or(30),
            ),
            idle_timeout: Duration::from_secs(
                n(
                    &raw.milter.idle_timeout_secs,
                    "milter.idle_timeout_secs",
                    range::IDLE_TIMEOUT_SECS,
                )?
                .unwrap_or(600),
            ),
        };

        let domains = |list: &[Spanned<String>], key: &str| -> Result<Vec<String>, ConfigError> {
            list.iter()
                .map(|d| {
                    normalise_domain(d.get_ref()).map_err(|e| invalid(d.span(), key, e.to_string()))
                })
                .collect()
        };
        let protected = match &raw.domains.protected {
            Some(list) if list.get_ref().is_empty() => {
                return Err(invalid(
                    list.span(),
                    "domains.protected",
                    "at least one protected domain is needed".into(),
                ));
            }
            Some(list) => domains(list.get_ref(), "domains.protected")?,
            None => vec!["tugraz.at".into(), "tu-graz.ac.at".into()],
        };
        let realms = match &raw.senders.realms {
            Some(list) => domains(list, "senders.realms")?,
            None => protected.clone(),
        };
        let logins = LoginRules::new(realms);
        let delimiter = match &raw.senders.recipient_delimiter {
            Some(d) => {
                let mut chars = d.get_ref().chars();
                match (chars.next(), chars.next()) {
                    (None, _) => None,
                    (Some(c), None) if !c.is_alphanumeric() && c != '@' && !c.is_whitespace() => {
                        Some(c)
                    }
                    _ => {
                        return Err(invalid(
                            d.span(),
                            "senders.recipient_delimiter",
                            "must be one punctuation character or empty".into(),
                        ));
                    }
                }
            }
            None => Some('+'),
        };
        let internal_networks = raw
            .clients
            .internal_networks
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|n| {
                let s = n.get_ref();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| {
                        invalid(
                            n.span(),
                            "clients.internal_networks",
                            format!("`{s}` is not a CIDR network"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let login_map = raw
            .senders
            .login_map
            .as_ref()
            .map(|p| base.join(p.get_ref()));
        let map = match (&login_map, &raw.senders.login_map) {
            (Some(file), Some(key)) => {
                let map_text = std::fs::read_to_string(file).map_err(|e| {
                    invalid(
                        key.span(),
                        "senders.login_map",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                SenderMap::parse(file, &map_text, &logins)?
            }
            _ => SenderMap::default(),
        };
        let owners = Owners {
            map,
            own_local_part: raw.senders.own_local_part.unwrap_or(true),
            robots: raw
                .senders
                .robots
                .unwrap_or_default()
                .iter()
                .map(|r| logins.normalise(r))
                .collect(),
            delimiter,
        };
        let mut servers = ServerSenders {
            require_name: choose(
                raw.clients.require_name.as_ref(),
                &[
                    ("verified", RequireName::Verified),
                    ("reverse", RequireName::Reverse),
                    ("none", RequireName::None),
                ],
                |sp, r| invalid(sp, "clients.require_name", r),
            )?,
            parents: n(
                &raw.clients.own_name_parents,
                "clients.own_name_parents",
                range::OWN_NAME_PARENTS,
            )?
            .unwrap_or(0) as u8,
            ..Default::default()
        };
        for entry in raw.clients.status_senders.iter().flatten() {
            let bad = |e: String| invalid(entry.span(), "clients.status_senders", e);
            match entry.get_ref().strip_prefix('@') {
                Some(domain) => servers.status_domains.push(
                    normalise_domain(domain)
                        .map_err(|e| bad(format!("`{}`: {e}", entry.get_ref())))?,
                ),
                None => servers.status_addresses.push(
                    crate::policy::address::Address::parse_addr_spec(entry.get_ref())
                        .ok()
                        .filter(|a| a.domain().is_some())
                        .ok_or_else(|| {
                            bad(format!(
                                "`{}` is neither `user@domain` nor `@domain`",
                                entry.get_ref()
                            ))
                        })?
                        .canonical(),
                ),
            }
        }
        let policy = Policy {
            servers,
            protected: ProtectedDomains::new(protected),
            internal_networks,
            owners,
            logins,
            allow_foreign_senders: raw.senders.allow_foreign.unwrap_or(false),
        };
        let (dkim_files, keys) = match &raw.dkim {
            None => (None, None),
            Some(d) => {
                let (files, signing) = Self::dkim_settings(d, base, text, path)?;
                let schedule_text =
                    std::fs::read_to_string(&files.selectors).map_err(|source| {
                        ConfigError::Read {
                            path: files.selectors.clone(),
                            source,
                        }
                    })?;
                let schedule = Schedule::parse(&files.selectors, &schedule_text, &files.keys_dir)?;
                let keys = KeySet::load(schedule, signing, now).map_err(ConfigError::Keys)?;
                (Some(files), Some(keys))
            }
        };
        let audit = match &raw.audit {
            None => None,
            Some(a) => {
                let fsync = choose(
                    a.fsync.as_ref(),
                    &[
                        ("none", Fsync::Never),
                        ("always", Fsync::Always),
                        ("periodic", Fsync::Periodic),
                    ],
                    |sp, r| invalid(sp, "audit.fsync", r),
                )?;
                let on_error = choose(
                    a.on_error.as_ref(),
                    &[
                        ("tempfail", OnError::Tempfail),
                        ("continue", OnError::Continue),
                    ],
                    |sp, r| invalid(sp, "audit.on_error", r),
                )?;
                let destination = match a.file.as_deref() {
                    None | Some("-") => Destination::Stdout,
                    Some(f) => Destination::File(base.join(f)),
                };
                Some(AuditConfig {
                    destination,
                    fsync,
                    on_error,
                    full_recipients: a.full_recipients.unwrap_or(false),
                })
            }
        };
        let metrics_listen = match &raw.metrics {
            None => None,
            Some(m) => Some(match &m.listen {
                None => SocketAddr::from(([127, 0, 0, 1], 9891)),
                Some(l) => l.get_ref().parse().map_err(|_| {
                    invalid(
                        l.span(),
                        "metrics.listen",
                        format!("`{}` is not an address such as 127.0.0.1:9891", l.get_ref()),
                    )
                })?,
            }),
        };
        let (limits, limit_store) = match &raw.limits {
            None => (None, None),
            Some(l) => {
                let tz = match &l.timezone {
                    None => jiff::tz::TimeZone::system(),
                    Some(t) => jiff::tz::TimeZone::get(t.get_ref())
                        .map_err(|e| invalid(t.span(), "limits.timezone", e.to_string()))?,
                };
                let auth_window = match &l.auth_window {
                    None => Window::parse("18:00-06:00", tz).expect("valid default"),
                    Some(w) => Window::parse(w.get_ref(), tz)
                        .map_err(|e| invalid(w.span(), "limits.auth_window", e))?,
                };
                let lock = match &l.lock {
                    None => LockRules::default(),
                    Some(k) => LockRules {
                        ownership_refusals: n(
                            &k.ownership_refusals,
                            "limits.lock.ownership_refusals",
                            range::LOCK_COUNT,
                        )?,
                        ownership_window_ms: n(
                            &k.ownership_window_minutes,
                            "limits.lock.ownership_window_minutes",
                            range::OWNERSHIP_WINDOW_MINUTES,
                        )?
                        .unwrap_or(10) as i64
                            * 60_000,
                        limit_hits_per_day: n(
                            &k.limit_hits_per_day,
                            "limits.lock.limit_hits_per_day",
                            range::LOCK_COUNT,
                        )?,
                    },
                };
                let class_limits = |raw: &Option<RawClassLimits>, table: &str| {
                    raw.as_ref()
                        .map(|r| r.limits(path, text, table))
                        .transpose()
                        .map(Option::unwrap_or_default)
                };
                let mut classes = Vec::new();
                for c in &l.class {
                    classes.push(ClassRule {
                        name: c.name.clone(),
                        daemon_names: c.daemon_names.clone(),
                        logins: c
                            .logins
                            .iter()
                            .map(|x| logins_rules_normalise(&policy, x))
                            .collect(),
                        limits: c.limits(path, text)?,
                    });
                }
                let mut overrides = std::collections::BTreeMap::new();
                for (login, raw) in &l.login {
                    overrides.insert(
                        logins_rules_normalise(&policy, login),
                        raw.limits(path, text, &format!("limits.login.{login}"))?,
                    );
                }
                let policy = LimitsPolicy {
                    internal: class_limits(&l.internal, "limits.internal")?,
                    external: class_limits(&l.external, "limits.external")?,
                    classes,
                    overrides,
                    auth_window,
                    lock,
                    contact: l
                        .contact
                        .clone()
                        .unwrap_or_else(|| "your mail administrators".into()),
                };
                let redis = match l.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
                    None | Some(("memory", _)) => None,
                    Some(("redis", _)) => {
                        let r = l.redis.as_ref();
                        let on_failure = choose(
                            r.and_then(|r| r.on_failure.as_ref()),
                            &[
                                ("fail_open", OnFailure::FailOpen),
                                ("fail_closed", OnFailure::FailClosed),
                            ],
                            |sp, r| invalid(sp, "limits.redis.on_failure", r),
                        )?;
                        let sentinels: Vec<String> = r
                            .and_then(|r| r.sentinels.as_ref())
                            .into_iter()
                            .flatten()
                            .map(|s| {
                                use redis::IntoConnectionInfo;
                                let url = s.get_ref();
                                let url = if url.contains("://") {
                                    url.clone()
                                } else {
                                    format!("redis://{url}")
                                };
                                match url.as_str().into_connection_info() {
                                    Ok(_) => Ok(url),
                                    Err(e) => Err(invalid(
                                        s.span(),
                                        "limits.redis.sentinels",
                                        format!("`{}` is not a sentinel address: {e}", s.get_ref()),
                                    )),
                                }
                            })
                            .collect::<Result<_, _>>()?;
                        let master_name = match r.and_then(|r| r.master_name.as_ref()) {
                            Some(name) if name.get_ref().trim().is_empty() => {
                                return Err(invalid(
                                    name.span(),
                                    "limits.redis.master_name",
                                    "must not be empty".into(),
                                ));
                            }
                            Some(name) => name.get_ref().clone(),
                            None if !sentinels.is_empty() => {
                                return Err(invalid(
                                    r.and_then(|r| r.sentinels.as_ref())
                                        .and_then(|s| s.first())
                                        .map(|s| s.span())
                                        .unwrap_or(0..0),
                                    "limits.redis.master_name",
                                    "is needed with sentinels: the name the sentinels monitor"
                                        .into(),
                                ));
                            }
                            None => String::new(),
                        };
                        Some(RedisConfig {
                            url: r
                                .and_then(|r| r.url.clone())
                                .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
                            prefix: r
                                .and_then(|r| r.prefix.clone())
                                .unwrap_or_else(|| "relayguard:".into()),
                            timeout: Duration::from_millis(
                                match r {
                                    Some(r) => n(
                                        &r.timeout_ms,
                                        "limits.redis.timeout_ms",
                                        range::REDIS_TIMEOUT_MS,
                                    )?,
                                    None => None,
                                }
                                .unwrap_or(50),
                            ),
                            on_failure,
                            sentinels,
                            master_name,
                        })
                    }
                    Some((other, span)) => {
                        return Err(invalid(
                            span,
                            "limits.store",
                            format!("`{other}` is not \"memory\" or \"redis\""),
                        ));
                    }
                };
                let store = LimitStore {
                    redis,
                    lock_file: base.join(l.lock_file.as_deref().unwrap_or("locks.json")),
                };
                (Some(policy), Some(store))
            }
        };
        Ok(Config {
            path: path.to_path_buf(),
            milter,
            login_map,
            policy,
            dkim_files,
            keys,
            audit,
            metrics_listen,
            limits,
            limit_store,
        })
    }

    fn dkim_settings(
        d: &RawDkim,
        base: &Path,
        text: &str,
        path: &Path,
    ) -> Result<(DkimFiles, SigningConfig), ConfigError> {
        let invalid =
            |span: std::ops::Range<usize>, key: &str, reason: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of(text, span.start),
                key: key.to_string(),
                reason,
            };
        let lower = |v: &Vec<String>| {
            v.iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let headers = d
            .headers
            .as_ref()
            .map(lower)
            .unwrap_or_else(|| DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect());
        let oversign = d
            .oversign
            .as_ref()
            .map(lower)
            .unwrap_or_else(|| DEFAULT_OVERSIGNED.iter().map(|h| h.to_string()).collect());
        for name in headers.iter().chain(&oversign) {
            // mail-auth folds an h= entry of 74+ characters into a signature that fails to verify.
            if name.is_empty()
                || name.len() >= 70
                || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: text
                        .find(name.as_str())
                        .map(|o| line_of(text, o))
                        .unwrap_or(1),
                    key: "dkim.headers".into(),
                    reason: format!(
                        "`{name}` is not a header field name of 1 to 69 printable characters"
                    ),
                });
            }
        }
        let without_key = choose(
            d.without_key.as_ref(),
            &[
                ("tempfail", WithoutKey::Tempfail),
                ("accept", WithoutKey::AcceptUnsigned),
            ],
            |sp, r| invalid(sp, "dkim.without_key", r),
        )?;
        let mut signing_domains = Vec::new();
        for (from, d) in d.signing_domains.iter().flatten() {
            let from = normalise_domain(from)
                .map_err(|e| invalid(d.span(), "dkim.signing_domains", e.to_string()))?;
            let dn = normalise_domain(d.get_ref())
                .map_err(|e| invalid(d.span(), "dkim.signing_domains", e.to_string()))?;
            if !(from == dn || from.ends_with(&format!(".{dn}"))) {
                return Err(invalid(
                    d.span(),
                    "dkim.signing_domains",
                    format!(
                        "d={dn} does not align with {from}: it must be {from} or a parent of it"
                    ),
                ));
            }
            signing_domains.push((from, dn));
        }
        let n = |value: &Number, key: &str, range| number(path, text, value, key, range);
        let files = DkimFiles {
            selectors: base.join(d.selectors.as_deref().unwrap_or("selectors.toml")),
            keys_dir: base.join(d.keys_dir.as_deref().unwrap_or("keys")),
            min_publish_lead: n(
                &d.min_publish_lead_hours,
                "dkim.min_publish_lead_hours",
                range::MIN_PUBLISH_LEAD_HOURS,
            )?
            .unwrap_or(48) as i64
                * 3600,
        };
        let signing = SigningConfig {
            headers,
            oversign,
            expiry: n(&d.expiry_days, "dkim.expiry_days", range::EXPIRY_DAYS)?
                .filter(|&x| x > 0)
                .map(|x| x * 86_400),
            signing_domains,
            without_key,
            require_safe_keys: !d.allow_unsafe_key_permissions.unwrap_or(false),
        };
        Ok((files, signing))
    }

    /// The checks a loaded configuration must pass, beyond parsing; `check-config` and every
    /// reload run exactly these: socket owner and group exist, the Redis URL is usable, every
    /// signing domain has an active key now and later (a schedule gap is an error), and a
    /// selector's DNS lead time (a warning).
    pub fn check(&self, now: i64) -> Findings {
        let mut found = Findings::default();
        let here = self.path.display();
        if let Some(owner) = &self.milter.socket_owner
            && crate::listen::user_id(owner).is_none()
        {
            found.errors.push(format!(
                "{here}: key `milter.socket_owner`: user `{owner}` does not exist"
            ));
        }
        if let Some(group) = &self.milter.socket_group
            && crate::listen::group_id(group).is_none()
        {
            found.errors.push(format!(
                "{here}: key `milter.socket_group`: group `{group}` does not exist"
            ));
        }
        if let Some(LimitStore {
            redis: Some(redis), ..
        }) = &self.limit_store
            && let Err(e) = redis::Client::open(redis.url.as_str())
        {
            found
                .errors
                .push(format!("{here}: key `limits.redis.url`: {e}"));
        }
        if let (Some(keys), Some(files)) = (&self.keys, &self.dkim_files) {
            let required =
                crate::dkim::tooling::required_domains(keys, self.policy.protected.apexes());
            let (errors, warnings) =
                crate::dkim::tooling::check_schedule(keys, &required, files.min_publish_lead, now);
            let at = files.selectors.display();
            found
                .errors
                .extend(errors.into_iter().map(|e| format!("{at}: {e}")));
            found
                .warnings
                .extend(warnings.into_iter().map(|w| format!("{at}: {w}")));
        }
        found
    }

    /// Files whose change triggers a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::iter::once(self.path.clone())
            .chain(self.login_map.clone())
            .collect();
        if let Some(d) = &self.dkim_files {
            files.push(d.selectors.clone());
        }
        files
    }

    /// Directories where any change triggers a reload (the keys directory).
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        self.dkim_files.iter().map(|d| d.keys_dir.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/relayguard/relayguard.toml"), text)
    }

    #[test]
    fn empty_file_is_an_error_and_a_near_empty_one_gives_defaults() {
        for empty in ["", "\n\n", "# only a comment\n"] {
            let e = parse(empty).unwrap_err().to_string();
            assert_eq!(
                e,
                "/etc/relayguard/relayguard.toml:1: the file has no settings (empty or truncated); refusing to run on built-in defaults"
            );
        }
        let c = parse("[senders]\n").unwrap();
        assert_eq!(
            c.milter.socket,
            SocketSpec::Inet("127.0.0.1:8891".parse().unwrap())
        );
        assert_eq!(c.policy.protected.apexes(), ["tugraz.at", "tu-graz.ac.at"]);
        assert!(!c.policy.allow_foreign_senders);
    }

    #[test]
    fn socket_spellings() {
        assert_eq!(
            SocketSpec::parse("unix:/run/rg.sock"),
            Ok(SocketSpec::Unix("/run/rg.sock".into()))
        );
        assert_eq!(
            SocketSpec::parse("local:/run/rg.sock"),
            Ok(SocketSpec::Unix("/run/rg.sock".into()))
        );
        assert_eq!(
            SocketSpec::parse("inet:8891@127.0.0.1"),
            Ok(SocketSpec::Inet("127.0.0.1:8891".parse().unwrap()))
        );
        assert_eq!(
            SocketSpec::parse("inet6:8891@[::1]"),
            Ok(SocketSpec::Inet("[::1]:8891".parse().unwrap()))
        );
        assert_eq!(
            SocketSpec::parse("inet:8891"),
            Ok(SocketSpec::Inet("0.0.0.0:8891".parse().unwrap()))
        );
        assert!(SocketSpec::parse("inet:x@1.2.3.4").is_err());
        assert!(SocketSpec::parse("inet6:1@127.0.0.1").is_err());
        assert!(SocketSpec::parse("unix:rel.sock").is_err());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("[clients]\n\ninternal_networks = [\"10.0.0.0/8\",\n  \"129.27.0.0/33\"]\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/relayguard/relayguard.toml:4: key `clients.internal_networks`: `129.27.0.0/33` is not a CIDR network"
        );
        let e = parse("[milter]\nsocket_mode = \"0999\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/relayguard/relayguard.toml:2: key `milter.socket_mode`"),
            "{e}"
        );
        let e = parse("[domains]\nprotected = [\"tugraz.at\", \"bad..at\"]\n").unwrap_err();
        assert!(e.to_string().contains(":2: key `domains.protected`"), "{e}");
    }

    #[test]
    fn duplicate_keys_and_tables_are_named_with_their_table_and_first_line() {
        let e = parse(
            "[milter]\nsocket = \"inet:1@127.0.0.1\"\nmax_connections = 5\n\nmax_connections = 6\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/relayguard/relayguard.toml:5: duplicate key `max_connections` in `[milter]` (first at line 3)"
        );
        let e = parse("[senders]\nown_local_part = true\n[clients]\n[senders]\nrobots = []\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/relayguard/relayguard.toml:4: duplicate table `[senders]` (first at line 1)"
        );
    }

    #[test]
    fn numbers_outside_their_documented_range_are_refused() {
        for (text, expected) in [
            (
                "[milter]\nmax_connections = 18446744073709551615\n",
                ":2: key `milter.max_connections`: 18446744073709551615 is out of range: 1..=65536",
            ),
            (
                "[milter]\nmax_connections = 0\n",
                ":2: key `milter.max_connections`: 0 is out of range: 1..=65536",
            ),
            (
                "[milter]\nidle_timeout_secs = 0\n",
                ":2: key `milter.idle_timeout_secs`: 0 is out of range: 1..=7200",
            ),
            (
                "[limits]\n[limits.lock]\nownership_window_minutes = 18446744073709551615\n",
                ":3: key `limits.lock.ownership_window_minutes`: 18446744073709551615 is out of range: 1..=10080",
            ),
            (
                "[limits]\n[limits.external]\nmessages_per_hour = 0\n",
                ":3: key `limits.external.messages_per_hour`: 0 is out of range: 1..=3600000",
            ),
            (
                "[limits]\n[limits.login.alice]\nrecipients_per_message = 100001\n",
                ":3: key `limits.login.alice.recipients_per_message`: 100001 is out of range: 1..=100000",
            ),
            (
                "[limits]\n[[limits.class]]\nname = \"eas\"\nconnections_per_second = 1001\n",
                ":4: key `limits.class.connections_per_second`: 1001 is out of range: 1..=1000",
            ),
            (
                "[limits]\nstore = \"redis\"\n[limits.redis]\ntimeout_ms = 0\n",
                ":4: key `limits.redis.timeout_ms`: 0 is out of range: 1..=60000",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.ends_with(expected), "{text}: {e}");
        }
        let e = parse("[milter]\nmax_connections = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2: "), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_with_line() {
        let e = parse("[senders]\nown_local_part = true\nallow_forein = true\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("/etc/relayguard/relayguard.toml:3: unknown field `allow_forein`"),
            "{text}"
        );
    }

    #[test]
    fn missing_login_map_names_the_key() {
        let e = parse("[senders]\nlogin_map = \"does-not-exist\"\n").unwrap_err();
        assert!(
            e.to_string().contains(
                ":2: key `senders.login_map`: cannot read /etc/relayguard/does-not-exist"
            ),
            "{e}"
        );
    }
}
