//! Runbook: no mail reader sees an author the sender may not use. Every From and Sender that
//! relayguard accepts, from the policy table and from a generator of RFC 5322 and obsolete
//! forms (comments, quotes, encoded-words in many charsets, white space and Unicode tricks),
//! goes to a panel of independent readers: Python's `email` (policy.default; parseaddr and
//! getaddresses with strict=False, names through decode_header), Rust's mail-parser, and
//! Node's mailparser (nodemailer's addressparser with libmime), postal-mime and
//! email-addresses. The test fails when any reader shows a protected address, as the address
//! or anywhere in the display name, that the sender could not use as a plain From.
//!
//! `RELAYGUARD_READER_CASES` sets how many header values the generator makes (CI: 4,000),
//! `RELAYGUARD_READER_SEED` its seed; `--nocapture` prints what each reader disagreed on.

#[path = "policy_table/cases.rs"]
mod cases;
mod common;

use base64::Engine;
use cases::{Case, OUTSIDE, policy};
use common::rng::Rng;
use mail_parser::MessageParser;
use relayguard::policy::hosts::HostName;
use relayguard::policy::mailbox::HeaderSet;
use relayguard::policy::{Client, Policy, Request};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where the header under test stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    From,
    Sender,
}

/// One header value under test, with the transaction around it.
#[derive(Debug, Clone)]
struct Probe {
    value: Vec<u8>,
    field: Field,
    login: Option<&'static str>,
    client: &'static str,
    host: Option<&'static str>,
    mail_from: &'static str,
    rcpts: Vec<&'static str>,
    /// The From header when the Sender is under test.
    from: Vec<u8>,
}

impl Probe {
    /// The value in mallory's message (mallory owns only mallory@tugraz.at).
    fn mallory(value: String, field: Field) -> Self {
        Probe {
            value: value.into_bytes(),
            field,
            login: Some("mallory"),
            client: OUTSIDE,
            host: None,
            mail_from: "<mallory@tugraz.at>",
            rcpts: vec!["<friend@example.org>"],
            from: b"mallory@tugraz.at".to_vec(),
        }
    }

    /// The From and Sender values of a policy table case.
    fn of_case(case: &Case) -> Vec<Self> {
        let from = case.headers.iter().find(|(n, _)| *n == "From");
        let sender = case.headers.iter().find(|(n, _)| *n == "Sender");
        let probe = |value: &[u8], field| Probe {
            value: value.to_vec(),
            field,
            login: case.login,
            client: case.client,
            host: case.host,
            mail_from: case.mail_from,
            rcpts: case.rcpts.to_vec(),
            from: from.map(|(_, v)| v.to_vec()).unwrap_or_default(),
        };
        let mut out = Vec::new();
        if let Some((_, v)) = from {
            out.push(probe(v, Field::From));
        }
        if let Some((_, v)) = sender {
            out.push(probe(v, Field::Sender));
        }
        out
    }

    /// Whether relayguard accepts the transaction with `value` in the field under test.
    fn accepted_with(&self, policy: &Policy, value: &[u8]) -> bool {
        let mut headers = HeaderSet::default();
        match self.field {
            Field::From => headers.add(b"From", value),
            Field::Sender => {
                headers.add(b"From", &self.from);
                headers.add(b"Sender", value);
            }
        }
        let request = Request {
            client: Client {
                addr: self.client.parse().ok(),
                login: self.login,
                name: HostName {
                    verified: self.host,
                    reverse: self.host,
                },
            },
            mail_from: self.mail_from,
            rcpts: self.rcpts.clone(),
            headers: Some(headers),
        };
        policy.decide(&request).outcome.is_ok()
    }

    /// Whether the sender may use `address` as a plain header value.
    fn may_use(&self, policy: &Policy, address: &str) -> bool {
        self.accepted_with(policy, format!("<{address}>").as_bytes())
    }
}

const SPACES: &[&str] = &[
    " ", " ", " ", "", "", "  ", "\t", "\r\n ", "\r\n\t", "\u{a0}", "\u{200b}", "\u{3000}",
];
const ATOMS: &[&str] = &[
    "rector",
    "Rector",
    "mallory",
    "Dr.",
    "A.",
    "M\u{fc}ller",
    "tugraz.at",
    "TUGRAZ.AT",
    "tugraz",
    "at",
    ".at",
    ".",
    "@",
    "\u{ff20}",
    "\u{fe6b}",
    "rector@tugraz.at",
    "rector@",
    "@tugraz.at",
    "TU",
    "Graz",
    "\u{ff52}\u{ff45}\u{ff43}\u{ff54}\u{ff4f}\u{ff52}",
    "tugraz\u{3002}at",
    "'",
    "=?",
    "?=",
];
const QUOTED: &[&str] = &[
    "rector@tugraz.at",
    "rector",
    "@",
    "",
    "a\\\"b",
    "M\u{fc}ller, Anna",
    "rector @ tugraz . at",
    "(x)",
    "<rector@tugraz.at>",
    "=?utf-8?q?=40?=",
    "rector=?utf-8?q?=40?=tugraz.at",
    "\u{ff52}\u{ff45}\u{ff43}\u{ff54}\u{ff4f}\u{ff52}\u{ff20}tugraz.at",
    "rector\u{200b}@tugraz.at",
    "Anna @ TU Graz",
    "mallory@tugraz.at",
    "\\\\",
    "rector\"@\"tugraz.at",
];
const COMMENTS: &[&str] = &[
    "x",
    "Rector",
    "\"",
    "\"(\"",
    "rector@tugraz.at",
    "=?utf-8?q?rector=40tugraz.at?=",
    "a(b)c",
    "",
    "[x]",
    "a\\)b",
    "Cron Daemon",
];
const ANGLES: &[&str] = &[
    "<mallory@tugraz.at>",
    "<Mallory@TUGraz.at>",
    "< mallory@tugraz.at >",
    "<mallory@tugraz.at.>",
];
const CHARSETS: &[&str] = &[
    "utf-8",
    "UTF-8",
    "iso-8859-1",
    "windows-1252",
    "us-ascii",
    "cp037",
    "utf-7",
    "x-unknown",
    "utf-8*de",
    "koi8-r",
];
const WORD_TEXTS: &[&str] = &[
    "rector@tugraz.at",
    "rector",
    "@",
    "@tugraz.at",
    "tugraz.at",
    "M\u{fc}ller, Anna",
    "Rector",
    "rector @ tugraz . at",
    "=?utf-8?q?rector=40tugraz.at?=",
    "\r\nFrom: rector@tugraz.at",
    "mallory@tugraz.at",
    "\u{ff20}",
    "J\u{fc}rgen",
    "rector\u{ff20}tugraz\u{ff0e}at",
];

/// `text` in `charset` as the bytes an encoded-word carries.
fn encode_text(charset: &str, text: &str) -> Vec<u8> {
    match charset.to_ascii_lowercase().as_str() {
        "iso-8859-1" | "windows-1252" => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect(),
        "us-ascii" => text
            .chars()
            .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
            .collect(),
        "cp037" => text.chars().map(ebcdic).collect(),
        "utf-7" => text.replace('@', "+AEA-").into_bytes(),
        _ => text.as_bytes().to_vec(),
    }
}

/// IBM code page 037 for the characters the generator uses.
fn ebcdic(c: char) -> u8 {
    match c {
        'a'..='i' => 0x81 + (c as u8 - b'a'),
        'j'..='r' => 0x91 + (c as u8 - b'j'),
        's'..='z' => 0xA2 + (c as u8 - b's'),
        'A'..='I' => 0xC1 + (c as u8 - b'A'),
        'J'..='R' => 0xD1 + (c as u8 - b'J'),
        'S'..='Z' => 0xE2 + (c as u8 - b'S'),
        '0'..='9' => 0xF0 + (c as u8 - b'0'),
        '@' => 0x7C,
        '.' => 0x4B,
        ' ' => 0x40,
        _ => 0x6F,
    }
}

fn encoded_word(rng: &mut Rng) -> String {
    let charset = rng.pick(CHARSETS);
    let bytes = encode_text(charset, rng.pick(WORD_TEXTS));
    if rng.chance(50) {
        let text: String = bytes
            .iter()
            .map(|&b| match b {
                b' ' => "_".to_string(),
                b if b.is_ascii_alphanumeric() => (b as char).to_string(),
                b => format!("={b:02X}"),
            })
            .collect();
        format!("=?{charset}?{}?{text}?=", rng.pick(&["q", "Q"]))
    } else {
        let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
        format!("=?{charset}?{}?{text}?=", rng.pick(&["b", "B"]))
    }
}

fn phrase_token(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=3 => rng.pick(ATOMS).to_string(),
        4..=6 => format!("\"{}\"", rng.pick(QUOTED)),
        7 => format!("({})", rng.pick(COMMENTS)),
        _ => encoded_word(rng),
    }
}

/// One From value: a display name and an angle address, a bare address with a comment, or
/// a soup of the same pieces.
fn generate(rng: &mut Rng) -> String {
    let mut out = String::new();
    match rng.below(20) {
        0..=11 => {
            for _ in 0..1 + rng.below(5) {
                out += &phrase_token(rng);
                out += rng.pick(SPACES);
            }
            out += rng.pick(ANGLES);
            if rng.chance(25) {
                out += &format!(" ({})", rng.pick(COMMENTS));
            }
        }
        12..=14 => {
            out += "mallory@tugraz.at";
            out += rng.pick(SPACES);
            out += &format!("({})", rng.pick(COMMENTS));
        }
        _ => {
            let pieces = [
                "<",
                ">",
                "\"",
                "(",
                ")",
                "@",
                ".",
                "mallory@tugraz.at",
                "<mallory@tugraz.at>",
                "\\",
                ",",
            ];
            for _ in 0..2 + rng.below(7) {
                if rng.chance(40) {
                    out += rng.pick(&pieces);
                } else {
                    out += &phrase_token(rng);
                }
                out += rng.pick(SPACES);
            }
        }
    }
    out
}

/// A reader's view of one value: its mailboxes (display name, address), or an error.
#[derive(Debug, Clone, Default)]
struct Reading {
    mailboxes: Vec<(String, String)>,
    error: Option<String>,
}

/// mail-parser, in process.
fn mail_parser_reads(value: &str) -> Reading {
    let raw = format!("From: {value}\r\n\r\nbody\r\n");
    let Some(message) = MessageParser::default().parse_headers(raw.as_bytes()) else {
        return Reading {
            error: Some("no message".into()),
            ..Default::default()
        };
    };
    let mut mailboxes = Vec::new();
    match message.from() {
        Some(mail_parser::Address::List(list)) => {
            for a in list {
                mailboxes.push((
                    a.name.as_deref().unwrap_or("").to_string(),
                    a.address.as_deref().unwrap_or("").to_string(),
                ));
            }
        }
        Some(mail_parser::Address::Group(groups)) => {
            for g in groups {
                for a in &g.addresses {
                    mailboxes.push((
                        a.name.as_deref().unwrap_or("").to_string(),
                        a.address.as_deref().unwrap_or("").to_string(),
                    ));
                }
            }
        }
        None => {}
    }
    Reading {
        mailboxes,
        error: None,
    }
}

/// Runs one external reader program over the values; readings by reader name, then value.
fn external(program: &[&str], values: &[String]) -> BTreeMap<String, Vec<Reading>> {
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program:?}: {e}; run scripts/test, which installs it"));
    let mut input = String::new();
    for (id, value) in values.iter().enumerate() {
        input += &serde_json::json!({"id": id, "value": value}).to_string();
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{program:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut readings: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let reader = v["reader"].as_str().unwrap().to_string();
        let list = readings
            .entry(reader)
            .or_insert_with(|| vec![Reading::default(); values.len()]);
        let id = v["id"].as_u64().unwrap() as usize;
        list[id] = Reading {
            mailboxes: v["mailboxes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["address"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
            error: v["error"].as_str().map(str::to_string),
        };
    }
    readings
}

/// Every reader's reading of every value.
fn panel(values: &[String]) -> BTreeMap<String, Vec<Reading>> {
    let readers = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/readers");
    assert!(
        Path::new(readers).join("node_modules/mailparser").exists(),
        "the Node readers are not installed: run scripts/test (npm ci in tests/readers)"
    );
    let mut all = external(
        &["/usr/bin/python3", &format!("{readers}/readers.py")],
        values,
    );
    all.extend(external(
        &["node", &format!("{readers}/readers.mjs")],
        values,
    ));
    all.insert(
        "mail-parser".into(),
        values.iter().map(|v| mail_parser_reads(v)).collect(),
    );
    all
}

/// The text as a person sees it: no spacing or invisible characters, full-width forms as
/// ASCII, lower case. (Written apart from relayguard's own rules on purpose.)
fn as_seen(text: &str) -> String {
    text.chars()
        .filter(|c| {
            !c.is_whitespace()
                && !matches!(*c as u32, 0xAD | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF)
        })
        .map(|c| match c as u32 {
            0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap(),
            0xFE6B => '@',
            0x3002 | 0xFF61 => '.',
            _ => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Protected addresses a reader shows: its addresses, and any `local@domain` in the name
/// whose domain is protected.
fn protected_shown(reading: &Reading) -> Vec<String> {
    let protected = |domain: &str| {
        ["tugraz.at", "tu-graz.ac.at"]
            .iter()
            .any(|apex| domain == *apex || domain.ends_with(&format!(".{apex}")))
    };
    let mut out = Vec::new();
    for (name, address) in &reading.mailboxes {
        let address = as_seen(address);
        if let Some((_, domain)) = address.rsplit_once('@')
            && protected(domain.trim_end_matches('.'))
        {
            out.push(address.trim_end_matches('.').to_string());
        }
        let seen: Vec<char> = as_seen(name).chars().collect();
        for at in (0..seen.len()).filter(|&i| seen[i] == '@') {
            let local: String = seen[..at]
                .iter()
                .rev()
                .take_while(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(**c))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let domain: String = seen[at + 1..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '.' || **c == '-')
                .collect();
            let (local, domain) = (local.trim_matches('.'), domain.trim_matches('.'));
            if !local.is_empty() && protected(domain) {
                out.push(format!("{local}@{domain}"));
            }
        }
    }
    out
}

/// What the panel found: for each probe, the first reader that showed an address the sender
/// may not use.
struct Findings {
    spoofed: Vec<(usize, String, String)>,
    disagreements: BTreeMap<String, usize>,
    /// A few values per reader where it read differently from mail-parser, for the log.
    examples: BTreeMap<String, Vec<String>>,
}

fn judge(policy: &Policy, probes: &[Probe], readings: &BTreeMap<String, Vec<Reading>>) -> Findings {
    let mut findings = Findings {
        spoofed: Vec::new(),
        disagreements: BTreeMap::new(),
        examples: BTreeMap::new(),
    };
    let mut verdicts: BTreeMap<String, bool> = BTreeMap::new();
    for (i, probe) in probes.iter().enumerate() {
        let reference = &readings["mail-parser"][i];
        for (reader, list) in readings {
            let reading = &list[i];
            let differs = reading.error.is_some()
                || reading.mailboxes.len() != reference.mailboxes.len()
                || reading
                    .mailboxes
                    .iter()
                    .zip(&reference.mailboxes)
                    .any(|(a, b)| as_seen(&a.1) != as_seen(&b.1) || as_seen(&a.0) != as_seen(&b.0));
            if differs {
                *findings.disagreements.entry(reader.clone()).or_default() += 1;
                let examples = findings.examples.entry(reader.clone()).or_default();
                if examples.len() < 4 {
                    examples.push(format!(
                        "{} -> {:?} (mail-parser {:?})",
                        show(&probe.value),
                        reading
                            .error
                            .as_ref()
                            .map_or(&reading.mailboxes, |_| &reference.mailboxes),
                        reference.mailboxes
                    ));
                }
            }
            for address in protected_shown(reading) {
                let may = *verdicts
                    .entry(format!("{i}\0{address}"))
                    .or_insert_with(|| probe.may_use(policy, &address));
                if !may {
                    findings.spoofed.push((i, reader.clone(), address));
                    break;
                }
            }
        }
    }
    findings
}

fn show(value: &[u8]) -> String {
    String::from_utf8_lossy(value).escape_debug().to_string()
}

#[test]
fn every_accepted_author_reads_the_same_in_every_reader() {
    let policy = policy();
    let cases: u64 = std::env::var("RELAYGUARD_READER_CASES").map_or(4_000, |s| s.parse().unwrap());
    let seed: u64 =
        std::env::var("RELAYGUARD_READER_SEED").map_or(0x5eed_2026, |s| s.parse().unwrap());
    let mut rng = Rng(seed | 1);
    let mut probes: Vec<Probe> = cases::cases().iter().flat_map(Probe::of_case).collect();
    let table = probes.len();
    for n in 0..cases {
        let field = if n % 5 == 4 {
            Field::Sender
        } else {
            Field::From
        };
        probes.push(Probe::mallory(generate(&mut rng), field));
    }
    let (accepted, refused): (Vec<Probe>, Vec<Probe>) = probes
        .into_iter()
        .partition(|p| p.accepted_with(&policy, &p.value));
    // Every accepted value, and the refused ones as a contrast (what readers would have made of
    // the forgeries): up to as many refused as accepted.
    let contrast: Vec<Probe> = refused
        .iter()
        .take(accepted.len().max(500))
        .cloned()
        .collect();
    let values = |probes: &[Probe]| -> Vec<String> {
        probes
            .iter()
            .map(|p| String::from_utf8_lossy(&p.value).into_owned())
            .collect()
    };
    let found = judge(&policy, &accepted, &panel(&values(&accepted)));
    let blocked = judge(&policy, &contrast, &panel(&values(&contrast)));
    let spoofs_refused: std::collections::BTreeSet<usize> =
        blocked.spoofed.iter().map(|(i, ..)| *i).collect();
    eprintln!(
        "{table} table values and {cases} generated (seed {seed}): {} accepted, {} refused",
        accepted.len(),
        refused.len()
    );
    eprintln!(
        "accepted values on which a reader differs from mail-parser: {:?}",
        found.disagreements
    );
    for (reader, examples) in &found.examples {
        for example in examples {
            eprintln!("  {reader}: {example}");
        }
    }
    eprintln!(
        "of {} refused values read by the panel, {} would have shown some reader a protected author the sender may not use",
        contrast.len(),
        spoofs_refused.len()
    );
    let mut by_reader: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, reader, _) in &blocked.spoofed {
        *by_reader.entry(reader).or_default() += 1;
    }
    eprintln!("  fooled reader in those refusals: {by_reader:?}");
    let failures: Vec<String> = found
        .spoofed
        .iter()
        .take(20)
        .map(|(i, reader, address)| {
            format!(
                "{:?} {:?} accepted, but {reader} shows {address}",
                accepted[*i].field,
                show(&accepted[*i].value)
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} accepted values show a reader someone else's address:\n{}",
        found.spoofed.len(),
        failures.join("\n")
    );
    // The generator must reach both sides, and the panel must catch what it is there for.
    assert!(
        accepted.len() >= cases as usize / 20 && refused.len() >= cases as usize / 4,
        "accepted {}, refused {}",
        accepted.len(),
        refused.len()
    );
    assert!(
        spoofs_refused.len() >= 20,
        "the panel saw only {} forgeries among the refused values",
        spoofs_refused.len()
    );
}

#[test]
fn the_reviews_forgeries_fool_some_reader_and_are_refused() {
    // The panel is not blind: each family's example, had it been accepted, shows a reader
    // rector@tugraz.at. relayguard refuses every one.
    let policy = policy();
    let examples = [
        "rector @tugraz.at <mallory@tugraz.at>",
        "\"rector\"@tugraz.at <mallory@tugraz.at>",
        "rector(x)@tugraz.at <mallory@tugraz.at>",
        "rector\"@\"tugraz.at <mallory@tugraz.at>",
        "\"rector@\"tugraz.at <mallory@tugraz.at>",
        "\"rector=?utf-8?q?=40?=tugraz.at\" <mallory@tugraz.at>",
        "=?cp037?q?=99=85=83=A3=96=99=7C=A3=A4=87=99=81=A9=4B=81=A3?= <mallory@tugraz.at>",
        "=?utf-8?q?rector=40tugraz.at?= <mallory@tugraz.at>",
    ];
    let probes: Vec<Probe> = examples
        .iter()
        .map(|e| Probe::mallory(e.to_string(), Field::From))
        .collect();
    for probe in &probes {
        assert!(
            !probe.accepted_with(&policy, &probe.value),
            "accepted: {}",
            show(&probe.value)
        );
    }
    let values: Vec<String> = examples.iter().map(|e| e.to_string()).collect();
    let found = judge(&policy, &probes, &panel(&values));
    for (i, example) in examples.iter().enumerate() {
        assert!(
            found
                .spoofed
                .iter()
                .any(|(j, _, a)| *j == i && a == "rector@tugraz.at"),
            "no reader was fooled by {example}: the panel would not notice it"
        );
    }
}
