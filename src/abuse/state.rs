//! One login's signal state and its windows: the last 25 hours hour by hour (messages, new
//! recipients, recipient domains), strangers by the quarter hour, the baselines, the
//! networks it used and the known-recipient sketch.
//!
//! An hour enters the login's baselines only once it is more than a day old: what is being
//! judged never raises its own threshold. Strangers are kept by the quarter hour for the
//! last day, so "the last hour" and "the last 24 hours" are sums over at least that long
//! and at most a quarter more: no hour and no day can hold more than its threshold, however
//! the sending is timed. Each login costs about 3.5 KB at most (two 1 KB Bloom filters, two
//! bounded sets per kind, the rings, the networks it used).

use super::observation::Observation;
use super::{Rules, Signals};

/// Bits of one known-recipient sketch (1 KB).
pub const SKETCH_BITS: u64 = 8_192;

/// Bits set per recipient.
pub const SKETCH_HASHES: usize = 4;

/// Recipients one sketch takes before it is renewed: at this fill a stranger passes for
/// known 0.4 % of the time (both generations together: under 1 %); beyond it the rate
/// climbs fast (2 % at 1,000, 50 % at 3,000). With the previous generation still read, a
/// login's last 600 to 1,200 distinct recipients stay known.
pub const SKETCH_CAPACITY: u32 = 600;

/// The sketch positions of a recipient.
pub fn positions(recipient: &str) -> [u64; SKETCH_HASHES] {
    let digest = ring::digest::digest(&ring::digest::SHA256, recipient.as_bytes());
    let d = digest.as_ref();
    std::array::from_fn(|i| {
        u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes")) % SKETCH_BITS
    })
}

/// The hour bucket of a time (Unix milliseconds).
pub fn hour_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(3_600_000)
}

/// How much of one message counts toward the hourly new-recipient signal: at most this many
/// (one message to many is the recipient limit's business; many messages to strangers are
/// what a stolen account sends). The strangers signals count every recipient.
pub const PER_MESSAGE: u64 = 3;

/// Hours the state keeps one by one: the last day and the hour before it.
pub const HOURS: usize = 25;

/// Quarter hours the strangers ring keeps: the last day and the quarter being filled.
pub const QUARTERS: usize = 97;

/// One quarter hour, in milliseconds.
const QUARTER_MS: i64 = 900_000;

/// Networks a login is remembered to have used (the most recent ones).
const FAMILIAR: usize = 32;

/// Days a network must have been in use before it is familiar: a thief's proxy does not
/// become "the usual desk" after a day of abuse.
pub const FAMILIAR_AFTER_DAYS: i64 = 7;

/// Folds an hour into a baseline: the login's busiest hour lately, halving every
/// `baseline_days` (`hours_since` the previous fold).
pub fn fold(baseline: f64, count: f64, hours_since: i64, rules: &Rules) -> f64 {
    let half_life = f64::from(rules.baseline_days.max(1)) * 24.0;
    (baseline * 0.5f64.powf(hours_since.max(0) as f64 / half_life)).max(count)
}

/// A count over the last hour, from the current and previous hour buckets as a sliding
/// window: all of this hour, and the part of the previous hour still inside it.
pub fn sliding(current: f64, previous: f64, now_ms: i64) -> f64 {
    let into = now_ms.rem_euclid(3_600_000) as f64 / 3_600_000.0;
    current + previous * (1.0 - into)
}

/// A bounded set of hashed members (saturates at its bound).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Bounded(pub(crate) Vec<u64>);

impl Bounded {
    pub(crate) const MAX: usize = 64;

    fn add(&mut self, member: &str) {
        let h = hash64(member);
        if self.0.len() < Self::MAX && !self.0.contains(&h) {
            self.0.push(h);
        }
    }

    fn union(&self, other: &Bounded) -> u64 {
        (self.0.len() + other.0.iter().filter(|h| !self.0.contains(h)).count()) as u64
    }
}

fn hash64(member: &str) -> u64 {
    u64::from_le_bytes(
        ring::digest::digest(&ring::digest::SHA256, member.as_bytes()).as_ref()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

/// A Bloom filter of [`SKETCH_BITS`].
#[derive(Clone, PartialEq)]
pub(crate) struct Sketch(pub(crate) Box<[u64; (SKETCH_BITS / 64) as usize]>);

impl Default for Sketch {
    fn default() -> Self {
        Sketch(Box::new([0; (SKETCH_BITS / 64) as usize]))
    }
}

impl Sketch {
    fn has(&self, p: &[u64; SKETCH_HASHES]) -> bool {
        p.iter()
            .all(|&b| self.0[(b / 64) as usize] & (1 << (b % 64)) != 0)
    }

    fn set(&mut self, p: &[u64; SKETCH_HASHES]) {
        for &b in p {
            self.0[(b / 64) as usize] |= 1 << (b % 64);
        }
    }
}

/// One hour of a login's sending.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Hour {
    /// Which hour this is (`None`: nothing recorded).
    pub(crate) hour: Option<i64>,
    pub(crate) messages: u32,
    /// New recipients, at most [`PER_MESSAGE`] per message.
    pub(crate) new_capped: u32,
    /// Distinct recipient domains.
    pub(crate) domains: u16,
}

/// One login's state.
#[derive(Clone, PartialEq)]
pub struct LoginState {
    pub(crate) hour: i64,
    pub(crate) hours: [Hour; HOURS],
    /// The current quarter hour, and strangers per quarter (campus ones by
    /// `campus_weight`), indexed by quarter modulo [`QUARTERS`].
    pub(crate) quarter: i64,
    pub(crate) strangers: [f32; QUARTERS],
    pub(crate) networks: [Bounded; 2],
    pub(crate) domains: [Bounded; 2],
    pub(crate) baseline: f64,
    pub(crate) domains_baseline: f64,
    pub(crate) new_baseline: f64,
    pub(crate) folded: i64,
    /// Networks used: hash, the day of first and of last use.
    pub(crate) familiar: Vec<(u64, i64, i64)>,
    pub(crate) sketches: [Sketch; 2],
    /// Recipients added to the current sketch, and when it was started.
    pub(crate) fill: u32,
    pub(crate) sketch_started: i64,
    pub(crate) last_ms: i64,
}

impl Default for LoginState {
    fn default() -> Self {
        LoginState {
            hour: i64::MIN,
            hours: [Hour::default(); HOURS],
            quarter: i64::MIN,
            strangers: [0.0; QUARTERS],
            networks: Default::default(),
            domains: Default::default(),
            baseline: 0.0,
            domains_baseline: 0.0,
            new_baseline: 0.0,
            folded: 0,
            familiar: Vec::new(),
            sketches: Default::default(),
            fill: 0,
            sketch_started: 0,
            last_ms: 0,
        }
    }
}

fn slot(hour: i64) -> usize {
    hour.rem_euclid(HOURS as i64) as usize
}

impl LoginState {
    /// Folds one hour that left the last day into the baselines.
    fn fold_hour(&mut self, h: Hour, rules: &Rules) {
        let Some(at) = h.hour else { return };
        if h.messages == 0 {
            return;
        }
        let since = at - self.folded;
        self.baseline = fold(self.baseline, f64::from(h.messages), since, rules);
        self.domains_baseline = fold(self.domains_baseline, f64::from(h.domains), since, rules);
        self.new_baseline = fold(self.new_baseline, f64::from(h.new_capped), since, rules);
        self.folded = at;
    }

    /// Moves the windows to `now`: hours older than a day fold into the baselines.
    fn roll(&mut self, now_ms: i64, rules: &Rules) {
        let hour = hour_of(now_ms);
        if hour > self.hour {
            let gap = hour.saturating_sub(self.hour);
            if gap >= HOURS as i64 {
                // Every kept hour is more than a day old: fold them all, oldest first.
                let mut old: Vec<Hour> = self
                    .hours
                    .iter()
                    .copied()
                    .filter(|h| h.hour.is_some())
                    .collect();
                old.sort_by_key(|h| h.hour);
                for h in old {
                    self.fold_hour(h, rules);
                }
                self.hours = [Hour::default(); HOURS];
            } else {
                for h in self.hour + 1..=hour {
                    let s = slot(h);
                    let old = std::mem::take(&mut self.hours[s]);
                    self.fold_hour(old, rules);
                }
            }
            if hour == self.hour + 1 {
                self.networks[0] = std::mem::take(&mut self.networks[1]);
                self.domains[0] = std::mem::take(&mut self.domains[1]);
            } else {
                self.networks[0] = Bounded::default();
                self.domains[0] = Bounded::default();
            }
            self.networks[1] = Bounded::default();
            self.domains[1] = Bounded::default();
            self.hour = hour;
            self.hours[slot(hour)].hour = Some(hour);
        }
        let quarter = now_ms.div_euclid(QUARTER_MS);
        if quarter > self.quarter {
            if quarter.saturating_sub(self.quarter) >= QUARTERS as i64 {
                self.strangers = [0.0; QUARTERS];
            } else {
                for q in self.quarter + 1..=quarter {
                    self.strangers[q.rem_euclid(QUARTERS as i64) as usize] = 0.0;
                }
            }
            self.quarter = quarter;
        }
        // The sketch generation lasts half the recipient memory, or until it is full.
        let half = i64::from(rules.new_recipient_days.max(2) / 2) * 86_400_000;
        if now_ms - self.sketch_started >= half || self.fill >= SKETCH_CAPACITY {
            if now_ms - self.sketch_started >= 2 * half {
                self.sketches = Default::default();
            } else {
                self.sketches[0] = std::mem::take(&mut self.sketches[1]);
            }
            self.fill = 0;
            self.sketch_started = now_ms;
        }
    }

    /// Records a message; the signals after it.
    pub fn observe(&mut self, seen: &Observation, now_ms: i64, rules: &Rules) -> Signals {
        self.roll(now_ms, rules);
        self.last_ms = now_ms;
        let day = now_ms.div_euclid(86_400_000);
        let mut unfamiliar = false;
        if let Some(n) = &seen.network {
            self.networks[1].add(n);
            let h = hash64(n);
            let since = day - i64::from(rules.new_recipient_days);
            // Familiar: first used a week ago or more, and used within the recipient memory.
            let known = self.familiar.iter().any(|&(net, first, last)| {
                net == h && first <= day - FAMILIAR_AFTER_DAYS && last >= since
            });
            // A login with no past has no familiar network either; a campus network is
            // the university's own.
            unfamiliar = !known && !seen.campus_client;
            match self.familiar.iter_mut().find(|(net, ..)| *net == h) {
                // A network out of use for longer than the memory starts over.
                Some(entry) if entry.2 < since => *entry = (h, day, day),
                Some(entry) => entry.2 = entry.2.max(day),
                None => {
                    if self.familiar.len() >= FAMILIAR {
                        let oldest = (0..self.familiar.len())
                            .min_by_key(|&i| self.familiar[i].2)
                            .expect("not empty");
                        self.familiar.swap_remove(oldest);
                    }
                    self.familiar.push((h, day, day));
                }
            }
        }
        for d in &seen.domains {
            self.domains[1].add(d);
        }
        let (mut new, mut strangers) = (0u64, 0f64);
        for (r, inside) in seen
            .recipients
            .iter()
            .zip(seen.inside.iter().chain(std::iter::repeat(&false)))
        {
            let p = positions(r);
            if !self.sketches[0].has(&p) && !self.sketches[1].has(&p) {
                new += 1;
                strangers += if *inside { rules.campus_weight } else { 1.0 };
            }
            if !self.sketches[1].has(&p) {
                self.fill += 1;
            }
            self.sketches[1].set(&p);
        }
        let current = &mut self.hours[slot(self.hour)];
        current.new_capped += new.min(PER_MESSAGE) as u32;
        self.strangers[self.quarter.rem_euclid(QUARTERS as i64) as usize] += strangers as f32;
        current.messages += 1;
        current.domains = self.domains[1].0.len() as u16;
        let mut s = self.signals(now_ms, rules);
        s.authentications = seen.authentications;
        s.unfamiliar = unfamiliar;
        s
    }

    /// The signals now (after rolling the windows).
    pub fn peek(&mut self, now_ms: i64, rules: &Rules) -> Signals {
        self.roll(now_ms, rules);
        self.signals(now_ms, rules)
    }

    /// The hour `back` hours before the current one, when kept.
    fn ago(&self, back: i64) -> Hour {
        let h = self.hours[slot(self.hour - back)];
        if h.hour == Some(self.hour - back) {
            h
        } else {
            Hour::default()
        }
    }

    fn signals(&self, now_ms: i64, rules: &Rules) -> Signals {
        let since = hour_of(now_ms) - self.folded;
        let decayed = |b: f64| fold(b, 0.0, since, rules);
        let (now, before) = (self.ago(0), self.ago(1));
        // Whole quarters count: a window is never shorter than it says, so no hour and no
        // 24 hours can hold more than a threshold.
        let quarters = |n: i64| -> f64 {
            (0..n)
                .map(|b| {
                    f64::from(
                        self.strangers[(self.quarter - b).rem_euclid(QUARTERS as i64) as usize],
                    )
                })
                .sum()
        };
        Signals {
            networks: self.networks[1].union(&self.networks[0]),
            domains: self.domains[1].union(&self.domains[0]),
            new_recipients: u64::from(now.new_capped + before.new_capped),
            messages_hour: sliding(f64::from(now.messages), f64::from(before.messages), now_ms),
            strangers_hour: quarters(5),
            strangers_day: quarters(QUARTERS as i64),
            unfamiliar: false,
            baseline: decayed(self.baseline),
            domains_baseline: decayed(self.domains_baseline),
            new_baseline: decayed(self.new_baseline),
            authentications: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn the_sliding_hour_weighs_the_previous_bucket_by_what_is_left_of_it() {
        assert_eq!(sliding(10.0, 20.0, 5 * H), 30.0);
        assert_eq!(sliding(10.0, 20.0, 5 * H + H / 2), 20.0);
    }
}
