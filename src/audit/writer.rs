//! The audit log writer: one JSON line per record, appended with a single write so lines
//! never interleave; reopened on SIGHUP/SIGUSR1 for logrotate; fsync as configured.

use super::Record;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output.
    Stdout,
    /// An append-only file.
    File(PathBuf),
}

/// When records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Leave it to the kernel (records survive a crash of relayguard, not of the host).
    Never,
    /// After every record.
    Always,
    /// Once a second, from a background task.
    Periodic,
}

/// What happens to accepted mail when a record cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// `451 4.3.0`: no mail leaves unaudited.
    Tempfail,
    /// Deliver anyway; the failure is logged and counted.
    Continue,
}

/// `[audit]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Destination.
    pub destination: Destination,
    /// fsync policy.
    pub fsync: Fsync,
    /// Failure policy.
    pub on_error: OnError,
    /// Record full recipient addresses (default: domains only).
    pub full_recipients: bool,
}

/// The open audit log.
pub struct AuditLog {
    config: AuditConfig,
    file: Mutex<Option<File>>,
    failures: AtomicU64,
}

impl AuditLog {
    /// Opens the destination; a file that cannot be opened is reported and retried on reopen.
    pub fn open(config: AuditConfig) -> Self {
        let file = match &config.destination {
            Destination::Stdout => None,
            Destination::File(path) => match open_append(path) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot open the audit log");
                    None
                }
            },
        };
        AuditLog {
            config,
            file: Mutex::new(file),
            failures: AtomicU64::new(0),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// Number of records that could not be written.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Appends one record.
    pub fn write(&self, record: &Record<'_>) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let result = match &self.config.destination {
            Destination::Stdout => io::stdout().lock().write_all(&line),
            Destination::File(path) => {
                let mut guard = self.file.lock().expect("audit lock");
                if guard.is_none() {
                    *guard = open_append(path).ok();
                }
                match guard.as_mut() {
                    Some(file) => file.write_all(&line).and_then(|()| {
                        if self.config.fsync == Fsync::Always {
                            file.sync_data()
                        } else {
                            Ok(())
                        }
                    }),
                    None => Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} cannot be opened", path.display()),
                    )),
                }
            }
        };
        if let Err(e) = &result {
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(error = %e, failures = n, "AUDIT RECORD NOT WRITTEN");
        }
        result
    }

    /// Reopens the file (after logrotate moved it).
    pub fn reopen(&self) -> io::Result<()> {
        if let Destination::File(path) = &self.config.destination {
            let file = open_append(path)?;
            let mut guard = self.file.lock().expect("audit lock");
            if let Some(old) = guard.as_mut() {
                let _ = old.sync_data();
            }
            *guard = Some(file);
            tracing::info!(file = %path.display(), "audit log reopened");
        }
        Ok(())
    }

    /// Forces written records to disk.
    pub fn sync(&self) {
        if let Some(file) = self.file.lock().expect("audit lock").as_mut()
            && let Err(e) = file.sync_data()
        {
            tracing::error!(error = %e, "audit log fsync failed");
        }
    }
}

fn open_append(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}
