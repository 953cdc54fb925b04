//! Each section of `relayguard.toml`, from its raw form to validated settings.

use super::raw::{
    Number, RawAbuse, RawAudit, RawClassLimits, RawClients, RawConfig, RawDkim, RawLimits,
    RawMetrics, RawMilter, RawRollout, RawSenders, RawSignal, range,
};
use super::{
    DkimSettings, DnsSettings, LdapConfig, LdapTable, MilterConfig, SocketSpec, SourceKind,
};
use crate::audit::writer::{AuditConfig, Checkpoints, Destination, Fsync, OnError};
use crate::dkim::rotation::{PublishSettings, RotationSettings};
use crate::dkim::schedule::Algorithm;
use crate::dkim::signer::{DEFAULT_HEADERS, DEFAULT_OVERSIGNED, SigningConfig, WithoutKey};
use crate::limits::rate::Window;
use crate::limits::store::{OnFailure, RedisConfig, StoreSettings};
use crate::limits::{ClassRule, LimitsPolicy, LockRules};
use crate::policy::Policy;
use crate::policy::address::Address;
use crate::policy::domains::{ProtectedDomains, normalise_domain};
use crate::policy::hosts::{RequireName, ServerSenders};
use crate::policy::masquerade::{Masquerades, Rule, RuleError};
use crate::policy::senders::{LoginRules, Owners};
use crate::session::rollout::{Mode, Rollout};
use crate::tomlfile::{FileError, Place, line_of};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// `[milter]`.
pub(super) fn milter(m: RawMilter, p: Place) -> Result<MilterConfig, FileError> {
    let socket = match &m.socket {
        Some(s) => {
            SocketSpec::parse(s.get_ref()).map_err(|r| p.invalid(s.span(), "milter.socket", r))?
        }
        None => SocketSpec::Inet(SocketAddr::from(([127, 0, 0, 1], 8891))),
    };
    let socket_mode = match &m.socket_mode {
        Some(mode) => u32::from_str_radix(mode.get_ref(), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                p.invalid(
                    mode.span(),
                    "milter.socket_mode",
                    format!("`{}` is not an octal mode such as \"0660\"", mode.get_ref()),
                )
            })?,
        None => 0o660,
    };
    let secs = |value: &Number, key, range, default| -> Result<Duration, FileError> {
        Ok(Duration::from_secs(
            p.number(value, key, range)?.unwrap_or(default),
        ))
    };
    Ok(MilterConfig {
        socket,
        socket_mode,
        max_connections: p
            .number(
                &m.max_connections,
                "milter.max_connections",
                range::MAX_CONNECTIONS,
            )?
            .unwrap_or(256) as usize,
        shutdown_timeout: secs(
            &m.shutdown_timeout_secs,
            "milter.shutdown_timeout_secs",
            range::SHUTDOWN_TIMEOUT_SECS,
            30,
        )?,
        idle_timeout: secs(
            &m.idle_timeout_secs,
            "milter.idle_timeout_secs",
            range::IDLE_TIMEOUT_SECS,
            330,
        )?,
        message_timeout: secs(
            &m.message_timeout_secs,
            "milter.message_timeout_secs",
            range::MESSAGE_TIMEOUT_SECS,
            1_800,
        )?,
        socket_owner: m.socket_owner,
        socket_group: m.socket_group,
    })
}

fn domains(list: &[Spanned<String>], key: &str, p: Place) -> Result<Vec<String>, FileError> {
    list.iter()
        .map(|d| normalise_domain(d.get_ref()).map_err(|e| p.invalid(d.span(), key, e.to_string())))
        .collect()
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
fn sources(
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

/// `[senders.ldap]`: relayguard's own directory settings, and either `postfix_table` (a
/// Postfix ldap_table file) or the same ldap_table keys inline.
fn ldap(
    table: &Spanned<std::collections::BTreeMap<String, Spanned<toml::Value>>>,
    p: Place,
    base: &Path,
    logins: &LoginRules,
    delimiter: Option<char>,
) -> Result<LdapConfig, FileError> {
    use crate::ldap::table::{Origin, Pair, Settings, Tuning};
    let key = |k: &str| format!("senders.ldap.{k}");
    let mut tuning = Tuning::default();
    let mut postfix_table = None;
    let mut pairs = Vec::new();
    for (name, value) in table.get_ref() {
        let span = value.span();
        let text = |v: &toml::Value| -> Option<String> {
            match v {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(n) => Some(n.to_string()),
                toml::Value::Boolean(b) => Some(if *b { "yes" } else { "no" }.into()),
                _ => None,
            }
        };
        let number = |range: std::ops::RangeInclusive<u64>| -> Result<u64, FileError> {
            let n = value
                .get_ref()
                .as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    p.invalid(span.clone(), &key(name), "must be a whole number".into())
                })?;
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
        match name.as_str() {
            "postfix_table" => {
                postfix_table = Some((base.join(string()?), line_of(p.text, span.start)))
            }
            "robot_filter" => {
                let filter = string()?;
                crate::ldap::query::check_template(&filter)
                    .map_err(|why| p.invalid(span.clone(), &key(name), why))?;
                tuning.robot_filter = Some(filter);
            }
            "positive_ttl_secs" => tuning.positive_ttl = secs(number(range::LDAP_TTL_SECS)?),
            "negative_ttl_secs" => tuning.negative_ttl = secs(number(range::LDAP_TTL_SECS)?),
            "max_stale_secs" => tuning.max_stale = secs(number(range::LDAP_MAX_STALE_SECS)?),
            "cache_size" => tuning.cache_size = number(range::LDAP_CACHE_SIZE)? as usize,
            "pool_size" => tuning.pool_size = number(range::LDAP_POOL_SIZE)? as usize,
            _ => {
                let value = match value.get_ref() {
                    toml::Value::Array(items) => items
                        .iter()
                        .map(text)
                        .collect::<Option<Vec<String>>>()
                        .map(|items| items.join(", ")),
                    v => text(v),
                }
                .ok_or_else(|| {
                    p.invalid(
                        span.clone(),
                        &key(name),
                        "must be a string, number, yes/no or a list of strings".into(),
                    )
                })?;
                pairs.push(Pair {
                    key: name.clone(),
                    value,
                    line: line_of(p.text, span.start),
                });
            }
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

/// `[senders.masquerade."LOGIN"]` and `senders.original_header`.
fn masquerades(
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

/// `clients.internal_networks`. A network wider than an IPv4 /8 or an IPv6 /16 would make
/// much of the Internet "internal" (`0.0.0.0/0`: every unauthenticated client): refused
/// unless `clients.allow_wide_internal_networks = true` says it is meant.
fn internal_networks(clients: &RawClients, p: Place) -> Result<Vec<IpNet>, FileError> {
    let wide_allowed = clients.allow_wide_internal_networks.unwrap_or(false);
    clients
        .internal_networks
        .iter()
        .flatten()
        .map(|n| {
            let s = n.get_ref();
            let net = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    p.invalid(
                        n.span(),
                        "clients.internal_networks",
                        format!("`{s}` is not a CIDR network"),
                    )
                })?;
            let wide = match net {
                IpNet::V4(v4) => v4.prefix_len() < 8,
                IpNet::V6(v6) => v6.prefix_len() < 16,
            };
            if wide && !wide_allowed {
                return Err(p.invalid(
                    n.span(),
                    "clients.internal_networks",
                    format!(
                        "`{s}` is wider than /8 (IPv4) or /16 (IPv6): its unauthenticated clients, much of the Internet, could send as internal servers; list the campus networks, or set clients.allow_wide_internal_networks = true if this is meant"
                    ),
                ));
            }
            Ok(net)
        })
        .collect()
}

/// What unauthenticated internal servers need and may use.
fn servers(clients: &RawClients, p: Place) -> Result<ServerSenders, FileError> {
    let mut servers = ServerSenders {
        require_name: p.choose(
            clients.require_name.as_ref(),
            "clients.require_name",
            &[
                ("verified", RequireName::Verified),
                ("reverse", RequireName::Reverse),
                ("none", RequireName::None),
            ],
        )?,
        parents: p
            .number(
                &clients.own_name_parents,
                "clients.own_name_parents",
                range::OWN_NAME_PARENTS,
            )?
            .unwrap_or(0) as u8,
        ..Default::default()
    };
    for entry in clients.status_senders.iter().flatten() {
        let bad = |e: String| p.invalid(entry.span(), "clients.status_senders", e);
        match entry.get_ref().strip_prefix('@') {
            Some(domain) => servers.status_domains.push(
                normalise_domain(domain).map_err(|e| bad(format!("`{}`: {e}", entry.get_ref())))?,
            ),
            None => servers.status_addresses.push(
                Address::parse_addr_spec(entry.get_ref())
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
    Ok(servers)
}

/// `[dkim]`: where the schedule and keys are, and how to sign.
pub(super) fn dkim(d: &RawDkim, p: Place, base: &Path) -> Result<DkimSettings, FileError> {
    let lower = |v: &Spanned<Vec<String>>| {
        v.get_ref()
            .iter()
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
            return Err(FileError::Invalid {
                path: p.path.to_path_buf(),
                line: p
                    .text
                    .find(name.as_str())
                    .map(|o| line_of(p.text, o))
                    .unwrap_or(1),
                key: "dkim.headers".into(),
                reason: format!(
                    "`{name}` is not a header field name of 1 to 69 printable characters"
                ),
            });
        }
    }
    if !headers.iter().chain(&oversign).any(|h| h == "from") {
        let span = (d.oversign.as_ref().or(d.headers.as_ref())).map_or(0..0, |v| v.span());
        return Err(p.invalid(
            span,
            "dkim.oversign",
            "From must be signed (RFC 6376 5.4): add \"from\" to dkim.oversign".into(),
        ));
    }
    let without_key = p.choose(
        d.without_key.as_ref(),
        "dkim.without_key",
        &[
            ("tempfail", WithoutKey::Tempfail),
            ("accept", WithoutKey::AcceptUnsigned),
        ],
    )?;
    let mut signing_domains = Vec::new();
    for (from, d) in d.signing_domains.iter().flatten() {
        let from = normalise_domain(from)
            .map_err(|e| p.invalid(d.span(), "dkim.signing_domains", e.to_string()))?;
        let dn = normalise_domain(d.get_ref())
            .map_err(|e| p.invalid(d.span(), "dkim.signing_domains", e.to_string()))?;
        if !(from == dn || from.ends_with(&format!(".{dn}"))) {
            return Err(p.invalid(
                d.span(),
                "dkim.signing_domains",
                format!("d={dn} does not align with {from}: it must be {from} or a parent of it"),
            ));
        }
        signing_domains.push((from, dn));
    }
    let signing = SigningConfig {
        headers,
        oversign,
        // x= a week after signing unless configured: longer than Postfix's 5-day queue
        // lifetime (a message delayed in our queue still verifies on arrival), short enough
        // that a replayed copy of a signed message stops verifying within days.
        expiry: Some(
            p.number(&d.expiry_days, "dkim.expiry_days", range::EXPIRY_DAYS)?
                .unwrap_or(7),
        )
        .filter(|&x| x > 0)
        .map(|x| x * 86_400),
        signing_domains,
        without_key,
        require_safe_keys: !d.allow_unsafe_key_permissions.unwrap_or(false),
        require_dns: d.require_dns.unwrap_or(false),
    };
    let raw_dns = d.dns.as_ref();
    let mut nameservers = Vec::new();
    for ns in raw_dns
        .and_then(|n| n.nameservers.as_ref())
        .into_iter()
        .flatten()
    {
        let text = ns.get_ref();
        let addr = text
            .parse::<SocketAddr>()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| {
                p.invalid(
                    ns.span(),
                    "dkim.dns.nameservers",
                    format!("`{text}` is not an IP address or IP:PORT"),
                )
            })?;
        nameservers.push(addr);
    }
    let none = Default::default();
    let raw_dns = raw_dns.unwrap_or(&none);
    let dns = DnsSettings {
        check: d.require_dns.unwrap_or(false) || d.dns.is_some(),
        nameservers,
        recheck: Duration::from_secs(
            60 * p
                .number(
                    &raw_dns.recheck_minutes,
                    "dkim.dns.recheck_minutes",
                    range::DNS_RECHECK_MINUTES,
                )?
                .unwrap_or(10),
        ),
        timeout: Duration::from_millis(
            p.number(
                &raw_dns.timeout_ms,
                "dkim.dns.timeout_ms",
                range::DNS_TIMEOUT_MS,
            )?
            .unwrap_or(2_000),
        ),
    };
    let require_dns = d.require_dns.unwrap_or(false);
    let publish = d
        .publish
        .as_ref()
        .map(|raw| publish(raw.get_ref(), p, base))
        .transpose()?;
    let rotation = match &d.rotation {
        None => None,
        Some(raw) => {
            let rotation = rotation(raw.get_ref(), p)?;
            if !require_dns {
                return Err(p.invalid(
                    raw.span(),
                    "dkim.rotation",
                    "automatic rotation needs require_dns = true: a successor must never sign before DNS serves its key".into(),
                ));
            }
            if rotation.leader && publish.is_none() {
                return Err(p.invalid(
                    raw.span(),
                    "dkim.rotation.leader",
                    "the leader publishes its successors' records: configure [dkim.publish]".into(),
                ));
            }
            Some(rotation)
        }
    };
    Ok(DkimSettings {
        signing,
        dns,
        publish,
        rotation,
        selectors: base.join(d.selectors.as_deref().unwrap_or("selectors.toml")),
        keys_dir: base.join(d.keys_dir.as_deref().unwrap_or("keys")),
        min_publish_lead: p
            .number(
                &d.min_publish_lead_hours,
                "dkim.min_publish_lead_hours",
                range::MIN_PUBLISH_LEAD_HOURS,
            )?
            .unwrap_or(48) as i64
            * 3600,
    })
}

/// `[dkim.publish]`.
fn publish(
    raw: &super::raw::RawDkimPublish,
    p: Place,
    base: &Path,
) -> Result<PublishSettings, FileError> {
    let server = raw
        .server
        .get_ref()
        .parse::<SocketAddr>()
        .or_else(|_| {
            raw.server
                .get_ref()
                .parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| {
            p.invalid(
                raw.server.span(),
                "dkim.publish.server",
                format!("`{}` is not an IP address or IP:PORT", raw.server.get_ref()),
            )
        })?;
    let zones = match &raw.zones {
        Some(list) => domains(list, "dkim.publish.zones", p)?,
        None => Vec::new(),
    };
    Ok(PublishSettings {
        server,
        key_file: base.join(raw.key_file.get_ref()),
        zones,
        ttl: p
            .number(&raw.ttl, "dkim.publish.ttl", range::DNS_TTL)?
            .unwrap_or(300) as u32,
        remove_after: 86_400
            * p.number(
                &raw.remove_after_days,
                "dkim.publish.remove_after_days",
                range::REMOVE_AFTER_DAYS,
            )?
            .unwrap_or(7) as i64,
        automatic: raw.automatic.unwrap_or(false),
    })
}

/// `[dkim.rotation]`: M3AAWG's defaults (every 180 days, RSA-2048, a week of overlap).
fn rotation(raw: &super::raw::RawDkimRotation, p: Place) -> Result<RotationSettings, FileError> {
    let day = |v: &Number, key: &str, r, default: u64| -> Result<i64, FileError> {
        Ok(86_400 * p.number(v, key, r)?.unwrap_or(default) as i64)
    };
    let mut algorithms = Vec::new();
    for a in raw.algorithms.iter().flatten() {
        algorithms.push(p.choose(
            Some(a),
            "dkim.rotation.algorithms",
            &[
                ("rsa-sha256", Algorithm::RsaSha256),
                ("ed25519-sha256", Algorithm::Ed25519Sha256),
            ],
        )?);
    }
    if raw.algorithms.is_none() {
        algorithms.push(Algorithm::RsaSha256);
    }
    let key_bits = p
        .number(&raw.key_bits, "dkim.rotation.key_bits", range::KEY_BITS)?
        .unwrap_or(2048);
    if ![2048, 3072, 4096].contains(&key_bits) {
        return Err(p.invalid(
            raw.key_bits.as_ref().map_or(0..0, |k| k.span()),
            "dkim.rotation.key_bits",
            format!("{key_bits}: use 2048, 3072 or 4096"),
        ));
    }
    let every = day(
        &raw.every_days,
        "dkim.rotation.every_days",
        range::ROTATION_EVERY_DAYS,
        180,
    )?;
    let lead = day(
        &raw.lead_days,
        "dkim.rotation.lead_days",
        range::ROTATION_LEAD_DAYS,
        14,
    )?;
    if lead >= every {
        return Err(p.invalid(
            raw.lead_days.as_ref().map_or(0..0, |k| k.span()),
            "dkim.rotation.lead_days",
            "must be shorter than every_days".into(),
        ));
    }
    let prefix = match &raw.selector_prefix {
        Some(prefix) => {
            let text = prefix.get_ref();
            if text.is_empty()
                || text.len() > 20
                || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(p.invalid(
                    prefix.span(),
                    "dkim.rotation.selector_prefix",
                    format!("`{text}`: 1 to 20 letters, digits or hyphens"),
                ));
            }
            text.clone()
        }
        None => "rg".into(),
    };
    Ok(RotationSettings {
        every,
        algorithms,
        lead,
        overlap: day(
            &raw.overlap_days,
            "dkim.rotation.overlap_days",
            range::ROTATION_OVERLAP_DAYS,
            7,
        )?,
        key_bits: key_bits as usize,
        leader: raw.leader.unwrap_or(false),
        prefix,
    })
}

/// `[audit]`.
pub(super) fn audit(a: &RawAudit, p: Place, base: &Path) -> Result<AuditConfig, FileError> {
    let fsync = p.choose(
        a.fsync.as_ref(),
        "audit.fsync",
        &[
            ("none", Fsync::Never),
            ("always", Fsync::Always),
            ("periodic", Fsync::Periodic),
        ],
    )?;
    let on_error = p.choose(
        a.on_error.as_ref(),
        "audit.on_error",
        &[
            ("tempfail", OnError::Tempfail),
            ("continue", OnError::Continue),
        ],
    )?;
    let destination = match a.file.as_deref() {
        None | Some("-") => Destination::Stdout,
        Some(f) => Destination::File(base.join(f)),
    };
    let every_minutes = p.number(
        &a.checkpoint_minutes,
        "audit.checkpoint_minutes",
        range::AUDIT_CHECKPOINT_MINUTES,
    )?;
    if a.checkpoint_key.is_none()
        && let Some(witness) = &a.witness_file
    {
        return Err(p.invalid(
            witness.span(),
            "audit.witness_file",
            "needs audit.checkpoint_key (a witness keeps copies of the checkpoints)".into(),
        ));
    }
    let checkpoints = match (&a.checkpoint_key, every_minutes) {
        (Some(key), minutes) => Some(Checkpoints {
            key_file: base.join(key),
            every_minutes: minutes.unwrap_or(60) as u32,
            witness_file: a.witness_file.as_ref().map(|w| base.join(w.get_ref())),
        }),
        (None, Some(_)) => {
            return Err(p.invalid(
                a.checkpoint_minutes.as_ref().map_or(0..0, |k| k.span()),
                "audit.checkpoint_minutes",
                "needs audit.checkpoint_key (make one with `relayguard audit keygen`)".into(),
            ));
        }
        (None, None) => None,
    };
    Ok(AuditConfig {
        destination,
        fsync,
        on_error,
        full_recipients: a.full_recipients.unwrap_or(false),
        checkpoints,
        retention_days: p
            .number(
                &a.retention_days,
                "audit.retention_days",
                range::AUDIT_RETENTION_DAYS,
            )?
            .map(|d| d as u32),
    })
}

/// `[metrics]`: where the endpoint listens.
pub(super) fn metrics(m: &RawMetrics, p: Place) -> Result<SocketAddr, FileError> {
    match &m.listen {
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 9891))),
        Some(l) => l.get_ref().parse().map_err(|_| {
            p.invalid(
                l.span(),
                "metrics.listen",
                format!("`{}` is not an address such as 127.0.0.1:9891", l.get_ref()),
            )
        }),
    }
}

/// `[rollout]`: enforce, or monitor (globally or for some logins and classes).
pub(super) fn rollout(r: &RawRollout, p: Place, logins: &LoginRules) -> Result<Rollout, FileError> {
    let header = match &r.would_refuse_header {
        None => Some("X-Relayguard-Would-Refuse".to_string()),
        Some(h) if h.get_ref().is_empty() => None,
        Some(h) => {
            let name = h.get_ref();
            if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(p.invalid(
                    h.span(),
                    "rollout.would_refuse_header",
                    format!("`{name}` is not a header field name (or \"\" for none)"),
                ));
            }
            Some(name.clone())
        }
    };
    Ok(Rollout {
        mode: p.choose(
            r.mode.as_ref(),
            "rollout.mode",
            &[("enforce", Mode::Enforce), ("monitor", Mode::Monitor)],
        )?,
        monitor_logins: r
            .monitor_logins
            .iter()
            .flatten()
            .map(|l| logins.normalise(l))
            .collect(),
        monitor_classes: r.monitor_classes.clone().unwrap_or_default(),
        header,
    })
}

/// `[limits]`: the limits (logins normalised by `logins`) and where counters live.
pub(super) fn limits(
    l: &RawLimits,
    p: Place,
    base: &Path,
    logins: &LoginRules,
) -> Result<(LimitsPolicy, StoreSettings), FileError> {
    let tz = match &l.timezone {
        None => jiff::tz::TimeZone::system(),
        Some(t) => jiff::tz::TimeZone::get(t.get_ref())
            .map_err(|e| p.invalid(t.span(), "limits.timezone", e.to_string()))?,
    };
    let auth_window = match &l.auth_window {
        None => Window::parse("18:00-06:00", tz).expect("valid default"),
        Some(w) => Window::parse(w.get_ref(), tz)
            .map_err(|e| p.invalid(w.span(), "limits.auth_window", e))?,
    };
    let lock = match &l.lock {
        None => LockRules::default(),
        Some(k) => LockRules {
            ownership_refusals: p.number(
                &k.ownership_refusals,
                "limits.lock.ownership_refusals",
                range::LOCK_COUNT,
            )?,
            ownership_window_ms: p
                .number(
                    &k.ownership_window_minutes,
                    "limits.lock.ownership_window_minutes",
                    range::OWNERSHIP_WINDOW_MINUTES,
                )?
                .unwrap_or(10) as i64
                * 60_000,
            limit_hits_per_day: p.number(
                &k.limit_hits_per_day,
                "limits.lock.limit_hits_per_day",
                range::LOCK_COUNT,
            )?,
        },
    };
    let class_limits = |raw: &Option<RawClassLimits>, table: &str| {
        raw.as_ref()
            .map(|r| r.limits(p, table))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let mut classes = Vec::new();
    for c in &l.class {
        classes.push(ClassRule {
            name: c.name.clone(),
            daemon_names: c.daemon_names.clone(),
            logins: c.logins.iter().map(|x| logins.normalise(x)).collect(),
            limits: c.limits(p)?,
        });
    }
    let mut overrides = std::collections::BTreeMap::new();
    for (login, raw) in &l.login {
        overrides.insert(
            logins.normalise(login),
            raw.limits(p, &format!("limits.login.{login}"))?,
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
        Some(("redis", _)) => Some(redis(l, p)?),
        Some((other, span)) => {
            return Err(p.invalid(
                span,
                "limits.store",
                format!("`{other}` is not \"memory\" or \"redis\""),
            ));
        }
    };
    let store = StoreSettings {
        redis,
        lock_file: base.join(l.lock_file.as_deref().unwrap_or("locks.json")),
    };
    Ok((policy, store))
}

/// `[limits.redis]`.
fn redis(l: &RawLimits, p: Place) -> Result<RedisConfig, FileError> {
    let r = l.redis.as_ref();
    let on_failure = p.choose(
        r.and_then(|r| r.on_failure.as_ref()),
        "limits.redis.on_failure",
        &[
            ("fail_open", OnFailure::FailOpen),
            ("fail_closed", OnFailure::FailClosed),
        ],
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
                Err(e) => Err(p.invalid(
                    s.span(),
                    "limits.redis.sentinels",
                    format!("`{}` is not a sentinel address: {e}", s.get_ref()),
                )),
            }
        })
        .collect::<Result<_, _>>()?;
    let master_name = match r.and_then(|r| r.master_name.as_ref()) {
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(p.invalid(
                name.span(),
                "limits.redis.master_name",
                "must not be empty".into(),
            ));
        }
        Some(name) => name.get_ref().clone(),
        None if !sentinels.is_empty() => {
            return Err(p.invalid(
                r.and_then(|r| r.sentinels.as_ref())
                    .and_then(|s| s.first())
                    .map(|s| s.span())
                    .unwrap_or(0..0),
                "limits.redis.master_name",
                "is needed with sentinels: the name the sentinels monitor".into(),
            ));
        }
        None => String::new(),
    };
    let timeout_ms = match r {
        Some(r) => p.number(
            &r.timeout_ms,
            "limits.redis.timeout_ms",
            range::REDIS_TIMEOUT_MS,
        )?,
        None => None,
    };
    Ok(RedisConfig {
        url: r
            .and_then(|r| r.url.clone())
            .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
        prefix: r
            .and_then(|r| r.prefix.clone())
            .unwrap_or_else(|| "relayguard:".into()),
        timeout: Duration::from_millis(timeout_ms.unwrap_or(50)),
        on_failure,
        sentinels,
        master_name,
    })
}

/// A fractional setting within `0..=max`.
fn fraction(
    p: Place,
    value: &Option<Spanned<f64>>,
    key: &str,
    max: f64,
    default: f64,
) -> Result<f64, FileError> {
    match value {
        None => Ok(default),
        Some(v) if v.get_ref().is_finite() && (0.0..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(p.invalid(
            v.span(),
            key,
            format!("{} is out of range: 0..={max}", v.get_ref()),
        )),
    }
}

/// A number above 0 up to `max` (0 would make every message fire).
fn positive(
    p: Place,
    value: &Option<Spanned<f64>>,
    key: &str,
    max: f64,
    default: f64,
) -> Result<f64, FileError> {
    let v = fraction(p, value, key, max, default)?;
    match value {
        Some(spanned) if v <= 0.0 => Err(p.invalid(
            spanned.span(),
            key,
            format!("must be above 0 (0 would count every message as a signal): 0<..={max}"),
        )),
        _ => Ok(v),
    }
}

/// `[abuse]`: the stolen-account signals, their scoring and the action of each class.
pub(super) fn abuse(
    a: &RawAbuse,
    p: Place,
    has_limits: bool,
) -> Result<crate::abuse::Rules, FileError> {
    use crate::abuse::{Action, Rules, Threshold};
    let d = Rules::default();
    let signal = |raw: &Option<RawSignal>, name: &str, default: Threshold| {
        let empty = RawSignal::default();
        let raw = raw.as_ref().unwrap_or(&empty);
        Ok::<_, FileError>(Threshold {
            above: positive(
                p,
                &raw.above,
                &format!("abuse.{name}.above"),
                1e6,
                default.above,
            )?,
            weight: fraction(
                p,
                &raw.weight,
                &format!("abuse.{name}.weight"),
                100.0,
                default.weight,
            )?,
        })
    };
    let actions = [
        ("log", Action::Log),
        ("none", Action::None),
        ("tempfail", Action::Tempfail),
        ("lock", Action::Lock),
    ];
    let needs_locks = |action: Action, value: Option<&Spanned<String>>, key: &str| {
        if action == Action::Lock && !has_limits {
            return Err(p.invalid(
                value.map_or(0..0, |v| v.span()),
                key,
                "\"lock\" needs [limits], where account locks are kept".into(),
            ));
        }
        Ok(action)
    };
    let default_action = needs_locks(
        p.choose(a.default_action.as_ref(), "abuse.default_action", &actions)?,
        a.default_action.as_ref(),
        "abuse.default_action",
    )?;
    let mut per_class = Vec::new();
    for (class, action) in a.actions.iter().flatten() {
        let key = format!("abuse.actions.{class}");
        let chosen = p.choose(Some(action), &key, &actions)?;
        per_class.push((class.clone(), needs_locks(chosen, Some(action), &key)?));
    }
    let number = |v: &Number, key: &str, r, default: u64| {
        Ok::<_, FileError>(p.number(v, key, r)?.unwrap_or(default))
    };
    Ok(Rules {
        networks: signal(&a.networks, "networks", d.networks)?,
        domains: signal(&a.domains, "domains", d.domains)?,
        new_recipients: signal(&a.new_recipients, "new_recipients", d.new_recipients)?,
        volume: signal(&a.volume, "volume", d.volume)?,
        authentications: signal(&a.authentications, "authentications", d.authentications)?,
        strangers_hour: signal(&a.strangers_hour, "strangers_hour", d.strangers_hour)?,
        strangers_day: signal(&a.strangers_day, "strangers_day", d.strangers_day)?,
        unfamiliar_factor: positive(
            p,
            &a.unfamiliar_factor,
            "abuse.unfamiliar_factor",
            1.0,
            d.unfamiliar_factor,
        )?,
        campus_weight: fraction(
            p,
            &a.campus_weight,
            "abuse.campus_weight",
            1.0,
            d.campus_weight,
        )?,
        familiar_weight: fraction(
            p,
            &a.familiar_weight,
            "abuse.familiar_weight",
            1.0,
            d.familiar_weight,
        )?,
        act_at: fraction(p, &a.act_at, "abuse.act_at", 1e3, d.act_at)?,
        ipv4_prefix: number(
            &a.ipv4_prefix,
            "abuse.ipv4_prefix",
            range::ABUSE_IPV4_PREFIX,
            24,
        )? as u8,
        ipv6_prefix: number(
            &a.ipv6_prefix,
            "abuse.ipv6_prefix",
            range::ABUSE_IPV6_PREFIX,
            48,
        )? as u8,
        new_recipient_days: number(
            &a.new_recipient_days,
            "abuse.new_recipient_days",
            range::ABUSE_NEW_RECIPIENT_DAYS,
            30,
        )? as u32,
        baseline_days: number(
            &a.baseline_days,
            "abuse.baseline_days",
            range::ABUSE_BASELINE_DAYS,
            14,
        )? as u32,
        volume_floor: positive(
            p,
            &a.volume_floor,
            "abuse.volume_floor",
            1e6,
            d.volume_floor,
        )?,
        actions: per_class,
        default_action,
        notify_command: a.notify_command.clone().filter(|c| !c.is_empty()),
        notify_timeout: std::time::Duration::from_secs(number(
            &a.notify_timeout_secs,
            "abuse.notify_timeout_secs",
            range::ABUSE_NOTIFY_TIMEOUT_SECS,
            10,
        )?),
    })
}
