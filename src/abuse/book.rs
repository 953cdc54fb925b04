//! Where a login's signals are kept: the [`SignalBook`] seam, the per-login state and its
//! hourly windows, the new-recipient sketch, and the in-memory book (one host). Each login
//! costs about 2.5 KB at most: two Bloom filters of 1 KB, two bounded sets, a few numbers.

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
    /// Recipient domains (lower case).
    pub domains: Vec<String>,
    /// Recipients (lower case).
    pub recipients: Vec<String>,
    /// Authentications in the window, when counted.
    pub authentications: Option<u64>,
}

impl Observation {
    /// The observation of a message from `addr` to `rcpts`.
    pub fn new(
        addr: Option<IpAddr>,
        rcpts: &[impl AsRef<str>],
        rules: &Rules,
        authentications: Option<u64>,
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
        domains.truncate(PER_MESSAGE as usize);
        Observation {
            network: addr.map(|a| network(a, rules)),
            domains,
            recipients,
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

/// Bits of one new-recipient sketch (1 KB).
pub const SKETCH_BITS: u64 = 8_192;
/// Bits set per recipient.
pub const SKETCH_HASHES: usize = 3;

/// The sketch positions of a recipient (the same in memory and in Redis).
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

/// The sketch generation of a time: recipients stay known for one to two halves of
/// `new_recipient_days`, kept in two generations.
pub fn generation_of(now_ms: i64, rules: &Rules) -> i64 {
    let half = i64::from(rules.new_recipient_days.max(2) / 2) * 86_400_000;
    now_ms.div_euclid(half)
}

/// How much of one message counts: at most this many of its new recipients and of its
/// recipient domains (one message to many is what the recipient limit is for; many messages
/// to strangers are what a stolen account sends).
pub const PER_MESSAGE: u64 = 3;

/// Folds an hour that ended into a baseline: the login's busiest hour lately, halving
/// every `baseline_days` (`hours_since` the previous fold).
pub fn fold(baseline: f64, count: u64, hours_since: i64, rules: &Rules) -> f64 {
    let half_life = f64::from(rules.baseline_days.max(1)) * 24.0;
    (baseline * 0.5f64.powf(hours_since.max(0) as f64 / half_life)).max(count as f64)
}

/// Messages in the last hour, estimated from the current and previous hour buckets as a
/// sliding window: all of this hour, and the part of the previous hour still inside it.
pub fn sliding(current: u64, previous: u64, now_ms: i64) -> f64 {
    let into = now_ms.rem_euclid(3_600_000) as f64 / 3_600_000.0;
    current as f64 + previous as f64 * (1.0 - into)
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
#[derive(Debug, Clone, Default)]
struct Bounded(Vec<u64>);

impl Bounded {
    const MAX: usize = 64;

    fn add(&mut self, member: &str) {
        let h = u64::from_le_bytes(
            ring::digest::digest(&ring::digest::SHA256, member.as_bytes()).as_ref()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        if self.0.len() < Self::MAX && !self.0.contains(&h) {
            self.0.push(h);
        }
    }

    fn union(&self, other: &Bounded) -> u64 {
        (self.0.len() + other.0.iter().filter(|h| !self.0.contains(h)).count()) as u64
    }
}

/// A Bloom filter of [`SKETCH_BITS`].
#[derive(Clone)]
struct Sketch(Box<[u64; (SKETCH_BITS / 64) as usize]>);

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

/// One login's state: the current and previous hour, the baseline, the sketches.
#[derive(Clone, Default)]
pub struct LoginState {
    hour: i64,
    networks: [Bounded; 2],
    domains: [Bounded; 2],
    new_recipients: [u64; 2],
    messages: [u64; 2],
    baseline: f64,
    domains_baseline: f64,
    new_baseline: f64,
    folded: i64,
    generation: i64,
    sketches: [Sketch; 2],
    last_ms: i64,
}

impl LoginState {
    /// Moves the windows to `now`: hours that ended fold into the baseline.
    fn roll(&mut self, now_ms: i64, rules: &Rules) {
        let hour = hour_of(now_ms);
        if hour > self.hour {
            if self.messages[1] > 0 {
                let since = self.hour - self.folded;
                self.baseline = fold(self.baseline, self.messages[1], since, rules);
                let domains = self.domains[1].0.len() as u64;
                self.domains_baseline = fold(self.domains_baseline, domains, since, rules);
                self.new_baseline = fold(self.new_baseline, self.new_recipients[1], since, rules);
                self.folded = self.hour;
            }
            if hour == self.hour + 1 {
                self.networks[0] = std::mem::take(&mut self.networks[1]);
                self.domains[0] = std::mem::take(&mut self.domains[1]);
                self.new_recipients[0] = self.new_recipients[1];
                self.messages[0] = self.messages[1];
            } else {
                self.networks[0] = Bounded::default();
                self.domains[0] = Bounded::default();
                self.new_recipients[0] = 0;
                self.messages[0] = 0;
            }
            self.networks[1] = Bounded::default();
            self.domains[1] = Bounded::default();
            self.new_recipients[1] = 0;
            self.messages[1] = 0;
            self.hour = hour;
        }
        let generation = generation_of(now_ms, rules);
        if generation > self.generation {
            if generation == self.generation + 1 {
                self.sketches[0] = std::mem::take(&mut self.sketches[1]);
            } else {
                self.sketches = Default::default();
            }
            self.generation = generation;
        }
    }

    /// Records a message; the signals after it.
    pub fn observe(&mut self, seen: &Observation, now_ms: i64, rules: &Rules) -> Signals {
        self.roll(now_ms, rules);
        self.last_ms = now_ms;
        if let Some(n) = &seen.network {
            self.networks[1].add(n);
        }
        for d in &seen.domains {
            self.domains[1].add(d);
        }
        let mut new = 0;
        for r in &seen.recipients {
            let p = positions(r);
            if !self.sketches[0].has(&p) && !self.sketches[1].has(&p) {
                new += 1;
            }
            self.sketches[1].set(&p);
        }
        self.new_recipients[1] += new.min(PER_MESSAGE);
        self.messages[1] += 1;
        let mut s = self.signals(now_ms, rules);
        s.authentications = seen.authentications;
        s
    }

    /// The signals now (after rolling the windows).
    pub fn peek(&mut self, now_ms: i64, rules: &Rules) -> Signals {
        self.roll(now_ms, rules);
        self.signals(now_ms, rules)
    }

    fn signals(&self, now_ms: i64, rules: &Rules) -> Signals {
        let since = hour_of(now_ms) - self.folded;
        let decayed = |b: f64| fold(b, 0, since, rules);
        Signals {
            networks: self.networks[1].union(&self.networks[0]),
            domains: self.domains[1].union(&self.domains[0]),
            new_recipients: self.new_recipients[0] + self.new_recipients[1],
            messages_hour: sliding(self.messages[1], self.messages[0], now_ms),
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
        let mut o = Observation::new(None, rcpts, &rules, None);
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
    fn windows_count_the_last_hour_and_recipients_stay_known() {
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
        // Two hours later everything but the sketch and the baseline is gone.
        let s = book.peek_now("a", t0 + 3 * H + 1, r);
        assert_eq!((s.networks, s.domains, s.new_recipients), (0, 0, 0));
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
        assert_eq!(sliding(10, 20, 5 * H), 30.0);
        assert_eq!(sliding(10, 20, 5 * H + H / 2), 20.0);
    }
}
