//! Runbook: a campus in a box. Two relays (each a real Postfix with SASL submission and its
//! own relayguard) share Redis with Sentinels, the directory (slapd, read through Postfix's
//! ldap_table file as the only ownership source) and DNS (BIND, which the leader updates
//! with TSIG). People, robots, internal servers, spoofers and thieves with phished accounts
//! send a compressed day of mail through them while things fail (model.rs, faults.rs);
//! every message a client tried is then held against what the Internet received, each
//! relay's audit log and the limits (ledger.rs). The run fails when anything was lost,
//! delivered unsigned or unverifiable, forged, refused for good though legitimate, let
//! past a limit across the cluster, or audited other than it happened, or when an audit
//! chain does not verify. It writes summary.json and report.html (report.rs).
//!
//! `scripts/campus --short` (CI) or `--day`; not part of `scripts/test`.

#[path = "../common/mod.rs"]
mod common;

mod client;
mod faults;
mod ledger;
mod model;
mod report;
mod world;

use client::Tries;
use model::Size;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use world::World;

/// Where the summary and the report go.
fn out_dir() -> PathBuf {
    std::env::var_os("CAMPUS_OUT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/campus"),
        PathBuf::from,
    )
}

/// DKIM verification of every delivered message by dkimpy, against the records BIND
/// serves now for the selectors the messages name.
fn verify(world: &World, received: &mut [ledger::Received], dir: &Path) {
    let mut records = HashMap::new();
    for selector in received.iter().flat_map(|r| r.selectors.iter()) {
        let name = format!("{selector}._domainkey.tugraz.at");
        records
            .entry(format!("{name}."))
            .or_insert_with(|| world.bind.dig("TXT", &name).join(""));
    }
    let files: Vec<PathBuf> = received
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let text = std::fs::read_to_string(&r.file).unwrap();
            let path = dir.join(format!("m{i:05}.eml"));
            std::fs::write(&path, text.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
            path
        })
        .collect();
    if files.is_empty() {
        return;
    }
    let results = common::dkim::verify_dkimpy(&files, &records, dir, common::dkim::At::Now);
    for (r, line) in received.iter_mut().zip(results) {
        r.verified = line
            .rsplit_once(" ok ")
            .and_then(|(_, n)| n.trim().parse().ok())
            .unwrap_or(0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "scripts/campus runs it (the short run in CI), apart from scripts/test"]
async fn a_campus_day_with_faults_loses_nothing() {
    common::postfix::require_postfix();
    let size = match std::env::var("CAMPUS_SIZE").as_deref() {
        Ok("day") => Size::DAY,
        _ => Size::SHORT,
    };
    let seed: u64 = std::env::var("CAMPUS_SEED").map_or(2026, |s| s.parse().expect("a number"));
    let people = model::people(size);
    let plan = model::plan(size, &people, seed);
    eprintln!(
        "campus ({}): {} people, {} messages over {} s",
        size.name,
        people.len(),
        plan.len(),
        size.window.as_secs()
    );
    let mut world = tokio::task::block_in_place(|| World::start(&people));
    let relays = world.submission();

    // Mail flows: every message its own task, tried at its time and retried as a queue does.
    let start = Instant::now();
    let start_ms = jiff::Timestamp::now().as_millisecond();
    let deadline = start + size.window + size.drain;
    let sessions = Arc::new(tokio::sync::Semaphore::new(size.sessions));
    let handles: Vec<_> = plan
        .iter()
        .cloned()
        .map(|msg| {
            let (relays, sessions) = (relays.clone(), sessions.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until((start + msg.at).into()).await;
                client::deliver(&msg, &relays, world::PASSWORD, start, deadline, &sessions).await
            })
        })
        .collect();
    let events = faults::run(&mut world, size, start).await;
    let mut tries: Vec<Tries> = vec![Tries::default(); plan.len()];
    for (msg, handle) in plan.iter().zip(handles) {
        tries[msg.id] = handle.await.expect("a client task");
    }
    eprintln!(
        "campus: clients done at {:.0} s",
        start.elapsed().as_secs_f64()
    );

    // What the relays still hold goes out; then their figures, and a clean stop that seals
    // each audit log.
    let drained = Instant::now() + Duration::from_secs(60);
    while world
        .relays
        .iter()
        .map(|r| r.postfix.queued())
        .sum::<usize>()
        > 0
        && Instant::now() < drained
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut figures = Vec::new();
    for relay in &mut world.relays {
        let metrics = common::http_get(relay.metrics, "/metrics").await;
        figures.push((
            relay.name.clone(),
            relay.cpu_before + relay.cpu_now(),
            metrics,
        ));
        relay.daemon.signal(libc::SIGTERM);
        relay.daemon.wait_exit(Duration::from_secs(20)).await;
    }
    let chains: Vec<(String, Result<(), String>)> = world
        .relays
        .iter()
        .map(|r| {
            let verified = world::relayguard(&[
                "audit",
                "verify",
                "--key",
                r.checkpoint_pub.to_str().unwrap(),
                "--checkpoint-minutes",
                "1",
                r.audit.to_str().unwrap(),
            ]);
            (r.name.clone(), verified.map(|_| ()))
        })
        .collect();

    // The ledger.
    let work = tempfile::tempdir().unwrap();
    let mut received = ledger::received(world.internet.dir.path());
    tokio::task::block_in_place(|| verify(&world, &mut received, work.path()));
    let records = world
        .relays
        .iter()
        .flat_map(|r| ledger::records(&r.audit))
        .collect();
    let ledger = ledger::Ledger {
        plan: &plan,
        tries: &tries,
        received,
        records,
        events: &events,
        start_ms,
        relays: world.relays.iter().map(|r| r.name.clone()).collect(),
    };
    let failures = ledger.check(&chains);
    let summary = report::summarise(size, seed, people.len(), &ledger, failures, &figures);
    let out = out_dir();
    std::fs::create_dir_all(&out).unwrap();
    for relay in &world.relays {
        let _ = std::fs::copy(&relay.audit, out.join(format!("{}.audit.log", relay.name)));
        let _ = std::fs::write(out.join(format!("{}.log", relay.name)), relay.daemon.log());
    }
    std::fs::write(
        out.join("tries.json"),
        serde_json::to_string(&tries).unwrap(),
    )
    .unwrap();
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("report.html"), report::html(&summary)).unwrap();
    let json = serde_json::to_string_pretty(&summary).unwrap();
    println!("{json}");
    let dom = common::chromium::dom(&out.join("report.html"));
    assert!(
        dom.contains(&format!("data-failures=\"{}\"", summary.failures.count())),
        "the report renders its verdict"
    );
    assert!(dom.contains("id=\"faults\"") && dom.contains("id=\"phished\""));
    assert_eq!(
        summary.failures.count(),
        0,
        "the ledger is not clean (see {}):\n{}",
        out.join("summary.json").display(),
        serde_json::to_string_pretty(&summary.failures).unwrap()
    );
}
