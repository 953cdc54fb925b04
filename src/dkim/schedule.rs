//! The selector schedule (`selectors.toml`): which key signs for which domain, and when.
//!
//! Pure: every question takes `now` (Unix seconds) from the caller.

use crate::policy::domains::normalise_domain;
use crate::tomlfile::{self, FileError, line_of};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A DKIM signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// RSA-SHA256 (RFC 6376).
    RsaSha256,
    /// Ed25519-SHA256 (RFC 8463).
    Ed25519Sha256,
}

impl Algorithm {
    /// The `a=` tag value.
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The DNS `k=` value.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// Formats Unix seconds as RFC 3339 UTC.
pub fn format_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

/// One selector of one signing domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Signing domain (`d=`), normalised.
    pub domain: String,
    /// Selector name (`s=`).
    pub name: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Private key file (resolved against the keys directory).
    pub key: PathBuf,
    /// When the DNS record goes out.
    pub publish: i64,
    /// When it starts signing.
    pub active_from: i64,
    /// When it stops signing (and its record may go, after a grace period).
    pub retire_at: Option<i64>,
    /// Line of its stanza in selectors.toml.
    pub line: usize,
}

impl Selector {
    /// Whether it signs at `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.active_from <= now && self.retire_at.is_none_or(|r| now < r)
    }

    /// Whether it is retired at `now`.
    pub fn is_retired(&self, now: i64) -> bool {
        self.retire_at.is_some_and(|r| r <= now)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default)]
    selector: Vec<Spanned<RawSelector>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    domain: Spanned<String>,
    name: Spanned<String>,
    algorithm: Spanned<String>,
    key: String,
    publish: Spanned<toml::value::Datetime>,
    active_from: Spanned<toml::value::Datetime>,
    retire_at: Option<Spanned<toml::value::Datetime>>,
}

/// selectors.toml being read: where, for errors naming file, line and key.
struct SelectorsFile<'a> {
    path: &'a Path,
    text: &'a str,
}

impl SelectorsFile<'_> {
    fn invalid(&self, span: std::ops::Range<usize>, key: &str, reason: String) -> FileError {
        FileError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
            key: format!("selector.{key}"),
            reason,
        }
    }

    /// A time with date, time and UTC offset, as Unix seconds.
    fn time(&self, t: &Spanned<toml::value::Datetime>, key: &str) -> Result<i64, FileError> {
        if t.get_ref().offset.is_none() || t.get_ref().time.is_none() {
            return Err(self.invalid(
                t.span(),
                key,
                format!(
                    "`{}` needs a date, a time and a UTC offset (e.g. 2026-01-01T00:00:00Z)",
                    t.get_ref()
                ),
            ));
        }
        t.get_ref()
            .to_string()
            .parse::<jiff::Timestamp>()
            .map(|ts| ts.as_second())
            .map_err(|e| self.invalid(t.span(), key, e.to_string()))
    }

    /// One `[[selector]]` stanza, checked on its own.
    fn selector(
        &self,
        stanza: &Spanned<RawSelector>,
        keys_dir: &Path,
    ) -> Result<Selector, FileError> {
        let line = line_of(self.text, stanza.span().start);
        let s = stanza.get_ref();
        let domain = normalise_domain(s.domain.get_ref())
            .map_err(|e| self.invalid(s.domain.span(), "domain", e.to_string()))?;
        let name = s.name.get_ref().to_ascii_lowercase();
        let name_ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !name_ok {
            return Err(self.invalid(
                s.name.span(),
                "name",
                format!("`{}` is not a valid selector name", s.name.get_ref()),
            ));
        }
        let algorithm = match s.algorithm.get_ref().as_str() {
            "rsa-sha256" | "rsa" => Algorithm::RsaSha256,
            "ed25519-sha256" | "ed25519" => Algorithm::Ed25519Sha256,
            other => {
                return Err(self.invalid(
                    s.algorithm.span(),
                    "algorithm",
                    format!("`{other}` is not rsa-sha256 or ed25519-sha256"),
                ));
            }
        };
        let publish = self.time(&s.publish, "publish")?;
        let active_from = self.time(&s.active_from, "active_from")?;
        let retire_at = s
            .retire_at
            .as_ref()
            .map(|t| self.time(t, "retire_at"))
            .transpose()?;
        if active_from < publish {
            return Err(self.invalid(
                s.active_from.span(),
                "active_from",
                "is before publish: verifiers could not find the key".into(),
            ));
        }
        if let (Some(r), Some(span)) = (retire_at, s.retire_at.as_ref().map(|t| t.span()))
            && r <= active_from
        {
            return Err(self.invalid(span, "retire_at", "is not after active_from".into()));
        }
        Ok(Selector {
            domain,
            name,
            algorithm,
            key: keys_dir.join(&s.key),
            publish,
            active_from,
            retire_at,
            line,
        })
    }
}

/// All selectors of all signing domains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Selectors in file order.
    pub selectors: Vec<Selector>,
}

impl Schedule {
    /// Parses selectors.toml; key paths are resolved against `keys_dir`.
    pub fn parse(path: &Path, text: &str, keys_dir: &Path) -> Result<Self, FileError> {
        let raw: RawSchedule = tomlfile::parse(path, text)?;
        let file = SelectorsFile { path, text };
        let mut selectors: Vec<Selector> = Vec::new();
        for stanza in &raw.selector {
            let selector = file.selector(stanza, keys_dir)?;
            if let Some(other) = selectors
                .iter()
                .find(|o| o.domain == selector.domain && o.name == selector.name)
            {
                return Err(file.invalid(
                    stanza.get_ref().name.span(),
                    "name",
                    format!(
                        "selector `{}` of {} is already defined at line {}",
                        selector.name, selector.domain, other.line
                    ),
                ));
            }
            selectors.push(selector);
        }
        Ok(Schedule { selectors })
    }

    /// The selector that signs for `domain` with `algorithm` at `now`: the newest
    /// whose `active_from <= now < retire_at`.
    pub fn active(&self, domain: &str, algorithm: Algorithm, now: i64) -> Option<&Selector> {
        self.selectors
            .iter()
            .filter(|s| s.domain == domain && s.algorithm == algorithm && s.is_active(now))
            .max_by_key(|s| (s.active_from, s.line))
    }

    /// Every selector that signs for `domain` at `now` (one per algorithm).
    pub fn active_all(&self, domain: &str, now: i64) -> Vec<&Selector> {
        [Algorithm::RsaSha256, Algorithm::Ed25519Sha256]
            .into_iter()
            .filter_map(|a| self.active(domain, a, now))
            .collect()
    }

    /// The signing domains named in the schedule.
    pub fn domains(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self.selectors.iter().map(|s| s.domain.as_str()).collect();
        d.sort();
        d.dedup();
        d
    }

    /// The first moment at or after `now` when `domain` has no active selector, if any.
    pub fn first_gap(&self, domain: &str, now: i64) -> Option<i64> {
        let mut moments: Vec<i64> = vec![now];
        for s in self.selectors.iter().filter(|s| s.domain == domain) {
            moments.extend(
                [s.active_from, s.retire_at.unwrap_or(i64::MIN)]
                    .into_iter()
                    .filter(|&t| t > now),
            );
        }
        moments.sort();
        moments
            .into_iter()
            .find(|&t| self.active_all(domain, t).is_empty())
    }

    /// The next change of active selectors for `domain` after `now`.
    pub fn next_change(&self, domain: &str, now: i64) -> Option<i64> {
        self.selectors
            .iter()
            .filter(|s| s.domain == domain)
            .flat_map(|s| [Some(s.active_from), s.retire_at])
            .flatten()
            .filter(|&t| t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    const DAY: i64 = 86_400;

    fn schedule() -> Schedule {
        let text = r#"
[[selector]]
domain = "tugraz.at"
name = "s2026a"
algorithm = "rsa-sha256"
key = "a.pem"
publish = 2025-12-25T00:00:00Z
active_from = 2026-01-01T00:00:00Z
retire_at = 2026-07-01T00:00:00Z

[[selector]]
domain = "tugraz.at"
name = "s2026b"
algorithm = "rsa-sha256"
key = "b.pem"
publish = 2026-06-20T00:00:00Z
active_from = 2026-06-25T00:00:00Z

[[selector]]
domain = "TUGraz.at."
name = "ed2026"
algorithm = "ed25519-sha256"
key = "/abs/ed.pem"
publish = 2025-12-25T00:00:00+01:00
active_from = 2026-01-01T00:00:00Z
"#;
        Schedule::parse(Path::new("selectors.toml"), text, Path::new("/keys")).unwrap()
    }

    #[test]
    fn active_selector_changes_exactly_at_the_boundaries() {
        let s = schedule();
        let rsa = |t| {
            s.active("tugraz.at", Algorithm::RsaSha256, t)
                .map(|s| s.name.as_str())
        };
        let june25 = T0 + 175 * DAY;
        let july1 = T0 + 181 * DAY;
        assert_eq!(rsa(T0 - 1), None);
        assert_eq!(rsa(T0), Some("s2026a"));
        assert_eq!(rsa(june25 - 1), Some("s2026a"));
        // The newer selector takes over at its active_from, before the old one retires.
        assert_eq!(rsa(june25), Some("s2026b"));
        assert_eq!(rsa(july1 - 1), Some("s2026b"));
        assert_eq!(rsa(july1), Some("s2026b"));
        assert_eq!(s.active_all("tugraz.at", T0).len(), 2);
        assert_eq!(s.active_all("tu-graz.ac.at", T0).len(), 0);
    }

    #[test]
    fn keys_resolve_against_the_keys_directory() {
        let s = schedule();
        assert_eq!(s.selectors[0].key, PathBuf::from("/keys/a.pem"));
        assert_eq!(s.selectors[2].key, PathBuf::from("/abs/ed.pem"));
        assert_eq!(s.selectors[2].domain, "tugraz.at");
        assert_eq!(s.selectors[2].publish, T0 - 7 * DAY - 3600);
    }

    #[test]
    fn gaps_are_found() {
        let s = schedule();
        assert_eq!(s.first_gap("tugraz.at", T0), None);
        assert_eq!(s.first_gap("tugraz.at", T0 - 10), Some(T0 - 10));
        assert_eq!(s.first_gap("tu-graz.ac.at", T0), Some(T0));
        assert_eq!(s.next_change("tugraz.at", T0), Some(T0 + 175 * DAY));
    }

    #[test]
    fn errors_name_line_and_key() {
        let bad = "[[selector]]\ndomain = \"tugraz.at\"\nname = \"x\"\nalgorithm = \"rsa-sha1\"\nkey = \"k\"\npublish = 2026-01-01T00:00:00Z\nactive_from = 2026-01-01T00:00:00Z\n";
        let e = Schedule::parse(Path::new("selectors.toml"), bad, Path::new("/k")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "selectors.toml:4: key `selector.algorithm`: `rsa-sha1` is not rsa-sha256 or ed25519-sha256"
        );
        let local = bad.replace("rsa-sha1", "rsa").replace(
            "publish = 2026-01-01T00:00:00Z",
            "publish = 2026-01-01T00:00:00",
        );
        let e = Schedule::parse(Path::new("selectors.toml"), &local, Path::new("/k")).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "selectors.toml:6: key `selector.publish`: `2026-01-01T00:00:00` needs"
            ),
            "{e}"
        );
        let early = bad
            .replace("rsa-sha1", "rsa")
            .replace("publish = 2026-01-01", "publish = 2026-01-02");
        let e = Schedule::parse(Path::new("selectors.toml"), &early, Path::new("/k")).unwrap_err();
        assert!(
            e.to_string()
                .contains(":7: key `selector.active_from`: is before publish"),
            "{e}"
        );
    }
}
