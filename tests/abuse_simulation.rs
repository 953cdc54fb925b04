//! A synthetic campus replayed through the stolen-account signals with an injected clock:
//! 3,000 people with heavy-tailed sending (most a few messages a day, list owners and robots
//! hundreds), travelling and VPN users, the odd bulk invitation, two weeks of history, then a
//! measured week with three kinds of stolen account. Prints, per attack, how many messages
//! left before the account's class acted, and the share of normal logins acted on.

use relayguard::abuse::book::{MemoryBook, Observation};
use relayguard::abuse::{Action, Rules, decide, score};
use std::net::{IpAddr, Ipv4Addr};

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;
const START: i64 = 1_790_000_000_000;

/// SplitMix64: deterministic and good enough for a synthetic campus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Pareto with scale `xm` and shape `a`: heavy-tailed.
    fn pareto(&mut self, xm: f64, a: f64) -> f64 {
        xm / (1.0 - self.unit()).powf(1.0 / a)
    }

    fn poisson(&mut self, mean: f64) -> u64 {
        // Knuth for small means, normal approximation above.
        if mean > 30.0 {
            let g = (-2.0 * self.unit().max(1e-12).ln()).sqrt()
                * (2.0 * std::f64::consts::PI * self.unit()).cos();
            return (mean + g * mean.sqrt()).round().max(0.0) as u64;
        }
        let (l, mut k, mut p) = ((-mean).exp(), 0, 1.0);
        loop {
            p *= self.unit();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

fn net(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, 10))
}

/// One person of the campus.
struct Person {
    login: String,
    per_day: f64,
    contacts: Vec<String>,
    home: IpAddr,
    office: IpAddr,
    traveller: bool,
    vpn: bool,
    /// Sends in bursts (a list owner, a robot): most of the day's mail in one hour.
    bursty: bool,
}

fn campus(rng: &mut Rng, n: usize) -> Vec<Person> {
    (0..n)
        .map(|i| {
            let per_day = rng.pareto(1.5, 1.2).min(400.0);
            let pool = 5 + rng.pareto(10.0, 1.5).min(300.0) as usize;
            let contacts = (0..pool)
                .map(|c| {
                    if rng.unit() < 0.6 {
                        format!("p{i}c{c}@tugraz.at")
                    } else {
                        format!("p{i}c{c}@d{}.example", rng.below(400))
                    }
                })
                .collect();
            Person {
                login: format!("user{i:04}"),
                per_day,
                contacts,
                home: net(100, (i / 200) as u8, (i % 200) as u8),
                office: net(129, 27, rng.below(200) as u8),
                traveller: rng.unit() < 0.1,
                vpn: rng.unit() < 0.1,
                bursty: per_day > 40.0,
            }
        })
        .collect()
}

/// A message of a normal day: (time, client, recipients).
type Message = (i64, IpAddr, Vec<String>);

fn day_of(rng: &mut Rng, p: &Person, day: i64, new_seq: &mut u64) -> Vec<Message> {
    let start = START + day * DAY;
    let count = rng.poisson(p.per_day);
    // Where the person is today.
    let mut places = vec![if p.vpn { net(129, 27, 250) } else { p.office }, p.home];
    if p.traveller && rng.unit() < 0.5 {
        for _ in 0..1 + rng.below(2) {
            places.push(net(
                150 + rng.below(80) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ));
        }
    }
    let burst_hour = 8 + rng.below(10) as i64;
    let mut out = Vec::new();
    for _ in 0..count {
        let t = if p.bursty && rng.unit() < 0.8 {
            start + burst_hour * H + rng.below(H as u64) as i64
        } else {
            start + 7 * H + rng.below(13 * H as u64) as i64
        };
        let place = places[rng.below(places.len() as u64) as usize];
        let n = if p.bursty {
            1
        } else {
            1 + rng.below(3) as usize
        };
        let rcpts = (0..n)
            .map(|_| {
                if rng.unit() < 0.05 {
                    *new_seq += 1;
                    format!("new{new_seq}@d{}.example", rng.below(2_000))
                } else {
                    p.contacts[rng.below(p.contacts.len() as u64) as usize].clone()
                }
            })
            .collect();
        out.push((t, place, rcpts));
    }
    // The odd bulk invitation: one message to 15-40 people never written to.
    if rng.unit() < 0.01 / 7.0 {
        let rcpts = (0..15 + rng.below(26))
            .map(|_| {
                *new_seq += 1;
                format!("invitee{new_seq}@d{}.example", rng.below(2_000))
            })
            .collect();
        out.push((start + 10 * H, p.office, rcpts));
    }
    out
}

fn class_of(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(v4) if v4.octets()[..2] == [129, 27] => "internal",
        _ => "external",
    }
}

/// The packaged configuration: log for every class, lock for the external class.
fn packaged() -> Rules {
    Rules {
        actions: vec![("external".into(), Action::Lock)],
        default_action: Action::Log,
        ..Rules::default()
    }
}

/// Replays messages in time order; returns, per login, the first message (its number for
/// that login in the replay) at which its class acted.
fn replay(
    book: &MemoryBook,
    rules: &Rules,
    mut messages: Vec<(i64, String, IpAddr, Vec<String>)>,
    measure_from: i64,
    attack_from: i64,
    victims: &[&str],
) -> std::collections::HashMap<String, (u64, Action, String)> {
    messages.sort_by_key(|m| m.0);
    let mut sent: std::collections::HashMap<String, u64> = Default::default();
    let mut acted: std::collections::HashMap<String, (u64, Action, String)> = Default::default();
    for (t, login, addr, rcpts) in messages {
        if acted.contains_key(&login) {
            continue;
        }
        let seen = Observation::new(Some(addr), &rcpts, rules, None);
        let signals = book.observe_now(&login, &seen, t, rules);
        if t < measure_from {
            continue;
        }
        // A victim's messages count from the attack on (its own mail before it is normal).
        if victims.contains(&login.as_str()) && t < attack_from {
            continue;
        }
        let n = sent.entry(login.clone()).or_default();
        *n += 1;
        let scored = score(&signals, rules);
        let action = decide(&scored, rules, class_of(addr));
        if action != Action::None {
            acted.insert(login, (*n, action, scored.reason()));
        }
    }
    acted
}

#[test]
fn stolen_accounts_are_stopped_within_20_messages_and_normal_people_are_left_alone() {
    let rules = packaged();
    let seed = std::env::var("RELAYGUARD_SIM_SEED").map_or(2026, |s| s.parse().expect("a number"));
    let mut rng = Rng(seed);
    let people = campus(&mut rng, 3_000);
    let book = MemoryBook::default();
    let (history_days, measured_days) = (14, 7);
    let measure_from = START + history_days * DAY;
    let mut messages = Vec::new();
    let mut new_seq = 0;
    for day in 0..history_days + measured_days {
        for p in &people {
            for (t, addr, rcpts) in day_of(&mut rng, p, day, &mut new_seq) {
                messages.push((t, p.login.clone(), addr, rcpts));
            }
        }
    }
    let normal_messages = messages.iter().filter(|m| m.0 >= measure_from).count();

    // Three stolen accounts, each a real person's with its history, used on the second
    // day of the measured week from 14:00.
    let attack_at = measure_from + DAY + 14 * H;
    let victims = ["user0007", "user0042", "user0099"];
    let strangers = |rng: &mut Rng, k: u64| -> Vec<String> {
        (0..k)
            .map(|_| format!("target{}@victim{}.example", rng.next(), rng.below(5_000)))
            .collect()
    };
    // 1. From 30 botnet networks, 45 an hour, 1-3 strangers each.
    for i in 0..45 * 3 {
        let addr = net(
            180 + (i % 30) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
        );
        let k = 1 + rng.below(3);
        messages.push((
            attack_at + i * H / 45,
            victims[0].into(),
            addr,
            strangers(&mut rng, k),
        ));
    }
    // 2. From one network, 45 an hour to strangers, one each.
    for i in 0..45 * 3 {
        messages.push((
            attack_at + i * H / 45,
            victims[1].into(),
            net(198, 51, 100),
            strangers(&mut rng, 1),
        ));
    }
    // 3. Slow: 20 an hour for a day, one stranger each.
    for i in 0..20 * 24 {
        messages.push((
            attack_at + i * H / 20,
            victims[2].into(),
            net(203, 0, 113),
            strangers(&mut rng, 1),
        ));
    }

    let acted = replay(&book, &rules, messages, measure_from, attack_at, &victims);
    println!(
        "campus: {} people, {} messages in the measured week (after {history_days} days of history)",
        people.len(),
        normal_messages
    );
    println!("| attack | messages sent before the action | action |");
    println!("|---|---|---|");
    let names = [
        "stolen, 30 networks, 45/hour, 1-3 strangers each",
        "stolen, one network, 45/hour to strangers",
        "stolen, slow: 20/hour to strangers for a day",
    ];
    for (victim, name) in victims.iter().zip(names) {
        let (n, action, _) = acted
            .get(*victim)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: never acted on"));
        println!("| {name} | {} | {} |", n - 1, action.name());
        assert!(n <= 20, "{name}: {} messages left before the action", n - 1);
    }
    let false_actions: Vec<(&String, &(u64, Action, String))> = acted
        .iter()
        .filter(|(login, _)| !victims.contains(&login.as_str()))
        .collect();
    let rate = false_actions.len() as f64 / (people.len() - victims.len()) as f64;
    println!(
        "normal logins acted on in the week: {} of {} ({:.3} %)",
        false_actions.len(),
        people.len() - victims.len(),
        rate * 100.0
    );
    for (login, (n, action, why)) in &false_actions {
        println!("  {login}: {} at its message {n}: {why}", action.name());
    }
    assert!(
        rate <= 0.001,
        "false actions on {:.3} % of normal logins",
        rate * 100.0
    );
}
