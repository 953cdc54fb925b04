//! Key tooling for operators: DNS records to publish or remove, rotation status, schedule
//! checks (pure: every function takes `now`), and making keys with their stanzas.

use super::keys::{self, KeyKind};
use super::record::DnsState;
use super::schedule::{Algorithm, Selector, format_time};
use super::signer::{KeySet, Note, SignerEntry};
use std::fmt::Write;
use std::path::{Path, PathBuf};

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

/// What DNS serves for each selector (domain, name), as a lookup just found it.
pub type LiveDns = std::collections::HashMap<(String, String), String>;

/// `keys dns`: records that must be in DNS now, records to publish later, records to remove;
/// with `live`, each marked with what DNS serves now.
pub fn dns_report(keys: &KeySet, now: i64, live: Option<&LiveDns>) -> String {
    let mark = |s: &Selector| {
        live.and_then(|l| l.get(&(s.domain.clone(), s.name.clone())))
            .map(|state| format!("; DNS now: {state}\n"))
            .unwrap_or_default()
    };
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
            let _ = write!(must, "{}", mark(s));
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

/// `keys status`: per domain, what signs now, what is next and when, what is overdue; with
/// `live`, what DNS serves for each selector now.
pub fn status_report(
    keys: &KeySet,
    required: &[String],
    now: i64,
    live: Option<&LiveDns>,
) -> String {
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
        signing_now(&mut out, keys, domain, now, live);
        next_change(&mut out, keys, domain, now);
        let selectors = || {
            keys.schedule
                .selectors
                .iter()
                .filter(|s| s.domain == *domain)
        };
        if let Some(live) = live {
            for s in selectors() {
                if let Some(state) = live.get(&(s.domain.clone(), s.name.clone())) {
                    let _ = writeln!(
                        out,
                        "  dns: {}._domainkey.{} {state} (checked {})",
                        s.name,
                        domain,
                        format_time(now)
                    );
                }
            }
        }
        for s in selectors() {
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

/// What signs for `domain` now, what waits and why, and keys signing too long.
fn signing_now(out: &mut String, keys: &KeySet, domain: &str, now: i64, live: Option<&LiveDns>) {
    let (active, waiting) = match (keys.config.require_dns, live) {
        (true, Some(live)) => chosen_by_dns(keys, domain, now, live),
        _ => (keys.schedule.active_all(domain, now), Vec::new()),
    };
    if active.is_empty() {
        let _ = writeln!(
            out,
            "  signing now: NOTHING (messages from this domain are tempfailed)"
        );
    }
    for line in &waiting {
        let _ = writeln!(out, "{line}");
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
}

/// With require_dns, what signs is what the service would choose from the records DNS
/// serves now (not the schedule alone); a selector that waits says so, and why.
fn chosen_by_dns<'k>(
    keys: &'k KeySet,
    domain: &str,
    now: i64,
    live: &LiveDns,
) -> (Vec<&'k Selector>, Vec<String>) {
    let live_state = |entry: &SignerEntry| {
        let state = live.get(&(entry.selector.domain.clone(), entry.selector.name.clone()))?;
        Some(match state.as_str() {
            "published" => DnsState::Published,
            "revoked" => DnsState::Revoked,
            "missing" => DnsState::Missing,
            other => DnsState::Mismatch(other.to_string()),
        })
    };
    let signers = keys.signers(domain, now, &live_state);
    let waiting = signers
        .notes
        .iter()
        .map(|note| match note {
            Note::Waiting { selector, .. } => {
                let state = live
                    .get(&(domain.to_string(), selector.clone()))
                    .map_or("not checked", String::as_str);
                format!(
                    "  waiting: {selector} is due by the schedule but DNS serves {state} for {}; it signs once its record is published",
                    super::record::record_name(selector, domain)
                )
            }
            Note::PastRetire { selector } => format!(
                "  past retire_at: {selector} signs on because nothing newer is published"
            ),
        })
        .collect();
    let active = keys
        .schedule
        .selectors
        .iter()
        .filter(|s| {
            signers
                .entries
                .iter()
                .any(|e| e.selector.domain == s.domain && e.selector.name == s.name)
        })
        .collect();
    (active, waiting)
}

/// When the schedule next changes what signs for `domain`, and to what.
fn next_change(out: &mut String, keys: &KeySet, domain: &str, now: i64) {
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

/// A key made by [`create_key`]: its file, its `selectors.toml` stanza and its TXT record.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The private key file (mode 0600).
    pub path: PathBuf,
    /// The selector's stanza for `selectors.toml`.
    pub stanza: String,
    /// The DNS TXT record to publish, in zone-file syntax.
    pub record: String,
}

/// Makes a key for `selector` of `domain` in `keys_dir` (file `DOMAIN.SELECTOR.pem`, mode
/// 0600, never overwriting) and describes it; the one place keys are generated.
pub fn create_key(
    keys_dir: &Path,
    domain: &str,
    selector: &str,
    kind: KeyKind,
    publish: i64,
    active_from: i64,
) -> Result<NewKey, String> {
    let file_name = format!("{domain}.{selector}.pem");
    if !keys_dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(keys_dir)
            .map_err(|e| format!("{}: {e}", keys_dir.display()))?;
    }
    let path = keys_dir.join(&file_name);
    let pem = keys::generate(kind)?;
    keys::write_new(&path, &pem).map_err(|e| e.to_string())?;
    let key = keys::parse(&path, pem.as_bytes(), kind.algorithm()).map_err(|e| e.to_string())?;
    Ok(NewKey {
        stanza: stanza(
            domain,
            selector,
            kind.algorithm(),
            &file_name,
            publish,
            active_from,
        ),
        record: txt_record(selector, domain, &key.dns_record()),
        path,
    })
}

/// Appends a stanza to `selectors.toml`.
pub fn append_stanza(selectors: &Path, stanza: &str) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(selectors)
        .and_then(|mut f| f.write_all(stanza.as_bytes()))
        .map_err(|e| format!("{}: {e}", selectors.display()))
}

/// Gives every required signing domain without any selector an RSA-2048 key that signs at
/// once (`relayguard keys bootstrap`, run by the package on first install): [`create_key`]
/// per domain, appended to the schedule.
pub fn bootstrap(
    keys: &KeySet,
    protected: &[String],
    keys_dir: &Path,
    selectors: &Path,
    now: i64,
) -> Result<Vec<(String, NewKey)>, String> {
    let month = jiff::Timestamp::from_second(now)
        .map(|t| t.strftime("%Y%m").to_string())
        .map_err(|e| e.to_string())?;
    let mut made = Vec::new();
    for domain in required_domains(keys, protected) {
        if keys.schedule.selectors.iter().any(|s| s.domain == domain) {
            continue;
        }
        let key = create_key(
            keys_dir,
            &domain,
            &format!("rg{month}"),
            KeyKind::Rsa(2048),
            now,
            now,
        )?;
        append_stanza(selectors, &key.stanza)?;
        made.push((domain, key));
    }
    Ok(made)
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
