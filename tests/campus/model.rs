//! Who sends what on the campus, and what each message should come to: people (from the
//! office and from home, as themselves, an alias or a shared mailbox), robots whose cron
//! mail is masqueraded, internal servers with and without a name, spoofers, people whose
//! account was disabled, phished accounts used from many networks, and a robot that sends
//! more than its hourly limit. Deterministic for a seed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// SplitMix64: deterministic and good enough for a synthetic campus.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Pareto with scale `xm` and shape `a`: heavy-tailed.
    pub fn pareto(&mut self, xm: f64, a: f64) -> f64 {
        xm / (1.0 - self.unit()).powf(1.0 / a)
    }
}

/// The campus's size and pace.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// `short` or `day`.
    pub name: &'static str,
    /// People in the directory.
    pub people: usize,
    /// How long mail is generated.
    pub window: Duration,
    /// How long retries may go on after the window.
    pub drain: Duration,
    /// Concurrent SMTP sessions at most.
    pub sessions: usize,
    /// How long a stopped or frozen service stays down.
    pub down: Duration,
}

impl Size {
    /// A few minutes: every fault once (CI).
    pub const SHORT: Size = Size {
        name: "short",
        people: 240,
        window: Duration::from_secs(180),
        drain: Duration::from_secs(75),
        sessions: 24,
        down: Duration::from_secs(15),
    };
    /// A day's mail of a 3,000-person campus, compressed (by hand).
    pub const DAY: Size = Size {
        name: "day",
        people: 3_000,
        window: Duration::from_secs(1_200),
        drain: Duration::from_secs(120),
        sessions: 48,
        down: Duration::from_secs(60),
    };
}

/// What kind of sender a message comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A person with SMTP AUTH, from the office or from home.
    Person,
    /// A robot account's cron mail (`root@host`, masqueraded).
    Robot,
    /// A robot sending more than its class's hourly limit.
    RobotOverLimit,
    /// An unauthenticated internal server with a name in DNS.
    Server,
    /// An unauthenticated internal server without a name.
    NamelessServer,
    /// A logged-in user writing someone else's From.
    Spoofer,
    /// A logged-in user with someone else's envelope sender.
    EnvelopeSpoofer,
    /// A person whose directory entry is disabled.
    Disabled,
    /// A thief using a phished account from many networks.
    Phished,
}

/// What a message should come to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Delivered, signed, verified.
    Deliver,
    /// Refused with a reply containing this text (a `4xx` one is not retried).
    Refuse(&'static str),
    /// Delivered, or still retrying at the end because of the hourly limit.
    DeliverOrLimited,
    /// An attacker's: delivered until detected, refused after.
    Attack,
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Its number in the ledger (its Message-ID is `<campus-ID@ledger.test>`).
    pub id: usize,
    /// When it is first tried, after the start.
    pub at: Duration,
    /// Who sends it.
    pub kind: Kind,
    /// SASL login and password, when it authenticates.
    pub login: Option<String>,
    /// The client address the relay sees (XCLIENT ADDR).
    pub client: IpAddr,
    /// The client's host name (XCLIENT NAME); `None`: no name.
    pub client_name: Option<String>,
    /// Envelope sender.
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpts: Vec<String>,
    /// The header From as written.
    pub from: String,
    /// What it should come to.
    pub expect: Expect,
}

impl Planned {
    /// The Message-ID's local part: how the ledger finds it in the sink.
    pub fn marker(&self) -> String {
        format!("campus-{}@ledger.test", self.id)
    }

    /// The message as the client sends it.
    pub fn text(&self) -> String {
        format!(
            "From: {}\r\nTo: {}\r\nSubject: campus message {}\r\nDate: Sun, 06 Dec 2026 10:00:00 +0100\r\nMessage-ID: <{}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMessage {} of the campus ledger ({:?}).\r\n",
            self.from,
            self.rcpts.join(", "),
            self.id,
            self.marker(),
            self.id,
            self.kind
        )
    }
}

/// One person of the directory: `userK`, owner of `userK@tugraz.at`, of the alias
/// `first.lastK@tugraz.at`, and (for some) of a department's shared mailbox.
pub struct Person {
    pub k: usize,
    pub disabled: bool,
    pub department: Option<usize>,
}

impl Person {
    pub fn login(&self) -> String {
        format!("user{}", self.k)
    }
    pub fn address(&self) -> String {
        format!("user{}@tugraz.at", self.k)
    }
    pub fn alias(&self) -> String {
        format!("first.last{}@tugraz.at", self.k)
    }
}

/// People per department mailbox (`deptG@tugraz.at`, a group in the directory).
pub const DEPARTMENT: usize = 4;

/// The campus's people: every 40th disabled, the first of every ten in a department.
pub fn people(size: Size) -> Vec<Person> {
    (0..size.people)
        .map(|k| Person {
            k,
            disabled: k % 40 == 39,
            department: (k % 10 < DEPARTMENT).then_some(k / 10),
        })
        .collect()
}

/// The directory entries of the people and their departments (LDIF).
pub fn directory(people: &[Person]) -> String {
    let mut ldif = String::new();
    for p in people {
        ldif.push_str(&format!(
            "\ndn: uid={l},ou=people,dc=tugraz,dc=at\nobjectClass: inetOrgPerson\nobjectClass: mailAltRecipient\nuid: {l}\ncn: User {k}\nsn: {k}\nmail: {a}\nmailAlternateAddress: {alias}\n{disabled}",
            l = p.login(),
            k = p.k,
            a = p.address(),
            alias = p.alias(),
            disabled = if p.disabled { "employeeType: disabled\n" } else { "" },
        ));
    }
    let departments: std::collections::BTreeSet<usize> =
        people.iter().filter_map(|p| p.department).collect();
    for g in departments {
        ldif.push_str(&format!(
            "\ndn: cn=dept{g},ou=groups,dc=tugraz,dc=at\nobjectClass: groupOfNames\nobjectClass: mailAltRecipient\ncn: dept{g}\nmailAlternateAddress: dept{g}@tugraz.at\n"
        ));
        for p in people.iter().filter(|p| p.department == Some(g)) {
            ldif.push_str(&format!(
                "member: uid={},ou=people,dc=tugraz,dc=at\n",
                p.login()
            ));
        }
    }
    ldif
}

/// The campus networks (clients.internal_networks).
pub const CAMPUS: &str = "129.27.0.0/16";

fn office(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        129,
        27,
        (k / 200) as u8,
        (k % 200 + 10) as u8,
    ))
}

fn home(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        100,
        64 + (k / 200) as u8,
        (k % 200) as u8,
        10,
    ))
}

/// The phished accounts, the spoofers and the robot over its limit, by person number.
pub struct Cast {
    pub phished: Vec<usize>,
    pub spoofers: Vec<usize>,
}

/// Chooses the cast: people who do not otherwise send.
pub fn cast(people: &[Person]) -> Cast {
    let n = people.len();
    Cast {
        phished: vec![n - 3, n - 6, n - 9],
        spoofers: vec![n - 12, n - 15, n - 18, n - 21],
    }
}

/// Every message of the run, by start time.
pub fn plan(size: Size, people: &[Person], seed: u64) -> Vec<Planned> {
    let mut rng = Rng(seed);
    let cast = cast(people);
    let window = size.window.as_millis() as u64;
    let mut out: Vec<Planned> = Vec::new();
    let add = |out: &mut Vec<Planned>, mut p: Planned| {
        p.id = out.len();
        out.push(p);
    };
    let at = |ms: u64| Duration::from_millis(ms);
    // People: a few contacts each (colleagues and outside), a compressed day of mail.
    let special: Vec<usize> = cast.phished.iter().chain(&cast.spoofers).copied().collect();
    for p in people.iter().filter(|p| !special.contains(&p.k)) {
        let contacts: Vec<String> = (0..3 + rng.below(6))
            .map(|c| {
                if rng.unit() < 0.6 {
                    format!("user{}@tugraz.at", rng.below(people.len() as u64))
                } else {
                    format!("p{}c{c}@d{}.example", p.k, rng.below(300))
                }
            })
            .collect();
        let count = if p.disabled {
            1
        } else {
            (rng.pareto(1.0, 1.3) as u64).min(12)
        };
        for _ in 0..count {
            let from_home = rng.unit() < 0.4;
            let from = match (rng.unit(), p.department) {
                (x, _) if x < 0.8 => format!("User {} <{}>", p.k, p.address()),
                (x, Some(g)) if x < 0.9 => format!("Department {g} <dept{g}@tugraz.at>"),
                _ => format!("\"Last, First\" <{}>", p.alias()),
            };
            let rcpts: Vec<String> = (0..1 + rng.below(2))
                .map(|_| contacts[rng.below(contacts.len() as u64) as usize].clone())
                .collect();
            add(
                &mut out,
                Planned {
                    id: 0,
                    at: at(rng.below(window)),
                    kind: if p.disabled {
                        Kind::Disabled
                    } else {
                        Kind::Person
                    },
                    login: Some(p.login()),
                    client: if from_home { home(p.k) } else { office(p.k) },
                    client_name: None,
                    mail_from: p.address(),
                    rcpts,
                    from,
                    expect: if p.disabled {
                        Expect::Refuse("is not owned by authenticated user")
                    } else {
                        Expect::Deliver
                    },
                },
            );
        }
    }
    // Robots on mrelay: the web server's cron mail, masqueraded; the backup robot as itself.
    // The web robot's day stays within its class's 30 an hour even compressed (GCRA: 30 at
    // once, then one every 2 minutes): at most 24 messages, spread over the window.
    let crons = (window / 10_000).min(24);
    for i in 0..crons {
        add(
            &mut out,
            Planned {
                id: 0,
                at: at(i * (window / crons) + rng.below(5_000)),
                kind: Kind::Robot,
                login: Some("robot-web".into()),
                client: IpAddr::V4(Ipv4Addr::new(129, 27, 60, 1)),
                client_name: Some("web1.tugraz.at".into()),
                mail_from: "root@web1.tugraz.at".into(),
                rcpts: vec!["webmaster@tugraz.at".into()],
                from: "root@web1.tugraz.at (Cron Daemon)".into(),
                expect: Expect::Deliver,
            },
        );
    }
    // The backup robot reports more than its class's 30 an hour, in a burst: what is over
    // waits, as an MTA's queue would, and the limit holds across both relays.
    for i in 0..40 {
        add(
            &mut out,
            Planned {
                id: 0,
                at: at(window / 3 + i * 500),
                kind: Kind::RobotOverLimit,
                login: Some("robot-backup".into()),
                client: IpAddr::V4(Ipv4Addr::new(129, 27, 60, 2)),
                client_name: Some("backup1.tugraz.at".into()),
                mail_from: "backup@iaik.tugraz.at".into(),
                rcpts: vec!["admins@tugraz.at".into()],
                from: "Backup <backup@iaik.tugraz.at>".into(),
                expect: Expect::DeliverOrLimited,
            },
        );
    }
    // Internal servers: status mail to the admins, as themselves; one has no name.
    for s in 1..=5u8 {
        for i in 0..window / 20_000 {
            add(
                &mut out,
                Planned {
                    id: 0,
                    at: at(i * 20_000 + rng.below(10_000)),
                    kind: Kind::Server,
                    login: None,
                    client: IpAddr::V4(Ipv4Addr::new(129, 27, 50, s)),
                    client_name: Some(format!("srv{s}.iaik.tugraz.at")),
                    mail_from: format!("root@srv{s}.iaik.tugraz.at"),
                    rcpts: vec!["admin@tugraz.at".into()],
                    from: format!("root@srv{s}.iaik.tugraz.at"),
                    expect: Expect::Deliver,
                },
            );
        }
    }
    for i in 0..3 {
        add(
            &mut out,
            Planned {
                id: 0,
                at: at(window / 4 * (i + 1)),
                kind: Kind::NamelessServer,
                login: None,
                client: IpAddr::V4(Ipv4Addr::new(129, 27, 51, 1)),
                client_name: None,
                mail_from: "root@tugraz.at".into(),
                rcpts: vec!["admin@tugraz.at".into()],
                from: "root@tugraz.at".into(),
                expect: Expect::Refuse("cannot find your hostname"),
            },
        );
    }
    // Spoofers: the rector's address in From, or in the envelope.
    for &k in &cast.spoofers {
        let p = &people[k];
        for i in 0..3u64 {
            let envelope = i == 2;
            add(
                &mut out,
                Planned {
                    id: 0,
                    at: at(rng.below(window)),
                    kind: if envelope {
                        Kind::EnvelopeSpoofer
                    } else {
                        Kind::Spoofer
                    },
                    login: Some(p.login()),
                    client: home(p.k),
                    client_name: None,
                    mail_from: if envelope {
                        "rector@tugraz.at".into()
                    } else {
                        p.address()
                    },
                    rcpts: vec![format!("staff{i}@tugraz.at")],
                    from: if envelope {
                        p.address()
                    } else {
                        "Rector <rector@tugraz.at>".into()
                    },
                    expect: Expect::Refuse("is not owned by authenticated user"),
                },
            );
        }
    }
    // Phished accounts: from the middle of the run, a message every 2.5 s from a new
    // network to strangers.
    for (n, &k) in cast.phished.iter().enumerate() {
        let p = &people[k];
        for i in 0..30u64 {
            let strangers = (0..1 + rng.below(3))
                .map(|_| format!("target{}@victim{}.example", rng.next(), rng.below(999)))
                .collect();
            add(
                &mut out,
                Planned {
                    id: 0,
                    at: at(window / 3 + n as u64 * 7_000 + i * 2_500),
                    kind: Kind::Phished,
                    login: Some(p.login()),
                    client: IpAddr::V4(Ipv4Addr::new(
                        180 + (i % 40) as u8,
                        rng.below(256) as u8,
                        rng.below(256) as u8,
                        9,
                    )),
                    client_name: None,
                    mail_from: p.address(),
                    rcpts: strangers,
                    from: format!("User {} <{}>", p.k, p.address()),
                    expect: Expect::Attack,
                },
            );
        }
    }
    out.sort_by_key(|p| p.at);
    for (id, p) in out.iter_mut().enumerate() {
        p.id = id;
    }
    out
}
