//! `relayguard audit`: reports per login, the hash chain walked, checkpoint keys made.

use super::{exit_code, parse_time, say, say_raw};
use crate::audit::chain::{CheckpointKey, VerifyingKey};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Audit trail tools.
#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Summarise audit files (plain, rotated or gzip'd) per login.
    Report {
        /// Only records at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only records before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only this login.
        #[arg(long)]
        login: Option<String>,
        /// table, json, csv or html (one self-contained page, the chain verified on top).
        #[arg(long, default_value = "table")]
        format: String,
        /// Public key that checks checkpoints (html; repeat for older keys).
        #[arg(long)]
        key: Vec<PathBuf>,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Walk the hash chain through audit files (oldest first, plain or gzip'd) and report
    /// the first broken link; exits 1 when the chain is broken or, with --key, unproven.
    Verify {
        /// Public key that checks checkpoints (repeat for older keys).
        #[arg(long)]
        key: Vec<PathBuf>,
        /// The relay's `audit.checkpoint_minutes`: with --key, records that go longer
        /// without a checkpoint (plus 5 %, at least 5 s) are a break.
        #[arg(long, default_value_t = 60)]
        checkpoint_minutes: u32,
        /// An outside witness of the checkpoints: the `audit.witness_file`, a saved log of
        /// the service, or `journal` (the systemd journal).
        #[arg(long)]
        witness: Option<String>,
        /// text or json.
        #[arg(long, default_value = "text")]
        format: String,
        /// Audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Make an Ed25519 checkpoint key: FILE (private, mode 0600) and FILE.pub (for auditors).
    Keygen {
        /// Where the private key goes.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
    },
}

/// Runs an audit command.
pub fn run(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Report {
            since,
            until,
            login,
            format,
            key,
            output,
            files,
        } => {
            let filter = (|| {
                Ok(crate::audit::report::Filter {
                    since: since.as_deref().map(parse_time).transpose()?,
                    until: until.as_deref().map(parse_time).transpose()?,
                    login,
                })
            })();
            exit_code(
                filter.and_then(|filter| report(&filter, &format, &key, output.as_deref(), &files)),
            )
        }
        AuditCommand::Verify {
            key,
            checkpoint_minutes,
            witness,
            format,
            files,
        } => verify(
            &key,
            checkpoint_minutes,
            witness.as_deref(),
            &format,
            &files,
        ),
        AuditCommand::Keygen { out, force } => exit_code(keygen(&out, force).map(say)),
    }
}

/// Reads public checkpoint keys.
fn verifying_keys(files: &[PathBuf]) -> Result<Vec<VerifyingKey>, String> {
    files
        .iter()
        .map(|f| {
            let pem = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            VerifyingKey::from_pem(&pem).map_err(|e| format!("{}: {e}", f.display()))
        })
        .collect()
}

/// `audit verify`: exit status 0 when the chain is intact (and proven, with keys).
fn verify(
    keys: &[PathBuf],
    checkpoint_minutes: u32,
    witness: Option<&str>,
    format: &str,
    files: &[PathBuf],
) -> ExitCode {
    use crate::audit::{verify, witness as w};
    let result = verifying_keys(keys).and_then(|keys| {
        let witnesses = match witness {
            Some(source) => w::read(source).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let verifier = verify::Verifier::new(keys)
            .checkpoint_minutes(checkpoint_minutes.max(1))
            .witnesses(witnesses);
        verify::walk_files(files, verifier).map_err(|e| e.to_string())
    });
    let verdict = match (result, format) {
        (Err(e), _) => return exit_code(Err(e)),
        (Ok(v), "json") => {
            say(serde_json::to_string_pretty(&v).expect("serialisable"));
            v
        }
        (Ok(v), "text") => {
            say_raw(&v.render());
            v
        }
        (Ok(_), other) => return exit_code(Err(format!("--format `{other}`: use text or json"))),
    };
    if verdict.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `audit keygen`: writes the private key (mode 0600; an existing one only with `force`)
/// and `OUT.pub`; what to tell the operator.
pub fn keygen(out: &Path, force: bool) -> Result<String, String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (private, public) = CheckpointKey::generate()?;
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(out)
        .map_err(|e| format!("{}: {e} (--force replaces a key)", out.display()))?;
    file.write_all(private.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(&public_path, &public).map_err(|e| format!("{}: {e}", public_path.display()))?;
    let key = VerifyingKey::from_pem(public.as_bytes())?;
    Ok(format!(
        "checkpoint key {} written to {} (keep it on the relay, apart from the DKIM keys)\npublic key for auditors: {}",
        key.id,
        out.display(),
        public_path.display()
    ))
}

/// `audit report`: the report in `format` to `output` or standard output.
fn report(
    filter: &crate::audit::report::Filter,
    format: &str,
    keys: &[PathBuf],
    output: Option<&Path>,
    files: &[PathBuf],
) -> Result<(), String> {
    use crate::audit::report::{Format, Report};
    let format = match format {
        "table" => Some(Format::Table),
        "json" => Some(Format::Json),
        "csv" => Some(Format::Csv),
        "html" => None,
        other => return Err(format!("--format `{other}`: use table, json, csv or html")),
    };
    let (report, text) = match format {
        Some(format) => {
            let report = Report::read(files, filter).map_err(|e| e.to_string())?;
            let text = report.render(format);
            (report, text)
        }
        None => {
            let mut chain = crate::audit::verify::Verifier::new(verifying_keys(keys)?);
            let report =
                Report::read_walking(files, filter, Some(&mut chain)).map_err(|e| e.to_string())?;
            let source = crate::audit::html::Source {
                files: files.iter().map(|f| f.display().to_string()).collect(),
                generated: crate::clock::rfc3339_ms(crate::clock::unix_now_ms()),
            };
            let text = crate::audit::html::render(&report, Some(&chain.finish()), &source);
            (report, text)
        }
    };
    for s in &report.skipped {
        eprintln!(
            "warning: {}:{}: skipped malformed record: {}",
            s.file, s.line, s.error
        );
    }
    match output {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            say_raw(&text);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_checkpoint_key_is_private_and_never_silently_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("audit-checkpoint.key");
        let told = keygen(&out, false).unwrap();
        assert!(told.contains("public key for auditors: "), "{told}");
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let public = std::fs::read(dir.path().join("audit-checkpoint.key.pub")).unwrap();
        assert!(VerifyingKey::from_pem(&public).is_ok());
        let e = keygen(&out, false).unwrap_err();
        assert!(e.ends_with("(--force replaces a key)"), "{e}");
        assert!(keygen(&out, true).is_ok());
        assert_ne!(
            std::fs::read(dir.path().join("audit-checkpoint.key.pub")).unwrap(),
            public
        );
    }
}
