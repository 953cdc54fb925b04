//! Writes a rotated series of sealed audit records through relayguard's own writer, for the
//! audit benchmarks (bench/audit.sh):
//! `cargo run --release --example audit_series -- DIR RECORDS FILES [CHECKPOINT_KEY]`.
//! Files are `audit.log.N` (oldest) … `audit.log.1`, `audit.log`; with a key, a checkpoint
//! every 10,000 records and at each rotation.

use relayguard::audit::Record;
use relayguard::audit::writer::{AuditConfig, AuditLog, Checkpoints, Destination, Fsync, OnError};
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, records, files, rest @ ..] = args.as_slice() else {
        eprintln!("usage: audit_series DIR RECORDS FILES [CHECKPOINT_KEY]");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let records: u64 = records.parse().expect("RECORDS is a number");
    let files: u64 = files.parse().expect("FILES is a number");
    let log = AuditLog::open(AuditConfig {
        destination: Destination::File(dir.join("audit.log")),
        fsync: Fsync::Never,
        on_error: OnError::Tempfail,
        full_recipients: false,
        checkpoints: rest.first().map(|key| Checkpoints {
            key_file: key.into(),
            every_minutes: 60,
            witness_file: None,
        }),
        retention_days: None,
    });
    let logins = [
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
        "robot-web",
        "mallory",
    ];
    let per_file = records.div_ceil(files);
    for n in 0..records {
        let day = 1 + n * 30 / records;
        let verdict = if n % 23 == 0 { "reject" } else { "accept" };
        let reason = if verdict == "reject" {
            "sender_not_owned"
        } else {
            "ok"
        };
        let login = logins[(n % 7) as usize];
        let text = format!(
            r#"{{"time":"2026-11-{day:02}T{:02}:{:02}:{:02}.000Z","host":"relay1","queue_id":"4Q{n:08X}","client":"203.0.113.{}","client_class":"authenticated","login":"{login}","mail_from":"<{login}@tugraz.at>","header_from":"{login}@tugraz.at","header_sender":null,"rcpt_count":{},"rcpt_domains":["example.org","uni-wien.ac.at"],"size":{},"verdict":"{verdict}","reason":"{reason}","text":"signed","dkim":[{{"domain":"tugraz.at","selector":"s2026a","algorithm":"rsa-sha256"}},{{"domain":"tugraz.at","selector":"e2026a","algorithm":"ed25519-sha256"}}]}}"#,
            (n / 3600) % 24,
            (n / 60) % 60,
            n % 60,
            n % 250,
            1 + n % 4,
            1_000 + n % 50_000,
        );
        let record: Record<'_> = serde_json::from_str(&text).expect("a record");
        log.write(&record).expect("written");
        if (n + 1) % 10_000 == 0 {
            log.checkpoint("2026-11-30T00:00:00.000Z", "relay1")
                .expect("checkpoint");
        }
        if (n + 1) % per_file == 0 && n + 1 < records {
            let k = files - (n + 1) / per_file;
            std::fs::rename(dir.join("audit.log"), dir.join(format!("audit.log.{k}")))
                .expect("rotate");
            log.reopen("2026-11-30T00:00:00.000Z", "relay1")
                .expect("reopen");
        }
    }
    log.checkpoint("2026-11-30T00:00:00.000Z", "relay1")
        .expect("checkpoint");
}
