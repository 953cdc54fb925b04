//! The sender policy as a table: who may send as whom, and every header-spoofing class
//! of "Composition Kills" (USENIX Security 2020) refused with its reason.

mod common;

#[path = "policy_table/cases.rs"]
mod cases;

use cases::*;
use relayguard::policy::hosts::HostName;
use relayguard::policy::mailbox::HeaderSet;
use relayguard::policy::{Client, Field, Reason, Request};

/// Whether a refusal has the expected code: a reason code, or `ambiguous_header/<what>`
/// naming the ambiguity too.
fn refused_as(reason: &Reason, code: &str) -> bool {
    match (code.split_once('/'), reason) {
        (Some(("ambiguous_header", what)), Reason::AmbiguousHeader(a)) => a.code() == what,
        (Some(_), _) => false,
        (None, reason) => reason.code() == code,
    }
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
                refusal.field == *field && refused_as(&refusal.reason, code)
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
                    Refuse(_, code) => would.first().map(String::as_str) == code.split('/').next(),
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
