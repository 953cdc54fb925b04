//! The audit log writer: one JSON line per record, sealed into the hash chain and appended
//! with a single write so lines never interleave; reopened on SIGHUP/SIGUSR1 for logrotate;
//! fsync as configured; signed checkpoints and retention of rotated files. A write cut short
//! (a full disk) is cut back off, so the next record starts on its own line.

use super::Record;
use super::chain::{CheckpointKey, Link};
use super::files::{append, open_append, resume, resume_tail};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    /// Signed checkpoints, when a key is configured.
    pub checkpoints: Option<Checkpoints>,
    /// Rotated files whose newest record is older than this many days are deleted.
    pub retention_days: Option<u32>,
}

/// `[audit] checkpoint_key` and `checkpoint_minutes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoints {
    /// The Ed25519 private key (PKCS#8 PEM), not a DKIM key.
    pub key_file: PathBuf,
    /// How often a checkpoint seals the records written since the last one.
    pub every_minutes: u32,
    /// Where each checkpoint is also written, as an outside witness (besides the log).
    pub witness_file: Option<PathBuf>,
}

impl Checkpoints {
    /// Reads the key; the error names the file.
    pub fn load_key(&self) -> Result<CheckpointKey, String> {
        let pem = std::fs::read(&self.key_file)
            .map_err(|e| format!("{}: {e}", self.key_file.display()))?;
        CheckpointKey::from_pem(&pem).map_err(|e| format!("{}: {e}", self.key_file.display()))
    }
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
    checkpoint_key: Option<CheckpointKey>,
    file: Mutex<Open>,
    failures: AtomicU64,
}

/// The open file, where the chain stands, and whether a failed write may have left a partial
/// line at its end.
struct Open {
    file: Option<File>,
    partial: bool,
    /// The last line written (or found at start).
    link: Link,
    /// The link the latest checkpoint sealed.
    checkpointed: Link,
    /// Something the writer must record once it can (a partial record cut off at start).
    pending: Option<String>,
    /// The file's length after our last line; another length means another writer appended.
    end: Option<u64>,
    /// Lines that could not be written since the last that could (a full disk).
    lost: Option<Lost>,
    /// Whether we hold the file's lock: it is kept from line to line (no other writer can
    /// append meanwhile, so the file's end need not be asked again) and let go by
    /// [`AuditLog::let_others_in`].
    held: bool,
    /// Until when each line takes the lock and gives it back, so that another writer
    /// waiting for it gets its turn.
    sharing_until: Option<Instant>,
}

impl Open {
    /// One more line that could not be written.
    fn count_lost(&mut self, e: &io::Error) {
        let lost = self.lost.get_or_insert(Lost {
            lines: 0,
            error: String::new(),
        });
        lost.lines += 1;
        lost.error = e.to_string();
    }
}

/// Lines the writer could not write, said in the log once it can write again.
struct Lost {
    lines: u64,
    error: String,
}

impl AuditLog {
    /// Opens the destination; a file that cannot be opened is reported and retried on reopen.
    /// The chain resumes after the file's last complete record.
    pub fn open(config: AuditConfig) -> Self {
        let checkpoint_key = config
            .checkpoints
            .as_ref()
            .and_then(|c| match c.load_key() {
                Ok(key) => Some(key),
                Err(e) => {
                    tracing::error!("audit checkpoints disabled: {e}");
                    None
                }
            });
        let (file, link, pending) = match &config.destination {
            Destination::Stdout => (None, Link::START, None),
            Destination::File(path) => match open_append(path) {
                Ok(f) => {
                    let (link, mut note, unsealed) = resume_tail(path, &f);
                    if unsealed && checkpoint_key.is_some() && note.is_none() {
                        // The writer before did not close the file with a checkpoint: say so,
                        // or its last records would look like a tail stripped of checkpoints.
                        note = Some(format!(
                            "{} ends after seq {} without a closing checkpoint: the writer before this one was killed or crashed",
                            path.display(),
                            link.seq
                        ));
                    }
                    (Some(f), link, note)
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot open the audit log");
                    (None, Link::START, None)
                }
            },
        };
        let end = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len());
        AuditLog {
            config,
            checkpoint_key,
            file: Mutex::new(Open {
                file,
                partial: false,
                link,
                checkpointed: link,
                pending,
                end,
                lost: None,
                held: false,
                sharing_until: None,
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
        self.say_lost(&record.time, &record.host);
        self.write_json(record)
    }

    /// After lines could not be written (a full disk), the first record that can be is
    /// preceded by an `audit_resumed` note saying how many are missing, and a checkpoint seals
    /// what came before: the gap is in the log for the auditor, and the checkpoints that
    /// could not be written meanwhile are not taken for ones removed.
    fn say_lost(&self, time: &str, host: &str) {
        let mut guard = self.file.lock().expect("audit lock");
        let Some(lost) = guard.lost.take() else {
            return;
        };
        let detail = format!(
            "{} {} could not be written ({}): the decisions and checkpoints {} held are missing here",
            lost.lines,
            if lost.lines == 1 { "line" } else { "lines" },
            lost.error,
            if lost.lines == 1 { "it" } else { "they" },
        );
        let line = note_line("audit_resumed", time, host, &detail, Default::default());
        if self.append_sealed(&mut guard, |_, _| line).is_err() {
            guard.lost = Some(lost);
            return;
        }
        tracing::warn!(
            lines = lost.lines,
            "audit log writable again; the missing lines are noted in it"
        );
        drop(guard);
        if let Err(e) = self.checkpoint(time, host) {
            tracing::error!(error = %e, "cannot write an audit checkpoint");
        }
    }

    /// Appends a key rotation event: `{"event":…,"time":…,"host":…,"detail":…,"domain":…,
    /// "selector":…}` (the report counts these apart from decisions).
    pub fn event(
        &self,
        event: &crate::dkim::rotation::KeyEvent,
        time: &str,
        host: &str,
    ) -> io::Result<()> {
        let mut fields = serde_json::Map::new();
        fields.insert("domain".into(), event.domain.clone().into());
        fields.insert("selector".into(), event.selector.clone().into());
        self.note(event.event, time, host, &event.detail, fields)
    }

    /// Appends an event about the audit log itself (`audit_resumed`, `audit_file_deleted`):
    /// `{"event":…,"time":…,"host":…,"detail":…}` plus `fields`.
    pub fn note(
        &self,
        event: &str,
        time: &str,
        host: &str,
        detail: &str,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> io::Result<()> {
        self.write_object(note_line(event, time, host, detail, fields))
    }

    /// Writes what the writer found at start (a partial record cut off), once it knows the
    /// time and the host name.
    pub fn flush_notes(&self, time: &str, host: &str) {
        let pending = self.file.lock().expect("audit lock").pending.take();
        if let Some(detail) = pending {
            let _ = self.note("audit_resumed", time, host, &detail, Default::default());
        }
    }

    /// Seals the records written since the last checkpoint with a signed checkpoint record.
    /// `Ok(false)`: no key, or nothing new to seal.
    pub fn checkpoint(&self, time: &str, host: &str) -> io::Result<bool> {
        let Some(key) = &self.checkpoint_key else {
            return Ok(false);
        };
        self.say_lost(time, host);
        let mut guard = self.file.lock().expect("audit lock");
        if guard.link == guard.checkpointed {
            return Ok(false);
        }
        if let Err(e) = self.append_sealed(&mut guard, |link, first| {
            key.checkpoint(time, host, link, first)
        }) {
            guard.count_lost(&e);
            return Err(e);
        }
        guard.checkpointed = guard.link;
        let witness = super::witness::Witness {
            seq: guard.link.seq,
            hash: guard.link.hash.to_string(),
            time: time.to_string(),
            host: host.to_string(),
        };
        drop(guard);
        let file = self
            .config
            .checkpoints
            .as_ref()
            .and_then(|c| c.witness_file.as_deref());
        if let Err(e) = super::witness::tell(&witness, file) {
            tracing::error!(error = %e, "cannot write the checkpoint to the witness file");
        }
        Ok(true)
    }

    fn write_json(&self, record: &impl serde::Serialize) -> io::Result<()> {
        self.write_object(serde_json::to_vec(record).map_err(io::Error::other)?)
    }

    /// Seals and appends one serialised JSON object; a line that cannot be written is
    /// counted, and said in the log once lines can be written again.
    fn write_object(&self, object: Vec<u8>) -> io::Result<()> {
        let mut guard = self.file.lock().expect("audit lock");
        let result = self.append_sealed(&mut guard, |_, _| object);
        if let Err(e) = &result {
            guard.count_lost(e);
            drop(guard);
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(error = %e, failures = n, "AUDIT RECORD NOT WRITTEN");
        }
        result
    }

    /// Seals the object `make` builds as the next line and appends it; the chain moves on
    /// only when the line was written.
    fn append_sealed(
        &self,
        guard: &mut Open,
        make: impl FnOnce(&Link, bool) -> Vec<u8>,
    ) -> io::Result<()> {
        match &self.config.destination {
            Destination::Stdout => {
                let first = guard.link.seq == 0;
                let (mut line, link) = guard.link.seal(&make(&guard.link, first), first);
                line.push(b'\n');
                io::stdout().lock().write_all(&line)?;
                guard.link = link;
                Ok(())
            }
            Destination::File(path) => {
                if guard.file.is_none() {
                    guard.file = open_append(path).ok();
                }
                let Open {
                    file,
                    partial,
                    link,
                    end,
                    pending,
                    held,
                    sharing_until,
                    ..
                } = guard;
                let Some(file) = file.as_mut() else {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} cannot be opened", path.display()),
                    ));
                };
                // Another process (the CLI's `keys publish`, a second instance) may append to
                // the same file: lines are written under an exclusive lock, and when the file
                // no longer ends where our last line did, the chain resumes after the other
                // writer's last line instead of forking. The lock is kept between lines (one
                // write per record) and let go once a second (`let_others_in`).
                let taken = !*held;
                if taken {
                    file.lock()?;
                    *held = true;
                }
                let result = (|| {
                    let mut before = match *end {
                        // Held since our last line: no one else appended.
                        Some(end) if !taken && !*partial => end,
                        _ => file.metadata()?.len(),
                    };
                    if before > 0 && *end != Some(before) {
                        let (resumed, note) = resume(path, file);
                        *link = resumed;
                        *partial = false;
                        *pending = pending.take().or(note);
                        before = file.metadata()?.len();
                    }
                    // A new or emptied file (rotated, or truncated in place) counts from 1.
                    let first = before == 0;
                    let (mut line, next) = link.seal(&make(link, first), first);
                    line.push(b'\n');
                    if *partial {
                        // Rare: after a cut that could not be undone, start on a line of its own.
                        line.insert(0, b'\n');
                    }
                    match append(file, before, &line, self.config.fsync == Fsync::Always) {
                        Ok(()) => {
                            *partial = false;
                            *link = next;
                            *end = Some(before + line.len() as u64);
                            Ok(())
                        }
                        Err((e, left_partial)) => {
                            *partial |= left_partial;
                            *end = None;
                            Err(e)
                        }
                    }
                })();
                // Outside the sharing moment no clock is read: the lock is simply kept.
                let sharing = match *sharing_until {
                    Some(until) if Instant::now() < until => true,
                    Some(_) => {
                        *sharing_until = None;
                        false
                    }
                    None => false,
                };
                if result.is_err() || sharing {
                    let _ = file.unlock();
                    *held = false;
                }
                result
            }
        }
    }

    /// Lets go of the file's lock and, for a moment, takes and gives it back with each
    /// line, so that another writer waiting for it (`keys publish`) gets its turn. The
    /// service calls it once a second.
    pub fn let_others_in(&self) {
        let mut guard = self.file.lock().expect("audit lock");
        if guard.held {
            if let Some(file) = guard.file.as_ref() {
                let _ = file.unlock();
            }
            guard.held = false;
        }
        guard.sharing_until = Some(Instant::now() + SHARING);
    }

    /// Reopens the file (after logrotate moved it). With checkpoints, the file being closed
    /// is sealed first. A new, empty file continues the chain of the old one.
    pub fn reopen(&self, time: &str, host: &str) -> io::Result<()> {
        if let Destination::File(path) = &self.config.destination {
            if let Err(e) = self.checkpoint(time, host) {
                tracing::error!(error = %e, "cannot write a checkpoint before reopening the audit log");
            }
            let file = open_append(path)?;
            let mut guard = self.file.lock().expect("audit lock");
            let same = match (guard.file.as_ref(), file.metadata()) {
                (Some(old), Ok(new)) => old
                    .metadata()
                    .is_ok_and(|old| old.ino() == new.ino() && old.dev() == new.dev()),
                _ => false,
            };
            if let Some(old) = guard.file.as_mut() {
                let _ = old.sync_data();
            }
            if !same && file.metadata().is_ok_and(|m| m.len() > 0) {
                // Someone else's file with records: continue after its last one.
                let (link, note) = resume(path, &file);
                guard.link = link;
                guard.pending = guard.pending.take().or(note);
            }
            if !same {
                guard.end = file.metadata().ok().map(|m| m.len());
            }
            // The old file closes with its lock; the new one is locked at its first line.
            guard.file = Some(file);
            guard.held = false;
            guard.partial = false;
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

/// How long after [`AuditLog::let_others_in`] each line gives the lock back.
const SHARING: Duration = Duration::from_millis(100);

/// An event line about the log itself: `{"event":…,"time":…,"host":…,"detail":…}` plus
/// `fields`.
fn note_line(
    event: &str,
    time: &str,
    host: &str,
    detail: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        event: &'a str,
        time: &'a str,
        host: &'a str,
        detail: &'a str,
        #[serde(flatten)]
        fields: serde_json::Map<String, serde_json::Value>,
    }
    serde_json::to_vec(&Line {
        event,
        time,
        host,
        detail,
        fields,
    })
    .expect("serialisable")
}
