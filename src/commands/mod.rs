//! The work behind each `relayguard` subcommand, apart from argument parsing (main.rs): one
//! file per command group, each taking its parsed arguments and the configuration path, so
//! that the library tests them without spawning the binary.

pub mod accounts;
pub mod audit;
pub mod bench;
pub mod check;
pub mod explain;
pub mod keys;

use crate::clock::unix_now;
use crate::runtime::assemble::{self, Loaded};
use std::path::Path;
use std::process::ExitCode;

/// Success, or the error on standard error and exit status 1.
pub fn exit_code(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration and every file it names.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let directories = crate::ldap::Directories::standalone();
    assemble::load(path, unix_now(), &directories).map_err(|e| e.to_string())
}

/// The configuration with its keys; an error when `[dkim]` is not configured.
pub fn load_with_keys(path: &Path) -> Result<Loaded, String> {
    let loaded = load(path)?;
    if loaded.snapshot.keys.is_none() {
        return Err(format!(
            "{}: no [dkim] section: signing is not configured",
            path.display()
        ));
    }
    Ok(loaded)
}

/// A single-threaded runtime for one command's I/O.
pub fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(future)
}

/// Prints a line of a report; a closed pipe (`| head`) ends it without a panic.
pub fn say(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints text as it is; a closed pipe is not an error worth a panic.
pub fn say_raw(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}

/// An RFC 3339 time (or `now`) as Unix seconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if text == "now" {
        return Ok(unix_now());
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_now() {
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600));
        assert!(parse_time("now").unwrap() > 1_767_225_600);
        let e = parse_time("yesterday").unwrap_err();
        assert!(e.starts_with("`yesterday` is not an RFC 3339 time"), "{e}");
    }

    #[test]
    fn a_configuration_without_dkim_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayguard.toml");
        std::fs::write(&path, "[domains]\nprotected = [\"tugraz.at\"]\n").unwrap();
        let e = load_with_keys(&path).err().expect("no keys");
        assert!(
            e.ends_with("no [dkim] section: signing is not configured"),
            "{e}"
        );
    }
}
