//! The ledger: for every message a client tried, what became of it (delivered and verified,
//! refused as expected, still retrying), held against what the Internet received, what
//! each relay's audit log says, and the limits; and the day's figures.

use crate::client::{Attempt, Tries};
use crate::faults::Event;
use crate::model::{Expect, Kind, Planned};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A message as the Internet received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub file: PathBuf,
    pub id: usize,
    /// `relay1`, `relay2`: the relay that passed it on, and its queue id there.
    pub relay: String,
    pub queue_id: String,
    /// The From header as delivered.
    pub from: String,
    /// `s=` of each signature.
    pub selectors: Vec<String>,
    /// dkimpy's verdict: signatures verified (0 when any failed).
    pub verified: usize,
}

/// Reads the Internet's messages.
pub fn received(dir: &Path) -> Vec<Received> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let unfolded = text
            .replace("\r\n", "\n")
            .replace("\n\t", " ")
            .replace("\n ", " ");
        let Some(id) = unfolded
            .split("Message-ID: <campus-")
            .nth(1)
            .and_then(|r| r.split('@').next())
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        // The relay's own Received line: "by relayN.tugraz.test (Postfix) with … id QID".
        let (relay, queue_id) = unfolded
            .lines()
            .filter(|l| l.starts_with("Received:"))
            .find_map(|l| {
                let by = l.split(" by relay").nth(1)?;
                let relay = format!("relay{}", by.split('.').next()?);
                let qid = by.split(" id ").nth(1)?.split([' ', ';']).next()?;
                Some((relay, qid.to_string()))
            })
            .unwrap_or_default();
        let header = |name: &str| {
            unfolded
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| l[name.len()..].trim().to_string())
                .unwrap_or_default()
        };
        let selectors = unfolded
            .lines()
            .filter(|l| l.starts_with("DKIM-Signature:"))
            .filter_map(|l| {
                l.split([';', ' '])
                    .find_map(|t| t.strip_prefix("s="))
                    .map(|s| s.trim_end_matches(';').to_string())
            })
            .collect();
        out.push(Received {
            file,
            id,
            relay,
            queue_id,
            from: header("From:"),
            selectors,
            verified: 0,
        });
    }
    out
}

/// One decision record of a relay's audit log.
#[derive(Debug, Clone)]
pub struct Record {
    pub host: String,
    pub time_ms: i64,
    pub queue_id: Option<String>,
    pub login: Option<String>,
    pub verdict: String,
    pub reason: String,
}

/// The decision records of an audit log (checkpoints and events aside).
pub fn records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("verdict").is_some() && v["monitor"] != true)
        .map(|v| Record {
            host: v["host"].as_str().unwrap_or_default().to_string(),
            time_ms: v["time"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map_or(0, |t| t.as_millisecond()),
            queue_id: v["queue_id"].as_str().map(str::to_string),
            // Cyrus SASL names the realm (user@tugraz.at); the plan has the bare login.
            login: v["login"]
                .as_str()
                .map(|l| l.split_once('@').map_or(l, |(user, _)| user).to_string()),
            verdict: v["verdict"].as_str().unwrap_or_default().to_string(),
            reason: v["reason"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// A reply Postfix made on its own (relayguard not reachable, or Postfix's own checks), not
/// relayguard's: no audit record stands for it.
fn postfix_own(a: &Attempt) -> bool {
    a.code == 0
        || a.text.contains("Service unavailable")
        || a.stage == "connect"
        || a.stage == "xclient"
        || a.stage == "auth"
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    Delivered,
    Refused,
    Retrying,
}

/// Everything the run found wrong; the run fails unless all are empty.
#[derive(Debug, Default, Serialize)]
pub struct Failures {
    /// Accepted by a relay, never delivered.
    pub lost: Vec<String>,
    /// Delivered with a protected From, unsigned or not verifying.
    pub unsigned_or_failing: Vec<String>,
    /// Forgeries delivered.
    pub forgeries_delivered: Vec<String>,
    /// Legitimate mail refused for good, or never delivered.
    pub legitimate_refused: Vec<String>,
    /// A refusal other than the one expected.
    pub wrong_refusal: Vec<String>,
    /// More accepted for a login than its limit allows, across both relays.
    pub limits_exceeded: Vec<String>,
    /// Audit records and the ledger disagree.
    pub audit_mismatch: Vec<String>,
    /// An audit chain that does not verify.
    pub chain_broken: Vec<String>,
}

impl Failures {
    pub fn count(&self) -> usize {
        self.lost.len()
            + self.unsigned_or_failing.len()
            + self.forgeries_delivered.len()
            + self.legitimate_refused.len()
            + self.wrong_refusal.len()
            + self.limits_exceeded.len()
            + self.audit_mismatch.len()
            + self.chain_broken.len()
    }
}

/// The ledger of a run.
pub struct Ledger<'a> {
    pub plan: &'a [Planned],
    pub tries: &'a [Tries],
    pub received: Vec<Received>,
    pub records: Vec<Record>,
    pub events: &'a [Event],
    /// The wall clock at the start, in Unix milliseconds.
    pub start_ms: i64,
    pub relays: Vec<String>,
}

impl Ledger<'_> {
    fn delivered(&self) -> HashMap<usize, Vec<&Received>> {
        let mut map: HashMap<usize, Vec<&Received>> = HashMap::new();
        for r in &self.received {
            map.entry(r.id).or_default().push(r);
        }
        map
    }

    /// What became of message `id`.
    pub fn fate(&self, id: usize, delivered: &HashMap<usize, Vec<&Received>>) -> Fate {
        if delivered.contains_key(&id) {
            return Fate::Delivered;
        }
        let msg = &self.plan[id];
        match self.tries[id].0.last() {
            Some(a) if a.code >= 500 => Fate::Refused,
            Some(a) if matches!(&msg.expect, Expect::Refuse(t) if a.text.contains(t)) => {
                Fate::Refused
            }
            _ => Fate::Retrying,
        }
    }

    /// Whether a moment (ms after the start) is within `slack` of a fault on `relay` of
    /// kind `fault` (or of a shared service when `relay` is None).
    fn near(&self, at_ms: u64, relay: usize, faults: &[&str], slack: u64) -> bool {
        self.events.iter().any(|e| {
            faults.contains(&e.fault)
                && e.relay.is_none_or(|r| r == relay)
                && at_ms + slack >= e.start_ms
                && at_ms <= e.end_ms + slack
        })
    }

    /// Checks everything; the failures found.
    pub fn check(&self, chains: &[(String, Result<(), String>)]) -> Failures {
        let mut f = Failures::default();
        let delivered = self.delivered();
        for msg in self.plan {
            let id = msg.id;
            let tries = &self.tries[id];
            let fate = self.fate(id, &delivered);
            let last = tries.0.last().map(|a| a.text.clone()).unwrap_or_default();
            let what = |s: &str| {
                format!(
                    "#{id} {:?} {}: {s}",
                    msg.kind,
                    msg.login.as_deref().unwrap_or("-")
                )
            };
            if tries.accepted().is_some() && fate != Fate::Delivered {
                f.lost.push(what("accepted, never delivered"));
            }
            for copy in delivered.get(&id).into_iter().flatten() {
                let given = tries.0.iter().any(|a| {
                    a.queue_id.as_deref() == Some(&copy.queue_id)
                        && self.relays.get(a.relay) == Some(&copy.relay)
                });
                if !given {
                    f.audit_mismatch.push(what(&format!(
                        "delivered by {} as {}, which no client was told",
                        copy.relay, copy.queue_id
                    )));
                }
                if copy.verified == 0 {
                    f.unsigned_or_failing.push(what(&format!(
                        "delivered by {} with selectors {:?} that do not verify",
                        copy.relay, copy.selectors
                    )));
                }
                if msg.kind == Kind::Robot && !copy.from.contains("noreply-web@tugraz.at") {
                    f.wrong_refusal
                        .push(what(&format!("not masqueraded: From {}", copy.from)));
                }
            }
            match (&msg.expect, fate) {
                (Expect::Refuse(_), Fate::Delivered) => {
                    f.forgeries_delivered.push(what("delivered"))
                }
                (Expect::Refuse(t), Fate::Refused) if !last.contains(t) => f
                    .wrong_refusal
                    .push(what(&format!("refused with {last}, expected {t}"))),
                (Expect::Refuse(_), Fate::Retrying) => f
                    .wrong_refusal
                    .push(what(&format!("still retrying: {last}"))),
                (Expect::Deliver, Fate::Refused) | (Expect::DeliverOrLimited, Fate::Refused) => {
                    f.legitimate_refused.push(what(&format!("refused: {last}")))
                }
                (Expect::Deliver, Fate::Retrying) => f
                    .legitimate_refused
                    .push(what(&format!("never delivered: {last}"))),
                (Expect::DeliverOrLimited, Fate::Retrying) if !last.contains("limit of") => f
                    .legitimate_refused
                    .push(what(&format!("never delivered: {last}"))),
                _ => {}
            }
        }
        self.check_audit(&mut f);
        self.check_limits(&mut f);
        for (relay, result) in chains {
            if let Err(e) = result {
                f.chain_broken.push(format!("{relay}: {e}"));
            }
        }
        f
    }

    /// Every accepted message has its accept record on its relay and every accept record
    /// its message; every refusal relayguard gave has its record and every refusal record
    /// a client that heard it. A record whose reply never reached the client is explained
    /// only by a crash of that relayguard at that moment.
    fn check_audit(&self, f: &mut Failures) {
        let relay_of = |host: &str| self.relays.iter().position(|r| r == host);
        let at_ms = |r: &Record| (r.time_ms - self.start_ms).max(0) as u64;
        let mut accepted: HashMap<(usize, String), usize> = HashMap::new();
        let mut refusals: Vec<(usize, u64, u64, Option<String>, usize)> = Vec::new();
        for (id, tries) in self.tries.iter().enumerate() {
            for a in &tries.0 {
                if a.code == 250 {
                    if let Some(q) = &a.queue_id {
                        accepted.insert((a.relay, q.clone()), id);
                    }
                } else if a.code >= 400 && !postfix_own(a) {
                    refusals.push((a.relay, a.at_ms, a.took_ms, self.plan[id].login.clone(), id));
                }
            }
        }
        // Records are matched to the refusals clients heard in time order, each to the
        // session that ends first among those it falls in (optimal for points in
        // intervals): a login whose queue retries dozens of messages at once has many
        // overlapping sessions.
        refusals.sort_by_key(|(_, when, took, _, _)| when + took);
        let mut unmatched_refusals = refusals.clone();
        let mut records: Vec<&Record> = self.records.iter().collect();
        records.sort_by_key(|r| at_ms(r));
        for r in records {
            let Some(relay) = relay_of(&r.host) else {
                f.audit_mismatch
                    .push(format!("record of unknown host {}", r.host));
                continue;
            };
            if r.verdict == "accept" {
                let q = r.queue_id.clone().unwrap_or_default();
                if accepted.remove(&(relay, q.clone())).is_none()
                    && !self.near(
                        at_ms(r),
                        relay,
                        &["relayguard_killed", "relay_stopped"],
                        2_000,
                    )
                {
                    f.audit_mismatch.push(format!(
                        "{}: accept record {q} ({:?}) without an accepted message",
                        r.host, r.login
                    ));
                }
                continue;
            }
            // The refusal a client heard: same relay and login, during its session.
            let t = at_ms(r);
            let found = unmatched_refusals
                .iter()
                .position(|(rel, when, took, login, _)| {
                    *rel == relay
                        && *login == r.login
                        && t + 1_000 >= *when
                        && t <= when + took + 1_000
                });
            match found {
                Some(i) => {
                    unmatched_refusals.remove(i);
                }
                None if self.near(t, relay, &["relayguard_killed", "relay_stopped"], 2_000) => {}
                None => f.audit_mismatch.push(format!(
                    "{}: {} record ({}, {:?}) at {:.1} s that no client heard",
                    r.host,
                    r.verdict,
                    r.reason,
                    r.login,
                    t as f64 / 1000.0
                )),
            }
        }
        for ((relay, q), id) in accepted {
            f.audit_mismatch.push(format!(
                "{}: message #{id} accepted as {q} without an accept record",
                self.relays[relay]
            ));
        }
        for (relay, when, _, login, id) in unmatched_refusals {
            let a = self.tries[id]
                .0
                .iter()
                .find(|a| a.at_ms == when)
                .expect("an attempt");
            // A full audit disk: the record could not be written (the log says how many
            // lines are missing in an audit_resumed note), or the refusal is that no record
            // could be written.
            if self.near(when, relay, &["audit_disk_full"], 2_000) {
                continue;
            }
            f.audit_mismatch.push(format!(
                "{}: #{id} ({login:?}) refused at {:.1} s without a record: {}",
                self.relays[relay],
                when as f64 / 1000.0,
                a.text
            ));
        }
    }

    /// Across both relays, no login got more accepted than its hourly limit lets through
    /// (GCRA: the whole hour's count at once, then one per hour/count). A message is counted
    /// at MAIL but its record is stamped at its end, so two records can be closer together
    /// than their MAILs were: a message's first replenished slot, taken the moment it opens,
    /// may be recorded a few ms before it by the records' clock (seen: 31 of 30 at 119.999 s).
    /// `MAIL_TO_RECORD_MS` allows for that, far below one slot (120 s for a robot).
    fn check_limits(&self, f: &mut Failures) {
        const MAIL_TO_RECORD_MS: i64 = 1_000;
        let limit = |login: &str| -> (u64, &str) {
            if login.starts_with("robot-") {
                (30, "robot")
            } else {
                (50, "external")
            }
        };
        let mut by_login: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for r in self.records.iter().filter(|r| r.verdict == "accept") {
            if let Some(l) = &r.login {
                by_login.entry(l.clone()).or_default().push(r.time_ms);
            }
        }
        for (login, mut times) in by_login {
            times.sort();
            let (count, class) = limit(&login);
            let interval = 3_600_000 / count as i64;
            let t0 = times[0];
            for (n, t) in times.iter().enumerate() {
                let allowed = count as i64 + (t - t0 + MAIL_TO_RECORD_MS) / interval;
                if n as i64 + 1 > allowed {
                    f.limits_exceeded.push(format!(
                        "{login} ({class}, {count}/h): {} accepted within {:.0} s",
                        n + 1,
                        (t - t0) as f64 / 1000.0
                    ));
                    break;
                }
            }
        }
    }
}
