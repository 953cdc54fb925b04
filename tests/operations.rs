//! Runbook: operating relayguard like the tools beside it. The alerting rules and the
//! dashboard ask only for what the service exports (promtool tests every alert), systemd
//! socket activation serves the socket it is given, and every command takes the same
//! `--config` (or `RELAYGUARD_CONFIG`), before or after the subcommand.

mod common;

use common::Milter;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/monitoring");

fn promtool(args: &[&str]) -> String {
    assert!(
        Path::new("/usr/bin/promtool").exists(),
        "promtool is missing: run scripts/test, which installs Debian's prometheus package"
    );
    let out = Command::new("/usr/bin/promtool")
        .args(args)
        .current_dir(MONITORING)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn every_alert_fires_on_the_series_that_should_fire_it() {
    assert!(
        promtool(&["check", "rules", "relayguard.rules.yml"]).contains("SUCCESS: 15 rules found")
    );
    assert!(promtool(&["test", "rules", "relayguard.rules.test.yml"]).contains("SUCCESS"));
    // Every alert of the rules file has a test case that expects it to fire.
    let rules =
        std::fs::read_to_string(Path::new(MONITORING).join("relayguard.rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(Path::new(MONITORING).join("relayguard.rules.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - exp_labels"
            )),
            "{alert} is never expected to fire in the test"
        );
    }
}

/// The sample names a scrape can hold, from its `# TYPE` lines.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every `relayguard_*` name in `text`.
fn asked_for(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("relayguard_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_ask_only_for_metrics_the_service_exports() {
    let port = common::free_port();
    let milter = Milter::with_config(|dir| {
        format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[rollout]\nmonitor_logins = [\"trial\"]\n\n{}",
            common::config_text("inet:0@127.0.0.1"),
            common::dkim::standard_setup(dir)
        )
    })
    .await;
    // A signed message and a refusal recorded in monitor mode: the label families that
    // appear with traffic appear.
    for txn in [
        common::Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
        common::Txn::authenticated("trial", "<trial@tugraz.at>", "rector@tugraz.at"),
    ] {
        let mut conn = milter.connect().await;
        let outcome = common::send(&mut conn, &txn).await;
        assert_eq!(outcome.stage, "eom", "{:?}", outcome.status);
    }
    let scrape = common::http_get(([127, 0, 0, 1], port).into(), "/metrics").await;
    let mut exported = exported(&scrape);
    // A relay whose activation waits for DNS (that does not answer here) exports the DKIM
    // rotation families too.
    let waiting_port = common::free_port();
    let waiting = Milter::with_config(|dir| {
        format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{waiting_port}\"\n\n{}require_dns = true\n\n[dkim.dns]\nnameservers = [\"127.0.0.1:1\"]\ntimeout_ms = 200\n",
            common::config_text("inet:0@127.0.0.1"),
            common::dkim::standard_setup(dir)
        )
    })
    .await;
    waiting.service.check_dns().await;
    let waiting_scrape = common::http_get(([127, 0, 0, 1], waiting_port).into(), "/metrics").await;
    assert!(
        waiting_scrape.contains("relayguard_dkim_signing_fallback{"),
        "{waiting_scrape}"
    );
    exported.extend(self::exported(&waiting_scrape));
    assert!(exported.contains("relayguard_messages_total"), "{scrape}");

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(MONITORING).join("relayguard.dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 12);
    let mut exprs = String::new();
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let rules =
        std::fs::read_to_string(Path::new(MONITORING).join("relayguard.rules.yml")).unwrap();
    let rule_exprs: String = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .collect::<Vec<_>>()
        .join("\n");
    for (file, text) in [("dashboard", &exprs), ("rules", &rule_exprs)] {
        let missing: Vec<String> = asked_for(text)
            .into_iter()
            .filter(|n| !exported.contains(n))
            .collect();
        assert!(
            missing.is_empty(),
            "the {file} asks for {missing:?}, which the service does not export"
        );
    }
    // What a dashboard panel shows for signing keys is there from the first scrape.
    assert!(
        scrape.contains("relayguard_dkim_domain_keys{domain=\"tugraz.at\"} 2"),
        "{scrape}"
    );
    let coverage = scrape
        .lines()
        .find_map(|l| l.strip_prefix("relayguard_dkim_coverage_seconds{domain=\"tugraz.at\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(coverage, Some(f64::INFINITY), "no retire_at: never");
    // Served as what it is: OpenMetrics, so Prometheus keeps every family's type and help.
    assert!(
        scrape.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{scrape}"
    );
    assert!(scrape.ends_with("# EOF\n"), "{scrape}");
    drop(milter);
}

#[tokio::test]
async fn systemd_socket_activation_serves_the_socket_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let configured = dir.path().join("configured.sock");
    let activated = dir.path().join("activated.sock");
    let setup = common::dkim::standard_setup(dir.path());
    std::fs::write(dir.path().join("sender_login_maps"), common::MAP).unwrap();
    std::fs::write(
        dir.path().join("relayguard.toml"),
        format!(
            "{}\n{setup}",
            common::config_text(&format!("unix:{}", configured.display()))
        ),
    )
    .unwrap();
    let log = dir.path().join("relayguard.log");
    // systemd-socket-activate listens, then on the first connection execs relayguard with
    // the socket as fd 3 (LISTEN_FDS=1, LISTEN_PID its own), as systemd does.
    let mut child = KilledOnDrop(Some(
        Command::new("/usr/bin/systemd-socket-activate")
            .arg("-l")
            .arg(&activated)
            .arg(env!("CARGO_BIN_EXE_relayguard"))
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("relayguard.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("systemd-socket-activate (package systemd) runs"),
    ));
    // The socket file appears at bind, a moment before systemd-socket-activate listens on
    // it: until then a connection is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match indymilter_test::TestConnection::configure()
            .open_unix(&activated)
            .await
        {
            Ok(conn) => break conn,
            Err(e) => assert!(Instant::now() < deadline, "no socket: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let raw = b"From: Alice <alice@tugraz.at>\r\nTo: friend@example.org\r\nSubject: activated\r\n\r\nhello\r\n";
    let (status, signatures) =
        common::dkim::sign(&mut conn, "alice", "<alice@tugraz.at>", raw).await;
    conn.close().await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status, indymilter_test::Status::Accept, "{logged}");
    assert_eq!(signatures.len(), 2, "{logged}");
    assert!(
        logged.contains("serving the socket systemd passed"),
        "{logged}"
    );
    assert!(
        !configured.exists(),
        "milter.socket is not bound when systemd passes one"
    );
    let mut child = child.0.take().expect("running");
    // SAFETY: SIGTERM to our own child, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        activated.exists(),
        "the socket is systemd's: relayguard leaves it"
    );
}

/// A child process that is killed (by its PID) and reaped if the test ends before it did.
struct KilledOnDrop(Option<std::process::Child>);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn relayguard(args: &[&str], config_env: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relayguard"));
    command.args(args).env_remove("RELAYGUARD_CONFIG");
    if let Some(config) = config_env {
        command.env("RELAYGUARD_CONFIG", config);
    }
    command.output().unwrap()
}

#[test]
fn every_command_takes_the_same_config_option_before_or_after_it() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/relayguard.toml");
    for args in [
        vec!["accounts", "list", "--config", config],
        vec!["--config", config, "accounts", "list"],
        vec!["keys", "status", "--config", config],
        vec!["-c", config, "keys", "status"],
        vec![
            "check-config",
            "--service-user",
            "no-such-user",
            "-c",
            config,
        ],
    ] {
        let out = relayguard(&args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = relayguard(&["keys", "status"], Some(config));
    assert!(out.status.success(), "RELAYGUARD_CONFIG is read");
    assert!(String::from_utf8_lossy(&out.stdout).contains("signing now"));
    // Without either, the packaged path is meant (and named when it is missing).
    let out = relayguard(&["keys", "status"], None);
    if !Path::new("/etc/relayguard/relayguard.toml").exists() {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("/etc/relayguard/relayguard.toml"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn shell_completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = relayguard(&["completions", shell], None);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for command in [
            "run",
            "check-config",
            "explain",
            "accounts",
            "keys",
            "audit",
            "bench",
        ] {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}"
            );
        }
    }
    // The package ships them from packaging/completions/: they are what the binary makes.
    for (shell, file) in [
        ("bash", "relayguard.bash"),
        ("zsh", "_relayguard"),
        ("fish", "relayguard.fish"),
    ] {
        let committed = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("packaging/completions")
                .join(file),
        )
        .unwrap();
        assert!(
            relayguard(&["completions", shell], None).stdout == committed,
            "packaging/completions/{file} is stale: run `relayguard completions {shell} > packaging/completions/{file}`"
        );
    }
    // The bash script is valid bash.
    let out = relayguard(&["completions", "bash"], None);
    let mut check = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(check.wait().unwrap().success());
}
