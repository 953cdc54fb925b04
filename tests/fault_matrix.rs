//! Runbook: every fault we know of, what the MTA sees and what the audit log holds.
//!
//! | fault | the MTA sees | the audit log / metrics hold |
//! |---|---|---|
//! | a file in the config directory is opened, read, checked or touched | nothing changes | no reload |
//! | the config is edited | the new policy, from the next message | exactly one reload |
//! | `relayguard.toml` is emptied or truncated mid-write | mail signed as before | `reloads_total{result="failed"}` |
//! | a schedule retires every key | mail signed as before | the reload is refused like `check-config` |
//! | 300 connections negotiate and go silent (slowloris) | a real one is served within a second | `connection_slots_full_total`; an idle one gives way, all close after the idle timeout |
//! | every slot held by connections that trickle a macro packet every 3 s | a real one is served within a second (default timeouts) | the longest outside a message gives way: `milter_connections_closed_total{why="slot_needed"}`; macros alone never keep a connection open past the idle timeout |
//! | the sender map is left writable by all and an unprivileged user adds himself as the dean's owner | his spoof is refused as before | the reload is refused naming the file, its mode and `chmod o-w`; `reloads_total{result="failed"}` |
//! | keys directory 0777, configuration or schedule 0666, checkpoint key 0644 | nothing starts with them | `check-config` names each path, mode and fix |
//! | a client puts CR/LF into its login or envelope address | the usual refusal | one log line per decision, the CR/LF escaped |
//! | a client puts spaces, quotes and `key=value` into its envelope address | the usual refusal | the value quoted by logfmt rules: no field added |
//! | SIGTERM while MTAs keep sending | messages in flight are accepted; new ones get `421 4.3.2` | the process exits as soon as those in flight are done |
//! | Redis dies under load (fail_open) | every message accepted, no timeout waited after the first three | counted locally; one WARN when it goes, one INFO when it is back; `redis_unavailable` 1 meanwhile |
//! | the Redis primary's host fails under load (Sentinel) | every message accepted | counters move to the new primary within seconds; the outage was counted locally, never twice |
//! | the audit log's disk fills up | `451 4.3.0` while full, accepted again once there is room | one whole record per accepted message, no partial line; counted as `tempfail`/`audit_unwritable` |
//! | relayguard is killed (SIGKILL) and restarted | tempfail while down (`milter_default_action`); signed again at once | the stale socket is replaced |
//! | keys replaced under load (rename, partial write, corruption, deletion) | every message signed and verifiable | see `tests/dkim_signing.rs` |
//! | Redis down, `fail_open` / `fail_closed` | accepted (counted locally) / `451 4.3.0` | see `tests/limits.rs` |
//!
//! Each test of a defect here failed on the code before its fix.

mod common;

use common::daemon::Daemon;
use common::dkim::{sign, standard_setup};
use common::{Milter, Txn, config_text, send, try_send_message};
use indymilter_test::Status;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Runs `script` with `sh -c` as user nobody (a real unprivileged user), as a local
/// attacker would.
fn as_nobody(script: &str) -> std::process::ExitStatus {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .status()
        .expect("setpriv (util-linux) runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_map_anyone_may_write_is_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let mut milter = Milter::with_config(signing_config).await;
    milter.watch_files();
    std::fs::set_permissions(milter.file(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let map = milter.file("sender_login_maps");
    let spoof = Txn::authenticated("mallory", "<mallory@tugraz.at>", "dean@tugraz.at");
    let mut conn = milter.connect().await;
    let refused = "550 5.7.1 <dean@tugraz.at> is not owned by authenticated user mallory";
    assert_eq!(
        send(&mut conn, &spoof).await.reply().as_deref(),
        Some(refused)
    );
    conn.close().await.unwrap();

    // An operator's slip, then a local user appends himself as the dean's owner.
    std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = milter.service.reload_status().borrow().attempts;
    let status = as_nobody(&format!(
        "echo 'dean@tugraz.at mallory' >> {}",
        map.display()
    ));
    assert!(status.success(), "nobody could write the 0666 map");
    let status = milter.reload_after(before).await;
    let error = status.last_error.unwrap_or_default();
    assert_eq!(
        error,
        format!(
            "{0} (the sender map) is writable by others (mode 0666): whoever can change it decides what relayguard does; run `chmod o-w {0}`",
            map.display()
        )
    );
    let mut conn = milter.connect().await;
    assert_eq!(
        send(&mut conn, &spoof).await.reply().as_deref(),
        Some(refused),
        "the appended line was never used"
    );
    conn.close().await.unwrap();
    let metrics = milter.service.metrics_text();
    assert!(
        metrics.contains("relayguard_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    // check-config says the same, and the same fix makes it load.
    let config = milter.file("relayguard.toml");
    let out = relayguard(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&error));
    milter.stop().await.unwrap();
}

#[test]
fn files_others_may_change_or_read_are_named_with_their_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("sender_login_maps"), common::MAP).unwrap();
    let key = d.join("checkpoint.key");
    let out = relayguard(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = format!(
        "{}\n{}\n[audit]\nfile = \"audit.log\"\ncheckpoint_key = \"checkpoint.key\"\n",
        config_text("inet:0@127.0.0.1"),
        standard_setup(d)
    );
    let config = d.join("relayguard.toml");
    std::fs::write(&config, text).unwrap();
    let check = || {
        let out = relayguard(&["check-config", "--config", config.to_str().unwrap()]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, text) = check();
    assert!(ok, "{text}");
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(&d.join("keys"), 0o777);
    mode(&config, 0o666);
    mode(&d.join("selectors.toml"), 0o666);
    mode(&key, 0o644);
    let (ok, text) = check();
    assert!(!ok);
    for (path, what, problem, fix) in [
        (
            "keys",
            "the keys directory",
            "is writable by others (mode 0777)",
            "chmod o-w",
        ),
        (
            "relayguard.toml",
            "the configuration",
            "is writable by others (mode 0666)",
            "chmod o-w",
        ),
        (
            "selectors.toml",
            "the selector schedule",
            "is writable by others (mode 0666)",
            "chmod o-w",
        ),
        (
            "checkpoint.key",
            "the audit checkpoint key",
            "holds a secret and is readable by others (mode 0644)",
            "chmod o-r",
        ),
    ] {
        let path = d.join(path);
        let line = format!("{} ({what}) {problem}", path.display());
        assert!(text.contains(&line), "{line}\nnot in\n{text}");
        assert!(
            text.contains(&format!("run `{fix} {}`", path.display())),
            "{text}"
        );
    }
    // A directory above counts too.
    for (path, m) in [
        ("keys", 0o700),
        ("relayguard.toml", 0o600),
        ("selectors.toml", 0o600),
        ("checkpoint.key", 0o600),
    ] {
        mode(&d.join(path), m);
    }
    mode(d, 0o777);
    let (ok, text) = check();
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "{} (a directory above the configuration {}) is writable by others (mode 0777)",
            d.display(),
            config.display()
        )),
        "{text}"
    );
}

/// Connects and negotiates as an MTA would, then says nothing more.
async fn silent_connection(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut packet = 13u32.to_be_bytes().to_vec();
    packet.push(b'O');
    for word in [6u32, 0x1ff, 0x1f_ffff] {
        packet.extend_from_slice(&word.to_be_bytes());
    }
    stream.write_all(&packet).await.unwrap();
    stream
}

/// The test relay on TCP with `settings` (lines such as `idle_timeout_secs = 2\n`) added
/// to its `[milter]` table.
fn milter_settings(settings: &str) -> String {
    config_text("inet:0@127.0.0.1").replace(
        "shutdown_timeout_secs = 10\n",
        &format!("shutdown_timeout_secs = 10\n{settings}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_give_their_slots_back_after_the_idle_timeout() {
    let milter =
        Milter::with_config(|_| milter_settings("idle_timeout_secs = 2\nmax_connections = 256\n"))
            .await;
    let addr = milter.tcp.unwrap();
    // A slowloris takes every slot and more: connect, negotiate, then nothing.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(silent_connection(addr).await);
    }
    let started = Instant::now();
    // A real MTA connection gets its message through at once: an idle one gives way.
    let mut conn = tokio::time::timeout(Duration::from_secs(10), milter.connect())
        .await
        .expect("a real connection is served");
    let outcome = send(
        &mut conn,
        &Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
    )
    .await;
    assert_eq!(outcome.status, Status::Accept);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
    conn.close().await.unwrap();
    // Every silent connection is closed by relayguard: reads see the end of the stream
    // (after the negotiation reply, for those that got a slot).
    for stream in &mut idle {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an idle connection stayed open");
    }
    let metrics = milter.service.metrics_text();
    assert!(
        !metrics.contains("relayguard_connection_slots_full_total 0"),
        "{metrics}"
    );
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_outlives_many_idle_timeouts_and_an_idle_one_does_not() {
    // The idle deadline moves with every command; the slot's timer is not re-armed per
    // packet but looks again when it rings. A connection that works on past two idle
    // timeouts stays open, and is closed about one idle timeout after its last command.
    let milter = Milter::with_config(|_| milter_settings("idle_timeout_secs = 2\n")).await;
    let txn = Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    let mut conn = milter.connect().await;
    assert_eq!(send(&mut conn, &txn).await.status, Status::Accept);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(5_000) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let outcome = try_send_message(&mut conn, &txn).await;
        assert!(
            matches!(&outcome, Ok(o) if o.status == Status::Accept),
            "closed while busy, after {:?}: {outcome:?}",
            started.elapsed()
        );
    }
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    assert!(
        try_send_message(&mut conn, &txn).await.is_err(),
        "still open after {:?} idle",
        idle_from.elapsed()
    );
    milter.stop().await.unwrap();
}

/// One macro packet (SMFIC_MACRO for the connect stage), as an MTA sends ahead of a command.
async fn trickle(stream: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    let data = b"Cj\0relay.tugraz.at\0";
    let mut packet = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    packet.push(b'D');
    packet.extend_from_slice(data);
    stream.write_all(&packet).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_connections_on_every_slot_never_keep_a_real_message_waiting() {
    // Default timeouts; 64 slots, all taken by connections that negotiate and then send one
    // macro packet every 3 s and never a command.
    let milter = Milter::with_config(|_| milter_settings("max_connections = 64\n")).await;
    let addr = milter.tcp.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tricklers = Vec::new();
    for _ in 0..64 {
        let mut stream = silent_connection(addr).await;
        let stop = stop.clone();
        tricklers.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::SeqCst) {
                if trickle(&mut stream).await.is_err() {
                    return true;
                }
                // Closed by relayguard: the read sees the end of the stream.
                match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    _ => {}
                }
            }
            false
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = milter.service.metrics_text();
    assert!(
        metrics.contains("relayguard_milter_connections 64"),
        "every slot taken: {metrics}"
    );
    for round in 0..3 {
        let started = Instant::now();
        let mut conn = tokio::time::timeout(Duration::from_secs(5), milter.connect())
            .await
            .expect("connected");
        let outcome = send(
            &mut conn,
            &Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at"),
        )
        .await;
        assert_eq!(outcome.status, Status::Accept, "round {round}");
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(1),
            "round {round}: waited {waited:?}"
        );
        conn.close().await.unwrap();
    }
    // A real connection that ends frees its slot (as soon as its session has wound down);
    // one that finds every slot taken makes a trickler give way: the first always, the
    // others when the connection before has not yet let go of its slot.
    let metrics = milter.service.metrics_text();
    let gave_way: usize = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("relayguard_milter_connections_closed_total{reason=\"slot_needed\"} ")
        })
        .and_then(|n| n.parse().ok())
        .expect("slot_needed counter");
    assert!((1..=3).contains(&gave_way), "{metrics}");
    stop.store(true, Ordering::SeqCst);
    let closed = futures_closed(tricklers).await;
    assert_eq!(
        closed, gave_way,
        "exactly the ones that gave way were closed"
    );
    milter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macros_alone_never_keep_a_connection_past_the_idle_timeout() {
    let milter = Milter::with_config(|_| milter_settings("idle_timeout_secs = 5\n")).await;
    let mut stream = silent_connection(milter.tcp.unwrap()).await;
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed_after = loop {
        if trickle(&mut stream).await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            _ => assert!(started.elapsed() < Duration::from_secs(30), "never closed"),
        }
    };
    assert!(
        closed_after >= Duration::from_secs(4) && closed_after < Duration::from_secs(9),
        "closed after {closed_after:?}"
    );
    assert!(
        milter
            .service
            .metrics_text()
            .contains("relayguard_milter_connections_closed_total{reason=\"idle\"} 1")
    );
    milter.stop().await.unwrap();
}

/// How many of the trickling tasks saw their connection closed.
async fn futures_closed(tasks: Vec<tokio::task::JoinHandle<bool>>) -> usize {
    let mut closed = 0;
    for task in tasks {
        closed += usize::from(task.await.unwrap());
    }
    closed
}

/// A 16 KB tmpfs mounted for one test (root only), unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Self {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the full-disk test mounts a tmpfs: run it as root (scripts/test does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_disk_tempfails_and_leaves_no_partial_record() {
    let disk = SmallDisk::mount();
    let audit = disk.0.path().join("audit.log");
    // Room to free later.
    std::fs::write(disk.0.path().join("filler"), vec![b'x'; 8 * 1024]).unwrap();
    let milter = Milter::with_config(|dir| {
        format!(
            "{}\n{}\n[audit]\nfile = \"{}\"\n",
            config_text("inet:0@127.0.0.1"),
            standard_setup(dir),
            audit.display()
        )
    })
    .await;
    let (mut accepted, mut tempfailed) = (0u64, 0u64);
    // The audit log fills the disk: the MTA hears 451 4.3.0 from then on.
    while tempfailed < 3 {
        let mut conn = milter.connect().await;
        let (status, _) = sign(&mut conn, "alice", "<alice@tugraz.at>", RAW).await;
        conn.close().await.unwrap();
        match status {
            Status::Accept => accepted += 1,
            Status::Tempfail { message } => {
                let text = message.unwrap().to_string_lossy().into_owned();
                assert_eq!(
                    text,
                    "451 4.3.0 temporary local problem (audit log unwritable), try again later"
                );
                tempfailed += 1;
            }
            other => panic!("{other:?}"),
        }
        assert!(accepted < 1000, "the disk never filled");
    }
    // Room again: mail flows, and its records start on lines of their own.
    std::fs::remove_file(disk.0.path().join("filler")).unwrap();
    for _ in 0..3 {
        let mut conn = milter.connect().await;
        let (status, signatures) = sign(&mut conn, "alice", "<alice@tugraz.at>", RAW).await;
        conn.close().await.unwrap();
        assert_eq!((status, signatures.len()), (Status::Accept, 2));
        accepted += 1;
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("partial record `{l}`: {e}")))
        .collect();
    let accepts = records.iter().filter(|r| r["verdict"] == "accept").count() as u64;
    assert_eq!(accepts, accepted, "one record per accepted message");
    // The gap is in the log: each line written after lines that could not be is preceded
    // by a note saying how many are missing (a short note may fit where a record does not).
    let notes: Vec<&str> = records
        .iter()
        .filter(|r| r["event"] == "audit_resumed")
        .map(|r| r["detail"].as_str().unwrap())
        .collect();
    let missing: u64 = notes
        .iter()
        .map(|detail| {
            assert!(detail.contains("No space left on device"), "{detail}");
            detail.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert!(missing >= tempfailed, "{notes:?}");
    let report = relayguard::audit::report::Report::read(
        std::slice::from_ref(&audit),
        &relayguard::audit::report::Filter::default(),
    )
    .unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.logins["alice"].messages, accepted);
    let metrics = milter.service.metrics_text();
    for line in [
        format!("relayguard_messages_total{{verdict=\"accept\",reason=\"ok\"}} {accepted}"),
        format!(
            "relayguard_messages_total{{verdict=\"tempfail\",reason=\"audit_unwritable\"}} {tempfailed}"
        ),
    ] {
        assert!(metrics.contains(&line), "missing `{line}` in\n{metrics}");
    }
    milter.stop().await.unwrap();
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_in_client_fields_cannot_forge_a_log_line() {
    let daemon = Daemon::start(|_, socket| config_text(socket));
    let mut conn = daemon.connect().await;
    let txn = Txn {
        login: Some("mallory\r\n2026-11-30T00:00:00Z INFO FORGED decision verdict=accept"),
        mail_from: "<mallory\r\n2026-11-30T00:00:00Z INFO FORGED@tugraz.at>",
        ..Txn::authenticated("x", "<x@tugraz.at>", "x@tugraz.at")
    };
    let outcome = send(&mut conn, &txn).await;
    assert_eq!(outcome.stage, "mail");
    let log = daemon.wait_log("decision").await;
    for line in log.lines().filter(|l| l.contains("FORGED")) {
        assert!(
            line.contains(" decision "),
            "forged line in the log: {line}\n{log}"
        );
        assert!(line.contains("mallory\\r\\n2026"), "{line}");
    }
    conn.close().await.unwrap();
}

/// The `key=value` fields of a log line by logfmt rules (quoted values unescaped).
fn logfmt_fields(line: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    while chars.peek().is_some() {
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' || c == '=' {
                break;
            }
            word.push(c);
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            chars.next();
            continue;
        }
        chars.next();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        fields.push((word, value));
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refused_for_several_reasons_is_one_log_line() {
    let daemon =
        Daemon::start(|dir, socket| format!("{}\n{}", config_text(socket), standard_setup(dir)));
    let dir = daemon.dir.path();
    for key in ["tugraz.at.rsa-a.pem", "tugraz.at.ed-a.pem"] {
        std::fs::remove_file(dir.join("keys").join(key)).unwrap();
    }
    daemon.signal(libc::SIGHUP);
    let log = daemon.wait_log("reload failed").await;
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rsa-a.pem") || l.contains("ed-a.pem"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains("reload failed"),
        "{log}"
    );
    assert!(
        lines[0].contains("\\n"),
        "the reasons joined on one line: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spaces_and_quotes_in_client_fields_cannot_add_a_log_field() {
    let daemon = Daemon::start(|_, socket| config_text(socket));
    let mut conn = daemon.connect().await;
    let injected = "<\"a verdict=\\\"accept\\\" reason=ok login=admin\"@tugraz.at>";
    let txn = Txn {
        mail_from: injected,
        ..Txn::authenticated("mallory", "<x@tugraz.at>", "x@tugraz.at")
    };
    let outcome = send(&mut conn, &txn).await;
    assert_eq!(outcome.stage, "mail");
    let log = daemon.wait_log("decision").await;
    let line = log.lines().find(|l| l.contains(" decision ")).unwrap();
    let fields = logfmt_fields(line);
    let get = |key: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("verdict"), ["reject"], "{line}");
    assert_eq!(get("reason"), ["malformed_address"], "{line}");
    assert_eq!(get("login"), ["mallory"], "{line}");
    assert_eq!(get("mail_from"), [injected], "{line}");
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_messages_in_flight_and_refuses_new_ones() {
    const CONNECTIONS: u64 = 4;
    let mut daemon =
        Daemon::start(|dir, socket| format!("{}\n{}", config_text(socket), standard_setup(dir)));
    let txn = Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    // One MTA connection is in the middle of a message (MAIL and RCPT given) at SIGTERM.
    let mut slow = daemon.connect().await;
    assert_eq!(send(&mut slow, &txn).await.status, Status::Accept);
    slow.macros(
        indymilter_test::MacroStage::Mail,
        [("{auth_authen}", "alice")],
    )
    .await
    .unwrap();
    assert_eq!(
        slow.mail(["<alice@tugraz.at>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(
        slow.rcpt(["<friend@example.org>"]).await.unwrap(),
        Status::Continue
    );
    // Others keep sending on their connections until they are told to stop.
    let accepted = Arc::new(AtomicU64::new(0));
    let signalled = Arc::new(AtomicBool::new(false));
    let after_signal = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        let (accepted, signalled, after_signal) =
            (accepted.clone(), signalled.clone(), after_signal.clone());
        let (mut conn, txn) = (daemon.connect().await, txn.clone());
        senders.push(tokio::spawn(async move {
            let mut outcome = send(&mut conn, &txn).await;
            loop {
                match (outcome.stage, &outcome.status) {
                    ("eom", Status::Accept) => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        if signalled.load(Ordering::SeqCst) {
                            after_signal.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    ("mail", Status::Tempfail { .. }) => return outcome.reply().unwrap(),
                    _ => panic!("a message was cut off: {outcome:?}"),
                }
                outcome = try_send_message(&mut conn, &txn).await.unwrap();
            }
        }));
    }
    while accepted.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signalled.store(true, Ordering::SeqCst);
    daemon.signal(libc::SIGTERM);
    for sender in senders {
        let reply = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect("every connection is refused a new message soon after SIGTERM")
            .unwrap();
        assert_eq!(
            reply,
            "421 4.3.2 relayguard is shutting down; try again later"
        );
    }
    // At most the message each connection had in flight (and one it began before the
    // signal reached the process) was accepted after SIGTERM.
    let late = after_signal.load(Ordering::SeqCst);
    assert!(
        late <= 2 * CONNECTIONS,
        "{late} messages accepted after SIGTERM"
    );
    // The message in flight finishes, signed, and then the process exits.
    for (name, value) in &txn.headers {
        slow.header(*name, *value).await.unwrap();
    }
    slow.eoh().await.unwrap();
    slow.body("Hello.\r\n").await.unwrap();
    let (actions, status) = slow.eom().await.unwrap();
    assert_eq!(status, Status::Accept);
    assert_eq!(actions.actions.len(), 2, "signed twice: {actions:?}");
    let _ = slow.abort().await;
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits once the message in flight is done, long before the 10 s timeout");
    assert!(status.success(), "{status}");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_skipped_not_waited_for_and_logged_once() {
    let mut redis = common::redis::Redis::start();
    let metrics_port = common::free_port();
    let url = redis.url();
    let daemon = Daemon::start(|_, socket| {
        format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n[limits]\nstore = \"redis\"\ntimezone = \"UTC\"\n\n[limits.redis]\nurl = \"{url}\"\nprefix = \"rgfault:\"\ntimeout_ms = 200\non_failure = \"fail_open\"\n\n[limits.external]\nmessages_per_hour = 1000\n",
            config_text(socket)
        )
    });
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let txn = Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at");
    let mut conn = daemon.connect().await;
    assert_eq!(send(&mut conn, &txn).await.status, Status::Accept);

    redis.stop();
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(
            try_send_message(&mut conn, &txn).await.unwrap().status,
            Status::Accept
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let text = common::http_get(metrics_addr, "/metrics").await;
    // Three failures open the breaker; after that one probe per period at most.
    let errors = metric(&text, "relayguard_redis_errors_total");
    let periods = elapsed / relayguard::limits::breaker::OPEN_FOR.as_secs_f64();
    assert!(
        errors <= 3.0 + periods.ceil() + 1.0,
        "{errors} Redis calls failed in {elapsed:.1} s for 100 messages"
    );
    assert_eq!(metric(&text, "relayguard_redis_unavailable"), 1.0);
    let warnings = daemon
        .log()
        .lines()
        .filter(|l| l.contains("Redis") && l.contains("WARN"))
        .count();
    assert_eq!(warnings, 1, "{}", daemon.log());

    // Redis returns: within a probe period the counters are shared again.
    redis.restart();
    let back = Instant::now();
    while !daemon.log().contains("Redis answers again") {
        assert!(back.elapsed() < Duration::from_secs(10), "{}", daemon.log());
        assert_eq!(
            try_send_message(&mut conn, &txn).await.unwrap().status,
            Status::Accept
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = common::http_get(metrics_addr, "/metrics").await;
    assert_eq!(metric(&text, "relayguard_redis_unavailable"), 0.0);
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_redis_primary_is_followed_through_the_sentinels_under_load() {
    use common::redis::{Sentinels, cli};
    let mut cluster = Sentinels::start();
    // 2026-11-28T19:00:00Z: inside the watched night, so every connection counts.
    let clock: relayguard::clock::Clock = Arc::new(|| 1_795_892_400_000);
    let sentinels = cluster.toml_list();
    let milter = Milter::with_clock(
        |dir| {
            format!(
                "{}\n[limits]\nstore = \"redis\"\ntimezone = \"UTC\"\n\n[limits.redis]\nsentinels = {sentinels}\nmaster_name = \"{}\"\nprefix = \"rgsent:\"\ntimeout_ms = 200\non_failure = \"fail_open\"\n\n[limits.external]\nauthentications_per_window = 1000000\n",
                config_text(&format!("unix:{}/relayguard.sock", dir.display())),
                Sentinels::MASTER
            )
        },
        Some(clock),
    )
    .await;
    let milter = Arc::new(milter);
    // An MTA opening one connection per message, as fast as relayguard answers.
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (milter, sent, stop) = (milter.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            let txn = Txn::authenticated("alice", "<alice@tugraz.at>", "alice@tugraz.at");
            while !stop.load(Ordering::SeqCst) {
                let mut conn = milter.connect().await;
                let outcome = send(&mut conn, &txn).await;
                conn.close().await.unwrap();
                assert_eq!(outcome.status, Status::Accept, "{outcome:?}");
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let key = "rgsent:auth:alice:2026-11-28";
    let count = |port: u16| -> u64 {
        cli(port, &["GET", key])
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(cluster.replica) < 20 {
        assert!(
            Instant::now() < deadline,
            "counters never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The primary's host fails.
    let killed = Instant::now();
    let sent_at_kill = sent.load(Ordering::SeqCst);
    let replicated = count(cluster.replica);
    cluster.kill(cluster.primary);
    // The sentinels promote the replica; relayguard finds it and counts there again.
    loop {
        let promoted = cluster.current_primary() == Some(cluster.replica);
        if promoted && count(cluster.replica) > replicated + 5 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "counters did not continue on the new primary (sentinels name {:?})",
            cluster.current_primary()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let followed = killed.elapsed();
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let total = sent.load(Ordering::SeqCst);
    let counted = count(cluster.replica);
    eprintln!(
        "failover followed {:.1} s after the primary died; {} messages sent during it; {counted} of {total} counted in Redis",
        followed.as_secs_f64(),
        total - sent_at_kill
    );
    // Nothing is counted twice: the outage's local counts are not replayed into Redis.
    assert!(counted <= total, "{counted} counted for {total} sent");
    assert!(
        counted > replicated,
        "counting continued on the new primary"
    );
}

/// Signs one message from alice through a running daemon: the status and the signature count.
async fn signed_through(daemon: &Daemon) -> (Status, usize) {
    let mut conn = daemon.connect().await;
    let (status, signatures) = sign(&mut conn, "alice", "<alice@tugraz.at>", RAW).await;
    conn.close().await.unwrap();
    (status, signatures.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_it_signs_again_at_once() {
    let mut daemon =
        Daemon::start(|dir, socket| format!("{}\n{}", config_text(socket), standard_setup(dir)));
    assert_eq!(signed_through(&daemon).await, (Status::Accept, 2));
    daemon.signal(libc::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(5)).await.is_some());
    // The socket file is left behind by a killed process; the new one replaces it.
    assert!(daemon.socket.exists());
    let restarted = Instant::now();
    daemon.restart();
    assert_eq!(signed_through(&daemon).await, (Status::Accept, 2));
    eprintln!(
        "signing again {:.2} s after the restart began",
        restarted.elapsed().as_secs_f64()
    );
}
