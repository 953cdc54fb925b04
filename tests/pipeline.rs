//! Runbook for developers: the transaction pipeline decides in memory. Every path a message
//! can take, with no socket, no file and no Redis: the policy from configuration text, the
//! sender map and keys from memory, counters in memory, fake lock store, audit log and
//! ownership source, and a pinned clock. What each test checks is what the MTA would hear,
//! the audit record and the metrics.

mod common;

use common::memory::{Heard, Msg, Relay, TUGRAZ_KEYS, send, send_on, session_of};
use relayguard::BoxFuture;
use relayguard::audit::writer::OnError;
use relayguard::limits::rate::{Gcra, Rate};
use relayguard::limits::store::{CounterStore, StoreDown};
use relayguard::policy::address::Address;
use relayguard::policy::senders::{Lookup, OwnershipSource, SourceDown, Sources};
use relayguard::session::decision::{Answer, Modification, Reply};
use relayguard::session::{Pipeline, Session, Snapshot};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const OUTSIDE: &str = "203.0.113.7";
const CAMPUS: &str = "129.27.3.4";
const MAP: &str =
    "alice@tugraz.at alice\noffice@tugraz.at alice, bob\nnoreply-web@iaik.tugraz.at robot-web\n";

/// A counter store that is down and fail-closed.
struct DownStore;

impl CounterStore for DownStore {
    fn gcra<'a>(&'a self, _: &'a str, _: i64, _: Rate) -> BoxFuture<'a, Result<Gcra, StoreDown>> {
        Box::pin(async { Err(StoreDown("Connection refused".into())) })
    }

    fn incr<'a>(&'a self, _: &'a str, _: i64, _: i64) -> BoxFuture<'a, Result<u64, StoreDown>> {
        Box::pin(async { Err(StoreDown("Connection refused".into())) })
    }

    fn peek<'a>(&'a self, _: &'a str, _: i64) -> BoxFuture<'a, Result<Option<i64>, StoreDown>> {
        Box::pin(async { Err(StoreDown("Connection refused".into())) })
    }
}

/// A directory that does not answer.
struct DownSource;

impl OwnershipSource for DownSource {
    fn answer<'a>(
        &'a self,
        _: &'a str,
        _: &'a Address,
    ) -> BoxFuture<'a, Result<Lookup, SourceDown>> {
        Box::pin(async { Err(SourceDown("ldap://directory: timeout".into())) })
    }

    fn claim<'a>(&'a self, _: &'a Address) -> BoxFuture<'a, Result<Option<String>, SourceDown>> {
        Box::pin(async { Err(SourceDown("ldap://directory: timeout".into())) })
    }
}

/// The standard sections of every relay here.
const BASE: &str = "[senders]\nrobots = [\"robot-web\"]\n\n[clients]\ninternal_networks = [\"129.27.0.0/16\"]\nstatus_senders = [\"monitoring@tugraz.at\"]\n\n";

/// A relay with the standard sections and `extra`, the standard map, the tugraz.at keys.
fn new_relay(extra: &str) -> Relay {
    relay_with(extra, OnError::Tempfail)
}

fn relay_with(extra: &str, on_error: OnError) -> Relay {
    relay_from(&format!("{BASE}{extra}"), on_error)
}

fn relay_from(text: &str, on_error: OnError) -> Relay {
    Relay::new(text, MAP, TUGRAZ_KEYS, on_error)
}

fn from(login: &'static str, mail_from: &'static str, from: &'static str) -> Msg {
    Msg {
        client: OUTSIDE,
        name: None,
        login: Some(login),
        mail_from,
        rcpts: vec!["<friend@example.org>"],
        headers: vec![
            ("From", from.as_bytes()),
            ("To", b"friend@example.org"),
            ("Subject", b"x"),
        ],
    }
}

fn server(name: Option<&'static str>, mail_from: &'static str, from: &'static str) -> Msg {
    Msg {
        client: CAMPUS,
        name,
        login: None,
        mail_from,
        rcpts: vec!["<admin@tugraz.at>"],
        headers: vec![("From", from.as_bytes()), ("Subject", b"cron")],
    }
}

/// Sends `msg` on a new connection and returns where it was refused and with what reply.
async fn refused(relay: &Relay, msg: &Msg) -> (&'static str, String) {
    let heard = send(relay, msg).await;
    (heard.stage, heard.reply())
}

fn verdict(v: &str, r: &str) -> (String, String) {
    (v.into(), r.into())
}

#[tokio::test]
async fn an_owner_is_accepted_and_signed_twice() {
    let relay = new_relay("[dkim]\n");
    let heard = send(
        &relay,
        &from("alice", "<alice@tugraz.at>", "Alice <alice@tugraz.at>"),
    )
    .await;
    assert_eq!((heard.stage, heard.signatures()), ("message", 2));
    let record = relay.last();
    assert_eq!(
        (&record["verdict"], &record["reason"], &record["text"]),
        (
            &Value::from("accept"),
            &Value::from("ok"),
            &Value::from("signed")
        )
    );
    assert_eq!(record["dkim"].as_array().unwrap().len(), 2);
    assert_eq!(
        record["time"], "2026-11-28T19:00:00.000Z",
        "the pinned clock"
    );
    assert!(
        relay
            .metrics()
            .contains("relayguard_signatures_total{domain=\"tugraz.at\",selector=\"ed-a\",algorithm=\"ed25519-sha256\"} 1")
    );
}

#[tokio::test]
async fn every_policy_refusal_has_its_reply_and_reason() {
    let relay = new_relay("[dkim]\n");
    let cases: Vec<(Msg, &str, &str, &str)> = vec![
        (
            Msg {
                login: None,
                ..from("x", "<alice@tugraz.at>", "alice@tugraz.at")
            },
            "mail",
            "550 5.7.1 authentication required: this relay accepts mail only from authenticated users",
            "auth_required",
        ),
        (
            from("mallory", "<rector@tugraz.at>", "mallory@tugraz.at"),
            "mail",
            "550 5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory",
            "sender_not_owned",
        ),
        (
            from(
                "mallory",
                "<mallory@tugraz.at>",
                "Rector <rector@tugraz.at>",
            ),
            "headers",
            "550 5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory",
            "sender_not_owned",
        ),
        (
            from("alice", "<alice@gmail.com>", "alice@gmail.com"),
            "mail",
            "550 5.7.1 <alice@gmail.com> is outside the protected domains and may not be used by authenticated user alice",
            "foreign_sender",
        ),
        (
            from("alice", "<@relay:alice@tugraz.at>", "alice@tugraz.at"),
            "mail",
            "553 5.1.7 <@relay:alice@tugraz.at>: malformed sender address: source routes are not accepted",
            "malformed_address",
        ),
        (
            Msg {
                headers: vec![("Subject", b"no from")],
                ..from("alice", "<alice@tugraz.at>", "")
            },
            "headers",
            "550 5.7.1 message has no From header",
            "from_missing",
        ),
        (
            Msg {
                headers: vec![("From", b"alice@tugraz.at"), ("FROM", b"rector@tugraz.at")],
                ..from("alice", "<alice@tugraz.at>", "")
            },
            "headers",
            "550 5.7.1 From header appears more than once; refusing an ambiguous sender",
            "ambiguous_header",
        ),
        (
            server(None, "<root@srv.tugraz.at>", "root@srv.tugraz.at"),
            "mail",
            "450 4.7.25 Client host rejected: cannot find your hostname",
            "unknown_client_name",
        ),
        (
            server(
                Some("srv.tugraz.at"),
                "<root@srv.tugraz.at>",
                "Rector <rector@tugraz.at>",
            ),
            "headers",
            "550 5.7.1 <rector@tugraz.at> is not an address of unauthenticated host srv.tugraz.at; a server without authentication may send only as itself",
            "sender_not_owned",
        ),
    ];
    for (msg, stage, reply, reason) in cases {
        let heard = send(&relay, &msg).await;
        assert_eq!((heard.stage, heard.reply()), (stage, reply.to_string()));
        let expected = if reply.starts_with('4') {
            "tempfail"
        } else {
            "reject"
        };
        assert_eq!(relay.last_verdict(), verdict(expected, reason), "{reply}");
        assert_eq!(relay.last()["text"], reply);
    }
}

#[tokio::test]
async fn a_server_may_mail_admins_as_itself_and_not_outsiders() {
    let relay = new_relay("[dkim]\n");
    let mut msg = server(
        Some("srv.tugraz.at"),
        "<root@srv.tugraz.at>",
        "root@srv.tugraz.at",
    );
    msg.rcpts = vec!["<admin@tugraz.at>", "<someone@gmail.com>"];
    let heard = send(&relay, &msg).await;
    assert_eq!(
        heard.signatures(),
        2,
        "status mail from a protected domain is signed"
    );
    assert_eq!(
        heard.rcpts[1],
        Answer::Refuse(Reply {
            code: "550",
            status: "5.7.1",
            text: "<someone@gmail.com>: unauthenticated clients may send only to recipients in the protected domains; authenticate to send elsewhere".into()
        })
    );
    let records = relay.records();
    assert_eq!(
        (&records[0]["reason"], &records[0]["rcpt_domains"]),
        (
            &Value::from("recipient_not_protected"),
            &serde_json::json!(["gmail.com"])
        )
    );
    assert_eq!(
        (&records[1]["verdict"], &records[1]["rcpt_count"]),
        (&Value::from("accept"), &Value::from(1))
    );
    // A status sender is open to every server, even to one without a name that suffices.
    let heard = send(
        &relay,
        &server(
            Some("srv.tugraz.at"),
            "<monitoring@tugraz.at>",
            "monitoring@tugraz.at",
        ),
    )
    .await;
    assert_eq!(heard.signatures(), 2);
}

#[tokio::test]
async fn mail_outside_the_protected_domains_or_without_signing_is_accepted_unsigned() {
    let relay = new_relay("");
    let heard = send(
        &relay,
        &from("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
    )
    .await;
    assert_eq!((heard.stage, heard.signatures()), ("headers", 0));
    assert_eq!(relay.last()["text"], "DKIM signing not configured");
    // Where foreign senders are allowed, their mail leaves unsigned.
    let relay = relay_from(
        &(BASE.replace("[senders]\n", "[senders]\nallow_foreign = true\n") + "[dkim]\n"),
        OnError::Tempfail,
    );
    let heard = send(
        &relay,
        &from("alice", "<alice@gmail.com>", "alice@gmail.com"),
    )
    .await;
    assert_eq!((heard.stage, heard.signatures()), ("headers", 0));
    assert_eq!(relay.last()["text"], "From outside the protected domains");
}

#[tokio::test]
async fn no_valid_key_tempfails_or_accepts_unsigned_as_configured() {
    let relay = new_relay("[dkim]\n");
    // tu-graz.ac.at has no selector in this schedule.
    assert_eq!(
        refused(
            &relay,
            &from("alice", "<alice@tu-graz.ac.at>", "alice@tu-graz.ac.at"),
        )
        .await,
        (
            "headers",
            "451 4.3.0 temporary local problem (no signing key available), try again later".into()
        )
    );
    assert_eq!(relay.last_verdict(), verdict("tempfail", "no_dkim_key"));
    let relay = new_relay("[dkim]\nwithout_key = \"accept\"\n");
    let heard = send(
        &relay,
        &from("alice", "<alice@tu-graz.ac.at>", "alice@tu-graz.ac.at"),
    )
    .await;
    assert_eq!(heard.signatures(), 0);
    assert_eq!(
        relay.last()["text"],
        "no valid DKIM key; accepted unsigned by configuration"
    );
}

const LIMITS: &str = "[limits]\ntimezone = \"UTC\"\ncontact = \"helpdesk@tugraz.at\"\n";

#[tokio::test]
async fn every_sending_limit_refuses_at_its_stage_with_its_reply() {
    // Messages per hour (GCRA: 2, then one per 30 minutes).
    let relay = new_relay(&format!(
        "{LIMITS}[limits.external]\nmessages_per_hour = 2\n"
    ));
    let alice = from("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    for _ in 0..2 {
        assert_eq!(send(&relay, &alice).await.stage, "headers");
    }
    assert_eq!(
        refused(&relay, &alice).await,
        (
            "mail",
            "450 4.7.1 alice: limit of 2 messages per hour reached; try again in 1800 s".into()
        )
    );
    assert_eq!(
        relay.last_verdict(),
        verdict("tempfail", "limit_messages_per_hour")
    );
    assert_eq!(relay.last()["limits"]["messages_per_hour"], 2);
    relay.now.fetch_add(1_800_000, Ordering::SeqCst);
    assert_eq!(
        send(&relay, &alice).await.stage,
        "headers",
        "the rate slides"
    );
    assert!(
        relay
            .metrics()
            .contains("relayguard_limit_hits_total{limit=\"messages_per_hour\"} 1")
    );

    // Recipients per message: the third recipient alone is refused.
    let relay = new_relay(&format!(
        "{LIMITS}[limits.external]\nrecipients_per_message = 2\n"
    ));
    let mut three = alice.clone();
    three.rcpts = vec!["<a@example.org>", "<b@example.org>", "<c@example.org>"];
    let heard = send(&relay, &three).await;
    assert_eq!(heard.stage, "headers", "the message goes on to two");
    assert_eq!(
        heard.rcpts[2],
        Answer::Refuse(Reply {
            code: "452",
            status: "4.5.3",
            text: "too many recipients: at most 2 per message".into()
        })
    );
    assert_eq!(relay.records()[0]["reason"], "limit_recipients_per_message");
    assert_eq!(relay.last()["rcpt_count"], 2);

    // Messages per connection: the third MAIL on one connection.
    let relay = new_relay(&format!(
        "{LIMITS}[limits.internal]\nmessages_per_connection = 2\n"
    ));
    let mut session = Session::default();
    session.conn.addr = Some(CAMPUS.parse().unwrap());
    let mut inside = alice.clone();
    inside.client = CAMPUS;
    for _ in 0..2 {
        assert_eq!(
            send_on(&relay, &mut session, &inside).await.stage,
            "headers"
        );
    }
    assert_eq!(
        send_on(&relay, &mut session, &inside).await.reply(),
        "450 4.7.1 alice: limit of 2 messages per connection reached; send the rest on a new connection"
    );

    // Connections per second, and authentications per night, counted once per connection.
    let relay = new_relay(&format!(
        "{LIMITS}[limits.internal]\nconnections_per_second = 2\n[limits.external]\nauthentications_per_window = 2\n"
    ));
    for _ in 0..2 {
        assert_eq!(send(&relay, &inside).await.stage, "headers");
    }
    assert_eq!(
        send(&relay, &inside).await.reply(),
        "450 4.7.1 alice: limit of 2 connections per second reached; try again in 1 s"
    );
    for _ in 0..2 {
        assert_eq!(send(&relay, &alice).await.stage, "headers");
    }
    let mut session = Session::default();
    session.conn.addr = Some(OUTSIDE.parse().unwrap());
    assert_eq!(
        send_on(&relay, &mut session, &alice).await.reply(),
        "450 4.7.1 alice: limit of 2 authentications per night reached; try again after the watched window ends"
    );
}

#[tokio::test]
async fn a_locked_account_sends_nothing_and_spoofing_locks_it() {
    let relay = new_relay(&format!(
        "{LIMITS}[limits.lock]\nownership_refusals = 2\nownership_window_minutes = 10\n"
    ));
    let spoof = from("mallory", "<mallory@tugraz.at>", "rector@tugraz.at");
    for _ in 0..2 {
        assert_eq!(send(&relay, &spoof).await.stage, "headers");
    }
    let lock = relay.locks.0.lock().unwrap().get("mallory").cloned();
    assert_eq!(
        lock.map(|l| (l.since, l.reason)),
        Some((
            "2026-11-28T19:00:00Z".into(),
            "2 sender-ownership refusals within 10 minutes".into()
        ))
    );
    assert_eq!(
        refused(&relay, &from("mallory", "<mallory@tugraz.at>", "mallory@tugraz.at"),).await,
        ("mail", "550 5.7.1 account mallory is locked (2 sender-ownership refusals within 10 minutes); contact helpdesk@tugraz.at".into())
    );
    assert_eq!(relay.last_verdict(), verdict("lock", "account_locked"));
}

#[tokio::test]
async fn a_counter_store_that_is_down_tempfails_when_fail_closed() {
    let mut relay = new_relay(&format!(
        "{LIMITS}[limits.external]\nmessages_per_hour = 50\n"
    ));
    relay.env.counters = Some(Arc::new(DownStore));
    assert_eq!(
        refused(&relay, &from("alice", "<alice@tugraz.at>", "alice@tugraz.at"),).await,
        ("mail", "451 4.3.0 temporary local problem (sending limits cannot be checked now), try again later".into())
    );
    assert_eq!(
        relay.last_verdict(),
        verdict("tempfail", "store_unavailable")
    );
    // The client hears a plain reason; the audit record keeps the cause.
    assert_eq!(
        relay.last()["text"],
        "counter store unavailable: Connection refused"
    );
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_and_mail_flows() {
    use relayguard::limits::store::{Counters, OnFailure, RedisConfig, RedisStore};
    let mut relay = new_relay(&format!(
        "{LIMITS}[limits.external]\nmessages_per_hour = 2\n"
    ));
    // Nothing listens on port 1: every call fails at once, and counts locally.
    let redis = RedisStore::new(
        RedisConfig {
            url: "redis://127.0.0.1:1/0".into(),
            prefix: "rg:".into(),
            timeout: std::time::Duration::from_millis(50),
            on_failure: OnFailure::FailOpen,
            sentinels: vec![],
            master_name: String::new(),
        },
        Default::default(),
    )
    .unwrap();
    relay.env.counters = Some(Arc::new(Counters::redis(Arc::new(redis))));
    let alice = from("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    for _ in 0..2 {
        assert_eq!(send(&relay, &alice).await.stage, "headers");
    }
    // The local count still limits this host.
    assert_eq!(send(&relay, &alice).await.stage, "mail");
}

#[tokio::test]
async fn an_unwritable_audit_log_tempfails_or_carries_on_as_configured() {
    for (on_error, accepted) in [(OnError::Tempfail, false), (OnError::Continue, true)] {
        let relay = relay_with("[dkim]\n", on_error);
        relay.audit.broken.store(true, Ordering::SeqCst);
        let heard = send(
            &relay,
            &from("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
        )
        .await;
        if accepted {
            assert_eq!(heard.signatures(), 2);
            assert!(
                relay
                    .metrics()
                    .contains("relayguard_messages_total{verdict=\"accept\",reason=\"ok\"} 1")
            );
        } else {
            assert_eq!(
                heard.reply(),
                "451 4.3.0 temporary local problem (audit log unwritable), try again later"
            );
            assert!(relay.metrics().contains(
                "relayguard_messages_total{verdict=\"tempfail\",reason=\"audit_unwritable\"} 1"
            ));
        }
        assert!(
            relay
                .metrics()
                .contains("relayguard_audit_failures_total 1")
        );
    }
}

#[tokio::test]
async fn an_ownership_source_that_cannot_answer_tempfails_never_guesses() {
    let relay = new_relay("[dkim]\n");
    let mut snapshot = Snapshot {
        policy: relay.env.snapshot().policy.clone(),
        ownership: Arc::new(Sources::only(
            Arc::new(DownSource),
            relay.env.snapshot().policy.protected.clone(),
        )),
        keys: None,
        limits: None,
        rollout: Default::default(),
        abuse: None,
    };
    snapshot.policy.allow_foreign_senders = false;
    relay.env.snapshot.store(Arc::new(snapshot));
    assert_eq!(
        refused(&relay, &from("alice", "<alice@tugraz.at>", "alice@tugraz.at"),).await,
        ("mail", "451 4.3.0 temporary local problem (sender ownership cannot be checked now), try again later".into())
    );
    assert_eq!(
        relay.last_verdict(),
        verdict("tempfail", "ownership_unavailable")
    );
}

#[tokio::test]
async fn while_draining_new_messages_hear_421() {
    let relay = new_relay("[dkim]\n");
    relay.env.flight.begin_drain();
    assert_eq!(
        refused(
            &relay,
            &from("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
        )
        .await,
        (
            "mail",
            "421 4.3.2 relayguard is shutting down; try again later".into()
        )
    );
    assert_eq!(relay.last_verdict(), verdict("tempfail", "shutting_down"));
    assert_eq!(relay.env.flight.count(), 0, "nothing left in flight");
}

#[tokio::test]
async fn the_pipeline_runs_its_checks_in_the_documented_order() {
    assert_eq!(
        Pipeline::standard().names(),
        [
            "draining",
            "account lock",
            "masquerade",
            "envelope sender",
            "recipients",
            "sending limits",
            "header senders",
            "stolen-account signals",
            "signing"
        ]
    );
}

const MASQUERADE: &str = "[senders.masquerade.\"robot-web\"]\naddress = \"noreply-web@iaik.tugraz.at\"\nfrom = [\"root@*\", \"www-data@*\", \"*@localhost\", \"<>\"]\ndisplay_name = \"IAIK web server\"\n\n[dkim]\n";

fn robot(mail_from: &'static str, from: &'static str) -> Msg {
    from_login("robot-web", mail_from, from)
}

fn from_login(login: &'static str, mail_from: &'static str, from: &'static str) -> Msg {
    Msg {
        login: Some(login),
        ..self::from("x", mail_from, from)
    }
}

/// The message as the recipient gets it: the changes made, the signatures on top.
fn delivered(heard: &Heard, raw: &str) -> Vec<u8> {
    let Answer::Accept(accepted) = &heard.answer else {
        panic!("not accepted: {heard:?}");
    };
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    for change in &accepted.modifications {
        match change {
            Modification::ChangeHeader { name, value, .. } => {
                let at = lines
                    .iter()
                    .position(|l| {
                        l.to_ascii_lowercase()
                            .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                    })
                    .unwrap();
                lines[at] = format!("{name}: {value}");
            }
            Modification::AddHeader { name, value } => lines.push(format!("{name}: {value}")),
            Modification::ChangeSender(_) => {}
        }
    }
    let signatures: Vec<String> = accepted
        .signatures
        .iter()
        .map(|s| s.value.clone())
        .collect();
    common::dkim::signed_message(
        &signatures,
        format!("{}\r\n\r\n{body}", lines.join("\r\n")).as_bytes(),
    )
}

#[tokio::test]
async fn a_robots_automatic_mail_is_masqueraded_then_signed_as_its_address() {
    let relay = new_relay(MASQUERADE);
    let msg = robot(
        "<root@web1.iaik.tugraz.at>",
        "root@web1.iaik.tugraz.at (Cron Daemon)",
    );
    let heard = send(&relay, &msg).await;
    assert_eq!(heard.signatures(), 2, "{heard:?}");
    let Answer::Accept(accepted) = &heard.answer else {
        unreachable!()
    };
    assert_eq!(
        accepted.modifications,
        [
            Modification::ChangeSender("<noreply-web@iaik.tugraz.at>".into()),
            Modification::ChangeHeader {
                name: "From".into(),
                index: 1,
                value: "\"Cron Daemon\" <noreply-web@iaik.tugraz.at>".into()
            },
            Modification::AddHeader {
                name: "X-Original-From".into(),
                value: "<root@web1.iaik.tugraz.at>".into()
            },
        ]
    );
    // The signatures cover the rewritten From: an independent verifier agrees.
    let raw = "From: root@web1.iaik.tugraz.at (Cron Daemon)\r\nTo: friend@example.org\r\nSubject: x\r\n\r\nhello\r\n";
    let message = delivered(&heard, raw);
    assert_eq!(
        common::dkim::verify_mail_auth(
            &message,
            &common::dkim::records(),
            common::dkim::At::ms(relay.now.load(Ordering::SeqCst))
        )
        .await,
        Ok(2),
        "both signatures verify over the rewritten From"
    );
    let record = relay.last();
    assert_eq!(
        (
            &record["mail_from"],
            &record["header_from"],
            &record["masqueraded"]
        ),
        (
            &Value::from("<noreply-web@iaik.tugraz.at>"),
            &Value::from("noreply-web@iaik.tugraz.at"),
            &serde_json::json!({"mail_from": "<root@web1.iaik.tugraz.at>", "from": "root@web1.iaik.tugraz.at", "sender": null})
        )
    );
    assert!(relay.metrics().contains("relayguard_masqueraded_total 1"));

    // The null sender and an unnamed From get the configured display name.
    let heard = send(&relay, &robot("<>", "www-data@localhost")).await;
    let Answer::Accept(accepted) = &heard.answer else {
        panic!("{heard:?}")
    };
    assert_eq!(heard.signatures(), 2);
    assert!(
        accepted
            .modifications
            .contains(&Modification::ChangeHeader {
                name: "From".into(),
                index: 1,
                value: "\"IAIK web server\" <noreply-web@iaik.tugraz.at>".into()
            })
    );
}

#[tokio::test]
async fn only_a_robots_automatic_forms_are_masqueraded_the_rest_is_refused_as_before() {
    let relay = new_relay(MASQUERADE);
    // The robot's own address needs no rewriting; someone else's is refused.
    let heard = send(
        &relay,
        &robot("<noreply-web@iaik.tugraz.at>", "noreply-web@iaik.tugraz.at"),
    )
    .await;
    assert_eq!(heard.signatures(), 2);
    let Answer::Accept(accepted) = &heard.answer else {
        unreachable!()
    };
    assert!(accepted.modifications.is_empty());
    assert_eq!(
        refused(&relay, &robot("<root@web1>", "Rector <rector@tugraz.at>")).await,
        (
            "headers",
            "550 5.7.1 <rector@tugraz.at> is not owned by authenticated user robot-web".into()
        )
    );
    // A person is never masqueraded.
    assert_eq!(
        refused(&relay, &from_login("alice", "<root@web1>", "root@web1"))
            .await
            .0,
        "mail"
    );
    // A header that smuggles a line break is not rewritten, and not sent on.
    let mut injected = robot("<root@web1>", "");
    injected.headers = vec![("From", b"root@web1\r\nBcc: victim@example.org")];
    let (stage, reply) = refused(&relay, &injected).await;
    assert_eq!(stage, "headers");
    assert!(reply.contains("ambiguous"), "{reply}");
    // An MTA that does not allow changes: refused as before the masquerade existed.
    let msg = robot("<root@web1>", "root@web1");
    let mut session = session_of(&msg);
    session.conn.can_modify = false;
    let heard = send_on(&relay, &mut session, &msg).await;
    assert_eq!(heard.stage, "mail");
    assert!(
        heard
            .reply()
            .contains("<root@web1> is outside the protected domains"),
        "{heard:?}"
    );
}

#[tokio::test]
async fn masquerading_without_signing_waits_for_end_of_message_to_make_its_changes() {
    let relay = new_relay(&MASQUERADE.replace("[dkim]\n", ""));
    let heard = send(&relay, &robot("<root@web1>", "root@web1")).await;
    assert_eq!(heard.stage, "message", "the changes need end of message");
    let Answer::Accept(accepted) = &heard.answer else {
        panic!("{heard:?}")
    };
    assert_eq!(accepted.modifications.len(), 3);
    assert_eq!(relay.last()["text"], "DKIM signing not configured");
}

const MONITOR: &str = "[rollout]\nmode = \"monitor\"\n\n[dkim]\n";

#[tokio::test]
async fn monitor_mode_records_a_refusal_and_passes_the_message_unsigned_saying_why() {
    let relay = new_relay(MONITOR);
    let heard = send(
        &relay,
        &from(
            "mallory",
            "<mallory@tugraz.at>",
            "Rector <rector@tugraz.at>",
        ),
    )
    .await;
    let Answer::Accept(accepted) = &heard.answer else {
        panic!("{heard:?}")
    };
    assert_eq!(heard.stage, "message");
    assert!(accepted.signatures.is_empty(), "never sign a spoof");
    assert_eq!(
        accepted.modifications,
        [Modification::AddHeader {
            name: "X-Relayguard-Would-Refuse".into(),
            value: "sender_not_owned".into()
        }]
    );
    let record = relay.last();
    assert_eq!(
        (&record["verdict"], &record["reason"], &record["monitor"]),
        (
            &Value::from("reject"),
            &Value::from("sender_not_owned"),
            &Value::from(true)
        )
    );
    assert!(
        relay
            .metrics()
            .contains("relayguard_would_refuse_total{reason=\"sender_not_owned\"} 1")
    );
    // The legitimate message is signed as in enforce mode.
    let heard = send(
        &relay,
        &from("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
    )
    .await;
    assert_eq!(heard.signatures(), 2);
    // An internal fault is not a refusal to record: it is sent.
    assert_eq!(
        refused(
            &relay,
            &from("alice", "<alice@tu-graz.ac.at>", "alice@tu-graz.ac.at")
        )
        .await
        .1,
        "451 4.3.0 temporary local problem (no signing key available), try again later"
    );
}

#[tokio::test]
async fn monitor_mode_for_some_logins_and_classes_only() {
    let relay = new_relay(
        "[rollout]\nmonitor_logins = [\"mallory\"]\nwould_refuse_header = \"\"\n\n[dkim]\n",
    );
    let spoof = |login| from_login(login, "<x@tugraz.at>", "rector@tugraz.at");
    let heard = send(&relay, &spoof("mallory")).await;
    let Answer::Accept(accepted) = &heard.answer else {
        panic!("{heard:?}")
    };
    assert!(accepted.modifications.is_empty(), "the header is off");
    assert_eq!(
        send(&relay, &spoof("bob")).await.stage,
        "mail",
        "bob is enforced"
    );

    // A whole class: unauthenticated internal servers.
    let relay = new_relay("[rollout]\nmonitor_classes = [\"internal\"]\n\n[dkim]\n");
    let mut msg = server(
        Some("srv.tugraz.at"),
        "<root@srv.tugraz.at>",
        "root@srv.tugraz.at",
    );
    msg.rcpts = vec!["<admin@tugraz.at>", "<someone@gmail.com>"];
    let heard = send(&relay, &msg).await;
    assert_eq!(
        heard.rcpts,
        [Answer::Continue, Answer::Continue],
        "nothing refused"
    );
    assert_eq!(heard.signatures(), 2, "the message itself is legitimate");
    let records = relay.records();
    assert_eq!(
        (
            &records[0]["reason"],
            &records[0]["monitor"],
            &records[0]["rcpt_domains"]
        ),
        (
            &Value::from("recipient_not_protected"),
            &Value::from(true),
            &serde_json::json!(["gmail.com"])
        )
    );
    // Every recipient refused: the message would not have been accepted, so it is not signed.
    msg.rcpts = vec!["<someone@gmail.com>"];
    let heard = send(&relay, &msg).await;
    let Answer::Accept(accepted) = &heard.answer else {
        panic!("{heard:?}")
    };
    assert!(accepted.signatures.is_empty());
}

#[tokio::test]
async fn limits_and_locks_are_recorded_not_enforced_in_monitor_mode() {
    let relay = new_relay(&format!(
        "{LIMITS}[limits.external]\nmessages_per_hour = 1\n\n[rollout]\nmode = \"monitor\"\n\n[dkim]\n"
    ));
    let alice = from("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    assert_eq!(send(&relay, &alice).await.signatures(), 2);
    let heard = send(&relay, &alice).await;
    assert_eq!(heard.signatures(), 0, "over the limit: passes unsigned");
    assert_eq!(
        relay.last_verdict(),
        verdict("tempfail", "limit_messages_per_hour")
    );
    assert_eq!(relay.last()["monitor"], true);
}

const ABUSE: &str = "[dkim]\n[abuse]\n[abuse.actions]\nexternal = \"lock\"\ninternal = \"log\"\neas = \"tempfail\"\n";

/// alice's message from `client` to a stranger at a domain of its own.
fn stranger_mail(client: &str, n: usize) -> Msg {
    let rcpt: &'static str = Box::leak(format!("<target{n}@victim{n}.example>").into_boxed_str());
    Msg {
        client: Box::leak(client.to_string().into_boxed_str()),
        rcpts: vec![rcpt],
        ..from("alice", "<alice@tugraz.at>", "alice@tugraz.at")
    }
}

#[tokio::test]
async fn a_stolen_account_used_from_many_networks_is_locked_and_says_why() {
    let relay = new_relay(&format!("{LIMITS}{ABUSE}"));
    let mut locked_at = None;
    for n in 0..20 {
        let heard = send(&relay, &stranger_mail(&format!("198.{n}.7.9"), n)).await;
        if heard.stage == "headers" {
            locked_at = Some((n, heard.reply()));
            break;
        }
        assert_eq!(heard.signatures(), 2, "message {n} goes out signed");
        relay.now.fetch_add(60_000, Ordering::SeqCst);
    }
    let (n, reply) = locked_at.expect("locked within 20 messages");
    assert!(n < 10, "locked at message {n}");
    assert!(
        reply.starts_with("550 5.7.1 account alice is locked (unusual sending: networks ")
            && reply.ends_with("; contact helpdesk@tugraz.at"),
        "{reply}"
    );
    assert_eq!(relay.last_verdict(), verdict("lock", "unusual_sending"));
    let record = relay.last();
    assert_eq!(record["abuse"]["action"], "lock");
    assert!(record["abuse"]["signals"]["networks"].as_u64().unwrap() > 4);
    assert!(
        record["abuse"]["fired"]
            .as_str()
            .unwrap()
            .contains("networks")
    );
    let lock = relay.locks.0.lock().unwrap().get("alice").cloned().unwrap();
    assert!(
        lock.reason.starts_with("unusual sending: networks "),
        "{}",
        lock.reason
    );
    // The account stays locked: its next message is refused at MAIL.
    assert_eq!(
        send(
            &relay,
            &from("alice", "<alice@tugraz.at>", "alice@tugraz.at")
        )
        .await
        .stage,
        "mail"
    );
    assert!(
        relay
            .metrics()
            .contains("relayguard_abuse_actions_total{action=\"lock\"} 1")
    );
    assert!(
        relay
            .metrics()
            .contains("relayguard_abuse_signals_total{signal=\"networks\"}")
    );
}

#[tokio::test]
async fn on_campus_the_same_burst_is_logged_and_mail_flows() {
    let relay = new_relay(&format!("{LIMITS}{ABUSE}"));
    let mut logged = 0;
    for n in 0..30 {
        // One campus network, strangers: new recipients and volume.
        let heard = send(&relay, &stranger_mail(CAMPUS, n)).await;
        assert_eq!(heard.signatures(), 2, "message {n}");
        if relay.last()["abuse"]["action"] == "log" {
            logged += 1;
        }
        relay.now.fetch_add(30_000, Ordering::SeqCst);
    }
    assert!(logged > 0, "the burst was logged");
    assert!(relay.locks.0.lock().unwrap().get("alice").is_none());
}

#[tokio::test]
async fn a_tempfail_class_lets_the_message_wait_and_monitor_mode_only_records() {
    let relay = new_relay(&format!(
        "{LIMITS}[[limits.class]]\nname = \"eas\"\nlogins = [\"alice\"]\n{ABUSE}"
    ));
    let mut reply = None;
    for n in 0..20 {
        let heard = send(&relay, &stranger_mail(&format!("198.{n}.7.9"), n)).await;
        if heard.stage == "headers" {
            reply = Some(heard.reply());
            break;
        }
    }
    let reply = reply.expect("tempfailed within 20 messages");
    assert!(
        reply.starts_with("451 4.7.1 unusual sending from account alice (networks "),
        "{reply}"
    );
    assert_eq!(relay.last_verdict(), verdict("tempfail", "unusual_sending"));
    assert!(relay.locks.0.lock().unwrap().get("alice").is_none());

    // Monitor mode: the lock is recorded as it would be, the account stays open.
    let relay = new_relay(&format!("{LIMITS}{ABUSE}[rollout]\nmode = \"monitor\"\n"));
    for n in 0..20 {
        send(&relay, &stranger_mail(&format!("198.{n}.7.9"), n)).await;
    }
    assert!(relay.locks.0.lock().unwrap().get("alice").is_none());
    let would: Vec<Value> = relay
        .records()
        .into_iter()
        .filter(|r| r["monitor"] == true)
        .collect();
    assert!(!would.is_empty());
    assert_eq!(would[0]["reason"], "unusual_sending");
}

/// Students `range` of a new course: campus recipients alice never wrote to.
fn students(range: std::ops::Range<usize>) -> Vec<&'static str> {
    range
        .map(|i| &*Box::leak(format!("<s{i}@student.tugraz.at>").into_boxed_str()))
        .collect()
}

/// A relay with the packaged external limits, abuse actions and `hits` limit hits a day
/// to a lock, where alice has written from home (OUTSIDE) for a week.
async fn teachers_relay(hits: u64) -> Relay {
    let relay = new_relay(&format!(
        "{LIMITS}[limits.external]\nmessages_per_hour = 50\nrecipients_per_message = 20\n\
         [limits.lock]\nlimit_hits_per_day = {hits}\n{ABUSE}"
    ));
    let alice = from("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    for _ in 0..8 {
        assert_eq!(send(&relay, &alice).await.signatures(), 2);
        relay.now.fetch_add(24 * 3_600_000, Ordering::SeqCst);
    }
    relay
}

fn refused_rcpts(heard: &Heard) -> usize {
    heard
        .rcpts
        .iter()
        .filter(|a| matches!(a, Answer::Refuse(_)))
        .count()
}

#[tokio::test]
async fn a_teacher_announcing_a_course_to_150_students_from_home_is_not_locked() {
    // limit_hits_per_day = 2: were every refused recipient a hit, the first message locks.
    // (A minute with hits counts once: the second hit below comes 14 minutes later.)
    let relay = teachers_relay(2).await;
    let mut course = from("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    course.rcpts = students(0..150);
    let heard = send(&relay, &course).await;
    assert_eq!(heard.signatures(), 2, "the message goes to the first 20");
    assert_eq!(refused_rcpts(&heard), 130);
    assert!(
        relay.locks.0.lock().unwrap().get("alice").is_none(),
        "one message that asks too much is one limit hit"
    );
    // She sends the rest in batches of 20, two minutes apart: every one goes out.
    for batch in (20..150).step_by(20) {
        relay.now.fetch_add(120_000, Ordering::SeqCst);
        course.rcpts = students(batch..(batch + 20).min(150));
        let heard = send(&relay, &course).await;
        assert_eq!(heard.signatures(), 2, "batch from {batch}");
        assert_eq!(refused_rcpts(&heard), 0);
    }
    assert!(relay.locks.0.lock().unwrap().get("alice").is_none());
    // A second message over the limit is the day's second hit: that one locks.
    course.rcpts = students(150..180);
    send(&relay, &course).await;
    let lock = relay.locks.0.lock().unwrap().get("alice").cloned();
    assert_eq!(
        lock.map(|l| l.reason),
        Some("limits hit in 2 minutes of a day".into())
    );
}

#[tokio::test]
async fn a_teacher_sending_8_batches_of_20_from_home_is_not_locked() {
    let relay = teachers_relay(50).await;
    let mut course = from("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    for batch in 0..8 {
        course.rcpts = students(batch * 20..batch * 20 + 20);
        let heard = send(&relay, &course).await;
        assert_eq!(heard.signatures(), 2, "batch {batch}");
        assert!(
            relay.last()["abuse"]["action"].is_null(),
            "batch {batch}: {}",
            relay.last()
        );
        relay.now.fetch_add(120_000, Ordering::SeqCst);
    }
    assert!(relay.locks.0.lock().unwrap().get("alice").is_none());
}
