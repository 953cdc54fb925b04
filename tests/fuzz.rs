//! Fuzzing: the parsers and the milter session against generated input, on stable Rust.
//!
//! Each target runs `PROPTEST_CASES` cases (256 by default: the CI budget). For a long run:
//!
//! ```sh
//! PROPTEST_CASES=200000 cargo test --release --test fuzz
//! ```
//!
//! A failing case is shrunk and saved under `tests/fuzz.proptest-regressions`, which is
//! committed: every crash found becomes a regression case that runs first from then on.

mod common;

use proptest::prelude::*;
use relayguard::policy::mailbox::HeaderSet;
use relayguard::policy::senders::{LoginRules, SenderMap};
use relayguard::policy::{Client, Policy};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn policy() -> Policy {
    relayguard::runtime::assemble::load(
        Path::new("tests/policy_table/relayguard.toml"),
        relayguard::clock::unix_now(),
        &relayguard::ldap::Directories::standalone(),
    )
    .unwrap()
    .snapshot
    .policy
}

/// Pieces that make header values interesting: address syntax, encodings, folding, NUL.
const HEADER_TOKENS: &[&str] = &[
    "alice@tugraz.at",
    "rector@tugraz.at",
    "office@tugraz.at",
    "alice+x@tu-graz.ac.at",
    "Alice",
    " ",
    "<",
    ">",
    "\"",
    ",",
    ";",
    ":",
    "(",
    ")",
    "\\",
    "@",
    ".",
    "[129.27.1.1]",
    "=?utf-8?q?",
    "=?utf-8?b?",
    "?=",
    "\r\n ",
    "\r",
    "\n",
    "\0",
    "'",
    "tugraz.at",
    "@evil.example",
    "xn--",
    "ü",
    "group:",
];

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(HEADER_TOKENS), 0..14)
            .prop_map(|t| t.concat().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..80),
    ]
}

fn header_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "From", "from", "FROM", "Sender", "sender", "From ", "Subject",
        ][..],
    )
}

proptest! {
    /// Whatever the From and Sender headers say, the decision never panics, and an
    /// accepted From or Sender in a protected domain is one that alice owns.
    #[test]
    fn from_and_sender_never_accept_what_the_login_does_not_own(
        headers in prop::collection::vec((header_name(), header_value()), 0..4)
    ) {
        let policy = policy();
        let kind = policy.classify(Client {
            addr: None,
            login: Some("alice"),
            ..Default::default()
        });
        let mut set = HeaderSet::default();
        for (name, value) in &headers {
            set.add(name.as_bytes(), value);
        }
        if let Ok(senders) = policy.check_headers(&kind, &set) {
            for address in senders.from.iter().chain(senders.sender.iter()) {
                let canonical = address.canonical();
                let (local, domain) = canonical.split_once('@').unwrap();
                let base = local.split('+').next().unwrap();
                let owned = [
                    "alice@tugraz.at",
                    "alice@tu-graz.ac.at",
                    "office@tugraz.at",
                ];
                prop_assert!(
                    owned.contains(&format!("{base}@{domain}").as_str()),
                    "accepted {canonical} from {headers:?}"
                );
            }
        }
    }

    /// The sender-map parser answers every text with a map or an error on a real line.
    #[test]
    fn sender_map_parser_never_panics(
        lines in prop::collection::vec(
            prop::collection::vec(
                prop::sample::select(&[
                    "alice@tugraz.at", "@tugraz.at", "alice", "bob,", " ", "\t", "#", ",",
                    "@", "x@[1.2.3.4]", "a@b..c", "\u{fc}@t.at", "@@", "\0", "robot-web",
                ][..]),
                0..6,
            ).prop_map(|t| t.concat()),
            0..12,
        )
    ) {
        let text = lines.join("\n");
        let rules = LoginRules::new(vec!["tugraz.at".into()]);
        if let Err(e) = SenderMap::parse(Path::new("map"), &text, &rules) {
            prop_assert!(e.line >= 1 && e.line <= lines.len().max(1), "{e}");
        }
    }
}

/// Sections and keys of relayguard.toml, and values of every type.
const SECTIONS: &[&str] = &[
    "milter",
    "domains",
    "senders",
    "clients",
    "audit",
    "metrics",
    "limits",
    "limits.redis",
    "limits.external",
    "limits.internal",
    "limits.lock",
    "limits.login.alice",
    "dkim",
];
const KEYS: &[&str] = &[
    "socket",
    "socket_mode",
    "max_connections",
    "shutdown_timeout_secs",
    "idle_timeout_secs",
    "protected",
    "own_local_part",
    "robots",
    "realms",
    "allow_foreign",
    "recipient_delimiter",
    "internal_networks",
    "require_name",
    "own_name_parents",
    "status_senders",
    "fsync",
    "on_error",
    "listen",
    "store",
    "timezone",
    "auth_window",
    "timeout_ms",
    "on_failure",
    "sentinels",
    "master_name",
    "messages_per_hour",
    "recipients_per_message",
    "connections_per_second",
    "messages_per_connection",
    "authentications_per_window",
    "ownership_refusals",
    "ownership_window_minutes",
    "limit_hits_per_day",
    "expiry_days",
    "min_publish_lead_hours",
    "without_key",
];
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "7",
    "65537",
    "9223372036854775807",
    "18446744073709551615",
    "true",
    "\"\"",
    "\"x\"",
    "\"inet:0@127.0.0.1\"",
    "\"unix:/tmp/rg.sock\"",
    "\"0660\"",
    "\"verified\"",
    "\"redis\"",
    "\"memory\"",
    "\"18:00-06:00\"",
    "\"25:00-06:00\"",
    "\"UTC\"",
    "\"Mars/Olympus\"",
    "\"127.0.0.1:9891\"",
    "[]",
    "[\"tugraz.at\"]",
    "[\"129.27.0.0/16\", \"::1\"]",
    "[\"@nagios.tugraz.at\", \"x\"]",
    "[\"redis://127.0.0.1:1\"]",
    "\"+\"",
    "1.5",
    "{}",
];

fn config_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(SECTIONS),
            prop::collection::vec(
                (prop::sample::select(KEYS), prop::sample::select(VALUES)),
                0..5,
            ),
        ),
        0..6,
    )
    .prop_map(|sections| {
        let mut text = String::new();
        for (section, keys) in sections {
            text.push_str(&format!("[{section}]\n"));
            for (key, value) in keys {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        text
    })
}

proptest! {
    /// Any relayguard.toml is a configuration with every number in its range, or an error
    /// that names the file.
    #[test]
    fn config_loader_never_panics_and_bounds_every_number(text in config_text()) {
        let path = Path::new("/nonexistent/relayguard.toml");
        match relayguard::config::Config::parse(path, &text) {
            Ok(config) => {
                prop_assert!((1..=65_536).contains(&config.milter.max_connections));
                prop_assert!(config.milter.idle_timeout.as_secs() >= 1);
                prop_assert!(config.milter.idle_timeout.as_secs() <= 7_200);
            }
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.starts_with("/nonexistent/"), "{e}\n{text}");
            }
        }
    }
}

/// Panics in threads other than the test's own (the milter's tasks).
static SERVICE_PANICS: AtomicUsize = AtomicUsize::new(0);

/// One milter packet: length, command byte, payload.
fn packet(command: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(command);
    out.extend_from_slice(payload);
    out
}

fn command() -> impl Strategy<Value = Vec<u8>> {
    let text = || {
        prop::collection::vec(
            prop::sample::select(
                &[
                    "alice",
                    "{auth_authen}",
                    "{client_name}",
                    "i",
                    "<a@tugraz.at>",
                    "<>",
                    "From",
                    "rector@tugraz.at",
                    "\0",
                    "\r\n",
                    "x",
                    "{client_addr}",
                    "129.27.1.1",
                ][..],
            ),
            0..6,
        )
        .prop_map(|t| t.concat().into_bytes())
    };
    prop_oneof![
        Just(packet(
            b'O',
            &[0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff]
        )),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|p| packet(b'O', &p)),
        text().prop_map(|t| packet(b'C', &[&t[..], b"\x004\x9c\x40129.27.1.1\0"].concat())),
        (prop::sample::select(&b"CHMRLNTBE"[..]), text())
            .prop_map(|(stage, t)| { packet(b'D', &[&[stage][..], &t, b"\0"].concat()) }),
        text().prop_map(|t| packet(b'H', &[&t[..], b"\0"].concat())),
        text().prop_map(|t| packet(b'M', &[&t[..], b"\0"].concat())),
        text().prop_map(|t| packet(b'R', &[&t[..], b"\0"].concat())),
        (text(), text()).prop_map(|(n, v)| packet(b'L', &[&n[..], b"\0", &v, b"\0"].concat())),
        Just(packet(b'N', b"")),
        Just(packet(b'T', b"")),
        text().prop_map(|t| packet(b'B', &t)),
        Just(packet(b'E', b"")),
        Just(packet(b'A', b"")),
        Just(packet(b'Q', b"")),
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(c, p)| packet(c, &p)),
        prop::collection::vec(any::<u8>(), 0..24),
        Just(vec![0x7f, 0xff, 0xff, 0xff, b'B']),
    ]
}

/// A whole transaction as an MTA sends it, with generated logins, addresses and headers,
/// then more generated commands.
fn transaction() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let pick = |options: &'static [&'static str]| prop::sample::select(options);
    (
        pick(&[
            "alice",
            "mallory",
            "robot-web",
            "",
            "alice@tugraz.at",
            "a\r\nb",
        ]),
        pick(&[
            "<alice@tugraz.at>",
            "<rector@tugraz.at>",
            "<>",
            "<@x:a@b>",
            "alice",
            "<a b@c>",
        ]),
        pick(&[
            "<friend@example.org>",
            "<admin@tugraz.at>",
            "<>",
            "<\"q\"@x>",
        ]),
        prop::collection::vec((header_name(), header_value()), 0..4),
        prop::collection::vec(command(), 0..4),
    )
        .prop_map(|(login, from, rcpt, headers, tail)| {
            let mut out = vec![
                packet(b'O', &[0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff]),
                packet(
                    b'D',
                    b"C{client_addr}\x00129.27.1.1\0{client_name}\0srv.tugraz.at\0",
                ),
                packet(b'C', b"srv.tugraz.at\x004\x9c\x40129.27.1.1\0"),
                packet(b'D', format!("M{{auth_authen}}\0{login}\0").as_bytes()),
                packet(b'M', format!("{from}\0").as_bytes()),
                packet(b'R', format!("{rcpt}\0").as_bytes()),
            ];
            for (name, value) in headers {
                let value: Vec<u8> = value.into_iter().filter(|&b| b != 0).collect();
                out.push(packet(
                    b'L',
                    &[name.as_bytes(), b"\0", &value, b"\0"].concat(),
                ));
            }
            out.push(packet(b'N', b""));
            out.push(packet(b'B', b"body\r\n"));
            out.push(packet(b'E', b""));
            out.extend(tail);
            out
        })
}

/// Sends arbitrary command sequences to a running relayguard; afterwards it must still be
/// the same process answering a real transaction, with no task having panicked.
#[test]
fn milter_session_survives_any_command_sequence() {
    let default_hook = std::panic::take_hook();
    let test_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != test_thread {
            SERVICE_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let milter = runtime.block_on(common::Milter::with_config(|dir| {
        format!(
            "{}\n{}",
            common::config_text(&format!("unix:{}/relayguard.sock", dir.display())),
            common::dkim::standard_setup(dir)
        )
    }));
    let socket = milter.unix.clone().unwrap();
    let sequences = prop_oneof![prop::collection::vec(command(), 0..12), transaction()];
    proptest!(|(commands in sequences)| {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        for c in &commands {
            if stream.write_all(c).is_err() {
                break;
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    });
    runtime.block_on(async {
        let mut conn = milter.connect().await;
        let outcome = common::send(
            &mut conn,
            &common::Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
        )
        .await;
        assert_eq!(outcome.status, indymilter_test::Status::Accept);
        conn.close().await.unwrap();
    });
    assert_eq!(
        SERVICE_PANICS.load(Ordering::SeqCst),
        0,
        "a milter task panicked"
    );
    runtime.block_on(milter.stop()).unwrap();
}
