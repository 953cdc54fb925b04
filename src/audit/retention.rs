//! Retention: rotated audit files whose newest record is older than `retention_days` are
//! deleted whole, oldest first (a chain is never rewritten), each deletion written to the
//! live file as an `audit_file_deleted` record naming the file's last hash, so a verifier
//! knows where the kept series begins.

use super::chain::Hash;
use super::files;
use super::writer::AuditLog;
use std::path::{Path, PathBuf};

/// A rotated file and what its last record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The file.
    pub path: PathBuf,
    /// Time of its newest record (Unix seconds).
    pub newest: i64,
    /// Hash of its last line.
    pub last_hash: Hash,
    /// Its newest record's time as written.
    pub newest_text: String,
}

/// Which files go: the oldest ones whose newest record is older than `days` before `now`,
/// stopping at the first that must stay (so the kept series is never holed).
pub fn expired(files: &[Rotated], now: i64, days: u32) -> usize {
    let cutoff = now - i64::from(days) * 86_400;
    files.iter().take_while(|f| f.newest < cutoff).count()
}

/// One deletion done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The file deleted.
    pub path: PathBuf,
    /// Its newest record's time.
    pub newest: String,
}

/// Deletes the expired rotated files of `live` and records each deletion in the audit log.
/// Only files last modified before the cutoff are opened (a file is read whole to find its
/// last record, so this stays cheap when nothing is due). A file that cannot be read stops
/// the pass: nothing after it is deleted.
pub fn prune(
    log: &AuditLog,
    live: &Path,
    now: i64,
    days: u32,
    time: &str,
    host: &str,
) -> Vec<Deleted> {
    let cutoff = now - i64::from(days) * 86_400;
    let candidates = match files::rotated(live) {
        Ok(files) => files,
        Err(e) => {
            tracing::error!(file = %live.display(), error = %e, "audit retention: cannot list rotated files");
            return Vec::new();
        }
    };
    let mut rotated = Vec::new();
    for path in candidates {
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(i64::MAX, |d| d.as_secs() as i64);
        if modified >= cutoff {
            break;
        }
        match describe(&path) {
            Ok(Some(r)) => rotated.push(r),
            Ok(None) => {
                tracing::warn!(file = %path.display(), "audit retention: no record in a rotated file; kept");
                break;
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "audit retention: cannot read a rotated file; kept, and the files after it too");
                break;
            }
        }
    }
    let n = expired(&rotated, now, days);
    let mut done = Vec::new();
    for file in rotated.into_iter().take(n) {
        if let Err(e) = std::fs::remove_file(&file.path) {
            tracing::error!(file = %file.path.display(), error = %e, "audit retention: cannot delete");
            break;
        }
        tracing::info!(file = %file.path.display(), newest = %file.newest_text, "audit retention: deleted");
        let mut fields = serde_json::Map::new();
        fields.insert("file".into(), file.path.display().to_string().into());
        fields.insert("newest_record".into(), file.newest_text.clone().into());
        fields.insert("last_hash".into(), file.last_hash.to_string().into());
        let detail = format!("retention_days = {days}");
        let _ = log.note("audit_file_deleted", time, host, &detail, fields);
        done.push(Deleted {
            path: file.path,
            newest: file.newest_text,
        });
    }
    done
}

fn describe(path: &Path) -> std::io::Result<Option<Rotated>> {
    let Some(line) = files::last_line(path)? else {
        return Ok(None);
    };
    #[derive(serde::Deserialize)]
    struct Timed {
        time: Option<String>,
        checkpoint: Option<super::chain::Checkpoint>,
    }
    let timed: Timed = serde_json::from_slice(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let text = timed
        .time
        .or(timed.checkpoint.map(|c| c.time))
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no time"))?;
    let newest = text
        .parse::<jiff::Timestamp>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        .as_second();
    Ok(Some(Rotated {
        path: path.to_path_buf(),
        newest,
        last_hash: Hash::of(&line),
        newest_text: text,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, newest: i64) -> Rotated {
        Rotated {
            path: name.into(),
            newest,
            last_hash: Hash::default(),
            newest_text: String::new(),
        }
    }

    #[test]
    fn only_the_oldest_expired_files_go_and_never_one_out_of_order() {
        let day = 86_400;
        let now = 1_000 * day;
        let files = [
            file("a", now - 40 * day),
            file("b", now - 31 * day),
            file("c", now - 29 * day),
            file("d", now - 35 * day),
        ];
        assert_eq!(expired(&files, now, 30), 2);
        assert_eq!(expired(&files, now, 60), 0);
        assert_eq!(expired(&files[..0], now, 1), 0);
        // Exactly at the cutoff stays.
        assert_eq!(expired(&[file("x", now - 30 * day)], now, 30), 0);
    }
}
