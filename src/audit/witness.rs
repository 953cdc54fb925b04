//! An outside witness of the audit chain: each checkpoint is also told to a second place
//! (the service log, which journald keeps under systemd, and optionally a witness file on
//! other storage), so that a forger who re-seals the log's tail or cuts it must reach that
//! place too. `audit verify --witness` checks the files against it.
//!
//! Compare Certificate Transparency's signed tree heads and journald's Forward Secure
//! Sealing: the signature proves who sealed, the copy elsewhere proves what was sealed last.

use std::io::{self, BufRead, Write};
use std::path::Path;

/// One witnessed checkpoint: its place in its file's chain and the hash of its line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Witness {
    /// `seq` of the checkpoint line in its file.
    pub seq: u64,
    /// SHA-256 of the checkpoint line's exact bytes, hex.
    pub hash: String,
    /// The checkpoint's time (RFC 3339).
    pub time: String,
    /// The relay that wrote it.
    pub host: String,
}

impl Witness {
    /// The line written to a witness file.
    pub fn line(&self) -> String {
        let mut object = serde_json::to_value(self).expect("serialisable");
        object["witness"] = "audit_checkpoint".into();
        format!("{object}\n")
    }

    /// Reads a witness from a line of a witness file (JSON) or of relayguard's log (the
    /// `audit checkpoint` event's logfmt fields); other lines give `None`.
    pub fn parse(line: &str) -> Option<Witness> {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
            if value["witness"] != "audit_checkpoint" {
                return None;
            }
            return serde_json::from_value(value).ok();
        }
        if !line.contains("audit checkpoint witnessed") {
            return None;
        }
        let field = |name: &str| {
            let start = line.find(&format!(" {name}="))? + name.len() + 2;
            let rest = &line[start..];
            let value = match rest.strip_prefix('"') {
                Some(quoted) => &quoted[..quoted.find('"')?],
                None => rest.split(' ').next()?,
            };
            Some(value.to_string())
        };
        Some(Witness {
            seq: field("seq")?.parse().ok()?,
            hash: field("hash")?,
            time: field("time")?,
            host: field("host").unwrap_or_default(),
        })
    }
}

/// Tells the witnesses of a checkpoint just written: the service log always, the witness
/// file when configured (appended and synced: checkpoints are rare).
pub fn tell(witness: &Witness, file: Option<&Path>) -> io::Result<()> {
    tracing::info!(
        seq = witness.seq,
        hash = %witness.hash,
        time = %witness.time,
        host = %witness.host,
        "audit checkpoint witnessed"
    );
    if let Some(path) = file {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        out.write_all(witness.line().as_bytes())?;
        out.sync_data()?;
    }
    Ok(())
}

/// Reads witnesses from a file (witness file or saved log), or from the systemd journal
/// when `source` is `journal`.
pub fn read(source: &str) -> io::Result<Vec<Witness>> {
    let text = if source == "journal" {
        let out = std::process::Command::new("journalctl")
            .args(["--no-pager", "-o", "cat", "SYSLOG_IDENTIFIER=relayguard"])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "journalctl: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        out.stdout
    } else {
        std::fs::read(source).map_err(|e| io::Error::new(e.kind(), format!("{source}: {e}")))?
    };
    Ok(text
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| Witness::parse(&l))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_witness_reads_back_from_its_file_line_and_from_the_log() {
        let w = Witness {
            seq: 41,
            hash: "ab".repeat(32),
            time: "2026-12-03T10:00:00.000Z".into(),
            host: "relay1".into(),
        };
        assert_eq!(Witness::parse(w.line().trim_end()), Some(w.clone()));
        let log = format!(
            "2026-12-03T10:00:00.001Z  INFO relayguard::audit::witness: audit checkpoint witnessed seq=41 hash={} time=2026-12-03T10:00:00.000Z host=relay1",
            "ab".repeat(32)
        );
        assert_eq!(Witness::parse(&log), Some(w));
        assert_eq!(Witness::parse("{\"time\":\"x\"}"), None);
        assert_eq!(Witness::parse("INFO decision verdict=accept"), None);
    }
}
