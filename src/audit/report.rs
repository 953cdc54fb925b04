//! `relayguard audit report`: per-login summaries of audit files (plain, rotated or gzip'd).

use super::{Record, Verdict};
use crate::log::Escaped;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

/// Which records count.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only records at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only records before this time (Unix seconds).
    pub until: Option<i64>,
    /// Only this login.
    pub login: Option<String>,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for people.
    Table,
    /// One JSON document.
    Json,
    /// One CSV row per login.
    Csv,
}

/// Totals for one login (or one unauthenticated client class).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LoginStats {
    /// Accepted messages.
    pub messages: u64,
    /// Recipients of accepted messages.
    pub recipients: u64,
    /// Distinct header From addresses of accepted messages.
    pub from_addresses: BTreeSet<String>,
    /// Refusals (reject, tempfail, lock) by reason code.
    pub refusals: BTreeMap<String, u64>,
    /// Refusals because of a sending limit.
    pub limit_hits: u64,
    /// Refusals because the account is locked.
    pub locks: u64,
    /// Accepted messages that left unsigned.
    pub unsigned: u64,
    /// Refusals recorded in monitor mode (the message passed), by reason code: who the
    /// switch to enforce would hit.
    pub would_refuse: BTreeMap<String, u64>,
    /// Messages on which the login's class acted on stolen-account signals (logged,
    /// tempfailed or locked).
    pub flagged: u64,
}

impl LoginStats {
    /// The per-login columns of the table and the HTML page, in order.
    pub const COLUMNS: [&str; 9] = [
        "messages",
        "recipients",
        "froms",
        "refused",
        "limits",
        "locks",
        "unsigned",
        "would",
        "flagged",
    ];

    /// The values of [`LoginStats::COLUMNS`].
    pub fn columns(&self) -> [u64; 9] {
        [
            self.messages,
            self.recipients,
            self.from_addresses.len() as u64,
            self.refused(),
            self.limit_hits,
            self.locks,
            self.unsigned,
            self.would_refused(),
            self.flagged,
        ]
    }

    /// All refusals.
    pub fn refused(&self) -> u64 {
        self.refusals.values().sum()
    }

    /// All refusals recorded in monitor mode.
    pub fn would_refused(&self) -> u64 {
        self.would_refuse.values().sum()
    }
}

/// Totals for one day (UTC), for the charts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DayStats {
    /// Accepted messages.
    pub accepted: u64,
    /// Refused with 5xx.
    pub rejected: u64,
    /// Refused with 4xx.
    pub tempfailed: u64,
    /// Refused because the account was locked.
    pub locked: u64,
    /// Refusals recorded in monitor mode (passed).
    pub would_refuse: u64,
    /// Accepted and unsigned.
    pub unsigned: u64,
    /// Refusals because of a sending limit.
    pub limit_hits: u64,
    /// Refusals by reason code.
    pub refusals: BTreeMap<String, u64>,
}

/// Totals for one client class (`authenticated`, `internal`, `external`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ClassStats {
    /// Accepted messages.
    pub messages: u64,
    /// Recipients of accepted messages.
    pub recipients: u64,
    /// Refusals.
    pub refused: u64,
    /// Accepted and unsigned.
    pub unsigned: u64,
}

/// A line that could not be read as a record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// File.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Why.
    pub error: String,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Records that matched the filter.
    pub records: u64,
    /// Per login; unauthenticated clients appear as `(internal)` and `(external)`.
    pub logins: BTreeMap<String, LoginStats>,
    /// Malformed lines, skipped.
    pub skipped: Vec<Skipped>,
    /// Key rotation and audit events (`{"event":…}` lines), not decisions.
    pub events: u64,
    /// Per day (UTC, `YYYY-MM-DD`).
    pub days: BTreeMap<String, DayStats>,
    /// Per client class.
    pub classes: BTreeMap<String, ClassStats>,
}

fn parse_time(text: &str) -> Result<i64, String> {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| e.to_string())
}

impl Report {
    /// Reads the files in order; malformed lines are recorded with their place and skipped.
    pub fn read(files: &[PathBuf], filter: &Filter) -> io::Result<Report> {
        Report::read_walking(files, filter, None)
    }

    /// Reads the files in order and walks their hash chain in the same pass.
    pub fn read_walking(
        files: &[PathBuf],
        filter: &Filter,
        mut chain: Option<&mut super::verify::Verifier>,
    ) -> io::Result<Report> {
        use std::io::BufRead as _;
        let mut report = Report::default();
        let mut line = Vec::with_capacity(1024);
        for path in files {
            let name = path.display().to_string();
            let mut reader = super::files::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
            if let Some(chain) = chain.as_deref_mut() {
                chain.begin_file(&name);
            }
            let mut number = 0;
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                number += 1;
                let complete = line.ends_with(b"\n");
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                if let Some(chain) = chain.as_deref_mut() {
                    chain.line(text, complete);
                }
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if text.starts_with(b"{\"event\":") {
                    report.events += 1;
                    continue;
                }
                if text.starts_with(super::chain::CHECKPOINT_PREFIX) {
                    continue;
                }
                match serde_json::from_slice::<Record<'_>>(text) {
                    Ok(record) => {
                        if let Err(error) = report.add(&record, filter) {
                            report.skipped.push(Skipped {
                                file: path.display().to_string(),
                                line: number,
                                error,
                            });
                        }
                    }
                    Err(e) => report.skipped.push(Skipped {
                        file: path.display().to_string(),
                        line: number,
                        error: e.to_string(),
                    }),
                }
            }
        }
        Ok(report)
    }

    fn add(&mut self, r: &Record<'_>, filter: &Filter) -> Result<(), String> {
        if filter.since.is_some() || filter.until.is_some() {
            let t = parse_time(&r.time)?;
            if filter.since.is_some_and(|s| t < s) || filter.until.is_some_and(|u| t >= u) {
                return Ok(());
            }
        }
        let key = match &r.login {
            Some(l) => l.to_string(),
            None => format!("({})", r.client_class),
        };
        if filter.login.as_ref().is_some_and(|l| *l != key) {
            return Ok(());
        }
        self.records += 1;
        let date = r.time.get(..10).unwrap_or("unknown");
        if !self.days.contains_key(date) {
            self.days.insert(date.to_string(), DayStats::default());
        }
        let day = self.days.get_mut(date).expect("inserted");
        if !self.classes.contains_key(r.client_class.as_ref()) {
            self.classes
                .insert(r.client_class.to_string(), ClassStats::default());
        }
        let class = self
            .classes
            .get_mut(r.client_class.as_ref())
            .expect("inserted");
        match r.verdict {
            Verdict::Accept => {
                day.accepted += 1;
                class.messages += 1;
                class.recipients += r.rcpt_count as u64;
                if r.dkim.is_empty() {
                    day.unsigned += 1;
                    class.unsigned += 1;
                }
            }
            _ if r.monitor => day.would_refuse += 1,
            verdict => {
                class.refused += 1;
                match verdict {
                    Verdict::Reject => day.rejected += 1,
                    Verdict::Tempfail => day.tempfailed += 1,
                    _ => day.locked += 1,
                }
                if r.reason.starts_with("limit_") {
                    day.limit_hits += 1;
                }
                match day.refusals.get_mut(r.reason.as_ref()) {
                    Some(n) => *n += 1,
                    None => {
                        day.refusals.insert(r.reason.to_string(), 1);
                    }
                }
            }
        }
        let stats = self.logins.entry(key).or_default();
        if r.abuse.is_some() {
            stats.flagged += 1;
        }
        match r.verdict {
            Verdict::Accept => {
                stats.messages += 1;
                stats.recipients += r.rcpt_count as u64;
                if let Some(from) = &r.header_from {
                    let from = if from.bytes().any(|b| b.is_ascii_uppercase()) {
                        Cow::Owned(from.to_lowercase())
                    } else {
                        Cow::Borrowed(from.as_ref())
                    };
                    if !stats.from_addresses.contains(from.as_ref()) {
                        stats.from_addresses.insert(from.into_owned());
                    }
                }
                if r.dkim.is_empty() {
                    stats.unsigned += 1;
                }
            }
            Verdict::Reject | Verdict::Tempfail | Verdict::Lock if r.monitor => {
                *stats.would_refuse.entry(r.reason.to_string()).or_default() += 1;
            }
            Verdict::Reject | Verdict::Tempfail | Verdict::Lock => {
                *stats.refusals.entry(r.reason.to_string()).or_default() += 1;
                if r.reason.starts_with("limit_") {
                    stats.limit_hits += 1;
                }
                if r.verdict == Verdict::Lock {
                    stats.locks += 1;
                }
            }
        }
        Ok(())
    }

    /// Logins by refusals, most first (ties by name), at most `n`.
    pub fn top_refused(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .logins
            .iter()
            .map(|(l, s)| (l.as_str(), s.refused()))
            .filter(|(_, r)| *r > 0)
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }

    /// Renders the report.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => self.json(),
            Format::Csv => self.csv(),
            Format::Table => self.table(),
        }
    }

    /// The report as one JSON document.
    fn json(&self) -> String {
        let top: Vec<serde_json::Value> = self
            .top_refused(10)
            .into_iter()
            .map(|(l, n)| serde_json::json!({"login": l, "refusals": n}))
            .collect();
        let unsigned: u64 = self.logins.values().map(|s| s.unsigned).sum();
        let doc = serde_json::json!({
            "records": self.records,
            "logins": self.logins,
            "top_refused": top,
            "accepted_unsigned": unsigned,
            "classes": self.classes,
            "days": self.days,
            "events": self.events,
            "skipped": self.skipped,
        });
        format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("serialisable")
        )
    }

    /// One CSV row per login.
    fn csv(&self) -> String {
        let mut out = String::from(
            "login,messages,recipients,distinct_from,refusals,limit_hits,locks,unsigned,refusals_by_reason,would_refuse,would_refuse_by_reason,flagged\n",
        );
        for (login, s) in &self.logins {
            let reasons: Vec<String> = s.refusals.iter().map(|(r, n)| format!("{r}={n}")).collect();
            let would: Vec<String> = s
                .would_refuse
                .iter()
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{}",
                csv(login),
                s.messages,
                s.recipients,
                s.from_addresses.len(),
                s.refused(),
                s.limit_hits,
                s.locks,
                s.unsigned,
                csv(&reasons.join(";")),
                s.would_refused(),
                csv(&would.join(";")),
                s.flagged
            );
        }
        out
    }

    /// The table for a terminal: per login, top refused, would-be refusals, unsigned.
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} records, {} logins, {} malformed lines skipped\n",
            self.records,
            self.logins.len(),
            self.skipped.len()
        );
        // Column widths of the table (the login column is 28 wide).
        const WIDTHS: [usize; 9] = [9, 10, 6, 8, 6, 6, 8, 6, 7];
        let _ = write!(out, "{:<28}", "login");
        for (name, w) in LoginStats::COLUMNS.iter().zip(WIDTHS) {
            let _ = write!(out, " {name:>w$}");
        }
        out.push('\n');
        for (login, s) in &self.logins {
            let _ = write!(out, "{:<28}", shown(login));
            for (value, w) in s.columns().iter().zip(WIDTHS) {
                let _ = write!(out, " {value:>w$}");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "\ntop refused logins:");
        for (login, n) in self.top_refused(10) {
            let reasons: Vec<String> = self.logins[login]
                .refusals
                .iter()
                .map(|(r, n)| format!("{} {n}", shown(r)))
                .collect();
            let _ = writeln!(
                out,
                "  {:<26} {n:>8}  ({})",
                shown(login),
                reasons.join(", ")
            );
        }
        let would: Vec<(&String, &LoginStats)> = self
            .logins
            .iter()
            .filter(|(_, s)| s.would_refused() > 0)
            .collect();
        if !would.is_empty() {
            let _ = writeln!(out, "\nwould be refused (monitor mode; passed unsigned):");
            for (login, s) in would {
                let reasons: Vec<String> = s
                    .would_refuse
                    .iter()
                    .map(|(r, n)| format!("{} {n}", shown(r)))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {:<26} {:>8}  ({})",
                    shown(login),
                    s.would_refused(),
                    reasons.join(", ")
                );
            }
        }
        let unsigned: u64 = self.logins.values().map(|s| s.unsigned).sum();
        let _ = writeln!(out, "\naccepted but unsigned: {unsigned}");
        for s in &self.skipped {
            let _ = writeln!(
                out,
                "skipped {}:{}: {}",
                shown(&s.file),
                s.line,
                shown(&s.error)
            );
        }
        out
    }
}

/// One CSV cell: control characters escaped, a leading `=`, `+`, `-` or `@` (a formula to a
/// spreadsheet: OWASP's CSV injection) neutralised with `'`, quoted by RFC 4180 when needed.
fn csv(field: &str) -> String {
    let mut text = Escaped(field).to_string();
    if text.starts_with(['=', '+', '-', '@']) {
        text.insert(0, '\'');
    }
    if text.contains([',', '"']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Text from the records (logins above all, which clients choose) as one safe piece of a
/// line: no control character can draw a row or move the cursor.
fn shown(text: &str) -> String {
    Escaped(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreadsheet_formulas_and_control_characters_never_leave_as_structure() {
        for (login, cell) in [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            (
                "evil\x1b[31m\nalice\tunlocked",
                "evil\\u{1b}[31m\\nalice\\tunlocked",
            ),
            ("alice", "alice"),
        ] {
            assert_eq!(csv(login), cell, "{login:?}");
        }
        assert_eq!(shown("a\r\nb\u{2028}"), "a\\r\\nb\\u{2028}");
    }

    #[test]
    fn refusals_recorded_in_monitor_mode_are_counted_as_would_refuse() {
        let dir = std::env::temp_dir().join(format!("rg-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("audit.log");
        let record = |verdict: &str, reason: &str, monitor: bool| {
            format!(
                r#"{{"time":"2026-11-30T10:00:00.000Z","host":"h","client_class":"authenticated","login":"mallory","rcpt_count":1,"verdict":"{verdict}","reason":"{reason}","text":"t","monitor":{monitor}}}"#
            )
        };
        std::fs::write(
            &file,
            [
                record("reject", "sender_not_owned", true),
                record("reject", "sender_not_owned", true),
                record("tempfail", "limit_messages_per_hour", false),
            ]
            .join("\n"),
        )
        .unwrap();
        let report = Report::read(&[file], &Filter::default()).unwrap();
        let mallory = &report.logins["mallory"];
        assert_eq!(mallory.would_refuse["sender_not_owned"], 2);
        assert_eq!(mallory.refused(), 1);
        let table = report.render(Format::Table);
        assert!(
            table.contains("would be refused (monitor mode; passed unsigned):\n  mallory                           2  (sender_not_owned 2)"),
            "{table}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
