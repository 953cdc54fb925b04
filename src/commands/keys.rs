//! `relayguard keys`: generate keys, print DNS records and rotation status, publish records
//! (RFC 2136) and run a rotation pass.

use super::{block_on, load_with_keys, parse_time};
use crate::clock::unix_now;
use crate::dkim::keys::KeyKind;
use crate::dkim::schedule::format_time;
use crate::dkim::tooling;
use crate::runtime::assemble::Loaded;
use std::path::Path;

/// DKIM key tooling: generate keys, print DNS records, show rotation status.
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a private key (mode 0600) and add its selector to selectors.toml.
    Generate {
        /// Signing domain (d=).
        #[arg(long)]
        domain: String,
        /// Selector name (s=).
        #[arg(long)]
        selector: String,
        /// rsa-2048, rsa-3072, rsa-4096 or ed25519.
        #[arg(long, default_value = "rsa-2048")]
        algorithm: String,
        /// When the DNS record goes out (RFC 3339; default now).
        #[arg(long)]
        publish: Option<String>,
        /// When it starts signing (RFC 3339; default publish + 48 h).
        #[arg(long)]
        active_from: Option<String>,
        /// Print the stanza instead of appending it to selectors.toml.
        #[arg(long)]
        print: bool,
    },
    /// Give every protected domain without any selector an RSA-2048 key that signs at once
    /// (the package runs this on first install; publish the records with `keys dns`).
    Bootstrap,
    /// Print the DNS TXT records that must be published now, later, and may be removed.
    Dns,
    /// Show per domain what signs now, what is next and when, and what is overdue.
    Status,
    /// Put the records of selectors whose `publish` has come into the zone and take out
    /// those retired past the grace period (RFC 2136, [dkim.publish]).
    Publish {
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// One rotation pass ([dkim.rotation]): make the successor keys that are due, set
    /// retire_at, remove long-retired selectors, then publish (for a cron job or timer on
    /// one host of a cluster).
    Rotate {
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a keys command.
pub fn run(config: &Path, command: KeysCommand) -> Result<(), String> {
    let now = unix_now();
    match command {
        KeysCommand::Generate {
            domain,
            selector,
            algorithm,
            publish,
            active_from,
            print,
        } => {
            let when = (publish.as_deref(), active_from.as_deref());
            generate(config, &domain, &selector, &algorithm, when, print, now)
        }
        KeysCommand::Bootstrap => {
            let loaded = load_with_keys(config)?;
            let dkim = loaded.config.dkim.as_ref().expect("dkim configured");
            let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
            let made = tooling::bootstrap(
                keys,
                loaded.snapshot.policy.protected.apexes(),
                &dkim.keys_dir,
                &dkim.selectors,
                now,
            )?;
            for (domain, key) in made {
                eprintln!(
                    "{domain}: generated {}; publish its record: relayguard keys dns",
                    key.path.display()
                );
            }
            Ok(())
        }
        KeysCommand::Dns => {
            let loaded = load_with_keys(config)?;
            let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
            let live = live_dns(&loaded);
            print!("{}", tooling::dns_report(keys, now, live.as_ref()));
            Ok(())
        }
        KeysCommand::Publish { dry_run } => rotation_pass(config, false, dry_run, now),
        KeysCommand::Rotate { dry_run } => rotation_pass(config, true, dry_run, now),
        KeysCommand::Status => {
            let loaded = load_with_keys(config)?;
            let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
            let required =
                tooling::required_domains(keys, loaded.snapshot.policy.protected.apexes());
            let live = live_dns(&loaded);
            print!(
                "{}",
                tooling::status_report(keys, &required, now, live.as_ref())
            );
            Ok(())
        }
    }
}

/// The key kind an `--algorithm` names.
fn key_kind(algorithm: &str) -> Result<KeyKind, String> {
    match algorithm {
        "rsa-2048" => Ok(KeyKind::Rsa(2048)),
        "rsa-3072" => Ok(KeyKind::Rsa(3072)),
        "rsa-4096" => Ok(KeyKind::Rsa(4096)),
        "ed25519" => Ok(KeyKind::Ed25519),
        other => Err(format!(
            "--algorithm `{other}`: use rsa-2048, rsa-3072, rsa-4096 or ed25519"
        )),
    }
}

/// `keys generate`: a key file, its stanza (appended or printed) and its DNS record;
/// `when` is `--publish` and `--active-from`.
fn generate(
    config: &Path,
    domain: &str,
    selector: &str,
    algorithm: &str,
    when: (Option<&str>, Option<&str>),
    print: bool,
    now: i64,
) -> Result<(), String> {
    let loaded = load_with_keys(config)?;
    let dkim = loaded.config.dkim.as_ref().expect("dkim configured");
    let kind = key_kind(algorithm)?;
    let domain =
        crate::policy::domains::normalise_domain(domain).map_err(|e| format!("--domain: {e}"))?;
    let publish = when.0.map(parse_time).transpose()?.unwrap_or(now);
    let active_from = when
        .1
        .map(parse_time)
        .transpose()?
        .unwrap_or(publish + dkim.min_publish_lead);
    let key = tooling::create_key(
        &dkim.keys_dir,
        &domain,
        selector,
        kind,
        publish,
        active_from,
    )?;
    eprintln!("wrote {} (mode 0600)", key.path.display());
    if print {
        print!("{}", key.stanza);
    } else {
        tooling::append_stanza(&dkim.selectors, &key.stanza)?;
        eprintln!("added selector {selector} to {}", dkim.selectors.display());
    }
    println!("{}", key.record);
    eprintln!(
        "publish the record by {}; it signs from {}",
        format_time(publish),
        format_time(active_from)
    );
    Ok(())
}

/// `keys rotate` and `keys publish`: the steps due (rotation only), then the zone made to
/// match; every event printed (and audited when the audit log is configured).
fn rotation_pass(config: &Path, rotate: bool, dry_run: bool, now: i64) -> Result<(), String> {
    use crate::dkim::rotation;
    let loaded = load_with_keys(config)?;
    let dkim = loaded.config.dkim.clone().expect("dkim configured");
    if !rotate && dkim.publish.is_none() {
        return Err(format!("{}: no [dkim.publish] section", config.display()));
    }
    // The zone as the schedule wants it (records of long-retired selectors go while their
    // stanzas still name them), the rotation steps, and the zone again for new keys.
    let publish = |loaded: &Loaded| -> Result<Vec<rotation::KeyEvent>, String> {
        let Some(settings) = &dkim.publish else {
            return Ok(Vec::new());
        };
        let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
        let resolver = crate::dns::Resolver::new(&dkim.dns.nameservers, dkim.dns.timeout)?;
        let zones = loaded.snapshot.policy.protected.apexes().to_vec();
        let updater = rotation::updater(settings, &zones, dkim.dns.timeout)?;
        block_on(rotation::publish(
            keys,
            &resolver,
            &updater,
            settings.remove_after,
            now,
            dry_run,
        ))
    };
    let mut events = publish(&loaded)?;
    if rotate {
        let settings = dkim
            .rotation
            .as_ref()
            .ok_or_else(|| format!("{}: no [dkim.rotation] section", config.display()))?;
        let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
        let remove_after = dkim.publish.as_ref().map_or(7 * 86_400, |p| p.remove_after);
        let steps = rotation::plan(
            &keys.schedule,
            settings,
            dkim.min_publish_lead,
            remove_after,
            now,
        );
        if dry_run {
            for step in &steps {
                println!("would: {step:?}");
            }
        } else if !steps.is_empty() {
            events.extend(rotation::apply(
                &steps,
                &dkim.selectors,
                &dkim.keys_dir,
                settings.key_bits,
                now,
            )?);
            events.extend(publish(&load_with_keys(config)?)?);
        }
    }
    report_events(&loaded, &events, dry_run, now);
    Ok(())
}

/// Prints the key events of a pass and, unless it was a dry run, audits them.
fn report_events(
    loaded: &Loaded,
    events: &[crate::dkim::rotation::KeyEvent],
    dry_run: bool,
    now: i64,
) {
    let audit = (!dry_run)
        .then(|| loaded.config.audit.clone())
        .flatten()
        .map(crate::audit::writer::AuditLog::open);
    // The running service's name, so the audit trail names one relay, not two.
    let host = loaded.config.host();
    for event in events {
        let verb = if dry_run { "would: " } else { "" };
        println!(
            "{verb}{} {} {}: {}",
            event.event, event.domain, event.selector, event.detail
        );
        if let Some(audit) = &audit {
            let _ = audit.event(event, &crate::clock::rfc3339_ms(now * 1000), &host);
        }
    }
    if events.is_empty() {
        println!("nothing to do");
    } else if let Some(audit) = &audit {
        // Sealed at once: the running relay's next checkpoint may be a while away.
        let _ = audit.checkpoint(&crate::clock::rfc3339_ms(now * 1000), &host);
    }
}

/// What DNS serves for every loaded key now, when record checks are configured
/// (`require_dns` or `[dkim.dns]`): `published`, `missing`, … or `unreachable (why)`.
pub fn live_dns(loaded: &Loaded) -> Option<tooling::LiveDns> {
    let dkim = loaded.config.dkim.as_ref()?;
    if !dkim.dns.check {
        return None;
    }
    let keys = loaded.snapshot.keys.as_ref()?;
    let lookup = async {
        let resolver = crate::dns::Resolver::new(&dkim.dns.nameservers, dkim.dns.timeout)?;
        let mut live = tooling::LiveDns::new();
        for entry in keys.entries() {
            use crate::dns::TxtLookup;
            let s = &entry.selector;
            let name = crate::dkim::record::record_name(&s.name, &s.domain);
            let state = match resolver.txt(&name).await {
                Ok(records) => {
                    crate::dkim::record::judge(records.as_deref(), s.algorithm, &entry.public_key)
                        .to_string()
                }
                Err(e) => format!("unreachable ({e})"),
            };
            live.insert((s.domain.clone(), s.name.clone()), state);
        }
        Ok(live)
    };
    block_on(lookup).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_are_named_as_the_help_says() {
        assert_eq!(key_kind("ed25519"), Ok(KeyKind::Ed25519));
        assert_eq!(key_kind("rsa-3072"), Ok(KeyKind::Rsa(3072)));
        assert_eq!(
            key_kind("rsa-1024"),
            Err("--algorithm `rsa-1024`: use rsa-2048, rsa-3072, rsa-4096 or ed25519".into())
        );
    }
}
