//! Runbook: relayguard on real unix and TCP sockets, driven over the milter protocol.

mod common;

use common::{Milter, Txn, send, send_message};
use indymilter_test::Status;

fn reply_of(outcome: &common::Outcome) -> String {
    outcome
        .reply()
        .unwrap_or_else(|| panic!("expected a refusal, got {outcome:?}"))
}

#[tokio::test]
async fn owner_is_accepted_over_tcp() {
    let milter = Milter::tcp().await;
    let mut conn = milter.connect().await;
    let outcome = send(
        &mut conn,
        &Txn::authenticated("alice", "<alice@tugraz.at>", "Alice <alice@tugraz.at>"),
    )
    .await;
    assert_eq!(outcome.status, Status::Accept, "{outcome:?}");
    conn.close().await.unwrap();
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn spoofer_is_refused_over_unix_socket_with_the_address_and_login() {
    let milter = Milter::unix().await;
    let mut conn = milter.connect().await;
    let outcome = send(
        &mut conn,
        &Txn::authenticated(
            "mallory",
            "<mallory@tugraz.at>",
            "Rector <rector@tugraz.at>",
        ),
    )
    .await;
    // The MTA offers not to wait at end of headers; the verdict comes at end of message.
    assert_eq!(outcome.stage, "eom");
    assert_eq!(
        reply_of(&outcome),
        "550 5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory"
    );
    conn.close().await.unwrap();
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn spoofed_envelope_is_refused_at_mail() {
    let milter = Milter::tcp().await;
    let mut conn = milter.connect().await;
    let outcome = send(
        &mut conn,
        &Txn::authenticated(
            "mallory@tugraz.at",
            "<rector@tugraz.at>",
            "mallory@tugraz.at",
        ),
    )
    .await;
    assert_eq!(outcome.stage, "mail");
    assert_eq!(
        reply_of(&outcome),
        "550 5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory@tugraz.at"
    );
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn ambiguous_from_is_refused_with_the_reason() {
    let milter = Milter::tcp().await;
    let mut conn = milter.connect().await;
    let mut txn = Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    txn.headers.push(("FROM", "rector@tugraz.at"));
    let outcome = send(&mut conn, &txn).await;
    assert_eq!(
        reply_of(&outcome),
        "550 5.7.1 From header appears more than once; refusing an ambiguous sender"
    );
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn unauthenticated_external_client_is_told_to_authenticate() {
    let milter = Milter::tcp().await;
    let mut conn = milter.connect().await;
    let outcome = send(
        &mut conn,
        &Txn::unauthenticated(
            "203.0.113.9",
            "<root@x.tugraz.at>",
            vec!["<admin@tugraz.at>"],
        ),
    )
    .await;
    assert_eq!(outcome.stage, "mail");
    let reply = reply_of(&outcome);
    assert!(
        reply.starts_with("550 5.7.1 authentication required"),
        "{reply}"
    );
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn internal_server_may_mail_admins_but_not_outsiders() {
    let milter = Milter::tcp().await;
    let mut conn = milter.connect().await;
    let txn = Txn::unauthenticated(
        "129.27.3.4",
        "<root@server.tugraz.at>",
        vec!["<admin@tugraz.at>", "<someone@gmail.com>"],
    );
    let outcome = send(&mut conn, &txn).await;
    // The outside recipient alone is refused; the message goes on to the admin.
    assert_eq!(outcome.stage, "rcpt-partial", "{outcome:?}");
    assert_eq!(
        reply_of(&outcome),
        "550 5.7.1 <someone@gmail.com>: unauthenticated clients may send only to recipients in the protected domains; authenticate to send elsewhere"
    );
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn several_messages_on_one_connection_are_judged_separately() {
    let milter = Milter::tcp().await;
    let mut conn = milter.connect().await;
    let first = send(
        &mut conn,
        &Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
    )
    .await;
    assert_eq!(first.status, Status::Accept);
    let second = send_message(
        &mut conn,
        &Txn::authenticated("alice", "<alice@tugraz.at>", "rector@tugraz.at"),
    )
    .await;
    assert_eq!(second.stage, "eom");
    assert!(reply_of(&second).starts_with("550 5.7.1 <rector@tugraz.at>"));
    let third = send_message(
        &mut conn,
        &Txn::authenticated("alice", "<>", "office@tugraz.at"),
    )
    .await;
    assert_eq!(third.status, Status::Accept);
    conn.close().await.unwrap();
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn stale_unix_socket_is_replaced_and_removed_on_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // A socket file left behind by a crashed process.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let config_path = dir.path().join("relayguard.toml");
    std::fs::write(
        &config_path,
        format!(
            "[milter]\nsocket = \"unix:{}\"\nsocket_mode = \"0666\"\n",
            path.display()
        ),
    )
    .unwrap();
    let options = relayguard::runtime::Options {
        watch_files: false,
        signals: false,
        ..Default::default()
    };
    let running = relayguard::runtime::start(&config_path, options)
        .await
        .expect("stale socket replaced");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o666
    );
    // A second instance must not steal a live socket.
    let err = relayguard::runtime::listen::bind(running.service.milter_config())
        .await
        .err()
        .expect("live socket kept");
    assert!(err.to_string().contains("in use"), "{err}");
    running.stop().await.unwrap();
    assert!(!path.exists(), "socket removed on exit");
}

#[tokio::test]
async fn shutdown_finishes_the_message_in_flight() {
    let mut milter = Milter::tcp().await;
    let mut conn = milter.connect().await;
    let txn = Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    // Start a message, then ask the service to stop in the middle of it.
    conn.macros(
        indymilter_test::MacroStage::Connect,
        [("{client_addr}", "203.0.113.7")],
    )
    .await
    .unwrap();
    conn.connect(
        "c",
        indymilter_test::SocketInfo::Inet("203.0.113.7:1".parse().unwrap()),
    )
    .await
    .unwrap();
    conn.macros(
        indymilter_test::MacroStage::Mail,
        [("{auth_authen}", "alice")],
    )
    .await
    .unwrap();
    assert_eq!(conn.mail([txn.mail_from]).await.unwrap(), Status::Continue);
    assert_eq!(milter.service.messages_in_flight(), 1);
    milter.begin_stop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // New connections are no longer accepted...
    let addr = milter.tcp.unwrap();
    let refused = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        match indymilter_test::TestConnection::open(addr).await {
            Err(_) => true,
            Ok(c) => {
                drop(c);
                false
            }
        }
    })
    .await
    .unwrap_or(true);
    assert!(refused, "a new connection was served during shutdown");
    // ...but the message in flight completes.
    assert_eq!(
        conn.rcpt(["<friend@example.org>"]).await.unwrap(),
        Status::Continue
    );
    conn.header("From", "alice@tugraz.at").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Noreply);
    assert_eq!(conn.eom().await.unwrap().1, Status::Accept);
    conn.abort().await.unwrap();
    milter.join().await.unwrap();
}

#[tokio::test]
async fn an_mta_without_noreply_options_hears_the_header_verdict_at_end_of_headers() {
    use indymilter_test::ProtoOpts;
    let milter = Milter::tcp().await;
    // Postfix 3.7 offers everything; this MTA offers no reply-less end of headers or body.
    let offered = ProtoOpts::all() - ProtoOpts::NOREPLY_EOH - ProtoOpts::NOREPLY_BODY;
    let mut conn = milter.connect_offering(offered).await;
    assert!(!conn.negotiated_opts().contains(ProtoOpts::NOREPLY_EOH));
    let outcome = send(
        &mut conn,
        &Txn::authenticated("mallory", "<mallory@tugraz.at>", "rector@tugraz.at"),
    )
    .await;
    assert_eq!(outcome.stage, "eoh");
    assert!(reply_of(&outcome).starts_with("550 5.7.1 <rector@tugraz.at>"));
    let owner = send_message(
        &mut conn,
        &Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
    )
    .await;
    assert_eq!((owner.stage, owner.status), ("eoh", Status::Accept));
    conn.close().await.unwrap();

    // With the options offered, relayguard takes them: three round trips per message
    // (MAIL, RCPT, end of message) instead of five or more.
    let conn = milter.connect().await;
    let opts = conn.negotiated_opts();
    for wanted in [
        ProtoOpts::NOREPLY_CONNECT,
        ProtoOpts::NOREPLY_HEADER,
        ProtoOpts::NOREPLY_EOH,
        ProtoOpts::NOREPLY_BODY,
        ProtoOpts::NO_DATA,
    ] {
        assert!(opts.contains(wanted), "{wanted:?} not negotiated: {opts:?}");
    }
    conn.close().await.unwrap();
    milter.stop().await.unwrap();
}
