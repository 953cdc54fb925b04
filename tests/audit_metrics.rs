//! Runbook for auditors and operators: the audit record of every verdict, the report over
//! rotated and gzip'd files, and the metrics endpoint counting what was sent.

mod common;

use common::dkim::{sign, standard_setup};
use common::{Milter, Txn, config_text, send};
use indymilter_test::Status;
use relayguard::audit::report::{Filter, Report};
use serde_json::Value;
use std::io::Write;

fn audited(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "{}\n{}\n[audit]\nfile = \"audit.log\"\n{extra}\n",
        config_text("inet:0@127.0.0.1"),
        standard_setup(dir)
    )
}

fn records(milter: &Milter) -> Vec<Value> {
    std::fs::read_to_string(milter.file("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verdict_is_audited_and_counted() {
    let limits = "[limits]\ncontact = \"helpdesk@tugraz.at\"\nlock_file = \"locks.json\"\n[limits.external]\nrecipients_per_message = 1\n[limits.lock]\nownership_refusals = 1\n";
    let milter = Milter::with_config(|dir| audited(dir, limits)).await;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    tokio::spawn(relayguard::runtime::http::serve(
        metrics,
        milter.service.clone(),
    ));

    // accept, signed twice
    let mut conn = milter.connect().await;
    let raw = b"From: Alice <alice@tugraz.at>\r\nTo: friend@example.org\r\nSubject: audited\r\n\r\nhello\r\n";
    let (status, signatures) = sign(&mut conn, "alice", "<alice@tugraz.at>", raw).await;
    assert_eq!((status, signatures.len()), (Status::Accept, 2));
    conn.close().await.unwrap();
    // reject: spoofed From
    let mut conn = milter.connect().await;
    send(
        &mut conn,
        &Txn::authenticated("mallory", "<mallory@tugraz.at>", "rector@tugraz.at"),
    )
    .await;
    conn.close().await.unwrap();
    // reject: unauthenticated outsider
    let mut conn = milter.connect().await;
    send(
        &mut conn,
        &Txn::unauthenticated("203.0.113.9", "<x@tugraz.at>", vec!["<admin@tugraz.at>"]),
    )
    .await;
    conn.close().await.unwrap();
    // reject one recipient of an internal server
    let mut conn = milter.connect().await;
    send(
        &mut conn,
        &Txn::unauthenticated(
            "129.27.1.1",
            "<root@srv.tugraz.at>",
            vec!["<admin@tugraz.at>", "<Someone@Gmail.com>"],
        ),
    )
    .await;
    conn.close().await.unwrap();

    // lock: mallory's spoof above locked the account (ownership_refusals = 1)
    let mut conn = milter.connect().await;
    send(
        &mut conn,
        &Txn::authenticated("mallory", "<mallory@tugraz.at>", "mallory@tugraz.at"),
    )
    .await;
    conn.close().await.unwrap();
    // tempfail: a second recipient over the external limit of 1
    let mut conn = milter.connect().await;
    let mut two = Txn::authenticated("bob", "<bob@tugraz.at>", "bob@tugraz.at");
    two.rcpts = vec!["<one@example.org>", "<two@example.net>"];
    send(&mut conn, &two).await;
    conn.close().await.unwrap();

    let records = records(&milter);
    assert_eq!(records.len(), 8, "{records:#?}");
    let lock = &records[5];
    assert_eq!(
        (
            lock["verdict"].as_str(),
            lock["reason"].as_str(),
            lock["login"].as_str()
        ),
        (Some("lock"), Some("account_locked"), Some("mallory"))
    );
    assert_eq!(
        lock["text"],
        "550 5.7.1 account mallory is locked (1 sender-ownership refusals within 10 minutes); contact helpdesk@tugraz.at"
    );
    let limit = &records[6];
    assert_eq!(
        (limit["verdict"].as_str(), limit["reason"].as_str()),
        (Some("tempfail"), Some("limit_recipients_per_message"))
    );
    assert_eq!(limit["rcpt_domains"], serde_json::json!(["example.net"]));
    assert_eq!(limit["limits"]["recipients_per_message"], 2);
    assert_eq!(
        limit["text"],
        "452 4.5.3 too many recipients: at most 1 per message"
    );
    let bob = &records[7];
    assert_eq!(
        (bob["verdict"].as_str(), bob["rcpt_count"].as_u64()),
        (Some("accept"), Some(1))
    );
    // The counter shows the recipients attempted, the refused one included.
    assert_eq!(bob["limits"]["recipients_per_message"], 2);
    let signed = &records[0];
    assert_eq!(signed["verdict"], "accept");
    assert_eq!(signed["reason"], "ok");
    assert_eq!(signed["login"], "alice");
    assert_eq!(signed["client"], "203.0.113.7");
    assert_eq!(signed["client_class"], "authenticated");
    assert_eq!(signed["mail_from"], "<alice@tugraz.at>");
    assert_eq!(signed["header_from"], "alice@tugraz.at");
    assert_eq!(signed["queue_id"], "4Q1");
    assert_eq!(signed["rcpt_count"], 1);
    assert_eq!(signed["rcpt_domains"], serde_json::json!(["example.org"]));
    assert!(
        signed.get("rcpts").is_none(),
        "recipient local parts are private by default"
    );
    assert_eq!(signed["size"], raw.len() as u64);
    assert_eq!(signed["host"], relayguard::audit::host_name());
    assert!(signed["time"].as_str().unwrap().ends_with('Z'));
    let dkim: Vec<(String, String)> = signed["dkim"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["selector"].as_str().unwrap().to_string(),
                d["algorithm"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        dkim.contains(&("rsa-a".into(), "rsa-sha256".into()))
            && dkim.contains(&("ed-a".into(), "ed25519-sha256".into())),
        "{dkim:?}"
    );

    let spoof = &records[1];
    assert_eq!(
        (spoof["verdict"].as_str(), spoof["reason"].as_str()),
        (Some("reject"), Some("sender_not_owned"))
    );
    assert_eq!(
        spoof["text"],
        "550 5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory"
    );
    assert_eq!(spoof["login"], "mallory");
    let outsider = &records[2];
    assert_eq!(
        (
            outsider["reason"].as_str(),
            outsider["client_class"].as_str()
        ),
        (Some("auth_required"), Some("external"))
    );
    assert!(outsider["login"].is_null());
    let rcpt = &records[3];
    assert_eq!(
        (rcpt["reason"].as_str(), rcpt["rcpt_count"].as_u64()),
        (Some("recipient_not_protected"), Some(1))
    );
    assert_eq!(rcpt["rcpt_domains"], serde_json::json!(["gmail.com"]));
    let internal = &records[4];
    assert_eq!(
        (
            internal["verdict"].as_str(),
            internal["client_class"].as_str()
        ),
        (Some("accept"), Some("internal"))
    );
    assert_eq!(
        internal["dkim"].as_array().unwrap().len(),
        2,
        "status mail from a protected domain is signed"
    );

    // The metrics count the same.
    let text = common::http_get(metrics_addr, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for line in [
        "relayguard_messages_total{verdict=\"accept\",reason=\"ok\"} 3",
        "relayguard_messages_total{verdict=\"lock\",reason=\"account_locked\"} 1",
        "relayguard_messages_total{verdict=\"tempfail\",reason=\"limit_recipients_per_message\"} 1",
        "relayguard_limit_hits_total{limit=\"recipients_per_message\"} 1",
        "relayguard_messages_total{verdict=\"reject\",reason=\"sender_not_owned\"} 1",
        "relayguard_messages_total{verdict=\"reject\",reason=\"auth_required\"} 1",
        "relayguard_messages_total{verdict=\"reject\",reason=\"recipient_not_protected\"} 1",
        // alice's and bob's messages and the internal server's status mail (From root@srv.tugraz.at).
        "relayguard_signatures_total{domain=\"tugraz.at\",selector=\"rsa-a\",algorithm=\"rsa-sha256\"} 3",
        "relayguard_signatures_total{domain=\"tugraz.at\",selector=\"ed-a\",algorithm=\"ed25519-sha256\"} 3",
        "relayguard_messages_in_flight 0",
        "relayguard_signing_seconds_count 3",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    assert!(text.contains("relayguard_key_age_seconds{domain=\"tugraz.at\",selector=\"rsa-a\",algorithm=\"rsa-sha256\"}"), "{text}");
    assert!(
        common::http_get(metrics_addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200 OK")
    );

    // A broken key set is refused; health stays good because the old set is still valid.
    std::fs::write(milter.file("keys/tugraz.at.rsa-a.pem"), "garbage").unwrap();
    assert!(milter.service.reload().is_err());
    assert!(
        common::http_get(metrics_addr, "/metrics")
            .await
            .contains("relayguard_reloads_total{result=\"failed\"} 1")
    );
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_a_domain_without_key() {
    let milter = Milter::with_config(|dir| {
        let text = audited(dir, "");
        // tu-graz.ac.at loses its key: the service runs, but is unhealthy.
        let schedule = std::fs::read_to_string(dir.join("selectors.toml")).unwrap();
        let cut = schedule.rfind("[[selector]]").unwrap();
        std::fs::write(dir.join("selectors.toml"), &schedule[..cut]).unwrap();
        text
    })
    .await;
    let health = milter.service.health().unwrap_err();
    assert_eq!(
        health,
        vec!["tu-graz.ac.at: no valid active DKIM key".to_string()]
    );
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_audit_log_tempfails_or_carries_on_as_configured() {
    for (on_error, expect_accept) in [("tempfail", false), ("continue", true)] {
        let milter = Milter::with_config(|_| {
            format!(
                "{}\n[audit]\nfile = \"missing-dir/audit.log\"\non_error = \"{on_error}\"\n",
                config_text("inet:0@127.0.0.1")
            )
        })
        .await;
        let mut conn = milter.connect().await;
        let outcome = send(
            &mut conn,
            &Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
        )
        .await;
        if expect_accept {
            assert_eq!(outcome.status, Status::Accept);
        } else {
            assert_eq!(
                outcome.reply().as_deref(),
                Some("451 4.3.0 temporary local problem (audit log unwritable), try again later")
            );
        }
        assert!(
            milter
                .service
                .metrics_text()
                .contains("relayguard_audit_failures_total 1")
        );
        conn.close().await.unwrap();
        milter.stop().await.unwrap();
    }
}

fn record(
    login: Option<&str>,
    verdict: &str,
    reason: &str,
    from: &str,
    signed: bool,
    time: &str,
) -> String {
    let dkim = if signed {
        r#"[{"domain":"tugraz.at","selector":"s","algorithm":"rsa-sha256"}]"#
    } else {
        "[]"
    };
    let class = if login.is_some() {
        "authenticated"
    } else {
        "internal"
    };
    let login = login.map(|l| format!("\"{l}\"")).unwrap_or("null".into());
    format!(
        r#"{{"time":"{time}","host":"relay1","queue_id":"Q","client":"203.0.113.7","client_class":"{class}","login":{login},"mail_from":"<{from}>","header_from":"{from}","header_sender":null,"rcpt_count":3,"rcpt_domains":["example.org"],"size":100,"verdict":"{verdict}","reason":"{reason}","text":"t","dkim":{dkim}}}"#
    )
}

#[test]
fn report_counts_plain_rotated_and_gzipped_files_and_skips_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let gzipped = dir.path().join("audit.log.2.gz");
    let mut a = String::new();
    for i in 0..10 {
        a += &record(
            Some("alice"),
            "accept",
            "ok",
            if i % 2 == 0 {
                "alice@tugraz.at"
            } else {
                "office@tugraz.at"
            },
            true,
            "2026-11-28T10:00:00.000Z",
        );
        a.push('\n');
    }
    a += "this is not json\n";
    a += &record(
        Some("mallory"),
        "reject",
        "sender_not_owned",
        "rector@tugraz.at",
        false,
        "2026-11-28T10:05:00.000Z",
    );
    a.push('\n');
    std::fs::write(&plain, a).unwrap();
    let mut b = String::new();
    for _ in 0..3 {
        b += &record(
            Some("mallory"),
            "reject",
            "sender_not_owned",
            "rector@tugraz.at",
            false,
            "2026-11-27T10:00:00.000Z",
        );
        b.push('\n');
    }
    b += &record(
        Some("mallory"),
        "reject",
        "limit_messages_per_hour",
        "mallory@tugraz.at",
        false,
        "2026-11-27T11:00:00.000Z",
    );
    b += "\n{\"truncated\": \n";
    std::fs::write(&rotated, b).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for _ in 0..4 {
        gz.write_all(
            record(
                None,
                "accept",
                "ok",
                "root@srv.tugraz.at",
                false,
                "2026-11-26T10:00:00.000Z",
            )
            .as_bytes(),
        )
        .unwrap();
        gz.write_all(b"\n").unwrap();
    }
    gz.write_all(
        record(
            Some("bob"),
            "lock",
            "account_locked",
            "bob@tugraz.at",
            false,
            "2026-11-26T10:00:00.000Z",
        )
        .as_bytes(),
    )
    .unwrap();
    gz.write_all(b"\n").unwrap();
    std::fs::write(&gzipped, gz.finish().unwrap()).unwrap();

    let files = vec![gzipped.clone(), rotated.clone(), plain.clone()];
    let report = Report::read(&files, &Filter::default()).unwrap();
    assert_eq!(report.records, 20);
    let alice = &report.logins["alice"];
    assert_eq!(
        (
            alice.messages,
            alice.recipients,
            alice.from_addresses.len(),
            alice.unsigned
        ),
        (10, 30, 2, 0)
    );
    let mallory = &report.logins["mallory"];
    assert_eq!(mallory.refusals["sender_not_owned"], 4);
    assert_eq!(
        (mallory.refused(), mallory.limit_hits, mallory.messages),
        (5, 1, 0)
    );
    let internal = &report.logins["(internal)"];
    assert_eq!((internal.messages, internal.unsigned), (4, 4));
    assert_eq!(report.logins["bob"].locks, 1);
    assert_eq!(report.top_refused(2), vec![("mallory", 5), ("bob", 1)]);
    let skipped: Vec<(String, usize)> = report
        .skipped
        .iter()
        .map(|s| (s.file.clone(), s.line))
        .collect();
    assert_eq!(
        skipped,
        vec![
            (rotated.display().to_string(), 5),
            (plain.display().to_string(), 11)
        ]
    );

    // Filters.
    let since = Filter {
        since: Some(1_764_324_000 + 365 * 86_400),
        ..Default::default()
    }; // 2026-11-28T10:00Z
    let report = Report::read(&files, &since).unwrap();
    assert_eq!(report.records, 11);
    let only = Filter {
        login: Some("mallory".into()),
        ..Default::default()
    };
    assert_eq!(Report::read(&files, &only).unwrap().records, 5);

    // The command line renders all three formats.
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_relayguard"))
            .args(["audit", "report", "--format", format])
            .args(&files)
            .output()
            .unwrap();
        assert!(out.status.success());
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (table, warnings) = run("table");
    assert!(
        table.contains("20 records, 4 logins, 2 malformed lines skipped"),
        "{table}"
    );
    assert!(table.contains("accepted but unsigned: 4"), "{table}");
    assert!(
        warnings.contains(&format!(
            "{}:5: skipped malformed record",
            rotated.display()
        )),
        "{warnings}"
    );
    let (json, _) = run("json");
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["logins"]["alice"]["messages"], 10);
    assert_eq!(doc["top_refused"][0]["login"], "mallory");
    let (csv, _) = run("csv");
    assert!(
        csv.contains("\nmallory,0,0,0,5,1,0,0,limit_messages_per_hour=1;sender_not_owned=4,0,,0\n"),
        "{csv}"
    );
}
