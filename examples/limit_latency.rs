//! Measures the decision latency a counter store adds: GCRA and counter updates against the
//! in-memory store and against Redis (one message's worth: two GCRA steps and one INCR).
//!
//! Usage: cargo run --release --example limit_latency -- redis://127.0.0.1:6379/0 [N]

use relayguard::limits::rate::Rate;
use relayguard::limits::store::{CounterStore, Counters, OnFailure, RedisConfig, RedisStore};
use std::time::{Duration, Instant};

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50 {:>7.1} µs  p99 {:>7.1} µs  max {:>7.1} µs",
        p(0.5).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6,
        v[v.len() - 1].as_secs_f64() * 1e6
    )
}

async fn run(counters: &Counters, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    let rate = Rate {
        count: 1_000_000,
        period_ms: 3_600_000,
    };
    for i in 0..n {
        let now = 1_795_892_400_000 + i as i64;
        let login = format!("user{}", i % 1000);
        let start = Instant::now();
        counters
            .gcra(&format!("conn:{login}"), now, rate)
            .await
            .unwrap();
        counters
            .gcra(&format!("msg:{login}"), now, rate)
            .await
            .unwrap();
        counters
            .incr(&format!("auth:{login}:night"), now, 86_400_000)
            .await
            .unwrap();
        samples.push(start.elapsed());
    }
    samples
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let memory = Counters::memory();
    run(&memory, 1000).await;
    println!("memory: {}", percentiles(run(&memory, n).await));
    let redis = RedisStore::new(
        RedisConfig {
            url,
            prefix: "rgbench:".into(),
            timeout: Duration::from_millis(50),
            on_failure: OnFailure::FailClosed,
            sentinels: Vec::new(),
            master_name: String::new(),
        },
        Default::default(),
    )
    .unwrap();
    let redis = Counters::redis(std::sync::Arc::new(redis));
    run(&redis, 1000).await;
    println!("redis:  {}", percentiles(run(&redis, n).await));
}
