//! The load tool in smoke mode: a few hundred messages through the real milter over unix
//! and TCP sockets, every one signed. (Throughput targets live in BENCHMARKS, not here.)

mod common;

use common::Milter;
use relayguard::bench::{Load, run};
use std::os::unix::fs::PermissionsExt;

fn load(target: String) -> Load {
    Load {
        target,
        connections: 3,
        messages: 100,
        size: 70_000,
        rcpts: 2,
        login: "alice".into(),
        from: "alice@tugraz.at".into(),
        logins: 1,
        client: "203.0.113.7".parse().unwrap(),
        rcpt_domain: "example.org".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_the_milter_over_unix_and_tcp() {
    let milter = Milter::with_config(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!("[milter]\nsocket = \"unix:{}/rg.sock\"\n\n[senders]\nlogin_map = \"sender_login_maps\"\n\n{}", dir.display(), common::dkim::standard_setup(dir))
    })
    .await;
    let results = run(&load(format!(
        "unix:{}",
        milter.unix.as_ref().unwrap().display()
    )))
    .await
    .unwrap();
    assert_eq!(
        (
            results.signed,
            results.unsigned,
            results.rejected,
            results.tempfailed
        ),
        (300, 0, 0, 0)
    );
    assert!(results.rate() > 0.0 && results.percentile(0.99) >= results.percentile(0.5));
    milter.stop().await.unwrap();

    let milter = Milter::with_config(|dir| {
        format!(
            "[milter]\nsocket = \"inet:0@127.0.0.1\"\n\n{}",
            common::dkim::standard_setup(dir)
        )
    })
    .await;
    let addr = milter.tcp.unwrap();
    let results = run(&load(format!("inet:{}@127.0.0.1", addr.port())))
        .await
        .unwrap();
    assert_eq!((results.signed, results.rejected), (300, 0));
    // A spoofing load is refused, message by message.
    let spoof = Load {
        from: "rector@tugraz.at".into(),
        ..load(format!("inet:{}@127.0.0.1", addr.port()))
    };
    let results = run(&spoof).await.unwrap();
    assert_eq!((results.signed, results.rejected), (0, 300));
    milter.stop().await.unwrap();
}

#[test]
fn signing_ceiling_counts_signatures_for_rsa_and_ed25519_keys() {
    use relayguard::dkim::schedule::Algorithm;
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    let quick = std::time::Duration::from_millis(200);
    for (file, algorithm) in [
        ("tugraz.at.rsa-a.pem", Algorithm::RsaSha256),
        ("tugraz.at.ed-a.pem", Algorithm::Ed25519Sha256),
    ] {
        let (found, rate) = relayguard::bench::signing_ceiling(&keys.join(file), 2, quick).unwrap();
        assert_eq!(found, algorithm, "{file}");
        assert!(rate > 0.0, "{file}: no signature made");
    }
    let missing = relayguard::bench::signing_ceiling(&keys.join("absent.pem"), 1, quick);
    assert!(missing.unwrap_err().contains("absent.pem"));
}
