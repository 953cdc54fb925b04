//! Reports for operators: DNS records to publish or remove, rotation status, schedule checks,
//! and selectors.toml stanzas. Pure: every function takes `now`.

use super::schedule::{Algorithm, Selector, format_time};
use super::signer::KeySet;
use std::fmt::Write;

/// How long a retired selector's DNS record stays for mail still in transit.
pub const RECORD_GRACE: i64 = 7 * 86_400;

/// A key that has signed longer than this without a successor is overdue for rotation.
pub const MAX_KEY_AGE: i64 = 366 * 86_400;

/// A DNS TXT record in zone-file syntax, split into strings of at most 255 bytes.
pub fn txt_record(selector: &str, domain: &str, value: &str) -> String {
    let mut out = format!("{selector}._domainkey.{domain}. IN TXT (");
    // Keep the tag part as its own string, as OpenDKIM's tools do; split p= at 255 bytes.
    let (head, key) = match value.find("p=") {
        Some(i) => value.split_at(i),
        None => ("", value),
    };
    if !head.is_empty() {
        let _ = write!(out, " \"{head}\"");
    }
    for chunk in key.as_bytes().chunks(255) {
        let _ = write!(out, " \"{}\"", String::from_utf8_lossy(chunk));
    }
    out.push_str(" )");
    out
}

/// The signing domains that must always have an active key: each protected apex (unless
/// mapped elsewhere) and every configured `d=`.
pub fn required_domains(keys: &KeySet, protected: &[String]) -> Vec<String> {
    let mut d: Vec<String> = protected.to_vec();
    d.extend(keys.config.signing_domains.iter().map(|(_, d)| d.clone()));
    d.sort();
    d.dedup();
    d
}

/// Schedule problems: errors (a required domain without an active key, now or later) and
/// warnings (a selector that activates too soon after its DNS record is published).
pub fn check_schedule(
    keys: &KeySet,
    required: &[String],
    min_lead: i64,
    now: i64,
) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for domain in required {
        match keys.schedule.first_gap(domain, now) {
            Some(t) if t <= now => errors.push(format!(
                "{domain}: no active DKIM key now ({})",
                format_time(now)
            )),
            Some(t) => errors.push(format!(
                "{domain}: no active DKIM key from {}",
                format_time(t)
            )),
            None => {}
        }
    }
    for s in &keys.schedule.selectors {
        if s.is_retired(now) {
            continue;
        }
        let lead = s.active_from - s.publish;
        if lead < min_lead {
            warnings.push(format!(
                "selector {} of {} (line {}) activates {} h after its DNS record is published; caches may not have it yet (at least {} h advised)",
                s.name,
                s.domain,
                s.line,
                lead / 3600,
                min_lead / 3600
            ));
        }
    }
    (errors, warnings)
}

/// `keys dns`: records that must be in DNS now, records to publish later, records to remove.
pub fn dns_report(keys: &KeySet, now: i64) -> String {
    let mut must = String::new();
    let mut later = String::new();
    let mut remove = String::new();
    for s in &keys.schedule.selectors {
        let removable = s.retire_at.is_some_and(|r| r + RECORD_GRACE <= now);
        if removable {
            let _ = writeln!(
                remove,
                "{}._domainkey.{}. (retired {})",
                s.name,
                s.domain,
                format_time(s.retire_at.unwrap_or(now))
            );
            continue;
        }
        let record = keys
            .entries()
            .iter()
            .find(|e| e.selector == *s)
            .map(|e| txt_record(&s.name, &s.domain, &e.dns_record))
            .unwrap_or_else(|| {
                format!(
                    "; {}._domainkey.{}. retired, record kept until {}",
                    s.name,
                    s.domain,
                    format_time(s.retire_at.unwrap_or(now) + RECORD_GRACE)
                )
            });
        if s.publish <= now {
            let _ = writeln!(must, "{record}");
        } else {
            let _ = writeln!(later, "; publish at {}\n{record}", format_time(s.publish));
        }
    }
    let mut out = String::from("; must be in DNS now\n");
    out.push_str(if must.is_empty() { "; (none)\n" } else { &must });
    out.push_str("\n; to publish later\n");
    out.push_str(if later.is_empty() {
        "; (none)\n"
    } else {
        &later
    });
    out.push_str("\n; may be removed\n");
    out.push_str(if remove.is_empty() {
        "; (none)\n"
    } else {
        &remove
    });
    out
}

fn describe(s: &Selector) -> String {
    format!("{} ({})", s.name, s.algorithm)
}

/// `keys status`: per domain, what signs now, what is next and when, what is overdue.
pub fn status_report(keys: &KeySet, required: &[String], now: i64) -> String {
    let mut domains: Vec<String> = keys
        .schedule
        .domains()
        .into_iter()
        .map(str::to_string)
        .collect();
    domains.extend(required.iter().cloned());
    domains.sort();
    domains.dedup();
    let mut out = String::new();
    for domain in &domains {
        let _ = writeln!(out, "{domain}");
        let active = keys.schedule.active_all(domain, now);
        if active.is_empty() {
            let _ = writeln!(
                out,
                "  signing now: NOTHING (messages from this domain are tempfailed)"
            );
        }
        for s in &active {
            let _ = writeln!(
                out,
                "  signing now: {} since {}",
                describe(s),
                format_time(s.active_from)
            );
            if now - s.active_from > MAX_KEY_AGE
                && keys
                    .schedule
                    .active(domain, s.algorithm, s.retire_at.unwrap_or(i64::MAX))
                    .is_none_or(|n| n == *s)
            {
                let _ = writeln!(
                    out,
                    "  overdue: {} has signed for more than {} days with no successor scheduled",
                    s.name,
                    MAX_KEY_AGE / 86_400
                );
            }
        }
        match keys.schedule.next_change(domain, now) {
            Some(t) => {
                let next: Vec<String> = [Algorithm::RsaSha256, Algorithm::Ed25519Sha256]
                    .into_iter()
                    .filter_map(|a| keys.schedule.active(domain, a, t).map(describe))
                    .collect();
                let next = if next.is_empty() {
                    "NOTHING".to_string()
                } else {
                    next.join(", ")
                };
                let _ = writeln!(out, "  next: at {} signing with {next}", format_time(t));
            }
            None => {
                let _ = writeln!(out, "  next: no change scheduled");
            }
        }
        for s in keys
            .schedule
            .selectors
            .iter()
            .filter(|s| s.domain == *domain)
        {
            if s.retire_at.is_some_and(|r| r + RECORD_GRACE <= now) {
                let _ = writeln!(
                    out,
                    "  overdue: remove {}._domainkey.{} from DNS and selectors.toml (retired {})",
                    s.name,
                    domain,
                    format_time(s.retire_at.unwrap_or(now))
                );
            }
        }
    }
    out
}

/// A selectors.toml stanza for a new selector.
pub fn stanza(
    domain: &str,
    name: &str,
    algorithm: Algorithm,
    key: &str,
    publish: i64,
    active_from: i64,
) -> String {
    format!(
        "\n[[selector]]\ndomain = \"{domain}\"\nname = \"{name}\"\nalgorithm = \"{}\"\nkey = \"{key}\"\npublish = {}\nactive_from = {}\n",
        algorithm.tag(),
        format_time(publish),
        format_time(active_from)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_records_are_split_at_255_bytes() {
        let p = "A".repeat(400);
        let record = txt_record("s1", "tugraz.at", &format!("v=DKIM1; k=rsa; p={p}"));
        assert!(record.starts_with("s1._domainkey.tugraz.at. IN TXT ( \"v=DKIM1; k=rsa; \" \"p="));
        let strings: Vec<&str> = record.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.concat(), format!("v=DKIM1; k=rsa; p={p}"));
        assert!(strings.iter().all(|s| s.len() <= 255));
    }
}
