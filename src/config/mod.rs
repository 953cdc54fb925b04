//! Configuration: `relayguard.toml` parsed and validated, and nothing else.
//!
//! Pure: it reads no file (the runtime hands it the text) and names the other files (sender
//! map, selector schedule, keys) without opening them; `runtime::assemble` reads those.
//! Every error names the file, the line and the key. `raw` is the schema, `sections`
//! turns each section into settings.

mod raw;
mod sections;

use crate::audit::writer::AuditConfig;
use crate::dkim::signer::SigningConfig;
use crate::limits::LimitsPolicy;
use crate::limits::store::StoreSettings;
use crate::policy::Policy;
use crate::session::rollout::Rollout;
use crate::tomlfile::{self, FileError, Place};
use raw::RawConfig;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error: the file, the line, the key and what is wrong.
pub type ConfigError = FileError;

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
    /// How long a connection may wait for the MTA's next command (macros do not count)
    /// before it is closed.
    pub idle_timeout: Duration,
    /// How long one message may take, MAIL to end of message, however it trickles.
    pub message_timeout: Duration,
}

/// `[dkim.dns]`: how selectors' DNS records are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Whether records are checked at all (`require_dns`, or a `[dkim.dns]` section): no
    /// lookup leaves the host otherwise.
    pub check: bool,
    /// Resolvers to ask (empty: the system's, from /etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// How often the records of active and next selectors are checked again.
    pub recheck: Duration,
    /// How long one lookup may take before the resolver counts as unreachable.
    pub timeout: Duration,
}

/// `[dkim]`: where the schedule and keys are, and how to sign.
#[derive(Debug, Clone)]
pub struct DkimSettings {
    /// How selectors' DNS records are checked.
    pub dns: DnsSettings,
    /// Where records are published (RFC 2136), when configured.
    pub publish: Option<crate::dkim::rotation::PublishSettings>,
    /// Automatic rotation, when configured.
    pub rotation: Option<crate::dkim::rotation::RotationSettings>,
    /// selectors.toml.
    pub selectors: PathBuf,
    /// The keys directory.
    pub keys_dir: PathBuf,
    /// `check-config` warns when a selector activates sooner than this after publish.
    pub min_publish_lead: i64,
    /// Signing settings.
    pub signing: SigningConfig,
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
        let (policy, senders) = sections::policy(&raw, p, base)?;
        let dkim = raw
            .dkim
            .as_ref()
            .map(|d| sections::dkim(d, p, base))
            .transpose()?;
        let audit = raw
            .audit
            .as_ref()
            .map(|a| sections::audit(a, p, base))
            .transpose()?;
        let metrics_listen = raw
            .metrics
            .as_ref()
            .map(|m| sections::metrics(m, p))
            .transpose()?;
        let (limits, limit_store) = match &raw.limits {
            Some(l) => {
                let (limits, store) = sections::limits(l, p, base, &policy.logins)?;
                (Some(limits), Some(store))
            }
            None => (None, None),
        };
        let rollout = sections::rollout(&raw.rollout, p, &policy.logins)?;
        let abuse = raw
            .abuse
            .as_ref()
            .map(|a| sections::abuse(a, p, raw.limits.is_some()))
            .transpose()?;
        let host_name = match raw.cluster.as_ref().and_then(|c| c.host_name.as_ref()) {
            Some(name) => {
                let text = name.get_ref();
                if text.is_empty()
                    || text.len() > 253
                    || !text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                {
                    return Err(p.invalid(
                        name.span(),
                        "cluster.host_name",
                        format!("`{text}` is not a host name"),
                    ));
                }
                Some(text.clone())
            }
            None => None,
        };
        Ok(Config {
            rollout,
            abuse,
            path: path.to_path_buf(),
            milter: sections::milter(raw.milter, p)?,
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
    fn values_of_the_wrong_type_name_file_line_and_key() {
        for (value, what) in [
            ("-1", "invalid value: integer `-1`, expected a whole number"),
            (
                "1.5",
                "invalid type: floating point `1.5`, expected a whole number",
            ),
            (
                "\"256\"",
                "invalid type: string \"256\", expected a whole number",
            ),
            (
                "true",
                "invalid type: boolean `true`, expected a whole number",
            ),
        ] {
            let text = format!("[milter]\nmax_connections = {value}\n");
            let e = Config::parse(Path::new("/etc/relayguard/relayguard.toml"), &text)
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("/etc/relayguard/relayguard.toml:2: key `milter.max_connections`: {what}")
            );
        }
    }

    #[test]
    fn values_that_parse_but_would_open_the_relay_are_refused() {
        let parse = |text: &str| Config::parse(Path::new("/r.toml"), text).map(|_| ());
        for (text, expected) in [
            (
                "[senders]\nrecipient_delimiter = \"\\u0000\"\n",
                "/r.toml:2: key `senders.recipient_delimiter`: \"\\0\" is not one ASCII punctuation character",
            ),
            (
                "[senders]\nrecipient_delimiter = \"a\"\n",
                "key `senders.recipient_delimiter`",
            ),
            (
                "[abuse]\nnetworks = { above = 0 }\n",
                "/r.toml:2: key `abuse.networks.above`: must be above 0",
            ),
            (
                "[abuse]\nvolume_floor = 0.0\n",
                "/r.toml:2: key `abuse.volume_floor`: must be above 0",
            ),
            (
                "[clients]\ninternal_networks = [\"129.27.0.0/16\", \"0.0.0.0/0\"]\n",
                "/r.toml:2: key `clients.internal_networks`: `0.0.0.0/0` is wider than /8",
            ),
            (
                "[clients]\ninternal_networks = [\"::/0\"]\n",
                "`::/0` is wider than /8 (IPv4) or /16 (IPv6)",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
        parse("[senders]\nrecipient_delimiter = \"-\"\n").unwrap();
        parse("[clients]\ninternal_networks = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n").unwrap();
        parse(
            "[clients]\ninternal_networks = [\"0.0.0.0/0\"]\nallow_wide_internal_networks = true\n",
        )
        .unwrap();
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
    fn masquerade_and_rollout_settings_are_checked_with_their_place() {
        let robot = "[senders]\nrobots = [\"robot-web\"]\n\n[senders.masquerade.\"robot-web\"]\naddress = \"noreply@iaik.tugraz.at\"\nfrom = [\"root@*\", \"<>\"]\n";
        let c = parse(robot).unwrap();
        assert!(c.policy.masquerades.rule("robot-web").is_some());
        assert_eq!(
            c.policy.masquerades.original_header.as_deref(),
            Some("X-Original-From")
        );
        for (text, expected) in [
            (
                robot.replace("robots = [\"robot-web\"]", "robots = []"),
                ":4: key `senders.masquerade.robot-web`: `robot-web` is not in senders.robots: only robot accounts are masqueraded",
            ),
            (
                robot.replace("noreply@iaik.tugraz.at", "noreply@gmail.com"),
                ":5: key `senders.masquerade.robot-web.address`: `noreply@gmail.com` is not an address in the protected domains",
            ),
            (
                robot.replace("\"<>\"]", "\"<>\", \"root\"]"),
                ":6: key `senders.masquerade.robot-web.from`: `root` is not a sender pattern",
            ),
            (
                format!("{robot}display_name = \"IAIK\\r\\nBcc: x\"\n"),
                ":7: key `senders.masquerade.robot-web.display_name`: the display name must be",
            ),
            (
                format!("{robot}[rollout]\nmode = \"watch\"\n"),
                ":8: key `rollout.mode`: `watch` is not one of \"enforce\", \"monitor\"",
            ),
            (
                format!("{robot}[rollout]\nwould_refuse_header = \"X-Bad: header\"\n"),
                ":8: key `rollout.would_refuse_header`: `X-Bad: header` is not a header field name",
            ),
            (
                "[dkim]\nheaders = [\"subject\"]\noversign = [\"to\"]\n".to_string(),
                ":3: key `dkim.oversign`: From must be signed (RFC 6376 5.4): add \"from\" to dkim.oversign",
            ),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}\n{e}");
        }
    }

    #[test]
    fn abuse_settings_are_checked_with_their_place() {
        let c = parse("[limits]\n[abuse]\nact_at = 3\n[abuse.networks]\nabove = 6\n[abuse.actions]\nexternal = \"lock\"\n").unwrap();
        let rules = c.abuse.unwrap();
        assert_eq!((rules.act_at, rules.networks.above), (3.0, 6.0));
        assert_eq!(rules.action("external"), crate::abuse::Action::Lock);
        assert_eq!(rules.action("internal"), crate::abuse::Action::Log);
        let c = parse("[abuse]\nunfamiliar_factor = 0.25\ncampus_weight = 1.0\n[abuse.strangers_day]\nabove = 120\n").unwrap();
        let rules = c.abuse.unwrap();
        assert_eq!(
            (
                rules.unfamiliar_factor,
                rules.campus_weight,
                rules.strangers_day.above
            ),
            (0.25, 1.0, 120.0)
        );
        for (text, expected) in [
            (
                "[abuse]\nunfamiliar_factor = 0.0\n",
                ":2: key `abuse.unfamiliar_factor`: must be above 0",
            ),
            (
                "[abuse]\ncampus_weight = 1.5\n",
                ":2: key `abuse.campus_weight`: 1.5 is out of range: 0..=1",
            ),
            (
                "[abuse]\n[abuse.strangers_hour]\nabove = 0\n",
                ":3: key `abuse.strangers_hour.above`: must be above 0",
            ),
            (
                "[abuse]\n[abuse.actions]\nexternal = \"lock\"\n",
                ":3: key `abuse.actions.external`: \"lock\" needs [limits], where account locks are kept",
            ),
            (
                "[limits]\n[abuse]\n[abuse.actions]\nexternal = \"ban\"\n",
                ":4: key `abuse.actions.external`: `ban` is not one of \"log\", \"none\", \"tempfail\", \"lock\"",
            ),
            (
                "[abuse]\n[abuse.volume]\nweight = 1000.0\n",
                ":3: key `abuse.volume.weight`: 1000 is out of range: 0..=100",
            ),
            (
                "[abuse]\nipv4_prefix = 4\n",
                ":2: key `abuse.ipv4_prefix`: 4 is out of range: 8..=32",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}\n{e}");
        }
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
    fn sources_default_to_todays_order_and_are_checked() {
        let names = |c: &Config| c.sources.iter().map(|s| s.name()).collect::<Vec<_>>();
        assert_eq!(
            names(&parse("[senders]\n").unwrap()),
            ["map", "own_local_part"]
        );
        assert_eq!(
            names(&parse("[senders]\nown_local_part = false\n").unwrap()),
            ["map"]
        );
        let ldap = "[senders.ldap]\nserver_host = \"ldap://127.0.0.1:3389\"\nsearch_base = \"dc=tugraz,dc=at\"\nquery_filter = \"(mail=%s)\"\nresult_attribute = [\"uid\"]\nbind = false\n";
        let c = parse(&format!("[senders]\n{ldap}")).unwrap();
        assert_eq!(names(&c), ["map", "ldap", "own_local_part"]);
        let Some(LdapConfig {
            table: LdapTable::Inline(settings),
            ..
        }) = &c.ldap
        else {
            panic!("inline settings");
        };
        assert_eq!(settings.result_attributes, ["uid"]);
        assert_eq!(settings.bind, None);
        let c = parse(&format!(
            "[senders]\nsources = [\"ldap\", \"own_local_part\"]\n{ldap}positive_ttl_secs = 30\nrobot_filter = \"(objectClass=tugRobot)\"\n"
        ))
        .unwrap();
        assert_eq!(names(&c), ["ldap", "own_local_part"]);
        let tuning = &c.ldap.unwrap().tuning;
        assert_eq!(tuning.positive_ttl, Duration::from_secs(30));
        assert_eq!(
            tuning.robot_filter.as_deref(),
            Some("(objectClass=tugRobot)")
        );
        for (text, expected) in [
            (
                "[senders]\nsources = [\"ldap\"]\n".to_string(),
                ":2: key `senders.sources`: `ldap` is listed but [senders.ldap] is not configured",
            ),
            (
                format!("[senders]\nsources = [\"own_local_part\"]\n{ldap}"),
                ":2: key `senders.sources`: [senders.ldap] is configured but `ldap` is not listed",
            ),
            (
                "[senders]\nsources = [\"map\"]\n".into(),
                ":2: key `senders.sources`: `map` is listed but senders.login_map is not set",
            ),
            (
                "[senders]\nsources = [\"own_local_part\", \"own_local_part\"]\n".into(),
                "`own_local_part` is listed twice",
            ),
            (
                "[senders]\nsources = [\"directory\"]\n".into(),
                "`directory` is not one of \"map\", \"ldap\", \"own_local_part\"",
            ),
            (
                "[senders]\nsources = []\n".into(),
                "needs at least one source",
            ),
            (
                "[senders]\nown_local_part = true\nsources = [\"own_local_part\"]\n".into(),
                "set either sources or own_local_part",
            ),
            (
                format!("[senders]\n{ldap}postfix_table = \"/etc/postfix/ldap.cf\"\n"),
                "set either postfix_table or the ldap_table keys inline",
            ),
            (
                format!("[senders]\n{ldap}chase_referrals = 1\n"),
                ":8: key `senders.ldap.chase_referrals`: unsupported: referrals are not followed",
            ),
            (
                format!("[senders]\n{ldap}serach_base = \"x\"\n"),
                ":8: key `senders.ldap.serach_base`: not an ldap_table(5) parameter",
            ),
            (
                format!("[senders]\n{ldap}pool_size = 0\n"),
                ":8: key `senders.ldap.pool_size`: 0 is out of range: 1..=32",
            ),
            (
                format!("[senders]\n{ldap}robot_filter = \"objectClass=robot\"\n"),
                ":8: key `senders.ldap.robot_filter`: `objectClass=robot` is not a parenthesised LDAP filter",
            ),
            (
                "[senders]\n[senders.ldap]\nrobot_filter = \"(objectClass=x)\"\n".into(),
                "key `senders.ldap`: needs postfix_table or the ldap_table keys",
            ),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}\n{e}");
        }
    }
}
