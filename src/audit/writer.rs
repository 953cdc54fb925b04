//! The audit log writer: one JSON line per record, appended with a single write so lines
//! never interleave; reopened on SIGHUP/SIGUSR1 for logrotate; fsync as configured. A write
//! cut short (a full disk) is cut back off, so the next record starts on its own line.

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

/// Where audit records go, as the decision layer sees it: the audit log, or a fake in tests.
pub trait AuditSink: Send + Sync {
    /// Appends one record; an error means it was not written (and is counted and logged).
    fn write(&self, record: &Record<'_>) -> io::Result<()>;
    /// What happens to accepted mail whose record cannot be written.
    fn on_error(&self) -> OnError;
    /// Whether full recipient addresses are recorded.
    fn full_recipients(&self) -> bool;
}

impl AuditSink for AuditLog {
    fn write(&self, record: &Record<'_>) -> io::Result<()> {
        AuditLog::write(self, record)
    }

    fn on_error(&self) -> OnError {
        self.config.on_error
    }

    fn full_recipients(&self) -> bool {
        self.config.full_recipients
    }
}

/// The open audit log.
pub struct AuditLog {
    config: AuditConfig,
    file: Mutex<Open>,
    failures: AtomicU64,
}

/// The open file, and whether a failed write may have left a partial line at its end.
#[derive(Default)]
struct Open {
    file: Option<File>,
    partial: bool,
}

/// Appends `line` to `file`; on a short or failed write, truncates the file back to its length
/// before the write. If even that fails, returns `true` in the error's place so the caller
/// starts the next record on a fresh line.
fn append(file: &mut File, line: &[u8], fsync: bool) -> Result<(), (io::Error, bool)> {
    let before = file.metadata().map(|m| m.len()).map_err(|e| (e, false))?;
    match file.write_all(line) {
        Ok(()) if fsync => file.sync_data().map_err(|e| (e, false)),
        Ok(()) => Ok(()),
        Err(e) => {
            let cut = file.set_len(before).is_ok();
            if !cut {
                tracing::error!(error = %e, "cannot cut a partial audit record off; the next record starts on a new line");
            }
            Err((e, !cut))
        }
    }
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
            file: Mutex::new(Open {
                file,
                partial: false,
            }),
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
        self.write_json(record)
    }

    /// Appends a key rotation event: `{"event":…,"time":…,"host":…,"domain":…,…}` (the
    /// report counts these apart from decisions).
    pub fn event(
        &self,
        event: &crate::dkim::rotation::KeyEvent,
        time: &str,
        host: &str,
    ) -> io::Result<()> {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            event: &'a str,
            time: &'a str,
            host: &'a str,
            domain: &'a str,
            selector: &'a str,
            detail: &'a str,
        }
        self.write_json(&Line {
            event: event.event,
            time,
            host,
            domain: &event.domain,
            selector: &event.selector,
            detail: &event.detail,
        })
    }

    fn write_json(&self, record: &impl serde::Serialize) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let result = match &self.config.destination {
            Destination::Stdout => io::stdout().lock().write_all(&line),
            Destination::File(path) => {
                let mut guard = self.file.lock().expect("audit lock");
                if guard.file.is_none() {
                    guard.file = open_append(path).ok();
                }
                let Open { file, partial } = &mut *guard;
                match file.as_mut() {
                    Some(file) => {
                        if *partial {
                            line.insert(0, b'\n');
                        }
                        match append(file, &line, self.config.fsync == Fsync::Always) {
                            Ok(()) => {
                                *partial = false;
                                Ok(())
                            }
                            Err((e, left_partial)) => {
                                *partial |= left_partial;
                                Err(e)
                            }
                        }
                    }
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
            if let Some(old) = guard.file.as_mut() {
                let _ = old.sync_data();
            }
            *guard = Open {
                file: Some(file),
                partial: false,
            };
            tracing::info!(file = %path.display(), "audit log reopened");
        }
        Ok(())
    }

    /// Forces written records to disk.
    pub fn sync(&self) {
        if let Some(file) = self.file.lock().expect("audit lock").file.as_mut()
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
