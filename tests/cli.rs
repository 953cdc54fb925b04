//! Runbook for the command line: check-config, explain, and the key tooling.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn relayguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relayguard"))
        .args(args)
        .output()
        .expect("run relayguard")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const REPO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/relayguard.toml");

#[test]
fn repo_default_config_checks_ok() {
    let out = relayguard(&["check-config", "--config", REPO_CONFIG]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok (2 protected domains"),
        "{}",
        text(&out)
    );
}

#[test]
fn explain_shows_the_decision_and_its_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let eml = dir.path().join("spoof.eml");
    std::fs::write(
        &eml,
        "From: Rector <rector@tugraz.at>\r\nSubject: x\r\n\r\nhi\r\n",
    )
    .unwrap();
    let out = relayguard(&[
        "explain",
        "--config",
        REPO_CONFIG,
        "--login",
        "mallory",
        "--client",
        "203.0.113.7",
        "--mail-from",
        "mallory@tugraz.at",
        "--rcpt",
        "friend@example.org",
        eml.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(
        report.contains("MAIL FROM <mallory@tugraz.at>: ok, owned: login matches the local part"),
        "{report}"
    );
    assert!(report.contains("verdict: reject: 550 5.7.1 <rector@tugraz.at> is not owned by authenticated user mallory"), "{report}");
    let server = |name: Option<&str>| {
        let mut args = vec![
            "explain",
            "--config",
            REPO_CONFIG,
            "--client",
            "129.27.1.2",
            "--mail-from",
            "root@srv.tugraz.at",
            "--rcpt",
            "admin@tugraz.at",
        ];
        if let Some(name) = name {
            args.extend(["--client-name", name]);
        }
        relayguard(&args)
    };
    let out = server(Some("srv.tugraz.at"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("client 129.27.1.2: internal\nhost name: srv.tugraz.at\n"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("MAIL FROM <root@srv.tugraz.at>: ok, unauthenticated server srv.tugraz.at sending as itself"),
        "{}",
        text(&out)
    );
    // Without a name in DNS, an unauthenticated server is told so (and may retry).
    let out = server(None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "verdict: tempfail: 450 4.7.25 Client host rejected: cannot find your hostname"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn explain_shows_a_robots_masquerade_and_the_rollout_mode() {
    let dir = tempfile::tempdir().unwrap();
    let eml = dir.path().join("cron.eml");
    std::fs::write(
        &eml,
        "From: root@web1.iaik.tugraz.at (Cron Daemon)\r\nSubject: cron\r\n\r\nhi\r\n",
    )
    .unwrap();
    let out = relayguard(&[
        "explain",
        "--config",
        REPO_CONFIG,
        "--login",
        "robot-web",
        "--client",
        "203.0.113.7",
        "--mail-from",
        "root@web1.iaik.tugraz.at",
        "--rcpt",
        "friend@example.org",
        eml.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    for line in [
        "masquerade: MAIL FROM <root@web1.iaik.tugraz.at> becomes <webform@tugraz.at>\n",
        "masquerade: From <root@web1.iaik.tugraz.at> becomes \"Cron Daemon\" <webform@tugraz.at>\n",
        "From <webform@tugraz.at>: ok, owned through sender map entry `webform@tugraz.at`\n",
        "verdict: accept\nmode: enforce\n",
    ] {
        assert!(report.contains(line), "missing {line:?} in\n{report}");
    }
}

fn key_config(dir: &Path, selectors: &str) -> String {
    let keys = dir.join("keys");
    common::dkim::install_key(&keys, "tugraz.at.rsa-a.pem");
    common::dkim::install_key(&keys, "tu-graz.ac.at.rsa-a.pem");
    std::fs::write(dir.join("selectors.toml"), selectors).unwrap();
    let path = dir.join("relayguard.toml");
    std::fs::write(&path, "[dkim]\n").unwrap();
    path.display().to_string()
}

/// New Year's Day `years` after this one, and two days later (RFC 3339, UTC): dates that are
/// in the future on whatever day the suite runs, where the binary reads the real clock.
fn new_year(years: i16) -> (String, String) {
    let year = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .year()
        + years;
    (
        format!("{year}-01-01T00:00:00Z"),
        format!("{year}-01-03T00:00:00Z"),
    )
}

#[test]
fn check_config_refuses_a_domain_without_a_key_and_names_errors() {
    let (future, _) = new_year(10);
    let dir = tempfile::tempdir().unwrap();
    let only_one = common::dkim::selector(
        "tugraz.at",
        "rsa-a",
        "rsa-sha256",
        "tugraz.at.rsa-a.pem",
        "2026-01-01T00:00:00Z",
        None,
    );
    let config = key_config(dir.path(), &only_one);
    let out = relayguard(&["check-config", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("tu-graz.ac.at: no active DKIM key now"),
        "{}",
        text(&out)
    );

    // A key that retires with no successor leaves a gap later: refused too.
    let gap = format!(
        "{}{}",
        common::dkim::selector(
            "tugraz.at",
            "rsa-a",
            "rsa-sha256",
            "tugraz.at.rsa-a.pem",
            "2026-01-01T00:00:00Z",
            Some(&future)
        ),
        common::dkim::selector(
            "tu-graz.ac.at",
            "rsa-a",
            "rsa-sha256",
            "tu-graz.ac.at.rsa-a.pem",
            "2026-01-01T00:00:00Z",
            None
        )
    );
    std::fs::write(dir.path().join("selectors.toml"), gap).unwrap();
    let out = relayguard(&["check-config", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("tugraz.at: no active DKIM key from {future}")),
        "{}",
        text(&out)
    );

    // A world-readable key: refused with the file and the reason.
    std::fs::write(
        dir.path().join("selectors.toml"),
        only_one.clone()
            + &common::dkim::selector(
                "tu-graz.ac.at",
                "rsa-a",
                "rsa-sha256",
                "tu-graz.ac.at.rsa-a.pem",
                "2026-01-01T00:00:00Z",
                None,
            ),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path().join("keys/tugraz.at.rsa-a.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = relayguard(&["check-config", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("tugraz.at.rsa-a.pem: unsafe permissions 0644"),
        "{}",
        text(&out)
    );

    // A syntax error names file and line.
    std::fs::write(&config, "[dkim]\nexpiry_days = \"soon\"\n").unwrap();
    let out = relayguard(&["check-config", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("relayguard.toml:2: key `dkim.expiry_days`: invalid type"),
        "{}",
        text(&out)
    );
}

#[test]
fn keys_generate_dns_and_status() {
    let (future, active) = new_year(10);
    let dir = tempfile::tempdir().unwrap();
    let schedule = [
        common::dkim::selector(
            "tugraz.at",
            "rsa-a",
            "rsa-sha256",
            "tugraz.at.rsa-a.pem",
            "2026-01-01T00:00:00Z",
            None,
        ),
        common::dkim::selector(
            "tu-graz.ac.at",
            "rsa-a",
            "rsa-sha256",
            "tu-graz.ac.at.rsa-a.pem",
            "2026-01-01T00:00:00Z",
            None,
        ),
    ]
    .concat();
    let config = key_config(dir.path(), &schedule);
    let out = relayguard(&[
        "keys",
        "generate",
        "--config",
        &config,
        "--domain",
        "TUGraz.at",
        "--selector",
        "ed2099",
        "--algorithm",
        "ed25519",
        "--publish",
        &future,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let key = dir.path().join("keys/tugraz.at.ed2099.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.starts_with("ed2099._domainkey.tugraz.at. IN TXT ( \"v=DKIM1; k=ed25519; \" \"p="),
        "{stdout}"
    );
    let selectors = std::fs::read_to_string(dir.path().join("selectors.toml")).unwrap();
    assert!(selectors.contains(&format!("name = \"ed2099\"\nalgorithm = \"ed25519-sha256\"\nkey = \"tugraz.at.ed2099.pem\"\npublish = {future}\nactive_from = {active}")), "{selectors}");

    let dns = text(&relayguard(&["keys", "dns", "--config", &config]));
    let (now, later) = dns.split_once("; to publish later").unwrap();
    assert!(
        now.contains("rsa-a._domainkey.tugraz.at. IN TXT")
            && now.contains("rsa-a._domainkey.tu-graz.ac.at. IN TXT"),
        "{dns}"
    );
    assert!(
        later.contains(&format!(
            "; publish at {future}\ned2099._domainkey.tugraz.at."
        )),
        "{dns}"
    );

    let status = text(&relayguard(&["keys", "status", "--config", &config]));
    assert!(
        status.contains("tugraz.at\n  signing now: rsa-a (rsa-sha256) since 2026-01-01T00:00:00Z"),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "next: at {active} signing with rsa-a (rsa-sha256), ed2099 (ed25519-sha256)"
        )),
        "{status}"
    );

    // Never overwrites an existing key.
    let again = relayguard(&[
        "keys",
        "generate",
        "--config",
        &config,
        "--domain",
        "tugraz.at",
        "--selector",
        "ed2099",
        "--algorithm",
        "ed25519",
    ]);
    assert!(!again.status.success());
}
