//! `relayguard bench`: a tool, not part of the service. A milter load generator (the client
//! in [`client`] talks as Postfix 3.7 does) reporting throughput, latency, outcomes and the
//! server's CPU and memory, and the signing ceiling of a key.

pub mod client;

pub use client::{Client, Message, Verdict};
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// Load settings.
#[derive(Debug, Clone)]
pub struct Load {
    /// `unix:/path` or `inet:PORT@HOST`.
    pub target: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Messages per connection.
    pub messages: usize,
    /// Body size in bytes.
    pub size: usize,
    /// Recipients per message.
    pub rcpts: usize,
    /// `{auth_authen}`.
    pub login: String,
    /// Header From and envelope sender.
    pub from: String,
    /// Distinct logins (1: only `login` from `from`; N: `login<k mod N>` from
    /// `login<k mod N>@` the domain of `from`).
    pub logins: usize,
    /// The SMTP client's address (`{client_addr}`).
    pub client: std::net::IpAddr,
    /// The recipients' domain (`rcpt<n>@DOMAIN`).
    pub rcpt_domain: String,
}

impl Load {
    /// The login and sender address of message `k` of the whole run.
    pub fn sender(&self, k: usize) -> (String, String) {
        if self.logins <= 1 {
            return (self.login.clone(), self.from.clone());
        }
        let n = k % self.logins;
        let domain = self.from.rsplit_once('@').map_or("tugraz.at", |(_, d)| d);
        (
            format!("{}{n}", self.login),
            format!("{}{n}@{domain}", self.login),
        )
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Wall time.
    pub elapsed: Duration,
    /// Per-message latencies, sorted.
    pub latencies: Vec<Duration>,
    /// Accepted with at least one header added (signed).
    pub signed: usize,
    /// Accepted without.
    pub unsigned: usize,
    /// 5xx.
    pub rejected: usize,
    /// 4xx.
    pub tempfailed: usize,
}

impl Results {
    /// A latency percentile.
    pub fn percentile(&self, q: f64) -> Duration {
        self.latencies
            .get(
                ((self.latencies.len() as f64 * q) as usize)
                    .min(self.latencies.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or_default()
    }

    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn run_connection<S: AsyncRead + AsyncWrite>(
    stream: S,
    load: &Load,
    c: usize,
    body: &[u8],
) -> io::Result<Vec<(Duration, Verdict, usize)>> {
    let mut client = Client::negotiate(stream).await?;
    client.connect(load.client, "submission").await?;
    let rcpts: Vec<String> = (0..load.rcpts)
        .map(|n| format!("rcpt{n}@{}", load.rcpt_domain))
        .collect();
    let mut out = Vec::with_capacity(load.messages);
    for m in 0..load.messages {
        let queue_id = format!("B{c:04X}{m:06X}");
        // Interleaved over connections, so that concurrent messages use different logins.
        let (login, from) = load.sender(m * load.connections + c);
        let headers = vec![
            ("From".to_string(), format!("Load Test <{from}>")),
            ("To".to_string(), format!("rcpt0@{}", load.rcpt_domain)),
            ("Subject".to_string(), format!("relayguard bench {c}/{m}")),
            (
                "Message-ID".to_string(),
                format!("<{queue_id}@bench.tugraz.at>"),
            ),
            (
                "Date".to_string(),
                "Sat, 28 Nov 2026 10:00:00 +0100".to_string(),
            ),
        ];
        let message = Message {
            login: &login,
            mail_from: &from,
            rcpts: &rcpts,
            headers: &headers,
            body,
            queue_id: &queue_id,
        };
        let started = Instant::now();
        let (verdict, added) = client.message(&message).await?;
        out.push((started.elapsed(), verdict, added));
    }
    client.quit().await?;
    Ok(out)
}

/// Runs the load and collects the results.
pub async fn run(load: &Load) -> io::Result<Results> {
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    let mut body: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(load.size.max(2))
        .collect();
    // Whole lines, as an MTA delivers them (OpenDKIM refuses a body without a final CRLF).
    let n = body.len();
    body[n - 2..].copy_from_slice(b"\r\n");
    let body = std::sync::Arc::new(body);
    let spec = crate::config::SocketSpec::parse(&load.target)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..load.connections {
        let (load, body, spec) = (load.clone(), body.clone(), spec.clone());
        tasks.push(tokio::spawn(async move {
            // As Postfix does, the client waits on its socket only for replies: a socket
            // watched for writing too would wake the client (on the milter's CPU) each
            // time the milter read from it.
            let stream = match spec {
                crate::config::SocketSpec::Unix(path) => {
                    crate::socket::Stream::Unix(std::os::unix::net::UnixStream::connect(path)?)
                }
                crate::config::SocketSpec::Inet(addr) => {
                    let stream = std::net::TcpStream::connect(addr)?;
                    // As the server does: no delayed-ACK stalls on small packets.
                    stream.set_nodelay(true)?;
                    crate::socket::Stream::Tcp(stream)
                }
            };
            let stream = crate::socket::ReadWatched::register(stream)?;
            run_connection(stream, &load, c, &body).await
        }));
    }
    let mut results = Results::default();
    for task in tasks {
        for (latency, verdict, added) in task.await.map_err(io::Error::other)?? {
            results.latencies.push(latency);
            match verdict {
                Verdict::Accept | Verdict::Continue if added > 0 => results.signed += 1,
                Verdict::Accept | Verdict::Continue | Verdict::Discard | Verdict::Skip => {
                    results.unsigned += 1
                }
                Verdict::Reject(_) => results.rejected += 1,
                Verdict::Tempfail(_) => results.tempfailed += 1,
            }
        }
    }
    results.elapsed = started.elapsed();
    results.latencies.sort();
    Ok(results)
}

/// A process's CPU seconds (user + system) and peak RSS in KiB, from /proc.
pub fn process_stats(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / hz;
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

/// What one signature covers in a typical message: the signed header fields in relaxed form
/// and the DKIM-Signature header without `b=`.
const TYPICAL_SIGNED_BLOCK: &[u8] = b"from:Alice Example <alice@tugraz.at>\r\n\
to:friend@example.org\r\n\
subject:Benchmark message\r\n\
date:Sat, 28 Nov 2026 10:00:00 +0100\r\n\
message-id:<bench-1@tugraz.at>\r\n\
mime-version:1.0\r\n\
content-type:text/plain; charset=utf-8\r\n\
dkim-signature:v=1; a=rsa-sha256; s=rsa; d=tugraz.at; c=relaxed/relaxed; \
h=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type:from:to:cc:subject:date:reply-to; \
t=1795856400; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=";

/// The signing ceiling for a key file: signatures per second that `threads` threads make over
/// a typical signed block with nothing else to do. Returns the key's algorithm and the rate.
pub fn signing_ceiling(
    path: &std::path::Path,
    threads: usize,
    duration: Duration,
) -> Result<(crate::dkim::schedule::Algorithm, f64), String> {
    use crate::dkim::keys;
    use crate::dkim::schedule::Algorithm;
    use mail_auth::common::crypto::SigningKey;
    use std::sync::atomic::{AtomicU64, Ordering};

    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let loaded = keys::parse(path, &pem, Algorithm::RsaSha256)
        .or_else(|_| keys::parse(path, &pem, Algorithm::Ed25519Sha256))
        .map_err(|e| e.to_string())?;
    let signed = AtomicU64::new(0);
    let started = Instant::now();
    let failed = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    while started.elapsed() < duration {
                        loaded.key.sign(TYPICAL_SIGNED_BLOCK)?;
                        signed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<(), mail_auth::Error>(())
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().ok().and_then(Result::err))
            .next()
    });
    if let Some(e) = failed {
        return Err(format!("signing failed: {e}"));
    }
    let rate = signed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok((loaded.algorithm, rate))
}
