//! The sender policy as a table: who may send as whom, and every header-spoofing class
//! of "Composition Kills" (USENIX Security 2020) refused with its reason.

mod common;

use relayguard::policy::hosts::HostName;
use relayguard::policy::mailbox::HeaderSet;
use relayguard::policy::{Client, Field, Policy, Reason, Request};
use std::path::Path;

fn policy() -> Policy {
    relayguard::runtime::assemble::load(
        Path::new("tests/policy_table/relayguard.toml"),
        relayguard::clock::unix_now(),
        &relayguard::ldap::Directories::standalone(),
    )
    .expect("policy table config loads")
    .snapshot
    .policy
}

#[derive(Debug)]
enum Expect {
    Accept,
    Refuse(Field, &'static str),
}
use Expect::*;

struct Case {
    name: &'static str,
    login: Option<&'static str>,
    client: &'static str,
    /// The client's forward-confirmed host name (`{client_name}`).
    host: Option<&'static str>,
    mail_from: &'static str,
    rcpts: &'static [&'static str],
    headers: &'static [(&'static str, &'static [u8])],
    expect: Expect,
}

const OUTSIDE: &str = "203.0.113.7";
const CAMPUS: &str = "129.27.200.9";

fn auth(
    name: &'static str,
    login: &'static str,
    mail_from: &'static str,
    headers: &'static [(&'static str, &'static [u8])],
    expect: Expect,
) -> Case {
    Case {
        name,
        login: Some(login),
        client: OUTSIDE,
        host: None,
        mail_from,
        rcpts: &["<friend@example.org>"],
        headers,
        expect,
    }
}

/// An unauthenticated client at `client` with host name `host`.
fn server(
    name: &'static str,
    client: &'static str,
    host: Option<&'static str>,
    mail_from: &'static str,
    rcpts: &'static [&'static str],
    headers: &'static [(&'static str, &'static [u8])],
    expect: Expect,
) -> Case {
    Case {
        name,
        login: None,
        client,
        host,
        mail_from,
        rcpts,
        headers,
        expect,
    }
}

/// A header-spoofing case: alice (who owns alice@tugraz.at) sends the given headers.
fn spoof(
    name: &'static str,
    headers: &'static [(&'static str, &'static [u8])],
    field: Field,
    code: &'static str,
) -> Case {
    auth(
        name,
        "alice",
        "<alice@tugraz.at>",
        headers,
        Refuse(field, code),
    )
}

fn cases() -> Vec<Case> {
    vec![
        // Owners.
        auth(
            "owner by map",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"Alice <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "login with realm",
            "alice@tugraz.at",
            "<alice@tugraz.at>",
            &[("From", b"alice@tugraz.at")],
            Accept,
        ),
        auth(
            "login in upper case",
            "ALICE",
            "<alice@tugraz.at>",
            &[("From", b"alice@tugraz.at")],
            Accept,
        ),
        auth(
            "address in mixed case",
            "alice",
            "<Alice@TUGraz.AT>",
            &[("From", b"ALICE@tugraz.AT")],
            Accept,
        ),
        auth(
            "trailing dot",
            "alice",
            "<alice@tugraz.at.>",
            &[("From", b"<alice@tugraz.at.>")],
            Accept,
        ),
        auth(
            "address extension",
            "alice",
            "<alice+lists@tugraz.at>",
            &[("From", b"alice+lists@tugraz.at")],
            Accept,
        ),
        auth(
            "own local part at apex",
            "bob",
            "<bob@tugraz.at>",
            &[("From", b"Bob <bob@tugraz.at>")],
            Accept,
        ),
        auth(
            "own local part at second apex",
            "bob",
            "<bob@tu-graz.ac.at>",
            &[("From", b"bob@tu-graz.ac.at")],
            Accept,
        ),
        auth(
            "own local part not at subdomain",
            "bob",
            "<bob@iaik.tugraz.at>",
            &[("From", b"bob@iaik.tugraz.at")],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        auth(
            "shared mailbox, first owner",
            "alice",
            "<office@iaik.tugraz.at>",
            &[("From", b"office@iaik.tugraz.at")],
            Accept,
        ),
        auth(
            "shared mailbox, second owner",
            "bob",
            "<office@iaik.tugraz.at>",
            &[("From", b"office@iaik.tugraz.at")],
            Accept,
        ),
        auth(
            "shared mailbox, stranger",
            "mallory",
            "<office@iaik.tugraz.at>",
            &[("From", b"office@iaik.tugraz.at")],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        auth(
            "domain entry",
            "carol",
            "<anyone@institute.tugraz.at>",
            &[("From", b"anyone@institute.tugraz.at")],
            Accept,
        ),
        auth(
            "domain entry is exact",
            "carol",
            "<x@lab.institute.tugraz.at>",
            &[("From", b"x@lab.institute.tugraz.at")],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        auth(
            "map entry beats own local part",
            "alice",
            "<alice@tugraz.at>",
            &[
                ("From", b"alice@tugraz.at"),
                ("Sender", b"rector@tugraz.at"),
            ],
            Refuse(Field::Sender, "sender_not_owned"),
        ),
        auth(
            "null sender with own From",
            "alice",
            "<>",
            &[("From", b"alice@tugraz.at")],
            Accept,
        ),
        auth(
            "own Sender header",
            "alice",
            "<alice@tugraz.at>",
            &[
                ("From", b"office@iaik.tugraz.at"),
                ("Sender", b"alice@tugraz.at"),
            ],
            Accept,
        ),
        // Spoofers.
        auth(
            "spoofed From",
            "mallory",
            "<mallory@tugraz.at>",
            &[("From", b"Rector <rector@tugraz.at>")],
            Refuse(Field::From, "sender_not_owned"),
        ),
        auth(
            "spoofed MAIL FROM",
            "mallory",
            "<rector@tugraz.at>",
            &[("From", b"mallory@tugraz.at")],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        auth(
            "spoofed Sender",
            "mallory",
            "<mallory@tugraz.at>",
            &[
                ("From", b"mallory@tugraz.at"),
                ("Sender", b"rector@tugraz.at"),
            ],
            Refuse(Field::Sender, "sender_not_owned"),
        ),
        auth(
            "spoof in upper case",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"RECTOR@TUGRAZ.AT")],
            Refuse(Field::From, "sender_not_owned"),
        ),
        auth(
            "spoof with trailing dot",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"rector@TUGraz.at.")],
            Refuse(Field::From, "sender_not_owned"),
        ),
        auth(
            "spoof in subdomain",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"dean@math.tugraz.at")],
            Refuse(Field::From, "sender_not_owned"),
        ),
        auth(
            "lookalike domain",
            "mallory",
            "<mallory@tugraz.at>",
            &[("From", b"rector@eviltugraz.at")],
            Refuse(Field::From, "foreign_sender"),
        ),
        auth(
            "protected name as prefix",
            "mallory",
            "<mallory@tugraz.at>",
            &[("From", b"rector@tugraz.at.example.org")],
            Refuse(Field::From, "foreign_sender"),
        ),
        auth(
            "homoglyph domain",
            "mallory",
            "<mallory@tugraz.at>",
            &[("From", b"rector@tugr\xd0\xb0z.at")],
            Refuse(Field::From, "foreign_sender"),
        ),
        auth(
            "foreign From refused by default",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"alice@gmail.com")],
            Refuse(Field::From, "foreign_sender"),
        ),
        auth(
            "foreign MAIL FROM refused by default",
            "alice",
            "<alice@gmail.com>",
            &[("From", b"alice@tugraz.at")],
            Refuse(Field::MailFrom, "foreign_sender"),
        ),
        auth(
            "domain-less From",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"root (Cron Daemon)")],
            Refuse(Field::From, "foreign_sender"),
        ),
        auth(
            "missing From",
            "alice",
            "<alice@tugraz.at>",
            &[("Subject", b"hi")],
            Refuse(Field::From, "from_missing"),
        ),
        auth(
            "malformed MAIL FROM",
            "alice",
            "<a@b@tugraz.at>",
            &[("From", b"alice@tugraz.at")],
            Refuse(Field::MailFrom, "malformed_address"),
        ),
        auth(
            "source-routed MAIL FROM",
            "alice",
            "<@relay.example:alice@tugraz.at>",
            &[("From", b"alice@tugraz.at")],
            Refuse(Field::MailFrom, "malformed_address"),
        ),
        // Robot accounts.
        auth(
            "robot, assigned address",
            "robot-web",
            "<webform@tugraz.at>",
            &[("From", b"Web Form <webform@tugraz.at>")],
            Accept,
        ),
        auth(
            "robot, second assigned address",
            "robot-web",
            "<status@tu-graz.ac.at>",
            &[("From", b"status@tu-graz.ac.at")],
            Accept,
        ),
        auth(
            "robot, own local part not granted",
            "robot-web",
            "<robot-web@tugraz.at>",
            &[("From", b"robot-web@tugraz.at")],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        auth(
            "robot, someone else's address",
            "robot-web",
            "<webform@tugraz.at>",
            &[("From", b"alice@tugraz.at")],
            Refuse(Field::From, "sender_not_owned"),
        ),
        // Robot masquerading: automatic senders become the robot's address; the rest is
        // checked as sent.
        auth(
            "robot's cron mail is masqueraded",
            "robot-web",
            "<root@web1.iaik.tugraz.at>",
            &[("From", b"root@web1.iaik.tugraz.at (Cron Daemon)")],
            Accept,
        ),
        auth(
            "robot's bounce from localhost is masqueraded",
            "robot-web",
            "<>",
            &[("From", b"www-data@localhost")],
            Accept,
        ),
        auth(
            "robot's automatic Sender is masqueraded",
            "robot-web",
            "<webform@tugraz.at>",
            &[("From", b"webform@tugraz.at"), ("Sender", b"root@web1")],
            Accept,
        ),
        auth(
            "robot's automatic envelope with a foreign From",
            "robot-web",
            "<root@web1>",
            &[("From", b"someone@gmail.com")],
            Refuse(Field::From, "foreign_sender"),
        ),
        auth(
            "robot's form that is not automatic",
            "robot-web",
            "<apache@web1>",
            &[("From", b"apache@web1")],
            Refuse(Field::MailFrom, "foreign_sender"),
        ),
        auth(
            "robot's automatic From with a smuggled header",
            "robot-web",
            "<root@web1>",
            &[("From", b"root@web1\r\nBcc: victim@example.org")],
            Refuse(Field::From, "ambiguous_header"),
        ),
        auth(
            "a person's root@ is never masqueraded",
            "alice",
            "<root@web1>",
            &[("From", b"root@web1")],
            Refuse(Field::MailFrom, "foreign_sender"),
        ),
        // Unauthenticated internal servers: status mail to internal recipients, with a
        // name in DNS, only as themselves (or as a configured status sender).
        server(
            "internal server to admin",
            CAMPUS,
            Some("server.tugraz.at"),
            "<root@server.tugraz.at>",
            &["<admin@tugraz.at>", "<ops@zid.tugraz.at>"],
            &[("From", b"root@server.tugraz.at (Cron Daemon)")],
            Accept,
        ),
        server(
            "internal server bounces with the null sender",
            CAMPUS,
            Some("server.tugraz.at"),
            "<>",
            &["<admin@tugraz.at>"],
            &[("From", b"MAILER-DAEMON@server.tugraz.at")],
            Accept,
        ),
        server(
            "internal server may not use anyone's From",
            "10.1.2.3",
            Some("srv1.iaik.tugraz.at"),
            "<>",
            &["<admin@tu-graz.ac.at>"],
            &[("From", b"rector@tugraz.at")],
            Refuse(Field::From, "sender_not_owned"),
        ),
        server(
            "internal server forging the rector with its own envelope",
            CAMPUS,
            Some("srv1.iaik.tugraz.at"),
            "<root@srv1.iaik.tugraz.at>",
            &["<staff@tugraz.at>"],
            &[("From", b"Rector <rector@tugraz.at>")],
            Refuse(Field::From, "sender_not_owned"),
        ),
        server(
            "internal server, Sender of someone else",
            CAMPUS,
            Some("srv1.iaik.tugraz.at"),
            "<root@srv1.iaik.tugraz.at>",
            &["<staff@tugraz.at>"],
            &[
                ("From", b"root@srv1.iaik.tugraz.at"),
                ("Sender", b"rector@tugraz.at"),
            ],
            Refuse(Field::Sender, "sender_not_owned"),
        ),
        server(
            "internal server, envelope of another host",
            CAMPUS,
            Some("srv1.iaik.tugraz.at"),
            "<root@srv2.iaik.tugraz.at>",
            &["<admin@tugraz.at>"],
            &[],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        server(
            "internal server, its parent domain (not configured)",
            CAMPUS,
            Some("srv1.iaik.tugraz.at"),
            "<noreply@iaik.tugraz.at>",
            &["<admin@tugraz.at>"],
            &[],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        server(
            "internal server, unqualified root@localhost",
            CAMPUS,
            Some("srv1.iaik.tugraz.at"),
            "<root@localhost>",
            &["<admin@tugraz.at>"],
            &[],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        server(
            "internal server named like the apex",
            CAMPUS,
            Some("tugraz.at"),
            "<rector@tugraz.at>",
            &["<admin@tugraz.at>"],
            &[],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        server(
            "internal server as a status sender address",
            CAMPUS,
            Some("srv1.iaik.tugraz.at"),
            "<monitoring@tugraz.at>",
            &["<admin@tugraz.at>"],
            &[("From", b"Monitoring <Monitoring@TUGraz.at>")],
            Accept,
        ),
        server(
            "internal server in a status sender domain",
            CAMPUS,
            Some("srv1.iaik.tugraz.at"),
            "<check@nagios.tugraz.at>",
            &["<admin@tugraz.at>"],
            &[("From", b"check@nagios.tugraz.at")],
            Accept,
        ),
        server(
            "internal server without a host name",
            CAMPUS,
            None,
            "<root@server.tugraz.at>",
            &["<admin@tugraz.at>"],
            &[("From", b"root@server.tugraz.at")],
            Refuse(Field::MailFrom, "unknown_client_name"),
        ),
        server(
            "internal server whose name did not resolve",
            CAMPUS,
            Some("unknown"),
            "<>",
            &["<admin@tugraz.at>"],
            &[],
            Refuse(Field::MailFrom, "unknown_client_name"),
        ),
        server(
            "internal server over IPv4-mapped IPv6",
            "::ffff:129.27.1.1",
            Some("x.tugraz.at"),
            "<root@x.tugraz.at>",
            &["<admin@tugraz.at>"],
            &[("From", b"root@x.tugraz.at")],
            Accept,
        ),
        server(
            "internal server to outside",
            CAMPUS,
            Some("server.tugraz.at"),
            "<root@server.tugraz.at>",
            &["<admin@tugraz.at>", "<someone@gmail.com>"],
            &[],
            Refuse(Field::Rcpt, "recipient_not_protected"),
        ),
        server(
            "internal server to lookalike",
            CAMPUS,
            Some("server.tugraz.at"),
            "<root@server.tugraz.at>",
            &["<admin@eviltugraz.at>"],
            &[],
            Refuse(Field::Rcpt, "recipient_not_protected"),
        ),
        server(
            "internal server, ambiguous From",
            CAMPUS,
            Some("server.tugraz.at"),
            "<>",
            &["<admin@tugraz.at>"],
            &[("From", b"a@tugraz.at"), ("from", b"b@tugraz.at")],
            Refuse(Field::From, "ambiguous_header"),
        ),
        Case {
            name: "external unauthenticated",
            login: None,
            client: OUTSIDE,
            host: None,
            mail_from: "<alice@tugraz.at>",
            rcpts: &["<admin@tugraz.at>"],
            headers: &[],
            expect: Refuse(Field::MailFrom, "auth_required"),
        },
        Case {
            name: "unknown client address",
            login: None,
            client: "",
            host: None,
            mail_from: "<alice@tugraz.at>",
            rcpts: &["<admin@tugraz.at>"],
            headers: &[],
            expect: Refuse(Field::MailFrom, "auth_required"),
        },
        Case {
            name: "empty login is no login",
            login: Some(" "),
            client: OUTSIDE,
            host: None,
            mail_from: "<alice@tugraz.at>",
            rcpts: &[],
            headers: &[],
            expect: Refuse(Field::MailFrom, "auth_required"),
        },
        // Header ambiguity classes (Composition Kills).
        spoof(
            "two From headers",
            &[("From", b"alice@tugraz.at"), ("From", b"rector@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "From headers in different case",
            &[("From", b"alice@tugraz.at"), ("FROM", b"rector@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "white space before the colon",
            &[("From ", b"rector@tugraz.at"), ("From", b"alice@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "From hidden in a folded line",
            &[
                ("Subject", b"hello\r\n From: rector@tugraz.at"),
                ("From", b"alice@tugraz.at"),
            ],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "mailbox list",
            &[("From", b"alice@tugraz.at, rector@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "two angle addresses",
            &[("From", b"<alice@tugraz.at> <rector@tugraz.at>")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "group syntax",
            &[("From", b"Rectorate: alice@tugraz.at;")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "source route",
            &[("From", b"<@tugraz.at:rector@tugraz.at>")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "encoded-word as address",
            &[("From", b"=?utf-8?b?cmVjdG9yQHR1Z3Jhei5hdA==?=")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "encoded-word display name with address",
            &[(
                "From",
                b"=?utf-8?b?cmVjdG9yQHR1Z3Jhei5hdA==?= <alice@tugraz.at>",
            )],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "display name with address",
            &[("From", b"\"rector@tugraz.at\" <alice@tugraz.at>")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "bare display name with address",
            &[("From", b"rector@tugraz.at <alice@tugraz.at>")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "fullwidth at sign in display name",
            &[("From", b"rector\xef\xbc\xa0tugraz.at <alice@tugraz.at>")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "comment with address",
            &[("From", b"alice@tugraz.at (rector@tugraz.at)")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "comment splitting an address",
            &[("From", b"rector@tugraz.at(x)@evil.example")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "quoted local part with at sign",
            &[("From", b"\"rector@tugraz.at\"@evil.example")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "quoted local part",
            &[("From", b"\"rector\"@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "escaped at sign",
            &[("From", b"rector@tugraz.at\\@evil.example")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "NUL byte",
            &[("From", b"alice@tugraz.at\0rector@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "bare CR",
            &[("From", b"alice@tugraz.at\rrector@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "bare LF",
            &[("From", b"alice@tugraz.at\nFrom: rector@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "control character",
            &[("From", b"alice@tugraz.at\x08\x08\x08")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "invalid UTF-8",
            &[("From", b"Al\xffce <alice@tugraz.at>")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "empty From",
            &[("From", b"")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "unterminated angle bracket",
            &[("From", b"Alice <alice@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "text after the address",
            &[("From", b"<alice@tugraz.at> rector@tugraz.at")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "domain literal",
            &[("From", b"alice@[129.27.1.1]")],
            Field::From,
            "ambiguous_header",
        ),
        spoof(
            "two Sender headers",
            &[
                ("From", b"alice@tugraz.at"),
                ("Sender", b"alice@tugraz.at"),
                ("sender", b"rector@tugraz.at"),
            ],
            Field::Sender,
            "ambiguous_header",
        ),
        // Legitimate forms that look unusual.
        auth(
            "display name equals address",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"alice@tugraz.at <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "encoded-word display name",
            "alice",
            "<alice@tugraz.at>",
            &[(
                "From",
                b"=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <alice@tugraz.at>",
            )],
            Accept,
        ),
        auth(
            "folded From",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"\"Alice, TU Graz\"\r\n\t<alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "LF-folded From as milters see it",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"Alice\n <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "harmless comment",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"alice@tugraz.at (Alice at TU Graz)")],
            Accept,
        ),
        auth(
            "UTF-8 display name",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"J\xc3\xbcrgen M\xc3\xbcller <alice@tugraz.at>")],
            Accept,
        ),
    ]
}

#[test]
fn policy_table() {
    let policy = policy();
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "the table must stay large: {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let mut headers = HeaderSet::default();
        for (name, value) in case.headers {
            headers.add(name.as_bytes(), value);
        }
        let request = Request {
            client: Client {
                addr: case.client.parse().ok(),
                login: case.login,
                name: HostName {
                    verified: case.host,
                    reverse: case.host,
                },
            },
            mail_from: case.mail_from,
            rcpts: case.rcpts.to_vec(),
            headers: Some(headers),
        };
        let decision = policy.decide(&request);
        let ok = match (&case.expect, &decision.outcome) {
            (Accept, Ok(())) => true,
            (Refuse(field, code), Err(refusal)) => {
                refusal.field == *field && refusal.reason.code() == *code
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                case.name, case.expect, decision.outcome
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn spoofer_reply_names_address_and_login() {
    let policy = policy();
    let mut headers = HeaderSet::default();
    headers.add(b"From", b"Rector <rector@tugraz.at>");
    let request = Request {
        client: Client {
            addr: OUTSIDE.parse().ok(),
            login: Some("mallory"),
            ..Default::default()
        },
        mail_from: "<mallory@tugraz.at>",
        rcpts: vec!["<victim@example.org>"],
        headers: Some(headers),
    };
    let refusal = policy.decide(&request).outcome.unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "550 5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory"
    );
}

#[test]
fn ambiguity_reply_says_what_is_wrong() {
    let policy = policy();
    let mut headers = HeaderSet::default();
    headers.add(b"From", b"alice@tugraz.at");
    headers.add(b"from", b"rector@tugraz.at");
    let kind = policy.classify(Client {
        addr: None,
        login: Some("alice"),
        ..Default::default()
    });
    let refusal = policy.check_headers(&kind, &headers).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "550 5.7.1 From header appears more than once; refusing an ambiguous sender"
    );
    assert!(
        matches!(refusal.reason, Reason::AmbiguousHeader(ref a) if a.code() == "multiple_headers")
    );
}

#[test]
fn foreign_senders_pass_when_allowed() {
    let mut policy = policy();
    policy.allow_foreign_senders = true;
    let mut headers = HeaderSet::default();
    headers.add(b"From", b"alice@gmail.com");
    let request = Request {
        client: Client {
            addr: None,
            login: Some("alice"),
            ..Default::default()
        },
        mail_from: "<alice@gmail.com>",
        rcpts: vec![],
        headers: Some(headers),
    };
    assert!(policy.decide(&request).outcome.is_ok());
}

#[test]
fn malformed_envelope_gets_a_syntax_reply() {
    let policy = policy();
    let kind = policy.classify(Client {
        addr: None,
        login: Some("alice"),
        ..Default::default()
    });
    let refusal = policy
        .check_mail(&kind, "<@relay.example:alice@tugraz.at>")
        .unwrap_err();
    assert_eq!(refusal.smtp_codes(), ("553", "5.1.7"));
    assert!(
        refusal.text.contains("source routes are not accepted"),
        "{}",
        refusal.text
    );
}

#[test]
fn unauthenticated_server_replies_say_why() {
    let policy = policy();
    let server = |host: Option<&'static str>, from: &'static [u8]| {
        let mut headers = HeaderSet::default();
        headers.add(b"From", from);
        let request = Request {
            client: Client {
                addr: CAMPUS.parse().ok(),
                login: None,
                name: HostName {
                    verified: host,
                    reverse: host,
                },
            },
            mail_from: "<>",
            rcpts: vec!["<staff@tugraz.at>"],
            headers: Some(headers),
        };
        policy.decide(&request).outcome.unwrap_err().to_string()
    };
    assert_eq!(
        server(Some("srv1.iaik.tugraz.at"), b"Rector <rector@tugraz.at>"),
        "550 5.7.1 <rector@tugraz.at> is not an address of unauthenticated host srv1.iaik.tugraz.at; a server without authentication may send only as itself"
    );
    assert_eq!(
        server(None, b"root@srv1.iaik.tugraz.at"),
        "450 4.7.25 Client host rejected: cannot find your hostname"
    );
}

/// The whole table through the transaction pipeline in monitor mode: every message passes,
/// exactly the legitimate ones are signed, and the audit log says which would have been
/// refused and why.
#[tokio::test]
async fn in_monitor_mode_every_message_passes_and_only_the_legitimate_are_signed() {
    use common::memory::{Msg, Relay, TU_GRAZ_AC_AT_KEY, TUGRAZ_KEYS, send};
    use relayguard::audit::writer::OnError;
    use relayguard::session::decision::Answer;
    let config = std::fs::read_to_string("tests/policy_table/relayguard.toml").unwrap()
        + "\n[rollout]\nmode = \"monitor\"\n\n[dkim]\n";
    let map = std::fs::read_to_string("tests/policy_table/sender_login_maps").unwrap();
    let policy = policy();
    let mut failures = Vec::new();
    let (mut signed_cases, mut would_cases) = (0, 0);
    for case in cases() {
        let relay = Relay::new(
            &config,
            &map,
            &format!("{TUGRAZ_KEYS}{TU_GRAZ_AC_AT_KEY}"),
            OnError::Tempfail,
        );
        let msg = Msg {
            client: case.client,
            name: case.host,
            login: case.login,
            mail_from: case.mail_from,
            rcpts: case.rcpts.to_vec(),
            headers: case.headers.to_vec(),
        };
        let heard = send(&relay, &msg).await;
        // What would have been accepted: the message, and at least one recipient.
        let kind = policy.classify(Client {
            addr: case.client.parse().ok(),
            login: case.login,
            name: HostName {
                verified: case.host,
                reverse: case.host,
            },
        });
        let some_rcpt = case
            .rcpts
            .iter()
            .any(|r| policy.check_rcpt(&kind, r).is_ok());
        let mut headers = HeaderSet::default();
        for (name, value) in case.headers {
            headers.add(name.as_bytes(), value);
        }
        // A robot's automatic From is masqueraded first.
        if let Some((_, value)) = policy
            .masquerade_rule(&kind)
            .and_then(|r| r.rewrite_from(&headers))
        {
            headers.replace(b"From", value.as_bytes());
        }
        let from_protected = headers
            .from()
            .ok()
            .flatten()
            .and_then(|a| a.domain().map(|d| policy.protected.covers(d)))
            .unwrap_or(false);
        let legitimate = match case.expect {
            Accept => true,
            Refuse(Field::Rcpt, _) => some_rcpt,
            Refuse(..) => false,
        };
        let records = relay.records();
        let would: Vec<String> = records
            .iter()
            .filter(|r| r["monitor"] == true)
            .map(|r| r["reason"].as_str().unwrap().to_string())
            .collect();
        let refused_sent = records
            .iter()
            .any(|r| r["monitor"] != true && r["verdict"] != "accept");
        let ok = match (&heard.answer, &case.expect) {
            // An MTA sends no message without a recipient: nothing to pass.
            (Answer::Continue, _) if case.rcpts.is_empty() => true,
            (Answer::Accept(a), expect) => {
                let signed = !a.signatures.is_empty();
                signed_cases += usize::from(signed);
                would_cases += usize::from(!would.is_empty());
                let reason_ok = match expect {
                    Accept => would.is_empty(),
                    Refuse(_, code) => would.first().map(String::as_str) == Some(*code),
                };
                signed == (legitimate && from_protected) && reason_ok
            }
            _ => false,
        };
        if !ok || refused_sent {
            failures.push(format!(
                "{}: expected {:?} (signed {}), heard {:?} at {}, would-refuse {would:?}",
                case.name,
                case.expect,
                legitimate && from_protected,
                heard.answer,
                heard.stage
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Both kinds are really there: signed legitimate mail, and passed would-be refusals.
    assert!(
        signed_cases >= 15 && would_cases >= 40,
        "signed {signed_cases}, would refuse {would_cases}"
    );
}
