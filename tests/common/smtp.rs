//! A small SMTP submission client for end-to-end tests: every reply is kept for assertions.

use base64::Engine;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// One SMTP session.
pub struct Smtp {
    stream: BufReader<TcpStream>,
}

/// A reply: code and full text (last line).
#[derive(Debug, Clone)]
pub struct SmtpReply {
    pub code: u16,
    pub text: String,
}

impl Smtp {
    /// Connects from `local` (a loopback address) to the server, reads the greeting, sends EHLO.
    pub async fn connect(server: SocketAddr, local: IpAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(local, 0)).unwrap();
        let stream = socket.connect(server).await.expect("connect to postfix");
        let mut smtp = Smtp {
            stream: BufReader::new(stream),
        };
        assert_eq!(smtp.reply().await.code, 220);
        assert_eq!(smtp.command("EHLO client.tugraz.test").await.code, 250);
        smtp
    }

    async fn reply(&mut self) -> SmtpReply {
        let text;
        loop {
            let mut line = String::new();
            tokio::time::timeout(
                std::time::Duration::from_secs(30),
                self.stream.read_line(&mut line),
            )
            .await
            .expect("SMTP reply within 30 s")
            .expect("read reply");
            assert!(line.len() >= 4, "short SMTP reply {line:?}");
            if line.as_bytes()[3] == b' ' {
                text = line.trim_end().to_string();
                break;
            }
        }
        SmtpReply {
            code: text[..3].parse().expect("reply code"),
            text,
        }
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> SmtpReply {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    /// AUTH PLAIN.
    pub async fn auth(&mut self, user: &str, password: &str) -> SmtpReply {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.command(&format!("AUTH PLAIN {token}")).await
    }

    /// DATA with the given message (CRLF line ends, dot-stuffed here); returns the final reply.
    pub async fn data(&mut self, message: &str) -> SmtpReply {
        let go = self.command("DATA").await;
        if go.code != 354 {
            return go;
        }
        let mut body = String::new();
        for line in message.split("\r\n") {
            if line.starts_with('.') {
                body.push('.');
            }
            body.push_str(line);
            body.push_str("\r\n");
        }
        if message.ends_with("\r\n") {
            body.truncate(body.len() - 2);
        }
        body.push_str(".\r\n");
        self.stream
            .get_mut()
            .write_all(body.as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    /// QUIT.
    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
    }
}

/// A transaction's replies, one per command sent.
#[derive(Debug)]
pub struct Submission {
    pub mail: SmtpReply,
    pub rcpts: Vec<SmtpReply>,
    pub data: Option<SmtpReply>,
}

impl Submission {
    /// The reply that ended the transaction: DATA's, else the last refusal.
    pub fn last(&self) -> &SmtpReply {
        if let Some(d) = &self.data {
            return d;
        }
        if self.mail.code >= 400 {
            return &self.mail;
        }
        self.rcpts
            .iter()
            .rev()
            .find(|r| r.code >= 400)
            .unwrap_or(&self.mail)
    }
}

/// Runs MAIL, RCPT..., and DATA if any recipient was accepted.
pub async fn submit(smtp: &mut Smtp, mail_from: &str, rcpts: &[&str], message: &str) -> Submission {
    let mail = smtp.command(&format!("MAIL FROM:<{mail_from}>")).await;
    if mail.code >= 400 {
        return Submission {
            mail,
            rcpts: vec![],
            data: None,
        };
    }
    let mut replies = Vec::new();
    for rcpt in rcpts {
        replies.push(smtp.command(&format!("RCPT TO:<{rcpt}>")).await);
    }
    let data = if replies.iter().any(|r| r.code == 250) {
        Some(smtp.data(message).await)
    } else {
        let _ = smtp.command("RSET").await;
        None
    };
    Submission {
        mail,
        rcpts: replies,
        data,
    }
}
