//! Runbook: a real Sendmail 8.17 with SASL AUTH, built from the operator's .mc snippet,
//! with relayguard on a unix socket: an owner's mail leaves signed (dkimpy verifies it),
//! a spoofer is refused, and a robot's cron mail leaves masqueraded as the robot's address.

mod common;

use common::Milter;
use common::sendmail::Sendmail;
use common::smtp::{Smtp, submit};
use std::os::unix::fs::PermissionsExt;

fn message(from: &str, id: &str) -> String {
    format!(
        "From: {from}\r\nTo: friend@example.org\r\nSubject: sendmail {id}\r\nMessage-ID: <{id}@e2e.tugraz.test>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0100\r\n\r\nHello from {id}.\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmail_end_to_end() {
    common::sendmail::require_sendmail();
    let milter = Milter::with_config(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!(
            "[milter]\nsocket = \"unix:{}/relayguard.sock\"\nsocket_mode = \"0660\"\n\n[senders]\nlogin_map = \"sender_login_maps\"\nrobots = [\"robot-web\"]\n\n[senders.masquerade.\"robot-web\"]\naddress = \"webform@tugraz.at\"\nfrom = [\"root@*\"]\n\n{}",
            dir.display(),
            common::dkim::standard_setup(dir)
        )
    })
    .await;
    let sendmail = Sendmail::start(
        &[
            ("alice", "secret"),
            ("mallory", "secret"),
            ("robot-web", "secret"),
        ],
        milter.unix.as_ref().unwrap(),
    );

    // The owner: accepted, relayed, signed with both tugraz.at keys.
    let mut smtp = Smtp::connect(sendmail.submit, "127.0.0.1".parse().unwrap()).await;
    assert_eq!(smtp.auth("alice@tugraz.at", "secret").await.code, 235);
    let sent = submit(
        &mut smtp,
        "alice@tugraz.at",
        &["friend@example.org"],
        &message("Alice <alice@tugraz.at>", "sm-owner"),
    )
    .await;
    assert_eq!(sent.last().code, 250, "{sent:?}");
    smtp.quit().await;
    let delivered = sendmail.wait_delivered("sm-owner@e2e.tugraz.test").await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("owner.eml");
    std::fs::write(&file, delivered.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    let verdict = common::dkim::verify_dkimpy(
        &[file],
        &common::dkim::records(),
        out.path(),
        common::dkim::At::Now,
    );
    assert!(verdict[0].ends_with(" ok 2"), "{verdict:?}\n{delivered}");

    // The spoofer: refused with the address and the login.
    let mut smtp = Smtp::connect(sendmail.submit, "127.0.0.1".parse().unwrap()).await;
    assert_eq!(smtp.auth("mallory@tugraz.at", "secret").await.code, 235);
    let sent = submit(
        &mut smtp,
        "mallory@tugraz.at",
        &["victim@example.org"],
        &message("Rector <rector@tugraz.at>", "sm-spoof"),
    )
    .await;
    assert_eq!(
        sent.last().text,
        "550 5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory@tugraz.at",
        "{sent:?}"
    );
    smtp.quit().await;
    assert!(sendmail.delivered("sm-spoof@e2e.tugraz.test").is_empty());

    // The robot's cron mail: envelope and From rewritten by Sendmail on relayguard's word,
    // the original kept, the signatures verify over the rewritten From.
    let mut smtp = Smtp::connect(sendmail.submit, "127.0.0.1".parse().unwrap()).await;
    assert_eq!(smtp.auth("robot-web@tugraz.at", "secret").await.code, 235);
    let sent = submit(
        &mut smtp,
        "root@web1.iaik.tugraz.at",
        &["friend@example.org"],
        &message("root@web1.iaik.tugraz.at", "sm-robot"),
    )
    .await;
    assert_eq!(sent.last().code, 250, "{sent:?}");
    smtp.quit().await;
    let delivered = sendmail.wait_delivered("sm-robot@e2e.tugraz.test").await;
    assert!(
        delivered.contains("X-Mail-Args: <webform@tugraz.at>"),
        "{delivered}"
    );
    assert!(
        delivered.contains("From: <webform@tugraz.at>"),
        "{delivered}"
    );
    assert!(
        delivered.contains("X-Original-From: <root@web1.iaik.tugraz.at>"),
        "{delivered}"
    );
    let file = out.path().join("robot.eml");
    std::fs::write(&file, delivered.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    let verdict = common::dkim::verify_dkimpy(
        &[file],
        &common::dkim::records(),
        out.path(),
        common::dkim::At::Now,
    );
    assert!(verdict[0].ends_with(" ok 2"), "{verdict:?}\n{delivered}");
    drop(sendmail);
    milter.stop().await.unwrap();
}
