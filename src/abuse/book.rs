//! Where a login's signals are kept: the [`SignalBook`] seam, the per-login state and its
//! windows, the known-recipient sketch, and the in-memory book (one host).
//!
//! The state keeps the last 25 hours hour by hour (messages, new recipients, recipient
//! domains), and an hour enters the login's baselines only once it is more than a day old:
//! what is being judged never raises its own threshold. Strangers are kept by the quarter
//! hour for the last day, so "the last hour" and "the last 24 hours" are sums over at least
//! that long and at most a quarter more: no hour and no day can hold more than its
//! threshold, however the sending is timed. Each login costs about 3.5 KB at most (two 1 KB
//! Bloom filters, two bounded sets per kind, the rings, the networks it used).

use super::{Rules, Signals};
use crate::BoxFuture;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// One message as the signals see it.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The client's network (`203.0.113.0/24`), when the address is known.
    pub network: Option<String>,
    /// Recipient domains (lower case, each once).
    pub domains: Vec<String>,
    /// Recipients (lower case, each once).
    pub recipients: Vec<String>,
    /// For each recipient, whether it is inside the protected domains (campus mail).
    pub inside: Vec<bool>,
    /// The client is on a campus network (in `clients.internal_networks`): never unfamiliar.
    pub campus_client: bool,
    /// Authentications in the window, when counted.
    pub authentications: Option<u64>,
}

impl Observation {
    /// The observation of a message from `addr` to `rcpts`; `inside` says whether a
    /// recipient domain is one of the protected domains.
    pub fn new(
        addr: Option<IpAddr>,
        rcpts: &[impl AsRef<str>],
        rules: &Rules,
        authentications: Option<u64>,
        inside: &dyn Fn(&str) -> bool,
    ) -> Self {
        let mut recipients: Vec<String> = rcpts
            .iter()
            .map(|r| r.as_ref().trim_matches(['<', '>']).to_ascii_lowercase())
            .collect();
        recipients.sort();
        recipients.dedup();
        let mut domains: Vec<String> = recipients
            .iter()
            .filter_map(|r| r.rsplit_once('@').map(|(_, d)| d.to_string()))
            .collect();
        domains.sort();
        domains.dedup();
        let inside = recipients
            .iter()
            .map(|r| r.rsplit_once('@').is_some_and(|(_, d)| inside(d)))
            .collect();
        Observation {
            network: addr.map(|a| network(a, rules)),
            domains,
            recipients,
            inside,
            campus_client: false,
            authentications,
        }
    }
}

/// The network an address belongs to (`/24` and `/48` by default).
pub fn network(addr: IpAddr, rules: &Rules) -> String {
    let net = match addr {
        IpAddr::V4(a) => ipnet::IpNet::V4(
            ipnet::Ipv4Net::new(a, rules.ipv4_prefix.min(32))
                .expect("prefix <= 32")
                .trunc(),
        ),
        IpAddr::V6(a) => {
            let a = a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4);
            return match a {
                IpAddr::V4(v4) => network(IpAddr::V4(v4), rules),
                IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, rules.ipv6_prefix.min(128))
                    .expect("prefix <= 128")
                    .trunc()
                    .to_string(),
            };
        }
    };
    net.to_string()
}

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

/// Where signals are kept, as the anomaly check sees it.
pub trait SignalBook: Send + Sync {
    /// Records one message of `login` and returns its signals after it.
    fn observe<'a>(
        &'a self,
        login: &'a str,
        seen: &'a Observation,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>>;

    /// The signals of `login` now, without recording anything.
    fn peek<'a>(
        &'a self,
        login: &'a str,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>>;
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

/// Signals in this process's memory (one host), for up to 200,000 logins; the least
/// recently active are forgotten first.
pub struct MemoryBook {
    logins: Mutex<HashMap<String, LoginState>>,
    max_logins: usize,
}

impl Default for MemoryBook {
    fn default() -> Self {
        MemoryBook {
            logins: Mutex::new(HashMap::new()),
            max_logins: 200_000,
        }
    }
}

impl MemoryBook {
    /// Records a message synchronously (the simulator and the Redis fallback use this).
    pub fn observe_now(
        &self,
        login: &str,
        seen: &Observation,
        now_ms: i64,
        rules: &Rules,
    ) -> Signals {
        let mut logins = self.logins.lock().expect("signal lock");
        if logins.len() >= self.max_logins && !logins.contains_key(login) {
            // Forget the tenth least recently active.
            let mut ages: Vec<i64> = logins.values().map(|s| s.last_ms).collect();
            let cut = ages.len() / 10;
            ages.select_nth_unstable(cut);
            let oldest = ages[cut];
            logins.retain(|_, s| s.last_ms > oldest);
        }
        logins
            .entry(login.to_string())
            .or_default()
            .observe(seen, now_ms, rules)
    }

    /// The signals of a login now.
    pub fn peek_now(&self, login: &str, now_ms: i64, rules: &Rules) -> Signals {
        let mut logins = self.logins.lock().expect("signal lock");
        logins
            .get_mut(login)
            .map(|s| s.peek(now_ms, rules))
            .unwrap_or_default()
    }

    /// A copy of a login's state: what an attacker who knows the rule could compute (the
    /// simulation's adaptive attacker asks it before every message).
    pub fn state(&self, login: &str) -> LoginState {
        self.logins
            .lock()
            .expect("signal lock")
            .get(login)
            .cloned()
            .unwrap_or_default()
    }
}

impl SignalBook for MemoryBook {
    fn observe<'a>(
        &'a self,
        login: &'a str,
        seen: &'a Observation,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>> {
        let signals = self.observe_now(login, seen, now_ms, rules);
        Box::pin(std::future::ready(Ok(signals)))
    }

    fn peek<'a>(
        &'a self,
        login: &'a str,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>> {
        Box::pin(std::future::ready(Ok(self.peek_now(login, now_ms, rules))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn seen(net: &str, rcpts: &[&str]) -> Observation {
        let rules = Rules::default();
        let mut o = Observation::new(None, rcpts, &rules, None, &|d| d.ends_with("tugraz.at"));
        o.network = Some(net.into());
        o
    }

    #[test]
    fn networks_are_prefixes_and_mapped_addresses_are_ipv4() {
        let r = Rules::default();
        assert_eq!(
            network("203.0.113.77".parse().unwrap(), &r),
            "203.0.113.0/24"
        );
        assert_eq!(
            network("2001:db8:1:2::5".parse().unwrap(), &r),
            "2001:db8:1::/48"
        );
        assert_eq!(
            network("::ffff:203.0.113.77".parse().unwrap(), &r),
            "203.0.113.0/24"
        );
    }

    #[test]
    fn windows_count_the_last_hour_and_day_and_recipients_stay_known() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let t0 = 1_000 * H;
        let s = book.observe_now("a", &seen("n1", &["x@one.org"]), t0, r);
        assert_eq!((s.networks, s.domains, s.new_recipients), (1, 1, 1));
        let s = book.observe_now("a", &seen("n2", &["x@one.org", "y@two.org"]), t0 + H / 2, r);
        assert_eq!((s.networks, s.domains, s.new_recipients), (2, 2, 2));
        // Next hour: the previous bucket still counts.
        let s = book.observe_now("a", &seen("n3", &["x@one.org"]), t0 + H + 1, r);
        assert_eq!((s.networks, s.new_recipients), (3, 2));
        assert_eq!(s.strangers_day, 2.0);
        // Two hours later the hour signals are gone; the day still counts both strangers.
        let s = book.peek_now("a", t0 + 3 * H + 1, r);
        assert_eq!((s.networks, s.domains, s.new_recipients), (0, 0, 0));
        assert_eq!(s.strangers_day, 2.0);
        // A day later they are history; the baseline took the hours only then.
        assert_eq!(book.peek_now("a", t0 + 12 * H, r).baseline, 0.0);
        let s = book.peek_now("a", t0 + 26 * H + 1, r);
        assert_eq!(s.strangers_day, 0.0);
        assert!(s.baseline > 0.0);
        // x@one.org is still known ten days later.
        let s = book.observe_now("a", &seen("n1", &["x@one.org"]), t0 + 240 * H, r);
        assert_eq!(s.new_recipients, 0);
        // ... and new again after twice the recipient memory.
        let s = book.observe_now(
            "a",
            &seen("n1", &["x@one.org"]),
            t0 + 240 * H + 60 * 24 * H,
            r,
        );
        assert_eq!(s.new_recipients, 1);
    }

    #[test]
    fn every_stranger_counts_campus_ones_half() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let bcc: Vec<String> = (0..20).map(|i| format!("s{i}@victim{i}.example")).collect();
        let bcc: Vec<&str> = bcc.iter().map(String::as_str).collect();
        let s = book.observe_now("a", &seen("n", &bcc), 1_000 * H, r);
        assert_eq!((s.new_recipients, s.strangers_hour), (3, 20.0));
        assert_eq!(s.domains, 20, "every domain counts");
        let students: Vec<String> = (0..20).map(|i| format!("s{i}@student.tugraz.at")).collect();
        let students: Vec<&str> = students.iter().map(String::as_str).collect();
        let s = book.observe_now("b", &seen("n", &students), 1_000 * H, r);
        assert_eq!(s.strangers_hour, 10.0);
    }

    #[test]
    fn no_hour_and_no_day_of_strangers_hides_at_a_clock_edge() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let bcc: Vec<String> = (0..50).map(|i| format!("s{i}@victim.example")).collect();
        let bcc: Vec<&str> = bcc.iter().map(String::as_str).collect();
        // 50 strangers at 10:59:59; a minute later, and 59 minutes later, they still count
        // for the hour, and until 24 hours later for the day.
        let t = 1_000 * H + H - 1_000;
        book.observe_now("a", &seen("n", &bcc), t, r);
        for later in [60_000, 59 * 60_000] {
            assert_eq!(book.peek_now("a", t + later, r).strangers_hour, 50.0);
        }
        assert_eq!(book.peek_now("a", t + 75 * 60_000, r).strangers_hour, 0.0);
        assert_eq!(
            book.peek_now("a", t + 24 * H - 1_000, r).strangers_day,
            50.0
        );
        assert_eq!(
            book.peek_now("a", t + 24 * H + 15 * 60_000, r)
                .strangers_day,
            0.0
        );
    }

    #[test]
    fn the_known_recipient_sketch_is_renewed_before_it_saturates() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let mut t = 1_000 * H;
        // 24,000 strangers in a day: each still counts as new (a full sketch would call
        // most of them known).
        let mut total = 0.0;
        for batch in 0..1_200 {
            let rcpts: Vec<String> = (0..20).map(|i| format!("t{batch}x{i}@v.example")).collect();
            let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
            let before = book.peek_now("a", t, r).strangers_day;
            let s = book.observe_now("a", &seen("n", &rcpts), t, r);
            total += s.strangers_day - before;
            t += 60_000;
        }
        assert!(total > 0.9 * 24_000.0, "{total}");
    }

    #[test]
    fn a_network_is_familiar_a_week_after_its_first_use() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let day = 24 * H;
        let t = 1_000 * day;
        assert!(
            book.observe_now("a", &seen("home", &["x@y.org"]), t, r)
                .unfamiliar
        );
        assert!(
            book.observe_now("a", &seen("home", &["x@y.org"]), t + 6 * day, r)
                .unfamiliar
        );
        assert!(
            !book
                .observe_now("a", &seen("home", &["x@y.org"]), t + 7 * day, r)
                .unfamiliar
        );
        assert!(
            book.observe_now("a", &seen("hotel", &["x@y.org"]), t + 7 * day, r)
                .unfamiliar
        );
        // Unused for longer than the recipient memory: it starts over.
        assert!(
            book.observe_now("a", &seen("home", &["x@y.org"]), t + 40 * day, r)
                .unfamiliar
        );
        assert!(
            book.observe_now("a", &seen("home", &["x@y.org"]), t + 44 * day, r)
                .unfamiliar
        );
        // A campus network is never unfamiliar.
        let mut campus = seen("129.27.3.0/24", &["x@y.org"]);
        campus.campus_client = true;
        assert!(!book.observe_now("b", &campus, t, r).unfamiliar);
    }

    #[test]
    fn the_baseline_follows_the_login_s_active_hours() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let mut t = 10_000 * H;
        // A list owner: 40 messages in one hour a day for 20 days.
        for _ in 0..20 {
            for i in 0..40 {
                book.observe_now("list", &seen("n", &["l@x.org"]), t + i * 60_000, r);
            }
            t += 24 * H;
        }
        let s = book.peek_now("list", t, r);
        assert!(s.baseline > 35.0, "{s:?}");
        // Quiet for four weeks: the busiest hour lately is a quarter of what it was.
        let s = book.peek_now("list", t + 28 * 24 * H, r);
        assert!(s.baseline < 11.0 && s.baseline > 9.0, "{s:?}");
    }

    #[test]
    fn the_sliding_hour_weighs_the_previous_bucket_by_what_is_left_of_it() {
        assert_eq!(sliding(10.0, 20.0, 5 * H), 30.0);
        assert_eq!(sliding(10.0, 20.0, 5 * H + H / 2), 20.0);
    }
}
