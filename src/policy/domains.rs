//! Domain names: normalisation (case, trailing dot, IDN) and the protected-domain set.

use std::fmt;

/// Why a domain name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The name is empty (or only a dot).
    #[error("empty domain name")]
    Empty,
    /// The name is not a valid (IDNA) host name.
    #[error("`{0}` is not a valid domain name")]
    Invalid(String),
    /// A Unicode spelling that IDNA maps to another name (full-width letters, ideographic
    /// dots, invisible characters): readers may show one name and resolvers use another.
    #[error("`{0}` is not written in its canonical form")]
    NotCanonical(String),
}

/// Normalises a domain name to its lower-case ASCII (punycode) form without a trailing dot.
///
/// `TUGraz.AT.`, `tugraz.at` and the U-label and A-label spellings of an IDN all map to one string.
pub fn normalise_domain(name: &str) -> Result<String, DomainError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(DomainError::Empty);
    }
    if trimmed.starts_with('.') || trimmed.contains("..") || trimmed.starts_with('[') {
        return Err(DomainError::Invalid(name.to_string()));
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        let ascii =
            idna::domain_to_ascii(trimmed).map_err(|_| DomainError::Invalid(name.to_string()))?;
        // `ｔｕｇｒａｚ．ａｔ` and `tugraz.at` plus a zero-width space map to tugraz.at:
        // accept only the spelling IDNA gives back.
        if idna::domain_to_unicode(&ascii).0 != trimmed.to_lowercase() {
            return Err(DomainError::NotCanonical(name.to_string()));
        }
        ascii
    };
    // Round-trip punycode labels so that malformed A-labels (`xn--` garbage) are refused.
    if ascii.split('.').any(|l| l.starts_with("xn--")) {
        let (_, result) = idna::domain_to_unicode(&ascii);
        if result.is_err() {
            return Err(DomainError::Invalid(name.to_string()));
        }
    }
    let valid = ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !valid || ascii.len() > 253 {
        return Err(DomainError::Invalid(name.to_string()));
    }
    Ok(ascii)
}

/// The protected domains: each covers its apex and every subdomain, on label boundaries.
#[derive(Clone, PartialEq, Eq)]
pub struct ProtectedDomains {
    apexes: Vec<String>,
}

impl ProtectedDomains {
    /// Builds the set from already normalised apex names.
    pub fn new(apexes: Vec<String>) -> Self {
        Self { apexes }
    }

    /// The configured apex domains, normalised.
    pub fn apexes(&self) -> &[String] {
        &self.apexes
    }

    /// Returns the protected apex that covers `domain` (already normalised), if any.
    pub fn apex_of(&self, domain: &str) -> Option<&str> {
        self.apexes
            .iter()
            .filter(|apex| {
                domain == apex.as_str()
                    || (domain.len() > apex.len()
                        && domain.ends_with(apex.as_str())
                        && domain.as_bytes()[domain.len() - apex.len() - 1] == b'.')
            })
            // The longest apex wins when one protected domain lies under another.
            .max_by_key(|apex| apex.len())
            .map(String::as_str)
    }

    /// Whether `domain` (already normalised) is protected.
    pub fn covers(&self, domain: &str) -> bool {
        self.apex_of(domain).is_some()
    }
}

impl fmt::Debug for ProtectedDomains {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.apexes).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ProtectedDomains {
        ProtectedDomains::new(vec!["tugraz.at".into(), "tu-graz.ac.at".into()])
    }

    #[test]
    fn spellings_that_idna_maps_elsewhere_are_refused() {
        for name in [
            "\u{ff54}\u{ff55}\u{ff47}\u{ff52}\u{ff41}\u{ff5a}.at",
            "tugraz\u{3002}at",
            "tugraz.at\u{200b}",
            "tu\u{00ad}graz.at",
        ] {
            assert!(
                matches!(normalise_domain(name), Err(DomainError::NotCanonical(_))),
                "{name}"
            );
        }
        assert_eq!(
            normalise_domain("M\u{fc}ller.AT").unwrap(),
            "xn--mller-kva.at"
        );
    }

    #[test]
    fn normalise_folds_case_trailing_dot_and_idn() {
        assert_eq!(normalise_domain("TUGraz.AT.").unwrap(), "tugraz.at");
        assert_eq!(
            normalise_domain("bücher.tugraz.at").unwrap(),
            normalise_domain("xn--bcher-kva.tugraz.at").unwrap()
        );
        assert_eq!(
            normalise_domain("BÜCHER.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn normalise_refuses_malformed_names() {
        for bad in [
            "",
            ".",
            "a..b",
            ".tugraz.at",
            "[127.0.0.1]",
            "a b.at",
            "x@y.at",
            "xn--zz.at",
        ] {
            assert!(normalise_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn protected_covers_apex_and_subdomains_on_label_boundaries() {
        let set = set();
        assert!(set.covers("tugraz.at"));
        assert!(set.covers("iaik.tugraz.at"));
        assert!(set.covers("a.b.tu-graz.ac.at"));
        assert!(!set.covers("eviltugraz.at"));
        assert!(!set.covers("tugraz.at.example.org"));
        assert!(!set.covers("at"));
        assert_eq!(set.apex_of("x.tu-graz.ac.at"), Some("tu-graz.ac.at"));
    }
}
