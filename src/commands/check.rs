//! `relayguard check-config`: the checks every reload runs, what the service user needs,
//! and whether DNS and the directory answer.

use super::{block_on, keys::live_dns, load};
use crate::clock::unix_now;
use crate::runtime::assemble::Loaded;
use std::path::Path;
use std::process::ExitCode;

/// What a check found: lines for standard output, warnings and errors.
#[derive(Debug, Default)]
pub struct Checked {
    /// What was looked up (DNS records, the directory) and the summary.
    pub lines: Vec<String>,
    /// Worth a look; the configuration still loads.
    pub warnings: Vec<String>,
    /// The configuration would be refused.
    pub errors: Vec<String>,
}

/// Checks `path` as the service running as `service_user` would load it; `offline` skips
/// DNS and the directory.
pub fn check(path: &Path, service_user: &str, offline: bool) -> Checked {
    let loaded = match load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            return Checked {
                errors: vec![e],
                ..Checked::default()
            };
        }
    };
    // The same checks every reload runs, then what the service user needs, then whether
    // the directory answers (a warning: it may be down now and fine later).
    let found = crate::runtime::preflight::check_config(&loaded, service_user, unix_now());
    let mut checked = Checked {
        warnings: found.warnings,
        errors: found.errors,
        ..Checked::default()
    };
    if !offline {
        live_checks(&loaded, &mut checked);
    }
    if checked.errors.is_empty() {
        let p = &loaded.snapshot.policy;
        checked.lines.push(format!(
            "{}: ok ({} protected domains, {} sender map entries, {} internal networks, {} DKIM keys)",
            path.display(),
            p.protected.apexes().len(),
            p.owners.map.len(),
            p.internal_networks.len(),
            loaded
                .snapshot
                .keys
                .as_ref()
                .map_or(0, |k| k.entries().len())
        ));
    }
    checked
}

/// What DNS serves for each selector, and whether the directory answers.
fn live_checks(loaded: &Loaded, checked: &mut Checked) {
    if let (Some(live), Some(keys)) = (live_dns(loaded), loaded.snapshot.keys.as_ref()) {
        let now = unix_now();
        for entry in keys.entries() {
            let s = &entry.selector;
            let state = &live[&(s.domain.clone(), s.name.clone())];
            checked
                .lines
                .push(format!("dns: {}._domainkey.{} {state}", s.name, s.domain));
            if s.is_active(now) && state != "published" {
                checked.warnings.push(format!(
                    "selector {} of {} signs by the schedule but DNS does not serve its key ({state}){}",
                    s.name,
                    s.domain,
                    if keys.config.require_dns {
                        "; the previous selector signs meanwhile"
                    } else {
                        "; receivers cannot verify its signatures (require_dns = true would wait)"
                    }
                ));
            }
        }
    }
    if let Some(directory) = loaded.directory.as_ref() {
        match block_on(directory.probe()) {
            Ok(what) => checked.lines.push(format!("directory: {what}")),
            Err(e) => checked.warnings.push(format!(
                "{}: {e}; until it answers, senders it must decide on get 451",
                directory.settings().origin.display()
            )),
        }
    }
}

/// Runs [`check`] and reports: lines on standard output, warnings and errors on standard
/// error; exit status 1 on any error.
pub fn run(path: &Path, service_user: &str, offline: bool) -> ExitCode {
    let checked = check(path, service_user, offline);
    // The lookups come first, as they happen; the summary last.
    let (summary, lookups) = match checked.errors.is_empty() {
        true => checked
            .lines
            .split_last()
            .map_or((None, &[][..]), |(s, l)| (Some(s), l)),
        false => (None, &checked.lines[..]),
    };
    for line in lookups {
        println!("{line}");
    }
    for w in &checked.warnings {
        eprintln!("warning: {w}");
    }
    for e in &checked.errors {
        eprintln!("error: {e}");
    }
    match summary {
        Some(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_configuration_checks_out() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/relayguard.toml"));
        let checked = check(path, "nobody-here", true);
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        let summary = checked.lines.last().unwrap();
        assert!(
            summary.ends_with(
                ": ok (2 protected domains, 3 sender map entries, 3 internal networks, 3 DKIM keys)"
            ),
            "{summary}"
        );
    }

    #[test]
    fn a_broken_configuration_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayguard.toml");
        std::fs::write(
            &path,
            "[limits]\n[limits.external]\nmessages_per_hour = 0\n",
        )
        .unwrap();
        let checked = check(&path, "nobody-here", true);
        assert_eq!(checked.errors.len(), 1);
        assert!(
            checked.errors[0]
                .contains("relayguard.toml:3: key `limits.external.messages_per_hour`"),
            "{:?}",
            checked.errors
        );
        assert!(checked.lines.is_empty());
    }
}
