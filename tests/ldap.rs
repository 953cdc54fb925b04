//! Runbook: ownership from the directory. A real OpenLDAP slapd on loopback serves the campus
//! directory (people with aliases, a shared mailbox owned through a group, robots, a
//! disabled account, values full of LDAP metacharacters); relayguard reads Postfix's own
//! ldap_table file for `smtpd_sender_login_maps` and asks the directory per message.

mod common;

use common::daemon::Daemon;
use common::memory::{Msg, Relay, T0_MS, TU_GRAZ_AC_AT_KEY, TUGRAZ_KEYS, send};
use common::slapd::Slapd;
use relayguard::audit::writer::OnError;
use relayguard::ldap::Directories;
use relayguard::ldap::table::{self, Origin, Settings, Tuning};
use relayguard::policy::senders::LoginRules;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// relayguard.toml of the relay: ownership from the directory (through Postfix's file),
/// then the own-local-part rule; robots from the directory; signing.
fn config(slapd: &Slapd) -> String {
    format!(
        "[senders]\nsources = [\"ldap\", \"own_local_part\"]\n\n[senders.ldap]\npostfix_table = \"{}\"\nrobot_filter = \"(objectClass=tugRobot)\"\n\n[dkim]\n",
        slapd.postfix_table().display()
    )
}

fn relay(slapd: &Slapd) -> Relay {
    relay_from(&config(slapd))
}

fn relay_from(text: &str) -> Relay {
    let keys = format!("{TUGRAZ_KEYS}{TU_GRAZ_AC_AT_KEY}");
    Relay::new(text, "", &keys, OnError::Tempfail)
}

/// A message of `login` with envelope and header sender `address`.
fn msg(login: &'static str, address: &'static str) -> Msg {
    let mail_from: &'static str = Box::leak(format!("<{address}>").into_boxed_str());
    Msg {
        client: "203.0.113.7",
        name: None,
        login: Some(login),
        mail_from,
        rcpts: vec!["<friend@example.org>"],
        headers: vec![("From", address.as_bytes()), ("Subject", b"x")],
    }
}

/// A message whose envelope is the login's own and whose From header is `from`.
fn header_from(login: &'static str, from: &'static [u8]) -> Msg {
    let mail_from: &'static str = Box::leak(format!("<{login}@tugraz.at>").into_boxed_str());
    Msg {
        headers: vec![("From", from), ("Subject", b"x")],
        mail_from,
        ..msg(login, "unused@tugraz.at")
    }
}

/// `(stage, reply)` of a refusal, or `("signed", n)` of an acceptance.
async fn outcome(relay: &Relay, m: &Msg) -> (String, String) {
    let heard = send(relay, m).await;
    match &heard.answer {
        relayguard::session::decision::Answer::Accept(a) => {
            ("signed".into(), a.signatures.len().to_string())
        }
        _ => (heard.stage.into(), heard.reply()),
    }
}

/// `relayguard_ldap_lookups_total{result}` in a scrape.
fn lookups(metrics: &str, result: &str) -> u64 {
    let series = format!("relayguard_ldap_lookups_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

fn signed() -> (String, String) {
    ("signed".into(), "2".into())
}

fn not_owned(stage: &str, address: &str, login: &str) -> (String, String) {
    (
        stage.into(),
        format!("550 5.7.1 <{address}> is not owned by authenticated user {login}"),
    )
}

#[tokio::test]
async fn owners_and_their_aliases_are_accepted_and_signed() {
    let slapd = Slapd::start();
    let relay = relay(&slapd);
    for (login, address) in [
        ("alice", "alice@tugraz.at"),
        ("alice", "alice.liddell@tugraz.at"),
        ("alice", "a.liddell@iaik.tugraz.at"),
        ("bob", "robert.builder@tugraz.at"),
        ("alice", "alice.liddell+lists@tugraz.at"),
    ] {
        assert_eq!(
            outcome(&relay, &msg(login, address)).await,
            signed(),
            "{login} {address}"
        );
    }
    let carol = outcome(&relay, &msg("carol", "carol@tu-graz.ac.at")).await;
    assert_eq!(carol.0, "signed");
    let metrics = relay.metrics();
    // One directory round trip per address (and one for `alice.liddell+lists@`, before
    // `alice.liddell@`); MAIL FROM's answers serve the From headers.
    assert_eq!(lookups(&metrics, "miss"), 6, "{metrics}");
    assert_eq!(lookups(&metrics, "hit"), 8, "{metrics}");
    assert!(metrics.contains("relayguard_ldap_lookup_seconds_count 6"));
}

#[tokio::test]
async fn another_users_alias_and_a_disabled_accounts_alias_are_refused() {
    let slapd = Slapd::start();
    let relay = relay(&slapd);
    assert_eq!(
        outcome(&relay, &msg("mallory", "alice.liddell@tugraz.at")).await,
        not_owned("mail", "alice.liddell@tugraz.at", "mallory")
    );
    assert_eq!(
        outcome(
            &relay,
            &header_from("mallory", b"Alice <alice.liddell@tugraz.at>")
        )
        .await,
        not_owned("headers", "alice.liddell@tugraz.at", "mallory")
    );
    assert_eq!(
        outcome(&relay, &msg("dave", "dave.former@tugraz.at")).await,
        not_owned("mail", "dave.former@tugraz.at", "dave")
    );
    assert_eq!(
        relay.last_verdict(),
        ("reject".into(), "sender_not_owned".into())
    );
}

/// Sends each `(login, address, expected)` and checks what the MTA heard.
async fn expect_all(relay: &Relay, cases: &[(&'static str, &'static str, (String, String))]) {
    for (login, address, expected) in cases {
        assert_eq!(
            &outcome(relay, &msg(login, address)).await,
            expected,
            "{login} <{address}>"
        );
    }
}

#[tokio::test]
async fn a_shared_mailbox_is_for_the_members_of_its_group_only() {
    let slapd = Slapd::start();
    let shared = "institute@tugraz.at";
    expect_all(
        &relay(&slapd),
        &[
            ("alice", shared, signed()),
            ("bob", shared, signed()),
            ("carol", shared, not_owned("mail", shared, "carol")),
        ],
    )
    .await;
}

#[tokio::test]
async fn robots_own_only_what_the_directory_assigns_them() {
    let slapd = Slapd::start();
    expect_all(
        &relay(&slapd),
        &[
            ("robot-web", "noreply-web@tugraz.at", signed()),
            (
                "robot-web",
                "alice@tugraz.at",
                not_owned("mail", "alice@tugraz.at", "robot-web"),
            ),
            // The own-local-part rule is for people: the directory says robot-web is a robot.
            (
                "robot-web",
                "robot-web@tugraz.at",
                not_owned("mail", "robot-web@tugraz.at", "robot-web"),
            ),
            ("mallory", "mallory@tugraz.at", signed()),
        ],
    )
    .await;
    // Without robot_filter the rule would have let it through.
    let without = relay_from(&config(&slapd).replace("robot_filter", "# robot_filter"));
    expect_all(&without, &[("robot-web", "robot-web@tugraz.at", signed())]).await;
}

#[tokio::test]
async fn a_directory_change_is_seen_when_the_cached_answer_expires() {
    let slapd = Slapd::start();
    let relay = relay(&slapd);
    let helpdesk = msg("mallory", "helpdesk@tugraz.at");
    assert_eq!(
        outcome(&relay, &helpdesk).await,
        not_owned("mail", "helpdesk@tugraz.at", "mallory")
    );
    slapd.modify(
        "dn: uid=mallory,ou=people,dc=tugraz,dc=at\nchangetype: modify\nadd: objectClass\nobjectClass: mailAltRecipient\n-\nadd: mailAlternateAddress\nmailAlternateAddress: helpdesk@tugraz.at\n",
    );
    relay.now.store(T0_MS + 59_000, Ordering::SeqCst);
    assert_eq!(
        outcome(&relay, &helpdesk).await,
        not_owned("mail", "helpdesk@tugraz.at", "mallory"),
        "within the negative TTL (60 s) the cached answer stands"
    );
    relay.now.store(T0_MS + 61_000, Ordering::SeqCst);
    assert_eq!(outcome(&relay, &helpdesk).await, signed());
}

/// The directory's settings from its Postfix file, as relayguard reads them.
fn directory(slapd: &Slapd) -> std::sync::Arc<relayguard::ldap::Directory> {
    directory_with(slapd, |text| text)
}

/// As [`directory`], with the Postfix file's text changed by `edit`.
fn directory_with(
    slapd: &Slapd,
    edit: impl Fn(String) -> String,
) -> std::sync::Arc<relayguard::ldap::Directory> {
    let file = slapd.postfix_table();
    std::fs::write(&file, edit(std::fs::read_to_string(&file).unwrap())).unwrap();
    let pairs = table::parse_postfix_file(&file, &std::fs::read_to_string(&file).unwrap()).unwrap();
    let settings = Settings::from_pairs(
        &Origin {
            path: file,
            prefix: "",
        },
        &pairs,
        LoginRules::new(vec!["tugraz.at".into()]),
        Some('+'),
        Tuning::default(),
    )
    .unwrap();
    Directories::standalone().directory(settings)
}

#[tokio::test]
async fn filter_metacharacters_never_match_another_entry() {
    let slapd = Slapd::start();
    let directory = directory(&slapd);
    let owners = |key: &'static str| {
        let directory = directory.clone();
        async move {
            directory
                .lookup(key)
                .await
                .unwrap()
                .iter()
                .map(|o| o.login.clone())
                .collect::<Vec<_>>()
        }
    };
    // Wildcards and filter injections find nobody, or exactly the entry that holds the
    // literal value, never alice (a*) or everybody (*).
    assert_eq!(owners("alice@tugraz.at").await, ["alice"]);
    assert!(owners("*@tugraz.at").await.is_empty());
    assert!(owners("a*").await.is_empty());
    assert!(owners("*").await.is_empty());
    assert_eq!(owners("a*@tugraz.at").await, ["meta"]);
    assert_eq!(owners("x)(uid=*@tugraz.at").await, ["meta"]);
    assert!(owners("x)(uid=*").await.is_empty());
    assert!(owners("*)(|(uid=*").await.is_empty());
    assert_eq!(owners("\\2a@tugraz.at").await, ["meta"]);
    assert!(owners("\\2a").await.is_empty());
    assert!(owners("alice@tugraz.at\0").await.is_empty());
    assert!(owners("\0*").await.is_empty());
    assert!(owners("\u{fffd}@tugraz.at").await.is_empty());
    assert!(owners("al\u{fffd}ce@tugraz.at").await.is_empty());

    // Through the pipeline: an attacker's wildcard sender is refused, the literal owner
    // of `a*@tugraz.at` is accepted, and bytes that are not UTF-8 never pass.
    let relay = relay(&slapd);
    assert_eq!(
        outcome(&relay, &msg("mallory", "*@tugraz.at")).await,
        not_owned("mail", "*@tugraz.at", "mallory")
    );
    assert_eq!(
        outcome(&relay, &msg("mallory", "a*@tugraz.at")).await,
        not_owned("mail", "a*@tugraz.at", "mallory")
    );
    assert_eq!(
        outcome(&relay, &msg("meta", "a*@tugraz.at")).await,
        signed()
    );
    for from in [
        &b"\xff\xfe@tugraz.at"[..],
        b"alice\xc3@tugraz.at",
        b"=?utf-8?q?x=29=28uid=3D*?= <alice@tugraz.at>",
    ] {
        let (stage, reply) = outcome(&relay, &header_from("mallory", from)).await;
        assert_eq!(stage, "headers", "{from:?}: {reply}");
        assert!(reply.starts_with("550 5.7.1"), "{from:?}: {reply}");
    }
}

#[tokio::test]
async fn a_server_named_like_a_directory_domain_cannot_send_as_the_accounts_there() {
    // iaik.tugraz.at is a host name and a mail domain: the host may send as itself, never
    // as an address the directory gives to a person or a robot.
    let mut slapd = Slapd::start();
    let relay = relay_from(&config(&slapd).replace(
        "[dkim]",
        "[clients]\ninternal_networks = [\"129.27.0.0/16\"]\n\n[dkim]",
    ));
    let server = |address: &'static str| {
        let mail_from: &'static str = Box::leak(format!("<{address}>").into_boxed_str());
        Msg {
            client: "129.27.3.4",
            name: Some("iaik.tugraz.at"),
            login: None,
            mail_from,
            rcpts: vec!["<staff@tugraz.at>"],
            headers: vec![("From", address.as_bytes()), ("Subject", b"status")],
        }
    };
    assert_eq!(
        outcome(&relay, &server("root@iaik.tugraz.at")).await,
        signed()
    );
    for (address, entry) in [
        (
            "a.liddell@iaik.tugraz.at",
            "directory: a.liddell@iaik.tugraz.at",
        ),
        ("backup@iaik.tugraz.at", "directory: backup@iaik.tugraz.at"),
        (
            "a.liddell+x@iaik.tugraz.at",
            "directory: a.liddell@iaik.tugraz.at",
        ),
    ] {
        assert_eq!(
            outcome(&relay, &server(address)).await,
            (
                "mail".to_string(),
                format!(
                    "550 5.7.1 <{address}> belongs to an account ({entry}); unauthenticated host iaik.tugraz.at may send only as itself, never as an address a person or robot owns"
                )
            )
        );
    }
    // A directory that cannot answer is never taken for "nobody's": tempfail.
    slapd.stop();
    let (stage, reply) = outcome(&relay, &server("other@iaik.tugraz.at")).await;
    assert_eq!(stage, "mail");
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
}

#[tokio::test]
async fn while_the_directory_is_down_cached_answers_serve_and_others_tempfail() {
    let mut slapd = Slapd::start();
    let relay = relay_from(&config(&slapd).replace("[dkim]", "max_stale_secs = 600\n\n[dkim]"));
    assert_eq!(
        outcome(&relay, &msg("alice", "alice.liddell@tugraz.at")).await,
        signed()
    );
    slapd.stop();
    assert_eq!(
        outcome(&relay, &msg("alice", "alice.liddell@tugraz.at")).await,
        signed(),
        "a fresh cached answer needs no directory"
    );
    let (stage, reply) = outcome(&relay, &msg("bob", "robert.builder@tugraz.at")).await;
    assert_eq!(stage, "mail");
    assert!(
        reply.starts_with(
            "451 4.3.0 temporary local problem (sender ownership cannot be checked now), try again later"
        ),
        "never accepted unchecked, never refused as spoofed: {reply}"
    );
    assert_eq!(
        relay.last_verdict(),
        ("tempfail".into(), "ownership_unavailable".into())
    );
    // Past its TTL (300 s) but within max_stale (600 s): the stale answer serves.
    relay.now.store(T0_MS + 301_000, Ordering::SeqCst);
    assert_eq!(
        outcome(&relay, &msg("alice", "alice.liddell@tugraz.at")).await,
        signed()
    );
    assert_eq!(lookups(&relay.metrics(), "stale"), 2, "MAIL FROM and From");
    relay.now.store(T0_MS + 901_000, Ordering::SeqCst);
    assert_eq!(
        outcome(&relay, &msg("alice", "alice.liddell@tugraz.at"))
            .await
            .0,
        "mail",
        "past max_stale nothing serves"
    );
    slapd.restart();
    // The pool waits 250 ms after a failed connect before it tries again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        outcome(&relay, &msg("bob", "robert.builder@tugraz.at")).await,
        signed()
    );
    assert_eq!(
        outcome(&relay, &msg("alice", "alice.liddell@tugraz.at")).await,
        signed()
    );
    assert!(lookups(&relay.metrics(), "error") >= 2);
}

#[tokio::test]
async fn a_frozen_directory_costs_a_message_one_timeout_not_one_per_lookup() {
    // slapd SIGSTOPped keeps its sockets: connects and binds hang, nothing answers. Each
    // operation is bounded by the ldap_table timeout (1 s here), and once it has passed the
    // message's other lookups fail at once.
    let slapd = Slapd::start();
    let relay = relay(&slapd);
    assert_eq!(
        outcome(&relay, &msg("alice", "alice.liddell@tugraz.at")).await,
        signed()
    );
    slapd.freeze();
    let started = std::time::Instant::now();
    let (stage, reply) = outcome(&relay, &msg("bob", "robert.builder@tugraz.at")).await;
    let first = started.elapsed();
    assert_eq!(stage, "mail");
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert!(
        first < Duration::from_millis(1_500),
        "the first message waited {first:?} with timeout = 1 s"
    );
    // The messages right behind it (a queue flushing) do not each wait it out again.
    for login in ["carol", "dave"] {
        let started = std::time::Instant::now();
        let address: &'static str = Box::leak(format!("{login}@tugraz.at").into_boxed_str());
        let (stage, reply) = outcome(&relay, &msg(login, address)).await;
        let waited = started.elapsed();
        assert_eq!(stage, "mail");
        assert!(reply.starts_with("451 4.3.0"), "{reply}");
        assert!(
            waited < Duration::from_millis(200),
            "{login}'s message waited {waited:?} for a directory known not to answer"
        );
    }
    slapd.thaw();
    // Thawed, and past the pause after a timeout: the directory answers again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        outcome(&relay, &msg("bob", "robert.builder@tugraz.at")).await,
        signed()
    );
}

#[tokio::test]
async fn sighup_forgets_the_cached_answers() {
    let slapd = Slapd::start();
    let table = slapd.postfix_table();
    let daemon = Daemon::start(|_, socket| {
        format!(
            "[milter]\nsocket = \"{socket}\"\n\n[senders]\nsources = [\"ldap\"]\n\n[senders.ldap]\npostfix_table = \"{}\"\n",
            table.display()
        )
    });
    let txn = common::Txn::authenticated("mallory", "<helpdesk@tugraz.at>", "helpdesk@tugraz.at");
    let ask = || async {
        let mut conn = daemon.connect().await;
        let outcome = common::send(&mut conn, &txn).await;
        format!("{} {:?}", outcome.stage, outcome.status)
    };
    assert!(
        ask().await.starts_with("mail Reject"),
        "not yet: {}",
        ask().await
    );
    slapd.modify(
        "dn: uid=mallory,ou=people,dc=tugraz,dc=at\nchangetype: modify\nadd: objectClass\nobjectClass: mailAltRecipient\n-\nadd: mailAlternateAddress\nmailAlternateAddress: helpdesk@tugraz.at\n",
    );
    assert!(
        ask().await.starts_with("mail Reject"),
        "the negative answer is cached for 60 s"
    );
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("configuration reloaded").await;
    assert_eq!(
        ask().await,
        "eom Accept",
        "after SIGHUP the directory is asked again"
    );
}

#[test]
fn check_config_names_the_file_line_and_key_of_an_unsupported_ldap_table_setting() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("ldap-sender-login.cf");
    std::fs::write(
        &table,
        "server_host = ldap://127.0.0.1:1\nsearch_base = dc=tugraz,dc=at\nresult_attribute = uid\nresult_format = %u@tugraz.at\n",
    )
    .unwrap();
    let config = dir.path().join("relayguard.toml");
    std::fs::write(
        &config,
        "[senders]\nsources = [\"ldap\"]\n\n[senders.ldap]\npostfix_table = \"ldap-sender-login.cf\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relayguard"))
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:4: key `result_format`: unsupported: only the default `%s` is supported",
            table.display()
        )),
        "{stderr}"
    );
}

#[test]
fn explain_names_the_source_and_the_directory_entry() {
    let slapd = Slapd::start();
    let config = slapd.dir().join("relayguard.toml");
    std::fs::write(&config, config_text_on_disk(&slapd)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relayguard"))
        .args(["explain", "--config"])
        .arg(&config)
        .args([
            "--login",
            "bob",
            "--client",
            "203.0.113.7",
            "--mail-from",
            "institute@tugraz.at",
            "--rcpt",
            "friend@example.org",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains(
            "MAIL FROM <institute@tugraz.at>: ok, owned through directory entry `uid=bob,ou=people,dc=tugraz,dc=at` (lookup `institute@tugraz.at`)"
        ),
        "{report}"
    );
}

fn config_text_on_disk(slapd: &Slapd) -> String {
    config(slapd).replace("[dkim]\n", "")
}

/// Every login of the campus directory.
const LOGINS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "dave",
    "mallory",
    "meta",
    "robot-web",
    "robot-backup",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_ldap_table_file_gives_postfix_and_relayguard_the_same_decisions() {
    let slapd = Slapd::start();
    // Postfix alone, enforcing `smtpd_sender_login_maps = ldap:` with the very file
    // relayguard reads. Logins are reported bare (no SASL local domain), as the directory
    // holds them.
    let table = slapd.postfix_table();
    let users: Vec<(&str, &str)> = LOGINS.iter().map(|l| (*l, "secret")).collect();
    let postfix = common::postfix::Postfix::start_with(
        &users,
        "",
        None,
        &format!(
            "\nsmtpd_sender_login_maps = ldap:{}\nsmtpd_sender_restrictions = reject_sender_login_mismatch\nsmtpd_delay_reject = no\nsmtpd_error_sleep_time = 0\nsmtpd_soft_error_limit = 1000\nsmtpd_hard_error_limit = 1000\n",
            table.display()
        ),
    );
    let relay = relay_from(&format!(
        "[senders]\nsources = [\"ldap\"]\n\n[senders.ldap]\npostfix_table = \"{}\"\n",
        table.display()
    ));
    let mut addresses = slapd.addresses();
    addresses.extend(["nobody@tugraz.at".to_string(), "ALICE@TUGRAZ.AT".into()]);
    let (mut compared, mut owned) = (0, 0);
    for login in LOGINS {
        let mut smtp =
            common::smtp::Smtp::connect(postfix.submit, "127.0.0.1".parse().unwrap()).await;
        assert_eq!(
            smtp.auth(login, "secret").await.code,
            235,
            "{}",
            postfix.log()
        );
        for address in &addresses {
            let postfix_owned = smtp.command(&format!("MAIL FROM:<{address}>")).await;
            smtp.command("RSET").await;
            let m = msg(login, Box::leak(address.clone().into_boxed_str()));
            let heard = send(&relay, &m).await;
            let relayguard_owned = heard.stage != "mail";
            if address.contains(['(', ')', '\\']) {
                // Not an address relayguard accepts in the envelope at all: refused as
                // malformed for everyone, whatever the directory says.
                assert!(heard.reply().starts_with("553 5.1.7"), "{address}");
                continue;
            }
            assert_eq!(
                relayguard_owned,
                postfix_owned.code == 250,
                "{login} <{address}>: Postfix said {postfix_owned:?}, relayguard {:?}",
                heard.answer
            );
            compared += 1;
            owned += usize::from(relayguard_owned);
        }
        smtp.quit().await;
    }
    assert_eq!(compared, LOGINS.len() * (addresses.len() - 2));
    // alice 3 + institute + ALICE@, bob 2 + institute, carol, mallory, meta's a*@, the two
    // robots' addresses: the directory's owners and nobody else (dave is disabled).
    assert_eq!(owned, 13, "{compared} decisions compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_end_to_end_with_the_directory_as_the_only_source() {
    use std::os::unix::fs::PermissionsExt;
    let slapd = Slapd::start();
    let table = slapd.postfix_table();
    let milter = common::Milter::with_config(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!(
            "[milter]\nsocket = \"unix:{}/relayguard.sock\"\nsocket_mode = \"0660\"\nsocket_group = \"postfix\"\n\n[senders]\nsources = [\"ldap\"]\n\n[senders.ldap]\npostfix_table = \"{}\"\n\n{}",
            dir.display(),
            table.display(),
            common::dkim::standard_setup(dir)
        )
    })
    .await;
    let postfix = common::postfix::Postfix::start(
        &[("alice", "secret"), ("mallory", "secret")],
        &milter.unix.clone().unwrap(),
    );
    let message = |from: &str, id: &str| {
        format!(
            "From: {from}\r\nTo: friend@example.org\r\nSubject: ldap e2e {id}\r\nMessage-ID: <{id}@e2e.tugraz.test>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0100\r\n\r\nHello from {id}.\r\n"
        )
    };
    let mut smtp = common::smtp::Smtp::connect(postfix.submit, "127.0.0.3".parse().unwrap()).await;
    assert_eq!(smtp.auth("alice", "secret").await.code, 235);
    let sent = common::smtp::submit(
        &mut smtp,
        "alice.liddell@tugraz.at",
        &["friend@example.org"],
        &message("Alice <institute@tugraz.at>", "ldap-1"),
    )
    .await;
    assert_eq!(sent.last().code, 250, "{sent:?}\n{}", postfix.log());
    let delivered = postfix.wait_delivered("ldap-1@e2e.tugraz.test").await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("ldap-1.eml");
    std::fs::write(&file, delivered.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    let verdict = common::dkim::verify_dkimpy(
        &[file],
        &common::dkim::records(),
        out.path(),
        common::dkim::At::Now,
    );
    assert!(verdict[0].ends_with(" ok 2"), "{verdict:?}\n{delivered}");
    smtp.quit().await;

    let mut smtp = common::smtp::Smtp::connect(postfix.submit, "127.0.0.3".parse().unwrap()).await;
    assert_eq!(smtp.auth("mallory", "secret").await.code, 235);
    let sent = common::smtp::submit(
        &mut smtp,
        "mallory@tugraz.at",
        &["victim@example.org"],
        &message("Alice <alice.liddell@tugraz.at>", "ldap-2"),
    )
    .await;
    assert_eq!(
        sent.last().text,
        "550 5.7.1 <alice.liddell@tugraz.at> is not owned by authenticated user mallory@tugraz.at",
        "{sent:?}"
    );
    smtp.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slapd_killed_under_load_cached_logins_flow_uncached_ones_tempfail_then_all_recover() {
    use relayguard::bench::{Load, Results, run};
    let mut slapd = Slapd::start_with_users(1000);
    let table = slapd.postfix_table();
    let milter = common::Milter::with_config(|dir| {
        format!(
            "[milter]\nsocket = \"unix:{}/relayguard.sock\"\n\n[senders]\nsources = [\"ldap\"]\n\n[senders.ldap]\npostfix_table = \"{}\"\n\n{}",
            dir.display(),
            table.display(),
            common::dkim::standard_setup(dir)
        )
    })
    .await;
    let load = |logins: usize, messages: usize| Load {
        target: format!("unix:{}", milter.unix.as_ref().unwrap().display()),
        connections: 8,
        messages,
        size: 2_000,
        rcpts: 1,
        login: "user".into(),
        from: "user@tugraz.at".into(),
        logins,
        client: "203.0.113.7".parse().unwrap(),
        rcpt_domain: "example.org".into(),
    };
    let summary = |r: &Results| {
        format!(
            "signed {}, unsigned {}, rejected {}, tempfailed {}",
            r.signed, r.unsigned, r.rejected, r.tempfailed
        )
    };
    let cached = || {
        milter
            .service
            .metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix("relayguard_ldap_cache_entries "))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    // Warm: user0..user99 are asked once and cached.
    let warm = run(&load(100, 50)).await.unwrap();
    assert_eq!(warm.signed, 400, "{}", summary(&warm));
    assert_eq!(cached(), 100);

    // user0..user999 (each twice), and slapd dies while the load runs, once 50 more
    // logins were seen.
    let busy = load(1000, 250);
    let running = tokio::spawn(async move { run(&busy).await });
    while cached() < 150 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    slapd.stop();
    let during = running.await.unwrap().unwrap();
    let total = 8 * 250;
    assert_eq!(
        (during.rejected, during.unsigned),
        (0, 0),
        "nothing refused as spoofed, nothing accepted unchecked: {}",
        summary(&during)
    );
    assert_eq!(during.signed + during.tempfailed, total);
    // Every message of user0..user99 (a tenth of them) was signed from the cache.
    assert!(
        during.signed >= total / 10 + 50,
        "cached logins kept flowing: {}",
        summary(&during)
    );
    assert!(
        during.tempfailed > total / 2,
        "uncached logins got 451: {}",
        summary(&during)
    );

    slapd.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = run(&load(1000, 250)).await.unwrap();
    assert_eq!(after.signed, total, "all recovered: {}", summary(&after));
    let metrics = milter.service.metrics_text();
    assert!(lookups(&metrics, "error") > 0, "{metrics}");
    assert_eq!(cached(), 1000, "{metrics}");
}

#[tokio::test]
async fn a_reload_never_drops_the_directory_nor_reads_a_truncated_table() {
    let slapd = Slapd::start();
    let table = slapd.postfix_table();
    let milter = common::Milter::with_config(|dir| {
        format!(
            "[milter]\nsocket = \"unix:{}/relayguard.sock\"\n\n[senders]\nsources = [\"ldap\", \"own_local_part\"]\n\n[senders.ldap]\npostfix_table = \"{}\"\n",
            dir.display(),
            table.display()
        )
    })
    .await;
    let good = std::fs::read_to_string(&table).unwrap();
    // Half-written (as a non-atomic copy leaves it): refused, the directory stays in use.
    std::fs::write(&table, "").unwrap();
    let e = milter.service.reload().unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:1: the file has no settings (empty or truncated); refusing to query a directory on defaults",
            table.display()
        )
    );
    std::fs::write(&table, &good).unwrap();
    // relayguard.toml loses its ldap source: refused too.
    let config = milter.dir.path().join("relayguard.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let without = text
        .replace("sources = [\"ldap\", \"own_local_part\"]", "")
        .replace(
            &format!("[senders.ldap]\npostfix_table = \"{}\"\n", table.display()),
            "",
        );
    std::fs::write(&config, without).unwrap();
    let e = milter.service.reload().unwrap_err().to_string();
    assert!(
        e.contains("ownership source `ldap` is missing from senders.sources: a reload may not drop a source"),
        "{e}"
    );
    std::fs::write(&config, text).unwrap();
    milter.service.reload().unwrap();
}

/// The logins the directory names for `key`, or why it could not answer.
async fn logins(directory: &relayguard::ldap::Directory, key: &str) -> Result<Vec<String>, String> {
    directory
        .lookup(key)
        .await
        .map(|owners| owners.iter().map(|o| o.login.clone()).collect())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn servers_are_tried_in_order() {
    let slapd = Slapd::start();
    let dead = common::free_port();
    let directory = directory_with(&slapd, |text| {
        text.replace(
            "server_host = ldap://",
            &format!("server_host = ldap://127.0.0.1:{dead}, ldap://"),
        )
    });
    assert_eq!(
        logins(&directory, "institute@tugraz.at").await.unwrap(),
        ["alice", "bob"]
    );
    let nowhere = directory_with(&slapd, |text| {
        text.replace(&slapd.url(), &format!("ldap://127.0.0.1:{dead}"))
    });
    let e = logins(&nowhere, "alice@tugraz.at").await.unwrap_err();
    assert!(
        e.starts_with(&format!(
            "ownership source unavailable: directory: ldap://127.0.0.1:{dead}: "
        )),
        "{e}"
    );
}

#[tokio::test]
async fn start_tls_trusts_the_configured_ca_and_no_other() {
    let slapd = Slapd::start_with_tls();
    let ca = slapd.dir().join("ca.pem");
    let trusted = directory_with(&slapd, |text| {
        format!(
            "{text}start_tls = yes\ntls_ca_cert_file = {}\n",
            ca.display()
        )
    });
    assert_eq!(
        logins(&trusted, "alice@tugraz.at").await.unwrap(),
        ["alice"]
    );

    common::slapd::make_certificates(slapd.dir(), "other-ca");
    let other = slapd.dir().join("other-ca.pem");
    let untrusted = directory_with(&slapd, |text| {
        format!(
            "{text}start_tls = yes\ntls_ca_cert_file = {}\n",
            other.display()
        )
    });
    let e = logins(&untrusted, "alice@tugraz.at").await.unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    // As Postfix's tls_require_cert = no: encrypted, not verified (check-config warns).
    let unverified = directory_with(&slapd, |text| {
        format!(
            "{text}start_tls = yes\ntls_ca_cert_file = {}\ntls_require_cert = no\n",
            other.display()
        )
    });
    assert_eq!(
        logins(&unverified, "alice@tugraz.at").await.unwrap(),
        ["alice"]
    );
}

#[tokio::test]
async fn a_robot_from_the_directory_is_masqueraded_to_the_address_it_is_assigned() {
    let slapd = Slapd::start();
    let relay = relay_from(&config(&slapd).replace(
        "[dkim]",
        "[senders.masquerade.\"robot-web\"]\naddress = \"noreply-web@tugraz.at\"\nfrom = [\"root@*\"]\n\n[dkim]",
    ));
    let cron = Msg {
        headers: vec![("From", b"root@web1.tugraz.at"), ("Subject", b"cron")],
        ..msg("robot-web", "root@web1.tugraz.at")
    };
    assert_eq!(outcome(&relay, &cron).await, signed());
    let record = relay.last();
    assert_eq!(record["masqueraded"]["mail_from"], "<root@web1.tugraz.at>");
    assert_eq!(record["mail_from"], "<noreply-web@tugraz.at>", "{record}");
}

#[test]
fn check_config_asks_the_directory_and_warns_when_it_cannot_bind() {
    let slapd = Slapd::start();
    let config = slapd.dir().join("relayguard.toml");
    std::fs::write(&config, config_text_on_disk(&slapd)).unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_relayguard"))
            .args(["check-config", "--service-user", "root", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("directory: search base `dc=tugraz,dc=at` readable"),
        "{stdout}"
    );
    let table = slapd.postfix_table();
    let text = std::fs::read_to_string(&table).unwrap();
    std::fs::write(
        &table,
        text.replace("bind_pw = milter-secret", "bind_pw = wrong"),
    )
    .unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: {}: directory: {}: bind as cn=milter,ou=services,dc=tugraz,dc=at:",
            table.display(),
            slapd.url()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalidCredentials") || stderr.contains("rc=49"),
        "{stderr}"
    );
}
