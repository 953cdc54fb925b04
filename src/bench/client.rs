//! A milter client that talks as Postfix 3.7 does: protocol version 6, macros per stage, one
//! HEADER per field, BODY in 65535-byte chunks, EOM, ABORT after each message, and stages
//! and replies the milter negotiated away skipped.

use std::io;
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
