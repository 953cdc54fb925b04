//! A first load generator (a seed for the benchmark issue): C concurrent milter connections,
//! each sending M messages of a given size as an authenticated owner, the way Postfix does
//! (macros, one HEADER per field, BODY in 65535-byte chunks, EOM, ABORT). Reports messages/s,
//! latency percentiles, outcomes, and the server's CPU and peak RSS from /proc.
//!
//! Usage: cargo run --release --example milter_load -- ADDR|/path.sock CONNECTIONS MESSAGES SIZE [SERVER_PID]

use indymilter_test::{MacroStage, SocketInfo, Status, TestConnection};
use std::time::{Duration, Instant};

fn proc_stats(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ
    let cpu = (fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, hwm))
}

async fn open(target: &str) -> TestConnection {
    if target.starts_with('/') {
        TestConnection::configure()
            .open_unix(target)
            .await
            .expect("connect")
    } else {
        TestConnection::open(target).await.expect("connect")
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8891".into());
    let connections: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8);
    let messages: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100);
    let size: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let pid: Option<u32> = args.get(5).and_then(|a| a.parse().ok());
    let line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    let body: Vec<u8> = line.as_bytes().iter().copied().cycle().take(size).collect();
    let before = pid.and_then(proc_stats);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (target, body) = (target.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = open(&target).await;
            conn.macros(
                MacroStage::Connect,
                [
                    ("{client_addr}", "203.0.113.7"),
                    ("{daemon_name}", "submission"),
                ],
            )
            .await
            .unwrap();
            conn.connect(
                "client.example",
                SocketInfo::Inet("203.0.113.7:40000".parse().unwrap()),
            )
            .await
            .unwrap();
            let mut results = Vec::with_capacity(messages);
            for m in 0..messages {
                let t = Instant::now();
                conn.macros(
                    MacroStage::Mail,
                    [("{auth_authen}", "alice"), ("{auth_type}", "PLAIN")],
                )
                .await
                .unwrap();
                let mut status = conn.mail(["<alice@tugraz.at>"]).await.unwrap();
                if status == Status::Continue {
                    conn.macros(MacroStage::Rcpt, [("i", format!("Q{c}x{m}"))])
                        .await
                        .unwrap();
                    status = conn.rcpt(["<friend@example.org>"]).await.unwrap();
                }
                let mut signed = false;
                if status == Status::Continue {
                    for (name, value) in [
                        ("From", "Alice <alice@tugraz.at>".to_string()),
                        ("To", "friend@example.org".into()),
                        ("Subject", format!("load {c}/{m}")),
                        ("Message-ID", format!("<load-{c}-{m}@tugraz.at>")),
                        ("Date", "Sat, 28 Nov 2026 10:00:00 +0100".into()),
                    ] {
                        conn.header(name, value).await.unwrap();
                    }
                    status = conn.eoh().await.unwrap();
                    if status == Status::Continue {
                        for chunk in body.chunks(65535) {
                            status = conn.body(chunk.to_vec()).await.unwrap();
                            if status != Status::Continue {
                                break;
                            }
                        }
                        if status == Status::Continue {
                            let (actions, s) = conn.eom().await.unwrap();
                            signed = !actions.actions.is_empty();
                            status = s;
                        }
                    }
                }
                conn.abort().await.unwrap();
                results.push((t.elapsed(), status, signed));
            }
            conn.close().await.unwrap();
            results
        }));
    }
    let mut latencies = Vec::new();
    let (mut signed, mut unsigned, mut rejected, mut tempfailed) = (0, 0, 0, 0);
    for t in tasks {
        for (d, status, s) in t.await.unwrap() {
            latencies.push(d);
            match status {
                Status::Accept if s => signed += 1,
                Status::Accept => unsigned += 1,
                Status::Reject { .. } => rejected += 1,
                _ => tempfailed += 1,
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = latencies.len();
    println!(
        "{n} messages of {size} bytes over {connections} connections in {:.2} s: {:.0} messages/s; latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        ms(p(0.5)),
        ms(p(0.99)),
        ms(latencies[n - 1])
    );
    println!(
        "signed {signed}, accepted unsigned {unsigned}, rejected {rejected}, tempfailed {tempfailed}"
    );
    if let (Some((cpu0, _)), Some((cpu1, hwm))) = (before, pid.and_then(proc_stats)) {
        println!(
            "server: {:.3} ms CPU per message, peak RSS {:.1} MiB",
            (cpu1 - cpu0) * 1000.0 / n as f64,
            hwm as f64 / 1024.0
        );
    }
}
