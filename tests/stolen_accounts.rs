//! Runbook: a stolen account caught by its signals across the cluster. Two relays share one
//! real redis-server; the account's traffic is split between them, each sees too little to
//! act, together they lock it. `relayguard accounts why` shows the signals from Redis.

mod common;

use common::redis::Redis;
use common::{Milter, Txn, config_text, send};
use indymilter_test::Status;

fn relay_config(dir: &std::path::Path, url: &str) -> String {
    std::fs::write(
        dir.join("notify.sh"),
        format!("#!/bin/sh\ncat >> {}/notified.json\n", dir.display()),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", dir.join("notify.sh").to_str().unwrap()])
        .status()
        .unwrap();
    format!(
        "{}\n[limits]\nstore = \"redis\"\ntimezone = \"UTC\"\ncontact = \"helpdesk@tugraz.at\"\n\n[limits.redis]\nurl = \"{url}\"\nprefix = \"rgtest:\"\ntimeout_ms = 500\n\n[abuse]\nnotify_command = [\"{}/notify.sh\"]\n[abuse.actions]\nexternal = \"lock\"\n",
        config_text("inet:0@127.0.0.1"),
        dir.display()
    )
}

/// alice, from `client`, to the one friend she always writes to.
fn from_network(client: &str) -> Txn {
    Txn {
        client: client.parse().unwrap(),
        ..Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at")
    }
}

/// Runs the relayguard command line on a relay's configuration; its standard output.
fn relayguard(relay: &Milter, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relayguard"))
        .args(args)
        .arg("--config")
        .arg(relay.file("relayguard.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_act_on_the_combined_signals_of_one_account() {
    let redis = Redis::start();
    let url = redis.url();
    // The system clock: `accounts why` below reads the same hour of the same Redis.
    let a = Milter::with_config(|dir| relay_config(dir, &url)).await;
    let b = Milter::with_config(|dir| relay_config(dir, &url)).await;

    // Ten networks in an hour, alternating relays: each relay alone would see at most five
    // (1.25 points, below act_at 2); the cluster sees them all, and at the eighth distinct
    // network (8 / 4 = 2 points) the account is locked.
    let mut locked_at = None;
    for i in 0..10u8 {
        let relay = if i % 2 == 0 { &a } else { &b };
        let mut conn = relay.connect().await;
        let outcome = send(&mut conn, &from_network(&format!("198.51.{i}.7"))).await;
        conn.close().await.unwrap();
        if outcome.status != Status::Accept {
            locked_at = Some((i, outcome.reply().unwrap()));
            break;
        }
    }
    let (i, reply) = locked_at.expect("the cluster locked the account");
    assert_eq!(i, 7, "locked at the eighth network");
    assert!(
        reply.starts_with("550 5.7.1 account alice is locked (unusual sending: networks 8 > 4)"),
        "{reply}"
    );
    // Relay b locked it (the eighth message went to b): a refuses alice at MAIL now too.
    let mut conn = a.connect().await;
    let outcome = send(&mut conn, &from_network("198.51.0.7")).await;
    conn.close().await.unwrap();
    assert_eq!(outcome.stage, "mail");

    // One key per login: the prefix, the login as hash tag (one cluster slot), a TTL.
    let keys = redis.cli(&["--raw", "KEYS", "rgtest:abuse:*"]).unwrap();
    assert_eq!(keys.trim(), "rgtest:abuse:{alice}:state");
    let ttl: i64 = redis
        .cli(&["PTTL", "rgtest:abuse:{alice}:state"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl > 0, "the state has no TTL");

    // The security team was told, off the message path.
    let notified = b.file("notified.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !notified.exists() {
        assert!(std::time::Instant::now() < deadline, "notify_command ran");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let told: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&notified).unwrap().trim()).unwrap();
    assert_eq!(told["login"], "alice");
    assert_eq!(told["signals"]["networks"], 8);

    // What an operator sees.
    let text = relayguard(&a, &["accounts", "why", "alice"]);
    assert!(text.contains("networks in the last hour: 8"), "{text}");
    assert!(text.contains("locked since"), "{text}");
    println!("relayguard accounts why alice:\n{text}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_at_once_on_two_relays_lose_no_count() {
    let redis = Redis::start();
    let url = redis.url();
    let a = Milter::with_config(|dir| relay_config(dir, &url)).await;
    let b = Milter::with_config(|dir| relay_config(dir, &url)).await;
    // Twenty connections, ten on each relay, each with one message to a stranger, all at
    // once from alice's usual network: every relay reads, updates and writes the same
    // state, and a write that lost the race reads again.
    let mut conns = Vec::new();
    for i in 0..20usize {
        conns.push((i, if i % 2 == 0 { &a } else { &b }.connect().await));
    }
    let sending: Vec<_> = conns
        .into_iter()
        .map(|(i, mut conn)| {
            let rcpt: &'static str = Box::leak(format!("<t{i}@victim.example>").into_boxed_str());
            let txn = Txn {
                rcpts: vec![rcpt],
                ..from_network("203.0.113.7")
            };
            tokio::spawn(async move {
                let outcome = send(&mut conn, &txn).await;
                conn.close().await.unwrap();
                outcome.status
            })
        })
        .collect();
    for task in sending {
        assert_eq!(task.await.unwrap(), Status::Accept);
    }
    let text = relayguard(&a, &["accounts", "why", "alice"]);
    assert!(
        text.contains("strangers in the last hour: 20 "),
        "every message counted once:\n{text}"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_host_accounts_why_asks_the_running_relay() {
    let port = common::free_port();
    let relay = Milter::with_config(|_| {
        format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[abuse]\n",
            config_text("inet:0@127.0.0.1")
        )
    })
    .await;
    for i in 0..3u8 {
        let mut conn = relay.connect().await;
        let outcome = send(&mut conn, &from_network(&format!("192.0.{i}.7"))).await;
        conn.close().await.unwrap();
        assert_eq!(outcome.status, Status::Accept);
    }
    let text = relayguard(&relay, &["accounts", "why", "Alice"]);
    assert!(text.starts_with("alice\n"), "{text}");
    assert!(text.contains("networks in the last hour: 3"), "{text}");
    assert!(
        text.contains("score 0 (classes act at 2): no signal above its threshold"),
        "{text}"
    );
    // explain shows them too.
    let text = relayguard(
        &relay,
        &[
            "explain",
            "--login",
            "alice",
            "--client",
            "192.0.9.7",
            "--mail-from",
            "<alice@tugraz.at>",
            "--rcpt",
            "<friend@example.org>",
        ],
    );
    assert!(
        text.contains("stolen-account signals of alice\n  networks in the last hour: 3"),
        "{text}"
    );
    relay.stop().await.unwrap();
}
