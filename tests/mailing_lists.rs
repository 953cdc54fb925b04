//! Runbook: a staff member posts to a mailing list. The relay's Postfix (relayguard as its
//! milter) signs the post and hands it to the list server's Postfix, which pipes it into a
//! real mlmmj; mlmmj adds its List-* headers and sends a copy to each subscriber through
//! its Postfix to a local sink. The copy a subscriber receives must verify, with dkimpy and
//! OpenDKIM, against the relay's keys. Then the list settings that rewrite the message (a
//! subject tag, a footer) are shown breaking the signature: what the list must do instead
//! is its business (ARC, or DMARC From rewriting), not the relay's.

mod common;

use common::Milter;
use common::dkim::{At, records, verify_dkimpy, verify_opendkim};
use common::postfix::Postfix;
use common::smtp::{Smtp, submit};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The list server's Postfix: lists.tugraz.at is local, staff@ goes to mlmmj.
const LIST_MAIN: &str = "myhostname = lists.tugraz.test\nmydestination = lists.tugraz.at\nlocal_recipient_maps =\nrecipient_delimiter = +\ntransport_maps = inline:{ staff@lists.tugraz.at=mlmmj:staff }\nmlmmj_destination_recipient_limit = 1\n";

/// Its pipe to mlmmj, as mlmmj's README.postfix has it (the test's list belongs to nobody).
const LIST_SERVICE: &str = "mlmmj     unix  -       n       n       -       -       pipe\n  flags=ORhu user=nobody argv=/usr/bin/mlmmj-receive -F -L @DIR@/mlmmj/${nexthop}\n";

/// What the list adds to every post.
const LIST_HEADERS: &str = "List-Id: Staff list <staff.lists.tugraz.at>\nList-Post: <mailto:staff@lists.tugraz.at>\nList-Help: <mailto:staff+help@lists.tugraz.at>\nList-Subscribe: <mailto:staff+subscribe@lists.tugraz.at>\nList-Unsubscribe: <mailto:staff+unsubscribe@lists.tugraz.at>\nList-Archive: <https://lists.tugraz.at/staff/>\nPrecedence: list\n";

/// Makes the list `staff@lists.tugraz.at` with mlmmj's own tool, one subscriber
/// (bob@example.org), mail out through the list server's Postfix on `smtp_port`.
fn make_list(spool: &Path, smtp_port: u16) -> PathBuf {
    assert!(
        Path::new("/usr/bin/mlmmj-make-ml").exists(),
        "mlmmj is missing: run scripts/test, which installs it"
    );
    std::fs::create_dir_all(spool).unwrap();
    let mut make = Command::new("/usr/bin/mlmmj-make-ml")
        .args(["-L", "staff", "-s"])
        .arg(spool)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its questions: the domain, the owner, the language of the list texts, chown now.
    use std::io::Write;
    make.stdin
        .take()
        .unwrap()
        .write_all(b"lists.tugraz.at\nlistmaster@tugraz.at\nen\nn\n")
        .unwrap();
    assert!(make.wait().unwrap().success(), "mlmmj-make-ml");
    let list = spool.join("staff");
    let control = list.join("control");
    std::fs::write(control.join("relayhost"), "127.0.0.1\n").unwrap();
    std::fs::write(control.join("smtpport"), format!("{smtp_port}\n")).unwrap();
    std::fs::write(control.join("customheaders"), LIST_HEADERS).unwrap();
    std::fs::write(list.join("subscribers.d/b"), "bob@example.org\n").unwrap();
    let status = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(spool)
        .status()
        .unwrap();
    assert!(status.success());
    list
}

fn post(id: &str) -> String {
    format!(
        "From: Alice <alice@tugraz.at>\r\nTo: Staff <staff@lists.tugraz.at>\r\nSubject: Staff meeting {id}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{id}@tugraz.at>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMonday at ten, room HS i13.\r\n"
    )
}

/// Whether dkimpy (both signatures) and OpenDKIM verify the subscriber's copy.
fn verifies(copy: &str, dir: &Path, name: &str) -> (bool, bool) {
    let file = dir.join(format!("{name}.eml"));
    std::fs::write(&file, copy.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    let dkimpy = verify_dkimpy(std::slice::from_ref(&file), &records(), dir, At::Now);
    (
        dkimpy[0].ends_with(" ok 2"),
        verify_opendkim(&[file], dir)[0],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_through_mlmmj_reaches_subscribers_still_signed() {
    common::postfix::require_postfix();
    let milter = Milter::with_config(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!(
            "[milter]\nsocket = \"unix:{}/relayguard.sock\"\nsocket_mode = \"0660\"\nsocket_group = \"postfix\"\n\n[senders]\nlogin_map = \"sender_login_maps\"\n\n{}",
            dir.display(),
            common::dkim::standard_setup(dir)
        )
    })
    .await;
    let lists = Postfix::start_full(&[], "tugraz.at", None, LIST_MAIN, LIST_SERVICE);
    let list = make_list(&lists.dir.path().join("mlmmj"), lists.submit.port());
    let relay = Postfix::start_with(
        &[("alice", "secret")],
        "tugraz.at",
        milter.unix.as_deref(),
        &format!("relayhost = [127.0.0.1]:{}\n", lists.submit.port()),
    );
    let out = tempfile::tempdir().unwrap();
    let send = async |id: &str| {
        let mut smtp = Smtp::connect(relay.submit, "127.0.0.3".parse::<IpAddr>().unwrap()).await;
        assert_eq!(smtp.auth("alice", "secret").await.code, 235);
        let sent = submit(
            &mut smtp,
            "alice@tugraz.at",
            &["staff@lists.tugraz.at"],
            &post(id),
        )
        .await;
        assert_eq!(sent.last().code, 250, "{sent:?}\n{}", relay.log());
        smtp.quit().await;
        // bob's copy, as mlmmj sent it.
        lists.wait_delivered(&format!("{id}@tugraz.at")).await
    };

    // 1. The list adds its headers, nothing else: the copy verifies.
    let copy = send("post-1").await;
    assert!(
        copy.contains("List-Id: Staff list <staff.lists.tugraz.at>")
            && copy.contains("List-Unsubscribe:")
            && copy.matches("DKIM-Signature:").count() == 2,
        "the list's copy:\n{copy}"
    );
    assert_eq!(
        verifies(&copy, out.path(), "post-1"),
        (true, true),
        "the list's copy must verify:\n{copy}"
    );

    // 2. A subject tag rewrites a signed header: the signature breaks, as it must.
    std::fs::write(list.join("control/prefix"), "[staff]\n").unwrap();
    let copy = send("post-2").await;
    assert!(
        copy.contains("Subject: [staff] Staff meeting post-2"),
        "{copy}"
    );
    assert_eq!(verifies(&copy, out.path(), "post-2"), (false, false));
    std::fs::remove_file(list.join("control/prefix")).unwrap();

    // 3. So does a footer, which rewrites the signed body.
    std::fs::write(list.join("control/footer"), "-- \nstaff mailing list\n").unwrap();
    let copy = send("post-3").await;
    assert!(copy.contains("staff mailing list"), "{copy}");
    assert_eq!(verifies(&copy, out.path(), "post-3"), (false, false));
    milter.stop().await.unwrap();
}
