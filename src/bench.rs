//! `relayguard bench`: a milter load generator that talks to a milter as Postfix 3.7 does
//! (protocol version 6, macros per stage, one HEADER per field, BODY in 65535-byte chunks,
//! EOM, ABORT after each message, stages and replies the milter negotiated away skipped).

use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

// Protocol flags (libmilter's SMFIP_*).
const NO_CONNECT: u32 = 0x1;
const NO_HELO: u32 = 0x2;
const NO_MAIL: u32 = 0x4;
const NO_RCPT: u32 = 0x8;
const NO_BODY: u32 = 0x10;
const NO_HDRS: u32 = 0x20;
const NO_EOH: u32 = 0x40;
const NR_HDR: u32 = 0x80;
const NO_DATA: u32 = 0x200;
const NR_CONN: u32 = 0x1000;
const NR_HELO: u32 = 0x2000;
const NR_MAIL: u32 = 0x4000;
const NR_RCPT: u32 = 0x8000;
const NR_DATA: u32 = 0x10000;
const NR_EOH: u32 = 0x40000;
const NR_BODY: u32 = 0x80000;
/// What Postfix 3.7 offers.
const OFFERED_FLAGS: u32 = 0x1fffff;
const OFFERED_ACTIONS: u32 = 0x1ff;

/// A milter reply to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Continue,
    /// Accept the message (no further stages).
    Accept,
    /// Refused for good (5xx), with the reply text if any.
    Reject(Option<String>),
    /// Refused for now (4xx).
    Tempfail(Option<String>),
    /// Discard.
    Discard,
    /// Skip the rest of the body.
    Skip,
}

/// One milter connection.
pub struct Client<S> {
    reader: BufReader<tokio::io::ReadHalf<S>>,
    writer: BufWriter<tokio::io::WriteHalf<S>>,
    flags: u32,
}

impl<S: AsyncRead + AsyncWrite> Client<S> {
    /// Negotiates protocol version 6 on a fresh stream.
    pub async fn negotiate(stream: S) -> io::Result<Self> {
        let (r, w) = tokio::io::split(stream);
        let mut client = Client {
            reader: BufReader::new(r),
            writer: BufWriter::new(w),
            flags: 0,
        };
        let mut payload = Vec::with_capacity(12);
        payload.extend_from_slice(&6u32.to_be_bytes());
        payload.extend_from_slice(&OFFERED_ACTIONS.to_be_bytes());
        payload.extend_from_slice(&OFFERED_FLAGS.to_be_bytes());
        client.send(b'O', &payload).await?;
        client.writer.flush().await?;
        let (cmd, data) = client.read().await?;
        if cmd != b'O' || data.len() < 12 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad option negotiation reply",
            ));
        }
        client.flags = u32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
        Ok(client)
    }

    async fn send(&mut self, cmd: u8, payload: &[u8]) -> io::Result<()> {
        self.writer
            .write_all(&((payload.len() + 1) as u32).to_be_bytes())
            .await?;
        self.writer.write_all(&[cmd]).await?;
        self.writer.write_all(payload).await
    }

    async fn read(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > 1 << 24 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad packet length",
            ));
        }
        let mut data = vec![0u8; len];
        self.reader.read_exact(&mut data).await?;
        Ok((data[0], data[1..].to_vec()))
    }

    /// Sends a command; when a reply is expected, flushes and reads it; `actions` counts
    /// modification actions (headers added) seen before the reply.
    async fn command(
        &mut self,
        cmd: u8,
        payload: &[u8],
        no_reply: bool,
        actions: &mut usize,
    ) -> io::Result<Verdict> {
        self.send(cmd, payload).await?;
        if no_reply {
            return Ok(Verdict::Continue);
        }
        self.writer.flush().await?;
        loop {
            let (reply, data) = self.read().await?;
            let text = || {
                Some(String::from_utf8_lossy(data.strip_suffix(&[0]).unwrap_or(&data)).into_owned())
            };
            return Ok(match reply {
                b'c' => Verdict::Continue,
                b'a' => Verdict::Accept,
                b'r' => Verdict::Reject(None),
                b't' => Verdict::Tempfail(None),
                b'd' => Verdict::Discard,
                b's' => Verdict::Skip,
                b'y' if data.first() == Some(&b'4') => Verdict::Tempfail(text()),
                b'y' => Verdict::Reject(text()),
                b'p' => continue,
                b'h' | b'i' | b'm' | b'+' | b'-' | b'2' | b'e' | b'b' | b'q' | b'f' => {
                    *actions += 1;
                    continue;
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unknown reply {:?}", other as char),
                    ));
                }
            });
        }
    }

    async fn macros(&mut self, stage: u8, pairs: &[(&str, &str)]) -> io::Result<()> {
        let mut payload = vec![stage];
        for (k, v) in pairs {
            payload.extend_from_slice(k.as_bytes());
            payload.push(0);
            payload.extend_from_slice(v.as_bytes());
            payload.push(0);
        }
        self.send(b'D', &payload).await
    }

    /// CONNECT (and HELO) for a client address.
    pub async fn connect(&mut self, client: std::net::IpAddr, daemon: &str) -> io::Result<Verdict> {
        let mut actions = 0;
        self.macros(
            b'C',
            &[
                ("j", "relay.tugraz.test"),
                ("{daemon_name}", daemon),
                ("{client_addr}", &client.to_string()),
            ],
        )
        .await?;
        if self.flags & NO_CONNECT == 0 {
            let mut payload = b"client.example\0".to_vec();
            payload.push(if client.is_ipv4() { b'4' } else { b'6' });
            payload.extend_from_slice(&40000u16.to_be_bytes());
            payload.extend_from_slice(client.to_string().as_bytes());
            payload.push(0);
            let v = self
                .command(b'C', &payload, self.flags & NR_CONN != 0, &mut actions)
                .await?;
            if v != Verdict::Continue {
                return Ok(v);
            }
        }
        if self.flags & NO_HELO == 0 {
            return self
                .command(
                    b'H',
                    b"client.example\0",
                    self.flags & NR_HELO != 0,
                    &mut actions,
                )
                .await;
        }
        Ok(Verdict::Continue)
    }

    /// One whole message; returns the final verdict and the number of headers the milter added.
    pub async fn message(&mut self, m: &Message<'_>) -> io::Result<(Verdict, usize)> {
        let mut added = 0;
        let verdict = self.transaction(m, &mut added).await?;
        self.send(b'A', &[]).await?;
        Ok((verdict, added))
    }

    async fn transaction(&mut self, m: &Message<'_>, added: &mut usize) -> io::Result<Verdict> {
        let f = self.flags;
        self.macros(
            b'M',
            &[
                ("{auth_authen}", m.login),
                ("{auth_type}", "PLAIN"),
                ("{mail_addr}", m.mail_from),
            ],
        )
        .await?;
        if f & NO_MAIL == 0 {
            let v = self
                .command(
                    b'M',
                    format!("<{}>\0", m.mail_from).as_bytes(),
                    f & NR_MAIL != 0,
                    added,
                )
                .await?;
            if v != Verdict::Continue {
                return Ok(v);
            }
        }
        let mut accepted = 0;
        for (n, rcpt) in m.rcpts.iter().enumerate() {
            self.macros(b'R', &[("i", m.queue_id), ("{rcpt_addr}", rcpt)])
                .await?;
            if f & NO_RCPT == 0 {
                match self
                    .command(
                        b'R',
                        format!("<{rcpt}>\0").as_bytes(),
                        f & NR_RCPT != 0,
                        added,
                    )
                    .await?
                {
                    Verdict::Continue => accepted += 1,
                    v if n + 1 == m.rcpts.len() && accepted == 0 => return Ok(v),
                    _ => {}
                }
            } else {
                accepted += 1;
            }
        }
        if f & NO_DATA == 0 {
            let v = self.command(b'T', &[], f & NR_DATA != 0, added).await?;
            if v != Verdict::Continue {
                return Ok(v);
            }
        }
        if f & NO_HDRS == 0 {
            for (name, value) in m.headers {
                let mut payload = Vec::with_capacity(name.len() + value.len() + 2);
                payload.extend_from_slice(name.as_bytes());
                payload.push(0);
                payload.extend_from_slice(value.as_bytes());
                payload.push(0);
                let v = self.command(b'L', &payload, f & NR_HDR != 0, added).await?;
                if v != Verdict::Continue {
                    return Ok(v);
                }
            }
        }
        if f & NO_EOH == 0 {
            self.macros(b'N', &[("i", m.queue_id)]).await?;
            let v = self.command(b'N', &[], f & NR_EOH != 0, added).await?;
            if v != Verdict::Continue {
                return Ok(v);
            }
        }
        if f & NO_BODY == 0 {
            for chunk in m.body.chunks(65535) {
                match self.command(b'B', chunk, f & NR_BODY != 0, added).await? {
                    Verdict::Continue => {}
                    Verdict::Skip => break,
                    v => return Ok(v),
                }
            }
        }
        self.macros(b'E', &[("i", m.queue_id)]).await?;
        self.command(b'E', &[], false, added).await
    }

    /// QUIT.
    pub async fn quit(mut self) -> io::Result<()> {
        self.send(b'Q', &[]).await?;
        self.writer.flush().await
    }
}

/// One message to send.
pub struct Message<'a> {
    /// `{auth_authen}`.
    pub login: &'a str,
    /// Envelope sender.
    pub mail_from: &'a str,
    /// Envelope recipients.
    pub rcpts: &'a [String],
    /// Header fields.
    pub headers: &'a [(String, String)],
    /// Body (CRLF line ends).
    pub body: &'a [u8],
    /// Queue id for macros.
    pub queue_id: &'a str,
}

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
    client
        .connect("203.0.113.7".parse().expect("address"), "submission")
        .await?;
    let rcpts: Vec<String> = (0..load.rcpts)
        .map(|n| format!("rcpt{n}@example.org"))
        .collect();
    let mut out = Vec::with_capacity(load.messages);
    for m in 0..load.messages {
        let queue_id = format!("B{c:04X}{m:06X}");
        let headers = vec![
            ("From".to_string(), format!("Load Test <{}>", load.from)),
            ("To".to_string(), "rcpt0@example.org".to_string()),
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
            login: &load.login,
            mail_from: &load.from,
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
            match spec {
                crate::config::SocketSpec::Unix(path) => {
                    run_connection(
                        tokio::net::UnixStream::connect(path).await?,
                        &load,
                        c,
                        &body,
                    )
                    .await
                }
                crate::config::SocketSpec::Inet(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr).await?;
                    // As the server does: no delayed-ACK stalls on small packets.
                    stream.set_nodelay(true)?;
                    run_connection(stream, &load, c, &body).await
                }
            }
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
