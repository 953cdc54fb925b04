//! Robot masquerading: which sender forms a robot account's servers emit automatically
//! (`root@web1`, `www-data@localhost`, the null sender) and the address they become.
//!
//! Pure: a rule matches addresses and builds the header values; the pipeline's masquerade
//! check applies it before ownership is checked, so the rewritten sender is what is owned,
//! signed and delivered. A person's account has no rule and is never masqueraded.

use super::address::Address;
use super::domains::normalise_domain;
use super::mailbox::HeaderSet;
use std::collections::HashMap;

/// Why a masquerade setting is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A `from` pattern that is not `local@domain` with `*` wildcards, or `<>`.
    #[error("`{0}` is not a sender pattern such as `root@*`, `*@localhost`, `*@*.local` or `<>`")]
    Pattern(String),
    /// A display name that would not fit in one safe header value.
    #[error("the display name must be 1 to 64 printable characters without quotes or backslashes")]
    DisplayName,
}

/// One automatic sender form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// The null envelope sender `<>`.
    Null,
    /// `local@domain`; `None` is `*`.
    Address {
        local: Option<String>,
        domain: DomainPattern,
    },
}

/// The domain side of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DomainPattern {
    /// `*`: any domain.
    Any,
    /// This domain exactly (normalised).
    Exact(String),
    /// `*.local`: any domain strictly below this one.
    Below(String),
}

impl DomainPattern {
    fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Any => true,
            DomainPattern::Exact(d) => d == domain,
            DomainPattern::Below(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, RuleError> {
        let bad = || RuleError::Pattern(text.to_string());
        if text.trim() == "<>" {
            return Ok(Pattern::Null);
        }
        let (local, domain) = text.trim().rsplit_once('@').ok_or_else(bad)?;
        let local = match local {
            "*" => None,
            l if !l.is_empty() && l.bytes().all(|b| b.is_ascii_graphic() && b != b'*') => {
                Some(l.to_ascii_lowercase())
            }
            _ => return Err(bad()),
        };
        let domain = match domain {
            "*" => DomainPattern::Any,
            d => match d.strip_prefix("*.") {
                Some(below) => DomainPattern::Below(normalise_domain(below).map_err(|_| bad())?),
                None => DomainPattern::Exact(normalise_domain(d).map_err(|_| bad())?),
            },
        };
        Ok(Pattern::Address { local, domain })
    }

    fn matches(&self, address: Option<&Address>) -> bool {
        match (self, address) {
            (Pattern::Null, None) => true,
            (Pattern::Address { local, domain }, Some(a)) => {
                local.as_deref().is_none_or(|l| l == a.local())
                    && a.domain().is_some_and(|d| domain.matches(d))
            }
            _ => false,
        }
    }
}

/// One robot's masquerade: the automatic sender forms and the address they become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The address automatic mail is sent as (an address the robot owns).
    pub address: Address,
    /// The display name of the rewritten From, when the original had none.
    pub display_name: Option<String>,
    patterns: Vec<Pattern>,
}

impl Rule {
    /// A rule from its settings.
    pub fn new(
        address: Address,
        patterns: &[String],
        display_name: Option<String>,
    ) -> Result<Self, RuleError> {
        if let Some(name) = &display_name {
            let safe = !name.is_empty()
                && name.chars().count() <= 64
                && name
                    .chars()
                    .all(|c| !c.is_control() && c != '"' && c != '\\');
            if !safe {
                return Err(RuleError::DisplayName);
            }
        }
        Ok(Rule {
            address,
            display_name,
            patterns: patterns
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether a sender (`None` for the null sender) is one of the automatic forms.
    pub fn is_automatic(&self, sender: Option<&Address>) -> bool {
        self.patterns.iter().any(|p| p.matches(sender))
    }

    /// The envelope sender automatic mail gets: `<address>`.
    pub fn envelope(&self) -> String {
        format!("<{}>", self.address)
    }

    /// The From header value automatic mail gets: the configured display name (quoted),
    /// the address in angle brackets.
    pub fn from_header(&self) -> String {
        match &self.display_name {
            Some(name) => format!("\"{name}\" <{}>", self.address),
            None => format!("<{}>", self.address),
        }
    }

    /// The envelope sender (a MAIL FROM argument) rewritten, when it is automatic.
    pub fn rewrite_envelope(&self, mail_from: &str) -> Option<String> {
        let sender = Address::parse_envelope(mail_from).ok()?;
        self.is_automatic(sender.as_ref()).then(|| self.envelope())
    }

    /// The From rewritten, when it is one unambiguous automatic mailbox: the original, and
    /// the new value (the original display name kept where it is plain, else the configured
    /// one). An ambiguous From is not rewritten: the header check refuses it.
    pub fn rewrite_from(&self, headers: &HeaderSet) -> Option<(Address, String)> {
        let from = headers.from().ok().flatten()?;
        if !self.is_automatic(Some(&from)) {
            return None;
        }
        let value = match headers.from_display_name() {
            Some(kept) => format!("\"{kept}\" <{}>", self.address),
            None => self.from_header(),
        };
        Some((from, value))
    }

    /// The Sender rewritten to the address, when it is automatic: the original and the value.
    pub fn rewrite_sender(&self, headers: &HeaderSet) -> Option<(Address, String)> {
        let sender = headers.sender().ok().flatten()?;
        self.is_automatic(Some(&sender))
            .then(|| (sender, format!("<{}>", self.address)))
    }
}

/// Every robot's masquerade, and where the original sender is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masquerades {
    rules: HashMap<String, Rule>,
    /// The header that keeps the original From (`X-Original-From`); `None`: not kept.
    pub original_header: Option<String>,
}

impl Masquerades {
    /// Rules by (normalised) robot login.
    pub fn new(rules: HashMap<String, Rule>, original_header: Option<String>) -> Self {
        Masquerades {
            rules,
            original_header,
        }
    }

    /// The rule of a login, if it is a robot with one.
    pub fn rule(&self, login: &str) -> Option<&Rule> {
        self.rules.get(login)
    }

    /// Every rule, by login.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &Rule)> {
        self.rules.iter().map(|(l, r)| (l.as_str(), r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(patterns: &[&str]) -> Rule {
        Rule::new(
            Address::parse_addr_spec("noreply-web@iaik.tugraz.at").unwrap(),
            &patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            Some("IAIK web server".into()),
        )
        .unwrap()
    }

    fn auto(rule: &Rule, sender: &str) -> bool {
        let address = (sender != "<>").then(|| Address::parse_addr_spec(sender).unwrap());
        rule.is_automatic(address.as_ref())
    }

    #[test]
    fn automatic_forms_match_by_local_part_host_and_null_sender() {
        let r = rule(&["root@*", "www-data@*", "*@localhost", "*@*.local", "<>"]);
        for yes in [
            "root@web1.iaik.tugraz.at",
            "ROOT@web1",
            "www-data@anything.example",
            "apache@localhost",
            "cron@box.local",
            "cron@a.b.local",
            "<>",
        ] {
            assert!(auto(&r, yes), "{yes}");
        }
        for no in [
            "alice@tugraz.at",
            "rootkit@web1",
            "apache@web1",
            "x@local",
            "x@notlocal",
            "x@localhost.evil.example",
        ] {
            assert!(!auto(&r, no), "{no}");
        }
        assert!(!auto(&rule(&["root@*"]), "<>"), "<> only when listed");
    }

    #[test]
    fn the_rewritten_from_is_one_safe_header_value() {
        let r = rule(&["root@*"]);
        assert_eq!(r.envelope(), "<noreply-web@iaik.tugraz.at>");
        assert_eq!(
            r.from_header(),
            "\"IAIK web server\" <noreply-web@iaik.tugraz.at>"
        );
        let address = Address::parse_addr_spec("noreply-web@iaik.tugraz.at").unwrap();
        for bad in ["a\r\nBcc: x", "a\"b", "a\\b", "", "a\0b"] {
            assert_eq!(
                Rule::new(address.clone(), &[], Some(bad.into())),
                Err(RuleError::DisplayName),
                "{bad:?}"
            );
        }
        for bad in ["root", "ro*t@x", "root@", "@x", "root@bad..x", "*"] {
            assert!(
                Rule::new(address.clone(), &[bad.into()], None).is_err(),
                "{bad}"
            );
        }
    }
}
