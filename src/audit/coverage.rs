//! What the checkpoints cover, beyond each signature: an honest relay writes one within
//! `checkpoint_minutes` of the first record it has not sealed yet, one when it closes a file
//! (logrotate's reopen, shutdown), and tells each to its witness. A forger who removes
//! checkpoints and re-seals the tail, or cuts a file after a checkpoint, breaks one of these;
//! [`Coverage`] is fed the walk and names the place. Pure: no files, no clock.

use super::verify::{Break, Place};
use super::witness::Witness;

/// How often an honest relay writes checkpoints, and the slack its timer and disk get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// `audit.checkpoint_minutes`, in milliseconds.
    pub every_ms: i64,
    /// max(5 s, a twentieth of the interval).
    pub slack_ms: i64,
}

impl Cadence {
    /// The cadence of checkpoints every `minutes`.
    pub fn every(minutes: u32) -> Self {
        let every_ms = i64::from(minutes) * 60_000;
        Cadence {
            every_ms,
            slack_ms: (every_ms / 20).max(5_000),
        }
    }
}

/// The coverage walk: fed every sealed record of the series, in order.
#[derive(Debug, Default)]
pub struct Coverage {
    cadence: Option<Cadence>,
    /// The first record no checkpoint covers yet: its time and place.
    open: Option<(i64, Place)>,
    reported: bool,
    /// Whether the last record of the current file was a checkpoint, and its place.
    last: Option<(bool, Place)>,
    /// Times the writer resumed after a crash (records before it stay uncovered).
    pub resumed: u64,
    /// Hashes of the checkpoint lines walked.
    checkpoints: Vec<String>,
    first_time: Option<i64>,
}

impl Coverage {
    /// A walk that holds the series to `cadence` (none: only checkpoints' places count).
    pub fn new(cadence: Option<Cadence>) -> Self {
        Coverage {
            cadence,
            ..Coverage::default()
        }
    }

    /// A new file begins: the one before must have ended with a checkpoint.
    pub fn begin_file(&mut self) -> Option<(Place, Break)> {
        match self.last.take() {
            Some((false, place)) if self.cadence.is_some() => {
                Some((place, Break::NoClosingCheckpoint))
            }
            _ => None,
        }
    }

    /// A sealed record (`checkpoint`: a verified checkpoint; `resumed`: the writer's
    /// `audit_resumed` note) with the time it carries, at `place`.
    pub fn record(
        &mut self,
        line: &[u8],
        place: Place,
        checkpoint: Option<&super::chain::Hash>,
        resumed: bool,
    ) -> Option<(Place, Break)> {
        let time = time_of(line);
        if self.first_time.is_none() {
            self.first_time = time;
        }
        self.last = Some((checkpoint.is_some(), place.clone()));
        if resumed {
            // After a crash the records before it were never sealed: counted, not a break.
            self.resumed += 1;
            self.open = None;
            self.reported = false;
            return None;
        }
        let mut found = None;
        if let (Some(cadence), Some(time), Some((since, at))) = (self.cadence, time, &self.open)
            && !self.reported
            && time - since > cadence.every_ms + cadence.slack_ms
        {
            self.reported = true;
            found = Some((
                place.clone(),
                Break::Uncovered {
                    since: at.clone(),
                    minutes: ((time - since) / 60_000) as u64,
                },
            ));
        }
        match checkpoint {
            Some(hash) => {
                self.checkpoints.push(hash.to_string());
                self.open = None;
                self.reported = false;
            }
            None if self.open.is_none() => {
                if let Some(time) = time {
                    self.open = Some((time, place));
                }
            }
            None => {}
        }
        found
    }

    /// The witnessed checkpoints of the period walked (none older than its first record),
    /// and those of them the files lack: the log was cut or rewritten after them.
    pub fn missing<'w>(&self, witnesses: &'w [Witness]) -> (usize, Vec<&'w Witness>) {
        let period: Vec<&Witness> = witnesses
            .iter()
            .filter(|w| match (millis(&w.time), self.first_time) {
                (Some(t), Some(first)) => t >= first,
                _ => true,
            })
            .collect();
        let count = period.len();
        let missing = period
            .into_iter()
            .filter(|w| !self.checkpoints.contains(&w.hash))
            .collect();
        (count, missing)
    }

    /// How many checkpoint lines the walk saw.
    pub fn checkpoints(&self) -> usize {
        self.checkpoints.len()
    }
}

/// The `time` a record carries (the first `"time":"…"` in the line), in Unix milliseconds.
fn time_of(line: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"time\":\"";
    let start = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let end = start + line[start..].iter().position(|&b| b == b'"')?;
    millis(std::str::from_utf8(&line[start..end]).ok()?)
}

fn millis(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::Hash;

    fn at(line: u64) -> Place {
        Place {
            file: "audit.log".into(),
            line,
        }
    }

    fn record(minute: u32, second: u32) -> Vec<u8> {
        format!(
            "{{\"time\":\"2026-12-03T10:{minute:02}:{second:02}.000Z\",\"verdict\":\"accept\"}}"
        )
        .into_bytes()
    }

    #[test]
    fn a_tail_longer_than_the_cadence_is_a_missing_checkpoint() {
        let mut c = Coverage::new(Some(Cadence::every(1)));
        let cp = Hash::of(b"cp");
        assert_eq!(c.record(&record(0, 0), at(1), None, false), None);
        assert_eq!(c.record(&record(0, 59), at(2), None, false), None);
        assert_eq!(c.record(&record(1, 0), at(3), Some(&cp), false), None);
        // After the checkpoint: 70 s of records with none in between.
        assert_eq!(c.record(&record(2, 0), at(4), None, false), None);
        assert_eq!(c.record(&record(2, 30), at(5), None, false), None);
        assert_eq!(
            c.record(&record(3, 10), at(6), None, false),
            Some((
                at(6),
                Break::Uncovered {
                    since: at(4),
                    minutes: 1
                }
            ))
        );
        assert_eq!(
            c.record(&record(3, 20), at(7), None, false),
            None,
            "reported once"
        );
        // A crash resets the window: the records before it are counted as unsealed.
        assert_eq!(c.record(&record(9, 0), at(8), None, true), None);
        assert_eq!(c.record(&record(9, 30), at(9), None, false), None);
        assert_eq!(c.resumed, 1);
    }

    #[test]
    fn a_file_must_close_with_a_checkpoint() {
        let mut c = Coverage::new(Some(Cadence::every(60)));
        c.record(&record(0, 0), at(1), Some(&Hash::of(b"a")), false);
        assert_eq!(c.begin_file(), None);
        c.record(&record(0, 1), at(1), None, false);
        assert_eq!(c.begin_file(), Some((at(1), Break::NoClosingCheckpoint)));
    }

    #[test]
    fn witnessed_checkpoints_must_be_in_the_files() {
        let mut c = Coverage::new(None);
        let kept = Hash::of(b"kept");
        c.record(&record(0, 0), at(1), Some(&kept), false);
        let witness = |hash: String, minute: u32| Witness {
            seq: 1,
            hash,
            time: format!("2026-12-03T10:{minute:02}:00.000Z"),
            host: "relay1".into(),
        };
        let older = witness("00".repeat(32), 0);
        let ok = witness(kept.to_string(), 0);
        let cut = witness("ff".repeat(32), 5);
        let all = [ok, cut.clone()];
        assert_eq!(c.missing(&all), (2, vec![&cut]));
        // A witness of a checkpoint before the first record given is not asked for.
        let mut c = Coverage::new(None);
        c.record(&record(1, 0), at(1), None, false);
        assert_eq!(c.missing(&[witness("00".repeat(32), 0)]), (0, vec![]));
        let _ = older;
    }
}
