//! The policy table's cases: who may send as whom, and every header-spoofing class refused
//! with its reason. Shared by tests/policy_table.rs (the decisions) and tests/readers.rs
//! (what mail readers make of every accepted header).
#![allow(dead_code)]

use relayguard::policy::{Field, Policy};
use std::path::Path;

/// The table's policy: tests/policy_table/relayguard.toml and its sender map.
pub fn policy() -> Policy {
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
pub enum Expect {
    Accept,
    Refuse(Field, &'static str),
}
pub use Expect::*;

pub struct Case {
    pub name: &'static str,
    pub login: Option<&'static str>,
    pub client: &'static str,
    /// The client's forward-confirmed host name (`{client_name}`).
    pub host: Option<&'static str>,
    pub mail_from: &'static str,
    pub rcpts: &'static [&'static str],
    pub headers: &'static [(&'static str, &'static [u8])],
    pub expect: Expect,
}

pub const OUTSIDE: &str = "203.0.113.7";
pub const CAMPUS: &str = "129.27.200.9";

pub fn auth(
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
pub fn server(
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
pub fn spoof(
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

/// A header-spoofing case: mallory (who owns only mallory@tugraz.at) sends this From, which
/// must be refused as the ambiguity `what`.
pub fn mallory(name: &'static str, from: &'static [u8], what: &'static str) -> Case {
    auth(
        name,
        "mallory",
        "<mallory@tugraz.at>",
        Box::leak(Box::new([("From", from)])),
        Refuse(
            Field::From,
            Box::leak(format!("ambiguous_header/{what}").into_boxed_str()),
        ),
    )
}

pub fn cases() -> Vec<Case> {
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
        // Readers disagree (review round 3), family 1: an address split up in the display
        // name. An unquoted @ is not valid in a phrase; Python reads it as the author.
        mallory("address split by a space in the name", b"rector @tugraz.at <mallory@tugraz.at>", "display_name_at"),
        mallory("quoted local part glued to a domain in the name", b"\"rector\"@tugraz.at <mallory@tugraz.at>", "display_name_at"),
        mallory("comment inside the address in the name", b"rector(x)@tugraz.at <mallory@tugraz.at>", "display_name_at"),
        mallory("space after the at sign in the name", b"rector@ tugraz.at <mallory@tugraz.at>", "display_name_at"),
        mallory("tabs around the at sign in the name", b"rector\t@\ttugraz.at <mallory@tugraz.at>", "display_name_at"),
        mallory("dot and spaces before the at sign in the name", b"rector . @tugraz.at <mallory@tugraz.at>", "display_name_at"),
        mallory("address in the name glued to the angle", b"rector@tugraz.at<mallory@tugraz.at>", "display_name_at"),
        auth(
            "address split in the Sender's name",
            "mallory",
            "<mallory@tugraz.at>",
            &[
                ("From", b"mallory@tugraz.at"),
                ("Sender", b"rector @tugraz.at <mallory@tugraz.at>"),
            ],
            Refuse(Field::Sender, "ambiguous_header"),
        ),
        server(
            "internal server with an address split in the name",
            CAMPUS,
            Some("srv1.iaik.tugraz.at"),
            "<root@srv1.iaik.tugraz.at>",
            &["<staff@tugraz.at>"],
            &[("From", b"rector @ tugraz.at <root@srv1.iaik.tugraz.at>")],
            Refuse(Field::From, "ambiguous_header"),
        ),
        // Family 2: quoting that readers disagree on.
        mallory("quoted at sign between two words", b"rector\"@\"tugraz.at <mallory@tugraz.at>", "display_name_address"),
        mallory("quoted local part and at sign before a domain", b"\"rector@\"tugraz.at <mallory@tugraz.at>", "display_name_address"),
        mallory(
            "quote inside a comment that Thunderbird starts a string at",
            b"(\")<mallory@tugraz.at>(\")(\"(\") rector @ tugraz.at (Rector))",
            "comment_special",
        ),
        mallory("square bracket inside a comment", b"mallory@tugraz.at ([rector@tugraz.at])", "comment_special"),
        mallory("quoted-pair inside a comment", b"mallory@tugraz.at (a\\) rector@tugraz.at)", "comment_special"),
        mallory("address spelled in full-width letters", "\"\u{ff52}\u{ff45}\u{ff43}\u{ff54}\u{ff4f}\u{ff52}\u{ff20}\u{ff54}\u{ff55}\u{ff47}\u{ff52}\u{ff41}\u{ff5a}\u{ff0e}\u{ff41}\u{ff54}\" <mallory@tugraz.at>".as_bytes(), "display_name_address"),
        mallory("address with a zero-width space", "\"rector\u{200b}@tugraz.at\" <mallory@tugraz.at>".as_bytes(), "display_name_address"),
        mallory("address with an ideographic full stop", "\"rector@tugraz\u{3002}at\" <mallory@tugraz.at>".as_bytes(), "display_name_address"),
        mallory(
            "zero-width space after the address",
            "mallory@tugraz.at\u{200b} (Mallory)".as_bytes(),
            "invalid_address",
        ),
        mallory(
            "address in a full-width domain",
            "<mallory@\u{ff54}\u{ff55}\u{ff47}\u{ff52}\u{ff41}\u{ff5a}\u{ff0e}\u{ff41}\u{ff54}>".as_bytes(),
            "invalid_address",
        ),
        mallory(
            "no-break spaces around a quoted address, which Python reads as the local part",
            "\u{a0}\"mallory@tugraz.at\"\u{a0}<mallory@tugraz.at>".as_bytes(),
            "unusual_space",
        ),
        mallory(
            "ideographic space between the name and the address",
            "TUGRAZ.AT\u{a0}\"rector@tugraz.at\".\u{3000}.at<mallory@tugraz.at>".as_bytes(),
            "unusual_space",
        ),
        mallory(
            "quoted address cut by an empty label",
            b"\"rector@tugraz.at..at\" <mallory@tugraz.at>",
            "display_name_address",
        ),
        // Family 3: encoded-words that one reader decodes and another does not.
        mallory("encoded-word inside a quoted name", b"\"rector=?utf-8?q?=40?=tugraz.at\" <mallory@tugraz.at>", "misplaced_encoded_word"),
        mallory(
            "encoded-word inside a comment",
            b"mallory@tugraz.at (\"=?utf-8?q?rector=40tugraz=2Eat?=\")", "comment_special"),
        mallory(
            "encoded-word in EBCDIC",
            b"=?cp037?q?=99=85=83=A3=96=99=7C=A3=A4=87=99=81=A9=4B=81=A3?= <mallory@tugraz.at>", "encoded_word_charset"),
        mallory("encoded-word in UTF-7", b"=?utf-7?q?rector+AEA-tugraz.at?= <mallory@tugraz.at>", "encoded_word_charset"),
        mallory("encoded-word glued to a word", b"Re=?utf-8?q?ctor?= <mallory@tugraz.at>", "misplaced_encoded_word"),
        mallory("encoded-word glued to a quoted string", b"=?utf-8?q?rector?=\"@tugraz.at\" <mallory@tugraz.at>", "misplaced_encoded_word"),
        mallory("encoded-word decoding to an address", b"=?utf-8?q?rector=40tugraz.at?= <mallory@tugraz.at>", "display_name_address"),
        mallory(
            "encoded-word decoding to an address with spaces",
            b"=?utf-8?q?rector_=40_tugraz=2Eat?= <mallory@tugraz.at>", "display_name_address"),
        mallory(
            "encoded-word decoding to another encoded-word",
            b"=?utf-8?q?=3D=3Futf-8=3Fq=3Frector=3D40tugraz=2Eat=3F=3D?= <mallory@tugraz.at>", "misplaced_encoded_word"),
        mallory(
            "encoded-word decoding to a line break",
            b"=?utf-8?q?Rector=0D=0AFrom=3A_rector=40tugraz=2Eat?= <mallory@tugraz.at>", "control_character"),
        mallory("malformed encoded-word", b"=?utf-8?b?cmVjdG9y?x?= <mallory@tugraz.at>", "malformed_encoded_word"),
        // Family 4: a server whose DNS name is a mail domain may not send as an address that
        // belongs to an account there.
        server(
            "internal server named like a student domain, as a person's mapped address",
            CAMPUS,
            Some("student.tugraz.at"),
            "<alice.example@student.tugraz.at>",
            &["<staff@tugraz.at>"],
            &[("From", b"alice.example@student.tugraz.at")],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        server(
            "internal server named like an institute, as a robot's address",
            CAMPUS,
            Some("iaik.tugraz.at"),
            "<>",
            &["<staff@tugraz.at>"],
            &[("From", b"noreply-web@iaik.tugraz.at")],
            Refuse(Field::From, "sender_not_owned"),
        ),
        server(
            "internal server in a domain given to a login",
            CAMPUS,
            Some("institute.tugraz.at"),
            "<root@institute.tugraz.at>",
            &["<staff@tugraz.at>"],
            &[],
            Refuse(Field::MailFrom, "sender_not_owned"),
        ),
        server(
            "internal server as its own unclaimed address",
            CAMPUS,
            Some("iaik.tugraz.at"),
            "<root@iaik.tugraz.at>",
            &["<staff@tugraz.at>"],
            &[("From", b"root@iaik.tugraz.at (Cron Daemon)")],
            Accept,
        ),
        // Legitimate forms that look unusual.
        auth(
            "quoted display name equals address",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"\"alice@tugraz.at\" <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "empty quoted display name",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"\"\" <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "escaped quotes in the display name",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"\"Alice \\\"Al\\\" Smith\" <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "comma in a name as an encoded-word",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"=?UTF-8?Q?M=C3=BCller=2C_Anna?= <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "name in two encoded-words",
            "alice",
            "<alice@tugraz.at>",
            &[(
                "From",
                b"=?utf-8?q?J=C3=BCrgen?= =?utf-8?b?IE3DvGxsZXI=?= <alice@tugraz.at>",
            )],
            Accept,
        ),
        auth(
            "Latin-1 encoded-word",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"=?iso-8859-1?q?J=FCrgen?= <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "initials with dots",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"A. B. M\xc3\xbcller-L\xc3\xbcdenscheidt <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "quoted name with an at sign and spaces",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"\"Anna M\xc3\xbcller @ TU Graz\" <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "no-break space inside a quoted name",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"\"Anna\xc2\xa0M\xc3\xbcller\" <alice@tugraz.at>")],
            Accept,
        ),
        auth(
            "comment after the angle address",
            "alice",
            "<alice@tugraz.at>",
            &[("From", b"Alice <alice@tugraz.at> (TU Graz, IAIK)")],
            Accept,
        ),
        auth(
            "upper-case subdomain",
            "alice",
            "<office@iaik.tugraz.at>",
            &[("From", b"IAIK Office <Office@IAIK.TUGraz.AT>")],
            Accept,
        ),
        auth(
            "own Sender with a display name",
            "alice",
            "<alice@tugraz.at>",
            &[
                ("From", b"\"IAIK Office\" <office@iaik.tugraz.at>"),
                ("Sender", b"\"Alice (for the office)\" <alice@tugraz.at>"),
            ],
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
