//! `[dkim]` with `[dkim.dns]`, `[dkim.publish]` and `[dkim.rotation]`: the schedule and keys,
//! which headers are signed, how selectors' records are checked, published and rotated.

use super::values::{Number, domains};
use crate::dkim::rotation::{PublishSettings, RotationSettings};
use crate::dkim::schedule::Algorithm;
use crate::dkim::signer::{DEFAULT_HEADERS, DEFAULT_OVERSIGNED, SigningConfig, WithoutKey};
use crate::policy::domains::normalise_domain;
use crate::tomlfile::{FileError, Place, line_of};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

// The documented range of each number (docs/configuration.md, relayguard.toml(5)); values outside are
// errors, so no setting can overflow arithmetic or a runtime structure.
const EXPIRY_DAYS: RangeInclusive<u64> = 0..=3_650;
const MIN_PUBLISH_LEAD_HOURS: RangeInclusive<u64> = 0..=8_760;
const DNS_RECHECK_MINUTES: RangeInclusive<u64> = 1..=1_440;
const DNS_TIMEOUT_MS: RangeInclusive<u64> = 100..=30_000;
const DNS_TTL: RangeInclusive<u64> = 30..=86_400;
const REMOVE_AFTER_DAYS: RangeInclusive<u64> = 0..=365;
const ROTATION_EVERY_DAYS: RangeInclusive<u64> = 1..=3_650;
const ROTATION_LEAD_DAYS: RangeInclusive<u64> = 1..=365;
const ROTATION_OVERLAP_DAYS: RangeInclusive<u64> = 0..=365;
const KEY_BITS: RangeInclusive<u64> = 2_048..=4_096;

/// `[dkim]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkim {
    pub(super) selectors: Option<String>,
    pub(super) keys_dir: Option<String>,
    pub(super) headers: Option<Spanned<Vec<String>>>,
    pub(super) oversign: Option<Spanned<Vec<String>>>,
    pub(super) expiry_days: Number,
    pub(super) without_key: Option<Spanned<String>>,
    pub(super) allow_unsafe_key_permissions: Option<bool>,
    pub(super) min_publish_lead_hours: Number,
    pub(super) signing_domains: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub(super) require_dns: Option<bool>,
    pub(super) dns: Option<RawDkimDns>,
    pub(super) publish: Option<Spanned<RawDkimPublish>>,
    pub(super) rotation: Option<Spanned<RawDkimRotation>>,
}

/// `[dkim.publish]` as written (serde; unknown keys are errors).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkimPublish {
    pub(super) server: Spanned<String>,
    pub(super) key_file: Spanned<String>,
    pub(super) zones: Option<Vec<Spanned<String>>>,
    pub(super) ttl: Number,
    pub(super) remove_after_days: Number,
    pub(super) automatic: Option<bool>,
}

/// `[dkim.rotation]` as written (serde; unknown keys are errors).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkimRotation {
    pub(super) every_days: Number,
    pub(super) algorithms: Option<Vec<Spanned<String>>>,
    pub(super) lead_days: Number,
    pub(super) overlap_days: Number,
    pub(super) key_bits: Number,
    pub(super) leader: Option<bool>,
    pub(super) selector_prefix: Option<Spanned<String>>,
}

/// `[dkim.dns]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkimDns {
    pub(super) nameservers: Option<Vec<Spanned<String>>>,
    pub(super) recheck_minutes: Number,
    pub(super) timeout_ms: Number,
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

/// `[dkim]`: where the schedule and keys are, and how to sign.
pub(super) fn dkim(d: &RawDkim, p: Place, base: &Path) -> Result<DkimSettings, FileError> {
    let signing = signing(d, p)?;
    let dns = dns(d, p)?;
    let publish = d
        .publish
        .as_ref()
        .map(|raw| publish(raw.get_ref(), p, base))
        .transpose()?;
    let rotation = match &d.rotation {
        None => None,
        Some(raw) => {
            let rotation = rotation(raw.get_ref(), p)?;
            if !signing.require_dns {
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
                MIN_PUBLISH_LEAD_HOURS,
            )?
            .unwrap_or(48) as i64
            * 3600,
    })
}

/// How `[dkim]` signs: the header lists, `x=`, the signing domains, what happens
/// without a key.
fn signing(d: &RawDkim, p: Place) -> Result<SigningConfig, FileError> {
    let (headers, oversign) = header_lists(d, p)?;
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
    Ok(SigningConfig {
        headers,
        oversign,
        // x= a week after signing unless configured: longer than Postfix's 5-day queue
        // lifetime (a message delayed in our queue still verifies on arrival), short enough
        // that a replayed copy of a signed message stops verifying within days.
        expiry: Some(
            p.number(&d.expiry_days, "dkim.expiry_days", EXPIRY_DAYS)?
                .unwrap_or(7),
        )
        .filter(|&x| x > 0)
        .map(|x| x * 86_400),
        signing_domains,
        without_key,
        require_safe_keys: !d.allow_unsafe_key_permissions.unwrap_or(false),
        require_dns: d.require_dns.unwrap_or(false),
    })
}

/// `headers` (signed where present) and `oversign` (once more), lower case; From in one.
fn header_lists(d: &RawDkim, p: Place) -> Result<(Vec<String>, Vec<String>), FileError> {
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
    Ok((headers, oversign))
}

/// `[dkim.dns]`: whether and how selectors' records are checked.
fn dns(d: &RawDkim, p: Place) -> Result<DnsSettings, FileError> {
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
    Ok(DnsSettings {
        check: d.require_dns.unwrap_or(false) || d.dns.is_some(),
        nameservers,
        recheck: Duration::from_secs(
            60 * p
                .number(
                    &raw_dns.recheck_minutes,
                    "dkim.dns.recheck_minutes",
                    DNS_RECHECK_MINUTES,
                )?
                .unwrap_or(10),
        ),
        timeout: Duration::from_millis(
            p.number(&raw_dns.timeout_ms, "dkim.dns.timeout_ms", DNS_TIMEOUT_MS)?
                .unwrap_or(2_000),
        ),
    })
}

/// `[dkim.publish]`.
pub(super) fn publish(
    raw: &RawDkimPublish,
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
            .number(&raw.ttl, "dkim.publish.ttl", DNS_TTL)?
            .unwrap_or(300) as u32,
        remove_after: 86_400
            * p.number(
                &raw.remove_after_days,
                "dkim.publish.remove_after_days",
                REMOVE_AFTER_DAYS,
            )?
            .unwrap_or(7) as i64,
        automatic: raw.automatic.unwrap_or(false),
    })
}

/// `[dkim.rotation]`: M3AAWG's defaults (every 180 days, RSA-2048, a week of overlap).
pub(super) fn rotation(raw: &RawDkimRotation, p: Place) -> Result<RotationSettings, FileError> {
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
        .number(&raw.key_bits, "dkim.rotation.key_bits", KEY_BITS)?
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
        ROTATION_EVERY_DAYS,
        180,
    )?;
    let lead = day(
        &raw.lead_days,
        "dkim.rotation.lead_days",
        ROTATION_LEAD_DAYS,
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
            ROTATION_OVERLAP_DAYS,
            7,
        )?,
        key_bits: key_bits as usize,
        leader: raw.leader.unwrap_or(false),
        prefix,
    })
}
