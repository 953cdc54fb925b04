//! Runbook for auditors: the relay seals every audit record into a hash chain, signs
//! checkpoints with a key of its own, keeps the chain across restarts, rotation and crashes,
//! deletes old rotated files whole; `relayguard audit verify` finds every kind of tampering
//! with file and line; `audit report --format html` renders in a real browser and agrees
//! with the text report.

mod common;

use common::dkim::{sign, standard_setup};
use common::{Txn, config_text, send};
use relayguard::audit::chain::{Hash, Link};
use relayguard::audit::writer::{AuditConfig, AuditLog, Checkpoints, Destination, Fsync, OnError};
use relayguard::runtime::{Options, Running};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs the relayguard binary: (exit code, stdout, stderr).
fn relayguard(args: &[&str]) -> (i32, String, String) {
    relayguard_in(Path::new("."), args)
}

/// Runs the relayguard binary in `dir`.
fn relayguard_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_relayguard"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("relayguard runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `relayguard audit keygen --out DIR/audit.key`: the checkpoint key pair.
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("audit.key");
    let (code, out, err) = relayguard(&["audit", "keygen", "--out", s(&key)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("public key for auditors"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second keygen does not overwrite the key by accident.
    let (code, _, err) = relayguard(&["audit", "keygen", "--out", s(&key)]);
    assert_eq!(code, 1, "{err}");
    (key.clone(), dir.join("audit.key.pub"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn verify(args: &[&Path], key: Option<&Path>) -> (i32, String) {
    let mut argv = vec!["audit", "verify"];
    if let Some(key) = key {
        argv.extend(["--key", s(key)]);
    }
    argv.extend(args.iter().map(|p| s(p)));
    let (code, out, err) = relayguard(&argv);
    assert!(err.is_empty() || code != 2, "{err}");
    (code, out)
}

async fn start(config: &Path, clock: Option<relayguard::clock::Clock>) -> Running {
    relayguard::runtime::start(
        config,
        Options {
            clock: clock.unwrap_or_else(relayguard::clock::system),
            watch_files: false,
            signals: false,
        },
    )
    .await
    .expect("starts")
}

async fn connect(running: &Running) -> indymilter_test::TestConnection {
    indymilter_test::TestConnection::open(running.local_addr().unwrap())
        .await
        .unwrap()
}

fn relay_config(dir: &Path, audit: &str) -> PathBuf {
    std::fs::write(dir.join("sender_login_maps"), common::MAP).unwrap();
    let path = dir.join("relayguard.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n{}\n[audit]\nfile = \"audit.log\"\n{audit}\n",
            config_text("inet:0@127.0.0.1"),
            standard_setup(dir)
        ),
    )
    .unwrap();
    path
}

const MESSAGE: &[u8] =
    b"From: Alice <alice@tugraz.at>\r\nTo: friend@example.org\r\nSubject: audited\r\n\r\nhello\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_seals_every_record_and_an_auditor_proves_a_rotated_series() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keygen(dir.path());
    let config = relay_config(
        dir.path(),
        "checkpoint_key = \"audit.key\"\ncheckpoint_minutes = 60",
    );
    let live = dir.path().join("audit.log");

    // Day one: a signed message and a spoof, sealed by a checkpoint.
    let running = start(&config, None).await;
    let mut conn = connect(&running).await;
    assert_eq!(
        sign(&mut conn, "alice", "<alice@tugraz.at>", MESSAGE)
            .await
            .1
            .len(),
        2
    );
    conn.close().await.unwrap();
    let mut conn = connect(&running).await;
    send(
        &mut conn,
        &Txn::authenticated("mallory", "<mallory@tugraz.at>", "rector@tugraz.at"),
    )
    .await;
    conn.close().await.unwrap();
    assert!(running.service.audit_checkpoint());
    assert!(
        !running.service.audit_checkpoint(),
        "nothing new: no checkpoint"
    );

    // logrotate moves the file and signals; the next record starts the new file at seq 1
    // and names the old file's last line.
    std::fs::rename(&live, dir.path().join("audit.log.1")).unwrap();
    running.service.reopen_audit();
    let mut conn = connect(&running).await;
    sign(&mut conn, "alice", "<alice@tugraz.at>", MESSAGE).await;
    conn.close().await.unwrap();
    running.stop().await.unwrap();
    let rotated = lines(&dir.path().join("audit.log.1"));
    let first: serde_json::Value = serde_json::from_str(&lines(&live)[0]).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(
        first["prev"],
        Hash::of(rotated.last().unwrap().as_bytes()).to_string()
    );
    assert!(
        lines(&live).last().unwrap().starts_with("{\"checkpoint\":"),
        "stopping seals the file"
    );

    // compress the rotated file, as logrotate's `compress` does
    let gz = dir.path().join("audit.log.1.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    encoder
        .write_all(&std::fs::read(dir.path().join("audit.log.1")).unwrap())
        .unwrap();
    encoder.finish().unwrap();
    std::fs::remove_file(dir.path().join("audit.log.1")).unwrap();

    // A restart resumes the chain after the last record.
    let before = lines(&live);
    let running = start(&config, None).await;
    let mut conn = connect(&running).await;
    sign(&mut conn, "alice", "<alice@tugraz.at>", MESSAGE).await;
    conn.close().await.unwrap();
    running.stop().await.unwrap();
    let after = lines(&live);
    let resumed: serde_json::Value = serde_json::from_str(&after[before.len()]).unwrap();
    assert_eq!(resumed["seq"], before.len() as u64 + 1);
    assert_eq!(
        resumed["prev"],
        Hash::of(before.last().unwrap().as_bytes()).to_string()
    );

    // The auditor holds only the public key.
    let (code, out) = verify(&[&gz, &live], Some(&public));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("chain intact: 7 records in 2 file(s)"),
        "{out}"
    );
    assert!(out.contains("the chain begins in the first file"), "{out}");
    assert!(out.contains("checkpoints: 3 verified"), "{out}");
    assert!(out.contains("0 records after it"), "{out}");
    println!("audit verify --key audit.key.pub audit.log.1.gz audit.log:\n{out}");

    // Files given newest first are named as such.
    let (code, out) = verify(&[&live, &gz], Some(&public));
    assert_eq!(code, 1);
    assert!(out.contains("give the files oldest first"), "{out}");
    // The report reads the checkpoint lines without complaint.
    let (code, out, err) = relayguard(&["audit", "report", s(&gz), s(&live)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    assert!(out.starts_with("4 records"), "{out}");
}

/// The relay's audit writer on `DIR/audit.log`, with checkpoints when given a key.
fn writer(dir: &Path, key: Option<&Path>) -> AuditLog {
    AuditLog::open(AuditConfig {
        destination: Destination::File(dir.join("audit.log")),
        fsync: Fsync::Never,
        on_error: OnError::Tempfail,
        full_recipients: false,
        checkpoints: key.map(|key| Checkpoints {
            key_file: key.to_path_buf(),
            every_minutes: 60,
            witness_file: None,
        }),
        retention_days: None,
    })
}

/// A series as a relay writes it: three files of 30 records, each sealed by a checkpoint
/// and rotated (`audit.log.2`, `audit.log.1`, `audit.log`), written by the relay's writer.
fn series(dir: &Path, key: &Path) -> Vec<PathBuf> {
    let log = writer(dir, Some(key));
    let mut n = 0;
    for rotate_to in ["audit.log.2", "audit.log.1", ""] {
        for _ in 0..30 {
            n += 1;
            write_record(
                &log,
                &decision(n, "2026-12-01", "alice", "accept", "ok", true),
            );
        }
        // The timer's checkpoint half a minute after the last record, as an honest relay.
        let at = format!("2026-12-01T{:02}:{:02}:30.000Z", n / 60, n % 60);
        assert!(log.checkpoint(&at, "relay1").unwrap());
        if !rotate_to.is_empty() {
            std::fs::rename(dir.join("audit.log"), dir.join(rotate_to)).unwrap();
            log.reopen(&at, "relay1").unwrap();
        }
    }
    ["audit.log.2", "audit.log.1", "audit.log"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

/// One decision record as the relay writes it.
fn decision(
    n: u64,
    day: &str,
    login: &str,
    verdict: &str,
    reason: &str,
    signed: bool,
) -> serde_json::Value {
    let dkim = if signed {
        serde_json::json!([{"domain": "tugraz.at", "selector": "s2026a", "algorithm": "rsa-sha256"}])
    } else {
        serde_json::json!([])
    };
    serde_json::json!({
        "time": format!("{day}T{:02}:{:02}:00.000Z", (n / 60) % 24, n % 60),
        "host": "relay1", "queue_id": format!("Q{n}"), "client": "203.0.113.7",
        "client_class": if login.starts_with('(') { login.trim_matches(['(', ')']) } else { "authenticated" },
        "login": if login.starts_with('(') { serde_json::Value::Null } else { login.into() },
        "mail_from": format!("<{login}@tugraz.at>"), "header_from": format!("{login}@tugraz.at"),
        "header_sender": null, "rcpt_count": 1 + n % 3, "rcpt_domains": ["example.org"],
        "size": 2048, "verdict": verdict, "reason": reason, "text": "t", "dkim": dkim,
    })
}

fn write_record(log: &AuditLog, value: &serde_json::Value) {
    let text = value.to_string();
    let record: relayguard::audit::Record<'_> = serde_json::from_str(&text).unwrap();
    log.write(&record).unwrap();
}

/// Copies the series into a fresh directory for one tampering.
fn copy(files: &[PathBuf], to: &Path) -> Vec<PathBuf> {
    files
        .iter()
        .map(|f| {
            let target = to.join(f.file_name().unwrap());
            std::fs::copy(f, &target).unwrap();
            target
        })
        .collect()
}

fn broken(files: &[PathBuf], key: Option<&Path>, at: &str, says: &str) {
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, out) = verify(&paths, key);
    assert_eq!(code, 1, "{out}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("CHAIN BROKEN at {at}: ")) && first.contains(says),
        "expected a break at {at} saying `{says}`, got:\n{out}"
    );
    println!("{first}");
}

#[test]
fn every_kind_of_tampering_is_caught_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let original = series(dir.path(), &key);
    let paths: Vec<&Path> = original.iter().map(PathBuf::as_path).collect();
    let (code, out) = verify(&paths, Some(&public));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("chain intact: 93 records in 3 file(s)"),
        "{out}"
    );

    let case = |name: &str, tamper: &dyn Fn(&[PathBuf]) -> Vec<PathBuf>, at: &str, says: &str| {
        let work = dir.path().join(name);
        std::fs::create_dir(&work).unwrap();
        let files = copy(&original, &work);
        let given = tamper(&files);
        let at = format!("{}/{at}", work.display());
        broken(&given, Some(&public), &at, says);
    };
    let edit = |files: &[PathBuf], f: &dyn Fn(&mut Vec<String>)| {
        let mut l = lines(&files[1]);
        f(&mut l);
        write_lines(&files[1], &l);
        files.to_vec()
    };

    case(
        "edited",
        &|f| {
            edit(f, &|l| {
                l[4] = l[4].replace("\"login\":\"alice\"", "\"login\":\"bob\"")
            })
        },
        "audit.log.1:6",
        "was changed after it was written",
    );
    case(
        "deleted",
        &|f| edit(f, &|l| drop(l.remove(4))),
        "audit.log.1:5",
        "1 record(s) before this one are missing",
    );
    case(
        "inserted",
        &|f| {
            edit(f, &|l| {
                // A forger who seals the line properly onto its predecessor.
                let link = Link {
                    seq: 4,
                    hash: Hash::of(l[3].as_bytes()),
                };
                let forged = link
                    .seal(br#"{"login":"rector","verdict":"accept"}"#, false)
                    .0;
                l.insert(4, String::from_utf8(forged).unwrap());
            })
        },
        "audit.log.1:6",
        "a record was inserted or records were reordered",
    );
    case(
        "reordered",
        &|f| edit(f, &|l| l.swap(3, 4)),
        "audit.log.1:4",
        "missing (deleted, or moved elsewhere)",
    );
    case(
        "truncated-record",
        &|f| {
            edit(f, &|l| {
                let half = l[4].len() / 2;
                l[4].truncate(half)
            })
        },
        "audit.log.1:5",
        "not a complete sealed record",
    );
    case(
        "missing-file",
        &|f| vec![f[0].clone(), f[2].clone()],
        "audit.log:1",
        "a file is missing from the series",
    );
    case(
        "truncated-file",
        &|f| {
            edit(f, &|l| l.truncate(20));
            f.to_vec()
        },
        "audit.log.1:20",
        "this file ends without the checkpoint a relay writes when it closes a file",
    );
    case(
        "out-of-order",
        &|f| vec![f[1].clone(), f[0].clone(), f[2].clone()],
        "audit.log.1:1",
        "give the files oldest first",
    );

    // A forger who edits a record and re-seals everything after it: the chain is whole
    // again, only a checkpoint key proves otherwise.
    let work = dir.path().join("resealed");
    std::fs::create_dir(&work).unwrap();
    let files = copy(&original, &work);
    let mut link = Link::START;
    for (i, file) in files.iter().enumerate() {
        let mut out = Vec::new();
        for (n, line) in lines(file).iter().enumerate() {
            let line = if i == 1 && n == 4 {
                line.replace("\"login\":\"alice\"", "\"login\":\"bob\"")
            } else {
                line.clone()
            };
            let object = &line[..line.rfind(",\"seq\":").unwrap()];
            let (sealed, next) = link.seal(format!("{object}}}").as_bytes(), n == 0);
            link = next;
            out.push(String::from_utf8(sealed).unwrap());
        }
        write_lines(file, &out);
    }
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, out) = verify(&paths, None);
    assert_eq!(code, 0, "without the key the rewrite looks whole: {out}");
    assert!(out.contains("3 checkpoints not checked"), "{out}");
    broken(
        &files,
        Some(&public),
        &format!("{}/audit.log.1:31", work.display()),
        "bad checkpoint: the signature by key",
    );

    // A checkpoint from another key is not proof.
    let other = tempfile::tempdir().unwrap();
    let (_, stranger) = keygen(other.path());
    let (code, out) = verify(&paths, Some(&stranger));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("which was not given"), "{out}");
}

/// One minute of a relay with `checkpoint_minutes = 1` and a witness file: a record every
/// 5 s from 10:00:00 to 10:02:55 (36), a checkpoint at each full minute and one at the end.
fn minutes_with_witness(dir: &Path, key: &Path) -> (PathBuf, PathBuf) {
    let witness = dir.join("witness.log");
    let log = AuditLog::open(AuditConfig {
        destination: Destination::File(dir.join("audit.log")),
        fsync: Fsync::Never,
        on_error: OnError::Tempfail,
        full_recipients: false,
        checkpoints: Some(Checkpoints {
            key_file: key.to_path_buf(),
            every_minutes: 1,
            witness_file: Some(witness.clone()),
        }),
        retention_days: None,
    });
    for n in 0..36u64 {
        let (minute, second) = (n * 5 / 60, n * 5 % 60);
        let mut record = decision(n, "2026-12-03", "alice", "accept", "ok", true);
        if n == 14 {
            record = decision(
                n,
                "2026-12-03",
                "mallory",
                "reject",
                "sender_not_owned",
                false,
            );
        }
        record["time"] = format!("2026-12-03T10:{minute:02}:{second:02}.000Z").into();
        write_record(&log, &record);
        if second == 55 {
            let at = format!("2026-12-03T10:{:02}:00.000Z", minute + 1);
            assert!(log.checkpoint(&at, "relay1").unwrap());
        }
    }
    (dir.join("audit.log"), witness)
}

/// `audit verify` with the checkpoint key, holding the files to checkpoints every minute.
fn verify_every_minute(files: &[&Path], public: &Path, extra: &[&str]) -> (i32, String) {
    let mut argv = vec![
        "audit",
        "verify",
        "--key",
        s(public),
        "--checkpoint-minutes",
        "1",
    ];
    argv.extend(extra);
    argv.extend(files.iter().map(|p| s(p)));
    let (code, out, _) = relayguard(&argv);
    (code, out)
}

#[test]
fn a_tail_re_sealed_without_its_checkpoints_or_cut_is_caught_by_the_cadence_and_the_witness() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let (log, witness) = minutes_with_witness(dir.path(), &key);
    let run = |files: &[&Path], extra: &[&str]| verify_every_minute(files, &public, extra);
    let (code, out) = run(&[&log], &["--witness", s(&witness)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("witness: 3 of 3 witnessed checkpoints from this period are in the files"),
        "{out}"
    );

    // The forger turns mallory's refusal (line 15) into alice's acceptance, drops the two
    // checkpoints after it and re-seals from there: the chain is whole, the first checkpoint
    // still verifies, and 70 s of records follow it with none.
    let forged = dir.path().join("forged.log");
    let mut link = relayguard::audit::chain::Link::START;
    let mut out_lines = Vec::new();
    for (n, line) in lines(&log).iter().enumerate() {
        let after_edit = n >= 14;
        if after_edit && line.starts_with("{\"checkpoint\":") {
            continue;
        }
        let line = line
            .replace("\"login\":\"mallory\"", "\"login\":\"alice\"")
            .replace(
                "\"verdict\":\"reject\",\"reason\":\"sender_not_owned\"",
                "\"verdict\":\"accept\",\"reason\":\"ok\"",
            );
        let object = &line[..line.rfind(",\"seq\":").unwrap()];
        let (sealed, next) = link.seal(format!("{object}}}").as_bytes(), n == 0);
        link = next;
        out_lines.push(String::from_utf8(sealed).unwrap());
    }
    write_lines(&forged, &out_lines);
    let (code, out) = run(&[&forged], &[]);
    assert_eq!(code, 1, "{out}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("CHAIN BROKEN at {}:", forged.display()))
            && first.contains("no checkpoint covers the records since")
            && first.contains(&format!("{}:14", forged.display())),
        "{out}"
    );
    // The witness knows the checkpoints that were dropped.
    let (code, out) = run(&[&forged], &["--witness", s(&witness)]);
    assert_eq!(code, 1);
    assert!(
        out.contains("the witness holds a checkpoint of 2026-12-03T10:02:00.000Z"),
        "{out}"
    );

    // Cut right after a checkpoint: the chain and every signature are whole; only the
    // witness shows the checkpoint that followed.
    let cut = dir.path().join("cut.log");
    let kept: Vec<String> = lines(&log)[..26].to_vec();
    assert!(kept.last().unwrap().starts_with("{\"checkpoint\":"));
    write_lines(&cut, &kept);
    let (code, out) = run(&[&cut], &[]);
    assert_eq!(code, 0, "without a witness a clean cut looks whole: {out}");
    let (code, out) = run(&[&cut], &["--witness", s(&witness)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "CHAIN BROKEN at {}:26: the witness holds a checkpoint of 2026-12-03T10:03:00.000Z",
            cut.display()
        )),
        "{out}"
    );
}

#[test]
fn a_million_records_verify_in_a_few_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
    let mut link = Link::START;
    let template = decision(0, "2026-12-01", "alice", "accept", "ok", true).to_string();
    let template = template.strip_suffix('}').unwrap();
    for n in 0..1_000_000u64 {
        let object = format!("{template},\"n\":{n}}}");
        let (line, next) = link.seal(object.as_bytes(), n == 0);
        link = next;
        out.write_all(&line).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let size = std::fs::metadata(&path).unwrap().len();
    let started = std::time::Instant::now();
    let (code, report) = verify(&[&path], None);
    let took = started.elapsed();
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("chain intact: 1000000 records"), "{report}");
    // The figure for the closing note; the release build is in BENCHMARKS.md.
    println!(
        "audit verify: 1,000,000 records ({} MB) in {:.2} s (debug build)",
        size / 1_000_000,
        took.as_secs_f64()
    );
}

/// A relay SIGKILLed between checkpoints leaves records no checkpoint seals; the next start
/// says so in an `audit_resumed` note, so the killed writer's tail is not taken for one
/// stripped of its checkpoints (the cadence rule), and the auditor is told.
#[test]
fn a_relay_killed_between_checkpoints_resumes_and_its_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let killed = writer(dir.path(), Some(&key));
    write_record(
        &killed,
        &decision(1, "2026-12-01", "alice", "accept", "ok", true),
    );
    assert!(
        killed
            .checkpoint("2026-12-01T00:01:30.000Z", "relay1")
            .unwrap()
    );
    for n in 2..=3 {
        write_record(
            &killed,
            &decision(n, "2026-12-01", "alice", "accept", "ok", true),
        );
    }
    drop(killed); // SIGKILL: no closing checkpoint.

    let restarted = writer(dir.path(), Some(&key));
    restarted.flush_notes("2026-12-01T00:10:00.000Z", "relay1");
    for n in 10..=11 {
        write_record(
            &restarted,
            &decision(n, "2026-12-01", "alice", "accept", "ok", true),
        );
        let at = format!("2026-12-01T00:{n:02}:30.000Z");
        assert!(restarted.checkpoint(&at, "relay1").unwrap());
    }
    let live = dir.path().join("audit.log");
    let note = &lines(&live)[4];
    assert!(
        note.starts_with("{\"event\":\"audit_resumed\"")
            && note.contains("ends after seq 4 without a closing checkpoint"),
        "{note}"
    );
    let (code, out) = verify_every_minute(&[&live], &public, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("the writer resumed after a crash 1 time(s)"),
        "{out}"
    );
}

/// `relayguard keys publish` run by hand appends its key events to the file the running
/// relay writes: the relay keeps the file's lock between its lines and lets go once a second
/// (here every 20 ms), the CLI waits for its turn, and the relay, finding the file grown
/// under it, resumes after the CLI's line, so the chain never forks.
#[test]
fn a_second_writer_on_the_same_file_does_not_break_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let service = std::sync::Arc::new(writer(dir.path(), Some(&key)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (service, stop) = (service.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(20));
                service.let_others_in();
            }
        })
    };
    let cli = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            for n in 1..=4 {
                std::thread::sleep(std::time::Duration::from_millis(30));
                // The CLI: opened, one event, gone, as `keys publish` does.
                let cli = writer(&dir, None);
                let note = format!("published s{n}");
                cli.note(
                    "key_published",
                    "2026-12-01T00:30:00.000Z",
                    "relay1",
                    &note,
                    Default::default(),
                )
                .unwrap();
            }
        })
    };
    // The relay writes on while the CLI waits for its turns.
    for n in 1..=40 {
        write_record(
            &service,
            &decision(n, "2026-12-01", "alice", "accept", "ok", true),
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cli.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    assert!(
        service
            .checkpoint("2026-12-01T01:00:00.000Z", "relay1")
            .unwrap()
    );
    let live = dir.path().join("audit.log");
    let all = lines(&live);
    let total = 40 + 4 + 1;
    assert_eq!(all.len(), total);
    assert_eq!(
        all.iter().filter(|l| l.contains("key_published")).count(),
        4
    );
    let first_cli = all
        .iter()
        .position(|l| l.contains("key_published"))
        .unwrap();
    assert!(
        first_cli < 30,
        "the CLI waited for the relay to stop writing: line {first_cli}"
    );
    let seqs: Vec<u64> = all
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<u64>>());
    let (code, out) = verify(&[&live], Some(&public));
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_cut_short_by_a_crash_is_removed_at_start_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = relay_config(dir.path(), "");
    let live = dir.path().join("audit.log");
    let running = start(&config, None).await;
    let mut conn = connect(&running).await;
    sign(&mut conn, "alice", "<alice@tugraz.at>", MESSAGE).await;
    conn.close().await.unwrap();
    running.stop().await.unwrap();
    let good = lines(&live);
    // The host lost power in the middle of a write.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    f.write_all(b"{\"time\":\"2026-12-03T10:00:00.000Z\",\"host\":\"rel")
        .unwrap();
    drop(f);

    let running = start(&config, None).await;
    let mut conn = connect(&running).await;
    sign(&mut conn, "alice", "<alice@tugraz.at>", MESSAGE).await;
    conn.close().await.unwrap();
    running.stop().await.unwrap();
    let now = lines(&live);
    assert_eq!(now[..good.len()], good[..]);
    assert!(
        now[good.len()].starts_with("{\"event\":\"audit_resumed\"")
            && now[good.len()].contains("cut off 46 bytes of a partial record"),
        "{}",
        now[good.len()]
    );
    let (code, out) = verify(&[&live], None);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_whole_old_files_and_the_series_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let now: i64 = 1_796_000_000; // 2026-11-29
    let day = 86_400;
    // Three rotated files from 60, 40 and 10 days ago, written by the relay's writer.
    {
        let log = writer(dir.path(), None);
        for (age, name) in [
            (60, "audit.log.3"),
            (40, "audit.log.2"),
            (10, "audit.log.1"),
        ] {
            let date = jiff::Timestamp::from_second(now - age * day)
                .unwrap()
                .strftime("%Y-%m-%d")
                .to_string();
            for n in 0..5 {
                write_record(&log, &decision(n, &date, "alice", "accept", "ok", true));
            }
            let target = dir.path().join(name);
            std::fs::rename(dir.path().join("audit.log"), &target).unwrap();
            log.reopen(&date, "relay1").unwrap();
            let status = Command::new("touch")
                .arg("-d")
                .arg(format!("@{}", now - age * day + 3_600))
                .arg(&target)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    let config = relay_config(dir.path(), "retention_days = 30");
    let clock: relayguard::clock::Clock = std::sync::Arc::new(move || now * 1000);
    let running = start(&config, Some(clock)).await;
    let live = dir.path().join("audit.log");
    // The first retention pass runs at start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(&live)
        .unwrap_or_default()
        .matches("audit_file_deleted")
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "retention ran");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    running.stop().await.unwrap();
    assert!(!dir.path().join("audit.log.3").exists());
    assert!(!dir.path().join("audit.log.2").exists());
    assert!(dir.path().join("audit.log.1").exists(), "10 days old: kept");
    let deleted: Vec<serde_json::Value> = lines(&live)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(deleted[0]["event"], "audit_file_deleted");
    assert_eq!(deleted[0]["file"], s(&dir.path().join("audit.log.3")));
    assert_eq!(deleted[1]["file"], s(&dir.path().join("audit.log.2")));
    assert_eq!(deleted[1]["detail"], "retention_days = 30");

    // What is kept still verifies, and says where it begins.
    let kept = dir.path().join("audit.log.1");
    let (code, out) = verify(&[&kept, &live], None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "the series continues {}, deleted by retention",
            dir.path().join("audit.log.2").display()
        )),
        "{out}"
    );
    println!("{out}");
}

/// A month of a small relay: busy days and quiet ones, spoofs, limits, locks, unsigned
/// mail, monitor-mode refusals, two rotated files.
fn month(dir: &Path, key: &Path) -> Vec<PathBuf> {
    let log = writer(dir, Some(key));
    // As an honest relay with checkpoint_minutes = 60: a checkpoint at most 40 records
    // (40 minutes here) after the first one it has not sealed, stamped just after the last.
    let written = std::cell::Cell::new(0u64);
    let last_time = std::cell::RefCell::new(String::new());
    let after_last = || last_time.borrow().replace(":00.000Z", ":30.000Z");
    let write = |record: &serde_json::Value| {
        write_record(&log, record);
        *last_time.borrow_mut() = record["time"].as_str().unwrap().to_string();
        written.set(written.get() + 1);
        if written.get().is_multiple_of(40) {
            log.checkpoint(&after_last(), "relay1").unwrap();
        }
    };
    let logins = [
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
        "robot-web",
        "mallory",
    ];
    let mut n = 0u64;
    for day in 1..=30u64 {
        let date = format!("2026-11-{day:02}");
        let busy = if day % 7 == 6 || day % 7 == 0 { 5 } else { 40 };
        for i in 0..busy + day {
            n += 1;
            let login = logins[(n as usize * 7 + i as usize) % 6];
            write(&decision(
                n,
                &date,
                login,
                "accept",
                "ok",
                !n.is_multiple_of(19),
            ));
        }
        for i in 0..(day % 5) {
            n += 1;
            write(&decision(
                n,
                &date,
                "mallory",
                "reject",
                "sender_not_owned",
                false,
            ));
            if i == 0 && day > 20 {
                write(&decision(
                    n,
                    &date,
                    "mallory",
                    "lock",
                    "account_locked",
                    false,
                ));
            }
        }
        for _ in 0..(day % 3) {
            n += 1;
            write(&decision(
                n,
                &date,
                "bob",
                "tempfail",
                "limit_messages_per_hour",
                false,
            ));
            write(&decision(
                n,
                &date,
                "(external)",
                "reject",
                "auth_required",
                false,
            ));
        }
        if day % 6 == 0 {
            // A burst the stolen-account signals logged.
            let mut flagged = decision(n, &date, "erin", "accept", "ok", true);
            flagged["abuse"] = serde_json::json!({"action": "log", "score": 2.1, "fired": "networks 9 > 4", "signals": {"networks": 9}});
            write(&flagged);
        }
        if day % 4 == 0 {
            let mut would = decision(n, &date, "carol", "reject", "foreign_sender", false);
            would["monitor"] = true.into();
            write(&would);
        }
        log.checkpoint(&after_last(), "relay1").unwrap();
        if day == 10 || day == 20 {
            let name = if day == 10 {
                "audit.log.2"
            } else {
                "audit.log.1"
            };
            std::fs::rename(dir.join("audit.log"), dir.join(name)).unwrap();
            log.reopen(&after_last(), "relay1").unwrap();
        }
    }
    ["audit.log.2", "audit.log.1", "audit.log"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

/// `attr="value"` of the first element with `id`.
fn data_value(dom: &str, id: &str) -> u64 {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} in the page"));
    let rest = &dom[at..];
    let v = rest.find("data-value=\"").unwrap() + "data-value=\"".len();
    rest[v..v + rest[v..].find('"').unwrap()].parse().unwrap()
}

/// The cells of the `#logins` table as the browser built it: login -> numbers.
fn login_rows(dom: &str) -> Vec<(String, Vec<u64>)> {
    let table = &dom[dom.find("id=\"logins\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    table
        .split("<tr data-login=\"")
        .skip(1)
        .map(|row| {
            let cells: Vec<String> = row
                .split("<td>")
                .skip(1)
                .map(|c| c[..c.find("</td>").unwrap()].to_string())
                .collect();
            (
                cells[0].clone(),
                cells[1..].iter().map(|c| c.parse().unwrap()).collect(),
            )
        })
        .collect()
}

#[test]
fn the_html_report_renders_in_a_real_browser_and_agrees_with_the_text_report() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let files = month(dir.path(), &key);
    let html = dir.path().join("report.html");
    // Run where the files are, as an auditor would: the page names them as given.
    let names: Vec<&str> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    let mut argv = vec![
        "audit",
        "report",
        "--format",
        "html",
        "--key",
        s(&public),
        "-o",
        "report.html",
    ];
    argv.extend(&names);
    let (code, _, err) = relayguard_in(dir.path(), &argv);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing to fetch.
    for banned in [
        "<script", "<link", "<img", "<iframe", "url(", "@import", "https:", "src=",
    ] {
        assert!(!page.contains(banned), "the page contains {banned}");
    }
    assert_eq!(
        page.matches("http://").count(),
        page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );

    let mut argv = vec!["audit", "report"];
    argv.extend(files.iter().map(|f| s(f)));
    let (code, table, err) = relayguard(&argv);
    assert_eq!(code, 0, "{err}");

    let output = common::chromium::run(
        dir.path(),
        &["--dump-dom", &format!("file://{}", html.display())],
    );
    let dom = String::from_utf8(output.stdout).unwrap();
    assert!(dom.contains("</html>") || dom.contains("</body>"), "{dom}");
    for chart in [
        "chart-verdicts",
        "chart-reasons",
        "chart-limits",
        "chart-unsigned",
    ] {
        assert!(dom.contains(&format!("id=\"{chart}\"")), "{chart} rendered");
    }
    assert!(
        dom.contains("data-intact=\"true\""),
        "the chain is verified on top"
    );
    assert!(dom.contains("chain intact"), "{dom}");
    let checkpoints: usize = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("{\"checkpoint\":"))
                .count()
        })
        .sum();
    assert!(
        checkpoints > 30,
        "daily and every 40 records: {checkpoints}"
    );
    assert!(dom.contains(&format!("checkpoints: {checkpoints} verified")));

    // Every number agrees with the text report.
    let header = table.lines().next().unwrap();
    let records: u64 = header.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(data_value(&dom, "total-records"), records);
    let text_rows: Vec<(String, Vec<u64>)> = table
        .lines()
        .skip(3)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let login = f.next().unwrap().to_string();
            (login, f.map(|n| n.parse().unwrap()).collect())
        })
        .collect();
    let mut page_rows = login_rows(&dom);
    page_rows.sort();
    assert_eq!(page_rows, text_rows);
    let column = |i: usize| text_rows.iter().map(|(_, v)| v[i]).sum::<u64>();
    assert_eq!(data_value(&dom, "total-messages"), column(0));
    assert_eq!(data_value(&dom, "total-recipients"), column(1));
    assert_eq!(data_value(&dom, "total-refused"), column(3));
    assert_eq!(data_value(&dom, "total-limits"), column(4));
    assert_eq!(data_value(&dom, "total-locks"), column(5));
    assert_eq!(data_value(&dom, "total-unsigned"), column(6));
    assert_eq!(data_value(&dom, "total-would"), column(7));
    assert_eq!(data_value(&dom, "total-flagged"), column(8));
    assert_eq!(column(8), 5, "erin's logged bursts");
    let unsigned_line = table
        .lines()
        .find(|l| l.starts_with("accepted but unsigned: "))
        .unwrap();
    assert_eq!(
        data_value(&dom, "unsigned").to_string(),
        unsigned_line["accepted but unsigned: ".len()..]
    );

    // A screenshot for the README (committed when asked).
    let png = dir.path().join("audit-report.png");
    common::chromium::run(
        dir.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1100,1500",
            &format!("file://{}", html.display()),
        ],
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    println!(
        "audit report --format html: {} bytes; screenshot {} bytes",
        page.len(),
        bytes.len()
    );
    if std::env::var_os("RELAYGUARD_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&png, docs.join("audit-report.png")).unwrap();
    }
}
