//! Unauthenticated internal servers: the host name they must have, and the only senders they
//! may use (their own name, or a configured status sender).
//!
//! Nobody logged in, so nobody owns a person's address: a server may send status mail only
//! as itself (`root@srv1.iaik.tugraz.at` from `srv1.iaik.tugraz.at`, optionally from a few
//! parent domains below the protected apex) or as one of the configured status senders.

use super::address::Address;
use super::domains::{ProtectedDomains, normalise_domain};

/// Which host name an unauthenticated internal client needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireName {
    /// A forward-confirmed name (Postfix `{client_name}` not `unknown`); the default.
    Verified,
    /// At least a reverse (PTR) name (`{client_ptr}`), confirmed or not.
    Reverse,
    /// No name needed (then only the status senders are usable without one).
    None,
}

/// The client's host name as the MTA resolved it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostName<'a> {
    /// The forward-confirmed name (`{client_name}`).
    pub verified: Option<&'a str>,
    /// The PTR name, confirmed or not (`{client_ptr}`).
    pub reverse: Option<&'a str>,
}

/// The rules for unauthenticated internal servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSenders {
    /// The host name they need.
    pub require_name: RequireName,
    /// How many parent domains of the host name (still below a protected apex) it may use.
    pub parents: u8,
    /// Addresses (`user@domain`, canonical) any internal server may use.
    pub status_addresses: Vec<String>,
    /// Domains (`@domain`, normalised) whose addresses any internal server may use.
    pub status_domains: Vec<String>,
}

impl Default for ServerSenders {
    fn default() -> Self {
        ServerSenders {
            require_name: RequireName::Verified,
            parents: 0,
            status_addresses: Vec::new(),
            status_domains: Vec::new(),
        }
    }
}

/// Why an internal server may use an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPermit {
    /// The address is in the host's own domain (the name given).
    OwnName(String),
    /// A configured status sender.
    StatusSender,
}

impl ServerSenders {
    /// The name the policy uses for a client, per [`RequireName`]: `None` when it has none
    /// it may rely on. Names are normalised; one that is not a valid host name is no name.
    pub fn usable_name(&self, name: HostName<'_>) -> Option<String> {
        let pick = |n: Option<&str>| {
            n.filter(|n| !n.is_empty() && *n != "unknown" && !n.starts_with('['))
                .and_then(|n| normalise_domain(n).ok())
        };
        match self.require_name {
            RequireName::Verified => pick(name.verified),
            RequireName::Reverse | RequireName::None => {
                pick(name.verified).or_else(|| pick(name.reverse))
            }
        }
    }

    /// Whether a client without a usable name may not send at all.
    pub fn name_required(&self) -> bool {
        self.require_name != RequireName::None
    }

    /// The domains host `name` may send from: its own name and up to `parents` parents,
    /// never a protected apex or anything above one. A host outside the protected domains
    /// may use only its own name.
    pub fn own_domains(&self, name: &str, protected: &ProtectedDomains) -> Vec<String> {
        let mut out = Vec::new();
        let Some(apex) = protected.apex_of(name) else {
            out.push(name.to_string());
            return out;
        };
        let mut domain = name;
        for _ in 0..=self.parents {
            if domain == apex {
                break;
            }
            out.push(domain.to_string());
            match domain.split_once('.') {
                Some((_, parent)) => domain = parent,
                None => break,
            }
        }
        out
    }

    /// Whether a server called `name` (if it has a usable one) may use `address`.
    pub fn permit(
        &self,
        name: Option<&str>,
        address: &Address,
        protected: &ProtectedDomains,
    ) -> Option<ServerPermit> {
        let domain = address.domain()?;
        if self.status_addresses.contains(&address.canonical())
            || self.status_domains.iter().any(|d| d == domain)
        {
            return Some(ServerPermit::StatusSender);
        }
        let name = name?;
        self.own_domains(name, protected)
            .iter()
            .any(|d| d == domain)
            .then(|| ServerPermit::OwnName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected() -> ProtectedDomains {
        ProtectedDomains::new(vec!["tugraz.at".into(), "tu-graz.ac.at".into()])
    }

    fn addr(a: &str) -> Address {
        Address::parse_addr_spec(a).unwrap()
    }

    #[test]
    fn a_server_may_use_its_own_name_and_parents_below_the_apex() {
        let mut rules = ServerSenders::default();
        let p = protected();
        assert_eq!(
            rules.own_domains("srv1.iaik.tugraz.at", &p),
            ["srv1.iaik.tugraz.at"]
        );
        rules.parents = 1;
        assert_eq!(
            rules.own_domains("srv1.iaik.tugraz.at", &p),
            ["srv1.iaik.tugraz.at", "iaik.tugraz.at"]
        );
        rules.parents = 5;
        assert_eq!(
            rules.own_domains("srv1.iaik.tugraz.at", &p),
            ["srv1.iaik.tugraz.at", "iaik.tugraz.at"],
            "never the apex"
        );
        assert!(
            rules.own_domains("tugraz.at", &p).is_empty(),
            "a host named like the apex"
        );
        assert_eq!(
            rules.own_domains("backup.example.org", &p),
            ["backup.example.org"]
        );
        let name = Some("srv1.iaik.tugraz.at");
        assert!(
            rules
                .permit(name, &addr("root@srv1.iaik.tugraz.at"), &p)
                .is_some()
        );
        assert!(
            rules
                .permit(name, &addr("noreply@iaik.tugraz.at"), &p)
                .is_some()
        );
        assert_eq!(rules.permit(name, &addr("rector@tugraz.at"), &p), None);
        assert_eq!(
            rules.permit(name, &addr("root@srv2.iaik.tugraz.at"), &p),
            None
        );
        assert_eq!(
            rules.permit(name, &addr("root@x.srv1.iaik.tugraz.at"), &p),
            None
        );
        assert_eq!(rules.permit(name, &addr("root@localhost"), &p), None);
        assert_eq!(
            rules.permit(None, &addr("root@srv1.iaik.tugraz.at"), &p),
            None
        );
    }

    #[test]
    fn status_senders_are_open_to_every_server() {
        let rules = ServerSenders {
            status_addresses: vec!["monitoring@tugraz.at".into()],
            status_domains: vec!["nagios.tugraz.at".into()],
            ..Default::default()
        };
        let p = protected();
        for a in [
            "monitoring@tugraz.at",
            "Monitoring@TUGraz.at",
            "x@nagios.tugraz.at",
        ] {
            assert_eq!(
                rules.permit(None, &addr(a), &p),
                Some(ServerPermit::StatusSender),
                "{a}"
            );
        }
        assert_eq!(rules.permit(None, &addr("x@a.nagios.tugraz.at"), &p), None);
    }

    #[test]
    fn names_count_as_the_mode_says() {
        let mut rules = ServerSenders::default();
        let unconfirmed = HostName {
            verified: Some("unknown"),
            reverse: Some("Srv1.IAIK.tugraz.at."),
        };
        assert_eq!(rules.usable_name(unconfirmed), None);
        assert_eq!(
            rules.usable_name(HostName {
                verified: Some("srv1.iaik.tugraz.at"),
                reverse: None
            }),
            Some("srv1.iaik.tugraz.at".into())
        );
        assert_eq!(
            rules.usable_name(HostName {
                verified: Some("[129.27.3.4]"),
                reverse: None
            }),
            None
        );
        rules.require_name = RequireName::Reverse;
        assert_eq!(
            rules.usable_name(unconfirmed),
            Some("srv1.iaik.tugraz.at".into())
        );
        assert!(rules.name_required());
        rules.require_name = RequireName::None;
        assert!(!rules.name_required());
    }
}
