//! The campus's mail clients: one SMTP session per try, through the load balancer (the
//! relays in turn, the other one when a relay does not answer), the client address and
//! name presented with Postfix's XCLIENT, SMTP AUTH for accounts, and retries the way an
//! MTA's queue makes them. Every reply is kept for the ledger.

use crate::model::{Expect, Planned};
use base64::Engine;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One try of a message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    /// When the session began, milliseconds after the start.
    pub at_ms: u64,
    /// Which relay (0, 1).
    pub relay: usize,
    /// Where it ended: connect, xclient, auth, mail, rcpt, data.
    pub stage: &'static str,
    /// The reply code (0: no reply, the connection failed).
    pub code: u16,
    /// The reply text.
    pub text: String,
    /// The relay's queue id, when the message was taken.
    pub queue_id: Option<String>,
    /// How long the session took, in milliseconds.
    pub took_ms: u64,
}

/// A message's tries, in order.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tries(pub Vec<Attempt>);

impl Tries {
    /// The try that took the message, if one did.
    pub fn accepted(&self) -> Option<&Attempt> {
        self.0.iter().find(|a| a.code == 250)
    }
}

struct Session {
    stream: BufReader<TcpStream>,
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

impl Session {
    async fn reply(&mut self) -> Result<(u16, String), String> {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_line(&mut line))
                .await
                .map_err(|_| "no reply in time".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            if line.len() < 4 {
                return Err(format!("short reply {line:?}"));
            }
            if line.as_bytes()[3] == b' ' {
                let code = line[..3]
                    .parse()
                    .map_err(|_| format!("bad reply {line:?}"))?;
                return Ok((code, line.trim_end().to_string()));
            }
        }
    }

    async fn command(&mut self, line: &str) -> Result<(u16, String), String> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.reply().await
    }
}

/// One SMTP session for `msg` through `relay`: the stage it ended at and the reply.
async fn session(
    msg: &Planned,
    relay: SocketAddr,
    password: &str,
) -> (&'static str, u16, String, Option<String>) {
    let mut stage = "connect";
    let run = async {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(relay))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut s = Session {
            stream: BufReader::new(stream),
        };
        let greeting = s.reply().await?;
        if greeting.0 != 220 {
            return Ok::<_, String>((greeting, None));
        }
        s.command("EHLO campus.client.test").await?;
        stage = "xclient";
        let name = msg.client_name.as_deref().unwrap_or("[UNAVAILABLE]");
        let x = s
            .command(&format!("XCLIENT ADDR={} NAME={name}", msg.client))
            .await?;
        if x.0 != 220 {
            return Ok((x, None));
        }
        s.command("EHLO campus.client.test").await?;
        if let Some(login) = &msg.login {
            stage = "auth";
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"));
            let r = s.command(&format!("AUTH PLAIN {token}")).await?;
            if r.0 != 235 {
                return Ok((r, None));
            }
        }
        stage = "mail";
        let r = s.command(&format!("MAIL FROM:<{}>", msg.mail_from)).await?;
        if r.0 >= 400 {
            let _ = s.command("QUIT").await;
            return Ok((r, None));
        }
        stage = "rcpt";
        let mut refused = None;
        let mut accepted = 0;
        for rcpt in &msg.rcpts {
            let r = s.command(&format!("RCPT TO:<{rcpt}>")).await?;
            if r.0 == 250 {
                accepted += 1;
            } else {
                refused = Some(r);
            }
        }
        if accepted == 0 {
            let _ = s.command("QUIT").await;
            return Ok((refused.expect("a refusal"), None));
        }
        stage = "data";
        let go = s.command("DATA").await?;
        if go.0 != 354 {
            return Ok((go, None));
        }
        let mut body = String::new();
        for line in msg.text().trim_end_matches("\r\n").split("\r\n") {
            if line.starts_with('.') {
                body.push('.');
            }
            body.push_str(line);
            body.push_str("\r\n");
        }
        body.push_str(".\r\n");
        s.stream
            .get_mut()
            .write_all(body.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let r = s.reply().await?;
        let queue_id = r.1.split("queued as ").nth(1).map(|q| q.trim().to_string());
        let _ = s.command("QUIT").await;
        Ok((r, queue_id))
    };
    match run.await {
        Ok(((code, text), queue_id)) => (stage, code, text, queue_id),
        Err(e) => (stage, 0, e, None),
    }
}

/// Whether a reply ends the message's life: taken, refused for good, or refused as
/// expected (a `4xx` the plan says it gets is not tried again).
fn settled(msg: &Planned, code: u16, text: &str) -> bool {
    match (&msg.expect, code) {
        (_, 250) => true,
        (_, 500..=599) => true,
        (Expect::Refuse(expected), 400..=499) => text.contains(expected),
        _ => false,
    }
}

/// When a message that was not settled is tried again: as Postfix's queue does, sooner at
/// first, then less often.
pub const BACKOFF: [u64; 5] = [10, 20, 30, 45, 60];

/// Sends `msg` through `relays` (starting at the one the load balancer picks), retrying
/// until it settles or `deadline`; returns its tries.
pub async fn deliver(
    msg: &Planned,
    relays: &[SocketAddr],
    password: &str,
    start: Instant,
    deadline: Instant,
    sessions: &tokio::sync::Semaphore,
) -> Tries {
    let mut tries = Tries::default();
    let mut relay = msg.id % relays.len();
    let (mut waits, mut switched) = (0usize, false);
    loop {
        let (stage, code, text, queue_id, took, at_ms) = {
            let _slot = sessions.acquire().await.expect("semaphore open");
            let began = Instant::now();
            let at_ms = start.elapsed().as_millis() as u64;
            let (stage, code, text, queue_id) = session(msg, relays[relay], password).await;
            (stage, code, text, queue_id, began.elapsed(), at_ms)
        };
        let done = settled(msg, code, &text);
        tries.0.push(Attempt {
            at_ms,
            relay,
            stage,
            code,
            text,
            queue_id,
            took_ms: took.as_millis() as u64,
        });
        if done {
            return tries;
        }
        // A relay that does not answer: the balancer sends the client to the other at once
        // (once per round); otherwise wait as a queue would, and try the other relay.
        relay = (relay + 1) % relays.len();
        if code == 0 && stage == "connect" && !switched {
            switched = true;
            continue;
        }
        switched = false;
        let wait = Duration::from_secs(BACKOFF[waits.min(BACKOFF.len() - 1)]);
        waits += 1;
        if Instant::now() + wait > deadline {
            return tries;
        }
        tokio::time::sleep(wait).await;
    }
}
