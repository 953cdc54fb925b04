//! Runbook: every fault we know of, what the MTA sees and what the audit log holds.
//!
//! | fault | the MTA sees | the audit log / metrics hold |
//! |---|---|---|
//! | a file in the config directory is opened, read, checked or touched | nothing changes | no reload |
//! | the config is edited | the new policy, from the next message | exactly one reload |
//! | `relayguard.toml` is emptied or truncated mid-write | mail signed as before | `reloads_total{result="failed"}` |
//! | a schedule retires every key | mail signed as before | the reload is refused like `check-config` |
//!
//! Each test here failed on the code before its fix.

mod common;

use common::dkim::{sign, standard_setup};
use common::{Milter, config_text};
use indymilter_test::Status;
use std::time::Duration;

const RAW: &[u8] =
    b"From: Alice <alice@tugraz.at>\r\nTo: friend@example.org\r\nSubject: fault\r\n\r\nhello\r\n";

fn signing_config(dir: &std::path::Path) -> String {
    format!(
        "{}\n{}\n[limits]\ntimezone = \"UTC\"\nlock_file = \"locks.json\"\n[limits.external]\nrecipients_per_message = 20\n",
        config_text("inet:0@127.0.0.1"),
        standard_setup(dir)
    )
}

/// Signs one message from alice; returns the selectors that signed it.
async fn signed_by(milter: &Milter) -> Vec<String> {
    let mut conn = milter.connect().await;
    let (status, signatures) = sign(&mut conn, "alice", "<alice@tugraz.at>", RAW).await;
    conn.close().await.unwrap();
    assert_eq!(status, Status::Accept);
    signatures
        .iter()
        .map(|s| {
            s.split(';')
                .find_map(|t| t.trim().strip_prefix("s="))
                .unwrap()
                .to_string()
        })
        .collect()
}

fn relayguard(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_relayguard"))
        .args(args)
        .output()
        .unwrap()
}

/// Waits until the watcher has judged a file event "unchanged" `n` times in all.
async fn unchanged_after(milter: &Milter, n: u64) {
    let mut rx = milter.service.reload_status();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.unchanged >= n))
        .await
        .expect("the watcher judged the event within 10 s")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_reading_checking_and_touching_reload_nothing_an_edit_reloads_once() {
    let mut milter = Milter::with_config(signing_config).await;
    milter.watch_files();
    let config = milter.file("relayguard.toml");
    let map = milter.file("sender_login_maps");
    let key = milter.file("keys/tugraz.at.rsa-a.pem");

    // An operator looks: open, read, cat a key, run check-config.
    drop(std::fs::File::open(&config).unwrap());
    std::fs::read_to_string(&map).unwrap();
    std::fs::read(&key).unwrap();
    let check = relayguard(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    // ... and touches the files (which writes nothing but looks like a write to inotify).
    for file in [&config, &map, &key] {
        assert!(
            std::process::Command::new("touch")
                .arg(file)
                .status()
                .unwrap()
                .success()
        );
    }
    unchanged_after(&milter, 1).await;
    // Long enough for a reload loop to show itself (it ran ~3 times a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = milter.service.reload_status().borrow().clone();
    assert_eq!(status.attempts, 0, "{status:?}");

    // A real edit reloads exactly once, and the reload's own reads trigger nothing.
    std::fs::write(&map, format!("{}carol@tugraz.at carol\n", common::MAP)).unwrap();
    let status = milter.reload_after(0).await;
    assert_eq!(status.last_error, None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(milter.service.reload_status().borrow().attempts, 1);
    // chmod is a change (a key made private again must be picked up): it is judged, and as
    // the content is the same key, it reloads once more.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let status = milter.reload_after(1).await;
    assert_eq!(status.last_error, None);
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_or_truncated_config_is_refused_and_mail_stays_signed() {
    let mut milter = Milter::with_config(signing_config).await;
    milter.watch_files();
    let config = milter.file("relayguard.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    assert_eq!(signed_by(&milter).await, ["rsa-a", "ed-a"]);

    // `: > relayguard.toml`, as a non-atomic editor does for a moment.
    std::fs::write(&config, "").unwrap();
    let status = milter.reload_after(0).await;
    let error = status.last_error.expect("refused");
    assert!(error.ends_with("relayguard.toml:1: the file has no settings (empty or truncated); refusing to run on built-in defaults"), "{error}");
    assert_eq!(signed_by(&milter).await, ["rsa-a", "ed-a"]);

    // Cut off before [dkim] and [limits]: what is left parses, but would turn both off.
    let cut = &good[..good.find("[dkim]").unwrap()];
    std::fs::write(&config, cut).unwrap();
    let status = milter.reload_after(1).await;
    let error = status.last_error.expect("refused");
    assert!(
        error.contains("[dkim] is missing: a reload may not turn DKIM signing off"),
        "{error}"
    );
    assert!(
        error.contains("[limits] is missing: a reload may not turn the sending limits off"),
        "{error}"
    );
    assert_eq!(signed_by(&milter).await, ["rsa-a", "ed-a"]);

    // An emptied sender map and a dropped protected domain are refused too.
    std::fs::write(&config, &good).unwrap();
    milter.reload_after(2).await;
    std::fs::write(milter.file("sender_login_maps"), "").unwrap();
    let error = milter.reload_after(3).await.last_error.expect("refused");
    assert!(
        error.contains("the sender map has no entries (it had 4): a reload may not empty it"),
        "{error}"
    );
    std::fs::write(milter.file("sender_login_maps"), common::MAP).unwrap();
    std::fs::write(
        &config,
        good.replace(
            "[senders]\n",
            "[domains]\nprotected = [\"tugraz.at\"]\n\n[senders]\n",
        ),
    )
    .unwrap();
    let error = milter.service.reload().unwrap_err().to_string();
    assert!(
        error.contains(
            "protected domain tu-graz.ac.at is missing: a reload may not drop a protected domain"
        ),
        "{error}"
    );
    let metrics = milter.service.metrics_text();
    assert!(
        metrics.contains("relayguard_reloads_total{result=\"failed\"} 4"),
        "{metrics}"
    );
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_what_check_config_refuses() {
    let milter = Milter::with_config(signing_config).await;
    // Every selector retired: check-config refuses this schedule ...
    let selectors = milter.file("selectors.toml");
    let good = std::fs::read_to_string(&selectors).unwrap();
    std::fs::write(
        &selectors,
        good.replace(
            "active_from = 2026-01-01T00:00:00Z\n",
            "active_from = 2026-01-01T00:00:00Z\nretire_at = 2026-01-02T00:00:00Z\n",
        ),
    )
    .unwrap();
    let check = relayguard(&[
        "check-config",
        "--config",
        milter.file("relayguard.toml").to_str().unwrap(),
    ]);
    assert!(!check.status.success());
    let checked = String::from_utf8_lossy(&check.stderr).to_string();
    assert!(
        checked.contains("tugraz.at: no active DKIM key now"),
        "{checked}"
    );
    // ... and so does the running service, which keeps signing with the keys it has.
    let error = milter.service.reload().unwrap_err().to_string();
    for line in error.lines() {
        assert!(
            checked.contains(line),
            "`{line}` not in check-config's\n{checked}"
        );
    }
    assert!(
        error.contains("tu-graz.ac.at: no active DKIM key now"),
        "{error}"
    );
    assert_eq!(signed_by(&milter).await, ["rsa-a", "ed-a"]);
    milter.stop().await.unwrap();
}
