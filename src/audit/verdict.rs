//! What a walk of the audit chain found: where the chain first breaks and why ([`Break`]),
//! what checkpoints proved, and the verdict as text or JSON.

use serde::Serialize;

/// A place in the series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    /// File as given.
    pub file: String,
    /// 1-based line.
    pub line: u64,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What is wrong at a place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Break {
    /// The line before no longer hashes to this line's `prev`.
    Edited,
    /// Lines are missing before this one (`seq` jumps forward).
    Deleted {
        /// How many `seq` numbers are skipped.
        missing: u64,
    },
    /// This line's `seq` does not follow (it repeats or goes back): a line was inserted or
    /// lines were swapped.
    InsertedOrReordered,
    /// Not a complete sealed record: cut short, or rewritten by hand.
    Truncated,
    /// The file's first record does not continue the previous file's last one.
    MissingFile {
        /// The file given before.
        after: String,
    },
    /// The file continues another file of the series: they were given out of order.
    OutOfOrder {
        /// The file it continues.
        continues: String,
    },
    /// A record without a seal after sealed ones.
    Unsealed,
    /// A checkpoint whose signature does not verify, or that cannot be read.
    BadCheckpoint {
        /// Why.
        reason: String,
    },
    /// Records after a checkpoint span longer than the checkpoint interval with no new one:
    /// checkpoints were removed (the tail re-sealed), or the log was rewritten.
    Uncovered {
        /// The first record the next checkpoint should have covered.
        since: Place,
        /// How many minutes the uncovered records span.
        minutes: u64,
    },
    /// A file of the series that does not end with the checkpoint a relay writes when it
    /// closes a file.
    NoClosingCheckpoint,
    /// The witness holds a checkpoint the files lack.
    WitnessMissing {
        /// The checkpoint's time.
        time: String,
        /// Its `seq`.
        seq: u64,
        /// Its line's hash.
        hash: String,
    },
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Edited => write!(
                f,
                "the record before this one was changed after it was written (its hash is not this record's prev)"
            ),
            Break::Deleted { missing } => write!(
                f,
                "{missing} record(s) before this one are missing (deleted, or moved elsewhere)"
            ),
            Break::InsertedOrReordered => write!(
                f,
                "this record's seq does not follow the one before: a record was inserted or records were reordered"
            ),
            Break::Truncated => write!(
                f,
                "not a complete sealed record (cut short, or rewritten by hand)"
            ),
            Break::MissingFile { after } => write!(
                f,
                "this file does not continue {after}: a file is missing from the series, or the end of {after} was cut off"
            ),
            Break::OutOfOrder { continues } => write!(
                f,
                "this file continues {continues}: give the files oldest first"
            ),
            Break::Unsealed => write!(f, "a record without seq and prev among sealed records"),
            Break::BadCheckpoint { reason } => write!(f, "bad checkpoint: {reason}"),
            Break::Uncovered { since, minutes } => write!(
                f,
                "no checkpoint covers the records since {since}, which span {minutes} minute(s): a relay writes one within the checkpoint interval, so checkpoints were removed and the records re-sealed, or the log was rewritten"
            ),
            Break::NoClosingCheckpoint => write!(
                f,
                "this file ends without the checkpoint a relay writes when it closes a file: its end was cut off (or the relay was down when it was rotated)"
            ),
            Break::WitnessMissing { time, seq, hash } => write!(
                f,
                "the witness holds a checkpoint of {time} (seq {seq}, line hash {hash}) that these files lack: the log was cut or rewritten after it"
            ),
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where.
    pub at: Place,
    /// What.
    #[serde(flatten)]
    pub what: Break,
}

/// A checkpoint whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proven {
    /// Where the checkpoint is.
    pub at: Place,
    /// Its time.
    pub time: String,
    /// Its key.
    pub key: String,
}

/// The result of a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Files walked.
    pub files: usize,
    /// Records (lines) walked, checkpoints included.
    pub records: u64,
    /// Lines without a seal before the chain began (written before chaining).
    pub unsealed_before_chain: u64,
    /// Whether the first record names the genesis hash (else the series starts after files
    /// not given, e.g. deleted by retention).
    pub starts_at_genesis: bool,
    /// The `prev` the series starts from, when not genesis.
    pub starts_after: Option<String>,
    /// A retention record in the series that names the deleted file the series continues.
    pub continues_deleted: Option<String>,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Checkpoints not checked (no key given).
    pub checkpoints_unchecked: u64,
    /// The last verified checkpoint.
    pub last_proven: Option<Proven>,
    /// Records after the last verified checkpoint (not covered by a signature).
    pub after_last_proven: u64,
    /// Keys were given, so the series had to carry checkpoints.
    pub keys_given: bool,
    /// Problems, the first one first (at most [`MAX_PROBLEMS`] kept).
    pub problems: Vec<Problem>,
    /// Problems beyond those kept.
    pub more_problems: u64,
    /// Times the writer resumed after a crash (the records before each stay unsealed).
    pub resumed_after_crash: u64,
    /// Witnessed checkpoints given, and how many of them the files hold.
    pub witnessed: Option<(usize, usize)>,
}

/// How many problems a walk keeps.
pub const MAX_PROBLEMS: usize = 20;

impl Verification {
    /// Whether the chain is unbroken (and, with keys, proven by at least one checkpoint).
    pub fn intact(&self) -> bool {
        self.problems.is_empty() && (!self.keys_given || self.checkpoints > 0)
    }

    /// A short human summary, one line per fact.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        match self.problems.first() {
            None => {
                let _ = writeln!(
                    out,
                    "chain intact: {} records in {} file(s)",
                    self.records, self.files
                );
            }
            Some(first) => {
                let _ = writeln!(out, "CHAIN BROKEN at {}: {}", first.at, first.what);
                for p in &self.problems[1..] {
                    let _ = writeln!(out, "  also {}: {}", p.at, p.what);
                }
                if self.more_problems > 0 {
                    let _ = writeln!(out, "  and {} more problems", self.more_problems);
                }
            }
        }
        if self.starts_at_genesis {
            let _ = writeln!(out, "the chain begins in the first file");
        } else if let Some(prev) = &self.starts_after {
            let _ = match &self.continues_deleted {
                Some(file) => writeln!(
                    out,
                    "the series continues {file}, deleted by retention (its last record {prev})"
                ),
                None => writeln!(
                    out,
                    "the series continues a file not given (its last record {prev})"
                ),
            };
        }
        if self.unsealed_before_chain > 0 {
            let _ = writeln!(
                out,
                "{} records written before chaining began are not covered",
                self.unsealed_before_chain
            );
        }
        match &self.last_proven {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "checkpoints: {} verified; the last at {} ({}, key {}); {} records after it are not yet covered by a signature",
                    self.checkpoints, p.at, p.time, p.key, self.after_last_proven
                );
            }
            None if self.keys_given => {
                let _ = writeln!(out, "NOT PROVEN: no checkpoint signed by the given key(s)");
            }
            None => {}
        }
        if self.resumed_after_crash > 0 {
            let _ = writeln!(
                out,
                "the writer resumed after a crash {} time(s): the records just before each are not covered by a checkpoint",
                self.resumed_after_crash
            );
        }
        if let Some((given, found)) = self.witnessed {
            let _ = writeln!(
                out,
                "witness: {found} of {given} witnessed checkpoints from this period are in the files"
            );
        }
        if self.checkpoints_unchecked > 0 {
            let _ = writeln!(
                out,
                "{} checkpoints not checked (give --key to check them)",
                self.checkpoints_unchecked
            );
        }
        out
    }
}
