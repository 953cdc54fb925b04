//! Runbook: sending limits enforced per account, shared by relay hosts through Redis,
//! behaviour when Redis dies and returns, and abuse locks.

mod common;

use common::redis::Redis;
use common::{Milter, Txn, config_text, send};
use indymilter_test::Status;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// 2026-11-28T19:00:00Z: inside the watched 18:00-06:00 window (UTC in these tests).
const EVENING_MS: i64 = 1_795_892_400_000;

fn clock(at: &Arc<AtomicI64>) -> relayguard::clock::Clock {
    let at = at.clone();
    Arc::new(move || at.load(Ordering::SeqCst))
}

fn redis_limits(url: &str, on_failure: &str) -> String {
    format!(
        "{}\n[limits]\nstore = \"redis\"\ntimezone = \"UTC\"\ncontact = \"helpdesk@tugraz.at\"\n\n[limits.redis]\nurl = \"{url}\"\nprefix = \"rgtest:\"\ntimeout_ms = 200\non_failure = \"{on_failure}\"\n\n[limits.external]\nmessages_per_hour = 5\nrecipients_per_message = 3\nauthentications_per_window = 100\n",
        config_text("inet:0@127.0.0.1")
    )
}

async fn one_message(milter: &Milter, login: &'static str) -> common::Outcome {
    let mut conn = milter.connect().await;
    let outcome = send(
        &mut conn,
        &Txn::authenticated(login, "<alice@tugraz.at>", "alice@tugraz.at"),
    )
    .await;
    conn.close().await.unwrap();
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_sharing_redis_enforce_one_combined_limit() {
    let redis = Redis::start();
    let now = Arc::new(AtomicI64::new(EVENING_MS));
    let url = redis.url();
    let a = Milter::with_clock(|_| redis_limits(&url, "fail_open"), Some(clock(&now))).await;
    let b = Milter::with_clock(|_| redis_limits(&url, "fail_open"), Some(clock(&now))).await;
    for i in 0..5 {
        let relay = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            one_message(relay, "alice").await.status,
            Status::Accept,
            "message {i}"
        );
    }
    let sixth = one_message(&b, "alice").await;
    assert_eq!(sixth.stage, "mail");
    assert_eq!(
        sixth.reply().as_deref(),
        Some("450 4.7.1 alice: limit of 5 messages per hour reached; try again in 720 s")
    );
    // Another login is not affected; and the window slides: 12 minutes later one more.
    assert_eq!(
        one_message_from(&a, "bob", "<bob@tugraz.at>", "bob@tugraz.at")
            .await
            .status,
        Status::Accept
    );
    now.fetch_add(720_000, Ordering::SeqCst);
    assert_eq!(one_message(&a, "alice").await.status, Status::Accept);
    assert!(one_message(&b, "alice").await.reply().is_some());
    // Every key has a TTL and the prefix.
    let keys = redis.cli(&["--raw", "KEYS", "*"]).unwrap();
    assert!(!keys.is_empty());
    for key in keys.lines() {
        assert!(key.starts_with("rgtest:"), "{key}");
        let ttl: i64 = redis.cli(&["PTTL", key]).unwrap().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL");
    }
    // Both refusals happened on relay b.
    assert!(
        b.service
            .metrics_text()
            .contains("relayguard_limit_hits_total{limit=\"messages_per_hour\"} 2")
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_over_the_limit_get_452_one_by_one() {
    let redis = Redis::start();
    let url = redis.url();
    let milter = Milter::with_config(|_| redis_limits(&url, "fail_open")).await;
    let mut conn = milter.connect().await;
    let mut txn = Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    txn.rcpts = vec![
        "<a@example.org>",
        "<b@example.org>",
        "<c@example.org>",
        "<d@example.org>",
    ];
    let outcome = send(&mut conn, &txn).await;
    // The fourth recipient alone is refused; the message goes on to the first three.
    assert_eq!(outcome.stage, "rcpt-partial", "{outcome:?}");
    assert_eq!(
        outcome.reply().as_deref(),
        Some("452 4.5.3 too many recipients: at most 3 per message")
    );
    conn.close().await.unwrap();
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_and_nothing_is_double_counted() {
    let mut redis = Redis::start();
    let now = Arc::new(AtomicI64::new(EVENING_MS));
    let url = redis.url();
    let milter = Milter::with_clock(|_| redis_limits(&url, "fail_open"), Some(clock(&now))).await;
    let key = "rgtest:auth:alice:2026-11-28";
    for _ in 0..3 {
        assert_eq!(one_message(&milter, "alice").await.status, Status::Accept);
    }
    assert_eq!(redis.cli(&["GET", key]).as_deref(), Some("3"));

    // Redis dies: mail still flows, counted locally, and the errors are counted.
    redis.stop();
    for _ in 0..2 {
        assert_eq!(one_message(&milter, "alice").await.status, Status::Accept);
    }
    assert!(
        !milter
            .service
            .metrics_text()
            .contains("relayguard_redis_errors_total 0")
    );

    // Redis returns with its data: the outage's local counts are not replayed into it.
    redis.restart();
    let mut tries = 0;
    while redis.cli(&["GET", key]).as_deref() == Some("3") {
        assert!(tries < 50, "relayguard never reached Redis again");
        tries += 1;
        assert_eq!(one_message(&milter, "alice").await.status, Status::Accept);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(redis.cli(&["GET", key]).as_deref(), Some("4"));
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_when_configured() {
    let mut redis = Redis::start();
    let url = redis.url();
    let milter = Milter::with_config(|_| redis_limits(&url, "fail_closed")).await;
    assert_eq!(one_message(&milter, "alice").await.status, Status::Accept);
    redis.stop();
    let outcome = one_message(&milter, "alice").await;
    let reply = outcome.reply().unwrap_or_default();
    assert_eq!(
        reply,
        "451 4.3.0 temporary local problem (sending limits cannot be checked now), try again later",
        "the client learns nothing of Redis"
    );
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofing_locks_the_account_until_unlocked() {
    let milter = Milter::with_config(|_| {
        format!(
            "{}\n[limits]\ncontact = \"helpdesk@tugraz.at\"\nlock_file = \"locks.json\"\n\n[limits.lock]\nownership_refusals = 2\nownership_window_minutes = 10\n",
            config_text("inet:0@127.0.0.1")
        )
    })
    .await;
    for _ in 0..2 {
        let outcome = one_message_from(
            &milter,
            "mallory",
            "<mallory@tugraz.at>",
            "rector@tugraz.at",
        )
        .await;
        assert!(
            outcome
                .reply()
                .unwrap()
                .contains("is not owned by authenticated user mallory")
        );
    }
    // Even mail mallory may send is refused now.
    let locked = one_message_from(
        &milter,
        "mallory",
        "<mallory@tugraz.at>",
        "mallory@tugraz.at",
    )
    .await;
    assert_eq!(locked.stage, "mail");
    assert_eq!(
        locked.reply().as_deref(),
        Some(
            "550 5.7.1 account mallory is locked (2 sender-ownership refusals within 10 minutes); contact helpdesk@tugraz.at"
        )
    );
    // The lock survives in the lock file, and the operator lifts it.
    let config = milter.file("relayguard.toml");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_relayguard"))
            .arg("accounts")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, list) = cli(&["list"]);
    assert!(ok && list.starts_with("mallory\tlocked since "), "{list}");
    assert_eq!(
        cli(&["unlock", "mallory"]),
        (true, "mallory unlocked\n".into())
    );
    let outcome = one_message_from(
        &milter,
        "mallory",
        "<mallory@tugraz.at>",
        "mallory@tugraz.at",
    )
    .await;
    assert_eq!(outcome.status, Status::Accept);
    // And locks by hand.
    assert!(cli(&["lock", "alice", "--reason", "phished"]).0);
    let outcome = one_message_from(&milter, "alice", "<alice@tugraz.at>", "alice@tugraz.at").await;
    assert!(
        outcome
            .reply()
            .unwrap()
            .contains("account alice is locked (phished)")
    );
    milter.stop().await.unwrap();
}

async fn one_message_from(
    milter: &Milter,
    login: &'static str,
    mail_from: &'static str,
    from: &'static str,
) -> common::Outcome {
    let mut conn = milter.connect().await;
    let outcome = send(&mut conn, &Txn::authenticated(login, mail_from, from)).await;
    conn.close().await.unwrap();
    outcome
}
