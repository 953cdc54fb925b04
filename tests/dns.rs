//! Runbook: a key signs only once DNS serves it. A real BIND on loopback is the zone's
//! primary; relayguard (`require_dns = true`) checks each selector's record through it and
//! signs with the newest selector whose record matches its key. Every signed message is
//! verified by dkimpy with the records `dig` fetches from that BIND.
//!
//! Dates: the relay runs on a pinned clock (its schedule, its DNS checks) and dkimpy judges
//! t= and x= on that same clock, so the results do not depend on the day the suite runs.
//! BIND and the relay's TSIG signatures both use the machine's real clock, and RFC 8945
//! lets them differ by only 300 s. This suite therefore does not run in `.ci/run`'s pass
//! under libfaketime (`scripts/test-dates`): BIND's tools link jemalloc, which hangs inside
//! libfaketime's start-up, and a BIND on the real clock would refuse (BADTIME) every update
//! the faked relay signs.

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
    let selectors: Vec<String> = signatures
        .iter()
        .map(|s| {
            s.split(';')
                .find_map(|t| t.trim().strip_prefix("s="))
                .unwrap()
                .to_string()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    std::fs::write(&file, common::dkim::signed_message(&signatures, raw)).unwrap();
    let records = zone_records(bind, &selectors);
    let at = milter.service.now();
    let verdict = common::dkim::verify_dkimpy(
        std::slice::from_ref(&file),
        &records,
        dir.path(),
        common::dkim::At::Unix(at),
    );
    assert_eq!(
        verdict[0],
        format!("{} ok {}", file.display(), signatures.len()),
        "dkimpy, with the records BIND serves: {records:?}"
    );
    Ok(selectors)
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
    // Waiting is not unhealthy: tugraz.at has a valid key signing.
    assert_eq!(milter.service.health(), Ok(()));

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
    // rsa-b waits (its record never carried its key): healthy, the alert on
    // relayguard_dkim_signing_fallback tells the operator.
    assert_eq!(milter.service.health(), Ok(()));
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

#[tokio::test]
async fn records_go_into_the_zone_by_tsig_signed_updates_only() {
    use relayguard::dns::update::{TsigKey, Updater, ZoneUpdate};
    let bind = Bind::start();
    let key = TsigKey::parse(&std::fs::read_to_string(bind.key_file()).unwrap()).unwrap();
    let updater = Updater::new(
        bind.addr(),
        &["tugraz.at".to_string()],
        key,
        300,
        std::time::Duration::from_secs(2),
    )
    .unwrap();
    // An RSA-2048 record is longer than one TXT string (255 bytes): it is split, and a
    // resolver joins it back.
    let record = record_of("tugraz.at.rsa-a.pem");
    assert!(record.len() > 255);
    updater
        .replace_txt("s1._domainkey.tugraz.at", &record)
        .await
        .unwrap();
    assert_eq!(
        bind.dig("TXT", "s1._domainkey.tugraz.at"),
        std::slice::from_ref(&record)
    );
    let replaced = record_of("tugraz.at.rsa-b.pem");
    updater
        .replace_txt("s1._domainkey.tugraz.at", &replaced)
        .await
        .unwrap();
    assert_eq!(bind.dig("TXT", "s1._domainkey.tugraz.at"), [replaced]);
    updater.delete_txt("s1._domainkey.tugraz.at").await.unwrap();
    assert!(bind.dig("TXT", "s1._domainkey.tugraz.at").is_empty());
    // A key the server does not know is refused, and nothing changes.
    let forged = TsigKey::parse(&format!(
        "key \"{}\" {{ algorithm hmac-sha256; secret \"Zm9yZ2VkIGZvcmdlZCBmb3JnZWQ=\"; }};",
        common::bind::KEY_NAME
    ))
    .unwrap();
    let forger = Updater::new(
        bind.addr(),
        &["tugraz.at".to_string()],
        forged,
        300,
        std::time::Duration::from_secs(2),
    )
    .unwrap();
    let e = forger
        .replace_txt("s2._domainkey.tugraz.at", &record)
        .await
        .unwrap_err();
    assert!(!e.is_empty());
    assert!(bind.dig("TXT", "s2._domainkey.tugraz.at").is_empty());
    // A name outside the zones is not sent at all.
    assert!(
        updater
            .replace_txt("s1._domainkey.example.org", &record)
            .await
            .unwrap_err()
            .contains("in none of the zones")
    );
}

/// 2026-01-10T00:00:00Z.
const JAN10: i64 = 1_768_003_200;
const DAY: i64 = 86_400;

/// The TXT records BIND serves for `selectors` (as dkimpy's record table).
fn zone_records(bind: &Bind, selectors: &[String]) -> HashMap<String, String> {
    selectors
        .iter()
        .filter_map(|s| {
            bind.dig("TXT", &format!("{s}._domainkey.tugraz.at"))
                .pop()
                .map(|v| (format!("{s}._domainkey.tugraz.at."), v))
        })
        .collect()
}

/// The selectors in a schedule file.
fn scheduled(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("selectors.toml")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_runs_itself_for_months_and_every_message_verifies() {
    let bind = Bind::start();
    let now = Arc::new(AtomicI64::new(JAN10));
    let (port, key_file) = (bind.port, bind.key_file());
    let milter = Milter::with_clock(
        |dir| {
            let keys = dir.join("keys");
            common::dkim::install_key(&keys, "tugraz.at.rsa-a.pem");
            common::dkim::install_key(&keys, "tugraz.at.ed-a.pem");
            std::fs::write(
                dir.join("selectors.toml"),
                [
                    "# tugraz.at: rotated by relayguard\n".to_string(),
                    common::dkim::selector("tugraz.at", "rsa-a", "rsa-sha256", "tugraz.at.rsa-a.pem", "2026-01-01T00:00:00Z", None),
                    common::dkim::selector("tugraz.at", "ed-a", "ed25519-sha256", "tugraz.at.ed-a.pem", "2026-01-01T00:00:00Z", None),
                ]
                .concat(),
            )
            .unwrap();
            std::fs::copy(&key_file, dir.join("tsig.key")).unwrap();
            format!(
                "{}\n[domains]\nprotected = [\"tugraz.at\"]\n\n[audit]\nfile = \"audit.log\"\n\n[dkim]\nselectors = \"selectors.toml\"\nkeys_dir = \"keys\"\nrequire_dns = true\n\n[dkim.dns]\nnameservers = [\"127.0.0.1:{port}\"]\ntimeout_ms = 500\n\n[dkim.publish]\nserver = \"127.0.0.1:{port}\"\nkey_file = \"tsig.key\"\nremove_after_days = 7\n\n[dkim.rotation]\nevery_days = 30\nlead_days = 5\noverlap_days = 3\nalgorithms = [\"rsa-sha256\", \"ed25519-sha256\"]\nleader = true\n",
                common::config_text("inet:0@127.0.0.1")
            )
        },
        Some({
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst) * 1000)
        }),
    )
    .await;
    let dir = milter.dir.path().to_path_buf();
    let mut seen: Vec<String> = Vec::new();
    let mut signed_with: Vec<(i64, Vec<String>)> = Vec::new();
    // 100 simulated days, a rotation pass and a verified message every other day.
    for day in (0..100).step_by(2) {
        let t = JAN10 + day * DAY;
        now.store(t, Ordering::SeqCst);
        milter.service.rotate().await.unwrap();
        for s in scheduled(&dir) {
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        let selectors = signed_by(&milter, &bind).await.unwrap_or_else(|status| {
            panic!(
                "day {day}: {status:?}; health {:?}",
                milter.service.health()
            )
        });
        assert_eq!(selectors.len(), 2, "day {day}: RSA and Ed25519");
        assert_eq!(milter.service.health(), Ok(()), "day {day}");
        signed_with.push((day, selectors));
    }
    // Successors came every 30 days (rsa-a, ed-a, then three generations), each signing
    // only once published, and the old ones left the zone a week after retiring.
    let rsa: Vec<&String> = seen
        .iter()
        .filter(|s| s.ends_with('r') || *s == "rsa-a")
        .collect();
    assert!(rsa.len() >= 4, "{seen:?}");
    let last = &signed_with.last().unwrap().1;
    let in_zone = zone_records(&bind, &seen);
    let now_scheduled = scheduled(&dir);
    for s in &seen {
        let name = format!("{s}._domainkey.tugraz.at.");
        assert_eq!(
            in_zone.contains_key(&name),
            now_scheduled.contains(s),
            "{s}: in the zone exactly while in the schedule ({now_scheduled:?})"
        );
    }
    assert!(
        !now_scheduled.contains(&"rsa-a".to_string()),
        "rsa-a removed"
    );
    assert!(
        !dir.join("keys/tugraz.at.rsa-a.pem").exists(),
        "its key file too"
    );
    for s in last {
        assert!(now_scheduled.contains(s));
    }
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    for event in [
        "key_generated",
        "key_published",
        "key_activated",
        "key_retired",
        "key_removed",
        "key_unpublished",
    ] {
        assert!(
            audit.contains(&format!("{{\"event\":\"{event}\"")),
            "{event} audited"
        );
    }
}

/// A relay host of the cluster test: tugraz.at with rsa-a, rotation every 30 days (the
/// successor made a day ahead, a day of overlap), counters and the cluster's state in
/// `redis`; `leader` rotates and publishes.
async fn cluster_host(
    bind: &Bind,
    redis: &str,
    name: &'static str,
    leader: bool,
    now: Arc<AtomicI64>,
) -> Milter {
    let (port, key_file) = (bind.port, bind.key_file());
    Milter::with_clock(
        |dir| {
            common::dkim::install_key(&dir.join("keys"), "tugraz.at.rsa-a.pem");
            std::fs::write(
                dir.join("selectors.toml"),
                common::dkim::selector("tugraz.at", "rsa-a", "rsa-sha256", "tugraz.at.rsa-a.pem", "2026-01-01T00:00:00Z", None),
            )
            .unwrap();
            std::fs::copy(&key_file, dir.join("tsig.key")).unwrap();
            let publish = if leader {
                format!("[dkim.publish]\nserver = \"127.0.0.1:{port}\"\nkey_file = \"tsig.key\"\n\n")
            } else {
                String::new()
            };
            format!(
                "{}\n[cluster]\nhost_name = \"{name}\"\n\n[domains]\nprotected = [\"tugraz.at\"]\n\n[limits]\nstore = \"redis\"\n\n[limits.redis]\nurl = \"{redis}\"\nprefix = \"cluster:\"\n\n[dkim]\nselectors = \"selectors.toml\"\nkeys_dir = \"keys\"\nrequire_dns = true\nmin_publish_lead_hours = 0\n\n[dkim.dns]\nnameservers = [\"127.0.0.1:{port}\"]\ntimeout_ms = 500\n\n{publish}[dkim.rotation]\nevery_days = 30\nlead_days = 1\noverlap_days = 1\nleader = {leader}\n",
                common::config_text("inet:0@127.0.0.1")
            )
        },
        Some(Arc::new(move || now.load(Ordering::SeqCst) * 1000)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_gets_the_successor_late_keeps_signing_verifiably_and_says_it_lags() {
    let bind = Bind::start();
    let redis = common::redis::Redis::start();
    // 2026-01-30T00:00:00Z: rsa-a (since January 1st) is due for a successor tomorrow.
    let jan30 = 1_769_731_200;
    let now = Arc::new(AtomicI64::new(jan30));
    let a = cluster_host(&bind, &redis.url(), "relay1", true, now.clone()).await;
    let b = cluster_host(&bind, &redis.url(), "relay2", false, now.clone()).await;
    let both_verify = |expect_a: &'static str, expect_b: &'static str| {
        let (a, b, bind) = (&a, &b, &bind);
        async move {
            a.service.check_dns().await;
            b.service.check_dns().await;
            assert_eq!(signed_by(a, bind).await.unwrap(), [expect_a], "relay1");
            assert_eq!(signed_by(b, bind).await.unwrap(), [expect_b], "relay2");
        }
    };
    // (The services' own checkers rotate too; a pass asked for here waits for theirs.)
    a.service.rotate().await.unwrap();
    assert!(
        scheduled(a.dir.path()).contains(&"rg20260131r".to_string()),
        "relay1 made the successor"
    );
    assert!(
        b.service.rotate().await.unwrap().is_empty(),
        "relay2 is no leader"
    );
    assert_eq!(scheduled(b.dir.path()), ["rsa-a"]);

    both_verify("rsa-a", "rsa-a").await;
    assert_eq!(b.service.health(), Ok(()));

    // January 31st: the successor signs on relay1; relay2 has not got it yet.
    now.store(jan30 + DAY + 30, Ordering::SeqCst);
    both_verify("rg20260131r", "rsa-a").await;
    let lag = b.service.health().unwrap_err();
    assert!(
        lag[0].contains("this host signs rsa-sha256 with rsa-a; relay1 already with rg20260131r"),
        "{lag:?}"
    );
    assert_eq!(a.service.health(), Ok(()));
    assert!(
        b.service
            .metrics_text()
            .contains("relayguard_dkim_signing{domain=\"tugraz.at\",selector=\"rsa-a\"")
    );

    // Ten minutes later the site's distribution brings selectors.toml and the key.
    now.store(jan30 + DAY + 600, Ordering::SeqCst);
    let (from, to) = (a.dir.path(), b.dir.path());
    std::fs::copy(
        from.join("keys/tugraz.at.rg20260131r.pem"),
        to.join("keys/tugraz.at.rg20260131r.pem"),
    )
    .unwrap();
    std::fs::copy(from.join("selectors.toml"), to.join("selectors.toml")).unwrap();
    b.service.reload().unwrap();
    both_verify("rg20260131r", "rg20260131r").await;
    assert_eq!(b.service.health(), Ok(()));

    // A host with another key under the new name never signs with it.
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/tugraz.at.rsa-b.pem"
        ),
        to.join("keys/tugraz.at.rg20260131r.pem"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        to.join("keys/tugraz.at.rg20260131r.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    b.service.reload().unwrap();
    both_verify("rg20260131r", "rsa-a").await;
    assert!(b.service.health().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_configured_alike_rotate_once_the_lease_decides() {
    let bind = Bind::start();
    let redis = common::redis::Redis::start();
    let now = Arc::new(AtomicI64::new(1_769_731_200));
    let a = cluster_host(&bind, &redis.url(), "relay1", true, now.clone()).await;
    let b = cluster_host(&bind, &redis.url(), "relay2", true, now.clone()).await;
    // Both run their passes (their own checkers too); whichever took the lease rotates.
    a.service.rotate().await.unwrap();
    b.service.rotate().await.unwrap();
    let made = [&a, &b]
        .iter()
        .filter(|h| h.dir.path().join("keys/tugraz.at.rg20260131r.pem").exists())
        .count();
    assert_eq!(
        made, 1,
        "one successor key in the cluster, not two under one name"
    );
}

#[test]
fn keys_publish_and_status_from_the_command_line() {
    let bind = Bind::start();
    let dir = tempfile::tempdir().unwrap();
    common::dkim::install_key(&dir.path().join("keys"), "tugraz.at.rsa-a.pem");
    std::fs::write(
        dir.path().join("selectors.toml"),
        common::dkim::selector(
            "tugraz.at",
            "rsa-a",
            "rsa-sha256",
            "tugraz.at.rsa-a.pem",
            "2026-01-01T00:00:00Z",
            None,
        ),
    )
    .unwrap();
    std::fs::copy(bind.key_file(), dir.path().join("tsig.key")).unwrap();
    let config = dir.path().join("relayguard.toml");
    std::fs::write(
        &config,
        format!(
            "[domains]\nprotected = [\"tugraz.at\"]\n\n[dkim]\nrequire_dns = true\n\n[dkim.dns]\nnameservers = [\"127.0.0.1:{0}\"]\ntimeout_ms = 500\n\n[dkim.publish]\nserver = \"127.0.0.1:{0}\"\nkey_file = \"tsig.key\"\n",
            bind.port
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_relayguard"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["keys", "status"]).contains("dns: rsa-a._domainkey.tugraz.at missing"));
    let dry = run(&["keys", "publish", "--dry-run"]);
    assert!(
        dry.starts_with("would: key_published tugraz.at rsa-a: rsa-a._domainkey.tugraz.at TXT"),
        "{dry}"
    );
    assert!(
        bind.dig("TXT", "rsa-a._domainkey.tugraz.at").is_empty(),
        "a dry run changes nothing"
    );
    assert!(run(&["keys", "publish"]).starts_with("key_published tugraz.at rsa-a"));
    assert_eq!(
        bind.dig("TXT", "rsa-a._domainkey.tugraz.at"),
        [record_of("tugraz.at.rsa-a.pem")]
    );
    assert_eq!(run(&["keys", "publish"]), "nothing to do\n");
    assert!(run(&["keys", "status"]).contains("dns: rsa-a._domainkey.tugraz.at published"));
    assert!(run(&["keys", "dns"]).contains("; DNS now: published\n"));
    // A successor is due by the schedule but its record is not out yet: status shows the
    // selector that really signs, and why the new one waits.
    common::dkim::install_key(&dir.path().join("keys"), "tugraz.at.rsa-b.pem");
    std::fs::write(
        dir.path().join("selectors.toml"),
        [
            common::dkim::selector(
                "tugraz.at",
                "rsa-a",
                "rsa-sha256",
                "tugraz.at.rsa-a.pem",
                "2026-01-01T00:00:00Z",
                None,
            ),
            common::dkim::selector(
                "tugraz.at",
                "rsa-b",
                "rsa-sha256",
                "tugraz.at.rsa-b.pem",
                "2026-02-01T00:00:00Z",
                None,
            ),
        ]
        .concat(),
    )
    .unwrap();
    let status = run(&["keys", "status"]);
    assert!(
        status.contains("  signing now: rsa-a (rsa-sha256) since 2026-01-01T00:00:00Z\n"),
        "{status}"
    );
    assert!(!status.contains("signing now: rsa-b"), "{status}");
    assert!(
        status.contains("  waiting: rsa-b is due by the schedule but DNS serves missing for rsa-b._domainkey.tugraz.at; it signs once its record is published"),
        "{status}"
    );
    assert!(
        run(&["check-config", "--service-user", "no-such-user"])
            .contains("dns: rsa-a._domainkey.tugraz.at published")
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relayguard"))
        .args(["keys", "rotate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [dkim.rotation] section"));
}
