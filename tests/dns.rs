//! Runbook: a key signs only once DNS serves it. A real BIND on loopback is the zone's
//! primary; relayguard (`require_dns = true`) checks each selector's record through it and
//! signs with the newest selector whose record matches its key. Every signed message is
//! verified by dkimpy with the records `dig` fetches from that BIND.

mod common;

use common::Milter;
use common::bind::Bind;
use indymilter_test::Status;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// 2026-06-01T00:00:00Z.
const T0: i64 = 1_780_272_000;
/// rsa-b's active_from: an hour later.
const T1: i64 = T0 + 3_600;

/// The DNS record (`v=DKIM1; k=rsa; p=…`) of a fixture key.
fn record_of(file: &str) -> String {
    let pem = std::fs::read(format!(
        "{}/tests/fixtures/keys/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    relayguard::dkim::keys::parse(
        std::path::Path::new(file),
        &pem,
        relayguard::dkim::schedule::Algorithm::RsaSha256,
    )
    .unwrap()
    .dns_record()
}

/// A relay signing tugraz.at with rsa-a (since January) and rsa-b (from T1; rsa-a retires
/// a week later), activation waiting for DNS, records checked at `bind`; clock at `now`.
async fn relay(bind: &Bind, now: Arc<AtomicI64>) -> Milter {
    let port = bind.port;
    Milter::with_clock(
        |dir| {
            let keys = dir.join("keys");
            common::dkim::install_key(&keys, "tugraz.at.rsa-a.pem");
            common::dkim::install_key(&keys, "tugraz.at.rsa-b.pem");
            let schedule = [
                common::dkim::selector(
                    "tugraz.at",
                    "rsa-a",
                    "rsa-sha256",
                    "tugraz.at.rsa-a.pem",
                    "2026-01-01T00:00:00Z",
                    Some("2026-06-08T01:00:00Z"),
                ),
                common::dkim::selector(
                    "tugraz.at",
                    "rsa-b",
                    "rsa-sha256",
                    "tugraz.at.rsa-b.pem",
                    "2026-06-01T01:00:00Z",
                    None,
                ),
            ]
            .concat();
            std::fs::write(dir.join("selectors.toml"), schedule).unwrap();
            format!(
                "{}\n[domains]\nprotected = [\"tugraz.at\"]\n\n[dkim]\nselectors = \"selectors.toml\"\nkeys_dir = \"keys\"\nrequire_dns = true\n\n[dkim.dns]\nnameservers = [\"127.0.0.1:{port}\"]\ntimeout_ms = 300\n",
                common::config_text("inet:0@127.0.0.1")
            )
        },
        Some(Arc::new(move || now.load(Ordering::SeqCst) * 1000)),
    )
    .await
}

/// Sends a message from alice; the selectors it was signed with, after dkimpy verified
/// it against what BIND serves now.
async fn signed_by(milter: &Milter, bind: &Bind) -> Result<Vec<String>, Status> {
    let raw = b"From: Alice <alice@tugraz.at>\r\nTo: friend@example.org\r\nSubject: rotation\r\nDate: Mon, 1 Jun 2026 00:00:00 +0000\r\nMessage-ID: <r@tugraz.at>\r\n\r\nhello\r\n";
    let mut conn = milter.connect().await;
    let (status, signatures) =
        common::dkim::sign(&mut conn, "alice", "<alice@tugraz.at>", raw).await;
    if status != Status::Accept {
        return Err(status);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    std::fs::write(&file, common::dkim::signed_message(&signatures, raw)).unwrap();
    let mut records = HashMap::new();
    for selector in ["rsa-a", "rsa-b"] {
        if let Some(value) = bind
            .dig("TXT", &format!("{selector}._domainkey.tugraz.at"))
            .pop()
        {
            records.insert(format!("{selector}._domainkey.tugraz.at."), value);
        }
    }
    let verdict = common::dkim::verify_dkimpy(&[file], &records, dir.path());
    assert_eq!(
        verdict[0],
        format!("{} ok 1", dir.path().join("m.eml").display()),
        "dkimpy"
    );
    Ok(signatures
        .iter()
        .map(|s| {
            s.split(';')
                .find_map(|t| t.trim().strip_prefix("s="))
                .unwrap()
                .to_string()
        })
        .collect())
}

fn metric(milter: &Milter, line: &str) -> bool {
    milter.service.metrics_text().contains(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_selector_signs_only_once_its_record_resolves() {
    let bind = Bind::start();
    bind.publish("rsa-a", &record_of("tugraz.at.rsa-a.pem"));
    let now = Arc::new(AtomicI64::new(T0));
    let milter = relay(&bind, now.clone()).await;
    milter.service.check_dns().await;
    assert_eq!(signed_by(&milter, &bind).await.unwrap(), ["rsa-a"]);
    assert!(metric(
        &milter,
        "relayguard_dkim_dns_state{domain=\"tugraz.at\",selector=\"rsa-a\",state=\"published\"} 1"
    ));
    assert!(metric(
        &milter,
        "relayguard_dkim_dns_state{domain=\"tugraz.at\",selector=\"rsa-b\",state=\"missing\"} 1"
    ));

    // rsa-b is due, its record is not there: rsa-a keeps signing, and says why.
    now.store(T1 + 1, Ordering::SeqCst);
    milter.service.check_dns().await;
    assert_eq!(signed_by(&milter, &bind).await.unwrap(), ["rsa-a"]);
    assert!(metric(
        &milter,
        "relayguard_dkim_signing_fallback{domain=\"tugraz.at\",selector=\"rsa-b\",reason=\"waiting_for_dns\"} 1"
    ));
    assert_eq!(
        milter.service.health(),
        Err(vec![
            "tugraz.at: the DNS record of active selector rsa-b is missing".to_string()
        ])
    );

    // The record appears: the next check activates rsa-b.
    bind.publish("rsa-b", &record_of("tugraz.at.rsa-b.pem"));
    milter.service.check_dns().await;
    assert_eq!(signed_by(&milter, &bind).await.unwrap(), ["rsa-b"]);
    assert_eq!(milter.service.health(), Ok(()));
    assert!(!metric(&milter, "relayguard_dkim_signing_fallback{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_another_key_never_activates() {
    let bind = Bind::start();
    bind.publish("rsa-a", &record_of("tugraz.at.rsa-a.pem"));
    // The operator pasted the old key's record under the new name.
    bind.publish("rsa-b", &record_of("tugraz.at.rsa-a.pem"));
    let now = Arc::new(AtomicI64::new(T1 + 60));
    let milter = relay(&bind, now.clone()).await;
    milter.service.check_dns().await;
    assert_eq!(signed_by(&milter, &bind).await.unwrap(), ["rsa-a"]);
    assert_eq!(
        milter.service.health(),
        Err(vec![
            "tugraz.at: the DNS record of active selector rsa-b is mismatch (p= is another key)"
                .to_string()
        ])
    );
    // Past rsa-a's retire_at it signs on: unsigned mail would be worse.
    now.store(T1 + 8 * 86_400, Ordering::SeqCst);
    milter.service.check_dns().await;
    assert_eq!(signed_by(&milter, &bind).await.unwrap(), ["rsa-a"]);
    assert!(metric(
        &milter,
        "relayguard_dkim_signing_fallback{domain=\"tugraz.at\",selector=\"rsa-a\",reason=\"past_retire_at\"} 1"
    ));
    // A revoked record (p= empty) is told apart.
    bind.publish("rsa-b", "v=DKIM1; k=rsa; p=");
    milter.service.check_dns().await;
    assert!(metric(
        &milter,
        "relayguard_dkim_dns_state{domain=\"tugraz.at\",selector=\"rsa-b\",state=\"revoked\"} 1"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_deleted_under_the_signing_selector_falls_back_and_flips_healthz() {
    let bind = Bind::start();
    bind.publish("rsa-a", &record_of("tugraz.at.rsa-a.pem"));
    bind.publish("rsa-b", &record_of("tugraz.at.rsa-b.pem"));
    let now = Arc::new(AtomicI64::new(T1 + 60));
    let milter = relay(&bind, now).await;
    milter.service.check_dns().await;
    assert_eq!(signed_by(&milter, &bind).await.unwrap(), ["rsa-b"]);
    assert_eq!(milter.service.health(), Ok(()));
    bind.unpublish("rsa-b");
    milter.service.check_dns().await;
    assert_eq!(signed_by(&milter, &bind).await.unwrap(), ["rsa-a"]);
    assert!(milter.service.health().is_err());
    // Nothing published at all: nothing signs, and the message waits (without_key).
    bind.unpublish("rsa-a");
    milter.service.check_dns().await;
    assert!(matches!(
        signed_by(&milter, &bind).await,
        Err(Status::Tempfail { .. })
    ));
    assert_eq!(
        milter.service.health().unwrap_err()[0],
        "tugraz.at: no valid active DKIM key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_resolver_keeps_the_states_it_knew() {
    let mut bind = Bind::start();
    bind.publish("rsa-a", &record_of("tugraz.at.rsa-a.pem"));
    bind.publish("rsa-b", &record_of("tugraz.at.rsa-b.pem"));
    let now = Arc::new(AtomicI64::new(T1 + 60));
    let milter = relay(&bind, now).await;
    milter.service.check_dns().await;
    assert_eq!(signed_by(&milter, &bind).await.unwrap(), ["rsa-b"]);
    let published =
        "relayguard_dkim_dns_state{domain=\"tugraz.at\",selector=\"rsa-b\",state=\"published\"} 1";
    assert!(metric(&milter, published));
    bind.stop();
    for _ in 0..3 {
        milter.service.check_dns().await;
        assert!(metric(&milter, published), "no flapping to missing");
        assert_eq!(milter.service.health(), Ok(()));
    }
    bind.restart();
    assert_eq!(signed_by(&milter, &bind).await.unwrap(), ["rsa-b"]);
}
