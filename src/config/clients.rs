//! `[clients]`: the internal networks and what unauthenticated servers on them may send.

use super::values::Number;
use crate::policy::address::Address;
use crate::policy::domains::normalise_domain;
use crate::policy::hosts::{RequireName, ServerSenders};
use crate::tomlfile::{FileError, Place};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use toml::Spanned;

// The documented range of each number (docs/configuration.md, relayguard.toml(5)); values outside are
// errors, so no setting can overflow arithmetic or a runtime structure.
const OWN_NAME_PARENTS: RangeInclusive<u64> = 0..=5;

/// `[clients]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClients {
    pub(super) internal_networks: Option<Vec<Spanned<String>>>,
    pub(super) allow_wide_internal_networks: Option<bool>,
    pub(super) require_name: Option<Spanned<String>>,
    pub(super) own_name_parents: Number,
    pub(super) status_senders: Option<Vec<Spanned<String>>>,
}

/// `clients.internal_networks`. A network wider than an IPv4 /8 or an IPv6 /16 would make
/// much of the Internet "internal" (`0.0.0.0/0`: every unauthenticated client): refused
/// unless `clients.allow_wide_internal_networks = true` says it is meant.
pub(super) fn internal_networks(clients: &RawClients, p: Place) -> Result<Vec<IpNet>, FileError> {
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
pub(super) fn servers(clients: &RawClients, p: Place) -> Result<ServerSenders, FileError> {
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
                OWN_NAME_PARENTS,
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
