//! Runbook for developers: the transaction pipeline decides in memory. Every path a message
//! can take, with no socket, no file and no Redis: the policy from configuration text, the
//! sender map and keys from memory, counters in memory, fake lock store, audit log and
//! ownership source, and a pinned clock. What each test checks is what the MTA would hear,
//! the audit record and the metrics.

use relayguard::BoxFuture;
use relayguard::audit::Record;
use relayguard::audit::writer::{AuditSink, OnError};
use relayguard::config::Config;
use relayguard::dkim::keys;
use relayguard::dkim::schedule::Schedule;
use relayguard::dkim::signer::KeySet;
use relayguard::limits::locks::{Lock, LockStore};
use relayguard::limits::rate::{Gcra, Rate};
use relayguard::limits::store::{CounterStore, MemoryStore, StoreDown};
use relayguard::metrics::Metrics;
use relayguard::policy::address::Address;
use relayguard::policy::senders::{MapSource, Ownership, OwnershipSource, SenderMap, SourceDown};
use relayguard::session::decision::{Answer, Reply};
use relayguard::session::flight::Flight;
use relayguard::session::{Env, Pipeline, Session, Snapshot};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// 2026-11-28T19:00:00Z: inside the watched 18:00-06:00 night (UTC here).
const T0_MS: i64 = 1_795_892_400_000;
const OUTSIDE: &str = "203.0.113.7";
const CAMPUS: &str = "129.27.3.4";
const MAP: &str =
    "alice@tugraz.at alice\noffice@tugraz.at alice, bob\nwebform@tugraz.at robot-web\n";
const SELECTORS: &str = r#"
[[selector]]
domain = "tugraz.at"
name = "rsa-a"
algorithm = "rsa-sha256"
key = "tugraz.at.rsa-a.pem"
publish = 2025-12-01T00:00:00Z
active_from = 2026-01-01T00:00:00Z

[[selector]]
domain = "tugraz.at"
name = "ed-a"
algorithm = "ed25519-sha256"
key = "tugraz.at.ed-a.pem"
publish = 2025-12-01T00:00:00Z
active_from = 2026-01-01T00:00:00Z
"#;

/// An audit log in memory that can be made to fail, as a full disk does.
struct MemoryAudit {
    records: Mutex<Vec<Value>>,
    broken: AtomicBool,
    on_error: OnError,
}

impl AuditSink for MemoryAudit {
    fn write(&self, record: &Record<'_>) -> std::io::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("No space left on device"));
        }
        let value = serde_json::to_value(record).unwrap();
        self.records.lock().unwrap().push(value);
        Ok(())
    }

    fn on_error(&self) -> OnError {
        self.on_error
    }

    fn full_recipients(&self) -> bool {
        false
    }
}

/// Account locks in memory.
#[derive(Default)]
struct MemoryLocks(Mutex<BTreeMap<String, Lock>>);

impl LockStore for MemoryLocks {
    fn get<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<Option<Lock>, String>> {
        let lock = self.0.lock().unwrap().get(login).cloned();
        Box::pin(async move { Ok(lock) })
    }

    fn list(&self) -> BoxFuture<'_, Result<BTreeMap<String, Lock>, String>> {
        let all = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(all) })
    }

    fn lock<'a>(&'a self, login: &'a str, lock: Lock) -> BoxFuture<'a, Result<(), String>> {
        self.0.lock().unwrap().insert(login.to_string(), lock);
        Box::pin(async { Ok(()) })
    }

    fn unlock<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        let was = self.0.lock().unwrap().remove(login).is_some();
        Box::pin(async move { Ok(was) })
    }
}

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
    fn ownership<'a>(
        &'a self,
        _: &'a str,
        _: &'a Address,
    ) -> BoxFuture<'a, Result<Ownership, SourceDown>> {
        Box::pin(async { Err(SourceDown("ldap://directory: timeout".into())) })
    }
}

/// A relay assembled in memory.
struct Relay {
    env: Env,
    pipeline: Pipeline,
    audit: Arc<MemoryAudit>,
    locks: Arc<MemoryLocks>,
    now: Arc<AtomicI64>,
}

/// Builds a relay from configuration text (sections beyond the standard ones), with the
/// standard sender map and, when `[dkim]` is in the text, the two tugraz.at keys.
fn new_relay(extra: &str) -> Relay {
    relay_with(extra, OnError::Tempfail)
}

fn relay_with(extra: &str, on_error: OnError) -> Relay {
    relay_from(&format!("{BASE}{extra}"), on_error)
}

/// The standard sections of every relay here.
const BASE: &str = "[senders]\nrobots = [\"robot-web\"]\n\n[clients]\ninternal_networks = [\"129.27.0.0/16\"]\nstatus_senders = [\"monitoring@tugraz.at\"]\n\n";

fn relay_from(text: &str, on_error: OnError) -> Relay {
    let config = Config::parse(Path::new("/mem/relayguard.toml"), text).expect("config");
    let mut policy = config.policy.clone();
    policy.owners.map =
        Arc::new(SenderMap::parse(Path::new("sender_login_maps"), MAP, &policy.logins).unwrap());
    let now = Arc::new(AtomicI64::new(T0_MS));
    let keys = config.dkim.as_ref().map(|dkim| {
        let schedule =
            Schedule::parse(Path::new("selectors.toml"), SELECTORS, Path::new("/mem")).unwrap();
        KeySet::build(schedule, dkim.signing.clone(), T0_MS / 1000, |selector| {
            let pem: &[u8] = match selector.name.as_str() {
                "rsa-a" => include_bytes!("fixtures/keys/tugraz.at.rsa-a.pem"),
                _ => include_bytes!("fixtures/keys/tugraz.at.ed-a.pem"),
            };
            keys::parse(&selector.key, pem, selector.algorithm)
        })
        .unwrap()
    });
    let audit = Arc::new(MemoryAudit {
        records: Mutex::default(),
        broken: AtomicBool::new(false),
        on_error,
    });
    let locks = Arc::new(MemoryLocks::default());
    let limits = config.limits.is_some();
    let clock = now.clone();
    let env = Env {
        snapshot: arc_swap::ArcSwap::from_pointee(Snapshot {
            ownership: Arc::new(MapSource::new(
                policy.owners.clone(),
                policy.protected.clone(),
            )),
            policy,
            keys,
            limits: config.limits.clone(),
        }),
        counters: limits.then(|| Arc::new(MemoryStore::default()) as Arc<dyn CounterStore>),
        locks: limits.then(|| locks.clone() as Arc<dyn LockStore>),
        audit: Some(audit.clone()),
        metrics: Arc::new(Metrics::default()),
        clock: Arc::new(move || clock.load(Ordering::SeqCst)),
        host: "relay1".into(),
        flight: Flight::default(),
    };
    Relay {
        env,
        pipeline: Pipeline::standard(),
        audit,
        locks,
        now,
    }
}

/// One message as an MTA reports it.
#[derive(Clone)]
struct Msg {
    client: &'static str,
    name: Option<&'static str>,
    login: Option<&'static str>,
    mail_from: &'static str,
    rcpts: Vec<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
}

fn from(login: &'static str, mail_from: &'static str, from: &'static str) -> Msg {
    Msg {
        client: OUTSIDE,
        name: None,
        login: Some(login),
        mail_from,
        rcpts: vec!["<friend@example.org>"],
        headers: vec![
            ("From", from),
            ("To", "friend@example.org"),
            ("Subject", "x"),
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
        headers: vec![("From", from), ("Subject", "cron")],
    }
}

/// What the MTA heard at each stage.
#[derive(Debug)]
struct Heard {
    /// The stage that ended the message (`mail`, `rcpt`, `headers`, `message`).
    stage: &'static str,
    /// Its answer.
    answer: Answer,
    /// The answer to each recipient (where the message got that far).
    rcpts: Vec<Answer>,
}

impl Heard {
    fn reply(&self) -> String {
        match &self.answer {
            Answer::Refuse(r) => r.to_string(),
            other => panic!("expected a refusal, got {other:?} at {}", self.stage),
        }
    }

    fn signatures(&self) -> usize {
        match &self.answer {
            Answer::Accept(s) => s.len(),
            other => panic!("expected an acceptance, got {other:?} at {}", self.stage),
        }
    }
}

/// Sends one message on a session as an MTA does.
async fn send_on(relay: &Relay, session: &mut Session, msg: &Msg) -> Heard {
    let (env, pipeline) = (&relay.env, &relay.pipeline);
    let heard = |stage, answer, rcpts| Heard {
        stage,
        answer,
        rcpts,
    };
    let answer = session
        .mail(env, pipeline, msg.mail_from.into(), msg.login, None)
        .await;
    if answer != Answer::Continue {
        return heard("mail", answer, vec![]);
    }
    let mut rcpts = Vec::new();
    for rcpt in &msg.rcpts {
        rcpts.push(
            session
                .rcpt(env, pipeline, rcpt.to_string(), Some("Q1".into()))
                .await,
        );
    }
    if !rcpts.contains(&Answer::Continue) {
        let last = rcpts.last().cloned().unwrap_or(Answer::Continue);
        return heard("rcpt", last, rcpts);
    }
    for (name, value) in &msg.headers {
        session.header(name.as_bytes(), value.as_bytes());
    }
    let answer = session.end_of_headers(env, pipeline, None).await;
    if answer != Answer::Continue {
        return heard("headers", answer, rcpts);
    }
    assert_eq!(session.body(b"hello\r\n"), Answer::Continue);
    let answer = session.end_of_message(env, pipeline).await;
    heard("message", answer, rcpts)
}

/// Sends one message on a new connection.
async fn send(relay: &Relay, msg: &Msg) -> Heard {
    let mut session = Session::default();
    session.conn.addr = Some(msg.client.parse::<IpAddr>().unwrap());
    session.conn.name = format!("[{}]", msg.client);
    session.conn.verified_name = msg.name.map(str::to_string);
    send_on(relay, &mut session, msg).await
}

/// Sends `msg` on a new connection and returns where it was refused and with what reply.
async fn refused(relay: &Relay, msg: &Msg) -> (&'static str, String) {
    let heard = send(relay, msg).await;
    (heard.stage, heard.reply())
}

impl Relay {
    fn records(&self) -> Vec<Value> {
        self.audit.records.lock().unwrap().clone()
    }

    fn last(&self) -> Value {
        self.records().pop().expect("a record")
    }

    /// The last record's verdict and reason.
    fn last_verdict(&self) -> (String, String) {
        let r = self.last();
        (
            r["verdict"].as_str().unwrap().into(),
            r["reason"].as_str().unwrap().into(),
        )
    }

    fn metrics(&self) -> String {
        self.env.metrics.encode()
    }
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
                headers: vec![("Subject", "no from")],
                ..from("alice", "<alice@tugraz.at>", "")
            },
            "headers",
            "550 5.7.1 message has no From header",
            "from_missing",
        ),
        (
            Msg {
                headers: vec![("From", "alice@tugraz.at"), ("FROM", "rector@tugraz.at")],
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
        refused(&relay, &from("alice", "<alice@tu-graz.ac.at>", "alice@tu-graz.ac.at"),).await,
        ("headers", "451 4.3.0 temporary local problem (no valid DKIM key for tu-graz.ac.at), try again later".into())
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
        ("mail", "451 4.3.0 temporary local problem (counter store unavailable: Connection refused), try again later".into())
    );
    assert_eq!(
        relay.last_verdict(),
        verdict("tempfail", "store_unavailable")
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
        ownership: Arc::new(DownSource),
        keys: None,
        limits: None,
    };
    snapshot.policy.allow_foreign_senders = false;
    relay.env.snapshot.store(Arc::new(snapshot));
    assert_eq!(
        refused(&relay, &from("alice", "<alice@tugraz.at>", "alice@tugraz.at"),).await,
        ("mail", "451 4.3.0 temporary local problem (ownership source unavailable: ldap://directory: timeout), try again later".into())
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
            "envelope sender",
            "recipients",
            "sending limits",
            "header senders",
            "signing"
        ]
    );
}
