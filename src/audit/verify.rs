//! `relayguard audit verify`: walks the hash chain through a series of audit files (oldest
//! first) and says where it first breaks: an edited, deleted, inserted or reordered record,
//! a record cut short, a file missing from a rotation series, a bad checkpoint signature.
//! The walk itself is pure ([`Verifier`] is fed lines); [`verify_files`] reads the files.

use super::chain::{self, Checkpoint, GENESIS, Hash, VerifyingKey};
use super::coverage::{Cadence, Coverage};
use super::verdict::MAX_PROBLEMS;
pub use super::verdict::{Break, Place, Problem, Proven, Verification};
use super::witness::Witness;
use std::io::{self, BufRead};
use std::path::PathBuf;

/// The chain walk, fed one line at a time.
pub struct Verifier {
    keys: Vec<VerifyingKey>,
    result: Verification,
    file: String,
    line: u64,
    /// Hash and seq of the last line of the chain so far (`None` before the first record).
    last: Option<(Hash, Option<u64>)>,
    /// Whether a sealed record has been seen (unsealed lines after it are problems).
    chained: bool,
    first_in_file: bool,
    /// The last hash of every file walked, to name a file given out of order.
    file_ends: Vec<(String, Hash)>,
    /// `prev` of the very first record, and retention records' `last_hash` (file, hash).
    deleted: Vec<(String, String)>,
    /// The first file's name.
    first_file: String,
    /// Cadence, closing checkpoints and witness.
    coverage: Coverage,
    witnesses: Vec<Witness>,
}

impl Verifier {
    /// A walk that checks checkpoints with `keys` (none: checkpoints are counted unchecked)
    /// and, with keys, holds the series to checkpoints every hour (the default interval).
    pub fn new(keys: Vec<VerifyingKey>) -> Verifier {
        let cadence = (!keys.is_empty()).then(|| Cadence::every(60));
        Verifier {
            coverage: Coverage::new(cadence),
            witnesses: Vec::new(),
            result: Verification {
                keys_given: !keys.is_empty(),
                ..Verification::default()
            },
            keys,
            file: String::new(),
            line: 0,
            last: None,
            chained: false,
            first_in_file: true,
            file_ends: Vec::new(),
            deleted: Vec::new(),
            first_file: String::new(),
        }
    }

    /// Holds the series to checkpoints every `minutes` (`audit.checkpoint_minutes`), when
    /// keys are given.
    pub fn checkpoint_minutes(mut self, minutes: u32) -> Self {
        if self.result.keys_given {
            self.coverage = Coverage::new(Some(Cadence::every(minutes)));
        }
        self
    }

    /// Checks the series against an outside witness of its checkpoints.
    pub fn witnesses(mut self, witnesses: Vec<Witness>) -> Self {
        self.witnesses = witnesses;
        self
    }

    /// Begins the next file of the series.
    pub fn begin_file(&mut self, name: &str) {
        if let Some((at, what)) = self.coverage.begin_file() {
            self.problem_at(at, what);
        }
        if self.result.files > 0
            && let Some((hash, _)) = self.last
        {
            self.file_ends.push((self.file.clone(), hash));
        }
        self.result.files += 1;
        if self.result.files == 1 {
            self.first_file = name.to_string();
        }
        self.file = name.to_string();
        self.line = 0;
        self.first_in_file = true;
    }

    fn problem(&mut self, what: Break) {
        let at = self.place();
        self.problem_at(at, what);
    }

    fn problem_at(&mut self, at: Place, what: Break) {
        if self.result.problems.len() < MAX_PROBLEMS {
            self.result.problems.push(Problem { at, what });
        } else {
            self.result.more_problems += 1;
        }
    }

    fn place(&self) -> Place {
        Place {
            file: self.file.clone(),
            line: self.line,
        }
    }

    /// Walks one line (without its newline); `complete` is false for a last line that has
    /// no newline.
    pub fn line(&mut self, text: &[u8], complete: bool) {
        self.line += 1;
        if text.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.result.records += 1;
        let hash = Hash::of(text);
        let sealed = if complete {
            chain::read_seal(text)
        } else {
            None
        };
        let Some(seal) = sealed else {
            if complete && !self.chained && self.is_json_object(text).is_some() {
                // Written before chaining began: the chain starts after it.
                self.result.unsealed_before_chain += 1;
                self.last = Some((hash, None));
            } else if complete && self.is_json_object(text).is_some() {
                self.problem(Break::Unsealed);
            } else {
                // A broken line is skipped: the writer resumed after the last good one.
                self.problem(Break::Truncated);
            }
            self.first_in_file = false;
            return;
        };
        self.check_link(&seal);
        self.chained = true;
        let is_checkpoint = text.starts_with(chain::CHECKPOINT_PREFIX);
        if is_checkpoint {
            self.checkpoint(text, &seal);
        } else {
            self.result.after_last_proven += 1;
        }
        let resumed = text.starts_with(b"{\"event\":\"audit_resumed\"");
        let place = self.place();
        if let Some((at, what)) =
            self.coverage
                .record(text, place, is_checkpoint.then_some(&hash), resumed)
        {
            self.problem_at(at, what);
        }
        if text.starts_with(b"{\"event\":\"audit_file_deleted\"")
            && let Some(v) = self.is_json_object(text)
            && let (Some(file), Some(last)) = (v["file"].as_str(), v["last_hash"].as_str())
        {
            self.deleted.push((file.to_string(), last.to_string()));
        }
        self.last = Some((hash, Some(seal.seq)));
        self.first_in_file = false;
    }

    fn is_json_object(&self, text: &[u8]) -> Option<serde_json::Value> {
        serde_json::from_slice::<serde_json::Value>(text)
            .ok()
            .filter(|v| v.is_object())
    }

    fn check_link(&mut self, seal: &chain::Sealed) {
        let Some((last_hash, last_seq)) = self.last else {
            // The first record of the series.
            if seal.prev == GENESIS {
                self.result.starts_at_genesis = true;
            } else {
                self.result.starts_after = Some(seal.prev.to_string());
            }
            return;
        };
        if self.first_in_file {
            if seal.prev != last_hash {
                let continues = self
                    .file_ends
                    .iter()
                    .find(|(_, h)| *h == seal.prev)
                    .map(|(f, _)| f.clone());
                let after = self.file_ends.last().map(|(f, _)| f.clone());
                match (continues, after) {
                    (Some(continues), _) => self.problem(Break::OutOfOrder { continues }),
                    (None, Some(after)) => self.problem(Break::MissingFile { after }),
                    (None, None) => self.problem(Break::Edited),
                }
            } else if seal.seq != 1 && last_seq.is_some() {
                self.problem(Break::Deleted {
                    missing: seal.seq - 1,
                });
            }
            return;
        }
        let expected = last_seq.map_or(1, |s| s + 1);
        if seal.seq > expected {
            self.problem(Break::Deleted {
                missing: seal.seq - expected,
            });
        } else if seal.seq < expected {
            self.problem(Break::InsertedOrReordered);
        } else if seal.prev != last_hash {
            self.problem(Break::Edited);
        }
    }

    fn checkpoint(&mut self, text: &[u8], seal: &chain::Sealed) {
        #[derive(serde::Deserialize)]
        struct Line {
            checkpoint: Checkpoint,
        }
        let cp = match serde_json::from_slice::<Line>(text) {
            Ok(line) => line.checkpoint,
            Err(e) => {
                self.problem(Break::BadCheckpoint {
                    reason: format!("unreadable: {e}"),
                });
                return;
            }
        };
        if self.keys.is_empty() {
            self.result.checkpoints_unchecked += 1;
            return;
        }
        let Some(key) = self.keys.iter().find(|k| k.id == cp.key) else {
            self.problem(Break::BadCheckpoint {
                reason: format!("signed by key {}, which was not given", cp.key),
            });
            return;
        };
        let text = chain::signed_text(&cp.time, &cp.host, seal.seq, &seal.prev);
        if key.verifies(&text, &cp.signature) {
            self.result.checkpoints += 1;
            self.result.after_last_proven = 0;
            self.result.last_proven = Some(Proven {
                at: Place {
                    file: self.file.clone(),
                    line: self.line,
                },
                time: cp.time,
                key: cp.key,
            });
        } else {
            self.problem(Break::BadCheckpoint {
                reason: format!("the signature by key {} does not verify", cp.key),
            });
        }
    }

    /// The result.
    pub fn finish(mut self) -> Verification {
        if let Some((hash, _)) = self.last {
            self.file_ends.push((self.file.clone(), hash));
        }
        if let Some(prev) = self.result.starts_after.clone()
            && let Some((continues, _)) = self
                .file_ends
                .iter()
                .find(|(_, h)| h.to_string() == prev)
                .cloned()
        {
            // The first file given continues a later one.
            let at = Place {
                file: self.first_file.clone(),
                line: 1,
            };
            self.result.problems.insert(
                0,
                Problem {
                    at,
                    what: Break::OutOfOrder { continues },
                },
            );
            self.result.problems.truncate(MAX_PROBLEMS);
        }
        if let Some(prev) = &self.result.starts_after {
            self.result.continues_deleted = self
                .deleted
                .iter()
                .find(|(_, h)| h == prev)
                .map(|(f, _)| f.clone());
        }
        self.result.resumed_after_crash = self.coverage.resumed;
        if !self.witnesses.is_empty() {
            let (period, missing) = self.coverage.missing(&self.witnesses);
            let missing: Vec<Witness> = missing.into_iter().cloned().collect();
            let end = self.place();
            self.result.witnessed = Some((period, period - missing.len()));
            for w in missing {
                self.problem_at(
                    end.clone(),
                    Break::WitnessMissing {
                        time: w.time,
                        seq: w.seq,
                        hash: w.hash,
                    },
                );
            }
        }
        self.result
    }
}

/// Walks `files` in the order given (plain or gzip'd).
pub fn verify_files(files: &[PathBuf], keys: Vec<VerifyingKey>) -> io::Result<Verification> {
    walk_files(files, Verifier::new(keys))
}

/// Walks `files` in the order given (plain or gzip'd) with a verifier set up beforehand
/// (checkpoint interval, witness).
pub fn walk_files(files: &[PathBuf], mut verifier: Verifier) -> io::Result<Verification> {
    let mut line = Vec::with_capacity(1024);
    for path in files {
        let name = path.display().to_string();
        let mut reader = super::files::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
        verifier.begin_file(&name);
        loop {
            line.clear();
            if reader
                .read_until(b'\n', &mut line)
                .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?
                == 0
            {
                break;
            }
            match line.strip_suffix(b"\n") {
                Some(text) => verifier.line(text, true),
                None => verifier.line(&line, false),
            }
        }
    }
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{CheckpointKey, Link};

    /// A sealed series: files of records, the chain running through them.
    fn series(files: &[usize]) -> Vec<Vec<Vec<u8>>> {
        let mut link = Link::START;
        let mut out = Vec::new();
        let mut n = 0;
        for &count in files {
            let mut lines = Vec::new();
            for i in 0..count {
                n += 1;
                let (line, next) = link.seal(format!(r#"{{"n":{n}}}"#).as_bytes(), i == 0);
                link = next;
                lines.push(line);
            }
            out.push(lines);
        }
        out
    }

    fn walk(files: &[Vec<Vec<u8>>], keys: Vec<VerifyingKey>) -> Verification {
        let mut v = Verifier::new(keys);
        for (i, lines) in files.iter().enumerate() {
            v.begin_file(&format!("f{i}"));
            for line in lines {
                v.line(line, true);
            }
        }
        v.finish()
    }

    fn first(files: &[Vec<Vec<u8>>]) -> (String, Break) {
        let v = walk(files, vec![]);
        let p = v.problems.first().expect("a problem").clone();
        (p.at.to_string(), p.what)
    }

    #[test]
    fn an_untouched_series_is_intact() {
        let v = walk(&series(&[5, 3, 4]), vec![]);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.records, 12);
        assert!(v.starts_at_genesis);
    }

    #[test]
    fn every_tampering_is_found_at_its_place() {
        let mut s = series(&[5, 5]);
        s[0][2] = br#"{"n":99,"seq":3,"prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#.to_vec();
        assert_eq!(first(&s).0, "f0:3");

        let mut s = series(&[5, 5]);
        s[0][1] = String::from_utf8(s[0][1].clone())
            .unwrap()
            .replace("\"n\":2", "\"n\":7")
            .into_bytes();
        assert_eq!(first(&s), ("f0:3".into(), Break::Edited));

        let mut s = series(&[5, 5]);
        s[0].remove(2);
        assert_eq!(first(&s), ("f0:3".into(), Break::Deleted { missing: 1 }));

        let mut s = series(&[5, 5]);
        s[0].swap(1, 2);
        assert_eq!(first(&s), ("f0:2".into(), Break::Deleted { missing: 1 }));

        let mut s = series(&[5, 5]);
        let forged = Link {
            seq: 2,
            hash: Hash::of(&s[0][1]),
        }
        .seal(br#"{"n":"forged"}"#, false)
        .0;
        s[0].insert(2, forged);
        assert_eq!(first(&s), ("f0:4".into(), Break::InsertedOrReordered));

        let mut s = series(&[5, 5]);
        let cut = s[0][3].len() / 2;
        s[0][3].truncate(cut);
        assert_eq!(first(&s), ("f0:4".into(), Break::Truncated));
        let mut s = series(&[5, 5]);
        s[0][3] = br#"{"n":4}"#.to_vec();
        assert_eq!(first(&s), ("f0:4".into(), Break::Unsealed));

        let s = series(&[5, 5, 5]);
        assert_eq!(
            first(&[s[0].clone(), s[2].clone()]),
            ("f1:1".into(), Break::MissingFile { after: "f0".into() })
        );
        assert_eq!(
            first(&[s[1].clone(), s[0].clone(), s[2].clone()]),
            (
                "f0:1".into(),
                Break::OutOfOrder {
                    continues: "f1".into()
                }
            )
        );
        assert_eq!(
            first(&[s[1].clone(), s[0].clone()]),
            (
                "f0:1".into(),
                Break::OutOfOrder {
                    continues: "f1".into()
                }
            )
        );
        let v = walk(&[s[0].clone(), s[2].clone(), s[1].clone()], vec![]);
        assert_eq!(
            v.problems[1].what,
            Break::OutOfOrder {
                continues: "f0".into()
            }
        );

        let mut s = series(&[5, 5]);
        s[0].truncate(4);
        assert_eq!(
            first(&s),
            ("f1:1".into(), Break::MissingFile { after: "f0".into() })
        );
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_truncated() {
        let s = series(&[3]);
        let mut v = Verifier::new(vec![]);
        v.begin_file("live");
        v.line(&s[0][0], true);
        v.line(&s[0][1], true);
        v.line(&s[0][2][..20], false);
        let v = v.finish();
        assert_eq!(v.problems[0].what, Break::Truncated);
        assert_eq!(v.problems[0].at.line, 3);
    }

    #[test]
    fn checkpoints_prove_the_chain_and_a_forged_one_fails() {
        let (private, public) = CheckpointKey::generate().unwrap();
        let key = CheckpointKey::from_pem(private.as_bytes()).unwrap();
        let public = VerifyingKey::from_pem(public.as_bytes()).unwrap();
        let mut lines = series(&[4]).remove(0);
        let link = Link {
            seq: 4,
            hash: Hash::of(&lines[3]),
        };
        let cp = key.checkpoint("2026-12-03T10:00:00.000Z", "relay1", &link, false);
        let (cp_line, link) = link.seal(&cp, false);
        lines.push(cp_line.clone());
        lines.push(link.seal(br#"{"n":5}"#, false).0);
        let v = walk(std::slice::from_ref(&lines), vec![public.clone()]);
        assert!(v.intact(), "{}", v.render());
        assert_eq!(v.checkpoints, 1);
        assert_eq!(v.after_last_proven, 1);
        assert_eq!(v.last_proven.as_ref().unwrap().at.line, 5);

        // Without the key: unchecked, not proven.
        let v = walk(std::slice::from_ref(&lines), vec![]);
        assert_eq!(v.checkpoints_unchecked, 1);

        // A rewritten history re-sealed by someone without the private key.
        let mut forged = series(&[4]).remove(0);
        forged[0] = Link::START.seal(br#"{"n":"rewritten"}"#, true).0;
        let mut link = Link {
            seq: 1,
            hash: Hash::of(&forged[0]),
        };
        for (i, line) in forged.iter_mut().enumerate().skip(1) {
            let (l, next) = link.seal(format!(r#"{{"n":{}}}"#, i + 1).as_bytes(), false);
            *line = l;
            link = next;
        }
        let moved = String::from_utf8(cp_line).unwrap();
        let cp_object = &moved[..moved.find(",\"seq\":").unwrap()];
        forged.push(link.seal(format!("{cp_object}}}").as_bytes(), false).0);
        let v = walk(&[forged], vec![public]);
        assert!(
            matches!(v.problems[0].what, Break::BadCheckpoint { .. }),
            "{}",
            v.render()
        );
        assert!(!v.intact());
    }
}
