//! Runbook: change the sender map or the configuration while relayguard runs.
//! A valid change applies without restart; a broken one is logged and the old state stays.

mod common;

use common::{MAP, Milter, Txn, send};
use indymilter_test::Status;

async fn office_as_mallory(milter: &Milter) -> Status {
    let mut conn = milter.connect().await;
    let outcome = send(
        &mut conn,
        &Txn::authenticated("mallory", "<mallory@tugraz.at>", "office@tugraz.at"),
    )
    .await;
    conn.close().await.unwrap();
    outcome.status
}

/// Replaces a file the way deploy tools do: write a temporary file, rename it over.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn sender_map_change_applies_and_broken_map_is_ignored() {
    let mut milter = Milter::tcp().await;
    milter.watch_files();
    assert!(matches!(
        office_as_mallory(&milter).await,
        Status::Reject { .. }
    ));

    // Grant mallory the office address by rename-replace.
    let before = milter.service.reload_status().borrow().attempts;
    replace(
        &milter.file("sender_login_maps"),
        &format!("{MAP}# delegated\noffice2@tugraz.at mallory\n").replace(
            "office@tugraz.at alice, bob",
            "office@tugraz.at alice, bob, mallory",
        ),
    );
    let status = milter.reload_after(before).await;
    assert_eq!(status.last_error, None);
    assert_eq!(office_as_mallory(&milter).await, Status::Accept);

    // A half-written map, written in place: refused, the previous map stays in force.
    let before = milter.service.reload_status().borrow().attempts;
    std::fs::write(
        milter.file("sender_login_maps"),
        "office@tugraz.at mallory\nbroken-line-without-owner\n",
    )
    .unwrap();
    let status = milter.reload_after(before).await;
    let error = status.last_error.expect("reload refused");
    assert!(
        error.ends_with("sender_login_maps:2: entry `broken-line-without-owner` has no logins"),
        "{error}"
    );
    assert_eq!(office_as_mallory(&milter).await, Status::Accept);
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn broken_config_is_refused_with_file_line_and_key() {
    let milter = Milter::tcp().await;
    let path = milter.file("relayguard.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace(
            "internal_networks = [\"129.27.0.0/16\"]",
            "internal_networks = [\"129.27.0.0/16\", \"campus\"]",
        ),
    )
    .unwrap();
    // SIGHUP does exactly this.
    let error = milter.service.reload().unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "{}:10: key `clients.internal_networks`: `campus` is not a CIDR network",
            path.display()
        )
    );
    // The old policy still serves.
    let mut conn = milter.connect().await;
    let outcome = send(
        &mut conn,
        &Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
    )
    .await;
    assert_eq!(outcome.status, Status::Accept);
    conn.close().await.unwrap();

    // Fixing the file and reloading applies the new settings.
    std::fs::write(
        &path,
        good.replace("[senders]\n", "[senders]\nallow_foreign = true\n"),
    )
    .unwrap();
    milter.service.reload().unwrap();
    let mut conn = milter.connect().await;
    let outcome = send(
        &mut conn,
        &Txn::authenticated("alice", "<alice@gmail.com>", "alice@gmail.com"),
    )
    .await;
    assert_eq!(outcome.status, Status::Accept);
    conn.close().await.unwrap();
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn config_change_is_picked_up_by_the_watcher() {
    let mut milter = Milter::tcp().await;
    milter.watch_files();
    let path = milter.file("relayguard.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let before = milter.service.reload_status().borrow().attempts;
    std::fs::write(
        &path,
        good.replace("[senders]\n", "[senders]\nallow_foreign = true\n"),
    )
    .unwrap();
    let status = milter.reload_after(before).await;
    assert_eq!(status.last_error, None);
    assert!(milter.service.snapshot().policy.allow_foreign_senders);
    milter.stop().await.unwrap();
}
