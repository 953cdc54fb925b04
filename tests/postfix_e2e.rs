//! Runbook: a real Postfix with SASL submission, relayguard on a unix socket as its milter,
//! relaying to a local sink. What owners, spoofers and unauthenticated clients see.

mod common;

use common::Milter;
use common::postfix::Postfix;
use common::smtp::{Smtp, submit};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;

/// An internal server named server.tugraz.at (common::postfix::HOSTS).
const INTERNAL: &str = "127.0.0.2";
const EXTERNAL: &str = "127.0.0.3";
/// An internal server named srv1.iaik.tugraz.at.
const SRV1: &str = "127.0.0.4";
/// An internal address without a name in DNS.
const NAMELESS: &str = "127.0.0.5";

fn message(from: &str, to: &str, id: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: relayguard e2e {id}\r\nMessage-ID: <{id}@e2e.tugraz.test>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0100\r\n\r\nHello from {id}.\r\n"
    )
}

async fn session(postfix: &Postfix, local: &str, login: Option<&str>) -> Smtp {
    let mut smtp = Smtp::connect(postfix.submit, local.parse::<IpAddr>().unwrap()).await;
    if let Some(login) = login {
        let reply = smtp.auth(login, "secret").await;
        assert_eq!(reply.code, 235, "AUTH as {login}: {reply:?}");
    }
    smtp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_end_to_end() {
    common::postfix::require_postfix();
    // relayguard listens on a unix socket that Postfix (user postfix, group postfix) may use.
    let milter = Milter::with_config(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!(
            "[milter]\nsocket = \"unix:{}/relayguard.sock\"\nsocket_mode = \"0660\"\nsocket_group = \"postfix\"\n\n[senders]\nlogin_map = \"sender_login_maps\"\nrobots = [\"robot-web\"]\n\n[clients]\ninternal_networks = [\"{INTERNAL}/32\", \"{SRV1}/32\", \"{NAMELESS}/32\"]\n\n[senders.masquerade.\"robot-web\"]\naddress = \"webform@tugraz.at\"\nfrom = [\"root@*\", \"<>\"]\ndisplay_name = \"Web forms\"\n\n[limits]\ntimezone = \"UTC\"\n\n[limits.external]\nrecipients_per_message = 20\n\n{}",
            dir.display(),
            common::dkim::standard_setup(dir)
        )
    })
    .await;
    let socket = milter.unix.clone().unwrap();
    let postfix = Postfix::start(
        &[
            ("alice", "secret"),
            ("mallory", "secret"),
            ("robot-web", "secret"),
        ],
        &socket,
    );

    // 1. An owner sends as herself: accepted and delivered.
    let mut smtp = session(&postfix, EXTERNAL, Some("alice")).await;
    let sent = submit(
        &mut smtp,
        "alice@tugraz.at",
        &["friend@example.org"],
        &message("Alice <alice@tugraz.at>", "friend@example.org", "owner-1"),
    )
    .await;
    assert_eq!(sent.last().code, 250, "{sent:?}\n{}", postfix.log());
    let delivered = postfix.wait_delivered("owner-1@e2e.tugraz.test").await;
    assert!(delivered.contains("From: Alice <alice@tugraz.at>"));
    // It left signed with both tugraz.at keys, and dkimpy verifies what the sink received.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("owner-1.eml");
    std::fs::write(&file, delivered.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    let verdict = common::dkim::verify_dkimpy(
        &[file],
        &common::dkim::records(),
        out.path(),
        common::dkim::At::Now,
    );
    assert!(verdict[0].ends_with(" ok 2"), "{verdict:?}\n{delivered}");

    // 2. The same session uses a shared mailbox she is mapped to.
    let sent = submit(
        &mut smtp,
        "alice@tugraz.at",
        &["friend@example.org"],
        &message("Office <office@tugraz.at>", "friend@example.org", "owner-2"),
    )
    .await;
    assert_eq!(sent.last().code, 250, "{sent:?}");
    smtp.quit().await;

    // 3. A spoofer writes From: rector@: refused at end of data with the address and login.
    let mut smtp = session(&postfix, EXTERNAL, Some("mallory")).await;
    let sent = submit(
        &mut smtp,
        "mallory@tugraz.at",
        &["victim@example.org"],
        &message("Rector <rector@tugraz.at>", "victim@example.org", "spoof-1"),
    )
    .await;
    let reply = sent.last();
    assert_eq!(
        reply.text,
        "550 5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory@tugraz.at",
        "{sent:?}"
    );

    // 4. A spoofed envelope sender is refused at MAIL FROM already.
    let sent = submit(
        &mut smtp,
        "rector@tugraz.at",
        &["victim@example.org"],
        &message("mallory@tugraz.at", "victim@example.org", "spoof-2"),
    )
    .await;
    assert_eq!(sent.mail.code, 550, "{sent:?}");
    assert!(
        sent.mail.text.contains(
            "5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory@tugraz.at"
        ),
        "{sent:?}"
    );

    // 5. Two From headers: refused as ambiguous.
    let sent = submit(
        &mut smtp,
        "mallory@tugraz.at",
        &["victim@example.org"],
        &format!(
            "From: mallory@tugraz.at\r\n{}",
            message("rector@tugraz.at", "victim@example.org", "spoof-3")
        ),
    )
    .await;
    assert_eq!(
        sent.last().text,
        "550 5.7.1 From header appears more than once; refusing an ambiguous sender",
        "{sent:?}"
    );

    // 5b. An address spelled out in the display name (Python reads it as the author) and an
    // encoded-word that only Thunderbird decodes: refused with what to change.
    for (from, id, why) in [
        (
            "rector @tugraz.at <mallory@tugraz.at>",
            "spoof-4",
            "550 5.7.1 From header has an @ outside quotes in its display name; write the name without an address; refusing an ambiguous sender",
        ),
        (
            "\"rector=?utf-8?q?=40?=tugraz.at\" <mallory@tugraz.at>",
            "spoof-5",
            "550 5.7.1 From header has an encoded-word (=?...?=) inside quotes, a comment or another word, which some mail readers decode and others do not; encode the whole name as separate words; refusing an ambiguous sender",
        ),
    ] {
        let sent = submit(
            &mut smtp,
            "mallory@tugraz.at",
            &["victim@example.org"],
            &message(from, "victim@example.org", id),
        )
        .await;
        assert_eq!(sent.last().text, why, "{sent:?}");
    }
    smtp.quit().await;

    // 6. An unauthenticated internal server mails an admin (delivered) but not an outsider.
    let mut smtp = session(&postfix, INTERNAL, None).await;
    let sent = submit(
        &mut smtp,
        "root@server.tugraz.at",
        &["admin@tugraz.at", "someone@gmail.com"],
        &message("root@server.tugraz.at", "admin@tugraz.at", "internal-1"),
    )
    .await;
    assert_eq!(sent.rcpts[0].code, 250, "{sent:?}");
    assert_eq!(
        sent.rcpts[1].text,
        "550 5.7.1 <someone@gmail.com>: unauthenticated clients may send only to recipients in the protected domains; authenticate to send elsewhere"
    );
    assert_eq!(sent.data.as_ref().unwrap().code, 250, "{sent:?}");
    let delivered = postfix.wait_delivered("internal-1@e2e.tugraz.test").await;
    assert!(delivered.contains("admin@tugraz.at"));
    smtp.quit().await;

    // 7. An unauthenticated client from elsewhere must authenticate.
    let mut smtp = session(&postfix, EXTERNAL, None).await;
    let sent = submit(
        &mut smtp,
        "alice@tugraz.at",
        &["admin@tugraz.at"],
        &message("alice@tugraz.at", "admin@tugraz.at", "external-1"),
    )
    .await;
    assert_eq!(sent.mail.code, 550, "{sent:?}");
    assert!(
        sent.mail.text.contains("5.7.1 authentication required"),
        "{sent:?}"
    );
    smtp.quit().await;

    // 8. Nothing refused was delivered.
    postfix.wait_queue_empty().await;
    for id in [
        "spoof-1",
        "spoof-2",
        "spoof-3",
        "spoof-4",
        "spoof-5",
        "external-1",
    ] {
        assert!(
            postfix
                .delivered(&format!("{id}@e2e.tugraz.test"))
                .is_empty(),
            "{id} was delivered"
        );
    }

    // 9. An external sender's 21st recipient is refused with 452; the first 20 get the mail.
    let mut smtp = session(&postfix, EXTERNAL, Some("alice")).await;
    let rcpts: Vec<String> = (1..=21).map(|n| format!("r{n}@example.org")).collect();
    let rcpt_refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let sent = submit(
        &mut smtp,
        "alice@tugraz.at",
        &rcpt_refs,
        &message("alice@tugraz.at", "list@example.org", "many-rcpts"),
    )
    .await;
    assert!(sent.rcpts[..20].iter().all(|r| r.code == 250), "{sent:?}");
    assert_eq!(
        sent.rcpts[20].text,
        "452 4.5.3 too many recipients: at most 20 per message"
    );
    assert_eq!(sent.data.as_ref().unwrap().code, 250, "{sent:?}");
    smtp.quit().await;
    postfix.wait_delivered("many-rcpts@e2e.tugraz.test").await;
    postfix.wait_queue_empty().await;
    let log = postfix.log();
    let delivered_to: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("status=sent") && l.contains("@example.org>"))
        .collect();
    for n in 1..=20 {
        assert!(
            delivered_to
                .iter()
                .any(|l| l.contains(&format!("to=<r{n}@example.org>"))),
            "r{n} not delivered:\n{log}"
        );
    }
    assert!(
        !log.contains("to=<r21@example.org>, relay"),
        "r21 was delivered"
    );

    // 10. An internal server without a name in DNS hears 450 4.7.25 at MAIL FROM, as from
    //     Postfix's own reject_unknown_client_hostname (DNS trouble is often temporary).
    let mut smtp = session(&postfix, NAMELESS, None).await;
    let sent = submit(
        &mut smtp,
        "root@server.tugraz.at",
        &["admin@tugraz.at"],
        &message("root@server.tugraz.at", "admin@tugraz.at", "nameless-1"),
    )
    .await;
    assert_eq!(sent.mail.code, 450, "{sent:?}\n{}", postfix.log());
    assert!(
        sent.mail
            .text
            .contains("4.7.25 Client host rejected: cannot find your hostname"),
        "{sent:?}"
    );
    smtp.quit().await;

    // 11. A named server may not forge a person for its status mail: the From is refused,
    //     not signed with the university's key ...
    let mut smtp = session(&postfix, SRV1, None).await;
    let sent = submit(
        &mut smtp,
        "root@srv1.iaik.tugraz.at",
        &["staff@tugraz.at"],
        &message("Rector <rector@tugraz.at>", "staff@tugraz.at", "forgery-1"),
    )
    .await;
    assert_eq!(
        sent.last().text,
        "550 5.7.1 <rector@tugraz.at> is not an address of unauthenticated host srv1.iaik.tugraz.at; a server without authentication may send only as itself",
        "{sent:?}\n{}",
        postfix.log()
    );
    // ... while as itself it is delivered and signed, and dkimpy verifies it.
    let sent = submit(
        &mut smtp,
        "root@srv1.iaik.tugraz.at",
        &["staff@tugraz.at"],
        &message("root@srv1.iaik.tugraz.at", "staff@tugraz.at", "status-1"),
    )
    .await;
    assert_eq!(sent.last().code, 250, "{sent:?}\n{}", postfix.log());
    smtp.quit().await;
    let delivered = postfix.wait_delivered("status-1@e2e.tugraz.test").await;
    let file = out.path().join("status-1.eml");
    std::fs::write(&file, delivered.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    let verdict = common::dkim::verify_dkimpy(
        &[file],
        &common::dkim::records(),
        out.path(),
        common::dkim::At::Now,
    );
    assert!(verdict[0].ends_with(" ok 2"), "{verdict:?}\n{delivered}");
    postfix.wait_queue_empty().await;
    for id in ["nameless-1", "forgery-1"] {
        assert!(
            postfix
                .delivered(&format!("{id}@e2e.tugraz.test"))
                .is_empty(),
            "{id} was delivered"
        );
    }

    // 12. A robot's cron mail (root@ its host) leaves masqueraded as the robot's address: the
    //     envelope the sink sees and the From are rewritten, the original is kept in
    //     X-Original-From, and dkimpy verifies the signatures over the rewritten From.
    let mut smtp = session(&postfix, EXTERNAL, Some("robot-web")).await;
    let sent = submit(
        &mut smtp,
        "root@web1.iaik.tugraz.at",
        &["admin@example.org"],
        &message(
            "root@web1.iaik.tugraz.at (Cron Daemon)",
            "admin@example.org",
            "robot-1",
        ),
    )
    .await;
    assert_eq!(sent.last().code, 250, "{sent:?}\n{}", postfix.log());
    smtp.quit().await;
    let delivered = postfix.wait_delivered("robot-1@e2e.tugraz.test").await;
    assert!(
        delivered.contains("X-Mail-Args: <webform@tugraz.at>"),
        "{delivered}"
    );
    assert!(
        delivered.contains("From: \"Cron Daemon\" <webform@tugraz.at>"),
        "{delivered}"
    );
    assert!(
        delivered.contains("X-Original-From: <root@web1.iaik.tugraz.at>"),
        "{delivered}"
    );
    assert!(!delivered.contains("From: root@web1"), "{delivered}");
    let file = out.path().join("robot-1.eml");
    std::fs::write(&file, delivered.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    let verdict = common::dkim::verify_dkimpy(
        &[file],
        &common::dkim::records(),
        out.path(),
        common::dkim::At::Now,
    );
    assert!(verdict[0].ends_with(" ok 2"), "{verdict:?}\n{delivered}");
    // A person's account is never masqueraded: alice's root@ is refused as before.
    let mut smtp = session(&postfix, EXTERNAL, Some("alice")).await;
    let sent = submit(
        &mut smtp,
        "root@web1.iaik.tugraz.at",
        &["admin@example.org"],
        &message("root@web1.iaik.tugraz.at", "admin@example.org", "person-1"),
    )
    .await;
    assert_eq!(sent.mail.code, 550, "{sent:?}");
    smtp.quit().await;

    // 13. With the milter gone, Postfix tempfails (milter_default_action = tempfail): nothing is
    //    accepted unchecked.
    milter.stop().await.unwrap();
    let mut smtp = Smtp::connect(postfix.submit, EXTERNAL.parse().unwrap()).await;
    let auth = smtp.auth("mallory", "secret").await;
    let reply = if auth.code == 235 {
        let sent = submit(
            &mut smtp,
            "mallory@tugraz.at",
            &["victim@example.org"],
            &message("rector@tugraz.at", "victim@example.org", "down-1"),
        )
        .await;
        sent.last().clone()
    } else {
        auth
    };
    assert!(
        (400..500).contains(&reply.code),
        "milter down must tempfail: {reply:?}"
    );
    smtp.quit().await;
    assert!(postfix.delivered("down-1@e2e.tugraz.test").is_empty());
}
