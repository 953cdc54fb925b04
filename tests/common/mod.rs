//! Shared test harness: start relayguard on a real socket, drive it as an MTA would, stop it.
#![allow(dead_code)]

pub mod bind;
pub mod chromium;
pub mod daemon;
pub mod dkim;
pub mod memory;
pub mod postfix;
pub mod redis;
pub mod rng;
pub mod sendmail;
pub mod slapd;
pub mod smtp;

use indymilter_test::{MacroStage, SocketInfo, Status, TestConnection};
use relayguard::runtime::service::{ReloadStatus, Service};
use relayguard::runtime::{Options, Running};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A command for a server that runs on the real clock even when the suite itself runs under
/// libfaketime (`.ci/run`'s pass three years ahead): redis-server, redis-cli and BIND's
/// tools link jemalloc, whose start-up calls clock_gettime inside libfaketime's own start-up
/// and hangs for good. None of them decides anything by the date here: the relay passes its
/// own clock to every Redis script and counter key, and TTLs are relative.
pub fn real_clock(program: &str) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    for var in [
        "LD_PRELOAD",
        "FAKETIME",
        "FAKETIME_SHARED",
        "DONT_FAKE_MONOTONIC",
    ] {
        command.env_remove(var);
    }
    command
}

/// Whether this process runs on a clock libfaketime moved.
pub fn faked_clock() -> bool {
    std::env::var_os("FAKETIME").is_some()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates SASL users (realm tugraz.at) in a sasldb2 file with saslpasswd2.
pub fn add_sasl_users(db: &Path, users: &[(&str, &str)]) {
    add_sasl_users_in(db, "tugraz.at", users)
}

/// Creates SASL users of `realm` in a sasldb2 file with saslpasswd2.
pub fn add_sasl_users_in(db: &Path, realm: &str, users: &[(&str, &str)]) {
    for (user, password) in users {
        let mut child = std::process::Command::new("saslpasswd2")
            .args(["-p", "-c", "-u", realm, "-f"])
            .arg(db)
            .arg(user)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("saslpasswd2 runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "saslpasswd2 {user}");
    }
}

/// Starts Postfix's smtp-sink on a loopback port, dumping each message into `dir`.
pub fn spawn_sink(dir: &Path, port: u16) -> std::process::Child {
    std::process::Command::new("smtp-sink")
        .args(["-u", "postfix", "-d"])
        .arg(format!("{}/%H%M%S.", dir.display()))
        .arg(format!("127.0.0.1:{port}"))
        .arg("100")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("smtp-sink starts")
}

/// Messages in a sink directory that contain `needle`.
pub fn delivered_in(dir: &Path, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|t| t.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits up to 30 s for a message containing `needle` in a sink directory; `context` is
/// shown when it never arrives (e.g. the MTA's log).
pub async fn wait_delivered_in(dir: &Path, needle: &str, context: impl Fn() -> String) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(text) = delivered_in(dir, needle).pop() {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "message {needle} not delivered within 30 s\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path` on a loopback HTTP endpoint (the metrics server); the whole response.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

/// The default test sender map.
pub const MAP: &str = "alice@tugraz.at alice\nrector@tugraz.at rector\noffice@tugraz.at alice, bob\nwebform@tugraz.at robot-web\n";

/// A relayguard instance running in this process.
pub struct Milter {
    pub dir: tempfile::TempDir,
    pub service: Arc<Service>,
    pub tcp: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    running: Running,
}

/// A configuration for tests: the given socket line plus the standard policy.
pub fn config_text(socket: &str) -> String {
    format!(
        "[milter]\nsocket = \"{socket}\"\nshutdown_timeout_secs = 10\n\n[senders]\nlogin_map = \"sender_login_maps\"\nrobots = [\"robot-web\"]\n\n[clients]\ninternal_networks = [\"129.27.0.0/16\"]\n"
    )
}

impl Milter {
    /// Starts on `127.0.0.1:<free port>`.
    pub async fn tcp() -> Self {
        Self::start(|_| "inet:0@127.0.0.1".to_string()).await
    }

    /// Starts on a unix socket in a temporary directory.
    pub async fn unix() -> Self {
        Self::start(|dir| format!("unix:{}/relayguard.sock", dir.display())).await
    }

    async fn start(socket: impl Fn(&Path) -> String) -> Self {
        Self::with_config(|dir| config_text(&socket(dir))).await
    }

    /// Starts with a configuration written by `config` (given the configuration directory,
    /// which also holds the standard sender map).
    pub async fn with_config(config: impl Fn(&Path) -> String) -> Self {
        Self::with_clock(config, None).await
    }

    /// As [`Milter::with_config`], with an injected clock (Unix milliseconds).
    pub async fn with_clock(
        config: impl Fn(&Path) -> String,
        clock: Option<relayguard::clock::Clock>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sender_login_maps"), MAP).unwrap();
        let path = dir.path().join("relayguard.toml");
        std::fs::write(&path, config(dir.path())).unwrap();
        // As `relayguard run` starts, minus the signals and (until asked) the watcher.
        let options = Options {
            clock: clock.unwrap_or_else(relayguard::clock::system),
            watch_files: false,
            signals: false,
        };
        let running = relayguard::runtime::start(&path, options)
            .await
            .expect("test config loads and binds");
        Milter {
            dir,
            service: running.service.clone(),
            tcp: running.local_addr(),
            unix: running.unix_socket().map(Path::to_path_buf),
            running,
        }
    }

    /// Starts the directory watcher, as `relayguard run` does.
    pub fn watch_files(&mut self) {
        self.running.watch_files().expect("watcher starts");
    }

    /// Opens a milter connection as an MTA would.
    pub async fn connect(&self) -> TestConnection {
        match (&self.tcp, &self.unix) {
            (Some(addr), _) => TestConnection::open(addr).await.expect("connect tcp"),
            (_, Some(path)) => TestConnection::configure()
                .open_unix(path)
                .await
                .expect("connect unix"),
            _ => unreachable!(),
        }
    }

    /// Opens a milter connection as an MTA that offers only these protocol options would
    /// (an older MTA, or one without the no-reply options).
    pub async fn connect_offering(&self, opts: indymilter_test::ProtoOpts) -> TestConnection {
        let builder = TestConnection::configure().available_opts(opts);
        match (&self.tcp, &self.unix) {
            (Some(addr), _) => builder.open_tcp(addr).await.expect("connect tcp"),
            (_, Some(path)) => builder.open_unix(path).await.expect("connect unix"),
            _ => unreachable!(),
        }
    }

    /// Path of a file in the instance's configuration directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits until the reload counter passes `attempts`, returning the new status.
    pub async fn reload_after(&self, attempts: u64) -> ReloadStatus {
        let mut rx = self.service.reload_status();

        tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.attempts > attempts),
        )
        .await
        .expect("a reload happened within 10 s")
        .expect("service alive")
        .clone()
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.begin_stop();
        self.join().await
    }

    /// Signals shutdown without waiting.
    pub fn begin_stop(&mut self) {
        self.running.begin_stop();
    }

    /// Waits for the service to stop.
    pub async fn join(&mut self) -> std::io::Result<()> {
        tokio::time::timeout(Duration::from_secs(20), self.running.join())
            .await
            .expect("serve returned")
    }
}

/// One SMTP transaction as the MTA reports it to the milter.
#[derive(Clone, Debug)]
pub struct Txn {
    pub client: IpAddr,
    /// The forward-confirmed host name the MTA reports (`{client_name}`), if any.
    pub client_name: Option<&'static str>,
    pub login: Option<&'static str>,
    pub mail_from: &'static str,
    pub rcpts: Vec<&'static str>,
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Txn {
    /// An authenticated session from outside the campus.
    pub fn authenticated(login: &'static str, mail_from: &'static str, from: &'static str) -> Self {
        Txn {
            client: "203.0.113.7".parse().unwrap(),
            client_name: None,
            login: Some(login),
            mail_from,
            rcpts: vec!["<friend@example.org>"],
            headers: vec![
                ("From", from),
                ("To", "friend@example.org"),
                ("Subject", "test"),
            ],
        }
    }

    /// An unauthenticated server at the given address sending as itself: its host name is
    /// the envelope sender's domain (`root@srv.tugraz.at` comes from `srv.tugraz.at`), and
    /// so is its From.
    pub fn unauthenticated(
        client: &str,
        mail_from: &'static str,
        rcpts: Vec<&'static str>,
    ) -> Self {
        let address = mail_from.trim_matches(['<', '>']);
        Txn {
            client: client.parse().unwrap(),
            client_name: address.split_once('@').map(|(_, domain)| domain),
            login: None,
            mail_from,
            rcpts,
            headers: vec![("From", address), ("Subject", "cron")],
        }
    }
}

/// Where a transaction ended and with what status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stage: &'static str,
    pub status: Status,
}

impl Outcome {
    /// The reply text of a refusal, if any.
    pub fn reply(&self) -> Option<String> {
        match &self.status {
            Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
                Some(m.to_string_lossy().into_owned())
            }
            _ => None,
        }
    }
}

fn refused(status: &Status) -> bool {
    matches!(status, Status::Reject { .. } | Status::Tempfail { .. })
}

/// Sends a connection's worth of commands for one transaction, as Postfix does.
pub async fn send(conn: &mut TestConnection, txn: &Txn) -> Outcome {
    let mut macros = vec![("{client_addr}", txn.client.to_string())];
    if let Some(name) = txn.client_name {
        macros.push(("{client_name}", name.to_string()));
        macros.push(("{client_ptr}", name.to_string()));
    }
    conn.macros(MacroStage::Connect, macros).await.unwrap();
    let status = conn
        .connect(
            txn.client_name.unwrap_or("client.example"),
            SocketInfo::Inet(SocketAddr::new(txn.client, 40000)),
        )
        .await
        .unwrap();
    if refused(&status) {
        return Outcome {
            stage: "connect",
            status,
        };
    }
    send_message(conn, txn).await
}

/// Sends one message on an open connection (MAIL..EOM), then ABORT as Postfix does.
pub async fn send_message(conn: &mut TestConnection, txn: &Txn) -> Outcome {
    try_send_message(conn, txn).await.unwrap()
}

/// As [`send_message`], with the error when the milter closes the connection.
pub async fn try_send_message(
    conn: &mut TestConnection,
    txn: &Txn,
) -> indymilter_test::TestResult<Outcome> {
    let mut mail_macros = vec![(
        "{mail_addr}",
        txn.mail_from.trim_matches(['<', '>']).to_string(),
    )];
    if let Some(login) = txn.login {
        mail_macros.push(("{auth_authen}", login.to_string()));
        mail_macros.push(("{auth_type}", "PLAIN".to_string()));
    }
    conn.macros(MacroStage::Mail, mail_macros).await?;
    let status = conn.mail([txn.mail_from]).await?;
    if refused(&status) {
        conn.abort().await?;
        return Ok(Outcome {
            stage: "mail",
            status,
        });
    }
    let mut accepted = 0;
    let mut last_refusal = None;
    for rcpt in &txn.rcpts {
        conn.macros(
            MacroStage::Rcpt,
            [
                ("i", "4XyZ1"),
                ("{rcpt_addr}", rcpt.trim_matches(['<', '>'])),
            ],
        )
        .await?;
        let status = conn.rcpt([*rcpt]).await?;
        if refused(&status) {
            last_refusal = Some(status);
        } else {
            accepted += 1;
        }
    }
    if accepted == 0 {
        conn.abort().await?;
        return Ok(Outcome {
            stage: "rcpt",
            status: last_refusal.unwrap_or(Status::Continue),
        });
    }
    for (name, value) in &txn.headers {
        let status = conn.header(*name, *value).await?;
        if refused(&status) {
            conn.abort().await?;
            return Ok(Outcome {
                stage: "header",
                status,
            });
        }
    }
    conn.macros(MacroStage::Eoh, [("i", "4XyZ1")]).await?;
    // relayguard asks the MTA not to wait at end of headers and per body chunk where it may:
    // then the verdict on the headers comes at end of message.
    let status = conn.eoh().await?;
    if !matches!(status, Status::Continue | Status::Noreply) {
        conn.abort().await?;
        let outcome = Outcome {
            stage: "eoh",
            status,
        };
        return Ok(match (&outcome.status, last_refusal) {
            (Status::Accept, Some(r)) => Outcome {
                stage: "rcpt-partial",
                status: r,
            },
            _ => outcome,
        });
    }
    let status = conn.body("Hello.\r\n").await?;
    if !matches!(status, Status::Continue | Status::Noreply) {
        conn.abort().await?;
        return Ok(Outcome {
            stage: "body",
            status,
        });
    }
    let (_, status) = conn.eom().await?;
    conn.abort().await?;
    Ok(match (&status, last_refusal) {
        (Status::Accept, Some(r)) => Outcome {
            stage: "rcpt-partial",
            status: r,
        },
        _ => Outcome {
            stage: "eom",
            status,
        },
    })
}
