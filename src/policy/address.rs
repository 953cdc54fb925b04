//! Addresses: the strict addr-spec and envelope (MAIL FROM / RCPT TO) forms relayguard accepts.

use super::display::invisible;
use super::domains::normalise_domain;
use std::fmt;

/// An e-mail address split into a local part and an optional, normalised domain.
#[derive(Clone, PartialEq, Eq)]
pub struct Address {
    local: String,
    domain: Option<String>,
    original: String,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing where an address should be.
    #[error("empty address")]
    Empty,
    /// `<@relay:user@domain>`: a source route.
    #[error("source routes are not accepted")]
    SourceRoute,
    /// `"..."@domain`: a quoted local part.
    #[error("quoted local parts are not accepted")]
    QuotedLocalPart,
    /// An RFC 2047 encoded-word where the address should be.
    #[error("an encoded-word stands where the address should be")]
    EncodedWord,
    /// A character no address may contain here.
    #[error("invalid character {0:?} in address")]
    InvalidCharacter(char),
    /// More than one `@`, or `@` at either end.
    #[error("malformed address")]
    Malformed,
    /// The domain part is not a valid domain name.
    #[error("invalid domain: {0}")]
    Domain(#[from] super::domains::DomainError),
    /// The envelope address lacks its angle brackets or has stray ones.
    #[error("malformed angle brackets")]
    Brackets,
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace() && !invisible(c))
}

impl Address {
    /// Parses a bare addr-spec (`local@domain`, or a domain-less `local`), refusing anything unusual.
    pub fn parse_addr_spec(text: &str) -> Result<Self, AddressError> {
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.starts_with('@') {
            return Err(AddressError::SourceRoute);
        }
        if text.contains('"') {
            return Err(AddressError::QuotedLocalPart);
        }
        if text.contains("=?") {
            return Err(AddressError::EncodedWord);
        }
        let (local, domain) = match text.split_once('@') {
            Some((local, domain)) => {
                if domain.contains('@') || domain.is_empty() || local.is_empty() {
                    return Err(AddressError::Malformed);
                }
                (local, Some(domain))
            }
            None => (text, None),
        };
        if let Some(c) = local.chars().find(|&c| !is_atext(c) && c != '.') {
            return Err(AddressError::InvalidCharacter(c));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(AddressError::Malformed);
        }
        let domain = domain.map(normalise_domain).transpose()?;
        Ok(Self {
            local: local.to_lowercase(),
            domain,
            original: text.to_string(),
        })
    }

    /// Parses an envelope argument as an MTA passes it (`<user@domain>`); `Ok(None)` is the null sender `<>`.
    pub fn parse_envelope(arg: &str) -> Result<Option<Self>, AddressError> {
        let arg = arg.trim();
        let inner = match (arg.strip_prefix('<'), arg.ends_with('>')) {
            (Some(rest), true) => &rest[..rest.len() - 1],
            (None, false) => arg,
            _ => return Err(AddressError::Brackets),
        };
        if inner.contains('<') || inner.contains('>') {
            return Err(AddressError::Brackets);
        }
        if inner.is_empty() {
            return Ok(None);
        }
        if let Some(c) = inner.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::InvalidCharacter(c));
        }
        Self::parse_addr_spec(inner).map(Some)
    }

    /// The local part, lower-cased.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The normalised domain, if the address has one.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The address as it was written.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The canonical form used for comparisons: lower-case local part, normalised domain.
    pub fn canonical(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}@{}", self.local, d),
            None => self.local.clone(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_forms() {
        assert_eq!(Address::parse_envelope("<>").unwrap(), None);
        let a = Address::parse_envelope("<Alice@TUGraz.AT>")
            .unwrap()
            .unwrap();
        assert_eq!(a.canonical(), "alice@tugraz.at");
        assert_eq!(a.original(), "Alice@TUGraz.AT");
        assert!(
            Address::parse_envelope("alice@tugraz.at")
                .unwrap()
                .is_some()
        );
        assert_eq!(
            Address::parse_envelope("<@relay.example:rector@tugraz.at>"),
            Err(AddressError::SourceRoute)
        );
        assert_eq!(Address::parse_envelope("<a@b"), Err(AddressError::Brackets));
        assert_eq!(
            Address::parse_envelope("<\"rector@tugraz.at\"@evil.com>"),
            Err(AddressError::QuotedLocalPart)
        );
        assert!(Address::parse_envelope("<a@b@c>").is_err());
        assert!(Address::parse_envelope("<a b@c>").is_err());
    }

    #[test]
    fn addr_spec_refuses_tricks() {
        assert!(Address::parse_addr_spec("rector@tugraz.at\\@evil.com").is_err());
        assert!(Address::parse_addr_spec(".a@tugraz.at").is_err());
        assert!(Address::parse_addr_spec("a@[127.0.0.1]").is_err());
        assert_eq!(Address::parse_addr_spec("root").unwrap().domain(), None);
        assert_eq!(
            Address::parse_addr_spec("jürgen@bücher.at")
                .unwrap()
                .domain(),
            Some("xn--bcher-kva.at")
        );
    }
}
