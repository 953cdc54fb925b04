//! The real `relayguard run` binary as a child process on a unix socket: for faults that
//! need the whole process (signals, restarts, its log), stopped by the PID it was given.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running relayguard process; killed on drop.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Writes the standard sender map and the configuration `config(dir, socket)` returns,
    /// starts `relayguard run` on it and waits until the milter port answers.
    pub fn start(config: impl Fn(&Path, &str) -> String) -> Self {
        let mut daemon = Self::prepared(config);
        daemon.restart();
        daemon
    }

    /// As [`Daemon::start`], without starting the process: its files are in place, for
    /// whatever must happen before it runs (keys published, say); then [`Daemon::restart`].
    pub fn prepared(config: impl Fn(&Path, &str) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sender_login_maps"), super::MAP).unwrap();
        let socket = dir.path().join("relayguard.sock");
        let text = config(dir.path(), &format!("unix:{}", socket.display()));
        std::fs::write(dir.path().join("relayguard.toml"), text).unwrap();
        Daemon {
            log: dir.path().join("relayguard.log"),
            dir,
            socket,
            child: None,
        }
    }

    /// Kills the process (SIGKILL, as a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process (again) on the same files and port; its log is appended to.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_relayguard"))
            .arg("run")
            .arg("--config")
            .arg(self.dir.path().join("relayguard.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("relayguard starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("relayguard exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "relayguard did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens a milter connection as an MTA would.
    pub async fn connect(&self) -> indymilter_test::TestConnection {
        indymilter_test::TestConnection::configure()
            .open_unix(&self.socket)
            .await
            .expect("connect to relayguard")
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`, up to 10 s.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "`{needle}` not logged:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of our own child.
        let rc = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill {signal}");
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
