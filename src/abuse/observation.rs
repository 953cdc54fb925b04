//! One message as the stolen-account signals see it: the client's network, the recipients
//! and their domains, which recipients are on campus.

use super::Rules;
use std::net::IpAddr;

/// One message as the signals see it.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The client's network (`203.0.113.0/24`), when the address is known.
    pub network: Option<String>,
    /// Recipient domains (lower case, each once).
    pub domains: Vec<String>,
    /// Recipients (lower case, each once).
    pub recipients: Vec<String>,
    /// For each recipient, whether it is inside the protected domains (campus mail).
    pub inside: Vec<bool>,
    /// The client is on a campus network (in `clients.internal_networks`): never unfamiliar.
    pub campus_client: bool,
    /// Authentications in the window, when counted.
    pub authentications: Option<u64>,
}

impl Observation {
    /// The observation of a message from `addr` to `rcpts`; `inside` says whether a
    /// recipient domain is one of the protected domains.
    pub fn new(
        addr: Option<IpAddr>,
        rcpts: &[impl AsRef<str>],
        rules: &Rules,
        authentications: Option<u64>,
        inside: &dyn Fn(&str) -> bool,
    ) -> Self {
        let mut recipients: Vec<String> = rcpts
            .iter()
            .map(|r| r.as_ref().trim_matches(['<', '>']).to_ascii_lowercase())
            .collect();
        recipients.sort();
        recipients.dedup();
        let mut domains: Vec<String> = recipients
            .iter()
            .filter_map(|r| r.rsplit_once('@').map(|(_, d)| d.to_string()))
            .collect();
        domains.sort();
        domains.dedup();
        let inside = recipients
            .iter()
            .map(|r| r.rsplit_once('@').is_some_and(|(_, d)| inside(d)))
            .collect();
        Observation {
            network: addr.map(|a| network(a, rules)),
            domains,
            recipients,
            inside,
            campus_client: false,
            authentications,
        }
    }
}

/// The network an address belongs to (`/24` and `/48` by default).
pub fn network(addr: IpAddr, rules: &Rules) -> String {
    let net = match addr {
        IpAddr::V4(a) => ipnet::IpNet::V4(
            ipnet::Ipv4Net::new(a, rules.ipv4_prefix.min(32))
                .expect("prefix <= 32")
                .trunc(),
        ),
        IpAddr::V6(a) => {
            let a = a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4);
            return match a {
                IpAddr::V4(v4) => network(IpAddr::V4(v4), rules),
                IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, rules.ipv6_prefix.min(128))
                    .expect("prefix <= 128")
                    .trunc()
                    .to_string(),
            };
        }
    };
    net.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_prefixes_and_mapped_addresses_are_ipv4() {
        let r = Rules::default();
        assert_eq!(
            network("203.0.113.77".parse().unwrap(), &r),
            "203.0.113.0/24"
        );
        assert_eq!(
            network("2001:db8:1:2::5".parse().unwrap(), &r),
            "2001:db8:1::/48"
        );
        assert_eq!(
            network("::ffff:203.0.113.77".parse().unwrap(), &r),
            "203.0.113.0/24"
        );
    }
}
