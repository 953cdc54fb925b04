//! `relayguard bench`: a milter load as Postfix makes it, or a key's signing ceiling.

use super::say;
use std::path::PathBuf;

/// `relayguard bench`: a milter load, or with `--ceiling` a key's signing rate.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// `unix:/path` or `inet:PORT@HOST` of the milter.
    #[arg(long, default_value = "inet:8891@127.0.0.1")]
    target: String,
    /// Concurrent connections.
    #[arg(long, short = 'n', default_value_t = 8)]
    connections: usize,
    /// Messages per connection.
    #[arg(long, short = 'm', default_value_t = 100)]
    messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 10_000)]
    size: usize,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    rcpts: usize,
    /// SASL login ("" for none: an unauthenticated client).
    #[arg(long, default_value = "alice")]
    login: String,
    /// Header From and envelope sender.
    #[arg(long, default_value = "alice@tugraz.at")]
    from: String,
    /// Distinct logins: with N > 1, message k sends as login `LOGIN<k mod N>` from
    /// `LOGIN<k mod N>@DOMAIN` (DOMAIN from --from), so a directory sees N different users.
    #[arg(long, default_value_t = 1)]
    logins: usize,
    /// The SMTP client's address, as the MTA passes it.
    #[arg(long, default_value = "203.0.113.7")]
    client: std::net::IpAddr,
    /// The recipients' domain: recipient n is `rcpt<n>@DOMAIN`.
    #[arg(long, default_value = "example.org")]
    rcpt_domain: String,
    /// The milter's PID, for CPU and memory figures.
    #[arg(long)]
    pid: Option<u32>,
    /// Instead of loading a milter, measure the signing ceiling of this key file: how
    /// many signatures per second `--threads` threads make with nothing else to do.
    #[arg(long, value_name = "KEY_FILE")]
    ceiling: Option<PathBuf>,
    /// Threads for `--ceiling`.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds for `--ceiling`.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// Runs the load (or the ceiling) and prints the figures.
pub fn run(args: BenchArgs) -> Result<(), String> {
    if let Some(key) = args.ceiling {
        let duration = std::time::Duration::from_secs_f64(args.seconds.max(0.1));
        let (algorithm, rate) = crate::bench::signing_ceiling(&key, args.threads, duration)?;
        say(format!(
            "signing ceiling: {rate:.0} signatures/s ({algorithm}, {} threads, {:.3} ms CPU per signature)",
            args.threads,
            args.threads as f64 * 1000.0 / rate.max(1.0)
        ));
        return Ok(());
    }
    let load = crate::bench::Load {
        target: args.target,
        connections: args.connections,
        messages: args.messages,
        size: args.size,
        rcpts: args.rcpts,
        login: args.login,
        from: args.from,
        logins: args.logins.max(1),
        client: args.client,
        rcpt_domain: args.rcpt_domain,
    };
    let before = args.pid.and_then(crate::bench::process_stats);
    let results = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .and_then(|rt| rt.block_on(crate::bench::run(&load)))
        .map_err(|e| e.to_string())?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let n = results.latencies.len();
    say(format!(
        "{n} messages of {} bytes, {} connections, {:.2} s: {:.0} messages/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        load.size,
        load.connections,
        results.elapsed.as_secs_f64(),
        results.rate(),
        ms(results.percentile(0.5)),
        ms(results.percentile(0.99)),
        ms(results.percentile(1.0))
    ));
    say(format!(
        "signed {}, accepted unsigned {}, rejected {}, tempfailed {}",
        results.signed, results.unsigned, results.rejected, results.tempfailed
    ));
    if load.logins > 1 {
        say(format!("{} distinct logins", load.logins.min(n)));
    }
    if let (Some((cpu0, _)), Some((cpu1, hwm))) =
        (before, args.pid.and_then(crate::bench::process_stats))
    {
        say(format!(
            "server: {:.3} ms CPU per message, peak RSS {:.1} MiB",
            (cpu1 - cpu0) * 1000.0 / n.max(1) as f64,
            hwm as f64 / 1024.0
        ));
    }
    Ok(())
}
