//! Rotation that runs itself: which successor keys are due, which selectors retire and which
//! go (pure: [`plan`]); the schedule file edited to match ([`apply`], comments kept, written
//! atomically); the zone made to match the schedule ([`publish`], RFC 2136). Every step is
//! a [`KeyEvent`] for the log and the audit trail.

use super::keys::KeyKind;
use super::record::{DnsState, judge, record_name};
use super::schedule::{Algorithm, Schedule, format_time};
use super::signer::KeySet;
use crate::dns::TxtLookup;
use crate::dns::update::ZoneUpdate;
use std::path::{Path, PathBuf};

/// `[dkim.rotation]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationSettings {
    /// A selector's successor signs this long after it (seconds).
    pub every: i64,
    /// Which algorithms rotate.
    pub algorithms: Vec<Algorithm>,
    /// How long before it is due a successor is made (and its record published).
    pub lead: i64,
    /// How long the old selector signs on next to its successor.
    pub overlap: i64,
    /// RSA modulus size of new keys.
    pub key_bits: usize,
    /// Whether this service rotates by itself (one host per cluster).
    pub leader: bool,
    /// Selector names are PREFIX + the activation date + `r` (RSA) or `e` (Ed25519).
    pub prefix: String,
}

/// `[dkim.publish]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSettings {
    /// The zones' primary.
    pub server: std::net::SocketAddr,
    /// The TSIG key file (tsig-keygen's output).
    pub key_file: PathBuf,
    /// Zones relayguard may update.
    pub zones: Vec<String>,
    /// TTL of published records.
    pub ttl: u32,
    /// A retired selector's record (and key) goes this long after its `retire_at`.
    pub remove_after: i64,
    /// Whether the service publishes and removes by itself.
    pub automatic: bool,
}

/// One step of the rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make a successor key and its stanza.
    Generate {
        /// d=.
        domain: String,
        /// Algorithm.
        algorithm: Algorithm,
        /// Its selector name.
        selector: String,
        /// When it signs.
        active_from: i64,
    },
    /// Give a selector its `retire_at`.
    Retire {
        /// d=.
        domain: String,
        /// s=.
        selector: String,
        /// When it stops signing.
        at: i64,
    },
    /// Drop a long-retired selector's stanza and key file.
    Remove {
        /// d=.
        domain: String,
        /// s=.
        selector: String,
        /// Its key file.
        key: PathBuf,
    },
}

/// A rotation event: logged, and written to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyEvent {
    /// `key_generated`, `key_published`, `key_activated`, `key_retired`, `key_removed`,
    /// `key_unpublished`.
    pub event: &'static str,
    /// d=.
    pub domain: String,
    /// s=.
    pub selector: String,
    /// What happened, in words.
    pub detail: String,
}

/// The steps due at `now`: per domain of the schedule and rotating algorithm, a successor
/// for the newest selector once it is within `lead` of being `every` old (activating when
/// due, never sooner than `min_lead` after its record goes out), with `retire_at` for the
/// newest one `overlap` after that; and the removal of selectors retired `remove_after` ago.
pub fn plan(
    schedule: &Schedule,
    rotation: &RotationSettings,
    min_lead: i64,
    remove_after: i64,
    now: i64,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for domain in schedule.domains() {
        for &algorithm in &rotation.algorithms {
            let Some(newest) = schedule
                .selectors
                .iter()
                .filter(|s| s.domain == domain && s.algorithm == algorithm)
                .max_by_key(|s| (s.active_from, s.line))
            else {
                continue;
            };
            let due = newest.active_from + rotation.every;
            if now < due - rotation.lead || newest.is_retired(now) {
                continue;
            }
            let active_from = due.max(now + min_lead);
            let selector =
                successor_name(schedule, domain, algorithm, &rotation.prefix, active_from);
            steps.push(Step::Generate {
                domain: domain.to_string(),
                algorithm,
                selector,
                active_from,
            });
            let at = active_from + rotation.overlap;
            if newest.retire_at.is_none_or(|r| r > at) {
                steps.push(Step::Retire {
                    domain: domain.to_string(),
                    selector: newest.name.clone(),
                    at,
                });
            }
        }
    }
    for s in &schedule.selectors {
        if s.retire_at.is_some_and(|r| r + remove_after <= now) {
            steps.push(Step::Remove {
                domain: s.domain.clone(),
                selector: s.name.clone(),
                key: s.key.clone(),
            });
        }
    }
    steps
}

fn successor_name(
    schedule: &Schedule,
    domain: &str,
    algorithm: Algorithm,
    prefix: &str,
    active_from: i64,
) -> String {
    let date = jiff::Timestamp::from_second(active_from)
        .map(|t| t.strftime("%Y%m%d").to_string())
        .unwrap_or_else(|_| active_from.to_string());
    let tag = match algorithm {
        Algorithm::RsaSha256 => "r",
        Algorithm::Ed25519Sha256 => "e",
    };
    let base = format!("{prefix}{date}{tag}");
    let taken = |name: &str| {
        schedule
            .selectors
            .iter()
            .any(|s| s.domain == domain && s.name == name)
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken(&name) {
        name = format!("{base}{n}");
        n += 1;
    }
    name
}

/// Carries out `steps`: new keys written (mode 0600) and their stanzas appended, `retire_at`
/// set, removed stanzas dropped; `selectors.toml` is rewritten once, through a temporary file
/// and a rename, comments kept; removed key files go after it. Returns the events.
pub fn apply(
    steps: &[Step],
    selectors: &Path,
    keys_dir: &Path,
    key_bits: usize,
    now: i64,
) -> Result<Vec<KeyEvent>, String> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", selectors.display());
    let text = std::fs::read_to_string(selectors).map_err(|e| at(&e))?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| at(&e))?;
    let mut events = Vec::new();
    let mut appended = String::new();
    let mut removed_keys = Vec::new();
    for step in steps {
        let event = match step {
            Step::Generate {
                domain,
                algorithm,
                selector,
                active_from,
            } => {
                let kind = match algorithm {
                    Algorithm::RsaSha256 => KeyKind::Rsa(key_bits),
                    Algorithm::Ed25519Sha256 => KeyKind::Ed25519,
                };
                let key = super::tooling::create_key(
                    keys_dir,
                    domain,
                    selector,
                    kind,
                    now,
                    *active_from,
                )?;
                appended.push_str(&key.stanza);
                KeyEvent {
                    event: "key_generated",
                    domain: domain.clone(),
                    selector: selector.clone(),
                    detail: format!(
                        "{} key {}, signs from {}",
                        algorithm.tag(),
                        key.path.display(),
                        format_time(*active_from)
                    ),
                }
            }
            Step::Retire {
                domain,
                selector,
                at: when,
            } => retire(&mut doc, domain, selector, *when).map_err(|e| at(&e))?,
            Step::Remove {
                domain,
                selector,
                key,
            } => {
                removed_keys.push(key.clone());
                remove(&mut doc, domain, selector, key)
            }
        };
        events.push(event);
    }
    let mut text = doc.to_string();
    if !appended.is_empty() {
        if !text.is_empty() && !text.ends_with("\n\n") {
            text.push('\n');
        }
        text.push_str(&appended);
    }
    write_atomically(selectors, &text).map_err(|e| at(&e))?;
    for key in removed_keys {
        match std::fs::remove_file(&key) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", key.display())),
        }
    }
    Ok(events)
}

/// Sets `retire_at` of a selector's stanza.
fn retire(
    doc: &mut toml_edit::DocumentMut,
    domain: &str,
    selector: &str,
    when: i64,
) -> Result<KeyEvent, String> {
    let table = stanza_mut(doc, domain, selector)
        .ok_or_else(|| format!("no selector {selector} of {domain}"))?;
    let datetime: toml_edit::Datetime = format_time(when)
        .parse()
        .map_err(|e: toml_edit::DatetimeParseError| e.to_string())?;
    table["retire_at"] = toml_edit::value(datetime);
    Ok(KeyEvent {
        event: "key_retired",
        domain: domain.to_string(),
        selector: selector.to_string(),
        detail: format!("retires at {}", format_time(when)),
    })
}

/// Drops a selector's stanza (its key file goes once the file is rewritten).
fn remove(doc: &mut toml_edit::DocumentMut, domain: &str, selector: &str, key: &Path) -> KeyEvent {
    if let Some(array) = doc
        .get_mut("selector")
        .and_then(|s| s.as_array_of_tables_mut())
    {
        array.retain(|t| {
            !(t.get("domain").and_then(|d| d.as_str()) == Some(domain)
                && t.get("name").and_then(|n| n.as_str()) == Some(selector))
        });
    }
    KeyEvent {
        event: "key_removed",
        domain: domain.to_string(),
        selector: selector.to_string(),
        detail: format!("stanza and key file {} removed", key.display()),
    }
}

fn stanza_mut<'d>(
    doc: &'d mut toml_edit::DocumentMut,
    domain: &str,
    selector: &str,
) -> Option<&'d mut toml_edit::Table> {
    doc.get_mut("selector")?
        .as_array_of_tables_mut()?
        .iter_mut()
        .find(|t| {
            t.get("domain").and_then(|d| d.as_str()) == Some(domain)
                && t.get("name").and_then(|n| n.as_str()) == Some(selector)
        })
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename,
/// keeping the file's mode and owner: a reader sees the old file or the new one, never half.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path)?;
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The updater `[dkim.publish]` describes: its TSIG key read from `key_file`, its zones
/// (default: `default_zones`, the protected domains).
pub fn updater(
    settings: &PublishSettings,
    default_zones: &[String],
    timeout: std::time::Duration,
) -> Result<crate::dns::update::Updater, String> {
    let text = std::fs::read_to_string(&settings.key_file)
        .map_err(|e| format!("{}: {e}", settings.key_file.display()))?;
    let key = crate::dns::update::TsigKey::parse(&text)
        .map_err(|e| format!("{}: {e}", settings.key_file.display()))?;
    let zones = if settings.zones.is_empty() {
        default_zones
    } else {
        &settings.zones
    };
    crate::dns::update::Updater::new(settings.server, zones, key, settings.ttl, timeout)
}

/// Makes the zone match the schedule at `now`: the record of every selector whose `publish`
/// has come (until `remove_after` past its `retire_at`) is put in where DNS does not serve
/// it yet, and the record of a selector retired longer than that is taken out. With
/// `dry_run` nothing is changed; the events say what would be. A lookup that fails stops the
/// pass (nothing is changed blindly).
pub async fn publish(
    keys: &KeySet,
    lookup: &dyn TxtLookup,
    zone: &dyn ZoneUpdate,
    remove_after: i64,
    now: i64,
    dry_run: bool,
) -> Result<Vec<KeyEvent>, String> {
    let mut events = Vec::new();
    for s in &keys.schedule.selectors {
        let name = record_name(&s.name, &s.domain);
        let gone = s.retire_at.is_some_and(|r| r + remove_after <= now);
        if now < s.publish {
            continue;
        }
        let found = lookup
            .txt(&name)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        if gone {
            if found.as_ref().is_some_and(|r| !r.is_empty()) {
                if !dry_run {
                    zone.delete_txt(&name).await?;
                }
                events.push(KeyEvent {
                    event: "key_unpublished",
                    domain: s.domain.clone(),
                    selector: s.name.clone(),
                    detail: format!("{name} TXT removed"),
                });
            }
            continue;
        }
        let Some(entry) = keys.entries().iter().find(|e| e.selector == *s) else {
            continue;
        };
        let state = judge(found.as_deref(), s.algorithm, &entry.public_key);
        if state == DnsState::Published {
            continue;
        }
        if !dry_run {
            zone.replace_txt(&name, &entry.dns_record).await?;
        }
        events.push(KeyEvent {
            event: "key_published",
            domain: s.domain.clone(),
            selector: s.name.clone(),
            detail: format!("{name} TXT \"{}\" (was {state})", entry.dns_record),
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn schedule(text: &str) -> Schedule {
        Schedule::parse(Path::new("selectors.toml"), text, Path::new("/keys")).unwrap()
    }

    fn rotation() -> RotationSettings {
        RotationSettings {
            every: 180 * DAY,
            algorithms: vec![Algorithm::RsaSha256],
            lead: 14 * DAY,
            overlap: 7 * DAY,
            key_bits: 2048,
            leader: true,
            prefix: "rg".into(),
        }
    }

    const ONE: &str = "[[selector]]\ndomain = \"tugraz.at\"\nname = \"s1\"\nalgorithm = \"rsa-sha256\"\nkey = \"s1.pem\"\npublish = 2026-01-01T00:00:00Z\nactive_from = 2026-01-03T00:00:00Z\n";
    /// 2026-01-03T00:00:00Z.
    const S1: i64 = 1_767_398_400;

    #[test]
    fn a_successor_is_made_lead_days_before_it_is_due() {
        let s = schedule(ONE);
        assert!(plan(&s, &rotation(), 2 * DAY, 7 * DAY, S1 + 165 * DAY).is_empty());
        let steps = plan(&s, &rotation(), 2 * DAY, 7 * DAY, S1 + 166 * DAY);
        assert_eq!(
            steps,
            [
                Step::Generate {
                    domain: "tugraz.at".into(),
                    algorithm: Algorithm::RsaSha256,
                    selector: "rg20260702r".into(),
                    active_from: S1 + 180 * DAY,
                },
                Step::Retire {
                    domain: "tugraz.at".into(),
                    selector: "s1".into(),
                    at: S1 + 187 * DAY,
                }
            ]
        );
        // Late (a month past due): it still waits min_lead for its record to spread.
        let late = plan(&s, &rotation(), 2 * DAY, 7 * DAY, S1 + 210 * DAY);
        assert!(
            matches!(&late[0], Step::Generate { active_from, .. } if *active_from == S1 + 212 * DAY)
        );
    }

    #[test]
    fn retired_selectors_go_after_the_grace_period_and_names_do_not_collide() {
        let text = format!(
            "{ONE}retire_at = 2026-07-09T00:00:00Z\n\n[[selector]]\ndomain = \"tugraz.at\"\nname = \"rg20260702r\"\nalgorithm = \"rsa-sha256\"\nkey = \"n.pem\"\npublish = 2026-06-18T00:00:00Z\nactive_from = 2026-07-02T00:00:00Z\n"
        );
        let s = schedule(&text);
        let retire = 1_783_555_200; // 2026-07-09
        assert!(plan(&s, &rotation(), 2 * DAY, 7 * DAY, retire + 6 * DAY).is_empty());
        assert_eq!(
            plan(&s, &rotation(), 2 * DAY, 7 * DAY, retire + 7 * DAY),
            [Step::Remove {
                domain: "tugraz.at".into(),
                selector: "s1".into(),
                key: "/keys/s1.pem".into(),
            }]
        );
        assert_eq!(
            successor_name(&s, "tugraz.at", Algorithm::RsaSha256, "rg", 1_782_950_400),
            "rg20260702r2"
        );
    }

    #[test]
    fn apply_keeps_comments_and_writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let selectors = dir.path().join("selectors.toml");
        std::fs::write(
            &selectors,
            format!("# the schedule\n{ONE}# s1's comment stays\n"),
        )
        .unwrap();
        let events = apply(
            &[
                Step::Generate {
                    domain: "tugraz.at".into(),
                    algorithm: Algorithm::Ed25519Sha256,
                    selector: "rg20260702e".into(),
                    active_from: S1 + 180 * DAY,
                },
                Step::Retire {
                    domain: "tugraz.at".into(),
                    selector: "s1".into(),
                    at: S1 + 187 * DAY,
                },
            ],
            &selectors,
            dir.path(),
            2048,
            S1 + 166 * DAY,
        )
        .unwrap();
        assert_eq!(
            events.iter().map(|e| e.event).collect::<Vec<_>>(),
            ["key_generated", "key_retired"]
        );
        let text = std::fs::read_to_string(&selectors).unwrap();
        assert!(text.starts_with("# the schedule\n"), "{text}");
        assert!(text.contains("# s1's comment stays"), "{text}");
        assert!(text.contains("retire_at = 2026-07-09T00:00:00Z"), "{text}");
        let s = Schedule::parse(&selectors, &text, dir.path()).unwrap();
        assert_eq!(s.selectors.len(), 2);
        assert!(dir.path().join("tugraz.at.rg20260702e.pem").exists());
        let events = apply(
            &[Step::Remove {
                domain: "tugraz.at".into(),
                selector: "rg20260702e".into(),
                key: dir.path().join("tugraz.at.rg20260702e.pem"),
            }],
            &selectors,
            dir.path(),
            2048,
            S1,
        )
        .unwrap();
        assert_eq!(events[0].event, "key_removed");
        assert!(!dir.path().join("tugraz.at.rg20260702e.pem").exists());
        let text = std::fs::read_to_string(&selectors).unwrap();
        assert!(!text.contains("rg20260702e"), "{text}");
        assert!(!selectors.with_extension("toml.tmp").exists());
    }
}
